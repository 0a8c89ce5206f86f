/* Option parsing of boxlite run / create / exec. */
#include "bl_error.h"
#include "bl_test.h"
#include "options.h"

#include <stdlib.h>
#include <string.h>

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])) - 1)

static void test_run_options(void)
{
	char *argv[] = {
	    "run",	"--memory", "256",     "--cpus", "2",  "--disk", "64", "--timeout", "30",
	    "-e",	"A=1",	    "-e",      "B=2",	 "-w", "/tmp",	 "-u", "1000:100",  "-i",
	    "--rootfs", "/r",	    "--accel", "tcg",	 "--", "echo",	 "-n", "hi",	    NULL};
	bl_cli_opts c;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(bl_cli_parse(BL_CLI_RUN, ARGC(argv), argv, &c, &err), 0);
	CU_ASSERT_EQUAL(c.o.memory_mib, 256);
	CU_ASSERT_EQUAL(c.o.vcpus, 2);
	CU_ASSERT_EQUAL(c.o.disk_mib, 64);
	CU_ASSERT_EQUAL(c.o.timeout_sec, 30);
	CU_ASSERT_STRING_EQUAL(c.o.env[0], "A=1");
	CU_ASSERT_STRING_EQUAL(c.o.env[1], "B=2");
	CU_ASSERT_PTR_NULL(c.o.env[2]);
	CU_ASSERT_STRING_EQUAL(c.o.cwd, "/tmp");
	CU_ASSERT_STRING_EQUAL(c.o.user, "1000:100");
	CU_ASSERT(c.interactive);
	CU_ASSERT(c.o.stdin_open);
	CU_ASSERT(!c.tty);
	CU_ASSERT_STRING_EQUAL(c.o.rootfs, "/r");
	CU_ASSERT_STRING_EQUAL(c.o.accel, "tcg");
	/* Options after "--" belong to the command. */
	CU_ASSERT_STRING_EQUAL(c.cmd[0], "echo");
	CU_ASSERT_STRING_EQUAL(c.cmd[1], "-n");
	CU_ASSERT_STRING_EQUAL(c.cmd[2], "hi");
	CU_ASSERT_PTR_NULL(c.cmd[3]);
	bl_cli_opts_clear(&c);
}

static void test_run_python(void)
{
	char *argv[] = {"run", "--python", "print(2+2)", NULL};
	bl_cli_opts c;
	CU_ASSERT_EQUAL_FATAL(bl_cli_parse(BL_CLI_RUN, ARGC(argv), argv, &c, NULL), 0);
	CU_ASSERT_STRING_EQUAL(c.python, "print(2+2)");
	CU_ASSERT_PTR_NULL(c.cmd);
	bl_cli_opts_clear(&c);
	char *both[] = {"run", "--python", "x", "--", "ls", NULL};
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT(bl_cli_parse(BL_CLI_RUN, ARGC(both), both, &c, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
}

static void expect_bad(int mode, int argc, char **argv, const char *needle)
{
	bl_cli_opts c;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT(bl_cli_parse(mode, argc, argv, &c, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	if (!strstr(err.msg, needle)) {
		printf("\n  message '%s' lacks '%s'\n", err.msg, needle);
		CU_FAIL("message does not name the cause");
	}
}

static void test_bad_options(void)
{
	char *a1[] = {"run", "--memory", "lots", "--", "true", NULL};
	expect_bad(BL_CLI_RUN, ARGC(a1), a1, "--memory");
	char *a2[] = {"run", "--memory", "16", "--", "true", NULL};
	expect_bad(BL_CLI_RUN, ARGC(a2), a2, "--memory");
	char *a3[] = {"run", "--bogus", "--", "true", NULL};
	expect_bad(BL_CLI_RUN, ARGC(a3), a3, "--bogus");
	char *a4[] = {"run", "--cpus", NULL};
	expect_bad(BL_CLI_RUN, ARGC(a4), a4, "--cpus");
	char *a5[] = {"run", "-w", "relative", "--", "true", NULL};
	expect_bad(BL_CLI_RUN, ARGC(a5), a5, "-w");
	char *a6[] = {"run", "--accel", "xen", "--", "true", NULL};
	expect_bad(BL_CLI_RUN, ARGC(a6), a6, "xen");
	char *a7[] = {"run", "--timeout", "-5", "--", "true", NULL};
	expect_bad(BL_CLI_RUN, ARGC(a7), a7, "--timeout");
	char *a8[] = {"run", "--cpus", "4x", "--", "true", NULL};
	expect_bad(BL_CLI_RUN, ARGC(a8), a8, "--cpus");
	char *a9[] = {"run", "-e", "=v", "--", "true", NULL};
	expect_bad(BL_CLI_RUN, ARGC(a9), a9, "=v");
	char *a10[] = {"create", "--python", "x", NULL};
	expect_bad(BL_CLI_CREATE, ARGC(a10), a10, "--python");
	char *a11[] = {"exec", "--memory", "128", "id", "--", "true", NULL};
	expect_bad(BL_CLI_EXEC, ARGC(a11), a11, "--memory");
}

static void test_exec(void)
{
	char *argv[] = {"exec", "-i", "-t", "-e", "X=1", "box1", "--", "sh", "-c", "echo", NULL};
	bl_cli_opts c;
	CU_ASSERT_EQUAL_FATAL(bl_cli_parse(BL_CLI_EXEC, ARGC(argv), argv, &c, NULL), 0);
	CU_ASSERT_STRING_EQUAL(c.id, "box1");
	CU_ASSERT(c.interactive && c.tty);
	CU_ASSERT_STRING_EQUAL(c.cmd[0], "sh");
	CU_ASSERT_STRING_EQUAL(c.cmd[2], "echo");
	bl_cli_opts_clear(&c);
	char *noid[] = {"exec", NULL};
	expect_bad(BL_CLI_EXEC, ARGC(noid), noid, "sandbox id");
	char *nocmd[] = {"exec", "box1", NULL};
	expect_bad(BL_CLI_EXEC, ARGC(nocmd), nocmd, "command");
}

static void test_env_passthrough(void)
{
	setenv("BL_TEST_PASS", "yes", 1);
	unsetenv("BL_TEST_UNSET");
	char *argv[] = {"run", "-e", "BL_TEST_PASS", "-e", "BL_TEST_UNSET", "--", "env", NULL};
	bl_cli_opts c;
	CU_ASSERT_EQUAL_FATAL(bl_cli_parse(BL_CLI_RUN, ARGC(argv), argv, &c, NULL), 0);
	CU_ASSERT_STRING_EQUAL(c.o.env[0], "BL_TEST_PASS=yes");
	CU_ASSERT_PTR_NULL(c.o.env[1]);
	bl_cli_opts_clear(&c);
}

static void test_parse_uint(void)
{
	unsigned v = 0;
	CU_ASSERT_EQUAL(bl_cli_parse_uint("x", "42", 1, 100, &v, NULL), 0);
	CU_ASSERT_EQUAL(v, 42);
	CU_ASSERT(bl_cli_parse_uint("x", "0", 1, 100, &v, NULL) < 0);
	CU_ASSERT(bl_cli_parse_uint("x", "101", 1, 100, &v, NULL) < 0);
	CU_ASSERT(bl_cli_parse_uint("x", "", 1, 100, &v, NULL) < 0);
	CU_ASSERT(bl_cli_parse_uint("x", " 5", 1, 100, &v, NULL) < 0);
	CU_ASSERT(bl_cli_parse_uint("x", "99999999999999999999", 1, 100, &v, NULL) < 0);
}

static int start_failure(bl_code code, const char *msg, const char *cmd, char *out, size_t len)
{
	bl_error_t err = BL_ERROR_INIT;
	bl_set_error(&err, code, "%s", msg);
	out[0] = '\0';
	return bl_cli_start_failure(&err, cmd, out, len);
}

/* Shell-like messages for a command that cannot start, no RPC plumbing. */
static void test_start_failure(void)
{
	char m[256];
	CU_ASSERT_EQUAL(start_failure(BL_ENOTFOUND,
				      "start: boxlite.agent.v1.Agent/StartProcess: exec "
				      "\"nonexistent-cmd\": executable file not found",
				      "nonexistent-cmd", m, sizeof(m)),
			127);
	CU_ASSERT_STRING_EQUAL(m, "nonexistent-cmd: command not found");
	CU_ASSERT_EQUAL(start_failure(BL_ENOTFOUND,
				      "exec /no/such: boxlite.agent.v1.Agent/StartProcess: exec "
				      "\"/no/such\": executable file not found",
				      "/no/such", m, sizeof(m)),
			127);
	CU_ASSERT_STRING_EQUAL(m, "/no/such: no such file or directory");
	CU_ASSERT_EQUAL(start_failure(BL_ESYSTEM,
				      "start: boxlite.agent.v1.Agent/StartProcess: exec "
				      "/etc/passwd: Permission denied",
				      "/etc/passwd", m, sizeof(m)),
			126);
	CU_ASSERT_STRING_EQUAL(m, "/etc/passwd: permission denied");
	CU_ASSERT_EQUAL(start_failure(BL_ESYSTEM,
				      "start: X/Y: exec ./a.out: Exec format error\x1b[2J",
				      "./a.out", m, sizeof(m)),
			126);
	CU_ASSERT_STRING_EQUAL(m, "./a.out: exec format error?[2J");
	/* Not about starting the command: reported as it is. */
	CU_ASSERT_EQUAL(start_failure(BL_ETIMEOUT, "timed out after 5 s", "sh", m, sizeof(m)), 0);
	CU_ASSERT_EQUAL(start_failure(BL_ESYSTEM, "start: X/Y: chdir: No such file or directory",
				      "sh", m, sizeof(m)),
			0);
	CU_ASSERT_EQUAL(
	    start_failure(BL_ENOTFOUND, "start: user: no user 'bob'", "bob", m, sizeof(m)), 0);
	/* Another command's name in the message does not count. */
	CU_ASSERT_EQUAL(start_failure(BL_ENOTFOUND, "exec \"shx\": executable file not found", "sh",
				      m, sizeof(m)),
			0);
	CU_ASSERT_EQUAL(start_failure(BL_ENOTFOUND, "exec \"sh\": executable file not found", NULL,
				      m, sizeof(m)),
			0);
}

static void test_network_options(void)
{
	char *argv[] = {
	    "run",     "--allow",    "host:8080", "--allow",   "pypi.org:443", "--deny",
	    "1.2.3.4", "-p",	     "8000:80",	  "--publish", "53/udp",       "--net-max-conns",
	    "10",      "--net-rate", "512",	  "--",	       "true",	       NULL};
	bl_cli_opts c;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(bl_cli_parse(BL_CLI_RUN, ARGC(argv), argv, &c, &err), 0);
	CU_ASSERT(c.o.network); /* implied */
	CU_ASSERT_STRING_EQUAL(c.o.net_allow[0], "host:8080");
	CU_ASSERT_STRING_EQUAL(c.o.net_allow[1], "pypi.org:443");
	CU_ASSERT_PTR_NULL(c.o.net_allow[2]);
	CU_ASSERT_STRING_EQUAL(c.o.net_deny[0], "1.2.3.4");
	CU_ASSERT_STRING_EQUAL(c.o.net_publish[0], "8000:80");
	CU_ASSERT_STRING_EQUAL(c.o.net_publish[1], "53/udp");
	CU_ASSERT_EQUAL(c.o.net_max_conns, 10);
	CU_ASSERT_EQUAL(c.o.net_rate_kib, 512);
	bl_cli_opts_clear(&c);
	char *plain[] = {"run", "--", "true", NULL};
	CU_ASSERT_EQUAL_FATAL(bl_cli_parse(BL_CLI_RUN, ARGC(plain), plain, &c, &err), 0);
	CU_ASSERT(!c.o.network && !c.o.net_allow && !c.o.net_publish);
	bl_cli_opts_clear(&c);
	char *bad[] = {"run", "--net-max-conns", "0", "--", "true", NULL};
	CU_ASSERT_EQUAL(bl_cli_parse(BL_CLI_RUN, ARGC(bad), bad, &c, &err), -BL_EINVAL);
	char *exec[] = {"exec", "--allow", "x", "id", "--", "true", NULL};
	CU_ASSERT_EQUAL(bl_cli_parse(BL_CLI_EXEC, ARGC(exec), exec, &c, &err), -BL_EINVAL);
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"run_options", test_run_options},
	    {"run_python", test_run_python},
	    {"bad_options", test_bad_options},
	    {"exec", test_exec},
	    {"env_passthrough", test_env_passthrough},
	    {"parse_uint", test_parse_uint},
	    {"start_failure", test_start_failure},
	    {"network_options", test_network_options},
	    {NULL, NULL},
	};
	return bl_test_run("cli", cases);
}
