/*
 * Option parsing of the `boxlite` CLI's run/create/exec commands (also linked
 * into tests/unit/test_cli). Like all of runtime/cli/, it uses the public API
 * (boxlite.h) only.
 */
#pragma once

#include <stdbool.h>

#include "boxlite.h"
/* The in-tree front ends also use the internal error helpers (bl_set_error). */
#include "bl_error.h"

enum {
	BL_CLI_RUN = 1,	   /* run: sandbox options + command or --python */
	BL_CLI_CREATE = 2, /* create: sandbox options + --name, optional command */
	BL_CLI_EXEC = 3,   /* exec: process options + ID + command */
};

typedef struct bl_cli_opts {
	bl_sandbox_options o;
	char **env;			 /* owned strv, also o.env */
	char **cmd;			 /* owned strv: the command after the options */
	char **allow, **deny, **publish; /* owned strvs, also o.net_* */
	const char *python;		 /* --python CODE ("-": read from stdin) */
	const char *id;			 /* exec: the sandbox */
	bool interactive, tty;		 /* -i, -t */
	bool verbose;			 /* -v */
	bool help;			 /* --help seen */
} bl_cli_opts;

/* Parses argv[0..argc) (argv[0] is the command name, e.g. "run"). Error
 * messages name the offending option (BL_EINVAL). */
int bl_cli_parse(int mode, int argc, char **argv, bl_cli_opts *ret, bl_error_t *err);
void bl_cli_opts_clear(bl_cli_opts *o);

/* Strict unsigned decimal with bounds; returns 0 or -BL_EINVAL. */
int bl_cli_parse_uint(const char *what, const char *s, unsigned min, unsigned max, unsigned *ret,
		      bl_error_t *err);

/* Reports a command that could not be started the way a shell does, without
 * the RPC plumbing of err: returns 127 with "CMD: command not found" (or "no
 * such file or directory" for a path), 126 with "CMD: permission denied" and
 * the like, or 0 when err is not about starting cmd (report err as it is). */
int bl_cli_start_failure(const bl_error_t *err, const char *cmd, char *msg, size_t len);
