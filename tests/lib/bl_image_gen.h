/* Builders of test images (tar layers, OCI layouts, docker archives), written
 * with libarchive and json-c so tests need neither the network nor Docker. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef enum bl_gen_type {
	BL_GEN_FILE = 'f',
	BL_GEN_DIR = 'd',
	BL_GEN_SYMLINK = 'l',
	BL_GEN_HARDLINK = 'h',
	BL_GEN_CHARDEV = 'c',
} bl_gen_type;

typedef struct bl_gen_entry {
	const char *path;
	bl_gen_type type;
	const char *data; /* file content, or the link target */
	unsigned mode;	  /* 0: 0644 files, 0755 dirs */
} bl_gen_entry;

typedef struct bl_gen_layer {
	const bl_gen_entry *entries; /* terminated by an entry with path NULL */
	bool gzip;
} bl_gen_layer;

/* A tar (gzip when asked) of the entries, malloc'd. Aborts on failure. */
void bl_gen_tar(const bl_gen_entry *entries, bool gzip, void **ret, size_t *ret_len);
/* Stores data as dir/blobs/sha256/<hex>; hex receives the digest. */
void bl_gen_blob(const char *dir, const void *data, size_t len, char hex[65]);
/* An OCI image layout in dir (created): one manifest, n layers, a config
 * whose "config" member is config_json (a JSON object text, or NULL).
 * ret_manifest_hex (may be NULL) gets the manifest digest. */
void bl_gen_oci_layout(const char *dir, const bl_gen_layer *layers, size_t n,
		       const char *config_json, char ret_manifest_hex[65]);
/* The digest of layer i of an OCI layout written by bl_gen_oci_layout. */
void bl_gen_oci_layer_hex(const char *dir, size_t i, char hex[65]);
/* A docker-archive (docker save) directory in dir: <id>/layer.tar, a config
 * named <digest>.json with diff_ids, manifest.json, repositories. */
void bl_gen_docker_dir(const char *dir, const bl_gen_layer *layers, size_t n,
		       const char *config_json);
/* Tars the contents of dir (relative paths) into the file out. */
void bl_gen_tar_dir(const char *dir, const char *out, bool gzip);
/* Writes a file (mkdir -p of its parent), aborting on failure. */
void bl_gen_write(const char *path, const void *data, size_t len);
