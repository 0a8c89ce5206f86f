#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"
#include "cgroup.h"
#include "container.h"
#include "launch.h"
#include "passwd.h"
#include "sync.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

BL_DEFINE_CLEANUP(agent_process, agent_process_free)

/* Who the process runs as, with HOME for its environment. */
typedef struct creds {
	uid_t uid;
	gid_t gid;
	gid_t gids[AGENT_SPEC_MAX_GROUPS + AGENT_USER_MAX_GROUPS];
	size_t n_gids;
	char home[AGENT_PASSWD_MAX_LINE];
} creds;

static void add_gids(creds *cr, const gid_t *gids, size_t n)
{
	for (size_t i = 0; i < n && cr->n_gids < BL_ARRAY_SIZE(cr->gids); i++)
		cr->gids[cr->n_gids++] = gids[i];
}

/* A numeric user with HOME in its environment needs no passwd lookup: the
 * common exec skips reading two files over virtio-fs. */
static int resolve_creds(agent_container *c, const agent_process_spec *p, creds *cr,
			 bl_error_t *err)
{
	_cleanup_free_ agent_user *u = bl_malloc0(sizeof(*u));
	cr->uid = p->uid;
	cr->gid = p->gid;
	if (!p->username && agent_env_get(p->env, "HOME")) {
		add_gids(cr, p->additional_gids, p->n_additional_gids);
		return 0;
	}
	_cleanup_close_ int rootfd = open(c->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return bl_set_error_errno(err, errno, "open container root");
	if (p->username) {
		int r = agent_user_resolve(rootfd, p->username, u, err);
		if (r < 0)
			return r;
		cr->uid = u->uid;
		cr->gid = u->gid;
		add_gids(cr, u->gids, u->n_gids);
	} else {
		char num[16];
		snprintf(num, sizeof(num), "%u", p->uid);
		bl_error_t ignored = BL_ERROR_INIT;
		if (agent_user_resolve(rootfd, num, u, &ignored) < 0)
			u->home[0] = '\0';
	}
	add_gids(cr, p->additional_gids, p->n_additional_gids);
	snprintf(cr->home, sizeof(cr->home), "%s", u->home[0] ? u->home : "/");
	return 0;
}

/* The spec's environment plus PATH, HOME and TERM when it lacks them. */
static char **build_env(const agent_process_spec *p, const creds *cr, bool terminal)
{
	size_t n = 0;
	while (p->env[n])
		n++;
	char **env = bl_malloc0((n + 4) * sizeof(char *));
	for (size_t i = 0; i < n; i++)
		env[i] = bl_strdup(p->env[i]);
	if (!agent_env_get(env, "PATH"))
		env[n++] = bl_strdup("PATH=" DEFAULT_PATH);
	if (!agent_env_get(env, "HOME"))
		env[n++] = bl_asprintf("HOME=%s", cr->home);
	if (terminal && !agent_env_get(env, "TERM"))
		env[n++] = bl_strdup("TERM=xterm");
	return env;
}

/* The child's ends of stdio, closed once it has them. */
typedef struct child_stdio {
	int fd[3];
} child_stdio;

static void child_stdio_close(child_stdio *s)
{
	for (int i = 0; i < 3; i++) {
		if (s->fd[i] >= 0 && (i == 0 || s->fd[i] != s->fd[i - 1]))
			close(s->fd[i]);
		s->fd[i] = -1;
	}
}

/* The ptmx of the running container's own devpts, so that the process's
 * tty has a name there; -1 when there is none (the init process). */
static int container_ptmx(agent_container *c)
{
	pthread_mutex_lock(&agent_lock);
	pid_t pid = c->init && !c->init->exited ? c->init->pid : 0;
	pthread_mutex_unlock(&agent_lock);
	if (pid <= 0)
		return -1;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/root", (int)pid);
	_cleanup_close_ int root = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	struct open_how how = {.flags = O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK,
			       .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	_cleanup_close_ int fd =
	    root < 0 ? -1 : (int)syscall(SYS_openat2, root, "/dev/pts/ptmx", &how, sizeof(how));
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(5, 2))
		return -1;
	return steal_fd(&fd);
}

static int setup_pty(agent_container *c, agent_process *proc, bool want_stdin, child_stdio *cs,
		     bl_error_t *err)
{
	_cleanup_close_ int master = proc->exec_id[0] ? container_ptmx(c) : -1;
	if (master < 0)
		master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0)
		return bl_set_error_errno(err, errno, "open /dev/ptmx");
	int unlock = 0;
	struct winsize ws = {.ws_row = 24, .ws_col = 80};
	if (ioctl(master, TIOCSPTLCK, &unlock) < 0 || ioctl(master, TIOCSWINSZ, &ws) < 0)
		return bl_set_error_errno(err, errno, "set up pty");
	int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (slave < 0)
		return bl_set_error_errno(err, errno, "open pty peer");
	cs->fd[0] = cs->fd[1] = cs->fd[2] = slave;
	proc->out = agent_stream_new(fcntl(master, F_DUPFD_CLOEXEC, 3));
	if (want_stdin)
		proc->in = agent_stdin_new(fcntl(master, F_DUPFD_CLOEXEC, 3), true);
	proc->pty_fd = steal_fd(&master);
	return 0;
}

static int setup_pipes(agent_process *proc, bool want_stdin, child_stdio *cs, bl_error_t *err)
{
	int in[2] = {-1, -1}, out[2], errp[2];
	if (want_stdin && pipe2(in, O_CLOEXEC) < 0)
		return bl_set_error_errno(err, errno, "pipe");
	if (!want_stdin && (in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
		return bl_set_error_errno(err, errno, "open /dev/null");
	cs->fd[0] = in[0];
	if (want_stdin)
		proc->in = agent_stdin_new(in[1], false);
	if (pipe2(out, O_CLOEXEC) < 0)
		return bl_set_error_errno(err, errno, "pipe");
	cs->fd[1] = out[1];
	proc->out = agent_stream_new(out[0]);
	if (pipe2(errp, O_CLOEXEC) < 0)
		return bl_set_error_errno(err, errno, "pipe");
	cs->fd[2] = errp[1];
	proc->err = agent_stream_new(errp[0]);
	return 0;
}

static void fill_launch(agent_launch *l, agent_container *c, const agent_process_spec *p,
			const creds *cr, char **env, const child_stdio *cs, bool terminal)
{
	*l = (agent_launch){
	    .rootfs = c->rootfs,
	    .readonly = c->readonly,
	    .hostname = c->spec->hostname,
	    .new_netns = c->spec->new_netns,
	    .mounts = c->spec->mounts,
	    .n_mounts = c->spec->n_mounts,
	    .cgroup_fd = c->cgroup_fd,
	    .stdio = {cs->fd[0], cs->fd[1], cs->fd[2]},
	    .terminal = terminal,
	    .argv = p->args,
	    .envp = env,
	    .cwd = p->cwd,
	    .uid = cr->uid,
	    .gid = cr->gid,
	    .gids = cr->gids,
	    .n_gids = cr->n_gids,
	    .umask = p->umask,
	    .rlimits = p->rlimits,
	    .n_rlimits = p->n_rlimits,
	    .no_new_privileges = p->no_new_privileges,
	    .seccomp = &c->spec->seccomp,
	    .oom_score_adj = p->has_oom_score_adj ? p->oom_score_adj : 0,
	};
	if (p->has_caps) {
		l->caps = p->caps;
	} else {
		uint64_t d = agent_caps_default();
		l->caps = (agent_caps){.bounding = d, .effective = d, .permitted = d};
	}
}

/* State checks for a start; called with agent_lock held. */
static int start_check_locked(agent_container *c, const char *exec_id, bl_error_t *err)
{
	bool is_init = !exec_id[0];
	if (c->state == AGENT_C_DELETING)
		return bl_set_error(err, BL_ESTATE, "container is being deleted");
	if (is_init && c->state != AGENT_C_CREATED)
		return bl_set_error(err, BL_ESTATE, "container already started");
	if (!is_init && (c->state != AGENT_C_RUNNING || !c->init || c->init->exited))
		return bl_set_error(err, BL_ESTATE, "container is not running");
	if (agent_process_find(c, exec_id))
		return bl_set_error(err, BL_EEXIST, "exec id \"%s\" already exists", exec_id);
	if (c->n_procs >= AGENT_MAX_PROCESSES)
		return bl_set_error(err, BL_ESTATE, "too many processes in the container");
	return 0;
}

/* Spawns and registers the process under agent_spawn_lock, so the reaper
 * cannot miss its exit and no delete starts in between; agent_lock is not
 * held while the child execs. Returns the error socket to wait on. */
static int spawn_register(agent_container *c, agent_process *proc, agent_launch *l, int *errfd,
			  bl_error_t *err)
{
	pthread_mutex_lock(&agent_spawn_lock);
	pthread_mutex_lock(&agent_lock);
	int r = start_check_locked(c, proc->exec_id, err);
	if (r == 0) {
		l->is_init = !proc->exec_id[0];
		l->init_pidfd = l->is_init ? -1 : c->init->pidfd;
	}
	pthread_mutex_unlock(&agent_lock);
	if (r == 0) {
		pid_t pid = agent_launch_spawn(l, &proc->pidfd, errfd, err);
		r = pid < 0 ? pid : 0;
		proc->pid = pid;
	}
	pthread_mutex_lock(&agent_lock);
	if (r == 0) {
		proc->c = c;
		proc->next = c->procs;
		c->procs = proc;
		c->n_procs++;
		if (l->is_init) {
			c->init = proc;
			c->state = AGENT_C_RUNNING;
		}
	}
	pthread_mutex_unlock(&agent_lock);
	pthread_mutex_unlock(&agent_spawn_lock);
	return r;
}

/* Streams for a pty the init process opened itself; set under the lock,
 * since the process is already visible to other calls. */
static void attach_pty(agent_process *proc, int master, bool want_stdin)
{
	agent_stream *out = agent_stream_new(fcntl(master, F_DUPFD_CLOEXEC, 3));
	agent_stdin *in =
	    want_stdin ? agent_stdin_new(fcntl(master, F_DUPFD_CLOEXEC, 3), true) : NULL;
	pthread_mutex_lock(&agent_lock);
	proc->out = out;
	proc->in = in;
	proc->pty_fd = master;
	pthread_mutex_unlock(&agent_lock);
}

static void mark_failed(agent_container *c, agent_process *proc)
{
	pthread_mutex_lock(&agent_lock);
	proc->failed = true;
	if (c->init == proc) {
		c->init = NULL;
		c->state = AGENT_C_CREATED;
	}
	pthread_mutex_unlock(&agent_lock);
}

/* The agent binary itself runs instead of a program of the image: the
 * container init with argv exactly [AGENT_PAUSE_PATH] (the built-in pause),
 * an exec with [BL_AGENT_COPY_*_PATH, PATH] (the archiver). */
static bool is_builtin(const agent_process_spec *p, bool init)
{
	const char *a0 = p->args[0];
	if (!a0)
		return false;
	if (init)
		return !strcmp(a0, AGENT_PAUSE_PATH) && !p->args[1];
	return (!strcmp(a0, BL_AGENT_COPY_OUT_PATH) || !strcmp(a0, BL_AGENT_COPY_IN_PATH)) &&
	       p->args[1] && !p->args[2];
}

static agent_process *process_new(const char *exec_id, bool terminal, uint64_t oom_before)
{
	agent_process *proc = bl_malloc0(sizeof(*proc));
	snprintf(proc->exec_id, sizeof(proc->exec_id), "%s", exec_id);
	proc->pidfd = proc->pty_fd = -1;
	proc->terminal = terminal;
	proc->oom_before = oom_before;
	return proc;
}

int agent_process_start(agent_container *c, const char *exec_id, const agent_process_spec *p,
			bool terminal, bool want_stdin, pid_t *ret_pid, bl_error_t *err)
{
	uint64_t t0 = bl_now_monotonic_ns();
	_cleanup_free_ creds *cr = bl_malloc0(sizeof(*cr));
	int r = resolve_creds(c, p, cr, err);
	if (r < 0)
		return bl_error_prefix(err, "user");
	_cleanup_strv_ char **env = build_env(p, cr, terminal);
	_cleanup_(agent_process_freep) agent_process *proc =
	    process_new(exec_id, terminal, agent_cgroup_oom_kills(c->id));
	child_stdio cs = {{-1, -1, -1}};
	bool own_pty = terminal && !exec_id[0];
	if (!own_pty)
		r = terminal ? setup_pty(c, proc, want_stdin, &cs, err)
			     : setup_pipes(proc, want_stdin, &cs, err);
	agent_launch l;
	fill_launch(&l, c, p, cr, env, &cs, terminal);
	l.own_pty = own_pty;
	l.builtin = is_builtin(p, !exec_id[0]);
	int errfd = -1;
	uint64_t t1 = bl_now_monotonic_ns();
	if (r == 0)
		r = spawn_register(c, proc, &l, &errfd, err);
	child_stdio_close(&cs);
	if (r < 0)
		return r;
	agent_process *registered = steal_pointer(&proc);
	int pty = -1;
	r = agent_launch_finish(errfd, p->args[0], own_pty ? &pty : NULL, err);
	if (r < 0) {
		/* A child stopped before its exec (or still on its way) dies here. */
		(void)syscall(SYS_pidfd_send_signal, registered->pidfd, SIGKILL, NULL, 0);
		mark_failed(c, registered);
		return r;
	}
	if (own_pty)
		attach_pty(registered, pty, want_stdin);
	*ret_pid = registered->pid;
	/* Debug only: a console line costs about a millisecond under TCG. */
	bl_debug("container %s: started %s pid %d (prepare %.2f ms, spawn and exec %.2f ms)", c->id,
		 exec_id[0] ? exec_id : "init", (int)registered->pid, (double)(t1 - t0) / 1e6,
		 (double)(bl_now_monotonic_ns() - t1) / 1e6);
	return 0;
}

int agent_process_wait(agent_container *c, const char *exec_id, uint64_t deadline_ns,
		       int *ret_wstatus, int64_t *ret_exited_at, bool *ret_oom, bl_error_t *err)
{
	int r = 0;
	pthread_mutex_lock(&agent_lock);
	agent_process *p = agent_process_find(c, exec_id);
	if (!p)
		r = bl_set_error(err, BL_ENOTFOUND, "no process \"%s\"", exec_id);
	while (r == 0 && !p->exited) {
		if (!agent_cond_wait_until(&agent_exit_cond, &agent_lock, deadline_ns))
			r = bl_set_error(err, BL_ETIMEOUT, "process still running");
	}
	if (r == 0) {
		*ret_wstatus = p->wstatus;
		*ret_exited_at = p->exited_at_ns;
		*ret_oom = p->oom_killed;
	}
	pthread_mutex_unlock(&agent_lock);
	return r;
}

int agent_process_signal(agent_container *c, const char *exec_id, int sig, bool all,
			 bl_error_t *err)
{
	if (sig < 1 || sig > SIGRTMAX)
		return bl_set_error(err, BL_EINVAL, "invalid signal %d", sig);
	if (all)
		return agent_cgroup_signal(c->id, sig, err);
	int r = 0;
	pthread_mutex_lock(&agent_lock);
	agent_process *p = agent_process_find(c, exec_id);
	if (!p)
		r = bl_set_error(err, BL_ENOTFOUND, "no process \"%s\"", exec_id);
	else if (p->exited)
		r = bl_set_error(err, BL_ENOTFOUND, "process \"%s\" has exited", exec_id);
	else if (syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0) < 0)
		r = bl_set_error_errno(err, errno, "signal process");
	pthread_mutex_unlock(&agent_lock);
	return r;
}

void agent_process_free(agent_process *p)
{
	if (!p)
		return;
	agent_stream_free(p->out);
	agent_stream_free(p->err);
	agent_stdin_free(p->in);
	if (p->pidfd >= 0)
		close(p->pidfd);
	if (p->pty_fd >= 0)
		close(p->pty_fd);
	free(p);
}

static void *reaper_thread(void *arg)
{
	(void)arg;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	for (;;) {
		siginfo_t si;
		if (sigwaitinfo(&set, &si) < 0)
			continue;
		/* Not while a child is between clone and registration. */
		pthread_mutex_lock(&agent_spawn_lock);
		for (;;) {
			int st;
			pid_t pid = waitpid(-1, &st, WNOHANG | __WALL);
			if (pid <= 0)
				break;
			agent_process_reaped(pid, st);
		}
		pthread_mutex_unlock(&agent_spawn_lock);
	}
	return NULL;
}

int agent_reaper_start(bl_error_t *err)
{
	pthread_t t;
	int r = pthread_create(&t, NULL, reaper_thread, NULL);
	if (r)
		return bl_set_error_errno(err, r, "start reaper thread");
	pthread_detach(t);
	return 0;
}
