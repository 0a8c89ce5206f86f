/*
 * A container's root as seen by the agent: the virtio-fs share (mounted once
 * per tag, read-only), and an overlay with a size-limited writable layer,
 * all under /run/boxlite.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "bl_error.h"

#define AGENT_RUN_DIR	     "/run/boxlite"
#define AGENT_SHARES_DIR     AGENT_RUN_DIR "/shares"
#define AGENT_CONTAINERS_DIR AGENT_RUN_DIR "/containers"
/* Writable layer when the host gives no size. */
#define AGENT_DEFAULT_UPPER_BYTES (256ull << 20)

typedef struct agent_rootfs_req {
	const char *share_tag;
	const char *share_subdir;
	bool readonly;
	uint64_t upper_size_bytes;
	const char *upper_device;
} agent_rootfs_req;

/* Mounts the container's root at AGENT_CONTAINERS_DIR/<id>/rootfs (a mount
 * point in every case) and returns its path (malloc'd). */
int agent_rootfs_mount(const char *id, const agent_rootfs_req *req, char **ret_path,
		       bl_error_t *err);
/* Unmounts everything under the container's directory and removes it. */
int agent_rootfs_unmount(const char *id, bl_error_t *err);
