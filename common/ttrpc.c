/* ttrpc framing, fd I/O and envelope encoding shared by server and client. */
#include "ttrpc_internal.h"
#include "bl_cleanup.h"
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
#include <unistd.h>

/* ------------------------------------------------------------------ header */

void ttrpc_header_encode(const ttrpc_frame_header *h, uint8_t out[TTRPC_HEADER_LEN])
{
	out[0] = (uint8_t)(h->length >> 24);
	out[1] = (uint8_t)(h->length >> 16);
	out[2] = (uint8_t)(h->length >> 8);
	out[3] = (uint8_t)h->length;
	out[4] = (uint8_t)(h->stream_id >> 24);
	out[5] = (uint8_t)(h->stream_id >> 16);
	out[6] = (uint8_t)(h->stream_id >> 8);
	out[7] = (uint8_t)h->stream_id;
	out[8] = h->type;
	out[9] = h->flags;
}

void ttrpc_header_decode(const uint8_t in[TTRPC_HEADER_LEN], ttrpc_frame_header *h)
{
	h->length = (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | in[3];
	h->stream_id = (uint32_t)in[4] << 24 | (uint32_t)in[5] << 16 | (uint32_t)in[6] << 8 | in[7];
	h->type = in[8];
	h->flags = in[9];
}

/* ------------------------------------------------------------------ codes */

static const char *const code_names[] = {
    "OK",	"Canceled",	   "Unknown",	       "InvalidArgument",   "DeadlineExceeded",
    "NotFound", "AlreadyExists",   "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted",	"OutOfRange",	   "Unimplemented",    "Internal",	    "Unavailable",
    "DataLoss", "Unauthenticated",
};

const char *ttrpc_code_name(int code)
{
	if (code < 0 || (size_t)code >= BL_ARRAY_SIZE(code_names))
		return "Code(?)";
	return code_names[code];
}

/* The one map between bl_code and ttrpc (gRPC) status codes, used by the
 * agent's and the monitor's servers and by every client: each bl_code has its
 * own status, so a code survives a round trip through the protocol. */
static const struct {
	bl_code bl;
	int status;
} code_map[] = {
    {BL_OK, TTRPC_OK},
    {BL_EINVAL, TTRPC_INVALID_ARGUMENT},
    {BL_ETIMEOUT, TTRPC_DEADLINE_EXCEEDED},
    {BL_EOOM, TTRPC_RESOURCE_EXHAUSTED},
    {BL_ENOTFOUND, TTRPC_NOT_FOUND},
    {BL_EBACKEND, TTRPC_UNKNOWN},
    {BL_EAGENTLOST, TTRPC_UNAVAILABLE},
    {BL_ESYSTEM, TTRPC_INTERNAL},
    {BL_EPROTO, TTRPC_DATA_LOSS},
    {BL_EEXIST, TTRPC_ALREADY_EXISTS},
    {BL_ESTATE, TTRPC_FAILED_PRECONDITION},
    {BL_ECANCELED, TTRPC_CANCELLED},
    {BL_EUNSUPPORTED, TTRPC_UNIMPLEMENTED},
};

bl_code ttrpc_code_to_bl(int code)
{
	for (size_t i = 0; i < sizeof(code_map) / sizeof(code_map[0]); i++)
		if (code_map[i].status == code)
			return code_map[i].bl;
	switch (code) {
	case TTRPC_OUT_OF_RANGE:
		return BL_EINVAL;
	case TTRPC_PERMISSION_DENIED:
	case TTRPC_UNAUTHENTICATED:
		return BL_ESYSTEM;
	case TTRPC_ABORTED:
		return BL_ESTATE;
	default:
		return BL_EPROTO; /* not a status code at all */
	}
}

int ttrpc_code_from_bl(int code)
{
	if (code < 0)
		code = -code;
	for (size_t i = 0; i < sizeof(code_map) / sizeof(code_map[0]); i++)
		if ((int)code_map[i].bl == code)
			return code_map[i].status;
	return TTRPC_UNKNOWN;
}

int ttrpc_code_from_error(const bl_error_t *e)
{
	if (e->code == BL_ESYSTEM && (e->sys_errno == EACCES || e->sys_errno == EPERM))
		return TTRPC_PERMISSION_DENIED;
	return ttrpc_code_from_bl(e->code);
}

/* ------------------------------------------------------------------ I/O */

static int set_nonblock(int fd, bl_error_t *err)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return bl_set_error_errno(err, errno, "ttrpc: make fd %d non-blocking", fd);
	return 0;
}

int ttrpc_io_init_pair(ttrpc_io *io, int rfd, int wfd, bl_error_t *err)
{
	struct stat st;
	if (rfd < 0 || wfd < 0)
		return bl_set_error(err, BL_EINVAL, "ttrpc: invalid fd %d/%d", rfd, wfd);
	if (fstat(rfd, &st) < 0)
		return bl_set_error_errno(err, errno, "ttrpc: fstat fd %d", rfd);
	io->fd = rfd;
	io->wfd = wfd;
	io->wake_fd = -1;
	/* A socket wakes with shutdown(2), which needs one fd for both ways. */
	io->is_socket = S_ISSOCK(st.st_mode) && rfd == wfd;
	atomic_init(&io->woken, false);
	atomic_init(&io->rd_done, false);
	if (io->is_socket)
		return 0;
	if (set_nonblock(rfd, err) < 0 || (wfd != rfd && set_nonblock(wfd, err) < 0))
		return -1;
	io->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (io->wake_fd < 0)
		return bl_set_error_errno(err, errno, "ttrpc: eventfd");
	return 0;
}

int ttrpc_io_init(ttrpc_io *io, int fd, bl_error_t *err)
{
	return ttrpc_io_init_pair(io, fd, fd, err);
}

void ttrpc_io_wake(ttrpc_io *io)
{
	atomic_store(&io->woken, true);
	if (io->is_socket) {
		(void)shutdown(io->fd, SHUT_RDWR);
	} else {
		uint64_t one = 1;
		(void)!write(io->wake_fd, &one, sizeof(one));
	}
}

void ttrpc_io_stop_reading(ttrpc_io *io)
{
	atomic_store(&io->rd_done, true);
	if (io->is_socket) {
		(void)shutdown(io->fd, SHUT_RD);
	} else {
		uint64_t one = 1;
		(void)!write(io->wake_fd, &one, sizeof(one));
	}
}

void ttrpc_io_destroy(ttrpc_io *io)
{
	if (io->wfd >= 0 && io->wfd != io->fd)
		(void)close(io->wfd);
	if (io->fd >= 0)
		(void)close(io->fd);
	if (io->wake_fd >= 0)
		(void)close(io->wake_fd);
	io->fd = io->wfd = io->wake_fd = -1;
}

/* Waits until fd is ready for events or the io is woken: 0, or -1 with errno.
 * A writer ignores the wake fd unless the io was woken for writing too. */
static int io_wait(ttrpc_io *io, short events)
{
	bool writing = events & POLLOUT;
	struct pollfd p[2] = {{.fd = writing ? io->wfd : io->fd, .events = events},
			      {.fd = io->wake_fd, .events = POLLIN}};
	for (;;) {
		if (writing && atomic_load(&io->woken)) {
			errno = ECANCELED;
			return -1;
		}
		int n = poll(p, writing ? 1 : 2, writing ? 100 : -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (!writing && p[1].revents) {
			errno = ECANCELED;
			return -1;
		}
		if (n == 0)
			continue;
		return 0;
	}
}

ssize_t ttrpc_io_read(ttrpc_io *io, void *buf, size_t len)
{
	for (;;) {
		if (atomic_load_explicit(&io->woken, memory_order_relaxed) ||
		    atomic_load_explicit(&io->rd_done, memory_order_relaxed)) {
			errno = ECANCELED;
			return -1;
		}
		ssize_t n = read(io->fd, buf, len);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN && !io->is_socket) {
			if (io_wait(io, POLLIN) < 0)
				return -1;
			continue;
		}
		return -1;
	}
}

/*
 * writev(2) on a pipe or char device without SIGPIPE: the library must not
 * kill its host process when the peer is gone, nor change the process's
 * signal dispositions. SIGPIPE is blocked in this thread for the write; one
 * the write raised is consumed before the old mask returns. One already
 * pending before the write is left alone.
 */
static ssize_t writev_nosigpipe(int fd, const struct iovec *iov, int cnt)
{
	sigset_t pipe_set, old, pending;
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	if (pthread_sigmask(SIG_BLOCK, &pipe_set, &old) != 0)
		return writev(fd, iov, cnt);
	bool was_blocked = sigismember(&old, SIGPIPE);
	bool was_pending = false;
	if (!was_blocked) {
		sigemptyset(&pending);
		was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
	}
	ssize_t n = writev(fd, iov, cnt);
	int e = errno;
	if (n < 0 && e == EPIPE && !was_blocked && !was_pending) {
		static const struct timespec zero = {0, 0};
		while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
			;
	}
	if (!was_blocked)
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = e;
	return n;
}

int ttrpc_io_writev(ttrpc_io *io, struct iovec *iov, int cnt)
{
	while (cnt > 0 && iov->iov_len == 0) {
		iov++;
		cnt--;
	}
	while (cnt > 0) {
		if (atomic_load_explicit(&io->woken, memory_order_relaxed)) {
			errno = ECANCELED;
			return -1;
		}
		ssize_t n;
		if (io->is_socket) {
			struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
			n = sendmsg(io->fd, &mh, MSG_NOSIGNAL);
		} else {
			n = writev_nosigpipe(io->wfd, iov, cnt);
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN && !io->is_socket) {
				if (io_wait(io, POLLOUT) < 0)
					return -1;
				continue;
			}
			return -1;
		}
		size_t left = (size_t)n;
		while (cnt > 0 && left >= iov->iov_len) {
			left -= iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + left;
			iov->iov_len -= left;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------ reader */

int ttrpc_reader_init(ttrpc_reader *r)
{
	r->buf = malloc(TTRPC_READ_BUF);
	r->cap = r->buf ? TTRPC_READ_BUF : 0;
	r->start = r->end = 0;
	r->big = false;
	return r->buf ? 0 : -1;
}

void ttrpc_reader_free(ttrpc_reader *r)
{
	free(r->buf);
	r->buf = NULL;
	r->cap = r->start = r->end = 0;
}

/* Makes at least need (<= cap) bytes available, reading no more than that
 * when exact: 1, 0 at EOF with nothing buffered, -1 on error or EOF with a
 * partial buffer. */
static int fill(ttrpc_reader *r, ttrpc_io *io, size_t need, bool exact)
{
	if (r->start == r->end)
		r->start = r->end = 0;
	while (r->end - r->start < need) {
		if (r->cap - r->start < need) {
			memmove(r->buf, r->buf + r->start, r->end - r->start);
			r->end -= r->start;
			r->start = 0;
		}
		size_t want = exact ? need - (r->end - r->start) : r->cap - r->end;
		ssize_t n = ttrpc_io_read(io, r->buf + r->end, want);
		if (n < 0)
			return -1;
		if (n == 0)
			return r->end == r->start ? 0 : -1;
		r->end += (size_t)n;
	}
	return 1;
}

int ttrpc_read_header(ttrpc_reader *r, ttrpc_io *io, ttrpc_frame_header *h)
{
	int rc = fill(r, io, TTRPC_HEADER_LEN, r->big);
	if (rc <= 0)
		return rc;
	ttrpc_header_decode(r->buf + r->start, h);
	r->start += TTRPC_HEADER_LEN;
	return 1;
}

int ttrpc_read_exact(ttrpc_reader *r, ttrpc_io *io, uint8_t *dst, size_t len)
{
	size_t have = r->end - r->start;
	if (have > len)
		have = len;
	memcpy(dst, r->buf + r->start, have);
	r->start += have;
	size_t left = len - have;
	if (left == 0)
		return 1;
	/* Small frames go through the buffer, so one read() can carry several. */
	if (left <= r->cap / 2) {
		r->big = false;
		if (fill(r, io, left, false) <= 0)
			return -1;
		memcpy(dst + have, r->buf + r->start, left);
		r->start += left;
		return 1;
	}
	r->big = true;
	while (have < len) {
		ssize_t n = ttrpc_io_read(io, dst + have, len - have);
		if (n <= 0)
			return -1;
		have += (size_t)n;
	}
	return 1;
}

int ttrpc_read_body(ttrpc_reader *r, ttrpc_io *io, size_t len, uint8_t **out)
{
	*out = NULL;
	if (len == 0)
		return 1;
	_cleanup_free_ uint8_t *p = malloc(len);
	if (!p || ttrpc_read_exact(r, io, p, len) < 0)
		return -1;
	*out = steal_pointer(&p);
	return 1;
}

int ttrpc_skip_body(ttrpc_reader *r, ttrpc_io *io, size_t len)
{
	for (;;) {
		size_t have = r->end - r->start;
		if (have >= len) {
			r->start += len;
			return 1;
		}
		len -= have;
		r->start = r->end = 0;
		ssize_t n = ttrpc_io_read(io, r->buf, r->cap);
		if (n <= 0)
			return -1;
		r->end = (size_t)n;
	}
}

/* ------------------------------------------------------------------ Request decoding */

typedef struct pb_field {
	uint32_t num;
	unsigned wire;
	uint64_t v;	     /* wire type 0 */
	const uint8_t *data; /* wire type 2 */
	size_t len;
} pb_field;

static bool get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t r = 0;
	for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;
		r |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = r;
			return true;
		}
	}
	return false;
}

/* The next field of a message: 1, 0 at its end, -1 when malformed. */
static int pb_next(const uint8_t **p, const uint8_t *end, pb_field *f)
{
	uint64_t tag, len;
	if (*p == end)
		return 0;
	if (!get_varint(p, end, &tag) || tag > UINT32_MAX || tag >> 3 == 0)
		return -1;
	f->num = (uint32_t)(tag >> 3);
	f->wire = tag & 7;
	switch (f->wire) {
	case 0:
		return get_varint(p, end, &f->v) ? 1 : -1;
	case 1:
	case 5:
		len = f->wire == 1 ? 8 : 4;
		if ((size_t)(end - *p) < len)
			return -1;
		*p += len;
		return 1;
	case 2:
		if (!get_varint(p, end, &len) || len > (size_t)(end - *p))
			return -1;
		f->data = *p;
		f->len = (size_t)len;
		*p += len;
		return 1;
	default: /* groups and reserved wire types */
		return -1;
	}
}

typedef struct pb_str {
	const uint8_t *data;
	size_t len;
} pb_str;

/* KeyValue{key = 1, value = 2}: the last of each wins. */
static int kv_parse(const uint8_t *p, size_t n, pb_str *k, pb_str *v)
{
	const uint8_t *end = p + n;
	pb_field f;
	int rc;
	*k = *v = (pb_str){NULL, 0};
	while ((rc = pb_next(&p, end, &f)) > 0) {
		if (f.num != 1 && f.num != 2)
			continue;
		if (f.wire != 2)
			return -1;
		*(f.num == 1 ? k : v) = (pb_str){f.data, f.len};
	}
	return rc;
}

static char *put_str(char **at, pb_str s)
{
	char *r = *at;
	if (s.len)
		memcpy(r, s.data, s.len);
	r[s.len] = 0;
	*at += s.len + 1;
	return r;
}

int ttrpc_request_decode(const uint8_t *buf, size_t len, ttrpc_request *req)
{
	/* Request{service = 1, method = 2, payload = 3, timeout_nano = 4, metadata = 5}. */
	pb_str svc = {NULL, 0}, meth = {NULL, 0}, payload = {NULL, 0}, k, v;
	int64_t timeout = 0;
	size_t n_md = 0, strings = 0;
	const uint8_t *p = buf, *end = buf + len;
	pb_field f;
	int rc;
	while ((rc = pb_next(&p, end, &f)) > 0) {
		if (f.num < 1 || f.num > 5)
			continue;
		if (f.wire != (f.num == 4 ? 0u : 2u))
			return -1;
		switch (f.num) {
		case 1:
			svc = (pb_str){f.data, f.len};
			break;
		case 2:
			meth = (pb_str){f.data, f.len};
			break;
		case 3:
			payload = (pb_str){f.data, f.len};
			break;
		case 4:
			timeout = (int64_t)f.v;
			break;
		case 5:
			if (kv_parse(f.data, f.len, &k, &v) < 0)
				return -1;
			n_md++;
			strings += k.len + v.len + 2;
			break;
		}
	}
	if (rc < 0)
		return -1;
	strings += svc.len + meth.len + 2;
	size_t need = n_md * sizeof(ttrpc_kv) + strings;
	char *at = req->space;
	req->heap = NULL;
	if (need > sizeof(req->space)) {
		at = req->heap = malloc(need);
		if (!at)
			return -1;
	}
	req->metadata = (ttrpc_kv *)(void *)at;
	req->n_metadata = n_md;
	at += n_md * sizeof(ttrpc_kv);
	req->service = put_str(&at, svc);
	req->method = put_str(&at, meth);
	/* Never NULL, so handlers may memcpy from it whatever its length. */
	req->payload = payload.len ? payload.data : (const uint8_t *)"";
	req->payload_len = payload.len;
	req->timeout_nano = timeout;
	/* Second pass: the metadata, already validated. */
	size_t i = 0;
	for (p = buf; i < n_md && pb_next(&p, end, &f) > 0;) {
		if (f.num != 5)
			continue;
		(void)kv_parse(f.data, f.len, &k, &v);
		req->metadata[i].key = put_str(&at, k);
		req->metadata[i].value = put_str(&at, v);
		i++;
	}
	return 0;
}

void ttrpc_request_release(ttrpc_request *req)
{
	free(req->heap);
	req->heap = NULL;
}

/* ------------------------------------------------------------------ encoding */

size_t ttrpc_put_varint(uint8_t *out, uint64_t v)
{
	size_t i = 0;
	while (v >= 0x80) {
		out[i++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	out[i++] = (uint8_t)v;
	return i;
}

static size_t varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* Size of a length-delimited field with a one-byte tag. */
static size_t ld_len(size_t len)
{
	return 1 + varint_len(len) + len;
}

static size_t put_ld(uint8_t *out, uint8_t tag, const void *data, size_t len)
{
	size_t i = 0;
	out[i++] = tag;
	i += ttrpc_put_varint(out + i, len);
	if (len)
		memcpy(out + i, data, len);
	return i + len;
}

static int send_frame(ttrpc_io *io, pthread_mutex_t *wlock, struct iovec *iov, int cnt)
{
	if (!wlock)
		return ttrpc_io_writev(io, iov, cnt);
	pthread_mutex_lock(wlock);
	int rc = ttrpc_io_writev(io, iov, cnt);
	pthread_mutex_unlock(wlock);
	return rc;
}

size_t ttrpc_encode_response_head(uint8_t head[TTRPC_RESPONSE_HEAD_MAX], uint32_t id, int code,
				  const char *msg, size_t *len)
{
	char big[1024];
	if (code == TTRPC_OK && ld_len(*len) > TTRPC_MAX_DATA) {
		code = TTRPC_RESOURCE_EXHAUSTED;
		snprintf(big, sizeof(big), "message length %zu exceed maximum message size of %u",
			 ld_len(*len), TTRPC_MAX_DATA);
		msg = big;
	}
	if (code != TTRPC_OK)
		*len = 0;
	size_t mlen = msg ? strnlen(msg, 1024) : 0;
	/* Status{code=1, message=2} nested as Response field 1. */
	size_t st_len = 0;
	if (code != TTRPC_OK)
		st_len += 1 + varint_len((uint64_t)(int64_t)code);
	if (mlen)
		st_len += ld_len(mlen);
	size_t i = TTRPC_HEADER_LEN;
	if (st_len) {
		head[i++] = 0x0a;
		i += ttrpc_put_varint(head + i, st_len);
		if (code != TTRPC_OK) {
			head[i++] = 0x08;
			i += ttrpc_put_varint(head + i, (uint64_t)(int64_t)code);
		}
		if (mlen)
			i += put_ld(head + i, 0x12, msg, mlen);
	}
	if (*len) {
		head[i++] = 0x12;
		i += ttrpc_put_varint(head + i, *len);
	}
	ttrpc_frame_header h = {.length = (uint32_t)(i - TTRPC_HEADER_LEN + *len),
				.stream_id = id,
				.type = TTRPC_TYPE_RESPONSE};
	ttrpc_header_encode(&h, head);
	return i;
}

int ttrpc_send_response(ttrpc_io *io, pthread_mutex_t *wlock, uint32_t id, int code,
			const char *msg, const uint8_t *payload, size_t len)
{
	uint8_t head[TTRPC_RESPONSE_HEAD_MAX];
	size_t i = ttrpc_encode_response_head(head, id, code, msg, &len);
	struct iovec iov[2] = {{head, i}, {(void *)payload, len}};
	return send_frame(io, wlock, iov, 2);
}

int ttrpc_send_request(ttrpc_io *io, pthread_mutex_t *wlock, uint32_t id, const char *service,
		       const char *method, const uint8_t *payload, size_t len, int64_t timeout_nano,
		       const ttrpc_kv *md, size_t n_md)
{
	size_t slen = strlen(service), mlen = strlen(method);
	size_t head_len = TTRPC_HEADER_LEN + ld_len(slen) + ld_len(mlen) + (len ? 11 : 0);
	size_t tail_len = timeout_nano ? 11 : 0;
	for (size_t k = 0; k < n_md; k++) {
		size_t kvl = ld_len(strlen(md[k].key)) + ld_len(strlen(md[k].value));
		tail_len += ld_len(kvl);
	}
	if (head_len + len + tail_len > TTRPC_MAX_DATA + TTRPC_HEADER_LEN + 32)
		return -2;
	uint8_t stack_head[512], stack_tail[256];
	_cleanup_free_ uint8_t *heap_head = NULL, *heap_tail = NULL;
	uint8_t *head = stack_head, *tail = stack_tail;
	if (head_len > sizeof(stack_head))
		head = heap_head = malloc(head_len);
	if (tail_len > sizeof(stack_tail))
		tail = heap_tail = malloc(tail_len);
	if (!head || !tail) {
		errno = ENOMEM;
		return -1;
	}
	size_t i = TTRPC_HEADER_LEN;
	i += put_ld(head + i, 0x0a, service, slen);
	i += put_ld(head + i, 0x12, method, mlen);
	if (len) {
		head[i++] = 0x1a;
		i += ttrpc_put_varint(head + i, len);
	}
	size_t t = 0;
	if (timeout_nano) {
		tail[t++] = 0x20;
		t += ttrpc_put_varint(tail + t, (uint64_t)timeout_nano);
	}
	for (size_t k = 0; k < n_md; k++) {
		size_t kl = strlen(md[k].key), vl = strlen(md[k].value);
		tail[t++] = 0x2a;
		t += ttrpc_put_varint(tail + t, ld_len(kl) + ld_len(vl));
		t += put_ld(tail + t, 0x0a, md[k].key, kl);
		t += put_ld(tail + t, 0x12, md[k].value, vl);
	}
	size_t total = i - TTRPC_HEADER_LEN + len + t;
	if (total > TTRPC_MAX_DATA)
		return -2;
	ttrpc_frame_header h = {
	    .length = (uint32_t)total, .stream_id = id, .type = TTRPC_TYPE_REQUEST};
	ttrpc_header_encode(&h, head);
	struct iovec iov[3] = {{head, i}, {(void *)payload, len}, {tail, t}};
	return send_frame(io, wlock, iov, 3);
}

/* ------------------------------------------------------------------ replies */

const char *ttrpc_call_metadata(const ttrpc_call *call, const char *key)
{
	for (size_t i = 0; i < call->n_metadata; i++)
		if (strcmp(call->metadata[i].key, key) == 0)
			return call->metadata[i].value;
	return NULL;
}

int ttrpc_reply_raw(ttrpc_reply *reply, uint8_t *payload, size_t len)
{
	free(reply->payload);
	reply->payload = payload;
	reply->len = payload ? len : 0;
	return TTRPC_OK;
}

int ttrpc_reply_message(ttrpc_reply *reply, const ProtobufCMessage *msg)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	uint8_t *p = NULL;
	if (len) {
		p = malloc(len);
		if (!p)
			return ttrpc_reply_error(reply, TTRPC_RESOURCE_EXHAUSTED, "out of memory");
		protobuf_c_message_pack(msg, p);
	}
	return ttrpc_reply_raw(reply, p, len);
}

int ttrpc_reply_error(ttrpc_reply *reply, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reply->message, sizeof(reply->message), fmt, ap);
	va_end(ap);
	reply->code = code;
	return code;
}
