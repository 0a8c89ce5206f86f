/* The owner of a long-lived sandbox (bl_monitor_* in boxlite.h). */
#include "sandbox_internal.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct bl_monitor {
	bl_sandbox *sb;
	ttrpc_server *srv;
	bl_process *init;
	int wake[2];
	pthread_t watcher;
	bool watching;
};

BL_DEFINE_CLEANUP(json_object, json_object_put)

/* Forwards one agent request as is; the agent's status comes back as is. */
static int forward(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	bl_monitor *m = user;
	uint64_t timeout = 0;
	if (call->deadline_ns) {
		uint64_t now = bl_now_monotonic_ns();
		if (call->deadline_ns <= now)
			return ttrpc_reply_error(reply, TTRPC_DEADLINE_EXCEEDED, "deadline passed");
		timeout = call->deadline_ns - now;
	}
	ttrpc_status st = {0};
	uint8_t *out = NULL;
	size_t out_len = 0;
	bl_error_t err = BL_ERROR_INIT;
	int r = ttrpc_client_call_raw(bl_agent_ttrpc(m->sb->agent), call->service, call->method,
				      call->payload, call->payload_len, NULL, 0, timeout, &st, &out,
				      &out_len, &err);
	if (r < 0) {
		r = bl_sandbox_map_error(m->sb, r, &err);
		return ttrpc_reply_error(reply, ttrpc_code_from_bl(-r), "%s", err.msg);
	}
	if (st.code != TTRPC_OK) {
		free(out);
		return ttrpc_reply_error(reply, st.code, "%s", st.message);
	}
	if (!out)
		out = bl_malloc0(1);
	return ttrpc_reply_raw(reply, out, out_len);
}

static int handle_stop(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	bl_monitor *m = user;
	bl_error_t err = BL_ERROR_INIT;
	bl_info("monitor: Stop requested");
	int r = bl_sandbox_stop(m->sb, &err);
	bl_monitor_request_stop(m);
	if (r < 0)
		return ttrpc_reply_error(reply, ttrpc_code_from_bl(-r), "%s", err.msg);
	return ttrpc_reply_raw(reply, bl_malloc0(1), 0);
}

static int handle_info(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	bl_monitor *m = user;
	_cleanup_(json_object_putp) json_object *o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(m->sb->id));
	json_object_object_add(o, "pid", json_object_new_int(getpid()));
	json_object_object_add(o, "qemu_pid", json_object_new_int(bl_sandbox_qemu_pid(m->sb)));
	json_object_object_add(o, "accel", json_object_new_string(m->sb->accel_why));
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s);
	uint8_t *buf = bl_malloc0(len + 1);
	memcpy(buf, s, len);
	return ttrpc_reply_raw(reply, buf, len);
}

/* The init process ends when the VM does (or someone killed it): stop then. */
static void *watcher_main(void *arg)
{
	bl_monitor *m = arg;
	bl_exit e;
	bl_error_t err = BL_ERROR_INIT;
	(void)bl_process_wait(m->init, &e, &err);
	bl_info("monitor: sandbox init ended (%s)", err.msg[0] ? err.msg : "exited");
	bl_monitor_request_stop(m);
	return NULL;
}

void bl_monitor_request_stop(bl_monitor *m)
{
	(void)!write(m->wake[1], "x", 1);
}

void bl_monitor_wait(bl_monitor *m)
{
	struct pollfd p = {.fd = m->wake[0], .events = POLLIN};
	while (poll(&p, 1, -1) < 0 && errno == EINTR)
		;
}

int bl_monitor_start(bl_sandbox *sb, bl_monitor **ret, bl_error_t *err)
{
	bl_monitor *m = bl_malloc0(sizeof(*m));
	m->sb = sb;
	if (pipe2(m->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		free(m);
		return bl_set_error_errno(err, errno, "pipe");
	}
	int r = bl_sandbox_start(sb, &m->init, err);
	if (r == 0 && pthread_create(&m->watcher, NULL, watcher_main, m) == 0)
		m->watching = true;
	if (r == 0) {
		m->srv = ttrpc_server_new();
		for (size_t i = 0; r == 0 && bl_agent_methods[i]; i++)
			r = ttrpc_server_register(m->srv, BL_AGENT_SERVICE, bl_agent_methods[i],
						  forward, m);
		if (r == 0)
			r = ttrpc_server_register(m->srv, BL_MONITOR_SERVICE, "Stop", handle_stop,
						  m);
		if (r == 0)
			r = ttrpc_server_register(m->srv, BL_MONITOR_SERVICE, "Info", handle_info,
						  m);
		if (r < 0)
			r = bl_set_error(err, BL_ESYSTEM, "register monitor handlers");
	}
	_cleanup_free_ char *api = bl_asprintf("%s/api.sock", sb->dir);
	if (r == 0)
		r = ttrpc_server_listen_unix(m->srv, api, err);
	if (r == 0)
		r = ttrpc_server_start(m->srv, err);
	if (r < 0) {
		bl_monitor_free(m);
		return r;
	}
	*ret = m;
	return 0;
}

void bl_monitor_free(bl_monitor *m)
{
	if (!m)
		return;
	if (m->srv) {
		ttrpc_server_shutdown(m->srv);
		ttrpc_server_free(m->srv);
	}
	if (m->watching) {
		/* The watcher returns once the VM is gone and the agent client closed. */
		bl_sandbox_cancel(m->sb);
		pthread_join(m->watcher, NULL);
	}
	bl_process_free(m->init);
	close(m->wake[0]);
	close(m->wake[1]);
	free(m);
}
