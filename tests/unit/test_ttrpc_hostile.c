/*
 * Hostile peers: each case checks the documented answer (a status on that
 * stream, or a closed connection) and that another connection to the same
 * server still works.
 */
#include "ttrpc_testutil.h"

#include <signal.h>
#include <sys/wait.h>

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;

static int h_echo(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	uint8_t *p = malloc(call->payload_len + 1);
	memcpy(p, call->payload, call->payload_len);
	return ttrpc_reply_raw(reply, p, call->payload_len);
}

static int h_block(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	pthread_mutex_lock(&gate_lock);
	while (!gate_open)
		pthread_cond_wait(&gate_cond, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
	return TTRPC_OK;
}

static ttrpc_server *srv;

static ttrpc_server *server(void)
{
	if (!srv) {
		srv = ttrpc_server_new();
		ttrpc_server_register(srv, "t", "Echo", h_echo, NULL);
		ttrpc_server_register(srv, "t", "Block", h_block, NULL);
		CU_ASSERT_FATAL(ttrpc_server_start(srv, NULL) == 0);
	}
	return srv;
}

/* A fresh, well-behaved connection gets its echo. */
static void assert_other_conn_works(void)
{
	int fd = tt_connect(server());
	tt_send_request(fd, 1, "t", "Echo", "alive", 5, 0, NULL, NULL);
	tt_resp r;
	CU_ASSERT_FATAL(tt_read_response(fd, &r, 3000) == 1);
	CU_ASSERT_EQUAL(r.id, 1);
	CU_ASSERT_STRING_EQUAL((char *)r.payload, "alive");
	free(r.payload);
	close(fd);
}

static void assert_echo(int fd, uint32_t id)
{
	tt_send_request(fd, id, "t", "Echo", "e", 1, 0, NULL, NULL);
	tt_resp r;
	CU_ASSERT_FATAL(tt_read_response(fd, &r, 3000) == 1);
	CU_ASSERT_EQUAL(r.id, id);
	CU_ASSERT_EQUAL(r.code, TTRPC_OK);
	free(r.payload);
}

static void *write_zeros(void *arg)
{
	int fd = *(int *)arg;
	static uint8_t zeros[65536];
	size_t left = TTRPC_MAX_DATA + 1;
	while (left) {
		size_t n = left < sizeof(zeros) ? left : sizeof(zeros);
		if (bl_write_full(fd, zeros, n) < 0)
			break;
		left -= n;
	}
	return NULL;
}

/* Over 4 MiB: its bytes are discarded, ResourceExhausted on that stream (as Go). */
static void test_oversized_frame(void)
{
	int fd = tt_connect(server());
	uint8_t h[TTRPC_HEADER_LEN];
	ttrpc_frame_header fh = {TTRPC_MAX_DATA + 1, 1, TTRPC_TYPE_REQUEST, 0};
	ttrpc_header_encode(&fh, h);
	CU_ASSERT_FATAL(bl_write_full(fd, h, sizeof(h)) == 0);
	pthread_t t;
	pthread_create(&t, NULL, write_zeros, &fd);
	assert_other_conn_works(); /* while the big frame streams in */
	pthread_join(t, NULL);
	tt_resp r;
	CU_ASSERT_FATAL(tt_read_response(fd, &r, 3000) == 1);
	CU_ASSERT_EQUAL(r.id, 1);
	CU_ASSERT_EQUAL(r.code, TTRPC_RESOURCE_EXHAUSTED);
	CU_ASSERT_STRING_EQUAL(r.message,
			       "message length 4194305 exceed maximum message size of 4194304");
	free(r.payload);
	assert_echo(fd, 3); /* the stream stayed in sync */
	close(fd);
}

/* A header claiming 4 GiB, then the peer leaves: closed, nothing allocated. */
static void test_huge_length_then_eof(void)
{
	int fd = tt_connect(server());
	uint8_t h[TTRPC_HEADER_LEN];
	ttrpc_frame_header fh = {0xffffffffu, 1, TTRPC_TYPE_REQUEST, 0};
	ttrpc_header_encode(&fh, h);
	CU_ASSERT_FATAL(bl_write_full(fd, h, sizeof(h)) == 0);
	CU_ASSERT_FATAL(bl_write_full(fd, "xyz", 3) == 0);
	shutdown(fd, SHUT_WR);
	CU_ASSERT(tt_wait_closed(fd, 3000));
	close(fd);
	assert_other_conn_works();
}

static void test_truncated_frame(void)
{
	/* Truncated and left open: the connection waits, others don't. */
	int held = tt_connect(server());
	uint8_t h[TTRPC_HEADER_LEN];
	ttrpc_frame_header fh = {100, 1, TTRPC_TYPE_REQUEST, 0};
	ttrpc_header_encode(&fh, h);
	CU_ASSERT_FATAL(bl_write_full(held, h, sizeof(h)) == 0);
	CU_ASSERT_FATAL(bl_write_full(held, "\x0a\x01t", 3) == 0);
	assert_other_conn_works();
	/* Truncated then EOF (inside the body, and inside a header): closed. */
	shutdown(held, SHUT_WR);
	CU_ASSERT(tt_wait_closed(held, 3000));
	close(held);
	int fd = tt_connect(server());
	CU_ASSERT_FATAL(bl_write_full(fd, h, 6) == 0);
	shutdown(fd, SHUT_WR);
	CU_ASSERT(tt_wait_closed(fd, 3000));
	close(fd);
	assert_other_conn_works();
}

static void test_garbage(void)
{
	uint32_t seed = 12345;
	for (int round = 0; round < 20; round++) {
		int fd = tt_connect(server());
		uint8_t junk[4096];
		for (size_t i = 0; i < sizeof(junk); i++) {
			seed = seed * 1103515245u + 12345u;
			junk[i] = (uint8_t)(seed >> 16);
		}
		/* Keep claimed lengths small sometimes, so frames actually parse. */
		if (round % 2)
			for (size_t i = 0; i < sizeof(junk); i += 37)
				junk[i] = 0;
		(void)bl_write_full(fd, junk, sizeof(junk));
		shutdown(fd, SHUT_WR);
		/* Whatever it answered, it must end the connection or wait; not crash. */
		(void)tt_wait_closed(fd, 200);
		close(fd);
	}
	assert_other_conn_works();
}

static void test_even_and_reused_ids(void)
{
	int fd = tt_connect(server());
	tt_resp r;
	tt_send_request(fd, 2, "t", "Echo", "x", 1, 0, NULL, NULL);
	CU_ASSERT_FATAL(tt_read_response(fd, &r, 3000) == 1);
	CU_ASSERT_EQUAL(r.id, 2);
	CU_ASSERT_EQUAL(r.code, TTRPC_INVALID_ARGUMENT);
	CU_ASSERT_STRING_EQUAL(r.message, "StreamID must be odd for client initiated streams");
	free(r.payload);
	assert_echo(fd, 5);
	tt_send_request(fd, 5, "t", "Echo", "x", 1, 0, NULL, NULL);
	CU_ASSERT_FATAL(tt_read_response(fd, &r, 3000) == 1);
	CU_ASSERT_EQUAL(r.id, 5);
	CU_ASSERT_EQUAL(r.code, TTRPC_INVALID_ARGUMENT);
	CU_ASSERT_STRING_EQUAL(r.message, "StreamID cannot be re-used and must increment");
	free(r.payload);
	tt_send_request(fd, 3, "t", "Echo", "x", 1, 0, NULL, NULL);
	CU_ASSERT_FATAL(tt_read_response(fd, &r, 3000) == 1);
	CU_ASSERT_EQUAL(r.code, TTRPC_INVALID_ARGUMENT);
	free(r.payload);
	assert_echo(fd, 7);
	close(fd);
	assert_other_conn_works();
}

/* Unknown types, responses and data frames from a client are ignored (as Go does). */
static void test_unknown_type_ignored(void)
{
	int fd = tt_connect(server());
	tt_write_frame(fd, 1, 0x7f, 0xff, "abc", 3);
	tt_write_frame(fd, 3, TTRPC_TYPE_RESPONSE, 0, "\x12\x01x", 3);
	tt_write_frame(fd, 5, TTRPC_TYPE_DATA, TTRPC_FLAG_NO_DATA, NULL, 0);
	assert_echo(fd, 7); /* the next frame out is the echo's */
	close(fd);
	assert_other_conn_works();
}

static void test_undecodable_payload(void)
{
	int fd = tt_connect(server());
	tt_resp r;
	/* A length-delimited field running past the end. */
	tt_write_frame(fd, 1, TTRPC_TYPE_REQUEST, 0, "\x0a\x7f\x01", 3);
	CU_ASSERT_FATAL(tt_read_response(fd, &r, 3000) == 1);
	CU_ASSERT_EQUAL(r.id, 1);
	CU_ASSERT_EQUAL(r.code, TTRPC_INVALID_ARGUMENT);
	CU_ASSERT(strncmp(r.message, "unmarshal request error", 23) == 0);
	free(r.payload);
	/* A wrong wire type for a known field. */
	tt_write_frame(fd, 3, TTRPC_TYPE_REQUEST, 0, "\x0d\x01\x02\x03\x04", 5);
	CU_ASSERT_FATAL(tt_read_response(fd, &r, 3000) == 1);
	CU_ASSERT_EQUAL(r.code, TTRPC_INVALID_ARGUMENT);
	free(r.payload);
	/* An empty request decodes: service "" is unimplemented. */
	tt_write_frame(fd, 5, TTRPC_TYPE_REQUEST, 0, NULL, 0);
	CU_ASSERT_FATAL(tt_read_response(fd, &r, 3000) == 1);
	CU_ASSERT_EQUAL(r.code, TTRPC_UNIMPLEMENTED);
	CU_ASSERT_STRING_EQUAL(r.message, "service ");
	free(r.payload);
	assert_echo(fd, 7);
	close(fd);
	assert_other_conn_works();
}

/* More than 128 requests in flight on one connection: ResourceExhausted. */
static void test_inflight_cap(void)
{
	pthread_mutex_lock(&gate_lock);
	gate_open = false;
	pthread_mutex_unlock(&gate_lock);
	int fd = tt_connect(server());
	uint32_t id = 1;
	for (int i = 0; i < 140; i++, id += 2)
		tt_send_request(fd, id, "t", "Block", NULL, 0, 0, NULL, NULL);
	int exhausted = 0;
	tt_resp r;
	while (exhausted < 12 && tt_read_response(fd, &r, 5000) == 1) {
		CU_ASSERT_EQUAL(r.code, TTRPC_RESOURCE_EXHAUSTED);
		CU_ASSERT(r.id > 2 * 128);
		exhausted++;
		free(r.payload);
	}
	CU_ASSERT_EQUAL(exhausted, 12);
	assert_other_conn_works();
	pthread_mutex_lock(&gate_lock);
	gate_open = true;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
	int ok = 0;
	while (ok < 128 && tt_read_response(fd, &r, 5000) == 1) {
		ok += r.code == TTRPC_OK;
		free(r.payload);
	}
	CU_ASSERT_EQUAL(ok, 128);
	assert_echo(fd, id);
	close(fd);
}

/* A peer that never reads its replies stalls only itself. */
static void test_peer_not_reading(void)
{
	int fd = tt_connect(server());
	int sz = 4096;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	static uint8_t big[256 * 1024];
	pid_t pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		for (uint32_t id = 1; id < 80; id += 2)
			tt_send_request(fd, id, "t", "Echo", big, sizeof(big), 0, NULL, NULL);
		_exit(0);
	}
	tt_sleep_ms(200);
	assert_other_conn_works();
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	close(fd);
}

static void test_shutdown_last(void)
{
	ttrpc_server_free(server());
	srv = NULL;
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"oversized_frame", test_oversized_frame},
	    {"huge_length_then_eof", test_huge_length_then_eof},
	    {"truncated_frame", test_truncated_frame},
	    {"garbage", test_garbage},
	    {"even_and_reused_ids", test_even_and_reused_ids},
	    {"unknown_type_ignored", test_unknown_type_ignored},
	    {"undecodable_payload", test_undecodable_payload},
	    {"inflight_cap", test_inflight_cap},
	    {"peer_not_reading", test_peer_not_reading},
	    {"shutdown_with_hostile_peers_gone", test_shutdown_last},
	    {NULL, NULL},
	};
	return bl_test_run("ttrpc_hostile", cases);
}
