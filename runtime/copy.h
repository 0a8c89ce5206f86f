/*
 * Extracting an untrusted archive (a sandbox's copy-out) on the host, as
 * root, under the image-layer rules: every entry under one named top entry,
 * no absolute names or "..", regular files, directories and symlinks only
 * (no device nodes, FIFOs, sockets, hard links), no setuid/setgid/sticky
 * bits, symlinks only when they stay inside the copied tree (others are
 * left out, with a warning), nothing created through a
 * symlink or over an existing entry, byte and entry limits; everything lands
 * in a fresh temporary directory of the destination and only a complete
 * copy is renamed into place (never over an existing name).
 */
#pragma once

#include <archive.h>
#include <stdint.h>

#include "bl_error.h"

typedef struct bl_copy_limits {
	uint64_t max_bytes;   /* file data; 0: BL_COPY_MAX_BYTES */
	uint64_t max_entries; /* 0: BL_COPY_MAX_ENTRIES */
} bl_copy_limits;

#define BL_COPY_MAX_BYTES   (1ull << 30)
#define BL_COPY_MAX_ENTRIES 100000

/* Extracts archive a (opened for reading, any format libarchive reads) into
 * dest_dir/top. BL_EPROTO for an archive breaking a rule, BL_ETOOBIG (or
 * BL_EINVAL) for a limit, BL_EEXIST when dest_dir/top exists. */
int bl_copy_extract(struct archive *a, const char *dest_dir, const char *top,
		    const bl_copy_limits *lim, bl_error_t *err);
