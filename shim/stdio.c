/*
 * A process's stdio as containerd names it: FIFO paths (bare or fifo://),
 * file:// (append), binary:// loggers (fd 3 stdout, fd 4 stderr, fd 5 ready),
 * and the pumps between those fds and the guest process.
 *
 * FIFOs are opened O_RDWR: the open never blocks on a reader that is not
 * there yet, writes never fail with EPIPE while the client is away (runc's
 * shim keeps a reader end open for the same reason), and stdin never sees a
 * spurious EOF: it ends when containerd sends CloseIO, after the pump has
 * drained what the client wrote.
 */
#include "shim.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PUMP_CHUNK	    (64u << 10)
#define LOGGER_READY_MS	    10000
#define LOGGER_EXIT_WAIT_MS 10000

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decoding (and '+' as space in a query), in place. */
static void url_decode(char *s, bool query)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (*r == '%' && hexval(r[1]) >= 0 && hexval(r[2]) >= 0) {
			*w++ = (char)(hexval(r[1]) * 16 + hexval(r[2]));
			r += 2;
		} else if (query && *r == '+') {
			*w++ = ' ';
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

/* binary:///path?k=v&k2 -> argv {path, k, v, k2, NULL} (containerd's order is a map's). */
static char **logger_argv(const char *uri)
{
	const char *rest = strstr(uri, "://") + 3;
	/* An authority, if any, is not part of the path. */
	if (*rest != '/') {
		const char *slash = strchr(rest, '/');
		rest = slash ? slash : rest + strlen(rest);
	}
	_cleanup_free_ char *copy = bl_strdup(rest);
	char *q = strchr(copy, '?');
	if (q)
		*q++ = '\0';
	char *hash = q ? strchr(q, '#') : strchr(copy, '#');
	if (hash)
		*hash = '\0';
	size_t n = 2;
	for (char *c = q; c && *c; c++)
		if (*c == '&')
			n++;
	char **argv = bl_malloc0((2 * n + 2) * sizeof(char *));
	url_decode(copy, false);
	size_t k = 0;
	argv[k++] = bl_strdup(copy);
	for (char *save = NULL, *kv = q ? strtok_r(q, "&", &save) : NULL; kv;
	     kv = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(kv, '=');
		if (eq)
			*eq++ = '\0';
		url_decode(kv, true);
		argv[k++] = bl_strdup(kv);
		if (eq && *eq) {
			url_decode(eq, true);
			argv[k++] = bl_strdup(eq);
		}
	}
	argv[k] = NULL;
	return argv;
}

static int spawn_logger(shim_stdio *io, const char *uri, const char *id, const char *ns,
			bl_error_t *err)
{
	_cleanup_strv_ char **argv = logger_argv(uri);
	if (!argv[0][0] || argv[0][0] != '/')
		return bl_set_error(err, BL_EINVAL, "logger %s: not an absolute path", uri);
	int out[2], errp[2], ready[2];
	if (pipe2(out, O_CLOEXEC) < 0)
		return bl_set_error_errno(err, errno, "pipe");
	if (pipe2(errp, O_CLOEXEC) < 0) {
		close(out[0]);
		close(out[1]);
		return bl_set_error_errno(err, errno, "pipe");
	}
	if (pipe2(ready, O_CLOEXEC) < 0) {
		close(out[0]);
		close(out[1]);
		close(errp[0]);
		close(errp[1]);
		return bl_set_error_errno(err, errno, "pipe");
	}
	_cleanup_free_ char *e_id = bl_asprintf("CONTAINER_ID=%s", id);
	_cleanup_free_ char *e_ns = bl_asprintf("CONTAINER_NAMESPACE=%s", ns);
	char *envp[] = {e_id, e_ns, NULL};
	pid_t pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		int fds[3] = {out[0], errp[0], ready[1]};
		/* Move the three above 5 first so the dup2s below cannot clobber them. */
		for (int i = 0; i < 3; i++)
			fds[i] = fcntl(fds[i], F_DUPFD, 10);
		for (int i = 0; i < 3; i++)
			if (dup2(fds[i], 3 + i) < 0)
				_exit(127);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
		}
		execve(argv[0], argv, envp);
		_exit(127);
	}
	int e = errno;
	close(out[0]);
	close(errp[0]);
	close(ready[1]);
	if (pid < 0) {
		close(out[1]);
		close(errp[1]);
		close(ready[0]);
		return bl_set_error_errno(err, e, "fork logger");
	}
	io->logger = pid;
	io->out_fd = out[1];
	io->err_fd = errp[1];
	/* Ready when it closes fd 5 (or writes a byte, binary-v2). */
	struct pollfd p = {.fd = ready[0], .events = POLLIN};
	int r = poll(&p, 1, LOGGER_READY_MS);
	close(ready[0]);
	if (r <= 0)
		bl_warn("logger %s not ready after %d ms", argv[0], LOGGER_READY_MS);
	return 0;
}

static const char *fifo_path(const char *p)
{
	return !strncmp(p, "fifo://", 7) ? p + 7 : p;
}

static int open_fifo(const char *path, bool input, bl_error_t *err)
{
	/* stdin: read-only, so the client's close is our EOF (a FIFO polls
	 * HUP only after a writer came and went, never before one came). */
	int fd =
	    open(fifo_path(path), (input ? O_RDONLY | O_NONBLOCK : O_RDWR) | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "open %s", path);
	return fd;
}

int shim_stdio_open(shim_stdio *io, const char *id, const char *ns, bl_error_t *err)
{
	io->in_fd = io->out_fd = io->err_fd = io->in_close_efd = io->out_cancel_efd = -1;
	pthread_mutex_init(&io->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&io->cond, &ca);
	pthread_condattr_destroy(&ca);
	io->inited = true;
	io->out_cancel_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (io->out_cancel_efd < 0)
		return bl_set_error_errno(err, errno, "eventfd");
	const char *out = io->stdout_path;
	if (out && *out && !strncmp(out, "binary://", 9)) {
		if (spawn_logger(io, out, id, ns, err) < 0)
			return -BL_EINVAL;
	} else if (out && *out && !strncmp(out, "file://", 7)) {
		_cleanup_free_ char *p = bl_strdup(out + 7);
		url_decode(p, false);
		io->out_fd = open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
		if (io->out_fd < 0)
			return bl_set_error_errno(err, errno, "open %s", p);
		io->err_fd = fcntl(io->out_fd, F_DUPFD_CLOEXEC, 3);
	} else {
		if (out && *out && (io->out_fd = open_fifo(out, false, err)) < 0)
			return -BL_ESYSTEM;
		const char *e = io->stderr_path;
		if (!io->terminal && e && *e && (io->err_fd = open_fifo(e, false, err)) < 0)
			return -BL_ESYSTEM;
	}
	const char *in = io->stdin_path;
	if (in && *in) {
		if ((io->in_fd = open_fifo(in, true, err)) < 0)
			return -BL_ESYSTEM;
		io->in_close_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (io->in_close_efd < 0)
			return bl_set_error_errno(err, errno, "eventfd");
	}
	return 0;
}

struct pump {
	shim_stdio *io;
	bl_process *p;
	int stream;
	int fd;
	int efd;
};

/* Writes all of buf to a non-blocking fd; false when cancelled or broken. */
static bool write_out(int fd, const char *buf, size_t len, int cancel_fd)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN)
			return false;
		struct pollfd fds[2] = {{.fd = fd, .events = POLLOUT},
					{.fd = cancel_fd, .events = POLLIN}};
		if (poll(fds, 2, -1) < 0 && errno != EINTR)
			return false;
		if (fds[1].revents)
			return false;
	}
	return true;
}

static void *output_main(void *arg)
{
	struct pump *pu = arg;
	shim_stdio *io = pu->io;
	_cleanup_free_ char *buf = bl_malloc0(PUMP_CHUNK);
	bool sink_ok = pu->fd >= 0;
	if (sink_ok) {
		int fl = fcntl(pu->fd, F_GETFL);
		(void)fcntl(pu->fd, F_SETFL, fl | O_NONBLOCK);
	}
	for (;;) {
		bl_error_t err = BL_ERROR_INIT;
		ssize_t n = bl_process_read(pu->p, pu->stream, buf, PUMP_CHUNK, &err);
		if (n <= 0)
			break;
		if (sink_ok && !write_out(pu->fd, buf, (size_t)n, io->out_cancel_efd))
			sink_ok = false; /* keep draining so the guest never blocks */
	}
	/* End of stream: the client sees EOF once our writer end is closed. */
	pthread_mutex_lock(&io->lock);
	int *slot = pu->stream == 1 ? &io->out_fd : &io->err_fd;
	if (*slot >= 0)
		(void)close(*slot);
	*slot = -1;
	io->live--;
	pthread_cond_broadcast(&io->cond);
	pthread_mutex_unlock(&io->lock);
	free(pu);
	return NULL;
}

/* Writes what the FIFO holds right now; false when the process's stdin is gone. */
static bool drain_stdin(struct pump *pu, char *buf, bool *eof)
{
	for (;;) {
		ssize_t n = read(pu->fd, buf, PUMP_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return true;
		if (n <= 0) {
			*eof = true;
			return true;
		}
		bl_error_t err = BL_ERROR_INIT;
		if (bl_process_write(pu->p, buf, (size_t)n, &err) < 0)
			return false;
	}
}

static void *input_main(void *arg)
{
	struct pump *pu = arg;
	_cleanup_free_ char *buf = bl_malloc0(PUMP_CHUNK);
	bool eof = false, alive = true;
	while (alive && !eof) {
		struct pollfd fds[3] = {{.fd = pu->fd, .events = POLLIN},
					{.fd = pu->efd, .events = POLLIN},
					{.fd = pu->io->out_cancel_efd, .events = POLLIN}};
		if (poll(fds, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (fds[2].revents)
			break; /* closing: the process is gone */
		if (fds[0].revents & (POLLIN | POLLHUP | POLLERR))
			alive = drain_stdin(pu, buf, &eof);
		if (fds[1].revents & POLLIN) {
			if (alive)
				(void)drain_stdin(pu, buf, &eof);
			eof = true;
		}
	}
	if (alive && eof) {
		bl_error_t ignored = BL_ERROR_INIT;
		(void)bl_process_close_stdin(pu->p, &ignored);
	}
	free(pu);
	return NULL;
}

static bool start_thread(shim_stdio *io, pthread_t *t, void *(*fn)(void *), bl_process *p,
			 int stream, int fd, int efd)
{
	struct pump *pu = bl_malloc0(sizeof(*pu));
	*pu = (struct pump){.io = io, .p = p, .stream = stream, .fd = fd, .efd = efd};
	if (pthread_create(t, NULL, fn, pu) != 0) {
		free(pu);
		bl_warn("stdio: cannot start a pump thread");
		return false;
	}
	return true;
}

void shim_stdio_start(shim_stdio *io, bl_process *p)
{
	pthread_mutex_lock(&io->lock);
	io->live = io->terminal ? 1 : 2;
	pthread_mutex_unlock(&io->lock);
	io->have_out = start_thread(io, &io->t_out, output_main, p, 1, io->out_fd, -1);
	if (!io->have_out)
		io->live--;
	if (!io->terminal) {
		io->have_err = start_thread(io, &io->t_err, output_main, p, 2, io->err_fd, -1);
		if (!io->have_err)
			io->live--;
	}
	if (io->in_fd >= 0)
		io->have_in =
		    start_thread(io, &io->t_in, input_main, p, 0, io->in_fd, io->in_close_efd);
}

void shim_stdio_close_stdin(shim_stdio *io)
{
	uint64_t one = 1;
	if (io->in_close_efd >= 0)
		(void)!write(io->in_close_efd, &one, sizeof(one));
}

bool shim_stdio_wait_output(shim_stdio *io, int timeout_ms)
{
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&io->lock);
	while (io->live > 0 && pthread_cond_timedwait(&io->cond, &io->lock, &until) == 0)
		;
	bool done = io->live <= 0;
	pthread_mutex_unlock(&io->lock);
	return done;
}

static void reap_logger(pid_t pid)
{
	for (int i = 0; i < LOGGER_EXIT_WAIT_MS / 10; i++) {
		pid_t r = waitpid(pid, NULL, WNOHANG);
		if (r == pid || (r < 0 && errno == ECHILD))
			return;
		usleep(10000);
	}
	(void)kill(pid, SIGKILL);
	(void)waitpid(pid, NULL, 0);
}

void shim_stdio_close(shim_stdio *io)
{
	if (io->out_cancel_efd >= 0) {
		uint64_t one = 1;
		(void)!write(io->out_cancel_efd, &one, sizeof(one));
	}
	if (io->have_in)
		pthread_join(io->t_in, NULL);
	if (io->have_out)
		pthread_join(io->t_out, NULL);
	if (io->have_err)
		pthread_join(io->t_err, NULL);
	io->have_in = io->have_out = io->have_err = false;
	int *fds[] = {&io->in_fd, &io->out_fd, &io->err_fd, &io->in_close_efd, &io->out_cancel_efd};
	for (size_t i = 0; i < BL_ARRAY_SIZE(fds); i++) {
		if (*fds[i] >= 0)
			(void)close(*fds[i]);
		*fds[i] = -1;
	}
	if (io->logger > 0)
		reap_logger(io->logger);
	io->logger = 0;
	if (io->inited) {
		pthread_mutex_destroy(&io->lock);
		pthread_cond_destroy(&io->cond);
		io->inited = false;
	}
}
