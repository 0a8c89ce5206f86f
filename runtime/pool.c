/*
 * The warm pool (boxlite.h, pool.h): one owner process per state directory
 * keeps `size` bare VMs booted (agent ready, no Init, nothing shared yet) and
 * hands each to exactly one sandbox: it renames the spare's directory to the
 * sandbox's, passes the agent channel's descriptor over the socket and keeps
 * the libvirt domain, destroying it when the sandbox's lease asks or closes.
 * The sandbox then initialises the guest and binds its image into the share
 * like any bare sandbox's container.
 */
#include "pool.h"
#include "sandbox_internal.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ messages */

union fd_cmsg {
	char buf[CMSG_SPACE(sizeof(int))];
	struct cmsghdr align;
};

static int send_msg(int fd, const bl_pool_msg *m, int pass_fd)
{
	struct iovec iov = {.iov_base = (void *)m, .iov_len = sizeof(*m)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	union fd_cmsg u;
	if (pass_fd >= 0) {
		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	}
	for (;;) {
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		return n == (ssize_t)sizeof(*m) ? 0 : -EPROTO;
	}
}

static bool terminated(const char *s, size_t size)
{
	return memchr(s, '\0', size) != NULL;
}

/* One message (and at most one descriptor) within timeout_ms (-1: no
 * limit): 0, -ETIMEDOUT, -ECONNRESET at EOF, -EPROTO, or -errno. */
static int recv_msg(int fd, bl_pool_msg *m, int *ret_fd, int timeout_ms)
{
	if (ret_fd)
		*ret_fd = -1;
	struct pollfd p = {.fd = fd, .events = POLLIN};
	for (;;) {
		int r = poll(&p, 1, timeout_ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		break;
	}
	union fd_cmsg u;
	struct iovec iov = {.iov_base = m, .iov_len = sizeof(*m)};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = u.buf,
			    .msg_controllen = sizeof(u.buf)};
	ssize_t n;
	do
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == ECONNRESET ? -ECONNRESET : -errno;
	_cleanup_close_ int got = -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len < CMSG_LEN(sizeof(int)))
			continue;
		int one;
		memcpy(&one, CMSG_DATA(c), sizeof(int));
		if (got < 0)
			got = one;
		else
			close(one);
	}
	if (n == 0)
		return -ECONNRESET;
	if (n != (ssize_t)sizeof(*m) || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ||
	    m->magic != BL_POOL_MAGIC || !terminated(m->id, sizeof(m->id)) ||
	    !terminated(m->text, sizeof(m->text)) ||
	    !terminated(m->shape.kernel, sizeof(m->shape.kernel)) ||
	    !terminated(m->shape.initrd, sizeof(m->shape.initrd)) ||
	    !terminated(m->st.accel, sizeof(m->st.accel)) ||
	    !terminated(m->st.last_error, sizeof(m->st.last_error)))
		return -EPROTO;
	if (ret_fd)
		*ret_fd = steal_fd(&got);
	return 0;
}

static bl_pool_msg msg_new(bl_pool_op op)
{
	bl_pool_msg m;
	memset(&m, 0, sizeof(m));
	m.magic = BL_POOL_MAGIC;
	m.op = op;
	return m;
}

static char *sock_path(const char *state_root)
{
	return bl_asprintf("%s/%s/%s", state_root, BL_POOL_DIR, BL_POOL_SOCK);
}

/* The peer must be this user (root): the socket's directory is root's. */
static bool peer_is_us(int fd)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 &&
	       (cr.uid == geteuid() || cr.uid == 0);
}

/* ------------------------------------------------------------ client */

static int pool_connect(const char *state_root, int *ret, bl_error_t *err)
{
	_cleanup_free_ char *path = sock_path(state_root);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return bl_set_error(err, BL_EINVAL, "pool socket path too long: %s", path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "socket");
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno == ENOENT || errno == ECONNREFUSED)
			return bl_set_error(err, BL_ENOTFOUND, "no pool runs for %s", state_root);
		return bl_set_error_errno(err, errno, "connect %s", path);
	}
	if (!peer_is_us(fd))
		return bl_set_error(err, BL_EPROTO, "%s is served by another user", path);
	*ret = steal_fd(&fd);
	return 0;
}

static int reply_error(const bl_pool_msg *r, const char *what, bl_error_t *err)
{
	int code = -r->status;
	if (code <= 0 || code > BL_ENETWORK)
		code = BL_EPROTO;
	return bl_set_error(err, (bl_code)code, "%s: %s", what, r->text[0] ? r->text : "failed");
}

/* Sends m on fd and waits for its reply (and a descriptor, when asked). */
static int request(int fd, const bl_pool_msg *m, bl_pool_msg *reply, int *ret_fd, int timeout_s,
		   const char *what, bl_error_t *err)
{
	int r = send_msg(fd, m, -1);
	if (r < 0)
		return bl_set_error_errno(err, -r, "%s: send", what);
	r = recv_msg(fd, reply, ret_fd, timeout_s * 1000);
	if (r == -ECONNRESET)
		return bl_set_error(err, BL_EAGENTLOST, "%s: the pool's owner went away", what);
	if (r == -ETIMEDOUT)
		return bl_set_error(err, BL_ETIMEOUT, "%s: no reply from the pool in %d s", what,
				    timeout_s);
	if (r < 0)
		return bl_set_error(err, r == -EPROTO ? BL_EPROTO : BL_ESYSTEM,
				    "%s: bad reply from the pool (%s)", what, strerror(-r));
	if (reply->status < 0) {
		if (ret_fd && *ret_fd >= 0) {
			close(*ret_fd);
			*ret_fd = -1;
		}
		return reply_error(reply, what, err);
	}
	return 0;
}

int bl_pool_shape_for(const bl_sandbox_options *o, unsigned memory_mib, bl_pool_shape *ret,
		      char *why, size_t why_len, bl_error_t *err)
{
	memset(ret, 0, sizeof(*ret));
	bl_accel accel;
	int r = bl_accel_choose(o->accel, &accel, why, why_len, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *kernel = o->kernel ? bl_strdup(o->kernel) : bl_default_kernel();
	_cleanup_free_ char *initrd = o->initrd ? bl_strdup(o->initrd) : bl_default_initrd();
	_cleanup_free_ char *k = realpath(kernel, NULL);
	_cleanup_free_ char *i = realpath(initrd, NULL);
	if (!k || !i)
		return bl_set_error(err, BL_ENOTFOUND, "guest kernel %s or initramfs %s: %s",
				    kernel, initrd, strerror(errno));
	if (strlen(k) >= sizeof(ret->kernel) || strlen(i) >= sizeof(ret->initrd))
		return bl_set_error(err, BL_EINVAL, "guest kernel or initramfs path too long");
	snprintf(ret->kernel, sizeof(ret->kernel), "%s", k);
	snprintf(ret->initrd, sizeof(ret->initrd), "%s", i);
	ret->memory_mib = memory_mib ? memory_mib : BL_DEFAULT_MEMORY_MIB;
	ret->vcpus = o->vcpus ? o->vcpus : BL_DEFAULT_VCPUS;
	ret->accel = (uint32_t)accel;
	return 0;
}

int bl_pool_take(const char *state_root, const char *id, const bl_pool_shape *shape, int *ret_lease,
		 int *ret_agent_fd, pid_t *ret_qemu_pid, char *why, size_t why_len, bl_error_t *err)
{
	_cleanup_close_ int fd = -1;
	int r = pool_connect(state_root, &fd, err);
	if (r < 0)
		return r;
	bl_pool_msg m = msg_new(BL_POOL_OP_TAKE), reply;
	m.shape = *shape;
	snprintf(m.id, sizeof(m.id), "%s", id);
	int afd = -1;
	r = request(fd, &m, &reply, &afd, BL_POOL_REPLY_SECS, "pool", err);
	if (r < 0)
		return r;
	if (afd < 0)
		return bl_set_error(err, BL_EPROTO, "pool: no agent channel in the reply");
	if (why && why_len && reply.text[0])
		snprintf(why, why_len, "%s", reply.text);
	*ret_agent_fd = afd;
	*ret_qemu_pid = reply.qemu_pid;
	*ret_lease = steal_fd(&fd);
	return 0;
}

int bl_pool_lease_call(int lease, bl_pool_op op, bl_error_t *err)
{
	bl_pool_msg m = msg_new(op), reply;
	return request(lease, &m, &reply, NULL, BL_POOL_REPLY_SECS, "pooled VM", err);
}

int bl_pool_status_get(const char *state_dir, bl_pool_status *ret, bl_error_t *err)
{
	_cleanup_close_ int fd = -1;
	int r = pool_connect(bl_state_dir(state_dir), &fd, err);
	if (r < 0)
		return r;
	bl_pool_msg m = msg_new(BL_POOL_OP_STATUS), reply;
	r = request(fd, &m, &reply, NULL, BL_POOL_REPLY_SECS, "pool status", err);
	if (r == 0)
		*ret = reply.st;
	return r;
}

int bl_pool_stop(const char *state_dir, bl_error_t *err)
{
	_cleanup_close_ int fd = -1;
	int r = pool_connect(bl_state_dir(state_dir), &fd, err);
	if (r < 0)
		return r;
	bl_pool_msg m = msg_new(BL_POOL_OP_STOP), reply;
	r = request(fd, &m, &reply, NULL, 300, "pool stop", err);
	if (r < 0)
		return r;
	/* The reply comes when everything is gone; then the owner exits. */
	for (int i = 0; i < 500 && reply.st.pid > 0 && kill(reply.st.pid, 0) == 0; i++) {
		struct timespec ts = {0, 20 * 1000000};
		nanosleep(&ts, NULL);
	}
	return 0;
}

/* ------------------------------------------------------------ owner */

typedef struct spare {
	bl_sandbox *sb;
	int fd; /* the agent channel, preamble read */
	uint64_t gen;
	struct spare *next;
} spare;

typedef struct lease {
	int conn;
	struct lease *next;
} lease;

typedef struct pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char *state_root, *dir, *sock;
	bl_pool_shape shape;
	char accel_why[160];
	unsigned size;
	spare *ready;
	unsigned n_ready, n_booting, n_taken, n_threads;
	lease *leases;
	uint64_t served, replaced, failed, gen;
	char last_error[160];
	int refill_wake[2], main_wake[2];
	int stop_conns[8];
	size_t n_stop;
	bool stopping;
} pool;

static void wake_fd(int fd)
{
	(void)!write(fd, "x", 1);
}

static void drain(int fd)
{
	char buf[64];
	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

static void status_fill(pool *p, bl_pool_status *st)
{
	memset(st, 0, sizeof(*st));
	st->pid = (int32_t)getpid();
	st->size = p->size;
	st->ready = p->n_ready;
	st->booting = p->n_booting;
	st->taken = p->n_taken;
	st->memory_mib = p->shape.memory_mib;
	st->vcpus = p->shape.vcpus;
	st->served = p->served;
	st->replaced = p->replaced;
	st->failed = p->failed;
	snprintf(st->accel, sizeof(st->accel), "%s", bl_accel_name((bl_accel)p->shape.accel));
	snprintf(st->last_error, sizeof(st->last_error), "%s", p->last_error);
}

static void spare_free(spare *s)
{
	if (s->fd >= 0)
		close(s->fd);
	bl_sandbox_destroy(s->sb);
	free(s);
}

static bool shape_equal(const bl_pool_shape *a, const bl_pool_shape *b)
{
	return a->memory_mib == b->memory_mib && a->vcpus == b->vcpus && a->accel == b->accel &&
	       !strcmp(a->kernel, b->kernel) && !strcmp(a->initrd, b->initrd);
}

/* Waits (with the lock held) up to `secs` or until stopping. */
static void wait_secs(pool *p, unsigned secs)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += secs;
	while (!p->stopping && pthread_cond_timedwait(&p->cond, &p->lock, &ts) != ETIMEDOUT)
		;
}

static void boot_one(pool *p, unsigned *failures)
{
	p->n_booting++;
	pthread_mutex_unlock(&p->lock);
	bl_sandbox *sb = NULL;
	int fd = -1;
	bl_error_t err = BL_ERROR_INIT;
	int r = bl_sandbox_boot_spare(p->dir, &p->shape, &sb, &fd, &err);
	pthread_mutex_lock(&p->lock);
	p->n_booting--;
	if (r < 0) {
		p->failed++;
		snprintf(p->last_error, sizeof(p->last_error), "%.*s",
			 (int)sizeof(p->last_error) - 1, err.msg);
		bl_warn("pool: boot failed: %s", err.msg);
		/* A host that cannot boot now is not hammered. */
		unsigned secs = 1u << (*failures < 6 ? *failures : 6);
		(*failures)++;
		wait_secs(p, secs);
		return;
	}
	*failures = 0;
	spare *s = bl_malloc0(sizeof(*s));
	s->sb = sb;
	s->fd = fd;
	s->gen = ++p->gen;
	if (p->stopping) {
		pthread_mutex_unlock(&p->lock);
		spare_free(s);
		pthread_mutex_lock(&p->lock);
		return;
	}
	s->next = p->ready;
	p->ready = s;
	p->n_ready++;
	bl_info("pool: VM %s ready (%u of %u)", bl_sandbox_id(sb), p->n_ready, p->size);
	pthread_cond_broadcast(&p->cond);
}

/* Full: sleeps until a spare's channel closes (it died: replaced), a take,
 * or stop. Nothing ticks while idle. */
static void watch_spares(pool *p)
{
	size_t n = p->n_ready, i = 1;
	struct pollfd *pf = bl_malloc0((n + 1) * sizeof(*pf));
	uint64_t *gens = bl_malloc0((n + 1) * sizeof(*gens));
	pf[0] = (struct pollfd){.fd = p->refill_wake[0], .events = POLLIN};
	for (spare *s = p->ready; s && i <= n; s = s->next, i++) {
		pf[i] = (struct pollfd){.fd = s->fd, .events = POLLIN};
		gens[i] = s->gen;
	}
	pthread_mutex_unlock(&p->lock);
	while (poll(pf, i, -1) < 0 && errno == EINTR)
		;
	drain(p->refill_wake[0]);
	pthread_mutex_lock(&p->lock);
	spare *dead = NULL;
	for (size_t k = 1; k < i; k++) {
		if (!pf[k].revents)
			continue;
		for (spare **pp = &p->ready; *pp; pp = &(*pp)->next) {
			if ((*pp)->gen != gens[k])
				continue;
			spare *s = *pp;
			*pp = s->next;
			p->n_ready--;
			p->replaced++;
			bl_warn("pool: spare VM %s went away; replacing it", bl_sandbox_id(s->sb));
			s->next = dead;
			dead = s;
			break;
		}
	}
	pthread_mutex_unlock(&p->lock);
	while (dead) {
		spare *s = dead;
		dead = s->next;
		spare_free(s);
	}
	free(pf);
	free(gens);
	pthread_mutex_lock(&p->lock);
}

static void *refill_main(void *arg)
{
	pool *p = arg;
	unsigned failures = 0;
	pthread_mutex_lock(&p->lock);
	while (!p->stopping) {
		if (p->n_ready + p->n_booting < p->size)
			boot_one(p, &failures);
		else
			watch_spares(p);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* Moves a spare to the sandbox's directory (which exists, empty). */
static int move_spare(pool *p, spare *s, const char *id, char **ret_dir, bl_error_t *err)
{
	if (!bl_sandbox_id_valid(id) || id[0] == '.')
		return bl_set_error(err, BL_EINVAL, "'%.40s' is not a sandbox id", id);
	_cleanup_free_ char *dst = bl_asprintf("%s/%s", p->state_root, id);
	struct stat st;
	if (lstat(dst, &st) < 0 || !S_ISDIR(st.st_mode))
		return bl_set_error(err, BL_ENOTFOUND, "sandbox directory %s is missing", dst);
	/* Over the empty directory the sandbox made: atomic, and it fails
	 * (ENOTEMPTY) if anything else lives there. */
	if (rename(bl_sandbox_dir(s->sb), dst) < 0)
		return bl_set_error_errno(err, errno, "rename %s to %s", bl_sandbox_dir(s->sb),
					  dst);
	bl_sandbox_spare_moved(s->sb, dst, id);
	*ret_dir = steal_pointer(&dst);
	return 0;
}

static void reply_status(int conn, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply_status(int conn, int code, const char *fmt, ...)
{
	bl_pool_msg r = msg_new(0);
	r.status = -code;
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(r.text, sizeof(r.text), fmt, ap);
		va_end(ap);
	}
	(void)send_msg(conn, &r, -1);
}

/* Serves the lease of a taken VM until it closes; then the VM, its share
 * and (unless RELEASE kept it) its directory go. */
static void serve_lease(pool *p, int conn, bl_sandbox *sb)
{
	lease l = {.conn = conn};
	pthread_mutex_lock(&p->lock);
	l.next = p->leases;
	p->leases = &l;
	pthread_mutex_unlock(&p->lock);
	bool kept = false;
	for (;;) {
		bl_pool_msg m;
		if (recv_msg(conn, &m, NULL, -1) < 0)
			break;
		bl_error_t err = BL_ERROR_INIT;
		int r = 0;
		switch (m.op) {
		case BL_POOL_OP_KILL:
			bl_sandbox_spare_kill(sb);
			break;
		case BL_POOL_OP_SUSPEND:
		case BL_POOL_OP_RESUME:
			r = bl_vm_suspend(bl_sandbox_vm(sb), m.op == BL_POOL_OP_SUSPEND, &err);
			break;
		case BL_POOL_OP_RELEASE: {
			bl_sandbox_spare_kill(sb);
			bl_share_unmount(bl_sandbox_dir(sb));
			_cleanup_free_ char *sock =
			    bl_asprintf("%s/agent.sock", bl_sandbox_dir(sb));
			(void)unlink(sock);
			kept = true;
			break;
		}
		default:
			r = bl_set_error(&err, BL_EINVAL, "unknown request %u", m.op);
		}
		reply_status(conn, r < 0 ? (int)err.code : 0, "%s", err.msg);
	}
	bl_info("pool: sandbox %s released its VM", bl_sandbox_id(sb));
	if (kept) {
		free(sb->dir);
		sb->dir = NULL;
		free(steal_pointer(&sb->share));
	}
	bl_sandbox_destroy(sb);
	pthread_mutex_lock(&p->lock);
	for (lease **pp = &p->leases; *pp; pp = &(*pp)->next) {
		if (*pp == &l) {
			*pp = l.next;
			break;
		}
	}
	p->n_taken--;
	pthread_mutex_unlock(&p->lock);
}

static void handle_take(pool *p, int conn, const bl_pool_msg *m)
{
	pthread_mutex_lock(&p->lock);
	spare *s = NULL;
	if (!p->stopping && shape_equal(&m->shape, &p->shape) && p->ready) {
		s = p->ready;
		p->ready = s->next;
		p->n_ready--;
		p->n_taken++;
		p->served++;
		wake_fd(p->refill_wake[1]);
	}
	pthread_mutex_unlock(&p->lock);
	if (!s) {
		reply_status(
		    conn, BL_ENOTFOUND,
		    "no pooled VM of this shape is ready (the pool's: %u MiB, %u vCPU, %s)",
		    p->shape.memory_mib, p->shape.vcpus, bl_accel_name((bl_accel)p->shape.accel));
		return;
	}
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_free_ char *dir = NULL;
	if (move_spare(p, s, m->id, &dir, &err) < 0) {
		/* Nothing of the sandbox reached the VM: it stays a spare. */
		pthread_mutex_lock(&p->lock);
		s->next = p->ready;
		p->ready = s;
		p->n_ready++;
		p->n_taken--;
		p->served--;
		pthread_mutex_unlock(&p->lock);
		reply_status(conn, err.code, "%s", err.msg);
		return;
	}
	pthread_mutex_lock(&s->sb->kill_lock);
	if (bl_vm_set_shares(bl_sandbox_vm(s->sb), BL_VM_SHARES_RUN, &err) < 0)
		bl_debug("pool: %s", err.msg);
	pthread_mutex_unlock(&s->sb->kill_lock);
	bl_pool_msg r = msg_new(BL_POOL_OP_TAKE);
	r.qemu_pid = (int32_t)bl_sandbox_qemu_pid(s->sb);
	snprintf(r.text, sizeof(r.text), "%s", p->accel_why);
	int sent = send_msg(conn, &r, s->fd);
	close(s->fd);
	s->fd = -1;
	bl_sandbox *sb = s->sb;
	free(s);
	bl_info("pool: VM of %s handed over%s", m->id, sent < 0 ? " (the taker is gone)" : "");
	serve_lease(p, conn, sb);
}

typedef struct conn_arg {
	pool *p;
	int conn;
} conn_arg;

static void *conn_main(void *arg)
{
	conn_arg *ca = arg;
	pool *p = ca->p;
	int conn = ca->conn;
	free(ca);
	bl_pool_msg m;
	bool keep = false;
	if (peer_is_us(conn) && recv_msg(conn, &m, NULL, BL_POOL_REPLY_SECS * 1000) == 0) {
		switch (m.op) {
		case BL_POOL_OP_TAKE:
			handle_take(p, conn, &m);
			break;
		case BL_POOL_OP_STATUS: {
			bl_pool_msg r = msg_new(BL_POOL_OP_STATUS);
			pthread_mutex_lock(&p->lock);
			status_fill(p, &r.st);
			pthread_mutex_unlock(&p->lock);
			(void)send_msg(conn, &r, -1);
			break;
		}
		case BL_POOL_OP_STOP:
			pthread_mutex_lock(&p->lock);
			p->stopping = true;
			if (p->n_stop < BL_ARRAY_SIZE(p->stop_conns)) {
				p->stop_conns[p->n_stop++] = conn;
				keep = true;
			}
			pthread_cond_broadcast(&p->cond);
			pthread_mutex_unlock(&p->lock);
			wake_fd(p->refill_wake[1]);
			wake_fd(p->main_wake[1]);
			break;
		default:
			reply_status(conn, BL_EINVAL, "unknown request %u", m.op);
		}
	}
	if (!keep)
		close(conn);
	pthread_mutex_lock(&p->lock);
	p->n_threads--;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static void spawn_conn(pool *p, int conn)
{
	conn_arg *ca = bl_malloc0(sizeof(*ca));
	ca->p = p;
	ca->conn = conn;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_t t;
	pthread_mutex_lock(&p->lock);
	p->n_threads++;
	pthread_mutex_unlock(&p->lock);
	if (pthread_create(&t, &attr, conn_main, ca) != 0) {
		close(conn);
		free(ca);
		pthread_mutex_lock(&p->lock);
		p->n_threads--;
		pthread_mutex_unlock(&p->lock);
	}
	pthread_attr_destroy(&attr);
}

/* Spares a dead owner left behind (their QEMUs end with the channel). */
static void remove_leftovers(const char *dir)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		_cleanup_free_ char *sub = bl_asprintf("%s/%s", dir, de->d_name);
		bl_share_unmount(sub);
		(void)bl_rm_rf(sub, NULL);
	}
}

static int listen_at(const char *path, int *ret, bl_error_t *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return bl_set_error(err, BL_EINVAL, "pool socket path too long: %s", path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "socket");
	(void)unlink(path);
	mode_t old = umask(0177);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || chmod(path, 0600) < 0 || listen(fd, 64) < 0)
		return bl_set_error_errno(err, errno, "listen on %s", path);
	*ret = steal_fd(&fd);
	return 0;
}

static int pool_setup(pool *p, const bl_pool_options *o, int *lock_fd, bl_error_t *err)
{
	if (o->size < 1 || o->size > BL_POOL_MAX_SIZE)
		return bl_set_error(err, BL_EINVAL, "pool size %u out of range (1-%d)", o->size,
				    BL_POOL_MAX_SIZE);
	if (o->memory_mib && (o->memory_mib < 64 || o->memory_mib > 65536))
		return bl_set_error(err, BL_EINVAL, "memory %u MiB out of range (64-65536)",
				    o->memory_mib);
	if (o->vcpus > 64)
		return bl_set_error(err, BL_EINVAL, "cpus %u out of range (1-64)", o->vcpus);
	bl_sandbox_options so = {
	    .kernel = o->kernel, .initrd = o->initrd, .accel = o->accel, .vcpus = o->vcpus};
	int r = bl_pool_shape_for(&so, o->memory_mib, &p->shape, p->accel_why, sizeof(p->accel_why),
				  err);
	if (r < 0)
		return r;
	p->size = o->size;
	p->state_root = bl_strdup(bl_state_dir(o->state_dir));
	p->dir = bl_asprintf("%s/%s", p->state_root, BL_POOL_DIR);
	p->sock = sock_path(p->state_root);
	if ((r = bl_mkdir_p(p->state_root, 0700, err)) < 0 ||
	    (r = bl_mkdir_p(p->dir, 0700, err)) < 0)
		return bl_error_prefix(err, "pool directory");
	if (chmod(p->state_root, 0700) < 0 || chmod(p->dir, 0700) < 0)
		return bl_set_error_errno(err, errno, "chmod %s", p->dir);
	_cleanup_free_ char *lock = bl_asprintf("%s/lock", p->dir);
	*lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (*lock_fd < 0)
		return bl_set_error_errno(err, errno, "open %s", lock);
	if (flock(*lock_fd, LOCK_EX | LOCK_NB) < 0)
		return bl_set_error(err, BL_EEXIST, "a pool already runs for %s", p->state_root);
	remove_leftovers(p->dir);
	if (pipe2(p->refill_wake, O_CLOEXEC | O_NONBLOCK) < 0 ||
	    pipe2(p->main_wake, O_CLOEXEC | O_NONBLOCK) < 0)
		return bl_set_error_errno(err, errno, "pipe");
	return 0;
}

static void report(int fd, int code, const char *msg)
{
	if (fd < 0)
		return;
	char line[1200];
	int n = code ? snprintf(line, sizeof(line), "%d %s\n", code, msg)
		     : snprintf(line, sizeof(line), "OK\n");
	(void)!write(fd, line, (size_t)n);
	close(fd);
}

/* Stop: spares and leased VMs go, then the directory; the STOP callers
 * hear of it last. */
static void pool_teardown(pool *p, pthread_t refill)
{
	pthread_join(refill, NULL);
	pthread_mutex_lock(&p->lock);
	spare *s = p->ready;
	p->ready = NULL;
	p->n_ready = 0;
	for (lease *l = p->leases; l; l = l->next)
		(void)shutdown(l->conn, SHUT_RDWR);
	pthread_mutex_unlock(&p->lock);
	while (s) {
		spare *next = s->next;
		spare_free(s);
		s = next;
	}
	pthread_mutex_lock(&p->lock);
	while (p->n_threads > 0)
		pthread_cond_wait(&p->cond, &p->lock);
	pthread_mutex_unlock(&p->lock);
	(void)unlink(p->sock);
	remove_leftovers(p->dir);
	_cleanup_free_ char *lock = bl_asprintf("%s/lock", p->dir);
	_cleanup_free_ char *log = bl_asprintf("%s/pool.log", p->dir);
	(void)unlink(lock);
	(void)unlink(log);
	(void)rmdir(p->dir);
}

int bl_pool_serve(const bl_pool_options *o, int ready_fd, bl_error_t *err)
{
	pool p = {.refill_wake = {-1, -1}, .main_wake = {-1, -1}};
	pthread_mutex_init(&p.lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p.cond, &ca);
	pthread_condattr_destroy(&ca);
	_cleanup_close_ int lock_fd = -1, lfd = -1;
	int r = pool_setup(&p, o, &lock_fd, err);
	if (r == 0)
		r = listen_at(p.sock, &lfd, err);
	pthread_t refill;
	if (r == 0 && pthread_create(&refill, NULL, refill_main, &p) != 0)
		r = bl_set_error(err, BL_ESYSTEM, "pool: thread");
	if (r < 0) {
		report(ready_fd, 1, err->msg);
		if (lfd >= 0)
			(void)unlink(p.sock);
	} else {
		report(ready_fd, 0, NULL);
		bl_info("pool: serving %s (%u x %u MiB, %u vCPU, %s)", p.sock, p.size,
			p.shape.memory_mib, p.shape.vcpus, p.accel_why);
		for (;;) {
			struct pollfd pf[2] = {{.fd = lfd, .events = POLLIN},
					       {.fd = p.main_wake[0], .events = POLLIN}};
			if (poll(pf, 2, -1) < 0 && errno != EINTR)
				break;
			if (pf[1].revents)
				break;
			if (pf[0].revents & POLLIN) {
				int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
				if (c >= 0)
					spawn_conn(&p, c);
			}
		}
		close(steal_fd(&lfd));
		(void)unlink(p.sock);
		pool_teardown(&p, refill);
		bl_pool_msg done = msg_new(BL_POOL_OP_STOP);
		status_fill(&p, &done.st);
		for (size_t i = 0; i < p.n_stop; i++) {
			(void)send_msg(p.stop_conns[i], &done, -1);
			close(p.stop_conns[i]);
		}
		bl_info("pool: stopped");
	}
	for (int i = 0; i < 2; i++) {
		if (p.refill_wake[i] >= 0)
			close(p.refill_wake[i]);
		if (p.main_wake[i] >= 0)
			close(p.main_wake[i]);
	}
	free(p.state_root);
	free(p.dir);
	free(p.sock);
	pthread_cond_destroy(&p.cond);
	pthread_mutex_destroy(&p.lock);
	return r;
}
