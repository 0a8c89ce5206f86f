/*
 * The host side of the agent protocol against a fake, hostile agent: a
 * thread on the other end of a socketpair that writes the preamble (or not)
 * and answers with garbage, oversized, wrong-typed or implausible replies.
 * Every case must end in a clean error (BL_EPROTO, BL_EAGENTLOST,
 * BL_ETIMEOUT), never a crash or a hang.
 */
#include "agent.pb-c.h"
#include "agent_client.h"
#include "bl_cleanup.h"
#include "bl_test.h"
#include "bl_util.h"
#include "ttrpc.pb-c.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef enum {
	REPLY_GARBAGE_PAYLOAD,	/* an OK Response whose payload is not protobuf */
	REPLY_GARBAGE_ENVELOPE, /* a frame whose bytes are not a Response */
	REPLY_HUGE_FRAME,	/* a header announcing 64 MiB */
	REPLY_WRONG_TYPE,	/* a WaitProcessResponse where a PingResponse goes */
	REPLY_LONG_VERSION,	/* PingResponse.version of 10 KiB */
	REPLY_BAD_STATUS,	/* WaitProcessResponse.exit_status = 9999 */
	REPLY_OVERSIZED_READ,	/* more bytes than max_len */
	REPLY_EMPTY_READS,	/* ReadOutput with neither data nor EOF, forever */
	REPLY_ZERO_PID,		/* StartProcessResponse.pid = 0 */
	REPLY_WRONG_STREAM,	/* a response to a stream never opened, then EOF */
	REPLY_CLOSE,		/* closes the connection on the first request */
} reply_kind;

struct fake {
	int fd;
	reply_kind kind;
	const char *preamble; /* NULL: none, and stay silent */
	pthread_t thread;
};

static void send_frame(int fd, uint32_t stream, uint8_t type, const void *data, uint32_t len,
		       uint32_t claimed)
{
	ttrpc_frame_header h = {
	    .length = claimed ? claimed : len, .stream_id = stream, .type = type};
	uint8_t hdr[TTRPC_HEADER_LEN];
	ttrpc_header_encode(&h, hdr);
	(void)bl_write_full(fd, hdr, sizeof(hdr));
	if (len)
		(void)bl_write_full(fd, data, len);
}

static void send_response(int fd, uint32_t stream, const ProtobufCMessage *msg)
{
	Ttrpc__Status st = TTRPC__STATUS__INIT;
	Ttrpc__Response resp = TTRPC__RESPONSE__INIT;
	resp.status = &st;
	uint8_t payload[16384];
	resp.payload.len = protobuf_c_message_pack(msg, payload);
	resp.payload.data = payload;
	uint8_t out[20000];
	size_t n = ttrpc__response__pack(&resp, out);
	send_frame(fd, stream, TTRPC_TYPE_RESPONSE, out, (uint32_t)n, 0);
}

static void answer(struct fake *f, uint32_t stream)
{
	switch (f->kind) {
	case REPLY_GARBAGE_PAYLOAD: {
		Ttrpc__Status st = TTRPC__STATUS__INIT;
		Ttrpc__Response resp = TTRPC__RESPONSE__INIT;
		resp.status = &st;
		uint8_t junk[64];
		memset(junk, 0xff, sizeof(junk));
		resp.payload.data = junk;
		resp.payload.len = sizeof(junk);
		uint8_t out[256];
		size_t n = ttrpc__response__pack(&resp, out);
		send_frame(f->fd, stream, TTRPC_TYPE_RESPONSE, out, (uint32_t)n, 0);
		return;
	}
	case REPLY_GARBAGE_ENVELOPE: {
		uint8_t junk[100];
		memset(junk, 0xfe, sizeof(junk));
		send_frame(f->fd, stream, TTRPC_TYPE_RESPONSE, junk, sizeof(junk), 0);
		return;
	}
	case REPLY_HUGE_FRAME: {
		/* The client skips the body and fails the call (like go-ttrpc). */
		uint32_t len = TTRPC_MAX_DATA + 1;
		_cleanup_free_ uint8_t *big = bl_malloc0(len);
		send_frame(f->fd, stream, TTRPC_TYPE_RESPONSE, big, len, 0);
		return;
	}
	case REPLY_WRONG_TYPE: {
		Boxlite__Agent__V1__WaitProcessResponse w =
		    BOXLITE__AGENT__V1__WAIT_PROCESS_RESPONSE__INIT;
		w.exit_status = 5;
		w.signal = 7;
		send_response(f->fd, stream, &w.base);
		return;
	}
	case REPLY_LONG_VERSION: {
		Boxlite__Agent__V1__PingResponse p = BOXLITE__AGENT__V1__PING_RESPONSE__INIT;
		char *v = bl_malloc0(10240);
		memset(v, 'a', 10239);
		p.version = v;
		send_response(f->fd, stream, &p.base);
		free(v);
		return;
	}
	case REPLY_BAD_STATUS: {
		Boxlite__Agent__V1__WaitProcessResponse w =
		    BOXLITE__AGENT__V1__WAIT_PROCESS_RESPONSE__INIT;
		w.exit_status = 9999;
		send_response(f->fd, stream, &w.base);
		return;
	}
	case REPLY_OVERSIZED_READ: {
		Boxlite__Agent__V1__ReadOutputResponse r =
		    BOXLITE__AGENT__V1__READ_OUTPUT_RESPONSE__INIT;
		uint8_t data[4096];
		memset(data, 'x', sizeof(data));
		r.data.data = data;
		r.data.len = sizeof(data);
		send_response(f->fd, stream, &r.base);
		return;
	}
	case REPLY_EMPTY_READS: {
		Boxlite__Agent__V1__ReadOutputResponse r =
		    BOXLITE__AGENT__V1__READ_OUTPUT_RESPONSE__INIT;
		send_response(f->fd, stream, &r.base);
		return;
	}
	case REPLY_ZERO_PID: {
		Boxlite__Agent__V1__StartProcessResponse r =
		    BOXLITE__AGENT__V1__START_PROCESS_RESPONSE__INIT;
		send_response(f->fd, stream, &r.base);
		return;
	}
	case REPLY_WRONG_STREAM: {
		Boxlite__Agent__V1__PingResponse p = BOXLITE__AGENT__V1__PING_RESPONSE__INIT;
		p.version = "1";
		send_response(f->fd, stream + 1000, &p.base);
		shutdown(f->fd, SHUT_RDWR);
		return;
	}
	case REPLY_CLOSE:
		shutdown(f->fd, SHUT_RDWR);
		return;
	}
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	if (!f->preamble)
		return NULL;
	(void)bl_write_full(f->fd, f->preamble, strlen(f->preamble));
	for (;;) {
		uint8_t hdr[TTRPC_HEADER_LEN];
		if (bl_read_full(f->fd, hdr, sizeof(hdr)) != (ssize_t)sizeof(hdr))
			return NULL;
		ttrpc_frame_header h;
		ttrpc_header_decode(hdr, &h);
		if (h.length > (1u << 20))
			return NULL;
		_cleanup_free_ uint8_t *buf = bl_malloc0(h.length + 1);
		if (bl_read_full(f->fd, buf, h.length) != (ssize_t)h.length)
			return NULL;
		answer(f, h.stream_id);
	}
}

/* Starts a fake agent; returns the client end, or NULL with err filled. */
static bl_agent *connect_fake(struct fake *f, reply_kind kind, const char *preamble,
			      bl_error_t *err)
{
	int sv[2];
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	f->fd = sv[1];
	f->kind = kind;
	f->preamble = preamble;
	CU_ASSERT_FATAL(pthread_create(&f->thread, NULL, fake_main, f) == 0);
	bl_agent *a = NULL;
	uint64_t deadline = bl_now_monotonic_ns() + 300 * 1000000ull;
	if (bl_agent_from_fd(sv[0], true, deadline, &a, err) < 0)
		return NULL;
	bl_agent_set_timeout(a, 2000000000ull);
	return a;
}

static void finish(struct fake *f, bl_agent *a)
{
	bl_agent_free(a);
	shutdown(f->fd, SHUT_RDWR);
	pthread_join(f->thread, NULL);
	close(f->fd);
}

static void test_preamble(void)
{
	struct fake f;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_PTR_NULL(connect_fake(&f, REPLY_CLOSE, "BOXLITE-AGENT 9\n", &err));
	CU_ASSERT_EQUAL(err.code, BL_EPROTO);
	finish(&f, NULL);
	/* Silence: the boot deadline passes. */
	CU_ASSERT_PTR_NULL(connect_fake(&f, REPLY_CLOSE, NULL, &err));
	CU_ASSERT_EQUAL(err.code, BL_ETIMEOUT);
	finish(&f, NULL);
	/* A short preamble, then EOF. */
	CU_ASSERT_PTR_NULL(connect_fake(&f, REPLY_CLOSE, "BOXLITE", &err));
	CU_ASSERT(err.code == BL_ETIMEOUT || err.code == BL_EAGENTLOST);
	finish(&f, NULL);
}

static void expect_ping_fails(reply_kind kind, int code1, int code2)
{
	struct fake f;
	bl_error_t err = BL_ERROR_INIT;
	bl_agent *a = connect_fake(&f, kind, BL_AGENT_PREAMBLE, &err);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	char v[64];
	CU_ASSERT(bl_agent_ping(a, v, sizeof(v), &err) < 0);
	if (err.code != (bl_code)code1 && err.code != (bl_code)code2) {
		printf("\n  kind %d: got %s (%s)\n", kind, bl_code_name(err.code), err.msg);
		CU_FAIL("unexpected error code");
	}
	finish(&f, a);
}

static void test_hostile_envelopes(void)
{
	expect_ping_fails(REPLY_GARBAGE_PAYLOAD, BL_EPROTO, BL_EPROTO);
	expect_ping_fails(REPLY_GARBAGE_ENVELOPE, BL_EPROTO, BL_EAGENTLOST);
	/* ResourceExhausted, which the one status map reads as BL_EOOM */
	expect_ping_fails(REPLY_HUGE_FRAME, BL_EPROTO, BL_EOOM);
	expect_ping_fails(REPLY_WRONG_TYPE, BL_EPROTO, BL_EPROTO);
	expect_ping_fails(REPLY_LONG_VERSION, BL_EPROTO, BL_EPROTO);
	expect_ping_fails(REPLY_WRONG_STREAM, BL_EAGENTLOST, BL_EPROTO);
	expect_ping_fails(REPLY_CLOSE, BL_EAGENTLOST, BL_EAGENTLOST);
}

static void test_implausible_fields(void)
{
	struct fake f;
	bl_error_t err = BL_ERROR_INIT;
	bl_agent *a = connect_fake(&f, REPLY_BAD_STATUS, BL_AGENT_PREAMBLE, &err);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	bl_agent_exit ex;
	CU_ASSERT(bl_agent_wait_process(a, "main", "", 2000000000ull, &ex, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EPROTO);
	finish(&f, a);

	a = connect_fake(&f, REPLY_OVERSIZED_READ, BL_AGENT_PREAMBLE, &err);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	char buf[16];
	CU_ASSERT(bl_agent_read_output(a, "main", "", 1, buf, sizeof(buf), &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EPROTO);
	finish(&f, a);

	a = connect_fake(&f, REPLY_EMPTY_READS, BL_AGENT_PREAMBLE, &err);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT(bl_agent_read_output(a, "main", "", 2, buf, sizeof(buf), &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EPROTO);
	finish(&f, a);

	a = connect_fake(&f, REPLY_ZERO_PID, BL_AGENT_PREAMBLE, &err);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	uint32_t pid = 1;
	CU_ASSERT(bl_agent_start_process(a, "main", "x", "{}", false, false, &pid, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EPROTO);
	finish(&f, a);
}

/* Calls in flight when the agent goes away fail, later ones too. */
static void test_lost_while_waiting(void)
{
	struct fake f;
	bl_error_t err = BL_ERROR_INIT;
	/* REPLY_CLOSE on the first request: the wait in flight sees the loss. */
	bl_agent *a = connect_fake(&f, REPLY_CLOSE, BL_AGENT_PREAMBLE, &err);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	bl_agent_exit ex;
	CU_ASSERT(bl_agent_wait_process(a, "main", "", 0, &ex, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EAGENTLOST);
	CU_ASSERT(bl_agent_signal_process(a, "main", "", 9, false, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EAGENTLOST);
	finish(&f, a);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	static const bl_test_case cases[] = {
	    {"preamble", test_preamble},
	    {"hostile_envelopes", test_hostile_envelopes},
	    {"implausible_fields", test_implausible_fields},
	    {"lost_while_waiting", test_lost_while_waiting},
	    {NULL, NULL},
	};
	return bl_test_run("hostile_agent", cases);
}
