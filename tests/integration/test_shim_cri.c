/*
 * containerd-shim-boxlite-v2 under Kubernetes' CRI: containerd's CRI plugin
 * with a `boxlite` runtime handler, driven like kubelet by a Python client
 * over our own CRI .proto (tests/cri/run.sh, tests/cri/pod_test.py): one pod,
 * two containers, ExecSync in each, exit codes, stop, remove; the same pod
 * under runc must show the same observations; with boxlite the pod's
 * containers share one VM; nothing is left afterwards.
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

static bool have(const char *cmd)
{
	return system(cmd) == 0;
}

static void test_pod_in_one_vm(void)
{
	const char *build = bl_test_build_dir();
	char src[PATH_MAX];
	_cleanup_free_ char *up = bl_asprintf("%s/..", build);
	BL_SKIP_UNLESS(realpath(up, src) != NULL, "no source tree above %s", build);
	_cleanup_free_ char *script = bl_asprintf("%s/tests/cri/run.sh", src);
	_cleanup_free_ char *shim = bl_asprintf("%s/containerd-shim-boxlite-v2", build);
	_cleanup_free_ char *image = bl_asprintf("%s/test-images/busybox-docker.tar", build);
	_cleanup_free_ char *kernel = bl_test_kernel();
	BL_SKIP_UNLESS(bl_test_is_root(), "needs root to run containerd");
	BL_SKIP_UNLESS(have("command -v containerd >/dev/null && command -v ctr >/dev/null && "
			    "command -v runc >/dev/null"),
		       "containerd, ctr or runc missing (packaging/install-deps.sh)");
	BL_SKIP_UNLESS(have("/usr/bin/python3 -c 'import grpc, grpc_tools' 2>/dev/null"),
		       "python3-grpcio / python3-grpc-tools missing (packaging/install-deps.sh)");
	BL_SKIP_UNLESS(access("/usr/lib/cni/loopback", X_OK) == 0,
		       "containernetworking-plugins missing (packaging/install-deps.sh)");
	BL_SKIP_UNLESS(access(shim, X_OK) == 0 && access(script, R_OK) == 0, "%s or %s missing",
		       shim, script);
	BL_SKIP_UNLESS(access(image, R_OK) == 0, "%s missing (make test-images)", image);
	BL_SKIP_UNLESS(access(kernel, R_OK) == 0, "guest kernel %s missing", kernel);
	char *dir = bl_test_tmpdir("shim-cri");
	_cleanup_free_ char *cmd = bl_asprintf("'%s' '%s'", script, dir);
	printf("\n");
	fflush(stdout);
	int st = system(cmd);
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	_cleanup_free_ char *rm = bl_asprintf("rm -rf '%s'", dir);
	if (system(rm) != 0)
		CU_FAIL("could not remove the test directory");
	free(dir);
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"pod_in_one_vm", test_pod_in_one_vm},
	    {NULL, NULL},
	};
	return bl_test_run("shim_cri", cases);
}
