/*
 * The code session's wire format (the guest-side driver is
 * sdk/python/boxlite/_driver.py, embedded at build time): frames of
 * type (1 byte) + payload length (4 bytes, big-endian) + payload.
 *
 *   host -> guest  C  id (8 bytes, big-endian) + code (UTF-8)
 *   guest -> host  H  {"v": 1, "pid": P}                     once, at start
 *                  O / E  output bytes of the running code
 *                  R  {"id": N, "exit_code": C, "error": NAME|null,
 *                      "resource": "memory"|"disk"|"pids"|null}
 *
 * Everything the guest sends is untrusted: frame types and sizes are
 * checked here, H and R payloads are validated JSON objects.
 */
#pragma once

#include "bl_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CBX_MAX_OUTPUT_FRAME (1u << 20)	 /* the driver's chunk size */
#define CBX_MAX_JSON_FRAME   (64u << 10) /* H and R */
#define CBX_MAX_CODE	     (16u << 20)
#define CBX_PROTO_VERSION    1

typedef struct cbx_decoder {
	uint8_t hdr[5];
	size_t hdr_len;
	char *payload; /* the largest frame so far (at most CBX_MAX_OUTPUT_FRAME) */
	uint32_t cap;
	uint32_t need; /* payload length of the current frame */
	uint32_t have;
	bool broken;
} cbx_decoder;

/* Called with each complete frame; a negative return stops the feed with it. */
typedef int (*cbx_frame_fn)(void *user, char type, const char *payload, size_t len);

void cbx_decoder_init(cbx_decoder *d);
void cbx_decoder_clear(cbx_decoder *d);
/* Feeds bytes from the guest. BL_EPROTO (and the decoder stays broken) for an
 * unknown frame type or an oversized frame; else 0 or the callback's error. */
int cbx_decoder_feed(cbx_decoder *d, const void *buf, size_t len, cbx_frame_fn fn, void *user,
		     bl_error_t *err);

typedef struct cbx_result {
	uint64_t id;
	int exit_code;	  /* 0..255 */
	char error[104];  /* exception class name (identifier characters only) or "" */
	char resource[8]; /* "memory", "disk", "pids" or "" */
} cbx_result;

/* Validates an H payload: protocol version 1; *ret_pid the driver's guest
 * pid (0 when absent or out of range). */
int cbx_parse_hello(const char *payload, size_t len, uint32_t *ret_pid, bl_error_t *err);
/* Validates an R payload. */
int cbx_parse_result(const char *payload, size_t len, cbx_result *ret, bl_error_t *err);
/* Builds a C frame (malloc'd) for code of code_len bytes. */
int cbx_encode_code(uint64_t id, const char *code, size_t code_len, char **ret, size_t *ret_len,
		    bl_error_t *err);
