/*
 * The image layer of libboxlite: turns an image reference into an immutable,
 * unpacked root filesystem directory, kept in a content-keyed local store.
 *
 * Store layout (STORE = store_dir, else $BOXLITE_IMAGE_DIR, else
 * $BOXLITE_IMAGE_STORE, else /var/lib/boxlite/images; mode 0700):
 *   STORE/images/<key>/rootfs/       the unpacked root filesystem, never modified
 *   STORE/images/<key>/config.json   normalized image config (absent: none)
 *   STORE/images/<key>/source        one informational line: where it came from
 *   STORE/images/<key>/info.json     {"size", "created", "blobs": [hex...]}
 *   STORE/images/<key>/used          its mtime: last resolve (LRU eviction)
 *   STORE/blobs/sha256/<hex>         verified blobs of pulled images, shared
 *   STORE/pins/<key>/<id>            a sandbox using the image (holds its dir)
 *   STORE/gc.lock                    flock: pulls shared, prune/evict exclusive
 *   STORE/names/<name> -> ../images/<key>   symlink, replaced atomically;
 *                                    a reference's '/' are stored as '%'
 *   STORE/locks/<key>.lock           flock serializing the unpack of one key
 *   STORE/lock                       flock serializing changes of names/
 *   STORE/tmp/                       staging; an image dir appears in images/
 *                                    only by rename(2) once complete
 * <key> is 64 lowercase hex digits: the sha256 of the OCI manifest (the
 * manifest digest), of "docker-archive:" + manifest.json for docker archives,
 * or a random one for imported plain directories.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "bl_error.h"
#include "boxlite_image.h"

#define BL_IMAGE_DEFAULT_STORE "/var/lib/boxlite/images"
#define BL_IMAGE_NAME_MAX      128

/* Bounds that let a hostile image fail cleanly instead of exhausting the host. */
typedef struct bl_image_limits {
	uint64_t max_unpacked_bytes; /* sum of regular file sizes over all layers */
	uint64_t max_entries;	     /* archive entries over all layers */
	uint64_t max_blob_bytes;     /* one compressed layer blob */
	size_t max_json_bytes;	     /* index, manifest, config, oci-layout */
	unsigned max_layers;
} bl_image_limits;

/* 8 GiB, 1M entries, 4 GiB per blob, 4 MiB per JSON document, 128 layers. */
void bl_image_limits_default(bl_image_limits *ret);

/* Resolves an image reference to an immutable, unpacked root filesystem directory.
 * ref: an existing directory (used as is: a plain rootfs dir), an OCI image layout
 * directory (has oci-layout + index.json), an OCI archive or docker-archive tarball
 * (.tar, optionally gzip), or a name in the local store ("default", or a name given at
 * import). Unpacked results are cached under store_dir (NULL = $BOXLITE_IMAGE_DIR or
 * /var/lib/boxlite/images) keyed by the manifest digest, so a second resolve is
 * instant; concurrent resolvers of the same image must not corrupt each other
 * (unpack into a temp dir, rename into place; flock). Missing image → BL_ENOTFOUND
 * with a message naming the reference; malformed → BL_EPROTO.
 * *ret_rootfs: malloc'd absolute path; *ret_config_json (may be NULL arg): the image
 * config's JSON (Env, Cmd, Entrypoint, WorkingDir, User) or NULL for plain dirs. */
int bl_image_resolve(const char *ref, const char *store_dir, char **ret_rootfs,
		     char **ret_config_json, bl_error_t *err);
/* bl_image_resolve with explicit bounds (NULL: the defaults). */
int bl_image_resolve_ex(const char *ref, const char *store_dir, const bl_image_limits *limits,
			char **ret_rootfs, char **ret_config_json, bl_error_t *err);

/* bl_image_import (boxlite_image.h): path is anything resolve accepts except
 * a store name; a plain directory is copied into the store. */
/* Sorted, NULL-terminated, malloc'd (free with bl_strv_free). */
int bl_image_list(const char *store_dir, char ***ret_names, bl_error_t *err);
/* Drops the name; the unpacked image goes too when no other name uses it.
 * Sandboxes already running on it must be gone (the store does not track them). */
int bl_image_remove(const char *name, const char *store_dir, bl_error_t *err);

/* Completed unpacks in this process (tests use it to see a cache hit). */
unsigned long bl_image_unpack_count(void);

/* The store directory actually used for store_dir (malloc'd). */
char *bl_image_store_path(const char *store_dir);
/* True for names bl_image_import accepts: [A-Za-z0-9][A-Za-z0-9._:-]*, at most
 * BL_IMAGE_NAME_MAX bytes. */
int bl_image_name_valid(const char *name);

/* ---- parsers of untrusted image metadata (exposed for tests and fuzzing) ---- */

typedef struct bl_image_desc {
	char *media_type;	 /* may be NULL */
	char digest_hex[64 + 1]; /* sha256 only */
	uint64_t size;
	char os[32], arch[32]; /* platform, "" when absent */
} bl_image_desc;

typedef struct bl_image_manifest {
	bl_image_desc config;
	bl_image_desc *layers;
	size_t n_layers;
} bl_image_manifest;

void bl_image_desc_clear(bl_image_desc *d);
void bl_image_manifest_clear(bl_image_manifest *m);

/* index.json or a nested image index: picks the manifest for this host
 * (linux + the host's architecture; a single manifest is taken whatever its
 * platform). *ret_is_index is set when the choice is itself an index. */
int bl_image_parse_index(const char *json, size_t len, const bl_image_limits *limits,
			 bl_image_desc *ret, int *ret_is_index, bl_error_t *err);
/* An OCI or docker v2 image manifest. */
int bl_image_parse_manifest(const char *json, size_t len, const bl_image_limits *limits,
			    bl_image_manifest *ret, bl_error_t *err);
/* An image config: *ret_json is a normalized object holding only Env, Cmd,
 * Entrypoint (arrays of strings), WorkingDir and User (strings), each only when
 * present; *ret_diff_ids (may be NULL arg) the rootfs.diff_ids as hex. */
int bl_image_parse_config(const char *json, size_t len, const bl_image_limits *limits,
			  char **ret_json, char ***ret_diff_ids, bl_error_t *err);
/* docker-archive manifest.json: the first image's Config path and Layers paths. */
int bl_image_parse_docker_manifest(const char *json, size_t len, const bl_image_limits *limits,
				   char **ret_config, char ***ret_layers, bl_error_t *err);
