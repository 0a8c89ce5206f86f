/*
 * What the image modules share inside libboxlite (not installed):
 *   image_manifest.c  JSON and digest parsing of untrusted image metadata
 *   image_unpack.c    layer extraction into a new rootfs (whiteouts, limits)
 *   image_store.c     the content-keyed store: images/, names/, blobs/, locks
 *   image.c           local sources (OCI layout, docker archive, tarballs,
 *                     plain dirs) and the public resolve/import API
 */
#pragma once

#include "image.h"

#include "bl_cleanup.h"
#include "bl_digest.h"

#include <json-c/json.h>
#include <stdbool.h>

#define BL_IMG_PATH_MAX_DEPTH 256
#define BL_IMG_REL_PATH_MAX   4096
#define BL_IMG_READ_BLOCK     (64 * 1024)

/* bl_error_prefix that keeps the code r even when err is NULL. */
#define BL_PREFIX(r, err, ...) ((err) ? bl_error_prefix((err), __VA_ARGS__) : (r))

void bl_json_object_putp(struct json_object **o);
#define _cleanup_json_ _cleanup_(bl_json_object_putp)

/* ---- image_manifest.c ---- */
bool bl_img_is_hex64(const char *s, size_t len);
/* "sha256:<64 lowercase hex>" into out; other algorithms are refused. */
int bl_img_parse_digest(const char *s, size_t len, char out[BL_SHA256_HEX_LEN + 1],
			bl_error_t *err);
/* A bounded, depth-limited parse of a whole JSON document of type want. */
int bl_img_json_parse(const char *json, size_t len, size_t max, const char *what, json_type want,
		      struct json_object **ret, bl_error_t *err);
int bl_img_json_str(struct json_object *obj, const char *key, bool required, size_t max,
		    const char *what, const char **ret, size_t *ret_len, bl_error_t *err);
int bl_img_json_array(struct json_object *obj, const char *key, bool required, size_t max,
		      const char *what, struct json_object **ret, bl_error_t *err);
const char *bl_img_host_arch(void);
bool bl_img_media_is_index(const char *mt);
bool bl_img_media_is_manifest(const char *mt);

/* ---- image_unpack.c ---- */
int bl_img_open_in_root(int root_fd, const char *path, int flags, uint64_t resolve);
/* Normalizes a relative archive path: drops "." and empty components; refuses
 * absolute paths, "..", over-long and over-deep paths. "" is the root. */
int bl_img_path_clean(const char *in, char *out, size_t len, bl_error_t *err);
/* Removes name under dir_fd (a tree or a file) without following symlinks. */
int bl_img_rm_tree_at(int dir_fd, const char *name, int depth);
struct archive *bl_img_tar_reader(void);

typedef struct bl_img_layer {
	char *path;				/* relative to the source dir */
	char expect_hex[BL_SHA256_HEX_LEN + 1]; /* digest of the blob as stored; "" none */
	uint64_t expect_size;			/* UINT64_MAX = unknown */
	/* digest of the uncompressed tar (a diff_id), checked after decompression
	 * whatever the blob's name or compression; "" none */
	char expect_diff_hex[BL_SHA256_HEX_LEN + 1];
} bl_img_layer;

typedef struct bl_img_unpack_job {
	int src_fd;  /* directory the layer paths are relative to */
	int root_fd; /* the new rootfs */
	const bl_img_layer *layers;
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
} bl_img_unpack_job;

/* Extracts what the job names into root_fd, from a thread of its own. */
int bl_img_unpack_run(bl_img_unpack_job *j);

/* ---- image_store.c ---- */
typedef struct bl_img_plan {
	char key[BL_SHA256_HEX_LEN + 1];
	char *config_json; /* normalized; NULL: none */
	bl_img_layer *layers;
	size_t n_layers;
	const char *copy_dir; /* plain dir import: copy this tree */
	char *source;	      /* informational */
	char **blobs;	      /* hex digests of the store blobs it was made of */
	int64_t created;      /* 0: now */
} bl_img_plan;

void bl_img_plan_clear(bl_img_plan *p);
/* Creates the store skeleton if needed; *ret is its absolute path. */
int bl_img_store_open(const char *store_dir, char **ret, bl_error_t *err);
int bl_img_lock_file(const char *path, int *ret_fd, bl_error_t *err);
void bl_img_unlockp(int *fd);
bool bl_img_present(const char *store, const char *key);
/* The rootfs path and stored config of an image present in the store. */
int bl_img_result(const char *store, const char *key, char **ret_rootfs, char **ret_config,
		  bl_error_t *err);
/* Unpacks the plan into tmp, then renames it into images/<key>. The key lock
 * is taken here; an image already present is left alone. */
int bl_img_store_install(const char *store, int src_fd, bl_img_plan *p, const bl_image_limits *lim,
			 bl_error_t *err);
/* The key a name points at; BL_ENOTFOUND when there is no such name. */
int bl_img_name_key(const char *store, const char *name, char key[BL_SHA256_HEX_LEN + 1],
		    bl_error_t *err);
/* Points name (a local name or a normalised reference) at key atomically;
 * an image no other name and no sandbox uses is dropped. */
int bl_img_set_name(const char *store, const char *name, const char *key, bl_error_t *err);
/* Records a use of key now (LRU). */
void bl_img_touch(const char *store, const char *key);
/* Live sandboxes pinning key. */
unsigned bl_img_pins(const char *store, const char *key);
/* Shared (pull, import) or exclusive (prune, evict) hold of the store's gc lock. */
int bl_img_gc_lock(const char *store, bool exclusive, int *ret_fd, bl_error_t *err);
/* Evicts least recently used unpinned images (never keep_key) until the
 * store holds at most max_bytes; then drops unused blobs. */
int bl_img_evict(const char *store, uint64_t max_bytes, const char *keep_key, bl_error_t *err);
