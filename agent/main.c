/*
 * boxlite-agent, PID 1 of the guest: mounts what a userland needs, finds the
 * host channel, announces readiness and serves the agent protocol. It never
 * exits; every fatal path syncs and reboots, which ends the VM.
 */
#include "agent.h"
#include "archive.h"
#include "bl_net_guest.h"
#include "net.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"
#include "launch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

void agent_reboot(const char *why)
{
	bl_error_log("rebooting: %s", why);
	sync();
	for (;;) {
		(void)reboot(RB_AUTOBOOT);
		pause();
	}
}

char *agent_cmdline_get(const char *key)
{
	_cleanup_free_ char *cmdline = NULL;
	if (bl_read_file("/proc/cmdline", 4096, &cmdline, NULL, NULL) < 0)
		return NULL;
	size_t klen = strlen(key);
	for (char *tok = strtok(cmdline, " \n"); tok; tok = strtok(NULL, " \n")) {
		if (!strncmp(tok, key, klen) && tok[klen] == '=')
			return bl_strdup(tok + klen + 1);
	}
	return NULL;
}

static void mount_or_die(const char *src, const char *dst, const char *type, unsigned long flags,
			 const char *data)
{
	(void)mkdir(dst, 0755);
	if (mount(src, dst, type, flags, data) < 0 && errno != EBUSY) {
		char msg[256];
		snprintf(msg, sizeof(msg), "mount %s on %s: %s", type, dst, strerror(errno));
		agent_reboot(msg);
	}
}

static void mount_basics(void)
{
	mount_or_die("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_or_die("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_or_die("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	mount_or_die("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
		     "newinstance,ptmxmode=0666,mode=0620");
	mount_or_die("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m");
	mount_or_die("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=16m");
}

/*
 * The initramfs root ("rootfs") has no parent mount, so pivot_root into a
 * container would fail (EINVAL). Re-root the agent on a bind mount of it
 * (the switch_root move), which has one. Best effort: the probe needs none.
 */
static void make_root_pivotable(void)
{
	static const char dir[] = "/.agent-root";
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return;
	if (mount("/", dir, NULL, MS_BIND, NULL) < 0 || chdir(dir) < 0 ||
	    mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0)
		bl_warn("re-rooting on a bind mount failed: %s", strerror(errno));
	(void)rmdir(dir);
}

/* The kernel leaves fds 0-2 closed when the initramfs has no /dev/console:
 * give them the console so later fds never land there. */
static void ensure_stdio(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		int c = open("/dev/console", O_RDWR | O_NOCTTY);
		if (c < 0)
			c = open("/dev/null", O_RDWR);
		if (c >= 0 && c != fd) {
			(void)dup2(c, fd);
			close(c);
		}
	}
}

/* Finds /dev/vportNpM whose virtio port name is `name`; waits for udev-less
 * devtmpfs to create the node (it appears with the driver's probe). */
int agent_open_port(const char *name)
{
	for (int attempt = 0; attempt < 500; attempt++) {
		_cleanup_closedir_ DIR *d = opendir("/sys/class/virtio-ports");
		struct dirent *de;
		while (d && (de = readdir(d))) {
			if (de->d_name[0] == '.')
				continue;
			char path[300];
			snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", de->d_name);
			_cleanup_free_ char *n = NULL;
			if (bl_read_file(path, 256, &n, NULL, NULL) < 0)
				continue;
			n[strcspn(n, "\n")] = '\0';
			if (strcmp(n, name))
				continue;
			snprintf(path, sizeof(path), "/dev/%s", de->d_name);
			int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
			if (fd >= 0)
				return fd;
		}
		usleep(10000);
	}
	return -1;
}

/* Guest-wide hardening before any container exists (the kernel is shared by
 * every container of the sandbox): no user namespaces at all (container root
 * would get CAP_SYS_ADMIN over a new namespace's mounts), no unprivileged
 * bpf or userfaultfd, no kernel pointers or log for the unprivileged, the
 * protected_* link rules. Best effort: a knob the kernel lacks is skipped. */
static void harden_sysctls(void)
{
	static const char *const knobs[][2] = {
	    {"/proc/sys/user/max_user_namespaces", "0"},
	    {"/proc/sys/kernel/unprivileged_bpf_disabled", "1"},
	    {"/proc/sys/vm/unprivileged_userfaultfd", "0"},
	    {"/proc/sys/kernel/kptr_restrict", "2"},
	    {"/proc/sys/kernel/dmesg_restrict", "1"},
	    {"/proc/sys/kernel/perf_event_paranoid", "3"},
	    {"/proc/sys/fs/protected_symlinks", "1"},
	    {"/proc/sys/fs/protected_hardlinks", "1"},
	    {"/proc/sys/fs/protected_fifos", "2"},
	    {"/proc/sys/fs/protected_regular", "2"},
	};
	for (size_t i = 0; i < BL_ARRAY_SIZE(knobs); i++) {
		int fd = open(knobs[i][0], O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (write(fd, knobs[i][1], strlen(knobs[i][1])) < 0)
			bl_warn("%s: %s", knobs[i][0], strerror(errno));
		close(fd);
	}
}

/* Boot probe (kernel cmdline boxlite.probe=TAG): mount the virtio-fs share
 * TAG, send "BOXLITE-PROBE <first line of .boxlite-probe>" and reboot. Used
 * by the boot test and for diagnosing a host's VM set-up. */
static void run_probe(const char *tag, int port)
{
	mount_or_die(tag, "/mnt", "virtiofs", MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);
	_cleanup_free_ char *content = NULL;
	if (bl_read_file("/mnt/.boxlite-probe", 256, &content, NULL, NULL) < 0)
		content = bl_strdup("(no .boxlite-probe file)");
	content[strcspn(content, "\n")] = '\0';
	_cleanup_free_ char *line = bl_asprintf("BOXLITE-PROBE %s\n", content);
	if (bl_write_full(port, line, strlen(line)) < 0)
		agent_reboot("probe: write to port failed");
	(void)umount("/mnt");
	agent_reboot("probe done");
}

static volatile sig_atomic_t pause_stop;

static void pause_on_signal(int sig)
{
	if (sig != SIGCHLD)
		pause_stop = 1;
}

/*
 * The built-in pause: PID 1 of a container created without a command (the
 * agent binary re-exec'd as AGENT_PAUSE_PATH). Sleeps until a signal, reaps
 * orphans, and exits on SIGTERM or SIGINT. Handlers, since PID 1 of a pid
 * namespace gets no signal it has left at the default action.
 */
__attribute__((noreturn)) static void pause_main(void)
{
	sigset_t block, wait_set;
	sigemptyset(&block);
	sigaddset(&block, SIGCHLD);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	(void)sigprocmask(SIG_BLOCK, &block, &wait_set);
	sigdelset(&wait_set, SIGCHLD);
	sigdelset(&wait_set, SIGTERM);
	sigdelset(&wait_set, SIGINT);
	struct sigaction sa = {.sa_handler = pause_on_signal};
	sigemptyset(&sa.sa_mask);
	(void)sigaction(SIGCHLD, &sa, NULL);
	(void)sigaction(SIGTERM, &sa, NULL);
	(void)sigaction(SIGINT, &sa, NULL);
	for (;;) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		if (pause_stop)
			_exit(0);
		(void)sigsuspend(&wait_set);
	}
}

/* boxlite.log=debug|info|... on the kernel command line; info by default. */
static bl_log_level cmdline_log_level(void)
{
	_cleanup_free_ char *v = agent_cmdline_get("boxlite.log");
	if (!v || !strcmp(v, "info"))
		return BL_LOG_INFO;
	if (!strcmp(v, "debug"))
		return BL_LOG_DEBUG;
	if (!strcmp(v, "warn"))
		return BL_LOG_WARN;
	return !strcmp(v, "error") ? BL_LOG_ERROR : BL_LOG_INFO;
}

int main(int argc, char **argv)
{
	if (argc >= 1 && !strcmp(argv[0], AGENT_PAUSE_PATH))
		pause_main();
	if (argc >= 1 &&
	    (!strcmp(argv[0], BL_AGENT_COPY_OUT_PATH) || !strcmp(argv[0], BL_AGENT_COPY_IN_PATH)))
		return agent_archive_main(argc, argv);
	bl_log_setup(2, BL_LOG_INFO, "boxlite-agent");
	if (getpid() != 1) {
		fprintf(stderr, "boxlite-agent: must run as PID 1 of a boxlite guest\n");
		return 1;
	}
	make_root_pivotable();
	mount_basics();
	bl_log_setup(2, cmdline_log_level(), "boxlite-agent");
	ensure_stdio();
	harden_sysctls();
	_cleanup_free_ char *probe = agent_cmdline_get("boxlite.probe");
	if (probe) {
		int port = agent_open_port(AGENT_PORT_NAME);
		if (port < 0)
			agent_reboot("no virtio port named " AGENT_PORT_NAME);
		run_probe(probe, port);
	}
	_cleanup_free_ char *net = agent_cmdline_get(BL_NET_CMDLINE_KEY);
	if (net && !strcmp(net, "on"))
		(void)agent_net_setup();
	agent_serve();
}
