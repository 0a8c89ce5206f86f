/* boxlite: run untrusted code in a micro-VM. Dispatches to the commands. */
#include "cli.h"
#include "bl_log.h"
#include "bl_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: boxlite COMMAND [OPTIONS]\n"
    "\n"
    "Runs untrusted code in a QEMU micro-VM (one VM per sandbox).\n"
    "\n"
    "Commands:\n"
    "  run [OPTIONS] [-- CMD [ARG...]]   run a command (or --python CODE) in a new sandbox\n"
    "  create [OPTIONS] [--name N]       start a long-lived sandbox, print its id\n"
    "  exec [-i] [-t] ID -- CMD [ARG...] run a command in a running sandbox\n"
    "  cp SRC DST                        copy files in or out (ID:PATH on one side)\n"
    "  stop ID                           stop a sandbox (its logs stay until rm)\n"
    "  rm [-f] ID...                     remove sandboxes (-f: stop running ones first)\n"
    "  ls                                list sandboxes (removes dead ones)\n"
    "  logs ID                           print a sandbox's guest console log\n"
    "  info                              accelerator choice, versions, paths\n"
    "  check                             boot a probe VM: a host self-test\n"
    "  mcp [OPTIONS]                     serve the Model Context Protocol on stdio (AI agents)\n"
    "  pool start|status|stop            a warm pool of booted VMs (see pool --help)\n"
    "  pull [-q] REF                     pull an image from its registry (docker-style REF)\n"
    "  images                            list images: name, digest, size, created, in use\n"
    "  rmi [-f] REF...                   remove images (refused while a sandbox uses one)\n"
    "  image import|prune|ls|rm|pull     import a local image, drop unused data, ...\n"
    "  login -u USER REGISTRY, logout    registry credentials for pulls\n"
    "  serve [--listen ADDR:PORT]        the HTTP/JSON API with tenants, and a playground page\n"
    "\n"
    "`boxlite COMMAND --help` (or `boxlite help COMMAND`) describes each command;\n"
    "`boxlite help --list` lists the commands.\n"
    "\n"
    "Exit codes of run and exec:\n"
    "  N        the command's own exit status\n"
    "  128+N    the command was killed by signal N (130/143: boxlite got SIGINT/SIGTERM)\n"
    "  121      the command ran out of memory (the sandbox's --memory limit)\n"
    "  124      the sandbox's --timeout passed (its VM is destroyed)\n"
    "  125      boxlite itself failed: bad option, image not found, VM or agent failure\n"
    "  126      the command is not executable\n"
    "  127      the command was not found\n"
    "\n"
    "Environment: BOXLITE_LOG=info|debug (or -v), BOXLITE_ACCEL=kvm|tcg,\n"
    "BOXLITE_STATE_DIR (default " BL_DEFAULT_STATE_DIR "), BOXLITE_KERNEL, BOXLITE_INITRD,\n"
    "BOXLITE_IMAGE_DIR (image store).\n";

void cli_error(const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* Messages may carry text from the guest (agent errors): no escape
	 * sequence reaches the terminal. */
	bl_sanitize_text(buf, strlen(buf), true);
	fprintf(stderr, "boxlite: %s\n", buf);
}

int cli_fail(const bl_error_t *err)
{
	cli_error("%s", err->msg[0] ? err->msg : bl_code_name(err->code));
	switch (err->code) {
	case BL_ETIMEOUT:
		return BL_EXIT_TIMEOUT;
	case BL_EOOM:
		return BL_EXIT_OOM;
	default:
		return BL_EXIT_FAILURE;
	}
}

void cli_log_setup(bool verbose)
{
	const char *env = getenv("BOXLITE_LOG");
	bl_log_level level = BL_LOG_WARN;
	if (verbose)
		level = BL_LOG_INFO;
	if (env && !strcmp(env, "info"))
		level = BL_LOG_INFO;
	if (env && !strcmp(env, "debug"))
		level = BL_LOG_DEBUG;
	if (env && !strcmp(env, "error"))
		level = BL_LOG_ERROR;
	bl_log_setup(2, level, "boxlite");
}

static const struct {
	const char *name;
	int (*fn)(int, char **);
} commands[] = {
    {"run", cmd_run},
    {"create", cmd_create},
    {"exec", cmd_exec},
    {"cp", cmd_cp},
    {"stop", cmd_stop},
    {"rm", cmd_rm},
    {"ls", cmd_ls},
    {"logs", cmd_logs},
    {"info", cmd_info},
    {"check", cmd_check},
    {"mcp", cmd_mcp},
    {"__monitor", cmd_monitor},
    {"__ping", cmd_ping},
    {"pool", cmd_pool},
    {"__pool", cmd_pool_daemon},
    /* images.c */
    {"pull", cmd_pull},
    {"images", cmd_images},
    {"rmi", cmd_rmi},
    {"image", cmd_image},
    {"login", cmd_login},
    {"logout", cmd_logout},
    /* serve.c */
    {"serve", cmd_serve},
};

/* `help --list`: the public commands, one a line (the man pages and the bash
 * completion are generated from it and from each command's --help);
 * `help CMD`: CMD's --help. */
static int cmd_help(const char *what)
{
	size_t n = sizeof(commands) / sizeof(commands[0]);
	if (!strcmp(what, "--list")) {
		for (size_t i = 0; i < n; i++)
			if (strncmp(commands[i].name, "__", 2))
				printf("%s\n", commands[i].name);
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(what, commands[i].name)) {
			char *args[] = {(char *)commands[i].name, (char *)"--help", NULL};
			return commands[i].fn(2, args);
		}
	}
	cli_error("unknown command '%s' (see boxlite help --list)", what);
	return BL_EXIT_FAILURE;
}

int main(int argc, char **argv)
{
	cli_log_setup(false);
	/* Before any thread: see bl_host_prepare. */
	if (argc >= 2 && strcmp(argv[1], "info"))
		(void)bl_host_prepare();
	if (argc < 2) {
		fputs(usage, stderr);
		return BL_EXIT_FAILURE;
	}
	if (!strcmp(argv[1], "help") && argc >= 3)
		return cmd_help(argv[2]);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage, stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
		printf("boxlite %s\n", BOXLITE_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	cli_error("unknown command '%s' (see boxlite --help)", argv[1]);
	return BL_EXIT_FAILURE;
}
