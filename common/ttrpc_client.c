/*
 * ttrpc client: callers write their request under a write lock and sleep on
 * their own condition variable; one reader thread matches responses to calls
 * by stream id. Losing the connection fails every call in flight.
 */
#include "ttrpc_internal.h"
#include "bl_cleanup.h"
#include "bl_util.h"
#include "ttrpc.pb-c.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define NBUCKETS 64

typedef struct pending {
	struct pending *next;
	uint32_t id;
	pthread_cond_t cond;
	bool done;
	int result; /* 0, or -bl_code */
	const char *why;
	ttrpc_status st;
	uint8_t *payload;
	size_t len;
} pending;

struct ttrpc_client {
	ttrpc_io io;
	ttrpc_reader rd;
	pthread_mutex_t wlock;
	pthread_mutex_t lock; /* below */
	uint64_t next_id;     /* odd; ids past UINT32_MAX are exhausted */
	bool closed, joined;
	pthread_t reader;
	pending *buckets[NBUCKETS];
};

static pending **bucket(ttrpc_client *c, uint32_t id)
{
	return &c->buckets[(id >> 1) % NBUCKETS];
}

static pending *take_locked(ttrpc_client *c, uint32_t id)
{
	for (pending **pp = bucket(c, id); *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			pending *p = *pp;
			*pp = p->next;
			return p;
		}
	}
	return NULL;
}

static void complete_locked(pending *p)
{
	p->done = true;
	pthread_cond_signal(&p->cond);
}

static void set_status(ttrpc_status *st, int code, const char *msg)
{
	st->code = code;
	snprintf(st->message, sizeof(st->message), "%s", msg ? msg : "");
}

static void deliver(ttrpc_client *c, uint32_t id, const uint8_t *body, size_t len)
{
	pthread_mutex_lock(&c->lock);
	pending *p = take_locked(c, id);
	pthread_mutex_unlock(&c->lock);
	if (!p)
		return; /* timed out already, or never ours */
	Ttrpc__Response *r = ttrpc__response__unpack(NULL, len, body);
	if (!r) {
		p->result = -BL_EPROTO;
		p->why = "malformed response";
	} else {
		int code = r->status ? r->status->code : TTRPC_OK;
		set_status(&p->st, code, r->status ? r->status->message : "");
		if (code == TTRPC_OK) {
			p->payload = r->payload.data;
			p->len = r->payload.len;
			r->payload.data = NULL;
			r->payload.len = 0;
		}
		ttrpc__response__free_unpacked(r, NULL);
	}
	pthread_mutex_lock(&c->lock);
	complete_locked(p);
	pthread_mutex_unlock(&c->lock);
}

static void *reader_main(void *arg)
{
	ttrpc_client *c = arg;
	ttrpc_frame_header h;
	while (ttrpc_read_header(&c->rd, &c->io, &h) > 0) {
		if (h.length > TTRPC_MAX_DATA) {
			if (ttrpc_skip_body(&c->rd, &c->io, h.length) < 0)
				break;
			pthread_mutex_lock(&c->lock);
			pending *p = take_locked(c, h.stream_id);
			if (p) {
				char msg[128];
				snprintf(msg, sizeof(msg),
					 "message length %u exceed maximum message size of %u",
					 h.length, TTRPC_MAX_DATA);
				set_status(&p->st, TTRPC_RESOURCE_EXHAUSTED, msg);
				complete_locked(p);
			}
			pthread_mutex_unlock(&c->lock);
			continue;
		}
		if (h.type != TTRPC_TYPE_RESPONSE) {
			if (ttrpc_skip_body(&c->rd, &c->io, h.length) < 0)
				break;
			continue;
		}
		uint8_t *body;
		if (ttrpc_read_body(&c->rd, &c->io, h.length, &body) < 0)
			break;
		deliver(c, h.stream_id, body, h.length);
		free(body);
	}
	pthread_mutex_lock(&c->lock);
	c->closed = true;
	for (size_t b = 0; b < NBUCKETS; b++) {
		while (c->buckets[b]) {
			pending *p = c->buckets[b];
			c->buckets[b] = p->next;
			p->result = -BL_EAGENTLOST;
			p->why = "connection closed";
			complete_locked(p);
		}
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

ttrpc_client *ttrpc_client_new(int fd, bl_error_t *err)
{
	return ttrpc_client_new_pair(fd, fd, err);
}

ttrpc_client *ttrpc_client_new_pair(int rfd, int wfd, bl_error_t *err)
{
	ttrpc_client *c = bl_malloc0(sizeof(*c));
	c->io.fd = c->io.wfd = c->io.wake_fd = -1;
	if (ttrpc_io_init_pair(&c->io, rfd, wfd, err) < 0) {
		if (c->io.wake_fd >= 0)
			(void)close(c->io.wake_fd);
		if (wfd >= 0 && wfd != rfd)
			(void)close(wfd);
		if (rfd >= 0)
			(void)close(rfd);
		free(c);
		return NULL;
	}
	if (ttrpc_reader_init(&c->rd) < 0) {
		ttrpc_io_destroy(&c->io);
		free(c);
		bl_set_error(err, BL_ESYSTEM, "ttrpc: out of memory");
		return NULL;
	}
	c->next_id = 1;
	pthread_mutex_init(&c->wlock, NULL);
	pthread_mutex_init(&c->lock, NULL);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&c->reader, NULL, reader_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		ttrpc_io_destroy(&c->io);
		ttrpc_reader_free(&c->rd);
		free(c);
		bl_set_error_errno(err, rc, "ttrpc: start reader thread");
		return NULL;
	}
	return c;
}

ttrpc_client *ttrpc_client_dial_unix(const char *path, bl_error_t *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strncmp(path, "unix://", 7) == 0)
		path += 7;
	size_t len = strlen(path);
	if (!len || len >= sizeof(sa.sun_path)) {
		bl_set_error(err, BL_EINVAL, "ttrpc: bad socket path '%s'", path);
		return NULL;
	}
	memcpy(sa.sun_path, path, len);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		bl_set_error_errno(err, errno, "ttrpc: socket");
		return NULL;
	}
	int rc;
	do {
		rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	} while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		int e = errno;
		(void)close(fd);
		bl_set_error(err, e == ENOENT || e == ECONNREFUSED ? BL_EAGENTLOST : BL_ESYSTEM,
			     "ttrpc: connect %s: %s", path, strerror(e));
		if (err)
			err->sys_errno = e;
		return NULL;
	}
	return ttrpc_client_new(fd, err);
}

int ttrpc_client_call_raw(ttrpc_client *c, const char *service, const char *method,
			  const uint8_t *payload, size_t len, const ttrpc_kv *md, size_t n_md,
			  uint64_t timeout_ns, ttrpc_status *status, uint8_t **ret_payload,
			  size_t *ret_len, bl_error_t *err)
{
	pending p = {0};
	uint64_t deadline = timeout_ns ? bl_now_monotonic_ns() + timeout_ns : 0;
	if (ret_payload)
		*ret_payload = NULL;
	if (ret_len)
		*ret_len = 0;
	if (timeout_ns > INT64_MAX)
		timeout_ns = INT64_MAX;

	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p.cond, &ca);
	pthread_condattr_destroy(&ca);

	/* Ids must reach the wire in increasing order: allocate under the write lock. */
	pthread_mutex_lock(&c->wlock);
	pthread_mutex_lock(&c->lock);
	if (c->closed || c->next_id > UINT32_MAX) {
		pthread_mutex_unlock(&c->lock);
		pthread_mutex_unlock(&c->wlock);
		pthread_cond_destroy(&p.cond);
		return bl_set_error(err, BL_EAGENTLOST, "%s/%s: connection %s", service, method,
				    c->closed ? "closed" : "out of stream ids");
	}
	p.id = (uint32_t)c->next_id;
	c->next_id += 2;
	pending **b = bucket(c, p.id);
	p.next = *b;
	*b = &p;
	pthread_mutex_unlock(&c->lock);
	int src = ttrpc_send_request(&c->io, NULL, p.id, service, method, payload, len,
				     (int64_t)timeout_ns, md, n_md);
	pthread_mutex_unlock(&c->wlock);

	pthread_mutex_lock(&c->lock);
	if (src < 0) {
		bool mine = take_locked(c, p.id) != NULL;
		while (!mine && !p.done)
			pthread_cond_wait(&p.cond, &c->lock);
		pthread_mutex_unlock(&c->lock);
		pthread_cond_destroy(&p.cond);
		free(p.payload);
		if (src == -2)
			return bl_set_error(err, BL_EINVAL, "%s/%s: request larger than %u bytes",
					    service, method, TTRPC_MAX_DATA);
		/* A broken stream: make the reader notice and fail everyone. */
		int e = errno;
		ttrpc_io_wake(&c->io);
		return bl_set_error(err, BL_EAGENTLOST, "%s/%s: send: %s", service, method,
				    strerror(e));
	}
	while (!p.done) {
		if (!deadline) {
			pthread_cond_wait(&p.cond, &c->lock);
			continue;
		}
		struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000ull),
				      .tv_nsec = (long)(deadline % 1000000000ull)};
		if (pthread_cond_timedwait(&p.cond, &c->lock, &ts) != ETIMEDOUT || p.done)
			continue;
		if (take_locked(c, p.id)) {
			pthread_mutex_unlock(&c->lock);
			pthread_cond_destroy(&p.cond);
			return bl_set_error(err, BL_ETIMEOUT, "%s/%s: no response within %llu ms",
					    service, method,
					    (unsigned long long)(timeout_ns / 1000000));
		}
		/* Not in the table any more: the reader is completing it right now. */
		deadline = 0;
	}
	pthread_mutex_unlock(&c->lock);
	pthread_cond_destroy(&p.cond);

	if (p.result < 0) {
		free(p.payload);
		return bl_set_error(err, (bl_code)-p.result, "%s/%s: %s", service, method, p.why);
	}
	if (status)
		*status = p.st;
	/* The server's timer may beat ours to the same deadline. */
	if (timeout_ns && p.st.code == TTRPC_DEADLINE_EXCEEDED) {
		free(p.payload);
		return bl_set_error(err, BL_ETIMEOUT, "%s/%s: %s", service, method, p.st.message);
	}
	if (ret_payload && p.st.code == TTRPC_OK) {
		*ret_payload = p.payload;
		if (ret_len)
			*ret_len = p.len;
	} else {
		free(p.payload);
	}
	return 0;
}

int ttrpc_client_call(ttrpc_client *c, const char *service, const char *method,
		      const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
		      ProtobufCMessage **resp, uint64_t timeout_ns, const ttrpc_kv *md, size_t n_md,
		      ttrpc_status *status, bl_error_t *err)
{
	*resp = NULL;
	size_t len = req ? protobuf_c_message_get_packed_size(req) : 0;
	_cleanup_free_ uint8_t *buf = len ? malloc(len) : NULL;
	if (len && !buf)
		return bl_set_error(err, BL_ESYSTEM, "%s/%s: out of memory", service, method);
	if (len)
		protobuf_c_message_pack(req, buf);
	ttrpc_status st = {0};
	_cleanup_free_ uint8_t *out = NULL;
	size_t out_len = 0;
	int rc = ttrpc_client_call_raw(c, service, method, buf, len, md, n_md, timeout_ns, &st,
				       &out, &out_len, err);
	if (rc < 0)
		return rc;
	if (status)
		*status = st;
	if (st.code != TTRPC_OK)
		return bl_set_error(err, ttrpc_code_to_bl(st.code), "%s/%s: %s", service, method,
				    st.message[0] ? st.message : ttrpc_code_name(st.code));
	*resp = protobuf_c_message_unpack(resp_desc, NULL, out_len, out);
	if (!*resp)
		return bl_set_error(err, BL_EPROTO, "%s/%s: cannot decode %s", service, method,
				    resp_desc->name);
	return 0;
}

void ttrpc_client_close(ttrpc_client *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	bool join = !c->joined;
	c->joined = true;
	c->closed = true;
	pthread_mutex_unlock(&c->lock);
	ttrpc_io_wake(&c->io);
	if (join)
		pthread_join(c->reader, NULL);
}

bool ttrpc_client_is_closed(ttrpc_client *c)
{
	pthread_mutex_lock(&c->lock);
	bool closed = c->closed;
	pthread_mutex_unlock(&c->lock);
	return closed;
}

void ttrpc_client_free(ttrpc_client *c)
{
	if (!c)
		return;
	ttrpc_client_close(c);
	ttrpc_io_destroy(&c->io);
	ttrpc_reader_free(&c->rd);
	pthread_mutex_destroy(&c->wlock);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
