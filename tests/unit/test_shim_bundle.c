/* The shim's bundle reading (untrusted config.json), grouping, VM sizing and
 * the runc-like command lookup in a rootfs. */
#include "bl_cleanup.h"
#include "bl_test.h"
#include "bl_util.h"
#include "shim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *bundle_with(const char *json)
{
	char *dir = bl_test_tmpdir("shim-bundle");
	_cleanup_free_ char *p = bl_asprintf("%s/config.json", dir);
	CU_ASSERT_FATAL(bl_write_file(p, json, strlen(json), 0644, NULL) == 0);
	return dir;
}

static void test_spec_fields(void)
{
	_cleanup_free_ char *dir = bundle_with(
	    "{\"process\":{\"args\":[\"sh\",\"-c\",\"x\"],\"env\":[\"PATH=/bin\"],\"cwd\":\"/tmp\","
	    "\"terminal\":true,\"user\":{\"uid\":1000,\"gid\":100}},\"hostname\":\"h\","
	    "\"root\":{\"path\":\"rootfs\",\"readonly\":true},"
	    "\"linux\":{\"resources\":{\"memory\":{\"limit\":67108864},"
	    "\"cpu\":{\"quota\":150000,\"period\":100000},\"pids\":{\"limit\":50}}},"
	    "\"annotations\":{\"io.kubernetes.cri.container-type\":\"container\","
	    "\"io.kubernetes.cri.sandbox-id\":\"pod1\"}}");
	shim_spec s;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_FATAL(shim_spec_load(dir, &s, &err) == 0);
	CU_ASSERT_STRING_EQUAL(s.args[2], "x");
	CU_ASSERT_STRING_EQUAL(s.env[0], "PATH=/bin");
	CU_ASSERT_STRING_EQUAL(s.cwd, "/tmp");
	CU_ASSERT_STRING_EQUAL(s.user, "1000:100");
	CU_ASSERT(s.terminal && s.root_readonly);
	CU_ASSERT_EQUAL(s.memory_limit, 64u << 20);
	CU_ASSERT_EQUAL(s.vcpus, 2);
	CU_ASSERT_EQUAL(s.pids_limit, 50);
	/* 64 MiB limit + the guest's own 40 MiB */
	CU_ASSERT_EQUAL(shim_spec_memory_mib(&s), 104);
	_cleanup_free_ char *g = shim_group_id(&s, "c1");
	CU_ASSERT_STRING_EQUAL(g, "pod1");
	shim_spec_free(&s);
	(void)bl_rm_rf(dir, NULL);
}

/* A network namespace with a path (a pod's) asks for a network; the
 * annotations carry the policy. Without a path: none. */
static void test_network(void)
{
	_cleanup_free_ char *dir = bundle_with(
	    "{\"process\":{\"args\":[\"true\"]},\"linux\":{\"namespaces\":[{\"type\":\"pid\"},"
	    "{\"type\":\"network\",\"path\":\"/var/run/netns/cni-1\"}]},"
	    "\"annotations\":{\"io.boxlite.network.allow\":\"host:8080, pypi.org:443,\","
	    "\"io.boxlite.network.publish\":\"8000:80\"}}");
	shim_spec s;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_FATAL(shim_spec_load(dir, &s, &err) == 0);
	CU_ASSERT(s.network);
	CU_ASSERT_STRING_EQUAL(s.net_allow[0], "host:8080");
	CU_ASSERT_STRING_EQUAL(s.net_allow[1], "pypi.org:443");
	CU_ASSERT_PTR_NULL(s.net_allow[2]);
	CU_ASSERT_PTR_NULL(s.net_deny);
	CU_ASSERT_STRING_EQUAL(s.net_publish[0], "8000:80");
	shim_spec_free(&s);
	(void)bl_rm_rf(dir, NULL);
	_cleanup_free_ char *dir2 =
	    bundle_with("{\"process\":{\"args\":[\"true\"]},\"linux\":{\"namespaces\":[{\"type\":"
			"\"network\"}]},\"annotations\":{\"io.boxlite.network.allow\":\"*\"}}");
	CU_ASSERT_FATAL(shim_spec_load(dir2, &s, &err) == 0);
	CU_ASSERT(!s.network && !s.net_allow);
	shim_spec_free(&s);
	(void)bl_rm_rf(dir2, NULL);
}

static void test_grouping_and_defaults(void)
{
	_cleanup_free_ char *dir =
	    bundle_with("{\"process\":{\"args\":[\"true\"]},\"annotations\":{"
			"\"io.kubernetes.cri.container-type\":\"sandbox\","
			"\"io.kubernetes.cri.sandbox-id\":\"pod1\"}}");
	shim_spec s;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_FATAL(shim_spec_load(dir, &s, &err) == 0);
	_cleanup_free_ char *g = shim_group_id(&s, "pod1");
	CU_ASSERT_STRING_EQUAL(g, "pod1"); /* the sandbox is its own group */
	CU_ASSERT_EQUAL(shim_spec_memory_mib(&s), SHIM_DEFAULT_MEMORY_MIB);
	shim_spec_free(&s);
	char a[64], b[64], c[64];
	shim_sandbox_id("default", "x", a, sizeof(a));
	shim_sandbox_id("default", "x", b, sizeof(b));
	shim_sandbox_id("other", "x", c, sizeof(c));
	CU_ASSERT_STRING_EQUAL(a, b);
	CU_ASSERT_STRING_NOT_EQUAL(a, c);
	CU_ASSERT(strlen(a) <= BL_SANDBOX_ID_MAX);
	(void)bl_rm_rf(dir, NULL);
}

static void test_hostile_specs(void)
{
	static const char *const bad[] = {
	    "not json",
	    "[1,2]",
	    "{\"process\":{\"args\":\"sh\"}}",
	    "{\"process\":{\"args\":[1]}}",
	    "{\"process\":{\"args\":[\"a\"],\"user\":{\"uid\":-1}}}",
	    NULL,
	};
	for (size_t i = 0; bad[i]; i++) {
		_cleanup_free_ char *dir = bundle_with(bad[i]);
		shim_spec s;
		bl_error_t err = BL_ERROR_INIT;
		CU_ASSERT(shim_spec_load(dir, &s, &err) < 0);
		CU_ASSERT_EQUAL(err.code, BL_EPROTO);
		(void)bl_rm_rf(dir, NULL);
	}
	shim_spec s;
	bl_error_t err = BL_ERROR_INIT;
	const char *proc = "{\"args\":[\"ls\",\"-l\"],\"cwd\":\"/\"}";
	CU_ASSERT_FATAL(shim_spec_parse_process(proc, strlen(proc), &s, &err) == 0);
	CU_ASSERT_STRING_EQUAL(s.args[1], "-l");
	shim_spec_free(&s);
}

static void test_command_lookup_in_rootfs(void)
{
	char *root = bl_test_tmpdir("shim-rootfs");
	_cleanup_free_ char *bin = bl_asprintf("%s/bin", root);
	_cleanup_free_ char *tool = bl_asprintf("%s/bin/tool", root);
	_cleanup_free_ char *data = bl_asprintf("%s/bin/data", root);
	CU_ASSERT_FATAL(mkdir(bin, 0755) == 0);
	CU_ASSERT_FATAL(bl_write_file(tool, "#!/bin/sh\n", 10, 0755, NULL) == 0);
	CU_ASSERT_FATAL(bl_write_file(data, "x", 1, 0644, NULL) == 0);
	/* An absolute symlink resolves inside the root, not on the host. */
	_cleanup_free_ char *link = bl_asprintf("%s/bin/sh", root);
	CU_ASSERT_FATAL(symlink("/bin/tool", link) == 0);
	_cleanup_free_ char *esc = bl_asprintf("%s/bin/esc", root);
	CU_ASSERT_FATAL(symlink("/../../../../usr/bin/env", esc) == 0);
	char *env[] = {"PATH=/usr/bin:/bin", NULL};
	struct {
		const char *arg0;
		bool ok;
	} cases[] = {{"tool", true},	{"/bin/tool", true}, {"sh", true},  {"data", false},
		     {"nosuch", false}, {"/bin", false},     {"esc", false}};
	for (size_t i = 0; i < BL_ARRAY_SIZE(cases); i++) {
		char *args[] = {(char *)cases[i].arg0, NULL};
		shim_spec s = {.args = args, .env = env};
		bl_error_t err = BL_ERROR_INIT;
		int r = shim_rootfs_check_exec(root, &s, &err);
		if ((r == 0) != cases[i].ok)
			printf("\n  %s: %s", cases[i].arg0, r == 0 ? "found" : err.msg);
		CU_ASSERT_EQUAL(r == 0, cases[i].ok);
	}
	(void)bl_rm_rf(root, NULL);
	free(root);
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"spec_fields", test_spec_fields},
	    {"network", test_network},
	    {"grouping_and_defaults", test_grouping_and_defaults},
	    {"hostile_specs", test_hostile_specs},
	    {"command_lookup_in_rootfs", test_command_lookup_in_rootfs},
	    {NULL, NULL},
	};
	return bl_test_run("shim_bundle", cases);
}
