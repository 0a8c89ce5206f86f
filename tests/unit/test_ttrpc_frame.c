/* ttrpc framing: header layout, envelope encoding, the buffered frame reader. */
#include "ttrpc_testutil.h"
#include "ttrpc_internal.h"
#include "task.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/wait.h>

static void test_header_layout(void)
{
	ttrpc_frame_header h = {
	    .length = 0x01020304, .stream_id = 0xa0b0c0d1, .type = 2, .flags = 5};
	uint8_t b[TTRPC_HEADER_LEN];
	ttrpc_header_encode(&h, b);
	const uint8_t want[] = {1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd1, 2, 5};
	CU_ASSERT(memcmp(b, want, sizeof(want)) == 0);
	ttrpc_frame_header back;
	ttrpc_header_decode(b, &back);
	CU_ASSERT_EQUAL(back.length, h.length);
	CU_ASSERT_EQUAL(back.stream_id, h.stream_id);
	CU_ASSERT_EQUAL(back.type, 2);
	CU_ASSERT_EQUAL(back.flags, 5);
}

static void test_varint(void)
{
	uint8_t b[10];
	CU_ASSERT_EQUAL(ttrpc_put_varint(b, 0), 1);
	CU_ASSERT_EQUAL(b[0], 0);
	CU_ASSERT_EQUAL(ttrpc_put_varint(b, 300), 2);
	CU_ASSERT(b[0] == 0xac && b[1] == 0x02);
	CU_ASSERT_EQUAL(ttrpc_put_varint(b, UINT64_MAX), 10);
	/* A negative int32 status code is a 10-byte varint on the wire. */
	CU_ASSERT_EQUAL(ttrpc_put_varint(b, (uint64_t)(int64_t)-1), 10);
}

static void pair(ttrpc_io *io, int *peer)
{
	int sv[2];
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	CU_ASSERT_FATAL(ttrpc_io_init(io, sv[0], NULL) == 0);
	*peer = sv[1];
}

/* The reference's worked example: Connect{id:"c1"} on stream 1, byte for byte. */
static void test_request_encoding_matches_reference(void)
{
	ttrpc_io io;
	int peer;
	pthread_mutex_t wl = PTHREAD_MUTEX_INITIALIZER;
	pair(&io, &peer);
	Containerd__Task__V2__ConnectRequest cr = CONTAINERD__TASK__V2__CONNECT_REQUEST__INIT;
	cr.id = "c1";
	uint8_t pl[16];
	size_t pn = containerd__task__v2__connect_request__pack(&cr, pl);
	CU_ASSERT_EQUAL(pn, 4);
	CU_ASSERT_EQUAL(ttrpc_send_request(&io, &wl, 1, "containerd.task.v2.Task", "Connect", pl,
					   pn, 0, NULL, 0),
			0);
	const char want[] = "\x00\x00\x00\x28\x00\x00\x00\x01\x01\x00"
			    "\x0a\x17"
			    "containerd.task.v2.Task"
			    "\x12\x07"
			    "Connect"
			    "\x1a\x04\x0a\x02"
			    "c1";
	uint8_t got[sizeof(want) - 1];
	CU_ASSERT_EQUAL(tt_read_exact(peer, got, sizeof(got), 1000), 1);
	CU_ASSERT(memcmp(got, want, sizeof(got)) == 0);
	close(peer);
	ttrpc_io_destroy(&io);
}

/* Timeout and metadata ride after the payload; protobuf-c must decode it all. */
static void test_request_roundtrip_with_metadata(void)
{
	ttrpc_io io;
	int peer;
	pthread_mutex_t wl = PTHREAD_MUTEX_INITIALIZER;
	pair(&io, &peer);
	ttrpc_kv md[] = {{"containerd-namespace-ttrpc", "default"}, {"k", "v"}};
	uint8_t pl[3000];
	memset(pl, 'x', sizeof(pl));
	CU_ASSERT_EQUAL(
	    ttrpc_send_request(&io, &wl, 7, "svc", "m", pl, sizeof(pl), 123456789, md, 2), 0);
	uint8_t h[TTRPC_HEADER_LEN];
	CU_ASSERT_FATAL(tt_read_exact(peer, h, sizeof(h), 1000) == 1);
	ttrpc_frame_header fh;
	ttrpc_header_decode(h, &fh);
	CU_ASSERT_EQUAL(fh.stream_id, 7);
	CU_ASSERT_EQUAL(fh.type, TTRPC_TYPE_REQUEST);
	uint8_t *body = malloc(fh.length);
	CU_ASSERT_FATAL(tt_read_exact(peer, body, fh.length, 1000) == 1);
	Ttrpc__Request *r = ttrpc__request__unpack(NULL, fh.length, body);
	CU_ASSERT_FATAL(r != NULL);
	CU_ASSERT_STRING_EQUAL(r->service, "svc");
	CU_ASSERT_STRING_EQUAL(r->method, "m");
	CU_ASSERT_EQUAL(r->payload.len, sizeof(pl));
	CU_ASSERT(memcmp(r->payload.data, pl, sizeof(pl)) == 0);
	CU_ASSERT_EQUAL(r->timeout_nano, 123456789);
	CU_ASSERT_FATAL(r->n_metadata == 2);
	CU_ASSERT_STRING_EQUAL(r->metadata[0]->key, "containerd-namespace-ttrpc");
	CU_ASSERT_STRING_EQUAL(r->metadata[0]->value, "default");
	CU_ASSERT_STRING_EQUAL(r->metadata[1]->value, "v");
	ttrpc__request__free_unpacked(r, NULL);
	free(body);
	close(peer);
	ttrpc_io_destroy(&io);
}

static void test_response_encoding(void)
{
	ttrpc_io io;
	int peer;
	pthread_mutex_t wl = PTHREAD_MUTEX_INITIALIZER;
	pair(&io, &peer);
	CU_ASSERT_EQUAL(ttrpc_send_response(&io, &wl, 3, TTRPC_OK, NULL, (const uint8_t *)"abc", 3),
			0);
	CU_ASSERT_EQUAL(ttrpc_send_response(&io, &wl, 5, TTRPC_NOT_FOUND, "no such thing",
					    (const uint8_t *)"ignored", 7),
			0);
	CU_ASSERT_EQUAL(ttrpc_send_response(&io, &wl, 9, TTRPC_OK, NULL, NULL, 0), 0);
	tt_resp r;
	CU_ASSERT_FATAL(tt_read_response(peer, &r, 1000) == 1);
	CU_ASSERT_EQUAL(r.id, 3);
	CU_ASSERT_EQUAL(r.type, TTRPC_TYPE_RESPONSE);
	CU_ASSERT_EQUAL(r.code, 0);
	CU_ASSERT_EQUAL(r.len, 3);
	CU_ASSERT_STRING_EQUAL((char *)r.payload, "abc");
	free(r.payload);
	CU_ASSERT_FATAL(tt_read_response(peer, &r, 1000) == 1);
	CU_ASSERT_EQUAL(r.id, 5);
	CU_ASSERT_EQUAL(r.code, TTRPC_NOT_FOUND);
	CU_ASSERT_STRING_EQUAL(r.message, "no such thing");
	CU_ASSERT_EQUAL(r.len, 0); /* an error carries no payload */
	free(r.payload);
	/* An OK response to an Empty is a zero-length frame. */
	uint8_t h[TTRPC_HEADER_LEN];
	CU_ASSERT_FATAL(tt_read_exact(peer, h, sizeof(h), 1000) == 1);
	ttrpc_frame_header fh;
	ttrpc_header_decode(h, &fh);
	CU_ASSERT_EQUAL(fh.length, 0);
	CU_ASSERT_EQUAL(fh.stream_id, 9);
	close(peer);
	ttrpc_io_destroy(&io);
}

/* A response too large for a frame turns into ResourceExhausted. */
static void test_response_too_large(void)
{
	ttrpc_io io;
	int peer;
	pthread_mutex_t wl = PTHREAD_MUTEX_INITIALIZER;
	pair(&io, &peer);
	size_t n = TTRPC_MAX_DATA;
	uint8_t *big = calloc(1, n);
	CU_ASSERT_EQUAL(ttrpc_send_response(&io, &wl, 1, TTRPC_OK, NULL, big, n), 0);
	tt_resp r;
	CU_ASSERT_FATAL(tt_read_response(peer, &r, 1000) == 1);
	CU_ASSERT_EQUAL(r.code, TTRPC_RESOURCE_EXHAUSTED);
	CU_ASSERT(strstr(r.message, "exceed maximum message size") != NULL);
	free(r.payload);
	free(big);
	close(peer);
	ttrpc_io_destroy(&io);
}

/* Frames arriving a byte at a time, several per read, and larger than the buffer. */
static void test_reader_split_and_batched(void)
{
	ttrpc_io io;
	int peer;
	pair(&io, &peer);
	ttrpc_reader rd;
	CU_ASSERT_FATAL(ttrpc_reader_init(&rd) == 0);
	size_t big_len = 3 * TTRPC_READ_BUF + 17;
	uint8_t *big = malloc(big_len);
	for (size_t i = 0; i < big_len; i++)
		big[i] = (uint8_t)(i * 7);
	/* Three frames: tiny, big, empty; written from a child so nothing blocks. */
	pid_t pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		uint8_t h[TTRPC_HEADER_LEN];
		ttrpc_frame_header fh = {5, 1, 1, 0};
		ttrpc_header_encode(&fh, h);
		for (size_t i = 0; i < sizeof(h); i++) {
			(void)!write(peer, &h[i], 1);
			usleep(1000);
		}
		(void)!write(peer, "hello", 5);
		fh = (ttrpc_frame_header){(uint32_t)big_len, 3, 1, 0};
		ttrpc_header_encode(&fh, h);
		(void)!write(peer, h, sizeof(h));
		bl_write_full(peer, big, big_len);
		fh = (ttrpc_frame_header){0, 5, 3, 4};
		ttrpc_header_encode(&fh, h);
		(void)!write(peer, h, sizeof(h));
		(void)!write(peer, h, 4); /* a truncated header, then EOF */
		_exit(0);
	}
	close(peer);
	ttrpc_frame_header fh;
	uint8_t *body;
	CU_ASSERT_FATAL(ttrpc_read_header(&rd, &io, &fh) == 1);
	CU_ASSERT_EQUAL(fh.length, 5);
	CU_ASSERT_FATAL(ttrpc_read_body(&rd, &io, fh.length, &body) == 1);
	CU_ASSERT(memcmp(body, "hello", 5) == 0);
	free(body);
	CU_ASSERT_FATAL(ttrpc_read_header(&rd, &io, &fh) == 1);
	CU_ASSERT_EQUAL(fh.length, big_len);
	CU_ASSERT_EQUAL(fh.stream_id, 3);
	CU_ASSERT_FATAL(ttrpc_read_body(&rd, &io, fh.length, &body) == 1);
	CU_ASSERT(memcmp(body, big, big_len) == 0);
	free(body);
	CU_ASSERT_FATAL(ttrpc_read_header(&rd, &io, &fh) == 1);
	CU_ASSERT_EQUAL(fh.length, 0);
	CU_ASSERT_EQUAL(fh.type, 3);
	CU_ASSERT_EQUAL(fh.flags, 4);
	CU_ASSERT_EQUAL(ttrpc_read_body(&rd, &io, 0, &body), 1);
	CU_ASSERT_PTR_NULL(body);
	/* EOF inside a header is an error, not a clean end. */
	CU_ASSERT_EQUAL(ttrpc_read_header(&rd, &io, &fh), -1);
	int st;
	waitpid(pid, &st, 0);
	free(big);
	ttrpc_reader_free(&rd);
	ttrpc_io_destroy(&io);
}

static void test_reader_skip_and_clean_eof(void)
{
	ttrpc_io io;
	int peer;
	pair(&io, &peer);
	ttrpc_reader rd;
	CU_ASSERT_FATAL(ttrpc_reader_init(&rd) == 0);
	pid_t pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		uint8_t h[TTRPC_HEADER_LEN];
		ttrpc_frame_header fh = {200000, 1, 9, 0};
		ttrpc_header_encode(&fh, h);
		(void)!write(peer, h, sizeof(h));
		uint8_t *junk = calloc(1, 200000);
		bl_write_full(peer, junk, 200000);
		fh = (ttrpc_frame_header){2, 3, 1, 0};
		ttrpc_header_encode(&fh, h);
		(void)!write(peer, h, sizeof(h));
		(void)!write(peer, "ok", 2);
		_exit(0);
	}
	close(peer);
	ttrpc_frame_header fh;
	uint8_t *body;
	CU_ASSERT_FATAL(ttrpc_read_header(&rd, &io, &fh) == 1);
	CU_ASSERT_EQUAL(fh.type, 9);
	CU_ASSERT_EQUAL(ttrpc_skip_body(&rd, &io, fh.length), 1);
	CU_ASSERT_FATAL(ttrpc_read_header(&rd, &io, &fh) == 1);
	CU_ASSERT_EQUAL(fh.stream_id, 3);
	CU_ASSERT_FATAL(ttrpc_read_body(&rd, &io, fh.length, &body) == 1);
	CU_ASSERT(memcmp(body, "ok", 2) == 0);
	free(body);
	CU_ASSERT_EQUAL(ttrpc_read_header(&rd, &io, &fh), 0);
	int st;
	waitpid(pid, &st, 0);
	ttrpc_reader_free(&rd);
	ttrpc_io_destroy(&io);
}

/* A non-socket fd (a pipe) goes non-blocking and can be woken from a blocked read. */
static void *wake_later(void *arg)
{
	tt_sleep_ms(50);
	ttrpc_io_wake(arg);
	return NULL;
}

static void test_io_wake_non_socket(void)
{
	int p[2];
	CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
	ttrpc_io io;
	CU_ASSERT_FATAL(ttrpc_io_init(&io, p[0], NULL) == 0);
	CU_ASSERT_FALSE(io.is_socket);
	CU_ASSERT(fcntl(p[0], F_GETFL) & O_NONBLOCK);
	pthread_t t;
	pthread_create(&t, NULL, wake_later, &io);
	uint8_t b;
	uint64_t t0 = bl_now_monotonic_ns();
	CU_ASSERT_EQUAL(ttrpc_io_read(&io, &b, 1), -1);
	CU_ASSERT_EQUAL(errno, ECANCELED);
	CU_ASSERT(bl_now_monotonic_ns() - t0 >= 40000000ull);
	pthread_join(t, NULL);
	ttrpc_io_destroy(&io);
	close(p[1]);
}

static void test_code_mapping(void)
{
	CU_ASSERT_EQUAL(ttrpc_code_to_bl(TTRPC_NOT_FOUND), BL_ENOTFOUND);
	CU_ASSERT_EQUAL(ttrpc_code_to_bl(TTRPC_DEADLINE_EXCEEDED), BL_ETIMEOUT);
	CU_ASSERT_EQUAL(ttrpc_code_to_bl(TTRPC_UNIMPLEMENTED), BL_EUNSUPPORTED);
	CU_ASSERT_EQUAL(ttrpc_code_from_bl(-BL_ENOTFOUND), TTRPC_NOT_FOUND);
	CU_ASSERT_EQUAL(ttrpc_code_from_bl(BL_EEXIST), TTRPC_ALREADY_EXISTS);
	CU_ASSERT_EQUAL(ttrpc_code_from_bl(BL_ESYSTEM), TTRPC_INTERNAL);
	/* One map both ways: every bl_code survives a round trip. */
	for (int c = BL_OK; c <= BL_EUNSUPPORTED; c++)
		CU_ASSERT_EQUAL(ttrpc_code_to_bl(ttrpc_code_from_bl(c)), c);
	bl_error_t eperm = {.code = BL_ESYSTEM, .sys_errno = EPERM};
	CU_ASSERT_EQUAL(ttrpc_code_from_error(&eperm), TTRPC_PERMISSION_DENIED);
	CU_ASSERT_EQUAL(ttrpc_code_to_bl(TTRPC_PERMISSION_DENIED), BL_ESYSTEM);
	CU_ASSERT_STRING_EQUAL(ttrpc_code_name(TTRPC_UNIMPLEMENTED), "Unimplemented");
	CU_ASSERT_STRING_EQUAL(ttrpc_code_name(99), "Code(?)");
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"header_layout", test_header_layout},
	    {"varint", test_varint},
	    {"request_encoding_matches_reference", test_request_encoding_matches_reference},
	    {"request_roundtrip_with_metadata", test_request_roundtrip_with_metadata},
	    {"response_encoding", test_response_encoding},
	    {"response_too_large", test_response_too_large},
	    {"reader_split_and_batched", test_reader_split_and_batched},
	    {"reader_skip_and_clean_eof", test_reader_skip_and_clean_eof},
	    {"io_wake_non_socket", test_io_wake_non_socket},
	    {"code_mapping", test_code_mapping},
	    {NULL, NULL},
	};
	return bl_test_run("ttrpc_frame", cases);
}
