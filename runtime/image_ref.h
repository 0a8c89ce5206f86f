/*
 * Docker-style image references, parsed and normalised the way docker and
 * containerd do:
 *   busybox                      -> docker.io/library/busybox:latest
 *   org/app:1.2                  -> docker.io/org/app:1.2
 *   ghcr.io/org/app@sha256:<hex> -> ghcr.io/org/app@sha256:<hex>
 *   localhost:5000/team/tool:t   -> localhost:5000/team/tool:t
 * The first component is a registry host when it holds '.' or ':' or is
 * "localhost"; repository components are [a-z0-9]+ joined by '.', '_', '__'
 * or runs of '-'; tags are [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; digests sha256.
 */
#pragma once

#include "bl_error.h"

#include <stdbool.h>

#define BL_REF_DOCKER_HUB "docker.io"
#define BL_REF_NAME_MAX	  255

typedef struct bl_image_ref {
	char domain[256];	 /* "docker.io", "ghcr.io", "127.0.0.1:5000" */
	char path[256];		 /* "library/busybox" */
	char tag[129];		 /* "" when only a digest was given */
	char digest_hex[64 + 1]; /* "" when none */
} bl_image_ref;

/* Parses and normalises s (no tag and no digest: tag "latest"). */
int bl_image_ref_parse(const char *s, bl_image_ref *ret, bl_error_t *err);
/* True when s parses as a reference. */
bool bl_image_ref_valid(const char *s);
/* True when s names its registry explicitly (a first component with '.' or
 * ':' or "localhost"), e.g. "127.0.0.1:5000/x" but not "busybox". */
bool bl_image_ref_has_domain(const char *s);
/* "domain/path:tag", "domain/path@sha256:hex" or "domain/path:tag@sha256:hex" (malloc'd). */
char *bl_image_ref_string(const bl_image_ref *r);
/* "domain/path" (malloc'd). */
char *bl_image_ref_repo(const bl_image_ref *r);
/* The host the distribution API is reached at: docker.io's is registry-1.docker.io. */
const char *bl_image_ref_api_host(const bl_image_ref *r);
