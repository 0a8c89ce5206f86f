/* The code session's frames and the validation of what the driver sends. */
#include "codebox_proto.h"
#include "bl_cleanup.h"
#include "image_internal.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cbx_decoder_init(cbx_decoder *d)
{
	*d = (cbx_decoder){0};
}

void cbx_decoder_clear(cbx_decoder *d)
{
	free(d->payload);
	cbx_decoder_init(d);
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The header is complete: checks the type and the announced size. */
static int start_frame(cbx_decoder *d, bl_error_t *err)
{
	char t = (char)d->hdr[0];
	uint32_t n = be32(d->hdr + 1);
	uint32_t max = (t == 'H' || t == 'R') ? CBX_MAX_JSON_FRAME : CBX_MAX_OUTPUT_FRAME;
	if (!strchr("HOER", t) || t == 0) {
		d->broken = true;
		return bl_set_error(err, BL_EPROTO,
				    "the interpreter sent an unknown frame type 0x%02x", d->hdr[0]);
	}
	if (n > max) {
		d->broken = true;
		return bl_set_error(
		    err, BL_EPROTO,
		    "the interpreter sent an oversized '%c' frame (%u bytes, at most %u)", t, n,
		    max);
	}
	if (n > d->cap || !d->payload) {
		char *p = realloc(d->payload, n ? n : 1);
		if (!p)
			abort();
		d->payload = p;
		d->cap = n;
	}
	d->need = n;
	d->have = 0;
	return 0;
}

int cbx_decoder_feed(cbx_decoder *d, const void *buf, size_t len, cbx_frame_fn fn, void *user,
		     bl_error_t *err)
{
	const uint8_t *p = buf;
	if (d->broken)
		return bl_set_error(err, BL_EPROTO, "the interpreter's stream is broken");
	while (len > 0) {
		if (d->hdr_len < sizeof(d->hdr)) {
			size_t k = sizeof(d->hdr) - d->hdr_len;
			if (k > len)
				k = len;
			memcpy(d->hdr + d->hdr_len, p, k);
			d->hdr_len += k;
			p += k;
			len -= k;
			if (d->hdr_len < sizeof(d->hdr))
				return 0;
			int r = start_frame(d, err);
			if (r < 0)
				return r;
		}
		size_t k = d->need - d->have;
		if (k > len)
			k = len;
		memcpy(d->payload + d->have, p, k);
		d->have += (uint32_t)k;
		p += k;
		len -= k;
		if (d->have < d->need)
			return 0;
		d->hdr_len = 0;
		int r = fn(user, (char)d->hdr[0], d->payload, d->need);
		if (r < 0)
			return r;
	}
	return 0;
}

static int parse_object(const char *payload, size_t len, const char *what, struct json_object **ret,
			bl_error_t *err)
{
	if (memchr(payload, 0, len))
		return bl_set_error(err, BL_EPROTO, "the interpreter's %s frame holds a NUL byte",
				    what);
	int r =
	    bl_img_json_parse(payload, len, CBX_MAX_JSON_FRAME, what, json_type_object, ret, err);
	if (r < 0)
		return bl_error_prefix(err, "the interpreter sent a malformed frame");
	return 0;
}

/* An integer member in [min, max]; absent: BL_EPROTO when required, else *ret
 * untouched. */
static int get_int(struct json_object *o, const char *key, bool required, int64_t min, int64_t max,
		   int64_t *ret, bl_error_t *err)
{
	struct json_object *v = NULL;
	if (!json_object_object_get_ex(o, key, &v) || !v) {
		if (required)
			return bl_set_error(err, BL_EPROTO, "the interpreter's reply lacks \"%s\"",
					    key);
		return 0;
	}
	if (!json_object_is_type(v, json_type_int))
		return bl_set_error(err, BL_EPROTO, "the interpreter's \"%s\" is not an integer",
				    key);
	errno = 0;
	int64_t n = json_object_get_int64(v);
	if (errno || n < min || n > max)
		return bl_set_error(err, BL_EPROTO, "the interpreter's \"%s\" is out of range",
				    key);
	*ret = n;
	return 0;
}

int cbx_parse_hello(const char *payload, size_t len, uint32_t *ret_pid, bl_error_t *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	int r = parse_object(payload, len, "hello", &o, err);
	if (r < 0)
		return r;
	int64_t v = 0, pid = 0;
	if ((r = get_int(o, "v", true, 0, INT32_MAX, &v, err)) < 0)
		return r;
	if (v != CBX_PROTO_VERSION)
		return bl_set_error(err, BL_EPROTO,
				    "the interpreter speaks protocol version %lld, not %d",
				    (long long)v, CBX_PROTO_VERSION);
	if (get_int(o, "pid", false, 2, (1 << 22) - 1, &pid, NULL) < 0)
		pid = 0;
	*ret_pid = (uint32_t)pid;
	return 0;
}

/* A member that is null or a short string; copies identifier characters. */
static int get_name(struct json_object *o, const char *key, char *out, size_t out_len,
		    bl_error_t *err)
{
	struct json_object *v = NULL;
	out[0] = 0;
	if (!json_object_object_get_ex(o, key, &v) || !v)
		return 0;
	if (!json_object_is_type(v, json_type_string))
		return bl_set_error(err, BL_EPROTO, "the interpreter's \"%s\" is not a string",
				    key);
	const char *s = json_object_get_string(v);
	size_t n = (size_t)json_object_get_string_len(v), k = 0;
	for (size_t i = 0; i < n && k + 1 < out_len; i++) {
		char c = s[i];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '_' || c == '.')
			out[k++] = c;
	}
	out[k] = 0;
	return 0;
}

int cbx_parse_result(const char *payload, size_t len, cbx_result *ret, bl_error_t *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	int r = parse_object(payload, len, "result", &o, err);
	if (r < 0)
		return r;
	cbx_result res = {0};
	int64_t id = 0, code = 0;
	char rsrc[16];
	if ((r = get_int(o, "id", true, 0, INT64_MAX - 1, &id, err)) < 0 ||
	    (r = get_int(o, "exit_code", true, 0, 255, &code, err)) < 0 ||
	    (r = get_name(o, "error", res.error, sizeof(res.error), err)) < 0 ||
	    (r = get_name(o, "resource", rsrc, sizeof(rsrc), err)) < 0)
		return r;
	if (rsrc[0] && strcmp(rsrc, "memory") && strcmp(rsrc, "disk") && strcmp(rsrc, "pids"))
		return bl_set_error(err, BL_EPROTO, "the interpreter named an unknown resource");
	memcpy(res.resource, rsrc, strlen(rsrc) + 1); /* at most "memory" */
	res.id = (uint64_t)id;
	res.exit_code = (int)code;
	*ret = res;
	return 0;
}

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
	for (int i = bytes - 1; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

int cbx_encode_code(uint64_t id, const char *code, size_t code_len, char **ret, size_t *ret_len,
		    bl_error_t *err)
{
	if (code_len > CBX_MAX_CODE)
		return bl_set_error(err, BL_EINVAL, "code is over %u MiB", CBX_MAX_CODE >> 20);
	size_t n = 5 + 8 + code_len;
	uint8_t *f = malloc(n);
	if (!f)
		abort();
	f[0] = 'C';
	put_be(f + 1, 8 + code_len, 4);
	put_be(f + 5, id, 8);
	memcpy(f + 13, code, code_len);
	*ret = (char *)f;
	*ret_len = n;
	return 0;
}
