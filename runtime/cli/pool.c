/* boxlite pool start|status|stop, and the hidden pool owner (__pool). */
#include "cli.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"
#include "options.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define POOL_CONF_DEFAULT "/etc/boxlite/pool.conf"

static const char pool_help[] =
    "usage: boxlite pool start [--size N] [--memory MiB] [--cpus N] [--accel A] [--wait]\n"
    "       boxlite pool status\n"
    "       boxlite pool stop\n"
    "\n"
    "A warm pool: one background owner per state directory keeps N VMs booted\n"
    "(default shape: 512 MiB, 1 vCPU, the default kernel and accelerator), and\n"
    "`run`, `create`, the SDK and the shim take one when their sandbox has that\n"
    "shape (else they boot a VM as usual). A pooled VM serves one sandbox only.\n"
    "Without --size, start reads $BOXLITE_POOL_CONF or " POOL_CONF_DEFAULT "\n"
    "(lines `size = N`, `memory = MiB`, `cpus = N`, `accel = kvm|tcg`).\n"
    "--wait returns once the pool is full. stop destroys the spare VMs and the\n"
    "sandboxes still running on pooled VMs.\n"
    "Global: --state-dir DIR before the subcommand.\n";

typedef struct pool_args {
	unsigned size, memory, cpus;
	char accel[8];
	bool wait;
} pool_args;

static int parse_conf(pool_args *a, bl_error_t *err)
{
	const char *e = getenv("BOXLITE_POOL_CONF");
	const char *path = e && *e ? e : POOL_CONF_DEFAULT;
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (!f)
		return bl_set_error(err, BL_EINVAL, "give --size N (or write `size = N` in %s)",
				    path);
	char line[256];
	for (unsigned n = 1; fgets(line, sizeof(line), f); n++) {
		char key[32], val[64];
		if (line[0] == '#' || line[strspn(line, " \t\n")] == '\0')
			continue;
		if (sscanf(line, " %31[a-z] = %63s", key, val) != 2)
			return bl_set_error(err, BL_EINVAL, "%s:%u: not `key = value`", path, n);
		int r = 0;
		if (!strcmp(key, "size"))
			r = bl_cli_parse_uint("size", val, 1, 64, &a->size, err);
		else if (!strcmp(key, "memory"))
			r = bl_cli_parse_uint("memory", val, 64, 65536, &a->memory, err);
		else if (!strcmp(key, "cpus"))
			r = bl_cli_parse_uint("cpus", val, 1, 64, &a->cpus, err);
		else if (!strcmp(key, "accel") && (!strcmp(val, "kvm") || !strcmp(val, "tcg")))
			memcpy(a->accel, val, 4);
		else
			r = bl_set_error(err, BL_EINVAL, "%s:%u: unknown setting '%s'", path, n,
					 key);
		if (r < 0)
			return r;
	}
	return a->size ? 0 : bl_set_error(err, BL_EINVAL, "%s gives no size", path);
}

static int parse_start(int argc, char **argv, pool_args *a, bl_error_t *err)
{
	*a = (pool_args){0};
	for (int i = 0; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int r = 0;
		if (!strcmp(o, "--wait")) {
			a->wait = true;
			continue;
		}
		if (!v)
			return bl_set_error(err, BL_EINVAL, "%s needs a value", o);
		if (!strcmp(o, "--size"))
			r = bl_cli_parse_uint("--size", v, 1, 64, &a->size, err);
		else if (!strcmp(o, "--memory"))
			r = bl_cli_parse_uint("--memory", v, 64, 65536, &a->memory, err);
		else if (!strcmp(o, "--cpus"))
			r = bl_cli_parse_uint("--cpus", v, 1, 64, &a->cpus, err);
		else if (!strcmp(o, "--accel") && (!strcmp(v, "kvm") || !strcmp(v, "tcg")))
			memcpy(a->accel, v, 4);
		else
			return bl_set_error(err, BL_EINVAL, "unknown option '%s'", o);
		if (r < 0)
			return r;
		i++;
	}
	if (!a->size) {
		bool wait = a->wait;
		int r = parse_conf(a, err);
		a->wait = wait;
		return r;
	}
	return 0;
}

static int read_ready(int fd)
{
	char buf[1300];
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len >= sizeof(buf) - 1)
			break;
	}
	buf[len] = '\0';
	if (!strncmp(buf, "OK", 2))
		return 0;
	char *msg = strchr(buf, ' ');
	cli_error("pool: %s", msg ? msg + 1 : "the pool's owner died while starting");
	return BL_EXIT_FAILURE;
}

static int wait_full(const char *state_dir)
{
	for (int i = 0; i < 6000; i++) {
		bl_pool_status st;
		bl_error_t err = BL_ERROR_INIT;
		if (bl_pool_status_get(state_dir, &st, &err) < 0)
			return cli_fail(&err);
		if (st.ready >= st.size)
			return 0;
		struct timespec ts = {0, 100 * 1000000};
		nanosleep(&ts, NULL);
	}
	cli_error("pool: not full after 600 s");
	return BL_EXIT_FAILURE;
}

static int pool_start(const char *state_dir, int argc, char **argv)
{
	pool_args a;
	bl_error_t err = BL_ERROR_INIT;
	if (parse_start(argc, argv, &a, &err) < 0) {
		cli_error("%s (see boxlite pool --help)", err.msg);
		return BL_EXIT_FAILURE;
	}
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		cli_error("pipe: %s", strerror(errno));
		return BL_EXIT_FAILURE;
	}
	char size[16], mem[16], cpus[16];
	snprintf(size, sizeof(size), "%u", a.size);
	snprintf(mem, sizeof(mem), "%u", a.memory);
	snprintf(cpus, sizeof(cpus), "%u", a.cpus);
	char *const pargv[] = {"boxlite", "__pool", "3",     size,
			       mem,	  cpus,	    a.accel, (char *)(state_dir ? state_dir : ""),
			       NULL};
	pid_t pid = fork();
	if (pid < 0) {
		cli_error("fork: %s", strerror(errno));
		return BL_EXIT_FAILURE;
	}
	if (pid == 0) {
		(void)setsid();
		int devnull = open("/dev/null", O_RDWR);
		if (dup2(pfd[1], 3) < 0 || devnull < 0)
			_exit(BL_EXIT_FAILURE);
		dup2(devnull, 0);
		dup2(devnull, 1);
		if (!getenv("BOXLITE_POOL_STDERR"))
			dup2(devnull, 2);
		execv("/proc/self/exe", pargv);
		_exit(BL_EXIT_FAILURE);
	}
	close(pfd[1]);
	int rc = read_ready(pfd[0]);
	close(pfd[0]);
	if (rc == 0 && a.wait)
		rc = wait_full(state_dir);
	return rc;
}

static int pool_status(const char *state_dir)
{
	bl_pool_status st;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_pool_status_get(state_dir, &st, &err) < 0) {
		if (err.code == BL_ENOTFOUND) {
			printf("no pool\n");
			return 0;
		}
		return cli_fail(&err);
	}
	printf("pid       %d\n", (int)st.pid);
	printf("shape     %u MiB, %u vCPU, %s\n", st.memory_mib, st.vcpus, st.accel);
	printf("size      %u\n", st.size);
	printf("ready     %u\n", st.ready);
	printf("booting   %u\n", st.booting);
	printf("in use    %u\n", st.taken);
	printf("served    %llu\n", (unsigned long long)st.served);
	printf("replaced  %llu\n", (unsigned long long)st.replaced);
	printf("failed    %llu%s%s\n", (unsigned long long)st.failed, st.last_error[0] ? ": " : "",
	       st.last_error);
	return 0;
}

int cmd_pool(int argc, char **argv)
{
	const char *state_dir = NULL;
	int i = 1;
	if (argc >= 3 && !strcmp(argv[1], "--state-dir")) {
		state_dir = argv[2];
		i = 3;
	}
	if (i >= argc || !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
		fputs(pool_help, i >= argc ? stderr : stdout);
		return i >= argc ? BL_EXIT_FAILURE : 0;
	}
	const char *sub = argv[i];
	if (!strcmp(sub, "start"))
		return pool_start(state_dir, argc - i - 1, argv + i + 1);
	if (!strcmp(sub, "status"))
		return pool_status(state_dir);
	if (!strcmp(sub, "stop")) {
		bl_error_t err = BL_ERROR_INIT;
		if (bl_pool_stop(state_dir, &err) < 0 && err.code != BL_ENOTFOUND)
			return cli_fail(&err);
		return 0;
	}
	cli_error("unknown pool command '%s' (see boxlite pool --help)", sub);
	return BL_EXIT_FAILURE;
}

/* ------------------------------------------------------------ owner */

static const char *pool_state_dir;

static void *pool_signal_main(void *arg)
{
	sigset_t *set = arg;
	int sig = 0;
	while (sigwait(set, &sig) == 0) {
		bl_error_t err = BL_ERROR_INIT;
		bl_info("pool: signal %d, stopping", sig);
		(void)bl_pool_stop(pool_state_dir, &err);
	}
	return NULL;
}

/* __pool READY_FD SIZE MEMORY CPUS ACCEL STATE_DIR */
int cmd_pool_daemon(int argc, char **argv)
{
	if (argc != 7)
		return BL_EXIT_FAILURE;
	int ready = atoi(argv[1]);
	bl_pool_options o = {
	    .size = (unsigned)strtoul(argv[2], NULL, 10),
	    .memory_mib = (unsigned)strtoul(argv[3], NULL, 10),
	    .vcpus = (unsigned)strtoul(argv[4], NULL, 10),
	    .accel = argv[5][0] ? argv[5] : NULL,
	    .state_dir = argv[6][0] ? argv[6] : NULL,
	};
	pool_state_dir = o.state_dir;
	static sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* The log beside the pool's socket (root's directory). */
	_cleanup_free_ char *log = bl_asprintf("%s/.pool/pool.log", bl_state_dir(o.state_dir));
	if (!getenv("BOXLITE_POOL_STDERR")) {
		_cleanup_free_ char *dir = bl_asprintf("%s/.pool", bl_state_dir(o.state_dir));
		(void)bl_mkdir_p(dir, 0700, NULL);
		int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (lfd >= 0) {
			dup2(lfd, 2);
			close(lfd);
		}
	}
	cli_log_setup(true);
	pthread_t t;
	if (pthread_create(&t, NULL, pool_signal_main, &set) == 0)
		pthread_detach(t);
	bl_error_t err = BL_ERROR_INIT;
	int r = bl_pool_serve(&o, ready, &err);
	if (r < 0)
		bl_error_log("pool: %s", err.msg);
	return r < 0 ? BL_EXIT_FAILURE : 0;
}
