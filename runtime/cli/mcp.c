/*
 * boxlite mcp: a Model Context Protocol server on stdin/stdout.
 *
 * Framing: one JSON-RPC 2.0 message per line (no embedded newlines), at most
 * cfg.max_message bytes; nothing but protocol messages goes to stdout (fd 1
 * is pointed at stderr, the protocol keeps a private copy). The main thread
 * reads and answers everything but tools/call, which runs in a thread of its
 * own so that ping and notifications/cancelled are served meanwhile. One
 * sandbox per session, created by the first tool call and destroyed when
 * stdin ends, the client stops reading, or on SIGINT/SIGTERM/SIGHUP.
 */
#include "cli.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"
#include "mcp.h"
#include "options.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define LATEST_VERSION "2025-06-18"
#define JSON_DEPTH     64

#define E_PARSE	   -32700
#define E_REQUEST  -32600
#define E_METHOD   -32601
#define E_PARAMS   -32602
#define E_INTERNAL -32603

static const char *const versions[] = {"2025-06-18", "2025-03-26", "2024-11-05", NULL};

static const char mcp_help[] =
    "usage: boxlite mcp [OPTIONS]\n"
    "\n"
    "Serves the Model Context Protocol on stdin/stdout (JSON-RPC 2.0, one message\n"
    "per line) for AI agents: tools run_python (stateful), run_command, write_file,\n"
    "read_file, list_dir, reset. One sandbox per session, started by the first tool\n"
    "call and removed when the session ends. Logs go to stderr.\n"
    "\n"
    "  --config FILE       JSON settings: {\"image\", \"memory\", \"cpus\", \"disk\", \"pids\",\n"
    "                      \"lifetime\", \"timeout\", \"max_timeout\", \"network\",\n"
    "                      \"max_output\", \"max_file\", \"max_message\", \"env\": [\"K=V\"],\n"
    "                      \"allow\": [RULE], \"deny\": [RULE]}\n"
    "                      (flags given after it win)\n"
    "  --image REF         the sandbox's image (default: \"default\", Debian + python3)\n"
    "  --memory MiB        guest RAM (default 512)\n"
    "  --cpus N            virtual CPUs (default 1)\n"
    "  --disk MiB          writable layer (default 256, held in guest RAM)\n"
    "  --pids N            process limit (default 512)\n"
    "  --lifetime SEC      destroy the sandbox SEC s after it started (default: never)\n"
    "  --timeout SEC       a tool call's default timeout (default 60)\n"
    "  --max-timeout SEC   the longest timeout a call may ask for (default 600)\n"
    "  --network           give the sandbox a network (nothing reachable unless allowed)\n"
    "  --allow RULE        reachable: HOST[:PORT], A.B.C.D[/N][:PORT], host:PORT, * (implies\n"
    "                      --network; repeatable)\n"
    "  --deny RULE         refused even when allowed (repeatable)\n"
    "  --max-output BYTES  output kept per stream of a run (default 1 MiB)\n"
    "  --max-file BYTES    write_file/read_file content (default 8 MiB)\n"
    "  --max-message BYTES one JSON-RPC message (default 16 MiB)\n"
    "  -e, --env K=V       environment of every process in the sandbox\n"
    "  -v, --verbose       log to stderr\n";

/* ------------------------------------------------------------ output */

static void wake(mcp_server *srv)
{
	uint64_t one = 1;
	(void)!write(srv->wake_fd, &one, sizeof(one));
}

/* Writes one message (a line); a failed write means the client is gone. */
static void send_msg(mcp_server *srv, struct json_object *msg)
{
	size_t len = 0;
	const char *s = json_object_to_json_string_length(
	    msg, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	pthread_mutex_lock(&srv->out_mu);
	if (!srv->out_broken &&
	    (bl_write_full(srv->out_fd, s, len) < 0 || bl_write_full(srv->out_fd, "\n", 1) < 0)) {
		srv->out_broken = true;
		bl_info("mcp: the client stopped reading (%s)", strerror(errno));
		wake(srv);
	}
	pthread_mutex_unlock(&srv->out_mu);
}

static struct json_object *new_msg(struct json_object *id)
{
	struct json_object *m = json_object_new_object();
	json_object_object_add(m, "jsonrpc", json_object_new_string("2.0"));
	json_object_object_add(m, "id", id ? json_object_get(id) : NULL);
	return m;
}

static void send_result(mcp_server *srv, struct json_object *id, struct json_object *result)
{
	struct json_object *m = new_msg(id);
	json_object_object_add(m, "result", result);
	send_msg(srv, m);
	json_object_put(m);
}

static void send_error(mcp_server *srv, struct json_object *id, int code, const char *msg)
{
	struct json_object *m = new_msg(id);
	struct json_object *e = json_object_new_object();
	json_object_object_add(e, "code", json_object_new_int(code));
	json_object_object_add(e, "message", json_object_new_string(msg));
	json_object_object_add(m, "error", e);
	send_msg(srv, m);
	json_object_put(m);
}

/* ------------------------------------------------------------ the sandbox */

static void on_handle(bl_sandbox *sb, void *user)
{
	mcp_server *srv = user;
	pthread_mutex_lock(&srv->mu);
	srv->pending = sb;
	if (sb && srv->stopping)
		bl_sandbox_cancel(sb);
	pthread_mutex_unlock(&srv->mu);
}

static int sandbox_create(mcp_server *srv, bl_sandbox **ret, bl_error_t *err)
{
	const mcp_config *c = &srv->cfg;
	bl_sandbox_options o = {
	    .image = c->image,
	    .memory_mib = c->memory_mib,
	    .vcpus = c->cpus,
	    .disk_mib = c->disk_mib,
	    .pids_max = c->pids_max,
	    .timeout_sec = c->lifetime_sec,
	    .env = (const char *const *)c->env,
	    .network = c->network,
	    .net_allow = (const char *const *)c->allow,
	    .net_deny = (const char *const *)c->deny,
	    .owner = "mcp",
	    .on_handle = on_handle,
	    .on_handle_user = srv,
	};
	bl_sandbox *sb = NULL;
	uint64_t t0 = bl_now_monotonic_ns();
	if (bl_sandbox_create(&o, &sb, err) < 0)
		return bl_error_prefix(err, "start the sandbox");
	bl_process *init = NULL;
	if (bl_sandbox_start(sb, &init, err) < 0) {
		bl_sandbox_destroy(sb);
		return bl_error_prefix(err, "start the sandbox");
	}
	bl_process_free(init);
	bl_info("mcp: sandbox %s started in %.0f ms", bl_sandbox_id(sb),
		(double)(bl_now_monotonic_ns() - t0) / 1e6);
	*ret = sb;
	return 0;
}

/* Takes the sandbox away (mu held, no user left): cancels what still uses
 * it, waits for the command I/O threads, destroys it outside the lock. */
static void sandbox_teardown_locked(mcp_server *srv)
{
	bl_sandbox *sb = srv->sb;
	bl_codebox *cb = srv->cb;
	if (!sb)
		return;
	srv->tearing_down = true;
	bl_sandbox_cancel(sb);
	while (srv->job_threads > 0)
		pthread_cond_wait(&srv->cond, &srv->mu);
	srv->sb = NULL;
	srv->cb = NULL;
	pthread_mutex_unlock(&srv->mu);
	bl_codebox_free(cb);
	bl_info("mcp: removing sandbox %s", bl_sandbox_id(sb));
	bl_sandbox_destroy(sb);
	pthread_mutex_lock(&srv->mu);
	srv->tearing_down = false;
	pthread_cond_broadcast(&srv->cond);
}

bl_sandbox *mcp_sandbox_get(mcp_server *srv, bl_error_t *err)
{
	pthread_mutex_lock(&srv->mu);
	for (;;) {
		if (srv->stopping) {
			pthread_mutex_unlock(&srv->mu);
			bl_set_error(err, BL_ECANCELED, "the server is shutting down");
			return NULL;
		}
		if (srv->creating || srv->tearing_down) {
			pthread_cond_wait(&srv->cond, &srv->mu);
			continue;
		}
		/* A sandbox that died (its lifetime passed, QEMU killed) is
		 * replaced once nobody uses it. */
		if (srv->sb && !bl_sandbox_alive(srv->sb)) {
			if (srv->users > 0) {
				pthread_cond_wait(&srv->cond, &srv->mu);
				continue;
			}
			bl_info("mcp: the sandbox ended; a new one replaces it");
			sandbox_teardown_locked(srv);
			continue;
		}
		if (srv->sb) {
			srv->users++;
			bl_sandbox *sb = srv->sb;
			pthread_mutex_unlock(&srv->mu);
			return sb;
		}
		srv->creating = true;
		pthread_mutex_unlock(&srv->mu);
		bl_sandbox *sb = NULL;
		int r = sandbox_create(srv, &sb, err);
		pthread_mutex_lock(&srv->mu);
		srv->creating = false;
		srv->pending = NULL;
		pthread_cond_broadcast(&srv->cond);
		if (r < 0) {
			pthread_mutex_unlock(&srv->mu);
			return NULL;
		}
		srv->sb = sb;
		srv->generation++;
		if (srv->stopping)
			bl_sandbox_cancel(sb);
	}
}

void mcp_sandbox_put(mcp_server *srv)
{
	pthread_mutex_lock(&srv->mu);
	srv->users--;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->mu);
}

bl_codebox *mcp_codebox_get(mcp_server *srv, bl_error_t *err)
{
	/* Only one caller creates it; the others wait on the lock. */
	static pthread_mutex_t create_mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_mutex_lock(&create_mu);
	pthread_mutex_lock(&srv->mu);
	bl_codebox *cb = srv->cb;
	bl_sandbox *sb = srv->sb;
	pthread_mutex_unlock(&srv->mu);
	if (!cb) {
		bl_codebox_options o = {.max_output = srv->cfg.max_output};
		if (bl_codebox_create(sb, &o, &cb, err) < 0) {
			pthread_mutex_unlock(&create_mu);
			return NULL;
		}
		pthread_mutex_lock(&srv->mu);
		srv->cb = cb;
		pthread_mutex_unlock(&srv->mu);
	}
	pthread_mutex_unlock(&create_mu);
	return cb;
}

void mcp_sandbox_reset(mcp_server *srv)
{
	pthread_mutex_lock(&srv->mu);
	while (srv->creating || srv->tearing_down || srv->users > 0)
		pthread_cond_wait(&srv->cond, &srv->mu);
	sandbox_teardown_locked(srv);
	pthread_mutex_unlock(&srv->mu);
}

/* ------------------------------------------------------------ tool calls */

static char *id_key(struct json_object *id)
{
	return bl_strdup(json_object_to_json_string_ext(id, JSON_C_TO_STRING_PLAIN));
}

static void *call_main(void *arg)
{
	mcp_call *call = arg;
	mcp_server *srv = call->srv;
	struct json_object *result = mcp_tools_call(call);
	pthread_mutex_lock(&srv->mu);
	bool cancelled = call->cancelled;
	pthread_mutex_unlock(&srv->mu);
	/* A cancelled request gets no response. */
	if (!cancelled)
		send_result(srv, call->id, result);
	else
		json_object_put(result);
	pthread_mutex_lock(&srv->mu);
	call->finished = true;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->mu);
	wake(srv);
	return NULL;
}

static void call_free(mcp_call *call)
{
	json_object_put(call->id);
	json_object_put(call->args);
	free(call->id_key);
	free(call->tool);
	free(call);
}

/* Joins the calls that are over (mu not held). */
static void reap_calls(mcp_server *srv, bool all)
{
	for (;;) {
		mcp_call *done = NULL;
		bool left = false;
		pthread_mutex_lock(&srv->mu);
		for (int i = 0; i < MCP_MAX_CALLS; i++) {
			mcp_call *c = srv->calls[i];
			if (c && c->finished) {
				done = c;
				srv->calls[i] = NULL;
				break;
			}
			if (c)
				left = true;
		}
		if (!done && all && left) {
			pthread_cond_wait(&srv->cond, &srv->mu);
			pthread_mutex_unlock(&srv->mu);
			continue;
		}
		pthread_mutex_unlock(&srv->mu);
		if (!done)
			return;
		pthread_join(done->thread, NULL);
		call_free(done);
	}
}

static void start_call(mcp_server *srv, struct json_object *id, struct json_object *params)
{
	struct json_object *name = NULL, *args = NULL;
	if (!json_object_object_get_ex(params, "name", &name) ||
	    !json_object_is_type(name, json_type_string)) {
		send_error(srv, id, E_PARAMS, "tools/call needs a tool \"name\" (a string)");
		return;
	}
	if (json_object_object_get_ex(params, "arguments", &args) && args &&
	    !json_object_is_type(args, json_type_object)) {
		send_error(srv, id, E_PARAMS, "tools/call \"arguments\" must be an object");
		return;
	}
	char msg[512];
	_cleanup_(json_object_putp) struct json_object *empty = json_object_new_object();
	if (!args)
		args = empty;
	if (mcp_tools_check(json_object_get_string(name), args, &srv->cfg, msg, sizeof(msg)) < 0) {
		send_error(srv, id, E_PARAMS, msg);
		return;
	}
	_cleanup_free_ char *key = id_key(id);
	int slot = -1;
	pthread_mutex_lock(&srv->mu);
	for (int i = 0; i < MCP_MAX_CALLS; i++) {
		if (srv->calls[i] && !strcmp(srv->calls[i]->id_key, key)) {
			pthread_mutex_unlock(&srv->mu);
			send_error(srv, id, E_REQUEST, "a request with this id is still running");
			return;
		}
		if (!srv->calls[i] && slot < 0)
			slot = i;
	}
	if (slot < 0) {
		pthread_mutex_unlock(&srv->mu);
		send_error(srv, id, E_INTERNAL,
			   "too many tool calls at once; retry when one is done");
		return;
	}
	mcp_call *call = bl_malloc0(sizeof(*call));
	call->srv = srv;
	call->id = json_object_get(id);
	call->id_key = steal_pointer(&key);
	call->tool = bl_strdup(json_object_get_string(name));
	call->args = json_object_get(args);
	srv->calls[slot] = call;
	pthread_mutex_unlock(&srv->mu);
	if (pthread_create(&call->thread, NULL, call_main, call) != 0)
		abort();
}

static void cancel_call(mcp_server *srv, struct json_object *params)
{
	struct json_object *rid = NULL;
	if (!params || !json_object_object_get_ex(params, "requestId", &rid) || !rid)
		return;
	_cleanup_free_ char *key = id_key(rid);
	pthread_mutex_lock(&srv->mu);
	for (int i = 0; i < MCP_MAX_CALLS; i++) {
		mcp_call *c = srv->calls[i];
		if (!c || c->finished || strcmp(c->id_key, key))
			continue;
		bl_info("mcp: request %s cancelled", key);
		c->cancelled = true;
		if (c->proc) {
			bl_error_t err = BL_ERROR_INIT;
			(void)bl_process_signal(c->proc, SIGKILL, &err);
		}
		if (c->python && srv->cb)
			bl_codebox_interrupt(srv->cb);
	}
	pthread_mutex_unlock(&srv->mu);
}

/* ------------------------------------------------------------ dispatch */

static struct json_object *initialize_result(mcp_server *srv, const char *asked)
{
	const char *v = LATEST_VERSION;
	for (size_t i = 0; versions[i]; i++)
		if (!strcmp(asked, versions[i]))
			v = versions[i];
	snprintf(srv->version, sizeof(srv->version), "%s", v);
	struct json_object *r = json_object_new_object();
	json_object_object_add(r, "protocolVersion", json_object_new_string(v));
	struct json_object *caps = json_object_new_object();
	struct json_object *tools = json_object_new_object();
	json_object_object_add(tools, "listChanged", json_object_new_boolean(0));
	json_object_object_add(caps, "tools", tools);
	json_object_object_add(r, "capabilities", caps);
	struct json_object *info = json_object_new_object();
	json_object_object_add(info, "name", json_object_new_string("boxlite"));
	json_object_object_add(info, "version", json_object_new_string(BOXLITE_VERSION));
	json_object_object_add(r, "serverInfo", info);
	json_object_object_add(
	    r, "instructions",
	    json_object_new_string(
		"Runs code in an isolated micro-VM sandbox (Debian with python3 by default), one "
		"per "
		"session, created on the first tool call. run_python keeps its variables between "
		"calls; run_command runs programs; write_file/read_file/list_dir move files; reset "
		"starts over with a fresh sandbox."));
	return r;
}

static void handle_request(mcp_server *srv, const char *method, struct json_object *id,
			   struct json_object *params)
{
	if (!strcmp(method, "ping")) {
		send_result(srv, id, json_object_new_object());
		return;
	}
	if (!strcmp(method, "initialize")) {
		struct json_object *pv = NULL;
		if (srv->initialized) {
			send_error(srv, id, E_REQUEST, "the session is already initialized");
			return;
		}
		if (!params || !json_object_object_get_ex(params, "protocolVersion", &pv) ||
		    !json_object_is_type(pv, json_type_string)) {
			send_error(srv, id, E_PARAMS,
				   "initialize needs \"protocolVersion\" (a string)");
			return;
		}
		srv->initialized = true;
		send_result(srv, id, initialize_result(srv, json_object_get_string(pv)));
		bl_info("mcp: session initialized, protocol %s", srv->version);
		return;
	}
	if (!srv->initialized) {
		send_error(srv, id, E_REQUEST,
			   "the session is not initialized: send initialize first");
		return;
	}
	if (!strcmp(method, "tools/list")) {
		struct json_object *r = json_object_new_object();
		json_object_object_add(r, "tools", mcp_tools_list(srv->version));
		send_result(srv, id, r);
		return;
	}
	if (!strcmp(method, "tools/call")) {
		if (!params) {
			send_error(srv, id, E_PARAMS, "tools/call needs params");
			return;
		}
		start_call(srv, id, params);
		return;
	}
	char msg[160];
	snprintf(msg, sizeof(msg), "method not found: %.100s", method);
	bl_sanitize_text(msg, strlen(msg), false);
	send_error(srv, id, E_METHOD, msg);
}

static bool valid_id(struct json_object *id)
{
	return id && (json_object_is_type(id, json_type_string) ||
		      json_object_is_type(id, json_type_int));
}

/* One line from the client. */
static void handle_line(mcp_server *srv, const char *line, size_t len)
{
	if (memchr(line, 0, len)) {
		send_error(srv, NULL, E_PARSE, "parse error: a NUL byte in the message");
		return;
	}
	json_tokener *tok = json_tokener_new_ex(JSON_DEPTH);
	if (!tok)
		abort();
	/* With its terminating NUL, so that a bare number at the end is complete. */
	_cleanup_free_ char *text = bl_malloc0(len + 1);
	memcpy(text, line, len);
	struct json_object *msg = json_tokener_parse_ex(tok, text, (int)len + 1);
	enum json_tokener_error je = json_tokener_get_error(tok);
	size_t end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	while (msg && end < len && strchr(" \t\r", text[end]))
		end++;
	if (!msg || je != json_tokener_success || end < len) {
		json_object_put(msg);
		send_error(srv, NULL, E_PARSE, "parse error: not a JSON message");
		return;
	}
	_cleanup_(json_object_putp) struct json_object *m = msg;
	if (json_object_is_type(m, json_type_array)) {
		send_error(srv, NULL, E_REQUEST, "invalid request: batches are not supported");
		return;
	}
	if (!json_object_is_type(m, json_type_object)) {
		send_error(srv, NULL, E_REQUEST, "invalid request: not a JSON-RPC object");
		return;
	}
	struct json_object *jv = NULL, *method = NULL, *id = NULL, *params = NULL;
	bool has_id = json_object_object_get_ex(m, "id", &id);
	bool has_method = json_object_object_get_ex(m, "method", &method);
	(void)json_object_object_get_ex(m, "params", &params);
	if (!json_object_object_get_ex(m, "jsonrpc", &jv) ||
	    !json_object_is_type(jv, json_type_string) ||
	    strcmp(json_object_get_string(jv), "2.0")) {
		send_error(srv, valid_id(id) ? id : NULL, E_REQUEST,
			   "invalid request: \"jsonrpc\" must be \"2.0\"");
		return;
	}
	if (!has_method) {
		/* A response: the server sends no requests, so nothing waits for it. */
		if (json_object_object_get_ex(m, "result", NULL) ||
		    json_object_object_get_ex(m, "error", NULL))
			return;
		send_error(srv, valid_id(id) ? id : NULL, E_REQUEST,
			   "invalid request: no \"method\"");
		return;
	}
	if (has_id && !valid_id(id)) {
		send_error(srv, NULL, E_REQUEST,
			   "invalid request: \"id\" must be a string or an integer");
		return;
	}
	if (!json_object_is_type(method, json_type_string)) {
		send_error(srv, has_id ? id : NULL, E_REQUEST,
			   "invalid request: \"method\" must be a string");
		return;
	}
	if (params && !json_object_is_type(params, json_type_object)) {
		if (has_id)
			send_error(srv, id, E_PARAMS,
				   "invalid params: \"params\" must be an object");
		return;
	}
	const char *name = json_object_get_string(method);
	if (!has_id) {
		if (!strcmp(name, "notifications/cancelled"))
			cancel_call(srv, params);
		/* notifications/initialized and any other: nothing to do. */
		return;
	}
	handle_request(srv, name, id, params);
}

/* ------------------------------------------------------------ the loop */

struct reader {
	char *buf;
	size_t len, cap;
	bool skipping; /* in an oversized line, until its newline */
};

static void too_big(mcp_server *srv)
{
	char msg[128];
	snprintf(msg, sizeof(msg), "invalid request: message over %zu bytes", srv->cfg.max_message);
	send_error(srv, NULL, E_REQUEST, msg);
}

static void feed_lines(mcp_server *srv, struct reader *rd)
{
	size_t start = 0;
	for (size_t i = 0; i < rd->len; i++) {
		if (rd->buf[i] != '\n')
			continue;
		size_t n = i - start;
		if (!rd->skipping && n > 0 && rd->buf[start + n - 1] == '\r')
			n--;
		/* A whole line over the limit can arrive in one read, too. */
		if (!rd->skipping && n > srv->cfg.max_message)
			too_big(srv);
		else if (!rd->skipping && n > 0)
			handle_line(srv, rd->buf + start, n);
		rd->skipping = false;
		start = i + 1;
	}
	memmove(rd->buf, rd->buf + start, rd->len - start);
	rd->len -= start;
	if (rd->len > srv->cfg.max_message) {
		if (!rd->skipping)
			too_big(srv);
		rd->skipping = true;
		rd->len = 0;
	}
}

/* Serves until stdin ends, the client stops reading or a signal; returns the
 * signal or 0. */
static int serve(mcp_server *srv, int sig_fd)
{
	struct reader rd = {.cap = 1 << 16};
	rd.buf = bl_malloc0(rd.cap);
	int got = 0;
	for (;;) {
		reap_calls(srv, false);
		pthread_mutex_lock(&srv->out_mu);
		bool gone = srv->out_broken;
		pthread_mutex_unlock(&srv->out_mu);
		if (gone)
			break;
		struct pollfd pfd[3] = {{.fd = 0, .events = POLLIN},
					{.fd = sig_fd, .events = POLLIN},
					{.fd = srv->wake_fd, .events = POLLIN}};
		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				got = (int)si.ssi_signo;
				bl_info("mcp: got signal %d, stopping", got);
				break;
			}
		}
		if (pfd[2].revents & POLLIN) {
			uint64_t v;
			(void)!read(srv->wake_fd, &v, sizeof(v));
		}
		if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		if (rd.cap - rd.len < 4096) {
			rd.cap *= 2;
			rd.buf = realloc(rd.buf, rd.cap);
			if (!rd.buf)
				abort();
		}
		ssize_t n = read(0, rd.buf + rd.len, rd.cap - rd.len);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			bl_info("mcp: stdin ended, stopping");
			/* A last line without its newline still counts. */
			if (rd.len > 0 && !rd.skipping) {
				rd.buf[rd.len++] = '\n';
				feed_lines(srv, &rd);
			}
			break;
		}
		rd.len += (size_t)n;
		feed_lines(srv, &rd);
	}
	free(rd.buf);
	return got;
}

/* Everything ends: the sandbox and every process of it are released. After
 * EOF (graceful) the calls in flight finish first (each within its timeout:
 * their answers may still be read); after a signal or with the client gone
 * they are cancelled (their sandbox killed). */
static void shutdown_all(mcp_server *srv, int sig_fd, bool graceful)
{
	while (graceful) {
		reap_calls(srv, false);
		pthread_mutex_lock(&srv->mu);
		bool left = false;
		for (int i = 0; i < MCP_MAX_CALLS; i++)
			left = left || srv->calls[i];
		pthread_mutex_unlock(&srv->mu);
		if (!left)
			break;
		/* A finished call wakes us; a signal ends the wait. */
		struct pollfd pfd[2] = {{.fd = sig_fd, .events = POLLIN},
					{.fd = srv->wake_fd, .events = POLLIN}};
		if (poll(pfd, 2, -1) < 0 && errno != EINTR)
			break;
		if (pfd[0].revents & POLLIN) {
			bl_info("mcp: signal while finishing the last calls: cancelling them");
			break;
		}
		uint64_t v;
		(void)!read(srv->wake_fd, &v, sizeof(v));
	}
	pthread_mutex_lock(&srv->mu);
	srv->stopping = true;
	if (srv->pending)
		bl_sandbox_cancel(srv->pending);
	if (srv->sb)
		bl_sandbox_cancel(srv->sb);
	for (int i = 0; i < MCP_MAX_CALLS; i++)
		if (srv->calls[i])
			srv->calls[i]->cancelled = true;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->mu);
	reap_calls(srv, true);
	pthread_mutex_lock(&srv->mu);
	while (srv->creating || srv->users > 0)
		pthread_cond_wait(&srv->cond, &srv->mu);
	sandbox_teardown_locked(srv);
	pthread_mutex_unlock(&srv->mu);
}

/* ------------------------------------------------------------ options */

static int size_opt(const char *what, const char *s, size_t min, size_t max, size_t *ret,
		    bl_error_t *err)
{
	char *end = NULL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (!*s || *end || errno || *s == '-' || v < min || v > max)
		return bl_set_error(err, BL_EINVAL,
				    "%s: '%s' is not a number of bytes in [%zu, %zu]", what, s, min,
				    max);
	*ret = (size_t)v;
	return 0;
}

static void strv_add(char ***v, const char *s)
{
	size_t n = 0;
	while (*v && (*v)[n])
		n++;
	*v = realloc(*v, (n + 2) * sizeof(char *));
	if (!*v)
		abort();
	(*v)[n] = bl_strdup(s);
	(*v)[n + 1] = NULL;
}

static void env_add(mcp_config *c, const char *kv)
{
	strv_add(&c->env, kv);
}

/* A config member that is a list of strings, appended to *v. */
static int json_strv(struct json_object *o, const char *key, char ***v, bl_error_t *err)
{
	struct json_object *a = NULL;
	if (!json_object_object_get_ex(o, key, &a))
		return 0;
	if (!json_object_is_type(a, json_type_array))
		return bl_set_error(err, BL_EINVAL, "config: \"%s\" must be a list of strings",
				    key);
	for (size_t i = 0; i < json_object_array_length(a); i++) {
		struct json_object *e = json_object_array_get_idx(a, i);
		if (!json_object_is_type(e, json_type_string))
			return bl_set_error(err, BL_EINVAL,
					    "config: \"%s\" must be a list of strings", key);
		strv_add(v, json_object_get_string(e));
	}
	return 0;
}

static int json_uint(struct json_object *o, const char *key, unsigned min, unsigned max,
		     unsigned *ret, bl_error_t *err)
{
	struct json_object *v = NULL;
	if (!json_object_object_get_ex(o, key, &v))
		return 0;
	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < min ||
	    json_object_get_int64(v) > max)
		return bl_set_error(err, BL_EINVAL, "config: \"%s\" must be an integer in [%u, %u]",
				    key, min, max);
	*ret = (unsigned)json_object_get_int64(v);
	return 0;
}

static int json_size(struct json_object *o, const char *key, size_t min, size_t max, size_t *ret,
		     bl_error_t *err)
{
	struct json_object *v = NULL;
	if (!json_object_object_get_ex(o, key, &v))
		return 0;
	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < (int64_t)min ||
	    json_object_get_int64(v) > (int64_t)max)
		return bl_set_error(err, BL_EINVAL,
				    "config: \"%s\" must be an integer in [%zu, %zu]", key, min,
				    max);
	*ret = (size_t)json_object_get_int64(v);
	return 0;
}

#define SIZE_MAX_MESSAGE (256u << 20)

static int load_config(mcp_config *c, const char *path, char **image_buf, bl_error_t *err)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	if (bl_read_file(path, 1 << 20, &text, &len, err) < 0)
		return bl_error_prefix(err, "config %s", path);
	_cleanup_(json_object_putp) struct json_object *o = json_tokener_parse(text);
	if (!o || !json_object_is_type(o, json_type_object))
		return bl_set_error(err, BL_EINVAL, "config %s: not a JSON object", path);
	static const char *const known[] = {"image",   "memory",     "cpus",	 "disk",
					    "pids",    "lifetime",   "timeout",	 "max_timeout",
					    "network", "max_output", "max_file", "max_message",
					    "env",     "allow",	     "deny",	 NULL};
	json_object_object_foreach(o, key, val)
	{
		(void)val;
		bool ok = false;
		for (size_t i = 0; known[i]; i++)
			ok = ok || !strcmp(key, known[i]);
		if (!ok)
			return bl_set_error(err, BL_EINVAL, "config %s: unknown setting \"%.64s\"",
					    path, key);
	}
	struct json_object *v = NULL;
	if (json_object_object_get_ex(o, "image", &v)) {
		if (!json_object_is_type(v, json_type_string))
			return bl_set_error(err, BL_EINVAL, "config: \"image\" must be a string");
		free(*image_buf);
		*image_buf = bl_strdup(json_object_get_string(v));
		c->image = *image_buf;
	}
	if (json_object_object_get_ex(o, "network", &v)) {
		if (!json_object_is_type(v, json_type_boolean))
			return bl_set_error(err, BL_EINVAL,
					    "config: \"network\" must be true or false");
		c->network = json_object_get_boolean(v);
	}
	if (json_object_object_get_ex(o, "env", &v)) {
		if (!json_object_is_type(v, json_type_array))
			return bl_set_error(err, BL_EINVAL,
					    "config: \"env\" must be [\"K=V\", ...]");
		for (size_t i = 0; i < json_object_array_length(v); i++) {
			struct json_object *e = json_object_array_get_idx(v, i);
			if (!json_object_is_type(e, json_type_string) ||
			    !strchr(json_object_get_string(e), '='))
				return bl_set_error(err, BL_EINVAL,
						    "config: \"env\" entries are \"K=V\" strings");
			env_add(c, json_object_get_string(e));
		}
	}
	int r;
	if ((r = json_strv(o, "allow", &c->allow, err)) < 0 ||
	    (r = json_strv(o, "deny", &c->deny, err)) < 0)
		return r;
	if (c->allow || c->deny)
		c->network = true;
	if ((r = json_uint(o, "memory", 64, 1 << 20, &c->memory_mib, err)) < 0 ||
	    (r = json_uint(o, "cpus", 1, 64, &c->cpus, err)) < 0 ||
	    (r = json_uint(o, "disk", 1, 1 << 20, &c->disk_mib, err)) < 0 ||
	    (r = json_uint(o, "pids", 1, 1 << 22, &c->pids_max, err)) < 0 ||
	    (r = json_uint(o, "lifetime", 0, 1u << 30, &c->lifetime_sec, err)) < 0 ||
	    (r = json_uint(o, "timeout", 1, 1u << 20, &c->timeout_sec, err)) < 0 ||
	    (r = json_uint(o, "max_timeout", 1, 1u << 20, &c->max_timeout_sec, err)) < 0 ||
	    (r = json_size(o, "max_output", 1, 1u << 30, &c->max_output, err)) < 0 ||
	    (r = json_size(o, "max_file", 1, 1u << 30, &c->max_file, err)) < 0 ||
	    (r = json_size(o, "max_message", 4096, SIZE_MAX_MESSAGE, &c->max_message, err)) < 0)
		return r;
	return 0;
}

static bool value_opt(const char *a)
{
	static const char *const opts[] = {"--config",	   "--image",	 "--memory",
					   "--cpus",	   "--disk",	 "--pids",
					   "--lifetime",   "--timeout",	 "--max-timeout",
					   "--max-output", "--max-file", "--max-message",
					   "--allow",	   "--deny",	 "-e",
					   "--env",	   NULL};
	for (size_t i = 0; opts[i]; i++)
		if (!strcmp(a, opts[i]))
			return true;
	return false;
}

static int parse_args(int argc, char **argv, mcp_config *c, char **image_buf, bool *verbose,
		      bool *help, bl_error_t *err)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		int r = 0;
		bool takes = true;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			*help = true;
			return 0;
		} else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
			*verbose = true;
			takes = false;
		} else if (!strcmp(a, "--network")) {
			c->network = true;
			takes = false;
		} else if (!value_opt(a)) {
			return bl_set_error(err, BL_EINVAL,
					    "unknown option '%s' (see boxlite mcp --help)", a);
		} else if (!v) {
			return bl_set_error(err, BL_EINVAL,
					    "%s needs a value (see boxlite mcp --help)", a);
		} else if (!strcmp(a, "--config")) {
			r = load_config(c, v, image_buf, err);
		} else if (!strcmp(a, "--image")) {
			c->image = v;
		} else if (!strcmp(a, "--memory")) {
			r = bl_cli_parse_uint(a, v, 64, 1 << 20, &c->memory_mib, err);
		} else if (!strcmp(a, "--cpus")) {
			r = bl_cli_parse_uint(a, v, 1, 64, &c->cpus, err);
		} else if (!strcmp(a, "--disk")) {
			r = bl_cli_parse_uint(a, v, 1, 1 << 20, &c->disk_mib, err);
		} else if (!strcmp(a, "--pids")) {
			r = bl_cli_parse_uint(a, v, 1, 1 << 22, &c->pids_max, err);
		} else if (!strcmp(a, "--lifetime")) {
			r = bl_cli_parse_uint(a, v, 0, 1u << 30, &c->lifetime_sec, err);
		} else if (!strcmp(a, "--timeout")) {
			r = bl_cli_parse_uint(a, v, 1, 1u << 20, &c->timeout_sec, err);
		} else if (!strcmp(a, "--max-timeout")) {
			r = bl_cli_parse_uint(a, v, 1, 1u << 20, &c->max_timeout_sec, err);
		} else if (!strcmp(a, "--max-output")) {
			r = size_opt(a, v, 1, 1u << 30, &c->max_output, err);
		} else if (!strcmp(a, "--max-file")) {
			r = size_opt(a, v, 1, 1u << 30, &c->max_file, err);
		} else if (!strcmp(a, "--max-message")) {
			r = size_opt(a, v, 4096, SIZE_MAX_MESSAGE, &c->max_message, err);
		} else if (!strcmp(a, "--allow")) {
			strv_add(&c->allow, v);
			c->network = true;
		} else if (!strcmp(a, "--deny")) {
			strv_add(&c->deny, v);
			c->network = true;
		} else if (!strcmp(a, "-e") || !strcmp(a, "--env")) {
			if (strchr(v, '=')) {
				env_add(c, v);
			} else {
				const char *val = getenv(v);
				if (val) {
					_cleanup_free_ char *kv = bl_asprintf("%s=%s", v, val);
					env_add(c, kv);
				}
			}
		} else {
			return bl_set_error(err, BL_EINVAL,
					    "unknown option '%s' (see boxlite mcp --help)", a);
		}
		if (r < 0)
			return r;
		if (takes)
			i++;
	}
	if (c->timeout_sec > c->max_timeout_sec)
		c->max_timeout_sec = c->timeout_sec;
	/* write_file's base64 content must fit in one message. */
	if ((c->max_file + 2) / 3 * 4 + 4096 > c->max_message)
		c->max_file = (c->max_message - 4096) / 4 * 3;
	return 0;
}

int cmd_mcp(int argc, char **argv)
{
	mcp_server srv = {
	    .cfg = {.image = BL_DEFAULT_IMAGE,
		    .timeout_sec = 60,
		    .max_timeout_sec = 600,
		    .max_message = 16u << 20,
		    .max_output = 1u << 20,
		    .max_file = 8u << 20},
	    .out_mu = PTHREAD_MUTEX_INITIALIZER,
	    .mu = PTHREAD_MUTEX_INITIALIZER,
	    .cond = PTHREAD_COND_INITIALIZER,
	};
	_cleanup_free_ char *image_buf = NULL;
	bool verbose = false, help = false;
	bl_error_t err = BL_ERROR_INIT;
	int rc = 0;
	if (parse_args(argc, argv, &srv.cfg, &image_buf, &verbose, &help, &err) < 0) {
		bl_strv_free(srv.cfg.env);
		bl_strv_free(srv.cfg.allow);
		bl_strv_free(srv.cfg.deny);
		return cli_fail(&err);
	}
	if (help) {
		fputs(mcp_help, stdout);
		bl_strv_free(srv.cfg.env);
		bl_strv_free(srv.cfg.allow);
		bl_strv_free(srv.cfg.deny);
		return 0;
	}
	cli_log_setup(verbose);
	/* The protocol gets a private copy of stdout; fd 1 becomes stderr, so
	 * nothing else can ever write into the protocol stream. */
	srv.out_fd = fcntl(1, F_DUPFD_CLOEXEC, 3);
	if (srv.out_fd < 0 || dup2(2, 1) < 0) {
		cli_error("mcp: set up stdout: %s", strerror(errno));
		return BL_EXIT_FAILURE;
	}
	/* Before any thread: the signals are read from a signalfd, and a
	 * closed stdout is an EPIPE, not a SIGPIPE. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	int sig_fd = signalfd(-1, &set, SFD_CLOEXEC);
	srv.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (sig_fd < 0 || srv.wake_fd < 0) {
		cli_error("mcp: signalfd/eventfd: %s", strerror(errno));
		return BL_EXIT_FAILURE;
	}
	bl_info("mcp: serving on stdio (image %s)", srv.cfg.image);
	int sig = serve(&srv, sig_fd);
	pthread_mutex_lock(&srv.out_mu);
	bool gone = srv.out_broken;
	pthread_mutex_unlock(&srv.out_mu);
	shutdown_all(&srv, sig_fd, !sig && !gone);
	bl_strv_free(srv.cfg.env);
	bl_strv_free(srv.cfg.allow);
	bl_strv_free(srv.cfg.deny);
	close(sig_fd);
	close(srv.wake_fd);
	close(srv.out_fd);
	if (sig)
		rc = 128 + sig;
	return rc;
}
