/*
 * The part of the OCI runtime spec (config.json) the agent honours, parsed
 * with json-c into typed structs at the boundary. Input is untrusted: sizes,
 * counts and types are checked, and anything malformed is rejected.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bl_error.h"
#include "seccomp.h"

#define AGENT_SPEC_MAX_BYTES	  (256u * 1024)
#define AGENT_SPEC_MAX_DEPTH	  32
#define AGENT_SPEC_MAX_ARGS	  4096
#define AGENT_SPEC_MAX_ENV	  4096
#define AGENT_SPEC_MAX_STRING	  (128u * 1024)
#define AGENT_SPEC_MAX_ARGV_TOTAL (1024u * 1024)
#define AGENT_SPEC_MAX_GROUPS	  64
#define AGENT_SPEC_MAX_RLIMITS	  32
#define AGENT_SPEC_MAX_CAPS	  64
#define AGENT_SPEC_MAX_MOUNTS	  64
#define AGENT_SPEC_MAX_PATH	  4096
#define AGENT_SPEC_MAX_MOUNT_DATA 1024

typedef struct agent_rlimit {
	int resource; /* RLIMIT_* */
	uint64_t soft, hard;
} agent_rlimit;

/* Capability sets as bit masks (bit n = capability n). */
typedef struct agent_caps {
	uint64_t bounding, effective, permitted, inheritable, ambient;
} agent_caps;

typedef struct agent_process_spec {
	char **args; /* NULL-terminated, at least one */
	char **env;  /* NULL-terminated, "K=V" each */
	char *cwd;   /* absolute */
	uint32_t uid, gid;
	gid_t *additional_gids;
	size_t n_additional_gids;
	char *username; /* process.user.username: "user[:group]", resolved in the rootfs */
	uint32_t umask; /* 0022 unless given */
	bool terminal;
	bool no_new_privileges;
	agent_rlimit *rlimits;
	size_t n_rlimits;
	bool has_caps; /* false: the default set (see agent_caps_default) */
	agent_caps caps;
	bool has_oom_score_adj;
	int oom_score_adj;
} agent_process_spec;

/* A tmpfs mount from spec.mounts (other types are handled by the agent's own
 * fixed set or ignored: host paths mean nothing in the guest). */
typedef struct agent_mount {
	char *destination; /* absolute */
	char *data;	   /* tmpfs options, e.g. "size=64m,mode=1777" */
	unsigned long flags;
} agent_mount;

/* A bind mount from spec.mounts: the source is relative to the container's
 * rootfs share (the host bind-mounted the host path there). */
typedef struct agent_bind {
	char *source;	     /* share-relative, no ".." */
	char *destination;   /* absolute, inside the container root */
	unsigned long flags; /* MS_RDONLY, MS_NOEXEC, ... (nosuid/nodev always) */
} agent_bind;

typedef struct agent_spec {
	agent_process_spec *process; /* may be NULL when "process" is absent */
	bool root_readonly;
	char *hostname;	       /* NULL: inherit the guest's */
	int64_t memory_limit;  /* bytes, -1 = unlimited */
	int64_t pids_limit;    /* -1 = unlimited */
	int64_t cpu_quota;     /* usec per period, -1 = unlimited */
	uint64_t cpu_period;   /* usec, 0 = default 100000 */
	bool new_netns;	       /* false only when linux.namespaces omits "network" */
	agent_seccomp seccomp; /* linux.seccomp compiled, else boxlite's default */
	agent_mount *mounts;
	size_t n_mounts;
	agent_bind *binds; /* mounted by the agent before the init starts */
	size_t n_binds;
} agent_spec;

/* Parses a whole config.json. */
int agent_spec_parse(const char *json, size_t len, agent_spec **ret, bl_error_t *err);
/* Parses one OCI Process object (for exec). */
int agent_process_spec_parse(const char *json, size_t len, agent_process_spec **ret,
			     bl_error_t *err);
void agent_spec_free(agent_spec *s);
void agent_process_spec_free(agent_process_spec *p);

/* Docker's default capability set minus CAP_MKNOD and CAP_NET_RAW (raw and
 * packet sockets reach the guest kernel's whole packet path; a device node would reach
 * the guest's disks and channel, which no device cgroup guards here). */
uint64_t agent_caps_default(void);
/* Maps "RLIMIT_NOFILE" etc. to RLIMIT_*, or -1. */
int agent_rlimit_from_name(const char *name);
/* Looks up "NAME=" in a NULL-terminated env; returns the value or NULL. */
const char *agent_env_get(char *const *env, const char *name);
