/*
 * Image resolution: references, OCI layouts, OCI and docker archives
 * (directories or tarballs) and plain directories, turned into images of the
 * store (image_store.c) by unpacking (image_unpack.c) what the parsers
 * (image_manifest.c) accepted. Blobs of a source are read only inside it
 * (openat2 RESOLVE_IN_ROOT) and verified against their digests.
 */
#include "image_internal.h"

#include "bl_util.h"
#include "image_ref.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

BL_DEFINE_CLEANUP(struct archive, archive_read_free)

/* ------------------------------------------------------------------ blobs */

/* Reads a small file of the source dir (bounded; never escapes it). */
static int read_src_file(int src_fd, const char *path, size_t max, char **ret, size_t *ret_len,
			 bl_error_t *err)
{
	_cleanup_close_ int fd =
	    bl_img_open_in_root(src_fd, path, O_RDONLY | O_NOCTTY, RESOLVE_IN_ROOT);
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
		if ((r = bl_img_json_parse(buf, len, 4096, "oci-layout", json_type_object, &o,
					   err)) < 0 ||
		    (r = bl_img_json_str(o, "imageLayoutVersion", true, 64, "oci-layout", &v, NULL,
					 err)) < 0)
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

static int oci_plan(int src_fd, const bl_image_desc *md, const bl_image_limits *lim, bl_img_plan *p,
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
		bl_img_layer *l = &p->layers[i];
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
	if (!bl_img_is_hex64(base, n))
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
 * against the config's diff_ids after decompression, whatever their name or
 * compression (the key is the manifest's digest: a layer swapped under a
 * legitimate manifest must not land under its key), and against their blob
 * name too when they are named by digest. */
static int docker_plan(int src_fd, const char *mbuf, size_t mlen, const bl_image_limits *lim,
		       bl_img_plan *p, bl_error_t *err)
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
	if (nd != n)
		return bl_set_error(err, BL_EPROTO, "docker image: %zu layers but %zu diff_ids", n,
				    nd);
	p->layers = bl_malloc0(sizeof(*p->layers) * (n ? n : 1));
	for (size_t i = 0; i < n; i++, p->n_layers++) {
		bl_img_layer *l = &p->layers[i];
		l->path = bl_strdup(layers[i]);
		l->expect_size = UINT64_MAX;
		if (!strncmp(layers[i], "blobs/sha256/", 13) && digest_from_name(layers[i], want))
			memcpy(l->expect_hex, want, sizeof(want));
		memcpy(l->expect_diff_hex, diff_ids[i], sizeof(l->expect_diff_hex));
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
	bl_img_plan p = {0};
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
	if (bl_img_present(store, p.key))
		goto out;
	r = kind == SRC_OCI ? oci_plan(dir_fd, &md, lim, &p, err)
			    : docker_plan(dir_fd, mbuf, mlen, lim, &p, err);
	if (r < 0)
		goto out;
	p.source = bl_asprintf("%s %s", kind == SRC_OCI ? "oci-layout" : "docker-archive", ref);
	r = bl_img_store_install(store, dir_fd, &p, lim, err);
out:
	bl_image_desc_clear(&md);
	bl_img_plan_clear(&p);
	return r;
}

/* Reads index.json and manifest.json of a tarball without unpacking it, to
 * find the key early; 0 with key "" when only a full unpack can tell. */
static int tarball_peek_key(const char *path, const bl_image_limits *lim,
			    char key[BL_SHA256_HEX_LEN + 1], bl_error_t *err)
{
	_cleanup_(archive_read_freep) struct archive *a = bl_img_tar_reader();
	_cleanup_free_ char *index = NULL, *manifest = NULL;
	size_t ilen = 0, mlen = 0;
	key[0] = '\0';
	if (archive_read_open_filename(a, path, BL_IMG_READ_BLOCK) != ARCHIVE_OK)
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
		char clean[BL_IMG_REL_PATH_MAX];
		const char *p = archive_entry_pathname(e);
		if (!p || bl_img_path_clean(p, clean, sizeof(clean), NULL) < 0)
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
			return BL_PREFIX(r, err, "%s", path);
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
		(void)bl_img_rm_tree_at(dirfd(d), de->d_name, 0);
	}
}

static int resolve_tarball(const char *path, const char *store, const bl_image_limits *lim,
			   char ret_key[BL_SHA256_HEX_LEN + 1], bl_error_t *err)
{
	int r = tarball_peek_key(path, lim, ret_key, err);
	if (r < 0 || (ret_key[0] && bl_img_present(store, ret_key)))
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
	bl_img_unpack_job j = {.root_fd = fd, .tar_path = path, .lim = lim, .err = err};
	if ((r = bl_img_unpack_run(&j)) < 0) {
		r = BL_PREFIX(r, err, "unpack %s", path);
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
	bl_img_plan p = {.copy_dir = abs, .source = bl_asprintf("directory %s", abs)};
	bl_sha256_hex(rnd, sizeof(rnd), p.key);
	int r = bl_img_store_install(store, -1, &p, lim, err);
	if (r == 0)
		memcpy(ret_key, p.key, sizeof(p.key));
	bl_img_plan_clear(&p);
	return r;
}

typedef enum resolve_mode { RESOLVE_RUN, RESOLVE_IMPORT } resolve_mode;

/* A registry reference: its stored image, else (run mode) a pull when the
 * reference names its registry explicitly. Short Docker Hub names are pulled
 * only by `boxlite pull` (a mistyped local name must not reach out to the
 * network) unless BOXLITE_PULL=missing; BOXLITE_PULL=never pulls nothing. */
static int resolve_pulled(const char *ref, const char *store, resolve_mode mode,
			  char ret_key[BL_SHA256_HEX_LEN + 1], bl_error_t *err)
{
	bl_image_ref pr;
	if (bl_image_ref_parse(ref, &pr, NULL) < 0)
		return bl_set_error(err, BL_ENOTFOUND,
				    "image '%s' not found (no such file or directory%s)", ref,
				    bl_image_name_valid(ref) ? ", and no image of that name" : "");
	_cleanup_free_ char *norm = bl_image_ref_string(&pr);
	if (bl_img_name_key(store, norm, ret_key, NULL) == 0 && bl_img_present(store, ret_key))
		return 0;
	const char *policy = getenv("BOXLITE_PULL");
	bool never = policy && !strcmp(policy, "never");
	bool any = policy && !strcmp(policy, "missing");
	if (mode == RESOLVE_IMPORT || never || (!any && !bl_image_ref_has_domain(ref)))
		return bl_set_error(err, BL_ENOTFOUND,
				    "image '%s' not found (no such file or directory, and no image "
				    "of that name%s)",
				    ref,
				    never ? "" : "; boxlite pull fetches it from its registry");
	bl_pull_options o = {.store_dir = store};
	_cleanup_free_ char *digest = NULL;
	int r = bl_image_pull(ref, &o, NULL, &digest, err);
	if (r < 0)
		return BL_PREFIX(r, err, "pull %s", norm);
	memcpy(ret_key, digest + 7, BL_SHA256_HEX_LEN + 1);
	return 0;
}

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
		int r = bl_img_name_key(store, ref, ret_key, &e2);
		if (r == 0) {
			if (!bl_img_present(store, ret_key))
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
			return resolve_pulled(ref, store, mode, ret_key, err);
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
	int r = bl_img_store_open(store_dir, &store, err);
	if (r < 0 || (r = resolve_ref(ref, store, limits, RESOLVE_RUN, key, &plain, err)) < 0)
		return r;
	if (plain) {
		*ret_rootfs = steal_pointer(&plain);
		if (ret_config_json)
			*ret_config_json = NULL;
		return 0;
	}
	bl_img_touch(store, key);
	return bl_img_result(store, key, ret_rootfs, ret_config_json, err);
}

int bl_image_resolve(const char *ref, const char *store_dir, char **ret_rootfs,
		     char **ret_config_json, bl_error_t *err)
{
	return bl_image_resolve_ex(ref, store_dir, NULL, ret_rootfs, ret_config_json, err);
}

/* Number of names (other than skip) pointing at key. */

int bl_image_import(const char *path, const char *name, const char *store_dir, bl_error_t *err)
{
	if (!bl_image_name_valid(name))
		return bl_set_error(err, BL_EINVAL,
				    "invalid image name '%.200s' (letters, digits, '._:-')",
				    name ? name : "");
	bl_image_limits lim;
	bl_image_limits_default(&lim);
	_cleanup_free_ char *store = NULL, *plain = NULL;
	char key[BL_SHA256_HEX_LEN + 1];
	int r = bl_img_store_open(store_dir, &store, err);
	if (r < 0 || (r = resolve_ref(path, store, &lim, RESOLVE_IMPORT, key, &plain, err)) < 0)
		return r;
	return bl_img_set_name(store, name, key, err);
}
