/*
 * Shared set-up of the sandbox integration tests: a private busybox rootfs and
 * state directory per test program, sandbox options with a small VM, and the
 * "nothing left behind" check. Header-only (each test program is one file).
 */
#pragma once

#include "bl_cleanup.h"
#include "bl_test.h"
#include "bl_util.h"
#include "boxlite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct sb_env {
	char *dir;    /* everything below */
	char *rootfs; /* busybox root filesystem */
	char *state;  /* BOXLITE state dir */
	char *kernel, *initrd;
	char qemu_needle[64]; /* in the command line of our QEMUs: guest=boxlite-<prefix> */
	char ids[64][24];
	int n_ids;
	bool ok;
};

static struct sb_env env;

static const char *const busybox_applets[] = {
    "sh",	"ls", "cat",  "echo",  "true", "false", "sleep",  "env", "id",	  "tar",
    "head",	"dd", "wc",   "kill",  "yes",  "seq",	"printf", "pwd", "mkdir", "rm",
    "hostname", "df", "tail", "touch", "test", "[",	"stat",	  NULL};

/* Makes the busybox rootfs; returns false (and the reason) when impossible. */
static bool sb_env_setup(const char *tag)
{
	if (env.ok)
		return true;
	if (!bl_test_is_root() || access("/bin/busybox", X_OK) < 0)
		return false;
	env.kernel = bl_test_kernel();
	env.initrd = bl_test_initrd();
	if (access(env.kernel, R_OK) < 0 || access(env.initrd, R_OK) < 0)
		return false;
	/* Before any thread: reap the QEMU/virtiofsd libvirt daemonizes. */
	(void)bl_host_prepare();
	snprintf(env.qemu_needle, sizeof(env.qemu_needle), "guest=boxlite-bt%d-", (int)getpid());
	env.dir = bl_test_tmpdir(tag);
	(void)chmod(env.dir, 0711);
	env.rootfs = bl_asprintf("%s/rootfs", env.dir);
	env.state = bl_asprintf("%s/state", env.dir);
	_cleanup_free_ char *bin = bl_asprintf("%s/bin", env.rootfs);
	_cleanup_free_ char *bb = bl_asprintf("%s/busybox", bin);
	_cleanup_free_ char *cmd = bl_asprintf("cp /bin/busybox %s", bb);
	if (bl_mkdir_p(bin, 0755, NULL) < 0 || system(cmd) != 0)
		return false;
	for (size_t i = 0; busybox_applets[i]; i++) {
		_cleanup_free_ char *link = bl_asprintf("%s/%s", bin, busybox_applets[i]);
		if (symlink("busybox", link) < 0)
			return false;
	}
	static const char *const dirs[] = {"tmp", "etc", "root", "proc", "dev", "sys", NULL};
	for (size_t i = 0; dirs[i]; i++) {
		_cleanup_free_ char *d = bl_asprintf("%s/%s", env.rootfs, dirs[i]);
		(void)mkdir(d, i == 0 ? 01777 : 0755);
	}
	_cleanup_free_ char *passwd = bl_asprintf("%s/etc/passwd", env.rootfs);
	const char *pw = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n";
	(void)bl_write_file(passwd, pw, strlen(pw), 0644, NULL);
	env.ok = true;
	return true;
}

static void sb_env_teardown(void)
{
	if (env.dir)
		(void)bl_rm_rf(env.dir, NULL);
	free(env.dir);
	free(env.rootfs);
	free(env.state);
	free(env.kernel);
	free(env.initrd);
	env = (struct sb_env){0};
}

/* Sandbox ids carry the test's prefix so its QEMUs can be counted. */
static const char *sb_next_id(void)
{
	/* Called from several threads at once (test_sandbox's parallel runs). */
	int n = __atomic_add_fetch(&env.n_ids, 1, __ATOMIC_RELAXED);
	char *id = env.ids[(n - 1) % 64];
	snprintf(id, sizeof(env.ids[0]), "bt%d-%d", (int)getpid(), n);
	return id;
}

__attribute__((unused)) static bl_sandbox_options sb_opts(const char *const *args)
{
	bl_sandbox_options o = {
	    .id = sb_next_id(),
	    .rootfs = env.rootfs,
	    .memory_mib = 128,
	    .disk_mib = 16,
	    .args = args,
	    .state_dir = env.state,
	    .kernel = env.kernel,
	    .initrd = env.initrd,
	    .owner = "test",
	};
	return o;
}

static bool mounts_mention(const char *needle)
{
	_cleanup_free_ char *buf = NULL;
	if (bl_read_file("/proc/self/mountinfo", 1 << 20, &buf, NULL, NULL) < 0)
		return false;
	return strstr(buf, needle) != NULL;
}

static int state_entries(void)
{
	_cleanup_closedir_ DIR *d = opendir(env.state);
	int n = 0;
	struct dirent *de;
	while (d && (de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	return n;
}

/* No QEMU (its command line names our state dir), no virtiofsd (it names our
 * rootfs), no mount, no state directory, no socket left. */
__attribute__((unused)) static void sb_assert_clean(void)
{
	/* `boxlite run` exits with the status first and releases after (and a
	 * pool's owner destroys a released VM in the background): a generous
	 * bound, never a timing check. */
	for (int i = 0; i < 1500 && (bl_test_count_procs(env.state) > 0 ||
				     bl_test_count_procs(env.rootfs) > 0 ||
				     mounts_mention(env.dir) || state_entries() > 0);
	     i++)
		usleep(20000);
	CU_ASSERT_EQUAL(bl_test_count_procs(env.state), 0);
	CU_ASSERT_EQUAL(bl_test_count_procs(env.rootfs), 0);
	CU_ASSERT(!mounts_mention(env.dir));
	CU_ASSERT_EQUAL(state_entries(), 0);
}

/* Reads a stream to the end into a malloc'd string. */
__attribute__((unused)) static char *sb_read_all(bl_process *p, int stream)
{
	size_t cap = 4096, len = 0;
	char *buf = bl_malloc0(cap);
	for (;;) {
		if (cap - len < 2048) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
		bl_error_t err = BL_ERROR_INIT;
		ssize_t n = bl_process_read(p, stream, buf + len, cap - len - 1, &err);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return buf;
}
