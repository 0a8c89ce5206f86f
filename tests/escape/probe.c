/*
 * escape-probe: a tiny static program the escape suite (tests/integration/
 * test_escape.c) runs inside a sandbox to try the attacks a hostile
 * container would try. Every mode prints one "key=value" line per attempt so
 * the test can assert on each; nothing here is trusted by the test beyond
 * its output.
 *
 *   probe syscalls            each refused call: "NAME=ERRNO", allowed: "NAME=ok"
 *   probe mem-watch SECONDS   stops each not yet exec'd child of the agent
 *                             (cmdline "/init") and tries to write its memory
 *                             through /proc/PID/mem: "mem-writes=N attempts=N seen=N"
 *   probe stop-first SECONDS  SIGSTOPs the first not yet exec'd agent child,
 *                             prints "stopped=PID", sleeps
 *   probe open PATH MODE      MODE r|w: "open=ok" / "open=ERRNO"
 *   probe read PATH           "read=N" bytes (first 64 KiB) or "read=ERRNO"
 *   /init (as PID 1, argv[0] "/init"): a hostile guest userland instead of
 *                             the agent: floods the serial console with
 *                             FLOOD_BYTES, prints "flood-end", reboots
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <linux/reboot.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *errname(int e)
{
	switch (e) {
	case EPERM:
		return "EPERM";
	case EACCES:
		return "EACCES";
	case ENOSYS:
		return "ENOSYS";
	case EINVAL:
		return "EINVAL";
	case ENOENT:
		return "ENOENT";
	case EROFS:
		return "EROFS";
	case EFAULT:
		return "EFAULT";
	case EBADF:
		return "EBADF";
	case EAFNOSUPPORT:
		return "EAFNOSUPPORT";
	case EPROTONOSUPPORT:
		return "EPROTONOSUPPORT";
	case ESRCH:
		return "ESRCH";
	case ENOTDIR:
		return "ENOTDIR";
	case EBUSY:
		return "EBUSY";
	case EOPNOTSUPP:
		return "EOPNOTSUPP";
	case ENODEV:
		return "ENODEV";
	case EEXIST:
		return "EEXIST";
	default:
		return "EOTHER";
	}
}

static void report(const char *name, long r)
{
	if (r < 0)
		printf("%s=%s\n", name, errname(errno));
	else
		printf("%s=ok\n", name);
	fflush(stdout);
}

static long clone_ns(unsigned long flags)
{
	long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
	if (pid == 0)
		_exit(0);
	if (pid > 0)
		waitpid((pid_t)pid, NULL, 0);
	return pid;
}

static int cmd_syscalls(void)
{
	mkdir("/tmp/probe-mnt", 0755);
	report("unshare_user", unshare(CLONE_NEWUSER));
	report("unshare_mnt", unshare(CLONE_NEWNS));
	report("unshare_net", unshare(CLONE_NEWNET));
	report("clone_newuser", clone_ns(CLONE_NEWUSER));
	report("clone_newns", clone_ns(CLONE_NEWNS));
	report("mount", mount("t", "/tmp/probe-mnt", "tmpfs", 0, NULL));
	report("umount2", umount2("/proc", MNT_DETACH));
	report("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp/probe-mnt"));
	report("keyctl", syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, "probe"));
	report("add_key", syscall(SYS_add_key, "user", "probe", "x", 1, KEY_SPEC_PROCESS_KEYRING));
	report("request_key",
	       syscall(SYS_request_key, "user", "probe", NULL, KEY_SPEC_PROCESS_KEYRING));
	union bpf_attr ba;
	memset(&ba, 0, sizeof(ba));
	ba.map_type = BPF_MAP_TYPE_ARRAY;
	ba.key_size = 4;
	ba.value_size = 4;
	ba.max_entries = 1;
	report("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &ba, sizeof(ba)));
	struct perf_event_attr pa;
	memset(&pa, 0, sizeof(pa));
	pa.size = sizeof(pa);
	pa.type = PERF_TYPE_SOFTWARE;
	pa.config = PERF_COUNT_SW_CPU_CLOCK;
	report("perf_event_open", syscall(SYS_perf_event_open, &pa, 0, -1, -1, 0));
	report("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC));
	report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
	report("init_module", syscall(SYS_init_module, "", 0, ""));
	report("finit_module", syscall(SYS_finit_module, -1, "", 0));
	report("delete_module", syscall(SYS_delete_module, "probe", 0));
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	report("clock_settime", syscall(SYS_clock_settime, CLOCK_REALTIME, &ts));
	struct timeval tv;
	gettimeofday(&tv, NULL);
	report("settimeofday", syscall(SYS_settimeofday, &tv, NULL));
	struct timex tx;
	memset(&tx, 0, sizeof(tx));
	tx.modes = ADJ_FREQUENCY;
	report("adjtimex", syscall(SYS_adjtimex, &tx));
	report("swapon", syscall(SYS_swapon, "/nonexistent", 0));
	report("acct", syscall(SYS_acct, NULL));
	report("reboot", syscall(SYS_reboot, 0, 0, 0, NULL)); /* bad magic */
	report("iopl", syscall(SYS_iopl, 3));
	report("ioperm", syscall(SYS_ioperm, 0x80, 1, 1));
	report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, NULL, 0));
	report("setns", syscall(SYS_setns, 0, 0));
	report("syslog", syscall(SYS_syslog, 3, NULL, 0));
	report("mknod_mem", mknod("/tmp/probe-mem", S_IFCHR | 0600, makedev(1, 1)));
	int fd = open("/tmp/probe-mem", O_RDONLY | O_CLOEXEC);
	report("open_mem_node", fd);
	if (fd >= 0)
		close(fd);
	unlink("/tmp/probe-mem");
	fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
	report("raw_socket", fd);
	if (fd >= 0)
		close(fd);
	fd = socket(AF_PACKET, SOCK_RAW, 0);
	report("packet_socket", fd);
	if (fd >= 0)
		close(fd);
	report("ptrace_init", ptrace(PTRACE_ATTACH, 1, NULL, NULL));
	report("personality_bad", syscall(SYS_personality, 0x0040000 /* ADDR_NO_RANDOMIZE */));
	/* must stay allowed */
	report("getpid", syscall(SYS_getpid));
	report("clone_plain", clone_ns(0));
	return 0;
}

static bool agent_child(const char *pid)
{
	char path[64], buf[64] = {0};
	snprintf(path, sizeof(path), "/proc/%s/cmdline", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n >= 5 && !strcmp(buf, "/init");
}

/* pids of processes (not us) that still run the agent's code */
static int find_agent_children(int *pids, int max)
{
	DIR *d = opendir("/proc");
	if (!d)
		return 0;
	int n = 0;
	struct dirent *de;
	while (n < max && (de = readdir(d))) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		int pid = atoi(de->d_name);
		if (pid != getpid() && agent_child(de->d_name))
			pids[n++] = pid;
	}
	closedir(d);
	return n;
}

/* Tries to write one word of a writable mapping of pid back onto itself. */
static int try_write_mem(int pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	unsigned long lo = 0, hi = 0;
	char line[512], perms[8];
	bool found = false;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && perms[0] == 'r' &&
		    perms[1] == 'w') {
			found = true;
			break;
		}
	}
	fclose(f);
	if (!found)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -1;
	unsigned long word;
	int ok = pread(fd, &word, sizeof(word), (off_t)lo) == sizeof(word) &&
		 pwrite(fd, &word, sizeof(word), (off_t)lo) == sizeof(word);
	close(fd);
	return ok ? 0 : -1;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmd_mem_watch(double secs)
{
	double end = now_s() + secs;
	long writes = 0, attempts = 0, seen = 0;
	int last = -1;
	printf("watching\n");
	fflush(stdout);
	while (now_s() < end) {
		int pids[16];
		int n = find_agent_children(pids, 16);
		for (int i = 0; i < n; i++) {
			int pid = pids[i];
			if (pid != last)
				seen++;
			last = pid;
			for (int k = 0; k < 400; k++) {
				kill(pid, SIGSTOP);
				char s[16];
				snprintf(s, sizeof(s), "%d", pid);
				if (!agent_child(s))
					break;
				attempts++;
				/* Counted only if, after the write, the process still
				 * runs the agent's code: then the write hit that memory
				 * (a write after its execve hits the container's own
				 * program, which it may). */
				if (try_write_mem(pid) == 0) {
					if (agent_child(s))
						writes++;
					break;
				}
				kill(pid, SIGCONT);
				sched_yield();
			}
			kill(pid, SIGCONT);
		}
	}
	printf("mem-writes=%ld attempts=%ld seen=%ld\n", writes, attempts, seen);
	return 0;
}

static int cmd_stop_first(double secs)
{
	double end = now_s() + secs;
	printf("watching\n");
	fflush(stdout);
	while (now_s() < end) {
		int pid;
		if (find_agent_children(&pid, 1) == 1) {
			kill(pid, SIGSTOP);
			printf("stopped=%d\n", pid);
			fflush(stdout);
			sleep((unsigned)secs);
			return 0;
		}
	}
	printf("stopped=none\n");
	return 0;
}

#define FLOOD_BYTES (2u << 20)

static int flood_init(void)
{
	mkdir("/dev", 0755);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	int fd = open("/dev/ttyS0", O_WRONLY | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
	char line[128];
	memset(line, 'x', sizeof(line));
	line[sizeof(line) - 1] = '\n';
	for (unsigned done = 0, i = 0; fd >= 0 && done < FLOOD_BYTES; i++) {
		int n = snprintf(line, sizeof(line), "flood %08u ", i);
		line[n] = 'x';
		ssize_t w = write(fd, line, sizeof(line));
		if (w <= 0)
			break;
		done += (unsigned)w;
	}
	if (fd >= 0) {
		static const char end[] = "\nflood-end\n";
		(void)!write(fd, end, sizeof(end) - 1);
		fsync(fd);
	}
	sync();
	syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_RESTART,
		NULL);
	return 0;
}

int main(int argc, char **argv)
{
	/* PID 1 of a guest (not of a container, where argv[0] is "probe"). */
	if (getpid() == 1 && argc >= 1 && !strcmp(argv[0], "/init"))
		return flood_init();
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && !strcmp(argv[1], "syscalls"))
		return cmd_syscalls();
	if (argc >= 3 && !strcmp(argv[1], "mem-watch"))
		return cmd_mem_watch(atof(argv[2]));
	if (argc >= 3 && !strcmp(argv[1], "stop-first"))
		return cmd_stop_first(atof(argv[2]));
	if (argc >= 4 && !strcmp(argv[1], "open")) {
		int fd = open(argv[2], (argv[3][0] == 'w' ? O_WRONLY : O_RDONLY) | O_CLOEXEC);
		report("open", fd);
		return 0;
	}
	if (argc >= 3 && !strcmp(argv[1], "read")) {
		int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			report("read", -1);
			return 0;
		}
		static char buf[65536];
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0)
			report("read", -1);
		else
			printf("read=%zd\n", n);
		close(fd);
		return 0;
	}
	fprintf(stderr, "usage: probe syscalls|mem-watch S|stop-first S|open P r|w|read P\n");
	return 2;
}
