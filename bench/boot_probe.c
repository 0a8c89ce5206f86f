/*
 * Boot benchmark: N times, boot the guest kernel + initramfs through libvirt
 * with the agent in probe mode and time each phase; prints the median.
 * With URI "raw", QEMU and virtiofsd are started directly, without libvirt:
 * the floor that libvirt's share of the time is measured against (a
 * benchmark baseline only; the product starts VMs through libvirt alone).
 * Usage: boot_probe KERNEL INITRD N [URI|raw]
 */
#include "bl_cleanup.h"
#include "boxlite.h"
#include "bl_util.h"
#include "vm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double ms_since(uint64_t t0)
{
	return (double)(bl_now_monotonic_ns() - t0) / 1e6;
}

static int connect_unix(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return fd;
	if (fd >= 0)
		close(fd);
	return -1;
}

/* One boot through libvirt; fills create/marker/total in ms. */
static int one_boot(const char *kernel, const char *initrd, const char *uri, int i, double *create,
		    double *marker, double *total)
{
	bl_vm_probe_result res;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_vm_probe(uri, kernel, initrd, &res, &err) < 0) {
		fprintf(stderr, "boot %d: %s\n", i, err.msg);
		return -1;
	}
	*create = res.started_s * 1000;
	*marker = res.answered_s * 1000;
	*total = res.released_s * 1000;
	return 0;
}

static pid_t spawn(char *const argv[])
{
	pid_t pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static void reap(pid_t pid)
{
	if (pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
}

/* One boot of raw QEMU microvm + virtiofsd; fills marker in ms. */
static int one_raw_boot(const char *kernel, const char *initrd, int i, double *marker)
{
	_cleanup_free_ char *dir = bl_asprintf("/tmp/boxlite-bench-raw-%d-%d", (int)getpid(), i);
	_cleanup_free_ char *share = bl_asprintf("%s/share", dir);
	_cleanup_free_ char *vfs = bl_asprintf("%s/vfs.sock", dir);
	_cleanup_free_ char *sock = bl_asprintf("%s/agent.sock", dir);
	_cleanup_free_ char *src = bl_asprintf("source=%s", share);
	_cleanup_free_ char *vfs_path = bl_asprintf("--socket-path=%s", vfs);
	_cleanup_free_ char *vfs_chr = bl_asprintf("socket,id=vfs,path=%s", vfs);
	_cleanup_free_ char *agent_chr =
	    bl_asprintf("socket,id=agent,path=%s,server=on,wait=off", sock);
	_cleanup_free_ char *serial = bl_asprintf("file:%s/console.log", dir);
	_cleanup_free_ char *append =
	    bl_asprintf("console=ttyS0 reboot=t panic=-1 quiet tsc=reliable "
			"no_timer_check lpj=5000000 i8042.noaux "
			"8250.nr_uarts=1 mitigations=off cryptomgr.notests "
			"boxlite.probe=rootfs");
	if (bl_mkdir_p(share, 0755, NULL) < 0)
		return -1;
	char *vargv[] = {"/usr/lib/qemu/virtiofsd", vfs_path, "-o", src, "-o", "cache=auto",
			 "--thread-pool-size=1",    NULL};
	uint64_t t0 = bl_now_monotonic_ns();
	pid_t vpid = spawn(vargv);
	for (int k = 0; k < 500 && access(vfs, F_OK) < 0; k++)
		usleep(2000);
	char *qargv[] = {"/usr/bin/qemu-system-x86_64",
			 "-M",
			 "microvm,memory-backend=mem,acpi=off",
			 "-accel",
			 "tcg",
			 "-m",
			 "128",
			 "-smp",
			 "1",
			 "-nodefaults",
			 "-no-user-config",
			 "-display",
			 "none",
			 "-no-reboot",
			 "-object",
			 "memory-backend-memfd,id=mem,size=128M,share=on",
			 "-global",
			 "virtio-mmio.force-legacy=false",
			 "-kernel",
			 (char *)kernel,
			 "-initrd",
			 (char *)initrd,
			 "-append",
			 append,
			 "-chardev",
			 vfs_chr,
			 "-device",
			 "vhost-user-fs-device,chardev=vfs,tag=rootfs",
			 "-device",
			 "virtio-serial-device",
			 "-chardev",
			 agent_chr,
			 "-device",
			 "virtserialport,chardev=agent,name=org.boxlite.agent",
			 "-serial",
			 serial,
			 "-device",
			 "virtio-rng-device",
			 NULL};
	pid_t qpid = spawn(qargv);
	int fd = -1, rc = -1;
	for (int k = 0; k < 5000 && fd < 0; k++) {
		fd = connect_unix(sock);
		if (fd < 0)
			usleep(1000);
	}
	char c;
	struct pollfd p = {.fd = fd, .events = POLLIN};
	if (fd >= 0 && poll(&p, 1, 120000) == 1 && read(fd, &c, 1) == 1) {
		*marker = ms_since(t0);
		rc = 0;
	}
	if (fd >= 0)
		close(fd);
	reap(qpid);
	reap(vpid);
	(void)bl_rm_rf(dir, NULL);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: boot_probe KERNEL INITRD N [URI]\n");
		return 2;
	}
	/* As the product does: reap our VMs' zombies so teardown is not timed
	 * against a slow init. */
	(void)bl_host_prepare();
	int n = atoi(argv[3]);
	if (n < 1 || n > 1000)
		return 2;
	const char *uri = argc > 4 ? argv[4] : NULL;
	double *create = calloc((size_t)n, sizeof(double)),
	       *marker = calloc((size_t)n, sizeof(double)),
	       *total = calloc((size_t)n, sizeof(double));
	int ok = 0;
	if (uri && !strcmp(uri, "raw")) {
		for (int i = 0; i < n; i++)
			if (one_raw_boot(argv[1], argv[2], i, &marker[ok]) == 0)
				ok++;
		if (ok)
			printf("raw qemu+virtiofsd n=%d  marker %.0f ms (median)\n", ok,
			       median(marker, ok));
		return ok ? 0 : 1;
	}
	for (int i = 0; i < n; i++)
		if (one_boot(argv[1], argv[2], uri, i, &create[ok], &marker[ok], &total[ok]) == 0)
			ok++;
	if (!ok)
		return 1;
	printf("libvirt %-10s n=%d  create %.0f ms  marker %.0f ms  torn down %.0f ms (medians)\n",
	       uri ? uri : "embedded", ok, median(create, ok), median(marker, ok),
	       median(total, ok));
	free(create);
	free(marker);
	free(total);
	return 0;
}
