#include "spec.h"
#include "bl_cleanup.h"
#include "bl_util.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IMAGE_CONFIG_MAX (1u << 20)
#define STRV_MAX	 4096
#define DEFAULT_PATH	 "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

BL_DEFINE_CLEANUP(json_object, json_object_put)

bool bl_spec_valid_env(const char *kv)
{
	const char *eq = kv ? strchr(kv, '=') : NULL;
	return eq && eq != kv;
}

/* A JSON array of strings as a NULL-terminated strv; NULL when absent. */
static int strv_from_json(json_object *o, const char *what, char ***ret, bl_error_t *err)
{
	*ret = NULL;
	if (!o || json_object_is_type(o, json_type_null))
		return 0;
	if (!json_object_is_type(o, json_type_array))
		return bl_set_error(err, BL_EPROTO, "image config: %s is not an array", what);
	size_t n = json_object_array_length(o);
	if (n > STRV_MAX)
		return bl_set_error(err, BL_EPROTO, "image config: %s has too many items", what);
	char **v = bl_malloc0((n + 1) * sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		json_object *s = json_object_array_get_idx(o, i);
		if (!json_object_is_type(s, json_type_string)) {
			bl_strv_free(v);
			return bl_set_error(err, BL_EPROTO, "image config: %s[%zu] is not a string",
					    what, i);
		}
		v[i] = bl_strdup(json_object_get_string(s));
	}
	*ret = v;
	return 0;
}

static int string_from_json(json_object *o, const char *what, char **ret, bl_error_t *err)
{
	*ret = NULL;
	if (!o || json_object_is_type(o, json_type_null))
		return 0;
	if (!json_object_is_type(o, json_type_string))
		return bl_set_error(err, BL_EPROTO, "image config: %s is not a string", what);
	const char *s = json_object_get_string(o);
	if (*s)
		*ret = bl_strdup(s);
	return 0;
}

static json_object *member(json_object *o, const char *key)
{
	json_object *v = NULL;
	return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

int bl_image_defaults_parse(const char *json, bl_image_defaults *ret, bl_error_t *err)
{
	*ret = (bl_image_defaults){0};
	if (json && *json) {
		if (strlen(json) > IMAGE_CONFIG_MAX)
			return bl_set_error(err, BL_EPROTO, "image config larger than 1 MiB");
		_cleanup_(json_object_putp) json_object *root = json_tokener_parse(json);
		if (!root || !json_object_is_type(root, json_type_object))
			return bl_set_error(err, BL_EPROTO, "image config is not a JSON object");
		json_object *c = member(root, "config");
		if (!c)
			c = root;
		if (!json_object_is_type(c, json_type_object))
			return bl_set_error(err, BL_EPROTO,
					    "image config: config is not an object");
		int r = strv_from_json(member(c, "Env"), "Env", &ret->env, err);
		if (r == 0)
			r = strv_from_json(member(c, "Entrypoint"), "Entrypoint", &ret->entrypoint,
					   err);
		if (r == 0)
			r = strv_from_json(member(c, "Cmd"), "Cmd", &ret->cmd, err);
		if (r == 0)
			r = string_from_json(member(c, "WorkingDir"), "WorkingDir", &ret->cwd, err);
		if (r == 0)
			r = string_from_json(member(c, "User"), "User", &ret->user, err);
		if (r < 0) {
			bl_image_defaults_clear(ret);
			return r;
		}
	}
	if (!ret->env)
		ret->env = bl_malloc0(sizeof(char *));
	return 0;
}

void bl_image_defaults_clear(bl_image_defaults *d)
{
	bl_strv_free(d->env);
	bl_strv_free(d->entrypoint);
	bl_strv_free(d->cmd);
	free(d->cwd);
	free(d->user);
	*d = (bl_image_defaults){0};
}

/* ------------------------------------------------------------ process */

/* Sets or replaces K=V in the array (keys compared up to '='). */
static void env_put(json_object *arr, const char *kv)
{
	size_t klen = (size_t)(strchr(kv, '=') - kv);
	size_t n = json_object_array_length(arr);
	for (size_t i = 0; i < n; i++) {
		const char *cur = json_object_get_string(json_object_array_get_idx(arr, i));
		if (!strncmp(cur, kv, klen) && cur[klen] == '=') {
			json_object_array_put_idx(arr, i, json_object_new_string(kv));
			return;
		}
	}
	json_object_array_add(arr, json_object_new_string(kv));
}

static int env_layer(json_object *arr, const char *const *env, bl_error_t *err)
{
	for (size_t i = 0; env && env[i]; i++) {
		if (!bl_spec_valid_env(env[i]))
			return bl_set_error(err, BL_EINVAL, "environment entry '%s' is not K=V",
					    env[i]);
		env_put(arr, env[i]);
	}
	return 0;
}

static bool env_has(json_object *arr, const char *key)
{
	size_t klen = strlen(key), n = json_object_array_length(arr);
	for (size_t i = 0; i < n; i++) {
		const char *cur = json_object_get_string(json_object_array_get_idx(arr, i));
		if (!strncmp(cur, key, klen) && cur[klen] == '=')
			return true;
	}
	return false;
}

static void strv_append_json(json_object *arr, char *const *v)
{
	for (size_t i = 0; v && v[i]; i++)
		json_object_array_add(arr, json_object_new_string(v[i]));
}

/* "uid[:gid]" numerics fill uid/gid; every form also goes as username for
 * the agent to resolve against the container's /etc/passwd and /etc/group. */
static int user_object(const char *user, json_object **ret, bl_error_t *err)
{
	unsigned long uid = 0, gid = 0;
	if (!user || !*user)
		user = "0:0";
	if (strlen(user) > 255 || strchr(user, '\n'))
		return bl_set_error(err, BL_EINVAL, "user '%.32s' is invalid", user);
	char *end;
	unsigned long v = strtoul(user, &end, 10);
	if (end != user && (*end == '\0' || *end == ':') && v < 0xffffffffUL) {
		uid = v;
		if (*end == ':') {
			unsigned long g = strtoul(end + 1, &end, 10);
			if (*end == '\0' && g < 0xffffffffUL)
				gid = g;
		}
	}
	json_object *o = json_object_new_object();
	json_object_object_add(o, "uid", json_object_new_int64((int64_t)uid));
	json_object_object_add(o, "gid", json_object_new_int64((int64_t)gid));
	json_object_object_add(o, "username", json_object_new_string(user));
	*ret = o;
	return 0;
}

static json_object *rlimit(const char *type, uint64_t n)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "type", json_object_new_string(type));
	json_object_object_add(o, "hard", json_object_new_uint64(n));
	json_object_object_add(o, "soft", json_object_new_uint64(n));
	return o;
}

static int process_args(const bl_spec_process *const *layers, size_t n,
			const bl_image_defaults *img, json_object *args, bl_error_t *err)
{
	for (size_t i = 0; i < n; i++) {
		if (layers[i] && layers[i]->args && layers[i]->args[0]) {
			strv_append_json(args, (char *const *)layers[i]->args);
			return 0;
		}
	}
	strv_append_json(args, img->entrypoint);
	strv_append_json(args, img->cmd);
	if (json_object_array_length(args) == 0)
		return bl_set_error(err, BL_EINVAL, "no command given and the image has none");
	return 0;
}

int bl_spec_process_json(const bl_spec_process *const *layers, size_t n_layers,
			 const bl_image_defaults *img, char **ret_json, bl_error_t *err)
{
	_cleanup_(json_object_putp) json_object *p = json_object_new_object();
	json_object *args = json_object_new_array();
	json_object_object_add(p, "args", args);
	int r = process_args(layers, n_layers, img, args, err);
	if (r < 0)
		return r;
	json_object *env = json_object_new_array();
	json_object_object_add(p, "env", env);
	r = env_layer(env, (const char *const *)img->env, err);
	for (size_t i = n_layers; r == 0 && i-- > 0;)
		r = layers[i] ? env_layer(env, layers[i]->env, err) : 0;
	if (r < 0)
		return r;
	if (!env_has(env, "PATH"))
		json_object_array_add(env, json_object_new_string(DEFAULT_PATH));
	if (!env_has(env, "HOME"))
		json_object_array_add(env, json_object_new_string("HOME=/root"));
	const char *cwd = NULL, *user = NULL;
	bool terminal = n_layers > 0 && layers[0] && layers[0]->terminal;
	for (size_t i = 0; i < n_layers; i++) {
		if (!layers[i])
			continue;
		cwd = cwd ? cwd : layers[i]->cwd;
		user = user ? user : layers[i]->user;
	}
	cwd = cwd ? cwd : img->cwd ? img->cwd : "/";
	user = user ? user : img->user;
	if (cwd[0] != '/' || strlen(cwd) > 4096)
		return bl_set_error(err, BL_EINVAL, "working directory '%.64s' is not absolute",
				    cwd);
	json_object_object_add(p, "cwd", json_object_new_string(cwd));
	json_object *u = NULL;
	r = user_object(user, &u, err);
	if (r < 0)
		return r;
	json_object_object_add(p, "user", u);
	json_object_object_add(p, "terminal", json_object_new_boolean(terminal));
	json_object_object_add(p, "noNewPrivileges", json_object_new_boolean(1));
	json_object *rl = json_object_new_array();
	json_object_array_add(rl, rlimit("RLIMIT_NOFILE", 1024));
	json_object_object_add(p, "rlimits", rl);
	*ret_json = bl_strdup(json_object_to_json_string_ext(p, JSON_C_TO_STRING_PLAIN));
	return 0;
}

/* ------------------------------------------------------------ config.json */

static json_object *namespaces(bool network)
{
	static const char *const types[] = {"pid", "mount", "ipc", "uts", "cgroup", "network"};
	json_object *a = json_object_new_array();
	for (size_t i = 0; i < BL_ARRAY_SIZE(types); i++) {
		if (!network || strcmp(types[i], "network")) {
			json_object *ns = json_object_new_object();
			json_object_object_add(ns, "type", json_object_new_string(types[i]));
			json_object_array_add(a, ns);
		}
	}
	return a;
}

static json_object *resources(const bl_spec_config *cfg)
{
	json_object *res = json_object_new_object();
	if (cfg->memory_limit_bytes) {
		json_object *m = json_object_new_object();
		json_object_object_add(m, "limit",
				       json_object_new_int64((int64_t)cfg->memory_limit_bytes));
		/* No swap in the guest; keep the accounting exact. */
		json_object_object_add(m, "swap",
				       json_object_new_int64((int64_t)cfg->memory_limit_bytes));
		json_object_object_add(res, "memory", m);
	}
	if (cfg->pids_limit > 0) {
		json_object *p = json_object_new_object();
		json_object_object_add(p, "limit", json_object_new_int64(cfg->pids_limit));
		json_object_object_add(res, "pids", p);
	}
	return res;
}

int bl_spec_build(const bl_spec_config *cfg, const char *process_json, char **ret_json,
		  bl_error_t *err)
{
	_cleanup_(json_object_putp) json_object *spec = json_object_new_object();
	json_object_object_add(spec, "ociVersion", json_object_new_string("1.0.2"));
	if (process_json) {
		json_object *p = json_tokener_parse(process_json);
		if (!p)
			return bl_set_error(err, BL_EINVAL, "process JSON does not parse");
		json_object_object_add(spec, "process", p);
	}
	json_object *root = json_object_new_object();
	json_object_object_add(root, "path", json_object_new_string("rootfs"));
	json_object_object_add(root, "readonly", json_object_new_boolean(0));
	json_object_object_add(spec, "root", root);
	json_object_object_add(spec, "hostname",
			       json_object_new_string(cfg->hostname ? cfg->hostname : "boxlite"));
	json_object *linux_ = json_object_new_object();
	json_object_object_add(linux_, "namespaces", namespaces(cfg->network));
	json_object_object_add(linux_, "resources", resources(cfg));
	json_object_object_add(spec, "linux", linux_);
	*ret_json = bl_strdup(json_object_to_json_string_ext(spec, JSON_C_TO_STRING_PLAIN));
	return 0;
}
