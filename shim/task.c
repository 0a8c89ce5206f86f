/*
 * The Task service (containerd.task.v2.Task and containerd.task.v3.Task):
 * tasks and their processes, mapped onto libboxlite sandboxes.
 *
 * Locking: one service mutex guards the task list and every process's state;
 * it is never held across a libboxlite call that may block (boot, wait,
 * stdio), only across state changes. A process's state only moves forward
 * (created -> running -> stopped), so a handler that dropped the lock re-reads
 * the state it needs.
 */
#include "shim.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"
#include "cgroups_v2.pb-c.h"
#include "events.pb-c.h"
#include "task.pb-c.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXEC_ID_MAX		  128
#define OUTPUT_BEFORE_EXIT_MS	  2000
#define OUTPUT_AT_DELETE_MS	  5000
#define INIT_EXIT_AFTER_EXECS_SEC 3

typedef enum { P_CREATED, P_RUNNING, P_STOPPED } pstate;

typedef struct stask stask;

typedef struct sproc {
	char *exec_id; /* "" for the init process */
	stask *task;
	pstate state;
	bl_process *p;
	uint32_t pid;	    /* reported to containerd */
	uint32_t guest_pid; /* inside the VM */
	uint32_t exit_status;
	uint64_t exited_ns;
	shim_stdio io;
	shim_spec spec; /* an exec's process */
	unsigned rows, cols;
	pthread_t waiter;
	bool has_waiter;
	bool starting;
	int waiting; /* Wait handlers looking at it: not freed before they left */
	struct sproc *next;
} sproc;

struct stask {
	char *id, *bundle;
	char *rootfs; /* <bundle>/rootfs */
	bool mounted;
	bl_container *c;
	char cid[BL_CONTAINER_ID_MAX + 1]; /* the container's id in the VM */
	sproc init;
	sproc *execs;
	bool paused;
	bool busy; /* a Create/Delete is working on it without the lock */
	stask *next;
};

struct shim_service {
	char *ns, *id, *bundle;
	shim_publisher *pub;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	stask *tasks;
	bool shutdown;
	/* The group's VM (one per shim): made by the first Create, gone with the last Delete. */
	bl_sandbox *vm;
	pthread_mutex_t vm_lock; /* serializes boot and destroy */
};

/* ------------------------------------------------------------ helpers */

static void ts_set(Containerd__Types__Timestamp *ts, uint64_t ns)
{
	ts->seconds = (int64_t)(ns / 1000000000ull);
	ts->nanos = (int32_t)(ns % 1000000000ull);
}

static stask *task_find(shim_service *s, const char *id)
{
	for (stask *t = s->tasks; t; t = t->next)
		if (!strcmp(t->id, id))
			return t;
	return NULL;
}

static sproc *proc_find(stask *t, const char *exec_id)
{
	if (!exec_id || !*exec_id)
		return &t->init;
	for (sproc *p = t->execs; p; p = p->next)
		if (!strcmp(p->exec_id, exec_id))
			return p;
	return NULL;
}

/* Takes s->lock and finds a task's process; on a miss, returns NULL with the
 * lock released (reply_no_proc answers then). */
static sproc *lock_proc(shim_service *s, const char *id, const char *exec_id, stask **tp)
{
	pthread_mutex_lock(&s->lock);
	stask *t = task_find(s, id);
	sproc *p = t ? proc_find(t, exec_id) : NULL;
	if (!p)
		pthread_mutex_unlock(&s->lock);
	*tp = t;
	return p;
}

/* NotFound for id/exec_id; frees the request (after formatting from it). */
static int reply_no_proc(ttrpc_reply *reply, ProtobufCMessage *req, const char *id,
			 const char *exec_id)
{
	bool exec = exec_id && *exec_id;
	int code = ttrpc_reply_error(reply, TTRPC_NOT_FOUND, "process %s%s%s: not found", id,
				     exec ? "/" : "", exec ? exec_id : "");
	protobuf_c_message_free_unpacked(req, NULL);
	return code;
}

#define UNPACK_OR_FAIL(type, fn, var, call, reply)                            \
	type *var = fn##__unpack(NULL, (call)->payload_len, (call)->payload); \
	if (!var)                                                             \
		return ttrpc_reply_error((reply), TTRPC_INVALID_ARGUMENT, "malformed request");

static bool id_ok(const char *id)
{
	size_t n = id ? strlen(id) : 0;
	if (n == 0 || n > SHIM_ID_MAX)
		return false;
	for (const char *c = id; *c; c++)
		if (*c == '/' || *c < 0x20)
			return false;
	return true;
}

static int bl_to_status(int code)
{
	switch (code < 0 ? -code : code) {
	case BL_EINVAL:
	case BL_EPROTO:
		return TTRPC_INVALID_ARGUMENT;
	case BL_ENOTFOUND:
		return TTRPC_NOT_FOUND;
	case BL_EEXIST:
		return TTRPC_ALREADY_EXISTS;
	case BL_ESTATE:
		return TTRPC_FAILED_PRECONDITION;
	case BL_EUNSUPPORTED:
		return TTRPC_UNIMPLEMENTED;
	default:
		return TTRPC_UNKNOWN;
	}
}

static const char *proc_name(const sproc *p)
{
	return p->exec_id[0] ? p->exec_id : p->task->id;
}

/* ------------------------------------------------------------ process exit */

static void publish_exit(shim_service *s, sproc *p)
{
	Containerd__Types__Timestamp at = CONTAINERD__TYPES__TIMESTAMP__INIT;
	ts_set(&at, p->exited_ns);
	Containerd__Events__TaskExit ev = CONTAINERD__EVENTS__TASK_EXIT__INIT;
	ev.container_id = p->task->id;
	ev.id = (char *)proc_name(p);
	ev.pid = p->pid;
	ev.exit_status = p->exit_status;
	ev.exited_at = &at;
	shim_publish(s->pub, "/tasks/exit", &ev.base);
}

/* Marks a process stopped (under the lock); false when it already was. */
static bool set_exited(shim_service *s, sproc *p, uint32_t status)
{
	if (p->state == P_STOPPED)
		return false;
	p->state = P_STOPPED;
	p->exit_status = status;
	p->exited_ns = shim_now_ns();
	pthread_cond_broadcast(&s->cond);
	return true;
}

struct waiter_arg {
	shim_service *s;
	sproc *p;
};

static void *waiter_main(void *arg)
{
	struct waiter_arg *wa = arg;
	shim_service *s = wa->s;
	sproc *p = wa->p;
	free(wa);
	bl_exit ex = {0};
	bl_error_t err = BL_ERROR_INIT;
	int r = bl_process_wait(p->p, &ex, &err);
	uint32_t status;
	if (r == 0 || r == -BL_EOOM) {
		status = (uint32_t)ex.status;
	} else {
		/* The VM or its agent went away (QEMU killed from outside): as if SIGKILLed. */
		bl_warn("%s: wait: %s", proc_name(p), err.msg);
		status = 128 + SIGKILL;
	}
	/* Let the client read the output before it learns of the exit, as far as it reads. */
	(void)shim_stdio_wait_output(&p->io, OUTPUT_BEFORE_EXIT_MS);
	pthread_mutex_lock(&s->lock);
	if (!p->exec_id[0]) {
		/* As runc's shim: the init's exit comes after its execs' (they die
		 * with its PID namespace), so clients see them ended first. */
		struct timespec until = {.tv_sec = time(NULL) + INIT_EXIT_AFTER_EXECS_SEC};
		for (;;) {
			bool running = false;
			for (sproc *e = p->task->execs; e && !running; e = e->next)
				running = e->state == P_RUNNING;
			if (!running || pthread_cond_timedwait(&s->cond, &s->lock, &until) != 0)
				break;
		}
	}
	bool changed = set_exited(s, p, status);
	pthread_mutex_unlock(&s->lock);
	if (ex.oom_killed) {
		Containerd__Events__TaskOOM oom = CONTAINERD__EVENTS__TASK_OOM__INIT;
		oom.container_id = p->task->id;
		shim_publish(s->pub, "/tasks/oom", &oom.base);
	}
	if (changed)
		publish_exit(s, p);
	bl_info("%s: exited with %u", proc_name(p), status);
	return NULL;
}

static void start_waiter(shim_service *s, sproc *p)
{
	struct waiter_arg *wa = bl_malloc0(sizeof(*wa));
	*wa = (struct waiter_arg){.s = s, .p = p};
	if (pthread_create(&p->waiter, NULL, waiter_main, wa) != 0)
		abort();
	p->has_waiter = true;
}

/* Everything of one process except the struct itself. */
static void proc_release(sproc *p)
{
	shim_stdio_close(&p->io);
	free(p->io.stdin_path);
	free(p->io.stdout_path);
	free(p->io.stderr_path);
	p->io.stdin_path = p->io.stdout_path = p->io.stderr_path = NULL;
	if (p->has_waiter)
		pthread_join(p->waiter, NULL);
	p->has_waiter = false;
	if (p->p)
		bl_process_free(p->p);
	p->p = NULL;
	shim_spec_free(&p->spec);
	free(p->exec_id);
	p->exec_id = NULL;
}

/* ------------------------------------------------------------ the VM */

static int write_bundle_state(stask *t, pid_t pid)
{
	_cleanup_free_ char *path = bl_asprintf("%s/%s", t->bundle, SHIM_STATE_FILE);
	_cleanup_free_ char *text = bl_asprintf("{\"pid\":%d}\n", (int)pid);
	return bl_write_file(path, text, strlen(text), 0600, NULL);
}

/* Boots the group's VM (a bare sandbox) unless it runs; sized from the first spec. */
static int ensure_vm(shim_service *s, stask *t, const shim_spec *spec, bl_error_t *err)
{
	pthread_mutex_lock(&s->vm_lock);
	if (s->vm) {
		pthread_mutex_unlock(&s->vm_lock);
		return 0;
	}
	char sid[BL_SANDBOX_ID_MAX + 1];
	_cleanup_free_ char *group = shim_group_id(spec, t->id);
	shim_sandbox_id(s->ns, group, sid, sizeof(sid));
	/* A leftover of an earlier shim of this group (SIGKILLed, not cleaned up). */
	(void)bl_sandbox_remove(NULL, sid, false, NULL);
	bool pod = spec->container_type && !strcmp(spec->container_type, "sandbox");
	bl_sandbox_options o = {
	    .id = sid,
	    .memory_mib =
		pod && !spec->memory_limit ? SHIM_POD_MEMORY_MIB : shim_spec_memory_mib(spec),
	    .vcpus = spec->vcpus,
	    .owner = "shim",
	    .bare = true,
	    .network = spec->network,
	    .net_allow = (const char *const *)spec->net_allow,
	    .net_deny = (const char *const *)spec->net_deny,
	    .net_publish = (const char *const *)spec->net_publish,
	};
	uint64_t t0 = bl_now_monotonic_ns();
	bl_sandbox *vm = NULL;
	int r = bl_sandbox_create(&o, &vm, err);
	if (r < 0) {
		pthread_mutex_unlock(&s->vm_lock);
		return bl_error_prefix(err, "create VM");
	}
	bl_info("%s: VM %s (%u MiB) up in %.0f ms (%s)", t->id, sid, o.memory_mib,
		(double)(bl_now_monotonic_ns() - t0) / 1e6, bl_sandbox_accel_reason(vm));
	pthread_mutex_lock(&s->lock);
	s->vm = vm;
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_unlock(&s->vm_lock);
	return 0;
}

/* Destroys the VM once no task is left in it. */
static void release_vm_if_unused(shim_service *s)
{
	pthread_mutex_lock(&s->vm_lock);
	pthread_mutex_lock(&s->lock);
	bl_sandbox *vm = s->tasks ? NULL : s->vm;
	if (vm)
		s->vm = NULL;
	pthread_mutex_unlock(&s->lock);
	if (vm) {
		bl_sandbox_destroy(vm);
		bl_info("VM released");
	}
	pthread_mutex_unlock(&s->vm_lock);
}

/* containerd ids (up to 76 characters) as libboxlite container ids. */
static void container_id_for(const char *id, char *buf, size_t len)
{
	size_t n = strlen(id);
	bool ok = n > 0 && n <= BL_CONTAINER_ID_MAX && strcmp(id, ".") && strcmp(id, "..");
	for (const char *c = id; ok && *c; c++)
		ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		     (*c >= '0' && *c <= '9') || *c == '_' || *c == '.' || *c == '-';
	if (ok) {
		snprintf(buf, len, "%s", id);
		return;
	}
	char sid[BL_SANDBOX_ID_MAX + 1];
	shim_sandbox_id("container", id, sid, sizeof(sid));
	snprintf(buf, len, "%s", sid);
}

static int create_container(shim_service *s, stask *t, const shim_spec *spec, bool tty,
			    bool stdin_open, bl_error_t *err)
{
	container_id_for(t->id, t->cid, sizeof(t->cid));
	bl_container_options o = {
	    .id = t->cid,
	    .spec_json = spec->json,
	    .rootfs = t->rootfs,
	    .readonly_rootfs = spec->root_readonly,
	    .tty = tty,
	    .stdin_open = stdin_open,
	    /* containerd and CRI add AppArmor/SELinux labels and seccomp profiles:
	     * the VM is the boundary for the former, the agent applies seccomp.
	     * Hooks (nerdctl's network setup) cannot run on the host for a guest
	     * process yet: a clear error rather than a silently broken network. */
	    .ignore_lsm = true,
	    .ignore_hooks = false,
	};
	pthread_mutex_lock(&s->lock);
	bl_sandbox *vm = s->vm;
	pthread_mutex_unlock(&s->lock);
	if (!vm)
		return bl_set_error(err, BL_ESTATE, "the VM is gone");
	int r = bl_container_create(vm, &o, &t->c, err);
	return r < 0 ? bl_error_prefix(err, "create container %s", t->id) : 0;
}

/* ------------------------------------------------------------ handlers */

static void mounts_from_req(Containerd__Task__V2__CreateTaskRequest *req, shim_mount **ret)
{
	shim_mount *m = bl_malloc0((req->n_rootfs + 1) * sizeof(*m));
	for (size_t i = 0; i < req->n_rootfs; i++) {
		Containerd__Types__Mount *r = req->rootfs[i];
		m[i].type = r->type;
		m[i].source = r->source;
		m[i].target = r->target;
		m[i].options = bl_malloc0((r->n_options + 1) * sizeof(char *));
		for (size_t k = 0; k < r->n_options; k++)
			m[i].options[k] = r->options[k];
	}
	*ret = m;
}

static void mounts_free(shim_mount *m, size_t n)
{
	for (size_t i = 0; m && i < n; i++)
		free(m[i].options);
	free(m);
}

static void publish_create(shim_service *s, Containerd__Task__V2__CreateTaskRequest *req,
			   uint32_t pid)
{
	Containerd__Events__TaskIO tio = CONTAINERD__EVENTS__TASK_IO__INIT;
	tio.stdin = req->stdin;
	tio.stdout = req->stdout;
	tio.stderr = req->stderr;
	tio.terminal = req->terminal;
	Containerd__Events__TaskCreate ev = CONTAINERD__EVENTS__TASK_CREATE__INIT;
	ev.container_id = req->id;
	ev.bundle = req->bundle;
	ev.n_rootfs = req->n_rootfs;
	ev.rootfs = req->rootfs;
	ev.io = &tio;
	ev.checkpoint = req->checkpoint;
	ev.pid = pid;
	shim_publish(s->pub, "/tasks/create", &ev.base);
}

static void task_unlink(shim_service *s, stask *t)
{
	for (stask **pp = &s->tasks; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			return;
		}
	}
}

static void task_free(stask *t)
{
	free(t->id);
	free(t->bundle);
	free(t->rootfs);
	free(t);
}

static int do_create(shim_service *s, stask *t, Containerd__Task__V2__CreateTaskRequest *req,
		     bl_error_t *err)
{
	_cleanup_(shim_spec_free) shim_spec spec = {0};
	if (shim_spec_load(t->bundle, &spec, err) < 0)
		return -BL_EINVAL;
	if (req->checkpoint && *req->checkpoint)
		return bl_set_error(err, BL_EUNSUPPORTED, "checkpoint/restore is not supported");
	if (req->n_rootfs > 0) {
		shim_mount *m = NULL;
		mounts_from_req(req, &m);
		int r = shim_mount_rootfs(m, req->n_rootfs, t->rootfs, err);
		mounts_free(m, req->n_rootfs);
		if (r < 0)
			return r;
		t->mounted = true;
	} else if (spec.root_path && *spec.root_path) {
		free(t->rootfs);
		t->rootfs = spec.root_path[0] == '/'
				? bl_strdup(spec.root_path)
				: bl_asprintf("%s/%s", t->bundle, spec.root_path);
	}
	if (shim_rootfs_check_exec(t->rootfs, &spec, err) < 0)
		return -BL_ENOTFOUND;
	sproc *p = &t->init;
	p->io.stdin_path = bl_strdup(req->stdin);
	p->io.stdout_path = bl_strdup(req->stdout);
	p->io.stderr_path = bl_strdup(req->stderr);
	p->io.terminal = req->terminal;
	if (shim_stdio_open(&p->io, t->id, s->ns, err) < 0)
		return bl_error_prefix(err, "stdio");
	if (ensure_vm(s, t, &spec, err) < 0)
		return -BL_EBACKEND;
	int r = create_container(s, t, &spec, req->terminal, req->stdin && *req->stdin, err);
	if (r < 0)
		return r;
	pthread_mutex_lock(&s->lock);
	p->pid = s->vm ? (uint32_t)bl_sandbox_qemu_pid(s->vm) : 0;
	pthread_mutex_unlock(&s->lock);
	if (!p->pid)
		p->pid = (uint32_t)getpid();
	(void)write_bundle_state(t, (pid_t)p->pid);
	return 0;
}

static void undo_create(stask *t)
{
	if (t->c) {
		bl_error_t ignored = BL_ERROR_INIT;
		(void)bl_container_delete(t->c, &ignored);
	}
	t->c = NULL;
	if (t->mounted)
		(void)shim_unmount_all(t->rootfs, NULL);
	t->mounted = false;
	proc_release(&t->init);
}

static int h_create(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	shim_service *s = user;
	UNPACK_OR_FAIL(Containerd__Task__V2__CreateTaskRequest,
		       containerd__task__v2__create_task_request, req, call, reply);
	int code = TTRPC_OK;
	if (!id_ok(req->id) || !req->bundle || req->bundle[0] != '/') {
		code = ttrpc_reply_error(reply, TTRPC_INVALID_ARGUMENT, "bad id or bundle");
		goto out;
	}
	pthread_mutex_lock(&s->lock);
	if (task_find(s, req->id)) {
		pthread_mutex_unlock(&s->lock);
		code = ttrpc_reply_error(reply, TTRPC_ALREADY_EXISTS,
					 "container %s: already exists", req->id);
		goto out;
	}
	stask *t = bl_malloc0(sizeof(*t));
	t->id = bl_strdup(req->id);
	t->bundle = bl_strdup(req->bundle);
	t->rootfs = bl_asprintf("%s/rootfs", req->bundle);
	t->init.exec_id = bl_strdup("");
	t->init.task = t;
	t->init.state = P_CREATED;
	t->busy = true;
	t->next = s->tasks;
	s->tasks = t;
	pthread_mutex_unlock(&s->lock);

	bl_error_t err = BL_ERROR_INIT;
	int r = do_create(s, t, req, &err);
	pthread_mutex_lock(&s->lock);
	t->busy = false;
	if (r < 0) {
		task_unlink(s, t);
		pthread_cond_broadcast(&s->cond);
		pthread_mutex_unlock(&s->lock);
		bl_error_log("create %s: %s", req->id, err.msg);
		undo_create(t);
		task_free(t);
		release_vm_if_unused(s);
		code = ttrpc_reply_error(reply, bl_to_status(r), "%s", err.msg);
		goto out;
	}
	uint32_t pid = t->init.pid;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	publish_create(s, req, pid);
	Containerd__Task__V2__CreateTaskResponse resp =
	    CONTAINERD__TASK__V2__CREATE_TASK_RESPONSE__INIT;
	resp.pid = pid;
	code = ttrpc_reply_message(reply, &resp.base);
out:
	protobuf_c_message_free_unpacked(&req->base, NULL);
	return code;
}

static void apply_size(sproc *p)
{
	if (p->rows && p->cols && p->p) {
		bl_error_t err = BL_ERROR_INIT;
		if (bl_process_resize(p->p, p->rows, p->cols, &err) < 0)
			bl_warn("%s: resize: %s", proc_name(p), err.msg);
	}
}

static int start_process(shim_service *s, stask *t, sproc *p, bl_error_t *err)
{
	bl_process *bp = NULL;
	int r;
	if (!p->exec_id[0]) {
		r = bl_container_start(t->c, &bp, err);
	} else {
		/* containerd's exec ids are the library's when they fit its alphabet. */
		char eid[BL_EXEC_ID_MAX + 1];
		container_id_for(p->exec_id, eid, sizeof(eid));
		r = bl_container_exec(t->c, eid, p->spec.json, p->io.terminal,
				      p->io.stdin_path && *p->io.stdin_path, &bp, err);
	}
	if (r < 0)
		return r;
	p->p = bp;
	p->guest_pid = bl_process_pid(bp);
	if (p->exec_id[0])
		p->pid = t->init.pid;
	return 0;
}

static int h_start(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	shim_service *s = user;
	UNPACK_OR_FAIL(Containerd__Task__V2__StartRequest, containerd__task__v2__start_request, req,
		       call, reply);
	int code;
	stask *t;
	sproc *p;
	pthread_mutex_lock(&s->lock);
	t = task_find(s, req->id);
	p = t ? proc_find(t, req->exec_id) : NULL;
	if (!p || t->busy) {
		pthread_mutex_unlock(&s->lock);
		code = ttrpc_reply_error(reply, TTRPC_NOT_FOUND, "process %s/%s: not found",
					 req->id, req->exec_id);
		goto out;
	}
	if (p->state != P_CREATED || p->starting) {
		pthread_mutex_unlock(&s->lock);
		code = ttrpc_reply_error(reply, TTRPC_FAILED_PRECONDITION,
					 "process %s: already started", proc_name(p));
		goto out;
	}
	if (p->exec_id[0] && t->init.state != P_RUNNING) {
		pthread_mutex_unlock(&s->lock);
		code = ttrpc_reply_error(reply, TTRPC_FAILED_PRECONDITION,
					 "container %s is not running", t->id);
		goto out;
	}
	p->starting = true;
	pthread_mutex_unlock(&s->lock);

	bl_error_t err = BL_ERROR_INIT;
	int r = start_process(s, t, p, &err);
	pthread_mutex_lock(&s->lock);
	p->starting = false;
	if (r < 0) {
		/* Failed to start: stopped, so it can be deleted (the client cannot
		 * delete a created task). */
		(void)set_exited(s, p, 128 + SIGKILL);
		pthread_mutex_unlock(&s->lock);
		/* The client waits for end of file on its FIFOs before it deletes. */
		shim_stdio_close(&p->io);
		bl_error_log("start %s: %s", proc_name(p), err.msg);
		code = ttrpc_reply_error(reply, bl_to_status(r), "%s", err.msg);
		goto out;
	}
	if (p->state == P_STOPPED) {
		/* Killed before it ran. */
		pthread_mutex_unlock(&s->lock);
		code = ttrpc_reply_error(reply, TTRPC_FAILED_PRECONDITION, "process %s: killed",
					 proc_name(p));
		goto out;
	}
	p->state = P_RUNNING;
	shim_stdio_start(&p->io, p->p);
	apply_size(p);
	start_waiter(s, p);
	uint32_t pid = p->pid;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	if (!p->exec_id[0]) {
		Containerd__Events__TaskStart ev = CONTAINERD__EVENTS__TASK_START__INIT;
		ev.container_id = t->id;
		ev.pid = pid;
		shim_publish(s->pub, "/tasks/start", &ev.base);
	} else {
		Containerd__Events__TaskExecStarted ev =
		    CONTAINERD__EVENTS__TASK_EXEC_STARTED__INIT;
		ev.container_id = t->id;
		ev.exec_id = p->exec_id;
		ev.pid = pid;
		shim_publish(s->pub, "/tasks/exec-started", &ev.base);
	}
	Containerd__Task__V2__StartResponse resp = CONTAINERD__TASK__V2__START_RESPONSE__INIT;
	resp.pid = pid;
	code = ttrpc_reply_message(reply, &resp.base);
out:
	protobuf_c_message_free_unpacked(&req->base, NULL);
	return code;
}

static int status_of(const stask *t, const sproc *p)
{
	switch (p->state) {
	case P_CREATED:
		return CONTAINERD__TASK__V2__STATUS__CREATED;
	case P_RUNNING:
		return t->paused ? CONTAINERD__TASK__V2__STATUS__PAUSED
				 : CONTAINERD__TASK__V2__STATUS__RUNNING;
	default:
		return CONTAINERD__TASK__V2__STATUS__STOPPED;
	}
}

static int h_state(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	shim_service *s = user;
	UNPACK_OR_FAIL(Containerd__Task__V2__StateRequest, containerd__task__v2__state_request, req,
		       call, reply);
	stask *t;
	sproc *p = lock_proc(s, req->id, req->exec_id, &t);
	if (!p)
		return reply_no_proc(reply, &req->base, req->id, req->exec_id);
	Containerd__Types__Timestamp at = CONTAINERD__TYPES__TIMESTAMP__INIT;
	Containerd__Task__V2__StateResponse resp = CONTAINERD__TASK__V2__STATE_RESPONSE__INIT;
	resp.id = p->exec_id[0] ? p->exec_id : t->id;
	resp.bundle = t->bundle;
	resp.pid = p->pid;
	resp.status = status_of(t, p);
	resp.stdin = p->io.stdin_path ? p->io.stdin_path : "";
	resp.stdout = p->io.stdout_path ? p->io.stdout_path : "";
	resp.stderr = p->io.stderr_path ? p->io.stderr_path : "";
	resp.terminal = p->io.terminal;
	resp.exec_id = p->exec_id;
	if (p->state == P_STOPPED) {
		resp.exit_status = p->exit_status;
		ts_set(&at, p->exited_ns);
		resp.exited_at = &at;
	}
	int code = ttrpc_reply_message(reply, &resp.base);
	pthread_mutex_unlock(&s->lock);
	protobuf_c_message_free_unpacked(&req->base, NULL);
	return code;
}

static int h_wait(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	shim_service *s = user;
	UNPACK_OR_FAIL(Containerd__Task__V2__WaitRequest, containerd__task__v2__wait_request, req,
		       call, reply);
	stask *t;
	sproc *p = lock_proc(s, req->id, req->exec_id, &t);
	if (!p)
		return reply_no_proc(reply, &req->base, req->id, req->exec_id);
	/* The process stays in the list until Delete, which needs it stopped
	 * and waits for us to leave before it frees it. */
	p->waiting++;
	while (p->state != P_STOPPED)
		pthread_cond_wait(&s->cond, &s->lock);
	p->waiting--;
	pthread_cond_broadcast(&s->cond);
	Containerd__Types__Timestamp at = CONTAINERD__TYPES__TIMESTAMP__INIT;
	ts_set(&at, p->exited_ns);
	Containerd__Task__V2__WaitResponse resp = CONTAINERD__TASK__V2__WAIT_RESPONSE__INIT;
	resp.exit_status = p->exit_status;
	resp.exited_at = &at;
	int code = ttrpc_reply_message(reply, &resp.base);
	pthread_mutex_unlock(&s->lock);
	protobuf_c_message_free_unpacked(&req->base, NULL);
	return code;
}

static int signal_proc(shim_service *s, sproc *p, int sig, bool all, bl_error_t *err)
{
	if (p->state == P_CREATED && !p->starting) {
		/* Never started: it ends here, as runc's created-but-not-started init would. */
		if (set_exited(s, p, 128 + (uint32_t)sig)) {
			pthread_mutex_unlock(&s->lock);
			publish_exit(s, p);
			pthread_mutex_lock(&s->lock);
		}
		return 0;
	}
	if (p->state != P_RUNNING || !p->p)
		return bl_set_error(err, BL_ENOTFOUND, "process already finished");
	bl_process *bp = p->p;
	bl_container *c = p->task->c;
	bool init = !p->exec_id[0];
	pthread_mutex_unlock(&s->lock);
	int r =
	    init && all ? bl_container_signal(c, sig, true, err) : bl_process_signal(bp, sig, err);
	pthread_mutex_lock(&s->lock);
	return r;
}

static int h_kill(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	shim_service *s = user;
	UNPACK_OR_FAIL(Containerd__Task__V2__KillRequest, containerd__task__v2__kill_request, req,
		       call, reply);
	int code = TTRPC_OK;
	stask *t;
	sproc *p = lock_proc(s, req->id, req->exec_id, &t);
	if (!p)
		return reply_no_proc(reply, &req->base, req->id, req->exec_id);
	if (req->signal == 0 || req->signal >= 65) {
		pthread_mutex_unlock(&s->lock);
		protobuf_c_message_free_unpacked(&req->base, NULL);
		return ttrpc_reply_error(reply, TTRPC_INVALID_ARGUMENT, "signal %u out of range",
					 req->signal);
	}
	bl_error_t err = BL_ERROR_INIT;
	int r = signal_proc(s, p, (int)req->signal, req->all, &err);
	pthread_mutex_unlock(&s->lock);
	if (r < 0)
		code = ttrpc_reply_error(reply, bl_to_status(r), "%s", err.msg);
	else {
		Containerd__Types__Empty e = CONTAINERD__TYPES__EMPTY__INIT;
		code = ttrpc_reply_message(reply, &e.base);
	}
	protobuf_c_message_free_unpacked(&req->base, NULL);
	return code;
}

static int h_exec(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	shim_service *s = user;
	UNPACK_OR_FAIL(Containerd__Task__V2__ExecProcessRequest,
		       containerd__task__v2__exec_process_request, req, call, reply);
	int code;
	bl_error_t err = BL_ERROR_INIT;
	sproc *p = bl_malloc0(sizeof(*p));
	p->state = P_CREATED;
	if (!id_ok(req->exec_id) || strlen(req->exec_id) > EXEC_ID_MAX) {
		code = ttrpc_reply_error(reply, TTRPC_INVALID_ARGUMENT, "bad exec id");
		goto fail;
	}
	if (!req->spec || shim_spec_parse_process((const char *)req->spec->value.data,
						  req->spec->value.len, &p->spec, &err) < 0) {
		code = ttrpc_reply_error(reply, TTRPC_INVALID_ARGUMENT, "exec spec: %s",
					 req->spec ? err.msg : "missing");
		goto fail;
	}
	if (!p->spec.args || !p->spec.args[0]) {
		code = ttrpc_reply_error(reply, TTRPC_INVALID_ARGUMENT, "exec spec has no args");
		goto fail;
	}
	p->exec_id = bl_strdup(req->exec_id);
	p->io.stdin_path = bl_strdup(req->stdin);
	p->io.stdout_path = bl_strdup(req->stdout);
	p->io.stderr_path = bl_strdup(req->stderr);
	p->io.terminal = req->terminal;
	pthread_mutex_lock(&s->lock);
	stask *t = task_find(s, req->id);
	if (!t || t->busy) {
		pthread_mutex_unlock(&s->lock);
		code =
		    ttrpc_reply_error(reply, TTRPC_NOT_FOUND, "container %s: not found", req->id);
		goto fail;
	}
	if (proc_find(t, req->exec_id)) {
		pthread_mutex_unlock(&s->lock);
		code = ttrpc_reply_error(reply, TTRPC_ALREADY_EXISTS, "exec %s: already exists",
					 req->exec_id);
		goto fail;
	}
	if (t->init.state != P_RUNNING) {
		pthread_mutex_unlock(&s->lock);
		code = ttrpc_reply_error(reply, TTRPC_FAILED_PRECONDITION,
					 "container %s is not running", req->id);
		goto fail;
	}
	if (shim_stdio_open(&p->io, t->id, s->ns, &err) < 0) {
		pthread_mutex_unlock(&s->lock);
		code = ttrpc_reply_error(reply, TTRPC_UNKNOWN, "exec stdio: %s", err.msg);
		goto fail;
	}
	p->task = t;
	p->pid = t->init.pid;
	p->next = t->execs;
	t->execs = p;
	pthread_mutex_unlock(&s->lock);
	Containerd__Events__TaskExecAdded ev = CONTAINERD__EVENTS__TASK_EXEC_ADDED__INIT;
	ev.container_id = req->id;
	ev.exec_id = req->exec_id;
	shim_publish(s->pub, "/tasks/exec-added", &ev.base);
	Containerd__Types__Empty e = CONTAINERD__TYPES__EMPTY__INIT;
	code = ttrpc_reply_message(reply, &e.base);
	protobuf_c_message_free_unpacked(&req->base, NULL);
	return code;
fail:
	proc_release(p);
	free(p);
	protobuf_c_message_free_unpacked(&req->base, NULL);
	return code;
}

static int delete_exec(shim_service *s, stask *t, sproc *p, ttrpc_reply *reply)
{
	if (p->state == P_RUNNING || p->starting) {
		pthread_mutex_unlock(&s->lock);
		return ttrpc_reply_error(reply, TTRPC_FAILED_PRECONDITION,
					 "cannot delete a running process");
	}
	for (sproc **pp = &t->execs; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	while (p->waiting)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	Containerd__Types__Timestamp at = CONTAINERD__TYPES__TIMESTAMP__INIT;
	ts_set(&at, p->exited_ns);
	Containerd__Task__V2__DeleteResponse resp = CONTAINERD__TASK__V2__DELETE_RESPONSE__INIT;
	resp.pid = p->pid;
	resp.exit_status = p->exit_status;
	resp.exited_at = p->exited_ns ? &at : NULL;
	int code = ttrpc_reply_message(reply, &resp.base);
	proc_release(p);
	free(p);
	return code;
}

static int h_delete(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	shim_service *s = user;
	UNPACK_OR_FAIL(Containerd__Task__V2__DeleteRequest, containerd__task__v2__delete_request,
		       req, call, reply);
	stask *t;
	sproc *p;
	int code;
	pthread_mutex_lock(&s->lock);
	t = task_find(s, req->id);
	p = t ? proc_find(t, req->exec_id) : NULL;
	if (!p || t->busy) {
		pthread_mutex_unlock(&s->lock);
		code = ttrpc_reply_error(reply, TTRPC_NOT_FOUND, "process %s/%s: not found",
					 req->id, req->exec_id);
		goto out;
	}
	if (p != &t->init) {
		code = delete_exec(s, t, p, reply);
		goto out;
	}
	if (p->state == P_RUNNING || p->starting) {
		pthread_mutex_unlock(&s->lock);
		code = ttrpc_reply_error(reply, TTRPC_FAILED_PRECONDITION,
					 "cannot delete running task %s", t->id);
		goto out;
	}
	if (p->state == P_CREATED)
		(void)set_exited(s, p, 128 + SIGKILL);
	t->busy = true;
	pthread_mutex_unlock(&s->lock);

	(void)shim_stdio_wait_output(&p->io, OUTPUT_AT_DELETE_MS);
	/* The VM goes first: the pumps' reads then end, and nothing holds the rootfs. */
	for (sproc *e = t->execs; e; e = e->next)
		shim_stdio_close(&e->io);
	if (t->c) {
		bl_error_t derr = BL_ERROR_INIT;
		if (bl_container_delete(t->c, &derr) < 0)
			bl_warn("delete %s in the VM: %s", t->id, derr.msg);
	}
	t->c = NULL;
	/* The container is gone: what has not ended ends now; Wait handlers
	 * still looking at a process leave before it is freed. */
	pthread_mutex_lock(&s->lock);
	for (sproc *e = t->execs; e; e = e->next)
		if (set_exited(s, e, 128 + SIGKILL))
			e->starting = false;
	for (;;) {
		bool waited_on = p->waiting > 0;
		for (sproc *e = t->execs; e; e = e->next)
			waited_on = waited_on || e->waiting > 0;
		if (!waited_on)
			break;
		pthread_cond_wait(&s->cond, &s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	proc_release(p);
	while (t->execs) {
		sproc *e = t->execs;
		t->execs = e->next;
		proc_release(e);
		free(e);
	}
	bl_error_t err = BL_ERROR_INIT;
	if (t->mounted && shim_unmount_all(t->rootfs, &err) < 0)
		bl_warn("delete %s: %s", t->id, err.msg);
	char *state = bl_asprintf("%s/%s", t->bundle, SHIM_STATE_FILE);
	(void)unlink(state);
	free(state);

	Containerd__Types__Timestamp at = CONTAINERD__TYPES__TIMESTAMP__INIT;
	ts_set(&at, p->exited_ns);
	Containerd__Events__TaskDelete ev = CONTAINERD__EVENTS__TASK_DELETE__INIT;
	ev.container_id = t->id;
	ev.pid = p->pid;
	ev.exit_status = p->exit_status;
	ev.exited_at = &at;
	shim_publish(s->pub, "/tasks/delete", &ev.base);
	Containerd__Task__V2__DeleteResponse resp = CONTAINERD__TASK__V2__DELETE_RESPONSE__INIT;
	resp.pid = p->pid;
	resp.exit_status = p->exit_status;
	resp.exited_at = &at;
	code = ttrpc_reply_message(reply, &resp.base);

	pthread_mutex_lock(&s->lock);
	task_unlink(s, t);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	task_free(t);
	release_vm_if_unused(s);
out:
	protobuf_c_message_free_unpacked(&req->base, NULL);
	return code;
}

/* The task of a request that names one (under the lock), or NULL. */
static bl_container *running_container(shim_service *s, const char *id, stask **ret)
{
	stask *t = task_find(s, id);
	*ret = t;
	return t && !t->busy && t->init.state == P_RUNNING ? t->c : NULL;
}

static int h_pids(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	shim_service *s = user;
	UNPACK_OR_FAIL(Containerd__Task__V2__PidsRequest, containerd__task__v2__pids_request, req,
		       call, reply);
	stask *t;
	pthread_mutex_lock(&s->lock);
	bl_container *c = running_container(s, req->id, &t);
	pthread_mutex_unlock(&s->lock);
	protobuf_c_message_free_unpacked(&req->base, NULL);
	if (!t)
		return ttrpc_reply_error(reply, TTRPC_NOT_FOUND, "container not found");
	_cleanup_free_ uint32_t *pids = NULL;
	size_t n = 0;
	bl_error_t err = BL_ERROR_INIT;
	if (c && bl_container_pids(c, &pids, &n, &err) < 0)
		return ttrpc_reply_error(reply, bl_to_status(err.code), "pids: %s", err.msg);
	_cleanup_free_ Containerd__Task__V2__ProcessInfo *infos =
	    bl_malloc0((n + 1) * sizeof(*infos));
	_cleanup_free_ Containerd__Task__V2__ProcessInfo **ptrs =
	    bl_malloc0((n + 1) * sizeof(*ptrs));
	for (size_t i = 0; i < n; i++) {
		containerd__task__v2__process_info__init(&infos[i]);
		infos[i].pid = pids[i];
		ptrs[i] = &infos[i];
	}
	Containerd__Task__V2__PidsResponse resp = CONTAINERD__TASK__V2__PIDS_RESPONSE__INIT;
	resp.n_processes = n;
	resp.processes = ptrs;
	return ttrpc_reply_message(reply, &resp.base);
}

static int h_stats(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	shim_service *s = user;
	UNPACK_OR_FAIL(Containerd__Task__V2__StatsRequest, containerd__task__v2__stats_request, req,
		       call, reply);
	stask *t;
	pthread_mutex_lock(&s->lock);
	bl_container *c = running_container(s, req->id, &t);
	pthread_mutex_unlock(&s->lock);
	protobuf_c_message_free_unpacked(&req->base, NULL);
	if (!c)
		return ttrpc_reply_error(reply, t ? TTRPC_FAILED_PRECONDITION : TTRPC_NOT_FOUND,
					 "container not running");
	bl_stats st;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_container_stats(c, &st, &err) < 0)
		return ttrpc_reply_error(reply, bl_to_status(err.code), "stats: %s", err.msg);
	Io__Containerd__Cgroups__V2__PidsStat pids = IO__CONTAINERD__CGROUPS__V2__PIDS_STAT__INIT;
	pids.current = st.pids_current;
	pids.limit = st.pids_max;
	Io__Containerd__Cgroups__V2__CPUStat cpu = IO__CONTAINERD__CGROUPS__V2__CPUSTAT__INIT;
	cpu.usage_usec = st.cpu_usage_usec;
	cpu.user_usec = st.cpu_user_usec;
	cpu.system_usec = st.cpu_system_usec;
	cpu.nr_periods = st.cpu_nr_periods;
	cpu.nr_throttled = st.cpu_nr_throttled;
	cpu.throttled_usec = st.cpu_throttled_usec;
	Io__Containerd__Cgroups__V2__MemoryStat mem =
	    IO__CONTAINERD__CGROUPS__V2__MEMORY_STAT__INIT;
	mem.anon = st.memory_anon;
	mem.file = st.memory_file;
	mem.usage = st.memory_current;
	mem.usage_limit = st.memory_max;
	mem.max_usage = st.memory_peak;
	Io__Containerd__Cgroups__V2__MemoryEvents ev =
	    IO__CONTAINERD__CGROUPS__V2__MEMORY_EVENTS__INIT;
	ev.low = st.events_low;
	ev.high = st.events_high;
	ev.max = st.events_max;
	ev.oom = st.events_oom;
	ev.oom_kill = st.events_oom_kill;
	Io__Containerd__Cgroups__V2__Metrics m = IO__CONTAINERD__CGROUPS__V2__METRICS__INIT;
	m.pids = &pids;
	m.cpu = &cpu;
	m.memory = &mem;
	m.memory_events = &ev;
	uint8_t buf[512];
	size_t len = io__containerd__cgroups__v2__metrics__get_packed_size(&m);
	if (len > sizeof(buf))
		return ttrpc_reply_error(reply, TTRPC_INTERNAL, "stats too large");
	io__containerd__cgroups__v2__metrics__pack(&m, buf);
	Containerd__Types__Any any = CONTAINERD__TYPES__ANY__INIT;
	any.type_url = (char *)io__containerd__cgroups__v2__metrics__descriptor.name;
	any.value.data = buf;
	any.value.len = len;
	Containerd__Task__V2__StatsResponse resp = CONTAINERD__TASK__V2__STATS_RESPONSE__INIT;
	resp.stats = &any;
	return ttrpc_reply_message(reply, &resp.base);
}

static int pause_resume(shim_service *s, const char *id, bool pause, ttrpc_reply *reply)
{
	stask *t;
	pthread_mutex_lock(&s->lock);
	bl_container *c = running_container(s, id, &t);
	bool already = t && t->paused == pause;
	pthread_mutex_unlock(&s->lock);
	if (!c)
		return ttrpc_reply_error(reply, t ? TTRPC_FAILED_PRECONDITION : TTRPC_NOT_FOUND,
					 "container %s not running", id);
	if (already)
		return ttrpc_reply_error(reply, TTRPC_FAILED_PRECONDITION, "container %s is %s", id,
					 pause ? "paused already" : "not paused");
	bl_error_t err = BL_ERROR_INIT;
	int r = pause ? bl_container_pause(c, &err) : bl_container_resume(c, &err);
	if (r < 0)
		return ttrpc_reply_error(reply, bl_to_status(r), "%s: %s",
					 pause ? "pause" : "resume", err.msg);
	pthread_mutex_lock(&s->lock);
	t->paused = pause;
	pthread_mutex_unlock(&s->lock);
	if (pause) {
		Containerd__Events__TaskPaused ev = CONTAINERD__EVENTS__TASK_PAUSED__INIT;
		ev.container_id = (char *)id;
		shim_publish(s->pub, "/tasks/paused", &ev.base);
	} else {
		Containerd__Events__TaskResumed ev = CONTAINERD__EVENTS__TASK_RESUMED__INIT;
		ev.container_id = (char *)id;
		shim_publish(s->pub, "/tasks/resumed", &ev.base);
	}
	Containerd__Types__Empty e = CONTAINERD__TYPES__EMPTY__INIT;
	return ttrpc_reply_message(reply, &e.base);
}

static int h_pause(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	UNPACK_OR_FAIL(Containerd__Task__V2__PauseRequest, containerd__task__v2__pause_request, req,
		       call, reply);
	int code = pause_resume(user, req->id, true, reply);
	protobuf_c_message_free_unpacked(&req->base, NULL);
	return code;
}

static int h_resume(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	UNPACK_OR_FAIL(Containerd__Task__V2__ResumeRequest, containerd__task__v2__resume_request,
		       req, call, reply);
	int code = pause_resume(user, req->id, false, reply);
	protobuf_c_message_free_unpacked(&req->base, NULL);
	return code;
}

static int h_update(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	shim_service *s = user;
	UNPACK_OR_FAIL(Containerd__Task__V2__UpdateTaskRequest,
		       containerd__task__v2__update_task_request, req, call, reply);
	stask *t;
	pthread_mutex_lock(&s->lock);
	bl_container *c = running_container(s, req->id, &t);
	pthread_mutex_unlock(&s->lock);
	int code;
	if (!c) {
		code = ttrpc_reply_error(reply, t ? TTRPC_FAILED_PRECONDITION : TTRPC_NOT_FOUND,
					 "container %s not running", req->id);
	} else if (!req->resources || req->resources->value.len > SHIM_CONFIG_MAX) {
		code = ttrpc_reply_error(reply, TTRPC_INVALID_ARGUMENT, "no resources");
	} else {
		_cleanup_free_ char *json = bl_malloc0(req->resources->value.len + 1);
		memcpy(json, req->resources->value.data, req->resources->value.len);
		bl_error_t err = BL_ERROR_INIT;
		if (bl_container_update_json(c, json, &err) < 0) {
			code =
			    ttrpc_reply_error(reply, bl_to_status(err.code), "update: %s", err.msg);
		} else {
			Containerd__Types__Empty e = CONTAINERD__TYPES__EMPTY__INIT;
			code = ttrpc_reply_message(reply, &e.base);
		}
	}
	protobuf_c_message_free_unpacked(&req->base, NULL);
	return code;
}

static int h_resize(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	shim_service *s = user;
	UNPACK_OR_FAIL(Containerd__Task__V2__ResizePtyRequest,
		       containerd__task__v2__resize_pty_request, req, call, reply);
	stask *t;
	sproc *p = lock_proc(s, req->id, req->exec_id, &t);
	if (!p)
		return reply_no_proc(reply, &req->base, req->id, req->exec_id);
	p->rows = req->height;
	p->cols = req->width;
	if (p->state == P_RUNNING)
		apply_size(p);
	pthread_mutex_unlock(&s->lock);
	protobuf_c_message_free_unpacked(&req->base, NULL);
	Containerd__Types__Empty e = CONTAINERD__TYPES__EMPTY__INIT;
	return ttrpc_reply_message(reply, &e.base);
}

static int h_closeio(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	shim_service *s = user;
	UNPACK_OR_FAIL(Containerd__Task__V2__CloseIORequest, containerd__task__v2__close_iorequest,
		       req, call, reply);
	stask *t;
	sproc *p = lock_proc(s, req->id, req->exec_id, &t);
	if (!p)
		return reply_no_proc(reply, &req->base, req->id, req->exec_id);
	if (req->stdin)
		shim_stdio_close_stdin(&p->io);
	pthread_mutex_unlock(&s->lock);
	protobuf_c_message_free_unpacked(&req->base, NULL);
	Containerd__Types__Empty e = CONTAINERD__TYPES__EMPTY__INIT;
	return ttrpc_reply_message(reply, &e.base);
}

static int h_connect(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	shim_service *s = user;
	UNPACK_OR_FAIL(Containerd__Task__V2__ConnectRequest, containerd__task__v2__connect_request,
		       req, call, reply);
	pthread_mutex_lock(&s->lock);
	stask *t = task_find(s, req->id);
	Containerd__Task__V2__ConnectResponse resp = CONTAINERD__TASK__V2__CONNECT_RESPONSE__INIT;
	resp.shim_pid = (uint32_t)getpid();
	resp.task_pid = t ? t->init.pid : 0;
	resp.version = BOXLITE_VERSION;
	int code = ttrpc_reply_message(reply, &resp.base);
	pthread_mutex_unlock(&s->lock);
	protobuf_c_message_free_unpacked(&req->base, NULL);
	return code;
}

static int h_shutdown(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	shim_service *s = user;
	pthread_mutex_lock(&s->lock);
	if (!s->tasks) {
		s->shutdown = true;
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
	Containerd__Types__Empty e = CONTAINERD__TYPES__EMPTY__INIT;
	return ttrpc_reply_message(reply, &e.base);
}

static int h_unimplemented(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	return ttrpc_reply_error(reply, TTRPC_UNIMPLEMENTED, "%s: not supported by boxlite",
				 call->method);
}

/* ------------------------------------------------------------ service */

typedef struct method {
	const char *name;
	ttrpc_handler_fn fn;
} method;

static const method methods[] = {
    {"State", h_state},	      {"Create", h_create},
    {"Start", h_start},	      {"Delete", h_delete},
    {"Pids", h_pids},	      {"Pause", h_pause},
    {"Resume", h_resume},     {"Checkpoint", h_unimplemented},
    {"Kill", h_kill},	      {"Exec", h_exec},
    {"ResizePty", h_resize},  {"CloseIO", h_closeio},
    {"Update", h_update},     {"Wait", h_wait},
    {"Stats", h_stats},	      {"Connect", h_connect},
    {"Shutdown", h_shutdown},
};

shim_service *shim_service_new(const shim_flags *f, shim_publisher *pub)
{
	shim_service *s = bl_malloc0(sizeof(*s));
	s->ns = bl_strdup(f->namespace_ ? f->namespace_ : "default");
	s->id = bl_strdup(f->id ? f->id : "");
	s->bundle = bl_strdup(f->bundle ? f->bundle : ".");
	s->pub = pub;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->vm_lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	return s;
}

int shim_service_register(shim_service *s, ttrpc_server *srv, bl_error_t *err)
{
	static const char *const services[] = {"containerd.task.v2.Task",
					       "containerd.task.v3.Task"};
	for (size_t i = 0; i < BL_ARRAY_SIZE(services); i++)
		for (size_t k = 0; k < BL_ARRAY_SIZE(methods); k++)
			if (ttrpc_server_register(srv, services[i], methods[k].name, methods[k].fn,
						  s) < 0)
				return bl_set_error(err, BL_ESYSTEM, "register %s/%s", services[i],
						    methods[k].name);
	return 0;
}

void shim_service_wait_shutdown(shim_service *s)
{
	pthread_mutex_lock(&s->lock);
	while (!s->shutdown)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

void shim_service_free(shim_service *s)
{
	if (!s)
		return;
	free(s->ns);
	free(s->id);
	free(s->bundle);
	free(s);
}
