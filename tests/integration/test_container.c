/*
 * The container layer on real VMs: a bare sandbox holding several containers
 * from different root filesystems (created after boot, through the one
 * virtio-fs share), per-container exec/signal/wait/pids/stats/pause/resume/
 * update/delete, OCI bind mounts (read-only and read-write), a read-only
 * root, specs the VM cannot honour, the VM dying under a waiting caller, and
 * nothing left behind.
 */
#include "sandbox_env.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>

#define SKIP_UNLESS_ENV() \
	BL_SKIP_UNLESS(sb_env_setup("container"), "needs root, /bin/busybox and the guest kernel")

/* A copy of the busybox rootfs with /marker and /only-<tag>. */
static char *make_rootfs(const char *tag)
{
	char *dir = bl_asprintf("%s/root-%s", env.dir, tag);
	_cleanup_free_ char *cmd = bl_asprintf("cp -a %s %s", env.rootfs, dir);
	CU_ASSERT_FATAL(system(cmd) == 0);
	_cleanup_free_ char *marker = bl_asprintf("%s/marker", dir);
	_cleanup_free_ char *only = bl_asprintf("%s/only-%s", dir, tag);
	CU_ASSERT_FATAL(bl_write_file(marker, tag, strlen(tag), 0644, NULL) == 0);
	CU_ASSERT_FATAL(bl_write_file(only, "x", 1, 0644, NULL) == 0);
	return dir;
}

static bl_sandbox *bare_sandbox(void)
{
	bl_sandbox_options o = sb_opts(NULL);
	o.rootfs = NULL;
	o.bare = true;
	o.memory_mib = 256;
	bl_sandbox *sb = NULL;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_sandbox_create(&o, &sb, &err) < 0)
		printf("\n  create: %s\n", err.msg);
	CU_ASSERT_FATAL(sb != NULL);
	CU_ASSERT_PTR_NULL(bl_sandbox_container(sb));
	return sb;
}

/* An init that exits 3 on SIGTERM (a pid-namespace init ignores signals it
 * has no handler for). */
static const char init_loop[] = "[\"sh\",\"-c\",\"trap 'exit 3' TERM; while :; do sleep 1; done\"]";

static char *spec_with(const char *args_json, const char *extra)
{
	return bl_asprintf("{\"ociVersion\":\"1.0.2\",\"process\":{\"terminal\":false,"
			   "\"user\":{\"uid\":0,\"gid\":0},\"args\":%s,"
			   "\"env\":[\"PATH=/bin\",\"WHO=spec\"],\"cwd\":\"/\","
			   "\"noNewPrivileges\":true},"
			   "\"root\":{\"path\":\"/nonexistent/ignored\",\"readonly\":false},"
			   "\"hostname\":\"ctr\",\"annotations\":{\"io.example/k\":\"v\"}%s}",
			   args_json, extra ? extra : "");
}

/* Runs argv in c; returns its stdout (malloc'd) and status. */
static char *run_in(bl_container *c, const char *const *argv, int *status)
{
	bl_process_options po = {.args = argv};
	bl_process *p = NULL;
	bl_error_t err = BL_ERROR_INIT;
	*status = -1;
	if (bl_container_exec_opts(c, NULL, &po, &p, &err) < 0) {
		printf("\n  exec %s: %s\n", argv[0], err.msg);
		return bl_strdup("");
	}
	char *out = sb_read_all(p, 1);
	bl_exit ex;
	if (bl_process_wait(p, &ex, &err) == 0)
		*status = ex.status;
	else
		printf("\n  wait: %s\n", err.msg);
	bl_process_free(p);
	return out;
}

static bl_container *create(bl_sandbox *sb, const char *id, const char *root, const char *spec,
			    bl_error_t *err)
{
	bl_container_options co = {.id = id, .rootfs = root, .spec_json = spec, .disk_mib = 8};
	bl_container *c = NULL;
	if (bl_container_create(sb, &co, &c, err) < 0)
		return NULL;
	return c;
}

static void test_two_containers(void)
{
	SKIP_UNLESS_ENV();
	_cleanup_free_ char *ra = make_rootfs("a");
	_cleanup_free_ char *rb = make_rootfs("b");
	bl_sandbox *sb = bare_sandbox();
	_cleanup_free_ char *spec = spec_with(init_loop, NULL);
	bl_error_t err = BL_ERROR_INIT;
	bl_container *c1 = create(sb, "one", ra, spec, &err);
	if (!c1)
		printf("\n  create one: %s\n", err.msg);
	CU_ASSERT_FATAL(c1 != NULL);
	bl_container *c2 = create(sb, "two", rb, spec, &err);
	if (!c2)
		printf("\n  create two: %s\n", err.msg);
	CU_ASSERT_FATAL(c2 != NULL);
	CU_ASSERT_STRING_EQUAL(bl_container_id(c1), "one");
	CU_ASSERT_PTR_EQUAL(bl_sandbox_find_container(sb, "two"), c2);
	CU_ASSERT_PTR_EQUAL(bl_container_sandbox(c2), sb);
	CU_ASSERT_STRING_EQUAL(bl_container_annotation(c1, "io.example/k"), "v");
	CU_ASSERT_PTR_NULL(bl_container_annotation(c1, "nope"));
	CU_ASSERT_STRING_EQUAL(bl_container_status(c1), "created");
	/* Same id twice: refused. */
	CU_ASSERT_PTR_NULL(create(sb, "one", ra, spec, &err));
	CU_ASSERT_EQUAL(err.code, BL_EEXIST);

	bl_process *i1 = NULL, *i2 = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_container_start(c1, &i1, &err), 0);
	CU_ASSERT_EQUAL_FATAL(bl_container_start(c2, &i2, &err), 0);
	CU_ASSERT_PTR_EQUAL(bl_process_container(i1), c1);
	CU_ASSERT_STRING_EQUAL(bl_process_exec_id(i1), "");
	CU_ASSERT_STRING_EQUAL(bl_container_status(c1), "running");
	bl_process *again = NULL;
	CU_ASSERT_EQUAL(bl_container_start(c1, &again, &err), -BL_ESTATE);

	/* Each sees its own root only, and the spec's env and hostname. */
	int st;
	const char *const cat[] = {"cat", "/marker", NULL};
	_cleanup_free_ char *m1 = run_in(c1, cat, &st);
	CU_ASSERT_STRING_EQUAL(m1, "a");
	_cleanup_free_ char *m2 = run_in(c2, cat, &st);
	CU_ASSERT_STRING_EQUAL(m2, "b");
	const char *const other[] = {"test", "-e", "/only-b", NULL};
	_cleanup_free_ char *o1 = run_in(c1, other, &st);
	CU_ASSERT_EQUAL(st, 1);
	const char *const envp[] = {"sh", "-c", "echo $WHO $(hostname)", NULL};
	_cleanup_free_ char *e1 = run_in(c1, envp, &st);
	CU_ASSERT_STRING_EQUAL(e1, "spec ctr\n");

	/* exec with a caller-chosen id and an OCI process. */
	bl_process *x = NULL;
	const char *proc = "{\"args\":[\"sh\",\"-c\",\"echo from-json; exit 7\"],\"env\":[\"PATH=/"
			   "bin\"],\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0}}";
	CU_ASSERT_EQUAL_FATAL(bl_container_exec(c2, "exec-1", proc, false, false, &x, &err), 0);
	CU_ASSERT_STRING_EQUAL(bl_process_exec_id(x), "exec-1");
	_cleanup_free_ char *xo = sb_read_all(x, 1);
	bl_exit ex;
	CU_ASSERT_EQUAL(bl_process_wait(x, &ex, &err), 0);
	CU_ASSERT_EQUAL(ex.status, 7);
	CU_ASSERT(bl_process_exited_at(x) > 0);
	CU_ASSERT_STRING_EQUAL(xo, "from-json\n");
	bl_process_free(x);
	x = NULL;
	CU_ASSERT_EQUAL(bl_container_exec(c2, "exec-1", proc, false, false, &x, &err), -BL_EEXIST);
	CU_ASSERT_EQUAL(bl_container_exec(c2, "../x", proc, false, false, &x, &err), -BL_EINVAL);

	/* pids and stats per container. */
	uint32_t *pids = NULL;
	size_t n = 0;
	CU_ASSERT_EQUAL(bl_container_pids(c1, &pids, &n, &err), 0);
	bool has_init = false;
	for (size_t i = 0; i < n; i++)
		has_init = has_init || pids[i] == bl_process_pid(i1);
	CU_ASSERT(n >= 1 && has_init);
	free(pids);
	bl_stats s;
	CU_ASSERT_EQUAL(bl_container_stats(c1, &s, &err), 0);
	CU_ASSERT(s.memory_current > 0);
	CU_ASSERT(s.pids_current >= 1);
	CU_ASSERT(s.cpu_usage_usec > 0);

	/* update: a memory limit the VM has, then one it has not. */
	bl_resources res;
	bl_resources_init(&res);
	res.memory_limit = 64ll << 20;
	res.pids_limit = 100;
	CU_ASSERT_EQUAL(bl_container_update(c1, &res, &err), 0);
	CU_ASSERT_EQUAL(bl_container_stats(c1, &s, &err), 0);
	CU_ASSERT_EQUAL(s.memory_max, 64ull << 20);
	CU_ASSERT_EQUAL(s.pids_max, 100);
	res.memory_limit = 4096ll << 20;
	CU_ASSERT_EQUAL(bl_container_update(c1, &res, &err), -BL_EUNSUPPORTED);
	CU_ASSERT_EQUAL(
	    bl_container_update_json(c1, "{\"cpu\":{\"quota\":50000,\"period\":100000}}", &err), 0);
	CU_ASSERT_EQUAL(bl_container_update_json(c1, "{\"blockIO\":{\"weight\":10}}", &err),
			-BL_EUNSUPPORTED);

	/* pause c1: c2 keeps running; resume. */
	CU_ASSERT_EQUAL(bl_container_pause(c1, &err), 0);
	CU_ASSERT_STRING_EQUAL(bl_container_status(c1), "paused");
	_cleanup_free_ char *m2b = run_in(c2, cat, &st);
	CU_ASSERT_STRING_EQUAL(m2b, "b");
	CU_ASSERT_EQUAL(bl_container_resume(c1, &err), 0);
	_cleanup_free_ char *m1b = run_in(c1, cat, &st);
	CU_ASSERT_STRING_EQUAL(m1b, "a");

	/* signal the init: its TERM trap exits 3. */
	CU_ASSERT_EQUAL(bl_container_signal(c1, SIGTERM, false, &err), 0);
	CU_ASSERT_EQUAL(bl_process_wait(i1, &ex, &err), 0);
	CU_ASSERT_EQUAL(ex.status, 3);
	CU_ASSERT_STRING_EQUAL(bl_container_status(c1), "stopped");
	bl_process_free(i1);

	/* The share itself is read-only (also to the guest, through virtiofsd)
	 * outside of a create or delete. */
	_cleanup_free_ char *junk = bl_asprintf("%s/share/junk", bl_sandbox_dir(sb));
	int jfd = open(junk, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	CU_ASSERT(jfd < 0 && errno == EROFS);
	if (jfd >= 0)
		close(jfd);
	const char *const gw[] = {"sh", "-c", "mkdir /tmp/s && echo x > /tmp/s/f", NULL};
	_cleanup_free_ char *gwo = run_in(c2, gw, &st);
	CU_ASSERT_EQUAL(st, 0);

	/* delete c1: its host mounts go, c2 is untouched. */
	_cleanup_free_ char *share_c1 = bl_asprintf("%s/share/c0/rootfs", bl_sandbox_dir(sb));
	CU_ASSERT(mounts_mention(share_c1));
	CU_ASSERT_EQUAL(bl_container_delete(c1, &err), 0);
	CU_ASSERT(!mounts_mention(share_c1));
	CU_ASSERT_PTR_NULL(bl_sandbox_find_container(sb, "one"));
	_cleanup_free_ char *m2c = run_in(c2, cat, &st);
	CU_ASSERT_STRING_EQUAL(m2c, "b");
	/* Signal every process of c2, then destroy with c2 still there. */
	CU_ASSERT_EQUAL(bl_container_signal(c2, SIGKILL, true, &err), 0);
	CU_ASSERT_EQUAL(bl_process_wait(i2, &ex, &err), 0);
	CU_ASSERT_EQUAL(ex.signal, SIGKILL);
	bl_process_free(i2);
	bl_sandbox_destroy(sb);
	sb_assert_clean();
}

static void test_binds_and_errors(void)
{
	SKIP_UNLESS_ENV();
	_cleanup_free_ char *root = make_rootfs("bind");
	_cleanup_free_ char *ro_dir = bl_asprintf("%s/host-ro", env.dir);
	_cleanup_free_ char *rw_dir = bl_asprintf("%s/host-rw", env.dir);
	_cleanup_free_ char *file = bl_asprintf("%s/host-file", env.dir);
	CU_ASSERT_FATAL(mkdir(ro_dir, 0755) == 0 && mkdir(rw_dir, 0777) == 0);
	_cleanup_free_ char *in = bl_asprintf("%s/in.txt", ro_dir);
	CU_ASSERT_FATAL(bl_write_file(in, "ro-data", 7, 0644, NULL) == 0);
	CU_ASSERT_FATAL(bl_write_file(file, "file-data", 9, 0644, NULL) == 0);
	bl_sandbox *sb = bare_sandbox();
	bl_error_t err = BL_ERROR_INIT;

	_cleanup_free_ char *mounts = bl_asprintf(
	    ",\"mounts\":[{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\"},"
	    "{\"destination\":\"/dev\",\"type\":\"tmpfs\",\"source\":\"tmpfs\",\"options\":["
	    "\"nosuid\",\"mode=755\"]},"
	    "{\"destination\":\"/data-ro\",\"type\":\"bind\",\"source\":\"%s\",\"options\":["
	    "\"rbind\",\"ro\"]},"
	    "{\"destination\":\"/mnt/deep/rw\",\"type\":\"bind\",\"source\":\"%s\",\"options\":["
	    "\"rbind\",\"rw\"]},"
	    "{\"destination\":\"/etc/hello.txt\",\"source\":\"%s\",\"options\":[\"bind\",\"ro\"]},"
	    "{\"destination\":\"/scratch\",\"type\":\"tmpfs\",\"source\":\"tmpfs\",\"options\":["
	    "\"size=1m\"]}]",
	    ro_dir, rw_dir, file);
	_cleanup_free_ char *spec = spec_with(init_loop, mounts);
	bl_container *c = create(sb, "binds", root, spec, &err);
	if (!c)
		printf("\n  create binds: %s\n", err.msg);
	CU_ASSERT_FATAL(c != NULL);
	bl_process *ci = NULL, *ri = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_container_start(c, &ci, &err), 0);
	int st;
	const char *const rd[] = {"cat", "/data-ro/in.txt", "/etc/hello.txt", NULL};
	_cleanup_free_ char *o1 = run_in(c, rd, &st);
	CU_ASSERT_STRING_EQUAL(o1, "ro-datafile-data");
	const char *const wr_ro[] = {"sh", "-c", "echo x > /data-ro/new", NULL};
	_cleanup_free_ char *o2 = run_in(c, wr_ro, &st);
	CU_ASSERT_NOT_EQUAL(st, 0);
	_cleanup_free_ char *gone = bl_asprintf("%s/new", ro_dir);
	CU_ASSERT(access(gone, F_OK) < 0);
	const char *const wr_rw[] = {"sh", "-c", "echo written > /mnt/deep/rw/out.txt", NULL};
	_cleanup_free_ char *o3 = run_in(c, wr_rw, &st);
	CU_ASSERT_EQUAL(st, 0);
	_cleanup_free_ char *out_path = bl_asprintf("%s/out.txt", rw_dir);
	_cleanup_free_ char *got = NULL;
	CU_ASSERT_EQUAL(bl_read_file(out_path, 4096, &got, NULL, NULL), 0);
	CU_ASSERT(got && !strcmp(got, "written\n"));
	const char *const tmp[] = {"sh", "-c", "echo t > /scratch/t && cat /scratch/t", NULL};
	_cleanup_free_ char *o4 = run_in(c, tmp, &st);
	CU_ASSERT_STRING_EQUAL(o4, "t\n");
	/* The rootfs itself stays read-only on the host: writes land in the
	 * guest's overlay. */
	const char *const wroot[] = {"sh", "-c", "echo y > /marker && cat /marker", NULL};
	_cleanup_free_ char *o5 = run_in(c, wroot, &st);
	CU_ASSERT_STRING_EQUAL(o5, "y\n");
	_cleanup_free_ char *host_marker = bl_asprintf("%s/marker", root);
	_cleanup_free_ char *hm = NULL;
	CU_ASSERT_EQUAL(bl_read_file(host_marker, 64, &hm, NULL, NULL), 0);
	CU_ASSERT(hm && !strcmp(hm, "bind"));

	/* A read-only root (spec root.readonly). */
	_cleanup_free_ char *ro_spec = spec_with(init_loop, NULL);
	char *p = strstr(ro_spec, "\"readonly\":false");
	CU_ASSERT_FATAL(p != NULL);
	memcpy(p, "\"readonly\":true ", 16);
	bl_container *r = create(sb, "roroot", root, ro_spec, &err);
	if (!r)
		printf("\n  create roroot: %s\n", err.msg);
	CU_ASSERT_FATAL(r != NULL);
	CU_ASSERT_EQUAL_FATAL(bl_container_start(r, &ri, &err), 0);
	const char *const touch[] = {"touch", "/newfile", NULL};
	_cleanup_free_ char *o6 = run_in(r, touch, &st);
	CU_ASSERT_NOT_EQUAL(st, 0);

	/* user, rlimits, capabilities, noNewPrivileges from the spec; exec
	 * inherits the user. */
	_cleanup_free_ char *user_spec = bl_asprintf(
	    "{\"ociVersion\":\"1.0.2\",\"process\":{\"user\":{\"uid\":65534,\"gid\":65534},"
	    "\"args\":%s,\"env\":[\"PATH=/bin\"],\"cwd\":\"/tmp\",\"rlimits\":[{\"type\":"
	    "\"RLIMIT_NOFILE\",\"hard\":77,\"soft\":77}],\"capabilities\":{\"bounding\":["
	    "\"CAP_KILL\"],\"effective\":[],\"permitted\":[]},\"noNewPrivileges\":true},"
	    "\"root\":{\"path\":\"rootfs\"}}",
	    init_loop);
	bl_container *u = create(sb, "user", root, user_spec, &err);
	if (!u)
		printf("\n  create user: %s\n", err.msg);
	CU_ASSERT_FATAL(u != NULL);
	bl_process *ui = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_container_start(u, &ui, &err), 0);
	const char *const who[] = {
	    "sh", "-c",
	    "exec 2>&1; id -u; ulimit -n; pwd; busybox grep -E '^(CapBnd|NoNewPrivs)' "
	    "/proc/self/status; busybox grep -E '^(CapBnd|NoNewPrivs)' /proc/1/status; "
	    "busybox grep 'open files' /proc/1/limits | busybox tr -s ' '",
	    NULL};
	_cleanup_free_ char *wo = run_in(u, who, &st);
	const char *want =
	    "65534\n77\n/tmp\nCapBnd:\t0000000000000020\nNoNewPrivs:\t1\n"
	    "CapBnd:\t0000000000000020\nNoNewPrivs:\t1\nMax open files 77 77 files \n";
	CU_ASSERT_STRING_EQUAL(wo, want);
	if (strcmp(wo, want))
		printf("\n  got: %s\n", wo);
	bl_process_free(ui);

	/* The spec's seccomp profile is applied: mkdir refused with EPERM. */
	_cleanup_free_ char *sec = spec_with(
	    init_loop, ",\"linux\":{\"seccomp\":{\"defaultAction\":\"SCMP_ACT_ALLOW\","
		       "\"architectures\":[\"SCMP_ARCH_X86_64\"],\"syscalls\":[{\"names\":["
		       "\"mkdir\",\"mkdirat\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":1}]}}");
	bl_container *sc = create(sb, "seccomp", root, sec, &err);
	if (!sc)
		printf("\n  create seccomp: %s\n", err.msg);
	CU_ASSERT_FATAL(sc != NULL);
	bl_process *si = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_container_start(sc, &si, &err), 0);
	const char *const mk[] = {
	    "sh", "-c", "mkdir /tmp/nope 2>&1; echo rc=$?; touch /tmp/ok && echo ok", NULL};
	_cleanup_free_ char *mo = run_in(sc, mk, &st);
	CU_ASSERT(strstr(mo, "Operation not permitted") && strstr(mo, "rc=1") &&
		  strstr(mo, "ok\n"));
	if (!strstr(mo, "Operation not permitted"))
		printf("\n  seccomp: %s\n", mo);
	bl_process_free(si);

	/* What the VM cannot honour: clear errors, nothing left on the host. */
	static const struct {
		const char *extra;
		int code;
		const char *word;
	} bad[] = {
	    {",\"linux\":{\"sysctl\":{\"kernel.shmmax\":\"1\"}}", BL_EUNSUPPORTED, "sysctl"},
	    {",\"linux\":{\"seccomp\":{\"defaultAction\":\"SCMP_ACT_NOPE\"}}", BL_EINVAL,
	     "seccomp"},
	    {",\"hooks\":{\"prestart\":[{\"path\":\"/bin/true\"}]}", BL_EUNSUPPORTED, "hooks"},
	    {",\"mounts\":[{\"destination\":\"/n\",\"type\":\"nfs\",\"source\":\"h:/x\"}]",
	     BL_EUNSUPPORTED, "nfs"},
	    {",\"linux\":{\"namespaces\":[{\"type\":\"user\"}]}", BL_EUNSUPPORTED, "user"},
	    {",\"mounts\":[{\"destination\":\"/x\",\"type\":\"bind\",\"source\":\"/nonexistent/"
	     "boxlite\"}]",
	     BL_ENOTFOUND, "nonexistent"},
	    {",\"mounts\":[{\"destination\":\"/x/../..\",\"type\":\"bind\",\"source\":\"/tmp\"}]",
	     BL_EINVAL, "destination"},
	};
	for (size_t i = 0; i < BL_ARRAY_SIZE(bad); i++) {
		_cleanup_free_ char *s = spec_with(init_loop, bad[i].extra);
		bl_error_t e = BL_ERROR_INIT;
		CU_ASSERT_PTR_NULL(create(sb, "bad", root, s, &e));
		CU_ASSERT_EQUAL(e.code, bad[i].code);
		CU_ASSERT(strstr(e.msg, bad[i].word) != NULL);
		if ((int)e.code != bad[i].code || !strstr(e.msg, bad[i].word))
			printf("\n  case %zu: %s\n", i, e.msg);
	}
	bl_error_t e = BL_ERROR_INIT;
	CU_ASSERT_PTR_NULL(create(sb, "bad", root, "{not json", &e));
	CU_ASSERT_EQUAL(e.code, BL_EINVAL);
	CU_ASSERT_PTR_NULL(bl_sandbox_find_container(sb, "bad"));
	/* In the share: the four good containers' directories and the one of
	 * the spec the agent refused (the guest saw it, so it stays until the
	 * share goes); none of the specs refused on the host left anything. */
	_cleanup_free_ char *share = bl_asprintf("%s/share", bl_sandbox_dir(sb));
	_cleanup_closedir_ DIR *d = opendir(share);
	int entries = 0;
	struct dirent *de;
	while (d && (de = readdir(d)))
		entries += de->d_name[0] != '.';
	CU_ASSERT_EQUAL(entries, 5);

	/* Delete releases the bind mounts too. */
	_cleanup_free_ char *share_m = bl_asprintf("%s/share/c0/m0", bl_sandbox_dir(sb));
	CU_ASSERT(mounts_mention(share_m));
	CU_ASSERT_EQUAL(bl_container_delete(c, &err), 0);
	CU_ASSERT(!mounts_mention(share_m));
	bl_process_free(ci);
	bl_process_free(ri);
	bl_sandbox_destroy(sb);
	sb_assert_clean();
}

struct waiter {
	bl_process *p;
	int r;
	bl_error_t err;
};

static void *wait_main(void *arg)
{
	struct waiter *w = arg;
	bl_exit ex;
	w->r = bl_process_wait(w->p, &ex, &w->err);
	return NULL;
}

static void test_vm_death(void)
{
	SKIP_UNLESS_ENV();
	bl_sandbox *sb = bare_sandbox();
	_cleanup_free_ char *spec = spec_with(init_loop, NULL);
	bl_error_t err = BL_ERROR_INIT;
	bl_container *c = create(sb, "victim", env.rootfs, spec, &err);
	CU_ASSERT_FATAL(c != NULL);
	bl_process *init = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_container_start(c, &init, &err), 0);
	CU_ASSERT(bl_sandbox_alive(sb));
	CU_ASSERT_EQUAL(bl_sandbox_wait_dead(sb, 100, &err), -BL_ETIMEOUT);
	struct waiter w = {.p = init};
	pthread_t t;
	CU_ASSERT_FATAL(pthread_create(&t, NULL, wait_main, &w) == 0);
	usleep(200 * 1000);
	pid_t q = bl_sandbox_qemu_pid(sb);
	CU_ASSERT_FATAL(q > 0);
	CU_ASSERT_EQUAL(kill(q, SIGKILL), 0);
	CU_ASSERT_EQUAL(bl_sandbox_wait_dead(sb, 30000, &err), 0);
	pthread_join(t, NULL);
	/* BL_EBACKEND naming QEMU once the reaper saw it die, else BL_EAGENTLOST. */
	CU_ASSERT(w.r == -BL_EBACKEND || w.r == -BL_EAGENTLOST);
	CU_ASSERT(w.r != -BL_EBACKEND || strstr(w.err.msg, "QEMU") != NULL);
	printf("\n  pending wait: %s (%s)\n", bl_code_name(w.err.code), w.err.msg);
	CU_ASSERT(!bl_sandbox_alive(sb));
	bl_stats s;
	int sr = bl_container_stats(c, &s, &err);
	CU_ASSERT(sr == -BL_EBACKEND || sr == -BL_EAGENTLOST);
	bl_process_free(init);
	bl_sandbox_destroy(sb);
	sb_assert_clean();
}

struct par {
	bl_sandbox *sb;
	const char *root, *spec;
	char id[16];
	bl_container *c;
	bl_process *init;
	char *out;
	int r;
};

static void *create_main(void *arg)
{
	struct par *p = arg;
	bl_error_t err = BL_ERROR_INIT;
	p->c = create(p->sb, p->id, p->root, p->spec, &err);
	p->r = p->c ? bl_container_start(p->c, &p->init, &err) : -1;
	if (p->r == 0) {
		int st;
		const char *const argv[] = {"sh", "-c", "hostname; cat /marker", NULL};
		p->out = run_in(p->c, argv, &st);
	}
	if (p->r < 0)
		printf("\n  %s: %s\n", p->id, err.msg);
	return NULL;
}

static void *delete_main(void *arg)
{
	struct par *p = arg;
	bl_error_t err = BL_ERROR_INIT;
	bl_process_free(p->init);
	p->r = bl_container_delete(p->c, &err);
	return NULL;
}

/* A pod's containers may be created, used and deleted at the same time. */
static void test_concurrent(void)
{
	SKIP_UNLESS_ENV();
	_cleanup_free_ char *root = make_rootfs("par");
	bl_sandbox *sb = bare_sandbox();
	_cleanup_free_ char *spec = spec_with(init_loop, NULL);
	struct par ps[4];
	pthread_t t[4];
	for (int i = 0; i < 4; i++) {
		ps[i] = (struct par){.sb = sb, .root = root, .spec = spec};
		snprintf(ps[i].id, sizeof(ps[i].id), "par%d", i);
		CU_ASSERT_FATAL(pthread_create(&t[i], NULL, create_main, &ps[i]) == 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 4; i++) {
		CU_ASSERT_EQUAL(ps[i].r, 0);
		CU_ASSERT(ps[i].out && !strcmp(ps[i].out, "ctr\npar"));
		free(ps[i].out);
	}
	for (int i = 0; i < 4; i++)
		if (ps[i].c)
			CU_ASSERT_FATAL(pthread_create(&t[i], NULL, delete_main, &ps[i]) == 0);
	for (int i = 0; i < 4; i++)
		if (ps[i].c) {
			pthread_join(t[i], NULL);
			CU_ASSERT_EQUAL(ps[i].r, 0);
		}
	CU_ASSERT_PTR_NULL(bl_sandbox_find_container(sb, "par0"));
	bl_sandbox_destroy(sb);
	sb_assert_clean();
}

/* The CLI path: a non-bare sandbox's built-in container is reachable as a
 * container too. */
static void test_main_container(void)
{
	SKIP_UNLESS_ENV();
	bl_sandbox_options o = sb_opts(NULL);
	bl_sandbox *sb = NULL;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_create(&o, &sb, &err), 0);
	bl_container *m = bl_sandbox_container(sb);
	CU_ASSERT_FATAL(m != NULL);
	CU_ASSERT_STRING_EQUAL(bl_container_id(m), "main");
	bl_process *init = NULL;
	CU_ASSERT_EQUAL(bl_sandbox_start(sb, &init, &err), 0);
	int st;
	const char *const ls[] = {"ls", "/bin/busybox", NULL};
	_cleanup_free_ char *out = run_in(m, ls, &st);
	CU_ASSERT_STRING_EQUAL(out, "/bin/busybox\n");
	bl_stats s;
	CU_ASSERT_EQUAL(bl_container_stats(m, &s, &err), 0);
	CU_ASSERT(s.memory_max > 0);
	char ver[64] = "";
	CU_ASSERT_EQUAL(bl_sandbox_ping(sb, ver, sizeof(ver), &err), 0);
	CU_ASSERT(ver[0] != '\0');
	/* The whole VM suspended and resumed: the guest carries on. */
	CU_ASSERT(!bl_sandbox_suspended(sb));
	CU_ASSERT_EQUAL(bl_sandbox_suspend(sb, &err), 0);
	CU_ASSERT(bl_sandbox_suspended(sb));
	CU_ASSERT(bl_sandbox_alive(sb));
	CU_ASSERT_EQUAL(bl_sandbox_resume(sb, &err), 0);
	CU_ASSERT(!bl_sandbox_suspended(sb));
	_cleanup_free_ char *out2 = run_in(m, ls, &st);
	CU_ASSERT_STRING_EQUAL(out2, "/bin/busybox\n");
	bl_process_free(init);
	bl_sandbox_destroy(sb);
	sb_assert_clean();
}

int main(void)
{
	static const bl_test_case tests[] = {
	    {"two containers in one VM", test_two_containers},
	    {"bind mounts, read-only root, unsupported specs", test_binds_and_errors},
	    {"the VM dies under a waiting caller", test_vm_death},
	    {"containers created and deleted concurrently", test_concurrent},
	    {"the built-in container", test_main_container},
	    {NULL, NULL},
	};
	int rc = bl_test_run("container", tests);
	sb_env_teardown();
	return rc;
}
