/*
 * The escape suite: each case is an attack a hostile container (root in the
 * container, default capabilities) tries on a real sandbox, and what must
 * hold afterwards. The attacks run as tests/escape/probe.c (a static program
 * copied into the sandbox's busybox rootfs as /bin/probe) or busybox sh.
 * Every case ends with nothing of the sandbox left on the host.
 */
#include "sandbox_env.h"

#include <grp.h>
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
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
	static const char *const more[] = {"tr", "grep", "ln", "chmod", NULL};
	for (size_t i = 0; done && more[i]; i++) {
		_cleanup_free_ char *link = bl_asprintf("%s/bin/%s", env.rootfs, more[i]);
		if (symlink("busybox", link) < 0 && errno != EEXIST)
			done = 0;
	}
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
static char *run_capture(const char *const *args, int *ret_status)
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
struct victim_loop {
	bl_sandbox *sb;
	volatile int stop, done, ok, failed;
};

/* Execs `true` again and again until one fails (the one the probe stopped,
 * killed at the agent's exec deadline) or it is told to stop. */
static void *victim_main(void *arg)
{
	struct victim_loop *v = arg;
	while (!v->stop && !v->failed) {
		const char *const eargs[] = {"true", NULL};
		bl_process_options po = {.args = eargs};
		bl_process *p = NULL;
		bl_error_t err = BL_ERROR_INIT;
		bl_exit ex = {.status = -1};
		if (bl_sandbox_exec(v->sb, &po, &p, &err) == 0)
			(void)bl_process_wait(p, &ex, &err);
		bl_process_free(p);
		if (ex.status == 0)
			v->ok++;
		else
			v->failed = 1;
	}
	v->done = 1;
	return NULL;
}

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
	struct victim_loop victim = {.sb = sb};
	struct exec_job other = {.sb = sb, .word = "alive"};
	pthread_t tv, to;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&tv, NULL, victim_main, &victim), 0);
	_cleanup_free_ char *st = read_until(init, "stopped=");
	printf("\n  probe: %s after %d execs\n", strstr(st, "stopped=") ?: st, victim.ok);
	CU_ASSERT_PTR_NULL(strstr(st, "stopped=none"));
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
	/* The stopped exec fails at the agent's deadline (30 s), not never. */
	for (int i = 0; i < 1500 && !victim.done; i++)
		usleep(100000);
	CU_ASSERT(victim.done && victim.failed);
	victim.stop = 1;
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
	/* The monitor was reparented to this process (a child subreaper). */
	for (int i = 0; i < 100 && waitpid(-1, NULL, WNOHANG) <= 0; i++)
		usleep(20000);
	sb_assert_clean();
}

/* "name=value" line of the probe's output (value copied), or "" */
static void value_of(const char *out, const char *name, char *buf, size_t len)
{
	char key[80];
	snprintf(key, sizeof(key), "\n%s=", name);
	_cleanup_free_ char *o = bl_asprintf("\n%s", out);
	const char *p = strstr(o, key);
	buf[0] = '\0';
	if (p) {
		p += strlen(key);
		size_t n = strcspn(p, "\n");
		snprintf(buf, len, "%.*s", (int)(n < len ? n : len - 1), p);
	}
}

/*
 * Finding 8 (seccomp, capabilities, user namespaces). Attack: container root
 * makes each system call that reaches the guest kernel's namespace, mount,
 * key, bpf, module, clock, swap and raw-network surface, and mknods
 * /dev/mem. Must hold: every one is refused (EPERM/ENOSYS/...), while
 * ordinary calls (getpid, fork) still work.
 */
static void test_syscalls_refused(void)
{
	SKIP_UNLESS_ENV();
	const char *const args[] = {"probe", "syscalls", NULL};
	int st;
	_cleanup_free_ char *out = run_capture(args, &st);
	CU_ASSERT_EQUAL(st, 0);
	static const char *const refused[] = {"unshare_user",
					      "unshare_mnt",
					      "unshare_net",
					      "clone_newuser",
					      "clone_newns",
					      "mount",
					      "umount2",
					      "pivot_root",
					      "keyctl",
					      "add_key",
					      "request_key",
					      "bpf",
					      "perf_event_open",
					      "userfaultfd",
					      "kexec_load",
					      "init_module",
					      "finit_module",
					      "delete_module",
					      "clock_settime",
					      "settimeofday",
					      "adjtimex",
					      "swapon",
					      "acct",
					      "reboot",
					      "iopl",
					      "ioperm",
					      "open_by_handle_at",
					      "setns",
					      "syslog",
					      "mknod_mem",
					      "open_mem_node",
					      "raw_socket",
					      "packet_socket",
					      "personality_bad",
					      NULL};
	int bad = 0;
	for (size_t i = 0; refused[i]; i++) {
		char v[32];
		value_of(out, refused[i], v, sizeof(v));
		if (!v[0] || !strcmp(v, "ok")) {
			printf("\n  %s: %s", refused[i], v[0] ? "ALLOWED" : "no result");
			bad++;
		}
	}
	CU_ASSERT_EQUAL(bad, 0);
	char v[32];
	value_of(out, "getpid", v, sizeof(v));
	CU_ASSERT_STRING_EQUAL(v, "ok");
	value_of(out, "clone_plain", v, sizeof(v));
	CU_ASSERT_STRING_EQUAL(v, "ok");
	sb_assert_clean();
}

/*
 * Finding 8 (/proc, /sys, the agent, the channel). Attack: container root
 * reads kernel memory and keys, writes kernel knobs, looks for the agent and
 * the host channel. Must hold: Docker's masked paths read empty or are
 * absent, read-only paths refuse writes, user namespaces are off in the
 * guest, /proc shows no agent process, /dev has no virtio port.
 */
static void test_proc_sys_dev(void)
{
	SKIP_UNLESS_ENV();
	const char *const args[] = {
	    "sh", "-c",
	    "for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug "
	    "/proc/latency_stats; do"
	    "  echo \"$f $(probe read $f)\"; done;"
	    "echo \"firmware $(ls /sys/firmware | wc -l)\";"
	    "echo \"acpi $(ls /proc/acpi 2>/dev/null | wc -l)\";"
	    "for f in /proc/sys/kernel/hostname /proc/sysrq-trigger /proc/sys/vm/drop_caches; do"
	    "  echo \"$f $(probe open $f w)\"; done;"
	    "echo \"userns $(cat /proc/sys/user/max_user_namespaces)\";"
	    "echo \"pid1 $(cat /proc/1/cmdline | tr '\\0' ' ')\";"
	    "for p in /proc/[0-9]*; do [ \"$(cat $p/cmdline 2>/dev/null)\" = /init ] && echo "
	    "\"ag\"\"ent-found\";"
	    "  done;"
	    "echo \"vports $(ls /dev | grep -c vport)\";"
	    "echo done",
	    NULL};
	int st;
	_cleanup_free_ char *out = run_capture(args, &st);
	printf("\n%s", out);
	CU_ASSERT_EQUAL(st, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "done"));
	static const char *const masked[] = {"/proc/kcore",	    "/proc/keys",
					     "/proc/timer_list",    "/proc/sched_debug",
					     "/proc/latency_stats", NULL};
	for (size_t i = 0; masked[i]; i++) {
		char key[64], line[128] = "";
		snprintf(key, sizeof(key), "%s read=", masked[i]);
		const char *p = strstr(out, key);
		if (p)
			snprintf(line, sizeof(line), "%.*s", (int)strcspn(p, "\n"), p);
		/* empty (masked by /dev/null) or absent from this kernel */
		CU_ASSERT(p && (!strcmp(line + strlen(key), "0") ||
				!strcmp(line + strlen(key), "ENOENT")));
	}
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "firmware 0"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "acpi 0"));
	CU_ASSERT_PTR_NULL(strstr(out, "w open=ok"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "/proc/sys/kernel/hostname open=EROFS"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "userns 0"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "pid1 sh -c"));
	CU_ASSERT_PTR_NULL(strstr(out, "agent-found"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "vports 0"));
	sb_assert_clean();
}

/*
 * Finding 8, as measured in review: the default image's uid 1000 makes a user
 * namespace to get CAP_SYS_ADMIN over a new mount namespace and mounts.
 * Must hold: refused; ordinary Python (threads, subprocess) still runs
 * under the filter.
 */
static void test_userns_mount_refused(void)
{
	SKIP_UNLESS_ENV();
	int ok = cli("run --memory 256 -- python3 -c 'import threading, subprocess; "
		     "t = threading.Thread(target=print); t.start(); t.join(); "
		     "subprocess.run([\"true\"], check=True)' >/dev/null 2>&1");
	BL_SKIP_UNLESS(ok == 0, "the default image (make image) does not run here");
	CU_ASSERT_NOT_EQUAL(cli("run --memory 256 -- unshare -U -r -m sh -c "
				"'mount -t tmpfs t /tmp' 2>/dev/null"),
			    0);
	sb_assert_clean();
}

/* Kills every process whose command line contains needle; returns how many. */
static int kill_matching(const char *needle)
{
	_cleanup_closedir_ DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		char path[300], buf[4096];
		snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
		_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t len = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
		if (len <= 0)
			continue;
		for (ssize_t i = 0; i < len; i++)
			buf[i] = buf[i] ? buf[i] : ' ';
		buf[len] = '\0';
		if (strstr(buf, needle) && kill(atoi(de->d_name), SIGKILL) == 0)
			n++;
	}
	return n;
}

/* Boots `sh -c 'sleep 8; cat /etc/passwd'`, kills a VM process from outside
 * (virtiofsd when fs, else QEMU) mid-run and returns the wait's error. */
static int kill_mid_run(bool fs, bl_error_t *err, double *secs)
{
	const char *const args[] = {"sh", "-c", "sleep 8; cat /etc/passwd", NULL};
	bl_sandbox_options o = sb_opts(args);
	o.timeout_sec = 120; /* a hang shows as a timeout, not a stuck test */
	bl_sandbox *sb = NULL;
	if (bl_sandbox_create(&o, &sb, err) < 0)
		return -1;
	bl_process *p = NULL;
	int r = bl_sandbox_start(sb, &p, err);
	if (r == 0) {
		_cleanup_free_ char *needle = bl_asprintf("source=%s,", bl_sandbox_dir(sb));
		needle[strlen(needle) - 1] = '/'; /* source=<dir>/rootfs */
		int killed = 0;
		if (fs) {
			killed = kill_matching(needle);
		} else {
			pid_t q = bl_sandbox_qemu_pid(sb);
			killed = q > 0 && kill(q, SIGKILL) == 0;
		}
		CU_ASSERT(killed > 0);
		uint64_t t0 = bl_now_monotonic_ns();
		bl_exit ex;
		r = bl_process_wait(p, &ex, err);
		*secs = (double)(bl_now_monotonic_ns() - t0) / 1e9;
		bl_process_free(p);
	}
	bl_sandbox_destroy(sb);
	return r;
}

/*
 * Finding 7. Attack (or accident): virtiofsd is killed with SIGKILL while
 * the guest still needs its root file system. Must hold: the run ends at
 * once (not at its deadline) with an error naming virtiofsd; nothing of the
 * sandbox is left.
 */
static void test_virtiofsd_killed(void)
{
	SKIP_UNLESS_ENV();
	bl_error_t err = BL_ERROR_INIT;
	double secs = 0;
	int r = kill_mid_run(true, &err, &secs);
	printf("\n  wait: %d after %.1f s: %s\n", r, secs, err.msg);
	CU_ASSERT_EQUAL(r, -BL_EAGENTLOST);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "virtiofsd"));
	CU_ASSERT(secs < 60); /* the deadline is 120 s: this is "at once", loosely */
	sb_assert_clean();
}

/* Finding 7, QEMU: killed with SIGKILL mid-run. Must hold: a clear error
 * naming QEMU, nothing left. */
static void test_qemu_killed(void)
{
	SKIP_UNLESS_ENV();
	bl_error_t err = BL_ERROR_INIT;
	double secs = 0;
	int r = kill_mid_run(false, &err, &secs);
	printf("\n  wait: %d after %.1f s: %s\n", r, secs, err.msg);
	CU_ASSERT_EQUAL(r, -BL_EAGENTLOST);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "QEMU"));
	sb_assert_clean();
}

struct sampler {
	char *dir; /* the sandbox's state dir */
	volatile int stop;
	size_t max_total;
	pthread_t t;
};

static size_t size_of(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (size_t)st.st_size : 0;
}

static void *sampler_main(void *arg)
{
	struct sampler *s = arg;
	_cleanup_free_ char *log = bl_asprintf("%s/console.log", s->dir);
	_cleanup_free_ char *old = bl_asprintf("%s/console.log.1", s->dir);
	while (!s->stop) {
		size_t total = size_of(log) + size_of(old);
		if (total > s->max_total)
			s->max_total = total;
		usleep(5000);
	}
	return NULL;
}

/*
 * Finding 4. Attack: a hostile guest (here a userland of its own in place of
 * the agent: the probe as /init) floods the serial console with 2 MiB.
 * Must hold: the console log on the host (RAM-backed /run) never holds more
 * than about twice its cap (64 KiB here) - its end is kept, the flood's last
 * line included - and the failed sandbox leaves nothing behind.
 */
static void test_console_flood_bounded(void)
{
	SKIP_UNLESS_ENV();
	_cleanup_free_ char *stage = bl_asprintf("%s/flood-initrd", env.dir);
	_cleanup_free_ char *cpio = bl_asprintf("%s/flood.cpio", env.dir);
	_cleanup_free_ char *cmd =
	    bl_asprintf("mkdir -p %s && cp %s/tests/escape-probe %s/init && cd %s && echo init | "
			"cpio --quiet -o -H newc -R 0:0 > %s",
			stage, bl_test_build_dir(), stage, stage, cpio);
	BL_SKIP_UNLESS(system(cmd) == 0, "cpio could not pack the flood initramfs");
	const size_t cap = 65536;
	setenv("BOXLITE_CONSOLE_MAX", "65536", 1);
	setenv("TMPDIR", env.dir, 1);
	const char *const args[] = {"true", NULL};
	bl_sandbox_options o = sb_opts(args);
	o.initrd = cpio;
	o.timeout_sec = 180;
	struct sampler sm = {.dir = bl_asprintf("%s/%s", env.state, o.id)};
	CU_ASSERT_EQUAL_FATAL(pthread_create(&sm.t, NULL, sampler_main, &sm), 0);
	bl_error_t err = BL_ERROR_INIT;
	bl_sandbox *sb = NULL;
	int r = bl_sandbox_create(&o, &sb, &err);
	sm.stop = 1;
	pthread_join(sm.t, NULL);
	unsetenv("BOXLITE_CONSOLE_MAX");
	unsetenv("TMPDIR");
	if (r == 0)
		bl_sandbox_destroy(sb);
	printf("\n  create: %d (%s)\n  console log + .1 at most %zu bytes (cap %zu)\n", r, err.msg,
	       sm.max_total, cap);
	CU_ASSERT(r < 0); /* no agent in that guest */
	CU_ASSERT(sm.max_total > 0);
	CU_ASSERT(sm.max_total <= 2 * cap + 64 * 1024);
	/* The copy kept for diagnosis is the log's end: the flood's last line. */
	const char *kept = strstr(err.msg, "guest console kept in ");
	CU_ASSERT_PTR_NOT_NULL(kept);
	if (kept) {
		_cleanup_free_ char *path = bl_strdup(kept + strlen("guest console kept in "));
		path[strcspn(path, ")")] = '\0';
		_cleanup_free_ char *data = NULL;
		size_t len = 0;
		CU_ASSERT_EQUAL(bl_read_file(path, 16 << 20, &data, &len, NULL), 0);
		CU_ASSERT(len <= cap + 64 * 1024);
		CU_ASSERT(data && strstr(data, "flood-end"));
		CU_ASSERT(strncmp(path, env.dir, strlen(env.dir)) == 0);
		(void)unlink(path);
	}
	free(sm.dir);
	sb_assert_clean();
}

/* Writes a tar with the given (hostile) entries to path. */
static bool write_tar(const char *path, bool hostile)
{
	size_t cap = 1 << 20, used = 0;
	_cleanup_free_ char *buf = bl_malloc0(cap);
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	archive_write_set_bytes_per_block(a, 0);
	if (archive_write_open_memory(a, buf, cap, &used) != ARCHIVE_OK)
		return false;
	struct {
		const char *name;
		mode_t type, perm;
		const char *link;
		dev_t rdev;
	} es[] = {{"out/", AE_IFDIR, 0755, NULL, 0},
		  {"out/sda", AE_IFCHR, 0644, NULL, makedev(1, 1)},
		  {".ssh/authorized_keys", AE_IFREG, 0600, NULL, 0},
		  {"out/lnk", AE_IFLNK, 0777, "/etc", 0},
		  {"out/su", AE_IFREG, 04755, NULL, 0}};
	size_t n = hostile ? sizeof(es) / sizeof(es[0]) : 1;
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *e = archive_entry_new();
		archive_entry_set_pathname(e, es[i].name);
		archive_entry_set_filetype(e, es[i].type);
		archive_entry_set_perm(e, es[i].perm);
		if (es[i].link)
			archive_entry_set_symlink(e, es[i].link);
		if (es[i].rdev)
			archive_entry_set_rdev(e, es[i].rdev);
		archive_entry_set_size(e, es[i].type == AE_IFREG ? 2 : 0);
		archive_write_header(a, e);
		if (es[i].type == AE_IFREG)
			archive_write_data(a, "x\n", 2);
		archive_entry_free(e);
	}
	archive_write_close(a);
	archive_write_free(a);
	return bl_write_file(path, buf, used, 0644, NULL) == 0;
}

static unsigned long tree_digest(const char *dir)
{
	_cleanup_free_ char *cmd =
	    bl_asprintf("find '%s' -printf '%%p %%m %%s %%y\\n' 2>/dev/null | cksum", dir);
	FILE *f = popen(cmd, "r");
	unsigned long v = 0;
	if (f) {
		if (fscanf(f, "%lu", &v) != 1)
			v = 0;
		pclose(f);
	}
	return v;
}

static int count_entries_in(const char *dir)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;
	while (d && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	return n;
}

static int exec_sh(bl_sandbox *sb, const char *script)
{
	const char *const args[] = {"sh", "-c", script, NULL};
	bl_process_options po = {.args = args};
	bl_process *p = NULL;
	bl_error_t err = BL_ERROR_INIT;
	bl_exit ex = {.status = -1};
	if (bl_sandbox_exec(sb, &po, &p, &err) == 0)
		(void)bl_process_wait(p, &ex, &err);
	bl_process_free(p);
	return ex.status;
}

/*
 * Finding 1 (cp). Attack: container root replaces /bin/tar in its writable
 * layer with one that answers every copy with a hostile archive (a device
 * node standing for /dev/mem, .ssh/authorized_keys beside the named path, a
 * symlink to /etc, a setuid file), then builds a hostile tree of its own: a
 * symlink to /etc, a setuid file, a FIFO and a sparse 10 GB file. Must hold:
 * the image's tar never runs (the agent's own archiver does the copy, also
 * with no tar in the image at all), what the copy brings is exactly the
 * guest's regular files and directories (the symlink and FIFO left out, the
 * setuid bit dropped), the 10 GB stream is cut at the byte limit with
 * nothing written into or beside DEST, and the host's /etc is unchanged.
 * (Archives breaking the rules outright, as only a compromised agent could
 * send them, are tests/unit/test_copy's and fuzz_copy_extract's.)
 */
static void test_cp_hostile_archive(void)
{
	SKIP_UNLESS_ENV();
	_cleanup_free_ char *evil = bl_asprintf("%s/evil.tar", env.rootfs);
	_cleanup_free_ char *fake = bl_asprintf("%s/fake-tar.sh", env.rootfs);
	static const char script[] = "#!/bin/sh\n"
				     "echo ran > /tar-ran\n"
				     "exec cat /evil.tar\n";
	CU_ASSERT_FATAL(write_tar(evil, true));
	CU_ASSERT_FATAL(bl_write_file(fake, script, strlen(script), 0755, NULL) == 0);
	const char *const args[] = {"sh", "-c",
				    "mkdir -p /out && echo fine > /out/ok.txt && rm -f /bin/tar && "
				    "cat /fake-tar.sh > /bin/tar && chmod 755 /bin/tar && "
				    "echo ready && sleep 600",
				    NULL};
	bl_sandbox_options o = sb_opts(args);
	bl_error_t err = BL_ERROR_INIT;
	bl_sandbox *sb = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_create(&o, &sb, &err), 0);
	bl_process *init = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_start(sb, &init, &err), 0);
	free(read_until(init, "ready\n"));
	_cleanup_free_ char *dest = bl_asprintf("%s/cp-dest", env.dir);
	CU_ASSERT_EQUAL_FATAL(mkdir(dest, 0755), 0);
	unsigned long etc_before = tree_digest("/etc");

	/* the hostile tar is in place: the copy does not use it */
	int r = bl_sandbox_copy_out(sb, "/out", dest, &err);
	printf("\n  copy out past a hostile tar: %d %s\n", r, err.msg);
	CU_ASSERT_EQUAL(r, 0);
	_cleanup_free_ char *ok = bl_asprintf("%s/out/ok.txt", dest);
	_cleanup_free_ char *data = NULL;
	CU_ASSERT_EQUAL(bl_read_file(ok, 100, &data, NULL, NULL), 0);
	CU_ASSERT_STRING_EQUAL(data ? data : "", "fine\n");
	_cleanup_free_ char *outdir = bl_asprintf("%s/out", dest);
	CU_ASSERT_EQUAL(count_entries_in(outdir), 1);
	CU_ASSERT_EQUAL(count_entries_in(dest), 1);
	CU_ASSERT_NOT_EQUAL(exec_sh(sb, "test -e /tar-ran"), 0);
	(void)bl_rm_rf(outdir, NULL);

	/* a hostile tree of the guest's own */
	CU_ASSERT_EQUAL(exec_sh(sb, "mkdir /t && echo s > /t/su && chmod 4755 /t/su && "
				    "ln -s /etc /t/lnk && mkfifo /t/fifo && mkdir /t/d && "
				    "echo x > /t/d/x"),
			0);
	err = (bl_error_t)BL_ERROR_INIT;
	r = bl_sandbox_copy_out(sb, "/t", dest, &err);
	CU_ASSERT_EQUAL(r, 0);
	_cleanup_free_ char *t = bl_asprintf("%s/t", dest);
	_cleanup_free_ char *su = bl_asprintf("%s/t/su", dest);
	_cleanup_free_ char *lnk = bl_asprintf("%s/t/lnk", dest);
	struct stat st;
	CU_ASSERT_EQUAL(count_entries_in(t), 2); /* su, d */
	CU_ASSERT(lstat(su, &st) == 0 && S_ISREG(st.st_mode) && !(st.st_mode & 07000));
	CU_ASSERT(lstat(lnk, &st) < 0);
	(void)bl_rm_rf(t, NULL);

	/* a sparse 10 GB file: the stream is cut at the limit */
	unsigned long dir_before = tree_digest(env.dir);
	CU_ASSERT_EQUAL(exec_sh(sb, "mkdir /big && truncate -s 10G /big/zero"), 0);
	setenv("BOXLITE_COPY_MAX_BYTES", "4194304", 1);
	err = (bl_error_t)BL_ERROR_INIT;
	uint64_t t0 = bl_now_monotonic_ns();
	r = bl_sandbox_copy_out(sb, "/big", dest, &err);
	unsetenv("BOXLITE_COPY_MAX_BYTES");
	printf("  10 GB stream: %d after %.1f s: %s\n", r,
	       (double)(bl_now_monotonic_ns() - t0) / 1e9, err.msg);
	CU_ASSERT(r < 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "cut off"));
	CU_ASSERT_EQUAL(count_entries_in(dest), 0);
	CU_ASSERT_EQUAL(tree_digest(env.dir), dir_before);
	CU_ASSERT_EQUAL(tree_digest("/etc"), etc_before);

	/* and in, with no tar in the image at all */
	CU_ASSERT_EQUAL(exec_sh(sb, "rm -f /bin/tar && test ! -e /bin/tar"), 0);
	err = (bl_error_t)BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_sandbox_copy_in(sb, evil, "/tmp/in", &err), 0);
	CU_ASSERT_EQUAL(exec_sh(sb, "cmp /tmp/in/evil.tar /evil.tar"), 0);
	bl_process_free(init);
	bl_sandbox_destroy(sb);
	sb_assert_clean();
	(void)bl_rm_rf(dest, NULL);
}

/*
 * A host mount below the image directory (a build that left /proc or /sys
 * mounted inside a rootfs, say). Attack: the guest reads what is mounted
 * there on the host. Must hold: the guest sees the image's own (empty)
 * directory, not the host mount's files.
 */
static void test_host_submount_hidden(void)
{
	SKIP_UNLESS_ENV();
	_cleanup_free_ char *mnt = bl_asprintf("%s/hostmnt", env.rootfs);
	_cleanup_free_ char *secret = bl_asprintf("%s/secret", mnt);
	CU_ASSERT_EQUAL_FATAL(mkdir(mnt, 0755), 0);
	BL_SKIP_UNLESS(mount("tmpfs", mnt, "tmpfs", 0, "size=64k") == 0, "cannot mount a tmpfs");
	CU_ASSERT_EQUAL(bl_write_file(secret, "host secret\n", 12, 0644, NULL), 0);
	const char *const args[] = {"sh", "-c", "ls -A /hostmnt; cat /hostmnt/secret 2>&1", NULL};
	bl_sandbox_options o = sb_opts(args);
	bl_error_t err = BL_ERROR_INIT;
	bl_sandbox *sb = NULL;
	bl_process *p = NULL;
	bl_exit ex = {0};
	_cleanup_free_ char *out = NULL;
	if (bl_sandbox_create(&o, &sb, &err) == 0 && bl_sandbox_start(sb, &p, &err) == 0) {
		out = sb_read_all(p, 1);
		(void)bl_process_wait(p, &ex, &err);
	}
	printf("\n  the guest sees: %s", out ? out : "(nothing)\n");
	CU_ASSERT_PTR_NOT_NULL(out);
	CU_ASSERT(out && !strstr(out, "host secret"));
	bl_process_free(p);
	bl_sandbox_destroy(sb);
	(void)umount2(mnt, MNT_DETACH);
	(void)rmdir(mnt);
	sb_assert_clean();
}

/*
 * Finding 8, the OCI door (the shim's containers bring their own profile):
 * a container created from a spec whose linux.seccomp refuses mkdir with
 * EACCES (errno 13), as a shim would pass it (ignore_lsm). Must hold: mkdir
 * fails in that container, other calls work, and a spec without
 * linux.seccomp still gets the default (unshare -U refused).
 */
#define SPEC_FMT                                                       \
	"{\"ociVersion\":\"1.0.2\",\"process\":{\"terminal\":false,"   \
	"\"user\":{\"uid\":0,\"gid\":0},\"args\":[\"sleep\",\"600\"]," \
	"\"env\":[\"PATH=/bin\"],\"cwd\":\"/\"},"                      \
	"\"root\":{\"path\":\"rootfs\",\"readonly\":false}%s}"

static void test_spec_seccomp(void)
{
	SKIP_UNLESS_ENV();
	bl_sandbox_options o = sb_opts(NULL);
	o.rootfs = NULL;
	o.bare = true;
	bl_sandbox *sb = NULL;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_create(&o, &sb, &err), 0);
	_cleanup_free_ char *with =
	    bl_asprintf(SPEC_FMT, ",\"linux\":{\"seccomp\":{\"defaultAction\":\"SCMP_ACT_ALLOW\","
				  "\"syscalls\":[{\"names\":[\"mkdir\",\"mkdirat\"],"
				  "\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":13}]}}");
	_cleanup_free_ char *without = bl_asprintf(SPEC_FMT, "");
	bl_container_options co = {.id = "own",
				   .rootfs = env.rootfs,
				   .spec_json = with,
				   .disk_mib = 8,
				   .ignore_lsm = true};
	bl_container *c1 = NULL, *c2 = NULL;
	int r = bl_container_create(sb, &co, &c1, &err);
	if (r < 0)
		printf("\n  create: %s\n", err.msg);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	co = (bl_container_options){
	    .id = "dflt", .rootfs = env.rootfs, .spec_json = without, .disk_mib = 8};
	CU_ASSERT_EQUAL_FATAL(bl_container_create(sb, &co, &c2, &err), 0);
	bl_process *i1 = NULL, *i2 = NULL;
	CU_ASSERT_EQUAL(bl_container_start(c1, &i1, &err), 0);
	CU_ASSERT_EQUAL(bl_container_start(c2, &i2, &err), 0);
	const char *const mk[] = {"sh", "-c", "mkdir /tmp/x 2>&1; echo rc=$?", NULL};
	const char *const us[] = {"probe", "syscalls", NULL};
	bl_process_options po = {.args = mk};
	bl_process *p = NULL;
	_cleanup_free_ char *out1 = NULL, *out2 = NULL, *out3 = NULL;
	if (bl_container_exec_opts(c1, NULL, &po, &p, &err) == 0) {
		out1 = sb_read_all(p, 1);
		bl_exit ex;
		(void)bl_process_wait(p, &ex, &err);
		bl_process_free(p);
	}
	if (bl_container_exec_opts(c2, NULL, &po, &p, &err) == 0) {
		out2 = sb_read_all(p, 1);
		bl_exit ex;
		(void)bl_process_wait(p, &ex, &err);
		bl_process_free(p);
	}
	po.args = us;
	if (bl_container_exec_opts(c2, NULL, &po, &p, &err) == 0) {
		out3 = sb_read_all(p, 1);
		bl_exit ex;
		(void)bl_process_wait(p, &ex, &err);
		bl_process_free(p);
	}
	printf("\n  own profile: %s  default: %s", out1 ? out1 : "?", out2 ? out2 : "?");
	CU_ASSERT(out1 && strstr(out1, "rc=1") && strstr(out1, "ermission denied"));
	CU_ASSERT(out2 && strstr(out2, "rc=0"));
	CU_ASSERT(out3 && strstr(out3, "unshare_user=EPERM"));
	bl_process_free(i1);
	bl_process_free(i2);
	(void)bl_container_delete(c1, &err);
	(void)bl_container_delete(c2, &err);
	bl_sandbox_destroy(sb);
	sb_assert_clean();
}

static unsigned long status_field(pid_t pid, const char *key)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	_cleanup_free_ char *buf = NULL;
	if (bl_read_file(path, 1 << 16, &buf, NULL, NULL) < 0)
		return (unsigned long)-1;
	const char *p = strstr(buf, key);
	return p ? strtoul(p + strlen(key), NULL, 10) : (unsigned long)-1;
}

/* As uid:gid, may path be opened for reading? */
static bool as_uid_can_open(unsigned uid, const char *path)
{
	pid_t pid = fork();
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setgid(uid) < 0 || setuid(uid) < 0)
			_exit(2);
		_exit(open(path, O_RDONLY | O_CLOEXEC) >= 0 ? 0 : 1);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/*
 * Finding 8, the host side: every sandbox's QEMU under its own uid/gid (a
 * range, libvirt DAC labels). Attack: code running as one sandbox's QEMU
 * (after a QEMU escape) opens the other sandbox's QEMU memory. Must hold:
 * two sandboxes' QEMUs run as two different uids of the range (not root,
 * not the shared libvirt-qemu), each uid is held while its VM runs and
 * released after, and one QEMU's uid cannot open the other's /proc/PID/mem.
 */
static void test_qemu_uids(void)
{
	SKIP_UNLESS_ENV();
	const char *const args[] = {"sleep", "600", NULL};
	bl_sandbox *sb[2] = {NULL, NULL};
	pid_t q[2] = {0, 0};
	unsigned long uid[2] = {0, 0}, gid[2] = {0, 0};
	bl_error_t err = BL_ERROR_INIT;
	for (int i = 0; i < 2; i++) {
		bl_sandbox_options o = sb_opts(args);
		CU_ASSERT_EQUAL_FATAL(bl_sandbox_create(&o, &sb[i], &err), 0);
		q[i] = bl_sandbox_qemu_pid(sb[i]);
		uid[i] = status_field(q[i], "Uid:\t");
		gid[i] = status_field(q[i], "Gid:\t");
	}
	printf("\n  QEMU uids: %lu:%lu and %lu:%lu\n", uid[0], gid[0], uid[1], gid[1]);
	for (int i = 0; i < 2; i++) {
		CU_ASSERT(q[i] > 0);
		CU_ASSERT(uid[i] >= 0x70000000ul && uid[i] < 0x70000000ul + 65536);
		CU_ASSERT_EQUAL(gid[i], uid[i]);
		_cleanup_free_ char *lock = bl_asprintf("/run/boxlite/uids/%lu", uid[i]);
		CU_ASSERT(access(lock, F_OK) == 0);
	}
	CU_ASSERT_NOT_EQUAL(uid[0], uid[1]);
	_cleanup_free_ char *mem1 = bl_asprintf("/proc/%d/mem", (int)q[1]);
	_cleanup_free_ char *mem0 = bl_asprintf("/proc/%d/mem", (int)q[0]);
	CU_ASSERT(!as_uid_can_open((unsigned)uid[0], mem1));
	CU_ASSERT(!as_uid_can_open((unsigned)uid[1], mem0));
	for (int i = 0; i < 2; i++)
		bl_sandbox_destroy(sb[i]);
	for (int i = 0; i < 2; i++) {
		_cleanup_free_ char *lock = bl_asprintf("/run/boxlite/uids/%lu", uid[i]);
		CU_ASSERT(access(lock, F_OK) < 0);
	}
	sb_assert_clean();
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"agent_memory_unwritable", test_agent_memory_unwritable},
	    {"stopped_child_holds_no_lock", test_stopped_child_holds_no_lock},
	    {"secrets_private", test_secrets_private},
	    {"syscalls_refused", test_syscalls_refused},
	    {"proc_sys_dev", test_proc_sys_dev},
	    {"userns_mount_refused", test_userns_mount_refused},
	    {"virtiofsd_killed", test_virtiofsd_killed},
	    {"qemu_killed", test_qemu_killed},
	    {"console_flood_bounded", test_console_flood_bounded},
	    {"cp_hostile_archive", test_cp_hostile_archive},
	    {"host_submount_hidden", test_host_submount_hidden},
	    {"spec_seccomp", test_spec_seccomp},
	    {"qemu_uids", test_qemu_uids},
	    {NULL, NULL},
	};
	signal(SIGPIPE, SIG_IGN);
	int rc = bl_test_run("escape", cases);
	sb_env_teardown();
	return rc;
}
