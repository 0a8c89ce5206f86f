/*
 * containerd-shim-boxlite-v2: the containerd runtime v2 shim. Maps the Task
 * API (ttrpc, containerd.task.v2/v3.Task) onto libboxlite: one VM per single
 * container, one VM per Kubernetes pod. Uses only runtime/boxlite.h.
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "bl_error.h"
#include "boxlite.h"
#include "ttrpc.h"

#define SHIM_NAME	 "containerd-shim-boxlite-v2"
#define SHIM_RUNTIME	 "io.containerd.boxlite.v2"
#define SHIM_SOCKET_ROOT "/run/containerd/s"
#define SHIM_SOCKET_MAX	 106
#define SHIM_STATE_FILE	 "boxlite.json"
#define SHIM_CONFIG_MAX	 (4u << 20)
#define SHIM_ID_MAX	 256
/* Guest RAM on top of the container's memory limit for the kernel and agent. */
#define SHIM_GUEST_OVERHEAD_MIB 40
#define SHIM_DEFAULT_MEMORY_MIB 256
/* A Kubernetes pod's VM holds several containers. */
#define SHIM_POD_MEMORY_MIB 512

/* Command-line flags (Go flag style), shared by every action. */
typedef struct shim_flags {
	const char *namespace_;
	const char *address; /* containerd's gRPC socket */
	const char *publish_binary;
	const char *id;
	const char *bundle;
	const char *socket; /* the serving process: where fd 3 listens (informational) */
	bool debug;
	bool version;
	bool info;
	const char *action; /* "start", "delete", or NULL (serve) */
} shim_flags;

/* ------------------------------------------------------------ bundle */

/* What the shim reads from a bundle's config.json. */
typedef struct shim_spec {
	char **args, **env;
	char *cwd;
	char *user; /* "uid:gid" */
	char *hostname;
	bool terminal;
	char *root_path; /* root.path, absolute */
	bool root_readonly;
	uint64_t memory_limit; /* bytes, 0: none */
	unsigned vcpus;	       /* from the CPU quota, 0: default */
	int64_t pids_limit;
	char *container_type; /* io.kubernetes.cri.container-type, or NULL */
	char *sandbox_id;     /* io.kubernetes.cri.sandbox-id, or NULL */
	char *json;	      /* the whole config.json text */
	/* linux.namespaces has a network namespace with a path (a CRI pod's, or
	 * one a CNI set up): the VM gets a network, policed by the host as
	 * boxlite's (runtime/README.md, "Network"); the rules come from the
	 * annotations SHIM_NET_ALLOW / _DENY / _PUBLISH (comma-separated). */
	bool network;
	char **net_allow, **net_deny, **net_publish;
} shim_spec;

#define SHIM_NET_ALLOW	 "io.boxlite.network.allow"
#define SHIM_NET_DENY	 "io.boxlite.network.deny"
#define SHIM_NET_PUBLISH "io.boxlite.network.publish"

int shim_spec_load(const char *bundle, shim_spec *ret, bl_error_t *err);
/* Parses an OCI Process (JSON) as carried by ExecProcessRequest.spec. */
int shim_spec_parse_process(const char *json, size_t len, shim_spec *ret, bl_error_t *err);
void shim_spec_free(shim_spec *s);
/* The command resolves to an executable in rootfs (as runc checks at create). */
int shim_rootfs_check_exec(const char *rootfs, const shim_spec *s, bl_error_t *err);
/* The grouping key of a bundle: the pod's sandbox id for a pod container, else id. */
char *shim_group_id(const shim_spec *s, const char *id);
/* Guest RAM for a spec: memory limit + guest overhead, or the default. */
unsigned shim_spec_memory_mib(const shim_spec *s);

typedef struct shim_mount {
	char *type, *source, *target;
	char **options;
} shim_mount;

/* Mounts the CreateTaskRequest rootfs mounts on target (in order). */
int shim_mount_rootfs(const shim_mount *m, size_t n, const char *target, bl_error_t *err);
/* Unmounts everything on target (quiet when nothing is mounted). */
int shim_unmount_all(const char *target, bl_error_t *err);

/* ------------------------------------------------------------ events */

typedef struct shim_publisher shim_publisher;

/* Publishes to containerd's ttrpc socket ($TTRPC_ADDRESS) from one thread, in order. */
shim_publisher *shim_publisher_new(const char *ttrpc_address, const char *ns);
/* Queues one event (msg packed now); topic like "/tasks/exit". */
void shim_publish(shim_publisher *p, const char *topic, const ProtobufCMessage *msg);
/* Sends what is queued (bounded wait), then stops. */
void shim_publisher_free(shim_publisher *p);

/* ------------------------------------------------------------ stdio */

/* The host ends of one process's stdio as containerd named them. */
typedef struct shim_stdio {
	char *stdin_path, *stdout_path, *stderr_path;
	bool terminal;
	int in_fd, out_fd, err_fd; /* -1: none */
	pid_t logger;		   /* binary:// logger, 0: none */
	int in_close_efd;	   /* CloseIO: drain stdin then close it */
	int out_cancel_efd;	   /* closing: pumps stop writing */
	pthread_t t_in, t_out, t_err;
	bool have_in, have_out, have_err, inited;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int live; /* output pumps still running */
} shim_stdio;

/* Opens the FIFOs / file / binary logger named by the paths. */
int shim_stdio_open(shim_stdio *io, const char *id, const char *ns, bl_error_t *err);
/* Starts the pumps between the fds and the process. */
void shim_stdio_start(shim_stdio *io, bl_process *p);
/* CloseIO(stdin): the stdin pump drains what is buffered, then closes the guest's stdin. */
void shim_stdio_close_stdin(shim_stdio *io);
/* Waits up to timeout_ms for the output pumps to reach end of stream (each
 * closes its writer end there, so the client sees EOF); true when they did. */
bool shim_stdio_wait_output(shim_stdio *io, int timeout_ms);
/* Closes everything (stops the stdin pump, waits for a logger); the paths stay. */
void shim_stdio_close(shim_stdio *io);

/* ------------------------------------------------------------ service */

typedef struct shim_service shim_service;

shim_service *shim_service_new(const shim_flags *f, shim_publisher *pub);
/* Registers the Task handlers under both containerd.task.v2.Task and v3. */
int shim_service_register(shim_service *s, ttrpc_server *srv, bl_error_t *err);
/* Blocks until Shutdown found no task left (or the server must exit). */
void shim_service_wait_shutdown(shim_service *s);
void shim_service_free(shim_service *s);

/* ------------------------------------------------------------ util */

/* The boxlite sandbox id of a shim group (deterministic: `delete` finds it). */
void shim_sandbox_id(const char *ns, const char *group, char *buf, size_t len);
/* Realtime now as a Timestamp. */
struct ProtobufCMessage;
uint64_t shim_now_ns(void);
