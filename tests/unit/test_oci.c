/* Translation and validation of untrusted OCI bundle specs (runtime/oci.c). */
#include "bl_cleanup.h"
#include "bl_test.h"
#include "bl_util.h"
#include "spec.h"

#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

BL_DEFINE_CLEANUP(json_object, json_object_put)

static const bl_oci_policy strict = {0};

static int translate(const char *json, const bl_oci_policy *pol, bl_oci *o, bl_error_t *err)
{
	return bl_oci_translate(json, "c7", pol ? pol : &strict, o, err);
}

static void expect_fail(const char *json, int code, const char *needle)
{
	bl_oci o;
	bl_error_t err = BL_ERROR_INIT;
	int r = translate(json, NULL, &o, &err);
	CU_ASSERT_EQUAL(r, -code);
	CU_ASSERT_EQUAL(err.code, (bl_code)code);
	if (needle && !strstr(err.msg, needle))
		printf("\n  error \"%s\" lacks \"%s\"\n", err.msg, needle);
	CU_ASSERT(!needle || strstr(err.msg, needle) != NULL);
	CU_ASSERT_PTR_NULL(o.agent_spec);
	CU_ASSERT_PTR_NULL(o.binds);
}

/* A containerd-like default spec (ctr run): proc/dev/sys mounts, masked
 * paths, a deny-all device rule, resources and annotations. */
static const char ctr_spec[] =
    "{\"ociVersion\":\"1.1.0\",\"process\":{\"user\":{\"uid\":1000,\"gid\":1000},"
    "\"args\":[\"sh\",\"-c\",\"echo hi\"],\"env\":[\"PATH=/bin\",\"A=1\"],\"cwd\":\"/work\","
    "\"capabilities\":{\"bounding\":[\"CAP_KILL\"]},\"rlimits\":[{\"type\":\"RLIMIT_NOFILE\","
    "\"hard\":1024,\"soft\":1024}],\"noNewPrivileges\":true,\"terminal\":true},"
    "\"root\":{\"path\":\"/var/lib/containerd/x/rootfs\",\"readonly\":true},"
    "\"hostname\":\"web\","
    "\"mounts\":[{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\",\"options\":["
    "\"nosuid\",\"noexec\",\"nodev\"]},"
    "{\"destination\":\"/dev\",\"type\":\"tmpfs\",\"source\":\"tmpfs\",\"options\":[\"nosuid\","
    "\"strictatime\",\"mode=755\",\"size=65536k\"]},"
    "{\"destination\":\"/dev/pts\",\"type\":\"devpts\",\"source\":\"devpts\"},"
    "{\"destination\":\"/sys/fs/cgroup\",\"type\":\"cgroup\",\"source\":\"cgroup\"},"
    "{\"destination\":\"/run\",\"type\":\"tmpfs\",\"source\":\"tmpfs\",\"options\":["
    "\"size=1m\"]},"
    "{\"destination\":\"/etc/hosts\",\"type\":\"bind\",\"source\":\"/var/lib/x/hosts\","
    "\"options\":[\"rbind\",\"rprivate\",\"ro\"]},"
    "{\"destination\":\"/data\",\"source\":\"/srv/data\",\"options\":[\"rbind\",\"rw\","
    "\"noexec\"]}],"
    "\"linux\":{\"resources\":{\"devices\":[{\"allow\":false,\"access\":\"rwm\"}],"
    "\"memory\":{\"limit\":67108864,\"swap\":67108864},\"cpu\":{\"shares\":512,\"quota\":"
    "50000,\"period\":100000},\"pids\":{\"limit\":99}},"
    "\"cgroupsPath\":\"/default/x\",\"namespaces\":[{\"type\":\"pid\"},{\"type\":\"ipc\"},"
    "{\"type\":\"uts\"},{\"type\":\"mount\"},{\"type\":\"network\",\"path\":\"/proc/1/ns/"
    "net\"}],"
    "\"maskedPaths\":[\"/proc/kcore\"],\"readonlyPaths\":[\"/proc/sys\"]},"
    "\"annotations\":{\"io.kubernetes.cri.sandbox-id\":\"abc\",\"k\":\"v\"}}";

static json_object *member(json_object *o, const char *path)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *save = NULL, *k = strtok_r(buf, ".", &save); k && o;
	     k = strtok_r(NULL, ".", &save))
		o = json_object_object_get(o, k);
	return o;
}

static void test_translate_containerd_spec(void)
{
	bl_oci o;
	bl_error_t err = BL_ERROR_INIT;
	int r = translate(ctr_spec, NULL, &o, &err);
	if (r < 0)
		printf("\n  %s\n", err.msg);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	CU_ASSERT(o.root_readonly);
	CU_ASSERT(o.terminal);
	CU_ASSERT_EQUAL(o.cpu_shares, 512);
	CU_ASSERT_EQUAL(o.n_binds, 2);
	CU_ASSERT_STRING_EQUAL(o.binds[0].source, "/var/lib/x/hosts");
	CU_ASSERT_STRING_EQUAL(o.binds[0].share_name, "m0");
	CU_ASSERT(o.binds[0].readonly);
	CU_ASSERT_STRING_EQUAL(o.binds[1].source, "/srv/data");
	CU_ASSERT(!o.binds[1].readonly);
	CU_ASSERT_STRING_EQUAL(o.proc.cwd, "/work");
	CU_ASSERT_STRING_EQUAL(o.proc.user, "1000:1000");
	CU_ASSERT_STRING_EQUAL(o.proc.env[1], "A=1");
	CU_ASSERT_STRING_EQUAL(o.annotations[0], "io.kubernetes.cri.sandbox-id");
	CU_ASSERT_STRING_EQUAL(o.annotations[1], "abc");

	_cleanup_(json_object_putp) json_object *s = json_tokener_parse(o.agent_spec);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	/* root.path is never the bundle's. */
	CU_ASSERT_STRING_EQUAL(json_object_get_string(member(s, "root.path")), "rootfs");
	CU_ASSERT_STRING_EQUAL(json_object_get_string(member(s, "hostname")), "web");
	CU_ASSERT_EQUAL(json_object_get_int64(member(s, "linux.resources.memory.limit")), 67108864);
	CU_ASSERT_EQUAL(json_object_get_int64(member(s, "linux.resources.pids.limit")), 99);
	CU_ASSERT_EQUAL(json_object_get_int64(member(s, "linux.resources.cpu.quota")), 50000);
	/* The guest's own proc/dev/sys mounts are dropped; tmpfs and binds stay,
	 * binds with share-relative sources. */
	json_object *m = member(s, "mounts");
	CU_ASSERT_EQUAL_FATAL(json_object_array_length(m), 3);
	json_object *b0 = json_object_array_get_idx(m, 1);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(member(b0, "source")), "c7/m0");
	CU_ASSERT_STRING_EQUAL(json_object_get_string(member(b0, "type")), "bind");
	json_object *b1 = json_object_array_get_idx(m, 2);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(member(b1, "source")), "c7/m1");
	CU_ASSERT(strstr(json_object_to_json_string(member(b1, "options")), "noexec") != NULL);
	/* network with a path: the VM's own (shared by a pod's containers). */
	json_object *ns = member(s, "linux.namespaces");
	bool netns = false;
	for (size_t i = 0; i < json_object_array_length(ns); i++)
		netns = netns || !strcmp(json_object_get_string(
					     member(json_object_array_get_idx(ns, i), "type")),
					 "network");
	CU_ASSERT(!netns);
	CU_ASSERT(strlen(o.agent_spec) < BL_OCI_SPEC_MAX);
	bl_oci_clear(&o);
	CU_ASSERT_PTR_NULL(o.agent_spec);
}

static void test_unsupported(void)
{
	expect_fail("{\"linux\":{\"seccomp\":[]}}", BL_EINVAL, "linux.seccomp");
	expect_fail("{\"linux\":{\"mountLabel\":\"x\"}}", BL_EUNSUPPORTED, "mountLabel");
	expect_fail("{\"process\":{\"args\":[\"a\"],\"apparmorProfile\":\"p\"}}", BL_EUNSUPPORTED,
		    "apparmorProfile");
	expect_fail("{\"hooks\":{\"createRuntime\":[{\"path\":\"/x\"}]}}", BL_EUNSUPPORTED,
		    "hooks");
	expect_fail("{\"linux\":{\"uidMappings\":[{\"containerID\":0,\"hostID\":1,\"size\":1}]}}",
		    BL_EUNSUPPORTED, "uidMappings");
	expect_fail("{\"linux\":{\"devices\":[{\"path\":\"/dev/sda\",\"type\":\"b\"}]}}",
		    BL_EUNSUPPORTED, "linux.devices");
	expect_fail("{\"linux\":{\"sysctl\":{\"net.ipv4.ip_forward\":\"1\"}}}", BL_EUNSUPPORTED,
		    "sysctl");
	expect_fail("{\"linux\":{\"resources\":{\"blockIO\":{\"weight\":10}}}}", BL_EUNSUPPORTED,
		    "blockIO");
	expect_fail("{\"linux\":{\"resources\":{\"cpu\":{\"cpus\":\"0-1\"}}}}", BL_EUNSUPPORTED,
		    "cpus");
	expect_fail("{\"linux\":{\"resources\":{\"memory\":{\"disableOOMKiller\":true}}}}",
		    BL_EUNSUPPORTED, "disableOOMKiller");
	expect_fail("{\"linux\":{\"namespaces\":[{\"type\":\"user\"}]}}", BL_EUNSUPPORTED, "user");
	expect_fail("{\"mounts\":[{\"destination\":\"/m\",\"type\":\"overlay\",\"source\":\"o\"}]}",
		    BL_EUNSUPPORTED, "overlay");
	expect_fail("{\"mounts\":[{\"destination\":\"/m\",\"type\":\"bind\",\"source\":\"/x\","
		    "\"options\":[\"rbind\",\"suid-me\"]}]}",
		    BL_EUNSUPPORTED, "suid-me");
	expect_fail("{\"windows\":{}}", BL_EUNSUPPORTED, "spec.windows");
	expect_fail("{\"domainname\":\"corp\"}", BL_EUNSUPPORTED, "domainname");
	expect_fail("{\"process\":{\"args\":[\"a\"],\"scheduler\":{\"policy\":\"SCHED_FIFO\"}}}",
		    BL_EUNSUPPORTED, "scheduler");
	/* What a policy allows is accepted and not applied. */
	bl_oci_policy lenient = {.ignore_lsm = true, .ignore_hooks = true};
	bl_oci o;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(translate("{\"hooks\":{\"prestart\":[{\"path\":\"/x\"}]},\"linux\":{"
				  "\"seccomp\":{\"defaultAction\":\"SCMP_ACT_ERRNO\"}}}",
				  &lenient, &o, &err),
			0);
	/* Hooks are skipped; seccomp goes to the agent, which applies it. */
	CU_ASSERT(o.agent_spec && strstr(o.agent_spec, "SCMP_ACT_ERRNO") &&
		  !strstr(o.agent_spec, "hooks"));
	bl_oci_clear(&o);
	/* The VM's size bounds a memory limit. */
	bl_oci_policy small = {.memory_max_bytes = 32u << 20};
	CU_ASSERT_EQUAL(translate("{\"linux\":{\"resources\":{\"memory\":{\"limit\":67108864}}}}",
				  &small, &o, &err),
			-BL_EUNSUPPORTED);
	CU_ASSERT(strstr(err.msg, "more than the VM has") != NULL);
}

static void test_hostile(void)
{
	expect_fail("", BL_EINVAL, "bytes");
	expect_fail("[1,2]", BL_EINVAL, "not a JSON object");
	expect_fail("{\"a\":1} trailing", BL_EINVAL, "trailing");
	expect_fail("{\"process\":", BL_EINVAL, "truncated");
	expect_fail("{\"process\":{\"args\":[\"a\"],\"env\":[\"NOEQUALS\"]}}", BL_EINVAL, "K=V");
	expect_fail("{\"process\":{\"args\":[\"a\"],\"cwd\":\"rel\"}}", BL_EINVAL, "cwd");
	expect_fail("{\"process\":{\"args\":[\"a\"],\"cwd\":\"/a/../..\"}}", BL_EINVAL, "cwd");
	expect_fail("{\"process\":{\"args\":[\"a\"],\"user\":{\"uid\":-1}}}", BL_EINVAL, "uid");
	expect_fail("{\"process\":{\"args\":[\"a\"],\"user\":{\"uid\":\"0\"}}}", BL_EINVAL, "uid");
	expect_fail("{\"process\":[]}", BL_EINVAL, "process");
	expect_fail("{\"root\":{\"readonly\":\"yes\"}}", BL_EINVAL, "root.readonly");
	expect_fail("{\"mounts\":{}}", BL_EINVAL, "mounts");
	expect_fail("{\"mounts\":[null]}", BL_EINVAL, "null");
	expect_fail("{\"mounts\":[{\"destination\":\"rel\",\"type\":\"tmpfs\"}]}", BL_EINVAL,
		    "destination");
	expect_fail("{\"mounts\":[{\"destination\":\"/x/../../etc\",\"type\":\"bind\",\"source\":"
		    "\"/etc\"}]}",
		    BL_EINVAL, "destination");
	expect_fail("{\"mounts\":[{\"destination\":\"/x\",\"type\":\"bind\",\"source\":\"etc\"}]}",
		    BL_EINVAL, "host path");
	expect_fail("{\"mounts\":[{\"destination\":\"/x\",\"type\":\"bind\",\"source\":\"/a/../"
		    "etc\"}]}",
		    BL_EINVAL, "host path");
	expect_fail("{\"mounts\":[{\"destination\":\"/x\",\"type\":\"tmpfs\",\"options\":["
		    "\"size=1m,mode=777\"]}]}",
		    BL_EINVAL, "tmpfs");
	expect_fail("{\"hostname\":\"a\\u0000b\"}", BL_EINVAL, "NUL");
	expect_fail("{\"linux\":{\"resources\":{\"memory\":{\"limit\":\"1g\"}}}}", BL_EINVAL,
		    "memory.limit");
	expect_fail("{\"linux\":{\"resources\":{\"cpu\":{\"period\":5}}}}", BL_EINVAL, "cpu");
	expect_fail("{\"annotations\":{\"k\":5}}", BL_EINVAL, "annotations");
	/* Deep nesting and huge inputs are bounded. */
	char deep[400];
	size_t k = 0;
	for (int i = 0; i < 100; i++)
		deep[k++] = '[';
	for (int i = 0; i < 100; i++)
		deep[k++] = ']';
	deep[k] = '\0';
	_cleanup_free_ char *wrapped = bl_asprintf("{\"x\":%s}", deep);
	expect_fail(wrapped, BL_EINVAL, NULL);
	size_t big = BL_OCI_SPEC_MAX + 10;
	_cleanup_free_ char *huge = bl_malloc0(big + 1);
	memset(huge, ' ', big);
	huge[0] = '{';
	huge[big - 1] = '}';
	expect_fail(huge, BL_EINVAL, "bytes");
	/* Too many mounts. */
	size_t cap = 100 * 64 + 64, len = 0;
	_cleanup_free_ char *many = bl_malloc0(cap);
	len += (size_t)snprintf(many + len, cap - len, "{\"mounts\":[");
	for (int i = 0; i < 65; i++)
		len += (size_t)snprintf(many + len, cap - len,
					"%s{\"destination\":\"/t%d\",\"type\":\"tmpfs\"}",
					i ? "," : "", i);
	snprintf(many + len, cap - len, "]}");
	expect_fail(many, BL_EINVAL, "mounts");
}

static void test_resources(void)
{
	bl_oci_resources r;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_oci_resources_parse("{\"memory\":{\"limit\":1048576},\"cpu\":{"
					       "\"quota\":20000,\"shares\":1024},\"pids\":{}}",
					       &r, &err),
			0);
	CU_ASSERT_EQUAL(r.memory_limit, 1048576);
	CU_ASSERT_EQUAL(r.cpu_quota, 20000);
	CU_ASSERT_EQUAL(r.cpu_period, -1);
	CU_ASSERT_EQUAL(r.cpu_shares, 1024);
	CU_ASSERT_EQUAL(r.pids_limit, -1);
	CU_ASSERT_EQUAL(bl_oci_resources_parse("{\"memory\":{\"limit\":-1}}", &r, &err), 0);
	CU_ASSERT_EQUAL(r.memory_limit, 0); /* unlimited */
	CU_ASSERT_EQUAL(bl_oci_resources_parse("{\"rdma\":{\"x\":{}}}", &r, &err),
			-BL_EUNSUPPORTED);
	CU_ASSERT_EQUAL(bl_oci_resources_parse("{\"what\":1}", &r, &err), -BL_EUNSUPPORTED);
	CU_ASSERT_EQUAL(bl_oci_resources_parse("nope", &r, &err), -BL_EINVAL);
}

static void test_process_overlay(void)
{
	const char *base =
	    "{\"args\":[\"init\"],\"env\":[\"A=1\"],\"cwd\":\"/w\",\"user\":{"
	    "\"uid\":5,\"gid\":6,\"additionalGids\":[7]},\"rlimits\":[{\"type\":"
	    "\"RLIMIT_NOFILE\",\"hard\":9,\"soft\":9}],\"consoleSize\":{\"height\":1,"
	    "\"width\":1},\"noNewPrivileges\":true}";
	const char *over = "{\"args\":[\"ls\"],\"env\":[\"A=1\",\"B=2\"],\"cwd\":\"/x\","
			   "\"user\":{\"uid\":0,\"gid\":0},\"terminal\":true}";
	char *out = NULL;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(bl_oci_process_overlay(base, over, false, false, &out, &err), 0);
	_cleanup_(json_object_putp) json_object *o = json_tokener_parse(out);
	CU_ASSERT_STRING_EQUAL(
	    json_object_get_string(json_object_array_get_idx(member(o, "args"), 0)), "ls");
	CU_ASSERT_EQUAL(json_object_array_length(member(o, "env")), 2);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(member(o, "cwd")), "/w");
	CU_ASSERT_EQUAL(json_object_get_int(member(o, "user.uid")), 5);
	CU_ASSERT_PTR_NOT_NULL(member(o, "user.additionalGids"));
	CU_ASSERT_PTR_NOT_NULL(member(o, "rlimits"));
	CU_ASSERT_PTR_NULL(member(o, "consoleSize"));
	CU_ASSERT(json_object_get_boolean(member(o, "terminal")));
	free(out);
	CU_ASSERT_EQUAL_FATAL(bl_oci_process_overlay(base, over, true, true, &out, &err), 0);
	_cleanup_(json_object_putp) json_object *o2 = json_tokener_parse(out);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(member(o2, "cwd")), "/x");
	CU_ASSERT_EQUAL(json_object_get_int(member(o2, "user.uid")), 0);
	free(out);
	CU_ASSERT_EQUAL(bl_oci_process_overlay("[", over, true, true, &out, &err), -BL_EINVAL);
}

int main(void)
{
	static const bl_test_case tests[] = {
	    {"translate a containerd spec", test_translate_containerd_spec},
	    {"unsupported fields", test_unsupported},
	    {"hostile specs", test_hostile},
	    {"update resources", test_resources},
	    {"exec inherits the spec process", test_process_overlay},
	    {NULL, NULL},
	};
	return bl_test_run("oci", tests);
}
