/*
 * What a registry says besides blobs (auth challenges, token and error
 * bodies) — all untrusted, bounded and validated — and where credentials and
 * per-registry settings come from.
 */
#include "registry.h"

#include "bl_cleanup.h"
#include "bl_util.h"
#include "image_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define AUTH_JSON_MAX (1 << 20)
#define TOKEN_MAX     (64 * 1024)
#define CRED_MAX      4096
#define CHALLENGE_MAX 8192

void bl_registry_sanitize(char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			*s = '?';
}

/* ------------------------------------------------------------ challenges */

static bool is_token_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       strchr("!#$%&'*+-.^_`|~", c);
}

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	return p;
}

/* Reads a token or a quoted string into out (NUL-terminated, bounded). */
static const char *read_value(const char *p, const char *end, char *out, size_t cap, bool *ok)
{
	size_t n = 0;
	*ok = false;
	if (p < end && *p == '"') {
		for (p++; p < end && *p != '"'; p++) {
			if (*p == '\\' && p + 1 < end)
				p++;
			if ((unsigned char)*p < 0x20 || n + 1 >= cap)
				return p;
			out[n++] = *p;
		}
		if (p >= end)
			return p;
		p++;
	} else {
		for (; p < end && is_token_char(*p); p++) {
			if (n + 1 >= cap)
				return p;
			out[n++] = *p;
		}
		if (n == 0)
			return p;
	}
	out[n] = '\0';
	*ok = true;
	return p;
}

int bl_registry_parse_challenge(const char *hdr, size_t len, bl_auth_challenge *ret,
				bl_error_t *err)
{
	bl_auth_challenge c = {0};
	if (len > CHALLENGE_MAX)
		return bl_set_error(err, BL_EPROTO, "WWW-Authenticate header too long");
	const char *p = hdr, *end = hdr + len;
	p = skip_ws(p, end);
	const char *s = p;
	while (p < end && is_token_char(*p))
		p++;
	size_t sn = (size_t)(p - s);
	if (sn == 6 && !strncasecmp(s, "Bearer", 6))
		c.scheme = BL_AUTH_BEARER;
	else if (sn == 5 && !strncasecmp(s, "Basic", 5))
		c.scheme = BL_AUTH_BASIC;
	else
		return bl_set_error(err, BL_EPROTO, "unsupported authentication scheme '%.*s'",
				    (int)(sn > 40 ? 40 : sn), s);
	while (p < end) {
		p = skip_ws(p, end);
		while (p < end && (*p == ',' || *p == ' ' || *p == '\t'))
			p++;
		if (p >= end)
			break;
		char key[32], val[1024];
		size_t kn = 0;
		while (p < end && is_token_char(*p)) {
			if (kn + 1 >= sizeof(key))
				return bl_set_error(err, BL_EPROTO, "WWW-Authenticate: long key");
			key[kn++] = *p++;
		}
		key[kn] = '\0';
		p = skip_ws(p, end);
		if (kn == 0 || p >= end || *p != '=')
			return bl_set_error(err, BL_EPROTO,
					    "WWW-Authenticate: malformed parameters");
		p = skip_ws(p + 1, end);
		bool ok;
		p = read_value(p, end, val, sizeof(val), &ok);
		if (!ok)
			return bl_set_error(err, BL_EPROTO, "WWW-Authenticate: malformed value");
		char *dst = !strcasecmp(key, "realm")	  ? c.realm
			    : !strcasecmp(key, "service") ? c.service
			    : !strcasecmp(key, "scope")	  ? c.scope
							  : NULL;
		size_t cap = dst == c.realm	? sizeof(c.realm)
			     : dst == c.service ? sizeof(c.service)
						: sizeof(c.scope);
		if (dst) {
			if (strlen(val) >= cap)
				return bl_set_error(err, BL_EPROTO,
						    "WWW-Authenticate: '%s' too long", key);
			strcpy(dst, val);
		}
		p = skip_ws(p, end);
		if (p < end && *p != ',')
			return bl_set_error(err, BL_EPROTO,
					    "WWW-Authenticate: malformed parameters");
	}
	if (c.scheme == BL_AUTH_BEARER) {
		if (strncmp(c.realm, "https://", 8) && strncmp(c.realm, "http://", 7))
			return bl_set_error(err, BL_EPROTO,
					    "Bearer challenge without an http(s) realm");
	}
	*ret = c;
	return 0;
}

/* ------------------------------------------------------------ JSON bodies */

int bl_registry_parse_token(const char *json, size_t len, char **ret_token, int *ret_expires_in,
			    bl_error_t *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	int r = bl_img_json_parse(json, len, AUTH_JSON_MAX, "token response", json_type_object, &o,
				  err);
	if (r < 0)
		return r;
	const char *tok = NULL;
	size_t n = 0;
	if ((r = bl_img_json_str(o, "token", false, TOKEN_MAX, "token response", &tok, &n, err)) <
		0 ||
	    (!tok && (r = bl_img_json_str(o, "access_token", false, TOKEN_MAX, "token response",
					  &tok, &n, err)) < 0))
		return r;
	if (!tok || n == 0)
		return bl_set_error(err, BL_EPROTO, "token response holds no token");
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)tok[i] <= 0x20 || (unsigned char)tok[i] >= 0x7f)
			return bl_set_error(err, BL_EPROTO, "token response: bad token characters");
	struct json_object *e = NULL;
	int expires = 0;
	if (json_object_object_get_ex(o, "expires_in", &e) &&
	    json_object_is_type(e, json_type_int)) {
		int64_t v = json_object_get_int64(e);
		expires = v < 0 ? 0 : v > 86400 ? 86400 : (int)v;
	}
	*ret_token = bl_strdup(tok);
	if (ret_expires_in)
		*ret_expires_in = expires;
	return 0;
}

static void copy_trunc(char *dst, size_t cap, const char *src)
{
	if (!cap)
		return;
	snprintf(dst, cap, "%s", src ? src : "");
	bl_registry_sanitize(dst);
}

int bl_registry_parse_errors(const char *json, size_t len, char *code, size_t code_len, char *msg,
			     size_t msg_len)
{
	copy_trunc(code, code_len, "");
	copy_trunc(msg, msg_len, "");
	_cleanup_json_ struct json_object *o = NULL;
	if (bl_img_json_parse(json, len, AUTH_JSON_MAX, "error body", json_type_object, &o, NULL) <
	    0)
		return -BL_EPROTO;
	struct json_object *errs = NULL;
	if (bl_img_json_array(o, "errors", true, 1024, "error body", &errs, NULL) < 0 ||
	    json_object_array_length(errs) < 1)
		return -BL_EPROTO;
	struct json_object *e = json_object_array_get_idx(errs, 0);
	if (!json_object_is_type(e, json_type_object))
		return -BL_EPROTO;
	const char *c = NULL, *m = NULL;
	if (bl_img_json_str(e, "code", false, 256, "error", &c, NULL, NULL) < 0 ||
	    bl_img_json_str(e, "message", false, 4096, "error", &m, NULL, NULL) < 0)
		return -BL_EPROTO;
	copy_trunc(code, code_len, c);
	copy_trunc(msg, msg_len, m);
	return 0;
}

/* ------------------------------------------------------------ base64 */

char *bl_base64_encode(const void *in, size_t n)
{
	char *out = bl_malloc0(4 * ((n + 2) / 3) + 1);
	(void)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
	return out;
}

char *bl_base64_decode(const char *in, size_t *ret_len)
{
	size_t n = strlen(in);
	if (n % 4 || n > CRED_MAX * 2)
		return NULL;
	unsigned char *out = bl_malloc0(n / 4 * 3 + 1);
	int got = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
	if (got < 0) {
		free(out);
		return NULL;
	}
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	for (size_t i = n; i > 0 && in[i - 1] == '='; i--)
		got--;
	out[got] = '\0';
	if (ret_len)
		*ret_len = (size_t)got;
	return (char *)out;
}

/* ------------------------------------------------------------ credentials */

static char *home_dir(void)
{
	const char *h = getenv("HOME");
	if (h && *h)
		return bl_strdup(h);
	struct passwd *pw = getpwuid(getuid());
	return bl_strdup(pw && pw->pw_dir ? pw->pw_dir : "/");
}

static char *boxlite_auth_path(void)
{
	const char *f = getenv("BOXLITE_AUTH_FILE");
	if (f && *f)
		return bl_strdup(f);
	const char *x = getenv("XDG_CONFIG_HOME");
	if (x && *x)
		return bl_asprintf("%s/boxlite/auth.json", x);
	_cleanup_free_ char *h = home_dir();
	return bl_asprintf("%s/.config/boxlite/auth.json", h);
}

static char *docker_config_path(void)
{
	const char *d = getenv("DOCKER_CONFIG");
	if (d && *d)
		return bl_asprintf("%s/config.json", d);
	_cleanup_free_ char *h = home_dir();
	return bl_asprintf("%s/.docker/config.json", h);
}

/* Loads an auths file; absent → 0 with *ret NULL. */
static int load_auths(const char *path, struct json_object **ret, bl_error_t *err)
{
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	bl_error_t e2 = BL_ERROR_INIT;
	*ret = NULL;
	if (bl_read_file(path, AUTH_JSON_MAX, &buf, &len, &e2) < 0)
		return e2.sys_errno == ENOENT ? 0 : bl_set_error(err, e2.code, "%s", e2.msg);
	int r = bl_img_json_parse(buf, len, AUTH_JSON_MAX, path, json_type_object, ret, err);
	return r;
}

/* The "auth" of host (or of a docker.io alias) in an auths document. */
static int auth_of(struct json_object *doc, const char *host, const char *path, char **ret_user,
		   char **ret_pass, bl_error_t *err)
{
	struct json_object *auths = NULL, *ent = NULL;
	if (!json_object_object_get_ex(doc, "auths", &auths) ||
	    !json_object_is_type(auths, json_type_object))
		return 0;
	static const char *const hub[] = {"docker.io", "https://index.docker.io/v1/",
					  "index.docker.io", "registry-1.docker.io"};
	bool is_hub = !strcmp(host, "docker.io");
	for (size_t i = 0; !ent && i < (is_hub ? BL_ARRAY_SIZE(hub) : 1); i++) {
		const char *k = is_hub ? hub[i] : host;
		if (!json_object_object_get_ex(auths, k, &ent))
			ent = NULL;
		if (!ent && !is_hub) {
			_cleanup_free_ char *u = bl_asprintf("https://%s", host);
			if (!json_object_object_get_ex(auths, u, &ent))
				ent = NULL;
		}
	}
	if (!ent || !json_object_is_type(ent, json_type_object))
		return 0;
	const char *a = NULL;
	int r = bl_img_json_str(ent, "auth", false, CRED_MAX, path, &a, NULL, err);
	if (r < 0 || !a || !*a)
		return r;
	size_t n = 0;
	_cleanup_free_ char *dec = bl_base64_decode(a, &n);
	char *colon = dec ? memchr(dec, ':', n) : NULL;
	if (!colon || strlen(dec) != n)
		return bl_set_error(err, BL_EPROTO, "%s: malformed auth for %s", path, host);
	*colon = '\0';
	*ret_user = bl_strdup(dec);
	*ret_pass = bl_strdup(colon + 1);
	return 0;
}

int bl_registry_creds(const char *host, char **ret_user, char **ret_pass, bl_error_t *err)
{
	*ret_user = *ret_pass = NULL;
	_cleanup_free_ char *p1 = boxlite_auth_path(), *p2 = docker_config_path();
	const char *paths[] = {p1, p2};
	for (size_t i = 0; i < BL_ARRAY_SIZE(paths); i++) {
		_cleanup_json_ struct json_object *doc = NULL;
		int r = load_auths(paths[i], &doc, err);
		if (r < 0)
			return r;
		if (doc && (r = auth_of(doc, host, paths[i], ret_user, ret_pass, err)) < 0)
			return r;
		if (*ret_user)
			return 0;
	}
	return 0;
}

int bl_registry_creds_store(const char *host, const char *user, const char *pass, bl_error_t *err)
{
	_cleanup_free_ char *path = boxlite_auth_path();
	_cleanup_json_ struct json_object *doc = NULL;
	int r = load_auths(path, &doc, err);
	if (r < 0)
		return r;
	if (!doc)
		doc = json_object_new_object();
	struct json_object *auths = NULL;
	if (!json_object_object_get_ex(doc, "auths", &auths) ||
	    !json_object_is_type(auths, json_type_object)) {
		auths = json_object_new_object();
		json_object_object_add(doc, "auths", auths);
	}
	if (user) {
		if (strchr(user, ':') || strlen(user) > 512 || strlen(pass) > 2048)
			return bl_set_error(err, BL_EINVAL, "bad user name or password");
		_cleanup_free_ char *plain = bl_asprintf("%s:%s", user, pass);
		_cleanup_free_ char *b64 = bl_base64_encode(plain, strlen(plain));
		struct json_object *ent = json_object_new_object();
		json_object_object_add(ent, "auth", json_object_new_string(b64));
		json_object_object_add(auths, host, ent);
	} else {
		json_object_object_del(auths, host);
	}
	_cleanup_free_ char *dir = bl_strdup(path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if ((r = bl_mkdir_p(dir, 0700, err)) < 0)
			return r;
	}
	const char *text = json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PRETTY);
	_cleanup_free_ char *tmp = bl_asprintf("%s.XXXXXX", path);
	_cleanup_close_ int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "create %s", tmp);
	if (fchmod(fd, 0600) < 0 || bl_write_full(fd, text, strlen(text)) < 0 ||
	    bl_write_full(fd, "\n", 1) < 0 || fsync(fd) < 0 || rename(tmp, path) < 0) {
		r = bl_set_error_errno(err, errno, "write %s", path);
		(void)unlink(tmp);
		return r;
	}
	return 0;
}

/* ------------------------------------------------------------ config file */

bool bl_registry_host_is_loopback(const char *host)
{
	char h[256];
	snprintf(h, sizeof(h), "%s", host);
	if (h[0] == '[') {
		char *close = strchr(h, ']');
		if (close)
			*close = '\0';
		return !strcmp(h + 1, "::1");
	}
	char *colon = strchr(h, ':');
	if (colon)
		*colon = '\0';
	if (!strcmp(h, "localhost"))
		return true;
	unsigned a, b, c, d;
	char extra;
	return sscanf(h, "%u.%u.%u.%u%c", &a, &b, &c, &d, &extra) == 4 && a == 127 && b < 256 &&
	       c < 256 && d < 256;
}

void bl_registry_conf_clear(bl_registry_conf *c)
{
	free(c->ca_file);
	for (size_t i = 0; c->mirrors[i]; i++)
		free(c->mirrors[i]);
	*c = (bl_registry_conf){0};
}

int bl_registry_conf_parse(const char *json, size_t len, const char *host, bl_registry_conf *ret,
			   bl_error_t *err)
{
	bl_registry_conf c = {0};
	_cleanup_json_ struct json_object *o = NULL;
	int r = bl_img_json_parse(json, len, AUTH_JSON_MAX, "registries config", json_type_object,
				  &o, err);
	if (r < 0)
		return r;
	struct json_object *store = NULL, *mb = NULL, *regs = NULL, *ent = NULL, *v = NULL;
	if (json_object_object_get_ex(o, "store", &store) &&
	    json_object_is_type(store, json_type_object) &&
	    json_object_object_get_ex(store, "max_bytes", &mb)) {
		if (!json_object_is_type(mb, json_type_int) || json_object_get_int64(mb) < 0)
			return bl_set_error(err, BL_EINVAL,
					    "registries config: store.max_bytes is not a number");
		c.store_max_bytes = (uint64_t)json_object_get_int64(mb);
	}
	if (host && json_object_object_get_ex(o, "registries", &regs) &&
	    json_object_is_type(regs, json_type_object) &&
	    json_object_object_get_ex(regs, host, &ent)) {
		if (!json_object_is_type(ent, json_type_object))
			return bl_set_error(err, BL_EINVAL,
					    "registries config: '%s' is not an object", host);
		if (json_object_object_get_ex(ent, "insecure", &v))
			c.insecure = json_object_get_boolean(v);
		const char *ca = NULL;
		if ((r = bl_img_json_str(ent, "ca", false, 4096, "registries config", &ca, NULL,
					 err)) < 0)
			return r;
		c.ca_file = ca ? bl_strdup(ca) : NULL;
		struct json_object *ms = NULL;
		if ((r = bl_img_json_array(ent, "mirrors", false, BL_REGISTRY_MIRRORS_MAX,
					   "registries config", &ms, err)) < 0) {
			bl_registry_conf_clear(&c);
			return r;
		}
		for (size_t i = 0; ms && i < json_object_array_length(ms); i++) {
			struct json_object *m = json_object_array_get_idx(ms, i);
			if (!json_object_is_type(m, json_type_string) ||
			    json_object_get_string_len(m) == 0 ||
			    json_object_get_string_len(m) > 255) {
				bl_registry_conf_clear(&c);
				return bl_set_error(err, BL_EINVAL,
						    "registries config: bad mirror");
			}
			c.mirrors[i] = bl_strdup(json_object_get_string(m));
		}
	}
	*ret = c;
	return 0;
}

int bl_registry_conf_load(const char *host, bl_registry_conf *ret, bl_error_t *err)
{
	const char *path = getenv("BOXLITE_REGISTRIES_CONF");
	if (!path || !*path)
		path = "/etc/boxlite/registries.json";
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	bl_error_t e2 = BL_ERROR_INIT;
	*ret = (bl_registry_conf){0};
	if (bl_read_file(path, AUTH_JSON_MAX, &buf, &len, &e2) < 0)
		return e2.sys_errno == ENOENT ? 0 : bl_set_error(err, e2.code, "%s", e2.msg);
	int r = bl_registry_conf_parse(buf, len, host, ret, err);
	return r < 0 ? BL_PREFIX(r, err, "%s", path) : 0;
}
