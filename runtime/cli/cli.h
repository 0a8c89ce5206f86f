/* The `boxlite` command line: a thin front end over libboxlite. */
#pragma once

#include "boxlite.h"
/* The in-tree front ends also use the internal error helpers (bl_set_error). */
#include "bl_error.h"

/* Exit codes (documented in `boxlite --help` and the README). */
#define BL_EXIT_OOM	 121 /* the program ran out of memory */
#define BL_EXIT_TIMEOUT	 124 /* the sandbox's --timeout passed */
#define BL_EXIT_FAILURE	 125 /* boxlite itself failed (option, image, backend) */
#define BL_EXIT_NOEXEC	 126 /* the command is not executable */
#define BL_EXIT_NOTFOUND 127 /* the command does not exist */

/* Prints "boxlite: <msg>" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An error from the library as an exit code, with its message on stderr. */
int cli_fail(const bl_error_t *err);
/* Sets up logging for -v / $BOXLITE_LOG. */
void cli_log_setup(bool verbose);

int cmd_run(int argc, char **argv);
int cmd_create(int argc, char **argv);
int cmd_monitor(int argc, char **argv);
int cmd_exec(int argc, char **argv);
int cmd_cp(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_logs(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_ping(int argc, char **argv);
int cmd_mcp(int argc, char **argv);
/* pool.c */
int cmd_pool(int argc, char **argv);
int cmd_pool_daemon(int argc, char **argv);
/* images.c */
int cmd_pull(int argc, char **argv);
int cmd_images(int argc, char **argv);
int cmd_rmi(int argc, char **argv);
int cmd_image(int argc, char **argv);
int cmd_login(int argc, char **argv);
int cmd_logout(int argc, char **argv);
/* serve.c */
int cmd_serve(int argc, char **argv);
