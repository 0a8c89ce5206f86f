/*
 * Sandbox state on the host: STATE/<id>/ holds meta.json (owner pid and its
 * start time, image, QEMU pid, status), base.json (what exec inherits),
 * console.log, agent.sock, api.sock and the embedded libvirt root. Sandboxes
 * whose owner is gone are "dead" and garbage-collected.
 */
#include "sandbox_internal.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"

#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

BL_DEFINE_CLEANUP(json_object, json_object_put)

#define META_MAX (64u << 10)

const char *bl_state_dir(const char *override)
{
	if (override && *override)
		return override;
	const char *e = getenv("BOXLITE_STATE_DIR");
	return e && *e ? e : BL_DEFAULT_STATE_DIR;
}

char *bl_sandbox_path(const char *state_root, const char *id, const char *file)
{
	return bl_asprintf("%s/%s/%s", bl_state_dir(state_root), id, file);
}

bool bl_sandbox_id_valid(const char *id)
{
	size_t n = id ? strlen(id) : 0;
	/* A leading dot is the state directory's own (".pool"; and ".", ".."). */
	if (n == 0 || n > BL_SANDBOX_ID_MAX || id[0] == '.')
		return false;
	for (const char *c = id; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || *c == '_' || *c == '.' || *c == '-'))
			return false;
	return true;
}

void bl_sandbox_random_id(char *buf, size_t len)
{
	uint8_t rnd[6] = {0};
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		uint64_t t = bl_now_monotonic_ns() ^ (uint64_t)getpid();
		memcpy(rnd, &t, sizeof(rnd));
	}
	snprintf(buf, len, "%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4],
		 rnd[5]);
}

unsigned long long bl_proc_starttime(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	_cleanup_free_ char *buf = NULL;
	if (pid <= 0 || bl_read_file(path, 4096, &buf, NULL, NULL) < 0)
		return 0;
	/* Field 22; the command (field 2) may hold spaces, so count after ')'. */
	char *p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X')
		return 0; /* a zombie is gone for our purposes */
	for (int field = 2; p && *p && field < 22; field++)
		p = strchr(p + 1, ' ');
	return p ? strtoull(p + 1, NULL, 10) : 0;
}

static int write_json(const char *path, json_object *o, bl_error_t *err)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	_cleanup_free_ char *tmp = bl_asprintf("%s.tmp", path);
	int r = bl_write_file(tmp, s, strlen(s), 0600, err);
	if (r < 0)
		return r;
	if (rename(tmp, path) < 0) {
		(void)unlink(tmp);
		return bl_set_error_errno(err, errno, "rename %s", path);
	}
	return 0;
}

static json_object *read_json(const char *path, bl_error_t *err)
{
	_cleanup_free_ char *buf = NULL;
	if (bl_read_file(path, META_MAX, &buf, NULL, err) < 0)
		return NULL;
	json_object *o = json_tokener_parse(buf);
	if (!o || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		bl_set_error(err, BL_EPROTO, "%s is not a JSON object", path);
		return NULL;
	}
	return o;
}

int bl_meta_write(bl_sandbox *sb, const char *status, pid_t qemu_pid, bl_error_t *err)
{
	_cleanup_(json_object_putp) json_object *o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(sb->id));
	json_object_object_add(o, "image", json_object_new_string(sb->image ? sb->image : ""));
	json_object_object_add(o, "status", json_object_new_string(status));
	json_object_object_add(o, "owner", json_object_new_string(sb->owner));
	json_object_object_add(o, "pid", json_object_new_int(getpid()));
	json_object_object_add(o, "pid_start", json_object_new_uint64(bl_proc_starttime(getpid())));
	json_object_object_add(o, "qemu_pid", json_object_new_int(qemu_pid));
	json_object_object_add(o, "created", json_object_new_int64(sb->created));
	json_object_object_add(o, "memory_mib", json_object_new_int((int)sb->memory_mib));
	json_object_object_add(o, "timeout_sec", json_object_new_int((int)sb->timeout_sec));
	_cleanup_free_ char *path = bl_asprintf("%s/meta.json", sb->dir);
	return write_json(path, o, err);
}

static json_object *strv_json(char *const *v)
{
	json_object *a = json_object_new_array();
	for (size_t i = 0; v && v[i]; i++)
		json_object_array_add(a, json_object_new_string(v[i]));
	return a;
}

/* base.json: the image's defaults with the sandbox's options merged in, so
 * `boxlite exec` from another process inherits env, cwd and user. */
int bl_base_write(bl_sandbox *sb, bl_error_t *err)
{
	const bl_spec_process *layers[] = {&sb->layer};
	bl_spec_process only_env = sb->layer;
	const char *const sh[] = {"sh", NULL};
	only_env.args = sh;
	layers[0] = &only_env;
	_cleanup_free_ char *pjson = NULL;
	int r = bl_spec_process_json(layers, 1, &sb->img, &pjson, err);
	if (r < 0)
		return r;
	_cleanup_(json_object_putp) json_object *p = json_tokener_parse(pjson);
	_cleanup_(json_object_putp) json_object *o = json_object_new_object();
	json_object *v = NULL;
	if (json_object_object_get_ex(p, "env", &v))
		json_object_object_add(o, "Env", json_object_get(v));
	json_object_object_add(o, "WorkingDir",
			       json_object_new_string(sb->cwd	    ? sb->cwd
						      : sb->img.cwd ? sb->img.cwd
								    : "/"));
	const char *user = sb->user ? sb->user : sb->img.user;
	if (user)
		json_object_object_add(o, "User", json_object_new_string(user));
	json_object_object_add(o, "Entrypoint", strv_json(NULL));
	_cleanup_free_ char *path = bl_asprintf("%s/base.json", sb->dir);
	return write_json(path, o, err);
}

int bl_base_read(bl_sandbox *sb, bl_error_t *err)
{
	_cleanup_free_ char *path = bl_asprintf("%s/base.json", sb->dir);
	_cleanup_free_ char *buf = NULL;
	int r = bl_read_file(path, META_MAX, &buf, NULL, err);
	if (r < 0)
		return bl_error_prefix(err, "sandbox %s is not ready", sb->id);
	return bl_image_defaults_parse(buf, &sb->img, err);
}

/* ------------------------------------------------------------ listing */

static void info_from_meta(json_object *o, bl_sandbox_info *info)
{
	json_object *v;
	if (json_object_object_get_ex(o, "image", &v) && json_object_is_type(v, json_type_string))
		snprintf(info->image, sizeof(info->image), "%s", json_object_get_string(v));
	if (json_object_object_get_ex(o, "status", &v) && json_object_is_type(v, json_type_string))
		snprintf(info->status, sizeof(info->status), "%s", json_object_get_string(v));
	if (json_object_object_get_ex(o, "owner", &v) && json_object_is_type(v, json_type_string))
		snprintf(info->owner, sizeof(info->owner), "%s", json_object_get_string(v));
	if (json_object_object_get_ex(o, "pid", &v))
		info->pid = json_object_get_int(v);
	if (json_object_object_get_ex(o, "qemu_pid", &v))
		info->qemu_pid = json_object_get_int(v);
	if (json_object_object_get_ex(o, "created", &v))
		info->created = json_object_get_int64(v);
	if (json_object_object_get_ex(o, "memory_mib", &v))
		info->memory_mib = (unsigned)json_object_get_int(v);
	unsigned long long start = 0;
	if (json_object_object_get_ex(o, "pid_start", &v))
		start = json_object_get_uint64(v);
	bool alive = info->pid > 0 && bl_proc_starttime(info->pid) == start && start != 0;
	if (!strcmp(info->status, "running") && !alive)
		snprintf(info->status, sizeof(info->status), "dead");
}

int bl_sandbox_info_get(const char *state_dir, const char *id, bl_sandbox_info *ret,
			bl_error_t *err)
{
	if (!bl_sandbox_id_valid(id))
		return bl_set_error(err, BL_EINVAL, "'%.40s' is not a sandbox id", id);
	*ret = (bl_sandbox_info){0};
	snprintf(ret->id, sizeof(ret->id), "%s", id);
	_cleanup_free_ char *dir = bl_asprintf("%s/%s", bl_state_dir(state_dir), id);
	if (access(dir, F_OK) < 0)
		return bl_set_error(err, BL_ENOTFOUND, "no sandbox %s", id);
	_cleanup_free_ char *path = bl_asprintf("%s/meta.json", dir);
	_cleanup_(json_object_putp) json_object *o = read_json(path, NULL);
	if (!o) {
		/* Being created right now, or left half-made by a crash. */
		snprintf(ret->status, sizeof(ret->status), "dead");
		return 0;
	}
	info_from_meta(o, ret);
	return 0;
}

int bl_sandbox_list(const char *state_dir, bl_sandbox_info **ret, size_t *ret_n, bl_error_t *err)
{
	*ret = NULL;
	*ret_n = 0;
	_cleanup_closedir_ DIR *d = opendir(bl_state_dir(state_dir));
	if (!d)
		return errno == ENOENT
			   ? 0
			   : bl_set_error_errno(err, errno, "%s", bl_state_dir(state_dir));
	size_t n = 0, cap = 0;
	bl_sandbox_info *v = NULL;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_type != DT_DIR || !bl_sandbox_id_valid(de->d_name) ||
		    de->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			v = realloc(v, cap * sizeof(*v));
			if (!v)
				abort();
		}
		if (bl_sandbox_info_get(state_dir, de->d_name, &v[n], NULL) == 0)
			n++;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

/* Kills a leftover QEMU only when its command line names this sandbox. */
static void kill_stray_qemu(pid_t pid, const char *id)
{
	if (pid <= 0)
		return;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	if (bl_read_file(path, 1 << 20, &buf, &len, NULL) < 0)
		return;
	for (size_t i = 0; i < len; i++)
		if (!buf[i])
			buf[i] = ' ';
	_cleanup_free_ char *name = bl_asprintf("boxlite-%s", id);
	if (strstr(buf, "qemu-system") && strstr(buf, name)) {
		(void)kill(pid, SIGKILL);
		for (int i = 0; i < 100 && kill(pid, 0) == 0; i++)
			usleep(10000);
	}
}

static int stop_live(const char *state_dir, const char *id, pid_t owner, bl_error_t *err)
{
	bl_sandbox *sb = NULL;
	int r = bl_sandbox_attach(id, state_dir, &sb, err);
	if (r == 0) {
		r = bl_sandbox_stop(sb, err);
		bl_sandbox_destroy(sb);
	}
	if (r < 0 && owner > 0) {
		/* An in-process owner (boxlite run) has no api.sock: ask it to quit. */
		(void)kill(owner, SIGTERM);
		r = 0;
	}
	for (int i = 0; i < 500 && owner > 0 && kill(owner, 0) == 0; i++)
		usleep(10000);
	return r;
}

int bl_sandbox_remove(const char *state_dir, const char *id, bool force, bl_error_t *err)
{
	bl_sandbox_info info;
	int r = bl_sandbox_info_get(state_dir, id, &info, err);
	if (r < 0)
		return r;
	if (!strcmp(info.status, "running")) {
		if (!force)
			return bl_set_error(err, BL_ESTATE,
					    "sandbox %s is running (stop it, or use rm -f)", id);
		r = stop_live(state_dir, id, info.pid, err);
		if (r < 0)
			return r;
	}
	kill_stray_qemu(info.qemu_pid, id);
	_cleanup_free_ char *dir = bl_asprintf("%s/%s", bl_state_dir(state_dir), id);
	/* A dead owner left its read-only image view mounted. */
	bl_share_unmount(dir);
	return bl_rm_rf(dir, err);
}

int bl_sandbox_gc(const char *state_dir, bl_error_t *err)
{
	_cleanup_free_ bl_sandbox_info *v = NULL;
	size_t n = 0;
	int r = bl_sandbox_list(state_dir, &v, &n, err);
	if (r < 0)
		return r;
	int removed = 0;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(v[i].status, "dead"))
			continue;
		/* A sandbox being created has no meta.json for a moment: spare young ones. */
		if (v[i].created == 0) {
			_cleanup_free_ char *dir =
			    bl_asprintf("%s/%s", bl_state_dir(state_dir), v[i].id);
			struct stat st;
			if (stat(dir, &st) < 0 || time(NULL) - st.st_mtime < 60)
				continue;
		}
		if (bl_sandbox_remove(state_dir, v[i].id, false, NULL) == 0)
			removed++;
	}
	return removed;
}
