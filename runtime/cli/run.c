/* boxlite run / create / exec, and the hidden monitor of created sandboxes. */
#include "cli.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"
#include "options.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#define PYTHON_CODE_MAX (16u << 20)

static const char run_help[] =
    "usage: boxlite run [OPTIONS] [-- CMD [ARG...]]\n"
    "       boxlite run [OPTIONS] --python CODE|-\n"
    "\n"
    "Boots a new sandbox, runs CMD in it, streams its output, exits with its status,\n"
    "and removes the sandbox. Nothing but the program's output goes to stdout.\n"
    "\n"
    "  --image REF      image: a directory, OCI layout, OCI/docker tarball or a store\n"
    "                   name (default: \"default\", Debian with python3)\n"
    "  --rootfs DIR     use a plain root filesystem directory\n"
    "  --memory MiB     guest RAM (default 512; the program gets all but ~40 MiB)\n"
    "  --cpus N         virtual CPUs (default 1)\n"
    "  --disk MiB       writable layer size (default 256; held in guest RAM)\n"
    "  --timeout SEC    destroy the sandbox after SEC seconds (exit 124)\n"
    "  --pids N         process limit (default 512)\n"
    "  -e, --env K=V    set an environment variable (-e K passes the caller's K)\n"
    "  -w, --workdir D  working directory in the sandbox\n"
    "  -u, --user U     user: uid[:gid] or name[:group]\n"
    "  -i, --interactive  pass stdin to the program\n"
    "  -t, --tty        run the program on a terminal\n"
    "  --python CODE    run CODE with python3 (\"-\": read the code from stdin)\n"
    "  --hostname H     the sandbox's hostname (default boxlite)\n"
    "  --network        give the sandbox a network (default: none at all); egress is\n"
    "                   refused unless allowed (the host's firewall enforces it):\n"
    "  --allow RULE     HOST[:PORT], A.B.C.D[/N][:PORT], host:PORT (a service on the\n"
    "                   host's 127.0.0.1, host.boxlite.internal in the sandbox), or\n"
    "                   '*' (every public address); repeatable; implies --network\n"
    "  --deny RULE      refuse RULE even when allowed\n"
    "  -p, --publish [ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp]  serve a guest port on the\n"
    "                   host (ADDR 127.0.0.1 unless given)\n"
    "  --net-max-conns N  concurrent connections (default 256)\n"
    "  --net-rate KiB   bandwidth each way, KiB/s (default 32768)\n"
    "  --accel kvm|tcg  force an accelerator (default: kvm when usable)\n"
    "  --connect URI    libvirt URI (default: embedded driver, no daemon)\n"
    "  -v, --verbose    accelerator choice and timings on stderr\n"
    "\n"
    "Exit status: the program's; 128+N when killed by signal N; 121 out of memory;\n"
    "124 timeout; 125 boxlite failure; 126 not executable; 127 command not found.\n";

static const char create_help[] =
    "usage: boxlite create [OPTIONS] [--name NAME] [-- CMD [ARG...]]\n"
    "\n"
    "Starts a long-lived sandbox owned by a background monitor process and prints\n"
    "its id. Use it with exec, cp, stop, rm, logs. Options as for `boxlite run`\n"
    "(without --python); CMD, when given, is the sandbox's init process.\n";

static const char exec_help[] =
    "usage: boxlite exec [-i] [-t] [-e K=V] [-w DIR] [-u USER] ID -- CMD [ARG...]\n"
    "\n"
    "Runs CMD in the running sandbox ID; exit status as for `boxlite run`.\n"
    "\n"
    "  -i, --interactive  pass stdin to the program\n"
    "  -t, --tty        run the program on a terminal\n"
    "  -e, --env K=V    set an environment variable (-e K passes the caller's K)\n"
    "  -w, --workdir D  working directory in the sandbox\n"
    "  -u, --user U     user: uid[:gid] or name[:group]\n"
    "  -v, --verbose    timings on stderr\n";

/* ------------------------------------------------------------ signals */

struct sigctx {
	pthread_mutex_t lock;
	bl_sandbox *sb;	  /* cancelled on SIGINT/SIGTERM/SIGHUP (run) */
	bl_process *proc; /* signalled instead, when forward is set (exec) */
	bool forward;
	int got; /* the signal that ended us */
	struct termios saved;
	bool raw;
};

static struct sigctx sigs = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void on_handle(bl_sandbox *sb, void *user)
{
	(void)user;
	pthread_mutex_lock(&sigs.lock);
	sigs.sb = sb;
	pthread_mutex_unlock(&sigs.lock);
}

static void restore_tty(void)
{
	if (sigs.raw)
		(void)tcsetattr(0, TCSANOW, &sigs.saved);
	sigs.raw = false;
}

static void resize_from_tty(void)
{
	struct winsize ws;
	pthread_mutex_lock(&sigs.lock);
	if (sigs.proc && ioctl(0, TIOCGWINSZ, &ws) == 0) {
		bl_error_t err = BL_ERROR_INIT;
		(void)bl_process_resize(sigs.proc, ws.ws_row, ws.ws_col, &err);
	}
	pthread_mutex_unlock(&sigs.lock);
}

static void *signal_main(void *arg)
{
	sigset_t *set = arg;
	for (;;) {
		int sig = 0;
		if (sigwait(set, &sig))
			continue;
		if (sig == SIGWINCH) {
			resize_from_tty();
			continue;
		}
		pthread_mutex_lock(&sigs.lock);
		if (sigs.forward && sigs.proc && !sigs.got) {
			bl_error_t err = BL_ERROR_INIT;
			sigs.got = -sig; /* forwarded once; a second signal cancels */
			(void)bl_process_signal(sigs.proc, sig, &err);
			pthread_mutex_unlock(&sigs.lock);
			continue;
		}
		sigs.got = sig;
		bl_info("got signal %d, releasing the sandbox", sig);
		if (sigs.sb)
			bl_sandbox_cancel(sigs.sb);
		pthread_mutex_unlock(&sigs.lock);
		/* Watchdog: the main thread must release everything and exit soon. */
		sleep(15);
		restore_tty();
		_exit(128 + sig);
	}
	return NULL;
}

static void start_signal_thread(void)
{
	static sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGWINCH);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	/* A closed stdout must give EPIPE, not kill us with the VM still up. */
	signal(SIGPIPE, SIG_IGN);
	pthread_t t;
	if (pthread_create(&t, NULL, signal_main, &set) == 0)
		pthread_detach(t);
}

static int signal_exit(void)
{
	pthread_mutex_lock(&sigs.lock);
	int s = sigs.got > 0 ? sigs.got : 0;
	pthread_mutex_unlock(&sigs.lock);
	return s ? 128 + s : 0;
}

static void set_raw_tty(void)
{
	if (!isatty(0) || tcgetattr(0, &sigs.saved) < 0)
		return;
	struct termios raw = sigs.saved;
	cfmakeraw(&raw);
	if (tcsetattr(0, TCSANOW, &raw) == 0)
		sigs.raw = true;
}

/* ------------------------------------------------------------ release */

/*
 * `run` reports the exit status as soon as it is known and releases the
 * sandbox after: the process the caller started (the front) forks a worker
 * that does all the work, exits with the status the worker sends, and the
 * worker goes on destroying the VM with its stdio on /dev/null (kept with
 * -v, for the timings). Signals sent to the front go to the worker.
 * BOXLITE_RELEASE=sync keeps everything in one process.
 */
static int status_fd = -1;

static int front_main(pid_t worker, int rfd, const sigset_t *set)
{
	_cleanup_close_ int sfd = signalfd(-1, set, SFD_CLOEXEC);
	for (;;) {
		struct pollfd p[2] = {{.fd = rfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
		if (poll(p, sfd >= 0 ? 2 : 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (sfd >= 0 && p[1].revents) {
			struct signalfd_siginfo si;
			/* The terminal's signals reach the worker by themselves. */
			if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si) &&
			    si.ssi_code != SI_KERNEL)
				(void)kill(worker, (int)si.ssi_signo);
			continue;
		}
		char buf[16];
		ssize_t n = read(rfd, buf, sizeof(buf) - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n > 0) {
			buf[n] = '\0';
			return atoi(buf);
		}
		break;
	}
	int st = 0;
	while (waitpid(worker, &st, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 125;
}

/* In the front: returns its exit code (>= 0); in the worker (or without a
 * worker): -1. */
static int split_front(void)
{
	const char *e = getenv("BOXLITE_RELEASE");
	if (e && !strcmp(e, "sync"))
		return -1;
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -1;
	sigset_t set, old;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	pid_t front = getpid();
	pid_t w = fork();
	if (w < 0) {
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (w == 0) {
		close(pfd[0]);
		status_fd = pfd[1];
		/* A front killed before the status ends the run (SIGTERM: the
		 * sandbox is released). */
		(void)prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != front)
			(void)raise(SIGTERM);
		/* Not inherited: the worker reaps what libvirt daemonizes. */
		(void)bl_host_prepare();
		return -1;
	}
	close(pfd[1]);
	int rc = front_main(w, pfd[0], &set);
	close(pfd[0]);
	return rc;
}

/* The status is known: the front exits with it now. */
static void report_status(int rc, bool verbose)
{
	if (status_fd < 0)
		return;
	(void)prctl(PR_SET_PDEATHSIG, 0);
	char buf[16];
	int n = snprintf(buf, sizeof(buf), "%d\n", rc);
	(void)!write(status_fd, buf, (size_t)n);
	close(status_fd);
	status_fd = -1;
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0)
		return;
	(void)fflush(stdout);
	(void)dup2(devnull, 0);
	(void)dup2(devnull, 1);
	if (!verbose)
		(void)dup2(devnull, 2);
	close(devnull);
}

/* ------------------------------------------------------------ run */

/* Maps a failed StartProcess to 126/127 like a shell, else 125. */
static int start_failure(const bl_error_t *err, const char *cmd)
{
	char msg[512];
	int rc = bl_cli_start_failure(err, cmd, msg, sizeof(msg));
	if (rc) {
		bl_info("%s", err->msg);
		cli_error("%s", msg);
		return rc;
	}
	return cli_fail(err);
}

static int exit_code(int r, const bl_exit *ex, const bl_error_t *err, unsigned timeout)
{
	int s = signal_exit();
	if (s)
		return s;
	if (r < 0)
		return cli_fail(err);
	return ex->status;
}

static int read_all_stdin(char **ret, bl_error_t *err)
{
	size_t cap = 4096, len = 0;
	char *buf = bl_malloc0(cap);
	for (;;) {
		if (len + 1 >= cap) {
			if (cap >= PYTHON_CODE_MAX) {
				free(buf);
				return bl_set_error(err, BL_EINVAL, "--python -: code over 16 MiB");
			}
			cap *= 2;
			char *nb = realloc(buf, cap);
			if (!nb)
				abort();
			buf = nb;
		}
		ssize_t n = read(0, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(buf);
			return bl_set_error_errno(err, errno, "read stdin");
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	*ret = buf;
	return 0;
}

static int run_process(bl_process *p, bool interactive, bool tty, bl_exit *ex, bl_error_t *err)
{
	pthread_mutex_lock(&sigs.lock);
	sigs.proc = p;
	pthread_mutex_unlock(&sigs.lock);
	if (tty) {
		set_raw_tty();
		resize_from_tty();
	}
	int r = bl_process_run_io(p, interactive ? 0 : -1, 1, 2, ex, err);
	restore_tty();
	pthread_mutex_lock(&sigs.lock);
	sigs.proc = NULL;
	pthread_mutex_unlock(&sigs.lock);
	return r;
}

/* The network policy's refusals, on stderr, so a user sees why a
 * connection failed. */
static void report_refused(bl_sandbox *sb, const bl_sandbox_options *o)
{
	if (!o->network)
		return;
	_cleanup_free_ char *text = NULL;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_sandbox_net_refused(sb, &text, &err) < 0 || !text || !*text)
		return;
	fprintf(stderr, "boxlite: network refused (destination packets):\n");
	for (char *save = NULL, *l = strtok_r(text, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save))
		fprintf(stderr, "boxlite:   %s\n", l);
}

int cmd_run(int argc, char **argv)
{
	bl_cli_opts c;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_cli_parse(BL_CLI_RUN, argc, argv, &c, &err) < 0) {
		cli_error("%s (see boxlite run --help)", err.msg);
		return BL_EXIT_FAILURE;
	}
	if (c.help) {
		fputs(run_help, stdout);
		bl_cli_opts_clear(&c);
		return 0;
	}
	cli_log_setup(c.verbose);
	bool verbose = c.verbose || (getenv("BOXLITE_LOG") && *getenv("BOXLITE_LOG"));
	int front = split_front();
	if (front >= 0) {
		bl_cli_opts_clear(&c);
		return front;
	}
	_cleanup_free_ char *code = NULL;
	if (c.python && !strcmp(c.python, "-")) {
		if (read_all_stdin(&code, &err) < 0) {
			bl_cli_opts_clear(&c);
			return cli_fail(&err);
		}
	}
	const char *pyargs[] = {"python3", "-c", code ? code : c.python, NULL};
	c.o.args = c.python ? pyargs : (const char *const *)c.cmd;
	c.o.owner = "run";
	c.o.on_handle = on_handle;
	start_signal_thread();
	uint64_t t0 = bl_now_monotonic_ns();
	bl_sandbox *sb = NULL;
	int r = bl_sandbox_create(&c.o, &sb, &err);
	if (r < 0) {
		int s = signal_exit();
		bl_cli_opts_clear(&c);
		return s ? s : cli_fail(&err);
	}
	bl_sandbox_timings t;
	bl_sandbox_get_timings(sb, &t);
	bl_info("sandbox %s ready in %.0f ms (image %.0f, libvirt %.0f, VM start %.0f, agent "
		"%.0f, init %.0f, container %.0f)",
		bl_sandbox_id(sb), (double)(bl_now_monotonic_ns() - t0) / 1e6, t.image_ms,
		t.libvirt_open_ms, t.vm_start_ms, t.agent_ready_ms, t.init_ms, t.container_ms);
	bl_process *p = NULL;
	bl_exit ex = {0};
	int rc;
	r = bl_sandbox_start(sb, &p, &err);
	if (r < 0) {
		rc = signal_exit();
		rc = rc ? rc : start_failure(&err, c.o.args ? c.o.args[0] : NULL);
	} else {
		uint64_t t1 = bl_now_monotonic_ns();
		r = run_process(p, c.interactive, c.tty, &ex, &err);
		bl_info("program ran %.0f ms", (double)(bl_now_monotonic_ns() - t1) / 1e6);
		rc = exit_code(r, &ex, &err, c.o.timeout_sec);
	}
	pthread_mutex_lock(&sigs.lock);
	sigs.sb = NULL;
	pthread_mutex_unlock(&sigs.lock);
	bl_process_free(p);
	report_refused(sb, &c.o);
	int s0 = signal_exit();
	report_status(s0 ? s0 : rc, verbose);
	uint64_t t2 = bl_now_monotonic_ns();
	bl_sandbox_destroy(sb);
	bl_info("sandbox released in %.0f ms", (double)(bl_now_monotonic_ns() - t2) / 1e6);
	bl_cli_opts_clear(&c);
	int s = signal_exit();
	return s ? s : rc;
}

/* ------------------------------------------------------------ exec */

int cmd_exec(int argc, char **argv)
{
	bl_cli_opts c;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_cli_parse(BL_CLI_EXEC, argc, argv, &c, &err) < 0) {
		cli_error("%s (see boxlite exec --help)", err.msg);
		return BL_EXIT_FAILURE;
	}
	if (c.help) {
		fputs(exec_help, stdout);
		bl_cli_opts_clear(&c);
		return 0;
	}
	cli_log_setup(c.verbose);
	start_signal_thread();
	bl_sandbox *sb = NULL;
	if (bl_sandbox_attach(c.id, c.o.state_dir, &sb, &err) < 0) {
		bl_cli_opts_clear(&c);
		return cli_fail(&err);
	}
	pthread_mutex_lock(&sigs.lock);
	sigs.sb = sb;
	sigs.forward = true;
	pthread_mutex_unlock(&sigs.lock);
	bl_process_options po = {
	    .args = (const char *const *)c.cmd,
	    .env = c.o.env,
	    .cwd = c.o.cwd,
	    .user = c.o.user,
	    .tty = c.tty,
	    .stdin_open = c.interactive,
	};
	bl_process *p = NULL;
	bl_exit ex = {0};
	int rc;
	uint64_t t0 = bl_now_monotonic_ns();
	if (bl_sandbox_exec(sb, &po, &p, &err) < 0) {
		rc = start_failure(&err, po.args[0]);
	} else {
		int r = run_process(p, c.interactive, c.tty, &ex, &err);
		bl_info("exec round trip %.1f ms", (double)(bl_now_monotonic_ns() - t0) / 1e6);
		rc = exit_code(r, &ex, &err, 0);
	}
	pthread_mutex_lock(&sigs.lock);
	sigs.sb = NULL;
	pthread_mutex_unlock(&sigs.lock);
	bl_process_free(p);
	bl_sandbox_destroy(sb);
	bl_cli_opts_clear(&c);
	return rc;
}

/* ------------------------------------------------------------ create */

static int wait_ready(int fd, pid_t child, const char *id)
{
	char buf[2048];
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || len + (size_t)n >= sizeof(buf) - 1) {
			len += n > 0 ? (size_t)n : 0;
			break;
		}
		len += (size_t)n;
	}
	buf[len] = '\0';
	if (!strncmp(buf, "OK", 2)) {
		printf("%s\n", id);
		return 0;
	}
	/* "<exit code> <message>" from the monitor, or nothing if it died. */
	char *msg = strchr(buf, ' ');
	if (!msg) {
		cli_error("the sandbox monitor (pid %d) died while creating %s", (int)child, id);
		return BL_EXIT_FAILURE;
	}
	*msg++ = '\0';
	msg[strcspn(msg, "\n")] = '\0';
	cli_error("%s", msg);
	int rc = atoi(buf);
	return rc > 0 ? rc : BL_EXIT_FAILURE;
}

int cmd_create(int argc, char **argv)
{
	bl_cli_opts c;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_cli_parse(BL_CLI_CREATE, argc, argv, &c, &err) < 0) {
		cli_error("%s (see boxlite create --help)", err.msg);
		return BL_EXIT_FAILURE;
	}
	if (c.help) {
		fputs(create_help, stdout);
		bl_cli_opts_clear(&c);
		return 0;
	}
	char id[BL_SANDBOX_ID_MAX + 1];
	if (c.o.id) {
		snprintf(id, sizeof(id), "%s", c.o.id);
	} else {
		bl_sandbox_random_id(id, sizeof(id));
	}
	bl_cli_opts_clear(&c);
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		cli_error("pipe: %s", strerror(errno));
		return BL_EXIT_FAILURE;
	}
	/* The options go to the monitor through a pipe, never its argv: they
	 * hold -e values and --python code, and every local user reads
	 * /proc/PID/cmdline. The argv is only: __monitor READY_FD OPTIONS_FD. */
	int ofd[2];
	if (pipe2(ofd, O_CLOEXEC) < 0) {
		cli_error("pipe: %s", strerror(errno));
		close(pfd[0]);
		close(pfd[1]);
		return BL_EXIT_FAILURE;
	}
	char *const margv[] = {"boxlite", "__monitor", "3", "4", NULL};
	pid_t pid = fork();
	if (pid < 0) {
		cli_error("fork: %s", strerror(errno));
		return BL_EXIT_FAILURE;
	}
	if (pid == 0) {
		(void)setsid();
		int devnull = open("/dev/null", O_RDWR);
		if (dup2(pfd[1], 3) < 0 || dup2(ofd[0], 4) < 0 || devnull < 0)
			_exit(BL_EXIT_FAILURE);
		dup2(devnull, 0);
		dup2(devnull, 1);
		if (!getenv("BOXLITE_MONITOR_STDERR"))
			dup2(devnull, 2);
		execv("/proc/self/exe", margv);
		_exit(BL_EXIT_FAILURE);
	}
	close(ofd[0]);
	/* "--name ID <the create options>", each NUL-terminated, then EOF. */
	void (*old_pipe)(int) = signal(SIGPIPE, SIG_IGN);
	bool wrote = bl_write_full(ofd[1], "--name", 7) == 0 &&
		     bl_write_full(ofd[1], id, strlen(id) + 1) == 0;
	for (int i = 1; wrote && i < argc; i++)
		wrote = bl_write_full(ofd[1], argv[i], strlen(argv[i]) + 1) == 0;
	signal(SIGPIPE, old_pipe);
	close(ofd[1]);
	close(pfd[1]);
	int rc = wait_ready(pfd[0], pid, id);
	close(pfd[0]);
	return rc;
}

/* ------------------------------------------------------------ monitor */

static bl_monitor *the_monitor;

static void *monitor_signal_main(void *arg)
{
	sigset_t *set = arg;
	int sig = 0;
	while (sigwait(set, &sig) == 0) {
		bl_info("monitor: signal %d, stopping", sig);
		if (the_monitor)
			bl_monitor_request_stop(the_monitor);
	}
	return NULL;
}

static void report_ready(int fd, int code, const char *msg)
{
	char line[1200];
	int n = code ? snprintf(line, sizeof(line), "%d %s\n", code, msg)
		     : snprintf(line, sizeof(line), "OK\n");
	(void)!write(fd, line, (size_t)n);
	close(fd);
}

/* The create options from the CLI (NUL-separated, up to EOF) as an argv
 * whose [0] is a placeholder; the strings live in *ret_blob. */
static char **read_options(int fd, char **ret_blob, int *ret_n)
{
	size_t cap = 4096, len = 0, max = 16u << 20;
	char *buf = bl_malloc0(cap);
	for (;;) {
		if (len == cap) {
			if (cap >= max) {
				free(buf);
				close(fd);
				return NULL;
			}
			cap *= 2;
			buf = realloc(buf, cap);
			if (!buf)
				abort();
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(buf);
			close(fd);
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (len && buf[len - 1] != '\0') {
		free(buf);
		return NULL;
	}
	int n = 1;
	for (size_t i = 0; i < len; i++)
		n += buf[i] == '\0';
	char **v = bl_malloc0((size_t)(n + 1) * sizeof(char *));
	int k = 0;
	v[k++] = "monitor";
	for (size_t i = 0; i < len; i += strlen(buf + i) + 1)
		v[k++] = buf + i;
	*ret_blob = buf;
	*ret_n = k;
	return v;
}

int cmd_monitor(int argc, char **argv)
{
	if (argc != 3)
		return BL_EXIT_FAILURE;
	int ready = atoi(argv[1]);
	int nopts = 0;
	_cleanup_free_ char *blob = NULL;
	_cleanup_free_ char **opts = read_options(atoi(argv[2]), &blob, &nopts);
	bl_cli_opts c;
	bl_error_t err = BL_ERROR_INIT;
	if (!opts) {
		report_ready(ready, BL_EXIT_FAILURE, "monitor: could not read the options");
		return BL_EXIT_FAILURE;
	}
	if (bl_cli_parse(BL_CLI_CREATE, nopts, opts, &c, &err) < 0) {
		report_ready(ready, BL_EXIT_FAILURE, err.msg);
		return BL_EXIT_FAILURE;
	}
	cli_log_setup(c.verbose);
	static sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	c.o.args = (const char *const *)c.cmd;
	c.o.owner = "monitor";
	bl_sandbox *sb = NULL;
	if (bl_sandbox_create(&c.o, &sb, &err) < 0) {
		int rc = err.code == BL_ETIMEOUT ? BL_EXIT_TIMEOUT : BL_EXIT_FAILURE;
		report_ready(ready, rc, err.msg);
		bl_cli_opts_clear(&c);
		return rc;
	}
	_cleanup_free_ char *log = bl_asprintf("%s/monitor.log", bl_sandbox_dir(sb));
	int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (lfd >= 0) {
		dup2(lfd, 2);
		close(lfd);
	}
	if (bl_monitor_start(sb, &the_monitor, &err) < 0) {
		report_ready(ready, BL_EXIT_FAILURE, err.msg);
		bl_sandbox_destroy(sb);
		bl_cli_opts_clear(&c);
		return BL_EXIT_FAILURE;
	}
	pthread_t t;
	if (pthread_create(&t, NULL, monitor_signal_main, &set) == 0)
		pthread_detach(t);
	report_ready(ready, 0, NULL);
	/* The boot's garbage (libvirt's capability XML and the like) goes back
	 * to the system: this process stays for the sandbox's whole life. */
	(void)malloc_trim(0);
	bl_info("monitor: serving sandbox %s", bl_sandbox_id(sb));
	bl_monitor_wait(the_monitor);
	bl_monitor *m = the_monitor;
	the_monitor = NULL;
	bl_monitor_free(m);
	report_refused(sb, &c.o); /* into monitor.log */
	bl_sandbox_release(sb);
	bl_cli_opts_clear(&c);
	bl_info("monitor: done");
	return 0;
}
