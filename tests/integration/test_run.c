/*
 * libboxlite end to end under real VMs (TCG here): output and exit codes,
 * stdio, env/cwd/user, signals, timeout, OOM, fork bomb, disk limit,
 * isolation between sandboxes and clear errors; after each test nothing of
 * the sandbox is left (processes, mounts, state).
 */
#include "sandbox_env.h"
#include "sandbox_internal.h"

#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <ftw.h>
#include <sys/statvfs.h>

#define SKIP_UNLESS_ENV() \
	BL_SKIP_UNLESS(sb_env_setup("run"), "needs root, /bin/busybox and the guest kernel")

/* Creates a sandbox running args as init and starts it. */
static bl_sandbox *start(bl_sandbox_options *o, bl_process **p)
{
	bl_error_t err = BL_ERROR_INIT;
	bl_sandbox *sb = NULL;
	if (bl_sandbox_create(o, &sb, &err) < 0) {
		printf("\n  create: %s\n", err.msg);
		return NULL;
	}
	if (bl_sandbox_start(sb, p, &err) < 0) {
		printf("\n  start: %s\n", err.msg);
		bl_sandbox_destroy(sb);
		return NULL;
	}
	return sb;
}

static void test_output_and_status(void)
{
	SKIP_UNLESS_ENV();
	const char *const args[] = {"sh", "-c", "echo out; echo err >&2; echo out2; exit 3", NULL};
	bl_sandbox_options o = sb_opts(args);
	bl_process *p = NULL;
	bl_sandbox *sb = start(&o, &p);
	CU_ASSERT_PTR_NOT_NULL_FATAL(sb);
	_cleanup_free_ char *out = sb_read_all(p, 1);
	_cleanup_free_ char *errs = sb_read_all(p, 2);
	CU_ASSERT_STRING_EQUAL(out, "out\nout2\n");
	CU_ASSERT_STRING_EQUAL(errs, "err\n");
	bl_exit ex;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_process_wait(p, &ex, &err), 0);
	CU_ASSERT_EQUAL(ex.status, 3);
	CU_ASSERT_EQUAL(ex.signal, 0);
	CU_ASSERT(!ex.oom_killed);
	bl_process_free(p);
	bl_sandbox_destroy(sb);
	sb_assert_clean();
}

static void test_stdin_env_cwd_user(void)
{
	SKIP_UNLESS_ENV();
	const char *const args[] = {"sh", "-c", "cat; echo \"$FOO:$(pwd):$(id -u):$(id -g)\"",
				    NULL};
	const char *const envv[] = {"FOO=bar", NULL};
	bl_sandbox_options o = sb_opts(args);
	o.env = envv;
	o.cwd = "/tmp";
	o.user = "1000:1001";
	o.stdin_open = true;
	bl_process *p = NULL;
	bl_sandbox *sb = start(&o, &p);
	CU_ASSERT_PTR_NOT_NULL_FATAL(sb);
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_process_write(p, "piped in\n", 9, &err), 0);
	CU_ASSERT_EQUAL(bl_process_close_stdin(p, &err), 0);
	_cleanup_free_ char *out = sb_read_all(p, 1);
	CU_ASSERT_STRING_EQUAL(out, "piped in\nbar:/tmp:1000:1001\n");
	bl_exit ex;
	CU_ASSERT_EQUAL(bl_process_wait(p, &ex, &err), 0);
	CU_ASSERT_EQUAL(ex.status, 0);
	bl_process_free(p);
	bl_sandbox_destroy(sb);
	sb_assert_clean();
}

/* A process killed by a signal reports 128+n and the signal; exec'd
 * processes inherit the sandbox's environment. */
static void test_signal_death_and_exec(void)
{
	SKIP_UNLESS_ENV();
	const char *const envv[] = {"FROM_SANDBOX=1", NULL};
	bl_sandbox_options o = sb_opts(NULL); /* long-lived: a pause init */
	o.env = envv;
	bl_process *init = NULL;
	bl_sandbox *sb = start(&o, &init);
	CU_ASSERT_PTR_NOT_NULL_FATAL(sb);
	bl_error_t err = BL_ERROR_INIT;
	const char *const sleep_args[] = {"sleep", "100", NULL};
	bl_process_options po = {.args = sleep_args};
	bl_process *p = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_exec(sb, &po, &p, &err), 0);
	CU_ASSERT_EQUAL(bl_process_signal(p, SIGKILL, &err), 0);
	bl_exit ex;
	CU_ASSERT_EQUAL(bl_process_wait(p, &ex, &err), 0);
	CU_ASSERT_EQUAL(ex.status, 137);
	CU_ASSERT_EQUAL(ex.signal, SIGKILL);
	bl_process_free(p);
	/* Self-inflicted, with output and the inherited env. */
	const char *const self[] = {"sh", "-c", "echo $FROM_SANDBOX; kill -TERM $$", NULL};
	po.args = self;
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_exec(sb, &po, &p, &err), 0);
	CU_ASSERT_EQUAL(bl_process_run_io(p, -1, -1, -1, &ex, &err), 0);
	CU_ASSERT_EQUAL(ex.status, 128 + SIGTERM);
	bl_process_free(p);
	bl_process_free(init);
	bl_sandbox_destroy(sb);
	sb_assert_clean();
}

/* The deadline destroys the VM within one second of it. */
static bool proc_alive(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	_cleanup_free_ char *buf = NULL;
	if (pid <= 0 || bl_read_file(path, 4096, &buf, NULL, NULL) < 0)
		return false;
	const char *p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static void test_timeout(void)
{
	SKIP_UNLESS_ENV();
	const char *const args[] = {"sleep", "600", NULL};
	bl_sandbox_options o = sb_opts(args);
	o.timeout_sec = 8;
	uint64_t t0 = bl_now_monotonic_ns();
	bl_process *p = NULL;
	bl_sandbox *sb = start(&o, &p);
	CU_ASSERT_PTR_NOT_NULL_FATAL(sb);
	pid_t qemu = bl_sandbox_qemu_pid(sb);
	CU_ASSERT(qemu > 0);
	bl_exit ex;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_process_wait(p, &ex, &err), -BL_ETIMEOUT);
	CU_ASSERT_EQUAL(err.code, BL_ETIMEOUT);
	CU_ASSERT(strstr(err.msg, "timed out after 8 s") != NULL);
	double waited = (double)(bl_now_monotonic_ns() - t0) / 1e9;
	/* QEMU must be gone by deadline + 1 s (a zombie counts as gone: init
	 * reaps it, not us). */
	while (proc_alive(qemu) && bl_now_monotonic_ns() - t0 < 9500000000ull)
		usleep(10000);
	double gone = (double)(bl_now_monotonic_ns() - t0) / 1e9;
	printf("\n  wait returned at %.2f s, QEMU gone %.2f s after create (deadline 8 s)\n",
	       waited, gone);
	CU_ASSERT(!proc_alive(qemu));
	CU_ASSERT(gone <= 9.0);
	bl_process_free(p);
	bl_sandbox_destroy(sb);
	sb_assert_clean();
}

static void test_oom(void)
{
	SKIP_UNLESS_ENV();
	/* tail keeps the last lines; /dev/zero has none, so it keeps everything. */
	const char *const args[] = {"tail", "/dev/zero", NULL};
	bl_sandbox_options o = sb_opts(args);
	bl_process *p = NULL;
	bl_sandbox *sb = start(&o, &p);
	CU_ASSERT_PTR_NOT_NULL_FATAL(sb);
	bl_exit ex;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_process_wait(p, &ex, &err), -BL_EOOM);
	CU_ASSERT_EQUAL(err.code, BL_EOOM);
	CU_ASSERT(ex.oom_killed);
	CU_ASSERT_EQUAL(ex.status, 137);
	printf("\n  %s\n", err.msg);
	bl_process_free(p);
	bl_sandbox_destroy(sb);
	sb_assert_clean();
}

/* A fork bomb hits the pids limit inside; the agent keeps answering and the
 * host sees one QEMU and nothing else. */
static void test_fork_bomb(void)
{
	SKIP_UNLESS_ENV();
	bl_sandbox_options o = sb_opts(NULL);
	o.pids_max = 64;
	bl_process *init = NULL;
	bl_sandbox *sb = start(&o, &init);
	CU_ASSERT_PTR_NOT_NULL_FATAL(sb);
	const char *const bomb[] = {"sh", "-c", "f() { f | f & }; f; sleep 1", NULL};
	bl_process_options po = {.args = bomb};
	bl_process *p = NULL;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_exec(sb, &po, &p, &err), 0);
	sleep(5);
	CU_ASSERT_EQUAL(bl_test_count_procs(env.qemu_needle), 1); /* one QEMU, nothing else */
	char version[80] = "";
	CU_ASSERT_EQUAL(bl_agent_ping(sb->agent, version, sizeof(version), &err), 0);
	bl_agent_stats st = {0};
	CU_ASSERT_EQUAL(bl_agent_stats_get(sb->agent, BL_CONTAINER_ID, &st, &err), 0);
	printf("\n  agent %s alive; container pids %llu (max %llu)\n", version,
	       (unsigned long long)st.pids_current, (unsigned long long)st.pids_max);
	CU_ASSERT(st.pids_current <= 64);
	bl_process_free(p);
	bl_process_free(init);
	bl_sandbox_destroy(sb);
	sb_assert_clean();
}

static long long tree_total;

static int tree_add(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	/* A sandbox's read-only view of env.rootfs (a bind mount in its state
	 * dir) would count the image twice. */
	if (flag == FTW_D && strstr(path, "/state/") && !strcmp(path + ftw->base, "rootfs"))
		return FTW_SKIP_SUBTREE;
	tree_total += (long long)st->st_blocks * 512;
	return FTW_CONTINUE;
}

/* Disk blocks allocated to the files below dir (a du). */
static long long tree_bytes(const char *dir)
{
	tree_total = 0;
	CU_ASSERT_EQUAL(nftw(dir, tree_add, 16, FTW_PHYS | FTW_ACTIONRETVAL), 0);
	return tree_total;
}

/* Writing past --disk fails inside with ENOSPC; the host disk is untouched. */
static void test_disk_limit(void)
{
	SKIP_UNLESS_ENV();
	const char *const args[] = {
	    "sh", "-c",
	    "dd if=/dev/zero of=/big bs=1M count=64 2>/dev/null; echo rc=$?; ls -l /big", NULL};
	bl_sandbox_options o = sb_opts(args);
	o.memory_mib = 256;
	o.disk_mib = 16;
	long long before = tree_bytes(env.dir);
	bl_process *p = NULL;
	bl_sandbox *sb = start(&o, &p);
	CU_ASSERT_PTR_NOT_NULL_FATAL(sb);
	_cleanup_free_ char *out = sb_read_all(p, 1);
	_cleanup_free_ char *errs = sb_read_all(p, 2);
	CU_ASSERT(strstr(out, "rc=1") != NULL);
	bl_exit ex;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_process_wait(p, &ex, &err), 0);
	/* Everything the sandbox has on the host (rootfs, state dir) is under
	 * env.dir; the machine's free space would also count other programs. */
	long long delta = tree_bytes(env.dir) - before;
	printf("\n  %s  host disk used under the test dir: %+lld bytes\n", out, delta);
	CU_ASSERT(delta < 1ll << 20); /* the sandbox wrote 16 MiB */
	_cleanup_free_ char *big = bl_asprintf("%s/big", env.rootfs);
	CU_ASSERT(access(big, F_OK) < 0);
	bl_process_free(p);
	bl_sandbox_destroy(sb);
	sb_assert_clean();
}

/* Two sandboxes of one image: neither sees the other's writes. */
static void test_isolation(void)
{
	SKIP_UNLESS_ENV();
	bl_sandbox_options oa = sb_opts(NULL), ob = sb_opts(NULL);
	bl_process *i1 = NULL, *i2 = NULL;
	bl_sandbox *a = start(&oa, &i1);
	bl_sandbox *b = start(&ob, &i2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b);
	bl_error_t err = BL_ERROR_INIT;
	bl_exit ex;
	bl_process *p = NULL;
	const char *const w[] = {"sh", "-c", "echo secret > /tmp/mine; echo x > /etc/added", NULL};
	bl_process_options po = {.args = w};
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_exec(a, &po, &p, &err), 0);
	CU_ASSERT_EQUAL(bl_process_run_io(p, -1, -1, -1, &ex, &err), 0);
	CU_ASSERT_EQUAL(ex.status, 0);
	bl_process_free(p);
	const char *const r[] = {"sh", "-c", "test -e /tmp/mine || test -e /etc/added", NULL};
	po.args = r;
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_exec(b, &po, &p, &err), 0);
	CU_ASSERT_EQUAL(bl_process_run_io(p, -1, -1, -1, &ex, &err), 0);
	CU_ASSERT_EQUAL(ex.status, 1);
	bl_process_free(p);
	_cleanup_free_ char *added = bl_asprintf("%s/etc/added", env.rootfs);
	CU_ASSERT(access(added, F_OK) < 0); /* the image stays untouched */
	bl_process_free(i1);
	bl_process_free(i2);
	bl_sandbox_destroy(a);
	bl_sandbox_destroy(b);
	sb_assert_clean();
}

static uid_t owner_of(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_uid : (uid_t)-1;
}

/* virtiofsd (root) serves a read-only, nodev bind of the image, so nothing
 * reaching it from the guest can change the image; the bind goes with the
 * sandbox, and libvirt leaves the guest kernel and initramfs alone. */
static void test_readonly_share(void)
{
	SKIP_UNLESS_ENV();
	uid_t kernel_uid = owner_of(env.kernel), initrd_uid = owner_of(env.initrd);
	bl_sandbox_options o = sb_opts(NULL);
	bl_process *init = NULL;
	bl_sandbox *sb = start(&o, &init);
	CU_ASSERT_PTR_NOT_NULL_FATAL(sb);
	/* The built-in container's image view in the per-VM share. */
	_cleanup_free_ char *share = bl_asprintf("%s/share/c0/rootfs", bl_sandbox_dir(sb));
	_cleanup_free_ char *share_root = bl_asprintf("%s/share", bl_sandbox_dir(sb));
	_cleanup_free_ char *x = bl_asprintf("%s/x", share);
	_cleanup_free_ char *bb = bl_asprintf("%s/bin/busybox", share);
	_cleanup_free_ char *etc = bl_asprintf("%s/etc/newdir", share);
	CU_ASSERT(mounts_mention(share));
	struct statvfs sv;
	CU_ASSERT_EQUAL_FATAL(statvfs(share, &sv), 0);
	CU_ASSERT(sv.f_flag & ST_RDONLY);
	CU_ASSERT(sv.f_flag & ST_NODEV);
	int fd = open(x, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	CU_ASSERT(fd < 0 && errno == EROFS);
	if (fd >= 0)
		close(fd);
	fd = open(bb, O_WRONLY | O_APPEND | O_CLOEXEC);
	CU_ASSERT(fd < 0 && errno == EROFS);
	if (fd >= 0)
		close(fd);
	CU_ASSERT(mkdir(etc, 0755) < 0 && errno == EROFS);
	CU_ASSERT(unlink(bb) < 0 && errno == EROFS);
	CU_ASSERT(chmod(bb, 0777) < 0 && errno == EROFS);
	/* The virtiofsd serving this sandbox serves the share holding it. */
	CU_ASSERT(bl_test_count_procs(share_root) >= 1);
	/* The guest still reads the image through it. */
	bl_error_t err = BL_ERROR_INIT;
	bl_exit ex;
	bl_process *p = NULL;
	const char *const r[] = {"sh", "-c", "test -s /etc/passwd && test -x /bin/busybox", NULL};
	bl_process_options po = {.args = r};
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_exec(sb, &po, &p, &err), 0);
	CU_ASSERT_EQUAL(bl_process_run_io(p, -1, -1, -1, &ex, &err), 0);
	CU_ASSERT_EQUAL(ex.status, 0);
	bl_process_free(p);
	CU_ASSERT_EQUAL(owner_of(env.kernel), kernel_uid);
	CU_ASSERT_EQUAL(owner_of(env.initrd), initrd_uid);
	_cleanup_free_ char *img_x = bl_asprintf("%s/x", env.rootfs);
	CU_ASSERT(access(img_x, F_OK) < 0);
	bl_process_free(init);
	bl_sandbox_destroy(sb);
	CU_ASSERT(!mounts_mention(share));
	CU_ASSERT(access(share, F_OK) < 0);
	sb_assert_clean();
}

/* bl_rm_rf stops at a bind mount of the same filesystem (same st_dev). */
static void test_rm_rf_stops_at_bind(void)
{
	SKIP_UNLESS_ENV();
	_cleanup_free_ char *src = bl_asprintf("%s/bind-src", env.dir);
	_cleanup_free_ char *top = bl_asprintf("%s/bind-top", env.dir);
	_cleanup_free_ char *mnt = bl_asprintf("%s/m", top);
	_cleanup_free_ char *keep = bl_asprintf("%s/keep", src);
	CU_ASSERT_EQUAL_FATAL(bl_mkdir_p(src, 0755, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(bl_mkdir_p(mnt, 0755, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(bl_write_file(keep, "k", 1, 0644, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(mount(src, mnt, NULL, MS_BIND, NULL), 0);
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT(bl_rm_rf(top, &err) < 0);
	CU_ASSERT(strstr(err.msg, "mount point") != NULL);
	CU_ASSERT(access(keep, F_OK) == 0);
	CU_ASSERT_EQUAL(umount2(mnt, MNT_DETACH), 0);
	CU_ASSERT_EQUAL(bl_rm_rf(top, NULL), 0);
	CU_ASSERT_EQUAL(bl_rm_rf(src, NULL), 0);
	CU_ASSERT(!mounts_mention(top));
}

static void test_errors(void)
{
	SKIP_UNLESS_ENV();
	bl_error_t err = BL_ERROR_INIT;
	bl_sandbox *sb = NULL;
	const char *const t[] = {"true", NULL};
	/* Missing image. */
	bl_sandbox_options o = sb_opts(t);
	o.rootfs = NULL;
	o.image = "/nonexistent/image.tar";
	CU_ASSERT(bl_sandbox_create(&o, &sb, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_ENOTFOUND);
	CU_ASSERT(strstr(err.msg, "/nonexistent/image.tar") != NULL);
	o = sb_opts(t);
	o.rootfs = "/nonexistent/rootfs";
	CU_ASSERT(bl_sandbox_create(&o, &sb, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_ENOTFOUND);
	/* Bad options. */
	o = sb_opts(t);
	o.memory_mib = 1;
	CU_ASSERT(bl_sandbox_create(&o, &sb, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	CU_ASSERT(strstr(err.msg, "memory") != NULL);
	o = sb_opts(t);
	o.network = true;
	const char *const bad_port[] = {"80:99999", NULL};
	o.net_publish = bad_port;
	CU_ASSERT(bl_sandbox_create(&o, &sb, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	o = sb_opts(t);
	o.accel = "xen";
	CU_ASSERT(bl_sandbox_create(&o, &sb, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	/* A command that does not exist. */
	const char *const nx[] = {"/no/such/command", NULL};
	o = sb_opts(nx);
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_create(&o, &sb, &err), 0);
	bl_process *p = NULL;
	CU_ASSERT(bl_sandbox_start(sb, &p, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_ENOTFOUND);
	CU_ASSERT(strstr(err.msg, "/no/such/command") != NULL);
	printf("\n  %s\n", err.msg);
	bl_sandbox_destroy(sb);
	sb_assert_clean();
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"output_and_status", test_output_and_status},
	    {"stdin_env_cwd_user", test_stdin_env_cwd_user},
	    {"signal_death_and_exec", test_signal_death_and_exec},
	    {"timeout", test_timeout},
	    {"oom", test_oom},
	    {"fork_bomb", test_fork_bomb},
	    {"disk_limit", test_disk_limit},
	    {"isolation", test_isolation},
	    {"readonly_share", test_readonly_share},
	    {"rm_rf_stops_at_bind", test_rm_rf_stops_at_bind},
	    {"errors", test_errors},
	    {NULL, NULL},
	};
	int rc = bl_test_run("run", cases);
	sb_env_teardown();
	return rc;
}
