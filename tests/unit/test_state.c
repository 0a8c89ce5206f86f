/* Sandbox state on the host without VMs: ids, meta.json, listing, liveness
 * of owners, garbage collection of dead sandboxes, rm of stopped ones. */
#include "bl_cleanup.h"
#include "bl_test.h"
#include "bl_util.h"
#include "sandbox_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_ids(void)
{
	CU_ASSERT(bl_sandbox_id_valid("abc"));
	CU_ASSERT(bl_sandbox_id_valid("a.b_c-1"));
	CU_ASSERT(!bl_sandbox_id_valid(""));
	CU_ASSERT(!bl_sandbox_id_valid("."));
	CU_ASSERT(!bl_sandbox_id_valid(".."));
	CU_ASSERT(!bl_sandbox_id_valid(".pool"));
	CU_ASSERT(!bl_sandbox_id_valid("a/b"));
	CU_ASSERT(!bl_sandbox_id_valid("a b"));
	CU_ASSERT(!bl_sandbox_id_valid("123456789012345678901234567890123")); /* 33 */
	char id[BL_SANDBOX_ID_MAX + 1], id2[BL_SANDBOX_ID_MAX + 1];
	bl_sandbox_random_id(id, sizeof(id));
	bl_sandbox_random_id(id2, sizeof(id2));
	CU_ASSERT(bl_sandbox_id_valid(id));
	CU_ASSERT_EQUAL(strlen(id), 12);
	CU_ASSERT_STRING_NOT_EQUAL(id, id2);
}

/* Writes STATE/id/meta.json as a sandbox owned by pid would. */
static void fake_sandbox(const char *state, const char *id, pid_t pid, const char *status)
{
	_cleanup_free_ char *dir = bl_asprintf("%s/%s", state, id);
	CU_ASSERT_FATAL(bl_mkdir_p(dir, 0711, NULL) == 0);
	_cleanup_free_ char *path = bl_asprintf("%s/meta.json", dir);
	unsigned long long start = bl_proc_starttime(pid);
	_cleanup_free_ char *json = bl_asprintf(
	    "{\"id\":\"%s\",\"image\":\"img\",\"status\":\"%s\",\"owner\":\"test\",\"pid\":%d,"
	    "\"pid_start\":%llu,\"qemu_pid\":0,\"created\":%ld,\"memory_mib\":128}",
	    id, status, (int)pid, start, (long)time(NULL));
	CU_ASSERT_FATAL(bl_write_file(path, json, strlen(json), 0644, NULL) == 0);
}

static pid_t dead_pid(void)
{
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	waitpid(pid, NULL, 0);
	return pid;
}

static void test_list_and_gc(void)
{
	_cleanup_free_ char *dir = bl_test_tmpdir("state");
	_cleanup_free_ char *state = bl_asprintf("%s/state", dir);
	fake_sandbox(state, "alive", getpid(), "running");
	fake_sandbox(state, "dead", dead_pid(), "running");
	fake_sandbox(state, "stopped", dead_pid(), "stopped");
	/* A garbage meta.json is reported dead, never crashes the listing. */
	_cleanup_free_ char *junkdir = bl_asprintf("%s/junk", state);
	_cleanup_free_ char *junk = bl_asprintf("%s/meta.json", junkdir);
	CU_ASSERT_FATAL(bl_mkdir_p(junkdir, 0711, NULL) == 0);
	CU_ASSERT_FATAL(bl_write_file(junk, "[1,", 3, 0644, NULL) == 0);

	bl_sandbox_info *v = NULL;
	size_t n = 0;
	CU_ASSERT_EQUAL_FATAL(bl_sandbox_list(state, &v, &n, NULL), 0);
	CU_ASSERT_EQUAL(n, 4);
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(v[i].id, "alive"))
			CU_ASSERT_STRING_EQUAL(v[i].status, "running");
		if (!strcmp(v[i].id, "dead"))
			CU_ASSERT_STRING_EQUAL(v[i].status, "dead");
		if (!strcmp(v[i].id, "stopped"))
			CU_ASSERT_STRING_EQUAL(v[i].status, "stopped");
		if (!strcmp(v[i].id, "junk"))
			CU_ASSERT_STRING_EQUAL(v[i].status, "dead");
	}
	free(v);

	/* gc removes the dead one (the junk one is too young to judge). */
	CU_ASSERT_EQUAL(bl_sandbox_gc(state, NULL), 1);
	_cleanup_free_ char *deaddir = bl_asprintf("%s/dead", state);
	CU_ASSERT(access(deaddir, F_OK) < 0);

	/* rm: a stopped one goes; a running one needs force; unknown ids are
	 * not found; bad ids are invalid. */
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_sandbox_remove(state, "stopped", false, &err), 0);
	CU_ASSERT(bl_sandbox_remove(state, "alive", false, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_ESTATE);
	CU_ASSERT(bl_sandbox_remove(state, "nope", false, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_ENOTFOUND);
	CU_ASSERT(bl_sandbox_remove(state, "../etc", false, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	(void)bl_rm_rf(dir, NULL);
}

static void test_state_dir_choice(void)
{
	CU_ASSERT_STRING_EQUAL(bl_state_dir("/x"), "/x");
	setenv("BOXLITE_STATE_DIR", "/from/env", 1);
	CU_ASSERT_STRING_EQUAL(bl_state_dir(NULL), "/from/env");
	unsetenv("BOXLITE_STATE_DIR");
	CU_ASSERT_STRING_EQUAL(bl_state_dir(NULL), BL_DEFAULT_STATE_DIR);
}

/* Options are checked before anything is created. */
static void test_bad_options(void)
{
	/* Network rules without the network, and a bad rule. */
	const char *const allow[] = {"host:80", NULL};
	bl_sandbox_options o = {.rootfs = "/", .net_allow = allow};
	bl_sandbox *sb = NULL;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT(bl_sandbox_create(&o, &sb, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	const char *const bad_rule[] = {"1.2.3.4/99", NULL};
	o = (bl_sandbox_options){.rootfs = "/", .network = true, .net_allow = bad_rule};
	CU_ASSERT(bl_sandbox_create(&o, &sb, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	o = (bl_sandbox_options){.rootfs = "/", .image = "x"};
	CU_ASSERT(bl_sandbox_create(&o, &sb, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	o = (bl_sandbox_options){.rootfs = "/", .id = "bad/id"};
	CU_ASSERT(bl_sandbox_create(&o, &sb, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	o = (bl_sandbox_options){.rootfs = "/", .cwd = "rel"};
	CU_ASSERT(bl_sandbox_create(&o, &sb, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	const char *const env[] = {"NOEQUALS", NULL};
	o = (bl_sandbox_options){.rootfs = "/", .env = env};
	CU_ASSERT(bl_sandbox_create(&o, &sb, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	o = (bl_sandbox_options){.rootfs = "/", .memory_mib = 16};
	CU_ASSERT(bl_sandbox_create(&o, &sb, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	o = (bl_sandbox_options){.rootfs = "/nonexistent-rootfs"};
	CU_ASSERT(bl_sandbox_create(&o, &sb, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_ENOTFOUND);
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"ids", test_ids},
	    {"list_and_gc", test_list_and_gc},
	    {"state_dir_choice", test_state_dir_choice},
	    {"bad_options", test_bad_options},
	    {NULL, NULL},
	};
	return bl_test_run("state", cases);
}
