/*
 * containerd-shim-boxlite-v2 entry point: `start` (listen, re-exec the
 * server with the listener as fd 3, print the address), `delete` (clean up
 * after a dead shim, print a DeleteResponse), `-v`, and the server itself.
 */
#include "shim.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"
#include "bl_digest.h"
#include "task.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static void usage_error(const char *what, const char *arg)
{
	fprintf(stderr, SHIM_NAME ": %s: %s\n", what, arg);
	exit(2);
}

static const char shim_usage[] =
    "usage: " SHIM_NAME " [FLAGS] [start|delete]\n"
    "\n"
    "The containerd runtime v2 shim of boxlite (runtime io.containerd.boxlite.v2):\n"
    "containerd runs it to run a container, or a Kubernetes pod, in a boxlite\n"
    "micro-VM. It is not meant to be run by hand.\n"
    "\n"
    "Actions:\n"
    "  start            start (or find) the shim server of the task's group, print its address\n"
    "  delete           clean up after a shim that died: kill its VM, unmount the rootfs\n"
    "  (none)           serve the task API on the listener passed as fd 3\n"
    "\n"
    "Flags (as containerd passes them; -flag value, -flag=value or --flag):\n"
    "  -namespace NS    containerd namespace (default: $NAMESPACE)\n"
    "  -address ADDR    containerd's ttrpc address (events are published to it)\n"
    "  -publish-binary PATH  containerd binary (accepted; events go over ttrpc)\n"
    "  -id ID           the task (container) id\n"
    "  -bundle DIR      the OCI bundle (default: the working directory)\n"
    "  -socket PATH     accepted (the socket is /run/containerd/s/<hash>, as for runc's shim)\n"
    "  -debug           debug logging to the bundle's log\n"
    "  -v               print the version and exit\n"
    "  -info            not implemented\n"
    "  -h, -help        print this help and exit\n"
    "\n"
    "The guest kernel and initramfs come from $BOXLITE_KERNEL / $BOXLITE_INITRD or\n"
    "PREFIX/lib/boxlite beside the shim's own PREFIX/bin.\n";

/* Go's flag package: -x v, -x=v, --x; bools take no separate value. */
static void parse_flags(int argc, char **argv, shim_flags *f)
{
	static const struct {
		const char *name;
		size_t off;
	} strs[] = {
	    {"namespace", offsetof(shim_flags, namespace_)},
	    {"address", offsetof(shim_flags, address)},
	    {"publish-binary", offsetof(shim_flags, publish_binary)},
	    {"id", offsetof(shim_flags, id)},
	    {"bundle", offsetof(shim_flags, bundle)},
	    {"socket", offsetof(shim_flags, socket)},
	};
	static const struct {
		const char *name;
		size_t off;
	} bools[] = {
	    {"debug", offsetof(shim_flags, debug)},
	    {"v", offsetof(shim_flags, version)},
	    {"info", offsetof(shim_flags, info)},
	};
	int i = 1;
	for (; i < argc; i++) {
		char *a = argv[i];
		if (a[0] != '-' || !a[1])
			break;
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		a += a[1] == '-' ? 2 : 1;
		char name[64];
		const char *val = NULL;
		const char *eq = strchr(a, '=');
		size_t nl = eq ? (size_t)(eq - a) : strlen(a);
		if (nl >= sizeof(name))
			usage_error("flag provided but not defined", argv[i]);
		memcpy(name, a, nl);
		name[nl] = '\0';
		if (eq)
			val = eq + 1;
		if (!strcmp(name, "h") || !strcmp(name, "help")) {
			fputs(shim_usage, stdout);
			exit(0);
		}
		bool done = false;
		for (size_t k = 0; k < BL_ARRAY_SIZE(bools) && !done; k++) {
			if (strcmp(name, bools[k].name))
				continue;
			*(bool *)((char *)f + bools[k].off) =
			    !val || !strcmp(val, "true") || !strcmp(val, "1");
			done = true;
		}
		for (size_t k = 0; k < BL_ARRAY_SIZE(strs) && !done; k++) {
			if (strcmp(name, strs[k].name))
				continue;
			if (!val) {
				if (i + 1 >= argc)
					usage_error("flag needs an argument", name);
				val = argv[++i];
			}
			*(const char **)((char *)f + strs[k].off) = val;
			done = true;
		}
		if (!done)
			usage_error("flag provided but not defined", name);
	}
	if (i < argc)
		f->action = argv[i];
}

/* /run/containerd/s/hex(sha256(address/ns/group)), as containerd's shims do. */
static char *socket_path(const shim_flags *f, const char *group)
{
	_cleanup_free_ char *key =
	    bl_asprintf("%s/%s/%s", f->address ? f->address : "", f->namespace_, group);
	char hex[BL_SHA256_HEX_LEN + 1];
	bl_sha256_hex(key, strlen(key), hex);
	return bl_asprintf("%s/%s", SHIM_SOCKET_ROOT, hex);
}

static int unix_addr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path) || strlen(path) > SHIM_SOCKET_MAX)
		return -ENAMETOOLONG;
	memcpy(sa->sun_path, path, strlen(path));
	return 0;
}

static bool socket_alive(const char *path)
{
	struct sockaddr_un sa;
	if (unix_addr(path, &sa) < 0)
		return false;
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	return fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
}

/* Listens on path; -EADDRINUSE when a live shim already serves it. */
static int listen_socket(const char *path, bl_error_t *err)
{
	struct sockaddr_un sa;
	if (unix_addr(path, &sa) < 0)
		return bl_set_error(err, BL_EINVAL, "socket path %s too long", path);
	if (bl_mkdir_p(SHIM_SOCKET_ROOT, 0700, err) < 0)
		return -BL_ESYSTEM;
	for (int attempt = 0; attempt < 2; attempt++) {
		_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM, 0); /* inherited as fd 3 */
		if (fd < 0)
			return bl_set_error_errno(err, errno, "socket");
		mode_t old = umask(0177);
		int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
		int e = errno;
		umask(old);
		if (r == 0) {
			if (listen(fd, 128) < 0)
				return bl_set_error_errno(err, errno, "listen %s", path);
			return steal_fd(&fd);
		}
		if (e != EADDRINUSE)
			return bl_set_error_errno(err, e, "bind %s", path);
		if (socket_alive(path))
			return -EADDRINUSE;
		(void)unlink(path); /* a dead shim's leftover */
	}
	return bl_set_error(err, BL_ESYSTEM, "bind %s: address in use", path);
}

static int write_small(const char *name, const char *text)
{
	_cleanup_free_ char *tmp = bl_asprintf("%s.tmp", name);
	if (bl_write_file(tmp, text, strlen(text), 0644, NULL) < 0 || rename(tmp, name) < 0) {
		(void)unlink(tmp);
		return -1;
	}
	return 0;
}

/* Re-executes this binary without the action, the listener as fd 3. */
static pid_t spawn_server(int lfd, char **argv, int argc, bl_error_t *err)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return bl_set_error_errno(err, errno, "readlink /proc/self/exe");
	exe[n] = '\0';
	_cleanup_free_ char **nargv = bl_malloc0(((size_t)argc + 1) * sizeof(char *));
	int k = 0;
	for (int i = 0; i < argc; i++)
		if (strcmp(argv[i], "start") || i != argc - 1)
			nargv[k++] = argv[i];
	nargv[k] = NULL;
	pid_t pid = fork();
	if (pid < 0)
		return bl_set_error_errno(err, errno, "fork");
	if (pid == 0) {
		(void)setsid();
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
		}
		if (lfd != 3) {
			if (dup2(lfd, 3) < 0)
				_exit(127);
		} else {
			int fl = fcntl(3, F_GETFD);
			(void)fcntl(3, F_SETFD, fl & ~FD_CLOEXEC);
		}
		execv(exe, nargv);
		_exit(127);
	}
	return pid;
}

static int action_start(int argc, char **argv, const shim_flags *f)
{
	bl_error_t err = BL_ERROR_INIT;
	if (!f->id || !f->namespace_) {
		fprintf(stderr, SHIM_NAME ": start needs -id and -namespace\n");
		return 1;
	}
	if (f->bundle && chdir(f->bundle) < 0) {
		fprintf(stderr, SHIM_NAME ": bundle %s: %s\n", f->bundle, strerror(errno));
		return 1;
	}
	shim_spec spec = {0};
	if (shim_spec_load(".", &spec, &err) < 0) {
		fprintf(stderr, SHIM_NAME ": %s\n", err.msg);
		return 1;
	}
	_cleanup_free_ char *group = shim_group_id(&spec, f->id);
	shim_spec_free(&spec);
	_cleanup_free_ char *path = socket_path(f, group);
	_cleanup_free_ char *address = bl_asprintf("unix://%s", path);
	int lfd = listen_socket(path, &err);
	if (lfd == -EADDRINUSE) {
		/* A pod container: the pod's shim already serves this group. */
		if (write_small("address", address) < 0) {
			fprintf(stderr, SHIM_NAME ": write address: %s\n", strerror(errno));
			return 1;
		}
		fputs(address, stdout);
		return 0;
	}
	if (lfd < 0) {
		fprintf(stderr, SHIM_NAME ": %s\n", err.msg);
		return 1;
	}
	pid_t pid = spawn_server(lfd, argv, argc, &err);
	(void)close(lfd);
	if (pid < 0) {
		(void)unlink(path);
		fprintf(stderr, SHIM_NAME ": %s\n", err.msg);
		return 1;
	}
	char pidtext[32];
	snprintf(pidtext, sizeof(pidtext), "%d", (int)pid);
	if (write_small("shim.pid", pidtext) < 0 || write_small("address", address) < 0) {
		(void)kill(pid, SIGKILL);
		(void)unlink(path);
		fprintf(stderr, SHIM_NAME ": write shim.pid/address: %s\n", strerror(errno));
		return 1;
	}
	fputs(address, stdout);
	return 0;
}

/* The pid and sandbox a task recorded in its bundle (boxlite.json). */
static void read_bundle_state(pid_t *pid)
{
	_cleanup_free_ char *buf = NULL;
	*pid = 0;
	if (bl_read_file(SHIM_STATE_FILE, 4096, &buf, NULL, NULL) < 0)
		return;
	const char *p = strstr(buf, "\"pid\":");
	if (p)
		*pid = (pid_t)strtol(p + 6, NULL, 10);
}

static bool proc_is_shim(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	char exe[PATH_MAX];
	ssize_t n = readlink(path, exe, sizeof(exe) - 1);
	if (n <= 0)
		return false;
	exe[n] = '\0';
	return strstr(exe, SHIM_NAME) != NULL;
}

/* Exists and is not a zombie. */
static bool proc_alive(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	_cleanup_free_ char *buf = NULL;
	if (bl_read_file(path, 4096, &buf, NULL, NULL) < 0)
		return false;
	const char *p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* Cleans up after a shim containerd cannot reach: its VM, mounts, socket. */
static int action_delete(const shim_flags *f)
{
	if (!f->id || !f->namespace_) {
		fprintf(stderr, SHIM_NAME ": delete needs -id and -namespace\n");
		return 1;
	}
	if (f->bundle && chdir(f->bundle) < 0) {
		fprintf(stderr, SHIM_NAME ": bundle %s: %s\n", f->bundle, strerror(errno));
		return 1;
	}
	pid_t task_pid = 0;
	read_bundle_state(&task_pid);
	shim_spec spec = {0};
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_free_ char *group = NULL;
	if (shim_spec_load(".", &spec, &err) == 0)
		group = shim_group_id(&spec, f->id);
	else
		group = bl_strdup(f->id);
	bool pod_member = spec.container_type && !strcmp(spec.container_type, "container");
	shim_spec_free(&spec);
	/* A shim still alive but unreachable owns the VM: end it first. */
	_cleanup_free_ char *pidbuf = NULL;
	if (!pod_member && bl_read_file("shim.pid", 64, &pidbuf, NULL, NULL) == 0) {
		pid_t sp = (pid_t)strtol(pidbuf, NULL, 10);
		if (sp > 1 && proc_is_shim(sp)) {
			(void)kill(sp, SIGKILL);
			for (int i = 0; i < 500 && proc_alive(sp); i++)
				usleep(10000);
		}
	}
	char sid[BL_SANDBOX_ID_MAX + 1];
	shim_sandbox_id(f->namespace_, group, sid, sizeof(sid));
	bl_error_t rerr = BL_ERROR_INIT;
	int rr = pod_member ? 0 : bl_sandbox_remove(NULL, sid, false, &rerr);
	for (int i = 0; rr < 0 && rerr.code == BL_ESTATE && i < 20; i++) {
		/* Its owner is still going away. */
		usleep(100000);
		bl_error_clear(&rerr);
		rr = bl_sandbox_remove(NULL, sid, false, &rerr);
	}
	if (rr < 0 && rerr.code != BL_ENOTFOUND)
		fprintf(stderr, SHIM_NAME ": remove sandbox %s: %s\n", sid, rerr.msg);
	bl_error_t uerr = BL_ERROR_INIT;
	if (shim_unmount_all("rootfs", &uerr) < 0)
		fprintf(stderr, SHIM_NAME ": %s\n", uerr.msg);
	if (!pod_member) {
		_cleanup_free_ char *path = socket_path(f, group);
		(void)unlink(path);
	}
	Containerd__Task__V2__DeleteResponse resp = CONTAINERD__TASK__V2__DELETE_RESPONSE__INIT;
	Containerd__Types__Timestamp at = CONTAINERD__TYPES__TIMESTAMP__INIT;
	uint64_t now = shim_now_ns();
	at.seconds = (int64_t)(now / 1000000000ull);
	at.nanos = (int32_t)(now % 1000000000ull);
	resp.pid = (uint32_t)task_pid;
	resp.exit_status = 128 + SIGKILL;
	resp.exited_at = &at;
	uint8_t buf[128];
	size_t n = containerd__task__v2__delete_response__pack(&resp, buf);
	return bl_write_full(1, buf, n) < 0 ? 1 : 0;
}

static int open_log(void)
{
	/* containerd holds the bundle's log FIFO open for reading (O_RDWR). */
	int fd = open("log", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -1;
	return fd;
}

static void remove_own_socket(void)
{
	struct sockaddr_un sa;
	socklen_t len = sizeof(sa);
	memset(&sa, 0, sizeof(sa));
	if (getsockname(3, (struct sockaddr *)&sa, &len) == 0 && sa.sun_path[0] == '/')
		(void)unlink(sa.sun_path);
}

static int serve(const shim_flags *f)
{
	/* Before any thread: the QEMU/virtiofsd libvirt daemonizes are reaped here. */
	(void)bl_host_prepare();
	signal(SIGPIPE, SIG_IGN);
	if (f->bundle && chdir(f->bundle) < 0)
		return 1;
	int log = open_log();
	if (log >= 0) {
		(void)dup2(log, 2);
		(void)close(log);
		bl_log_setup(2, f->debug ? BL_LOG_DEBUG : BL_LOG_INFO, SHIM_NAME);
	} else {
		bl_log_setup(-1, BL_LOG_ERROR, SHIM_NAME);
	}
	const char *ttrpc_addr = getenv("TTRPC_ADDRESS");
	_cleanup_free_ char *fallback = f->address ? bl_asprintf("%s.ttrpc", f->address) : NULL;
	shim_publisher *pub =
	    shim_publisher_new(ttrpc_addr && *ttrpc_addr ? ttrpc_addr : fallback, f->namespace_);
	shim_service *svc = shim_service_new(f, pub);
	ttrpc_server *srv = ttrpc_server_new();
	bl_error_t err = BL_ERROR_INIT;
	ttrpc_server_require_same_uid(srv, true);
	if (shim_service_register(svc, srv, &err) < 0 ||
	    ttrpc_server_add_listener(srv, 3, &err) < 0 || ttrpc_server_start(srv, &err) < 0) {
		bl_error_log("serve: %s", err.msg);
		remove_own_socket();
		return 1;
	}
	bl_info("serving %s/%s (pid %d)", f->namespace_, f->id, (int)getpid());
	shim_service_wait_shutdown(svc);
	remove_own_socket();
	ttrpc_server_shutdown(srv);
	shim_publisher_free(pub);
	ttrpc_server_free(srv);
	shim_service_free(svc);
	bl_info("exiting");
	return 0;
}

int main(int argc, char **argv)
{
	shim_flags f = {0};
	parse_flags(argc, argv, &f);
	if (f.version) {
		printf("%s:\n  Version:  %s\n  Runtime:  %s\n", SHIM_NAME, BOXLITE_VERSION,
		       SHIM_RUNTIME);
		return 0;
	}
	if (f.info) {
		fprintf(stderr, SHIM_NAME ": -info is not implemented\n");
		return 1;
	}
	if (!f.namespace_)
		f.namespace_ = getenv("NAMESPACE");
	if (!f.action)
		return serve(&f);
	if (!strcmp(f.action, "start"))
		return action_start(argc, argv, &f);
	if (!strcmp(f.action, "delete"))
		return action_delete(&f);
	fprintf(stderr, SHIM_NAME ": unknown action %s\n", f.action);
	return 2;
}
