/* Processes in a sandbox's container: start, stdio, signals, wait. */
#include "sandbox_internal.h"
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
#include <sys/random.h>
#include <unistd.h>

static bl_process *process_new(bl_sandbox *sb, const char *eid, uint32_t pid, bool tty)
{
	bl_process *p = bl_malloc0(sizeof(*p));
	p->sb = sb;
	snprintf(p->eid, sizeof(p->eid), "%s", eid);
	p->pid = pid;
	p->tty = tty;
	return p;
}

int bl_sandbox_start(bl_sandbox *sb, bl_process **ret, bl_error_t *err)
{
	if (!sb->owned)
		return bl_set_error(err, BL_ESTATE, "only the owner starts the init process");
	if (sb->init_started)
		return bl_set_error(err, BL_ESTATE, "init process already started");
	uint32_t pid = 0;
	int r = bl_agent_start_process(sb->agent, BL_CONTAINER_ID, "", NULL, sb->layer.terminal,
				       sb->stdin_open, &pid, err);
	if (r < 0)
		return bl_sandbox_map_error(sb, bl_error_prefix(err, "start"), err);
	sb->init_started = true;
	*ret = process_new(sb, "", pid, sb->layer.terminal);
	return 0;
}

int bl_sandbox_exec(bl_sandbox *sb, const bl_process_options *po, bl_process **ret, bl_error_t *err)
{
	if (!po->args || !po->args[0] || !po->args[0][0])
		return bl_set_error(err, BL_EINVAL, "exec needs a command");
	bl_spec_process mine = {
	    .args = po->args,
	    .env = po->env,
	    .cwd = po->cwd,
	    .user = po->user,
	    .terminal = po->tty,
	};
	const bl_spec_process *layers[] = {&mine, &sb->layer};
	_cleanup_free_ char *json = NULL;
	int r = bl_spec_process_json(layers, 2, &sb->img, &json, err);
	if (r < 0)
		return r;
	uint8_t rnd[6];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return bl_set_error_errno(err, errno, "getrandom");
	char eid[40];
	snprintf(eid, sizeof(eid), "x%d-%02x%02x%02x%02x%02x%02x", (int)getpid(), rnd[0], rnd[1],
		 rnd[2], rnd[3], rnd[4], rnd[5]);
	uint32_t pid = 0;
	uint64_t t0 = bl_now_monotonic_ns();
	r = bl_agent_start_process(sb->agent, BL_CONTAINER_ID, eid, json, po->tty, po->stdin_open,
				   &pid, err);
	bl_debug("exec %s: StartProcess took %.1f ms", po->args[0],
		 (double)(bl_now_monotonic_ns() - t0) / 1e6);
	if (r < 0)
		return bl_sandbox_map_error(sb, bl_error_prefix(err, "exec %s", po->args[0]), err);
	*ret = process_new(sb, eid, pid, po->tty);
	return 0;
}

uint32_t bl_process_pid(const bl_process *p)
{
	return p->pid;
}

int bl_process_write(bl_process *p, const void *buf, size_t len, bl_error_t *err)
{
	const uint8_t *b = buf;
	while (len > 0) {
		size_t n = 0;
		int r =
		    bl_agent_write_stdin(p->sb->agent, BL_CONTAINER_ID, p->eid, b, len, &n, err);
		if (r < 0)
			return bl_sandbox_map_error(p->sb, r, err);
		b += n;
		len -= n;
	}
	return 0;
}

int bl_process_close_stdin(bl_process *p, bl_error_t *err)
{
	int r = bl_agent_close_stdin(p->sb->agent, BL_CONTAINER_ID, p->eid, err);
	return bl_sandbox_map_error(p->sb, r, err);
}

ssize_t bl_process_read(bl_process *p, int stream, void *buf, size_t len, bl_error_t *err)
{
	if (p->tty && stream == 2)
		return 0; /* a pty carries both streams on stdout */
	ssize_t n =
	    bl_agent_read_output(p->sb->agent, BL_CONTAINER_ID, p->eid, stream, buf, len, err);
	return n < 0 ? bl_sandbox_map_error(p->sb, (int)n, err) : n;
}

int bl_process_resize(bl_process *p, unsigned rows, unsigned cols, bl_error_t *err)
{
	int r = bl_agent_resize_pty(p->sb->agent, BL_CONTAINER_ID, p->eid, rows, cols, err);
	return bl_sandbox_map_error(p->sb, r, err);
}

int bl_process_signal(bl_process *p, int sig, bl_error_t *err)
{
	if (sig <= 0 || sig >= 65)
		return bl_set_error(err, BL_EINVAL, "signal %d out of range", sig);
	int r = bl_agent_signal_process(p->sb->agent, BL_CONTAINER_ID, p->eid, sig, false, err);
	return bl_sandbox_map_error(p->sb, r, err);
}

int bl_process_wait(bl_process *p, bl_exit *ret, bl_error_t *err)
{
	bl_agent_exit e = {0};
	uint64_t t0 = bl_now_monotonic_ns();
	int r = bl_agent_wait_process(p->sb->agent, BL_CONTAINER_ID, p->eid, 0, &e, err);
	bl_debug("process %s: WaitProcess returned after %.1f ms", p->eid,
		 (double)(bl_now_monotonic_ns() - t0) / 1e6);
	if (r < 0)
		return bl_sandbox_map_error(p->sb, r, err);
	*ret = (bl_exit){.status = e.status, .signal = e.signal, .oom_killed = e.oom_killed};
	if (e.oom_killed && e.status != 0)
		return bl_set_error(err, BL_EOOM,
				    "out of memory: the sandbox's memory limit killed the program "
				    "(status %d)",
				    e.status);
	return 0;
}

void bl_process_free(bl_process *p)
{
	free(p);
}

/* ------------------------------------------------------------ stdio pumps */

struct pump {
	bl_process *p;
	int stream; /* 1, 2; 0 = stdin */
	int fd;
	int cancel_fd; /* stdin pump: readable when it should stop */
	int r;
	bl_error_t err;
};

static void *output_main(void *arg)
{
	struct pump *pu = arg;
	_cleanup_free_ char *buf = bl_malloc0(BL_AGENT_READ_CHUNK);
	bool sink_ok = pu->fd >= 0;
	for (;;) {
		ssize_t n = bl_process_read(pu->p, pu->stream, buf, BL_AGENT_READ_CHUNK, &pu->err);
		if (n <= 0) {
			pu->r = (int)n;
			break;
		}
		if (sink_ok && bl_write_full(pu->fd, buf, (size_t)n) < 0)
			sink_ok = false; /* keep draining so the guest never blocks */
	}
	return NULL;
}

static void *input_main(void *arg)
{
	struct pump *pu = arg;
	_cleanup_free_ char *buf = bl_malloc0(BL_AGENT_READ_CHUNK);
	for (;;) {
		struct pollfd fds[2] = {{.fd = pu->fd, .events = POLLIN},
					{.fd = pu->cancel_fd, .events = POLLIN}};
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (fds[1].revents)
			return NULL;
		ssize_t n = read(pu->fd, buf, BL_AGENT_READ_CHUNK);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			break;
		pu->r = bl_process_write(pu->p, buf, (size_t)n, &pu->err);
		if (pu->r < 0)
			return NULL; /* the process closed its stdin or ended */
	}
	bl_error_t ignored = BL_ERROR_INIT;
	(void)bl_process_close_stdin(pu->p, &ignored);
	return NULL;
}

int bl_process_run_io(bl_process *p, int in_fd, int out_fd, int err_fd, bl_exit *ret,
		      bl_error_t *err)
{
	struct pump out = {.p = p, .stream = 1, .fd = out_fd};
	struct pump errp = {.p = p, .stream = 2, .fd = err_fd};
	int cancel[2] = {-1, -1};
	struct pump in = {.p = p, .fd = in_fd};
	pthread_t t_out, t_err, t_in;
	bool have_err = !p->tty, have_in = in_fd >= 0;
	if (have_in) {
		if (pipe2(cancel, O_CLOEXEC) < 0)
			return bl_set_error_errno(err, errno, "pipe");
		in.cancel_fd = cancel[0];
		if (pthread_create(&t_in, NULL, input_main, &in)) {
			have_in = false;
			close(cancel[0]);
			close(cancel[1]);
		}
	}
	if (pthread_create(&t_out, NULL, output_main, &out))
		abort();
	if (have_err && pthread_create(&t_err, NULL, output_main, &errp))
		abort();
	/* Wait in parallel with the readers: one round trip less. */
	bl_error_t werr = BL_ERROR_INIT;
	int r = bl_process_wait(p, ret, &werr);
	pthread_join(t_out, NULL);
	if (have_err)
		pthread_join(t_err, NULL);
	if (have_in) {
		(void)!write(cancel[1], "x", 1);
		pthread_join(t_in, NULL);
		close(cancel[0]);
		close(cancel[1]);
	}
	if (r < 0) {
		if (err)
			*err = werr;
		return r;
	}
	return 0;
}
