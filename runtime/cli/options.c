#include "options.h"
#include "bl_cleanup.h"
#include "bl_util.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "K=V" with a non-empty K (the library checks again). */
static bool valid_env(const char *kv)
{
	const char *eq = strchr(kv, '=');
	return eq && eq != kv;
}

enum {
	OPT_IMAGE = 256,
	OPT_ROOTFS,
	OPT_MEMORY,
	OPT_CPUS,
	OPT_DISK,
	OPT_TIMEOUT,
	OPT_ACCEL,
	OPT_CONNECT,
	OPT_PYTHON,
	OPT_NAME,
	OPT_HOSTNAME,
	OPT_NETWORK,
	OPT_ALLOW,
	OPT_DENY,
	OPT_NET_CONNS,
	OPT_NET_RATE,
	OPT_PIDS,
	OPT_STATE_DIR,
	OPT_HELP,
};

static const struct option sandbox_longopts[] = {
    {"image", required_argument, NULL, OPT_IMAGE},
    {"rootfs", required_argument, NULL, OPT_ROOTFS},
    {"memory", required_argument, NULL, OPT_MEMORY},
    {"cpus", required_argument, NULL, OPT_CPUS},
    {"disk", required_argument, NULL, OPT_DISK},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"env", required_argument, NULL, 'e'},
    {"workdir", required_argument, NULL, 'w'},
    {"user", required_argument, NULL, 'u'},
    {"interactive", no_argument, NULL, 'i'},
    {"tty", no_argument, NULL, 't'},
    {"accel", required_argument, NULL, OPT_ACCEL},
    {"connect", required_argument, NULL, OPT_CONNECT},
    {"python", required_argument, NULL, OPT_PYTHON},
    {"name", required_argument, NULL, OPT_NAME},
    {"hostname", required_argument, NULL, OPT_HOSTNAME},
    {"network", no_argument, NULL, OPT_NETWORK},
    {"allow", required_argument, NULL, OPT_ALLOW},
    {"deny", required_argument, NULL, OPT_DENY},
    {"publish", required_argument, NULL, 'p'},
    {"net-max-conns", required_argument, NULL, OPT_NET_CONNS},
    {"net-rate", required_argument, NULL, OPT_NET_RATE},
    {"pids", required_argument, NULL, OPT_PIDS},
    {"state-dir", required_argument, NULL, OPT_STATE_DIR},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

int bl_cli_parse_uint(const char *what, const char *s, unsigned min, unsigned max, unsigned *ret,
		      bl_error_t *err)
{
	char *end = NULL;
	errno = 0;
	unsigned long v = s && *s >= '0' && *s <= '9' ? strtoul(s, &end, 10) : 0;
	if (!end || *end || errno || v < min || v > max)
		return bl_set_error(err, BL_EINVAL, "%s: '%s' is not a number in %u-%u", what,
				    s ? s : "", min, max);
	*ret = (unsigned)v;
	return 0;
}

static void strv_push(char ***v, const char *s)
{
	size_t n = 0;
	while (*v && (*v)[n])
		n++;
	char **nv = realloc(*v, (n + 2) * sizeof(char *));
	if (!nv)
		abort();
	nv[n] = bl_strdup(s);
	nv[n + 1] = NULL;
	*v = nv;
}

static bool allowed(int mode, int opt)
{
	if (mode == BL_CLI_EXEC)
		return opt == 'e' || opt == 'w' || opt == 'u' || opt == 'i' || opt == 't' ||
		       opt == 'v' || opt == OPT_STATE_DIR || opt == OPT_HELP;
	if (opt == OPT_PYTHON)
		return mode == BL_CLI_RUN;
	return true;
}

static int parse_one(int opt, const char *arg, bl_cli_opts *c, bl_error_t *err)
{
	bl_sandbox_options *o = &c->o;
	switch (opt) {
	case OPT_IMAGE:
		o->image = arg;
		return 0;
	case OPT_ROOTFS:
		o->rootfs = arg;
		return 0;
	case OPT_MEMORY:
		return bl_cli_parse_uint("--memory", arg, 64, 65536, &o->memory_mib, err);
	case OPT_CPUS:
		return bl_cli_parse_uint("--cpus", arg, 1, 64, &o->vcpus, err);
	case OPT_DISK:
		return bl_cli_parse_uint("--disk", arg, 1, 1024 * 1024, &o->disk_mib, err);
	case OPT_TIMEOUT:
		return bl_cli_parse_uint("--timeout", arg, 1, 86400 * 365, &o->timeout_sec, err);
	case OPT_PIDS:
		return bl_cli_parse_uint("--pids", arg, 1, 1u << 22, &o->pids_max, err);
	case 'e': {
		/* "-e K" passes the caller's value of K, like docker. */
		if (!strchr(arg, '=')) {
			const char *v = getenv(arg);
			if (!v)
				return 0;
			_cleanup_free_ char *kv = bl_asprintf("%s=%s", arg, v);
			strv_push(&c->env, kv);
			return 0;
		}
		if (!valid_env(arg))
			return bl_set_error(err, BL_EINVAL, "-e: '%s' is not K=V", arg);
		strv_push(&c->env, arg);
		return 0;
	}
	case 'w':
		if (arg[0] != '/')
			return bl_set_error(err, BL_EINVAL, "-w: '%s' is not an absolute path",
					    arg);
		o->cwd = arg;
		return 0;
	case 'u':
		if (!*arg)
			return bl_set_error(err, BL_EINVAL, "-u: empty user");
		o->user = arg;
		return 0;
	case 'i':
		c->interactive = true;
		return 0;
	case 't':
		c->tty = true;
		return 0;
	case OPT_ACCEL:
		if (strcmp(arg, "kvm") && strcmp(arg, "tcg") && strcmp(arg, "auto"))
			return bl_set_error(err, BL_EINVAL, "--accel: '%s' is not kvm, tcg or auto",
					    arg);
		o->accel = arg;
		return 0;
	case OPT_CONNECT:
		o->uri = arg;
		return 0;
	case OPT_PYTHON:
		c->python = arg;
		return 0;
	case OPT_NAME:
		o->id = arg;
		return 0;
	case OPT_HOSTNAME:
		o->hostname = arg;
		return 0;
	case OPT_NETWORK:
		o->network = true;
		return 0;
	/* The network options imply --network. */
	case OPT_ALLOW:
		o->network = true;
		strv_push(&c->allow, arg);
		return 0;
	case OPT_DENY:
		o->network = true;
		strv_push(&c->deny, arg);
		return 0;
	case 'p':
		o->network = true;
		strv_push(&c->publish, arg);
		return 0;
	case OPT_NET_CONNS:
		o->network = true;
		return bl_cli_parse_uint("--net-max-conns", arg, 1, 65536, &o->net_max_conns, err);
	case OPT_NET_RATE:
		o->network = true;
		return bl_cli_parse_uint("--net-rate", arg, 1, 10 * 1024 * 1024, &o->net_rate_kib,
					 err);
	case OPT_STATE_DIR:
		o->state_dir = arg;
		return 0;
	case 'v':
		c->verbose = true;
		return 0;
	case OPT_HELP:
		c->help = true;
		return 0;
	}
	return bl_set_error(err, BL_EINVAL, "unknown option");
}

static const char *option_name(int opt)
{
	static __thread char name[40];
	snprintf(name, sizeof(name), "-%c", opt);
	for (const struct option *o = sandbox_longopts; o->name && opt >= 256; o++)
		if (o->val == opt)
			snprintf(name, sizeof(name), "--%s", o->name);
	return name;
}

static int check_command(int mode, bl_cli_opts *c, bl_error_t *err)
{
	if (mode == BL_CLI_EXEC) {
		if (!c->id)
			return bl_set_error(err, BL_EINVAL, "exec: missing sandbox id");
		if (!c->cmd)
			return bl_set_error(err, BL_EINVAL,
					    "exec: missing command (exec ID -- CMD)");
		return 0;
	}
	if (mode == BL_CLI_RUN && c->python && c->cmd)
		return bl_set_error(err, BL_EINVAL, "run: give --python or a command, not both");
	if (mode == BL_CLI_RUN && !c->python && !c->cmd && !c->o.image && !c->o.rootfs)
		return 0; /* the default image's own command */
	return 0;
}

int bl_cli_parse(int mode, int argc, char **argv, bl_cli_opts *c, bl_error_t *err)
{
	*c = (bl_cli_opts){0};
	/* '+': stop at the first operand; "--" ends options too. ':': report, don't print. */
	const char *shortopts = "+:e:w:u:p:itv";
	optind = 0;
	opterr = 0;
	int opt, r = 0;
	while (r == 0 && (opt = getopt_long(argc, argv, shortopts, sandbox_longopts, NULL)) != -1) {
		const char *bad = argv[optind - 1];
		if (opt == '?')
			r = bl_set_error(err, BL_EINVAL, "%s: unknown option '%s'", argv[0],
					 optopt ? (char[]){'-', (char)optopt, 0} : bad);
		else if (opt == ':')
			r = bl_set_error(err, BL_EINVAL, "%s: option '%s' needs a value", argv[0],
					 bad);
		else if (!allowed(mode, opt))
			r = bl_set_error(err, BL_EINVAL, "%s: option '%s' is not valid here",
					 argv[0], option_name(opt));
		else
			r = parse_one(opt, optarg, c, err);
	}
	if (r == 0 && mode == BL_CLI_EXEC && optind < argc)
		c->id = argv[optind++];
	if (r == 0 && optind < argc && !strcmp(argv[optind], "--"))
		optind++;
	for (int i = optind; r == 0 && i < argc; i++)
		strv_push(&c->cmd, argv[i]);
	if (r == 0 && !c->help)
		r = check_command(mode, c, err);
	c->o.env = (const char *const *)c->env;
	c->o.net_allow = (const char *const *)c->allow;
	c->o.net_deny = (const char *const *)c->deny;
	c->o.net_publish = (const char *const *)c->publish;
	c->o.tty = c->tty;
	c->o.stdin_open = c->interactive;
	if (r < 0)
		bl_cli_opts_clear(c);
	return r;
}

void bl_cli_opts_clear(bl_cli_opts *c)
{
	bl_strv_free(c->env);
	bl_strv_free(c->cmd);
	bl_strv_free(c->allow);
	bl_strv_free(c->deny);
	bl_strv_free(c->publish);
	*c = (bl_cli_opts){0};
}

/* The reason after the last "exec CMD: " or "exec \"CMD\": " in a message
 * (the agent's, innermost, holds at most 200 bytes of CMD), or NULL. */
static const char *exec_failure_reason(const char *msg, const char *cmd)
{
	size_t n = strnlen(cmd, 200);
	const char *last = NULL;
	for (const char *p = strstr(msg, "exec "); p; p = strstr(p + 1, "exec ")) {
		const char *q = p + 5;
		bool quoted = *q == '"';
		q += quoted;
		if (strncmp(q, cmd, n))
			continue;
		q += n;
		if (quoted && *q++ != '"')
			continue;
		if (q[0] == ':' && q[1] == ' ')
			last = q + 2;
	}
	return last;
}

int bl_cli_start_failure(const bl_error_t *err, const char *cmd, char *msg, size_t len)
{
	const char *why = cmd && *cmd ? exec_failure_reason(err->msg, cmd) : NULL;
	if (!why)
		return 0;
	if (!strcmp(why, "executable file not found") ||
	    !strcmp(why, "No such file or directory")) {
		snprintf(msg, len, "%s: %s", cmd,
			 strchr(cmd, '/') ? "no such file or directory" : "command not found");
		return 127;
	}
	/* The reason comes from the guest: printable ASCII only, lower case first
	 * letter like a shell's "permission denied". */
	char reason[128];
	size_t i = 0;
	for (; why[i] && i < sizeof(reason) - 1; i++)
		reason[i] = why[i] >= 0x20 && why[i] < 0x7f ? why[i] : '?';
	reason[i] = '\0';
	if (reason[0] >= 'A' && reason[0] <= 'Z' && (reason[1] < 'A' || reason[1] > 'Z'))
		reason[0] = (char)(reason[0] - 'A' + 'a');
	snprintf(msg, len, "%s: %s", cmd, reason);
	return 126;
}
