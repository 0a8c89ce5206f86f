/*
 * The container's /etc/passwd and /etc/group, parsed by hand: the agent is
 * static and must not use NSS, and the files are untrusted input (bounded
 * size, bounded lines, strict numbers).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bl_error.h"

#define AGENT_PASSWD_MAX_BYTES (1u << 20)
#define AGENT_PASSWD_MAX_LINE  4096
#define AGENT_USER_MAX_GROUPS  64

typedef struct agent_pwent {
	char name[256];
	uint32_t uid, gid;
	char home[AGENT_PASSWD_MAX_LINE];
} agent_pwent;

/* Finds the entry named `name`, or (name NULL) the first with `uid`.
 * Returns 1 when found, 0 when not. */
int agent_passwd_find(const char *buf, size_t len, const char *name, uint32_t uid,
		      agent_pwent *ret);
/* Group `name`'s gid: 1 found, 0 not. */
int agent_group_find(const char *buf, size_t len, const char *name, uint32_t *ret_gid);
/* Gids of the groups listing `user` as a member (at most max); returns the count. */
size_t agent_group_members(const char *buf, size_t len, const char *user, gid_t *gids, size_t max);
/* Strict decimal uint32 (no sign, no spaces, below UINT32_MAX): true on success. */
bool agent_parse_u32(const char *s, size_t len, uint32_t *ret);

/* What a "user[:group]" string resolves to. */
typedef struct agent_user {
	uint32_t uid, gid;
	gid_t gids[AGENT_USER_MAX_GROUPS];
	size_t n_gids;
	char home[AGENT_PASSWD_MAX_LINE]; /* "" when unknown */
} agent_user;

/* Resolves spec ("name", "uid", "name:group", "uid:gid", ...) against the
 * given file contents (either may be NULL = empty). Numeric ids need no
 * entry; names must exist. */
int agent_user_resolve_buf(const char *spec, const char *passwd, size_t passwd_len,
			   const char *group, size_t group_len, agent_user *ret, bl_error_t *err);
/* Same, reading etc/passwd and etc/group under rootfd with RESOLVE_IN_ROOT. */
int agent_user_resolve(int rootfd, const char *spec, agent_user *ret, bl_error_t *err);
/* Reads a regular file under rootfd (RESOLVE_IN_ROOT, no FIFOs, bounded);
 * ENOENT leaves *ret NULL and returns 0. */
int agent_read_in_root(int rootfd, const char *path, size_t max, char **ret, size_t *ret_len,
		       bl_error_t *err);
