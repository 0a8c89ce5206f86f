/*
 * containerd-shim-boxlite-v2 through a real containerd (started here with its
 * own root, state, config and sockets) and `ctr`: every case of
 * tests/shim/ctr-cases.sh runs with runc and with boxlite and must show the
 * same outputs, exit codes, states and task events; afterwards nothing of
 * ours is left (QEMU, virtiofsd, shims, mounts, sockets, state).
 */
#include "bl_cleanup.h"
#include "bl_test.h"
#include "bl_util.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *script;	   /* tests/shim/ctr-cases.sh */
static char *dir;	   /* the test's containerd and everything else */
static char skip_why[256]; /* set once: why nothing here can run */
static bool started;

static bool have(const char *prog)
{
	_cleanup_free_ char *cmd = bl_asprintf("command -v %s >/dev/null 2>&1", prog);
	return system(cmd) == 0;
}

static int sh(const char *action, const char *arg)
{
	_cleanup_free_ char *cmd =
	    bl_asprintf("'%s' '%s' %s %s", script, dir, action, arg ? arg : "");
	fflush(stdout);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static bool setup(void)
{
	if (started || skip_why[0])
		return started;
	const char *build = bl_test_build_dir();
	char src[PATH_MAX];
	_cleanup_free_ char *up = bl_asprintf("%s/..", build);
	if (!realpath(up, src)) {
		snprintf(skip_why, sizeof(skip_why), "no source tree above %s", build);
		return false;
	}
	script = bl_asprintf("%s/tests/shim/ctr-cases.sh", src);
	_cleanup_free_ char *shim = bl_asprintf("%s/containerd-shim-boxlite-v2", build);
	_cleanup_free_ char *image = bl_asprintf("%s/test-images/busybox-docker.tar", build);
	_cleanup_free_ char *kernel = bl_test_kernel();
	if (!bl_test_is_root())
		snprintf(skip_why, sizeof(skip_why), "needs root to run containerd");
	else if (!have("containerd") || !have("ctr") || !have("runc") || !have("script"))
		snprintf(skip_why, sizeof(skip_why),
			 "containerd, ctr, runc or script missing (packaging/install-deps.sh)");
	else if (access(shim, X_OK) < 0 || access(script, R_OK) < 0)
		snprintf(skip_why, sizeof(skip_why), "%s or %s missing", shim, script);
	else if (access(image, R_OK) < 0)
		snprintf(skip_why, sizeof(skip_why), "%s missing (make test-images)", image);
	else if (access(kernel, R_OK) < 0)
		snprintf(skip_why, sizeof(skip_why), "guest kernel %s missing", kernel);
	if (skip_why[0])
		return false;
	dir = bl_test_tmpdir("shim-ctr");
	if (sh("start", NULL) != 0) {
		snprintf(skip_why, sizeof(skip_why), "could not start containerd in %s", dir);
		CU_FAIL("containerd did not start");
		return false;
	}
	started = true;
	return true;
}

static void run_case(const char *name)
{
	if (!setup()) {
		bl_test_skip("%s", skip_why);
		return;
	}
	printf("\n");
	CU_ASSERT_EQUAL(sh("case", name), 0);
}

#define CASE(n)                    \
	static void test_##n(void) \
	{                          \
		run_case(#n);      \
	}
CASE(exit_codes)
CASE(stdout_stderr)
CASE(missing_command)
CASE(stdin_eof)
CASE(large_output)
CASE(tty)
CASE(file_logger)
CASE(binary_logger)
CASE(detached_exec)
CASE(kill_from_outside)
CASE(oom)
CASE(shim_sigkill)
CASE(containerd_restart)

static void test_nothing_left(void)
{
	if (!started) {
		bl_test_skip("%s", skip_why[0] ? skip_why : "containerd not started");
		return;
	}
	printf("\n");
	CU_ASSERT_EQUAL(sh("stop", NULL), 0);
	CU_ASSERT_EQUAL(sh("leaks", NULL), 0);
	_cleanup_free_ char *cmd = bl_asprintf("rm -rf '%s'", dir);
	if (system(cmd) != 0)
		CU_FAIL("could not remove the test directory");
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"exit_codes", test_exit_codes},
	    {"stdout_stderr", test_stdout_stderr},
	    {"missing_command", test_missing_command},
	    {"stdin_eof", test_stdin_eof},
	    {"large_output", test_large_output},
	    {"tty", test_tty},
	    {"file_logger", test_file_logger},
	    {"binary_logger", test_binary_logger},
	    {"detached_exec", test_detached_exec},
	    {"kill_from_outside", test_kill_from_outside},
	    {"oom", test_oom},
	    {"shim_sigkill", test_shim_sigkill},
	    {"containerd_restart", test_containerd_restart},
	    {"nothing_left", test_nothing_left},
	    {NULL, NULL},
	};
	return bl_test_run("shim_ctr", cases);
}
