/*
 * The warm pool on real VMs, through the real `boxlite pool` owner process:
 * a pooled VM serves exactly one sandbox, which sees only its own image and
 * writes; the pool refills after a take; a spare killed while waiting is
 * replaced; a sandbox of another shape boots its own VM; `pool stop` leaves
 * no QEMU, virtiofsd, mount, socket or directory. One spare at a time (the
 * machine is shared).
 */
#include "sandbox_env.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>

#define SKIP_UNLESS_ENV() \
	BL_SKIP_UNLESS(sb_env_setup("pool"), "needs root, /bin/busybox and the guest kernel")

static char *boxlite_bin(void)
{
	return bl_asprintf("%s/boxlite", bl_test_build_dir());
}

/* Runs `boxlite pool ARGS` for the test's state directory. */
static int pool_cli(const char *args)
{
	_cleanup_free_ char *bin = boxlite_bin();
	_cleanup_free_ char *cmd = bl_asprintf(
	    "BOXLITE_STATE_DIR='%s' BOXLITE_KERNEL='%s' BOXLITE_INITRD='%s' '%s' pool %s",
	    env.state, env.kernel, env.initrd, bin, args);
	return system(cmd);
}

static bl_pool_status status_now(void)
{
	bl_pool_status st;
	memset(&st, 0, sizeof(st));
	bl_error_t err = BL_ERROR_INIT;
	if (bl_pool_status_get(env.state, &st, &err) < 0)
		printf("\n  pool status: %s\n", err.msg);
	return st;
}

/* Waits (generously: the machine is shared) until `ready` spares are up. */
static bool wait_ready(unsigned ready, uint64_t served)
{
	for (int i = 0; i < 1200; i++) {
		bl_pool_status st = status_now();
		if (st.ready >= ready && st.served >= served)
			return true;
		usleep(100000);
	}
	return false;
}

/* A copy of the busybox rootfs with /marker holding tag. */
static char *make_rootfs(const char *tag)
{
	char *dir = bl_asprintf("%s/root-%s", env.dir, tag);
	_cleanup_free_ char *cmd = bl_asprintf("rm -rf %s && cp -a %s %s", dir, env.rootfs, dir);
	CU_ASSERT_FATAL(system(cmd) == 0);
	_cleanup_free_ char *marker = bl_asprintf("%s/marker", dir);
	CU_ASSERT_FATAL(bl_write_file(marker, tag, strlen(tag), 0644, NULL) == 0);
	return dir;
}

/* A long-lived sandbox (its init a pause process), ready for exec. */
static bl_sandbox *make_sandbox(const char *rootfs, unsigned memory_mib)
{
	bl_sandbox_options o = sb_opts(NULL);
	o.rootfs = rootfs;
	o.memory_mib = memory_mib;
	bl_sandbox *sb = NULL;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_sandbox_create(&o, &sb, &err) < 0) {
		printf("\n  create: %s\n", err.msg);
		return NULL;
	}
	bl_process *init = NULL;
	if (bl_sandbox_start(sb, &init, &err) < 0) {
		printf("\n  start: %s\n", err.msg);
		bl_sandbox_destroy(sb);
		return NULL;
	}
	bl_process_free(init);
	return sb;
}

/* Runs sh -c script in the sandbox; its stdout (malloc'd). */
static char *sh(bl_sandbox *sb, const char *script, int *status)
{
	const char *argv[] = {"sh", "-c", script, NULL};
	bl_process_options po = {.args = argv};
	bl_process *p = NULL;
	bl_error_t err = BL_ERROR_INIT;
	*status = -1;
	if (bl_sandbox_exec(sb, &po, &p, &err) < 0) {
		printf("\n  exec: %s\n", err.msg);
		return bl_strdup("");
	}
	char *out = sb_read_all(p, 1);
	bl_exit ex;
	if (bl_process_wait(p, &ex, &err) == 0)
		*status = ex.status;
	bl_process_free(p);
	return out;
}

static bool pid_alive(pid_t pid)
{
	return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* The pid of the one QEMU whose command line names needle, or 0. */
static pid_t qemu_naming(const char *needle);

/* The QEMU of the pool's (one) spare: named after its directory. */
static pid_t spare_qemu_pid(void)
{
	_cleanup_free_ char *dir = bl_asprintf("%s/.pool", env.state);
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	pid_t pid = 0;
	while (d && (de = readdir(d)) && !pid) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		_cleanup_free_ char *needle = bl_asprintf("guest=boxlite-%s,", de->d_name);
		pid = qemu_naming(needle);
	}
	return pid;
}

static pid_t qemu_naming(const char *needle)
{
	_cleanup_closedir_ DIR *d = opendir("/proc");
	struct dirent *de;
	pid_t found = 0;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		_cleanup_free_ char *path = bl_asprintf("/proc/%s/cmdline", de->d_name);
		_cleanup_free_ char *buf = NULL;
		size_t len = 0;
		if (bl_read_file(path, 1 << 16, &buf, &len, NULL) < 0 || !len)
			continue;
		for (size_t i = 0; i < len; i++)
			buf[i] = buf[i] ? buf[i] : ' ';
		if (strstr(buf, "qemu-system") && strstr(buf, needle))
			found = (pid_t)atoi(de->d_name);
	}
	return found;
}

/* Everything of the test's state directory gone (within a generous bound:
 * a released VM is destroyed by the pool's owner in the background). */
static void assert_all_gone(void)
{
	_cleanup_free_ char *pooldir = bl_asprintf("%s/.pool", env.state);
	for (int i = 0; i < 600; i++) {
		if (bl_test_count_procs(env.state) == 0 && bl_test_count_procs(env.dir) == 0 &&
		    !mounts_mention(env.dir) && state_entries() == 0 && access(pooldir, F_OK) < 0)
			break;
		usleep(50000);
	}
	CU_ASSERT_EQUAL(bl_test_count_procs(env.state), 0);
	CU_ASSERT_EQUAL(bl_test_count_procs(env.dir), 0);
	CU_ASSERT(!mounts_mention(env.dir));
	CU_ASSERT_EQUAL(state_entries(), 0);
	CU_ASSERT(access(pooldir, F_OK) < 0);
}

static void test_pool(void)
{
	SKIP_UNLESS_ENV();
	unsetenv("BOXLITE_POOL");
	(void)pool_cli("stop");
	CU_ASSERT_FATAL(pool_cli("start --size 1 --memory 128 --wait") == 0);
	bl_pool_status st = status_now();
	CU_ASSERT_EQUAL(st.size, 1);
	CU_ASSERT_EQUAL(st.ready, 1);
	CU_ASSERT_EQUAL(st.memory_mib, 128);
	CU_ASSERT_EQUAL(st.served, 0);
	/* A second owner for the same state directory is refused. */
	CU_ASSERT(pool_cli("start --size 1 --memory 128 2>/dev/null") != 0);

	/* A takes the spare: its QEMU is the pool's. */
	pid_t spare_qemu = spare_qemu_pid();
	CU_ASSERT(spare_qemu > 0);
	_cleanup_free_ char *root_a = make_rootfs("alpha");
	_cleanup_free_ char *root_b = make_rootfs("beta");
	bl_sandbox *a = make_sandbox(root_a, 128);
	CU_ASSERT_FATAL(a != NULL);
	CU_ASSERT_EQUAL(status_now().served, 1);
	CU_ASSERT_EQUAL(bl_sandbox_qemu_pid(a), spare_qemu);
	int status = -1;
	_cleanup_free_ char *out_a =
	    sh(a, "cat /marker; echo secret > /tmp/a-wrote; hostname", &status);
	CU_ASSERT_EQUAL(status, 0);
	CU_ASSERT_STRING_EQUAL(out_a, "alphaboxlite\n");
	/* Only its own image in the share: one container directory. */
	_cleanup_free_ char *share = bl_asprintf("%s/share", bl_sandbox_dir(a));
	_cleanup_closedir_ DIR *sd = opendir(share);
	int entries = 0;
	for (struct dirent *de; sd && (de = readdir(sd));)
		entries += de->d_name[0] != '.';
	CU_ASSERT_EQUAL(entries, 1);

	/* The pool refills (a new VM, never A's) while A runs. */
	CU_ASSERT_FATAL(wait_ready(1, 1));
	pid_t qemu_a = bl_sandbox_qemu_pid(a);
	bl_sandbox_destroy(a);
	for (int i = 0; i < 600 && pid_alive(qemu_a); i++)
		usleep(50000);
	CU_ASSERT(!pid_alive(qemu_a));

	/* B gets the new VM: its own image, none of A's writes. */
	bl_sandbox *b = make_sandbox(root_b, 128);
	CU_ASSERT_FATAL(b != NULL);
	CU_ASSERT_EQUAL(status_now().served, 2);
	CU_ASSERT(bl_sandbox_qemu_pid(b) != qemu_a);
	_cleanup_free_ char *out_b =
	    sh(b, "cat /marker; test -e /tmp/a-wrote && echo LEAK; ls /tmp", &status);
	CU_ASSERT_EQUAL(status, 0);
	CU_ASSERT_STRING_EQUAL(out_b, "beta");

	bl_sandbox_destroy(b);

	/* Another shape: a VM of its own, the pool untouched. */
	CU_ASSERT_FATAL(wait_ready(1, 2));
	bl_sandbox *c = make_sandbox(root_a, 192);
	CU_ASSERT_FATAL(c != NULL);
	bl_pool_status after = status_now();
	CU_ASSERT_EQUAL(after.served, 2);
	CU_ASSERT_EQUAL(after.ready, 1);
	_cleanup_free_ char *out_c = sh(c, "cat /marker", &status);
	CU_ASSERT_STRING_EQUAL(out_c, "alpha");
	bl_sandbox_destroy(c);

	/* A spare killed while waiting is replaced. */
	CU_ASSERT_FATAL(wait_ready(1, 2));
	pid_t victim = spare_qemu_pid();
	CU_ASSERT_FATAL(victim > 0);
	CU_ASSERT(kill(victim, SIGKILL) == 0);
	bool replaced = false;
	for (int i = 0; i < 1200 && !replaced; i++) {
		st = status_now();
		replaced = st.replaced >= 1 && st.ready == 1;
		if (!replaced)
			usleep(100000);
	}
	CU_ASSERT(replaced);
	pid_t fresh = spare_qemu_pid();
	CU_ASSERT(fresh > 0 && fresh != victim);

	/* Stop: nothing is left. */
	CU_ASSERT(pool_cli("stop") == 0);
	assert_all_gone();
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT(bl_pool_status_get(env.state, &st, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_ENOTFOUND);
}

/* A sandbox still running on a pooled VM ends with the pool; its own
 * process (here: this one) then only frees its handle. */
static void test_stop_with_sandbox(void)
{
	SKIP_UNLESS_ENV();
	(void)pool_cli("stop");
	CU_ASSERT_FATAL(pool_cli("start --size 1 --memory 128 --wait") == 0);
	bl_sandbox *a = make_sandbox(env.rootfs, 128);
	CU_ASSERT_FATAL(a != NULL);
	CU_ASSERT_EQUAL(status_now().served, 1);
	CU_ASSERT(pool_cli("stop") == 0);
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT(bl_sandbox_wait_dead(a, 60000, &err) == 0);
	bl_sandbox_destroy(a);
	assert_all_gone();
}

/* Without a pool, sandboxes boot their own VMs (and the directory stays
 * free of pool state). */
static void test_no_pool(void)
{
	SKIP_UNLESS_ENV();
	bl_sandbox *a = make_sandbox(env.rootfs, 128);
	CU_ASSERT_FATAL(a != NULL);
	int status = -1;
	_cleanup_free_ char *out = sh(a, "echo ok", &status);
	CU_ASSERT_STRING_EQUAL(out, "ok\n");
	bl_sandbox_destroy(a);
	assert_all_gone();
}

int main(void)
{
	static const bl_test_case tests[] = {
	    {"one VM per sandbox, refill, shape mismatch, replacement, stop", test_pool},
	    {"stop with a sandbox on a pooled VM", test_stop_with_sandbox},
	    {"no pool: cold boot", test_no_pool},
	    {NULL, NULL},
	};
	int rc = bl_test_run("pool", tests);
	if (env.ok)
		(void)pool_cli("stop"); /* after a failed case */
	sb_env_teardown();
	return rc;
}
