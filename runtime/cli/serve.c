/* `boxlite serve`: options, start-up (orphans of a killed server), shutdown. */
#include "cli.h"
#include "serve.h"
#include "bl_log.h"
#include "bl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

srv_state *srv;

static const char serve_help[] =
    "usage: boxlite serve [--listen ADDR:PORT] [--config FILE] [--tls-cert FILE --tls-key FILE]\n"
    "                     [--state-dir DIR] [-v]\n"
    "\n"
    "Serves the HTTP/JSON API (/v1/..., documented in runtime/cli/openapi.yaml, also at\n"
    "GET /openapi.yaml) and a playground page at /. Listens on 127.0.0.1:8100 unless\n"
    "told otherwise. Every request but GET /health and the page needs a tenant's token\n"
    "(Authorization: Bearer TOKEN); tenants, quotas and limits come from --config (JSON,\n"
    "see the README). Without --config there is one tenant, 'default', whose token is\n"
    "$BOXLITE_SERVE_TOKEN or a random one printed on stderr.\n"
    "\n"
    "The sandboxes belong to the server: SIGTERM/SIGINT releases them all; after a\n"
    "crash the next server removes the ones the dead one left ($BOXLITE_SERVE_DIR,\n"
    "default /run/boxlite/serve, keeps the ownership records).\n";

static int single_tenant(srv_config *c)
{
	c->tenants = bl_malloc0(sizeof(*c->tenants));
	c->n_tenants = 1;
	snprintf(c->tenants[0].name, sizeof(c->tenants[0].name), "default");
	c->tenants[0].allow_pull = true;
	const char *env = getenv("BOXLITE_SERVE_TOKEN");
	if (env && strlen(env) >= 8) {
		c->tenants[0].token = bl_strdup(env);
		return 0;
	}
	unsigned char raw[16];
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || bl_read_full(fd, raw, sizeof(raw)) != sizeof(raw)) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	char hex[33];
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(hex + 2 * i, 3, "%02x", raw[i]);
	c->tenants[0].token = bl_strdup(hex);
	fprintf(stderr, "boxlite serve: no --config: one tenant 'default' with token %s\n", hex);
	return 0;
}

static int parse_args(int argc, char **argv, const char **config, srv_config *over, bool *verbose)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char **slot = NULL;
		char **own = NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(serve_help, stdout);
			return 1;
		}
		if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
			*verbose = true;
			continue;
		}
		if (!strcmp(a, "--config"))
			slot = config;
		else if (!strcmp(a, "--listen"))
			own = &over->listen;
		else if (!strcmp(a, "--tls-cert"))
			own = &over->tls_cert;
		else if (!strcmp(a, "--tls-key"))
			own = &over->tls_key;
		else if (!strcmp(a, "--state-dir"))
			own = &over->state_dir;
		else {
			cli_error("serve: unknown option '%s' (see boxlite serve --help)", a);
			return -1;
		}
		if (i + 1 >= argc || !argv[i + 1][0]) {
			cli_error("serve: %s needs a value", a);
			return -1;
		}
		if (slot)
			*slot = argv[++i];
		else {
			free(*own);
			*own = bl_strdup(argv[++i]);
		}
	}
	return 0;
}

static void take(char **dst, char **src)
{
	if (*src) {
		free(*dst);
		*dst = steal_pointer(src);
	}
}

static int setup_dirs(bl_error_t *err)
{
	srv_config *c = &srv->cfg;
	if (!c->serve_dir) {
		const char *e = getenv("BOXLITE_SERVE_DIR");
		c->serve_dir = bl_strdup(e && *e ? e : "/run/boxlite/serve");
	}
	_cleanup_free_ char *owners = bl_asprintf("%s/owners", c->serve_dir);
	_cleanup_free_ char *empty = bl_asprintf("%s/empty", c->serve_dir);
	if (bl_mkdir_p(owners, 0700, err) < 0 || bl_mkdir_p(empty, 0500, err) < 0)
		return -1;
	(void)chmod(c->serve_dir, 0700);
	char **paths[] = {&c->serve_dir, &c->state_dir, &c->image_store, &c->tls_cert, &c->tls_key};
	for (size_t i = 0; i < BL_ARRAY_SIZE(paths); i++) {
		char *p = *paths[i];
		if (!p || p[0] == '/')
			continue;
		char cwd[4096];
		if (!getcwd(cwd, sizeof(cwd)))
			return bl_set_error_errno(err, errno, "getcwd");
		*paths[i] = bl_asprintf("%s/%s", cwd, p);
		free(p);
	}
	return 0;
}

/* Relative image references never reach a host directory. */
static int enter_empty_dir(bl_error_t *err)
{
	_cleanup_free_ char *empty = bl_asprintf("%s/empty", srv->cfg.serve_dir);
	if (chdir(empty) < 0)
		return bl_set_error_errno(err, errno, "chdir %s", empty);
	return 0;
}

int cmd_serve(int argc, char **argv)
{
	const char *config = NULL;
	srv_config over = {0};
	bool verbose = false;
	int r = parse_args(argc, argv, &config, &over, &verbose);
	if (r != 0) {
		srv_config_clear(&over);
		return r > 0 ? 0 : BL_EXIT_FAILURE;
	}
	cli_log_setup(verbose);
	srv = bl_malloc0(sizeof(*srv));
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->cond, NULL);
	bl_error_t err = BL_ERROR_INIT;
	if (srv_config_load(config, &srv->cfg, &err) < 0) {
		srv_config_clear(&over);
		return cli_fail(&err);
	}
	take(&srv->cfg.listen, &over.listen);
	take(&srv->cfg.tls_cert, &over.tls_cert);
	take(&srv->cfg.tls_key, &over.tls_key);
	take(&srv->cfg.state_dir, &over.state_dir);
	srv_config_clear(&over);
	if (!srv->cfg.listen)
		srv->cfg.listen = bl_strdup("127.0.0.1:8100");
	if (!srv->cfg.n_tenants && single_tenant(&srv->cfg) < 0) {
		cli_error("serve: no random token (/dev/urandom)");
		return BL_EXIT_FAILURE;
	}
	if (setup_dirs(&err) < 0)
		return cli_fail(&err);
	/* A download is bounded by the server's file limit, also while the
	 * guest's archive is unpacked. */
	char lim[32];
	snprintf(lim, sizeof(lim), "%zu", srv->cfg.max_file + (1 << 20));
	setenv("BOXLITE_COPY_MAX_BYTES", lim, 0);

	/* Signals go to sigwait below; every thread inherits the mask. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	srv_clean_orphans();
	struct MHD_Daemon *d = srv_http_start(&err);
	if (!d)
		return cli_fail(&err);
	if (enter_empty_dir(&err) < 0) {
		MHD_stop_daemon(d);
		return cli_fail(&err);
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	char host[256];
	snprintf(host, sizeof(host), "%s", srv->cfg.listen);
	*strrchr(host, ':') = '\0';
	fprintf(stderr, "boxlite serve: listening on %s://%s:%u\n",
		srv->cfg.tls_cert ? "https" : "http", host, info ? info->port : 0);
	fflush(stderr);

	int sig = 0;
	while (sigwait(&set, &sig) != 0)
		;
	bl_warn("serve: signal %d: releasing every sandbox", sig);
	srv_cancel_all();
	MHD_stop_daemon(d);
	srv_release_all();
	srv_config_clear(&srv->cfg);
	return 0;
}
