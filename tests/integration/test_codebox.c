/*
 * Code sessions (bl_codebox_*) on a real VM with the default image (Debian +
 * python3): state across runs, a final expression printed, exceptions with
 * their traceback and the state kept, SystemExit codes, child processes'
 * output, a timeout (interrupted, state kept), an interrupt from another
 * thread, code that ignores SIGINT (killed, state lost, the next run starts
 * afresh), an interpreter that exits, restart, and nothing left behind.
 * One sandbox for all of it (boots are slow under TCG).
 */
#include "sandbox_env.h"

#include <pthread.h>

static bl_sandbox *sb;
static bl_codebox *cb;
static bool have_image;

#define SKIP_UNLESS_READY()                                                                     \
	BL_SKIP_UNLESS(cb, "needs root, the guest kernel and the default image (make image)%s", \
		       have_image ? " (the sandbox did not start)" : "")

static int suite_init(void)
{
	if (!sb_env_setup("codebox"))
		return 0;
	_cleanup_free_ char *rootfs = NULL;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_image_resolve("default", NULL, &rootfs, NULL, &err) < 0)
		return 0;
	have_image = true;
	bl_sandbox_options o = sb_opts(NULL);
	o.rootfs = NULL;
	o.image = "default";
	o.memory_mib = 256;
	o.disk_mib = 32;
	if (bl_sandbox_create(&o, &sb, &err) < 0) {
		printf("create: %s\n", err.msg);
		return 0;
	}
	bl_process *init = NULL;
	if (bl_sandbox_start(sb, &init, &err) < 0) {
		printf("start: %s\n", err.msg);
		return 0;
	}
	bl_process_free(init);
	if (bl_codebox_create(sb, NULL, &cb, &err) < 0)
		printf("codebox: %s\n", err.msg);
	return 0;
}

/* Runs code; returns the call's result code, *res filled. */
static int run(const char *code, int timeout_ms, bl_codebox_result *res, bl_error_t *err)
{
	bl_error_clear(err);
	int r = bl_codebox_run(cb, code, timeout_ms, res, err);
	if (r < 0)
		printf("\n  run: %s\n", err->msg);
	return r;
}

static void test_state(void)
{
	SKIP_UNLESS_READY();
	bl_codebox_result res;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(run("x = 41", 0, &res, &err), 0);
	CU_ASSERT_EQUAL(res.exit_code, 0);
	CU_ASSERT_EQUAL(res.stdout_len, 0);
	bl_codebox_result_clear(&res);
	CU_ASSERT_EQUAL(run("x + 1", 0, &res, &err), 0);
	CU_ASSERT_STRING_EQUAL(res.stdout_data, "42\n");
	CU_ASSERT_FALSE(res.state_lost);
	bl_codebox_result_clear(&res);
	CU_ASSERT_EQUAL(run("import sys\nprint('out'); print('err', file=sys.stderr)\n"
			    "def f(a):\n    return a * 2\n",
			    0, &res, &err),
			0);
	CU_ASSERT_STRING_EQUAL(res.stdout_data, "out\n");
	CU_ASSERT_STRING_EQUAL(res.stderr_data, "err\n");
	bl_codebox_result_clear(&res);
	CU_ASSERT_EQUAL(run("f(x)", 0, &res, &err), 0);
	CU_ASSERT_STRING_EQUAL(res.stdout_data, "82\n");
	bl_codebox_result_clear(&res);
	CU_ASSERT(bl_codebox_pid(cb) > 1);
}

static void test_errors(void)
{
	SKIP_UNLESS_READY();
	bl_codebox_result res;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(run("y = 5\n1 / 0", 0, &res, &err), 0);
	CU_ASSERT_EQUAL(res.exit_code, 1);
	CU_ASSERT_STRING_EQUAL(res.error, "ZeroDivisionError");
	CU_ASSERT_PTR_NOT_NULL(strstr(res.stderr_data, "Traceback"));
	CU_ASSERT_PTR_NOT_NULL(strstr(res.stderr_data, "1 / 0"));
	bl_codebox_result_clear(&res);
	CU_ASSERT_EQUAL(run("raise SystemExit(3)", 0, &res, &err), 0);
	CU_ASSERT_EQUAL(res.exit_code, 3);
	bl_codebox_result_clear(&res);
	CU_ASSERT_EQUAL(run("def (:", 0, &res, &err), 0);
	CU_ASSERT_STRING_EQUAL(res.error, "SyntaxError");
	bl_codebox_result_clear(&res);
	CU_ASSERT_EQUAL(run("y", 0, &res, &err), 0);
	CU_ASSERT_STRING_EQUAL(res.stdout_data, "5\n");
	bl_codebox_result_clear(&res);
	CU_ASSERT_EQUAL(
	    run("import subprocess\nsubprocess.run(['echo', 'from a child'])\nNone", 0, &res, &err),
	    0);
	CU_ASSERT_STRING_EQUAL(res.stdout_data, "from a child\n");
	bl_codebox_result_clear(&res);
}

static void test_timeout(void)
{
	SKIP_UNLESS_READY();
	bl_codebox_result res;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(run("z = 7", 0, &res, &err), 0);
	bl_codebox_result_clear(&res);
	CU_ASSERT_EQUAL(bl_codebox_run(cb,
				       "import time\nprint('before', flush=True)\ntime.sleep(60)",
				       2000, &res, &err),
			-BL_ETIMEOUT);
	CU_ASSERT(res.timed_out);
	CU_ASSERT_FALSE(res.state_lost);
	CU_ASSERT_EQUAL(res.exit_code, 130);
	CU_ASSERT_PTR_NOT_NULL(strstr(res.stdout_data, "before"));
	CU_ASSERT_PTR_NOT_NULL(strstr(res.stderr_data, "KeyboardInterrupt"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "timed out"));
	bl_codebox_result_clear(&res);
	CU_ASSERT_EQUAL(run("z", 0, &res, &err), 0);
	CU_ASSERT_STRING_EQUAL(res.stdout_data, "7\n");
	bl_codebox_result_clear(&res);
}

static void *interrupt_later(void *arg)
{
	(void)arg;
	usleep(1500 * 1000);
	bl_codebox_interrupt(cb);
	return NULL;
}

static void test_interrupt(void)
{
	SKIP_UNLESS_READY();
	bl_codebox_result res;
	bl_error_t err = BL_ERROR_INIT;
	pthread_t t;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, interrupt_later, NULL), 0);
	CU_ASSERT_EQUAL(bl_codebox_run(cb, "import time\ntime.sleep(120)", 0, &res, &err),
			-BL_ECANCELED);
	pthread_join(t, NULL);
	CU_ASSERT(res.timed_out);
	CU_ASSERT_FALSE(res.state_lost);
	bl_codebox_result_clear(&res);
	CU_ASSERT_EQUAL(run("z * 6", 0, &res, &err), 0);
	CU_ASSERT_STRING_EQUAL(res.stdout_data, "42\n");
	bl_codebox_result_clear(&res);
}

static void test_stubborn(void)
{
	SKIP_UNLESS_READY();
	bl_codebox_result res;
	bl_error_t err = BL_ERROR_INIT;
	uint32_t pid = bl_codebox_pid(cb);
	CU_ASSERT_EQUAL(bl_codebox_run(cb,
				       "import signal, time\n"
				       "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
				       "time.sleep(120)",
				       1000, &res, &err),
			-BL_ETIMEOUT);
	CU_ASSERT(res.state_lost);
	CU_ASSERT_PTR_NOT_NULL(strstr(res.stderr_data, "state is lost"));
	bl_codebox_result_clear(&res);
	/* A fresh interpreter: z is gone. */
	CU_ASSERT_EQUAL(run("z", 0, &res, &err), 0);
	CU_ASSERT_STRING_EQUAL(res.error, "NameError");
	CU_ASSERT_NOT_EQUAL(bl_codebox_pid(cb), pid);
	bl_codebox_result_clear(&res);
}

static void test_exit_and_restart(void)
{
	SKIP_UNLESS_READY();
	bl_codebox_result res;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(run("w = 1\nimport os\nos._exit(5)", 0, &res, &err), 0);
	CU_ASSERT(res.state_lost);
	CU_ASSERT_EQUAL(res.exit_code, 5);
	CU_ASSERT_PTR_NOT_NULL(strstr(res.stderr_data, "exited with status 5"));
	bl_codebox_result_clear(&res);
	CU_ASSERT_EQUAL(run("w = 2", 0, &res, &err), 0);
	bl_codebox_result_clear(&res);
	CU_ASSERT_EQUAL(bl_codebox_restart(cb, &err), 0);
	CU_ASSERT_EQUAL(run("w", 0, &res, &err), 0);
	CU_ASSERT_STRING_EQUAL(res.error, "NameError");
	bl_codebox_result_clear(&res);
}

static void test_output_cap(void)
{
	SKIP_UNLESS_READY();
	bl_codebox_result res;
	bl_error_t err = BL_ERROR_INIT;
	/* 3 MiB of output: 1 MiB kept, truncated, the interpreter still fine. */
	CU_ASSERT_EQUAL(run("import sys\nsys.stdout.write('a' * (3 << 20))\nNone", 0, &res, &err),
			0);
	CU_ASSERT_EQUAL(res.stdout_len, 1u << 20);
	CU_ASSERT(res.truncated);
	bl_codebox_result_clear(&res);
	CU_ASSERT_EQUAL(run("print(6 * 7)", 0, &res, &err), 0);
	CU_ASSERT_STRING_EQUAL(res.stdout_data, "42\n");
	CU_ASSERT_FALSE(res.truncated);
	bl_codebox_result_clear(&res);
}

static void test_no_python(void)
{
	SKIP_UNLESS_READY();
	bl_codebox_options o = {.python = "no-such-python"};
	bl_codebox *other = NULL;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_codebox_create(sb, &o, &other, &err), -BL_ENOTFOUND);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "no-such-python not found"));
	CU_ASSERT_PTR_NULL(other);
}

static void test_cleanup(void)
{
	SKIP_UNLESS_READY();
	bl_codebox_free(cb);
	cb = NULL;
	bl_sandbox_destroy(sb);
	sb = NULL;
	sb_assert_clean();
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"state", test_state},	     {"errors", test_errors},
	    {"timeout", test_timeout},	     {"interrupt", test_interrupt},
	    {"stubborn", test_stubborn},     {"exit_and_restart", test_exit_and_restart},
	    {"output_cap", test_output_cap}, {"no_python", test_no_python},
	    {"cleanup", test_cleanup},	     {NULL, NULL},
	};
	suite_init();
	int rc = bl_test_run("codebox", cases);
	bl_codebox_free(cb);
	bl_sandbox_destroy(sb);
	sb_env_teardown();
	return rc;
}
