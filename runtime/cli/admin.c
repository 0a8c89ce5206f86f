/* boxlite cp / stop / rm / ls / logs / info / check. */
#include "cli.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static bool want_help(int argc, char **argv, const char *help)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(help, stdout);
			return true;
		}
	}
	return false;
}

static const char *state_dir_arg(int *argc, char ***argv)
{
	/* --state-dir DIR may precede the operands of the admin commands. */
	if (*argc >= 3 && !strcmp((*argv)[1], "--state-dir")) {
		const char *d = (*argv)[2];
		(*argv)[2] = (*argv)[0];
		*argv += 2;
		*argc -= 2;
		return d;
	}
	return NULL;
}

/* ------------------------------------------------------------ cp */

static const char cp_help[] =
    "usage: boxlite cp SRC DST\n"
    "\n"
    "Copies a file or directory into (DST = ID:DIR) or out of (SRC = ID:PATH) a\n"
    "running sandbox. The destination is a directory that must exist; the copy\n"
    "keeps the source's name and must not exist yet. The image needs tar; what a\n"
    "sandbox sends back is unpacked by boxlite itself under strict rules (no names\n"
    "outside the source's, no device nodes, FIFOs, hard links or setuid bits, no\n"
    "symlinks out, at most 1 GiB or $BOXLITE_COPY_MAX_BYTES).\n";

/* "ID:PATH" when the part before ':' names an existing sandbox. */
static bool split_ref(const char *arg, const char *state_dir, char *id, size_t id_len,
		      const char **path)
{
	const char *colon = strchr(arg, ':');
	if (!colon || colon == arg || (size_t)(colon - arg) >= id_len ||
	    memchr(arg, '/', (size_t)(colon - arg)))
		return false;
	snprintf(id, id_len, "%.*s", (int)(colon - arg), arg);
	bl_sandbox_info info;
	if (bl_sandbox_info_get(state_dir, id, &info, NULL) < 0)
		return false;
	*path = colon + 1;
	return true;
}

/* Copies through the library: the archive from the guest is extracted
 * in-process under the image-layer rules (bl_sandbox_copy_out), never by a
 * tar on the host. */
static int cp_with(const char *id, const char *state_dir, bool out, const char *src,
		   const char *dst)
{
	bl_error_t err = BL_ERROR_INIT;
	bl_sandbox *sb = NULL;
	if (bl_sandbox_attach(id, state_dir, &sb, &err) < 0)
		return cli_fail(&err);
	int r =
	    out ? bl_sandbox_copy_out(sb, src, dst, &err) : bl_sandbox_copy_in(sb, src, dst, &err);
	bl_sandbox_destroy(sb);
	return r < 0 ? cli_fail(&err) : 0;
}

int cmd_cp(int argc, char **argv)
{
	if (want_help(argc, argv, cp_help))
		return 0;
	const char *state_dir = state_dir_arg(&argc, &argv);
	if (argc != 3) {
		cli_error("cp needs SRC and DST (see boxlite cp --help)");
		return BL_EXIT_FAILURE;
	}
	char id[BL_SANDBOX_ID_MAX + 1];
	const char *path = NULL;
	signal(SIGPIPE, SIG_IGN);
	if (split_ref(argv[2], state_dir, id, sizeof(id), &path))
		return cp_with(id, state_dir, false, argv[1], *path ? path : "/");
	if (split_ref(argv[1], state_dir, id, sizeof(id), &path)) {
		struct stat st;
		if (stat(argv[2], &st) < 0 || !S_ISDIR(st.st_mode)) {
			cli_error("cp: destination %s is not a directory", argv[2]);
			return BL_EXIT_FAILURE;
		}
		return cp_with(id, state_dir, true, path, argv[2]);
	}
	cli_error("cp: one of SRC and DST must be ID:PATH of an existing sandbox");
	return BL_EXIT_FAILURE;
}

/* ------------------------------------------------------------ stop / rm */

static const char stop_help[] =
    "usage: boxlite stop ID...\n"
    "\n"
    "Stops sandboxes: their VMs end, their logs stay until `boxlite rm`.\n";

int cmd_stop(int argc, char **argv)
{
	if (want_help(argc, argv, stop_help))
		return 0;
	const char *state_dir = state_dir_arg(&argc, &argv);
	if (argc < 2) {
		cli_error("stop needs a sandbox id");
		return BL_EXIT_FAILURE;
	}
	int rc = 0;
	for (int i = 1; i < argc; i++) {
		bl_error_t err = BL_ERROR_INIT;
		bl_sandbox_info info;
		if (bl_sandbox_info_get(state_dir, argv[i], &info, &err) < 0) {
			rc = cli_fail(&err);
			continue;
		}
		if (strcmp(info.status, "running"))
			continue;
		bl_sandbox *sb = NULL;
		if (bl_sandbox_attach(argv[i], state_dir, &sb, &err) < 0 ||
		    bl_sandbox_stop(sb, &err) < 0) {
			rc = cli_fail(&err);
		}
		bl_sandbox_destroy(sb);
		/* The monitor exits right after its VM; wait so `stop; rm` works. */
		for (int k = 0; k < 1000 && info.pid > 0 && kill(info.pid, 0) == 0; k++)
			usleep(10000);
	}
	return rc;
}

static const char rm_help[] = "usage: boxlite rm [-f] ID...\n"
			      "\n"
			      "Removes stopped or dead sandboxes; -f stops running ones first.\n";

int cmd_rm(int argc, char **argv)
{
	if (want_help(argc, argv, rm_help))
		return 0;
	const char *state_dir = state_dir_arg(&argc, &argv);
	bool force = false;
	int i = 1;
	if (i < argc && !strcmp(argv[i], "-f")) {
		force = true;
		i++;
	}
	if (i >= argc) {
		cli_error("rm needs a sandbox id");
		return BL_EXIT_FAILURE;
	}
	int rc = 0;
	for (; i < argc; i++) {
		bl_error_t err = BL_ERROR_INIT;
		if (bl_sandbox_remove(state_dir, argv[i], force, &err) < 0)
			rc = cli_fail(&err);
	}
	(void)bl_sandbox_gc(state_dir, NULL);
	return rc;
}

/* ------------------------------------------------------------ ls / logs */

static const char ls_help[] = "usage: boxlite ls\n"
			      "\n"
			      "Lists sandboxes (ID, STATUS, OWNER PID, CREATED, IMAGE). Sandboxes\n"
			      "whose owner died are cleaned up first.\n";

int cmd_ls(int argc, char **argv)
{
	if (want_help(argc, argv, ls_help))
		return 0;
	const char *state_dir = state_dir_arg(&argc, &argv);
	bl_error_t err = BL_ERROR_INIT;
	int gone = bl_sandbox_gc(state_dir, &err);
	if (gone > 0)
		bl_info("removed %d dead sandbox(es)", gone);
	_cleanup_free_ bl_sandbox_info *v = NULL;
	size_t n = 0;
	if (bl_sandbox_list(state_dir, &v, &n, &err) < 0)
		return cli_fail(&err);
	printf("%-14s %-8s %-8s %-20s %s\n", "ID", "STATUS", "PID", "CREATED", "IMAGE");
	for (size_t i = 0; i < n; i++) {
		char when[32] = "-";
		time_t t = (time_t)v[i].created;
		struct tm tm;
		if (t && localtime_r(&t, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
		printf("%-14s %-8s %-8d %-20s %s\n", v[i].id, v[i].status, (int)v[i].pid, when,
		       v[i].image);
	}
	return 0;
}

static const char logs_help[] = "usage: boxlite logs ID\n"
				"\n"
				"Prints the guest console log of a sandbox (running or stopped).\n";

int cmd_logs(int argc, char **argv)
{
	if (want_help(argc, argv, logs_help))
		return 0;
	const char *state_dir = state_dir_arg(&argc, &argv);
	if (argc != 2) {
		cli_error("logs needs one sandbox id");
		return BL_EXIT_FAILURE;
	}
	bl_sandbox_info info;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_sandbox_info_get(state_dir, argv[1], &info, &err) < 0)
		return cli_fail(&err);
	/* The log is capped: console.log.1 holds what came before console.log.
	 * Guest bytes reach a terminal only sanitised. */
	bool tty = isatty(1);
	int shown = 0;
	for (int k = 0; k < 2; k++) {
		_cleanup_free_ char *path = bl_asprintf(
		    "%s/%s/console.log%s", bl_state_dir(state_dir), argv[1], k == 0 ? ".1" : "");
		_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		shown++;
		char buf[65536];
		ssize_t n;
		while ((n = read(fd, buf, sizeof(buf))) > 0) {
			if (tty)
				bl_sanitize_text(buf, (size_t)n, true);
			if (bl_write_full(1, buf, (size_t)n) < 0)
				break;
		}
	}
	if (!shown) {
		cli_error("no console log for %s", argv[1]);
		return BL_EXIT_FAILURE;
	}
	return 0;
}

/* ------------------------------------------------------------ info */

static const char info_help[] =
    "usage: boxlite info\n"
    "\n"
    "Prints the accelerator boxlite would choose and why, versions and\n"
    "the paths it uses.\n";

int cmd_info(int argc, char **argv)
{
	if (want_help(argc, argv, info_help))
		return 0;
	bl_host_info hi;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_host_info_get(&hi, &err) < 0)
		return cli_fail(&err);
	unsigned long lv = hi.libvirt_version;
	_cleanup_free_ char *kernel = bl_default_kernel();
	_cleanup_free_ char *initrd = bl_default_initrd();
	_cleanup_free_ char *store = bl_image_store_path(NULL);
	printf("boxlite:        %s\n", BOXLITE_VERSION);
	printf("accelerator:    %s\n", hi.accel_why);
	printf("libvirt:        %lu.%lu.%lu (default: embedded driver qemu:///embed)\n",
	       lv / 1000000, lv / 1000 % 1000, lv % 1000);
	printf("qemu:           /usr/bin/qemu-system-x86_64 -M microvm\n");
	printf("guest kernel:   %s%s\n", kernel, access(kernel, R_OK) ? " (missing)" : "");
	printf("guest initrd:   %s%s\n", initrd, access(initrd, R_OK) ? " (missing)" : "");
	printf("state dir:      %s\n", bl_state_dir(NULL));
	printf("image store:    %s\n", store);
	printf("libvirt caps:   %s\n", hi.caps_cache_dir);
	return 0;
}

/* ------------------------------------------------------------ ping */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Hidden: `boxlite __ping ID [N]` prints the median agent Ping round trip
 * through the monitor in ms (the transport's share of an exec). */
int cmd_ping(int argc, char **argv)
{
	if (argc < 2)
		return BL_EXIT_FAILURE;
	int n = argc > 2 ? atoi(argv[2]) : 20;
	if (n < 1 || n > 10000)
		n = 20;
	bl_error_t err = BL_ERROR_INIT;
	bl_sandbox *sb = NULL;
	if (bl_sandbox_attach(argv[1], NULL, &sb, &err) < 0)
		return cli_fail(&err);
	double *ms = bl_malloc0((size_t)n * sizeof(double));
	int rc = 0;
	for (int i = 0; i < n && rc == 0; i++) {
		uint64_t t0 = bl_now_monotonic_ns();
		if (bl_sandbox_ping(sb, NULL, 0, &err) < 0)
			rc = cli_fail(&err);
		ms[i] = (double)(bl_now_monotonic_ns() - t0) / 1e6;
	}
	if (rc == 0) {
		qsort(ms, (size_t)n, sizeof(double), cmp_double);
		printf("%.2f\n", ms[n / 2]);
	}
	free(ms);
	bl_sandbox_destroy(sb);
	return rc;
}

/* ------------------------------------------------------------ check */

static const char check_help[] =
    "usage: boxlite check\n"
    "\n"
    "Host self-test: boots the guest kernel and initramfs in a probe VM that\n"
    "mounts a virtio-fs share and answers on the agent channel, then reports\n"
    "OK with the timing, or what failed.\n";

int cmd_check(int argc, char **argv)
{
	if (want_help(argc, argv, check_help))
		return 0;
	cli_log_setup(argc > 1 && !strcmp(argv[1], "-v"));
	_cleanup_free_ char *kernel = bl_default_kernel();
	_cleanup_free_ char *initrd = bl_default_initrd();
	bl_probe_result res;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_host_probe(NULL, kernel, initrd, &res, &err) < 0) {
		if (res.console_tail[0])
			fprintf(stderr, "guest console (end):\n%s\n", res.console_tail);
		bl_error_prefix(&err, "check failed");
		return cli_fail(&err);
	}
	printf("OK: %s; VM started in %.2f s, guest answered over virtio-fs and the agent "
	       "channel at %.2f s\n",
	       res.accel_why, res.started_s, res.answered_s);
	return 0;
}
