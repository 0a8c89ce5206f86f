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

static bl_process *process_new(bl_container *c, const char *eid, uint32_t pid, bool tty)
{
	bl_process *p = bl_malloc0(sizeof(*p));
	p->sb = c->sb;
	p->c = c;
	snprintf(p->cid, sizeof(p->cid), "%s", c->id);
	snprintf(p->eid, sizeof(p->eid), "%s", eid);
	p->pid = pid;
	p->tty = tty;
	return p;
}

static bl_container *main_of(bl_sandbox *sb, bl_error_t *err)
{
	if (!sb->main)
		bl_set_error(err, BL_ESTATE, "the sandbox has no built-in container (bare)");
	return sb->main;
}

int bl_container_start(bl_container *c, bl_process **ret, bl_error_t *err)
{
	bl_sandbox *sb = c->sb;
	if (!sb->owned)
		return bl_set_error(err, BL_ESTATE, "only the owner starts the init process");
	pthread_mutex_lock(&sb->lock);
	bool started = c->started;
	c->started = true;
	pthread_mutex_unlock(&sb->lock);
	if (started)
		return bl_set_error(err, BL_ESTATE, "init process of %s already started", c->id);
	uint32_t pid = 0;
	int r =
	    bl_agent_start_process(sb->agent, c->id, "", NULL, c->tty, c->stdin_open, &pid, err);
	if (r < 0) {
		pthread_mutex_lock(&sb->lock);
		c->started = false;
		pthread_mutex_unlock(&sb->lock);
		return bl_sandbox_map_error(sb, bl_error_prefix(err, "start"), err);
	}
	*ret = process_new(c, "", pid, c->tty);
	return 0;
}

int bl_sandbox_start(bl_sandbox *sb, bl_process **ret, bl_error_t *err)
{
	bl_container *c = main_of(sb, err);
	return c ? bl_container_start(c, ret, err) : -BL_ESTATE;
}

static int exec_id(const char *want, char *eid, size_t len, bl_error_t *err)
{
	if (!want) {
		uint8_t rnd[6];
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			return bl_set_error_errno(err, errno, "getrandom");
		snprintf(eid, len, "x%d-%02x%02x%02x%02x%02x%02x", (int)getpid(), rnd[0], rnd[1],
			 rnd[2], rnd[3], rnd[4], rnd[5]);
		return 0;
	}
	size_t n = strlen(want);
	bool ok = n > 0 && n <= BL_EXEC_ID_MAX && strcmp(want, ".") && strcmp(want, "..");
	for (const char *s = want; ok && *s; s++)
		ok = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		     (*s >= '0' && *s <= '9') || strchr("_.-", *s);
	if (!ok)
		return bl_set_error(err, BL_EINVAL,
				    "exec id '%.70s' must be 1-64 of [A-Za-z0-9_.-]", want);
	snprintf(eid, len, "%s", want);
	return 0;
}

static int start_exec(bl_container *c, const char *eid, const char *json, bool tty, bool stdin_open,
		      const char *what, bl_process **ret, bl_error_t *err)
{
	uint32_t pid = 0;
	uint64_t t0 = bl_now_monotonic_ns();
	int r = bl_agent_start_process(c->sb->agent, c->id, eid, json, tty, stdin_open, &pid, err);
	bl_debug("exec %s: StartProcess took %.1f ms", what,
		 (double)(bl_now_monotonic_ns() - t0) / 1e6);
	if (r < 0)
		return bl_sandbox_map_error(c->sb, bl_error_prefix(err, "exec %s", what), err);
	*ret = process_new(c, eid, pid, tty);
	return 0;
}

int bl_container_exec(bl_container *c, const char *eid_in, const char *process_json, bool tty,
		      bool stdin_open, bl_process **ret, bl_error_t *err)
{
	if (!process_json || !*process_json)
		return bl_set_error(err, BL_EINVAL, "exec needs an OCI process");
	if (strlen(process_json) > BL_OCI_SPEC_MAX)
		return bl_set_error(err, BL_EINVAL, "exec: process JSON larger than %u bytes",
				    BL_OCI_SPEC_MAX);
	char eid[BL_EXEC_ID_MAX + 1];
	int r = exec_id(eid_in, eid, sizeof(eid), err);
	if (r < 0)
		return r;
	return start_exec(c, eid, process_json, tty, stdin_open, eid, ret, err);
}

int bl_container_exec_opts(bl_container *c, const char *eid_in, const bl_process_options *po,
			   bl_process **ret, bl_error_t *err)
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
	const bl_spec_process *layers[] = {&mine, c->layer};
	_cleanup_free_ char *json = NULL;
	int r = bl_spec_process_json(layers, 2, c->img, &json, err);
	if (r < 0)
		return r;
	if (c->process_json) {
		/* Capabilities, rlimits, no_new_privileges, ... as the spec says. */
		char *merged = NULL;
		r = bl_oci_process_overlay(c->process_json, json, po->user != NULL, po->cwd != NULL,
					   &merged, err);
		if (r < 0)
			return r;
		free(json);
		json = merged;
	}
	char eid[BL_EXEC_ID_MAX + 1];
	r = exec_id(eid_in, eid, sizeof(eid), err);
	if (r < 0)
		return r;
	return start_exec(c, eid, json, po->tty, po->stdin_open, po->args[0], ret, err);
}

int bl_sandbox_exec(bl_sandbox *sb, const bl_process_options *po, bl_process **ret, bl_error_t *err)
{
	bl_container *c = main_of(sb, err);
	return c ? bl_container_exec_opts(c, NULL, po, ret, err) : -BL_ESTATE;
}

const char *bl_process_exec_id(const bl_process *p)
{
	return p->eid;
}

bl_container *bl_process_container(const bl_process *p)
{
	return p->c;
}

int64_t bl_process_exited_at(const bl_process *p)
{
	return p->exited_at_ns;
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
		int r = bl_agent_write_stdin(p->sb->agent, p->cid, p->eid, b, len, &n, err);
		if (r < 0)
			return bl_sandbox_map_error(p->sb, r, err);
		b += n;
		len -= n;
	}
	return 0;
}

int bl_process_close_stdin(bl_process *p, bl_error_t *err)
{
	int r = bl_agent_close_stdin(p->sb->agent, p->cid, p->eid, err);
	return bl_sandbox_map_error(p->sb, r, err);
}

ssize_t bl_process_read(bl_process *p, int stream, void *buf, size_t len, bl_error_t *err)
{
	if (p->tty && stream == 2)
		return 0; /* a pty carries both streams on stdout */
	ssize_t n = bl_agent_read_output(p->sb->agent, p->cid, p->eid, stream, buf, len, err);
	return n < 0 ? bl_sandbox_map_error(p->sb, (int)n, err) : n;
}

int bl_process_resize(bl_process *p, unsigned rows, unsigned cols, bl_error_t *err)
{
	int r = bl_agent_resize_pty(p->sb->agent, p->cid, p->eid, rows, cols, err);
	return bl_sandbox_map_error(p->sb, r, err);
}

int bl_process_signal(bl_process *p, int sig, bl_error_t *err)
{
	if (sig <= 0 || sig >= 65)
		return bl_set_error(err, BL_EINVAL, "signal %d out of range", sig);
	int r = bl_agent_signal_process(p->sb->agent, p->cid, p->eid, sig, false, err);
	return bl_sandbox_map_error(p->sb, r, err);
}

int bl_process_wait(bl_process *p, bl_exit *ret, bl_error_t *err)
{
	bl_agent_exit e = {0};
	uint64_t t0 = bl_now_monotonic_ns();
	int r = bl_agent_wait_process(p->sb->agent, p->cid, p->eid, 0, &e, err);
	bl_debug("process %s: WaitProcess returned after %.1f ms", p->eid,
		 (double)(bl_now_monotonic_ns() - t0) / 1e6);
	if (r < 0)
		return bl_sandbox_map_error(p->sb, r, err);
	*ret = (bl_exit){.status = e.status, .signal = e.signal, .oom_killed = e.oom_killed};
	p->exited_at_ns = e.exited_at_ns;
	if (!p->eid[0]) {
		/* The init ended: so did the container (c may only be used while it
		 * exists, and the sandbox's list says whether it does). */
		pthread_mutex_lock(&p->sb->lock);
		for (bl_container *c = p->sb->containers; c; c = c->next)
			if (c == p->c)
				c->stopped = true;
		pthread_mutex_unlock(&p->sb->lock);
	}
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
