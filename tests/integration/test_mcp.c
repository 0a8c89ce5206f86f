/*
 * `boxlite mcp` end to end. Raw JSON-RPC over its stdio (no VM): parse
 * errors, an oversized line, invalid requests, unknown methods and tools,
 * bad arguments, calls before initialize, version negotiation, EOF. With a
 * VM: a session's sandbox is gone after stdin ends. Then the official MCP
 * TypeScript SDK (npm, tests/mcp/client.mjs) drives it: initialize, tools,
 * state across run_python calls, exit codes, files, timeouts, bad
 * arguments, an unknown tool, cancellation, reset, and the session closed
 * (SIGTERM from the SDK) leaving no QEMU, virtiofsd or state directory.
 */
#include "sandbox_env.h"

#include <fcntl.h>
#include <json-c/json.h>
#include <signal.h>
#include <sys/wait.h>

#define LINE_MAX_TEST (256u << 10)

static bool have_image(void)
{
	_cleanup_free_ char *rootfs = NULL;
	bl_error_t err = BL_ERROR_INIT;
	return bl_image_resolve("default", NULL, &rootfs, NULL, &err) == 0;
}

#define SKIP_UNLESS_VM()                                                             \
	BL_SKIP_UNLESS(sb_env_setup("mcp") && have_image(),                          \
		       "needs root, /bin/busybox, the guest kernel and the default " \
		       "image (make image)")

struct server {
	pid_t pid;
	int in, out;
};

static void server_env(void)
{
	if (env.state) {
		setenv("BOXLITE_STATE_DIR", env.state, 1);
		setenv("BOXLITE_KERNEL", env.kernel, 1);
		setenv("BOXLITE_INITRD", env.initrd, 1);
	}
}

/* Starts `boxlite mcp ARGS...` with pipes on stdin/stdout (stderr: ours). */
static bool server_start(struct server *s, const char *const *extra)
{
	int in[2], out[2];
	if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC))
		return false;
	_cleanup_free_ char *bin = bl_asprintf("%s/boxlite", bl_test_build_dir());
	const char *argv[16] = {bin, "mcp"};
	size_t n = 2;
	for (size_t i = 0; extra && extra[i] && n < 15; i++)
		argv[n++] = extra[i];
	s->pid = fork();
	if (s->pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		server_env();
		execv(bin, (char **)argv);
		_exit(99);
	}
	close(in[0]);
	close(out[1]);
	s->in = in[1];
	s->out = out[0];
	return s->pid > 0;
}

static int server_wait(struct server *s)
{
	if (s->in >= 0)
		close(s->in);
	s->in = -1;
	int st = 0;
	while (waitpid(s->pid, &st, 0) < 0 && errno == EINTR)
		;
	close(s->out);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void send_line(struct server *s, const char *line)
{
	CU_ASSERT_EQUAL(bl_write_full(s->in, line, strlen(line)), 0);
	CU_ASSERT_EQUAL(bl_write_full(s->in, "\n", 1), 0);
}

/* The next message from the server (timeout_ms), parsed; NULL on none. */
static json_object *recv_msg(struct server *s, int timeout_ms)
{
	_cleanup_free_ char *buf = bl_malloc0(LINE_MAX_TEST);
	int n = bl_test_read_line(s->out, buf, LINE_MAX_TEST, timeout_ms);
	if (n < 0)
		return NULL;
	json_object *o = json_tokener_parse(buf);
	if (!o)
		printf("\n  not JSON from the server: %.200s\n", buf);
	return o;
}

static json_object *get(json_object *o, const char *path)
{
	_cleanup_free_ char *p = bl_strdup(path);
	char *save = NULL;
	for (char *k = strtok_r(p, ".", &save); o && k; k = strtok_r(NULL, ".", &save)) {
		json_object *v = NULL;
		o = json_object_object_get_ex(o, k, &v) ? v : NULL;
	}
	return o;
}

/* Asserts the message is an error with this code and id (-1: null). */
static void expect_error(json_object *m, int code, int id)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(m);
	CU_ASSERT_EQUAL(json_object_get_int(get(m, "error.code")), code);
	CU_ASSERT_PTR_NULL(get(m, "result"));
	if (id < 0) {
		CU_ASSERT(json_object_is_type(get(m, "id"), json_type_null));
	} else {
		CU_ASSERT_EQUAL(json_object_get_int(get(m, "id")), id);
	}
	if (json_object_get_int(get(m, "error.code")) != code)
		printf("\n  got %s\n", json_object_to_json_string(m));
}

static void roundtrip_error(struct server *s, const char *line, int code, int id)
{
	send_line(s, line);
	json_object *m = recv_msg(s, 10000);
	expect_error(m, code, id);
	json_object_put(m);
}

#define INIT(v)                                                                       \
	"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{"        \
	"\"protocolVersion\":\"" v "\",\"capabilities\":{},\"clientInfo\":{\"name\":" \
	"\"t\",\"version\":\"1\"}}}"

static void test_raw_protocol(void)
{
	struct server s;
	const char *const args[] = {"--max-message", "4096", NULL};
	CU_ASSERT_FATAL(server_start(&s, args));
	/* Before initialize: only ping. */
	roundtrip_error(&s, "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/list\"}", -32600, 7);
	send_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":\"p\",\"method\":\"ping\"}");
	json_object *m = recv_msg(&s, 10000);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(get(m, "id")), "p");
	CU_ASSERT(json_object_is_type(get(m, "result"), json_type_object));
	json_object_put(m);

	send_line(&s, INIT("2025-06-18"));
	m = recv_msg(&s, 10000);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(get(m, "result.protocolVersion")),
			       "2025-06-18");
	CU_ASSERT_STRING_EQUAL(json_object_get_string(get(m, "result.serverInfo.name")), "boxlite");
	CU_ASSERT_PTR_NOT_NULL(get(m, "result.capabilities.tools"));
	json_object_put(m);
	send_line(&s, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
	roundtrip_error(&s, INIT("2025-06-18"), -32600, 1); /* only once */

	/* Malformed JSON, non-objects, batches, bad members. */
	roundtrip_error(&s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":", -32700, -1);
	roundtrip_error(&s, "not json at all", -32700, -1);
	roundtrip_error(&s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"} trailing", -32700,
			-1);
	roundtrip_error(&s, "42", -32600, -1);
	roundtrip_error(&s, "[{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}]", -32600, -1);
	roundtrip_error(&s, "{\"jsonrpc\":\"1.0\",\"id\":3,\"method\":\"ping\"}", -32600, 3);
	roundtrip_error(&s, "{\"id\":3,\"method\":\"ping\"}", -32600, 3);
	roundtrip_error(&s, "{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"ping\"}", -32600, -1);
	roundtrip_error(&s, "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":7}", -32600, 4);
	roundtrip_error(&s, "{\"jsonrpc\":\"2.0\",\"id\":5}", -32600, 5);
	roundtrip_error(&s, "{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"ping\",\"params\":[1]}",
			-32602, 6);

	/* An oversized line: one error, the rest of the line dropped, the
	 * server still serves. */
	_cleanup_free_ char *big = bl_malloc0(20000);
	snprintf(big, 20000,
		 "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"ping\",\"params\":{\"x\":\"");
	memset(big + strlen(big), 'a', 15000);
	strcat(big, "\"}}");
	roundtrip_error(&s, big, -32600, -1);
	send_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\"}");
	m = recv_msg(&s, 10000);
	CU_ASSERT_EQUAL(json_object_get_int(get(m, "id")), 9);
	CU_ASSERT_PTR_NOT_NULL(get(m, "result"));
	json_object_put(m);

	/* Methods, tools, arguments. */
	roundtrip_error(&s, "{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"resources/list\"}", -32601,
			10);
	roundtrip_error(&s,
			"{\"jsonrpc\":\"2.0\",\"id\":11,\"method\":\"tools/call\",\"params\":{"
			"\"name\":\"format_disk\",\"arguments\":{}}}",
			-32602, 11);
	roundtrip_error(&s,
			"{\"jsonrpc\":\"2.0\",\"id\":12,\"method\":\"tools/call\",\"params\":{"
			"\"name\":\"run_python\",\"arguments\":{}}}",
			-32602, 12);
	roundtrip_error(&s,
			"{\"jsonrpc\":\"2.0\",\"id\":13,\"method\":\"tools/call\",\"params\":{"
			"\"name\":\"run_command\",\"arguments\":{\"command\":\"ls\",\"timeout\":"
			"100000}}}",
			-32602, 13);
	roundtrip_error(&s,
			"{\"jsonrpc\":\"2.0\",\"id\":14,\"method\":\"tools/call\",\"params\":{"
			"\"name\":\"write_file\",\"arguments\":{\"path\":\"/x\",\"content\":\"y\","
			"\"encoding\":\"rot13\"}}}",
			-32602, 14);
	roundtrip_error(&s,
			"{\"jsonrpc\":\"2.0\",\"id\":15,\"method\":\"tools/call\",\"params\":{"
			"\"name\":\"run_command\",\"arguments\":{\"command\":[\"ls\",3]}}}",
			-32602, 15);
	roundtrip_error(&s,
			"{\"jsonrpc\":\"2.0\",\"id\":16,\"method\":\"tools/call\",\"params\":{"
			"\"name\":\"run_command\",\"arguments\":\"ls\"}}",
			-32602, 16);
	/* Notifications get no answer; the next request's answer comes first. */
	send_line(&s, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{"
		      "\"requestId\":99}}");
	send_line(&s, "{\"jsonrpc\":\"2.0\",\"method\":\"whatever\"}");
	send_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":17,\"method\":\"tools/list\"}");
	m = recv_msg(&s, 10000);
	CU_ASSERT_EQUAL(json_object_get_int(get(m, "id")), 17);
	json_object *tools = get(m, "result.tools");
	CU_ASSERT_EQUAL(json_object_array_length(tools), 6);
	json_object_put(m);
	/* stdin ends: a clean exit, nothing else on stdout. */
	close(s.in);
	s.in = -1;
	CU_ASSERT_PTR_NULL(recv_msg(&s, 10000));
	CU_ASSERT_EQUAL(server_wait(&s), 0);
}

static void test_versions(void)
{
	static const struct {
		const char *asked, *got;
	} cases[] = {
	    {"2025-03-26", "2025-03-26"},
	    {"2024-11-05", "2024-11-05"},
	    {"2031-01-01", "2025-06-18"},
	    {"1999-01-01", "2025-06-18"},
	};
	for (size_t i = 0; i < BL_ARRAY_SIZE(cases); i++) {
		struct server s;
		CU_ASSERT_FATAL(server_start(&s, NULL));
		_cleanup_free_ char *line = bl_asprintf(
		    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{"
		    "\"protocolVersion\":\"%s\",\"capabilities\":{}}}",
		    cases[i].asked);
		send_line(&s, line);
		json_object *m = recv_msg(&s, 10000);
		CU_ASSERT_STRING_EQUAL(json_object_get_string(get(m, "result.protocolVersion")),
				       cases[i].got);
		json_object_put(m);
		/* Older revisions get no title/outputSchema (2025-06-18 fields). */
		send_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}");
		m = recv_msg(&s, 10000);
		json_object *t0 = json_object_array_get_idx(get(m, "result.tools"), 0);
		bool latest = !strcmp(cases[i].got, "2025-06-18");
		CU_ASSERT_EQUAL(get(t0, "outputSchema") != NULL, latest);
		CU_ASSERT_EQUAL(get(t0, "annotations") != NULL,
				strcmp(cases[i].got, "2025-03-26") >= 0);
		json_object_put(m);
		CU_ASSERT_EQUAL(server_wait(&s), 0);
	}
	/* A missing protocolVersion is invalid params. */
	struct server s;
	CU_ASSERT_FATAL(server_start(&s, NULL));
	roundtrip_error(&s,
			"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{}}",
			-32602, 1);
	CU_ASSERT_EQUAL(server_wait(&s), 0);
}

static void test_bad_flags(void)
{
	_cleanup_free_ char *dir = bl_test_tmpdir("mcp-conf");
	_cleanup_free_ char *conf = bl_asprintf("%s/bad.json", dir);
	const char *json = "{\"memory\": 256, \"colour\": \"blue\"}";
	CU_ASSERT_EQUAL_FATAL(bl_write_file(conf, json, strlen(json), 0600, NULL), 0);
	_cleanup_free_ char *conf2 = bl_asprintf("%s/bad2.json", dir);
	const char *json2 = "{\"allow\": \"example.com\"}";
	CU_ASSERT_EQUAL_FATAL(bl_write_file(conf2, json2, strlen(json2), 0600, NULL), 0);
	const char *const bad[][3] = {{"--config", conf2, NULL},
				      {"--memory", "abc", NULL},
				      {"--frobnicate", NULL, NULL},
				      {"--config", "/nonexistent", NULL},
				      {"--config", conf, NULL}};
	for (size_t i = 0; i < BL_ARRAY_SIZE(bad); i++) {
		struct server s;
		CU_ASSERT_FATAL(server_start(&s, bad[i]));
		CU_ASSERT_PTR_NULL(recv_msg(&s, 10000)); /* nothing on stdout */
		CU_ASSERT_EQUAL(server_wait(&s), 125);
	}
	(void)bl_rm_rf(dir, NULL);
}

/* A session that used its sandbox (settings from a config file), ended by
 * EOF: everything is released. */
static void test_eof_releases_sandbox(void)
{
	SKIP_UNLESS_VM();
	_cleanup_free_ char *conf = bl_asprintf("%s/mcp.json", env.dir);
	const char *json = "{\"memory\": 256, \"disk\": 32, \"timeout\": 120, "
			   "\"env\": [\"MCP_TEST=from-config\"]}";
	CU_ASSERT_EQUAL_FATAL(bl_write_file(conf, json, strlen(json), 0600, NULL), 0);
	struct server s;
	const char *const args[] = {"--config", conf, NULL};
	CU_ASSERT_FATAL(server_start(&s, args));
	send_line(&s, INIT("2025-06-18"));
	json_object_put(recv_msg(&s, 10000));
	send_line(&s, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
	send_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{"
		      "\"name\":\"run_command\",\"arguments\":{\"command\":\"echo $MCP_TEST; "
		      "exit 4\"}}}");
	json_object *m = recv_msg(&s, 300000);
	CU_ASSERT_PTR_NOT_NULL_FATAL(m);
	CU_ASSERT_EQUAL(json_object_get_int(get(m, "result.structuredContent.exit_code")), 4);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(get(m, "result.structuredContent.stdout")),
			       "from-config\n");
	CU_ASSERT(json_object_get_boolean(get(m, "result.isError")));
	json_object_put(m);
	CU_ASSERT_EQUAL(state_entries(), 1);
	CU_ASSERT_EQUAL(server_wait(&s), 0);
	sb_assert_clean();
}

/* SIGTERM while a command runs: the call is cancelled, the sandbox released,
 * exit 143. */
static void test_sigterm_mid_call(void)
{
	SKIP_UNLESS_VM();
	struct server s;
	const char *const args[] = {"--memory", "256", "--disk", "32", NULL};
	CU_ASSERT_FATAL(server_start(&s, args));
	send_line(&s, INIT("2025-06-18"));
	json_object_put(recv_msg(&s, 10000));
	send_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{"
		      "\"name\":\"run_command\",\"arguments\":{\"command\":\"true\"}}}");
	json_object *m = recv_msg(&s, 300000);
	CU_ASSERT_EQUAL(json_object_get_int(get(m, "result.structuredContent.exit_code")), 0);
	json_object_put(m);
	send_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{"
		      "\"name\":\"run_command\",\"arguments\":{\"command\":\"sleep 500\"}}}");
	send_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"ping\"}");
	m = recv_msg(&s, 10000); /* served while the command runs */
	CU_ASSERT_EQUAL(json_object_get_int(get(m, "id")), 4);
	json_object_put(m);
	CU_ASSERT_EQUAL(kill(s.pid, SIGTERM), 0);
	CU_ASSERT_EQUAL(server_wait(&s), 143);
	sb_assert_clean();
}

/* The client stops reading (its end of stdout closed): the server ends. */
static void test_client_gone(void)
{
	struct server s;
	CU_ASSERT_FATAL(server_start(&s, NULL));
	close(s.out);
	s.out = open("/dev/null", O_RDONLY | O_CLOEXEC);
	send_line(&s, INIT("2025-06-18"));
	send_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}");
	int st = 0;
	pid_t r = 0;
	for (int i = 0; i < 6000 && r == 0; i++) {
		r = waitpid(s.pid, &st, WNOHANG);
		if (r == 0)
			usleep(10000);
	}
	CU_ASSERT_EQUAL(r, s.pid);
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	if (r == 0) {
		kill(s.pid, SIGKILL);
		(void)waitpid(s.pid, &st, 0);
	}
	close(s.in);
	close(s.out);
}

/* The official TypeScript SDK as the client (npm). */
static void test_sdk_client(void)
{
	SKIP_UNLESS_VM();
	_cleanup_free_ char *setup =
	    bl_asprintf("%s/tests/mcp/setup.sh %s", BL_SOURCE_DIR, bl_test_build_dir());
	FILE *sp = popen(setup, "r");
	CU_ASSERT_PTR_NOT_NULL_FATAL(sp);
	char line[4096], skip[512] = "";
	while (fgets(line, sizeof(line), sp)) {
		fputs(line, stdout);
		if (!strncmp(line, "SKIP: ", 6))
			snprintf(skip, sizeof(skip), "%.500s", line + 6);
	}
	int st = pclose(sp);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 2) {
		skip[strcspn(skip, "\n")] = 0;
		bl_test_skip("%s", skip[0] ? skip : "the MCP SDK could not be installed");
		return;
	}
	CU_ASSERT_EQUAL_FATAL(WIFEXITED(st) ? WEXITSTATUS(st) : -1, 0);
	server_env();
	_cleanup_free_ char *cli = bl_asprintf("%s/boxlite", bl_test_build_dir());
	setenv("BOXLITE_CLI", cli, 1);
	_cleanup_free_ char *cmd = bl_asprintf(
	    "cd %s/mcp-node && node client.mjs --memory 256 --disk 64 2>&1", bl_test_build_dir());
	FILE *cp = popen(cmd, "r");
	CU_ASSERT_PTR_NOT_NULL_FATAL(cp);
	int oks = 0, fails = 0;
	bool done = false;
	while (fgets(line, sizeof(line), cp)) {
		fputs(line, stdout);
		if (!strncmp(line, "ok ", 3))
			oks++;
		if (!strncmp(line, "FAIL ", 5))
			fails++;
		if (!strncmp(line, "done ", 5))
			done = true;
	}
	st = pclose(cp);
	CU_ASSERT(done);
	CU_ASSERT_EQUAL(fails, 0);
	CU_ASSERT_EQUAL(oks, 13); /* every case of client.mjs */
	CU_ASSERT_EQUAL(WIFEXITED(st) ? WEXITSTATUS(st) : -1, 0);
	sb_assert_clean();
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"raw_protocol", test_raw_protocol},
	    {"versions", test_versions},
	    {"bad_flags", test_bad_flags},
	    {"client_gone", test_client_gone},
	    {"eof_releases_sandbox", test_eof_releases_sandbox},
	    {"sigterm_mid_call", test_sigterm_mid_call},
	    {"sdk_client", test_sdk_client},
	    {NULL, NULL},
	};
	signal(SIGPIPE, SIG_IGN);
	int rc = bl_test_run("mcp", cases);
	sb_env_teardown();
	return rc;
}
