/*
 * The escape suite: each case is an attack a hostile container (root in the
 * container, default capabilities) tries on a real sandbox, and what must
 * hold afterwards. The attacks run as tests/escape/probe.c (a static program
 * copied into the sandbox's busybox rootfs as /bin/probe) or busybox sh.
 * Every case ends with nothing of the sandbox left on the host.
 */
#include "sandbox_env.h"

#include <grp.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/wait.h>

#define SKIP_UNLESS_ENV()                                           \
	BL_SKIP_UNLESS(sb_env_setup("escape") && probe_installed(), \
		       "needs root, /bin/busybox, the guest kernel and build/tests/escape-probe")

static bool probe_installed(void)
{
	static int done = -1;
	if (done >= 0)
		return done;
	_cleanup_free_ char *src = bl_asprintf("%s/tests/escape-probe", bl_test_build_dir());
	_cleanup_free_ char *cmd = bl_asprintf("cp %s %s/bin/probe", src, env.rootfs);
	done = access(src, X_OK) == 0 && system(cmd) == 0;
	return done;
}

/* Reads from a stream until `needle` shows up (or the stream ends). */
static char *read_until(bl_process *p, const char *needle)
{
	size_t cap = 65536, len = 0;
	char *buf = bl_malloc0(cap);
	while (len < cap - 1 && !strstr(buf, needle)) {
		bl_error_t err = BL_ERROR_INIT;
		ssize_t n = bl_process_read(p, 1, buf + len, cap - len - 1, &err);
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = '\0';
	}
	return buf;
}

/* Runs args as the init of a fresh sandbox; returns its stdout (malloc'd)
 * and exit status (-1: the sandbox failed). */
__attribute__((unused)) static char *run_capture(const char *const *args, int *ret_status)
{
	bl_sandbox_options o = sb_opts(args);
	bl_error_t err = BL_ERROR_INIT;
	bl_sandbox *sb = NULL;
	*ret_status = -1;
	if (bl_sandbox_create(&o, &sb, &err) < 0) {
		printf("\n  create: %s\n", err.msg);
		return bl_strdup("");
	}
	bl_process *p = NULL;
	char *out = NULL;
	if (bl_sandbox_start(sb, &p, &err) == 0) {
		out = sb_read_all(p, 1);
		bl_exit ex;
		if (bl_process_wait(p, &ex, &err) == 0)
			*ret_status = ex.status;
		bl_process_free(p);
	}
	if (*ret_status < 0)
		printf("\n  run %s: %s\n", args[0], err.msg);
	bl_sandbox_destroy(sb);
	return out ? out : bl_strdup("");
}

static long field(const char *out, const char *key)
{
	const char *p = strstr(out, key);
	return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

/*
 * Finding 2 (agent memory). Attack: container root watches /proc for the
 * agent's children between clone and execve (cmdline still "/init"), stops
 * each with SIGSTOP and writes into its memory through /proc/PID/mem (with
 * CLONE_VM that memory was PID 1's). Must hold: no write ever succeeds, and
 * every exec still works.
 */
static void test_agent_memory_unwritable(void)
{
	SKIP_UNLESS_ENV();
	const char *const args[] = {"probe", "mem-watch", "40", NULL};
	bl_sandbox_options o = sb_opts(args);
	bl_error_t err = BL_ERROR_INIT;
	bl_sandbox *sb = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_create(&o, &sb, &err), 0);
	bl_process *init = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_start(sb, &init, &err), 0);
	free(read_until(init, "watching\n"));
	int ok = 0, n = 60;
	for (int i = 0; i < n; i++) {
		const char *const eargs[] = {"true", NULL};
		bl_process_options po = {.args = eargs};
		bl_process *p = NULL;
		bl_exit ex = {0};
		if (bl_sandbox_exec(sb, &po, &p, &err) == 0 && bl_process_wait(p, &ex, &err) == 0 &&
		    ex.status == 0)
			ok++;
		bl_process_free(p);
	}
	_cleanup_free_ char *out = read_until(init, "seen=");
	char *nl = strchr(strstr(out, "mem-writes") ? strstr(out, "mem-writes") : out, '\n');
	if (nl)
		*nl = '\0';
	printf("\n  %d/%d execs ok; probe: %s\n", ok, n, strstr(out, "mem-writes") ?: out);
	CU_ASSERT_EQUAL(field(out, "mem-writes="), 0);
	CU_ASSERT(field(out, "seen=") > 0); /* the attack did reach the window */
	/* Stopped children are killed at the exec deadline at worst, never hang. */
	CU_ASSERT(ok >= n - 3);
	bl_process_free(init);
	bl_sandbox_destroy(sb);
	sb_assert_clean();
}

struct exec_job {
	bl_sandbox *sb;
	const char *word;
	int rc;
	char out[64];
	volatile int done;
};

static void *exec_job_main(void *arg)
{
	struct exec_job *j = arg;
	const char *const eargs[] = {"echo", j->word, NULL};
	bl_process_options po = {.args = eargs};
	bl_process *p = NULL;
	bl_error_t err = BL_ERROR_INIT;
	bl_exit ex = {0};
	j->rc = -1;
	if (bl_sandbox_exec(j->sb, &po, &p, &err) == 0) {
		_cleanup_free_ char *o = sb_read_all(p, 1);
		snprintf(j->out, sizeof(j->out), "%s", o);
		if (bl_process_wait(p, &ex, &err) == 0)
			j->rc = ex.status;
	}
	bl_process_free(p);
	j->done = 1;
	return NULL;
}

static bool wait_done(struct exec_job *j, int secs)
{
	for (int i = 0; i < secs * 10 && !j->done; i++)
		usleep(100000);
	return j->done;
}

/*
 * Finding 2 (lock). Attack: container root SIGSTOPs an agent child before its
 * execve and keeps it stopped. Must hold: other execs still run (no agent
 * lock is held by the stopped child), and the stopped exec fails (the agent
 * kills it at its exec deadline) instead of hanging.
 */
static void test_stopped_child_holds_no_lock(void)
{
	SKIP_UNLESS_ENV();
	const char *const args[] = {"probe", "stop-first", "300", NULL};
	bl_sandbox_options o = sb_opts(args);
	bl_error_t err = BL_ERROR_INIT;
	bl_sandbox *sb = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_create(&o, &sb, &err), 0);
	bl_process *init = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_start(sb, &init, &err), 0);
	free(read_until(init, "watching\n"));
	struct exec_job victim = {.sb = sb, .word = "victim"};
	struct exec_job other = {.sb = sb, .word = "alive"};
	pthread_t tv, to;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&tv, NULL, exec_job_main, &victim), 0);
	_cleanup_free_ char *st = read_until(init, "stopped=");
	printf("\n  probe: %s\n", strstr(st, "stopped=") ?: st);
	CU_ASSERT_EQUAL_FATAL(pthread_create(&to, NULL, exec_job_main, &other), 0);
	/* Generous: a hang is what this catches, not slowness. */
	uint64_t t0 = bl_now_monotonic_ns();
	bool other_done = wait_done(&other, 90);
	printf("  other exec: done=%d rc=%d after %.1f s\n", other_done, other.rc,
	       (double)(bl_now_monotonic_ns() - t0) / 1e9);
	CU_ASSERT(other_done);
	if (other_done) {
		CU_ASSERT_EQUAL(other.rc, 0);
		CU_ASSERT_NSTRING_EQUAL(other.out, "alive", 5);
	}
	bool victim_done = wait_done(&victim, 120);
	CU_ASSERT(victim_done);
	if (victim_done)
		CU_ASSERT_NOT_EQUAL(victim.rc, 0);
	/* Destroying the sandbox ends every call still waiting on it. */
	bl_sandbox_stop(sb, &err);
	pthread_join(to, NULL);
	pthread_join(tv, NULL);
	bl_process_free(init);
	bl_sandbox_destroy(sb);
	sb_assert_clean();
}

/* Runs the CLI with the test's state dir, kernel and initrd; returns its
 * exit status. cmd is appended to "boxlite". */
static int cli(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int cli(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *args = NULL;
	if (vasprintf(&args, fmt, ap) < 0)
		args = NULL;
	va_end(ap);
	_cleanup_free_ char *cmd = bl_asprintf(
	    "BOXLITE_STATE_DIR='%s' BOXLITE_KERNEL='%s' BOXLITE_INITRD='%s' %s/boxlite %s",
	    env.state, env.kernel, env.initrd, bl_test_build_dir(), args ? args : "");
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* As user nobody: can path be opened for reading? */
static bool nobody_can_read(const char *path)
{
	pid_t pid = fork();
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
			_exit(2);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		_exit(fd >= 0 ? 0 : 1);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static unsigned mode_of(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (unsigned)(st.st_mode & 07777) : 0xffff;
}

/*
 * Finding 3 (secrets). Attack: another local user (nobody) reads the -e
 * value and --python code of a long-lived sandbox from its state files or
 * from the monitor's command line. Must hold: state root, sandbox dir 0700,
 * base.json 0600, nobody can open base.json, no process's argv carries them.
 */
static void test_secrets_private(void)
{
	SKIP_UNLESS_ENV();
	const char *id = sb_next_id();
	char secret[64], code[64];
	snprintf(secret, sizeof(secret), "s3cret-%d", (int)getpid());
	snprintf(code, sizeof(code), "code-%d", (int)getpid() * 7);
	CU_ASSERT_EQUAL_FATAL(cli("create --rootfs '%s' --memory 128 --name %s -e API_KEY=%s -- "
				  "sh -c 'sleep 120; echo %s' >/dev/null",
				  env.rootfs, id, secret, code),
			      0);
	_cleanup_free_ char *dir = bl_asprintf("%s/%s", env.state, id);
	_cleanup_free_ char *base = bl_asprintf("%s/base.json", dir);
	_cleanup_free_ char *meta = bl_asprintf("%s/meta.json", dir);
	printf("\n  modes: state %o, sandbox %o, base.json %o\n", mode_of(env.state), mode_of(dir),
	       mode_of(base));
	CU_ASSERT_EQUAL(mode_of(env.state), 0700);
	CU_ASSERT_EQUAL(mode_of(dir), 0700);
	CU_ASSERT_EQUAL(mode_of(base), 0600);
	CU_ASSERT(access(base, R_OK) == 0);
	CU_ASSERT(!nobody_can_read(base));
	CU_ASSERT(!nobody_can_read(meta));
	CU_ASSERT_EQUAL(bl_test_count_procs(secret), 0);
	CU_ASSERT_EQUAL(bl_test_count_procs(code), 0);
	/* The sandbox still works with its options. */
	CU_ASSERT_EQUAL(cli("exec %s -- sh -c 'test \"$API_KEY\" = %s'", id, secret), 0);
	CU_ASSERT_EQUAL(cli("rm -f %s", id), 0);
	sb_assert_clean();
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"agent_memory_unwritable", test_agent_memory_unwritable},
	    {"stopped_child_holds_no_lock", test_stopped_child_holds_no_lock},
	    {"secrets_private", test_secrets_private},
	    {NULL, NULL},
	};
	signal(SIGPIPE, SIG_IGN);
	int rc = bl_test_run("escape", cases);
	sb_env_teardown();
	return rc;
}
