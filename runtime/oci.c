/*
 * OCI runtime specs from containerd bundles (untrusted): validated and
 * translated into what the guest agent runs, plus the host paths to share.
 */
#include "spec.h"
#include "bl_cleanup.h"
#include "bl_util.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OCI_MAX_DEPTH	 32
#define OCI_MAX_KEY	 1024
#define OCI_MAX_VALUE	 (64u * 1024)
#define OCI_MAX_PATH	 4096
#define OCI_MAX_OPTIONS	 32
#define OCI_MAX_NS	 16
#define OCI_MAX_DEVICES	 256
#define DEFAULT_PATH_ENV "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

BL_DEFINE_CLEANUP(json_object, json_object_put)

#define JV(o, k) json_object_object_get(o, k)

static int unsupported(bl_error_t *err, const char *field)
{
	return bl_set_error(err, BL_EUNSUPPORTED, "spec: %s is not supported in a boxlite VM",
			    field);
}

/* True for absent, null, "", [], {} and false: nothing asked for. */
static bool is_empty(json_object *o)
{
	if (!o)
		return true;
	switch (json_object_get_type(o)) {
	case json_type_null:
		return true;
	case json_type_string:
		return json_object_get_string_len(o) == 0;
	case json_type_array:
		return json_object_array_length(o) == 0;
	case json_type_object:
		return json_object_object_length(o) == 0;
	case json_type_boolean:
		return !json_object_get_boolean(o);
	default:
		return false;
	}
}

static json_object *parse(const char *json, size_t max, const char *what, bl_error_t *err)
{
	size_t len = json ? strlen(json) : 0;
	if (len == 0 || len > max) {
		bl_set_error(err, BL_EINVAL, "%s: %zu bytes (1..%zu allowed)", what, len, max);
		return NULL;
	}
	struct json_tokener *tok = json_tokener_new_ex(OCI_MAX_DEPTH);
	if (!tok)
		abort();
	json_object *o = json_tokener_parse_ex(tok, json, (int)len);
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	size_t end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!o || jerr != json_tokener_success) {
		json_object_put(o);
		bl_set_error(err, BL_EINVAL, "%s: malformed JSON (%s)", what,
			     jerr == json_tokener_continue ? "truncated"
							   : json_tokener_error_desc(jerr));
		return NULL;
	}
	for (; end < len; end++) {
		if (!strchr(" \t\r\n", json[end])) {
			json_object_put(o);
			bl_set_error(err, BL_EINVAL, "%s: trailing data after the JSON value",
				     what);
			return NULL;
		}
	}
	if (!json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		bl_set_error(err, BL_EINVAL, "%s: not a JSON object", what);
		return NULL;
	}
	return o;
}

/* A string member (absent: NULL, no error); no NUL bytes, bounded. */
static int get_str(json_object *o, const char *what, size_t max, const char **ret, bl_error_t *err)
{
	*ret = NULL;
	if (!o || json_object_is_type(o, json_type_null))
		return 0;
	if (!json_object_is_type(o, json_type_string))
		return bl_set_error(err, BL_EINVAL, "spec: %s is not a string", what);
	size_t n = (size_t)json_object_get_string_len(o);
	const char *s = json_object_get_string(o);
	if (n > max || strlen(s) != n)
		return bl_set_error(err, BL_EINVAL, "spec: %s is too long or has a NUL byte", what);
	*ret = s;
	return 0;
}

static int get_i64(json_object *o, const char *what, int64_t min, int64_t *ret, bl_error_t *err)
{
	if (!o || json_object_is_type(o, json_type_null))
		return 0;
	if (!json_object_is_type(o, json_type_int))
		return bl_set_error(err, BL_EINVAL, "spec: %s is not an integer", what);
	int64_t v = json_object_get_int64(o);
	if (v < min)
		return bl_set_error(err, BL_EINVAL, "spec: %s is out of range", what);
	*ret = v;
	return 0;
}

static int check_type(json_object *o, json_type t, const char *what, bl_error_t *err)
{
	if (o && !json_object_is_type(o, json_type_null) && !json_object_is_type(o, t))
		return bl_set_error(err, BL_EINVAL, "spec: %s is not %s", what,
				    t == json_type_object ? "an object" : "an array");
	return 0;
}

/* Rejects members of o not in `known`. */
static int only_known(json_object *o, const char *what, const char *const *known, bl_error_t *err)
{
	json_object_object_foreach(o, key, val)
	{
		(void)val;
		bool ok = false;
		for (size_t i = 0; known[i] && !ok; i++)
			ok = !strcmp(key, known[i]);
		if (!ok) {
			char field[128];
			snprintf(field, sizeof(field), "%s.%.64s", what, key);
			return unsupported(err, field);
		}
	}
	return 0;
}

static bool clean_abs_path(const char *p)
{
	if (!p || p[0] != '/' || strlen(p) > OCI_MAX_PATH)
		return false;
	for (const char *s = p; (s = strstr(s, "..")); s += 2) {
		if (s[-1] == '/' && (s[2] == '/' || s[2] == '\0'))
			return false;
	}
	return true;
}

/* ------------------------------------------------------------ process */

static int check_process(json_object *p, const bl_oci_policy *pol, bl_oci *ret, bl_error_t *err)
{
	static const char *const known[] = {"terminal",
					    "consoleSize",
					    "user",
					    "args",
					    "commandLine",
					    "env",
					    "cwd",
					    "capabilities",
					    "rlimits",
					    "noNewPrivileges",
					    "apparmorProfile",
					    "oomScoreAdj",
					    "selinuxLabel",
					    "scheduler",
					    "ioPriority",
					    "execCPUAffinity",
					    NULL};
	int r = check_type(p, json_type_object, "process", err);
	if (r < 0 || !p)
		return r;
	r = only_known(p, "process", known, err);
	if (r < 0)
		return r;
	if (!is_empty(JV(p, "commandLine")))
		return unsupported(err, "process.commandLine (Windows)");
	if (!is_empty(JV(p, "scheduler")))
		return unsupported(err, "process.scheduler");
	if (!is_empty(JV(p, "ioPriority")))
		return unsupported(err, "process.ioPriority");
	if (!is_empty(JV(p, "execCPUAffinity")))
		return unsupported(err, "process.execCPUAffinity");
	if (!pol->ignore_lsm && !is_empty(JV(p, "apparmorProfile")))
		return unsupported(err, "process.apparmorProfile (the VM is the boundary; set "
					"ignore_lsm to accept it)");
	if (!pol->ignore_lsm && !is_empty(JV(p, "selinuxLabel")))
		return unsupported(err, "process.selinuxLabel (set ignore_lsm to accept it)");
	json_object *t = JV(p, "terminal");
	ret->terminal =
	    t && json_object_is_type(t, json_type_boolean) && json_object_get_boolean(t);
	/* What exec inherits. The agent validates every field again. */
	json_object *env = JV(p, "env");
	r = check_type(env, json_type_array, "process.env", err);
	if (r < 0)
		return r;
	size_t n =
	    env && json_object_is_type(env, json_type_array) ? json_object_array_length(env) : 0;
	if (n > 4096)
		return bl_set_error(err, BL_EINVAL, "spec: process.env has too many entries");
	ret->proc.env = bl_malloc0((n + 1) * sizeof(char *));
	for (size_t i = 0, k = 0; i < n; i++) {
		const char *kv = NULL;
		r = get_str(json_object_array_get_idx(env, i), "process.env[]", OCI_MAX_VALUE, &kv,
			    err);
		if (r < 0)
			return r;
		if (!kv || !bl_spec_valid_env(kv))
			return bl_set_error(err, BL_EINVAL, "spec: process.env entry is not K=V");
		ret->proc.env[k++] = bl_strdup(kv);
	}
	const char *cwd = NULL;
	r = get_str(JV(p, "cwd"), "process.cwd", OCI_MAX_PATH, &cwd, err);
	if (r < 0)
		return r;
	if (cwd && !clean_abs_path(cwd))
		return bl_set_error(err, BL_EINVAL,
				    "spec: process.cwd is not a clean absolute path");
	ret->proc.cwd = cwd ? bl_strdup(cwd) : NULL;
	json_object *u = JV(p, "user");
	r = check_type(u, json_type_object, "process.user", err);
	if (r < 0)
		return r;
	int64_t uid = 0, gid = 0;
	if (u) {
		r = get_i64(JV(u, "uid"), "process.user.uid", 0, &uid, err);
		if (r == 0)
			r = get_i64(JV(u, "gid"), "process.user.gid", 0, &gid, err);
		if (r < 0)
			return r;
		if (uid > 0xfffffffe || gid > 0xfffffffe)
			return bl_set_error(err, BL_EINVAL, "spec: process.user out of range");
	}
	ret->proc.user = bl_asprintf("%lld:%lld", (long long)uid, (long long)gid);
	ret->has_process = true;
	return 0;
}

/* ------------------------------------------------------------ mounts */

static bool is_guest_mount(const char *type, const char *dst)
{
	static const char *const types[] = {"proc",   "sysfs",	 "devpts", "mqueue",
					    "cgroup", "cgroup2", NULL};
	static const char *const dsts[] = {"/proc", "/dev",	   "/dev/pts",	     "/dev/shm",
					   "/sys",  "/dev/mqueue", "/sys/fs/cgroup", NULL};
	for (size_t i = 0; type && types[i]; i++)
		if (!strcmp(type, types[i]))
			return true;
	for (size_t i = 0; dsts[i]; i++)
		if (!strcmp(dst, dsts[i]))
			return true;
	return false;
}

/* Bind options: ro/rw and noexec are honoured, the rest of this list is
 * harmless in the guest (propagation, atime, nosuid/nodev, which are always
 * set); anything else is refused. */
static int bind_options(json_object *opts, bool *ro, bool *noexec, bool *is_bind, bl_error_t *err)
{
	static const char *const harmless[] = {
	    "rw",     "bind",	    "rbind",	   "private", "rprivate", "slave",   "rslave",
	    "shared", "rshared",    "nosuid",	   "nodev",   "relatime", "noatime", "nodiratime",
	    "exec",   "norelatime", "strictatime", "suid",    "dev",	  NULL};
	size_t n = opts ? json_object_array_length(opts) : 0;
	for (size_t i = 0; i < n; i++) {
		const char *o = NULL;
		int r =
		    get_str(json_object_array_get_idx(opts, i), "mounts[].options[]", 128, &o, err);
		if (r < 0)
			return r;
		if (!o)
			return bl_set_error(err, BL_EINVAL, "spec: mounts[].options has a null");
		if (!strcmp(o, "bind") || !strcmp(o, "rbind"))
			*is_bind = true;
		if (!strcmp(o, "ro"))
			*ro = true;
		else if (!strcmp(o, "noexec"))
			*noexec = true;
		else {
			bool ok = false;
			for (size_t k = 0; harmless[k] && !ok; k++)
				ok = !strcmp(o, harmless[k]);
			if (!ok) {
				char field[192];
				snprintf(field, sizeof(field), "bind mount option \"%.64s\"", o);
				return unsupported(err, field);
			}
		}
	}
	return 0;
}

static int tmpfs_options(json_object *opts, bl_error_t *err)
{
	size_t n = opts ? json_object_array_length(opts) : 0;
	for (size_t i = 0; i < n; i++) {
		const char *o = NULL;
		int r =
		    get_str(json_object_array_get_idx(opts, i), "mounts[].options[]", 128, &o, err);
		if (r < 0)
			return r;
		if (!o || strchr(o, ','))
			return bl_set_error(err, BL_EINVAL, "spec: bad tmpfs option");
	}
	return 0;
}

static int one_mount(json_object *m, const char *prefix, json_object *out, bl_oci *ret,
		     bl_error_t *err)
{
	static const char *const known[] = {"destination", "type",	  "source", "options",
					    "uidMappings", "gidMappings", NULL};
	int r = check_type(m, json_type_object, "mounts[]", err);
	if (r == 0 && !m)
		r = bl_set_error(err, BL_EINVAL, "spec: mounts[] is null");
	if (r == 0)
		r = only_known(m, "mounts[]", known, err);
	if (r < 0)
		return r;
	if (!is_empty(JV(m, "uidMappings")) || !is_empty(JV(m, "gidMappings")))
		return unsupported(err, "mounts[].uidMappings (id-mapped mounts)");
	const char *dst = NULL, *type = NULL, *src = NULL;
	r = get_str(JV(m, "destination"), "mounts[].destination", OCI_MAX_PATH, &dst, err);
	if (r == 0)
		r = get_str(JV(m, "type"), "mounts[].type", 64, &type, err);
	if (r == 0)
		r = get_str(JV(m, "source"), "mounts[].source", OCI_MAX_PATH, &src, err);
	if (r == 0)
		r = check_type(JV(m, "options"), json_type_array, "mounts[].options", err);
	if (r < 0)
		return r;
	json_object *opts = JV(m, "options");
	if (opts && json_object_array_length(opts) > OCI_MAX_OPTIONS)
		return bl_set_error(err, BL_EINVAL, "spec: mounts[].options has too many entries");
	if (!clean_abs_path(dst))
		return bl_set_error(
		    err, BL_EINVAL,
		    "spec: mounts[].destination \"%.64s\" is not a clean absolute path",
		    dst ? dst : "");
	if (type && !type[0])
		type = NULL;
	bool ro = false, noexec = false, is_bind = type && !strcmp(type, "bind");
	if (!type || !strcmp(type, "bind") || !strcmp(type, "none")) {
		r = bind_options(opts, &ro, &noexec, &is_bind, err);
		if (r < 0)
			return r;
	}
	if (is_bind) {
		if (!src || !clean_abs_path(src))
			return bl_set_error(err, BL_EINVAL,
					    "spec: bind mount source \"%.64s\" is not a clean "
					    "absolute host path",
					    src ? src : "");
		bl_oci_bind *b = &ret->binds[ret->n_binds];
		b->source = bl_strdup(src);
		b->share_name = bl_asprintf("m%zu", ret->n_binds);
		b->readonly = ro;
		ret->n_binds++;
		json_object *a = json_object_new_object();
		json_object_object_add(a, "destination", json_object_new_string(dst));
		json_object_object_add(a, "type", json_object_new_string("bind"));
		_cleanup_free_ char *rel = bl_asprintf("%s/%s", prefix, b->share_name);
		json_object_object_add(a, "source", json_object_new_string(rel));
		json_object *ao = json_object_new_array();
		json_object_array_add(ao, json_object_new_string(ro ? "ro" : "rw"));
		if (noexec)
			json_object_array_add(ao, json_object_new_string("noexec"));
		json_object_object_add(a, "options", ao);
		json_object_array_add(out, a);
		return 0;
	}
	if (is_guest_mount(type, dst))
		return 0; /* the guest mounts its own proc, sys, dev, cgroup */
	if (type && !strcmp(type, "tmpfs")) {
		r = tmpfs_options(opts, err);
		if (r < 0)
			return r;
		json_object *a = json_object_new_object();
		json_object_object_add(a, "destination", json_object_new_string(dst));
		json_object_object_add(a, "type", json_object_new_string("tmpfs"));
		json_object_object_add(a, "source", json_object_new_string("tmpfs"));
		if (opts)
			json_object_object_add(a, "options", json_object_get(opts));
		json_object_array_add(out, a);
		return 0;
	}
	char field[128];
	snprintf(field, sizeof(field), "mount type \"%.32s\" (at %.64s)", type ? type : "", dst);
	return unsupported(err, field);
}

static int translate_mounts(json_object *mounts, const char *prefix, json_object *spec, bl_oci *ret,
			    bl_error_t *err)
{
	int r = check_type(mounts, json_type_array, "mounts", err);
	if (r < 0)
		return r;
	size_t n = mounts ? json_object_array_length(mounts) : 0;
	if (n > BL_OCI_MAX_MOUNTS)
		return bl_set_error(err, BL_EINVAL, "spec: more than %u mounts", BL_OCI_MAX_MOUNTS);
	ret->binds = bl_malloc0((n + 1) * sizeof(bl_oci_bind));
	json_object *out = json_object_new_array();
	json_object_object_add(spec, "mounts", out);
	for (size_t i = 0; i < n; i++) {
		r = one_mount(json_object_array_get_idx(mounts, i), prefix, out, ret, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ------------------------------------------------------------ linux */

static int translate_namespaces(json_object *nss, json_object *out_linux, bl_error_t *err)
{
	static const char *const own[] = {"pid", "mount", "ipc", "uts", "cgroup", NULL};
	int r = check_type(nss, json_type_array, "linux.namespaces", err);
	if (r < 0)
		return r;
	size_t n = nss ? json_object_array_length(nss) : 0;
	if (n > OCI_MAX_NS)
		return bl_set_error(err, BL_EINVAL, "spec: too many linux.namespaces");
	json_object *out = json_object_new_array();
	json_object_object_add(out_linux, "namespaces", out);
	/* The agent always gives a container its own pid, mount, ipc, uts and
	 * cgroup namespaces; network: its own empty one, or the VM's (which the
	 * containers of a pod share) when the spec names none or a path. */
	for (size_t i = 0; own[i]; i++) {
		json_object *ns = json_object_new_object();
		json_object_object_add(ns, "type", json_object_new_string(own[i]));
		json_object_array_add(out, ns);
	}
	for (size_t i = 0; i < n; i++) {
		json_object *ns = json_object_array_get_idx(nss, i);
		r = check_type(ns, json_type_object, "linux.namespaces[]", err);
		if (r == 0 && !ns)
			r = bl_set_error(err, BL_EINVAL, "spec: linux.namespaces[] is null");
		const char *type = NULL, *path = NULL;
		if (r == 0)
			r = get_str(JV(ns, "type"), "linux.namespaces[].type", 32, &type, err);
		if (r == 0)
			r = get_str(JV(ns, "path"), "linux.namespaces[].path", OCI_MAX_PATH, &path,
				    err);
		if (r < 0)
			return r;
		if (!type)
			return bl_set_error(err, BL_EINVAL, "spec: linux.namespaces[] has no type");
		if (!strcmp(type, "user"))
			return unsupported(err, "linux.namespaces user");
		if (!strcmp(type, "time"))
			return unsupported(err, "linux.namespaces time");
		if (!strcmp(type, "network")) {
			if (!path || !path[0]) {
				json_object *o = json_object_new_object();
				json_object_object_add(o, "type",
						       json_object_new_string("network"));
				json_object_array_add(out, o);
			}
			continue;
		}
		bool known = false;
		for (size_t k = 0; own[k] && !known; k++)
			known = !strcmp(type, own[k]);
		if (!known) {
			char field[96];
			snprintf(field, sizeof(field), "linux.namespaces type \"%.32s\"", type);
			return unsupported(err, field);
		}
		/* A path (a pod's ipc/uts namespace on the host) means nothing in the
		 * VM: the container gets its own, as documented. */
	}
	return 0;
}

static int translate_resources(json_object *res, const bl_oci_policy *pol, json_object *out_linux,
			       bl_oci *ret, bl_error_t *err)
{
	static const char *const known[] = {
	    "memory",	      "cpu",	 "pids", "devices", "blockIO",
	    "hugepageLimits", "network", "rdma", "unified", NULL};
	int r = check_type(res, json_type_object, "linux.resources", err);
	if (r < 0 || !res)
		return r;
	r = only_known(res, "linux.resources", known, err);
	if (r < 0)
		return r;
	static const char *const none[] = {"blockIO", "hugepageLimits", "network",
					   "rdma",    "unified",	NULL};
	for (size_t i = 0; none[i]; i++) {
		if (!is_empty(JV(res, none[i]))) {
			char field[64];
			snprintf(field, sizeof(field), "linux.resources.%s", none[i]);
			return unsupported(err, field);
		}
	}
	/* Device cgroup rules: the guest's /dev holds only the agent's fixed
	 * nodes and containers cannot mknod, so allow/deny lists change nothing. */
	r = check_type(JV(res, "devices"), json_type_array, "linux.resources.devices", err);
	if (r == 0 && JV(res, "devices") &&
	    json_object_array_length(JV(res, "devices")) > OCI_MAX_DEVICES)
		r = bl_set_error(err, BL_EINVAL, "spec: too many linux.resources.devices");
	json_object *mem = JV(res, "memory"), *cpu = JV(res, "cpu"), *pids = JV(res, "pids");
	if (r == 0)
		r = check_type(mem, json_type_object, "linux.resources.memory", err);
	if (r == 0)
		r = check_type(cpu, json_type_object, "linux.resources.cpu", err);
	if (r == 0)
		r = check_type(pids, json_type_object, "linux.resources.pids", err);
	if (r < 0)
		return r;
	json_object *out = json_object_new_object();
	json_object_object_add(out_linux, "resources", out);
	if (mem) {
		static const char *const mk[] = {"limit",
						 "reservation",
						 "swap",
						 "kernel",
						 "kernelTCP",
						 "swappiness",
						 "disableOOMKiller",
						 "useHierarchy",
						 "checkBeforeUpdate",
						 NULL};
		r = only_known(mem, "linux.resources.memory", mk, err);
		if (r < 0)
			return r;
		if (!is_empty(JV(mem, "disableOOMKiller")))
			return unsupported(err, "linux.resources.memory.disableOOMKiller");
		int64_t limit = 0;
		r = get_i64(JV(mem, "limit"), "linux.resources.memory.limit", -1, &limit, err);
		if (r < 0)
			return r;
		if (limit > 0 && pol->memory_max_bytes && (uint64_t)limit > pol->memory_max_bytes)
			return bl_set_error(err, BL_EUNSUPPORTED,
					    "spec: linux.resources.memory.limit %lld MiB is more "
					    "than the VM has for containers (%llu MiB): give the "
					    "sandbox more memory",
					    (long long)(limit >> 20),
					    (unsigned long long)(pol->memory_max_bytes >> 20));
		if (limit > 0) {
			json_object *m = json_object_new_object();
			json_object_object_add(m, "limit", json_object_new_int64(limit));
			json_object_object_add(out, "memory", m);
		}
	}
	if (cpu) {
		static const char *const ck[] = {
		    "shares",	      "quota", "burst", "period", "realtimeRuntime",
		    "realtimePeriod", "cpus",  "mems",	"idle",	  NULL};
		r = only_known(cpu, "linux.resources.cpu", ck, err);
		if (r < 0)
			return r;
		static const char *const cnone[] = {
		    "realtimeRuntime", "realtimePeriod", "cpus", "mems", "idle", "burst", NULL};
		for (size_t i = 0; cnone[i]; i++) {
			json_object *v = JV(cpu, cnone[i]);
			if (!is_empty(v) && !(json_object_is_type(v, json_type_int) &&
					      json_object_get_int64(v) == 0)) {
				char field[64];
				snprintf(field, sizeof(field), "linux.resources.cpu.%s", cnone[i]);
				return unsupported(err, field);
			}
		}
		int64_t quota = 0, period = 0, shares = 0;
		r = get_i64(JV(cpu, "quota"), "linux.resources.cpu.quota", -1, &quota, err);
		if (r == 0)
			r = get_i64(JV(cpu, "period"), "linux.resources.cpu.period", 0, &period,
				    err);
		if (r == 0)
			r = get_i64(JV(cpu, "shares"), "linux.resources.cpu.shares", 0, &shares,
				    err);
		if (r < 0)
			return r;
		if (period > 1000000 || (period && period < 1000) || (quota > 0 && quota < 1000) ||
		    shares > 262144)
			return bl_set_error(err, BL_EINVAL,
					    "spec: linux.resources.cpu out of range");
		ret->cpu_shares = shares;
		json_object *c = json_object_new_object();
		if (quota > 0)
			json_object_object_add(c, "quota", json_object_new_int64(quota));
		if (period > 0)
			json_object_object_add(c, "period", json_object_new_int64(period));
		json_object_object_add(out, "cpu", c);
	}
	if (pids) {
		int64_t limit = 0;
		r = get_i64(JV(pids, "limit"), "linux.resources.pids.limit", -1, &limit, err);
		if (r < 0)
			return r;
		if (limit > 0) {
			json_object *p = json_object_new_object();
			json_object_object_add(p, "limit", json_object_new_int64(limit));
			json_object_object_add(out, "pids", p);
		}
	}
	return 0;
}

static int translate_linux(json_object *lx, const bl_oci_policy *pol, json_object *spec,
			   bl_oci *ret, bl_error_t *err)
{
	static const char *const known[] = {
	    "uidMappings",	 "gidMappings", "sysctl",	 "resources",
	    "cgroupsPath",	 "namespaces",	"devices",	 "seccomp",
	    "rootfsPropagation", "maskedPaths", "readonlyPaths", "mountLabel",
	    "intelRdt",		 "personality", "timeOffsets",	 NULL};
	int r = check_type(lx, json_type_object, "linux", err);
	if (r < 0)
		return r;
	json_object *out = json_object_new_object();
	json_object_object_add(spec, "linux", out);
	if (!lx)
		return translate_namespaces(NULL, out, err);
	r = only_known(lx, "linux", known, err);
	if (r < 0)
		return r;
	static const char *const none[] = {"uidMappings", "gidMappings", "sysctl",	"devices",
					   "intelRdt",	  "personality", "timeOffsets", NULL};
	for (size_t i = 0; none[i]; i++) {
		if (!is_empty(JV(lx, none[i]))) {
			char field[64];
			snprintf(field, sizeof(field), "linux.%s", none[i]);
			return unsupported(err, field);
		}
	}
	/* Seccomp is honoured: the agent compiles the profile (its subset of the
	 * OCI format; what it cannot compile is refused there) and applies
	 * boxlite's default profile when there is none. */
	json_object *sc = JV(lx, "seccomp");
	r = check_type(sc, json_type_object, "linux.seccomp", err);
	if (r < 0)
		return r;
	if (sc && !is_empty(sc))
		json_object_object_add(out, "seccomp", json_object_get(sc));
	if (!pol->ignore_lsm && !is_empty(JV(lx, "mountLabel")))
		return unsupported(err, "linux.mountLabel (set ignore_lsm to accept it)");
	const char *s = NULL;
	/* cgroupsPath, rootfsPropagation: the guest names and isolates the
	 * container itself. maskedPaths/readonlyPaths: the guest masks its own
	 * fixed set (kcore, sysrq-trigger, timer_list; /proc/sys read-only). */
	r = get_str(JV(lx, "cgroupsPath"), "linux.cgroupsPath", OCI_MAX_PATH, &s, err);
	if (r == 0)
		r = get_str(JV(lx, "rootfsPropagation"), "linux.rootfsPropagation", 32, &s, err);
	if (r == 0)
		r = check_type(JV(lx, "maskedPaths"), json_type_array, "linux.maskedPaths", err);
	if (r == 0)
		r = check_type(JV(lx, "readonlyPaths"), json_type_array, "linux.readonlyPaths",
			       err);
	if (r == 0)
		r = translate_namespaces(JV(lx, "namespaces"), out, err);
	if (r == 0)
		r = translate_resources(JV(lx, "resources"), pol, out, ret, err);
	return r;
}

/* ------------------------------------------------------------ whole spec */

static int copy_annotations(json_object *an, bl_oci *ret, bl_error_t *err)
{
	int r = check_type(an, json_type_object, "annotations", err);
	if (r < 0 || !an)
		return r;
	size_t n = (size_t)json_object_object_length(an);
	if (n > BL_OCI_MAX_ANNOTATIONS)
		return bl_set_error(err, BL_EINVAL, "spec: too many annotations");
	ret->annotations = bl_malloc0((2 * n + 1) * sizeof(char *));
	size_t k = 0;
	json_object_object_foreach(an, key, val)
	{
		const char *v = NULL;
		if (strlen(key) > OCI_MAX_KEY)
			return bl_set_error(err, BL_EINVAL, "spec: annotation key too long");
		r = get_str(val, "annotations value", OCI_MAX_VALUE, &v, err);
		if (r < 0)
			return r;
		ret->annotations[k++] = bl_strdup(key);
		ret->annotations[k++] = bl_strdup(v ? v : "");
	}
	return 0;
}

int bl_oci_translate(const char *spec_json, const char *share_prefix, const bl_oci_policy *pol,
		     bl_oci *ret, bl_error_t *err)
{
	static const char *const known[] = {"ociVersion", "process", "root",  "hostname",
					    "domainname", "mounts",  "hooks", "annotations",
					    "linux",	  NULL};
	*ret = (bl_oci){0};
	_cleanup_(json_object_putp) json_object *o = parse(spec_json, BL_OCI_SPEC_MAX, "spec", err);
	if (!o)
		return -(err ? (int)err->code : BL_EINVAL);
	_cleanup_(json_object_putp) json_object *spec = json_object_new_object();
	int r = only_known(o, "spec", known, err);
	const char *s = NULL;
	if (r == 0)
		r = get_str(JV(o, "ociVersion"), "ociVersion", 64, &s, err);
	if (r == 0 && !is_empty(JV(o, "domainname")))
		r = unsupported(err, "domainname");
	if (r == 0 && !pol->ignore_hooks && !is_empty(JV(o, "hooks")))
		r = unsupported(err, "hooks (they would run on the host; set ignore_hooks to "
				     "accept and skip them)");
	if (r == 0)
		r = check_process(JV(o, "process"), pol, ret, err);
	if (r == 0 && ret->has_process) {
		json_object_object_add(spec, "process", json_object_get(JV(o, "process")));
		ret->process_json = bl_strdup(
		    json_object_to_json_string_ext(JV(o, "process"), JSON_C_TO_STRING_PLAIN));
	}
	json_object *root = JV(o, "root");
	if (r == 0)
		r = check_type(root, json_type_object, "root", err);
	if (r == 0 && root) {
		json_object *ro = JV(root, "readonly");
		if (ro && !json_object_is_type(ro, json_type_boolean))
			r = bl_set_error(err, BL_EINVAL, "spec: root.readonly is not a boolean");
		ret->root_readonly = ro && json_object_get_boolean(ro);
	}
	if (r == 0) {
		json_object *nr = json_object_new_object();
		json_object_object_add(nr, "path", json_object_new_string("rootfs"));
		json_object_object_add(nr, "readonly", json_object_new_boolean(ret->root_readonly));
		json_object_object_add(spec, "root", nr);
		r = get_str(JV(o, "hostname"), "hostname", 64, &s, err);
	}
	if (r == 0 && s && s[0])
		json_object_object_add(spec, "hostname", json_object_new_string(s));
	if (r == 0)
		r = translate_mounts(JV(o, "mounts"), share_prefix, spec, ret, err);
	if (r == 0)
		r = translate_linux(JV(o, "linux"), pol, spec, ret, err);
	if (r == 0)
		r = copy_annotations(JV(o, "annotations"), ret, err);
	if (r == 0) {
		json_object_object_add(spec, "ociVersion", json_object_new_string("1.0.2"));
		ret->agent_spec =
		    bl_strdup(json_object_to_json_string_ext(spec, JSON_C_TO_STRING_PLAIN));
		if (strlen(ret->agent_spec) > BL_OCI_SPEC_MAX)
			r = bl_set_error(err, BL_EINVAL, "spec: too large after translation");
	}
	if (r == 0 && !ret->proc.env)
		ret->proc.env = bl_malloc0(sizeof(char *));
	if (r < 0)
		bl_oci_clear(ret);
	return r;
}

void bl_oci_clear(bl_oci *o)
{
	free(o->agent_spec);
	free(o->process_json);
	for (size_t i = 0; i < o->n_binds; i++) {
		free(o->binds[i].source);
		free(o->binds[i].share_name);
	}
	free(o->binds);
	bl_strv_free(o->annotations);
	bl_image_defaults_clear(&o->proc);
	*o = (bl_oci){0};
}

int bl_oci_process_overlay(const char *base_json, const char *over_json, bool user, bool cwd,
			   char **ret, bl_error_t *err)
{
	_cleanup_(json_object_putp) json_object *base =
	    parse(base_json, BL_OCI_SPEC_MAX, "process", err);
	_cleanup_(json_object_putp) json_object *over =
	    parse(over_json, BL_OCI_SPEC_MAX, "exec", err);
	if (!base || !over)
		return -(err ? (int)err->code : BL_EINVAL);
	static const char *const keys[] = {"args", "env", "terminal", "user", "cwd"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if ((i == 3 && !user) || (i == 4 && !cwd))
			continue;
		json_object *v = JV(over, keys[i]);
		if (v)
			json_object_object_add(base, keys[i], json_object_get(v));
	}
	json_object_object_del(base, "consoleSize");
	*ret = bl_strdup(json_object_to_json_string_ext(base, JSON_C_TO_STRING_PLAIN));
	return 0;
}

int bl_oci_resources_parse(const char *json, bl_oci_resources *ret, bl_error_t *err)
{
	*ret = (bl_oci_resources){-1, -1, -1, -1, -1};
	_cleanup_(json_object_putp) json_object *o = parse(json, 64 * 1024, "resources", err);
	if (!o)
		return -(err ? (int)err->code : BL_EINVAL);
	bl_oci_policy pol = {0};
	bl_oci tmp = {0};
	_cleanup_(json_object_putp) json_object *lx = json_object_new_object();
	int r = translate_resources(o, &pol, lx, &tmp, err);
	json_object *res = JV(lx, "resources");
	json_object *mem = res ? JV(res, "memory") : NULL, *cpu = res ? JV(res, "cpu") : NULL;
	json_object *pids = res ? JV(res, "pids") : NULL;
	if (r == 0) {
		json_object *m = JV(o, "memory"), *c = JV(o, "cpu"), *p = JV(o, "pids");
		/* Given but not positive: unlimited (0); absent: keep (-1). */
		if (m && JV(m, "limit"))
			ret->memory_limit = mem ? json_object_get_int64(JV(mem, "limit")) : 0;
		if (c && JV(c, "quota"))
			ret->cpu_quota =
			    cpu && JV(cpu, "quota") ? json_object_get_int64(JV(cpu, "quota")) : 0;
		if (c && JV(c, "period"))
			ret->cpu_period =
			    cpu && JV(cpu, "period") ? json_object_get_int64(JV(cpu, "period")) : 0;
		if (c && JV(c, "shares"))
			ret->cpu_shares = tmp.cpu_shares;
		if (p && JV(p, "limit"))
			ret->pids_limit = pids ? json_object_get_int64(JV(pids, "limit")) : 0;
	}
	bl_oci_clear(&tmp);
	return r;
}
