/* Bind mounts of share subdirectories into a container's root (OCI mounts of
 * type "bind", whose host sources the host shared into the VM). */
#pragma once

#include <stddef.h>

#include "bl_error.h"
#include "spec.h"

/* Mounts every bind of `binds` at its destination inside root (the
 * container's root mount, in the agent's namespace). Sources resolve inside
 * the share directory share_dir, destinations inside root (symlinks cannot
 * leave either); a missing destination is created (a directory, or an empty
 * file for a file source). On failure the caller unmounts root (recursively). */
int agent_binds_mount(const char *share_dir, const char *root, const agent_bind *binds, size_t n,
		      bl_error_t *err);
