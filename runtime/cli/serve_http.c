/*
 * `boxlite serve`'s HTTP side (libmicrohttpd, one thread per connection, so
 * a handler may block on a VM): request bodies (bounded: 413), bearer-token
 * authentication (401), routing, JSON error bodies, the public pages.
 */
#include "serve.h"
#include "bl_log.h"
#include "bl_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

extern const char srv_playground_html[], srv_playground_end[];
extern const char srv_openapi_yaml[], srv_openapi_end[];

#define JSON_DEPTH 32

typedef struct req_ctx {
	bool started;
	bool too_big, responded;
	bool upload;
	const srv_tenant *tenant;
	char *body;
	size_t len, cap;
	int fd;
	char *upload_path;
	size_t upload_len;
	bool upload_failed;
} req_ctx;

/* ------------------------------------------------------------ JSON helpers */

json_object *srv_parse_body(const char *body, size_t len, bl_error_t *err)
{
	if (len == 0)
		return bl_set_error(err, BL_EINVAL, "the request body must be a JSON object"), NULL;
	json_tokener *tok = json_tokener_new_ex(JSON_DEPTH);
	if (!tok)
		return bl_set_error(err, BL_ESYSTEM, "out of memory"), NULL;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	json_object *o = json_tokener_parse_ex(tok, body, (int)len);
	enum json_tokener_error e = json_tokener_get_error(tok);
	size_t used = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!o || e != json_tokener_success) {
		json_object_put(o);
		bl_set_error(err, BL_EINVAL, "malformed JSON: %s",
			     e == json_tokener_continue ? "unexpected end"
							: json_tokener_error_desc(e));
		return NULL;
	}
	for (; used < len; used++)
		if (!strchr(" \t\r\n", body[used])) {
			json_object_put(o);
			bl_set_error(err, BL_EINVAL, "malformed JSON: data after the value");
			return NULL;
		}
	if (!json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		bl_set_error(err, BL_EINVAL, "the request body must be a JSON object");
		return NULL;
	}
	return o;
}

/* Valid UTF-8 only (JSON strings): invalid bytes become U+FFFD. */
json_object *srv_json_text(const char *buf, size_t len)
{
	char *out = malloc(len * 3 + 1);
	size_t o = 0;
	const unsigned char *s = (const unsigned char *)buf;
	for (size_t i = 0; i < len;) {
		unsigned c = s[i];
		size_t n = c < 0x80	    ? 1
			   : (c >> 5) == 6  ? 2
			   : (c >> 4) == 14 ? 3
			   : (c >> 3) == 30 ? 4
					    : 0;
		bool ok = n > 0 && i + n <= len;
		for (size_t k = 1; ok && k < n; k++)
			ok = (s[i + k] & 0xc0) == 0x80;
		if (ok && n == 2)
			ok = c >= 0xc2;
		if (ok && n == 3)
			ok = !(c == 0xe0 && s[i + 1] < 0xa0) && !(c == 0xed && s[i + 1] >= 0xa0);
		if (ok && n == 4)
			ok = c <= 0xf4 && !(c == 0xf0 && s[i + 1] < 0x90) &&
			     !(c == 0xf4 && s[i + 1] >= 0x90);
		if (ok) {
			memcpy(out + o, s + i, n);
			o += n;
			i += n;
		} else {
			memcpy(out + o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
		}
	}
	json_object *j = json_object_new_string_len(out, (int)o);
	free(out);
	return j;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *srv_base64(const void *buf, size_t len)
{
	const unsigned char *s = buf;
	char *out = malloc((len + 2) / 3 * 4 + 1), *p = out;
	for (size_t i = 0; i < len; i += 3) {
		unsigned v = (unsigned)s[i] << 16 | (i + 1 < len ? (unsigned)s[i + 1] << 8 : 0) |
			     (i + 2 < len ? s[i + 2] : 0);
		*p++ = b64[v >> 18 & 63];
		*p++ = b64[v >> 12 & 63];
		*p++ = i + 1 < len ? b64[v >> 6 & 63] : '=';
		*p++ = i + 2 < len ? b64[v & 63] : '=';
	}
	*p = '\0';
	return out;
}

void *srv_unbase64(const char *s, size_t *ret_len)
{
	size_t n = strlen(s);
	unsigned char *out = malloc(n / 4 * 3 + 3);
	size_t o = 0;
	unsigned v = 0, bits = 0, pad = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '=') {
			pad++;
			continue;
		}
		const char *c = strchr(b64, s[i]);
		if (!c || !s[i] || pad) {
			free(out);
			return NULL;
		}
		v = v << 6 | (unsigned)(c - b64);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(v >> bits);
		}
	}
	if (pad > 2 || (n % 4 && pad)) {
		free(out);
		return NULL;
	}
	*ret_len = o;
	return out;
}

/* ------------------------------------------------------------ replies */

void srv_reply_json(srv_reply *r, int status, json_object *j)
{
	json_object_put(r->json);
	r->status = status;
	r->json = j;
}

void srv_reply_error(srv_reply *r, int status, const char *code, const char *fmt, ...)
{
	char msg[BL_ERROR_MSG_MAX + 64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object *e = json_object_new_object();
	json_object_object_add(e, "code", json_object_new_string(code));
	json_object_object_add(e, "message", srv_json_text(msg, strlen(msg)));
	json_object *j = json_object_new_object();
	json_object_object_add(j, "error", e);
	srv_reply_json(r, status, j);
}

static int http_status(bl_code c)
{
	switch (c) {
	case BL_EINVAL:
	case BL_EUNSUPPORTED:
		return 400;
	case BL_ENOTFOUND:
		return 404;
	case BL_EEXIST:
	case BL_ESTATE:
		return 409;
	case BL_ETIMEOUT:
		return 504;
	case BL_EAUTH:
	case BL_ENETWORK:
		return 502;
	case BL_ECANCELED:
		return 503;
	default:
		return 500;
	}
}

const char *srv_code_id(bl_code c)
{
	static const char *const ids[] = {
	    [BL_OK] = "BL_OK",
	    [BL_EINVAL] = "BL_EINVAL",
	    [BL_ETIMEOUT] = "BL_ETIMEOUT",
	    [BL_EOOM] = "BL_EOOM",
	    [BL_ENOTFOUND] = "BL_ENOTFOUND",
	    [BL_EBACKEND] = "BL_EBACKEND",
	    [BL_EAGENTLOST] = "BL_EAGENTLOST",
	    [BL_ESYSTEM] = "BL_ESYSTEM",
	    [BL_EPROTO] = "BL_EPROTO",
	    [BL_EEXIST] = "BL_EEXIST",
	    [BL_ESTATE] = "BL_ESTATE",
	    [BL_ECANCELED] = "BL_ECANCELED",
	    [BL_EUNSUPPORTED] = "BL_EUNSUPPORTED",
	    [BL_EAUTH] = "BL_EAUTH",
	    [BL_ENETWORK] = "BL_ENETWORK",
	};
	if ((unsigned)c < BL_ARRAY_SIZE(ids) && ids[c])
		return ids[c];
	return "BL_EUNKNOWN";
}

void srv_reply_bl(srv_reply *r, const bl_error_t *err)
{
	srv_reply_error(r, http_status(err->code), srv_code_id(err->code), "%s",
			err->msg[0] ? err->msg : bl_code_name(err->code));
}

static enum MHD_Result send_reply(struct MHD_Connection *conn, srv_reply *r)
{
	struct MHD_Response *resp = r->raw;
	if (!resp) {
		const char *s = json_object_to_json_string_ext(
		    r->json ? r->json : json_object_new_object(),
		    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
		size_t n = strlen(s);
		char *body = malloc(n + 1);
		memcpy(body, s, n);
		body[n] = '\n';
		resp = MHD_create_response_from_buffer(n + 1, body, MHD_RESPMEM_MUST_FREE);
		(void)MHD_add_response_header(resp, "Content-Type", "application/json");
	} else if (r->content_type) {
		(void)MHD_add_response_header(resp, "Content-Type", r->content_type);
	}
	if (r->status == 401)
		(void)MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"boxlite\"");
	(void)MHD_add_response_header(resp, "Cache-Control", "no-store");
	(void)MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r->status, resp);
	MHD_destroy_response(resp);
	json_object_put(r->json);
	r->json = NULL;
	r->raw = NULL;
	pthread_mutex_lock(&srv->lock);
	srv->m.requests++;
	if (r->status >= 100 && r->status < 600)
		srv->m.by_class[r->status / 100]++;
	pthread_mutex_unlock(&srv->lock);
	return ret;
}

static void reply_static(srv_reply *r, const char *data, size_t len, const char *type)
{
	r->status = 200;
	r->raw = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT);
	r->content_type = type;
}

/* ------------------------------------------------------------ routing */

/* Splits the path after "/v1/" into segments (no empty ones, no "..").
 * Returns the count, or -1 when the path is not under /v1. */
static int split_path(char *path, const char **segs, size_t max)
{
	if (strncmp(path, "/v1/", 4) && strcmp(path, "/v1"))
		return -1;
	size_t n = 0;
	char *save = NULL;
	for (char *s = strtok_r(path + 3, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
		if (n == max)
			return -2;
		segs[n++] = s;
	}
	return (int)n;
}

static const char *bearer(struct MHD_Connection *conn)
{
	const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
	if (!h || strncasecmp(h, "Bearer ", 7))
		return NULL;
	h += 7;
	while (*h == ' ')
		h++;
	return h;
}

static bool public_path(const char *url)
{
	return !strcmp(url, "/") || !strcmp(url, "/health") || !strcmp(url, "/v1/health") ||
	       !strcmp(url, "/index.html");
}

static bool serve_public(const char *url, const char *method, srv_reply *r)
{
	if (!public_path(url))
		return false;
	if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
		srv_reply_error(r, 405, "method_not_allowed", "%s %s is not allowed", method, url);
		return true;
	}
	if (!strcmp(url, "/health") || !strcmp(url, "/v1/health")) {
		json_object *j = json_object_new_object();
		json_object_object_add(j, "status", json_object_new_string("ok"));
		json_object_object_add(j, "version", json_object_new_string(BOXLITE_VERSION));
		srv_reply_json(r, 200, j);
		return true;
	}
	reply_static(r, srv_playground_html, (size_t)(srv_playground_end - srv_playground_html),
		     "text/html; charset=utf-8");
	/* Its own inline script and style, and this server's API: nothing else. */
	(void)MHD_add_response_header(r->raw, "Content-Security-Policy",
				      "default-src 'none'; script-src 'unsafe-inline'; style-src "
				      "'unsafe-inline'; connect-src 'self'; base-uri 'none'; "
				      "frame-ancestors 'none'");
	return true;
}

/* Authenticated routes outside /v1/sandboxes. */
static bool serve_misc(const char *url, const char *method, srv_reply *r)
{
	if (!strcmp(url, "/metrics") || !strcmp(url, "/v1/metrics")) {
		if (strcmp(method, "GET"))
			srv_reply_error(r, 405, "method_not_allowed", "%s %s is not allowed",
					method, url);
		else {
			char *t = srv_metrics_text();
			r->status = 200;
			r->raw =
			    MHD_create_response_from_buffer(strlen(t), t, MHD_RESPMEM_MUST_FREE);
			r->content_type = "text/plain; version=0.0.4";
		}
		return true;
	}
	if (!strcmp(url, "/openapi.yaml") || !strcmp(url, "/v1/openapi.yaml")) {
		reply_static(r, srv_openapi_yaml, (size_t)(srv_openapi_end - srv_openapi_yaml),
			     "application/yaml");
		return true;
	}
	return false;
}

/* ------------------------------------------------------------ bodies */

static bool is_upload(const char *url, const char *method)
{
	char path[1024];
	const char *segs[6];
	snprintf(path, sizeof(path), "%s", url);
	int n = split_path(path, segs, 6);
	return n > 0 && srv_api_is_upload(method, segs, (size_t)n);
}

static void take_body(req_ctx *c, const char *data, size_t len)
{
	if (c->too_big || c->upload_failed)
		return;
	size_t limit = c->upload ? srv->cfg.max_file : srv->cfg.max_body;
	if ((c->upload ? c->upload_len : c->len) + len > limit) {
		c->too_big = true;
		return;
	}
	if (c->upload) {
		if (c->fd < 0) {
			char tmpl[] = "/tmp/boxlite-serve-upload-XXXXXX";
			c->fd = mkostemp(tmpl, O_CLOEXEC);
			if (c->fd < 0) {
				c->upload_failed = true;
				return;
			}
			c->upload_path = bl_strdup(tmpl);
		}
		if (bl_write_full(c->fd, data, len) < 0)
			c->upload_failed = true;
		c->upload_len += len;
		return;
	}
	if (c->len + len + 1 > c->cap) {
		c->cap = (c->len + len + 1) * 2;
		if (c->cap > limit + 1)
			c->cap = limit + 1;
		c->body = realloc(c->body, c->cap);
	}
	memcpy(c->body + c->len, data, len);
	c->len += len;
	c->body[c->len] = '\0';
}

/* ------------------------------------------------------------ the handler */

static enum MHD_Result first_call(struct MHD_Connection *conn, const char *url, const char *method,
				  req_ctx *c)
{
	srv_reply r = {0};
	if (serve_public(url, method, &r))
		return c->responded = true, send_reply(conn, &r);
	c->tenant = srv_tenant_by_token(&srv->cfg, bearer(conn));
	if (!c->tenant) {
		srv_reply_error(&r, 401, "unauthorized",
				"a valid token is needed (Authorization: Bearer TOKEN)");
		return c->responded = true, send_reply(conn, &r);
	}
	if (serve_misc(url, method, &r))
		return c->responded = true, send_reply(conn, &r);
	c->upload = is_upload(url, method);
	const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
	size_t limit = c->upload ? srv->cfg.max_file : srv->cfg.max_body;
	if (cl && strtoull(cl, NULL, 10) > limit) {
		srv_reply_error(&r, 413, "payload_too_large", "the request body is over %zu bytes",
				limit);
		return c->responded = true, send_reply(conn, &r);
	}
	return MHD_YES;
}

static enum MHD_Result last_call(struct MHD_Connection *conn, const char *url, const char *method,
				 req_ctx *c)
{
	srv_reply r = {0};
	if (c->too_big) {
		srv_reply_error(&r, 413, "payload_too_large", "the request body is over %zu bytes",
				c->upload ? srv->cfg.max_file : srv->cfg.max_body);
		return send_reply(conn, &r);
	}
	if (c->upload_failed) {
		srv_reply_error(&r, 500, "BL_ESYSTEM", "could not spool the upload: %s",
				strerror(errno));
		return send_reply(conn, &r);
	}
	char path[1024];
	if (strlen(url) >= sizeof(path)) {
		srv_reply_error(&r, 414, "uri_too_long", "the path is too long");
		return send_reply(conn, &r);
	}
	snprintf(path, sizeof(path), "%s", url);
	srv_request q = {.conn = conn,
			 .method = method,
			 .tenant = c->tenant,
			 .body = c->body ? c->body : "",
			 .body_len = c->len,
			 .upload_path = c->upload_path,
			 .upload_len = c->upload_len};
	if (c->upload && !c->upload_path) {
		/* An empty upload: an empty file. */
		char tmpl[] = "/tmp/boxlite-serve-upload-XXXXXX";
		c->fd = mkostemp(tmpl, O_CLOEXEC);
		if (c->fd >= 0)
			c->upload_path = bl_strdup(tmpl);
		q.upload_path = c->upload_path;
	}
	int n = split_path(path, q.segs, BL_ARRAY_SIZE(q.segs));
	if (n < 0) {
		srv_reply_error(&r, 404, "not_found", "no such path: %s", url);
		return send_reply(conn, &r);
	}
	q.n_segs = (size_t)n;
	srv_api_dispatch(&q, &r);
	return send_reply(conn, &r);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	req_ctx *c = *con_cls;
	if (!c) {
		c = bl_malloc0(sizeof(*c));
		c->fd = -1;
		*con_cls = c;
		return first_call(conn, url, method, c);
	}
	if (c->responded) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size) {
		take_body(c, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	c->responded = true;
	return last_call(conn, url, method, c);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	req_ctx *c = *con_cls;
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	if (c->upload_path)
		unlink(c->upload_path);
	free(c->upload_path);
	free(c->body);
	free(c);
	*con_cls = NULL;
}

static void on_log(void *cls, const char *fmt, va_list ap)
{
	char buf[512];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	buf[strcspn(buf, "\n")] = '\0';
	bl_info("http: %s", buf);
}

/* ------------------------------------------------------------ the daemon */

static int parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len, bl_error_t *err)
{
	char host[256];
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s || (size_t)(colon - s) >= sizeof(host))
		return bl_set_error(err, BL_EINVAL, "--listen wants ADDR:PORT, not '%s'", s);
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	char *end;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (!colon[1] || *end || port > 65535)
		return bl_set_error(err, BL_EINVAL, "--listen: bad port in '%s'", s);
	memset(ss, 0, sizeof(*ss));
	char *h = host;
	if (h[0] == '[' && h[strlen(h) - 1] == ']') {
		h[strlen(h) - 1] = '\0';
		h++;
	}
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (!strcmp(h, "localhost"))
		h = "127.0.0.1";
	if (inet_pton(AF_INET, h, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		*len = sizeof(*in4);
	} else if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*in6);
	} else {
		return bl_set_error(err, BL_EINVAL, "--listen: '%s' is not an IP address", host);
	}
	return 0;
}

static char *tls_cert_pem, *tls_key_pem;

struct MHD_Daemon *srv_http_start(bl_error_t *err)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	if (parse_listen(srv->cfg.listen, &ss, &sl, err) < 0)
		return NULL;
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
			 MHD_USE_ITC | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (srv->cfg.tls_cert || srv->cfg.tls_key) {
		if (!srv->cfg.tls_cert || !srv->cfg.tls_key) {
			bl_set_error(err, BL_EINVAL, "TLS needs both a certificate and a key");
			return NULL;
		}
		size_t n;
		if (bl_read_file(srv->cfg.tls_cert, 1 << 20, &tls_cert_pem, &n, err) < 0 ||
		    bl_read_file(srv->cfg.tls_key, 1 << 20, &tls_key_pem, &n, err) < 0) {
			bl_error_prefix(err, "TLS");
			return NULL;
		}
		flags |= MHD_USE_TLS;
	}
	struct MHD_OptionItem tls_opts[] = {
	    {MHD_OPTION_HTTPS_MEM_CERT, 0, tls_cert_pem},
	    {MHD_OPTION_HTTPS_MEM_KEY, 0, tls_key_pem},
	    {MHD_OPTION_END, 0, NULL},
	};
	struct MHD_OptionItem no_opts[] = {{MHD_OPTION_END, 0, NULL}};
	struct MHD_Daemon *d = MHD_start_daemon(
	    flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER, on_log, NULL,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
	    NULL, MHD_OPTION_CONNECTION_TIMEOUT, srv->cfg.conn_timeout, MHD_OPTION_CONNECTION_LIMIT,
	    srv->cfg.max_connections, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 << 10),
	    MHD_OPTION_THREAD_STACK_SIZE, (size_t)(1 << 20), MHD_OPTION_ARRAY,
	    (flags & MHD_USE_TLS) ? tls_opts : no_opts, MHD_OPTION_END);
	if (!d) {
		bl_set_error(err, BL_ESYSTEM, "could not listen on %s (in use, or a bad TLS key?)",
			     srv->cfg.listen);
		return NULL;
	}
	return d;
}
