/* OCI spec parsing and validation in the guest agent (agent/spec.c). */
#include "bl_cleanup.h"
#include "bl_test.h"
#include "bl_util.h"
#include "../../agent/spec.h"

#include <linux/capability.h>
#include <stdio.h>
#include <sys/mount.h>
#include <string.h>
#include <sys/resource.h>

static agent_spec *parse_ok(const char *json)
{
	agent_spec *s = NULL;
	bl_error_t err = BL_ERROR_INIT;
	int r = agent_spec_parse(json, strlen(json), &s, &err);
	if (r < 0)
		printf("unexpected error: %s\n", err.msg);
	CU_ASSERT_EQUAL(r, 0);
	return s;
}

static void parse_bad(const char *json, const char *needle)
{
	agent_spec *s = NULL;
	bl_error_t err = BL_ERROR_INIT;
	int r = agent_spec_parse(json, strlen(json), &s, &err);
	CU_ASSERT(r < 0);
	CU_ASSERT_PTR_NULL(s);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	if (needle && !strstr(err.msg, needle))
		printf("error \"%s\" lacks \"%s\"\n", err.msg, needle);
	CU_ASSERT(!needle || strstr(err.msg, needle) != NULL);
	agent_spec_free(s);
}

static void test_full_spec(void)
{
	const char *json =
	    "{\"ociVersion\":\"1.0.2\",\"hostname\":\"box\","
	    "\"process\":{\"terminal\":true,\"user\":{\"uid\":1000,\"gid\":100,"
	    "\"additionalGids\":[5,6],\"umask\":63},\"args\":[\"sh\",\"-c\",\"echo hi\"],"
	    "\"env\":[\"PATH=/bin\",\"A=b=c\"],\"cwd\":\"/work\","
	    "\"capabilities\":{\"bounding\":[\"CAP_CHOWN\",\"CAP_KILL\"],"
	    "\"effective\":[\"CAP_KILL\"],\"ambient\":[]},"
	    "\"rlimits\":[{\"type\":\"RLIMIT_NOFILE\",\"hard\":1024,\"soft\":512},"
	    "{\"type\":\"RLIMIT_CORE\",\"hard\":18446744073709551615,\"soft\":0}],"
	    "\"noNewPrivileges\":true,\"oomScoreAdj\":100},"
	    "\"root\":{\"path\":\"rootfs\",\"readonly\":true},"
	    "\"mounts\":[{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\"},"
	    "{\"destination\":\"/scratch\",\"type\":\"tmpfs\",\"source\":\"tmpfs\","
	    "\"options\":[\"nosuid\",\"size=1m\",\"mode=1777\"]},"
	    "{\"destination\":\"/etc/hosts\",\"type\":\"bind\",\"source\":\"c0/m0\","
	    "\"options\":[\"rbind\",\"ro\"]}],"
	    "\"linux\":{\"resources\":{\"memory\":{\"limit\":134217728},"
	    "\"pids\":{\"limit\":64},\"cpu\":{\"quota\":50000,\"period\":100000}},"
	    "\"namespaces\":[{\"type\":\"pid\"},{\"type\":\"network\"}]}}";
	agent_spec *s = parse_ok(json);
	if (!s)
		return;
	agent_process_spec *p = s->process;
	CU_ASSERT_STRING_EQUAL(s->hostname, "box");
	CU_ASSERT(s->root_readonly);
	CU_ASSERT_EQUAL(s->memory_limit, 134217728);
	CU_ASSERT_EQUAL(s->pids_limit, 64);
	CU_ASSERT_EQUAL(s->cpu_quota, 50000);
	CU_ASSERT_EQUAL(s->cpu_period, 100000);
	CU_ASSERT(s->new_netns);
	CU_ASSERT_STRING_EQUAL(p->args[2], "echo hi");
	CU_ASSERT_PTR_NULL(p->args[3]);
	CU_ASSERT_STRING_EQUAL(p->env[1], "A=b=c");
	CU_ASSERT_STRING_EQUAL(agent_env_get(p->env, "A"), "b=c");
	CU_ASSERT_STRING_EQUAL(p->cwd, "/work");
	CU_ASSERT_EQUAL(p->uid, 1000);
	CU_ASSERT_EQUAL(p->gid, 100);
	CU_ASSERT_EQUAL(p->n_additional_gids, 2);
	CU_ASSERT_EQUAL(p->umask, 63);
	CU_ASSERT(p->terminal && p->no_new_privileges && p->has_caps);
	CU_ASSERT_EQUAL(p->caps.bounding, (1ull << CAP_CHOWN) | (1ull << CAP_KILL));
	CU_ASSERT_EQUAL(p->caps.effective, 1ull << CAP_KILL);
	CU_ASSERT_EQUAL(p->caps.permitted, 0);
	CU_ASSERT_EQUAL(p->n_rlimits, 2);
	CU_ASSERT_EQUAL(p->rlimits[0].resource, RLIMIT_NOFILE);
	CU_ASSERT_EQUAL(p->rlimits[1].hard, UINT64_MAX);
	CU_ASSERT(p->has_oom_score_adj && p->oom_score_adj == 100);
	CU_ASSERT_EQUAL(s->n_mounts, 1);
	CU_ASSERT_STRING_EQUAL(s->mounts[0].destination, "/scratch");
	CU_ASSERT_STRING_EQUAL(s->mounts[0].data, "size=1m,mode=1777");
	/* Bind mounts: share-relative sources, mounted by the agent. */
	CU_ASSERT_EQUAL(s->n_binds, 1);
	CU_ASSERT_STRING_EQUAL(s->binds[0].source, "c0/m0");
	CU_ASSERT_STRING_EQUAL(s->binds[0].destination, "/etc/hosts");
	CU_ASSERT(s->binds[0].flags & MS_RDONLY);
	agent_spec_free(s);
}

static void test_defaults(void)
{
	agent_spec *s = parse_ok("{\"process\":{\"args\":[\"true\"]}}");
	if (!s)
		return;
	CU_ASSERT_EQUAL(s->memory_limit, -1);
	CU_ASSERT_EQUAL(s->pids_limit, -1);
	CU_ASSERT(s->new_netns);
	CU_ASSERT_PTR_NULL(s->hostname);
	CU_ASSERT_STRING_EQUAL(s->process->cwd, "/");
	CU_ASSERT_EQUAL(s->process->uid, 0);
	CU_ASSERT_FALSE(s->process->has_caps);
	CU_ASSERT_PTR_NOT_NULL(s->process->env);
	agent_spec_free(s);
	s = parse_ok("{\"linux\":{\"namespaces\":[{\"type\":\"pid\"}]}}");
	CU_ASSERT_PTR_NULL(s->process);
	CU_ASSERT_FALSE(s->new_netns);
	agent_spec_free(s);
	CU_ASSERT(agent_caps_default() & (1ull << CAP_CHOWN));
	CU_ASSERT_FALSE(agent_caps_default() & (1ull << CAP_MKNOD));
	CU_ASSERT_FALSE(agent_caps_default() & (1ull << CAP_SYS_ADMIN));
}

static void test_malformed(void)
{
	parse_bad("", NULL);
	parse_bad("{", "truncated");
	parse_bad("{\"process\":", NULL);
	parse_bad("[1,2,3]", "not a JSON object");
	parse_bad("{} {}", "trailing");
	parse_bad("nul", NULL);
	parse_bad("{\"a\":1}x", NULL);
	/* a NUL byte before the end */
	agent_spec *s = NULL;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT(agent_spec_parse("{}\0{}", 5, &s, &err) < 0);
}

static void test_wrong_types(void)
{
	parse_bad("{\"process\":[]}", "process: not an object");
	parse_bad("{\"process\":{\"args\":\"sh\"}}", "process.args: not an array");
	parse_bad("{\"process\":{\"args\":[1]}}", "process.args: not a string");
	parse_bad("{\"process\":{\"args\":[]}}", "empty command");
	parse_bad("{\"process\":{}}", "process.args: missing");
	parse_bad("{\"process\":{\"args\":[\"\"]}}", "empty command");
	parse_bad("{\"process\":{\"args\":[\"a\"],\"env\":[\"NOEQUALS\"]}}", "KEY=VALUE");
	parse_bad("{\"process\":{\"args\":[\"a\"],\"env\":[\"=x\"]}}", "KEY=VALUE");
	parse_bad("{\"process\":{\"args\":[\"a\"],\"cwd\":\"rel\"}}", "process.cwd");
	parse_bad("{\"process\":{\"args\":[\"a\"],\"cwd\":\"/a/../b\"}}", "process.cwd");
	parse_bad("{\"process\":{\"args\":[\"a\"],\"user\":{\"uid\":-1}}}", "out of range");
	parse_bad("{\"process\":{\"args\":[\"a\"],\"user\":{\"uid\":4294967296}}}", "out of range");
	parse_bad("{\"process\":{\"args\":[\"a\"],\"user\":{\"uid\":1.5}}}", "not an integer");
	parse_bad("{\"process\":{\"args\":[\"a\"],\"user\":{\"uid\":\"0\"}}}", "not an integer");
	parse_bad("{\"process\":{\"args\":[\"a\"],\"terminal\":1}}", "not a boolean");
	parse_bad("{\"process\":{\"args\":[\"a\"],\"capabilities\":{\"bounding\":[\"CAP_NOPE\"]}}}",
		  "unknown capability");
	parse_bad("{\"process\":{\"args\":[\"a\"],\"capabilities\":{\"bounding\":[\"chown\"]}}}",
		  "unknown capability");
	parse_bad("{\"process\":{\"args\":[\"a\"],\"rlimits\":[{\"type\":\"RLIMIT_X\",\"hard\":1,"
		  "\"soft\":1}]}}",
		  "unknown type");
	parse_bad("{\"process\":{\"args\":[\"a\"],\"rlimits\":[{\"type\":\"RLIMIT_NOFILE\","
		  "\"hard\":1,\"soft\":2}]}}",
		  "soft above hard");
	parse_bad("{\"process\":{\"args\":[\"a\\u0000b\"]}}", "NUL");
	parse_bad("{\"linux\":{\"resources\":{\"memory\":{\"limit\":\"1g\"}}}}", "not an integer");
	parse_bad("{\"linux\":{\"resources\":{\"memory\":{\"limit\":-5}}}}", "out of range");
	parse_bad("{\"linux\":{\"resources\":[]}}", "not an object");
	parse_bad("{\"linux\":{\"namespaces\":[null]}}", NULL);
	parse_bad("{\"root\":{\"readonly\":\"yes\"}}", "root.readonly");
	parse_bad("{\"hostname\":5}", "hostname");
	parse_bad("{\"mounts\":[{\"destination\":\"x\",\"type\":\"tmpfs\"}]}", "destination");
	parse_bad(
	    "{\"mounts\":[{\"destination\":\"/x\",\"type\":\"tmpfs\",\"options\":[\"a,b\"]}]}",
	    "bad option");
}

/* Builds {"process":{"args":[<n copies of item>]}} */
static char *big_args(size_t n, const char *item)
{
	size_t il = strlen(item);
	char *buf = bl_malloc0(64 + n * (il + 1));
	size_t off = (size_t)sprintf(buf, "{\"process\":{\"args\":[");
	for (size_t i = 0; i < n; i++) {
		memcpy(buf + off, item, il);
		off += il;
		buf[off++] = i + 1 < n ? ',' : ']';
	}
	strcpy(buf + off, "}}");
	return buf;
}

static void test_hostile(void)
{
	/* Bind sources must stay inside the share; unknown options are refused. */
	parse_bad("{\"mounts\":[{\"destination\":\"/x\",\"type\":\"bind\",\"source\":"
		  "\"/etc\"}]}",
		  "share-relative");
	parse_bad("{\"mounts\":[{\"destination\":\"/x\",\"type\":\"bind\",\"source\":"
		  "\"c0/../../etc\"}]}",
		  "share-relative");
	parse_bad("{\"mounts\":[{\"destination\":\"/x\",\"type\":\"bind\",\"source\":"
		  "\"c0/m0\",\"options\":[\"suidonly\"]}]}",
		  "not supported");
	_cleanup_free_ char *many = big_args(AGENT_SPEC_MAX_ARGS + 1, "\"a\"");
	parse_bad(many, "more than");
	_cleanup_free_ char *ok = big_args(AGENT_SPEC_MAX_ARGS, "\"a\"");
	agent_spec *s = parse_ok(ok);
	agent_spec_free(s);
	_cleanup_free_ char *huge = big_args(200000, "1");
	parse_bad(huge, "bytes");
	/* deep nesting */
	char deep[200];
	memset(deep, '[', sizeof(deep) - 1);
	deep[sizeof(deep) - 1] = '\0';
	parse_bad(deep, NULL);
	parse_bad(
	    "{\"process\":{\"args\":[\"a\"],\"user\":{\"additionalGids\":["
	    "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,"
	    "31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,"
	    "58,59,60,61,62,63,64,65]}}}",
	    "more than");
}

static void test_process_json(void)
{
	agent_process_spec *p = NULL;
	bl_error_t err = BL_ERROR_INIT;
	const char *j = "{\"args\":[\"ls\",\"-l\"],\"user\":{\"username\":\"nobody:nogroup\"}}";
	CU_ASSERT_EQUAL(agent_process_spec_parse(j, strlen(j), &p, &err), 0);
	if (p) {
		CU_ASSERT_STRING_EQUAL(p->username, "nobody:nogroup");
		CU_ASSERT_STRING_EQUAL(p->args[1], "-l");
	}
	agent_process_spec_free(p);
	p = NULL;
	CU_ASSERT(agent_process_spec_parse("\"x\"", 3, &p, &err) < 0);
	CU_ASSERT(agent_process_spec_parse(NULL, 0, &p, &err) < 0);
	CU_ASSERT_EQUAL(agent_rlimit_from_name("RLIMIT_STACK"), RLIMIT_STACK);
	CU_ASSERT_EQUAL(agent_rlimit_from_name("NOFILE"), -1);
}

int main(void)
{
	static const bl_test_case tests[] = {
	    {"full_spec", test_full_spec},
	    {"defaults", test_defaults},
	    {"malformed", test_malformed},
	    {"wrong_types", test_wrong_types},
	    {"hostile", test_hostile},
	    {"process_json", test_process_json},
	    {NULL, NULL},
	};
	return bl_test_run("agent_spec", tests);
}
