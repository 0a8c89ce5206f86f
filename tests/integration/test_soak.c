/*
 * Soak: BL_SOAK_SANDBOXES sandboxes at once (default 2), each through
 * BL_SOAK_CYCLES cycles (default 5) of hostile workloads in turn - a fork
 * bomb against the pids limit, a memory bomb against the memory limit, a
 * disk fill against the writable layer's size, a CPU spin ended by the
 * sandbox deadline, an output flood of 32 MiB through the agent. Must
 * hold: every cycle ends (the sandbox's own limits and deadline stop it, the
 * host never hangs), and at the end no QEMU, virtiofsd, mount, state
 * directory, descriptor or zombie of this test is left. `make soak` runs
 * 50 x 20 (outside CI).
 */
#include "sandbox_env.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#define SKIP_UNLESS_ENV() \
	BL_SKIP_UNLESS(sb_env_setup("soak"), "needs root, /bin/busybox and the guest kernel")

struct workload {
	const char *name;
	const char *script;
	unsigned timeout_sec;
};

static const struct workload workloads[] = {
    {"fork-bomb", "b() { b & b & }; b; sleep 1; echo survived", 90},
    {"memory-bomb", "x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done", 90},
    {"disk-fill", "dd if=/dev/zero of=/tmp/fill bs=65536 2>/dev/null; echo filled", 90},
    /* the deadline (from create, boot included) ends it */
    {"cpu-spin", "while :; do :; done", 40},
    {"output-flood", "yes boxlite-soak-flood | head -c 33554432", 240},
};
#define N_WORKLOADS (sizeof(workloads) / sizeof(workloads[0]))

static pthread_mutex_t id_lock = PTHREAD_MUTEX_INITIALIZER;

struct worker {
	int index, cycles;
	int ended, failed;
	pthread_t t;
};

/* One sandbox through one workload; true when it ended (any exit status,
 * the OOM kill or the deadline: all are the limits doing their job). */
static bool run_workload(const struct workload *w, char *why, size_t why_len)
{
	const char *const args[] = {"sh", "-c", w->script, NULL};
	pthread_mutex_lock(&id_lock);
	bl_sandbox_options o = sb_opts(args);
	pthread_mutex_unlock(&id_lock);
	o.timeout_sec = w->timeout_sec;
	o.pids_max = 64;
	o.memory_mib = 128;
	o.disk_mib = 16;
	bl_error_t err = BL_ERROR_INIT;
	bl_sandbox *sb = NULL;
	if (bl_sandbox_create(&o, &sb, &err) < 0) {
		snprintf(why, why_len, "create: %s", err.msg);
		return false;
	}
	bl_process *p = NULL;
	bool ended = false;
	if (bl_sandbox_start(sb, &p, &err) == 0) {
		char buf[65536];
		size_t total = 0;
		for (ssize_t n; (n = bl_process_read(p, 1, buf, sizeof(buf), &err)) > 0;)
			total += (size_t)n;
		bl_exit ex = {0};
		int r = bl_process_wait(p, &ex, &err);
		ended = r == 0 || r == -BL_ETIMEOUT || r == -BL_EOOM;
		if (!ended)
			snprintf(why, why_len, "wait: %s", err.msg);
		if (!strcmp(w->name, "output-flood") && r == 0 && total != 33554432) {
			snprintf(why, why_len, "flood: %zu bytes of 33554432", total);
			ended = false;
		}
		bl_process_free(p);
	} else {
		snprintf(why, why_len, "start: %s", err.msg);
	}
	bl_sandbox_destroy(sb);
	return ended;
}

static void *worker_main(void *arg)
{
	struct worker *wk = arg;
	for (int c = 0; c < wk->cycles; c++) {
		const struct workload *w = &workloads[(size_t)(wk->index + c) % N_WORKLOADS];
		char why[BL_ERROR_MSG_MAX + 64] = "";
		if (run_workload(w, why, sizeof(why)))
			wk->ended++;
		else {
			wk->failed++;
			printf("\n  sandbox %d cycle %d (%s): %s", wk->index, c, w->name, why);
		}
	}
	return NULL;
}

static int count_zombie_children(void)
{
	_cleanup_closedir_ DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		char path[300];
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		_cleanup_free_ char *buf = NULL;
		if (bl_read_file(path, 4096, &buf, NULL, NULL) < 0)
			continue;
		const char *p = strrchr(buf, ')');
		if (p && p[2] == 'Z' && atoi(p + 4) == getpid())
			n++;
	}
	return n;
}

static int count_fds(void)
{
	_cleanup_closedir_ DIR *d = opendir("/proc/self/fd");
	int n = 0;
	struct dirent *de;
	while (d && (de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	return n;
}

static int env_int(const char *name, int def)
{
	const char *v = getenv(name);
	return v && atoi(v) > 0 ? atoi(v) : def;
}

static void test_hostile_soak(void)
{
	SKIP_UNLESS_ENV();
	int n = env_int("BL_SOAK_SANDBOXES", 2), cycles = env_int("BL_SOAK_CYCLES", 5);
	/* Warm: the libvirt connection's own descriptors exist after the first. */
	char why[BL_ERROR_MSG_MAX + 64] = "";
	const struct workload warm = {"warm-up", "echo warm", 60};
	CU_ASSERT(run_workload(&warm, why, sizeof(why)));
	int fds = count_fds();
	struct worker *wk = bl_malloc0((size_t)n * sizeof(*wk));
	uint64_t t0 = bl_now_monotonic_ns();
	for (int i = 0; i < n; i++) {
		wk[i] = (struct worker){.index = i, .cycles = cycles};
		CU_ASSERT_EQUAL_FATAL(pthread_create(&wk[i].t, NULL, worker_main, &wk[i]), 0);
	}
	int ended = 0, failed = 0;
	for (int i = 0; i < n; i++) {
		pthread_join(wk[i].t, NULL);
		ended += wk[i].ended;
		failed += wk[i].failed;
	}
	printf("\n  %d sandboxes x %d cycles: %d ended by their limits, %d failed, %.0f s\n", n,
	       cycles, ended, failed, (double)(bl_now_monotonic_ns() - t0) / 1e9);
	CU_ASSERT_EQUAL(failed, 0);
	CU_ASSERT_EQUAL(ended, n * cycles);
	sb_assert_clean();
	for (int i = 0; i < 200 && bl_test_count_procs(env.qemu_needle) > 0; i++)
		usleep(10000);
	CU_ASSERT_EQUAL(bl_test_count_procs(env.qemu_needle), 0);
	CU_ASSERT_EQUAL(count_fds(), fds);
	CU_ASSERT_EQUAL(count_zombie_children(), 0);
	free(wk);
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"hostile_soak", test_hostile_soak},
	    {NULL, NULL},
	};
	signal(SIGPIPE, SIG_IGN);
	int rc = bl_test_run("soak", cases);
	sb_env_teardown();
	return rc;
}
