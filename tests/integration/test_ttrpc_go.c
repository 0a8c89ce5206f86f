/*
 * Interop with containerd's own Go ttrpc library (../shared/bench/go-ttrpc,
 * built from Debian packages): Go client -> C server and C client -> Go server.
 * The Go peer is found through $GO_TTRPC_PEER (a binary), $BOXLITE_SHARED, or
 * ../shared beside the repository (the working directory or the build dir's
 * parent); without it, or without Go, the tests skip and say why.
 */
#include "ttrpc.h"
#include "ttrpc_proc.h"
#include "types.pb-c.h"

static char *peer;

/* Returns the Go peer's path, building it into the build dir when needed. */
static const char *go_peer(char *why, size_t why_len)
{
	if (peer)
		return peer;
	const char *env = getenv("GO_TTRPC_PEER");
	if (env && access(env, X_OK) == 0)
		return peer = bl_strdup(env);
	char *out = bl_asprintf("%s/bench/go-ttrpc-peer", bl_test_build_dir());
	if (access(out, X_OK) == 0)
		return peer = out;
	char *cands[3] = {NULL, NULL, NULL};
	if (getenv("BOXLITE_SHARED"))
		cands[0] = bl_asprintf("%s/bench/go-ttrpc/build.sh", getenv("BOXLITE_SHARED"));
	cands[1] = bl_strdup("../shared/bench/go-ttrpc/build.sh");
	cands[2] = bl_asprintf("%s/../../shared/bench/go-ttrpc/build.sh", bl_test_build_dir());
	char *script = NULL;
	for (int i = 0; i < 3; i++) {
		if (!script && cands[i] && access(cands[i], X_OK) == 0)
			script = cands[i];
		else
			free(cands[i]);
	}
	if (!script) {
		snprintf(why, why_len, "no go-ttrpc peer: set GO_TTRPC_PEER or BOXLITE_SHARED");
		free(out);
		return NULL;
	}
	if (!tp_have("go") && !bl_test_is_root()) {
		snprintf(why, why_len, "Go is not installed (apt-get install golang-go)");
		free(script);
		free(out);
		return NULL;
	}
	char *dir = bl_asprintf("%s/bench", bl_test_build_dir());
	bl_mkdir_p(dir, 0755, NULL);
	free(dir);
	char *argv[] = {script, out, NULL};
	char *log = NULL;
	int rc = tp_run(argv, &log);
	free(script);
	if (rc != 0 || access(out, X_OK) != 0) {
		snprintf(why, why_len, "building the Go peer failed: %.200s", log);
		free(log);
		free(out);
		return NULL;
	}
	free(log);
	return peer = out;
}

static int h_echo(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	/* BytesValue reads a StringValue without cutting it at NUL bytes. */
	Containerd__Types__BytesValue *req =
	    containerd__types__bytes_value__unpack(NULL, call->payload_len, call->payload);
	if (!req)
		return ttrpc_reply_error(reply, TTRPC_INVALID_ARGUMENT, "bad StringValue");
	int rc = ttrpc_reply_message(reply, &req->base);
	containerd__types__bytes_value__free_unpacked(req, NULL);
	return rc;
}

static int h_fail(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	return ttrpc_reply_error(reply, TTRPC_NOT_FOUND, "nothing here");
}

static ttrpc_server *serve(const char *path, const char *method, ttrpc_handler_fn fn)
{
	ttrpc_server *srv = ttrpc_server_new();
	if (method)
		ttrpc_server_register(srv, "bench.v1.Echo", method, fn, NULL);
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_FATAL(ttrpc_server_listen_unix(srv, path, &err) == 0);
	CU_ASSERT_FATAL(ttrpc_server_start(srv, &err) == 0);
	return srv;
}

static void test_go_client_c_server(void)
{
	char why[256];
	const char *p = go_peer(why, sizeof(why));
	BL_SKIP_UNLESS(p, "%s", why);
	char *dir = bl_test_tmpdir("ttrpc-go");
	char *sock = bl_asprintf("%s/c.sock", dir);
	char *out = NULL;

	ttrpc_server *srv = serve(sock, "Echo", h_echo);
	char *call[] = {(char *)p, "call", sock, "hello from go", NULL};
	CU_ASSERT_EQUAL(tp_run(call, &out), 0);
	CU_ASSERT_STRING_EQUAL(out, "hello from go\n");
	free(out);
	char *load[] = {(char *)p, "load", sock, "16", "2", "100", NULL};
	CU_ASSERT_EQUAL(tp_run(load, &out), 0);
	CU_ASSERT(strstr(out, "callers=16") != NULL && strstr(out, "rps=") != NULL);
	printf("\n  Go load -> C server: %s", out);
	free(out);
	ttrpc_server_free(srv);

	/* An error status: Echo answering NotFound. */
	srv = serve(sock, "Echo", h_fail);
	CU_ASSERT_EQUAL(tp_run(call, &out), 1);
	CU_ASSERT(strstr(out, "code = NotFound desc = nothing here") != NULL);
	free(out);
	ttrpc_server_free(srv);

	/* Unknown method, then unknown service. */
	srv = serve(sock, "Other", h_echo);
	CU_ASSERT_EQUAL(tp_run(call, &out), 1);
	CU_ASSERT(strstr(out, "code = Unimplemented desc = method Echo") != NULL);
	free(out);
	ttrpc_server_free(srv);
	srv = serve(sock, NULL, NULL);
	CU_ASSERT_EQUAL(tp_run(call, &out), 1);
	CU_ASSERT(strstr(out, "code = Unimplemented desc = service bench.v1.Echo") != NULL);
	free(out);
	ttrpc_server_free(srv);
	bl_rm_rf(dir, NULL);
	free(sock);
	free(dir);
}

static void test_c_client_go_server(void)
{
	char why[256];
	const char *p = go_peer(why, sizeof(why));
	BL_SKIP_UNLESS(p, "%s", why);
	char *dir = bl_test_tmpdir("ttrpc-go");
	char *sock = bl_asprintf("%s/go.sock", dir);
	char *argv[] = {(char *)p, "serve", sock, NULL};
	pid_t pid = tp_spawn(argv, NULL);
	CU_ASSERT_FATAL(tp_wait_path(sock, 10000));
	bl_error_t err = BL_ERROR_INIT;
	ttrpc_client *c = NULL;
	for (int i = 0; i < 50 && !c; i++) {
		c = ttrpc_client_dial_unix(sock, &err);
		if (!c)
			usleep(50000);
	}
	CU_ASSERT_FATAL(c != NULL);

	Containerd__Types__StringValue req = CONTAINERD__TYPES__STRING_VALUE__INIT;
	req.value = "hello from C";
	ProtobufCMessage *resp = NULL;
	ttrpc_status st;
	ttrpc_kv md[] = {{"containerd-namespace-ttrpc", "default"}};
	CU_ASSERT_EQUAL(ttrpc_client_call(c, "bench.v1.Echo", "Echo", &req.base,
					  &containerd__types__string_value__descriptor, &resp,
					  2000000000ull, md, 1, &st, &err),
			0);
	CU_ASSERT_FATAL(resp != NULL);
	CU_ASSERT_STRING_EQUAL(((Containerd__Types__StringValue *)resp)->value, "hello from C");
	protobuf_c_message_free_unpacked(resp, NULL);

	CU_ASSERT(ttrpc_client_call(c, "bench.v1.Echo", "Fail", &req.base,
				    &containerd__types__string_value__descriptor, &resp, 0, NULL, 0,
				    &st, &err) < 0);
	CU_ASSERT_EQUAL(st.code, TTRPC_NOT_FOUND);
	CU_ASSERT_STRING_EQUAL(st.message, "nothing here");
	CU_ASSERT_EQUAL(err.code, BL_ENOTFOUND);

	CU_ASSERT_EQUAL(ttrpc_client_call_raw(c, "bench.v1.Echo", "Nope", NULL, 0, NULL, 0, 0, &st,
					      NULL, NULL, &err),
			0);
	CU_ASSERT_EQUAL(st.code, TTRPC_UNIMPLEMENTED);
	CU_ASSERT_STRING_EQUAL(st.message, "method Nope");

	/* Many calls in flight from one C client to the Go server. */
	for (int i = 0; i < 200; i++) {
		uint8_t *out = NULL;
		size_t n = 0;
		uint8_t pl[] = {0x0a, 0x03, 'a', 'b', 'c'};
		CU_ASSERT_EQUAL(ttrpc_client_call_raw(c, "bench.v1.Echo", "Echo", pl, sizeof(pl),
						      NULL, 0, 0, &st, &out, &n, &err),
				0);
		CU_ASSERT(n == sizeof(pl) && memcmp(out, pl, n) == 0);
		free(out);
	}
	ttrpc_client_free(c);
	tp_stop(pid);
	bl_rm_rf(dir, NULL);
	free(sock);
	free(dir);
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"go_client_c_server", test_go_client_c_server},
	    {"c_client_go_server", test_c_client_go_server},
	    {NULL, NULL},
	};
	int rc = bl_test_run("ttrpc_go", cases);
	free(peer);
	return rc;
}
