#include "io.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"
#include "sync.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK (64u * 1024)

struct agent_stream {
	uint64_t serial;
	int fd; /* -1 once at EOF or closed */
	uint8_t *buf;
	size_t len, cap;
	bool eof, paused;
	pthread_cond_t cond;
	agent_stream *next;
};

/* One lock for every stream: the epoll thread holds it only to copy a chunk. */
static pthread_mutex_t io_lock = PTHREAD_MUTEX_INITIALIZER;
static agent_stream *streams;
static uint64_t next_serial = 1;
static int epfd = -1;

static agent_stream *find_stream(uint64_t serial)
{
	for (agent_stream *s = streams; s; s = s->next) {
		if (s->serial == serial)
			return s;
	}
	return NULL;
}

/* A paused fd leaves the epoll set entirely: EPOLLHUP is reported even with
 * no events asked for, and would spin. */
static void stream_watch(agent_stream *s, bool on)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = s->serial};
	(void)epoll_ctl(epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, s->fd, &ev);
}

/* Marks EOF and stops watching the fd. Called with io_lock held. */
static void stream_finish(agent_stream *s)
{
	if (s->fd >= 0) {
		if (!s->paused)
			stream_watch(s, false);
		close(s->fd);
		s->fd = -1;
	}
	s->eof = true;
	pthread_cond_broadcast(&s->cond);
}

/* Makes room for one chunk below the cap; false when the buffer is full. */
static bool stream_reserve(agent_stream *s, size_t *room)
{
	if (s->len >= AGENT_STREAM_MAX)
		return false;
	size_t want = s->len + READ_CHUNK;
	if (want > AGENT_STREAM_MAX)
		want = AGENT_STREAM_MAX;
	if (want > s->cap) {
		uint8_t *nb = realloc(s->buf, want);
		if (!nb)
			abort();
		s->buf = nb;
		s->cap = want;
	}
	*room = s->cap - s->len;
	return true;
}

/* Moves one chunk from the fd into the buffer. Called with io_lock held. */
static void stream_pump(agent_stream *s)
{
	size_t room;
	if (s->fd < 0)
		return;
	if (!stream_reserve(s, &room)) {
		s->paused = true;
		stream_watch(s, false);
		return;
	}
	ssize_t n = read(s->fd, s->buf + s->len, room);
	if (n > 0) {
		s->len += (size_t)n;
		pthread_cond_broadcast(&s->cond);
	} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
		stream_finish(s); /* EOF, or EIO from a pty whose slave side closed */
	}
}

static void *io_thread(void *arg)
{
	(void)arg;
	struct epoll_event evs[32];
	for (;;) {
		int n = epoll_wait(epfd, evs, (int)BL_ARRAY_SIZE(evs), -1);
		if (n < 0 && errno != EINTR)
			bl_error_log("epoll_wait: %s", strerror(errno));
		pthread_mutex_lock(&io_lock);
		for (int i = 0; i < n; i++) {
			agent_stream *s = find_stream(evs[i].data.u64);
			if (s)
				stream_pump(s);
		}
		pthread_mutex_unlock(&io_lock);
	}
	return NULL;
}

int agent_io_start(bl_error_t *err)
{
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		return bl_set_error_errno(err, errno, "epoll_create1");
	pthread_t t;
	int r = pthread_create(&t, NULL, io_thread, NULL);
	if (r)
		return bl_set_error_errno(err, r, "start I/O thread");
	pthread_detach(t);
	return 0;
}

agent_stream *agent_stream_new(int fd)
{
	agent_stream *s = bl_malloc0(sizeof(*s));
	s->fd = fd;
	agent_cond_init(&s->cond);
	(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	pthread_mutex_lock(&io_lock);
	s->serial = next_serial++;
	s->next = streams;
	streams = s;
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = s->serial};
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		bl_error_log("epoll_ctl: %s", strerror(errno));
		stream_finish(s);
	}
	pthread_mutex_unlock(&io_lock);
	return s;
}

/* Takes up to max bytes off the front. Called with io_lock held. */
static void stream_take(agent_stream *s, size_t max, uint8_t **ret, size_t *ret_len)
{
	size_t n = s->len < max ? s->len : max;
	*ret = bl_malloc0(n);
	memcpy(*ret, s->buf, n);
	memmove(s->buf, s->buf + n, s->len - n);
	s->len -= n;
	*ret_len = n;
	if (s->len == 0 && s->cap > READ_CHUNK) {
		free(s->buf);
		s->buf = NULL;
		s->cap = 0;
	}
	if (s->paused && s->fd >= 0) {
		s->paused = false;
		stream_watch(s, true);
	}
}

int agent_stream_read(agent_stream *s, size_t max, uint64_t deadline_ns, uint8_t **ret,
		      size_t *ret_len, bool *ret_eof)
{
	*ret = NULL;
	*ret_len = 0;
	*ret_eof = false;
	pthread_mutex_lock(&io_lock);
	while (s->len == 0 && !s->eof) {
		if (!agent_cond_wait_until(&s->cond, &io_lock, deadline_ns))
			break;
	}
	if (s->len > 0)
		stream_take(s, max, ret, ret_len);
	else
		*ret_eof = s->eof;
	pthread_mutex_unlock(&io_lock);
	return 0;
}

void agent_stream_close(agent_stream *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&io_lock);
	stream_finish(s);
	free(s->buf);
	s->buf = NULL;
	s->len = s->cap = 0;
	pthread_mutex_unlock(&io_lock);
}

void agent_stream_free(agent_stream *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&io_lock);
	stream_finish(s);
	for (agent_stream **pp = &streams; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	pthread_mutex_unlock(&io_lock);
	pthread_cond_destroy(&s->cond);
	free(s->buf);
	free(s);
}

struct agent_stdin {
	pthread_mutex_t lock; /* one writer at a time */
	int fd;
	int wake_fd; /* eventfd: wakes a blocked writer on close */
	bool pty, closing;
};

agent_stdin *agent_stdin_new(int fd, bool pty)
{
	agent_stdin *in = bl_malloc0(sizeof(*in));
	pthread_mutex_init(&in->lock, NULL);
	in->fd = fd;
	in->pty = pty;
	in->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return in;
}

/* Waits until fd is writable; false on close, deadline or error. */
static bool stdin_wait(agent_stdin *in, uint64_t deadline_ns)
{
	struct pollfd p[2] = {{.fd = in->fd, .events = POLLOUT},
			      {.fd = in->wake_fd, .events = POLLIN}};
	int timeout = -1;
	if (deadline_ns) {
		uint64_t now = bl_now_monotonic_ns();
		if (now >= deadline_ns)
			return false;
		timeout = (int)((deadline_ns - now) / 1000000ull) + 1;
	}
	int n = poll(p, 2, timeout);
	return n > 0 && !(p[1].revents & POLLIN) &&
	       !__atomic_load_n(&in->closing, __ATOMIC_SEQ_CST);
}

int agent_stdin_write(agent_stdin *in, const void *buf, size_t len, uint64_t deadline_ns,
		      size_t *ret_written, bl_error_t *err)
{
	size_t done = 0;
	int r = 0;
	pthread_mutex_lock(&in->lock);
	while (done < len && r == 0) {
		if (in->fd < 0 || __atomic_load_n(&in->closing, __ATOMIC_SEQ_CST)) {
			r = bl_set_error(err, BL_ESTATE, "stdin is closed");
			break;
		}
		ssize_t n = write(in->fd, (const uint8_t *)buf + done, len - done);
		if (n > 0)
			done += (size_t)n;
		else if (n < 0 && errno == EAGAIN) {
			if (!stdin_wait(in, deadline_ns))
				break;
		} else if (n < 0 && errno != EINTR)
			r = bl_set_error_errno(err, errno, "write stdin");
	}
	pthread_mutex_unlock(&in->lock);
	*ret_written = done;
	return r;
}

int agent_stdin_close(agent_stdin *in, bl_error_t *err)
{
	if (in->pty) {
		size_t w = 0;
		static const char eot = 4; /* VEOF (^D) in canonical mode */
		return agent_stdin_write(in, &eot, 1, bl_now_monotonic_ns() + 1000000000ull, &w,
					 err);
	}
	__atomic_store_n(&in->closing, true, __ATOMIC_SEQ_CST);
	uint64_t one = 1;
	(void)!write(in->wake_fd, &one, sizeof(one));
	pthread_mutex_lock(&in->lock);
	if (in->fd >= 0) {
		close(in->fd);
		in->fd = -1;
	}
	pthread_mutex_unlock(&in->lock);
	return 0;
}

void agent_stdin_free(agent_stdin *in)
{
	if (!in)
		return;
	if (in->fd >= 0)
		close(in->fd);
	if (in->wake_fd >= 0)
		close(in->wake_fd);
	pthread_mutex_destroy(&in->lock);
	free(in);
}
