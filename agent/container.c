#include "container.h"
#include "binds.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"
#include "cgroup.h"
#include "sync.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define DELETE_WAIT_NS (10ull * 1000000000ull)

pthread_mutex_t agent_spawn_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t agent_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t agent_exit_cond;
/* Serialises creates and deletes (slow: mounts), so ids cannot race. */
static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;
static agent_container *containers;
static size_t n_containers;

int agent_containers_init(bl_error_t *err)
{
	agent_cond_init(&agent_exit_cond);
	int r = bl_mkdir_p(AGENT_CONTAINERS_DIR, 0700, err);
	if (r == 0)
		r = bl_mkdir_p(AGENT_SHARES_DIR, 0700, err);
	return r;
}

static agent_container *find_locked(const char *id)
{
	for (agent_container *c = containers; c; c = c->next) {
		if (!strcmp(c->id, id))
			return c;
	}
	return NULL;
}

static void container_free(agent_container *c)
{
	while (c->procs) {
		agent_process *p = c->procs;
		c->procs = p->next;
		agent_process_free(p);
	}
	agent_spec_free(c->spec);
	free(c->rootfs);
	if (c->cgroup_fd >= 0)
		close(c->cgroup_fd);
	free(c);
}

BL_DEFINE_CLEANUP(agent_container, container_free)

agent_container *agent_container_get(const char *id, bl_error_t *err)
{
	if (!agent_valid_id(id)) {
		bl_set_error(err, BL_EINVAL, "invalid container id");
		return NULL;
	}
	pthread_mutex_lock(&agent_lock);
	agent_container *c = find_locked(id);
	if (c)
		c->refs++;
	pthread_mutex_unlock(&agent_lock);
	if (!c)
		bl_set_error(err, BL_ENOTFOUND, "no container \"%s\"", id);
	return c;
}

void agent_container_put(agent_container *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&agent_lock);
	bool last = --c->refs == 0;
	pthread_mutex_unlock(&agent_lock);
	if (last)
		container_free(c);
}

static int create_check(const char *id, bl_error_t *err)
{
	int r = 0;
	pthread_mutex_lock(&agent_lock);
	if (find_locked(id))
		r = bl_set_error(err, BL_EEXIST, "container \"%s\" already exists", id);
	else if (n_containers >= AGENT_MAX_CONTAINERS)
		r = bl_set_error(err, BL_ESTATE, "too many containers (%d)", AGENT_MAX_CONTAINERS);
	pthread_mutex_unlock(&agent_lock);
	return r;
}

static int create_locked(const char *id, const char *spec_json, size_t spec_len,
			 const agent_rootfs_req *rootfs, bl_error_t *err)
{
	int r = create_check(id, err);
	if (r < 0)
		return r;
	_cleanup_(container_freep) agent_container *c = bl_malloc0(sizeof(*c));
	snprintf(c->id, sizeof(c->id), "%s", id);
	c->cgroup_fd = -1;
	c->refs = 1;
	r = agent_spec_parse(spec_json, spec_len, &c->spec, err);
	if (r < 0)
		return r;
	c->readonly = rootfs->readonly || c->spec->root_readonly;
	r = agent_rootfs_mount(id, rootfs, &c->rootfs, err);
	if (r < 0)
		return bl_error_prefix(err, "rootfs");
	if (c->spec->n_binds) {
		_cleanup_free_ char *share =
		    bl_asprintf("%s/%s", AGENT_SHARES_DIR, rootfs->share_tag);
		r = agent_binds_mount(share, c->rootfs, c->spec->binds, c->spec->n_binds, err);
		if (r < 0) {
			(void)agent_rootfs_unmount(id, NULL);
			return r;
		}
	}
	r = agent_cgroup_create(id, c->spec, &c->cgroup_fd, err);
	if (r < 0) {
		(void)agent_rootfs_unmount(id, NULL);
		return bl_error_prefix(err, "cgroup");
	}
	pthread_mutex_lock(&agent_lock);
	c->next = containers;
	containers = steal_pointer(&c);
	n_containers++;
	pthread_mutex_unlock(&agent_lock);
	return 0;
}

int agent_container_create(const char *id, const char *spec_json, size_t spec_len,
			   const agent_rootfs_req *rootfs, bl_error_t *err)
{
	if (!agent_valid_id(id))
		return bl_set_error(err, BL_EINVAL, "invalid container id");
	pthread_mutex_lock(&create_lock);
	int r = create_locked(id, spec_json, spec_len, rootfs, err);
	pthread_mutex_unlock(&create_lock);
	if (r == 0)
		bl_info("container %s created", id);
	return r;
}

agent_process *agent_process_find(agent_container *c, const char *exec_id)
{
	for (agent_process *p = c->procs; p; p = p->next) {
		if (!strcmp(p->exec_id, exec_id) && !p->failed)
			return p;
	}
	return NULL;
}

static bool all_exited_locked(agent_container *c)
{
	for (agent_process *p = c->procs; p; p = p->next) {
		if (!p->exited)
			return false;
	}
	return true;
}

/* Kills the container's processes and waits (bounded) until all are reaped. */
static int stop_all(agent_container *c, bl_error_t *err)
{
	pthread_mutex_lock(&agent_lock);
	bool idle = all_exited_locked(c);
	pthread_mutex_unlock(&agent_lock);
	if (!idle) {
		bl_error_t ignored = BL_ERROR_INIT;
		(void)agent_cgroup_kill(c->id, &ignored);
	}
	uint64_t deadline = bl_now_monotonic_ns() + DELETE_WAIT_NS;
	int r = 0;
	pthread_mutex_lock(&agent_lock);
	while (!all_exited_locked(c) && r == 0) {
		if (!agent_cond_wait_until(&agent_exit_cond, &agent_lock, deadline))
			r = bl_set_error(err, BL_ETIMEOUT, "processes did not exit after SIGKILL");
	}
	pthread_mutex_unlock(&agent_lock);
	return r;
}

static void close_io(agent_container *c)
{
	for (agent_process *p = c->procs; p; p = p->next) {
		agent_stream_close(p->out);
		agent_stream_close(p->err);
		if (p->in)
			(void)agent_stdin_close(p->in, NULL);
	}
}

static void unlink_locked(agent_container *c)
{
	for (agent_container **pp = &containers; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			n_containers--;
			return;
		}
	}
}

static int delete_locked(const char *id, bl_error_t *err)
{
	agent_container *c = agent_container_get(id, err);
	if (!c)
		return -err->code;
	pthread_mutex_lock(&agent_spawn_lock);
	pthread_mutex_lock(&agent_lock);
	c->state = AGENT_C_DELETING;
	pthread_mutex_unlock(&agent_lock);
	pthread_mutex_unlock(&agent_spawn_lock);
	int r = stop_all(c, err);
	if (r == 0) {
		close_io(c);
		pthread_mutex_lock(&agent_lock);
		unlink_locked(c);
		c->refs--; /* the table's reference */
		pthread_mutex_unlock(&agent_lock);
		r = agent_rootfs_unmount(id, err);
		bl_error_t e2 = BL_ERROR_INIT;
		if (agent_cgroup_remove(id, &e2) < 0 && r == 0)
			r = bl_set_error(err, e2.code, "%s", e2.msg);
	}
	agent_container_put(c);
	return r;
}

int agent_container_delete(const char *id, bl_error_t *err)
{
	pthread_mutex_lock(&create_lock);
	int r = delete_locked(id, err);
	pthread_mutex_unlock(&create_lock);
	if (r == 0)
		bl_info("container %s deleted", id);
	return r;
}

void agent_containers_kill_all(void)
{
	pthread_mutex_lock(&agent_lock);
	for (agent_container *c = containers; c; c = c->next) {
		bl_error_t ignored = BL_ERROR_INIT;
		(void)agent_cgroup_kill(c->id, &ignored);
	}
	pthread_mutex_unlock(&agent_lock);
}

static void record_exit(agent_process *p, int wstatus)
{
	p->exited = true;
	p->wstatus = wstatus;
	p->exited_at_ns = (int64_t)bl_now_realtime_ns();
	p->oom_killed = agent_cgroup_oom_kills(p->c->id) > p->oom_before;
	if (p->c->init == p && p->c->state == AGENT_C_RUNNING)
		p->c->state = AGENT_C_STOPPED;
}

void agent_process_reaped(pid_t pid, int wstatus)
{
	pthread_mutex_lock(&agent_lock);
	for (agent_container *c = containers; c; c = c->next) {
		for (agent_process *p = c->procs; p; p = p->next) {
			if (p->pid == pid && !p->exited) {
				record_exit(p, wstatus);
				goto done;
			}
		}
	}
done:
	pthread_cond_broadcast(&agent_exit_cond);
	pthread_mutex_unlock(&agent_lock);
}
