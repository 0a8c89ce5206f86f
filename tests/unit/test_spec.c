/* The OCI spec builder: process layering, env merging, users, limits, and
 * image configs as untrusted input. */
#include "bl_cleanup.h"
#include "bl_test.h"
#include "spec.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

static json_object *get(json_object *o, const char *path)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *tok = strtok(buf, "."); tok && o; tok = strtok(NULL, ".")) {
		json_object *v = NULL;
		if (!json_object_object_get_ex(o, tok, &v))
			return NULL;
		o = v;
	}
	return o;
}

static bool env_contains(json_object *env, const char *kv)
{
	for (size_t i = 0; env && i < json_object_array_length(env); i++)
		if (!strcmp(json_object_get_string(json_object_array_get_idx(env, i)), kv))
			return true;
	return false;
}

static const char image_cfg[] = "{\"config\":{\"Env\":[\"PATH=/img/bin\",\"A=image\",\"B=image\"],"
				"\"Entrypoint\":[\"/entry\"],\"Cmd\":[\"arg1\"],"
				"\"WorkingDir\":\"/work\",\"User\":\"1000:1000\"}}";

static void test_image_defaults(void)
{
	bl_image_defaults d;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(bl_image_defaults_parse(image_cfg, &d, &err), 0);
	CU_ASSERT_STRING_EQUAL(d.entrypoint[0], "/entry");
	CU_ASSERT_STRING_EQUAL(d.cmd[0], "arg1");
	CU_ASSERT_STRING_EQUAL(d.cwd, "/work");
	CU_ASSERT_STRING_EQUAL(d.user, "1000:1000");
	CU_ASSERT_STRING_EQUAL(d.env[1], "A=image");
	bl_image_defaults_clear(&d);
	/* NULL config: empty but usable defaults. */
	CU_ASSERT_EQUAL(bl_image_defaults_parse(NULL, &d, &err), 0);
	CU_ASSERT_PTR_NOT_NULL(d.env);
	CU_ASSERT_PTR_NULL(d.env[0]);
	bl_image_defaults_clear(&d);
}

static void test_image_defaults_hostile(void)
{
	static const char *const bad[] = {
	    "[1,2]",
	    "{\"config\":{\"Env\":\"PATH=/x\"}}",
	    "{\"config\":{\"Env\":[1]}}",
	    "{\"config\":{\"Cmd\":{\"a\":1}}}",
	    "{\"config\":{\"WorkingDir\":7}}",
	    "{\"config\":3}",
	    "not json",
	};
	for (size_t i = 0; i < BL_ARRAY_SIZE(bad); i++) {
		bl_image_defaults d;
		bl_error_t err = BL_ERROR_INIT;
		CU_ASSERT(bl_image_defaults_parse(bad[i], &d, &err) < 0);
		CU_ASSERT_EQUAL(err.code, BL_EPROTO);
	}
}

static void test_process_layers(void)
{
	bl_image_defaults d;
	CU_ASSERT_EQUAL_FATAL(bl_image_defaults_parse(image_cfg, &d, NULL), 0);
	const char *const sb_env[] = {"B=sandbox", "C=sandbox", NULL};
	const char *const ex_env[] = {"C=exec", NULL};
	const char *const args[] = {"echo", "hi", NULL};
	bl_spec_process sbl = {.env = sb_env, .cwd = "/sb"};
	bl_spec_process exl = {.args = args, .env = ex_env, .user = "nobody", .terminal = true};
	const bl_spec_process *layers[] = {&exl, &sbl};
	_cleanup_free_ char *json = NULL;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(bl_spec_process_json(layers, 2, &d, &json, &err), 0);
	json_object *p = json_tokener_parse(json);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	json_object *a = get(p, "args");
	CU_ASSERT_EQUAL(json_object_array_length(a), 2);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(json_object_array_get_idx(a, 0)), "echo");
	json_object *env = get(p, "env");
	CU_ASSERT(env_contains(env, "A=image"));
	CU_ASSERT(env_contains(env, "B=sandbox"));
	CU_ASSERT(env_contains(env, "C=exec"));
	CU_ASSERT(env_contains(env, "PATH=/img/bin"));
	CU_ASSERT(!env_contains(env, "C=sandbox"));
	CU_ASSERT_STRING_EQUAL(json_object_get_string(get(p, "cwd")), "/sb");
	CU_ASSERT_STRING_EQUAL(json_object_get_string(get(p, "user.username")), "nobody");
	CU_ASSERT(json_object_get_boolean(get(p, "terminal")));
	CU_ASSERT(json_object_get_boolean(get(p, "noNewPrivileges")));
	json_object_put(p);
	bl_image_defaults_clear(&d);
}

static void test_process_image_command(void)
{
	bl_image_defaults d;
	CU_ASSERT_EQUAL_FATAL(bl_image_defaults_parse(image_cfg, &d, NULL), 0);
	bl_spec_process none = {0};
	const bl_spec_process *layers[] = {&none};
	_cleanup_free_ char *json = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_spec_process_json(layers, 1, &d, &json, NULL), 0);
	json_object *p = json_tokener_parse(json);
	json_object *a = get(p, "args");
	CU_ASSERT_EQUAL(json_object_array_length(a), 2);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(json_object_array_get_idx(a, 0)), "/entry");
	CU_ASSERT_STRING_EQUAL(json_object_get_string(json_object_array_get_idx(a, 1)), "arg1");
	CU_ASSERT_STRING_EQUAL(json_object_get_string(get(p, "cwd")), "/work");
	CU_ASSERT_EQUAL(json_object_get_int(get(p, "user.uid")), 1000);
	CU_ASSERT_EQUAL(json_object_get_int(get(p, "user.gid")), 1000);
	json_object_put(p);
	bl_image_defaults_clear(&d);
}

static void test_process_errors(void)
{
	bl_image_defaults d;
	CU_ASSERT_EQUAL_FATAL(bl_image_defaults_parse(NULL, &d, NULL), 0);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_free_ char *json = NULL;
	bl_spec_process none = {0};
	const bl_spec_process *layers[] = {&none};
	/* No command anywhere. */
	CU_ASSERT(bl_spec_process_json(layers, 1, &d, &json, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	/* Bad env entry and relative cwd. */
	const char *const args[] = {"true", NULL};
	const char *const bad_env[] = {"=x", NULL};
	bl_spec_process p1 = {.args = args, .env = bad_env};
	layers[0] = &p1;
	CU_ASSERT(bl_spec_process_json(layers, 1, &d, &json, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	bl_spec_process p2 = {.args = args, .cwd = "relative"};
	layers[0] = &p2;
	CU_ASSERT(bl_spec_process_json(layers, 1, &d, &json, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	/* Defaults: PATH and HOME present, root user. */
	bl_spec_process p3 = {.args = args};
	layers[0] = &p3;
	CU_ASSERT_EQUAL_FATAL(bl_spec_process_json(layers, 1, &d, &json, &err), 0);
	json_object *p = json_tokener_parse(json);
	CU_ASSERT(env_contains(
	    get(p, "env"), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
	CU_ASSERT_EQUAL(json_object_get_int(get(p, "user.uid")), 0);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(get(p, "cwd")), "/");
	json_object_put(p);
	bl_image_defaults_clear(&d);
}

static void test_spec_build(void)
{
	const char *const args[] = {"true", NULL};
	bl_image_defaults d;
	CU_ASSERT_EQUAL_FATAL(bl_image_defaults_parse(NULL, &d, NULL), 0);
	bl_spec_process pr = {.args = args};
	const bl_spec_process *layers[] = {&pr};
	_cleanup_free_ char *proc = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_spec_process_json(layers, 1, &d, &proc, NULL), 0);
	bl_spec_config sc = {.hostname = "h1", .memory_limit_bytes = 64 << 20, .pids_limit = 100};
	_cleanup_free_ char *spec = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_spec_build(&sc, proc, &spec, NULL), 0);
	json_object *s = json_tokener_parse(spec);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(get(s, "hostname")), "h1");
	CU_ASSERT_EQUAL(json_object_get_int64(get(s, "linux.resources.memory.limit")), 64 << 20);
	CU_ASSERT_EQUAL(json_object_get_int64(get(s, "linux.resources.pids.limit")), 100);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(get(s, "root.path")), "rootfs");
	json_object *ns = get(s, "linux.namespaces");
	bool netns = false;
	for (size_t i = 0; i < json_object_array_length(ns); i++)
		netns |=
		    !strcmp(json_object_get_string(get(json_object_array_get_idx(ns, i), "type")),
			    "network");
	CU_ASSERT(netns); /* no network: an empty namespace of its own */
	CU_ASSERT_PTR_NOT_NULL(get(s, "process.args"));
	json_object_put(s);
	/* Without a process (a long-lived sandbox's pause init comes from the agent). */
	_cleanup_free_ char *spec2 = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_spec_build(&sc, NULL, &spec2, NULL), 0);
	s = json_tokener_parse(spec2);
	CU_ASSERT_PTR_NULL(get(s, "process"));
	json_object_put(s);
	bl_image_defaults_clear(&d);
}

static void test_hostile_strings_escaped(void)
{
	/* Quotes, newlines and NUL-free control bytes stay data, never structure. */
	const char *const args[] = {"sh", "-c", "echo \"}],\"x\":1\n\t\\", NULL};
	bl_image_defaults d;
	CU_ASSERT_EQUAL_FATAL(bl_image_defaults_parse(NULL, &d, NULL), 0);
	bl_spec_process pr = {.args = args};
	const bl_spec_process *layers[] = {&pr};
	_cleanup_free_ char *proc = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_spec_process_json(layers, 1, &d, &proc, NULL), 0);
	json_object *p = json_tokener_parse(proc);
	CU_ASSERT_PTR_NULL(get(p, "x"));
	CU_ASSERT_STRING_EQUAL(json_object_get_string(json_object_array_get_idx(get(p, "args"), 2)),
			       args[2]);
	json_object_put(p);
	bl_image_defaults_clear(&d);
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"image_defaults", test_image_defaults},
	    {"image_defaults_hostile", test_image_defaults_hostile},
	    {"process_layers", test_process_layers},
	    {"process_image_command", test_process_image_command},
	    {"process_errors", test_process_errors},
	    {"spec_build", test_spec_build},
	    {"hostile_strings_escaped", test_hostile_strings_escaped},
	    {NULL, NULL},
	};
	return bl_test_run("spec", cases);
}
