/*
 * The host channel: serves the agent protocol on the virtio-serial port (or
 * an AF_VSOCK listener), writes the preamble on every connection, and reboots
 * the guest when the host has been gone for longer than a short grace: the
 * safety net that ends orphaned VMs.
 */
#include "agent.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"
#include "cgroup.h"
#include "container.h"
#include "io.h"
#include "launch.h"
#include "server.h"
#include "sync.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define BOOT_WAIT_NS (60ull * 1000000000ull) /* host must connect within */
#define GRACE_NS     (3ull * 1000000000ull)  /* host may reconnect within */

static pthread_mutex_t ch_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ch_cond;
static int n_conns;

/* Writes the preamble on a fresh (possibly non-blocking) connection. */
static void *conn_opened(void *user, int fd)
{
	size_t done = 0;
	while (done < AGENT_PREAMBLE_LEN) {
		ssize_t n = write(fd, AGENT_PREAMBLE + done, AGENT_PREAMBLE_LEN - done);
		if (n > 0) {
			done += (size_t)n;
		} else if (n < 0 && errno == EAGAIN) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			(void)poll(&p, 1, 1000);
		} else if (n < 0 && errno != EINTR) {
			bl_warn("write preamble: %s", strerror(errno));
			break;
		}
	}
	pthread_mutex_lock(&ch_lock);
	n_conns++;
	pthread_cond_broadcast(&ch_cond);
	pthread_mutex_unlock(&ch_lock);
	return NULL;
}

static void conn_closed(void *user, void *conn_data)
{
	pthread_mutex_lock(&ch_lock);
	n_conns--;
	pthread_cond_broadcast(&ch_cond);
	pthread_mutex_unlock(&ch_lock);
}

/* Waits until the host side of the port is open (no POLLHUP). A closed
 * virtio-serial port reports POLLHUP at once, so this has to sleep-poll. */
static bool port_wait_host(int port, uint64_t timeout_ns)
{
	uint64_t deadline = bl_now_monotonic_ns() + timeout_ns;
	do {
		struct pollfd p = {.fd = port, .events = POLLIN};
		if (poll(&p, 1, 0) >= 0 && !(p.revents & (POLLHUP | POLLERR)))
			return true;
		usleep(10000);
	} while (bl_now_monotonic_ns() < deadline);
	return false;
}

/* Waits until no connection is left; returns when n_conns drops to 0. */
static void wait_all_closed(void)
{
	pthread_mutex_lock(&ch_lock);
	while (n_conns > 0)
		pthread_cond_wait(&ch_cond, &ch_lock);
	pthread_mutex_unlock(&ch_lock);
}

__attribute__((noreturn)) static void serve_port(ttrpc_server *srv, int port)
{
	uint64_t wait = BOOT_WAIT_NS;
	for (;;) {
		if (!port_wait_host(port, wait))
			agent_reboot("the host is gone from the agent channel");
		bl_error_t err = BL_ERROR_INIT;
		int fd = fcntl(port, F_DUPFD_CLOEXEC, 3);
		if (fd < 0 || ttrpc_server_add_conn(srv, fd, &err) < 0)
			agent_reboot("cannot serve the agent channel");
		wait_all_closed();
		bl_warn("host closed the agent channel; waiting %llus for it to return",
			(unsigned long long)(GRACE_NS / 1000000000ull));
		wait = GRACE_NS;
	}
}

/* A vsock listener when the guest has a vsock device, else -1. */
static int vsock_listen(void)
{
	_cleanup_close_ int dev = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
	unsigned int cid = 0;
	if (dev < 0 || ioctl(dev, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) < 0 || cid <= 2 ||
	    cid == VMADDR_CID_ANY)
		return -1;
	_cleanup_close_ int s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_vm addr = {
	    .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = AGENT_VSOCK_PORT};
	if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(s, 8) < 0)
		return -1;
	return steal_fd(&s);
}

/* With vsock, the host is gone when no connection is open for the grace. */
__attribute__((noreturn)) static void serve_vsock(ttrpc_server *srv, int lfd)
{
	bl_error_t err = BL_ERROR_INIT;
	if (ttrpc_server_add_listener(srv, lfd, &err) < 0)
		agent_reboot("cannot listen on vsock");
	uint64_t wait = BOOT_WAIT_NS;
	for (;;) {
		uint64_t deadline = bl_now_monotonic_ns() + wait;
		pthread_mutex_lock(&ch_lock);
		while (n_conns == 0) {
			if (!agent_cond_wait_until(&ch_cond, &ch_lock, deadline))
				agent_reboot("no host connection on vsock");
		}
		pthread_mutex_unlock(&ch_lock);
		wait_all_closed();
		wait = GRACE_NS;
	}
}

static void services_start(void)
{
	bl_error_t err = BL_ERROR_INIT;
	if (agent_cgroup_setup(&err) < 0 || agent_containers_init(&err) < 0 ||
	    agent_launch_init(&err) < 0 || agent_io_start(&err) < 0 || agent_reaper_start(&err) < 0)
		agent_reboot(err.msg);
}

static ttrpc_server *server_start(void)
{
	bl_error_t err = BL_ERROR_INIT;
	agent_cond_init(&ch_cond);
	ttrpc_server *srv = ttrpc_server_new();
	if (!srv || agent_server_register(srv, &err) < 0)
		agent_reboot("ttrpc server set-up failed");
	ttrpc_server_set_conn_callbacks(srv, conn_opened, conn_closed, NULL);
	if (ttrpc_server_start(srv, &err) < 0)
		agent_reboot(err.msg);
	return srv;
}

void agent_serve(void)
{
	/* Children are reaped by the reaper thread only; it takes SIGCHLD with
	 * sigwaitinfo, so every thread must keep it blocked. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	(void)signal(SIGPIPE, SIG_IGN);
	int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		(void)!write(fd, "-1000", 5);
		close(fd);
	}
	services_start();
	ttrpc_server *srv = server_start();
	int lfd = vsock_listen();
	if (lfd >= 0)
		serve_vsock(srv, lfd);
	int port = agent_open_port(AGENT_PORT_NAME);
	if (port < 0)
		agent_reboot("no virtio port named " AGENT_PORT_NAME);
	serve_port(srv, port);
}
