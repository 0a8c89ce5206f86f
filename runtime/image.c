/*
 * Image resolution and unpacking. Every byte of an image is untrusted: JSON is
 * size-bounded and type-checked, blobs are verified against their sha256,
 * layers are extracted by libarchive with its SECURE_* checks from a thread
 * whose working directory (unshared from the process) is the new rootfs, and
 * whiteouts are applied only through openat2(RESOLVE_IN_ROOT).
 *
 * Decisions: device nodes and sockets in layers are skipped (the guest gets a
 * devtmpfs); setuid/setgid bits are dropped from files, since the store sits
 * on the host and the sandbox runs with no_new_privileges anyway; xattrs,
 * ACLs and file flags are not restored; owners are restored only when running
 * as root.
 */
#include "image.h"

#include "bl_cleanup.h"
#include "bl_util.h"
#include "sha256.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PATH_MAX_DEPTH	 256
#define REL_PATH_MAX	 4096
#define JSON_MAX_DEPTH	 32
#define INDEX_MAX_ITEMS	 1024
#define ENV_MAX_ITEMS	 4096
#define STRING_MAX_BYTES (64 * 1024)
#define READ_BLOCK	 (64 * 1024)

static atomic_ulong unpack_count;

static void json_object_putp(struct json_object **o)
{
	if (*o)
		json_object_put(*o);
}
#define _cleanup_json_ _cleanup_(json_object_putp)

BL_DEFINE_CLEANUP(struct archive, archive_read_free)
BL_DEFINE_CLEANUP(struct archive, archive_write_free)
BL_DEFINE_CLEANUP(struct archive_entry, archive_entry_free)

static void unlockp(int *fd)
{
	if (*fd >= 0) {
		(void)flock(*fd, LOCK_UN);
		(void)close(*fd);
	}
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

unsigned long bl_image_unpack_count(void)
{
	return atomic_load(&unpack_count);
}

/* ------------------------------------------------------------------ helpers */

/* bl_error_prefix that keeps the code r even when err is NULL. */
#define PREFIX(r, err, ...) ((err) ? bl_error_prefix((err), __VA_ARGS__) : (r))

static int open_in_root(int root_fd, const char *path, int flags, uint64_t resolve)
{
	struct open_how how = {
	    .flags = (uint64_t)(flags | O_CLOEXEC),
	    .resolve = resolve | RESOLVE_NO_MAGICLINKS,
	};
	int fd;
	do
		fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof(how));
	while (fd < 0 && errno == EINTR);
	return fd;
}

static bool is_hex64(const char *s, size_t len)
{
	if (len != BL_SHA256_HEX_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* "sha256:<64 lowercase hex>" into out; other algorithms are refused. */
static int parse_digest(const char *s, size_t len, char out[BL_SHA256_HEX_LEN + 1], bl_error_t *err)
{
	if (len < 7 || memcmp(s, "sha256:", 7) != 0)
		return bl_set_error(err, BL_EPROTO, "unsupported digest '%.80s' (sha256 only)", s);
	if (!is_hex64(s + 7, len - 7))
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

/* Normalizes a relative archive path: drops "." and empty components; refuses
 * absolute paths, "..", over-long and over-deep paths. "" is the root. */
static int path_clean(const char *in, char *out, size_t len, bl_error_t *err)
{
	if (!in)
		return bl_set_error(err, BL_EPROTO, "entry without a path");
	if (in[0] == '/')
		return bl_set_error(err, BL_EPROTO, "absolute path '%.200s'", in);
	size_t o = 0;
	int depth = 0;
	for (const char *p = in; *p;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		const char *e = strchrnul(p, '/');
		size_t n = (size_t)(e - p);
		if (n == 1 && p[0] == '.') {
			p = e;
			continue;
		}
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return bl_set_error(err, BL_EPROTO, "'..' in path '%.200s'", in);
		if (++depth > PATH_MAX_DEPTH || o + 1 + n + 1 > len)
			return bl_set_error(err, BL_EPROTO, "path too long or deep '%.200s'", in);
		if (o)
			out[o++] = '/';
		memcpy(out + o, p, n);
		o += n;
		p = e;
	}
	out[o] = '\0';
	return 0;
}

/* Removes name under dir_fd (a tree or a file) without following symlinks. */
static int rm_tree_at(int dir_fd, const char *name, int depth)
{
	if (unlinkat(dir_fd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	if (depth > PATH_MAX_DEPTH + 8)
		return -ELOOP;
	int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	_cleanup_closedir_ DIR *d = fdopendir(fd);
	if (!d) {
		int e = errno;
		close(fd);
		return -e;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		int r = rm_tree_at(dirfd(d), de->d_name, depth + 1);
		if (r < 0)
			return r;
	}
	if (unlinkat(dir_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

/* ------------------------------------------------------------------ JSON */

static int json_parse(const char *json, size_t len, size_t max, const char *what, json_type want,
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
static int json_str(struct json_object *obj, const char *key, bool required, size_t max,
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

static int json_array(struct json_object *obj, const char *key, bool required, size_t max,
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
	int r = json_str(o, "mediaType", false, 256, what, &mt, NULL, err);
	if (r < 0)
		return r;
	r = json_str(o, "digest", true, 256, what, &dg, &dg_len, err);
	if (r < 0)
		return r;
	bl_image_desc d = {0};
	r = parse_digest(dg, dg_len, d.digest_hex, err);
	if (r < 0)
		return PREFIX(r, err, "%s", what);
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
		if ((r = json_str(pf, "os", false, 64, what, &os, NULL, err)) < 0 ||
		    (r = json_str(pf, "architecture", false, 64, what, &arch, NULL, err)) < 0 ||
		    (r = copy_small(d.os, sizeof(d.os), os, what, err)) < 0 ||
		    (r = copy_small(d.arch, sizeof(d.arch), arch, what, err)) < 0)
			return r;
	}
	d.media_type = mt ? bl_strdup(mt) : NULL;
	*ret = d;
	return 0;
}

static const char *host_arch(void)
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

static bool media_is_index(const char *mt)
{
	return mt && (!strcmp(mt, "application/vnd.oci.image.index.v1+json") ||
		      !strcmp(mt, "application/vnd.docker.distribution.manifest.list.v2+json"));
}

static bool media_is_manifest(const char *mt)
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
	int r =
	    json_parse(json, len, limits->max_json_bytes, "image index", json_type_object, &o, err);
	if (r < 0)
		return r;
	struct json_object *ms;
	r = json_array(o, "manifests", true, INDEX_MAX_ITEMS, "image index", &ms, err);
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
		if (!media_is_index(mt) && !media_is_manifest(mt))
			continue; /* attestations, signatures, artifacts */
		if (!strcmp(all[i].os, "unknown"))
			continue;
		candidates++;
		if (pick < 0 && !strcmp(all[i].os, "linux") && !strcmp(all[i].arch, host_arch()))
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
				 host_arch());
		goto out;
	}
	*ret_is_index = media_is_index(all[pick].media_type);
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
	int r = json_parse(json, len, limits->max_json_bytes, "image manifest", json_type_object,
			   &o, err);
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
	r = json_array(o, "layers", true, limits->max_layers, "image manifest", &layers, err);
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
	int r = json_array(cfg, key, false, ENV_MAX_ITEMS, "image config", &a, err);
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
	int r = json_array(rootfs, "diff_ids", false, 4096, "image config", &ids, err);
	if (r < 0 || !ids)
		return r;
	size_t n = json_object_array_length(ids);
	_cleanup_strv_ char **v = bl_malloc0(sizeof(char *) * (n + 1));
	for (size_t i = 0; i < n; i++) {
		struct json_object *s = json_object_array_get_idx(ids, i);
		char hex[BL_SHA256_HEX_LEN + 1];
		if (!json_object_is_type(s, json_type_string))
			return bl_set_error(err, BL_EPROTO, "image config: bad diff_id");
		r = parse_digest(json_object_get_string(s), (size_t)json_object_get_string_len(s),
				 hex, err);
		if (r < 0)
			return PREFIX(r, err, "image config diff_ids");
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
	int r = json_parse(json, len, limits->max_json_bytes, "image config", json_type_object, &o,
			   err);
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
			r = json_str(cfg, str_keys[i], false, STRING_MAX_BYTES, "image config", &s,
				     &n, err);
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
	int r = json_parse(json, len, limits->max_json_bytes, "docker manifest.json",
			   json_type_array, &o, err);
	if (r < 0)
		return r;
	if (json_object_array_length(o) < 1)
		return bl_set_error(err, BL_EPROTO, "docker manifest.json lists no image");
	struct json_object *img = json_object_array_get_idx(o, 0), *layers;
	if (!json_object_is_type(img, json_type_object))
		return bl_set_error(err, BL_EPROTO, "docker manifest.json: entry is not an object");
	const char *cfg;
	char clean[REL_PATH_MAX];
	r = json_str(img, "Config", true, REL_PATH_MAX - 1, "docker manifest.json", &cfg, NULL,
		     err);
	if (r < 0 || (r = path_clean(cfg, clean, sizeof(clean), err)) < 0)
		return r;
	r = json_array(img, "Layers", true, limits->max_layers, "docker manifest.json", &layers,
		       err);
	if (r < 0)
		return r;
	size_t n = json_object_array_length(layers);
	_cleanup_strv_ char **v = bl_malloc0(sizeof(char *) * (n + 1));
	for (size_t i = 0; i < n; i++) {
		struct json_object *s = json_object_array_get_idx(layers, i);
		if (!json_object_is_type(s, json_type_string) ||
		    strlen(json_object_get_string(s)) != (size_t)json_object_get_string_len(s))
			return bl_set_error(err, BL_EPROTO, "docker manifest.json: bad layer path");
		char lclean[REL_PATH_MAX];
		r = path_clean(json_object_get_string(s), lclean, sizeof(lclean), err);
		if (r < 0)
			return PREFIX(r, err, "docker manifest.json layer");
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

/* ------------------------------------------------------------------ blobs */

/* Reads a small file of the source dir (bounded; never escapes it). */
static int read_src_file(int src_fd, const char *path, size_t max, char **ret, size_t *ret_len,
			 bl_error_t *err)
{
	_cleanup_close_ int fd = open_in_root(src_fd, path, O_RDONLY | O_NOCTTY, RESOLVE_IN_ROOT);
	if (fd < 0) {
		if (errno == ENOENT)
			return bl_set_error(err, BL_ENOTFOUND, "%s is missing", path);
		return bl_set_error_errno(err, errno, "open %s", path);
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		return bl_set_error_errno(err, errno, "stat %s", path);
	if (!S_ISREG(st.st_mode))
		return bl_set_error(err, BL_EPROTO, "%s is not a regular file", path);
	_cleanup_free_ char *buf = bl_malloc0(max + 2);
	ssize_t n = bl_read_full(fd, buf, max + 1);
	if (n < 0)
		return bl_set_error_errno(err, errno, "read %s", path);
	if ((size_t)n > max)
		return bl_set_error(err, BL_EPROTO, "%s is larger than %zu bytes", path, max);
	*ret_len = (size_t)n;
	*ret = steal_pointer(&buf);
	return 0;
}

/* A JSON blob of an OCI layout, verified against its descriptor. */
static int read_blob(int src_fd, const bl_image_desc *d, size_t max, char **ret, size_t *ret_len,
		     bl_error_t *err)
{
	if (d->size > max)
		return bl_set_error(err, BL_EPROTO, "blob sha256:%s is larger than %zu bytes",
				    d->digest_hex, max);
	char path[96], got[BL_SHA256_HEX_LEN + 1];
	snprintf(path, sizeof(path), "blobs/sha256/%s", d->digest_hex);
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int r = read_src_file(src_fd, path, max, &buf, &len, err);
	if (r < 0)
		return r;
	bl_sha256_hex(buf, len, got);
	if (len != d->size || strcmp(got, d->digest_hex) != 0)
		return bl_set_error(err, BL_EPROTO, "blob sha256:%s: digest or size mismatch",
				    d->digest_hex);
	*ret_len = len;
	*ret = steal_pointer(&buf);
	return 0;
}

/* ------------------------------------------------------------------ extraction */

typedef struct layer_src {
	char *path;				/* relative to the source dir */
	char expect_hex[BL_SHA256_HEX_LEN + 1]; /* "" = not verifiable */
	uint64_t expect_size;			/* UINT64_MAX = unknown */
	bool only_if_plain; /* expect_hex is a diff_id: check uncompressed only */
} layer_src;

typedef struct unpack_job {
	int src_fd;  /* directory the layer paths are relative to */
	int root_fd; /* the new rootfs */
	const layer_src *layers;
	size_t n_layers;
	const char *tar_path;  /* or: one tarball, extracted raw (no whiteouts) */
	const char *disk_path; /* or: a directory tree, copied raw */
	const bl_image_limits *lim;
	uint64_t bytes, entries;
	bool whiteouts;
	/* Paths the current layer created, for opaque directories. */
	char **set;
	size_t n_set, cap_set;
	bool set_sorted;
	int ret;
	bl_error_t *err;
} unpack_job;

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void set_reset(unpack_job *j)
{
	for (size_t i = 0; i < j->n_set; i++)
		free(j->set[i]);
	j->n_set = 0;
	j->set_sorted = true;
}

static void set_add(unpack_job *j, const char *path)
{
	if (j->n_set == j->cap_set) {
		j->cap_set = j->cap_set ? j->cap_set * 2 : 256;
		j->set = realloc(j->set, sizeof(char *) * j->cap_set);
		if (!j->set)
			abort();
	}
	j->set[j->n_set++] = bl_strdup(path);
	j->set_sorted = false;
}

/* True when path or something below it was created by the current layer. */
static bool set_covers(unpack_job *j, const char *path)
{
	if (!j->set_sorted) {
		qsort(j->set, j->n_set, sizeof(char *), cmp_str);
		j->set_sorted = true;
	}
	if (bsearch(&path, j->set, j->n_set, sizeof(char *), cmp_str))
		return true;
	size_t plen = strlen(path);
	_cleanup_free_ char *prefix = bl_asprintf("%s/", path);
	size_t lo = 0, hi = j->n_set;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(j->set[mid], prefix) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < j->n_set && !strncmp(j->set[lo], prefix, plen + 1);
}

static int open_dir_in_root(unpack_job *j, const char *rel)
{
	if (!rel[0])
		return fcntl(j->root_fd, F_DUPFD_CLOEXEC, 3);
	return open_in_root(j->root_fd, rel, O_RDONLY | O_DIRECTORY, RESOLVE_IN_ROOT);
}

/* Removes, below dir (rel), what lower layers put there and this layer did not. */
static int opaque_prune(unpack_job *j, int dir_fd, const char *rel, int depth)
{
	if (depth > PATH_MAX_DEPTH)
		return bl_set_error(j->err, BL_EPROTO, "opaque directory too deep");
	int fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return bl_set_error_errno(j->err, errno, "dup");
	_cleanup_closedir_ DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return bl_set_error_errno(j->err, errno, "opendir %s", rel);
	}
	_cleanup_strv_ char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n + 2 > cap) {
			cap = cap ? cap * 2 : 32;
			char **nv = realloc(names, sizeof(char *) * cap);
			if (!nv)
				abort();
			names = nv;
		}
		names[n++] = bl_strdup(de->d_name);
		names[n] = NULL;
	}
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *child =
		    rel[0] ? bl_asprintf("%s/%s", rel, names[i]) : bl_strdup(names[i]);
		if (!set_covers(j, child)) {
			int r = rm_tree_at(dir_fd, names[i], 0);
			if (r < 0)
				return bl_set_error_errno(j->err, -r, "opaque: remove %s", child);
			continue;
		}
		_cleanup_close_ int cfd =
		    openat(dir_fd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (cfd < 0)
			continue; /* not a directory: nothing below it */
		int r = opaque_prune(j, cfd, child, depth + 1);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Applies a whiteout entry found at clean path `path` (base starts ".wh."). */
static int apply_whiteout(unpack_job *j, const char *path)
{
	char parent[REL_PATH_MAX];
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	size_t plen = slash ? (size_t)(slash - path) : 0;
	memcpy(parent, path, plen);
	parent[plen] = '\0';
	_cleanup_close_ int dfd = open_dir_in_root(j, parent);
	if (dfd < 0 && errno != ENOENT && errno != ENOTDIR)
		return bl_set_error_errno(j->err, errno, "whiteout %s", path);
	if (!strcmp(base, ".wh..wh..opq"))
		return dfd < 0 ? 0 : opaque_prune(j, dfd, parent, 0);
	const char *name = base + 4;
	if (!name[0] || !strcmp(name, ".") || !strcmp(name, "..") || !strncmp(name, ".wh.", 4))
		return bl_set_error(j->err, BL_EPROTO, "bad whiteout '%.200s'", path);
	if (dfd < 0)
		return 0;
	int r = rm_tree_at(dfd, name, 0);
	if (r < 0)
		return bl_set_error_errno(j->err, -r, "whiteout %s", path);
	return 0;
}

/* A hardlink target must already exist inside the rootfs, reached without any
 * symlink, and not be a directory. */
static int check_hardlink(unpack_job *j, const char *target)
{
	_cleanup_close_ int fd = open_in_root(j->root_fd, target, O_PATH | O_NOFOLLOW,
					      RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);
	if (fd < 0)
		return bl_set_error(j->err, BL_EPROTO, "hardlink target '%.200s' %s", target,
				    errno == ENOENT ? "does not exist" : "escapes the rootfs");
	struct stat st;
	if (fstat(fd, &st) < 0 || S_ISDIR(st.st_mode))
		return bl_set_error(j->err, BL_EPROTO, "hardlink to directory '%.200s'", target);
	return 0;
}

/* Makes room for an entry: its parent must be reached without symlinks (an
 * explicit error, as libarchive's SECURE_SYMLINKS would give), and whatever a
 * lower layer left at the path is removed unless both are directories. */
static int prepare_target(unpack_job *j, const char *path, bool is_dir)
{
	const char *slash = strrchr(path, '/');
	char parent[REL_PATH_MAX];
	size_t plen = slash ? (size_t)(slash - path) : 0;
	memcpy(parent, path, plen);
	parent[plen] = '\0';
	_cleanup_close_ int dfd = -1;
	if (plen)
		dfd = open_in_root(j->root_fd, parent, O_RDONLY | O_DIRECTORY,
				   RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);
	else
		dfd = fcntl(j->root_fd, F_DUPFD_CLOEXEC, 3);
	if (dfd < 0) {
		if (errno == ENOENT)
			return 0; /* libarchive creates the missing parents */
		if (errno == ELOOP || errno == EXDEV)
			return bl_set_error(j->err, BL_EPROTO, "'%.200s' goes through a symlink",
					    path);
		if (errno == ENOTDIR)
			return bl_set_error(j->err, BL_EPROTO,
					    "parent of '%.200s' is not a directory", path);
		return bl_set_error_errno(j->err, errno, "open parent of %s", path);
	}
	const char *base = slash ? slash + 1 : path;
	struct stat st;
	if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	int r = 0;
	if (S_ISDIR(st.st_mode) && !is_dir)
		r = rm_tree_at(dfd, base, 0);
	else if (!S_ISDIR(st.st_mode) && unlinkat(dfd, base, 0) < 0)
		r = -errno;
	if (r < 0)
		return bl_set_error_errno(j->err, -r, "replace %s", path);
	return 0;
}

static int archive_fail(unpack_job *j, struct archive *a, const char *what, const char *path)
{
	int e = archive_errno(a);
	const char *msg = archive_error_string(a);
	bl_code code =
	    (e == ENOSPC || e == EDQUOT || e == EIO || e == EROFS || e == ENOMEM || e == EMFILE)
		? BL_ESYSTEM
		: BL_EPROTO;
	return bl_set_error(j->err, code, "%s '%.200s': %s", what, path ? path : "",
			    msg ? msg : "libarchive error");
}

static int extract_flags(void)
{
	/* No ARCHIVE_EXTRACT_UNLINK: it would replace a symlinked parent by a
	 * directory; prepare_target() unlinks the final component instead. */
	int f = ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
		ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;
	if (geteuid() == 0)
		f |= ARCHIVE_EXTRACT_OWNER;
	return f;
}

static int copy_data(unpack_job *j, struct archive *in, struct archive *out, const char *path)
{
	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		int r = archive_read_data_block(in, &buf, &len, &off);
		if (r == ARCHIVE_EOF)
			return 0;
		if (r < ARCHIVE_WARN)
			return archive_fail(j, in, "read", path);
		if (archive_write_data_block(out, buf, len, off) < ARCHIVE_WARN)
			return archive_fail(j, out, "write", path);
	}
}

static int handle_entry(unpack_job *j, struct archive *in, struct archive *out,
			struct archive_entry *e, const char *raw_path)
{
	char path[REL_PATH_MAX], target[REL_PATH_MAX];
	if (++j->entries > j->lim->max_entries)
		return bl_set_error(j->err, BL_EPROTO, "image has more than %llu entries",
				    (unsigned long long)j->lim->max_entries);
	int r = path_clean(raw_path, path, sizeof(path), j->err);
	if (r < 0)
		return r;
	mode_t type = archive_entry_filetype(e);
	if (!path[0] || type == AE_IFCHR || type == AE_IFBLK || type == AE_IFSOCK)
		return 0; /* the root itself, or a device the guest's devtmpfs provides */
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	if (j->whiteouts && !strncmp(base, ".wh.", 4))
		return apply_whiteout(j, path);
	const char *link = archive_entry_hardlink(e);
	if (link) {
		if ((r = path_clean(link, target, sizeof(target), j->err)) < 0)
			return PREFIX(r, j->err, "hardlink '%.200s'", path);
		if ((r = check_hardlink(j, target)) < 0)
			return r;
		archive_entry_set_hardlink(e, target);
	} else if (type == AE_IFREG) {
		la_int64_t size = archive_entry_size(e);
		if (size < 0 || (uint64_t)size > j->lim->max_unpacked_bytes - j->bytes)
			return bl_set_error(j->err, BL_EPROTO,
					    "image unpacks to more than %llu bytes",
					    (unsigned long long)j->lim->max_unpacked_bytes);
		j->bytes += (uint64_t)size;
	} else if (type != AE_IFDIR && type != AE_IFLNK && type != AE_IFIFO) {
		return bl_set_error(j->err, BL_EPROTO, "unsupported entry type for '%.200s'", path);
	}
	if (type != AE_IFDIR)
		archive_entry_set_perm(e, archive_entry_perm(e) & ~(mode_t)(S_ISUID | S_ISGID));
	archive_entry_set_pathname(e, path);
	if (j->whiteouts)
		set_add(j, path);
	if ((r = prepare_target(j, path, type == AE_IFDIR && !link)) < 0)
		return r;
	if (archive_write_header(out, e) < ARCHIVE_WARN)
		return archive_fail(j, out, "extract", path);
	if (!link && type == AE_IFREG && archive_entry_size(e) > 0 &&
	    (r = copy_data(j, in, out, path)) < 0)
		return r;
	if (archive_write_finish_entry(out) < ARCHIVE_WARN)
		return archive_fail(j, out, "extract", path);
	return 0;
}

static int extract_stream(unpack_job *j, struct archive *in, const char *what)
{
	_cleanup_(archive_write_freep) struct archive *out = archive_write_disk_new();
	if (!out)
		abort();
	archive_write_disk_set_options(out, extract_flags());
	for (;;) {
		struct archive_entry *e;
		int r = archive_read_next_header(in, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN)
			return archive_fail(j, in, "read", what);
		const char *p = archive_entry_pathname(e);
		if (!p)
			p = archive_entry_pathname_utf8(e);
		r = handle_entry(j, in, out, e, p);
		if (r < 0)
			return r;
	}
	if (archive_write_close(out) < ARCHIVE_WARN)
		return archive_fail(j, out, "finish", what);
	return 0;
}

typedef struct hashing_reader {
	int fd;
	bl_sha256 sha;
	uint64_t n, max;
	char buf[READ_BLOCK];
} hashing_reader;

static la_ssize_t hashing_read(struct archive *a, void *p, const void **buf)
{
	hashing_reader *h = p;
	ssize_t n;
	do
		n = read(h->fd, h->buf, sizeof(h->buf));
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		archive_set_error(a, errno, "read layer");
		return -1;
	}
	h->n += (uint64_t)n;
	if (h->n > h->max) {
		archive_set_error(a, EFBIG, "layer blob larger than %llu bytes",
				  (unsigned long long)h->max);
		return -1;
	}
	bl_sha256_update(&h->sha, h->buf, (size_t)n);
	*buf = h->buf;
	return n;
}

/* Hashes what the archive reader left unread (padding, trailing bytes). */
static int hashing_drain(hashing_reader *h)
{
	for (;;) {
		ssize_t n = read(h->fd, h->buf, sizeof(h->buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		h->n += (uint64_t)n;
		if (h->n > h->max)
			return -EFBIG;
		bl_sha256_update(&h->sha, h->buf, (size_t)n);
	}
}

static struct archive *tar_reader(void)
{
	struct archive *a = archive_read_new();
	if (!a)
		abort();
	/* No filter_all: it includes filters that run external programs. */
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_bzip2(a);
	archive_read_support_filter_xz(a);
	archive_read_support_filter_zstd(a);
	archive_read_support_format_tar(a);
	return a;
}

static int extract_layer(unpack_job *j, const layer_src *l)
{
	_cleanup_free_ hashing_reader *h = bl_malloc0(sizeof(*h));
	_cleanup_close_ int fd =
	    open_in_root(j->src_fd, l->path, O_RDONLY | O_NOCTTY, RESOLVE_IN_ROOT);
	if (fd < 0)
		return errno == ENOENT
			   ? bl_set_error(j->err, BL_ENOTFOUND, "layer %s is missing", l->path)
			   : bl_set_error_errno(j->err, errno, "open layer %s", l->path);
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return bl_set_error(j->err, BL_EPROTO, "layer %s is not a regular file", l->path);
	h->fd = fd;
	h->max = j->lim->max_blob_bytes;
	bl_sha256_init(&h->sha);
	_cleanup_(archive_read_freep) struct archive *in = tar_reader();
	if (archive_read_open(in, h, NULL, hashing_read, NULL) != ARCHIVE_OK)
		return archive_fail(j, in, "open layer", l->path);
	set_reset(j);
	int r = extract_stream(j, in, l->path);
	if (r < 0)
		return r;
	bool plain = archive_filter_code(in, 0) == ARCHIVE_FILTER_NONE;
	if ((r = hashing_drain(h)) < 0)
		return bl_set_error_errno(j->err, -r, "read layer %s", l->path);
	char got[BL_SHA256_HEX_LEN + 1];
	bl_sha256_final_hex(&h->sha, got);
	if (l->expect_hex[0] && (plain || !l->only_if_plain) && strcmp(got, l->expect_hex) != 0)
		return bl_set_error(j->err, BL_EPROTO,
				    "layer %s: digest mismatch (expected sha256:%s, got sha256:%s)",
				    l->path, l->expect_hex, got);
	if (l->expect_size != UINT64_MAX && h->n != l->expect_size)
		return bl_set_error(j->err, BL_EPROTO, "layer %s: size %llu, descriptor says %llu",
				    l->path, (unsigned long long)h->n,
				    (unsigned long long)l->expect_size);
	return 0;
}

static int extract_tarball(unpack_job *j)
{
	_cleanup_(archive_read_freep) struct archive *in = tar_reader();
	if (archive_read_open_filename(in, j->tar_path, READ_BLOCK) != ARCHIVE_OK)
		return archive_fail(j, in, "open", j->tar_path);
	return extract_stream(j, in, j->tar_path);
}

/* Copies a host directory tree (an image given as a plain rootfs dir). */
static int copy_tree(unpack_job *j)
{
	_cleanup_(archive_read_freep) struct archive *in = archive_read_disk_new();
	_cleanup_(archive_write_freep) struct archive *out = archive_write_disk_new();
	_cleanup_(archive_entry_freep) struct archive_entry *e = archive_entry_new();
	if (!in || !out || !e)
		abort();
	archive_read_disk_set_symlink_physical(in);
	archive_read_disk_set_behavior(in, ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS |
					       ARCHIVE_READDISK_NO_XATTR | ARCHIVE_READDISK_NO_ACL |
					       ARCHIVE_READDISK_NO_FFLAGS);
	archive_write_disk_set_options(out, extract_flags());
	if (archive_read_disk_open(in, j->disk_path) != ARCHIVE_OK)
		return archive_fail(j, in, "open", j->disk_path);
	size_t plen = strlen(j->disk_path);
	for (;;) {
		int r = archive_read_next_header2(in, e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN)
			return archive_fail(j, in, "read", j->disk_path);
		(void)archive_read_disk_descend(in);
		const char *p = archive_entry_pathname(e);
		if (!p || strncmp(p, j->disk_path, plen) != 0 || (p[plen] && p[plen] != '/'))
			return bl_set_error(j->err, BL_EPROTO, "unexpected path in copy");
		_cleanup_free_ char *rel = bl_strdup(p[plen] ? p + plen + 1 : "");
		if ((r = handle_entry(j, in, out, e, rel)) < 0)
			return r;
	}
	if (archive_write_close(out) < ARCHIVE_WARN)
		return archive_fail(j, out, "finish", j->disk_path);
	return 0;
}

/* Runs in its own thread with its own cwd (CLONE_FS unshared) set to the new
 * rootfs, so libarchive's relative paths and SECURE_* checks are anchored
 * there without touching the process's cwd. */
static void *unpack_thread(void *p)
{
	unpack_job *j = p;
	if (unshare(CLONE_FS) < 0) {
		j->ret = bl_set_error_errno(j->err, errno, "unshare(CLONE_FS)");
		return NULL;
	}
	if (fchdir(j->root_fd) < 0) {
		j->ret = bl_set_error_errno(j->err, errno, "fchdir rootfs");
		return NULL;
	}
	umask(022);
	if (j->tar_path)
		j->ret = extract_tarball(j);
	else if (j->disk_path)
		j->ret = copy_tree(j);
	else
		for (size_t i = 0; i < j->n_layers && j->ret == 0; i++)
			j->ret = extract_layer(j, &j->layers[i]);
	return NULL;
}

static int run_unpack(unpack_job *j)
{
	pthread_t t;
	j->ret = 0;
	int e = pthread_create(&t, NULL, unpack_thread, j);
	if (e)
		return bl_set_error_errno(j->err, e, "pthread_create");
	pthread_join(t, NULL);
	set_reset(j);
	free(j->set);
	j->set = NULL;
	j->cap_set = 0;
	return j->ret;
}

/* ------------------------------------------------------------------ store */

char *bl_image_store_path(const char *store_dir)
{
	if (store_dir && *store_dir)
		return bl_strdup(store_dir);
	const char *envs[] = {"BOXLITE_IMAGE_DIR", "BOXLITE_IMAGE_STORE"};
	for (size_t i = 0; i < BL_ARRAY_SIZE(envs); i++) {
		const char *v = getenv(envs[i]);
		if (v && *v)
			return bl_strdup(v);
	}
	return bl_strdup(BL_IMAGE_DEFAULT_STORE);
}

/* Creates the store skeleton if needed; *ret is its absolute path. */
static int store_open(const char *store_dir, char **ret, bl_error_t *err)
{
	_cleanup_free_ char *dir = bl_image_store_path(store_dir);
	int r = bl_mkdir_p(dir, 0700, err);
	if (r < 0)
		return PREFIX(r, err, "image store");
	static const char *const subs[] = {"images", "names", "locks", "tmp"};
	for (size_t i = 0; i < BL_ARRAY_SIZE(subs); i++) {
		_cleanup_free_ char *p = bl_asprintf("%s/%s", dir, subs[i]);
		if (mkdir(p, 0700) < 0 && errno != EEXIST)
			return bl_set_error_errno(err, errno, "image store: mkdir %s", p);
	}
	char *abs = realpath(dir, NULL);
	if (!abs)
		return bl_set_error_errno(err, errno, "image store: realpath %s", dir);
	*ret = abs;
	return 0;
}

static int lock_file(const char *path, int *ret_fd, bl_error_t *err)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "open lock %s", path);
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			int e = errno;
			close(fd);
			return bl_set_error_errno(err, e, "flock %s", path);
		}
	}
	*ret_fd = fd;
	return 0;
}

static bool image_present(const char *store, const char *key)
{
	_cleanup_free_ char *p = bl_asprintf("%s/images/%s/rootfs", store, key);
	struct stat st;
	return lstat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The rootfs path and stored config of an image present in the store. */
static int image_result(const char *store, const char *key, char **ret_rootfs, char **ret_config,
			bl_error_t *err)
{
	_cleanup_free_ char *cfg_path = bl_asprintf("%s/images/%s/config.json", store, key);
	_cleanup_free_ char *cfg = NULL;
	if (ret_config) {
		bl_error_t e2 = BL_ERROR_INIT;
		int r = bl_read_file(cfg_path, 4 << 20, &cfg, NULL, &e2);
		if (r < 0 && e2.sys_errno != ENOENT) {
			if (err)
				*err = e2;
			return PREFIX(r, err, "image %s", key);
		}
	}
	*ret_rootfs = bl_asprintf("%s/images/%s/rootfs", store, key);
	if (ret_config)
		*ret_config = steal_pointer(&cfg);
	return 0;
}

/* Removes leftovers of unpacks of key that died half-way (key lock held). */
static void remove_stale_tmp(const char *store, const char *key)
{
	_cleanup_free_ char *tmp = bl_asprintf("%s/tmp", store);
	_cleanup_closedir_ DIR *d = opendir(tmp);
	struct dirent *de;
	size_t klen = strlen(key);
	while (d && (de = readdir(d))) {
		if (!strncmp(de->d_name, key, klen) && de->d_name[klen] == '.')
			(void)rm_tree_at(dirfd(d), de->d_name, 0);
	}
}

typedef struct image_plan {
	char key[BL_SHA256_HEX_LEN + 1];
	char *config_json; /* normalized; NULL: none */
	layer_src *layers;
	size_t n_layers;
	const char *copy_dir; /* plain dir import: copy this tree */
	char *source;	      /* informational */
} image_plan;

static void plan_clear(image_plan *p)
{
	free(p->config_json);
	for (size_t i = 0; i < p->n_layers; i++)
		free(p->layers[i].path);
	free(p->layers);
	free(p->source);
	*p = (image_plan){0};
}

/* Fills tmp (a fresh staging dir) with the image: rootfs, config, source. */
static int stage_image(const char *tmp, int src_fd, image_plan *p, const bl_image_limits *lim,
		       bl_error_t *err)
{
	_cleanup_free_ char *rootfs = bl_asprintf("%s/rootfs", tmp);
	_cleanup_free_ char *cfg = bl_asprintf("%s/config.json", tmp);
	_cleanup_free_ char *src = bl_asprintf("%s/source", tmp);
	_cleanup_free_ char *line = bl_asprintf("%s\n", p->source ? p->source : "");
	_cleanup_close_ int root_fd = -1;
	if (mkdir(rootfs, 0755) < 0 ||
	    (root_fd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return bl_set_error_errno(err, errno, "create %s", rootfs);
	unpack_job j = {
	    .src_fd = src_fd,
	    .root_fd = root_fd,
	    .layers = p->layers,
	    .n_layers = p->n_layers,
	    .disk_path = p->copy_dir,
	    .lim = lim,
	    .whiteouts = !p->copy_dir,
	    .err = err,
	};
	int r = run_unpack(&j);
	if (r < 0)
		return r;
	if (p->config_json &&
	    (r = bl_write_file(cfg, p->config_json, strlen(p->config_json), 0644, err)) < 0)
		return r;
	if ((r = bl_write_file(src, line, strlen(line), 0644, err)) < 0)
		return r;
	(void)fchmod(root_fd, 0755);
	/* The rename below publishes the image: its data must be on disk first. */
	if (syncfs(root_fd) < 0)
		return bl_set_error_errno(err, errno, "syncfs %s", rootfs);
	return 0;
}

/* Unpacks the plan into tmp, then renames it into images/<key>. The key lock
 * is taken here; an image already present is left alone. */
static int store_install(const char *store, int src_fd, image_plan *p, const bl_image_limits *lim,
			 bl_error_t *err)
{
	_cleanup_free_ char *lock_path = bl_asprintf("%s/locks/%s.lock", store, p->key);
	_cleanup_(unlockp) int lock = -1;
	int r = lock_file(lock_path, &lock, err);
	if (r < 0 || image_present(store, p->key))
		return r;
	remove_stale_tmp(store, p->key);
	_cleanup_free_ char *tmp = bl_asprintf("%s/tmp/%s.XXXXXX", store, p->key);
	_cleanup_free_ char *final = bl_asprintf("%s/images/%s", store, p->key);
	if (!mkdtemp(tmp))
		return bl_set_error_errno(err, errno, "mkdtemp in %s/tmp", store);
	r = stage_image(tmp, src_fd, p, lim, err);
	if (r == 0 && rename(tmp, final) < 0)
		r = bl_set_error_errno(err, errno, "rename %s to %s", tmp, final);
	if (r < 0) {
		(void)bl_rm_rf(tmp, NULL);
		return r;
	}
	atomic_fetch_add(&unpack_count, 1);
	return 0;
}

/* ------------------------------------------------------------------ sources */

/* The manifest descriptor an OCI layout points at (nested indexes followed). */
static int oci_manifest_desc(int src_fd, const bl_image_limits *lim, bl_image_desc *ret,
			     bl_error_t *err)
{
	_cleanup_free_ char *buf = NULL;
	size_t len;
	bl_error_t e2 = BL_ERROR_INIT; /* oci-layout is optional: its absence is no error */
	int r = read_src_file(src_fd, "oci-layout", 4096, &buf, &len, &e2);
	if (r == 0) {
		_cleanup_json_ struct json_object *o = NULL;
		const char *v;
		if ((r = json_parse(buf, len, 4096, "oci-layout", json_type_object, &o, err)) < 0 ||
		    (r = json_str(o, "imageLayoutVersion", true, 64, "oci-layout", &v, NULL, err)) <
			0)
			return r;
	} else if (r != -BL_ENOTFOUND) {
		if (err)
			*err = e2;
		return r;
	}
	free(steal_pointer(&buf));
	if ((r = read_src_file(src_fd, "index.json", lim->max_json_bytes, &buf, &len, err)) < 0)
		return r == -BL_ENOTFOUND ? bl_set_error(err, BL_EPROTO, "index.json is missing")
					  : r;
	int is_index = 0;
	bl_image_desc d = {0};
	if ((r = bl_image_parse_index(buf, len, lim, &d, &is_index, err)) < 0)
		return r;
	for (int depth = 0; is_index; depth++) {
		_cleanup_free_ char *ibuf = NULL;
		size_t ilen;
		if (depth >= 4) {
			bl_image_desc_clear(&d);
			return bl_set_error(err, BL_EPROTO, "image indexes nested too deep");
		}
		r = read_blob(src_fd, &d, lim->max_json_bytes, &ibuf, &ilen, err);
		bl_image_desc_clear(&d);
		if (r < 0 || (r = bl_image_parse_index(ibuf, ilen, lim, &d, &is_index, err)) < 0)
			return r;
	}
	*ret = d;
	return 0;
}

static int oci_plan(int src_fd, const bl_image_desc *md, const bl_image_limits *lim, image_plan *p,
		    bl_error_t *err)
{
	_cleanup_free_ char *mbuf = NULL, *cbuf = NULL;
	size_t mlen, clen;
	bl_image_manifest m = {0};
	int r = read_blob(src_fd, md, lim->max_json_bytes, &mbuf, &mlen, err);
	if (r < 0 || (r = bl_image_parse_manifest(mbuf, mlen, lim, &m, err)) < 0)
		return r;
	if ((r = read_blob(src_fd, &m.config, lim->max_json_bytes, &cbuf, &clen, err)) < 0 ||
	    (r = bl_image_parse_config(cbuf, clen, lim, &p->config_json, NULL, err)) < 0)
		goto out;
	p->layers = bl_malloc0(sizeof(*p->layers) * (m.n_layers ? m.n_layers : 1));
	for (size_t i = 0; i < m.n_layers; i++, p->n_layers++) {
		layer_src *l = &p->layers[i];
		l->path = bl_asprintf("blobs/sha256/%s", m.layers[i].digest_hex);
		memcpy(l->expect_hex, m.layers[i].digest_hex, sizeof(l->expect_hex));
		l->expect_size = m.layers[i].size;
	}
out:
	bl_image_manifest_clear(&m);
	return r;
}

static const char *digest_from_name(const char *path, char out[BL_SHA256_HEX_LEN + 1])
{
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	size_t n = strlen(base);
	if (n == BL_SHA256_HEX_LEN + 5 && !strcmp(base + BL_SHA256_HEX_LEN, ".json"))
		n = BL_SHA256_HEX_LEN;
	if (!is_hex64(base, n))
		return NULL;
	memcpy(out, base, BL_SHA256_HEX_LEN);
	out[BL_SHA256_HEX_LEN] = '\0';
	return out;
}

static int docker_key(int src_fd, const bl_image_limits *lim, char key[BL_SHA256_HEX_LEN + 1],
		      char **ret_buf, size_t *ret_len, bl_error_t *err)
{
	int r = read_src_file(src_fd, "manifest.json", lim->max_json_bytes, ret_buf, ret_len, err);
	if (r < 0)
		return r;
	bl_sha256 s;
	bl_sha256_init(&s);
	bl_sha256_update(&s, "docker-archive:", 15);
	bl_sha256_update(&s, *ret_buf, *ret_len);
	bl_sha256_final_hex(&s, key);
	return 0;
}

/* docker-archive: the config must be named by its digest; layers are checked
 * against their blob name or, when uncompressed, the config's diff_ids. */
static int docker_plan(int src_fd, const char *mbuf, size_t mlen, const bl_image_limits *lim,
		       image_plan *p, bl_error_t *err)
{
	_cleanup_free_ char *cfg_path = NULL, *cbuf = NULL;
	_cleanup_strv_ char **layers = NULL, **diff_ids = NULL;
	size_t clen;
	char want[BL_SHA256_HEX_LEN + 1], got[BL_SHA256_HEX_LEN + 1];
	int r = bl_image_parse_docker_manifest(mbuf, mlen, lim, &cfg_path, &layers, err);
	if (r < 0)
		return r;
	if (!digest_from_name(cfg_path, want))
		return bl_set_error(err, BL_EPROTO, "docker config %s is not named by its digest",
				    cfg_path);
	if ((r = read_src_file(src_fd, cfg_path, lim->max_json_bytes, &cbuf, &clen, err)) < 0)
		return r;
	bl_sha256_hex(cbuf, clen, got);
	if (strcmp(got, want) != 0)
		return bl_set_error(err, BL_EPROTO, "docker config %s: digest mismatch", cfg_path);
	if ((r = bl_image_parse_config(cbuf, clen, lim, &p->config_json, &diff_ids, err)) < 0)
		return r;
	size_t n = 0, nd = 0;
	while (layers[n])
		n++;
	while (diff_ids && diff_ids[nd])
		nd++;
	if (diff_ids && nd != n)
		return bl_set_error(err, BL_EPROTO, "docker image: %zu layers but %zu diff_ids", n,
				    nd);
	p->layers = bl_malloc0(sizeof(*p->layers) * (n ? n : 1));
	for (size_t i = 0; i < n; i++, p->n_layers++) {
		layer_src *l = &p->layers[i];
		l->path = bl_strdup(layers[i]);
		l->expect_size = UINT64_MAX;
		if (!strncmp(layers[i], "blobs/sha256/", 13) && digest_from_name(layers[i], want)) {
			memcpy(l->expect_hex, want, sizeof(want));
		} else if (diff_ids) {
			memcpy(l->expect_hex, diff_ids[i], sizeof(l->expect_hex));
			l->only_if_plain = true;
		}
	}
	return 0;
}

typedef enum src_kind { SRC_PLAIN, SRC_OCI, SRC_DOCKER } src_kind;

static src_kind dir_kind(int dir_fd)
{
	struct stat st;
	if (fstatat(dir_fd, "index.json", &st, AT_SYMLINK_NOFOLLOW) == 0 ||
	    fstatat(dir_fd, "oci-layout", &st, AT_SYMLINK_NOFOLLOW) == 0)
		return SRC_OCI;
	if (fstatat(dir_fd, "manifest.json", &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    fstatat(dir_fd, "bin", &st, AT_SYMLINK_NOFOLLOW) < 0 &&
	    fstatat(dir_fd, "usr", &st, AT_SYMLINK_NOFOLLOW) < 0)
		return SRC_DOCKER;
	return SRC_PLAIN;
}

/* An OCI layout or docker-archive directory: key, then unpack on a miss. */
static int resolve_image_dir(int dir_fd, src_kind kind, const char *ref, const char *store,
			     const bl_image_limits *lim, char ret_key[BL_SHA256_HEX_LEN + 1],
			     bl_error_t *err)
{
	image_plan p = {0};
	bl_image_desc md = {0};
	_cleanup_free_ char *mbuf = NULL;
	size_t mlen = 0;
	int r;
	if (kind == SRC_OCI) {
		if ((r = oci_manifest_desc(dir_fd, lim, &md, err)) < 0)
			goto out;
		memcpy(p.key, md.digest_hex, sizeof(p.key));
	} else if ((r = docker_key(dir_fd, lim, p.key, &mbuf, &mlen, err)) < 0) {
		goto out;
	}
	memcpy(ret_key, p.key, sizeof(p.key));
	if (image_present(store, p.key))
		goto out;
	r = kind == SRC_OCI ? oci_plan(dir_fd, &md, lim, &p, err)
			    : docker_plan(dir_fd, mbuf, mlen, lim, &p, err);
	if (r < 0)
		goto out;
	p.source = bl_asprintf("%s %s", kind == SRC_OCI ? "oci-layout" : "docker-archive", ref);
	r = store_install(store, dir_fd, &p, lim, err);
out:
	bl_image_desc_clear(&md);
	plan_clear(&p);
	return r;
}

/* Reads index.json and manifest.json of a tarball without unpacking it, to
 * find the key early; 0 with key "" when only a full unpack can tell. */
static int tarball_peek_key(const char *path, const bl_image_limits *lim,
			    char key[BL_SHA256_HEX_LEN + 1], bl_error_t *err)
{
	_cleanup_(archive_read_freep) struct archive *a = tar_reader();
	_cleanup_free_ char *index = NULL, *manifest = NULL;
	size_t ilen = 0, mlen = 0;
	key[0] = '\0';
	if (archive_read_open_filename(a, path, READ_BLOCK) != ARCHIVE_OK)
		return bl_set_error(err, BL_EPROTO, "%s: %s", path, archive_error_string(a));
	for (uint64_t n = 0;; n++) {
		struct archive_entry *e;
		int r = archive_read_next_header(a, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN || n > lim->max_entries)
			return bl_set_error(err, BL_EPROTO, "%s: %s", path,
					    r < ARCHIVE_WARN ? archive_error_string(a)
							     : "too many entries");
		char clean[REL_PATH_MAX];
		const char *p = archive_entry_pathname(e);
		if (!p || path_clean(p, clean, sizeof(clean), NULL) < 0)
			continue; /* reported by the full unpack */
		char **slot = !strcmp(clean, "index.json")	? &index
			      : !strcmp(clean, "manifest.json") ? &manifest
								: NULL;
		if (!slot || archive_entry_filetype(e) != AE_IFREG)
			continue;
		if (*slot)
			return bl_set_error(err, BL_EPROTO, "%s: duplicate %s", path, clean);
		la_int64_t size = archive_entry_size(e);
		if (size < 0 || (uint64_t)size > lim->max_json_bytes)
			return bl_set_error(err, BL_EPROTO, "%s: %s is larger than %zu bytes", path,
					    clean, lim->max_json_bytes);
		*slot = bl_malloc0((size_t)size + 1);
		la_ssize_t got = archive_read_data(a, *slot, (size_t)size);
		if (got != size)
			return bl_set_error(err, BL_EPROTO, "%s: short read of %s", path, clean);
		*(slot == &index ? &ilen : &mlen) = (size_t)size;
	}
	if (index) {
		bl_image_desc d = {0};
		int is_index = 0;
		int r = bl_image_parse_index(index, ilen, lim, &d, &is_index, err);
		if (r < 0)
			return PREFIX(r, err, "%s", path);
		if (!is_index)
			memcpy(key, d.digest_hex, BL_SHA256_HEX_LEN + 1);
		bl_image_desc_clear(&d);
		return 0;
	}
	if (manifest) {
		bl_sha256 s;
		bl_sha256_init(&s);
		bl_sha256_update(&s, "docker-archive:", 15);
		bl_sha256_update(&s, manifest, mlen);
		bl_sha256_final_hex(&s, key);
		return 0;
	}
	return bl_set_error(err, BL_EPROTO, "%s is neither an OCI archive nor a docker archive",
			    path);
}

/* Tarball staging dirs (tmp/src.*) are flocked while in use: one that is
 * unlocked and older than a minute was left by a process that died. */
static void remove_stale_src(const char *store)
{
	_cleanup_free_ char *tmp = bl_asprintf("%s/tmp", store);
	_cleanup_closedir_ DIR *d = opendir(tmp);
	struct dirent *de;
	time_t now = time(NULL);
	while (d && (de = readdir(d))) {
		if (strncmp(de->d_name, "src.", 4) != 0)
			continue;
		_cleanup_close_ int fd =
		    openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0 || now - st.st_mtime < 60 ||
		    flock(fd, LOCK_EX | LOCK_NB) < 0)
			continue;
		(void)rm_tree_at(dirfd(d), de->d_name, 0);
	}
}

static int resolve_tarball(const char *path, const char *store, const bl_image_limits *lim,
			   char ret_key[BL_SHA256_HEX_LEN + 1], bl_error_t *err)
{
	int r = tarball_peek_key(path, lim, ret_key, err);
	if (r < 0 || (ret_key[0] && image_present(store, ret_key)))
		return r;
	remove_stale_src(store);
	_cleanup_free_ char *tmp = bl_asprintf("%s/tmp/src.XXXXXX", store);
	if (!mkdtemp(tmp))
		return bl_set_error_errno(err, errno, "mkdtemp in %s/tmp", store);
	_cleanup_close_ int fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || flock(fd, LOCK_EX) < 0) {
		r = bl_set_error_errno(err, errno, "open %s", tmp);
		goto out;
	}
	unpack_job j = {.root_fd = fd, .tar_path = path, .lim = lim, .err = err};
	if ((r = run_unpack(&j)) < 0) {
		r = PREFIX(r, err, "unpack %s", path);
		goto out;
	}
	src_kind kind = dir_kind(fd);
	if (kind == SRC_PLAIN) {
		r = bl_set_error(err, BL_EPROTO, "%s is neither an OCI nor a docker archive", path);
		goto out;
	}
	r = resolve_image_dir(fd, kind, path, store, lim, ret_key, err);
out:
	(void)bl_rm_rf(tmp, NULL);
	return r;
}

/* A plain directory copied into the store under a random key (import only). */
static int import_plain_dir(const char *abs, const char *store, const bl_image_limits *lim,
			    char ret_key[BL_SHA256_HEX_LEN + 1], bl_error_t *err)
{
	uint8_t rnd[32];
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		return bl_set_error_errno(err, errno, "getrandom");
	image_plan p = {.copy_dir = abs, .source = bl_asprintf("directory %s", abs)};
	bl_sha256_hex(rnd, sizeof(rnd), p.key);
	int r = store_install(store, -1, &p, lim, err);
	if (r == 0)
		memcpy(ret_key, p.key, sizeof(p.key));
	plan_clear(&p);
	return r;
}

/* The key a name points at; BL_ENOTFOUND when there is no such name. */
static int name_key(const char *store, const char *name, char key[BL_SHA256_HEX_LEN + 1],
		    bl_error_t *err)
{
	_cleanup_free_ char *link = bl_asprintf("%s/names/%s", store, name);
	char target[256];
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	if (n < 0) {
		if (errno == ENOENT)
			return bl_set_error(err, BL_ENOTFOUND, "no image named '%s' in %s", name,
					    store);
		return bl_set_error_errno(err, errno, "readlink %s", link);
	}
	target[n] = '\0';
	if (strncmp(target, "../images/", 10) != 0 || !is_hex64(target + 10, strlen(target + 10)))
		return bl_set_error(err, BL_EPROTO, "image name '%s' has a bad link", name);
	memcpy(key, target + 10, BL_SHA256_HEX_LEN + 1);
	return 0;
}

typedef enum resolve_mode { RESOLVE_RUN, RESOLVE_IMPORT } resolve_mode;

/* Resolves ref; *ret_key is set (64 hex) for store images, "" for plain dirs
 * in run mode, in which case *ret_plain holds the directory's real path. */
static int resolve_ref(const char *ref, const char *store, const bl_image_limits *lim,
		       resolve_mode mode, char ret_key[BL_SHA256_HEX_LEN + 1], char **ret_plain,
		       bl_error_t *err)
{
	ret_key[0] = '\0';
	if (!ref || !*ref)
		return bl_set_error(err, BL_EINVAL, "empty image reference");
	if (bl_image_name_valid(ref)) {
		bl_error_t e2 = BL_ERROR_INIT;
		int r = name_key(store, ref, ret_key, &e2);
		if (r == 0) {
			if (!image_present(store, ret_key))
				return bl_set_error(err, BL_ENOTFOUND,
						    "image '%s' points to a missing image", ref);
			return 0;
		}
		if (e2.code != BL_ENOTFOUND) {
			if (err)
				*err = e2;
			return r;
		}
	}
	struct stat st;
	if (stat(ref, &st) < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return bl_set_error(
			    err, BL_ENOTFOUND, "image '%s' not found (no such file or directory%s)",
			    ref, bl_image_name_valid(ref) ? ", and no image of that name" : "");
		return bl_set_error_errno(err, errno, "image '%s'", ref);
	}
	_cleanup_free_ char *abs = realpath(ref, NULL);
	if (!abs)
		return bl_set_error_errno(err, errno, "image '%s': realpath", ref);
	if (S_ISREG(st.st_mode))
		return resolve_tarball(abs, store, lim, ret_key, err);
	if (!S_ISDIR(st.st_mode))
		return bl_set_error(err, BL_EINVAL, "image '%s' is neither a directory nor a file",
				    ref);
	_cleanup_close_ int fd = open(abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "open %s", abs);
	src_kind kind = dir_kind(fd);
	if (kind != SRC_PLAIN)
		return resolve_image_dir(fd, kind, abs, store, lim, ret_key, err);
	if (mode == RESOLVE_IMPORT)
		return import_plain_dir(abs, store, lim, ret_key, err);
	*ret_plain = steal_pointer(&abs);
	return 0;
}

int bl_image_resolve_ex(const char *ref, const char *store_dir, const bl_image_limits *limits,
			char **ret_rootfs, char **ret_config_json, bl_error_t *err)
{
	bl_image_limits def;
	if (!limits) {
		bl_image_limits_default(&def);
		limits = &def;
	}
	_cleanup_free_ char *store = NULL, *plain = NULL;
	char key[BL_SHA256_HEX_LEN + 1];
	int r = store_open(store_dir, &store, err);
	if (r < 0 || (r = resolve_ref(ref, store, limits, RESOLVE_RUN, key, &plain, err)) < 0)
		return r;
	if (plain) {
		*ret_rootfs = steal_pointer(&plain);
		if (ret_config_json)
			*ret_config_json = NULL;
		return 0;
	}
	return image_result(store, key, ret_rootfs, ret_config_json, err);
}

int bl_image_resolve(const char *ref, const char *store_dir, char **ret_rootfs,
		     char **ret_config_json, bl_error_t *err)
{
	return bl_image_resolve_ex(ref, store_dir, NULL, ret_rootfs, ret_config_json, err);
}

/* Number of names (other than skip) pointing at key. */
static int name_refs(const char *store, const char *key, const char *skip)
{
	_cleanup_free_ char *dir = bl_asprintf("%s/names", store);
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;
	while (d && (de = readdir(d))) {
		char k[BL_SHA256_HEX_LEN + 1];
		if (!bl_image_name_valid(de->d_name) || (skip && !strcmp(de->d_name, skip)))
			continue;
		if (name_key(store, de->d_name, k, NULL) == 0 && !strcmp(k, key))
			n++;
	}
	return n;
}

/* Deletes images/<key> atomically (rename away, then remove); lock held. */
static int drop_image(const char *store, const char *key, bl_error_t *err)
{
	_cleanup_free_ char *lock_path = bl_asprintf("%s/locks/%s.lock", store, key);
	_cleanup_(unlockp) int lock = -1;
	int r = lock_file(lock_path, &lock, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *dir = bl_asprintf("%s/images/%s", store, key);
	_cleanup_free_ char *trash = bl_asprintf("%s/tmp/%s.trash", store, key);
	(void)bl_rm_rf(trash, NULL);
	if (rename(dir, trash) < 0)
		return errno == ENOENT ? 0 : bl_set_error_errno(err, errno, "rename %s", dir);
	return bl_rm_rf(trash, err);
}

int bl_image_import(const char *path, const char *name, const char *store_dir, bl_error_t *err)
{
	if (!bl_image_name_valid(name))
		return bl_set_error(err, BL_EINVAL,
				    "invalid image name '%.200s' (letters, digits, '._:-')",
				    name ? name : "");
	bl_image_limits lim;
	bl_image_limits_default(&lim);
	_cleanup_free_ char *store = NULL, *plain = NULL;
	char key[BL_SHA256_HEX_LEN + 1], old[BL_SHA256_HEX_LEN + 1];
	int r = store_open(store_dir, &store, err);
	if (r < 0 || (r = resolve_ref(path, store, &lim, RESOLVE_IMPORT, key, &plain, err)) < 0)
		return r;
	_cleanup_free_ char *lock_path = bl_asprintf("%s/lock", store);
	_cleanup_(unlockp) int lock = -1;
	if ((r = lock_file(lock_path, &lock, err)) < 0)
		return r;
	bool had_old = name_key(store, name, old, NULL) == 0;
	_cleanup_free_ char *tmp = bl_asprintf("%s/names/.%s.tmp", store, name);
	_cleanup_free_ char *link = bl_asprintf("%s/names/%s", store, name);
	_cleanup_free_ char *target = bl_asprintf("../images/%s", key);
	(void)unlink(tmp);
	if (symlink(target, tmp) < 0)
		return bl_set_error_errno(err, errno, "symlink %s", tmp);
	if (rename(tmp, link) < 0) {
		r = bl_set_error_errno(err, errno, "rename %s", link);
		(void)unlink(tmp);
		return r;
	}
	if (had_old && strcmp(old, key) != 0 && name_refs(store, old, NULL) == 0)
		return drop_image(store, old, err);
	return 0;
}

int bl_image_list(const char *store_dir, char ***ret_names, bl_error_t *err)
{
	_cleanup_free_ char *store = NULL;
	int r = store_open(store_dir, &store, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *dir = bl_asprintf("%s/names", store);
	_cleanup_closedir_ DIR *d = opendir(dir);
	if (!d)
		return bl_set_error_errno(err, errno, "opendir %s", dir);
	_cleanup_strv_ char **v = bl_malloc0(sizeof(char *));
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		char k[BL_SHA256_HEX_LEN + 1];
		if (!bl_image_name_valid(de->d_name) || name_key(store, de->d_name, k, NULL) < 0)
			continue;
		char **nv = realloc(v, sizeof(char *) * (n + 2));
		if (!nv)
			abort();
		v = nv;
		v[n++] = bl_strdup(de->d_name);
		v[n] = NULL;
	}
	qsort(v, n, sizeof(char *), cmp_str);
	*ret_names = steal_pointer(&v);
	return 0;
}

int bl_image_remove(const char *name, const char *store_dir, bl_error_t *err)
{
	if (!bl_image_name_valid(name))
		return bl_set_error(err, BL_EINVAL, "invalid image name '%.200s'",
				    name ? name : "");
	_cleanup_free_ char *store = NULL;
	int r = store_open(store_dir, &store, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *lock_path = bl_asprintf("%s/lock", store);
	_cleanup_(unlockp) int lock = -1;
	if ((r = lock_file(lock_path, &lock, err)) < 0)
		return r;
	char key[BL_SHA256_HEX_LEN + 1];
	_cleanup_free_ char *link = bl_asprintf("%s/names/%s", store, name);
	r = name_key(store, name, key, err);
	if (r == -BL_EPROTO) {
		(void)unlink(link); /* a broken name is still removable */
		bl_error_clear(err);
		return 0;
	}
	if (r < 0)
		return r;
	if (unlink(link) < 0)
		return bl_set_error_errno(err, errno, "unlink %s", link);
	if (name_refs(store, key, NULL) == 0)
		return drop_image(store, key, err);
	return 0;
}
