/*
 * The Debian packages end to end (tests/deb/deb-test.sh): `make deb` builds
 * them from a copy of the tree; lintian finds no error; in a fresh Debian 12
 * root (debootstrap, cached) they install with dpkg -i, `boxlite --version`,
 * `boxlite info`, `pkg-config --modversion boxlite`, the SDK's import and a
 * VM work, and purge leaves exactly the files that were there before; on
 * this host their files (unpacked under the test's directory, nothing in
 * /usr) build a C program with pkg-config that runs a command in a sandbox,
 * run `boxlite run -- true` and serve `ctr run --runtime
 * io.containerd.boxlite.v2`.
 */
#include "bl_cleanup.h"
#include "bl_test.h"
#include "bl_util.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static char *dir;

static void step(const char *what)
{
	if (!bl_test_is_root()) {
		bl_test_skip("needs root (dpkg-buildpackage, chroot, VMs)");
		return;
	}
	char src[PATH_MAX], build[PATH_MAX];
	_cleanup_free_ char *up = bl_asprintf("%s/..", bl_test_build_dir());
	if (!realpath(up, src) || !realpath(bl_test_build_dir(), build)) {
		bl_test_skip("no source tree above %s", bl_test_build_dir());
		return;
	}
	if (!dir)
		dir = bl_test_tmpdir("deb");
	_cleanup_free_ char *cmd =
	    bl_asprintf("'%s/tests/deb/deb-test.sh' '%s' '%s' '%s' %s", src, src, build, dir, what);
	printf("\n");
	fflush(stdout);
	int st = system(cmd);
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_make_deb(void)
{
	step("build");
}

static void test_lintian(void)
{
	step("lintian");
}

static void test_chroot_install_purge(void)
{
	step("chroot");
}

static void test_host_c_program_run_ctr(void)
{
	step("host");
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"make deb", test_make_deb},
	    {"lintian: no error", test_lintian},
	    {"Debian 12 root: install, use, purge", test_chroot_install_purge},
	    {"host: C program, boxlite run, ctr run", test_host_c_program_run_ctr},
	    {NULL, NULL},
	};
	int r = bl_test_run("deb", cases);
	if (dir) {
		/* Never through a mount a failed chroot case left (its /dev, /sys). */
		_cleanup_free_ char *rm = bl_asprintf(
		    "grep -q ' %s/' /proc/self/mounts || rm -rf --one-file-system '%s'", dir, dir);
		if (system(rm) != 0)
			printf("could not remove %s\n", dir);
		free(dir);
	}
	return r;
}
