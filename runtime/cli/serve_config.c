/* `boxlite serve`'s config file: listen address, limits, tenants and quotas. */
#include "serve.h"
#include "bl_cleanup.h"
#include "bl_util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CONFIG_MAX (1 << 20)

static void defaults(srv_config *c)
{
	c->max_body = 1 << 20;
	c->max_file = 64 << 20;
	c->max_output = 16 << 20;
	c->conn_timeout = 60;
	c->exec_timeout = 600;
	c->max_sandboxes = 16;
	c->max_connections = 256;
	c->default_memory = 512;
}

static int get_uint(json_object *o, const char *key, uint64_t max, uint64_t *ret, bl_error_t *err)
{
	json_object *v;
	if (!json_object_object_get_ex(o, key, &v))
		return 0;
	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0 ||
	    (uint64_t)json_object_get_int64(v) > max)
		return bl_set_error(err, BL_EINVAL, "%s must be an integer from 0 to %llu", key,
				    (unsigned long long)max);
	*ret = (uint64_t)json_object_get_int64(v);
	return 1;
}

static int get_str(json_object *o, const char *key, char **ret, bl_error_t *err)
{
	json_object *v;
	if (!json_object_object_get_ex(o, key, &v))
		return 0;
	if (!json_object_is_type(v, json_type_string) || !*json_object_get_string(v))
		return bl_set_error(err, BL_EINVAL, "%s must be a non-empty string", key);
	free(*ret);
	*ret = bl_strdup(json_object_get_string(v));
	return 1;
}

static bool name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > SRV_NAME_MAX)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || *s == '-' || *s == '.'))
			return false;
	return true;
}

static bool token_ok(const char *s)
{
	if (strlen(s) < 8 || strlen(s) > 512)
		return false;
	for (; *s; s++)
		if (*s <= 0x20 || *s >= 0x7f)
			return false;
	return true;
}

static int load_limits(json_object *l, srv_config *c, bl_error_t *err)
{
	uint64_t v;
	int r;
	if ((r = get_uint(l, "max_body_bytes", 1 << 30, &v, err)) < 0)
		return r;
	if (r)
		c->max_body = v;
	if ((r = get_uint(l, "max_file_bytes", 1ULL << 32, &v, err)) < 0)
		return r;
	if (r)
		c->max_file = v;
	if ((r = get_uint(l, "max_output_bytes", 1 << 30, &v, err)) < 0)
		return r;
	if (r)
		c->max_output = v;
	if ((r = get_uint(l, "connection_timeout_seconds", 86400, &v, err)) < 0)
		return r;
	if (r)
		c->conn_timeout = (unsigned)v;
	if ((r = get_uint(l, "exec_timeout_seconds", 86400, &v, err)) < 0)
		return r;
	if (r)
		c->exec_timeout = (unsigned)v;
	if ((r = get_uint(l, "max_sandboxes", 4096, &v, err)) < 0)
		return r;
	if (r)
		c->max_sandboxes = (unsigned)v;
	if ((r = get_uint(l, "max_connections", 65536, &v, err)) < 0)
		return r;
	if (r)
		c->max_connections = (unsigned)v;
	if ((r = get_uint(l, "default_memory_mb", 65536, &v, err)) < 0)
		return r;
	if (r)
		c->default_memory = (unsigned)v;
	if ((r = get_uint(l, "sandbox_max_life_seconds", 1 << 30, &v, err)) < 0)
		return r;
	if (r)
		c->sandbox_max_life = (unsigned)v;
	return 0;
}

static int load_tenant(json_object *t, srv_tenant *ret, bl_error_t *err)
{
	json_object *v;
	if (!json_object_is_type(t, json_type_object))
		return bl_set_error(err, BL_EINVAL, "a tenant must be an object");
	if (!json_object_object_get_ex(t, "name", &v) ||
	    !json_object_is_type(v, json_type_string) || !name_ok(json_object_get_string(v)))
		return bl_set_error(err, BL_EINVAL,
				    "a tenant needs a name of 1-%d characters [A-Za-z0-9_.-]",
				    SRV_NAME_MAX);
	snprintf(ret->name, sizeof(ret->name), "%s", json_object_get_string(v));
	if (!json_object_object_get_ex(t, "token", &v) ||
	    !json_object_is_type(v, json_type_string) || !token_ok(json_object_get_string(v)))
		return bl_set_error(
		    err, BL_EINVAL,
		    "tenant %s: token must be 8-512 printable characters, no spaces", ret->name);
	ret->token = bl_strdup(json_object_get_string(v));
	ret->allow_pull = true;
	if (json_object_object_get_ex(t, "pull", &v))
		ret->allow_pull = json_object_get_boolean(v);
	json_object *q;
	if (!json_object_object_get_ex(t, "quota", &q))
		return 0;
	if (!json_object_is_type(q, json_type_object))
		return bl_set_error(err, BL_EINVAL, "tenant %s: quota must be an object",
				    ret->name);
	uint64_t x;
	int r;
	if ((r = get_uint(q, "sandboxes", 4096, &x, err)) < 0)
		return bl_error_prefix(err, "tenant %s", ret->name);
	if (r)
		ret->max_sandboxes = (unsigned)x;
	if ((r = get_uint(q, "memory_mb", 1 << 24, &x, err)) < 0)
		return bl_error_prefix(err, "tenant %s", ret->name);
	if (r)
		ret->max_memory_mib = (unsigned)x;
	if ((r = get_uint(q, "cpus", 4096, &x, err)) < 0)
		return bl_error_prefix(err, "tenant %s", ret->name);
	if (r)
		ret->max_cpus = (unsigned)x;
	return 0;
}

static int load_tenants(json_object *a, srv_config *c, bl_error_t *err)
{
	if (!json_object_is_type(a, json_type_array) || json_object_array_length(a) == 0 ||
	    json_object_array_length(a) > 10000)
		return bl_set_error(err, BL_EINVAL, "tenants must be a list of 1 to 10000 tenants");
	size_t n = json_object_array_length(a);
	c->tenants = bl_malloc0(n * sizeof(*c->tenants));
	for (size_t i = 0; i < n; i++) {
		int r = load_tenant(json_object_array_get_idx(a, i), &c->tenants[i], err);
		c->n_tenants = i + 1;
		if (r < 0)
			return r;
		for (size_t k = 0; k < i; k++) {
			if (!strcmp(c->tenants[k].name, c->tenants[i].name))
				return bl_set_error(err, BL_EINVAL, "tenant %s is named twice",
						    c->tenants[i].name);
			if (!strcmp(c->tenants[k].token, c->tenants[i].token))
				return bl_set_error(err, BL_EINVAL,
						    "tenants %s and %s have the same token",
						    c->tenants[k].name, c->tenants[i].name);
		}
	}
	return 0;
}

static int load_file(const char *path, srv_config *c, bl_error_t *err)
{
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	int r = bl_read_file(path, CONFIG_MAX, &buf, &len, err);
	if (r < 0)
		return r;
	struct stat st;
	if (stat(path, &st) == 0 && (st.st_mode & 022))
		return bl_set_error(err, BL_EINVAL,
				    "%s is writable by others: it holds the tenants' tokens", path);
	_cleanup_(json_object_putp) json_object *root = srv_parse_body(buf, len, err);
	if (!root)
		return -BL_EINVAL;
	json_object *v;
	if ((r = get_str(root, "listen", &c->listen, err)) < 0 ||
	    (r = get_str(root, "state_dir", &c->state_dir, err)) < 0 ||
	    (r = get_str(root, "serve_dir", &c->serve_dir, err)) < 0 ||
	    (r = get_str(root, "image_store", &c->image_store, err)) < 0)
		return r;
	if (json_object_object_get_ex(root, "tls", &v)) {
		if ((r = get_str(v, "cert", &c->tls_cert, err)) < 0 ||
		    (r = get_str(v, "key", &c->tls_key, err)) < 0)
			return bl_error_prefix(err, "tls");
	}
	if (json_object_object_get_ex(root, "limits", &v)) {
		if (!json_object_is_type(v, json_type_object))
			return bl_set_error(err, BL_EINVAL, "limits must be an object");
		if ((r = load_limits(v, c, err)) < 0)
			return bl_error_prefix(err, "limits");
	}
	if (!json_object_object_get_ex(root, "tenants", &v))
		return bl_set_error(err, BL_EINVAL, "no tenants (a list of {name, token, quota})");
	return load_tenants(v, c, err);
}

int srv_config_load(const char *path, srv_config *c, bl_error_t *err)
{
	defaults(c);
	if (!path)
		return 0;
	int r = load_file(path, c, err);
	return r < 0 ? bl_error_prefix(err, "config %s", path) : 0;
}

void srv_config_clear(srv_config *c)
{
	for (size_t i = 0; i < c->n_tenants; i++)
		free(c->tenants[i].token);
	free(c->tenants);
	free(c->listen);
	free(c->tls_cert);
	free(c->tls_key);
	free(c->state_dir);
	free(c->serve_dir);
	free(c->image_store);
	memset(c, 0, sizeof(*c));
}

/* Every token is compared in full (no early exit on the first mismatch). */
static bool token_eq(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char d = la != lb;
	for (size_t i = 0; i < lb; i++)
		d |= (unsigned char)(a[i < la ? i : 0] ^ b[i]);
	return d == 0;
}

const srv_tenant *srv_tenant_by_token(const srv_config *c, const char *token)
{
	const srv_tenant *found = NULL;
	if (!token || !*token)
		return NULL;
	for (size_t i = 0; i < c->n_tenants; i++)
		if (token_eq(token, c->tenants[i].token))
			found = &c->tenants[i];
	return found;
}
