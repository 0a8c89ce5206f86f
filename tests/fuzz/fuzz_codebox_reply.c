/*
 * libFuzzer target for the host's decoding of what a code session's guest
 * interpreter sends (runtime/codebox_proto.c): the input is its stdout, fed
 * in pieces whose sizes come from the first byte; H and R payloads go
 * through their validators. Every input must end in frames or a clean
 * BL_EPROTO, never a crash, overrun or leak.
 */
#include "codebox_proto.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_frame(void *user, char type, const char *payload, size_t len)
{
	(void)user;
	cbx_result r;
	uint32_t pid;
	bl_error_t err = BL_ERROR_INIT;
	if (type == 'H')
		(void)cbx_parse_hello(payload, len, &pid, &err);
	if (type == 'R' && cbx_parse_result(payload, len, &r, &err) == 0 &&
	    (r.exit_code < 0 || r.exit_code > 255 || strlen(r.error) >= sizeof(r.error)))
		__builtin_trap();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t step = (size_t)data[0] + 1;
	data++;
	size--;
	cbx_decoder d;
	cbx_decoder_init(&d);
	bl_error_t err = BL_ERROR_INIT;
	for (size_t off = 0; off < size; off += step) {
		size_t n = size - off < step ? size - off : step;
		if (cbx_decoder_feed(&d, data + off, n, on_frame, NULL, &err) < 0)
			break;
	}
	/* The validators directly too. */
	cbx_result r;
	uint32_t pid;
	(void)cbx_parse_result((const char *)data, size, &r, &err);
	(void)cbx_parse_hello((const char *)data, size, &pid, &err);
	cbx_decoder_clear(&d);
	return 0;
}
