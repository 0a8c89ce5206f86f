/*
 * ttrpc server: a leader/follower worker pool with lazy hand-off. Exactly one
 * thread at a time holds a connection's "reader role". It runs each request's
 * handler itself, so a fast call costs no thread switch and no futex at all.
 * A monitor thread watches the handlers running this way: one that has run
 * longer than HANDOFF_NS (it blocks, e.g. a Wait) loses the reader role to an
 * idle or new worker, which goes on reading, so a blocked handler holds up
 * the rest of its connection for at most about 2 * HANDOFF_NS. The monitor
 * sleeps on a timerfd that handlers arm lazily (see watch_start): handlers
 * that finish in time wake it never, and cost at most one timerfd_settime per
 * HANDOFF_NS of wall time, however many run. Replies go out
 * with one sendmsg/writev under a per-connection write lock; while the next
 * request is already buffered, the reader holds its replies back and sends
 * them together before it would block (or its successor does, when its
 * handler blocks and the role moves on). A timer thread
 * answers DeadlineExceeded for handlers that overrun timeout_nano; their late
 * replies are dropped.
 */
#include "ttrpc_internal.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Per-connection bounds: beyond them a request gets ResourceExhausted. */
#define MAX_INFLIGHT	   128
#define MAX_INFLIGHT_BYTES (64u << 20)
/* Blocked handlers each hold a thread; past this, reading waits for one. */
#define MAX_WORKERS	 1024
#define MIN_IDLE_WORKERS 2
#define IDLE_TIMEOUT_NS	 (10ull * 1000000000ull)
/* Request bodies up to this size are read onto the reader's stack. */
#define STACK_BODY 8192
/* Replies the reader role holds back while more requests are already
 * buffered, to send them together: at most this many bytes. */
#define OUT_BUF (32u * 1024)
/* A handler running longer than this loses its connection's reader role. */
#define HANDOFF_NS 500000ull

enum { ROLE_READING, ROLE_INLINE, ROLE_GIVEN };

typedef struct method_entry {
	struct method_entry *next;
	char *service;
	char *method;
	ttrpc_handler_fn fn;
	void *user;
} method_entry;

typedef struct srv_conn srv_conn;
struct srv_conn {
	ttrpc_server *srv;
	ttrpc_io io;
	ttrpc_reader rd;  /* reader role only */
	uint32_t last_id; /* reader role only */
	uint8_t *obuf;	  /* reader role only: replies held back */
	size_t olen;
	pthread_mutex_t wlock;
	atomic_int refs; /* the reader role, each running call, a firing timer */
	atomic_uint inflight;
	atomic_size_t inflight_bytes;
	/* ROLE_* in the low 2 bits; the rest counts inline handlers and
	 * hand-offs, so a thread that lost the role can never mistake a later
	 * holder's state for its own, nor a scan one handler for the next. */
	_Atomic uint64_t role;
	_Atomic uint64_t inline_since; /* when its inline handler started */
	void *conn_data;
	srv_conn *prev, *next; /* server's list, under srv->lock */
	srv_conn *qnext;       /* work queue, under srv->lock */
};

typedef struct srv_call {
	srv_conn *conn;
	uint32_t id;
	uint64_t deadline;
	atomic_int done; /* first to set it sends the reply */
	bool in_timer;	 /* under tlock */
	struct srv_call *tprev, *tnext;
} srv_call;

typedef struct listener {
	ttrpc_server *srv;
	int fd;
	pthread_t thr;
	bool running;
	struct listener *next;
} listener;

struct ttrpc_server {
	_Atomic(method_entry *) methods;
	void *(*opened)(void *user, int fd);
	void (*closed)(void *user, void *conn_data);
	void *cb_user;
	bool same_uid; /* accept only peers with our effective uid (SO_PEERCRED) */
	int wake_fd;
	atomic_uint nhandlers;

	pthread_mutex_t lock;
	pthread_cond_t work_cond;  /* work queued, or exiting */
	pthread_cond_t state_cond; /* a count below dropped */
	srv_conn *conns;
	unsigned nconns;
	srv_conn *qhead, *qtail;
	unsigned nqueued, nthreads, nidle;
	bool started, shut, exiting, timer_joined;
	listener *listeners;

	pthread_mutex_t tlock;
	pthread_cond_t tcond;
	srv_call *thead;
	bool tstop, trunning;
	pthread_t tthr;

	/* Hand-off monitor. Invariant: each watched handler (ROLE_INLINE) that
	 * started at t is seen by a scan no later than about t + 2 * HANDOFF_NS:
	 * mon_deadline != 0 is when mon_tfd fires next (it only ever moves later
	 * when a single handler is watched), and each scan re-arms for the
	 * handlers it leaves running. */
	atomic_uint inline_running;    /* watched handlers */
	_Atomic uint64_t mon_deadline; /* 0: disarmed */
	pthread_mutex_t mlock;	       /* serializes arming; mon_deadline writes */
	int mon_tfd;
	bool mstop; /* under mlock */
	pthread_t mthr;
};

static __thread ttrpc_server *tl_worker_of;

static void cond_init_monotonic(pthread_cond_t *c)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
}

static struct timespec ns_to_ts(uint64_t ns)
{
	return (struct timespec){.tv_sec = (time_t)(ns / 1000000000ull),
				 .tv_nsec = (long)(ns % 1000000000ull)};
}

/* Threads of the library never take the process's signals. */
static int thread_create(pthread_t *t, bool detached, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	pthread_attr_t a;
	sigfillset(&all);
	pthread_attr_init(&a);
	if (detached)
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(t, &a, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&a);
	return rc;
}

/* ------------------------------------------------------------------ connections */

static void conn_ref(srv_conn *c)
{
	atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

static void conn_unref(srv_conn *c)
{
	if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
		return;
	ttrpc_server *s = c->srv;
	/* Off the list before its fd is closed: shutdown walks the list and
	 * calls shutdown(2) on each fd, which must not hit a reused number. */
	pthread_mutex_lock(&s->lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	pthread_mutex_unlock(&s->lock);
	ttrpc_io_destroy(&c->io);
	ttrpc_reader_free(&c->rd);
	free(c->obuf);
	if (s->closed)
		s->closed(s->cb_user, c->conn_data);
	pthread_mutex_lock(&s->lock);
	s->nconns--;
	pthread_cond_broadcast(&s->state_cond);
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_destroy(&c->wlock);
	free(c);
}

static void *worker_main(void *arg);
static uint64_t watch_start(ttrpc_server *s, srv_conn *c);

static void spawn_worker(ttrpc_server *s)
{
	pthread_t t;
	if (thread_create(&t, true, worker_main, s) != 0) {
		bl_warn("ttrpc: cannot start a worker thread");
		pthread_mutex_lock(&s->lock);
		s->nthreads--;
		pthread_cond_broadcast(&s->state_cond);
		pthread_mutex_unlock(&s->lock);
	}
}

/* Gives c's reader role (and the reference that goes with it) to a worker. */
static void pool_post(ttrpc_server *s, srv_conn *c)
{
	bool spawn = false;
	pthread_mutex_lock(&s->lock);
	if (s->exiting) {
		pthread_mutex_unlock(&s->lock);
		conn_unref(c);
		return;
	}
	c->qnext = NULL;
	if (s->qtail)
		s->qtail->qnext = c;
	else
		s->qhead = c;
	s->qtail = c;
	s->nqueued++;
	if (s->started) {
		if (s->nidle >= s->nqueued) {
			pthread_cond_signal(&s->work_cond);
		} else if (s->nthreads < MAX_WORKERS) {
			s->nthreads++;
			spawn = true;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (spawn)
		spawn_worker(s);
}

static __attribute__((format(printf, 4, 5))) void conn_status(srv_conn *c, uint32_t id, int code,
							      const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ttrpc_send_response(&c->io, &c->wlock, id, code, msg, NULL, 0) < 0)
		ttrpc_io_wake(&c->io);
}

/* ------------------------------------------------------------------ timer */

static void timer_add(ttrpc_server *s, srv_call *call)
{
	pthread_mutex_lock(&s->tlock);
	srv_call *prev = NULL, *cur = s->thead;
	while (cur && cur->deadline <= call->deadline) {
		prev = cur;
		cur = cur->tnext;
	}
	call->tprev = prev;
	call->tnext = cur;
	if (cur)
		cur->tprev = call;
	if (prev)
		prev->tnext = call;
	else
		s->thead = call;
	call->in_timer = true;
	if (!prev)
		pthread_cond_signal(&s->tcond);
	pthread_mutex_unlock(&s->tlock);
}

static void timer_unlink_locked(ttrpc_server *s, srv_call *call)
{
	if (call->tprev)
		call->tprev->tnext = call->tnext;
	else
		s->thead = call->tnext;
	if (call->tnext)
		call->tnext->tprev = call->tprev;
	call->in_timer = false;
}

static void timer_remove(ttrpc_server *s, srv_call *call)
{
	pthread_mutex_lock(&s->tlock);
	if (call->in_timer)
		timer_unlink_locked(s, call);
	pthread_mutex_unlock(&s->tlock);
}

static void *timer_main(void *arg)
{
	ttrpc_server *s = arg;
	pthread_mutex_lock(&s->tlock);
	while (!s->tstop) {
		srv_call *call = s->thead;
		if (!call) {
			pthread_cond_wait(&s->tcond, &s->tlock);
			continue;
		}
		if (call->deadline > bl_now_monotonic_ns()) {
			struct timespec ts = ns_to_ts(call->deadline);
			pthread_cond_timedwait(&s->tcond, &s->tlock, &ts);
			continue;
		}
		timer_unlink_locked(s, call);
		if (atomic_exchange(&call->done, 1) != 0)
			continue;
		/* The handler still holds its conn reference: ours keeps it past that. */
		srv_conn *c = call->conn;
		uint32_t id = call->id;
		conn_ref(c);
		pthread_mutex_unlock(&s->tlock);
		conn_status(c, id, TTRPC_DEADLINE_EXCEEDED, "context deadline exceeded");
		conn_unref(c);
		pthread_mutex_lock(&s->tlock);
	}
	pthread_mutex_unlock(&s->tlock);
	return NULL;
}

/* ------------------------------------------------------------------ dispatch */

static const method_entry *lookup(ttrpc_server *s, const ttrpc_request *req, bool *service_found)
{
	*service_found = false;
	for (const method_entry *m = atomic_load_explicit(&s->methods, memory_order_acquire); m;
	     m = m->next) {
		if (strcmp(m->service, req->service) != 0)
			continue;
		*service_found = true;
		if (strcmp(m->method, req->method) == 0)
			return m;
	}
	return NULL;
}

static void handler_done(ttrpc_server *s)
{
	/* Only a shutdown called from a handler waits on this count. */
	if (atomic_fetch_sub(&s->nhandlers, 1) <= 2) {
		pthread_mutex_lock(&s->lock);
		if (s->shut)
			pthread_cond_broadcast(&s->state_cond);
		pthread_mutex_unlock(&s->lock);
	}
}

/* Runs m's handler for one call. True when the reply is the caller's to send
 * (the timer did not answer first): then *code and *msg are set and rep holds
 * the payload, which the caller frees either way, before handler_done(). */
static bool run_call(srv_conn *c, uint32_t id, const ttrpc_request *req, const method_entry *m,
		     struct ttrpc_reply *rep, int *code_out, const char **msg_out)
{
	ttrpc_server *s = c->srv;
	srv_call call = {.conn = c, .id = id};
	atomic_init(&call.done, 0);
	if (req->timeout_nano > 0) {
		uint64_t now = bl_now_monotonic_ns();
		call.deadline = now + (uint64_t)req->timeout_nano;
		if (call.deadline < now)
			call.deadline = UINT64_MAX;
		timer_add(s, &call);
	}

	ttrpc_call cc = {
	    .service = req->service,
	    .method = req->method,
	    .payload = req->payload,
	    .payload_len = req->payload_len,
	    .deadline_ns = call.deadline,
	    .n_metadata = req->n_metadata,
	    .metadata = req->metadata,
	    .conn_data = c->conn_data,
	};
	atomic_fetch_add(&s->nhandlers, 1);
	int rc = m->fn(m->user, &cc, rep);
	if (call.deadline)
		timer_remove(s, &call);
	if (atomic_exchange(&call.done, 1) != 0)
		return false;
	int code = rep->code ? rep->code : rc;
	if (code < 0)
		code = ttrpc_code_from_bl(code);
	if (code > TTRPC_UNAUTHENTICATED)
		code = TTRPC_UNKNOWN;
	const char *msg = rep->code ? rep->message : NULL;
	if (code && !rep->code)
		msg = ttrpc_code_name(code);
	*code_out = code;
	*msg_out = msg;
	return true;
}

/* A whole frame is buffered: the reader will not block to get it. */
static bool rd_has_frame(const ttrpc_reader *r)
{
	size_t have = r->end - r->start;
	if (have < TTRPC_HEADER_LEN)
		return false;
	ttrpc_frame_header h;
	ttrpc_header_decode(r->buf + r->start, &h);
	return have - TTRPC_HEADER_LEN >= h.length;
}

/* Reader role only: sends the replies held back. */
static void conn_flush(srv_conn *c)
{
	if (!c->olen)
		return;
	struct iovec iov = {c->obuf, c->olen};
	c->olen = 0;
	pthread_mutex_lock(&c->wlock);
	int rc = ttrpc_io_writev(&c->io, &iov, 1);
	pthread_mutex_unlock(&c->wlock);
	if (rc < 0)
		ttrpc_io_wake(&c->io);
}

/* Sends a handler's reply. owner: the caller holds the reader role, so the
 * replies held back go out with this one, or this one is held back too when
 * hold and it fits. */
static void conn_reply(srv_conn *c, bool owner, bool hold, uint32_t id, int code, const char *msg,
		       const uint8_t *payload, size_t len)
{
	uint8_t head[TTRPC_RESPONSE_HEAD_MAX];
	size_t hl = ttrpc_encode_response_head(head, id, code, msg, &len);
	if (owner && hold && c->olen + hl + len <= OUT_BUF &&
	    (c->obuf || (c->obuf = malloc(OUT_BUF)))) {
		memcpy(c->obuf + c->olen, head, hl);
		if (len)
			memcpy(c->obuf + c->olen + hl, payload, len);
		c->olen += hl + len;
		return;
	}
	struct iovec iov[3] = {{NULL, 0}, {head, hl}, {(void *)payload, len}};
	if (owner) {
		iov[0] = (struct iovec){c->obuf, c->olen};
		c->olen = 0;
	}
	pthread_mutex_lock(&c->wlock);
	int rc = ttrpc_io_writev(&c->io, iov, 3);
	pthread_mutex_unlock(&c->wlock);
	if (rc < 0)
		ttrpc_io_wake(&c->io);
}

/* Holds c's reader role: reads frames and runs their handlers inline until
 * the connection ends or the monitor hands the role to another worker. */
static void conn_serve(srv_conn *c)
{
	ttrpc_server *s = c->srv;
	ttrpc_frame_header h;
	atomic_store(&c->role, (atomic_load(&c->role) & ~3ull) | ROLE_READING);
	conn_flush(c); /* held back by the last holder, whose handler blocked */
	for (;;) {
		if (c->olen && !rd_has_frame(&c->rd))
			conn_flush(c);
		if (ttrpc_read_header(&c->rd, &c->io, &h) <= 0)
			break;
		uint32_t id = h.stream_id;
		if (h.length > TTRPC_MAX_DATA) {
			if (ttrpc_skip_body(&c->rd, &c->io, h.length) < 0)
				break;
			conn_status(c, id, TTRPC_RESOURCE_EXHAUSTED,
				    "message length %u exceed maximum message size of %u", h.length,
				    TTRPC_MAX_DATA);
			continue;
		}
		if (!(id & 1)) {
			if (ttrpc_skip_body(&c->rd, &c->io, h.length) < 0)
				break;
			conn_status(c, id, TTRPC_INVALID_ARGUMENT,
				    "StreamID must be odd for client initiated streams");
			continue;
		}
		/* Data frames (no streaming methods here) and unknown types: ignored, as Go does.
		 */
		if (h.type != TTRPC_TYPE_REQUEST) {
			if (ttrpc_skip_body(&c->rd, &c->io, h.length) < 0)
				break;
			continue;
		}
		if (id <= c->last_id) {
			if (ttrpc_skip_body(&c->rd, &c->io, h.length) < 0)
				break;
			conn_status(c, id, TTRPC_INVALID_ARGUMENT,
				    "StreamID cannot be re-used and must increment");
			continue;
		}
		c->last_id = id;
		if (atomic_load(&c->inflight) >= MAX_INFLIGHT ||
		    atomic_load(&c->inflight_bytes) + h.length > MAX_INFLIGHT_BYTES) {
			if (ttrpc_skip_body(&c->rd, &c->io, h.length) < 0)
				break;
			conn_status(c, id, TTRPC_RESOURCE_EXHAUSTED,
				    "too many requests in flight on this connection");
			continue;
		}
		/* The body is decoded in place and the handler reads its payload
		 * there: small ones on this stack, large ones read straight into a
		 * block of their own. */
		uint8_t stack_body[STACK_BODY];
		_cleanup_free_ uint8_t *heap_body = NULL;
		uint8_t *body = stack_body;
		if (h.length > sizeof(stack_body)) {
			body = heap_body = malloc(h.length);
			if (!body) {
				if (ttrpc_skip_body(&c->rd, &c->io, h.length) < 0)
					break;
				conn_status(c, id, TTRPC_RESOURCE_EXHAUSTED, "out of memory");
				continue;
			}
		}
		if (ttrpc_read_exact(&c->rd, &c->io, body, h.length) < 0)
			break;
		ttrpc_request req;
		if (ttrpc_request_decode(body, h.length, &req) < 0) {
			conn_status(c, id, TTRPC_INVALID_ARGUMENT,
				    "unmarshal request error: malformed protobuf");
			continue;
		}
		bool svc;
		const method_entry *m = lookup(s, &req, &svc);
		if (!m) {
			conn_status(c, id, TTRPC_UNIMPLEMENTED, svc ? "method %s" : "service %s",
				    svc ? req.method : req.service);
			ttrpc_request_release(&req);
			continue;
		}
		if (req.timeout_nano < 0) {
			conn_status(c, id, TTRPC_DEADLINE_EXCEEDED, "context deadline exceeded");
			ttrpc_request_release(&req);
			continue;
		}
		atomic_fetch_add(&c->inflight, 1);
		atomic_fetch_add(&c->inflight_bytes, h.length);
		conn_ref(c);
		uint64_t inline_role = watch_start(s, c);
		struct ttrpc_reply rep = {0};
		int code = 0;
		const char *msg = NULL;
		bool answer = run_call(c, id, &req, m, &rep, &code, &msg);
		ttrpc_request_release(&req);
		bool kept = atomic_compare_exchange_strong(&c->role, &inline_role,
							   (inline_role & ~3ull) | ROLE_READING);
		if (kept)
			atomic_fetch_sub(&s->inline_running, 1);
		/* With the next request already here, this reply waits to go out
		 * with the next ones (at the latest before this thread would block
		 * reading, or when a new reader takes over). */
		if (answer)
			conn_reply(c, kept, kept && rd_has_frame(&c->rd), id, code, msg,
				   rep.payload, rep.len);
		free(rep.payload);
		handler_done(s);
		atomic_fetch_sub(&c->inflight_bytes, h.length);
		atomic_fetch_sub(&c->inflight, 1);
		conn_unref(c);
		if (!kept)
			return; /* the monitor gave the reader role (and its reference) away */
	}
	conn_flush(c);
	conn_unref(c);
}

/* Makes mon_tfd fire at `at` if it is disarmed or due later; raise: also if
 * it is due earlier (the caller is the only watched handler). */
static void monitor_arm(ttrpc_server *s, uint64_t at, bool raise)
{
	pthread_mutex_lock(&s->mlock);
	uint64_t d = atomic_load(&s->mon_deadline);
	if (!s->mstop && (d == 0 || at < d || (raise && at != d))) {
		struct itimerspec its = {.it_value = ns_to_ts(at)};
		if (timerfd_settime(s->mon_tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
			atomic_store(&s->mon_deadline, at);
		else
			bl_warn("ttrpc: timerfd_settime: %s", strerror(errno));
	}
	pthread_mutex_unlock(&s->mlock);
}

/*
 * Puts c's handler, about to run inline, under watch; returns the role value
 * that the reader swaps back for ROLE_READING if it keeps the role. The timer
 * is only touched when it would fire too late (or not at all) for this
 * handler, or, when no other handler is watched, so early that this one is
 * surely still young then: so a stream of fast handlers moves it out at most
 * once per HANDOFF_NS and it never fires.
 */
static uint64_t watch_start(ttrpc_server *s, srv_conn *c)
{
	uint64_t now = bl_now_monotonic_ns();
	unsigned others = atomic_fetch_add(&s->inline_running, 1);
	atomic_store_explicit(&c->inline_since, now, memory_order_relaxed);
	/* A new sequence number per handler: a scan that read an older one
	 * cannot hand this one off. */
	uint64_t role =
	    ((atomic_load_explicit(&c->role, memory_order_relaxed) & ~3ull) + 4) | ROLE_INLINE;
	/* seq_cst store, then seq_cst load of the deadline: a scan that follows
	 * the deadline we read sees this handler. */
	atomic_store(&c->role, role);
	uint64_t d = atomic_load(&s->mon_deadline);
	if (d == 0 || d > now + 2 * HANDOFF_NS)
		monitor_arm(s, now + 2 * HANDOFF_NS, false);
	else if (d < now + HANDOFF_NS && others == 0)
		monitor_arm(s, now + 2 * HANDOFF_NS, true);
	return role;
}

/* Passes the reader role of connections whose inline handler overran, and
 * re-arms the timer for those still running. */
static void monitor_scan(ttrpc_server *s)
{
	srv_conn *give[64];
	size_t n = 0;
	uint64_t earliest = UINT64_MAX;
	uint64_t now = bl_now_monotonic_ns();
	pthread_mutex_lock(&s->lock);
	for (srv_conn *c = s->conns; c; c = c->next) {
		uint64_t role = atomic_load(&c->role);
		if ((role & 3) != ROLE_INLINE)
			continue;
		uint64_t since = atomic_load_explicit(&c->inline_since, memory_order_relaxed);
		if (now - since < HANDOFF_NS || n == BL_ARRAY_SIZE(give)) {
			if (since < earliest)
				earliest = since;
			continue;
		}
		if (atomic_compare_exchange_strong(&c->role, &role,
						   ((role & ~3ull) + 4) | ROLE_GIVEN)) {
			atomic_fetch_sub(&s->inline_running, 1);
			give[n++] = c;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (earliest != UINT64_MAX)
		monitor_arm(s, earliest + HANDOFF_NS, false);
	for (size_t i = 0; i < n; i++)
		pool_post(s, give[i]);
}

static void *monitor_main(void *arg)
{
	ttrpc_server *s = arg;
	for (;;) {
		uint64_t ticks;
		ssize_t r = read(s->mon_tfd, &ticks, sizeof(ticks));
		if (r < 0 && errno != EINTR && errno != EAGAIN) {
			bl_warn("ttrpc: monitor: read timerfd: %s", strerror(errno));
			break;
		}
		pthread_mutex_lock(&s->mlock);
		bool stop = s->mstop;
		/* Unless it was re-armed since, the timer is spent. */
		if (atomic_load(&s->mon_deadline) <= bl_now_monotonic_ns())
			atomic_store(&s->mon_deadline, 0);
		pthread_mutex_unlock(&s->mlock);
		if (stop)
			break;
		monitor_scan(s);
	}
	return NULL;
}

static void *worker_main(void *arg)
{
	ttrpc_server *s = arg;
	tl_worker_of = s;
	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (!s->qhead && !s->exiting) {
			struct timespec ts = ns_to_ts(bl_now_monotonic_ns() + IDLE_TIMEOUT_NS);
			s->nidle++;
			int rc = pthread_cond_timedwait(&s->work_cond, &s->lock, &ts);
			s->nidle--;
			if (rc == ETIMEDOUT && !s->qhead && s->nidle >= MIN_IDLE_WORKERS)
				goto out;
		}
		if (!s->qhead)
			break;
		srv_conn *c = s->qhead;
		s->qhead = c->qnext;
		if (!s->qhead)
			s->qtail = NULL;
		s->nqueued--;
		pthread_mutex_unlock(&s->lock);
		conn_serve(c);
		pthread_mutex_lock(&s->lock);
	}
out:
	s->nthreads--;
	pthread_cond_broadcast(&s->state_cond);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ------------------------------------------------------------------ setup */

ttrpc_server *ttrpc_server_new(void)
{
	ttrpc_server *s = bl_malloc0(sizeof(*s));
	s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->wake_fd < 0) {
		free(s);
		return NULL;
	}
	atomic_init(&s->methods, NULL);
	atomic_init(&s->nhandlers, 0);
	pthread_mutex_init(&s->lock, NULL);
	cond_init_monotonic(&s->work_cond);
	pthread_cond_init(&s->state_cond, NULL);
	pthread_mutex_init(&s->tlock, NULL);
	cond_init_monotonic(&s->tcond);
	s->mon_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	if (s->mon_tfd < 0) {
		(void)close(s->wake_fd);
		free(s);
		return NULL;
	}
	pthread_mutex_init(&s->mlock, NULL);
	atomic_init(&s->inline_running, 0);
	atomic_init(&s->mon_deadline, 0);
	return s;
}

int ttrpc_server_register(ttrpc_server *srv, const char *service, const char *method,
			  ttrpc_handler_fn fn, void *user)
{
	if (!srv || !service || !method || !fn)
		return -BL_EINVAL;
	method_entry *m = bl_malloc0(sizeof(*m));
	m->service = bl_strdup(service);
	m->method = bl_strdup(method);
	m->fn = fn;
	m->user = user;
	/* Lock-free prepend: readers walk the list without a lock. */
	method_entry *head = atomic_load(&srv->methods);
	do {
		m->next = head;
	} while (!atomic_compare_exchange_weak(&srv->methods, &head, m));
	return 0;
}

void ttrpc_server_set_conn_callbacks(ttrpc_server *srv, void *(*opened)(void *user, int fd),
				     void (*closed)(void *user, void *conn_data), void *user)
{
	srv->opened = opened;
	srv->closed = closed;
	srv->cb_user = user;
}

static int conn_create(ttrpc_server *s, int fd, int wfd, bl_error_t *err)
{
	srv_conn *c = bl_malloc0(sizeof(*c));
	c->srv = s;
	c->io.wake_fd = -1;
	if (ttrpc_io_init_pair(&c->io, fd, wfd, err) < 0 || ttrpc_reader_init(&c->rd) < 0) {
		int rc = err && err->code ? -(int)err->code
					  : bl_set_error(err, BL_ESYSTEM, "ttrpc: out of memory");
		if (c->io.wake_fd >= 0)
			(void)close(c->io.wake_fd);
		if (wfd >= 0 && wfd != fd)
			(void)close(wfd);
		if (fd >= 0)
			(void)close(fd);
		ttrpc_reader_free(&c->rd);
		free(c);
		return rc;
	}
	pthread_mutex_init(&c->wlock, NULL);
	atomic_init(&c->refs, 1);
	atomic_init(&c->inflight, 0);
	atomic_init(&c->inflight_bytes, 0);
	if (s->opened)
		c->conn_data = s->opened(s->cb_user, fd);
	pthread_mutex_lock(&s->lock);
	if (s->shut) {
		pthread_mutex_unlock(&s->lock);
		ttrpc_io_destroy(&c->io);
		ttrpc_reader_free(&c->rd);
		if (s->closed)
			s->closed(s->cb_user, c->conn_data);
		pthread_mutex_destroy(&c->wlock);
		free(c);
		return bl_set_error(err, BL_ESTATE, "ttrpc: server is shut down");
	}
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	pthread_mutex_unlock(&s->lock);
	pool_post(s, c);
	return 0;
}

int ttrpc_server_add_conn(ttrpc_server *srv, int fd, bl_error_t *err)
{
	int rc = conn_create(srv, fd, fd, err);
	return rc < 0 ? bl_error_prefix(err, "ttrpc: add connection") : 0;
}

int ttrpc_server_add_conn_pair(ttrpc_server *srv, int rfd, int wfd, bl_error_t *err)
{
	int rc = conn_create(srv, rfd, wfd, err);
	return rc < 0 ? bl_error_prefix(err, "ttrpc: add connection") : 0;
}

static bool peer_same_uid(int fd)
{
	struct ucred uc;
	socklen_t len = sizeof(uc);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0 || len != sizeof(uc)) {
		bl_warn("ttrpc: SO_PEERCRED: %s; connection refused", strerror(errno));
		return false;
	}
	if (uc.uid != geteuid()) {
		bl_warn("ttrpc: peer pid %d uid %u is not uid %u; connection refused", (int)uc.pid,
			(unsigned)uc.uid, (unsigned)geteuid());
		return false;
	}
	return true;
}

void ttrpc_server_require_same_uid(ttrpc_server *srv, bool on)
{
	srv->same_uid = on;
}

static void *acceptor_main(void *arg)
{
	listener *l = arg;
	ttrpc_server *s = l->srv;
	struct pollfd p[2] = {{.fd = l->fd, .events = POLLIN},
			      {.fd = s->wake_fd, .events = POLLIN}};
	for (;;) {
		int n = poll(p, 2, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || p[1].revents)
			break;
		int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED ||
			    errno == EPROTO)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				bl_warn("ttrpc: accept: %s", strerror(errno));
				(void)poll(&p[1], 1, 100);
				continue;
			}
			bl_warn("ttrpc: accept: %s; listener stopped", strerror(errno));
			break;
		}
		if (s->same_uid && !peer_same_uid(fd)) {
			(void)close(fd);
			continue;
		}
		(void)conn_create(s, fd, fd, NULL);
	}
	return NULL;
}

static int listener_start_locked(listener *l, bl_error_t *err)
{
	int rc = thread_create(&l->thr, false, acceptor_main, l);
	if (rc != 0)
		return bl_set_error_errno(err, rc, "ttrpc: start acceptor thread");
	l->running = true;
	return 0;
}

int ttrpc_server_add_listener(ttrpc_server *srv, int listen_fd, bl_error_t *err)
{
	int fl = fcntl(listen_fd, F_GETFL);
	if (fl < 0 || fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    fcntl(listen_fd, F_SETFD, FD_CLOEXEC) < 0) {
		int e = errno;
		if (listen_fd >= 0)
			(void)close(listen_fd);
		return bl_set_error_errno(err, e, "ttrpc: listener fd %d", listen_fd);
	}
	listener *l = bl_malloc0(sizeof(*l));
	l->srv = srv;
	l->fd = listen_fd;
	pthread_mutex_lock(&srv->lock);
	int rc = 0;
	if (srv->shut)
		rc = bl_set_error(err, BL_ESTATE, "ttrpc: server is shut down");
	else if (srv->started)
		rc = listener_start_locked(l, err);
	if (rc < 0) {
		pthread_mutex_unlock(&srv->lock);
		(void)close(listen_fd);
		free(l);
		return rc;
	}
	l->next = srv->listeners;
	srv->listeners = l;
	pthread_mutex_unlock(&srv->lock);
	return 0;
}

int ttrpc_server_listen_unix(ttrpc_server *srv, const char *path, bl_error_t *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strncmp(path, "unix://", 7) == 0)
		path += 7;
	if (!*path || strlen(path) >= sizeof(sa.sun_path))
		return bl_set_error(err, BL_EINVAL, "ttrpc: bad socket path '%s'", path);
	memcpy(sa.sun_path, path, strlen(path));
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "ttrpc: socket");
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		(void)unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return bl_set_error_errno(err, errno, "ttrpc: bind %s", path);
	/* Nobody can connect before listen(), so this chmod leaves no window. */
	if (chmod(path, 0600) < 0)
		return bl_set_error_errno(err, errno, "ttrpc: chmod %s", path);
	if (listen(fd, SOMAXCONN) < 0)
		return bl_set_error_errno(err, errno, "ttrpc: listen %s", path);
	return ttrpc_server_add_listener(srv, steal_fd(&fd), err);
}

int ttrpc_server_start(ttrpc_server *srv, bl_error_t *err)
{
	pthread_mutex_lock(&srv->lock);
	if (srv->shut || srv->started) {
		pthread_mutex_unlock(&srv->lock);
		return bl_set_error(err, BL_ESTATE, "ttrpc: server already %s",
				    srv->shut ? "shut down" : "started");
	}
	int rc = thread_create(&srv->tthr, false, timer_main, srv);
	if (rc != 0) {
		pthread_mutex_unlock(&srv->lock);
		return bl_set_error_errno(err, rc, "ttrpc: start timer thread");
	}
	rc = thread_create(&srv->mthr, false, monitor_main, srv);
	if (rc != 0) {
		pthread_mutex_lock(&srv->tlock);
		srv->tstop = true;
		pthread_cond_signal(&srv->tcond);
		pthread_mutex_unlock(&srv->tlock);
		pthread_mutex_unlock(&srv->lock);
		pthread_join(srv->tthr, NULL);
		return bl_set_error_errno(err, rc, "ttrpc: start monitor thread");
	}
	srv->trunning = true;
	srv->started = true;
	for (listener *l = srv->listeners; l; l = l->next) {
		if (listener_start_locked(l, err) < 0) {
			pthread_mutex_unlock(&srv->lock);
			return bl_error_prefix(err, "ttrpc: start");
		}
	}
	unsigned spawn = srv->nqueued;
	srv->nthreads += spawn;
	pthread_mutex_unlock(&srv->lock);
	for (unsigned i = 0; i < spawn; i++)
		spawn_worker(srv);
	return 0;
}

void ttrpc_server_shutdown(ttrpc_server *srv)
{
	if (!srv)
		return;
	bool self = tl_worker_of == srv;
	listener *ls = NULL;
	srv_conn *orphans = NULL;
	pthread_mutex_lock(&srv->lock);
	if (!srv->shut) {
		srv->shut = true;
		uint64_t one = 1;
		(void)!write(srv->wake_fd, &one, sizeof(one));
		/* Running handlers still get their replies out. */
		for (srv_conn *c = srv->conns; c; c = c->next)
			ttrpc_io_stop_reading(&c->io);
	}
	ls = srv->listeners;
	srv->listeners = NULL;
	if (!srv->started) {
		/* No worker will ever take these reader roles: drop them here. */
		orphans = srv->qhead;
		srv->qhead = srv->qtail = NULL;
		srv->nqueued = 0;
	}
	pthread_mutex_unlock(&srv->lock);

	while (ls) {
		listener *next = ls->next;
		if (ls->running)
			pthread_join(ls->thr, NULL);
		(void)close(ls->fd);
		free(ls);
		ls = next;
	}
	while (orphans) {
		srv_conn *next = orphans->qnext;
		conn_unref(orphans);
		orphans = next;
	}

	pthread_mutex_lock(&srv->lock);
	if (self) {
		while (atomic_load(&srv->nhandlers) > 1)
			pthread_cond_wait(&srv->state_cond, &srv->lock);
	} else {
		while (srv->nconns > 0)
			pthread_cond_wait(&srv->state_cond, &srv->lock);
	}
	srv->exiting = true;
	pthread_cond_broadcast(&srv->work_cond);
	while (srv->nthreads > (self ? 1u : 0u))
		pthread_cond_wait(&srv->state_cond, &srv->lock);
	bool join_timer = srv->trunning && !srv->timer_joined;
	srv->timer_joined = true;
	pthread_mutex_unlock(&srv->lock);

	if (join_timer) {
		pthread_mutex_lock(&srv->tlock);
		srv->tstop = true;
		pthread_cond_signal(&srv->tcond);
		pthread_mutex_unlock(&srv->tlock);
		if (pthread_equal(pthread_self(), srv->tthr))
			pthread_detach(srv->tthr);
		else
			pthread_join(srv->tthr, NULL);
		pthread_mutex_lock(&srv->mlock);
		srv->mstop = true;
		struct itimerspec its = {.it_value = {0, 1}}; /* relative: fire now */
		(void)timerfd_settime(srv->mon_tfd, 0, &its, NULL);
		pthread_mutex_unlock(&srv->mlock);
		pthread_join(srv->mthr, NULL);
	}
}

void ttrpc_server_free(ttrpc_server *srv)
{
	if (!srv)
		return;
	ttrpc_server_shutdown(srv);
	pthread_mutex_lock(&srv->lock);
	while (srv->nthreads > 0 || srv->nconns > 0)
		pthread_cond_wait(&srv->state_cond, &srv->lock);
	pthread_mutex_unlock(&srv->lock);
	method_entry *m = atomic_load(&srv->methods);
	while (m) {
		method_entry *next = m->next;
		free(m->service);
		free(m->method);
		free(m);
		m = next;
	}
	(void)close(srv->wake_fd);
	pthread_mutex_destroy(&srv->lock);
	pthread_cond_destroy(&srv->work_cond);
	pthread_cond_destroy(&srv->state_cond);
	pthread_mutex_destroy(&srv->tlock);
	pthread_cond_destroy(&srv->tcond);
	pthread_mutex_destroy(&srv->mlock);
	(void)close(srv->mon_tfd);
	free(srv);
}
