/*
 * libFuzzer target for ttrpc: the bytes are a client's stream into a live
 * server (frame reader, request decoder, dispatcher, status replies), then a
 * server's stream into a client (response reader and matcher). Every reply
 * the server writes must be a well-formed Response frame.
 */
#include "ttrpc.h"
#include "ttrpc_internal.h"
#include "ttrpc.pb-c.h"
#include "bl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int echo(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	if (ttrpc_call_metadata(call, "fail"))
		return ttrpc_reply_error(reply, TTRPC_NOT_FOUND, "fail %s", call->method);
	uint8_t *p = call->payload_len ? malloc(call->payload_len) : NULL;
	if (p)
		memcpy(p, call->payload, call->payload_len);
	return ttrpc_reply_raw(reply, p, call->payload_len);
}

static ttrpc_server *server(void)
{
	static ttrpc_server *srv;
	if (!srv) {
		srv = ttrpc_server_new();
		ttrpc_server_register(srv, "s", "m", echo, NULL);
		ttrpc_server_register(srv, "containerd.task.v2.Task", "Connect", echo, NULL);
		if (!srv || ttrpc_server_start(srv, NULL) < 0)
			abort();
	}
	return srv;
}

/* Checks one chunk of server output; keeps partial frames in acc. */
static void check_replies(uint8_t *acc, size_t *acc_len)
{
	size_t off = 0;
	while (*acc_len - off >= TTRPC_HEADER_LEN) {
		ttrpc_frame_header h;
		ttrpc_header_decode(acc + off, &h);
		if (h.type != TTRPC_TYPE_RESPONSE || h.length > TTRPC_MAX_DATA)
			abort();
		if (*acc_len - off - TTRPC_HEADER_LEN < h.length)
			break;
		Ttrpc__Response *r =
		    ttrpc__response__unpack(NULL, h.length, acc + off + TTRPC_HEADER_LEN);
		if (!r)
			abort();
		ttrpc__response__free_unpacked(r, NULL);
		off += TTRPC_HEADER_LEN + h.length;
	}
	memmove(acc, acc + off, *acc_len - off);
	*acc_len -= off;
}

static void fuzz_server(const uint8_t *data, size_t size)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	if (ttrpc_server_add_conn(server(), sv[0], NULL) < 0)
		abort();
	(void)fcntl(sv[1], F_SETFL, O_NONBLOCK);
	static uint8_t acc[2 * TTRPC_MAX_DATA];
	size_t acc_len = 0, sent = 0;
	bool wr_open = true;
	for (;;) {
		struct pollfd p = {.fd = sv[1], .events = POLLIN | (wr_open ? POLLOUT : 0)};
		/* libFuzzer's -timeout SIGALRM interrupts poll: EINTR is no hang. */
		uint64_t end = bl_now_monotonic_ns() + 5000000000ull;
		int n;
		for (;;) {
			uint64_t now = bl_now_monotonic_ns();
			n = poll(&p, 1, now >= end ? 0 : (int)((end - now) / 1000000) + 1);
			if (n >= 0 || errno != EINTR)
				break;
		}
		if (n <= 0)
			abort(); /* the server hung */
		if (p.revents & POLLOUT && wr_open) {
			ssize_t n = sent < size ? write(sv[1], data + sent, size - sent) : 0;
			if (n > 0)
				sent += (size_t)n;
			if (sent >= size || (n < 0 && errno != EAGAIN)) {
				(void)shutdown(sv[1], SHUT_WR);
				wr_open = false;
			}
		}
		if (p.revents & (POLLIN | POLLHUP)) {
			ssize_t n = read(sv[1], acc + acc_len, sizeof(acc) - acc_len);
			if (n == 0 || (n < 0 && errno != EAGAIN))
				break;
			if (n > 0) {
				acc_len += (size_t)n;
				check_replies(acc, &acc_len);
			}
		}
	}
	close(sv[1]);
}

static void fuzz_client(const uint8_t *data, size_t size)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	ttrpc_client *c = ttrpc_client_new(sv[0], NULL);
	if (!c)
		abort();
	/* Whatever the peer says, the call ends: a response, EOF or timeout. */
	if (size && write(sv[1], data, size < 65536 ? size : 65536) < 0)
		abort();
	(void)shutdown(sv[1], SHUT_WR);
	ttrpc_status st;
	uint8_t *out = NULL;
	size_t out_len = 0;
	(void)ttrpc_client_call_raw(c, "s", "m", (const uint8_t *)"x", 1, NULL, 0, 1000000000ull,
				    &st, &out, &out_len, NULL);
	free(out);
	ttrpc_client_free(c);
	close(sv[1]);
}

/* The in-place Request decoder accepts nothing protobuf-c's unpacker
 * rejects (it may be stricter, as Go is: field number 0) and decodes what
 * both accept identically. */
static void fuzz_decoder(const uint8_t *data, size_t size)
{
	Ttrpc__Request *pr = ttrpc__request__unpack(NULL, size, data);
	ttrpc_request v;
	int rc = ttrpc_request_decode(data, size, &v);
	if (!pr && rc == 0)
		abort();
	if (!pr || rc < 0) {
		if (pr)
			ttrpc__request__free_unpacked(pr, NULL);
		return;
	}
	if (strcmp(pr->service, v.service) != 0 || strcmp(pr->method, v.method) != 0 ||
	    pr->payload.len != v.payload_len ||
	    (v.payload_len && memcmp(pr->payload.data, v.payload, v.payload_len) != 0) ||
	    pr->timeout_nano != v.timeout_nano || pr->n_metadata != v.n_metadata)
		abort();
	for (size_t i = 0; i < v.n_metadata; i++)
		if (strcmp(pr->metadata[i]->key, v.metadata[i].key) != 0 ||
		    strcmp(pr->metadata[i]->value, v.metadata[i].value) != 0)
			abort();
	ttrpc_request_release(&v);
	ttrpc__request__free_unpacked(pr, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_decoder(data, size);
	if (size > TTRPC_HEADER_LEN)
		fuzz_decoder(data + TTRPC_HEADER_LEN, size - TTRPC_HEADER_LEN);
	fuzz_server(data, size);
	fuzz_client(data, size);
	return 0;
}
