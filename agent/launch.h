/*
 * Spawning a container process. Everything is prepared in the (threaded)
 * agent; the child of clone3 (a fork: its own copy of the memory, never the
 * agent's) then uses system calls only (no malloc, no locks) until execve,
 * and reports a failure through a CLOEXEC socket.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "bl_error.h"
#include "spec.h"

/* argv of the container init that asks for the agent's built-in pause: the
 * agent binary re-exec'd in the container (nothing needed in the image). */
#define AGENT_PAUSE_PATH "/.boxlite/pause"

typedef struct agent_launch {
	bool is_init;
	/* init only: a fresh set of namespaces rooted at rootfs */
	const char *rootfs; /* agent path of the container root (a mount point) */
	bool readonly;
	const char *hostname; /* NULL: keep */
	bool new_netns;
	const agent_mount *mounts;
	size_t n_mounts;
	bool own_pty; /* terminal: a pty of the container's devpts (stdio ignored) */
	/* exec only: join the namespaces of the container's init */
	int init_pidfd;
	/* common */
	int cgroup_fd;
	int stdio[3];
	bool terminal;
	bool builtin; /* exec this agent binary (argv[0] names the built-in) */
	char *const *argv;
	char *const *envp;
	const char *cwd;
	uid_t uid;
	gid_t gid;
	const gid_t *gids;
	size_t n_gids;
	mode_t umask;
	const agent_rlimit *rlimits;
	size_t n_rlimits;
	agent_caps caps;
	bool no_new_privileges;
	const agent_seccomp *seccomp; /* NULL: none */
	int oom_score_adj;
} agent_launch;

/* How long a child may take from clone to execve (a child stopped on the
 * way is killed by the caller after that). */
#define AGENT_EXEC_TIMEOUT_MS 30000

/* Opens what spawning needs later (the agent's own pid namespace). */
int agent_launch_init(bl_error_t *err);
/* Starts the child; returns at once its pid and
 * pidfd, and the read end of the error socket (read it with
 * agent_launch_finish after registering the pid). */
pid_t agent_launch_spawn(const agent_launch *l, int *ret_pidfd, int *ret_errfd, bl_error_t *err);
/* Waits for the child's execve: 0 when it happened, else the child's error
 * (BL_ENOTFOUND for a missing executable). Closes errfd. With ret_pty (for
 * own_pty), also returns the pty master the child opened. */
int agent_launch_finish(int errfd, const char *argv0, int *ret_pty, bl_error_t *err);
