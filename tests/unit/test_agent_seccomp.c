/*
 * The agent's seccomp compiler (agent/seccomp.c), run for real: each filter
 * is installed in a forked child on the host kernel, which then makes the
 * system calls and reports what came back.
 */
#include "bl_test.h"
#include "../../agent/seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs fn in a child under the filter; returns fn's exit code, or 200+signal. */
static int under(const agent_seccomp *s, int (*fn)(void))
{
	pid_t pid = fork();
	if (pid == 0) {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || agent_seccomp_install(s) < 0)
			_exit(99);
		_exit(fn());
	}
	int st = 0;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 200 + WTERMSIG(st);
}

static int errno_of(long r)
{
	return r < 0 ? errno : 0;
}

static int try_unshare_user(void)
{
	return errno_of(syscall(SYS_unshare, CLONE_NEWUSER));
}
static int try_unshare_files(void)
{
	return errno_of(syscall(SYS_unshare, CLONE_FILES));
}
static int try_keyctl(void)
{
	return errno_of(syscall(SYS_keyctl, 1 /* JOIN_SESSION_KEYRING */, NULL));
}
static int try_clone3(void)
{
	struct clone_args a = {.exit_signal = SIGCHLD};
	long pid = syscall(SYS_clone3, &a, sizeof(a));
	if (pid == 0)
		_exit(0);
	if (pid > 0)
		waitpid((pid_t)pid, NULL, 0);
	return errno_of(pid);
}
static int try_fork(void)
{
	pid_t pid = fork(); /* glibc: clone without namespace flags */
	if (pid == 0)
		_exit(0);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	return pid < 0 ? errno : 0;
}
static int try_clone_newns(void)
{
	long pid = syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0);
	if (pid == 0)
		_exit(0);
	if (pid > 0)
		waitpid((pid_t)pid, NULL, 0);
	return errno_of(pid);
}
static int try_personality_bad(void)
{
	return errno_of(personality(ADDR_NO_RANDOMIZE));
}
static int try_personality_query(void)
{
	return errno_of(personality(0xffffffff));
}
static int try_getpid(void)
{
	return errno_of(syscall(SYS_getpid));
}

static void test_default_profile(void)
{
	agent_seccomp s = {0};
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(agent_seccomp_default(&s, &err), 0);
	CU_ASSERT(s.n_insns > 10);
	CU_ASSERT_EQUAL(under(&s, try_unshare_user), EPERM);
	CU_ASSERT_EQUAL(under(&s, try_clone_newns), EPERM);
	CU_ASSERT_EQUAL(under(&s, try_keyctl), EPERM);
	CU_ASSERT_EQUAL(under(&s, try_clone3), ENOSYS);
	CU_ASSERT_EQUAL(under(&s, try_personality_bad), EPERM);
	/* what programs need stays */
	CU_ASSERT_EQUAL(under(&s, try_unshare_files), 0);
	CU_ASSERT_EQUAL(under(&s, try_fork), 0);
	CU_ASSERT_EQUAL(under(&s, try_personality_query), 0);
	CU_ASSERT_EQUAL(under(&s, try_getpid), 0);
	agent_seccomp_clear(&s);
}

static int compile_json(const char *json, agent_seccomp *s, bl_error_t *err)
{
	json_object *o = json_tokener_parse(json);
	int r = o ? agent_seccomp_from_oci(o, s, err) : -1;
	json_object_put(o);
	return r;
}

static int fd_for_write; /* fds the arg tests write to */
static int try_write_fd(void)
{
	return errno_of(write(fd_for_write, "", 0));
}

/* An OCI allow-list profile with argument rules. */
static void test_oci_args(void)
{
	const char *json =
	    "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"architectures\": [\"SCMP_ARCH_X86_64\"],"
	    " \"syscalls\": ["
	    "  {\"names\": [\"write\"], \"action\": \"SCMP_ACT_ERRNO\", \"errnoRet\": 13,"
	    "   \"args\": [{\"index\": 0, \"value\": 100, \"op\": \"SCMP_CMP_GE\"},"
	    "              {\"index\": 0, \"value\": 200, \"op\": \"SCMP_CMP_LT\"}]},"
	    "  {\"names\": [\"write\"], \"action\": \"SCMP_ACT_ERRNO\", \"errnoRet\": 22,"
	    "   \"args\": [{\"index\": 0, \"value\": 4294967296, \"op\": \"SCMP_CMP_EQ\"}]},"
	    "  {\"names\": [\"unshare\"], \"action\": \"SCMP_ACT_ERRNO\","
	    "   \"args\": [{\"index\": 0, \"value\": 1024, \"valueTwo\": 1024,"
	    "               \"op\": \"SCMP_CMP_MASKED_EQ\"}]},"
	    "  {\"names\": [\"no_such_syscall\", \"keyctl\"], \"action\": "
	    "\"SCMP_ACT_KILL_PROCESS\"}"
	    "]}";
	agent_seccomp s = {0};
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(compile_json(json, &s, &err), 0);
	int fds[] = {99, 100, 150, 199, 200};
	int want[] = {0, 13, 13, 13, 0};
	int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		dup2(devnull, fds[i]);
		fd_for_write = fds[i];
		CU_ASSERT_EQUAL(under(&s, try_write_fd), want[i]);
		close(fds[i]);
	}
	close(devnull);
	CU_ASSERT_EQUAL(under(&s, try_unshare_files), EPERM);	 /* CLONE_FILES = 0x400 */
	CU_ASSERT_NOT_EQUAL(under(&s, try_unshare_user), EPERM); /* 0x10000000 & 0x400 == 0 */
	CU_ASSERT_EQUAL(under(&s, try_keyctl), 200 + SIGSYS);
	CU_ASSERT_EQUAL(under(&s, try_getpid), 0);
	agent_seccomp_clear(&s);
}

/* Default-deny (like Docker's own JSON): only what is listed runs. */
static void test_oci_default_errno(void)
{
	const char *json =
	    "{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"defaultErrnoRet\": 38,"
	    " \"syscalls\": [{\"names\": [\"exit_group\", \"exit\", \"getpid\", \"gettid\", "
	    "\"write\", \"mmap\", \"munmap\", \"mprotect\", \"madvise\", \"brk\", \"futex\", "
	    "\"rt_sigprocmask\", \"rt_sigaction\", \"sigaltstack\", \"prctl\", \"sched_yield\"],"
	    "                 \"action\": \"SCMP_ACT_ALLOW\"}]}";
	agent_seccomp s = {0};
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(compile_json(json, &s, &err), 0);
	CU_ASSERT_EQUAL(under(&s, try_getpid), 0);
	CU_ASSERT_EQUAL(under(&s, try_keyctl), 38);
	agent_seccomp_clear(&s);
}

static void test_oci_bad(void)
{
	static const char *const bad[] = {
	    "[]",
	    "{}",
	    "{\"defaultAction\": \"SCMP_ACT_NOTIFY\"}",
	    "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": {}}",
	    "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"read\"]}]}",
	    "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"read\"],"
	    " \"action\": \"SCMP_ACT_ERRNO\", \"errnoRet\": 99999}]}",
	    "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"read\"],"
	    " \"action\": \"SCMP_ACT_ALLOW\", \"args\": [{\"index\": 6, \"value\": 1,"
	    " \"op\": \"SCMP_CMP_EQ\"}]}]}",
	    "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"read\"],"
	    " \"action\": \"SCMP_ACT_ALLOW\", \"args\": [{\"index\": 0, \"value\": 1,"
	    " \"op\": \"SCMP_CMP_LIKE\"}]}]}",
	    NULL};
	for (size_t i = 0; bad[i]; i++) {
		agent_seccomp s = {0};
		bl_error_t err = BL_ERROR_INIT;
		CU_ASSERT(compile_json(bad[i], &s, &err) < 0);
		CU_ASSERT(s.insns == NULL);
	}
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"default_profile", test_default_profile},
	    {"oci_args", test_oci_args},
	    {"oci_default_errno", test_oci_default_errno},
	    {"oci_bad", test_oci_bad},
	    {NULL, NULL},
	};
	return bl_test_run("agent_seccomp", cases);
}
