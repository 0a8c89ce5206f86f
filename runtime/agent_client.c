#include "agent_client.h"
#include "agent.pb-c.h"
#include "bl_cleanup.h"
#include "bl_util.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CALL_TIMEOUT_NS (60ull * 1000000000ull)
#define VERSION_MAX		64
/* A ReadOutput reply with neither data nor EOF breaks "blocks until output". */
#define EMPTY_READS_MAX 1000

struct bl_agent {
	ttrpc_client *client;
	uint64_t timeout_ns;
};

static void unpacked_freep(void *p)
{
	ProtobufCMessage **m = p;
	if (*m)
		protobuf_c_message_free_unpacked(*m, NULL);
}

#define _cleanup_msg_ _cleanup_(unpacked_freep)

/* ------------------------------------------------------------ connecting */

static int wait_readable(int fd, uint64_t deadline_ns)
{
	for (;;) {
		uint64_t now = bl_now_monotonic_ns();
		if (now >= deadline_ns)
			return 0;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int ms = (int)((deadline_ns - now + 999999) / 1000000);
		int r = poll(&p, 1, ms);
		if (r < 0 && errno == EINTR)
			continue;
		return r < 0 ? -1 : r;
	}
}

static int read_preamble(int fd, uint64_t deadline_ns, bl_error_t *err)
{
	char buf[BL_AGENT_PREAMBLE_LEN];
	size_t got = 0;
	while (got < sizeof(buf)) {
		int r = wait_readable(fd, deadline_ns);
		if (r == 0)
			return bl_set_error(err, BL_ETIMEOUT,
					    "guest agent not ready in time (no preamble)");
		if (r < 0)
			return bl_set_error_errno(err, errno, "poll agent channel");
		ssize_t n = read(fd, buf + got, sizeof(buf) - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return bl_set_error_errno(err, errno, "read agent preamble");
		if (n == 0)
			return bl_set_error(err, BL_EAGENTLOST,
					    "the guest stopped before its agent was ready");
		got += (size_t)n;
	}
	if (memcmp(buf, BL_AGENT_PREAMBLE, sizeof(buf)))
		return bl_set_error(err, BL_EPROTO, "guest agent sent a wrong preamble");
	return 0;
}

int bl_agent_from_fd(int fd, bool preamble, uint64_t deadline_ns, bl_agent **ret, bl_error_t *err)
{
	_cleanup_close_ int owned = fd;
	if (preamble) {
		int r = read_preamble(fd, deadline_ns, err);
		if (r < 0)
			return r;
	}
	ttrpc_client *c = ttrpc_client_new(steal_fd(&owned), err);
	if (!c)
		return -(err && err->code ? (int)err->code : BL_ESYSTEM);
	bl_agent *a = bl_malloc0(sizeof(*a));
	a->client = c;
	a->timeout_ns = DEFAULT_CALL_TIMEOUT_NS;
	*ret = a;
	return 0;
}

static int connect_unix(const char *path, int *ret_fd, bl_error_t *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return bl_set_error(err, BL_EINVAL, "socket path too long: %s", path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "socket");
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return bl_set_error_errno(err, errno, "connect %s", path);
	*ret_fd = steal_fd(&fd);
	return 0;
}

int bl_agent_channel_fd(const char *path, uint64_t deadline_ns, int *ret_fd, bl_error_t *err)
{
	_cleanup_close_ int fd = -1;
	for (;;) {
		int r = connect_unix(path, &fd, err);
		if (r == 0)
			break;
		if (bl_now_monotonic_ns() >= deadline_ns)
			return bl_error_prefix(err, "agent channel");
		struct timespec ts = {0, 5 * 1000000};
		nanosleep(&ts, NULL);
	}
	int r = read_preamble(fd, deadline_ns, err);
	if (r < 0)
		return r;
	*ret_fd = steal_fd(&fd);
	return 0;
}

int bl_agent_connect_channel(const char *path, uint64_t deadline_ns, bl_agent **ret,
			     bl_error_t *err)
{
	int fd = -1;
	int r = bl_agent_channel_fd(path, deadline_ns, &fd, err);
	if (r < 0)
		return r;
	return bl_agent_from_fd(fd, false, 0, ret, err);
}

int bl_agent_dial(const char *path, bl_agent **ret, bl_error_t *err)
{
	int fd = -1;
	int r = connect_unix(path, &fd, err);
	if (r < 0) {
		if (err && (err->sys_errno == ENOENT || err->sys_errno == ECONNREFUSED))
			err->code = BL_EAGENTLOST;
		return r < 0 && err ? -(int)err->code : r;
	}
	return bl_agent_from_fd(fd, false, 0, ret, err);
}

ttrpc_client *bl_agent_ttrpc(bl_agent *a)
{
	return a->client;
}

void bl_agent_close(bl_agent *a)
{
	if (a && a->client)
		ttrpc_client_close(a->client);
}

void bl_agent_free(bl_agent *a)
{
	if (!a)
		return;
	if (a->client)
		ttrpc_client_free(a->client);
	free(a);
}

void bl_agent_set_timeout(bl_agent *a, uint64_t timeout_ns)
{
	a->timeout_ns = timeout_ns;
}

/* ------------------------------------------------------------ calls */

static int call(bl_agent *a, const char *method, const ProtobufCMessage *req,
		const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp,
		uint64_t timeout_ns, bl_error_t *err)
{
	ttrpc_status st = {0};
	int r = ttrpc_client_call(a->client, BL_AGENT_SERVICE, method, req, desc, resp, timeout_ns,
				  NULL, 0, &st, err);
	if (r < 0 && err && err->code == BL_OK)
		return bl_set_error(err, BL_EPROTO, "%s: failed", method);
	if (r == 0 && !*resp)
		return bl_set_error(err, BL_EPROTO, "%s: empty reply", method);
	return r;
}

static bool printable(const char *s, size_t max)
{
	size_t n = 0;
	for (; s && *s; s++, n++)
		if (n >= max || (unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

int bl_agent_ping(bl_agent *a, char *version, size_t version_len, bl_error_t *err)
{
	Boxlite__Agent__V1__PingRequest req = BOXLITE__AGENT__V1__PING_REQUEST__INIT;
	_cleanup_msg_ Boxlite__Agent__V1__PingResponse *resp = NULL;
	int r = call(a, "Ping", &req.base, &boxlite__agent__v1__ping_response__descriptor,
		     (ProtobufCMessage **)&resp, a->timeout_ns, err);
	if (r < 0)
		return r;
	if (!printable(resp->version, VERSION_MAX))
		return bl_set_error(err, BL_EPROTO, "Ping: agent version is not a short string");
	if (version && version_len)
		snprintf(version, version_len, "%s", resp->version ? resp->version : "");
	return 0;
}

int bl_agent_init(bl_agent *a, int64_t realtime_ns, const char *hostname, bl_error_t *err)
{
	Boxlite__Agent__V1__InitRequest req = BOXLITE__AGENT__V1__INIT_REQUEST__INIT;
	req.realtime_ns = realtime_ns;
	req.hostname = (char *)(hostname ? hostname : "");
	_cleanup_msg_ ProtobufCMessage *resp = NULL;
	return call(a, "Init", &req.base, &boxlite__agent__v1__init_response__descriptor, &resp,
		    a->timeout_ns, err);
}

int bl_agent_create_container(bl_agent *a, const char *cid, const char *spec_json,
			      const bl_agent_rootfs *rootfs, bl_error_t *err)
{
	Boxlite__Agent__V1__Rootfs rf = BOXLITE__AGENT__V1__ROOTFS__INIT;
	rf.share_tag = (char *)(rootfs->share_tag ? rootfs->share_tag : "");
	rf.share_subdir = (char *)(rootfs->share_subdir ? rootfs->share_subdir : "");
	rf.readonly = rootfs->readonly;
	rf.upper_size_bytes = rootfs->upper_size_bytes;
	rf.upper_device = (char *)(rootfs->upper_device ? rootfs->upper_device : "");
	Boxlite__Agent__V1__CreateContainerRequest req =
	    BOXLITE__AGENT__V1__CREATE_CONTAINER_REQUEST__INIT;
	req.container_id = (char *)cid;
	req.spec_json.data = (uint8_t *)spec_json;
	req.spec_json.len = strlen(spec_json);
	req.rootfs = &rf;
	_cleanup_msg_ ProtobufCMessage *resp = NULL;
	return call(a, "CreateContainer", &req.base,
		    &boxlite__agent__v1__create_container_response__descriptor, &resp,
		    a->timeout_ns, err);
}

int bl_agent_start_process(bl_agent *a, const char *cid, const char *eid, const char *process_json,
			   bool terminal, bool stdin_open, uint32_t *ret_pid, bl_error_t *err)
{
	Boxlite__Agent__V1__StartProcessRequest req =
	    BOXLITE__AGENT__V1__START_PROCESS_REQUEST__INIT;
	req.container_id = (char *)cid;
	req.exec_id = (char *)eid;
	if (process_json) {
		req.process_json.data = (uint8_t *)process_json;
		req.process_json.len = strlen(process_json);
	}
	req.terminal = terminal;
	req.stdin = stdin_open;
	_cleanup_msg_ Boxlite__Agent__V1__StartProcessResponse *resp = NULL;
	int r = call(a, "StartProcess", &req.base,
		     &boxlite__agent__v1__start_process_response__descriptor,
		     (ProtobufCMessage **)&resp, a->timeout_ns, err);
	if (r < 0)
		return r;
	if (resp->pid == 0 || resp->pid > (1u << 22))
		return bl_set_error(err, BL_EPROTO, "StartProcess: implausible pid %u", resp->pid);
	if (ret_pid)
		*ret_pid = resp->pid;
	return 0;
}

int bl_agent_wait_process(bl_agent *a, const char *cid, const char *eid, uint64_t timeout_ns,
			  bl_agent_exit *ret, bl_error_t *err)
{
	Boxlite__Agent__V1__WaitProcessRequest req = BOXLITE__AGENT__V1__WAIT_PROCESS_REQUEST__INIT;
	req.container_id = (char *)cid;
	req.exec_id = (char *)eid;
	_cleanup_msg_ Boxlite__Agent__V1__WaitProcessResponse *resp = NULL;
	int r = call(a, "WaitProcess", &req.base,
		     &boxlite__agent__v1__wait_process_response__descriptor,
		     (ProtobufCMessage **)&resp, timeout_ns, err);
	if (r < 0)
		return r;
	if (resp->exit_status < 0 || resp->exit_status > 255 || resp->signal < 0 ||
	    resp->signal > 64)
		return bl_set_error(err, BL_EPROTO, "WaitProcess: implausible status %d/signal %d",
				    resp->exit_status, resp->signal);
	ret->status = resp->exit_status;
	ret->signal = resp->signal;
	ret->oom_killed = resp->oom_killed;
	ret->exited_at_ns = resp->exited_at_ns;
	return 0;
}

int bl_agent_signal_process(bl_agent *a, const char *cid, const char *eid, int sig, bool all,
			    bl_error_t *err)
{
	Boxlite__Agent__V1__SignalProcessRequest req =
	    BOXLITE__AGENT__V1__SIGNAL_PROCESS_REQUEST__INIT;
	req.container_id = (char *)cid;
	req.exec_id = (char *)eid;
	req.signal = sig;
	req.all = all;
	_cleanup_msg_ ProtobufCMessage *resp = NULL;
	return call(a, "SignalProcess", &req.base,
		    &boxlite__agent__v1__signal_process_response__descriptor, &resp, a->timeout_ns,
		    err);
}

int bl_agent_write_stdin(bl_agent *a, const char *cid, const char *eid, const void *data,
			 size_t len, size_t *ret_len, bl_error_t *err)
{
	if (len > BL_AGENT_IO_MAX)
		len = BL_AGENT_IO_MAX;
	Boxlite__Agent__V1__WriteStdinRequest req = BOXLITE__AGENT__V1__WRITE_STDIN_REQUEST__INIT;
	req.container_id = (char *)cid;
	req.exec_id = (char *)eid;
	req.data.data = (uint8_t *)data;
	req.data.len = len;
	_cleanup_msg_ Boxlite__Agent__V1__WriteStdinResponse *resp = NULL;
	/* Backpressure: the agent may hold the call until the pipe drains. */
	int r =
	    call(a, "WriteStdin", &req.base, &boxlite__agent__v1__write_stdin_response__descriptor,
		 (ProtobufCMessage **)&resp, 0, err);
	if (r < 0)
		return r;
	if (resp->len > len || (len > 0 && resp->len == 0))
		return bl_set_error(err, BL_EPROTO, "WriteStdin: agent took %u of %zu bytes",
				    resp->len, len);
	*ret_len = resp->len;
	return 0;
}

int bl_agent_close_stdin(bl_agent *a, const char *cid, const char *eid, bl_error_t *err)
{
	Boxlite__Agent__V1__CloseStdinRequest req = BOXLITE__AGENT__V1__CLOSE_STDIN_REQUEST__INIT;
	req.container_id = (char *)cid;
	req.exec_id = (char *)eid;
	_cleanup_msg_ ProtobufCMessage *resp = NULL;
	return call(a, "CloseStdin", &req.base,
		    &boxlite__agent__v1__close_stdin_response__descriptor, &resp, a->timeout_ns,
		    err);
}

ssize_t bl_agent_read_output(bl_agent *a, const char *cid, const char *eid, int stream, void *buf,
			     size_t len, bl_error_t *err)
{
	if (stream != 1 && stream != 2)
		return bl_set_error(err, BL_EINVAL, "stream must be 1 or 2");
	if (len > BL_AGENT_IO_MAX)
		len = BL_AGENT_IO_MAX;
	const char *method = stream == 1 ? "ReadStdout" : "ReadStderr";
	Boxlite__Agent__V1__ReadOutputRequest req = BOXLITE__AGENT__V1__READ_OUTPUT_REQUEST__INIT;
	req.container_id = (char *)cid;
	req.exec_id = (char *)eid;
	req.max_len = (uint32_t)len;
	for (int empty = 0; empty < EMPTY_READS_MAX; empty++) {
		_cleanup_msg_ Boxlite__Agent__V1__ReadOutputResponse *resp = NULL;
		int r = call(a, method, &req.base,
			     &boxlite__agent__v1__read_output_response__descriptor,
			     (ProtobufCMessage **)&resp, 0, err);
		if (r < 0)
			return r;
		if (resp->data.len > len)
			return bl_set_error(err, BL_EPROTO, "%s: %zu bytes for a %zu-byte read",
					    method, resp->data.len, len);
		if (resp->data.len > 0) {
			memcpy(buf, resp->data.data, resp->data.len);
			return (ssize_t)resp->data.len;
		}
		if (resp->eof)
			return 0;
	}
	return bl_set_error(err, BL_EPROTO, "%s: agent keeps answering with nothing", method);
}

int bl_agent_resize_pty(bl_agent *a, const char *cid, const char *eid, unsigned rows, unsigned cols,
			bl_error_t *err)
{
	Boxlite__Agent__V1__ResizePtyRequest req = BOXLITE__AGENT__V1__RESIZE_PTY_REQUEST__INIT;
	req.container_id = (char *)cid;
	req.exec_id = (char *)eid;
	req.rows = rows;
	req.cols = cols;
	_cleanup_msg_ ProtobufCMessage *resp = NULL;
	return call(a, "ResizePty", &req.base, &boxlite__agent__v1__resize_pty_response__descriptor,
		    &resp, a->timeout_ns, err);
}

int bl_agent_stats_get(bl_agent *a, const char *cid, bl_agent_stats *ret, bl_error_t *err)
{
	Boxlite__Agent__V1__StatsRequest req = BOXLITE__AGENT__V1__STATS_REQUEST__INIT;
	req.container_id = (char *)cid;
	_cleanup_msg_ Boxlite__Agent__V1__StatsResponse *resp = NULL;
	int r = call(a, "Stats", &req.base, &boxlite__agent__v1__stats_response__descriptor,
		     (ProtobufCMessage **)&resp, a->timeout_ns, err);
	if (r < 0)
		return r;
	*ret = (bl_agent_stats){
	    .memory_current = resp->memory_current,
	    .memory_max = resp->memory_max,
	    .memory_peak = resp->memory_peak,
	    .pids_current = resp->pids_current,
	    .pids_max = resp->pids_max,
	    .cpu_usage_usec = resp->cpu_usage_usec,
	    .oom_kills = resp->oom_kills,
	    .memory_anon = resp->memory_anon,
	    .memory_file = resp->memory_file,
	    .cpu_user_usec = resp->cpu_user_usec,
	    .cpu_system_usec = resp->cpu_system_usec,
	    .cpu_nr_periods = resp->cpu_nr_periods,
	    .cpu_nr_throttled = resp->cpu_nr_throttled,
	    .cpu_throttled_usec = resp->cpu_throttled_usec,
	    .events_low = resp->events_low,
	    .events_high = resp->events_high,
	    .events_max = resp->events_max,
	    .events_oom = resp->events_oom,
	};
	return 0;
}

#define PIDS_MAX (1u << 16)

int bl_agent_list_pids(bl_agent *a, const char *cid, uint32_t **ret, size_t *ret_n, bl_error_t *err)
{
	Boxlite__Agent__V1__ListPidsRequest req = BOXLITE__AGENT__V1__LIST_PIDS_REQUEST__INIT;
	req.container_id = (char *)cid;
	_cleanup_msg_ Boxlite__Agent__V1__ListPidsResponse *resp = NULL;
	int r = call(a, "ListPids", &req.base, &boxlite__agent__v1__list_pids_response__descriptor,
		     (ProtobufCMessage **)&resp, a->timeout_ns, err);
	if (r < 0)
		return r;
	if (resp->n_pids > PIDS_MAX)
		return bl_set_error(err, BL_EPROTO, "ListPids: %zu pids", resp->n_pids);
	uint32_t *v = bl_malloc0((resp->n_pids + 1) * sizeof(uint32_t));
	for (size_t i = 0; i < resp->n_pids; i++) {
		if (resp->pids[i] == 0 || resp->pids[i] > (1u << 22)) {
			free(v);
			return bl_set_error(err, BL_EPROTO, "ListPids: implausible pid %u",
					    resp->pids[i]);
		}
		v[i] = resp->pids[i];
	}
	*ret = v;
	*ret_n = resp->n_pids;
	return 0;
}

int bl_agent_pause_container(bl_agent *a, const char *cid, bool frozen, bl_error_t *err)
{
	Boxlite__Agent__V1__PauseContainerRequest req =
	    BOXLITE__AGENT__V1__PAUSE_CONTAINER_REQUEST__INIT;
	req.container_id = (char *)cid;
	_cleanup_msg_ ProtobufCMessage *resp = NULL;
	if (frozen)
		return call(a, "PauseContainer", &req.base,
			    &boxlite__agent__v1__pause_container_response__descriptor, &resp,
			    a->timeout_ns, err);
	Boxlite__Agent__V1__ResumeContainerRequest rreq =
	    BOXLITE__AGENT__V1__RESUME_CONTAINER_REQUEST__INIT;
	rreq.container_id = (char *)cid;
	return call(a, "ResumeContainer", &rreq.base,
		    &boxlite__agent__v1__resume_container_response__descriptor, &resp,
		    a->timeout_ns, err);
}

int bl_agent_update_container(bl_agent *a, const char *cid, const bl_agent_limits *lim,
			      bl_error_t *err)
{
	Boxlite__Agent__V1__UpdateContainerRequest req =
	    BOXLITE__AGENT__V1__UPDATE_CONTAINER_REQUEST__INIT;
	req.container_id = (char *)cid;
	req.memory_limit = lim->memory_limit;
	req.cpu_quota = lim->cpu_quota;
	req.cpu_period = lim->cpu_period;
	req.cpu_weight = lim->cpu_weight;
	req.pids_limit = lim->pids_limit;
	_cleanup_msg_ ProtobufCMessage *resp = NULL;
	return call(a, "UpdateContainer", &req.base,
		    &boxlite__agent__v1__update_container_response__descriptor, &resp,
		    a->timeout_ns, err);
}

int bl_agent_delete_container(bl_agent *a, const char *cid, bl_error_t *err)
{
	Boxlite__Agent__V1__DeleteContainerRequest req =
	    BOXLITE__AGENT__V1__DELETE_CONTAINER_REQUEST__INIT;
	req.container_id = (char *)cid;
	_cleanup_msg_ ProtobufCMessage *resp = NULL;
	return call(a, "DeleteContainer", &req.base,
		    &boxlite__agent__v1__delete_container_response__descriptor, &resp,
		    a->timeout_ns, err);
}

int bl_agent_shutdown(bl_agent *a, bl_error_t *err)
{
	Boxlite__Agent__V1__ShutdownRequest req = BOXLITE__AGENT__V1__SHUTDOWN_REQUEST__INIT;
	_cleanup_msg_ ProtobufCMessage *resp = NULL;
	bl_error_t local = BL_ERROR_INIT;
	int r = call(a, "Shutdown", &req.base, &boxlite__agent__v1__shutdown_response__descriptor,
		     &resp, 2000000000ull, &local);
	if (r < 0 && local.code != BL_EAGENTLOST && local.code != BL_ETIMEOUT) {
		if (err)
			*err = local;
		return r;
	}
	return 0;
}
