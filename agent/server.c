#include "server.h"
#include "agent.h"
#include "agent.pb-c.h"
#include "bl_agent_proto.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"
#include "cgroup.h"
#include "container.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_IO_CHUNK  BL_AGENT_IO_MAX
#define DEFAULT_CHUNK (64u * 1024)

static void pb_freep(void *p)
{
	ProtobufCMessage **m = p;
	if (*m)
		protobuf_c_message_free_unpacked(*m, NULL);
}

static void container_putp(agent_container **c)
{
	agent_container_put(*c);
}

#define _cleanup_pb_	    _cleanup_(pb_freep)
#define _cleanup_container_ _cleanup_(container_putp)

/* Decodes the request as `type` into `var`, or replies INVALID_ARGUMENT. */
#define UNPACK(type, fn, var)                                                          \
	_cleanup_pb_ type *var = fn##__unpack(NULL, call->payload_len, call->payload); \
	if (!var)                                                                      \
		return ttrpc_reply_error(reply, TTRPC_INVALID_ARGUMENT, "malformed request");

static int reply_err(ttrpc_reply *reply, const bl_error_t *e)
{
	return ttrpc_reply_error(reply, ttrpc_code_from_error(e), "%s", e->msg);
}

/* Looks up (container_id, exec_id) after checking both. */
static agent_container *get_checked(const char *id, const char *exec_id, bl_error_t *err)
{
	if (exec_id && !agent_valid_exec_id(exec_id)) {
		bl_set_error(err, BL_EINVAL, "invalid exec id");
		return NULL;
	}
	return agent_container_get(id, err);
}

static int h_ping(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	Boxlite__Agent__V1__PingResponse resp = BOXLITE__AGENT__V1__PING_RESPONSE__INIT;
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	resp.version = (char *)AGENT_VERSION;
	resp.uptime_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	return ttrpc_reply_message(reply, &resp.base);
}

static int h_init(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	UNPACK(Boxlite__Agent__V1__InitRequest, boxlite__agent__v1__init_request, req);
	if (req->hostname[0] && !agent_valid_hostname(req->hostname))
		return ttrpc_reply_error(reply, TTRPC_INVALID_ARGUMENT, "invalid hostname");
	if (req->realtime_ns > 0) {
		struct timespec ts = {.tv_sec = req->realtime_ns / 1000000000ll,
				      .tv_nsec = req->realtime_ns % 1000000000ll};
		if (clock_settime(CLOCK_REALTIME, &ts) < 0)
			return ttrpc_reply_error(reply, TTRPC_INTERNAL, "clock_settime: %s",
						 strerror(errno));
	}
	if (req->hostname[0] && sethostname(req->hostname, strlen(req->hostname)) < 0)
		return ttrpc_reply_error(reply, TTRPC_INTERNAL, "sethostname: %s", strerror(errno));
	Boxlite__Agent__V1__InitResponse resp = BOXLITE__AGENT__V1__INIT_RESPONSE__INIT;
	return ttrpc_reply_message(reply, &resp.base);
}

static int h_create(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	UNPACK(Boxlite__Agent__V1__CreateContainerRequest,
	       boxlite__agent__v1__create_container_request, req);
	if (!req->rootfs)
		return ttrpc_reply_error(reply, TTRPC_INVALID_ARGUMENT, "rootfs missing");
	agent_rootfs_req rf = {
	    .share_tag = req->rootfs->share_tag,
	    .share_subdir = req->rootfs->share_subdir,
	    .readonly = req->rootfs->readonly,
	    .upper_size_bytes = req->rootfs->upper_size_bytes,
	    .upper_device = req->rootfs->upper_device,
	};
	bl_error_t err = BL_ERROR_INIT;
	if (agent_container_create(req->container_id, (const char *)req->spec_json.data,
				   req->spec_json.len, &rf, &err) < 0)
		return reply_err(reply, &err);
	Boxlite__Agent__V1__CreateContainerResponse resp =
	    BOXLITE__AGENT__V1__CREATE_CONTAINER_RESPONSE__INIT;
	return ttrpc_reply_message(reply, &resp.base);
}

static int start_in(agent_container *c, const Boxlite__Agent__V1__StartProcessRequest *req,
		    pid_t *pid, bl_error_t *err)
{
	if (!req->exec_id[0]) {
		if (!c->spec->process)
			return bl_set_error(err, BL_EINVAL, "spec has no process");
		return agent_process_start(c, "", c->spec->process,
					   req->terminal || c->spec->process->terminal, req->stdin,
					   pid, err);
	}
	agent_process_spec *p = NULL;
	int r = agent_process_spec_parse((const char *)req->process_json.data,
					 req->process_json.len, &p, err);
	if (r == 0)
		r = agent_process_start(c, req->exec_id, p, req->terminal || p->terminal,
					req->stdin, pid, err);
	agent_process_spec_free(p);
	return r;
}

static int h_start(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	UNPACK(Boxlite__Agent__V1__StartProcessRequest, boxlite__agent__v1__start_process_request,
	       req);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_container_ agent_container *c = get_checked(req->container_id, req->exec_id, &err);
	pid_t pid = 0;
	if (!c || start_in(c, req, &pid, &err) < 0)
		return reply_err(reply, &err);
	Boxlite__Agent__V1__StartProcessResponse resp =
	    BOXLITE__AGENT__V1__START_PROCESS_RESPONSE__INIT;
	resp.pid = (uint32_t)pid;
	return ttrpc_reply_message(reply, &resp.base);
}

static int h_wait(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	UNPACK(Boxlite__Agent__V1__WaitProcessRequest, boxlite__agent__v1__wait_process_request,
	       req);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_container_ agent_container *c = get_checked(req->container_id, req->exec_id, &err);
	int wstatus = 0, sig = 0;
	int64_t at = 0;
	bool oom = false;
	if (!c ||
	    agent_process_wait(c, req->exec_id, call->deadline_ns, &wstatus, &at, &oom, &err) < 0)
		return reply_err(reply, &err);
	Boxlite__Agent__V1__WaitProcessResponse resp =
	    BOXLITE__AGENT__V1__WAIT_PROCESS_RESPONSE__INIT;
	resp.exit_status = agent_exit_status(wstatus, &sig);
	resp.signal = sig;
	resp.oom_killed = oom;
	resp.exited_at_ns = at;
	return ttrpc_reply_message(reply, &resp.base);
}

static int h_signal(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	UNPACK(Boxlite__Agent__V1__SignalProcessRequest, boxlite__agent__v1__signal_process_request,
	       req);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_container_ agent_container *c = get_checked(req->container_id, req->exec_id, &err);
	if (!c || agent_process_signal(c, req->exec_id, req->signal, req->all, &err) < 0)
		return reply_err(reply, &err);
	Boxlite__Agent__V1__SignalProcessResponse resp =
	    BOXLITE__AGENT__V1__SIGNAL_PROCESS_RESPONSE__INIT;
	return ttrpc_reply_message(reply, &resp.base);
}

/* The process's stdin writer (NULL with err when there is none). */
static agent_stdin *find_stdin(agent_container *c, const char *exec_id, bl_error_t *err)
{
	pthread_mutex_lock(&agent_lock);
	agent_process *p = agent_process_find(c, exec_id);
	agent_stdin *in = p ? p->in : NULL;
	pthread_mutex_unlock(&agent_lock);
	if (!p)
		bl_set_error(err, BL_ENOTFOUND, "no process \"%s\"", exec_id);
	else if (!in)
		bl_set_error(err, BL_ESTATE, "process was started without stdin");
	return in;
}

static int h_write_stdin(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	UNPACK(Boxlite__Agent__V1__WriteStdinRequest, boxlite__agent__v1__write_stdin_request, req);
	bl_error_t err = BL_ERROR_INIT;
	if (req->data.len > MAX_IO_CHUNK)
		return ttrpc_reply_error(reply, TTRPC_INVALID_ARGUMENT, "more than 1 MiB of data");
	_cleanup_container_ agent_container *c = get_checked(req->container_id, req->exec_id, &err);
	agent_stdin *in = c ? find_stdin(c, req->exec_id, &err) : NULL;
	size_t written = 0;
	if (!in || agent_stdin_write(in, req->data.data, req->data.len, call->deadline_ns, &written,
				     &err) < 0)
		return reply_err(reply, &err);
	Boxlite__Agent__V1__WriteStdinResponse resp =
	    BOXLITE__AGENT__V1__WRITE_STDIN_RESPONSE__INIT;
	resp.len = (uint32_t)written;
	return ttrpc_reply_message(reply, &resp.base);
}

static int h_close_stdin(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	UNPACK(Boxlite__Agent__V1__CloseStdinRequest, boxlite__agent__v1__close_stdin_request, req);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_container_ agent_container *c = get_checked(req->container_id, req->exec_id, &err);
	agent_stdin *in = c ? find_stdin(c, req->exec_id, &err) : NULL;
	if (!in || agent_stdin_close(in, &err) < 0)
		return reply_err(reply, &err);
	Boxlite__Agent__V1__CloseStdinResponse resp =
	    BOXLITE__AGENT__V1__CLOSE_STDIN_RESPONSE__INIT;
	return ttrpc_reply_message(reply, &resp.base);
}

/* stderr of a terminal process: always at EOF. */
static int read_output(const ttrpc_call *call, ttrpc_reply *reply, bool want_err)
{
	UNPACK(Boxlite__Agent__V1__ReadOutputRequest, boxlite__agent__v1__read_output_request, req);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_container_ agent_container *c = get_checked(req->container_id, req->exec_id, &err);
	if (!c)
		return reply_err(reply, &err);
	pthread_mutex_lock(&agent_lock);
	agent_process *p = agent_process_find(c, req->exec_id);
	agent_stream *s = p ? (want_err ? p->err : p->out) : NULL;
	pthread_mutex_unlock(&agent_lock);
	if (!p)
		return ttrpc_reply_error(reply, TTRPC_NOT_FOUND, "no process \"%s\"", req->exec_id);
	size_t max = req->max_len == 0		   ? DEFAULT_CHUNK
		     : req->max_len > MAX_IO_CHUNK ? MAX_IO_CHUNK
						   : req->max_len;
	_cleanup_free_ uint8_t *data = NULL;
	size_t len = 0;
	bool eof = true;
	if (s)
		(void)agent_stream_read(s, max, call->deadline_ns, &data, &len, &eof);
	Boxlite__Agent__V1__ReadOutputResponse resp =
	    BOXLITE__AGENT__V1__READ_OUTPUT_RESPONSE__INIT;
	resp.data.data = data;
	resp.data.len = len;
	resp.eof = eof;
	return ttrpc_reply_message(reply, &resp.base);
}

static int h_read_stdout(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	return read_output(call, reply, false);
}

static int h_read_stderr(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	return read_output(call, reply, true);
}

static int h_resize(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	UNPACK(Boxlite__Agent__V1__ResizePtyRequest, boxlite__agent__v1__resize_pty_request, req);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_container_ agent_container *c = get_checked(req->container_id, req->exec_id, &err);
	if (!c)
		return reply_err(reply, &err);
	if (req->rows > 0xffff || req->cols > 0xffff)
		return ttrpc_reply_error(reply, TTRPC_INVALID_ARGUMENT, "window size out of range");
	struct winsize ws = {.ws_row = (unsigned short)req->rows,
			     .ws_col = (unsigned short)req->cols};
	int code = TTRPC_OK;
	pthread_mutex_lock(&agent_lock);
	agent_process *p = agent_process_find(c, req->exec_id);
	if (!p)
		code = TTRPC_NOT_FOUND;
	else if (p->pty_fd < 0)
		code = TTRPC_FAILED_PRECONDITION;
	else if (ioctl(p->pty_fd, TIOCSWINSZ, &ws) < 0)
		code = TTRPC_INTERNAL;
	pthread_mutex_unlock(&agent_lock);
	if (code != TTRPC_OK)
		return ttrpc_reply_error(reply, code, "resize pty of \"%s\" failed", req->exec_id);
	Boxlite__Agent__V1__ResizePtyResponse resp = BOXLITE__AGENT__V1__RESIZE_PTY_RESPONSE__INIT;
	return ttrpc_reply_message(reply, &resp.base);
}

static int h_stats(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	UNPACK(Boxlite__Agent__V1__StatsRequest, boxlite__agent__v1__stats_request, req);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_container_ agent_container *c = get_checked(req->container_id, NULL, &err);
	agent_cgroup_stats st = {0};
	if (!c || agent_cgroup_stats_read(c->id, &st, &err) < 0)
		return reply_err(reply, &err);
	Boxlite__Agent__V1__StatsResponse resp = BOXLITE__AGENT__V1__STATS_RESPONSE__INIT;
	resp.memory_current = st.memory_current;
	resp.memory_max = st.memory_max;
	resp.memory_peak = st.memory_peak;
	resp.pids_current = st.pids_current;
	resp.pids_max = st.pids_max;
	resp.cpu_usage_usec = st.cpu_usage_usec;
	resp.oom_kills = st.oom_kills;
	resp.memory_anon = st.memory_anon;
	resp.memory_file = st.memory_file;
	resp.cpu_user_usec = st.cpu_user_usec;
	resp.cpu_system_usec = st.cpu_system_usec;
	resp.cpu_nr_periods = st.cpu_nr_periods;
	resp.cpu_nr_throttled = st.cpu_nr_throttled;
	resp.cpu_throttled_usec = st.cpu_throttled_usec;
	resp.events_low = st.events_low;
	resp.events_high = st.events_high;
	resp.events_max = st.events_max;
	resp.events_oom = st.events_oom;
	return ttrpc_reply_message(reply, &resp.base);
}

static int h_list_pids(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	UNPACK(Boxlite__Agent__V1__ListPidsRequest, boxlite__agent__v1__list_pids_request, req);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_container_ agent_container *c = get_checked(req->container_id, NULL, &err);
	_cleanup_free_ pid_t *pids = NULL;
	size_t n = 0;
	if (!c || agent_cgroup_pids(c->id, &pids, &n, &err) < 0)
		return reply_err(reply, &err);
	Boxlite__Agent__V1__ListPidsResponse resp = BOXLITE__AGENT__V1__LIST_PIDS_RESPONSE__INIT;
	resp.n_pids = n;
	resp.pids = (uint32_t *)pids; /* pid_t and uint32_t share size and representation */
	return ttrpc_reply_message(reply, &resp.base);
}

static int h_delete(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	UNPACK(Boxlite__Agent__V1__DeleteContainerRequest,
	       boxlite__agent__v1__delete_container_request, req);
	bl_error_t err = BL_ERROR_INIT;
	if (agent_container_delete(req->container_id, &err) < 0)
		return reply_err(reply, &err);
	Boxlite__Agent__V1__DeleteContainerResponse resp =
	    BOXLITE__AGENT__V1__DELETE_CONTAINER_RESPONSE__INIT;
	return ttrpc_reply_message(reply, &resp.base);
}

static void *shutdown_thread(void *arg)
{
	(void)arg;
	usleep(100 * 1000); /* let the reply go out */
	agent_containers_kill_all();
	agent_reboot("shutdown requested");
}

static int h_shutdown(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	pthread_t t;
	if (pthread_create(&t, NULL, shutdown_thread, NULL) != 0)
		agent_reboot("shutdown requested");
	pthread_detach(t);
	Boxlite__Agent__V1__ShutdownResponse resp = BOXLITE__AGENT__V1__SHUTDOWN_RESPONSE__INIT;
	return ttrpc_reply_message(reply, &resp.base);
}

static int h_pause_resume(const ttrpc_call *call, ttrpc_reply *reply, bool frozen)
{
	/* PauseContainerRequest and ResumeContainerRequest share one layout. */
	UNPACK(Boxlite__Agent__V1__PauseContainerRequest,
	       boxlite__agent__v1__pause_container_request, req);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_container_ agent_container *c = get_checked(req->container_id, NULL, &err);
	if (!c || agent_cgroup_freeze(c->id, frozen, call->deadline_ns, &err) < 0)
		return reply_err(reply, &err);
	Boxlite__Agent__V1__PauseContainerResponse resp =
	    BOXLITE__AGENT__V1__PAUSE_CONTAINER_RESPONSE__INIT;
	return ttrpc_reply_message(reply, &resp.base);
}

static int h_pause(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	return h_pause_resume(call, reply, true);
}

static int h_resume(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	return h_pause_resume(call, reply, false);
}

static int h_update(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	UNPACK(Boxlite__Agent__V1__UpdateContainerRequest,
	       boxlite__agent__v1__update_container_request, req);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_container_ agent_container *c = get_checked(req->container_id, NULL, &err);
	agent_cgroup_limits lim = {
	    .memory_limit = req->memory_limit,
	    .cpu_quota = req->cpu_quota,
	    .cpu_period = req->cpu_period,
	    .cpu_weight = req->cpu_weight,
	    .pids_limit = req->pids_limit,
	};
	if (!c || agent_cgroup_update(c->id, &lim, &err) < 0)
		return reply_err(reply, &err);
	Boxlite__Agent__V1__UpdateContainerResponse resp =
	    BOXLITE__AGENT__V1__UPDATE_CONTAINER_RESPONSE__INIT;
	return ttrpc_reply_message(reply, &resp.base);
}

/* Handlers by method (common/bl_agent_proto.h is the method table). */
static const ttrpc_handler_fn handlers[BL_AGENT_N_METHODS] = {
    [BL_AGENT_PING] = h_ping,
    [BL_AGENT_INIT] = h_init,
    [BL_AGENT_CREATE_CONTAINER] = h_create,
    [BL_AGENT_START_PROCESS] = h_start,
    [BL_AGENT_WAIT_PROCESS] = h_wait,
    [BL_AGENT_SIGNAL_PROCESS] = h_signal,
    [BL_AGENT_WRITE_STDIN] = h_write_stdin,
    [BL_AGENT_CLOSE_STDIN] = h_close_stdin,
    [BL_AGENT_READ_STDOUT] = h_read_stdout,
    [BL_AGENT_READ_STDERR] = h_read_stderr,
    [BL_AGENT_RESIZE_PTY] = h_resize,
    [BL_AGENT_STATS] = h_stats,
    [BL_AGENT_LIST_PIDS] = h_list_pids,
    [BL_AGENT_DELETE_CONTAINER] = h_delete,
    [BL_AGENT_SHUTDOWN] = h_shutdown,
    [BL_AGENT_PAUSE_CONTAINER] = h_pause,
    [BL_AGENT_RESUME_CONTAINER] = h_resume,
    [BL_AGENT_UPDATE_CONTAINER] = h_update,
};

int agent_server_register(ttrpc_server *srv, bl_error_t *err)
{
	for (size_t i = 0; i < BL_AGENT_N_METHODS; i++) {
		if (!handlers[i])
			return bl_set_error(err, BL_EINVAL, "no handler for %s",
					    bl_agent_methods[i]);
		int r = ttrpc_server_register(srv, BL_AGENT_SERVICE, bl_agent_methods[i],
					      handlers[i], NULL);
		if (r < 0)
			return bl_set_error(err, BL_EINVAL, "register %s", bl_agent_methods[i]);
	}
	return 0;
}
