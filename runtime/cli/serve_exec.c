/*
 * `boxlite serve`'s execs: a process in a sandbox, two threads pumping its
 * stdout/stderr into a bounded queue, one waiting for its exit, and the
 * request that consumes the queue (collected into one JSON reply, or sent as
 * server-sent events). The consumer enforces the exec's timeout; a client
 * that goes away mid-stream gets its process killed.
 */
#include "serve.h"
#include "bl_log.h"
#include "bl_util.h"
#include "options.h"

#include <errno.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define READ_CHUNK   (16 << 10)
#define QUEUE_MAX    (1 << 20)
#define KEEPALIVE_NS (15ULL * 1000000000ULL)
#define KILL_GRACE   (200ULL * 1000000ULL)

typedef struct chunk {
	struct chunk *next;
	int stream;
	size_t len;
	char data[];
} chunk;

struct srv_exec {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned refs;
	srv_box *box;
	bl_process *p;
	char id[24];
	uint32_t pid;
	chunk *head, *tail;
	size_t queued;
	int open;
	bool exited, killed, timed_out, abandoned, finished;
	bl_exit ex;
	int wait_rc;
	bl_error_t werr;
	uint64_t t0, deadline, exited_at;
	bool stdin_open;
	char *stdin_data;
	size_t stdin_len;
	int start_code; /* 126/127: the command could not start (no process) */
	char start_msg[600];
	/* streaming */
	char *pend;
	size_t pend_len, pend_off;
	bool sent_start;
	srv_exec *next;
};

void srv_exec_req_clear(srv_exec_req *e)
{
	bl_strv_free(e->argv);
	bl_strv_free(e->env);
	free(e->cwd);
	free(e->user);
	free(e->stdin_data);
	memset(e, 0, sizeof(*e));
}

static char **strv_of(json_object *a, const char *what, bl_error_t *err)
{
	size_t n = json_object_array_length(a);
	if (n > 4096)
		return bl_set_error(err, BL_EINVAL, "%s: too many entries", what), NULL;
	char **v = bl_malloc0((n + 1) * sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		json_object *s = json_object_array_get_idx(a, i);
		if (!json_object_is_type(s, json_type_string) ||
		    strlen(json_object_get_string(s)) != (size_t)json_object_get_string_len(s)) {
			bl_strv_free(v);
			return bl_set_error(err, BL_EINVAL, "%s must be a list of strings (no NUL)",
					    what),
			       NULL;
		}
		v[i] = bl_strdup(json_object_get_string(s));
	}
	return v;
}

static char **env_of(json_object *v, bl_error_t *err)
{
	if (json_object_is_type(v, json_type_array)) {
		char **e = strv_of(v, "env", err);
		for (size_t i = 0; e && e[i]; i++)
			if (!strchr(e[i], '=') || e[i][0] == '=') {
				bl_set_error(err, BL_EINVAL, "env entry '%.100s' is not KEY=VALUE",
					     e[i]);
				bl_strv_free(e);
				return NULL;
			}
		return e;
	}
	if (!json_object_is_type(v, json_type_object))
		return bl_set_error(err, BL_EINVAL, "env must be an object or a KEY=VALUE list"),
		       NULL;
	size_t n = (size_t)json_object_object_length(v), i = 0;
	if (n > 4096)
		return bl_set_error(err, BL_EINVAL, "env: too many entries"), NULL;
	char **e = bl_malloc0((n + 1) * sizeof(char *));
	json_object_object_foreach(v, key, val)
	{
		if (!*key || strchr(key, '=') || !json_object_is_type(val, json_type_string)) {
			bl_strv_free(e);
			return bl_set_error(err, BL_EINVAL,
					    "env: '%.100s' must be a name with a string value",
					    key),
			       NULL;
		}
		e[i++] = bl_asprintf("%s=%s", key, json_object_get_string(val));
	}
	return e;
}

static int opt_string(json_object *j, const char *key, char **ret, bl_error_t *err)
{
	json_object *v;
	if (!json_object_object_get_ex(j, key, &v) || json_object_is_type(v, json_type_null))
		return 0;
	if (!json_object_is_type(v, json_type_string) ||
	    strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v))
		return bl_set_error(err, BL_EINVAL, "%s must be a string", key);
	*ret = bl_strdup(json_object_get_string(v));
	return 1;
}

int srv_exec_req_parse(json_object *j, srv_exec_req *e, bl_error_t *err)
{
	json_object *v;
	if (!json_object_object_get_ex(j, "cmd", &v) && !json_object_object_get_ex(j, "argv", &v))
		return bl_set_error(err, BL_EINVAL,
				    "cmd is required (a list of strings, or a "
				    "shell line as a string)");
	if (json_object_is_type(v, json_type_string)) {
		const char *sh[] = {"/bin/sh", "-c", json_object_get_string(v), NULL};
		e->argv = bl_malloc0(4 * sizeof(char *));
		for (int i = 0; i < 3; i++)
			e->argv[i] = bl_strdup(sh[i]);
	} else if (json_object_is_type(v, json_type_array)) {
		if (!(e->argv = strv_of(v, "cmd", err)))
			return -BL_EINVAL;
	} else {
		return bl_set_error(err, BL_EINVAL, "cmd must be a list of strings or a string");
	}
	if (!e->argv[0] || !e->argv[0][0])
		return bl_set_error(err, BL_EINVAL, "cmd needs a command");
	if (json_object_object_get_ex(j, "env", &v) && !json_object_is_type(v, json_type_null) &&
	    !(e->env = env_of(v, err)))
		return -BL_EINVAL;
	int r;
	if ((r = opt_string(j, "cwd", &e->cwd, err)) < 0 ||
	    (r = opt_string(j, "user", &e->user, err)) < 0)
		return r;
	if (e->cwd && e->cwd[0] != '/')
		return bl_set_error(err, BL_EINVAL, "cwd must be an absolute path");
	if (json_object_object_get_ex(j, "stdin", &v) && !json_object_is_type(v, json_type_null)) {
		if (!json_object_is_type(v, json_type_string))
			return bl_set_error(err, BL_EINVAL, "stdin must be a string");
		e->stdin_len = (size_t)json_object_get_string_len(v);
		e->stdin_data = malloc(e->stdin_len + 1);
		memcpy(e->stdin_data, json_object_get_string(v), e->stdin_len);
	} else if (json_object_object_get_ex(j, "stdin_base64", &v) &&
		   !json_object_is_type(v, json_type_null)) {
		if (!json_object_is_type(v, json_type_string) ||
		    !(e->stdin_data = srv_unbase64(json_object_get_string(v), &e->stdin_len)))
			return bl_set_error(err, BL_EINVAL, "stdin_base64 must be base64");
	}
	if (json_object_object_get_ex(j, "stdin_open", &v))
		e->stdin_open = json_object_get_boolean(v);
	if (json_object_object_get_ex(j, "timeout_seconds", &v) &&
	    !json_object_is_type(v, json_type_null)) {
		if (!json_object_is_type(v, json_type_int) &&
		    !json_object_is_type(v, json_type_double))
			return bl_set_error(err, BL_EINVAL, "timeout_seconds must be a number");
		e->timeout = json_object_get_double(v);
		if (!(e->timeout > 0) || e->timeout > 86400 * 30)
			return bl_set_error(err, BL_EINVAL, "timeout_seconds must be positive");
	}
	return 0;
}

/* ------------------------------------------------------------ lifetime */

static void exec_free(srv_exec *x)
{
	pthread_mutex_lock(&srv->lock);
	for (srv_exec **pp = &x->box->execs; *pp; pp = &(*pp)->next)
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	pthread_mutex_unlock(&srv->lock);
	if (x->p)
		bl_process_free(x->p);
	for (chunk *c = x->head, *n; c; c = n) {
		n = c->next;
		free(c);
	}
	srv_box_put(x->box);
	free(x->stdin_data);
	free(x->pend);
	pthread_mutex_destroy(&x->mu);
	pthread_cond_destroy(&x->cv);
	free(x);
}

void srv_exec_put(srv_exec *x)
{
	if (!x)
		return;
	pthread_mutex_lock(&x->mu);
	bool last = --x->refs == 0;
	pthread_mutex_unlock(&x->mu);
	if (last)
		exec_free(x);
}

srv_exec *srv_exec_find(srv_box *box, const char *id)
{
	srv_exec *found = NULL;
	pthread_mutex_lock(&srv->lock);
	for (srv_exec *x = box->execs; x && !found; x = x->next) {
		if (strcmp(x->id, id))
			continue;
		pthread_mutex_lock(&x->mu);
		if (x->refs > 0) {
			x->refs++;
			found = x;
		}
		pthread_mutex_unlock(&x->mu);
	}
	pthread_mutex_unlock(&srv->lock);
	return found;
}

const char *srv_exec_id(const srv_exec *x)
{
	return x->id;
}

/* ------------------------------------------------------------ threads */

typedef struct pump_arg {
	srv_exec *x;
	int stream;
} pump_arg;

static void *pump(void *arg)
{
	pump_arg a = *(pump_arg *)arg;
	free(arg);
	srv_exec *x = a.x;
	char *buf = malloc(READ_CHUNK);
	for (;;) {
		bl_error_t err = BL_ERROR_INIT;
		ssize_t n = bl_process_read(x->p, a.stream, buf, READ_CHUNK, &err);
		if (n <= 0)
			break;
		pthread_mutex_lock(&x->mu);
		while (x->queued > QUEUE_MAX && !x->abandoned)
			pthread_cond_wait(&x->cv, &x->mu);
		if (!x->abandoned) {
			chunk *c = malloc(sizeof(*c) + (size_t)n);
			c->next = NULL;
			c->stream = a.stream;
			c->len = (size_t)n;
			memcpy(c->data, buf, (size_t)n);
			if (x->tail)
				x->tail->next = c;
			else
				x->head = c;
			x->tail = c;
			x->queued += (size_t)n;
			pthread_cond_broadcast(&x->cv);
		}
		pthread_mutex_unlock(&x->mu);
	}
	free(buf);
	pthread_mutex_lock(&x->mu);
	x->open--;
	pthread_cond_broadcast(&x->cv);
	pthread_mutex_unlock(&x->mu);
	srv_exec_put(x);
	return NULL;
}

static void *waiter(void *arg)
{
	srv_exec *x = arg;
	if (x->stdin_data || !x->stdin_open) {
		bl_error_t err = BL_ERROR_INIT;
		if (x->stdin_len)
			(void)bl_process_write(x->p, x->stdin_data, x->stdin_len, &err);
		if (!x->stdin_open)
			(void)bl_process_close_stdin(x->p, &err);
	}
	bl_exit ex = {0};
	bl_error_t err = BL_ERROR_INIT;
	int r = bl_process_wait(x->p, &ex, &err);
	pthread_mutex_lock(&x->mu);
	x->exited = true;
	x->exited_at = bl_now_monotonic_ns();
	x->ex = ex;
	x->wait_rc = r;
	x->werr = err;
	pthread_cond_broadcast(&x->cv);
	pthread_mutex_unlock(&x->mu);
	srv_exec_put(x);
	return NULL;
}

static void spawn(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&at, 256 << 10);
	if (pthread_create(&t, &at, fn, arg) != 0)
		abort(); /* out of threads: nothing sane is left to do */
	pthread_attr_destroy(&at);
}

int srv_exec_start(srv_box *box, const srv_exec_req *e, srv_exec **ret, bl_error_t *err)
{
	bl_process_options po = {.args = (const char *const *)e->argv,
				 .env = (const char *const *)e->env,
				 .cwd = e->cwd,
				 .user = e->user,
				 .stdin_open = true};
	bl_process *p = NULL;
	int r = bl_sandbox_exec(box->sb, &po, &p, err);
	char msg[512];
	int code = r < 0 ? bl_cli_start_failure(err, e->argv[0], msg, sizeof(msg)) : 0;
	if (r < 0 && !code)
		return r;
	srv_exec *x = bl_malloc0(sizeof(*x));
	pthread_mutex_init(&x->mu, NULL);
	pthread_cond_init(&x->cv, NULL);
	x->box = box;
	x->p = p;
	x->t0 = bl_now_monotonic_ns();
	double t = e->timeout > 0 ? e->timeout : srv->cfg.exec_timeout;
	if (srv->cfg.exec_timeout && t > srv->cfg.exec_timeout)
		t = srv->cfg.exec_timeout;
	if (t > 0)
		x->deadline = x->t0 + (uint64_t)(t * 1e9);
	x->stdin_open = e->stdin_open;
	if (e->stdin_len) {
		x->stdin_data = malloc(e->stdin_len);
		memcpy(x->stdin_data, e->stdin_data, e->stdin_len);
		x->stdin_len = e->stdin_len;
	}
	pthread_mutex_lock(&srv->lock);
	box->refs++;
	snprintf(x->id, sizeof(x->id), "x%u", ++box->n_execs);
	x->next = box->execs;
	box->execs = x;
	srv->m.execs++;
	pthread_mutex_unlock(&srv->lock);
	if (code) {
		x->start_code = code;
		snprintf(x->start_msg, sizeof(x->start_msg), "boxlite: %s\n", msg);
		x->exited = true;
		x->refs = 1;
		*ret = x;
		return 0;
	}
	x->pid = bl_process_pid(p);
	x->open = 2;
	x->refs = 4; /* the consumer, two pumps, the waiter */
	for (int s = 1; s <= 2; s++) {
		pump_arg *a = malloc(sizeof(*a));
		a->x = x;
		a->stream = s;
		spawn(pump, a);
	}
	spawn(waiter, x);
	*ret = x;
	return 0;
}

int srv_exec_write(srv_exec *x, const void *buf, size_t len, bool close_stdin, bl_error_t *err)
{
	if (!x->p || !x->stdin_open)
		return bl_set_error(err, BL_ESTATE,
				    "exec %s has no open stdin (start it with "
				    "\"stdin_open\": true)",
				    x->id);
	int r = len ? bl_process_write(x->p, buf, len, err) : 0;
	if (r == 0 && close_stdin)
		r = bl_process_close_stdin(x->p, err);
	return r;
}

int srv_exec_signal(srv_exec *x, int sig, bl_error_t *err)
{
	if (!x->p)
		return 0;
	return bl_process_signal(x->p, sig, err);
}

/* ------------------------------------------------------------ consuming */

static void kill_now(srv_exec *x)
{
	bl_error_t err = BL_ERROR_INIT;
	if (x->p)
		(void)bl_process_signal(x->p, SIGKILL, &err);
}

static bool done_locked(srv_exec *x, uint64_t now)
{
	if (!x->exited || x->head)
		return false;
	if (x->open == 0)
		return true;
	/* After a kill, children may hold the pipes open: a short grace. */
	return x->killed && now - x->exited_at > KILL_GRACE;
}

/* Next chunk (1, *ret set), done (0), or nothing until `until` (2). */
static int next_event(srv_exec *x, chunk **ret, uint64_t until)
{
	pthread_mutex_lock(&x->mu);
	for (;;) {
		uint64_t now = bl_now_monotonic_ns();
		if (x->head) {
			chunk *c = x->head;
			x->head = c->next;
			if (!x->head)
				x->tail = NULL;
			x->queued -= c->len;
			pthread_cond_broadcast(&x->cv);
			pthread_mutex_unlock(&x->mu);
			*ret = c;
			return 1;
		}
		if (done_locked(x, now)) {
			pthread_mutex_unlock(&x->mu);
			return 0;
		}
		if (x->deadline && now >= x->deadline && !x->killed) {
			x->killed = x->timed_out = true;
			pthread_mutex_unlock(&x->mu);
			kill_now(x);
			pthread_mutex_lock(&x->mu);
			continue;
		}
		if (until && now >= until) {
			pthread_mutex_unlock(&x->mu);
			return 2;
		}
		uint64_t wake = now + 1000000000ULL;
		if (x->deadline && !x->killed && x->deadline < wake)
			wake = x->deadline;
		if (until && until < wake)
			wake = until;
		if (x->exited && x->killed && x->exited_at + KILL_GRACE + 1 < wake)
			wake = x->exited_at + KILL_GRACE + 1;
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t d = wake > now ? wake - now : 0;
		ts.tv_sec += (time_t)(d / 1000000000ULL);
		ts.tv_nsec += (long)(d % 1000000000ULL);
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		(void)pthread_cond_timedwait(&x->cv, &x->mu, &ts);
	}
}

static void result_fields(srv_exec *x, json_object *j)
{
	int code = x->start_code ? x->start_code : x->ex.status;
	if (x->timed_out && !x->start_code && x->wait_rc < 0)
		code = 128 + SIGKILL;
	json_object_object_add(j, "exec_id", json_object_new_string(x->id));
	json_object_object_add(j, "exit_code", json_object_new_int(code));
	json_object_object_add(j, "signal", json_object_new_int(x->ex.signal));
	json_object_object_add(
	    j, "oom_killed",
	    json_object_new_boolean(x->ex.oom_killed ||
				    (x->wait_rc < 0 && x->werr.code == BL_EOOM)));
	json_object_object_add(j, "timed_out", json_object_new_boolean(x->timed_out));
	json_object_object_add(
	    j, "duration_ms",
	    json_object_new_double((double)(bl_now_monotonic_ns() - x->t0) / 1e6));
}

/* The wait's failure, when it is not the process's own (OOM) or our kill. */
static bool wait_failed(srv_exec *x)
{
	return !x->start_code && x->wait_rc < 0 && x->werr.code != BL_EOOM && !x->timed_out;
}

json_object *srv_exec_collect(srv_exec *x, bl_error_t *err)
{
	char *out[3] = {NULL, NULL, NULL};
	size_t len[3] = {0, 0, 0};
	bool truncated = false;
	if (x->start_code) {
		out[2] = bl_strdup(x->start_msg);
		len[2] = strlen(out[2]);
	}
	chunk *c;
	while (next_event(x, &c, 0) == 1) {
		size_t room = srv->cfg.max_output - len[c->stream];
		size_t n = c->len < room ? c->len : room;
		if (n < c->len)
			truncated = true;
		if (n) {
			out[c->stream] = realloc(out[c->stream], len[c->stream] + n);
			memcpy(out[c->stream] + len[c->stream], c->data, n);
			len[c->stream] += n;
		}
		free(c);
	}
	json_object *j = NULL;
	if (wait_failed(x)) {
		*err = x->werr;
	} else {
		j = json_object_new_object();
		result_fields(x, j);
		json_object_object_add(j, "stdout", srv_json_text(out[1] ? out[1] : "", len[1]));
		json_object_object_add(j, "stderr", srv_json_text(out[2] ? out[2] : "", len[2]));
		json_object_object_add(j, "truncated", json_object_new_boolean(truncated));
	}
	free(out[1]);
	free(out[2]);
	return j;
}

/* ------------------------------------------------------------ SSE */

static void pend_event(srv_exec *x, const char *event, json_object *data)
{
	const char *s = json_object_to_json_string_ext(data, JSON_C_TO_STRING_PLAIN |
								 JSON_C_TO_STRING_NOSLASHESCAPE);
	free(x->pend);
	x->pend = bl_asprintf("event: %s\ndata: %s\n\n", event, s);
	x->pend_len = strlen(x->pend);
	x->pend_off = 0;
	json_object_put(data);
}

static void pend_data(srv_exec *x, int stream, const void *buf, size_t len)
{
	json_object *d = json_object_new_object();
	char *b = srv_base64(buf, len);
	json_object_object_add(d, "data", json_object_new_string(b));
	free(b);
	pend_event(x, stream == 1 ? "stdout" : "stderr", d);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	srv_exec *x = cls;
	while (x->pend_off >= x->pend_len) {
		if (x->finished)
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (!x->sent_start) {
			x->sent_start = true;
			json_object *d = json_object_new_object();
			json_object_object_add(d, "exec_id", json_object_new_string(x->id));
			json_object_object_add(d, "pid", json_object_new_int64(x->pid));
			pend_event(x, "start", d);
			if (x->start_code) {
				/* start, then the failure's message, then exit */
				char *ev = x->pend;
				x->pend = NULL;
				pend_data(x, 2, x->start_msg, strlen(x->start_msg));
				char *both = bl_asprintf("%s%s", ev, x->pend);
				free(ev);
				free(x->pend);
				x->pend = both;
				x->pend_len = strlen(both);
			}
			break;
		}
		chunk *c = NULL;
		int r = next_event(x, &c, bl_now_monotonic_ns() + KEEPALIVE_NS);
		if (r == 1) {
			pend_data(x, c->stream, c->data, c->len);
			free(c);
		} else if (r == 2) {
			free(x->pend);
			x->pend = bl_strdup(": keepalive\n\n");
			x->pend_len = strlen(x->pend);
			x->pend_off = 0;
		} else {
			x->finished = true;
			json_object *d = json_object_new_object();
			if (wait_failed(x)) {
				json_object *e = json_object_new_object();
				json_object_object_add(
				    e, "code", json_object_new_string(srv_code_id(x->werr.code)));
				json_object_object_add(
				    e, "message", srv_json_text(x->werr.msg, strlen(x->werr.msg)));
				json_object_object_add(d, "error", e);
				pend_event(x, "error", d);
			} else {
				result_fields(x, d);
				pend_event(x, "exit", d);
			}
		}
	}
	size_t n = x->pend_len - x->pend_off;
	if (n > max)
		n = max;
	memcpy(buf, x->pend + x->pend_off, n);
	x->pend_off += n;
	return (ssize_t)n;
}

static void stream_free(void *cls)
{
	srv_exec *x = cls;
	pthread_mutex_lock(&x->mu);
	bool running = !x->exited;
	x->abandoned = true;
	pthread_cond_broadcast(&x->cv);
	pthread_mutex_unlock(&x->mu);
	/* The client went away before the end: its process goes too. */
	if (running && !x->finished)
		kill_now(x);
	srv_exec_put(x);
}

struct MHD_Response *srv_exec_stream(srv_exec *x)
{
	struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 << 10,
								   stream_read, x, stream_free);
	if (r) {
		(void)MHD_add_response_header(r, "Content-Type", "text/event-stream");
		(void)MHD_add_response_header(r, "X-Boxlite-Exec-Id", x->id);
	}
	return r;
}
