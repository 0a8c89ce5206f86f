/* Image commands: pull, images, rmi, image import|prune|ls|rm|pull, login, logout. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static void human(uint64_t n, char *out, size_t cap)
{
	const char *u[] = {"B", "kB", "MB", "GB", "TB"};
	double v = (double)n;
	size_t i = 0;
	while (v >= 1000 && i + 1 < sizeof(u) / sizeof(u[0])) {
		v /= 1000;
		i++;
	}
	snprintf(out, cap, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------ progress */

typedef struct progress_ui {
	bool tty, quiet;
	size_t n_layers, drawn;
	uint64_t *done, *size;
	bool *finished, *cached;
	char (*digest)[20];
	double start, last_draw;
} progress_ui;

static void draw(progress_ui *ui, const bl_pull_progress *p, bool force)
{
	double t = now_s();
	if (!force && t - ui->last_draw < 0.1)
		return;
	ui->last_draw = t;
	if (ui->drawn)
		fprintf(stderr, "\033[%zuA", ui->drawn);
	for (size_t i = 0; i < ui->n_layers; i++) {
		char a[32], b[32], bar[31];
		uint64_t sz = ui->size[i] ? ui->size[i] : 1;
		size_t fill = (size_t)(30 * (ui->done[i] > sz ? sz : ui->done[i]) / sz);
		memset(bar, '#', fill);
		memset(bar + fill, '-', 30 - fill);
		bar[30] = '\0';
		human(ui->done[i], a, sizeof(a));
		human(ui->size[i], b, sizeof(b));
		fprintf(stderr, "\033[2K%s [%s] %s / %s%s\n", ui->digest[i], bar, a, b,
			ui->cached[i]	  ? " (cached)"
			: ui->finished[i] ? " done"
					  : "");
	}
	char a[32], b[32], r[32];
	double el = t - ui->start;
	double rate = el > 0 ? (double)p->done / el : 0;
	human(p->done, a, sizeof(a));
	human(p->total, b, sizeof(b));
	human((uint64_t)rate, r, sizeof(r));
	double eta = rate > 0 && p->total > p->done ? (double)(p->total - p->done) / rate : 0;
	fprintf(stderr, "\033[2Ktotal %s / %s  %s/s  ETA %.0fs\n", a, b, r, eta);
	ui->drawn = ui->n_layers + 1;
}

static void on_progress(const bl_pull_progress *p, void *opaque)
{
	progress_ui *ui = opaque;
	if (ui->quiet)
		return;
	if (p->event == BL_PULL_RESOLVED) {
		ui->n_layers = p->n_layers;
		ui->done = calloc(p->n_layers + 1, sizeof(uint64_t));
		ui->size = calloc(p->n_layers + 1, sizeof(uint64_t));
		ui->finished = calloc(p->n_layers + 1, sizeof(bool));
		ui->cached = calloc(p->n_layers + 1, sizeof(bool));
		ui->digest = calloc(p->n_layers + 1, sizeof(*ui->digest));
		if (!ui->done || !ui->size || !ui->finished || !ui->cached || !ui->digest)
			abort();
		ui->start = now_s();
		if (!ui->tty)
			fprintf(stderr, "pulling %s: %zu layer%s\n", p->ref, p->n_layers,
				p->n_layers == 1 ? "" : "s");
		return;
	}
	if (p->event == BL_PULL_DONE && p->cached && !ui->n_layers) {
		fprintf(stderr, "%s: up to date\n", p->ref);
		return;
	}
	if (!ui->n_layers)
		return;
	if (p->layer < ui->n_layers) {
		size_t i = p->layer;
		snprintf(ui->digest[i], sizeof(ui->digest[i]), "%.19s", p->layer_digest);
		ui->size[i] = p->layer_size;
		ui->done[i] = p->layer_done;
		if (p->event == BL_PULL_LAYER_DONE)
			ui->finished[i] = true;
		if (p->cached)
			ui->cached[i] = true;
		if (!ui->tty && p->event == BL_PULL_LAYER_DONE) {
			char s[32];
			human(p->layer_size, s, sizeof(s));
			fprintf(stderr, "layer %zu/%zu %s %s %s\n", i + 1, ui->n_layers,
				p->layer_digest, s, p->cached ? "cached" : "done");
		}
	}
	if (ui->tty && p->event != BL_PULL_UNPACK)
		draw(ui, p, p->event != BL_PULL_LAYER_BYTES);
	if (p->event == BL_PULL_UNPACK && !ui->tty)
		fprintf(stderr, "unpacking\n");
}

static void ui_free(progress_ui *ui)
{
	free(ui->done);
	free(ui->size);
	free(ui->finished);
	free(ui->cached);
	free(ui->digest);
}

/* ------------------------------------------------------------ commands */

static const char pull_usage[] =
    "usage: boxlite pull [-q|--quiet] REF\n"
    "Pulls REF (e.g. busybox, ghcr.io/org/app:1.2, host:5000/x@sha256:...) for\n"
    "linux/amd64 from its registry into the image store, verified blob by blob.\n"
    "Credentials: boxlite login, or ~/.docker/config.json. Mirrors, insecure\n"
    "registries and CAs: /etc/boxlite/registries.json ($BOXLITE_REGISTRIES_CONF).\n";

int cmd_pull(int argc, char **argv)
{
	bool quiet = false;
	static const struct option opts[] = {{"quiet", no_argument, NULL, 'q'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+qh", opts, NULL)) != -1) {
		if (c == 'q') {
			quiet = true;
		} else {
			fputs(pull_usage, c == 'h' ? stdout : stderr);
			return c == 'h' ? 0 : BL_EXIT_FAILURE;
		}
	}
	if (optind + 1 != argc) {
		fputs(pull_usage, stderr);
		return BL_EXIT_FAILURE;
	}
	progress_ui ui = {.tty = isatty(2), .quiet = quiet};
	bl_pull_options o = {.progress = on_progress, .opaque = &ui};
	bl_error_t err = BL_ERROR_INIT;
	char *name = NULL, *digest = NULL;
	int r = bl_image_pull(argv[optind], &o, &name, &digest, &err);
	ui_free(&ui);
	if (r < 0)
		return cli_fail(&err);
	if (!quiet)
		printf("%s %s\n", name, digest);
	free(name);
	free(digest);
	return 0;
}

int cmd_images(int argc, char **argv)
{
	bool quiet = argc > 1 && (!strcmp(argv[1], "-q") || !strcmp(argv[1], "--quiet"));
	if (argc > 1 && !quiet) {
		fputs("usage: boxlite images [-q]\nLists the image store: name, digest, size, "
		      "created, sandboxes using it.\n",
		      strcmp(argv[1], "--help") ? stderr : stdout);
		return strcmp(argv[1], "--help") ? BL_EXIT_FAILURE : 0;
	}
	bl_image_entry *v = NULL;
	size_t n = 0;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_image_entries(NULL, &v, &n, &err) < 0)
		return cli_fail(&err);
	if (!quiet)
		printf("%-48s %-19s %10s  %-20s %s\n", "NAME", "DIGEST", "SIZE", "CREATED",
		       "IN USE");
	for (size_t i = 0; i < n; i++) {
		if (quiet) {
			printf("%s\n", v[i].name);
			continue;
		}
		char sz[32], when[32] = "-";
		human(v[i].size, sz, sizeof(sz));
		time_t t = (time_t)v[i].created;
		struct tm tm;
		if (t > 0 && gmtime_r(&t, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%SZ", &tm);
		printf("%-48s %-19.19s %10s  %-20s %u\n", v[i].name, v[i].digest, sz, when,
		       v[i].in_use);
	}
	bl_image_entries_free(v, n);
	return 0;
}

int cmd_rmi(int argc, char **argv)
{
	bool force = false;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--force")) {
			force = true;
		} else {
			fputs(
			    "usage: boxlite rmi [-f] REF...\nRemoves image names; an image in use "
			    "by a sandbox is refused unless -f (then only the name goes).\n",
			    strcmp(argv[i], "--help") ? stderr : stdout);
			return strcmp(argv[i], "--help") ? BL_EXIT_FAILURE : 0;
		}
	}
	if (i >= argc) {
		cli_error("rmi: name an image");
		return BL_EXIT_FAILURE;
	}
	int rc = 0;
	for (; i < argc; i++) {
		bl_error_t err = BL_ERROR_INIT;
		if (bl_image_rmi(argv[i], NULL, force, &err) < 0)
			rc = cli_fail(&err);
		else
			printf("removed %s\n", argv[i]);
	}
	return rc;
}

static int image_import(int argc, char **argv)
{
	const char *name = NULL, *path = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--name") && i + 1 < argc)
			name = argv[++i];
		else if (!strncmp(argv[i], "--name=", 7))
			name = argv[i] + 7;
		else if (!path && argv[i][0] != '-')
			path = argv[i];
		else
			path = NULL, i = argc;
	}
	if (!path || !name) {
		fputs("usage: boxlite image import FILE|DIR --name NAME\n"
		      "Imports an OCI layout or archive, a docker archive or a rootfs directory.\n",
		      stderr);
		return BL_EXIT_FAILURE;
	}
	bl_error_t err = BL_ERROR_INIT;
	if (bl_image_import(path, name, NULL, &err) < 0)
		return cli_fail(&err);
	printf("%s\n", name);
	return 0;
}

static int image_prune(void)
{
	uint64_t freed = 0;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_image_prune(NULL, &freed, &err) < 0)
		return cli_fail(&err);
	char s[32];
	human(freed, s, sizeof(s));
	printf("freed %s\n", s);
	return 0;
}

int cmd_image(int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : "";
	if (!strcmp(sub, "import"))
		return image_import(argc - 1, argv + 1);
	if (!strcmp(sub, "prune"))
		return image_prune();
	if (!strcmp(sub, "ls") || !strcmp(sub, "list"))
		return cmd_images(argc - 1, argv + 1);
	if (!strcmp(sub, "rm"))
		return cmd_rmi(argc - 1, argv + 1);
	if (!strcmp(sub, "pull"))
		return cmd_pull(argc - 1, argv + 1);
	fputs("usage: boxlite image import FILE|DIR --name N | prune | ls | rm [-f] REF | pull "
	      "REF\n",
	      strcmp(sub, "--help") ? stderr : stdout);
	return strcmp(sub, "--help") ? BL_EXIT_FAILURE : 0;
}

/* A password from stdin: one line, without echo on a terminal. */
static char *read_password(bool prompt)
{
	struct termios old, quiet;
	bool tty = isatty(0) && tcgetattr(0, &old) == 0;
	if (tty) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		(void)tcsetattr(0, TCSAFLUSH, &quiet);
	}
	if (prompt && tty)
		fputs("Password: ", stderr);
	char *line = NULL;
	size_t cap = 0;
	ssize_t n = getline(&line, &cap, stdin);
	if (tty) {
		(void)tcsetattr(0, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	if (n < 0) {
		free(line);
		return NULL;
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	return line;
}

int cmd_login(int argc, char **argv)
{
	const char *user = NULL, *host = NULL;
	bool from_stdin = false, help = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			help = true, host = NULL, i = argc;
		else if ((!strcmp(argv[i], "-u") || !strcmp(argv[i], "--username")) && i + 1 < argc)
			user = argv[++i];
		else if (!strcmp(argv[i], "--password-stdin"))
			from_stdin = true;
		else if (argv[i][0] != '-' && !host)
			host = argv[i];
		else
			host = NULL, i = argc;
	}
	if (!host || !user) {
		fputs("usage: boxlite login -u USER [--password-stdin] REGISTRY\n"
		      "Checks the credentials with the registry, then stores them (0600) in\n"
		      "~/.config/boxlite/auth.json ($BOXLITE_AUTH_FILE) for pulls.\n"
		      "  -u, --username USER  the account\n"
		      "  --password-stdin     read the password from stdin (no prompt)\n",
		      help ? stdout : stderr);
		return help ? 0 : BL_EXIT_FAILURE;
	}
	char *pass = read_password(!from_stdin);
	if (!pass) {
		cli_error("login: no password given");
		return BL_EXIT_FAILURE;
	}
	bl_error_t err = BL_ERROR_INIT;
	int r = bl_registry_login(host, user, pass, &err);
	explicit_bzero(pass, strlen(pass));
	free(pass);
	if (r < 0)
		return cli_fail(&err);
	printf("logged in to %s\n", host);
	return 0;
}

int cmd_logout(int argc, char **argv)
{
	if (argc != 2 || argv[1][0] == '-') {
		bool help = argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
		fputs("usage: boxlite logout REGISTRY\n"
		      "Forgets the credentials stored for REGISTRY by boxlite login.\n",
		      help ? stdout : stderr);
		return help ? 0 : BL_EXIT_FAILURE;
	}
	bl_error_t err = BL_ERROR_INIT;
	if (bl_registry_logout(argv[1], &err) < 0)
		return cli_fail(&err);
	printf("logged out of %s\n", argv[1]);
	return 0;
}
