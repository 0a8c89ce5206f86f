/*
 * Boots the guest kernel and initramfs in a transient libvirt microvm domain
 * (TCG here), with the agent in probe mode: the guest mounts the virtio-fs
 * share, reports the token it found there over the virtio-serial channel and
 * reboots. Then checks that the domain, QEMU, virtiofsd, sockets and
 * directories are gone.
 */
#include "bl_cleanup.h"
#include "bl_test.h"
#include "bl_util.h"
#include "vm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct boot_env {
	char *dir;   /* everything this test creates lives below */
	char *share; /* virtio-fs shared directory */
	char *sock;  /* agent channel */
	char *log;   /* console log */
	char token[64];
	char name[64];
};

static void env_init(struct boot_env *e, const char *tag)
{
	e->dir = bl_test_tmpdir(tag);
	e->share = bl_asprintf("%s/share", e->dir);
	e->sock = bl_asprintf("%s/agent.sock", e->dir);
	e->log = bl_asprintf("%s/console.log", e->dir);
	CU_ASSERT_FATAL(mkdir(e->share, 0755) == 0);
	/* QEMU runs as an unprivileged user: it must reach the socket's directory. */
	CU_ASSERT_FATAL(chmod(e->dir, 0711) == 0);
	snprintf(e->token, sizeof(e->token), "token-%d-%ld", (int)getpid(), (long)time(NULL));
	snprintf(e->name, sizeof(e->name), "bl-boot-%d-%s", (int)getpid(), tag);
	_cleanup_free_ char *probe = bl_asprintf("%s/.boxlite-probe", e->share);
	CU_ASSERT_FATAL(bl_write_file(probe, e->token, strlen(e->token), 0644, NULL) == 0);
}

static void env_free(struct boot_env *e)
{
	(void)bl_rm_rf(e->dir, NULL);
	free(e->dir);
	free(e->share);
	free(e->sock);
	free(e->log);
}

static bl_vm_config env_config(struct boot_env *e, const char *kernel, const char *initrd)
{
	bl_vm_config cfg = {
	    .name = e->name,
	    .kernel = kernel,
	    .initrd = initrd,
	    .cmdline_extra = "boxlite.probe=rootfs",
	    .memory_mib = 128,
	    .vcpus = 1,
	    .accel = BL_ACCEL_TCG,
	    .console_log = e->log,
	    .agent_socket = e->sock,
	    .shares = {{.tag = "rootfs", .dir = e->share}},
	    .n_shares = 1,
	};
	CU_ASSERT(bl_accel_choose(NULL, &cfg.accel, NULL, 0, NULL) == 0);
	return cfg;
}

/* Nothing of the VM may survive: processes, sockets, the libvirt root. */
static void assert_nothing_left(struct boot_env *e)
{
	for (int i = 0; i < 100 && bl_test_count_procs(e->share) > 0; i++)
		usleep(20000);
	CU_ASSERT_EQUAL(bl_test_count_procs(e->name), 0);  /* QEMU names the guest */
	CU_ASSERT_EQUAL(bl_test_count_procs(e->share), 0); /* virtiofsd's source dir */
	CU_ASSERT(access(e->sock, F_OK) < 0);
}

static void boot_and_probe(const char *uri, const char *tag)
{
	_cleanup_free_ char *kernel = bl_test_kernel();
	_cleanup_free_ char *initrd = bl_test_initrd();
	BL_SKIP_UNLESS(bl_test_is_root(), "booting a VM through libvirt needs root");
	BL_SKIP_UNLESS(access(kernel, R_OK) == 0, "no guest kernel at %s (run make)", kernel);
	struct boot_env e = {0};
	env_init(&e, tag);
	bl_vm_config cfg = env_config(&e, kernel, initrd);
	bl_error_t err = BL_ERROR_INIT;
	bl_vm *vm = NULL;
	int r = bl_vm_open(uri, &vm, &err);
	if (r < 0)
		fprintf(stderr, "open: %s\n", err.msg);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	r = bl_vm_start(vm, &cfg, &err);
	if (r < 0)
		fprintf(stderr, "start: %s\n", err.msg);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	CU_ASSERT(bl_vm_qemu_pid(vm) > 0 || uri);

	int fd = bl_test_connect_unix(e.sock, 5000);
	CU_ASSERT(fd >= 0);
	char line[256] = "";
	uint64_t t0 = bl_now_monotonic_ns();
	int n = fd >= 0 ? bl_test_read_line(fd, line, sizeof(line), 120000) : -1;
	printf("\n  boot to probe marker: %.2f s (%s)\n",
	       (double)(bl_now_monotonic_ns() - t0) / 1e9, uri ? uri : "embedded");
	_cleanup_free_ char *expect = bl_asprintf("BOXLITE-PROBE %s", e.token);
	CU_ASSERT(n > 0);
	CU_ASSERT_STRING_EQUAL(line, expect);
	if (n <= 0) {
		_cleanup_free_ char *console = NULL;
		if (bl_read_file(e.log, 1 << 20, &console, NULL, NULL) == 0)
			fprintf(stderr, "console:\n%s\n", console);
	}
	/* The guest reboots after the probe; on_reboot=destroy ends the domain. */
	CU_ASSERT_EQUAL(bl_vm_wait_gone(vm, 30000, &err), 0);
	if (fd >= 0)
		close(fd);
	bl_vm_free(vm);
	assert_nothing_left(&e);
	env_free(&e);
}

static void test_boot_embedded(void)
{
	boot_and_probe(NULL, "embed");
}

static void test_boot_system(void)
{
	BL_SKIP_UNLESS(access("/run/libvirt/libvirt-sock", F_OK) == 0,
		       "libvirtd is not running (qemu:///system); .ci/run starts it");
	boot_and_probe("qemu:///system", "system");
}

/* A missing kernel is a clear error naming the path, and leaves nothing. */
static void test_missing_kernel(void)
{
	BL_SKIP_UNLESS(bl_test_is_root(), "needs root");
	_cleanup_free_ char *initrd = bl_test_initrd();
	struct boot_env e = {0};
	env_init(&e, "nokernel");
	bl_vm_config cfg = env_config(&e, "/nonexistent/vmlinux", initrd);
	bl_error_t err = BL_ERROR_INIT;
	bl_vm *vm = NULL;
	int r = bl_vm_open(NULL, &vm, &err);
	if (r < 0)
		fprintf(stderr, "open: %s\n", err.msg);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	CU_ASSERT(bl_vm_start(vm, &cfg, &err) < 0);
	CU_ASSERT(strstr(err.msg, "/nonexistent/vmlinux") != NULL);
	bl_vm_free(vm);
	assert_nothing_left(&e);
	env_free(&e);
}

/* A kernel that is not a bootable image: QEMU fails, libvirt reports it. */
static void test_bad_kernel(void)
{
	BL_SKIP_UNLESS(bl_test_is_root(), "needs root");
	_cleanup_free_ char *initrd = bl_test_initrd();
	BL_SKIP_UNLESS(access(initrd, R_OK) == 0, "no initramfs at %s (run make)", initrd);
	struct boot_env e = {0};
	env_init(&e, "badkernel");
	_cleanup_free_ char *bad = bl_asprintf("%s/not-a-kernel", e.dir);
	CU_ASSERT_FATAL(bl_write_file(bad, "garbage", 7, 0644, NULL) == 0);
	bl_vm_config cfg = env_config(&e, bad, initrd);
	bl_error_t err = BL_ERROR_INIT;
	bl_vm *vm = NULL;
	int r = bl_vm_open(NULL, &vm, &err);
	if (r < 0)
		fprintf(stderr, "open: %s\n", err.msg);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	CU_ASSERT(bl_vm_start(vm, &cfg, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EBACKEND);
	printf("\n  error: %s\n", err.msg);
	bl_vm_free(vm);
	assert_nothing_left(&e);
	env_free(&e);
}

/* The probe boot behind `boxlite check`: a right answer, and a clear error
 * with the console kept when the guest cannot answer; nothing left either way. */
static void test_probe_api(void)
{
	_cleanup_free_ char *kernel = bl_test_kernel();
	_cleanup_free_ char *initrd = bl_test_initrd();
	BL_SKIP_UNLESS(bl_test_is_root(), "booting a VM through libvirt needs root");
	BL_SKIP_UNLESS(access(kernel, R_OK) == 0, "no guest kernel at %s (run make)", kernel);
	bl_vm_probe_result res;
	bl_error_t err = BL_ERROR_INIT;
	int r = bl_vm_probe(NULL, kernel, initrd, &res, &err);
	if (r < 0)
		fprintf(stderr, "probe: %s\n%s\n", err.msg, res.console_tail);
	CU_ASSERT_EQUAL(r, 0);
	CU_ASSERT(res.started_s > 0 && res.answered_s > res.started_s);
	CU_ASSERT(res.released_s >= res.answered_s);
	CU_ASSERT(strstr(res.accel_why, "tcg") || strstr(res.accel_why, "kvm"));
	CU_ASSERT_EQUAL(bl_test_count_procs("boxlite-probe-"), 0);

	/* An initramfs without the agent: the kernel panics, nobody answers. */
	_cleanup_free_ char *dir = bl_test_tmpdir("noagent");
	_cleanup_free_ char *empty = bl_asprintf("%s/empty.cpio", dir);
	CU_ASSERT_FATAL(chmod(dir, 0711) == 0); /* QEMU (libvirt-qemu) reads it */
	CU_ASSERT_FATAL(bl_write_file(empty, "", 0, 0644, NULL) == 0);
	r = bl_vm_probe(NULL, kernel, empty, &res, &err);
	CU_ASSERT(r < 0);
	printf("\n  no agent: %s\n", err.msg);
	CU_ASSERT(strstr(res.console_tail, "Kernel panic") != NULL);
	CU_ASSERT_EQUAL(bl_test_count_procs("boxlite-probe-"), 0);
	(void)bl_rm_rf(dir, NULL);
}

int main(void)
{
	static const bl_test_case cases[] = {
	    /* qemu:///system first: once a process has loaded the embedded
	     * driver, libvirt routes qemu:// URIs to it. */
	    {"boot_system", test_boot_system},	     {"boot_embedded", test_boot_embedded},
	    {"missing_kernel", test_missing_kernel}, {"bad_kernel", test_bad_kernel},
	    {"probe_api", test_probe_api},	     {NULL, NULL},
	};
	return bl_test_run("boot", cases);
}
