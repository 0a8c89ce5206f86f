/*
 * Containers and their processes. One lock (agent_lock) guards the table,
 * every process's state and exit status; handlers hold a container
 * reference while they block, so a concurrent delete never frees under them.
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "bl_error.h"
#include "io.h"
#include "rootfs.h"
#include "spec.h"
#include "validate.h"

#define AGENT_MAX_CONTAINERS BL_AGENT_MAX_CONTAINERS
#define AGENT_MAX_PROCESSES  1024 /* per container, exited ones included */

typedef struct agent_container agent_container;

typedef struct agent_process {
	char exec_id[AGENT_ID_MAX + 1];
	pid_t pid; /* in the agent's namespace */
	int pidfd;
	bool terminal;
	bool failed; /* never reached execve */
	agent_stream *out, *err;
	agent_stdin *in;
	int pty_fd; /* for TIOCSWINSZ, -1 without a terminal */
	uint64_t oom_before;
	bool exited;
	int wstatus;
	int64_t exited_at_ns;
	bool oom_killed;
	agent_container *c;
	struct agent_process *next;
} agent_process;

typedef enum agent_cstate {
	AGENT_C_CREATED,
	AGENT_C_RUNNING,
	AGENT_C_STOPPED,
	AGENT_C_DELETING,
} agent_cstate;

struct agent_container {
	char id[AGENT_ID_MAX + 1];
	int refs;
	agent_cstate state;
	agent_spec *spec;
	char *rootfs; /* agent path of the container root */
	bool readonly;
	int cgroup_fd;
	agent_process *init; /* NULL until started */
	agent_process *procs;
	size_t n_procs;
	agent_container *next;
};

/* Held across a spawn (check, clone, registration) and by the reaper and a
 * delete's state change; taken before agent_lock. */
extern pthread_mutex_t agent_spawn_lock;
extern pthread_mutex_t agent_lock;
/* Broadcast (with agent_lock) whenever a process exits. */
extern pthread_cond_t agent_exit_cond;

int agent_containers_init(bl_error_t *err);
int agent_container_create(const char *id, const char *spec_json, size_t spec_len,
			   const agent_rootfs_req *rootfs, bl_error_t *err);
/* Takes a reference; NULL (with err) when there is no such container. */
agent_container *agent_container_get(const char *id, bl_error_t *err);
void agent_container_put(agent_container *c);
/* Kills every process, waits for them, unmounts and removes the container. */
int agent_container_delete(const char *id, bl_error_t *err);
/* SIGKILLs every container (before a reboot). */
void agent_containers_kill_all(void);
/* Finds a process by exec id; call with agent_lock held. */
agent_process *agent_process_find(agent_container *c, const char *exec_id);
/* Routes a reaped child's status; called by the reaper. */
void agent_process_reaped(pid_t pid, int wstatus);

/* process.c */
/* Starts p (the spec's process for exec_id "") in the container. */
int agent_process_start(agent_container *c, const char *exec_id, const agent_process_spec *p,
			bool terminal, bool want_stdin, pid_t *ret_pid, bl_error_t *err);
int agent_process_wait(agent_container *c, const char *exec_id, uint64_t deadline_ns,
		       int *ret_wstatus, int64_t *ret_exited_at, bool *ret_oom, bl_error_t *err);
int agent_process_signal(agent_container *c, const char *exec_id, int sig, bool all,
			 bl_error_t *err);
void agent_process_free(agent_process *p);
/* Starts the reaper thread (SIGCHLD must already be blocked everywhere). */
int agent_reaper_start(bl_error_t *err);
