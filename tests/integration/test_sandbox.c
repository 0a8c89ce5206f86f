/*
 * Many sandboxes: 50 in a row and 8 at once in one process leave no process,
 * mount, socket, state directory, file descriptor or zombie behind; a
 * sandbox cancelled mid-boot (the SIGINT path) releases everything too.
 */
#include "sandbox_env.h"

#include <dirent.h>
#include <pthread.h>

#define SKIP_UNLESS_ENV() \
	BL_SKIP_UNLESS(sb_env_setup("sandbox"), "needs root, /bin/busybox and the guest kernel")

static int run_once(const char *word);

/* The process's libvirt connection (opened by the first sandbox, kept for
 * the next ones) holds descriptors of its own: count after it exists. */
static void warm_up(void)
{
	static bool warm;
	if (!warm)
		CU_ASSERT_EQUAL(run_once("warm-up"), 0);
	warm = true;
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

/* One sandbox from create to destroy; returns the program's status or -1. */
static int run_once(const char *word)
{
	const char *const args[] = {"echo", word, NULL};
	bl_sandbox_options o = sb_opts(args);
	bl_error_t err = BL_ERROR_INIT;
	bl_sandbox *sb = NULL;
	if (bl_sandbox_create(&o, &sb, &err) < 0) {
		printf("\n  create: %s\n", err.msg);
		return -1;
	}
	bl_process *p = NULL;
	int status = -1;
	if (bl_sandbox_start(sb, &p, &err) == 0) {
		_cleanup_free_ char *out = sb_read_all(p, 1);
		bl_exit ex;
		if (bl_process_wait(p, &ex, &err) == 0 && strncmp(out, word, strlen(word)) == 0)
			status = ex.status;
		bl_process_free(p);
	}
	if (status < 0)
		printf("\n  run %s: %s\n", word, err.msg);
	bl_sandbox_destroy(sb);
	return status;
}

static void test_fifty_in_a_row(void)
{
	SKIP_UNLESS_ENV();
	int n = getenv("BL_TEST_RUNS") ? atoi(getenv("BL_TEST_RUNS")) : 50;
	warm_up();
	int fds = count_fds();
	int ok = 0;
	uint64_t t0 = bl_now_monotonic_ns();
	for (int i = 0; i < n; i++) {
		char word[32];
		snprintf(word, sizeof(word), "run-%d", i);
		ok += run_once(word) == 0;
	}
	printf("\n  %d/%d runs ok, %.2f s each\n", ok, n,
	       (double)(bl_now_monotonic_ns() - t0) / 1e9 / n);
	CU_ASSERT_EQUAL(ok, n);
	sb_assert_clean();
	CU_ASSERT_EQUAL(count_fds(), fds);
	CU_ASSERT_EQUAL(count_zombie_children(), 0);
}

static void *parallel_main(void *arg)
{
	char word[32];
	snprintf(word, sizeof(word), "par-%ld", (long)(intptr_t)arg);
	return (void *)(intptr_t)(run_once(word) == 0);
}

static void test_eight_at_once(void)
{
	SKIP_UNLESS_ENV();
	warm_up();
	int fds = count_fds();
	pthread_t t[8];
	uint64_t t0 = bl_now_monotonic_ns();
	for (long i = 0; i < 8; i++)
		CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, parallel_main, (void *)i), 0);
	int ok = 0;
	for (int i = 0; i < 8; i++) {
		void *r = NULL;
		pthread_join(t[i], &r);
		ok += (int)(intptr_t)r;
	}
	printf("\n  %d/8 parallel runs ok in %.2f s\n", ok,
	       (double)(bl_now_monotonic_ns() - t0) / 1e9);
	CU_ASSERT_EQUAL(ok, 8);
	sb_assert_clean();
	CU_ASSERT_EQUAL(count_fds(), fds);
	CU_ASSERT_EQUAL(count_zombie_children(), 0);
}

struct cancel_arg {
	pthread_mutex_t lock;
	bl_sandbox *sb;
};

static void on_handle(bl_sandbox *sb, void *user)
{
	struct cancel_arg *c = user;
	pthread_mutex_lock(&c->lock);
	c->sb = sb;
	pthread_mutex_unlock(&c->lock);
}

static void *canceller(void *arg)
{
	struct cancel_arg *c = arg;
	usleep(1500 * 1000); /* mid-boot */
	pthread_mutex_lock(&c->lock);
	if (c->sb)
		bl_sandbox_cancel(c->sb);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* What the CLI does on SIGINT: cancel from another thread while booting. */
static void test_cancel_mid_boot(void)
{
	SKIP_UNLESS_ENV();
	const char *const args[] = {"sleep", "60", NULL};
	bl_sandbox_options o = sb_opts(args);
	struct cancel_arg c = {.lock = PTHREAD_MUTEX_INITIALIZER};
	o.on_handle = on_handle;
	o.on_handle_user = &c;
	pthread_t t;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, canceller, &c), 0);
	bl_error_t err = BL_ERROR_INIT;
	bl_sandbox *sb = NULL;
	uint64_t t0 = bl_now_monotonic_ns();
	int r = bl_sandbox_create(&o, &sb, &err);
	if (r == 0) {
		/* Booted before the cancel: the start or the wait sees it. */
		bl_process *p = NULL;
		if (bl_sandbox_start(sb, &p, &err) == 0) {
			bl_exit ex;
			r = bl_process_wait(p, &ex, &err);
			bl_process_free(p);
		} else {
			r = -1;
		}
	}
	pthread_join(t, NULL);
	printf("\n  cancelled after %.2f s: %s\n", (double)(bl_now_monotonic_ns() - t0) / 1e9,
	       err.msg);
	CU_ASSERT(r < 0);
	CU_ASSERT_EQUAL(err.code, BL_ECANCELED);
	pthread_mutex_lock(&c.lock);
	bl_sandbox *left = c.sb;
	c.sb = NULL;
	pthread_mutex_unlock(&c.lock);
	if (sb)
		bl_sandbox_destroy(sb);
	CU_ASSERT(left == sb); /* a failed create hands NULL back before freeing */
	sb_assert_clean();
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"cancel_mid_boot", test_cancel_mid_boot},
	    {"eight_at_once", test_eight_at_once},
	    {"fifty_in_a_row", test_fifty_in_a_row},
	    {NULL, NULL},
	};
	int rc = bl_test_run("sandbox", cases);
	sb_env_teardown();
	return rc;
}
