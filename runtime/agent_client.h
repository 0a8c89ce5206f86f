/*
 * Host side of the agent protocol (proto/agent.proto): typed wrappers over a
 * ttrpc client, either on the VM's channel (after the agent's preamble) or on
 * a monitor's api.sock (which forwards the same calls verbatim).
 *
 * Every reply is hostile input: sizes and fields are checked here, and a reply
 * that breaks the contract is BL_EPROTO; a closed channel is BL_EAGENTLOST.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bl_agent_proto.h"
#include "bl_error.h"
#include "ttrpc.h"

#define BL_AGENT_READ_CHUNK (64u << 10)

typedef struct bl_agent bl_agent;

/* Connects to the channel's unix socket (retrying until deadline_ns,
 * CLOCK_MONOTONIC) and reads the agent's preamble by that deadline. */
int bl_agent_connect_channel(const char *path, uint64_t deadline_ns, bl_agent **ret,
			     bl_error_t *err);
/* The same, handing back the connected descriptor (after the preamble)
 * instead of a client: a warm pool keeps it until a sandbox takes the VM. */
int bl_agent_channel_fd(const char *path, uint64_t deadline_ns, int *ret_fd, bl_error_t *err);
/* Connects to a monitor's api.sock (no preamble). */
int bl_agent_dial(const char *path, bl_agent **ret, bl_error_t *err);
/* Takes ownership of a connected fd; with `preamble`, reads it first. */
int bl_agent_from_fd(int fd, bool preamble, uint64_t deadline_ns, bl_agent **ret, bl_error_t *err);
ttrpc_client *bl_agent_ttrpc(bl_agent *a);
/* Fails every call in flight (BL_EAGENTLOST) and later ones. */
void bl_agent_close(bl_agent *a);
void bl_agent_free(bl_agent *a);

/* Per-call timeout used when a method has no natural one (0 = none). */
void bl_agent_set_timeout(bl_agent *a, uint64_t timeout_ns);

int bl_agent_ping(bl_agent *a, char *version, size_t version_len, bl_error_t *err);
int bl_agent_init(bl_agent *a, int64_t realtime_ns, const char *hostname, bl_error_t *err);

typedef struct bl_agent_rootfs {
	const char *share_tag;
	const char *share_subdir;
	bool readonly;
	uint64_t upper_size_bytes;
	const char *upper_device;
} bl_agent_rootfs;

int bl_agent_create_container(bl_agent *a, const char *cid, const char *spec_json,
			      const bl_agent_rootfs *rootfs, bl_error_t *err);
int bl_agent_start_process(bl_agent *a, const char *cid, const char *eid, const char *process_json,
			   bool terminal, bool stdin_open, uint32_t *ret_pid, bl_error_t *err);

typedef struct bl_agent_exit {
	int status;
	int signal;
	bool oom_killed;
	int64_t exited_at_ns;
} bl_agent_exit;

/* Blocks until the process ends (timeout_ns 0: forever). */
int bl_agent_wait_process(bl_agent *a, const char *cid, const char *eid, uint64_t timeout_ns,
			  bl_agent_exit *ret, bl_error_t *err);
int bl_agent_signal_process(bl_agent *a, const char *cid, const char *eid, int sig, bool all,
			    bl_error_t *err);
/* Writes at most BL_AGENT_IO_MAX bytes; *ret_len is what the agent took. */
int bl_agent_write_stdin(bl_agent *a, const char *cid, const char *eid, const void *data,
			 size_t len, size_t *ret_len, bl_error_t *err);
int bl_agent_close_stdin(bl_agent *a, const char *cid, const char *eid, bl_error_t *err);
/* stream 1 = stdout, 2 = stderr. Returns bytes (<= len) into buf, 0 at EOF. */
ssize_t bl_agent_read_output(bl_agent *a, const char *cid, const char *eid, int stream, void *buf,
			     size_t len, bl_error_t *err);
int bl_agent_resize_pty(bl_agent *a, const char *cid, const char *eid, unsigned rows, unsigned cols,
			bl_error_t *err);

typedef struct bl_agent_stats {
	uint64_t memory_current, memory_max, memory_peak, pids_current, pids_max, cpu_usage_usec,
	    oom_kills;
	uint64_t memory_anon, memory_file, cpu_user_usec, cpu_system_usec, cpu_nr_periods,
	    cpu_nr_throttled, cpu_throttled_usec, events_low, events_high, events_max, events_oom;
} bl_agent_stats;

int bl_agent_stats_get(bl_agent *a, const char *cid, bl_agent_stats *ret, bl_error_t *err);
/* Guest pids of the container's processes (malloc'd). */
int bl_agent_list_pids(bl_agent *a, const char *cid, uint32_t **ret, size_t *ret_n,
		       bl_error_t *err);
int bl_agent_pause_container(bl_agent *a, const char *cid, bool frozen, bl_error_t *err);
typedef struct bl_agent_limits {
	int64_t memory_limit, cpu_quota, cpu_period, cpu_weight, pids_limit; /* < 0: keep */
} bl_agent_limits;
int bl_agent_update_container(bl_agent *a, const char *cid, const bl_agent_limits *lim,
			      bl_error_t *err);
int bl_agent_delete_container(bl_agent *a, const char *cid, bl_error_t *err);
/* The guest reboots; a lost reply is not an error. */
int bl_agent_shutdown(bl_agent *a, bl_error_t *err);
