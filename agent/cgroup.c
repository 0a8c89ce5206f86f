#include "cgroup.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define CG_SMALL_MAX 4096 /* memory.events, cpu.stat: a few hundred bytes */
#define CG_PIDS_MAX  (1u << 20)

static int cg_write(const char *dir, const char *file, const char *val, bl_error_t *err)
{
	_cleanup_free_ char *path = bl_asprintf("%s/%s", dir, file);
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "open %s", path);
	if (bl_write_full(fd, val, strlen(val)) < 0)
		return bl_set_error_errno(err, errno, "write %s to %s", val, path);
	return 0;
}

int agent_cgroup_setup(bl_error_t *err)
{
	(void)mkdir(AGENT_CGROUP_ROOT, 0755);
	if (mount("cgroup2", AGENT_CGROUP_ROOT, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  "nsdelegate") < 0 &&
	    errno != EBUSY)
		return bl_set_error_errno(err, errno, "mount cgroup2");
	int r = cg_write(AGENT_CGROUP_ROOT, "cgroup.subtree_control", "+memory +pids +cpu", err);
	if (r < 0)
		return r;
	if (mkdir(AGENT_CGROUP_BASE, 0755) < 0 && errno != EEXIST)
		return bl_set_error_errno(err, errno, "mkdir " AGENT_CGROUP_BASE);
	return cg_write(AGENT_CGROUP_BASE, "cgroup.subtree_control", "+memory +pids +cpu", err);
}

static int cg_apply_limits(const char *dir, const agent_spec *spec, bl_error_t *err)
{
	char val[64];
	int r = 0;
	if (spec->memory_limit > 0) {
		snprintf(val, sizeof(val), "%" PRId64, spec->memory_limit);
		r = cg_write(dir, "memory.max", val, err);
		/* No swap in the guest kernel: the file may be absent. */
		bl_error_t ignored = BL_ERROR_INIT;
		(void)cg_write(dir, "memory.swap.max", "0", &ignored);
	}
	if (r == 0 && spec->pids_limit > 0) {
		snprintf(val, sizeof(val), "%" PRId64, spec->pids_limit);
		r = cg_write(dir, "pids.max", val, err);
	}
	if (r == 0 && (spec->cpu_quota > 0 || spec->cpu_period > 0)) {
		uint64_t period = spec->cpu_period ? spec->cpu_period : 100000;
		if (spec->cpu_quota > 0)
			snprintf(val, sizeof(val), "%" PRId64 " %" PRIu64, spec->cpu_quota, period);
		else
			snprintf(val, sizeof(val), "max %" PRIu64, period);
		r = cg_write(dir, "cpu.max", val, err);
	}
	return r;
}

int agent_cgroup_create(const char *id, const agent_spec *spec, int *ret_fd, bl_error_t *err)
{
	_cleanup_free_ char *dir = bl_asprintf("%s/%s", AGENT_CGROUP_BASE, id);
	if (mkdir(dir, 0755) < 0)
		return bl_set_error_errno(err, errno, "mkdir %s", dir);
	int r = cg_apply_limits(dir, spec, err);
	int fd = r < 0 ? -1 : open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (r == 0 && fd < 0)
		r = bl_set_error_errno(err, errno, "open %s", dir);
	if (r < 0) {
		(void)rmdir(dir);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

int agent_cgroup_kill(const char *id, bl_error_t *err)
{
	_cleanup_free_ char *dir = bl_asprintf("%s/%s", AGENT_CGROUP_BASE, id);
	return cg_write(dir, "cgroup.kill", "1", err);
}

int agent_cgroup_pids(const char *id, pid_t **ret, size_t *ret_n, bl_error_t *err)
{
	_cleanup_free_ char *path = bl_asprintf("%s/%s/cgroup.procs", AGENT_CGROUP_BASE, id);
	_cleanup_free_ char *buf = NULL;
	int r = bl_read_file(path, CG_PIDS_MAX, &buf, NULL, err);
	if (r < 0)
		return r;
	size_t n = 0, cap = 16;
	_cleanup_free_ pid_t *pids = bl_malloc0(cap * sizeof(pid_t));
	for (char *s = buf, *end; *s; s = end) {
		long v = strtol(s, &end, 10);
		if (end == s)
			break;
		if (n == cap) {
			cap *= 2;
			pids = realloc(pids, cap * sizeof(pid_t));
			if (!pids)
				abort();
		}
		pids[n++] = (pid_t)v;
	}
	*ret = steal_pointer(&pids);
	*ret_n = n;
	return 0;
}

int agent_cgroup_signal(const char *id, int sig, bl_error_t *err)
{
	if (sig == SIGKILL)
		return agent_cgroup_kill(id, err);
	_cleanup_free_ pid_t *pids = NULL;
	size_t n = 0;
	int r = agent_cgroup_pids(id, &pids, &n, err);
	for (size_t i = 0; r == 0 && i < n; i++) {
		if (pids[i] > 1)
			(void)kill(pids[i], sig);
	}
	return r;
}

int agent_cgroup_remove(const char *id, bl_error_t *err)
{
	_cleanup_free_ char *dir = bl_asprintf("%s/%s", AGENT_CGROUP_BASE, id);
	for (int i = 0; i < 200; i++) {
		if (rmdir(dir) == 0 || errno == ENOENT)
			return 0;
		if (errno != EBUSY)
			break;
		usleep(10000);
	}
	return bl_set_error_errno(err, errno, "rmdir %s", dir);
}

/* Reads a small cgroup file into buf (NUL-terminated); -1 on failure. Stack
 * buffers: this runs on every start and exit. */
static int cg_read_small(const char *dir, const char *file, char *buf, size_t size)
{
	char path[PATH_MAX];
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, file) >= sizeof(path))
		return -1;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = bl_read_full(fd, buf, size - 1);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

/* Value of "key N" in a flat-keyed file such as memory.events; 0 when absent. */
static uint64_t cg_keyed(const char *dir, const char *file, const char *key)
{
	char buf[CG_SMALL_MAX];
	if (cg_read_small(dir, file, buf, sizeof(buf)) < 0)
		return 0;
	size_t klen = strlen(key);
	for (char *line = buf; *line;) {
		if (!strncmp(line, key, klen) && line[klen] == ' ')
			return strtoull(line + klen + 1, NULL, 10);
		char *nl = strchr(line, '\n');
		if (!nl)
			break;
		line = nl + 1;
	}
	return 0;
}

/* A single-value file; "max" and absent files read as 0. */
static uint64_t cg_value(const char *dir, const char *file)
{
	char buf[256];
	if (cg_read_small(dir, file, buf, sizeof(buf)) < 0 || !strncmp(buf, "max", 3))
		return 0;
	return strtoull(buf, NULL, 10);
}

uint64_t agent_cgroup_oom_kills(const char *id)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/%s", AGENT_CGROUP_BASE, id);
	return cg_keyed(dir, "memory.events", "oom_kill");
}

int agent_cgroup_stats_read(const char *id, agent_cgroup_stats *ret, bl_error_t *err)
{
	_cleanup_free_ char *dir = bl_asprintf("%s/%s", AGENT_CGROUP_BASE, id);
	if (access(dir, F_OK) < 0)
		return bl_set_error_errno(err, errno, "cgroup %s", id);
	ret->memory_current = cg_value(dir, "memory.current");
	ret->memory_max = cg_value(dir, "memory.max");
	ret->memory_peak = cg_value(dir, "memory.peak");
	ret->pids_current = cg_value(dir, "pids.current");
	ret->pids_max = cg_value(dir, "pids.max");
	ret->cpu_usage_usec = cg_keyed(dir, "cpu.stat", "usage_usec");
	ret->oom_kills = cg_keyed(dir, "memory.events", "oom_kill");
	ret->memory_anon = cg_keyed(dir, "memory.stat", "anon");
	ret->memory_file = cg_keyed(dir, "memory.stat", "file");
	ret->cpu_user_usec = cg_keyed(dir, "cpu.stat", "user_usec");
	ret->cpu_system_usec = cg_keyed(dir, "cpu.stat", "system_usec");
	ret->cpu_nr_periods = cg_keyed(dir, "cpu.stat", "nr_periods");
	ret->cpu_nr_throttled = cg_keyed(dir, "cpu.stat", "nr_throttled");
	ret->cpu_throttled_usec = cg_keyed(dir, "cpu.stat", "throttled_usec");
	ret->events_low = cg_keyed(dir, "memory.events", "low");
	ret->events_high = cg_keyed(dir, "memory.events", "high");
	ret->events_max = cg_keyed(dir, "memory.events", "max");
	ret->events_oom = cg_keyed(dir, "memory.events", "oom");
	return 0;
}

int agent_cgroup_freeze(const char *id, bool frozen, uint64_t deadline_ns, bl_error_t *err)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/%s", AGENT_CGROUP_BASE, id);
	int r = cg_write(dir, "cgroup.freeze", frozen ? "1" : "0", err);
	if (r < 0)
		return r;
	uint64_t now = bl_now_monotonic_ns();
	if (!deadline_ns || deadline_ns > now + 10000000000ull)
		deadline_ns = now + 10000000000ull;
	/* cgroup.events says "frozen 1" once every task stopped. */
	while (cg_keyed(dir, "cgroup.events", "frozen") != (frozen ? 1u : 0u)) {
		if (bl_now_monotonic_ns() >= deadline_ns)
			return bl_set_error(err, BL_ETIMEOUT, "cgroup %s: not %s in time", id,
					    frozen ? "frozen" : "thawed");
		usleep(2000);
	}
	return 0;
}

int agent_cgroup_update(const char *id, const agent_cgroup_limits *lim, bl_error_t *err)
{
	char dir[PATH_MAX], val[64];
	snprintf(dir, sizeof(dir), "%s/%s", AGENT_CGROUP_BASE, id);
	if (access(dir, F_OK) < 0)
		return bl_set_error(err, BL_ENOTFOUND, "cgroup %s: %s", id, strerror(errno));
	if ((lim->cpu_period > 1000000) || (lim->cpu_period > 0 && lim->cpu_period < 1000) ||
	    lim->cpu_weight > 10000 || (lim->cpu_quota > 0 && lim->cpu_quota < 1000))
		return bl_set_error(err, BL_EINVAL, "cpu limits out of range");
	int r = 0;
	if (lim->memory_limit >= 0) {
		if (lim->memory_limit)
			snprintf(val, sizeof(val), "%" PRId64, lim->memory_limit);
		else
			snprintf(val, sizeof(val), "max");
		r = cg_write(dir, "memory.max", val, err);
	}
	if (r == 0 && lim->pids_limit >= 0) {
		if (lim->pids_limit)
			snprintf(val, sizeof(val), "%" PRId64, lim->pids_limit);
		else
			snprintf(val, sizeof(val), "max");
		r = cg_write(dir, "pids.max", val, err);
	}
	if (r == 0 && (lim->cpu_quota >= 0 || lim->cpu_period >= 0)) {
		/* Keep what is not given: cpu.max is "QUOTA|max PERIOD". */
		char cur[64] = "max 100000", q[32];
		(void)cg_read_small(dir, "cpu.max", cur, sizeof(cur));
		uint64_t period = 100000;
		if (sscanf(cur, "%31s %" SCNu64, q, &period) < 1)
			snprintf(q, sizeof(q), "max");
		if (lim->cpu_period >= 0)
			period = lim->cpu_period ? (uint64_t)lim->cpu_period : 100000;
		if (lim->cpu_quota > 0)
			snprintf(q, sizeof(q), "%" PRId64, lim->cpu_quota);
		else if (lim->cpu_quota == 0)
			snprintf(q, sizeof(q), "max");
		snprintf(val, sizeof(val), "%s %" PRIu64, q, period);
		r = cg_write(dir, "cpu.max", val, err);
	}
	if (r == 0 && lim->cpu_weight >= 0) {
		snprintf(val, sizeof(val), "%" PRId64, lim->cpu_weight ? lim->cpu_weight : 100);
		r = cg_write(dir, "cpu.weight", val, err);
	}
	return r;
}
