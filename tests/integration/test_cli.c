/*
 * The boxlite CLI end to end: exit codes from the documented table, stdout
 * holding only the program's output, stdin, --python, timeouts, long-lived
 * sandboxes (create/exec/cp/ls/logs/stop/rm, concurrent execs), SIGTERM, and
 * garbage collection after the owner is killed.
 */
#include "sandbox_env.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#define SKIP_UNLESS_ENV() \
	BL_SKIP_UNLESS(sb_env_setup("cli"), "needs root, /bin/busybox and the guest kernel")

struct result {
	int rc;
	char *out, *err;
};

static void result_clear(struct result *r)
{
	free(r->out);
	free(r->err);
	*r = (struct result){0};
}

static char *cli_path(void)
{
	return bl_asprintf("%s/boxlite", bl_test_build_dir());
}

static void child_env(void)
{
	setenv("BOXLITE_STATE_DIR", env.state, 1);
	setenv("BOXLITE_KERNEL", env.kernel, 1);
	setenv("BOXLITE_INITRD", env.initrd, 1);
}

/* Starts boxlite with argv (NULL-terminated, without the program name). */
static pid_t spawn(const char *const *argv, int *in_fd, int *out_fd, int *err_fd)
{
	int in[2], out[2], errp[2];
	if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(errp, O_CLOEXEC))
		return -1;
	size_t n = 0;
	while (argv[n])
		n++;
	char **args = bl_malloc0((n + 2) * sizeof(char *));
	args[0] = cli_path();
	for (size_t i = 0; i < n; i++)
		args[i + 1] = (char *)argv[i];
	pid_t pid = fork();
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(errp[1], 2);
		child_env();
		execv(args[0], args);
		_exit(99);
	}
	free(args[0]);
	free(args);
	close(in[0]);
	close(out[1]);
	close(errp[1]);
	*in_fd = in[1];
	*out_fd = out[0];
	*err_fd = errp[0];
	return pid;
}

static char *drain(int fd)
{
	size_t cap = 4096, len = 0;
	char *buf = bl_malloc0(cap);
	ssize_t n;
	while ((n = read(fd, buf + len, cap - len - 1)) > 0) {
		len += (size_t)n;
		if (cap - len < 1024) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
	}
	buf[len] = '\0';
	close(fd);
	return buf;
}

struct drainer {
	int fd;
	char *buf;
	pthread_t t;
};

static void *drain_main(void *arg)
{
	struct drainer *d = arg;
	d->buf = drain(d->fd);
	return NULL;
}

static int wait_rc(pid_t pid)
{
	int st = 0;
	while (waitpid(pid, &st, 0) < 0)
		;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs boxlite to completion with the given stdin. */
static struct result cli(const char *input, const char *const *argv)
{
	struct result r = {.rc = -1};
	int in, out, errf;
	pid_t pid = spawn(argv, &in, &out, &errf);
	if (pid < 0)
		return r;
	struct drainer d_out = {.fd = out}, d_err = {.fd = errf};
	pthread_create(&d_out.t, NULL, drain_main, &d_out);
	pthread_create(&d_err.t, NULL, drain_main, &d_err);
	if (input)
		(void)bl_write_full(in, input, strlen(input));
	close(in);
	pthread_join(d_out.t, NULL);
	pthread_join(d_err.t, NULL);
	r.rc = wait_rc(pid);
	r.out = d_out.buf;
	r.err = d_err.buf;
	return r;
}

#define RUN(...) \
	((const char *const[]){"run", "--rootfs", env.rootfs, "--memory", "128", __VA_ARGS__, NULL})

static void test_status_and_streams(void)
{
	SKIP_UNLESS_ENV();
	struct result r = cli(NULL, RUN("--", "sh", "-c", "echo out; echo err >&2; exit 3"));
	CU_ASSERT_EQUAL(r.rc, 3);
	CU_ASSERT_STRING_EQUAL(r.out, "out\n");
	CU_ASSERT_STRING_EQUAL(r.err, "err\n"); /* nothing of boxlite's own */
	result_clear(&r);
	r = cli("line1\nline2\n", RUN("-i", "--", "sh", "-c", "cat; echo $X", "-e", "X=1"));
	CU_ASSERT_EQUAL(r.rc, 0);
	CU_ASSERT_STRING_EQUAL(r.out, "line1\nline2\n\n"); /* -e after -- belongs to sh */
	result_clear(&r);
	r = cli("in\n", RUN("-i", "-e", "X=1", "-w", "/etc", "-u", "65534", "--", "sh", "-c",
			    "cat; echo $X $(pwd) $(id -u)"));
	CU_ASSERT_EQUAL(r.rc, 0);
	CU_ASSERT_STRING_EQUAL(r.out, "in\n1 /etc 65534\n");
	result_clear(&r);
	sb_assert_clean();
}

static void test_exit_code_table(void)
{
	SKIP_UNLESS_ENV();
	struct result r = cli(NULL, RUN("--", "/no/such/cmd"));
	CU_ASSERT_EQUAL(r.rc, 127);
	CU_ASSERT_STRING_EQUAL(r.err, "boxlite: /no/such/cmd: no such file or directory\n");
	CU_ASSERT_STRING_EQUAL(r.out, "");
	result_clear(&r);
	r = cli(NULL, RUN("--", "nonexistent-cmd"));
	CU_ASSERT_EQUAL(r.rc, 127);
	CU_ASSERT_STRING_EQUAL(r.err, "boxlite: nonexistent-cmd: command not found\n");
	result_clear(&r);
	r = cli(NULL, RUN("--", "/etc/passwd"));
	CU_ASSERT_EQUAL(r.rc, 126);
	CU_ASSERT_STRING_EQUAL(r.err, "boxlite: /etc/passwd: permission denied\n");
	result_clear(&r);
	r = cli(NULL, RUN("--bogus", "--", "true"));
	CU_ASSERT_EQUAL(r.rc, 125);
	CU_ASSERT(strstr(r.err, "--bogus") != NULL);
	result_clear(&r);
	r = cli(NULL,
		(const char *const[]){"run", "--image", "/no/such/image", "--", "true", NULL});
	CU_ASSERT_EQUAL(r.rc, 125);
	CU_ASSERT(strstr(r.err, "/no/such/image") != NULL);
	printf("\n  missing image: %s", r.err);
	result_clear(&r);
	r = cli(NULL, RUN("--timeout", "6", "--", "sleep", "60"));
	CU_ASSERT_EQUAL(r.rc, 124);
	CU_ASSERT(strstr(r.err, "timed out after 6 s") != NULL);
	result_clear(&r);
	r = cli(NULL, RUN("--", "tail", "/dev/zero"));
	CU_ASSERT_EQUAL(r.rc, 121);
	CU_ASSERT(strstr(r.err, "out of memory") != NULL);
	result_clear(&r);
	sb_assert_clean();
}

static void test_python(void)
{
	SKIP_UNLESS_ENV();
	struct result r = cli(NULL, (const char *const[]){"run", "--python", "print(2+2)", NULL});
	if (r.rc == 125 && strstr(r.err, "image")) {
		bl_test_skip("no default image (packaging/build-default-image.sh): %s", r.err);
		result_clear(&r);
		return;
	}
	CU_ASSERT_EQUAL(r.rc, 0);
	CU_ASSERT_STRING_EQUAL(r.out, "4\n");
	result_clear(&r);
	r = cli("import sys\nprint('stdin', file=sys.stderr)\nsys.exit(7)\n",
		(const char *const[]){"run", "--python", "-", NULL});
	CU_ASSERT_EQUAL(r.rc, 7);
	CU_ASSERT_STRING_EQUAL(r.err, "stdin\n");
	result_clear(&r);
	sb_assert_clean();
}

static void test_long_lived(void)
{
	SKIP_UNLESS_ENV();
	struct result r =
	    cli(NULL, (const char *const[]){"create", "--rootfs", env.rootfs, "--memory", "128",
					    "--name", "ll1", NULL});
	CU_ASSERT_EQUAL_FATAL(r.rc, 0);
	CU_ASSERT_STRING_EQUAL(r.out, "ll1\n");
	result_clear(&r);
	/* Two execs at once through the one monitor. */
	int in1, out1, err1, in2, out2, err2;
	pid_t p1 =
	    spawn((const char *const[]){"exec", "ll1", "--", "sh", "-c", "sleep 1; echo one", NULL},
		  &in1, &out1, &err1);
	pid_t p2 =
	    spawn((const char *const[]){"exec", "ll1", "--", "sh", "-c", "echo two; exit 4", NULL},
		  &in2, &out2, &err2);
	close(in1);
	close(in2);
	_cleanup_free_ char *o1 = drain(out1), *o2 = drain(out2);
	free(drain(err1));
	free(drain(err2));
	CU_ASSERT_EQUAL(wait_rc(p1), 0);
	CU_ASSERT_EQUAL(wait_rc(p2), 4);
	CU_ASSERT_STRING_EQUAL(o1, "one\n");
	CU_ASSERT_STRING_EQUAL(o2, "two\n");
	/* Files persist between execs; cp in and out. */
	_cleanup_free_ char *src = bl_asprintf("%s/payload.txt", env.dir);
	CU_ASSERT_FATAL(bl_write_file(src, "payload\n", 8, 0644, NULL) == 0);
	_cleanup_free_ char *dst = bl_asprintf("ll1:/tmp");
	r = cli(NULL, (const char *const[]){"cp", src, dst, NULL});
	CU_ASSERT_EQUAL(r.rc, 0);
	result_clear(&r);
	r = cli(NULL, (const char *const[]){"exec", "ll1", "--", "cat", "/tmp/payload.txt", NULL});
	CU_ASSERT_STRING_EQUAL(r.out, "payload\n");
	result_clear(&r);
	r = cli(NULL, (const char *const[]){"exec", "ll1", "--", "sh", "-c",
					    "echo made > /tmp/out.txt", NULL});
	result_clear(&r);
	_cleanup_free_ char *outdir = bl_asprintf("%s/out", env.dir);
	(void)mkdir(outdir, 0755);
	r = cli(NULL, (const char *const[]){"cp", "ll1:/tmp/out.txt", outdir, NULL});
	CU_ASSERT_EQUAL(r.rc, 0);
	result_clear(&r);
	_cleanup_free_ char *got = NULL, *gotpath = bl_asprintf("%s/out.txt", outdir);
	CU_ASSERT(bl_read_file(gotpath, 100, &got, NULL, NULL) == 0 && !strcmp(got, "made\n"));
	/* ls, logs, stop (logs stay), rm. */
	r = cli(NULL, (const char *const[]){"ls", NULL});
	CU_ASSERT(strstr(r.out, "ll1") && strstr(r.out, "running"));
	result_clear(&r);
	r = cli(NULL, (const char *const[]){"exec", "ll1", "--", "nonexistent-cmd", NULL});
	CU_ASSERT_EQUAL(r.rc, 127);
	CU_ASSERT_STRING_EQUAL(r.err, "boxlite: nonexistent-cmd: command not found\n");
	result_clear(&r);
	r = cli(NULL, (const char *const[]){"rm", "ll1", NULL});
	CU_ASSERT_EQUAL(r.rc, 125); /* running: needs stop or -f */
	result_clear(&r);
	/* The monitor's read-only image view lives as long as its VM. */
	_cleanup_free_ char *share = bl_asprintf("%s/ll1/share/c0/rootfs", env.state);
	CU_ASSERT(mounts_mention(share));
	r = cli(NULL, (const char *const[]){"stop", "ll1", NULL});
	CU_ASSERT_EQUAL(r.rc, 0);
	result_clear(&r);
	CU_ASSERT(!mounts_mention(share));
	r = cli(NULL, (const char *const[]){"logs", "ll1", NULL});
	CU_ASSERT_EQUAL(r.rc, 0);
	CU_ASSERT(strstr(r.out, "boxlite-agent") != NULL);
	result_clear(&r);
	r = cli(NULL, (const char *const[]){"exec", "ll1", "--", "true", NULL});
	CU_ASSERT_EQUAL(r.rc, 125);
	result_clear(&r);
	r = cli(NULL, (const char *const[]){"rm", "ll1", NULL});
	CU_ASSERT_EQUAL(r.rc, 0);
	result_clear(&r);
	sb_assert_clean();
}

/* SIGTERM to `boxlite run`: 143, and everything released. */
static void test_sigterm(void)
{
	SKIP_UNLESS_ENV();
	int in, out, errf;
	pid_t pid = spawn(RUN("--", "sh", "-c", "echo started; sleep 100"), &in, &out, &errf);
	close(in);
	char line[64] = "";
	CU_ASSERT(bl_test_read_line(out, line, sizeof(line), 60000) > 0);
	CU_ASSERT_STRING_EQUAL(line, "started");
	uint64_t t0 = bl_now_monotonic_ns();
	kill(pid, SIGTERM);
	CU_ASSERT_EQUAL(wait_rc(pid), 143);
	printf("\n  exited %.2f s after SIGTERM\n", (double)(bl_now_monotonic_ns() - t0) / 1e9);
	close(out);
	close(errf);
	sb_assert_clean();
}

/* SIGINT while the VM boots: 130, and nothing left. */
static void test_sigint_mid_boot(void)
{
	SKIP_UNLESS_ENV();
	int in, out, errf;
	pid_t pid = spawn(RUN("--", "sleep", "100"), &in, &out, &errf);
	close(in);
	usleep(1200 * 1000);
	kill(pid, SIGINT);
	CU_ASSERT_EQUAL(wait_rc(pid), 130);
	_cleanup_free_ char *o = drain(out), *e = drain(errf);
	CU_ASSERT_STRING_EQUAL(o, "");
	sb_assert_clean();
}

/* A monitor killed with SIGKILL: the guest notices the channel closing and
 * ends the VM; `boxlite ls` removes the dead sandbox. */
static void test_dead_owner_gc(void)
{
	SKIP_UNLESS_ENV();
	struct result r =
	    cli(NULL, (const char *const[]){"create", "--rootfs", env.rootfs, "--memory", "128",
					    "--name", "gc1", NULL});
	CU_ASSERT_EQUAL_FATAL(r.rc, 0);
	result_clear(&r);
	bl_sandbox_info info;
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_info_get(env.state, "gc1", &info, NULL), 0);
	CU_ASSERT(info.pid > 0);
	kill(info.pid, SIGKILL);
	/* As a child subreaper (bl_host_prepare) we inherited the monitor. */
	(void)waitpid(info.pid, NULL, 0);
	/* Its read-only image view outlived it until the garbage collection. */
	_cleanup_free_ char *share = bl_asprintf("%s/gc1/share/c0/rootfs", env.state);
	CU_ASSERT(mounts_mention(share));
	r = cli(NULL, (const char *const[]){"ls", NULL});
	CU_ASSERT_EQUAL(r.rc, 0);
	CU_ASSERT(strstr(r.out, "gc1") == NULL);
	CU_ASSERT(!mounts_mention(share));
	result_clear(&r);
	sb_assert_clean();
}

/*
 * The owner killed mid-create. Attack (or accident): `boxlite run` is
 * SIGKILLed while libvirt is still starting its VM; QEMU sits paused (-S),
 * so no guest can notice, and the embedded driver died with its owner.
 * Must hold: the VM processes of that owner (QEMU, virtiofsd) are gone soon
 * after (its guardian kills them), and its state is removable.
 */
static void test_owner_killed_mid_create(void)
{
	SKIP_UNLESS_ENV();
	int in = -1, out = -1, errf = -1;
	/* One process (no release worker): the one killed owns the VM. */
	setenv("BOXLITE_RELEASE", "sync", 1);
	pid_t pid = spawn((const char *const[]){"run", "--rootfs", env.rootfs, "--memory", "128",
						"--", "sleep", "60", NULL},
			  &in, &out, &errf);
	unsetenv("BOXLITE_RELEASE");
	CU_ASSERT_FATAL(pid > 0);
	/* Its embedded libvirt root is RUN_DIR/libvirt/<pid>: only its QEMU's
	 * command line names it. */
	_cleanup_free_ char *needle = bl_asprintf("/libvirt/%d/", (int)pid);
	int seen = 0;
	for (int i = 0; i < 2400 && !seen; i++) {
		seen = bl_test_count_procs(needle);
		if (!seen)
			usleep(50000);
	}
	CU_ASSERT(seen > 0);
	kill(pid, SIGKILL);
	(void)waitpid(pid, NULL, 0);
	int left = -1;
	for (int i = 0; i < 600 && left != 0; i++) {
		left = bl_test_count_procs(needle);
		if (left)
			usleep(100000);
	}
	printf("\n  VM processes seen: %d, left after the owner's death: %d\n", seen, left);
	CU_ASSERT_EQUAL(left, 0);
	close(in), close(out), close(errf);
	_cleanup_free_ bl_sandbox_info *v = NULL;
	size_t n = 0;
	if (bl_sandbox_list(env.state, &v, &n, NULL) == 0)
		for (size_t i = 0; i < n; i++)
			CU_ASSERT_EQUAL(bl_sandbox_remove(env.state, v[i].id, true, NULL), 0);
	sb_assert_clean();
}

static void test_help(void)
{
	static const char *const cmds[] = {"run", "create", "exec", "cp",   "stop",
					   "rm",  "ls",	    "logs", "info", "check"};
	for (size_t i = 0; i < BL_ARRAY_SIZE(cmds); i++) {
		_cleanup_free_ char *exe = cli_path();
		_cleanup_free_ char *cmd =
		    bl_asprintf("%s %s --help >/dev/null 2>&1", exe, cmds[i]);
		CU_ASSERT_EQUAL(system(cmd), 0);
	}
	_cleanup_free_ char *exe = cli_path();
	_cleanup_free_ char *cmd = bl_asprintf("%s --help | grep -q '121 '", exe);
	CU_ASSERT_EQUAL(system(cmd), 0);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	static const bl_test_case cases[] = {
	    {"help", test_help},
	    {"status_and_streams", test_status_and_streams},
	    {"exit_code_table", test_exit_code_table},
	    {"python", test_python},
	    {"long_lived", test_long_lived},
	    {"sigterm", test_sigterm},
	    {"sigint_mid_boot", test_sigint_mid_boot},
	    {"dead_owner_gc", test_dead_owner_gc},
	    {"owner_killed_mid_create", test_owner_killed_mid_create},
	    {NULL, NULL},
	};
	int rc = bl_test_run("cli", cases);
	sb_env_teardown();
	return rc;
}
