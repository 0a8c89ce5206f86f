/*
 * The probe boot: the smallest end-to-end check of a host's VM set-up, shared
 * by `boxlite check` and the boot benchmark. The agent, started with
 * boxlite.probe=TAG, mounts the virtio-fs share TAG and answers with the
 * token it found there over the agent channel.
 */
#include "bl_cleanup.h"
#include "bl_util.h"
#include "vm.h"
#include "boxlite.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PROBE_ANSWER_TIMEOUT_MS 120000

static double secs_since(uint64_t t0)
{
	return (double)(bl_now_monotonic_ns() - t0) / 1e9;
}

/* libvirt binds the channel socket before QEMU starts; connect once. */
static int connect_unix(const char *path, bl_error_t *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return bl_set_error(err, BL_EINVAL, "socket path too long: %s", path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "socket");
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		return bl_set_error_errno(err, e, "connect %s", path);
	}
	return fd;
}

/* Reads one line (at most len-1 bytes, without the newline) before the deadline. */
static int read_line(int fd, char *buf, size_t len, int timeout_ms, bl_error_t *err)
{
	size_t used = 0;
	uint64_t deadline = bl_now_monotonic_ns() + (uint64_t)timeout_ms * 1000000ull;
	while (used + 1 < len) {
		uint64_t now = bl_now_monotonic_ns();
		if (now >= deadline)
			return bl_set_error(err, BL_ETIMEOUT, "no answer from the guest in %d s",
					    timeout_ms / 1000);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, (int)((deadline - now) / 1000000) + 1);
		if (r < 0 && errno != EINTR)
			return bl_set_error_errno(err, errno, "poll");
		if (r <= 0)
			continue;
		ssize_t n = read(fd, buf + used, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return bl_set_error(err, BL_EAGENTLOST, "the guest closed the channel");
		if (buf[used] == '\n')
			break;
		used++;
	}
	buf[used] = '\0';
	return 0;
}

/* Waits for the guest's answer and checks it carries the share's token. */
static int ask(const char *sock, const char *token, bl_error_t *err)
{
	_cleanup_close_ int fd = connect_unix(sock, err);
	if (fd < 0)
		return fd;
	char line[256];
	int r = read_line(fd, line, sizeof(line), PROBE_ANSWER_TIMEOUT_MS, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *expect = bl_asprintf("BOXLITE-PROBE %s", token);
	if (strcmp(line, expect))
		return bl_set_error(err, BL_EPROTO,
				    "the guest answered \"%.100s\", not the share's token", line);
	return 0;
}

static int boot_and_ask(const char *uri, const char *kernel, const char *initrd, const char *dir,
			bl_vm_probe_result *res, bl_error_t *err)
{
	_cleanup_free_ char *share = bl_asprintf("%s/share", dir);
	_cleanup_free_ char *sock = bl_asprintf("%s/agent.sock", dir);
	_cleanup_free_ char *log = bl_asprintf("%s/console.log", dir);
	_cleanup_free_ char *probe = bl_asprintf("%s/.boxlite-probe", share);
	_cleanup_free_ char *name = bl_asprintf("boxlite-probe-%d-%llu", (int)getpid(),
						(unsigned long long)bl_now_monotonic_ns());
	_cleanup_free_ char *token = bl_asprintf("token-%s", name);
	int r;
	if (mkdir(share, 0755) < 0)
		return bl_set_error_errno(err, errno, "mkdir %s", share);
	if ((r = bl_write_file(probe, token, strlen(token), 0644, err)) < 0)
		return r;
	bl_vm_config cfg = {
	    .name = name,
	    .kernel = kernel,
	    .initrd = initrd,
	    .cmdline_extra = "boxlite.probe=rootfs",
	    .memory_mib = 128,
	    .vcpus = 1,
	    .console_log = log,
	    .agent_socket = sock,
	    .shares = {{.tag = "rootfs", .dir = share}},
	    .n_shares = 1,
	};
	if ((r = bl_accel_choose(NULL, &cfg.accel, res->accel_why, sizeof(res->accel_why), err)) <
	    0)
		return r;
	uint64_t t0 = bl_now_monotonic_ns();
	bl_vm *vm = NULL;
	if ((r = bl_vm_open(uri, &vm, err)) < 0 || (r = bl_vm_start(vm, &cfg, err)) < 0)
		goto out;
	res->started_s = secs_since(t0);
	if ((r = ask(sock, token, err)) < 0)
		goto out;
	res->answered_s = secs_since(t0);
out:
	if (r < 0) {
		/* The console says why a boot failed: keep its tail for the caller. */
		_cleanup_free_ char *console = NULL;
		size_t len = 0, keep = sizeof(res->console_tail) - 1;
		if (bl_read_file(log, 1 << 20, &console, &len, NULL) == 0)
			snprintf(res->console_tail, sizeof(res->console_tail), "%s",
				 console + (len > keep ? len - keep : 0));
	}
	/* Once the answer is in, destroying beats waiting for the guest's reboot. */
	bl_vm_free(vm);
	res->released_s = secs_since(t0);
	return r;
}

int bl_vm_probe(const char *uri, const char *kernel, const char *initrd, bl_vm_probe_result *res,
		bl_error_t *err)
{
	*res = (bl_vm_probe_result){0};
	char dir[] = "/tmp/boxlite-probe-XXXXXX";
	if (!mkdtemp(dir))
		return bl_set_error_errno(err, errno, "mkdtemp");
	/* QEMU runs as an unprivileged user and must reach the channel socket. */
	int r = chmod(dir, 0711) < 0 ? bl_set_error_errno(err, errno, "chmod %s", dir)
				     : boot_and_ask(uri, kernel, initrd, dir, res, err);
	(void)bl_rm_rf(dir, NULL);
	return r;
}

int bl_host_probe(const char *uri, const char *kernel, const char *initrd, bl_probe_result *res,
		  bl_error_t *err)
{
	_cleanup_free_ char *k = kernel ? bl_strdup(kernel) : bl_default_kernel();
	_cleanup_free_ char *i = initrd ? bl_strdup(initrd) : bl_default_initrd();
	bl_vm_probe_result vr;
	int r = bl_vm_probe(uri, k, i, &vr, err);
	*res = (bl_probe_result){
	    .started_s = vr.started_s,
	    .answered_s = vr.answered_s,
	    .released_s = vr.released_s,
	};
	_Static_assert(sizeof(res->accel_why) == sizeof(vr.accel_why), "accel_why");
	_Static_assert(sizeof(res->console_tail) == sizeof(vr.console_tail), "console_tail");
	memcpy(res->accel_why, vr.accel_why, sizeof(res->accel_why));
	memcpy(res->console_tail, vr.console_tail, sizeof(res->console_tail));
	return r;
}
