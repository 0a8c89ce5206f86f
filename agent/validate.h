/* Pure checks on untrusted input from the host: ids, names, paths, statuses. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "bl_agent_proto.h"

#define AGENT_ID_MAX BL_AGENT_ID_MAX

/* [A-Za-z0-9_.-]{1,64}, not "." or ".." (ids become path components). */
bool agent_valid_id(const char *s);
/* Like agent_valid_id, or "" (the init process). */
bool agent_valid_exec_id(const char *s);
/* A relative path of plain components: no "..", no empty or "." parts, no
 * leading '/', at most 4096 bytes. "" is valid (the root). */
bool agent_valid_subpath(const char *s);
/* A block device name such as "vdb": [a-z0-9]{1,32}. */
bool agent_valid_devname(const char *s);
/* A hostname: 1..64 bytes of [A-Za-z0-9.-]. */
bool agent_valid_hostname(const char *s);

/* Shell convention: the exit code, or 128+signal for a signal death; sets
 * *ret_signal to the terminating signal or 0. */
int agent_exit_status(int wstatus, int *ret_signal);
