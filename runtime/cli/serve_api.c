/*
 * `boxlite serve`'s API handlers: sandboxes (owned by this process and by one
 * tenant each: another tenant's are 404), execs, code runs, files, images,
 * metrics; the ownership records that let a restarted server clean up after
 * a killed one.
 */
#include "serve.h"
#include "bl_log.h"
#include "bl_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ ownership */

static char *owner_path(const char *id)
{
	return bl_asprintf("%s/owners/%s", srv->cfg.serve_dir, id);
}

static long long proc_start_time(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	/* field 22 (starttime); p points at the end of field 2 */
	int field = 2;
	for (; *p && field < 22; p++)
		if (*p == ' ')
			field++;
	return strtoll(p, NULL, 10);
}

static void owner_write(const srv_box *b)
{
	json_object *j = json_object_new_object();
	json_object_object_add(j, "id", json_object_new_string(b->id));
	json_object_object_add(j, "tenant", json_object_new_string(b->tenant->name));
	json_object_object_add(j, "pid", json_object_new_int(getpid()));
	json_object_object_add(j, "pid_start", json_object_new_int64(proc_start_time(getpid())));
	json_object_object_add(j, "state_dir",
			       json_object_new_string(bl_state_dir(srv->cfg.state_dir)));
	const char *s = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN);
	_cleanup_free_ char *p = owner_path(b->id);
	bl_error_t err = BL_ERROR_INIT;
	if (bl_write_file(p, s, strlen(s), 0600, &err) < 0)
		bl_warn("ownership record: %s", err.msg);
	json_object_put(j);
}

static void owner_remove(const char *id)
{
	_cleanup_free_ char *p = owner_path(id);
	(void)unlink(p);
}

/* A record names a server process; it is an orphan when that process (the
 * same one: pid and start time) is gone. */
void srv_clean_orphans(void)
{
	_cleanup_free_ char *dir = bl_asprintf("%s/owners", srv->cfg.serve_dir);
	_cleanup_closedir_ DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		_cleanup_free_ char *p = bl_asprintf("%s/%s", dir, de->d_name);
		_cleanup_free_ char *buf = NULL;
		size_t len;
		bl_error_t err = BL_ERROR_INIT;
		if (bl_read_file(p, 64 << 10, &buf, &len, &err) < 0)
			continue;
		_cleanup_(json_object_putp) json_object *j = json_tokener_parse(buf);
		json_object *v;
		pid_t pid = 0;
		long long start = -2;
		const char *sd = NULL;
		if (j && json_object_object_get_ex(j, "pid", &v))
			pid = json_object_get_int(v);
		if (j && json_object_object_get_ex(j, "pid_start", &v))
			start = json_object_get_int64(v);
		if (j && json_object_object_get_ex(j, "state_dir", &v))
			sd = json_object_get_string(v);
		if (pid > 0 && pid != getpid() && proc_start_time(pid) == start)
			continue; /* its server still runs */
		bl_sandbox_info info;
		if (bl_sandbox_info_get(sd, de->d_name, &info, &err) == 0) {
			if (bl_sandbox_remove(sd, de->d_name, true, &err) < 0)
				bl_warn("orphan %s: %s", de->d_name, err.msg);
			else
				bl_warn("removed sandbox %s left by a server that died (pid %d)",
					de->d_name, (int)pid);
		}
		(void)unlink(p);
	}
}

/* ------------------------------------------------------------ boxes */

static void box_destroy(srv_box *b)
{
	if (b->code)
		srv_code_free(b->code);
	if (b->init)
		bl_process_free(b->init);
	if (b->sb)
		bl_sandbox_destroy(b->sb);
	owner_remove(b->id);
	free(b);
}

static void unlink_box_locked(srv_box *b)
{
	for (srv_box **pp = &srv->boxes; *pp; pp = &(*pp)->next)
		if (*pp == b) {
			*pp = b->next;
			return;
		}
}

void srv_box_put(srv_box *b)
{
	pthread_mutex_lock(&srv->lock);
	bool last = --b->refs == 0 && b->deleting;
	if (last)
		unlink_box_locked(b);
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
	if (last)
		box_destroy(b);
}

static srv_box *box_get(const srv_tenant *t, const char *id)
{
	srv_box *found = NULL;
	pthread_mutex_lock(&srv->lock);
	for (srv_box *b = srv->boxes; b; b = b->next)
		if (b->tenant == t && b->ready && !b->deleting && !strcmp(b->id, id)) {
			b->refs++;
			found = b;
			break;
		}
	pthread_mutex_unlock(&srv->lock);
	return found;
}

static json_object *box_json(srv_box *b)
{
	json_object *j = json_object_new_object();
	json_object_object_add(j, "id", json_object_new_string(b->id));
	json_object_object_add(j, "name", json_object_new_string(b->name));
	json_object_object_add(j, "image", json_object_new_string(b->image));
	json_object_object_add(j, "memory_mb", json_object_new_int((int)b->memory_mib));
	json_object_object_add(j, "cpus", json_object_new_int((int)b->vcpus));
	json_object_object_add(j, "disk_mb", json_object_new_int((int)b->disk_mib));
	json_object_object_add(j, "created", json_object_new_int64(b->created));
	json_object_object_add(
	    j, "status", json_object_new_string(bl_sandbox_alive(b->sb) ? "running" : "dead"));
	return j;
}

/* Deletes b (a reference the caller holds): the VM is cancelled so calls in
 * flight return, and destroyed when the last reference goes (waited for a
 * while, so that a 204 normally means "gone"). */
static void box_delete(srv_box *b)
{
	pthread_mutex_lock(&srv->lock);
	b->deleting = true;
	bool busy = b->refs > 1;
	pthread_mutex_unlock(&srv->lock);
	if (busy && b->sb)
		bl_sandbox_cancel(b->sb);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&srv->lock);
	while (b->refs > 1)
		if (pthread_cond_timedwait(&srv->cond, &srv->lock, &until) != 0)
			break;
	pthread_mutex_unlock(&srv->lock);
	srv_box_put(b);
}

/* ------------------------------------------------------------ options */

static int uint_opt(json_object *j, const char *key, unsigned lo, unsigned hi, unsigned *ret,
		    bl_error_t *err)
{
	json_object *v;
	if (!json_object_object_get_ex(j, key, &v) || json_object_is_type(v, json_type_null))
		return 0;
	double d = json_object_get_double(v);
	if ((!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double)) ||
	    d != (double)(long long)d || d < lo || d > hi)
		return bl_set_error(err, BL_EINVAL, "%s must be an integer from %u to %u", key, lo,
				    hi);
	*ret = (unsigned)d;
	return 1;
}

/* A tenant names images of the store or of a registry, never host paths. */
static bool image_ref_ok(const char *s)
{
	if (!*s || strlen(s) > 255 || s[0] == '/' || s[0] == '.' || s[0] == '~' ||
	    strstr(s, "..") || strstr(s, "//"))
		return false;
	for (; *s; s++)
		if (*s <= 0x20 || *s >= 0x7f)
			return false;
	return true;
}

typedef struct create_req {
	char image[256];
	char name[SRV_NAME_MAX + 1];
	unsigned memory, cpus, disk, pids, timeout;
	char **env;
	char *cwd, *user;
} create_req;

static int parse_create(json_object *j, create_req *c, bl_error_t *err)
{
	json_object *v;
	snprintf(c->image, sizeof(c->image), "default");
	if (json_object_object_get_ex(j, "image", &v) && !json_object_is_type(v, json_type_null)) {
		if (!json_object_is_type(v, json_type_string) ||
		    !image_ref_ok(json_object_get_string(v)))
			return bl_set_error(err, BL_EINVAL,
					    "image must be an image name or registry reference");
		snprintf(c->image, sizeof(c->image), "%s", json_object_get_string(v));
	}
	if (json_object_object_get_ex(j, "name", &v) && !json_object_is_type(v, json_type_null)) {
		const char *s = json_object_get_string(v);
		if (!json_object_is_type(v, json_type_string) || !*s || strlen(s) > SRV_NAME_MAX)
			return bl_set_error(err, BL_EINVAL, "name must be 1-%d characters",
					    SRV_NAME_MAX);
		snprintf(c->name, sizeof(c->name), "%s", s);
	}
	if (json_object_object_get_ex(j, "network", &v) && json_object_get_boolean(v))
		return bl_set_error(
		    err, BL_EUNSUPPORTED,
		    "network is not available through boxlite serve (sandboxes have none)");
	int r;
	c->memory = srv->cfg.default_memory;
	c->cpus = 1;
	if ((r = uint_opt(j, "memory_mb", 64, 65536, &c->memory, err)) < 0 ||
	    (r = uint_opt(j, "memory_mib", 64, 65536, &c->memory, err)) < 0 ||
	    (r = uint_opt(j, "cpus", 1, 64, &c->cpus, err)) < 0 ||
	    (r = uint_opt(j, "disk_mb", 1, 1 << 20, &c->disk, err)) < 0 ||
	    (r = uint_opt(j, "pids_max", 1, 1 << 22, &c->pids, err)) < 0 ||
	    (r = uint_opt(j, "timeout_seconds", 1, 1 << 30, &c->timeout, err)) < 0)
		return r;
	if (srv->cfg.sandbox_max_life &&
	    (c->timeout == 0 || c->timeout > srv->cfg.sandbox_max_life))
		c->timeout = srv->cfg.sandbox_max_life;
	/* env, cwd and user are checked like an exec's */
	srv_exec_req e = {0};
	json_object *probe = json_object_new_object();
	json_object_object_add(probe, "cmd", json_object_new_string("true"));
	static const char *const keys[] = {"env", "cwd", "user"};
	for (size_t i = 0; i < BL_ARRAY_SIZE(keys); i++)
		if (json_object_object_get_ex(j, keys[i], &v))
			json_object_object_add(probe, keys[i], json_object_get(v));
	r = srv_exec_req_parse(probe, &e, err);
	json_object_put(probe);
	if (r < 0) {
		srv_exec_req_clear(&e);
		return r;
	}
	c->env = steal_pointer(&e.env);
	c->cwd = steal_pointer(&e.cwd);
	c->user = steal_pointer(&e.user);
	srv_exec_req_clear(&e);
	return 0;
}

/* Reserves a slot for t within its quotas and the server's limits. */
static srv_box *reserve(const srv_tenant *t, const create_req *c, srv_reply *r)
{
	pthread_mutex_lock(&srv->lock);
	unsigned n = 0, mem = 0, cpus = 0, all = 0;
	for (srv_box *b = srv->boxes; b; b = b->next) {
		/* A sandbox past its deadline holds no VM any more (it stays
		 * listed, "dead", until deleted). */
		if (b->ready && !bl_sandbox_alive(b->sb))
			continue;
		all++;
		if (b->tenant != t)
			continue;
		n++;
		mem += b->memory_mib;
		cpus += b->vcpus;
	}
	srv_box *b = NULL;
	if (srv->stopping)
		srv_reply_error(r, 503, "shutting_down", "the server is shutting down");
	else if (t->max_sandboxes && n + 1 > t->max_sandboxes)
		srv_reply_error(r, 403, "quota_exceeded",
				"quota: tenant %s may have %u sandboxes (has %u)", t->name,
				t->max_sandboxes, n);
	else if (t->max_memory_mib && mem + c->memory > t->max_memory_mib)
		srv_reply_error(r, 403, "quota_exceeded",
				"quota: tenant %s may use %u MiB of memory (uses %u, asked %u)",
				t->name, t->max_memory_mib, mem, c->memory);
	else if (t->max_cpus && cpus + c->cpus > t->max_cpus)
		srv_reply_error(r, 403, "quota_exceeded",
				"quota: tenant %s may use %u CPUs (uses %u, asked %u)", t->name,
				t->max_cpus, cpus, c->cpus);
	else if (srv->cfg.max_sandboxes && all + 1 > srv->cfg.max_sandboxes)
		srv_reply_error(r, 503, "server_full", "the server runs %u sandboxes, its limit",
				all);
	else {
		b = bl_malloc0(sizeof(*b));
		bl_sandbox_random_id(b->id, sizeof(b->id));
		b->tenant = t;
		b->memory_mib = c->memory;
		b->vcpus = c->cpus;
		b->disk_mib = c->disk ? c->disk : BL_DEFAULT_DISK_MIB;
		b->refs = 1;
		b->created = time(NULL);
		snprintf(b->image, sizeof(b->image), "%s", c->image);
		snprintf(b->name, sizeof(b->name), "%s", c->name[0] ? c->name : b->id);
		b->next = srv->boxes;
		srv->boxes = b;
		srv->creating++;
	}
	pthread_mutex_unlock(&srv->lock);
	return b;
}

static void on_handle(bl_sandbox *sb, void *user)
{
	srv_box *b = user;
	pthread_mutex_lock(&srv->lock);
	b->pending = sb;
	if (sb && srv->stopping)
		bl_sandbox_cancel(sb);
	pthread_mutex_unlock(&srv->lock);
}

static void record_start(bool ok, double secs)
{
	static const double le[] = SRV_BUCKETS;
	pthread_mutex_lock(&srv->lock);
	if (!ok) {
		srv->m.start_failures++;
	} else {
		srv->m.starts++;
		srv->m.start_sum += secs;
		for (size_t i = 0; i < BL_ARRAY_SIZE(le); i++)
			if (secs <= le[i])
				srv->m.start_buckets[i]++;
	}
	pthread_mutex_unlock(&srv->lock);
}

static void create_box(srv_request *q, json_object *j, srv_reply *r)
{
	bl_error_t err = BL_ERROR_INIT;
	create_req c = {0};
	if (parse_create(j, &c, &err) < 0) {
		srv_reply_bl(r, &err);
		goto out;
	}
	srv_box *b = reserve(q->tenant, &c, r);
	if (!b)
		goto out;
	owner_write(b);
	bl_sandbox_options o = {.image = c.image,
				.image_store = srv->cfg.image_store,
				.memory_mib = c.memory,
				.vcpus = c.cpus,
				.disk_mib = c.disk,
				.pids_max = c.pids,
				.timeout_sec = c.timeout,
				.env = (const char *const *)c.env,
				.cwd = c.cwd,
				.user = c.user,
				.state_dir = srv->cfg.state_dir,
				.id = b->id,
				.owner = "serve",
				.on_handle = on_handle,
				.on_handle_user = b};
	uint64_t t0 = bl_now_monotonic_ns();
	bl_sandbox *sb = NULL;
	bl_process *init = NULL;
	int rc = bl_sandbox_create(&o, &sb, &err);
	if (rc == 0 && (rc = bl_sandbox_start(sb, &init, &err)) < 0) {
		bl_sandbox_destroy(sb);
		sb = NULL;
	}
	record_start(rc == 0, (double)(bl_now_monotonic_ns() - t0) / 1e9);
	pthread_mutex_lock(&srv->lock);
	srv->creating--;
	b->pending = NULL;
	b->sb = sb;
	b->init = init;
	b->ready = rc == 0;
	if (rc < 0)
		unlink_box_locked(b);
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
	if (rc < 0) {
		bl_info("create for %s failed: %s", q->tenant->name, err.msg);
		owner_remove(b->id);
		free(b);
		if (err.code == BL_ENOTFOUND && !strncmp(err.msg, "image", 5))
			srv_reply_error(r, 404, "image_not_found", "%s", err.msg);
		else
			srv_reply_bl(r, &err);
		goto out;
	}
	bl_info("tenant %s created sandbox %s (%s, %u MiB, %.0f ms)", q->tenant->name, b->id,
		c.image, c.memory, (double)(bl_now_monotonic_ns() - t0) / 1e6);
	srv_reply_json(r, 201, box_json(b));
	srv_box_put(b);
out:
	bl_strv_free(c.env);
	free(c.cwd);
	free(c.user);
}

static void list_boxes(srv_request *q, srv_reply *r)
{
	json_object *a = json_object_new_array();
	pthread_mutex_lock(&srv->lock);
	for (srv_box *b = srv->boxes; b; b = b->next)
		if (b->tenant == q->tenant && b->ready && !b->deleting)
			json_object_array_add(a, box_json(b));
	pthread_mutex_unlock(&srv->lock);
	json_object *j = json_object_new_object();
	json_object_object_add(j, "sandboxes", a);
	srv_reply_json(r, 200, j);
}

/* ------------------------------------------------------------ exec */

static bool wants_stream(srv_request *q, json_object *j)
{
	json_object *v;
	if (json_object_object_get_ex(j, "stream", &v))
		return json_object_get_boolean(v);
	const char *acc = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, "Accept");
	return acc && strstr(acc, "text/event-stream");
}

static void do_exec(srv_request *q, srv_box *b, json_object *j, srv_reply *r)
{
	bl_error_t err = BL_ERROR_INIT;
	srv_exec_req e = {0};
	srv_exec *x = NULL;
	if (srv_exec_req_parse(j, &e, &err) < 0 || srv_exec_start(b, &e, &x, &err) < 0) {
		srv_reply_bl(r, &err);
		srv_exec_req_clear(&e);
		return;
	}
	srv_exec_req_clear(&e);
	if (wants_stream(q, j)) {
		r->status = 200;
		r->raw = srv_exec_stream(x); /* owns x now */
		return;
	}
	json_object *res = srv_exec_collect(x, &err);
	srv_exec_put(x);
	if (res)
		srv_reply_json(r, 200, res);
	else
		srv_reply_bl(r, &err);
}

static bool query_flag(srv_request *q, const char *key)
{
	const char *v = MHD_lookup_connection_value(q->conn, MHD_GET_ARGUMENT_KIND, key);
	return v && (!*v || !strcmp(v, "1") || !strcmp(v, "true"));
}

static void exec_sub(srv_request *q, srv_box *b, srv_reply *r)
{
	srv_exec *x = srv_exec_find(b, q->segs[3]);
	if (!x) {
		srv_reply_error(r, 404, "BL_ENOTFOUND", "no running exec %s in sandbox %s",
				q->segs[3], b->id);
		return;
	}
	bl_error_t err = BL_ERROR_INIT;
	int rc;
	if (!strcmp(q->segs[4], "stdin")) {
		rc = srv_exec_write(x, q->body, q->body_len, query_flag(q, "close"), &err);
	} else {
		_cleanup_(json_object_putp) json_object *j =
		    srv_parse_body(q->body, q->body_len, &err);
		json_object *v;
		int sig = SIGKILL;
		rc = j ? 0 : -BL_EINVAL;
		if (j && json_object_object_get_ex(j, "signal", &v)) {
			sig = json_object_get_int(v);
			if (!json_object_is_type(v, json_type_int) || sig < 1 || sig > 64)
				rc = bl_set_error(&err, BL_EINVAL, "signal must be 1-64");
		}
		if (rc == 0)
			rc = srv_exec_signal(x, sig, &err);
	}
	srv_exec_put(x);
	if (rc < 0)
		srv_reply_bl(r, &err);
	else
		srv_reply_json(r, 200, json_object_new_object());
}

/* ------------------------------------------------------------ files */

static int guest_path(srv_request *q, char **ret_dir, char **ret_base, bl_error_t *err)
{
	const char *p = MHD_lookup_connection_value(q->conn, MHD_GET_ARGUMENT_KIND, "path");
	if (!p || p[0] != '/' || strlen(p) > 4096)
		return bl_set_error(err, BL_EINVAL,
				    "?path= must be an absolute path in the sandbox");
	_cleanup_free_ char *a = bl_strdup(p), *b = bl_strdup(p);
	const char *base = basename(a);
	if (!*base || !strcmp(base, ".") || !strcmp(base, "..") || !strcmp(base, "/"))
		return bl_set_error(err, BL_EINVAL, "?path= must name a file, not '%s'", p);
	*ret_base = bl_strdup(base);
	*ret_dir = bl_strdup(dirname(b));
	return 0;
}

static void put_file(srv_request *q, srv_box *b, srv_reply *r)
{
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_free_ char *dir = NULL, *base = NULL;
	if (guest_path(q, &dir, &base, &err) < 0 || !q->upload_path) {
		srv_reply_bl(r, &err);
		return;
	}
	char tmpl[] = "/tmp/boxlite-serve-XXXXXX";
	if (!mkdtemp(tmpl)) {
		bl_set_error_errno(&err, errno, "mkdtemp");
		srv_reply_bl(r, &err);
		return;
	}
	_cleanup_free_ char *local = bl_asprintf("%s/%s", tmpl, base);
	int rc = rename(q->upload_path, local) < 0 ? bl_set_error_errno(&err, errno, "spool") : 0;
	if (rc == 0 && chmod(local, 0644) < 0)
		rc = bl_set_error_errno(&err, errno, "chmod");
	if (rc == 0)
		rc = bl_sandbox_copy_in(b->sb, local, dir, &err);
	(void)bl_rm_rf(tmpl, NULL);
	if (rc < 0) {
		srv_reply_bl(r, &err);
		return;
	}
	json_object *j = json_object_new_object();
	json_object_object_add(j, "path",
			       json_object_new_string(MHD_lookup_connection_value(
				   q->conn, MHD_GET_ARGUMENT_KIND, "path")));
	json_object_object_add(j, "size", json_object_new_int64((int64_t)q->upload_len));
	srv_reply_json(r, 200, j);
}

static void get_file(srv_request *q, srv_box *b, srv_reply *r)
{
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_free_ char *dir = NULL, *base = NULL;
	if (guest_path(q, &dir, &base, &err) < 0) {
		srv_reply_bl(r, &err);
		return;
	}
	char tmpl[] = "/tmp/boxlite-serve-XXXXXX";
	if (!mkdtemp(tmpl)) {
		bl_set_error_errno(&err, errno, "mkdtemp");
		srv_reply_bl(r, &err);
		return;
	}
	const char *path = MHD_lookup_connection_value(q->conn, MHD_GET_ARGUMENT_KIND, "path");
	_cleanup_free_ char *local = bl_asprintf("%s/%s", tmpl, base);
	int rc = bl_sandbox_copy_out(b->sb, path, tmpl, &err);
	struct stat st;
	int fd = -1;
	if (rc == 0) {
		fd = open(local, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
			rc = bl_set_error(&err, BL_EINVAL, "%s is not a regular file", path);
		else if ((uint64_t)st.st_size > srv->cfg.max_file)
			rc = bl_set_error(&err, BL_EINVAL, "%s is over %zu bytes", path,
					  srv->cfg.max_file);
	} else if (strstr(err.msg, "No such file") || strstr(err.msg, "Cannot stat") ||
		   strstr(err.msg, "archive is empty")) {
		/* The guest's tar found nothing to send. */
		bl_set_error(&err, BL_ENOTFOUND, "%s: no such file in the sandbox", path);
	}
	(void)bl_rm_rf(tmpl, NULL);
	if (rc < 0) {
		if (fd >= 0)
			close(fd);
		srv_reply_bl(r, &err);
		return;
	}
	r->status = 200;
	r->raw = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
	r->content_type = "application/octet-stream";
}

/* ------------------------------------------------------------ code */

static void run_code(srv_request *q, srv_box *b, json_object *j, srv_reply *r)
{
	bl_error_t err = BL_ERROR_INIT;
	if (q->n_segs == 4 && !strcmp(q->segs[3], "reset")) {
		if (srv_code_reset(b, &err) < 0)
			srv_reply_bl(r, &err);
		else
			srv_reply_json(r, 200, json_object_new_object());
		return;
	}
	json_object *v;
	if (!json_object_object_get_ex(j, "code", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		srv_reply_error(r, 400, "BL_EINVAL", "code (a string) is required");
		return;
	}
	double timeout = 0;
	json_object *t;
	if (json_object_object_get_ex(j, "timeout_seconds", &t) &&
	    !json_object_is_type(t, json_type_null)) {
		timeout = json_object_get_double(t);
		if (!(timeout > 0)) {
			srv_reply_error(r, 400, "BL_EINVAL", "timeout_seconds must be positive");
			return;
		}
	}
	if (srv->cfg.exec_timeout && (timeout <= 0 || timeout > srv->cfg.exec_timeout))
		timeout = srv->cfg.exec_timeout;
	pthread_mutex_lock(&srv->lock);
	srv->m.code_runs++;
	pthread_mutex_unlock(&srv->lock);
	json_object *res = srv_code_run(b, json_object_get_string(v), timeout, &err);
	if (res)
		srv_reply_json(r, 200, res);
	else
		srv_reply_bl(r, &err);
}

/* ------------------------------------------------------------ images */

static void images(srv_request *q, srv_reply *r)
{
	bl_error_t err = BL_ERROR_INIT;
	bl_image_entry *v = NULL;
	size_t n = 0;
	if (bl_image_entries(srv->cfg.image_store, &v, &n, &err) < 0) {
		srv_reply_bl(r, &err);
		return;
	}
	json_object *a = json_object_new_array();
	for (size_t i = 0; i < n; i++) {
		json_object *e = json_object_new_object();
		json_object_object_add(e, "name", json_object_new_string(v[i].name));
		json_object_object_add(e, "digest", json_object_new_string(v[i].digest));
		json_object_object_add(e, "size", json_object_new_int64((int64_t)v[i].size));
		json_object_object_add(e, "created", json_object_new_int64(v[i].created));
		json_object_array_add(a, e);
	}
	bl_image_entries_free(v, n);
	json_object *j = json_object_new_object();
	json_object_object_add(j, "images", a);
	srv_reply_json(r, 200, j);
}

static void pull(srv_request *q, json_object *j, srv_reply *r)
{
	json_object *v;
	if (!q->tenant->allow_pull) {
		srv_reply_error(r, 403, "forbidden", "tenant %s may not pull images",
				q->tenant->name);
		return;
	}
	if (!json_object_object_get_ex(j, "ref", &v) || !json_object_is_type(v, json_type_string) ||
	    !image_ref_ok(json_object_get_string(v))) {
		srv_reply_error(r, 400, "BL_EINVAL", "ref (an image reference) is required");
		return;
	}
	bl_error_t err = BL_ERROR_INIT;
	bl_pull_options o = {.store_dir = srv->cfg.image_store};
	_cleanup_free_ char *name = NULL, *digest = NULL;
	if (bl_image_pull(json_object_get_string(v), &o, &name, &digest, &err) < 0) {
		srv_reply_bl(r, &err);
		return;
	}
	json_object *res = json_object_new_object();
	json_object_object_add(res, "name", json_object_new_string(name ? name : ""));
	json_object_object_add(res, "digest", json_object_new_string(digest ? digest : ""));
	srv_reply_json(r, 200, res);
}

/* ------------------------------------------------------------ dispatch */

bool srv_api_is_upload(const char *method, const char *const *segs, size_t n)
{
	return !strcmp(method, "PUT") && n == 3 && !strcmp(segs[0], "sandboxes") &&
	       !strcmp(segs[2], "files");
}

static bool is(srv_request *q, const char *method, size_t n, const char *s0, const char *s2)
{
	return q->n_segs == n && !strcmp(q->method, method) && !strcmp(q->segs[0], s0) &&
	       (!s2 || (n > 2 && !strcmp(q->segs[2], s2)));
}

/* Routes whose body is JSON get it parsed here: malformed is 400 before
 * anything happens. */
static bool json_route(srv_request *q)
{
	if (!strcmp(q->method, "POST")) {
		if (q->n_segs == 5 && !strcmp(q->segs[4], "stdin"))
			return false;
		if (q->n_segs == 4 && !strcmp(q->segs[3], "reset"))
			return false;
		return true;
	}
	return false;
}

void srv_api_dispatch(srv_request *q, srv_reply *r)
{
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_(json_object_putp) json_object *j = NULL;
	if (q->n_segs == 0) {
		srv_reply_error(r, 404, "not_found", "no such path");
		return;
	}
	if (json_route(q) && !(j = srv_parse_body(q->body, q->body_len, &err))) {
		srv_reply_error(r, 400, "bad_request", "%s", err.msg);
		return;
	}
	if (is(q, "GET", 1, "images", NULL))
		return images(q, r);
	if (is(q, "POST", 2, "images", NULL) && !strcmp(q->segs[1], "pull"))
		return pull(q, j, r);
	if (is(q, "POST", 1, "sandboxes", NULL))
		return create_box(q, j, r);
	if (is(q, "GET", 1, "sandboxes", NULL))
		return list_boxes(q, r);
	if (strcmp(q->segs[0], "sandboxes") || q->n_segs < 2) {
		srv_reply_error(r, q->n_segs == 1 && !strcmp(q->segs[0], "sandboxes") ? 405 : 404,
				"not_found", "no such route: %s /v1/%s", q->method, q->segs[0]);
		return;
	}
	srv_box *b = box_get(q->tenant, q->segs[1]);
	if (!b) {
		srv_reply_error(r, 404, "BL_ENOTFOUND", "no sandbox %.64s", q->segs[1]);
		return;
	}
	if (is(q, "GET", 2, "sandboxes", NULL))
		srv_reply_json(r, 200, box_json(b));
	else if (is(q, "DELETE", 2, "sandboxes", NULL)) {
		box_delete(b);
		r->status = 204;
		r->raw = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
		return;
	} else if (is(q, "POST", 3, "sandboxes", "exec"))
		do_exec(q, b, j, r);
	else if ((is(q, "POST", 3, "sandboxes", "run_code") ||
		  is(q, "POST", 4, "sandboxes", "run_code")))
		run_code(q, b, j, r);
	else if (is(q, "PUT", 3, "sandboxes", "files"))
		put_file(q, b, r);
	else if (is(q, "GET", 3, "sandboxes", "files"))
		get_file(q, b, r);
	else if (is(q, "POST", 5, "sandboxes", "execs") &&
		 (!strcmp(q->segs[4], "stdin") || !strcmp(q->segs[4], "signal")))
		exec_sub(q, b, r);
	else
		srv_reply_error(r, 404, "not_found", "no such route: %s on a sandbox", q->method);
	srv_box_put(b);
}

/* ------------------------------------------------------------ shutdown */

void srv_cancel_all(void)
{
	pthread_mutex_lock(&srv->lock);
	srv->stopping = true;
	for (srv_box *b = srv->boxes; b; b = b->next) {
		if (b->pending)
			bl_sandbox_cancel(b->pending);
		if (b->sb)
			bl_sandbox_cancel(b->sb);
	}
	pthread_mutex_unlock(&srv->lock);
}

void srv_release_all(void)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 15;
	pthread_mutex_lock(&srv->lock);
	srv->stopping = true;
	for (;;) {
		bool busy = srv->creating > 0;
		for (srv_box *b = srv->boxes; b && !busy; b = b->next)
			busy = b->refs > 0;
		if (!busy || pthread_cond_timedwait(&srv->cond, &srv->lock, &until) != 0)
			break;
	}
	/* Boxes still referenced (a thread stuck past the wait) are left to the
	 * process's exit; their records make the next server clean them. */
	srv_box *keep = NULL;
	for (srv_box *b = srv->boxes, *n; b; b = n) {
		n = b->next;
		if (b->refs > 0 || !b->ready) {
			b->next = keep;
			keep = b;
			continue;
		}
		pthread_mutex_unlock(&srv->lock);
		box_destroy(b);
		pthread_mutex_lock(&srv->lock);
	}
	srv->boxes = keep;
	pthread_mutex_unlock(&srv->lock);
}

/* ------------------------------------------------------------ metrics */

static void add(char **buf, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void add(char **buf, size_t *len, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	*buf = realloc(*buf, *len + (size_t)n + 1);
	memcpy(*buf + *len, line, (size_t)n + 1);
	*len += (size_t)n;
}

char *srv_metrics_text(void)
{
	static const double le[] = SRV_BUCKETS;
	char *t = NULL;
	size_t n = 0;
	pthread_mutex_lock(&srv->lock);
	srv_metrics m = srv->m;
	unsigned boxes = 0;
	for (srv_box *b = srv->boxes; b; b = b->next)
		boxes += b->ready && !b->deleting;
	add(&t, &n, "# HELP boxlite_sandboxes Sandboxes this server runs.\n");
	add(&t, &n, "# TYPE boxlite_sandboxes gauge\nboxlite_sandboxes %u\n", boxes);
	add(&t, &n, "# HELP boxlite_tenant_sandboxes Sandboxes per tenant.\n");
	add(&t, &n, "# TYPE boxlite_tenant_sandboxes gauge\n");
	for (size_t i = 0; i < srv->cfg.n_tenants; i++) {
		unsigned k = 0;
		for (srv_box *b = srv->boxes; b; b = b->next)
			k += b->tenant == &srv->cfg.tenants[i] && b->ready && !b->deleting;
		add(&t, &n, "boxlite_tenant_sandboxes{tenant=\"%s\"} %u\n",
		    srv->cfg.tenants[i].name, k);
	}
	pthread_mutex_unlock(&srv->lock);
	add(&t, &n, "# HELP boxlite_sandbox_starts_total Sandboxes started.\n");
	add(&t, &n, "# TYPE boxlite_sandbox_starts_total counter\n");
	add(&t, &n, "boxlite_sandbox_starts_total %llu\n", (unsigned long long)m.starts);
	add(&t, &n, "# HELP boxlite_sandbox_start_failures_total Sandbox creates that failed.\n");
	add(&t, &n, "# TYPE boxlite_sandbox_start_failures_total counter\n");
	add(&t, &n, "boxlite_sandbox_start_failures_total %llu\n",
	    (unsigned long long)m.start_failures);
	add(&t, &n,
	    "# HELP boxlite_sandbox_start_seconds Time from create to a running sandbox.\n");
	add(&t, &n, "# TYPE boxlite_sandbox_start_seconds histogram\n");
	for (size_t i = 0; i < BL_ARRAY_SIZE(le); i++)
		add(&t, &n, "boxlite_sandbox_start_seconds_bucket{le=\"%g\"} %llu\n", le[i],
		    (unsigned long long)m.start_buckets[i]);
	add(&t, &n, "boxlite_sandbox_start_seconds_bucket{le=\"+Inf\"} %llu\n",
	    (unsigned long long)m.starts);
	add(&t, &n, "boxlite_sandbox_start_seconds_sum %.6f\n", m.start_sum);
	add(&t, &n, "boxlite_sandbox_start_seconds_count %llu\n", (unsigned long long)m.starts);
	add(&t, &n, "# HELP boxlite_execs_total Processes started through exec.\n");
	add(&t, &n, "# TYPE boxlite_execs_total counter\nboxlite_execs_total %llu\n",
	    (unsigned long long)m.execs);
	add(&t, &n, "# HELP boxlite_code_runs_total Stateful code runs.\n");
	add(&t, &n, "# TYPE boxlite_code_runs_total counter\nboxlite_code_runs_total %llu\n",
	    (unsigned long long)m.code_runs);
	add(&t, &n, "# HELP boxlite_http_responses_total HTTP responses by status class.\n");
	add(&t, &n, "# TYPE boxlite_http_responses_total counter\n");
	for (int c = 1; c <= 5; c++)
		add(&t, &n, "boxlite_http_responses_total{code=\"%dxx\"} %llu\n", c,
		    (unsigned long long)m.by_class[c]);
	return t;
}
