/*
 * Code sessions: one persistent Python interpreter per bl_codebox, running
 * the SDK's guest-side driver (sdk/python/boxlite/_driver.py, embedded as
 * codebox_driver.h by the build) and speaking its frames (codebox_proto.h).
 *
 * Per interpreter a reader thread decodes stdout into frames (output goes
 * into the current run's result, R ends it) and then collects the exit
 * status; a second one keeps a bounded tail of the driver's own stderr (its
 * start-up failures). A run writes its C frame and waits on the condition
 * variable for its result, the interpreter's end, a protocol violation, an
 * interrupt or its deadline.
 */
#include "agent_client.h"
#include "bl_cleanup.h"
#include "bl_util.h"
#include "boxlite.h"
#include "codebox_driver.h"
#include "codebox_proto.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_MAX_OUTPUT	 (1u << 20)
#define DEFAULT_START_TIMEOUT_MS 120000u
#define INTERRUPT_WAIT_MS	 5000u	/* for an interrupted run to stop before the kill */
#define EXIT_WAIT_MS		 10000u /* for the exit status after the stream ended */
#define JOIN_WAIT_MS		 10000u
#define STDERR_TAIL		 4096u

struct interp {
	bl_codebox *cb;
	bl_process *p;
	pthread_t out_thr, err_thr;
	cbx_decoder dec; /* the stdout thread's */
	/* Under cb->mu. */
	bool hello, eof, exited, broken;
	uint32_t pid;
	bl_exit ex;
	bl_error_t why; /* of broken */
	char tail[STDERR_TAIL];
	size_t tail_len;
};

struct bl_codebox {
	bl_sandbox *sb;
	char *python, *cwd, *user;
	char **env;
	size_t max_output;
	unsigned start_timeout_ms;
	void (*on_output)(int, const char *, size_t, void *);
	void *on_output_user;
	pthread_mutex_t run_mu; /* one run (or restart) at a time */
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct interp *it;
	uint64_t rid;
	/* The current run, under mu. */
	uint64_t active; /* its id, 0: none */
	bl_codebox_result *res;
	bool done, interrupted;
	bool starting, pending_interrupt; /* a run waits for its interpreter */
	cbx_result r;
	bool leaked; /* reader threads of a hung interpreter still use it */
};

/* ------------------------------------------------------------ helpers */

static void deadline_after(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Appends to one stream of the result, at most max bytes kept. */
static void keep_output(bl_codebox_result *res, int stream, const char *buf, size_t len, size_t max)
{
	char **data = stream == 1 ? &res->stdout_data : &res->stderr_data;
	size_t *have = stream == 1 ? &res->stdout_len : &res->stderr_len;
	if (*have >= max) {
		if (len)
			res->truncated = true;
		return;
	}
	if (len > max - *have) {
		len = max - *have;
		res->truncated = true;
	}
	char *n = realloc(*data, *have + len + 1);
	if (!n)
		abort();
	memcpy(n + *have, buf, len);
	*have += len;
	n[*have] = 0;
	*data = n;
}

static void note_stderr(bl_codebox_result *res, const char *msg)
{
	keep_output(res, 2, msg, strlen(msg), SIZE_MAX);
}

/* ------------------------------------------------------------ reader threads */

/* A frame from the driver (stdout thread). */
static int on_frame(void *user, char type, const char *payload, size_t len)
{
	struct interp *it = user;
	bl_codebox *cb = it->cb;
	bl_error_t err = BL_ERROR_INIT;
	int r = 0;
	cbx_result res;
	uint32_t pid = 0;
	if (type == 'H' && (r = cbx_parse_hello(payload, len, &pid, &err)) < 0)
		goto broken;
	if (type == 'R' && (r = cbx_parse_result(payload, len, &res, &err)) < 0)
		goto broken;
	pthread_mutex_lock(&cb->mu);
	bool ours = cb->it == it && cb->active && cb->res;
	switch (type) {
	case 'H':
		if (it->hello) {
			pthread_mutex_unlock(&cb->mu);
			r = bl_set_error(&err, BL_EPROTO, "the interpreter sent a second hello");
			goto broken;
		}
		it->hello = true;
		it->pid = pid;
		break;
	case 'O':
	case 'E':
		/* Output between runs (background threads) is dropped. */
		if (ours) {
			int stream = type == 'O' ? 1 : 2;
			if (cb->on_output && len)
				cb->on_output(stream, payload, len, cb->on_output_user);
			keep_output(cb->res, stream, payload, len, cb->max_output);
		}
		break;
	case 'R':
		/* A stale (timed-out run's) or forged result is not this run's. */
		if (ours && res.id == cb->active) {
			cb->r = res;
			cb->done = true;
		}
		break;
	}
	pthread_cond_broadcast(&cb->cond);
	pthread_mutex_unlock(&cb->mu);
	return 0;
broken:
	pthread_mutex_lock(&cb->mu);
	it->broken = true;
	it->why = err;
	pthread_cond_broadcast(&cb->cond);
	pthread_mutex_unlock(&cb->mu);
	return r;
}

static void *out_main(void *arg)
{
	struct interp *it = arg;
	bl_codebox *cb = it->cb;
	_cleanup_free_ char *buf = bl_malloc0(BL_AGENT_READ_CHUNK);
	bl_error_t err = BL_ERROR_INIT;
	bool feeding = true;
	for (;;) {
		ssize_t n = bl_process_read(it->p, 1, buf, BL_AGENT_READ_CHUNK, &err);
		if (n <= 0)
			break;
		if (feeding && cbx_decoder_feed(&it->dec, buf, (size_t)n, on_frame, it, &err) < 0) {
			if (!it->broken) {
				pthread_mutex_lock(&cb->mu);
				it->broken = true;
				it->why = err;
				pthread_cond_broadcast(&cb->cond);
				pthread_mutex_unlock(&cb->mu);
			}
			/* Keep draining so the guest side never blocks. */
			feeding = false;
			bl_error_t e2 = BL_ERROR_INIT;
			(void)bl_process_signal(it->p, SIGKILL, &e2);
		}
	}
	bl_exit ex = {0};
	int r = bl_process_wait(it->p, &ex, &err);
	pthread_mutex_lock(&cb->mu);
	it->eof = true;
	it->exited = r == 0;
	it->ex = ex;
	pthread_cond_broadcast(&cb->cond);
	pthread_mutex_unlock(&cb->mu);
	return NULL;
}

static void *err_main(void *arg)
{
	struct interp *it = arg;
	bl_codebox *cb = it->cb;
	char buf[4096];
	bl_error_t err = BL_ERROR_INIT;
	for (;;) {
		ssize_t n = bl_process_read(it->p, 2, buf, sizeof(buf), &err);
		if (n <= 0)
			return NULL;
		pthread_mutex_lock(&cb->mu);
		size_t k = (size_t)n;
		if (k > STDERR_TAIL - 1)
			k = STDERR_TAIL - 1;
		if (it->tail_len + k > STDERR_TAIL - 1) {
			size_t drop = it->tail_len + k - (STDERR_TAIL - 1);
			memmove(it->tail, it->tail + drop, it->tail_len - drop);
			it->tail_len -= drop;
		}
		memcpy(it->tail + it->tail_len, buf + (size_t)n - k, k);
		it->tail_len += k;
		it->tail[it->tail_len] = 0;
		pthread_mutex_unlock(&cb->mu);
	}
}

/* ------------------------------------------------------------ interpreters */

static bool join_bounded(pthread_t t)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += JOIN_WAIT_MS / 1000;
	return pthread_timedjoin_np(t, NULL, &ts) == 0;
}

/* Kills the interpreter (its keeper then kills everything it started) and
 * releases it. Called without cb->mu. */
static void interp_kill(bl_codebox *cb, struct interp *it)
{
	if (!it)
		return;
	pthread_mutex_lock(&cb->mu);
	if (cb->it == it)
		cb->it = NULL;
	pthread_mutex_unlock(&cb->mu);
	bl_error_t err = BL_ERROR_INIT;
	(void)bl_process_signal(it->p, SIGKILL, &err);
	bool a = join_bounded(it->out_thr);
	bool b = join_bounded(it->err_thr);
	if (!a || !b) {
		/* A guest that never ends the streams: the threads still use it. */
		cb->leaked = true;
		if (a)
			(void)pthread_detach(it->err_thr);
		else
			(void)pthread_detach(it->out_thr);
		return;
	}
	bl_process_free(it->p);
	cbx_decoder_clear(&it->dec);
	free(it);
}

static int start_failure(bl_codebox *cb, struct interp *it, bl_error_t *err)
{
	pthread_mutex_lock(&cb->mu);
	bool broken = it->broken, eof = it->eof;
	int status = it->exited ? it->ex.status : -1;
	bl_error_t why = it->why;
	char tail[STDERR_TAIL];
	memcpy(tail, it->tail, it->tail_len + 1);
	pthread_mutex_unlock(&cb->mu);
	interp_kill(cb, it);
	if (broken) {
		*err = why;
		return bl_error_prefix(err, "start the Python interpreter");
	}
	if (!eof)
		return bl_set_error(err, BL_ETIMEOUT,
				    "the Python interpreter did not start within %u s",
				    cb->start_timeout_ms / 1000);
	if (status == 127)
		return bl_set_error(
		    err, BL_ENOTFOUND,
		    "%s not found in the image: a code session needs a Python image", cb->python);
	bl_sanitize_text(tail, strlen(tail), true);
	size_t n = strlen(tail);
	const char *t = n > 600 ? tail + n - 600 : tail;
	return bl_set_error(err, BL_EBACKEND,
			    "the Python interpreter failed to start (status %d)%s%s", status,
			    *t ? ": " : "", t);
}

static int interp_start(bl_codebox *cb, bl_error_t *err)
{
	const char *const args[] = {cb->python, "-c", bl_codebox_driver_src, NULL};
	bl_process_options po = {.args = args,
				 .env = (const char *const *)cb->env,
				 .cwd = cb->cwd,
				 .user = cb->user,
				 .stdin_open = true};
	bl_process *p = NULL;
	int r = bl_sandbox_exec(cb->sb, &po, &p, err);
	if (r < 0) {
		if (err->code == BL_ENOTFOUND)
			return bl_set_error(
			    err, BL_ENOTFOUND,
			    "%s not found in the image: a code session needs a Python image",
			    cb->python);
		return bl_error_prefix(err, "start the Python interpreter");
	}
	struct interp *it = bl_malloc0(sizeof(*it));
	it->cb = cb;
	it->p = p;
	cbx_decoder_init(&it->dec);
	if (pthread_create(&it->out_thr, NULL, out_main, it) != 0)
		abort();
	if (pthread_create(&it->err_thr, NULL, err_main, it) != 0)
		abort();
	struct timespec until;
	deadline_after(&until, cb->start_timeout_ms);
	pthread_mutex_lock(&cb->mu);
	cb->it = it;
	while (!it->hello && !it->eof && !it->broken)
		if (pthread_cond_timedwait(&cb->cond, &cb->mu, &until) == ETIMEDOUT)
			break;
	bool ok = it->hello && !it->broken;
	pthread_mutex_unlock(&cb->mu);
	if (!ok)
		return start_failure(cb, it, err);
	return 0;
}

/* ------------------------------------------------------------ public */

static char **strv_dup(const char *const *v)
{
	if (!v)
		return NULL;
	size_t n = 0;
	while (v[n])
		n++;
	char **out = bl_malloc0((n + 1) * sizeof(*out));
	for (size_t i = 0; i < n; i++)
		out[i] = bl_strdup(v[i]);
	return out;
}

static char *dup_or_null(const char *s)
{
	return s ? bl_strdup(s) : NULL;
}

int bl_codebox_create(bl_sandbox *sb, const bl_codebox_options *o, bl_codebox **ret,
		      bl_error_t *err)
{
	static const bl_codebox_options none = {0};
	if (!sb || !ret)
		return bl_set_error(err, BL_EINVAL, "code session: no sandbox");
	if (!o)
		o = &none;
	if (o->python && (!*o->python || strlen(o->python) > 256))
		return bl_set_error(err, BL_EINVAL, "code session: bad interpreter command");
	bl_codebox *cb = bl_malloc0(sizeof(*cb));
	cb->sb = sb;
	cb->python = bl_strdup(o->python ? o->python : "python3");
	cb->env = strv_dup(o->env);
	cb->cwd = dup_or_null(o->cwd);
	cb->user = dup_or_null(o->user);
	cb->max_output = o->max_output ? o->max_output : DEFAULT_MAX_OUTPUT;
	cb->start_timeout_ms = o->start_timeout_ms ? o->start_timeout_ms : DEFAULT_START_TIMEOUT_MS;
	cb->on_output = o->on_output;
	cb->on_output_user = o->on_output_user;
	pthread_mutex_init(&cb->run_mu, NULL);
	pthread_mutex_init(&cb->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&cb->cond, &ca);
	pthread_condattr_destroy(&ca);
	int r = interp_start(cb, err);
	if (r < 0) {
		bl_codebox_free(cb);
		return r;
	}
	*ret = cb;
	return 0;
}

enum run_end { END_DONE, END_GONE, END_BROKEN, END_INTERRUPT, END_TIMEOUT };

/* Waits (cb->mu held) for the run to end or the deadline (NULL: none). */
static enum run_end wait_run(bl_codebox *cb, struct interp *it, const struct timespec *until,
			     bool settling)
{
	for (;;) {
		if (cb->done)
			return END_DONE;
		if (it->broken)
			return END_BROKEN;
		if (it->eof)
			return END_GONE;
		if (!settling && cb->interrupted)
			return END_INTERRUPT;
		int r = until ? pthread_cond_timedwait(&cb->cond, &cb->mu, until)
			      : pthread_cond_wait(&cb->cond, &cb->mu);
		if (r == ETIMEDOUT)
			return END_TIMEOUT;
	}
}

/* The interpreter's stream ended mid-run: its exit as the run's result. */
static int run_gone(bl_codebox *cb, struct interp *it, bl_codebox_result *res, bl_error_t *err)
{
	/* eof is set with the wait's outcome: nothing more to wait for. */
	pthread_mutex_lock(&cb->mu);
	bool exited = it->exited;
	bl_exit ex = it->ex;
	pthread_mutex_unlock(&cb->mu);
	res->state_lost = true;
	int status = exited ? ex.status : 1;
	res->exit_code = status > 0 && status <= 255 ? status : 1;
	if (exited && ex.oom_killed)
		return bl_set_error(
		    err, BL_EOOM,
		    "the Python interpreter ran out of memory and was killed (state lost)");
	if (!exited || !bl_sandbox_alive(cb->sb))
		return bl_set_error(err, BL_EAGENTLOST, "the sandbox went away during the run");
	char msg[128];
	snprintf(msg, sizeof(msg),
		 "boxlite: the Python interpreter exited with status %d; its state is lost\n",
		 status);
	note_stderr(res, msg);
	return 0;
}

static int run_locked(bl_codebox *cb, const char *code, int timeout_ms, bl_codebox_result *res,
		      bl_error_t *err)
{
	pthread_mutex_lock(&cb->mu);
	cb->starting = true;
	cb->pending_interrupt = false;
	struct interp *it = cb->it;
	bool dead = it && (it->eof || it->broken);
	pthread_mutex_unlock(&cb->mu);
	if (dead) {
		interp_kill(cb, it);
		it = NULL;
	}
	if (!it) {
		int r = interp_start(cb, err);
		if (r < 0)
			return r;
		it = cb->it;
	}
	_cleanup_free_ char *frame = NULL;
	size_t frame_len = 0;
	uint64_t rid = ++cb->rid;
	int r = cbx_encode_code(rid, code, strlen(code), &frame, &frame_len, err);
	if (r < 0)
		return r;
	uint64_t t0 = bl_now_monotonic_ns();
	pthread_mutex_lock(&cb->mu);
	bool early = cb->pending_interrupt;
	cb->starting = false;
	cb->active = early ? 0 : rid;
	cb->res = early ? NULL : res;
	cb->done = false;
	cb->interrupted = false;
	pthread_mutex_unlock(&cb->mu);
	if (early) {
		/* Interrupted while the interpreter started: the code never ran. */
		res->exit_code = 128 + SIGINT;
		res->timed_out = true;
		return bl_set_error(err, BL_ECANCELED, "run interrupted before it started");
	}

	r = bl_process_write(it->p, frame, frame_len, err);
	enum run_end end = END_BROKEN;
	struct timespec until;
	if (r == 0) {
		if (timeout_ms > 0)
			deadline_after(&until, (unsigned)timeout_ms);
		pthread_mutex_lock(&cb->mu);
		end = wait_run(cb, it, timeout_ms > 0 ? &until : NULL, false);
		pthread_mutex_unlock(&cb->mu);
	}
	bool stopped = end == END_INTERRUPT || end == END_TIMEOUT;
	if (stopped) {
		/* KeyboardInterrupt; the state stays if the run stops in time. */
		bl_error_t e2 = BL_ERROR_INIT;
		(void)bl_process_signal(it->p, SIGINT, &e2);
		deadline_after(&until, INTERRUPT_WAIT_MS);
		pthread_mutex_lock(&cb->mu);
		enum run_end settled = wait_run(cb, it, &until, true);
		pthread_mutex_unlock(&cb->mu);
		res->timed_out = true;
		res->exit_code = 128 + SIGINT;
		res->state_lost = settled != END_DONE;
	}
	pthread_mutex_lock(&cb->mu);
	cb->active = 0;
	cb->res = NULL;
	cbx_result got = cb->r;
	bl_error_t why = it->why;
	pthread_mutex_unlock(&cb->mu);
	res->duration_ms = (double)(bl_now_monotonic_ns() - t0) / 1e6;
	if (stopped && res->state_lost) {
		interp_kill(cb, it);
		note_stderr(res, "boxlite: the run did not stop when interrupted: the "
				 "interpreter was killed and its state is lost\n");
	}

	if (r < 0) {
		interp_kill(cb, it);
		res->state_lost = true;
		return bl_error_prefix(err, "send the code to the interpreter");
	}
	if (end == END_TIMEOUT)
		return bl_set_error(
		    err, BL_ETIMEOUT, "run timed out after %g s%s", timeout_ms / 1000.0,
		    res->state_lost ? " (interpreter killed, state lost)"
				    : " (interrupted with KeyboardInterrupt, state kept)");
	if (end == END_INTERRUPT)
		return bl_set_error(err, BL_ECANCELED, "run interrupted%s",
				    res->state_lost ? " (interpreter killed, state lost)" : "");
	if (end == END_BROKEN) {
		interp_kill(cb, it);
		res->state_lost = true;
		*err = why;
		return bl_error_prefix(err, "the interpreter was killed");
	}
	if (end == END_GONE)
		return run_gone(cb, it, res, err);
	res->exit_code = got.exit_code;
	memcpy(res->error, got.error, sizeof(res->error));
	memcpy(res->resource, got.resource, sizeof(res->resource));
	return 0;
}

int bl_codebox_run(bl_codebox *cb, const char *code, int timeout_ms, bl_codebox_result *res,
		   bl_error_t *err)
{
	if (res)
		*res = (bl_codebox_result){0};
	if (!cb || !code || !res)
		return bl_set_error(err, BL_EINVAL, "code session: no session, code or result");
	if (strlen(code) > BL_CODEBOX_MAX_CODE)
		return bl_set_error(err, BL_EINVAL, "code is over %u MiB",
				    BL_CODEBOX_MAX_CODE >> 20);
	pthread_mutex_lock(&cb->run_mu);
	int r = run_locked(cb, code, timeout_ms, res, err);
	pthread_mutex_lock(&cb->mu);
	cb->starting = false;
	cb->pending_interrupt = false;
	pthread_mutex_unlock(&cb->mu);
	pthread_mutex_unlock(&cb->run_mu);
	if (!res->stdout_data)
		res->stdout_data = bl_strdup("");
	if (!res->stderr_data)
		res->stderr_data = bl_strdup("");
	return r;
}

void bl_codebox_interrupt(bl_codebox *cb)
{
	if (!cb)
		return;
	pthread_mutex_lock(&cb->mu);
	if (cb->active) {
		cb->interrupted = true;
		pthread_cond_broadcast(&cb->cond);
	} else if (cb->starting) {
		cb->pending_interrupt = true;
	}
	pthread_mutex_unlock(&cb->mu);
}

int bl_codebox_restart(bl_codebox *cb, bl_error_t *err)
{
	if (!cb)
		return bl_set_error(err, BL_EINVAL, "code session: none");
	pthread_mutex_lock(&cb->run_mu);
	pthread_mutex_lock(&cb->mu);
	struct interp *it = cb->it;
	pthread_mutex_unlock(&cb->mu);
	interp_kill(cb, it);
	int r = interp_start(cb, err);
	pthread_mutex_unlock(&cb->run_mu);
	return r;
}

uint32_t bl_codebox_pid(bl_codebox *cb)
{
	if (!cb)
		return 0;
	pthread_mutex_lock(&cb->mu);
	uint32_t pid = cb->it ? cb->it->pid : 0;
	pthread_mutex_unlock(&cb->mu);
	return pid;
}

void bl_codebox_free(bl_codebox *cb)
{
	if (!cb)
		return;
	interp_kill(cb, cb->it);
	if (cb->leaked)
		return;
	pthread_cond_destroy(&cb->cond);
	pthread_mutex_destroy(&cb->mu);
	pthread_mutex_destroy(&cb->run_mu);
	free(cb->python);
	free(cb->cwd);
	free(cb->user);
	bl_strv_free(cb->env);
	free(cb);
}

void bl_codebox_result_clear(bl_codebox_result *res)
{
	if (!res)
		return;
	free(res->stdout_data);
	free(res->stderr_data);
	*res = (bl_codebox_result){0};
}
