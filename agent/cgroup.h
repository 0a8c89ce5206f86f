/* cgroup v2: one group per container under /sys/fs/cgroup/boxlite/<id>. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "bl_error.h"
#include "spec.h"

#define AGENT_CGROUP_ROOT "/sys/fs/cgroup"
#define AGENT_CGROUP_BASE AGENT_CGROUP_ROOT "/boxlite"

typedef struct agent_cgroup_stats {
	uint64_t memory_current, memory_max, memory_peak;
	uint64_t pids_current, pids_max;
	uint64_t cpu_usage_usec;
	uint64_t oom_kills;
	uint64_t memory_anon, memory_file;
	uint64_t cpu_user_usec, cpu_system_usec;
	uint64_t cpu_nr_periods, cpu_nr_throttled, cpu_throttled_usec;
	uint64_t events_low, events_high, events_max, events_oom;
} agent_cgroup_stats;

/* New limits; < 0 keeps a value, 0 means unlimited / the default. */
typedef struct agent_cgroup_limits {
	int64_t memory_limit, cpu_quota, cpu_period, cpu_weight, pids_limit;
} agent_cgroup_limits;

/* Mounts cgroup2 and enables memory, pids and cpu for the containers. */
int agent_cgroup_setup(bl_error_t *err);
/* Creates the container's group with the spec's limits; returns an O_PATH
 * directory fd (for clone3's CLONE_INTO_CGROUP). */
int agent_cgroup_create(const char *id, const agent_spec *spec, int *ret_fd, bl_error_t *err);
/* Kills every process in the group (cgroup.kill). */
int agent_cgroup_kill(const char *id, bl_error_t *err);
/* Signals every process in the group. */
int agent_cgroup_signal(const char *id, int sig, bl_error_t *err);
/* Removes the (empty) group; retries briefly while exiting tasks leave it. */
int agent_cgroup_remove(const char *id, bl_error_t *err);
/* The oom_kill counter of memory.events (0 when unreadable). */
uint64_t agent_cgroup_oom_kills(const char *id);
int agent_cgroup_stats_read(const char *id, agent_cgroup_stats *ret, bl_error_t *err);
/* Pids (in the agent's namespace) of the group's processes; malloc'd array. */
int agent_cgroup_pids(const char *id, pid_t **ret, size_t *ret_n, bl_error_t *err);
/* Writes cgroup.freeze and waits (until deadline_ns, 0: 10 s) for
 * cgroup.events to report the new state. */
int agent_cgroup_freeze(const char *id, bool frozen, uint64_t deadline_ns, bl_error_t *err);
/* Changes the group's limits (validated here). */
int agent_cgroup_update(const char *id, const agent_cgroup_limits *lim, bl_error_t *err);
