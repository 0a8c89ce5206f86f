/*
 * boxlite public API, images: pull from OCI registries, list, remove, prune,
 * import, registry credentials. Included by boxlite.h.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "boxlite_error.h"

typedef enum bl_pull_event {
	BL_PULL_RESOLVED,    /* manifest resolved: n_layers, total known */
	BL_PULL_LAYER_START, /* a layer download begins (or is found cached) */
	BL_PULL_LAYER_BYTES, /* bytes of a layer arrived */
	BL_PULL_LAYER_DONE,  /* a layer is verified and stored */
	BL_PULL_UNPACK,	     /* layers are being unpacked into the rootfs */
	BL_PULL_DONE,	     /* the image is complete and named */
} bl_pull_event;

typedef struct bl_pull_progress {
	bl_pull_event event;
	const char *ref; /* the normalised reference */
	size_t layer, n_layers;
	const char *layer_digest; /* "sha256:<hex>" */
	uint64_t layer_done, layer_size;
	uint64_t done, total; /* bytes over all layers */
	bool cached;	      /* the layer (or the whole image) was already stored */
} bl_pull_progress;

/* Called from the pulling threads, one call at a time. */
typedef void (*bl_pull_progress_fn)(const bl_pull_progress *p, void *opaque);

typedef struct bl_pull_options {
	const char *store_dir; /* NULL: $BOXLITE_IMAGE_STORE or the built-in store */
	bl_pull_progress_fn progress;
	void *opaque;
	unsigned parallel; /* layers fetched at once; 0: 4 */
} bl_pull_options;

/* Pulls ref ("busybox", "ghcr.io/o/a:1", "host:5000/x@sha256:...") for
 * linux/<host arch>: every blob verified against its digest as it streams,
 * the image unpacked and named (by its normalised reference) only when
 * complete. *ret_name / *ret_digest (may be NULL args): the name given and
 * "sha256:<manifest digest>" (malloc'd). Errors: BL_ENOTFOUND (unknown image
 * or tag, no manifest for this platform), BL_EPROTO (digest mismatch,
 * malformed manifest), BL_EAUTH, BL_ENETWORK (unreachable, TLS, rate
 * limited), BL_ESYSTEM (disk full). */
int bl_image_pull(const char *ref, const bl_pull_options *o, char **ret_name, char **ret_digest,
		  bl_error_t *err);

typedef struct bl_image_entry {
	char *name;	   /* a local name or a normalised reference */
	char digest[72];   /* "sha256:<hex>": the image's key (manifest digest) */
	uint64_t size;	   /* unpacked bytes */
	int64_t created;   /* seconds since the epoch (image config, else stored) */
	int64_t last_used; /* seconds since the epoch */
	unsigned in_use;   /* live sandboxes pinning it */
} bl_image_entry;

/* Every name of the store, sorted. */
int bl_image_entries(const char *store_dir, bl_image_entry **ret, size_t *ret_n, bl_error_t *err);
void bl_image_entries_free(bl_image_entry *v, size_t n);
/* Removes a name (or a normalised reference, or every name of "sha256:<hex>"):
 * BL_ESTATE while a sandbox uses the image, unless force (then only the
 * name goes; the image is dropped once unused, by prune). */
int bl_image_rmi(const char *ref, const char *store_dir, bool force, bl_error_t *err);
/* Drops images no name points to and no sandbox uses, blobs no image uses,
 * and abandoned partial downloads. *ret_freed (may be NULL): bytes freed. */
int bl_image_prune(const char *store_dir, uint64_t *ret_freed, bl_error_t *err);
/* Imports a local image (OCI layout or archive, docker archive, plain dir) under a name. */
int bl_image_import(const char *path, const char *name, const char *store_dir, bl_error_t *err);
/* Marks the store image whose rootfs is given as used by holder (a
 * sandbox's state directory): rmi, prune and eviction leave it alone while
 * holder exists. A rootfs outside the store is ignored. */
int bl_image_pin(const char *rootfs, const char *holder, bl_error_t *err);

/* Checks user/pass against host's registry (GET /v2/ with them), then stores
 * them for later pulls (boxlite's auth file, 0600). */
int bl_registry_login(const char *host, const char *user, const char *pass, bl_error_t *err);
int bl_registry_logout(const char *host, bl_error_t *err);
/* The store directory used for store_dir (NULL: $BOXLITE_IMAGE_DIR,
 * $BOXLITE_IMAGE_STORE, else /var/lib/boxlite/images); malloc'd. */
char *bl_image_store_path(const char *store_dir);
