/*
 * The code session's frame decoder and reply validation (runtime/
 * codebox_proto.c): what the guest's interpreter sends is untrusted. Must
 * hold: frames split anywhere decode the same; unknown types and oversized
 * frames are BL_EPROTO and break the stream; H and R payloads are strict
 * JSON objects with bounded, typed members; names keep identifier
 * characters only.
 */
#include "bl_test.h"
#include "codebox_proto.h"

#include <stdlib.h>
#include <string.h>

struct seen {
	char types[16];
	size_t n;
	size_t bytes;
	char last[64];
};

static int collect(void *user, char type, const char *payload, size_t len)
{
	struct seen *s = user;
	if (s->n < sizeof(s->types) - 1)
		s->types[s->n++] = type;
	s->bytes += len;
	size_t k = len < sizeof(s->last) - 1 ? len : sizeof(s->last) - 1;
	memcpy(s->last, payload, k);
	s->last[k] = 0;
	return 0;
}

static size_t frame(char *out, char type, const char *payload, size_t len)
{
	out[0] = type;
	out[1] = (char)(len >> 24);
	out[2] = (char)(len >> 16);
	out[3] = (char)(len >> 8);
	out[4] = (char)len;
	memcpy(out + 5, payload, len);
	return 5 + len;
}

static void test_split(void)
{
	char buf[256];
	size_t n = frame(buf, 'H', "{\"v\": 1, \"pid\": 7}", 18);
	n += frame(buf + n, 'O', "hello", 5);
	n += frame(buf + n, 'E', "", 0);
	n += frame(buf + n, 'R', "{\"id\": 1}", 9);
	/* Every split point, and byte by byte. */
	for (size_t cut = 0; cut <= n; cut++) {
		cbx_decoder d;
		cbx_decoder_init(&d);
		struct seen s = {0};
		bl_error_t err = BL_ERROR_INIT;
		CU_ASSERT_EQUAL(cbx_decoder_feed(&d, buf, cut, collect, &s, &err), 0);
		CU_ASSERT_EQUAL(cbx_decoder_feed(&d, buf + cut, n - cut, collect, &s, &err), 0);
		CU_ASSERT_STRING_EQUAL(s.types, "HOER");
		CU_ASSERT_STRING_EQUAL(s.last, "{\"id\": 1}");
		cbx_decoder_clear(&d);
	}
	cbx_decoder d;
	cbx_decoder_init(&d);
	struct seen s = {0};
	for (size_t i = 0; i < n; i++)
		CU_ASSERT_EQUAL(cbx_decoder_feed(&d, buf + i, 1, collect, &s, NULL), 0);
	CU_ASSERT_STRING_EQUAL(s.types, "HOER");
	cbx_decoder_clear(&d);
}

static void test_hostile_frames(void)
{
	cbx_decoder d;
	bl_error_t err = BL_ERROR_INIT;
	struct seen s = {0};
	/* Unknown type: broken for good. */
	cbx_decoder_init(&d);
	CU_ASSERT_EQUAL(cbx_decoder_feed(&d, "X\0\0\0\0", 5, collect, &s, &err), -BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "unknown frame type"));
	CU_ASSERT_EQUAL(cbx_decoder_feed(&d, "O\0\0\0\0", 5, collect, &s, &err), -BL_EPROTO);
	cbx_decoder_clear(&d);
	/* An R frame over 64 KiB, an O frame over 1 MiB (refused at the header). */
	cbx_decoder_init(&d);
	CU_ASSERT_EQUAL(cbx_decoder_feed(&d, "R\x00\x01\x00\x01", 5, collect, &s, &err),
			-BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "oversized"));
	cbx_decoder_clear(&d);
	cbx_decoder_init(&d);
	CU_ASSERT_EQUAL(cbx_decoder_feed(&d, "O\x00\x10\x00\x01", 5, collect, &s, &err),
			-BL_EPROTO);
	cbx_decoder_clear(&d);
	cbx_decoder_init(&d);
	CU_ASSERT_EQUAL(cbx_decoder_feed(&d, "O\xff\xff\xff\xff", 5, collect, &s, &err),
			-BL_EPROTO);
	cbx_decoder_clear(&d);
	/* Exactly 1 MiB of output is fine. */
	cbx_decoder_init(&d);
	char *big = calloc(1, 5 + CBX_MAX_OUTPUT_FRAME);
	frame(big, 'O', big + 5, CBX_MAX_OUTPUT_FRAME);
	memset(&s, 0, sizeof(s));
	CU_ASSERT_EQUAL(cbx_decoder_feed(&d, big, 5 + CBX_MAX_OUTPUT_FRAME, collect, &s, &err), 0);
	CU_ASSERT_EQUAL(s.bytes, CBX_MAX_OUTPUT_FRAME);
	free(big);
	cbx_decoder_clear(&d);
}

static void test_hello(void)
{
	uint32_t pid = 99;
	bl_error_t err = BL_ERROR_INIT;
#define H(s) cbx_parse_hello(s, strlen(s), &pid, &err)
	CU_ASSERT_EQUAL(H("{\"v\": 1, \"pid\": 42}"), 0);
	CU_ASSERT_EQUAL(pid, 42);
	CU_ASSERT_EQUAL(H("{\"v\": 1, \"pid\": 99999999}"), 0);
	CU_ASSERT_EQUAL(pid, 0); /* out of range: unknown */
	CU_ASSERT_EQUAL(H("{\"v\": 1, \"pid\": \"7\"}"), 0);
	CU_ASSERT_EQUAL(pid, 0);
	CU_ASSERT_EQUAL(H("{\"v\": 2}"), -BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "version 2"));
	CU_ASSERT_EQUAL(H("{\"pid\": 3}"), -BL_EPROTO);
	CU_ASSERT_EQUAL(H("[1]"), -BL_EPROTO);
	CU_ASSERT_EQUAL(H("{\"v\": 1} x"), -BL_EPROTO);
	CU_ASSERT_EQUAL(H("{\"v\": 1"), -BL_EPROTO);
	CU_ASSERT_EQUAL(H(""), -BL_EPROTO);
	CU_ASSERT_EQUAL(cbx_parse_hello("{\"v\":1}\0", 8, &pid, &err), -BL_EPROTO);
#undef H
}

static void test_result(void)
{
	cbx_result r;
	bl_error_t err = BL_ERROR_INIT;
#define R(s) cbx_parse_result(s, strlen(s), &r, &err)
	CU_ASSERT_EQUAL(R("{\"id\": 5, \"exit_code\": 1, \"error\": \"ZeroDivisionError\", "
			  "\"resource\": null}"),
			0);
	CU_ASSERT_EQUAL(r.id, 5);
	CU_ASSERT_EQUAL(r.exit_code, 1);
	CU_ASSERT_STRING_EQUAL(r.error, "ZeroDivisionError");
	CU_ASSERT_STRING_EQUAL(r.resource, "");
	CU_ASSERT_EQUAL(R("{\"id\": 6, \"exit_code\": 0, \"resource\": \"memory\"}"), 0);
	CU_ASSERT_STRING_EQUAL(r.resource, "memory");
	/* Names keep identifier characters only, and are bounded. */
	CU_ASSERT_EQUAL(R("{\"id\": 1, \"exit_code\": 1, \"error\": \"a\\u001b[2Jb.c d\"}"), 0);
	CU_ASSERT_STRING_EQUAL(r.error, "a2Jb.cd");
	char longname[400];
	int k = snprintf(longname, sizeof(longname), "{\"id\": 1, \"exit_code\": 1, \"error\": \"");
	memset(longname + k, 'A', 300);
	strcpy(longname + k + 300, "\"}");
	CU_ASSERT_EQUAL(R(longname), 0);
	CU_ASSERT_EQUAL(strlen(r.error), sizeof(r.error) - 1);
	CU_ASSERT_EQUAL(R("{\"id\": 1, \"exit_code\": 256}"), -BL_EPROTO);
	CU_ASSERT_EQUAL(R("{\"id\": 1, \"exit_code\": -1}"), -BL_EPROTO);
	CU_ASSERT_EQUAL(R("{\"id\": 1, \"exit_code\": 1.5}"), -BL_EPROTO);
	CU_ASSERT_EQUAL(R("{\"id\": 1, \"exit_code\": true}"), -BL_EPROTO);
	CU_ASSERT_EQUAL(R("{\"id\": -1, \"exit_code\": 0}"), -BL_EPROTO);
	CU_ASSERT_EQUAL(R("{\"exit_code\": 0}"), -BL_EPROTO);
	CU_ASSERT_EQUAL(R("{\"id\": 1, \"exit_code\": 0, \"resource\": \"cpu\"}"), -BL_EPROTO);
	CU_ASSERT_EQUAL(R("{\"id\": 1, \"exit_code\": 0, \"error\": 3}"), -BL_EPROTO);
	CU_ASSERT_EQUAL(R("{\"id\": 1, \"exit_code\": 0, \"error\": {}}"), -BL_EPROTO);
	CU_ASSERT_EQUAL(R("{\"id\": 99999999999999999999999, \"exit_code\": 0}"), -BL_EPROTO);
	CU_ASSERT_EQUAL(
	    R("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]"
	      "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"),
	    -BL_EPROTO);
#undef R
}

static void test_encode(void)
{
	char *f = NULL;
	size_t n = 0;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(cbx_encode_code(0x0102030405060708ull, "x=1", 3, &f, &n, &err), 0);
	CU_ASSERT_EQUAL(n, 16);
	CU_ASSERT_EQUAL(memcmp(f, "C\0\0\0\x0b\x01\x02\x03\x04\x05\x06\x07\x08x=1", 16), 0);
	free(f);
	CU_ASSERT_EQUAL(cbx_encode_code(1, "", CBX_MAX_CODE + 1, &f, &n, &err), -BL_EINVAL);
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"split", test_split},   {"hostile_frames", test_hostile_frames},
	    {"hello", test_hello},   {"result", test_result},
	    {"encode", test_encode}, {NULL, NULL},
	};
	return bl_test_run("codebox_proto", cases);
}
