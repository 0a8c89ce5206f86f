#include "launch.h"
#include "bl_cleanup.h"
#include "bl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

enum step {
	STEP_NONE,
	STEP_SETNS,
	STEP_MOUNT_PRIVATE,
	STEP_PIVOT_ROOT,
	STEP_MOUNT_PROC,
	STEP_MOUNT_DEV,
	STEP_MOUNT_SYS,
	STEP_MOUNT_TMPFS,
	STEP_REMOUNT_RO,
	STEP_HOSTNAME,
	STEP_PTY,
	STEP_STDIO,
	STEP_SETSID,
	STEP_CTTY,
	STEP_RLIMIT,
	STEP_CWD,
	STEP_CAPBSET,
	STEP_SECCOMP,
	STEP_SETGROUPS,
	STEP_SETGID,
	STEP_SETUID,
	STEP_CAPSET,
	STEP_AMBIENT,
	STEP_NNP,
	STEP_EXEC,
};

static const char *const step_names[] = {
    "?",
    "join namespaces",
    "make mounts private",
    "pivot_root",
    "mount /proc",
    "mount /dev",
    "mount /sys",
    "mount tmpfs",
    "read-only root",
    "sethostname",
    "open the container's pty",
    "set up stdio",
    "setsid",
    "set controlling tty",
    "setrlimit",
    "chdir",
    "drop bounding capabilities",
    "install the seccomp filter",
    "setgroups",
    "setgid",
    "setuid",
    "capset",
    "ambient capabilities",
    "no_new_privs",
    "exec",
};

struct child_error {
	int step;
	int errnum;
};

static int agent_pidns_fd = -1;
static int agent_exe_fd = -1; /* this binary, for the built-in pause */
static int cap_last = 40;

int agent_launch_init(bl_error_t *err)
{
	agent_pidns_fd = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
	if (agent_pidns_fd < 0)
		return bl_set_error_errno(err, errno, "open /proc/self/ns/pid");
	/* Opened before any container exists, so the pause reaches it after
	 * pivot_root: nothing of the agent is in the container's root. */
	agent_exe_fd = open("/proc/self/exe", O_PATH | O_CLOEXEC);
	if (agent_exe_fd < 0)
		return bl_set_error_errno(err, errno, "open /proc/self/exe");
	/* Not dumpable: no process of a container (whatever its uid and
	 * capabilities) may ptrace the agent or open its /proc/PID/mem, and the
	 * children inherit that until their execve resets it. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return bl_set_error_errno(err, errno, "prctl(PR_SET_DUMPABLE)");
	_cleanup_free_ char *s = NULL;
	if (bl_read_file("/proc/sys/kernel/cap_last_cap", 32, &s, NULL, NULL) == 0)
		cap_last = atoi(s);
	if (cap_last < 0 || cap_last > 63)
		cap_last = 40;
	return 0;
}

/* ----------------------------------------------------------- child side */

__attribute__((noreturn)) static void child_fail(int errfd, enum step step)
{
	struct child_error ce = {.step = step, .errnum = errno};
	(void)!write(errfd, &ce, sizeof(ce));
	_exit(127);
}

#define CHECK(cond, step)                        \
	do {                                     \
		if (!(cond))                     \
			child_fail(errfd, step); \
	} while (0)

/* mkdir -p without malloc; path is absolute and clean. */
static int mkdir_p(const char *path, mode_t mode)
{
	char buf[4096];
	size_t n = strlen(path);
	if (n >= sizeof(buf))
		return -1;
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		char c = buf[i];
		buf[i] = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -1;
		buf[i] = c;
	}
	return 0;
}

static int mount_at(const char *src, const char *dst, const char *type, unsigned long flags,
		    const char *data)
{
	if (mkdir_p(dst, 0755) < 0 && errno != EROFS)
		return -1;
	return mount(src, dst, type, flags, data);
}

static void child_pivot(const agent_launch *l, int errfd)
{
	CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0, STEP_MOUNT_PRIVATE);
	CHECK(chdir(l->rootfs) == 0, STEP_PIVOT_ROOT);
	CHECK(syscall(SYS_pivot_root, ".", ".") == 0, STEP_PIVOT_ROOT);
	CHECK(umount2(".", MNT_DETACH) == 0, STEP_PIVOT_ROOT);
	CHECK(chdir("/") == 0, STEP_PIVOT_ROOT);
}

static void child_dev(int errfd)
{
	static const struct {
		const char *name;
		unsigned major, minor;
	} nodes[] = {{"/dev/null", 1, 3},   {"/dev/zero", 1, 5},    {"/dev/full", 1, 7},
		     {"/dev/random", 1, 8}, {"/dev/urandom", 1, 9}, {"/dev/tty", 5, 0}};
	static const char *const links[][2] = {{"pts/ptmx", "/dev/ptmx"},
					       {"/proc/self/fd", "/dev/fd"},
					       {"/proc/self/fd/0", "/dev/stdin"},
					       {"/proc/self/fd/1", "/dev/stdout"},
					       {"/proc/self/fd/2", "/dev/stderr"}};
	CHECK(mount_at("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC | MS_STRICTATIME,
		       "mode=755,size=65536k,nr_inodes=1024") == 0,
	      STEP_MOUNT_DEV);
	for (size_t i = 0; i < BL_ARRAY_SIZE(nodes); i++)
		CHECK(mknod(nodes[i].name, S_IFCHR | 0666,
			    makedev(nodes[i].major, nodes[i].minor)) == 0 &&
			  chmod(nodes[i].name, 0666) == 0,
		      STEP_MOUNT_DEV);
	for (size_t i = 0; i < BL_ARRAY_SIZE(links); i++)
		CHECK(symlink(links[i][0], links[i][1]) == 0, STEP_MOUNT_DEV);
	CHECK(mount_at("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
		       "newinstance,ptmxmode=0666,mode=0620,gid=5") == 0,
	      STEP_MOUNT_DEV);
	CHECK(mount_at("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		       "mode=1777,size=65536k") == 0,
	      STEP_MOUNT_DEV);
	(void)mount_at("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

/* Kernel-wide knobs and kernel memory stay out of reach of a container's
 * root (containers of one pod share the guest kernel): Docker's masked
 * paths (files under /dev/null, directories under an empty read-only tmpfs)
 * and read-only paths. */
static void child_mask_paths(int errfd)
{
	static const char *const masked[] = {
	    "/proc/asound",
	    "/proc/acpi",
	    "/proc/kcore",
	    "/proc/keys",
	    "/proc/latency_stats",
	    "/proc/timer_list",
	    "/proc/timer_stats",
	    "/proc/sched_debug",
	    "/proc/scsi",
	    "/proc/sysrq-trigger" /* also read-only below; masked is stricter */,
	    "/sys/firmware",
	    "/sys/devices/virtual/powercap",
	    "/sys/kernel/debug",
	    "/sys/kernel/security"};
	static const char *const readonly[] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"};
	for (size_t i = 0; i < BL_ARRAY_SIZE(readonly); i++) {
		if (access(readonly[i], F_OK) < 0)
			continue;
		CHECK(mount(readonly[i], readonly[i], NULL, MS_BIND | MS_REC, NULL) == 0 &&
			  mount(NULL, readonly[i], NULL,
				MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
				NULL) == 0,
		      STEP_MOUNT_PROC);
	}
	for (size_t i = 0; i < BL_ARRAY_SIZE(masked); i++) {
		struct stat st;
		if (lstat(masked[i], &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode))
			CHECK(mount("tmpfs", masked[i], "tmpfs",
				    MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
				    "size=4k,mode=555") == 0,
			      STEP_MOUNT_PROC);
		else
			CHECK(mount("/dev/null", masked[i], NULL, MS_BIND, NULL) == 0,
			      STEP_MOUNT_PROC);
	}
}

static void child_mounts(const agent_launch *l, int errfd)
{
	CHECK(mount_at("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0,
	      STEP_MOUNT_PROC);
	child_dev(errfd);
	CHECK(mount_at("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
		       NULL) == 0,
	      STEP_MOUNT_SYS);
	/* The container's own cgroup (the root of its cgroup namespace),
	 * read-only, as runc shows it on cgroup v2. */
	(void)mount_at("cgroup2", "/sys/fs/cgroup", "cgroup2",
		       MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL);
	child_mask_paths(errfd);
	if (l->readonly)
		(void)mount_at("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
			       "mode=1777,size=65536k");
	for (size_t i = 0; i < l->n_mounts; i++)
		CHECK(mount_at("tmpfs", l->mounts[i].destination, "tmpfs", l->mounts[i].flags,
			       l->mounts[i].data[0] ? l->mounts[i].data : NULL) == 0,
		      STEP_MOUNT_TMPFS);
	if (l->readonly)
		CHECK(mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) == 0,
		      STEP_REMOUNT_RO);
}

static void child_loopback_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return;
	struct ifreq ifr = {0};
	memcpy(ifr.ifr_name, "lo", 3);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP;
		(void)ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	close(s);
}

/* Opens a pty in the container's own devpts (so it has a name there) and
 * hands the master to the agent over the error socket. */
static void child_own_pty(int errfd, int stdio[3])
{
	int master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
	CHECK(master >= 0, STEP_PTY);
	int unlock = 0;
	struct winsize ws = {.ws_row = 24, .ws_col = 80};
	CHECK(ioctl(master, TIOCSPTLCK, &unlock) == 0 && ioctl(master, TIOCSWINSZ, &ws) == 0,
	      STEP_PTY);
	int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	CHECK(slave >= 0, STEP_PTY);
	char mark = 'P';
	struct iovec iov = {.iov_base = &mark, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u = {0};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = u.buf,
			    .msg_controllen = sizeof(u.buf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &master, sizeof(int));
	CHECK(sendmsg(errfd, &mh, MSG_NOSIGNAL) == 1, STEP_PTY);
	close(master);
	stdio[0] = stdio[1] = stdio[2] = slave;
}

static void child_stdio(const agent_launch *l, const int stdio[3], int errfd)
{
	int fds[3];
	for (int i = 0; i < 3; i++) {
		fds[i] = fcntl(stdio[i], F_DUPFD_CLOEXEC, 3);
		CHECK(fds[i] >= 0, STEP_STDIO);
	}
	for (int i = 0; i < 3; i++)
		CHECK(dup2(fds[i], i) == i, STEP_STDIO);
	CHECK(syscall(SYS_close_range, 3, ~0u, CLOSE_RANGE_CLOEXEC) == 0, STEP_STDIO);
	CHECK(setsid() >= 0, STEP_SETSID);
	if (l->terminal)
		CHECK(ioctl(0, TIOCSCTTY, 0) == 0, STEP_CTTY);
}

static void child_creds(const agent_launch *l, int errfd)
{
	for (size_t i = 0; i < l->n_rlimits; i++) {
		struct rlimit rl = {.rlim_cur = l->rlimits[i].soft, .rlim_max = l->rlimits[i].hard};
		CHECK(setrlimit((__rlimit_resource_t)l->rlimits[i].resource, &rl) == 0,
		      STEP_RLIMIT);
	}
	CHECK(chdir(l->cwd) == 0, STEP_CWD);
	umask(l->umask);
	CHECK(prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) == 0, STEP_CAPBSET);
	for (int c = 0; c <= cap_last; c++) {
		if (!(l->caps.bounding & (1ull << c)))
			CHECK(prctl(PR_CAPBSET_DROP, c, 0, 0, 0) == 0, STEP_CAPBSET);
	}
	/* Raw system calls: glibc's wrappers broadcast to the parent's threads
	 * (setxid), which do not exist in this child, and hang. */
	/* Still root with every capability here, so no no_new_privs is needed;
	 * the filter allows what follows (setgroups .. execve). */
	int se = agent_seccomp_install(l->seccomp);
	errno = -se;
	CHECK(se == 0, STEP_SECCOMP);
	CHECK(syscall(SYS_setgroups, l->n_gids, l->gids) == 0, STEP_SETGROUPS);
	CHECK(syscall(SYS_setresgid, l->gid, l->gid, l->gid) == 0, STEP_SETGID);
	CHECK(syscall(SYS_setresuid, l->uid, l->uid, l->uid) == 0, STEP_SETUID);
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct d[2];
	for (int i = 0; i < 2; i++) {
		d[i].effective = (uint32_t)(l->caps.effective >> (32 * i));
		d[i].permitted = (uint32_t)(l->caps.permitted >> (32 * i));
		d[i].inheritable = (uint32_t)(l->caps.inheritable >> (32 * i));
	}
	CHECK(syscall(SYS_capset, &h, d) == 0, STEP_CAPSET);
	for (int c = 0; c <= cap_last; c++) {
		if (l->caps.ambient & (1ull << c))
			CHECK(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) == 0,
			      STEP_AMBIENT);
	}
	if (l->no_new_privileges)
		CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, STEP_NNP);
}

static const char *env_path(char *const *envp)
{
	for (; *envp; envp++) {
		if (!strncmp(*envp, "PATH=", 5))
			return *envp + 5;
	}
	return DEFAULT_PATH;
}

/* execvpe with the new environment's PATH, on the stack. */
static void child_exec(const agent_launch *l, int errfd)
{
	const char *file = l->argv[0];
	if (l->builtin) {
		syscall(SYS_execveat, agent_exe_fd, "", l->argv, l->envp, AT_EMPTY_PATH);
		child_fail(errfd, STEP_EXEC);
	}
	if (strchr(file, '/')) {
		execve(file, l->argv, l->envp);
		child_fail(errfd, STEP_EXEC);
	}
	int saved = ENOENT;
	char buf[4096 + 256];
	size_t flen = strlen(file);
	for (const char *p = env_path(l->envp); p;) {
		const char *colon = strchr(p, ':');
		size_t dlen = colon ? (size_t)(colon - p) : strlen(p);
		if (dlen + flen + 2 < sizeof(buf)) {
			memcpy(buf, dlen ? p : ".", dlen ? dlen : 1);
			size_t off = dlen ? dlen : 1;
			buf[off] = '/';
			memcpy(buf + off + 1, file, flen + 1);
			execve(buf, l->argv, l->envp);
			if (errno == EACCES || (errno != ENOENT && errno != ENOTDIR))
				saved = errno;
		}
		p = colon ? colon + 1 : NULL;
	}
	errno = saved;
	child_fail(errfd, STEP_EXEC);
}

static void child_oom_score(int adj)
{
	char v[16];
	int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	int n = snprintf(v, sizeof(v), "%d", adj);
	(void)!write(fd, v, (size_t)n);
	close(fd);
}

__attribute__((noreturn)) static void child_main(const agent_launch *l, int errfd)
{
	sigset_t all;
	sigemptyset(&all);
	(void)sigprocmask(SIG_SETMASK, &all, NULL);
	(void)signal(SIGPIPE, SIG_DFL);
	child_oom_score(l->oom_score_adj);
	int stdio[3] = {l->stdio[0], l->stdio[1], l->stdio[2]};
	if (l->is_init) {
		child_pivot(l, errfd);
		child_mounts(l, errfd);
		if (l->own_pty)
			child_own_pty(errfd, stdio);
		if (l->hostname)
			CHECK(sethostname(l->hostname, strlen(l->hostname)) == 0, STEP_HOSTNAME);
		if (l->new_netns)
			child_loopback_up();
	} else {
		CHECK(setns(l->init_pidfd, CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC |
					       CLONE_NEWNET | CLONE_NEWCGROUP) == 0,
		      STEP_SETNS);
	}
	child_stdio(l, stdio, errfd);
	child_creds(l, errfd);
	child_exec(l, errfd);
	_exit(127);
}

/* ----------------------------------------------------------- parent side */

/*
 * A real clone3 (a fork: no CLONE_VM, no CLONE_VFORK). The child takes the
 * container's credentials in its own copy of the agent's memory, so nothing
 * it can be made to do (or have written into it through /proc/PID/mem before
 * its execve) reaches PID 1; the agent is non-dumpable, and so is the child
 * until execve. The parent returns at once: a child stopped before its exec
 * holds no lock of the agent (agent_launch_finish waits for it with a
 * deadline, outside every lock).
 */
static pid_t do_clone3(const agent_launch *l, int errfd, int *pidfd)
{
	uint64_t flags = CLONE_PIDFD | CLONE_INTO_CGROUP;
	if (l->is_init)
		flags |= CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC |
			 CLONE_NEWCGROUP | (l->new_netns ? CLONE_NEWNET : 0);
	struct clone_args args = {
	    .flags = flags,
	    .pidfd = (uint64_t)(uintptr_t)pidfd,
	    .exit_signal = SIGCHLD,
	    .cgroup = (uint64_t)l->cgroup_fd,
	};
	long pid = syscall(SYS_clone3, &args, sizeof(args));
	if (pid == 0)
		child_main(l, errfd);
	return (pid_t)pid;
}

pid_t agent_launch_spawn(const agent_launch *l, int *ret_pidfd, int *ret_errfd, bl_error_t *err)
{
	int p[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p) < 0)
		return bl_set_error_errno(err, errno, "socketpair");
	/* The exec'd process must be born in the container's pid namespace:
	 * switch this thread's pid_for_children around the clone. */
	if (!l->is_init && setns(l->init_pidfd, CLONE_NEWPID) < 0) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		return bl_set_error_errno(err, e, "join the container's pid namespace");
	}
	int pidfd = -1;
	pid_t pid = do_clone3(l, p[1], &pidfd);
	int e = errno;
	if (!l->is_init && setns(agent_pidns_fd, CLONE_NEWPID) < 0)
		abort(); /* this thread would fork into a container from now on */
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		return bl_set_error_errno(err, e, "clone3");
	}
	*ret_pidfd = pidfd;
	*ret_errfd = p[0];
	return pid;
}

/* One record from the child: an error, or a pty master (1 byte + fd). */
static ssize_t recv_record(int sock, struct child_error *ce, int *ret_fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = ce, .iov_len = sizeof(*ce)};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = u.buf,
			    .msg_controllen = sizeof(u.buf)};
	ssize_t n;
	do {
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	*ret_fd = -1;
	struct cmsghdr *cm = n >= 0 ? CMSG_FIRSTHDR(&mh) : NULL;
	if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
	    cm->cmsg_len == CMSG_LEN(sizeof(int)))
		memcpy(ret_fd, CMSG_DATA(cm), sizeof(int));
	return n;
}

static int child_error(const struct child_error *ce, ssize_t n, const char *argv0, bl_error_t *err)
{
	if (n != (ssize_t)sizeof(*ce) || ce->step <= 0 || ce->step > STEP_EXEC)
		return bl_set_error(err, BL_ESYSTEM, "container process failed before exec");
	if (ce->step == STEP_EXEC && ce->errnum == ENOENT)
		return bl_set_error(err, BL_ENOTFOUND, "exec \"%.200s\": executable file not found",
				    argv0);
	return bl_set_error_errno(err, ce->errnum, "%s%s%.200s", step_names[ce->step],
				  ce->step == STEP_EXEC ? " " : "",
				  ce->step == STEP_EXEC ? argv0 : "");
}

int agent_launch_finish(int errfd, const char *argv0, int *ret_pty, bl_error_t *err)
{
	_cleanup_close_ int sock = errfd, pty = -1;
	uint64_t deadline = bl_now_monotonic_ns() + AGENT_EXEC_TIMEOUT_MS * 1000000ull;
	for (;;) {
		struct child_error ce = {0};
		int fd;
		uint64_t now = bl_now_monotonic_ns();
		struct pollfd pfd = {.fd = sock, .events = POLLIN};
		int pr = now >= deadline ? 0 : poll(&pfd, 1, (int)((deadline - now) / 1000000 + 1));
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr == 0)
			return bl_set_error(err, BL_ETIMEOUT,
					    "container process did not exec within %d s (stopped?)",
					    AGENT_EXEC_TIMEOUT_MS / 1000);
		ssize_t n = recv_record(sock, &ce, &fd);
		if (fd >= 0 && ret_pty && pty < 0)
			pty = fd;
		else if (fd >= 0)
			close(fd);
		if (n == 1)
			continue;
		if (n != 0)
			return child_error(&ce, n, argv0, err);
		if (ret_pty && pty < 0)
			return bl_set_error(err, BL_ESYSTEM, "no pty from the container");
		if (ret_pty)
			*ret_pty = steal_fd(&pty);
		return 0;
	}
}
