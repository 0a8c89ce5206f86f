/*
 * Parsers of untrusted image metadata: OCI indexes and manifests, docker
 * schema-2 manifests and manifest lists, image configs, docker-archive
 * manifest.json, and sha256 digests. Every document is size-bounded,
 * depth-limited and type-checked before anything is taken from it.
 */
#include "image_internal.h"

#include "bl_util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH	 32
#define INDEX_MAX_ITEMS	 1024
#define ENV_MAX_ITEMS	 4096
#define STRING_MAX_BYTES (64 * 1024)

void bl_json_object_putp(struct json_object **o)
{
	if (*o)
		json_object_put(*o);
}

void bl_image_limits_default(bl_image_limits *ret)
{
	*ret = (bl_image_limits){
	    .max_unpacked_bytes = 8ull << 30,
	    .max_entries = 1000000,
	    .max_blob_bytes = 4ull << 30,
	    .max_json_bytes = 4 << 20,
	    .max_layers = 128,
	};
}

bool bl_img_is_hex64(const char *s, size_t len)
{
	if (len != BL_SHA256_HEX_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* "sha256:<64 lowercase hex>" into out; other algorithms are refused. */
int bl_img_parse_digest(const char *s, size_t len, char out[BL_SHA256_HEX_LEN + 1], bl_error_t *err)
{
	if (len < 7 || memcmp(s, "sha256:", 7) != 0)
		return bl_set_error(err, BL_EPROTO, "unsupported digest '%.80s' (sha256 only)", s);
	if (!bl_img_is_hex64(s + 7, len - 7))
		return bl_set_error(err, BL_EPROTO, "malformed digest '%.80s'", s);
	memcpy(out, s + 7, BL_SHA256_HEX_LEN + 1);
	return 0;
}

int bl_image_name_valid(const char *name)
{
	if (!name || !*name || strlen(name) > BL_IMAGE_NAME_MAX)
		return 0;
	for (const char *p = name; *p; p++) {
		char c = *p;
		bool alnum =
		    (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (!alnum && (p == name || !strchr("._:-", c)))
			return 0;
	}
	return 1;
}

/* ------------------------------------------------------------------ JSON */

int bl_img_json_parse(const char *json, size_t len, size_t max, const char *what, json_type want,
		      struct json_object **ret, bl_error_t *err)
{
	if (len > max || len > INT_MAX)
		return bl_set_error(err, BL_EPROTO, "%s is larger than %zu bytes", what, max);
	json_tokener *tok = json_tokener_new_ex(JSON_MAX_DEPTH);
	if (!tok)
		abort();
	struct json_object *o = json_tokener_parse_ex(tok, json, (int)len);
	enum json_tokener_error je = json_tokener_get_error(tok);
	size_t end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!o || je != json_tokener_success) {
		json_object_put(o);
		return bl_set_error(err, BL_EPROTO, "%s is not valid JSON: %s", what,
				    je == json_tokener_continue ? "truncated"
								: json_tokener_error_desc(je));
	}
	for (; end < len; end++) {
		if (!strchr(" \t\r\n", json[end])) {
			json_object_put(o);
			return bl_set_error(err, BL_EPROTO, "%s: trailing bytes after JSON", what);
		}
	}
	if (!json_object_is_type(o, want)) {
		json_object_put(o);
		return bl_set_error(err, BL_EPROTO, "%s: unexpected JSON type", what);
	}
	*ret = o;
	return 0;
}

/* A string member: absent → *ret NULL (error if required); wrong type, embedded
 * NUL or longer than max → BL_EPROTO. */
int bl_img_json_str(struct json_object *obj, const char *key, bool required, size_t max,
		    const char *what, const char **ret, size_t *ret_len, bl_error_t *err)
{
	struct json_object *v = NULL;
	*ret = NULL;
	if (!json_object_object_get_ex(obj, key, &v) || !v) {
		if (required)
			return bl_set_error(err, BL_EPROTO, "%s: missing '%s'", what, key);
		return 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return bl_set_error(err, BL_EPROTO, "%s: '%s' is not a string", what, key);
	const char *s = json_object_get_string(v);
	size_t n = (size_t)json_object_get_string_len(v);
	if (n > max || strlen(s) != n)
		return bl_set_error(err, BL_EPROTO, "%s: bad '%s' string", what, key);
	*ret = s;
	if (ret_len)
		*ret_len = n;
	return 0;
}

int bl_img_json_array(struct json_object *obj, const char *key, bool required, size_t max,
		      const char *what, struct json_object **ret, bl_error_t *err)
{
	struct json_object *v = NULL;
	*ret = NULL;
	if (!json_object_object_get_ex(obj, key, &v) || !v) {
		if (required)
			return bl_set_error(err, BL_EPROTO, "%s: missing '%s'", what, key);
		return 0;
	}
	if (!json_object_is_type(v, json_type_array))
		return bl_set_error(err, BL_EPROTO, "%s: '%s' is not an array", what, key);
	if (json_object_array_length(v) > max)
		return bl_set_error(err, BL_EPROTO, "%s: '%s' has more than %zu items", what, key,
				    max);
	*ret = v;
	return 0;
}

void bl_image_desc_clear(bl_image_desc *d)
{
	free(d->media_type);
	*d = (bl_image_desc){0};
}

void bl_image_manifest_clear(bl_image_manifest *m)
{
	bl_image_desc_clear(&m->config);
	for (size_t i = 0; i < m->n_layers; i++)
		bl_image_desc_clear(&m->layers[i]);
	free(m->layers);
	*m = (bl_image_manifest){0};
}

static int copy_small(char *dst, size_t cap, const char *src, const char *what, bl_error_t *err)
{
	if (!src) {
		dst[0] = '\0';
		return 0;
	}
	if (strlen(src) >= cap)
		return bl_set_error(err, BL_EPROTO, "%s: platform field too long", what);
	memcpy(dst, src, strlen(src) + 1);
	return 0;
}

static int parse_desc(struct json_object *o, const char *what, bl_image_desc *ret, bl_error_t *err)
{
	if (!json_object_is_type(o, json_type_object))
		return bl_set_error(err, BL_EPROTO, "%s: descriptor is not an object", what);
	const char *mt, *dg;
	size_t dg_len;
	int r = bl_img_json_str(o, "mediaType", false, 256, what, &mt, NULL, err);
	if (r < 0)
		return r;
	r = bl_img_json_str(o, "digest", true, 256, what, &dg, &dg_len, err);
	if (r < 0)
		return r;
	bl_image_desc d = {0};
	r = bl_img_parse_digest(dg, dg_len, d.digest_hex, err);
	if (r < 0)
		return BL_PREFIX(r, err, "%s", what);
	struct json_object *sz = NULL;
	if (!json_object_object_get_ex(o, "size", &sz) || !json_object_is_type(sz, json_type_int))
		return bl_set_error(err, BL_EPROTO, "%s: missing or non-integer 'size'", what);
	errno = 0;
	int64_t size = json_object_get_int64(sz);
	if (size < 0 || errno)
		return bl_set_error(err, BL_EPROTO, "%s: bad 'size'", what);
	d.size = (uint64_t)size;
	struct json_object *pf = NULL;
	if (json_object_object_get_ex(o, "platform", &pf) && pf) {
		if (!json_object_is_type(pf, json_type_object))
			return bl_set_error(err, BL_EPROTO, "%s: 'platform' is not an object",
					    what);
		const char *os, *arch;
		if ((r = bl_img_json_str(pf, "os", false, 64, what, &os, NULL, err)) < 0 ||
		    (r = bl_img_json_str(pf, "architecture", false, 64, what, &arch, NULL, err)) <
			0 ||
		    (r = copy_small(d.os, sizeof(d.os), os, what, err)) < 0 ||
		    (r = copy_small(d.arch, sizeof(d.arch), arch, what, err)) < 0)
			return r;
	}
	d.media_type = mt ? bl_strdup(mt) : NULL;
	*ret = d;
	return 0;
}

const char *bl_img_host_arch(void)
{
#if defined(__x86_64__)
	return "amd64";
#elif defined(__aarch64__)
	return "arm64";
#elif defined(__riscv) && __riscv_xlen == 64
	return "riscv64";
#elif defined(__powerpc64__)
	return "ppc64le";
#elif defined(__s390x__)
	return "s390x";
#else
	return "unknown";
#endif
}

bool bl_img_media_is_index(const char *mt)
{
	return mt && (!strcmp(mt, "application/vnd.oci.image.index.v1+json") ||
		      !strcmp(mt, "application/vnd.docker.distribution.manifest.list.v2+json"));
}

bool bl_img_media_is_manifest(const char *mt)
{
	return !mt || !strcmp(mt, "application/vnd.oci.image.manifest.v1+json") ||
	       !strcmp(mt, "application/vnd.docker.distribution.manifest.v2+json");
}

int bl_image_parse_index(const char *json, size_t len, const bl_image_limits *limits,
			 bl_image_desc *ret, int *ret_is_index, bl_error_t *err)
{
	bl_image_limits def;
	if (!limits) {
		bl_image_limits_default(&def);
		limits = &def;
	}
	_cleanup_json_ struct json_object *o = NULL;
	int r = bl_img_json_parse(json, len, limits->max_json_bytes, "image index",
				  json_type_object, &o, err);
	if (r < 0)
		return r;
	struct json_object *ms;
	r = bl_img_json_array(o, "manifests", true, INDEX_MAX_ITEMS, "image index", &ms, err);
	if (r < 0)
		return r;
	size_t n = json_object_array_length(ms);
	ssize_t pick = -1, unplatformed = -1;
	size_t candidates = 0;
	_cleanup_free_ bl_image_desc *all = bl_malloc0(sizeof(*all) * (n ? n : 1));
	for (size_t i = 0; i < n; i++) {
		r = parse_desc(json_object_array_get_idx(ms, i), "image index", &all[i], err);
		if (r < 0)
			goto out;
		const char *mt = all[i].media_type;
		if (!bl_img_media_is_index(mt) && !bl_img_media_is_manifest(mt))
			continue; /* attestations, signatures, artifacts */
		if (!strcmp(all[i].os, "unknown"))
			continue;
		candidates++;
		if (pick < 0 && !strcmp(all[i].os, "linux") &&
		    !strcmp(all[i].arch, bl_img_host_arch()))
			pick = (ssize_t)i;
		if (unplatformed < 0 && !all[i].os[0] && !all[i].arch[0])
			unplatformed = (ssize_t)i;
	}
	if (pick < 0)
		pick = unplatformed;
	if (pick < 0) {
		r = bl_set_error(err, candidates ? BL_ENOTFOUND : BL_EPROTO,
				 candidates ? "image index has no manifest for linux/%s"
					    : "image index lists no image manifest (%s)",
				 bl_img_host_arch());
		goto out;
	}
	*ret_is_index = bl_img_media_is_index(all[pick].media_type);
	*ret = all[pick];
	all[pick] = (bl_image_desc){0};
	r = 0;
out:
	for (size_t i = 0; i < n; i++)
		bl_image_desc_clear(&all[i]);
	return r;
}

static bool layer_media_ok(const char *mt)
{
	static const char *const ok[] = {
	    "application/vnd.oci.image.layer.v1.tar",
	    "application/vnd.oci.image.layer.v1.tar+gzip",
	    "application/vnd.oci.image.layer.v1.tar+zstd",
	    "application/vnd.oci.image.layer.nondistributable.v1.tar",
	    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
	    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
	    "application/vnd.docker.image.rootfs.diff.tar.gzip",
	    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
	    "application/vnd.docker.image.rootfs.diff.tar",
	};
	if (!mt)
		return true;
	for (size_t i = 0; i < BL_ARRAY_SIZE(ok); i++)
		if (!strcmp(mt, ok[i]))
			return true;
	return false;
}

int bl_image_parse_manifest(const char *json, size_t len, const bl_image_limits *limits,
			    bl_image_manifest *ret, bl_error_t *err)
{
	bl_image_limits def;
	if (!limits) {
		bl_image_limits_default(&def);
		limits = &def;
	}
	_cleanup_json_ struct json_object *o = NULL;
	int r = bl_img_json_parse(json, len, limits->max_json_bytes, "image manifest",
				  json_type_object, &o, err);
	if (r < 0)
		return r;
	struct json_object *v = NULL;
	if (json_object_object_get_ex(o, "schemaVersion", &v) &&
	    (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) != 2))
		return bl_set_error(err, BL_EPROTO, "image manifest: schemaVersion is not 2");
	if (json_object_object_get_ex(o, "manifests", &v))
		return bl_set_error(err, BL_EPROTO, "image manifest is an index");
	struct json_object *cfg = NULL, *layers;
	if (!json_object_object_get_ex(o, "config", &cfg) || !cfg)
		return bl_set_error(err, BL_EPROTO, "image manifest: missing 'config'");
	r = bl_img_json_array(o, "layers", true, limits->max_layers, "image manifest", &layers,
			      err);
	if (r < 0)
		return r;
	bl_image_manifest m = {0};
	r = parse_desc(cfg, "image manifest config", &m.config, err);
	if (r < 0)
		return r;
	size_t n = json_object_array_length(layers);
	m.layers = bl_malloc0(sizeof(*m.layers) * (n ? n : 1));
	for (size_t i = 0; i < n; i++) {
		r = parse_desc(json_object_array_get_idx(layers, i), "image manifest layer",
			       &m.layers[i], err);
		if (r < 0)
			goto fail;
		m.n_layers++;
		if (!layer_media_ok(m.layers[i].media_type)) {
			r = bl_set_error(err, BL_EPROTO, "unsupported layer media type '%.100s'",
					 m.layers[i].media_type);
			goto fail;
		}
		if (m.layers[i].size > limits->max_blob_bytes) {
			r = bl_set_error(
			    err, BL_EPROTO, "layer sha256:%s is larger than %llu bytes",
			    m.layers[i].digest_hex, (unsigned long long)limits->max_blob_bytes);
			goto fail;
		}
	}
	*ret = m;
	return 0;
fail:
	bl_image_manifest_clear(&m);
	return r;
}

/* Copies an array of strings (or null) into out under key, type-checked. */
static int config_strv(struct json_object *cfg, const char *key, struct json_object *out,
		       bl_error_t *err)
{
	struct json_object *a;
	int r = bl_img_json_array(cfg, key, false, ENV_MAX_ITEMS, "image config", &a, err);
	if (r < 0 || !a)
		return r;
	struct json_object *copy = json_object_new_array();
	json_object_object_add(out, key, copy);
	for (size_t i = 0; i < json_object_array_length(a); i++) {
		struct json_object *s = json_object_array_get_idx(a, i);
		if (!json_object_is_type(s, json_type_string) ||
		    (size_t)json_object_get_string_len(s) > STRING_MAX_BYTES ||
		    strlen(json_object_get_string(s)) != (size_t)json_object_get_string_len(s))
			return bl_set_error(err, BL_EPROTO, "image config: bad string in '%s'",
					    key);
		json_object_array_add(copy,
				      json_object_new_string_len(json_object_get_string(s),
								 json_object_get_string_len(s)));
	}
	return 0;
}

static int config_diff_ids(struct json_object *o, char ***ret, bl_error_t *err)
{
	struct json_object *rootfs = NULL, *ids;
	*ret = NULL;
	if (!json_object_object_get_ex(o, "rootfs", &rootfs) || !rootfs)
		return 0;
	if (!json_object_is_type(rootfs, json_type_object))
		return bl_set_error(err, BL_EPROTO, "image config: 'rootfs' is not an object");
	int r = bl_img_json_array(rootfs, "diff_ids", false, 4096, "image config", &ids, err);
	if (r < 0 || !ids)
		return r;
	size_t n = json_object_array_length(ids);
	_cleanup_strv_ char **v = bl_malloc0(sizeof(char *) * (n + 1));
	for (size_t i = 0; i < n; i++) {
		struct json_object *s = json_object_array_get_idx(ids, i);
		char hex[BL_SHA256_HEX_LEN + 1];
		if (!json_object_is_type(s, json_type_string))
			return bl_set_error(err, BL_EPROTO, "image config: bad diff_id");
		r = bl_img_parse_digest(json_object_get_string(s),
					(size_t)json_object_get_string_len(s), hex, err);
		if (r < 0)
			return BL_PREFIX(r, err, "image config diff_ids");
		v[i] = bl_strdup(hex);
	}
	*ret = steal_pointer(&v);
	return 0;
}

int bl_image_parse_config(const char *json, size_t len, const bl_image_limits *limits,
			  char **ret_json, char ***ret_diff_ids, bl_error_t *err)
{
	bl_image_limits def;
	if (!limits) {
		bl_image_limits_default(&def);
		limits = &def;
	}
	_cleanup_json_ struct json_object *o = NULL;
	int r = bl_img_json_parse(json, len, limits->max_json_bytes, "image config",
				  json_type_object, &o, err);
	if (r < 0)
		return r;
	_cleanup_json_ struct json_object *out = json_object_new_object();
	struct json_object *cfg = NULL;
	if (json_object_object_get_ex(o, "config", &cfg) && cfg) {
		if (!json_object_is_type(cfg, json_type_object))
			return bl_set_error(err, BL_EPROTO,
					    "image config: 'config' is not an object");
		static const char *const strv_keys[] = {"Env", "Cmd", "Entrypoint"};
		static const char *const str_keys[] = {"WorkingDir", "User"};
		for (size_t i = 0; i < BL_ARRAY_SIZE(strv_keys); i++)
			if ((r = config_strv(cfg, strv_keys[i], out, err)) < 0)
				return r;
		for (size_t i = 0; i < BL_ARRAY_SIZE(str_keys); i++) {
			const char *s;
			size_t n;
			r = bl_img_json_str(cfg, str_keys[i], false, STRING_MAX_BYTES,
					    "image config", &s, &n, err);
			if (r < 0)
				return r;
			if (s)
				json_object_object_add(out, str_keys[i],
						       json_object_new_string_len(s, (int)n));
		}
	}
	_cleanup_strv_ char **ids = NULL;
	if (ret_diff_ids && (r = config_diff_ids(o, &ids, err)) < 0)
		return r;
	*ret_json = bl_strdup(json_object_to_json_string_ext(
	    out, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	if (ret_diff_ids)
		*ret_diff_ids = steal_pointer(&ids);
	return 0;
}

int bl_image_parse_docker_manifest(const char *json, size_t len, const bl_image_limits *limits,
				   char **ret_config, char ***ret_layers, bl_error_t *err)
{
	bl_image_limits def;
	if (!limits) {
		bl_image_limits_default(&def);
		limits = &def;
	}
	_cleanup_json_ struct json_object *o = NULL;
	int r = bl_img_json_parse(json, len, limits->max_json_bytes, "docker manifest.json",
				  json_type_array, &o, err);
	if (r < 0)
		return r;
	if (json_object_array_length(o) < 1)
		return bl_set_error(err, BL_EPROTO, "docker manifest.json lists no image");
	struct json_object *img = json_object_array_get_idx(o, 0), *layers;
	if (!json_object_is_type(img, json_type_object))
		return bl_set_error(err, BL_EPROTO, "docker manifest.json: entry is not an object");
	const char *cfg;
	char clean[BL_IMG_REL_PATH_MAX];
	r = bl_img_json_str(img, "Config", true, BL_IMG_REL_PATH_MAX - 1, "docker manifest.json",
			    &cfg, NULL, err);
	if (r < 0 || (r = bl_img_path_clean(cfg, clean, sizeof(clean), err)) < 0)
		return r;
	r = bl_img_json_array(img, "Layers", true, limits->max_layers, "docker manifest.json",
			      &layers, err);
	if (r < 0)
		return r;
	size_t n = json_object_array_length(layers);
	_cleanup_strv_ char **v = bl_malloc0(sizeof(char *) * (n + 1));
	for (size_t i = 0; i < n; i++) {
		struct json_object *s = json_object_array_get_idx(layers, i);
		if (!json_object_is_type(s, json_type_string) ||
		    strlen(json_object_get_string(s)) != (size_t)json_object_get_string_len(s))
			return bl_set_error(err, BL_EPROTO, "docker manifest.json: bad layer path");
		char lclean[BL_IMG_REL_PATH_MAX];
		r = bl_img_path_clean(json_object_get_string(s), lclean, sizeof(lclean), err);
		if (r < 0)
			return BL_PREFIX(r, err, "docker manifest.json layer");
		if (!lclean[0])
			return bl_set_error(err, BL_EPROTO,
					    "docker manifest.json: empty layer path");
		v[i] = bl_strdup(lclean);
	}
	if (!clean[0])
		return bl_set_error(err, BL_EPROTO, "docker manifest.json: empty Config path");
	*ret_config = bl_strdup(clean);
	*ret_layers = steal_pointer(&v);
	return 0;
}
