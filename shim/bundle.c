/*
 * The OCI bundle: what the shim reads from config.json (untrusted input,
 * bounded and validated), and the rootfs mounts of CreateTaskRequest.
 */
#include "shim.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_digest.h"
#include "bl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

BL_DEFINE_CLEANUP(json_object, json_object_put)

#define STRV_MAX 4096
#define STR_MAX	 (256u << 10)

static char *strdup_max(const char *s, size_t max)
{
	size_t n = strnlen(s, max);
	char *c = bl_malloc0(n + 1);
	memcpy(c, s, n);
	return c;
}

static const char *jstr(json_object *o, const char *key)
{
	json_object *v;
	if (!o || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static json_object *jobj(json_object *o, const char *key)
{
	json_object *v;
	if (!o || !json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

static int strv_from_json(json_object *a, const char *what, char ***ret, bl_error_t *err)
{
	*ret = NULL;
	if (!a)
		return 0;
	if (!json_object_is_type(a, json_type_array))
		return bl_set_error(err, BL_EPROTO, "config.json: %s is not an array", what);
	size_t n = json_object_array_length(a);
	if (n > STRV_MAX)
		return bl_set_error(err, BL_EPROTO, "config.json: %s has %zu entries", what, n);
	char **v = bl_malloc0((n + 1) * sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(a, i);
		if (!json_object_is_type(e, json_type_string) ||
		    strlen(json_object_get_string(e)) > STR_MAX) {
			bl_strv_free(v);
			return bl_set_error(err, BL_EPROTO, "config.json: %s[%zu] is not a string",
					    what, i);
		}
		v[i] = bl_strdup(json_object_get_string(e));
	}
	*ret = v;
	return 0;
}

static int parse_process(json_object *proc, shim_spec *s, bl_error_t *err)
{
	if (!proc)
		return 0;
	if (strv_from_json(jobj(proc, "args"), "process.args", &s->args, err) < 0 ||
	    strv_from_json(jobj(proc, "env"), "process.env", &s->env, err) < 0)
		return -BL_EPROTO;
	const char *cwd = jstr(proc, "cwd");
	if (cwd)
		s->cwd = bl_strdup(cwd);
	json_object *t = jobj(proc, "terminal");
	s->terminal = t && json_object_get_boolean(t);
	json_object *user = jobj(proc, "user");
	if (user) {
		json_object *uid = jobj(user, "uid"), *gid = jobj(user, "gid");
		int64_t u = uid ? json_object_get_int64(uid) : 0;
		int64_t g = gid ? json_object_get_int64(gid) : 0;
		if (u < 0 || u > UINT32_MAX || g < 0 || g > UINT32_MAX)
			return bl_set_error(err, BL_EPROTO, "config.json: bad process.user");
		s->user = bl_asprintf("%lld:%lld", (long long)u, (long long)g);
	}
	return 0;
}

/* "a,b,c" (bounded; empty items dropped) as a strv, or NULL. */
static char **split_list(const char *v)
{
	if (!v || !*v || strlen(v) > 4096)
		return NULL;
	_cleanup_free_ char *copy = bl_strdup(v);
	char **out = bl_malloc0(65 * sizeof(char *));
	size_t n = 0;
	for (char *save = NULL, *tok = strtok_r(copy, ", ", &save); tok && n < 64;
	     tok = strtok_r(NULL, ", ", &save))
		out[n++] = bl_strdup(tok);
	return out;
}

static void parse_network(json_object *root, json_object *ann, shim_spec *s)
{
	json_object *nss = jobj(jobj(root, "linux"), "namespaces");
	size_t n =
	    nss && json_object_is_type(nss, json_type_array) ? json_object_array_length(nss) : 0;
	for (size_t i = 0; i < n && i < 64; i++) {
		json_object *ns = json_object_array_get_idx(nss, i);
		const char *type = jstr(ns, "type"), *path = jstr(ns, "path");
		if (type && !strcmp(type, "network") && path && *path)
			s->network = true;
	}
	if (!s->network)
		return;
	s->net_allow = split_list(jstr(ann, SHIM_NET_ALLOW));
	s->net_deny = split_list(jstr(ann, SHIM_NET_DENY));
	s->net_publish = split_list(jstr(ann, SHIM_NET_PUBLISH));
}

static int parse_spec(json_object *root, shim_spec *s, bl_error_t *err)
{
	if (!json_object_is_type(root, json_type_object))
		return bl_set_error(err, BL_EPROTO, "config.json is not an object");
	if (parse_process(jobj(root, "process"), s, err) < 0)
		return -BL_EPROTO;
	const char *host = jstr(root, "hostname");
	if (host && *host)
		s->hostname = strdup_max(host, 64);
	json_object *r = jobj(root, "root");
	const char *rp = jstr(r, "path");
	if (rp)
		s->root_path = bl_strdup(rp);
	json_object *ro = jobj(r, "readonly");
	s->root_readonly = ro && json_object_get_boolean(ro);
	json_object *res = jobj(jobj(root, "linux"), "resources");
	json_object *lim = jobj(jobj(res, "memory"), "limit");
	if (lim) {
		int64_t l = json_object_get_int64(lim);
		s->memory_limit = l > 0 ? (uint64_t)l : 0;
	}
	json_object *cpu = jobj(res, "cpu");
	json_object *quota = jobj(cpu, "quota"), *period = jobj(cpu, "period");
	if (quota && period) {
		int64_t q = json_object_get_int64(quota), p = json_object_get_int64(period);
		if (q > 0 && p > 0) {
			int64_t n = (q + p - 1) / p;
			s->vcpus = n > 8 ? 8 : (unsigned)n;
		}
	}
	json_object *pids = jobj(jobj(res, "pids"), "limit");
	if (pids)
		s->pids_limit = json_object_get_int64(pids);
	json_object *ann = jobj(root, "annotations");
	const char *ct = jstr(ann, "io.kubernetes.cri.container-type");
	const char *sid = jstr(ann, "io.kubernetes.cri.sandbox-id");
	if (ct)
		s->container_type = strdup_max(ct, 64);
	if (sid)
		s->sandbox_id = strdup_max(sid, SHIM_ID_MAX);
	parse_network(root, ann, s);
	return 0;
}

int shim_spec_load(const char *bundle, shim_spec *ret, bl_error_t *err)
{
	*ret = (shim_spec){0};
	_cleanup_free_ char *path = bl_asprintf("%s/config.json", bundle);
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r = bl_read_file(path, SHIM_CONFIG_MAX, &text, &len, err);
	if (r < 0)
		return bl_error_prefix(err, "bundle config");
	_cleanup_(json_object_putp) json_object *root = json_tokener_parse(text);
	if (!root)
		return bl_set_error(err, BL_EPROTO, "%s: not valid JSON", path);
	if (parse_spec(root, ret, err) < 0) {
		shim_spec_free(ret);
		return -BL_EPROTO;
	}
	ret->json = steal_pointer(&text);
	return 0;
}

int shim_spec_parse_process(const char *json, size_t len, shim_spec *ret, bl_error_t *err)
{
	*ret = (shim_spec){0};
	if (len > SHIM_CONFIG_MAX)
		return bl_set_error(err, BL_EPROTO, "process spec too large");
	_cleanup_free_ char *text = bl_malloc0(len + 1);
	memcpy(text, json, len);
	_cleanup_(json_object_putp) json_object *root = json_tokener_parse(text);
	if (!root || !json_object_is_type(root, json_type_object))
		return bl_set_error(err, BL_EPROTO, "process spec: not a JSON object");
	if (parse_process(root, ret, err) < 0) {
		shim_spec_free(ret);
		return -BL_EPROTO;
	}
	ret->json = steal_pointer(&text);
	return 0;
}

void shim_spec_free(shim_spec *s)
{
	bl_strv_free(s->args);
	bl_strv_free(s->env);
	free(s->cwd);
	free(s->user);
	free(s->hostname);
	free(s->root_path);
	free(s->container_type);
	free(s->sandbox_id);
	free(s->json);
	bl_strv_free(s->net_allow);
	bl_strv_free(s->net_deny);
	bl_strv_free(s->net_publish);
	*s = (shim_spec){0};
}

char *shim_group_id(const shim_spec *s, const char *id)
{
	if (s->container_type && !strcmp(s->container_type, "container") && s->sandbox_id &&
	    *s->sandbox_id)
		return bl_strdup(s->sandbox_id);
	return bl_strdup(id);
}

unsigned shim_spec_memory_mib(const shim_spec *s)
{
	if (!s->memory_limit)
		return SHIM_DEFAULT_MEMORY_MIB;
	uint64_t mib = (s->memory_limit + (1u << 20) - 1) >> 20;
	mib += SHIM_GUEST_OVERHEAD_MIB;
	if (mib < 64)
		mib = 64;
	if (mib > 65536)
		mib = 65536;
	return (unsigned)mib;
}

void shim_sandbox_id(const char *ns, const char *group, char *buf, size_t len)
{
	_cleanup_free_ char *key = bl_asprintf("%s/%s", ns, group);
	char hex[BL_SHA256_HEX_LEN + 1];
	bl_sha256_hex(key, strlen(key), hex);
	snprintf(buf, len, "ctrd-%.20s", hex);
}

uint64_t shim_now_ns(void)
{
	return bl_now_realtime_ns();
}

/* ------------------------------------------------------------ mounts */

static const struct {
	const char *name;
	unsigned long set, clear;
} mount_flags[] = {
    {"ro", MS_RDONLY, 0},	  {"rw", 0, MS_RDONLY},		  {"nosuid", MS_NOSUID, 0},
    {"suid", 0, MS_NOSUID},	  {"nodev", MS_NODEV, 0},	  {"dev", 0, MS_NODEV},
    {"noexec", MS_NOEXEC, 0},	  {"exec", 0, MS_NOEXEC},	  {"sync", MS_SYNCHRONOUS, 0},
    {"async", 0, MS_SYNCHRONOUS}, {"noatime", MS_NOATIME, 0},	  {"relatime", MS_RELATIME, 0},
    {"bind", MS_BIND, 0},	  {"rbind", MS_BIND | MS_REC, 0}, {"nodiratime", MS_NODIRATIME, 0},
    {"defaults", 0, 0},
};

static int mount_one(const shim_mount *m, const char *target, bl_error_t *err)
{
	unsigned long flags = 0;
	size_t cap = 1;
	for (char **o = m->options; o && *o; o++)
		cap += strlen(*o) + 1;
	_cleanup_free_ char *data = bl_malloc0(cap);
	for (char **o = m->options; o && *o; o++) {
		bool known = false;
		for (size_t i = 0; i < BL_ARRAY_SIZE(mount_flags); i++) {
			if (strcmp(*o, mount_flags[i].name))
				continue;
			flags = (flags | mount_flags[i].set) & ~mount_flags[i].clear;
			known = true;
		}
		if (known)
			continue;
		if (*data)
			strcat(data, ",");
		strcat(data, *o);
	}
	const char *type = m->type && *m->type ? m->type : NULL;
	if (type && !strcmp(type, "bind"))
		flags |= MS_BIND;
	if (flags & MS_BIND) {
		if (mount(m->source, target, NULL, flags & (MS_BIND | MS_REC), NULL) < 0)
			return bl_set_error_errno(err, errno, "bind %s on %s", m->source, target);
		if ((flags & MS_RDONLY) &&
		    mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | (flags & ~MS_REC), NULL) < 0)
			return bl_set_error_errno(err, errno, "remount %s read-only", target);
		return 0;
	}
	if (!type)
		return bl_set_error(err, BL_EINVAL, "rootfs mount of %s has no type", m->source);
	if (mount(m->source, target, type, flags, *data ? data : NULL) < 0)
		return bl_set_error_errno(err, errno, "mount %s (%s) on %s", m->source, type,
					  target);
	return 0;
}

int shim_mount_rootfs(const shim_mount *m, size_t n, const char *target, bl_error_t *err)
{
	for (size_t i = 0; i < n; i++) {
		if (mount_one(&m[i], target, err) < 0) {
			(void)shim_unmount_all(target, NULL);
			return bl_error_prefix(err, "rootfs");
		}
	}
	return 0;
}

int shim_unmount_all(const char *target, bl_error_t *err)
{
	for (int i = 0; i < 64; i++) {
		if (umount2(target, UMOUNT_NOFOLLOW) == 0)
			continue;
		if (errno == EINVAL || errno == ENOENT)
			return 0;
		if (errno == EBUSY && umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
			continue;
		return bl_set_error_errno(err, errno, "unmount %s", target);
	}
	return bl_set_error(err, BL_ESYSTEM, "unmount %s: still mounted", target);
}

/* ------------------------------------------------------------ exec lookup */

static bool exec_in_root(int rootfd, const char *path)
{
	struct open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT};
	_cleanup_close_ int fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
	struct stat st;
	return fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111);
}

/* Like runc's create: the command must resolve (PATH from the spec's env)
 * to an executable file inside the rootfs, else the create fails. */
int shim_rootfs_check_exec(const char *rootfs, const shim_spec *s, bl_error_t *err)
{
	if (!s->args || !s->args[0] || !s->args[0][0])
		return bl_set_error(err, BL_EINVAL, "config.json has no process.args");
	_cleanup_close_ int rootfd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return bl_set_error_errno(err, errno, "rootfs %s", rootfs);
	const char *arg0 = s->args[0];
	const char *cwd = s->cwd && *s->cwd ? s->cwd : "/";
	if (strchr(arg0, '/')) {
		_cleanup_free_ char *p =
		    arg0[0] == '/' ? bl_strdup(arg0) : bl_asprintf("%s/%s", cwd, arg0);
		if (!exec_in_root(rootfd, p))
			return bl_set_error(err, BL_ENOTFOUND,
					    "exec: \"%s\": no such executable file", arg0);
		return 0;
	}
	const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	for (char **e = s->env; e && *e; e++)
		if (!strncmp(*e, "PATH=", 5))
			path = *e + 5;
	_cleanup_free_ char *copy = bl_strdup(path);
	char *save = NULL;
	for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		_cleanup_free_ char *p = dir[0] == '/' ? bl_asprintf("%s/%s", dir, arg0)
						       : bl_asprintf("%s/%s/%s", cwd, dir, arg0);
		if (exec_in_root(rootfd, p))
			return 0;
	}
	return bl_set_error(err, BL_ENOTFOUND, "exec: \"%s\": executable file not found in $PATH",
			    arg0);
}
