/* Helpers for the ttrpc tests: a raw peer that writes and reads frames by hand. */
#pragma once

#include "bl_test.h"
#include "bl_util.h"
#include "ttrpc.h"
#include "ttrpc.pb-c.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Adds one end of a socketpair to srv; returns the other end. */
static inline int tt_connect(ttrpc_server *srv)
{
	int sv[2];
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_FATAL(ttrpc_server_add_conn(srv, sv[0], &err) == 0);
	return sv[1];
}

static inline void tt_write_frame(int fd, uint32_t id, uint8_t type, uint8_t flags,
				  const void *payload, size_t len)
{
	uint8_t h[TTRPC_HEADER_LEN];
	ttrpc_frame_header fh = {(uint32_t)len, id, type, flags};
	ttrpc_header_encode(&fh, h);
	CU_ASSERT_FATAL(bl_write_full(fd, h, sizeof(h)) == 0);
	if (len)
		CU_ASSERT_FATAL(bl_write_full(fd, payload, len) == 0);
}

static inline void tt_send_request(int fd, uint32_t id, const char *service, const char *method,
				   const void *payload, size_t len, int64_t timeout_nano,
				   const char *md_key, const char *md_val)
{
	Ttrpc__Request req = TTRPC__REQUEST__INIT;
	Ttrpc__KeyValue kv = TTRPC__KEY_VALUE__INIT;
	Ttrpc__KeyValue *kvs[1] = {&kv};
	req.service = (char *)service;
	req.method = (char *)method;
	req.payload.data = (uint8_t *)payload;
	req.payload.len = len;
	req.timeout_nano = timeout_nano;
	if (md_key) {
		kv.key = (char *)md_key;
		kv.value = (char *)md_val;
		req.n_metadata = 1;
		req.metadata = kvs;
	}
	size_t n = ttrpc__request__get_packed_size(&req);
	uint8_t *buf = malloc(n + 1);
	ttrpc__request__pack(&req, buf);
	tt_write_frame(fd, id, TTRPC_TYPE_REQUEST, 0, buf, n);
	free(buf);
}

/* Reads exactly len bytes within timeout_ms: 1, 0 at EOF, -1 on timeout. */
static inline int tt_read_exact(int fd, void *buf, size_t len, int timeout_ms)
{
	size_t got = 0;
	uint64_t end = bl_now_monotonic_ns() + (uint64_t)timeout_ms * 1000000ull;
	while (got < len) {
		uint64_t now = bl_now_monotonic_ns();
		if (now >= end)
			return -1;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int n = poll(&p, 1, (int)((end - now) / 1000000ull) + 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		ssize_t r = read(fd, (uint8_t *)buf + got, len - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return 0;
		got += (size_t)r;
	}
	return 1;
}

typedef struct tt_resp {
	uint32_t id;
	uint8_t type;
	int code;
	char message[512];
	uint8_t *payload;
	size_t len;
} tt_resp;

/* Reads one Response frame: 1, 0 at EOF, -1 on timeout or a malformed frame. */
static inline int tt_read_response(int fd, tt_resp *r, int timeout_ms)
{
	uint8_t h[TTRPC_HEADER_LEN];
	memset(r, 0, sizeof(*r));
	int rc = tt_read_exact(fd, h, sizeof(h), timeout_ms);
	if (rc <= 0)
		return rc;
	ttrpc_frame_header fh;
	ttrpc_header_decode(h, &fh);
	r->id = fh.stream_id;
	r->type = fh.type;
	if (fh.length > TTRPC_MAX_DATA)
		return -1;
	uint8_t *body = malloc(fh.length + 1);
	if (fh.length && tt_read_exact(fd, body, fh.length, timeout_ms) <= 0) {
		free(body);
		return -1;
	}
	Ttrpc__Response *resp = ttrpc__response__unpack(NULL, fh.length, body);
	free(body);
	if (!resp)
		return -1;
	if (resp->status) {
		r->code = resp->status->code;
		snprintf(r->message, sizeof(r->message), "%s", resp->status->message);
	}
	r->len = resp->payload.len;
	r->payload = malloc(r->len + 1);
	if (r->len)
		memcpy(r->payload, resp->payload.data, r->len);
	r->payload[r->len] = 0;
	ttrpc__response__free_unpacked(resp, NULL);
	return 1;
}

/* True when the peer closed fd within timeout_ms (pending frames are skipped). */
static inline bool tt_wait_closed(int fd, int timeout_ms)
{
	uint8_t buf[4096];
	uint64_t end = bl_now_monotonic_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (;;) {
		uint64_t now = bl_now_monotonic_ns();
		if (now >= end)
			return false;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, (int)((end - now) / 1000000ull) + 1) <= 0)
			return false;
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return true;
	}
}

static inline void tt_sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}
