/*
 * Sandbox lifecycle: resolve the image, make the state directory, boot the VM,
 * wait for the agent, set the guest up and create the container; and the way
 * back, which releases everything on every path (also at the deadline and on
 * cancellation).
 */
#include "sandbox_internal.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"
#include "image.h"
#include "net.h"
#include "pool.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* A long-lived sandbox's init when the agent has no built-in pause process. */
static const char *const pause_args[] = {
    "/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done", NULL};

static double ms_since(uint64_t t0)
{
	return (double)(bl_now_monotonic_ns() - t0) / 1e6;
}

static char **strv_copy(const char *const *v)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	if (!v)
		return NULL;
	char **c = bl_malloc0((n + 1) * sizeof(char *));
	for (size_t i = 0; i < n; i++)
		c[i] = bl_strdup(v[i]);
	return c;
}

/* ------------------------------------------------------------ paths */

/* NAME beside the program (a build tree), else in the program's own prefix
 * (PREFIX/bin/boxlite -> PREFIX/lib/boxlite/NAME), so a packaged /usr/bin
 * never picks up a /usr/local install's guest. */
static char *exe_sibling(const char *name)
{
	char exe[4096];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return NULL;
	exe[n] = '\0';
	const char *dir = dirname(exe);
	char *p = bl_asprintf("%s/%s", dir, name);
	if (access(p, R_OK) == 0)
		return p;
	free(p);
	_cleanup_free_ char *up = bl_asprintf("%s/../lib/boxlite/%s", dir, name);
	return access(up, R_OK) == 0 ? realpath(up, NULL) : NULL;
}

static char *default_guest_file(const char *env, const char *name)
{
	const char *e = getenv(env);
	if (e && *e)
		return bl_strdup(e);
	const char *build = getenv("BOXLITE_BUILD");
	if (build && *build) {
		char *p = bl_asprintf("%s/%s", build, name);
		if (access(p, R_OK) == 0)
			return p;
		free(p);
	}
	char *p = exe_sibling(name);
	if (p)
		return p;
	static const char *const dirs[] = {"/usr/local/lib/boxlite", "/usr/lib/boxlite"};
	for (size_t i = 0; i < BL_ARRAY_SIZE(dirs); i++) {
		p = bl_asprintf("%s/%s", dirs[i], name);
		if (access(p, R_OK) == 0)
			return p;
		free(p);
	}
	return bl_asprintf("/usr/local/lib/boxlite/%s", name);
}

char *bl_default_kernel(void)
{
	return default_guest_file("BOXLITE_KERNEL", "vmlinux");
}

char *bl_default_initrd(void)
{
	return default_guest_file("BOXLITE_INITRD", "initramfs.cpio");
}

/* ------------------------------------------------------------ host */

int bl_host_prepare(void)
{
	/* Orphaned QEMU/virtiofsd come to us to be reaped (see vm.c, reaper). */
	return prctl(PR_SET_CHILD_SUBREAPER, 1) < 0 ? -errno : 0;
}

/* ------------------------------------------------------------ share */

void bl_share_unmount(const char *sandbox_dir)
{
	/* The share and every container bind below it, at once. */
	static const char *const names[] = {BL_SHARE_DIR, BL_SHARE_DIR_OLD};
	for (size_t i = 0; i < BL_ARRAY_SIZE(names); i++) {
		_cleanup_free_ char *dst = bl_asprintf("%s/%s", sandbox_dir, names[i]);
		if (umount2(dst, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL &&
		    errno != ENOENT)
			bl_warn("unmount %s: %s", dst, strerror(errno));
		(void)rmdir(dst);
	}
}

/* ------------------------------------------------------------ accessors */

const char *bl_sandbox_id(const bl_sandbox *sb)
{
	return sb->id;
}

const char *bl_sandbox_dir(const bl_sandbox *sb)
{
	return sb->dir;
}

const char *bl_sandbox_accel_reason(const bl_sandbox *sb)
{
	return sb->accel_why;
}

void bl_sandbox_get_timings(const bl_sandbox *sb, bl_sandbox_timings *ret)
{
	*ret = sb->t;
}

pid_t bl_sandbox_qemu_pid(const bl_sandbox *sb)
{
	if (sb->pooled)
		return sb->pool_qemu_pid;
	return sb->vm ? bl_vm_qemu_pid(sb->vm) : 0;
}

int bl_sandbox_port(const bl_sandbox *sb, unsigned guest_port, const char *proto, char *addr,
		    size_t addr_len, unsigned *host_port, bl_error_t *err)
{
	bool udp = proto && !strcmp(proto, "udp");
	if (proto && !udp && strcmp(proto, "tcp"))
		return bl_set_error(err, BL_EINVAL, "protocol '%.20s' is not tcp or udp", proto);
	uint32_t a;
	if (!sb->net || bl_net_port_lookup(sb->net, guest_port, udp, &a, host_port) < 0)
		return bl_set_error(err, BL_ENOTFOUND, "guest port %u/%s is not published",
				    guest_port, udp ? "udp" : "tcp");
	struct in_addr in = {.s_addr = a};
	if (!inet_ntop(AF_INET, &in, addr, (socklen_t)addr_len))
		return bl_set_error(err, BL_EINVAL, "address buffer too small");
	return 0;
}

int bl_sandbox_net_refused(bl_sandbox *sb, char **ret, bl_error_t *err)
{
	if (!sb->net)
		return bl_set_error(err, BL_ESTATE, "sandbox %s has no network (owned by %s)",
				    sb->id, sb->owned ? "this process" : "another process");
	return bl_net_refused(sb->net, ret, err);
}

bl_vm *bl_sandbox_vm(bl_sandbox *sb)
{
	return sb->vm;
}

char *bl_sandbox_console_tail(const bl_sandbox *sb, size_t max)
{
	_cleanup_free_ char *path = bl_asprintf("%s/console.log", sb->dir);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return NULL;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return NULL;
	off_t off = st.st_size > (off_t)max ? st.st_size - (off_t)max : 0;
	char *buf = bl_malloc0(max + 1);
	ssize_t n = pread(fd, buf, max, off);
	if (n <= 0) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	/* Console bytes come from the guest: keep them printable. */
	bl_sanitize_text(buf, (size_t)n, true);
	return buf;
}

/* ------------------------------------------------------------ deadline */

int bl_sandbox_map_error(bl_sandbox *sb, int r, bl_error_t *err)
{
	if (r >= 0)
		return r;
	pthread_mutex_lock(&sb->lock);
	bool timed_out = sb->timed_out, cancelled = sb->cancelled;
	pthread_mutex_unlock(&sb->lock);
	if (timed_out)
		return bl_set_error(err, BL_ETIMEOUT, "timed out after %u s", sb->timeout_sec);
	if (cancelled)
		return bl_set_error(err, BL_ECANCELED, "sandbox cancelled");
	/* A VM process killed from outside: say which, not "agent lost". The
	 * reaper may be a moment behind the channel's EOF. */
	const char *why = sb->vm ? bl_vm_dead_reason(sb->vm) : NULL;
	for (int i = 0; sb->vm && !why && r == -BL_EAGENTLOST && i < 20; i++) {
		usleep(10000);
		why = bl_vm_dead_reason(sb->vm);
	}
	/* The code stays (callers test BL_EAGENTLOST); the message says why. */
	if (why)
		return bl_set_error(err, -r, "sandbox ended: %s", why);
	return r;
}

/* Kills QEMU at once (a deadline or a cancel allows no graceful shutdown),
 * then lets libvirt tidy up; serialized by kill_lock, never under sb->lock so
 * callers waiting on the state are not held up. */
static void kill_vm(bl_sandbox *sb)
{
	pthread_mutex_lock(&sb->lock);
	bl_agent *a = sb->agent;
	if (a)
		bl_agent_close(a);
	pthread_mutex_unlock(&sb->lock);
	pthread_mutex_lock(&sb->kill_lock);
	if (sb->pooled && sb->pool_fd >= 0) {
		/* The pool's owner destroys it (and says when it is gone). */
		bl_error_t err = BL_ERROR_INIT;
		if (bl_pool_lease_call(sb->pool_fd, BL_POOL_OP_KILL, &err) < 0)
			bl_warn("sandbox %s: %s", sb->id, err.msg);
	}
	if (sb->vm) {
		pid_t qpid = bl_vm_qemu_pid(sb->vm);
		if (qpid > 0)
			(void)kill(qpid, SIGKILL);
		bl_error_t err = BL_ERROR_INIT;
		if (bl_vm_destroy(sb->vm, &err) < 0)
			bl_warn("sandbox %s: %s", sb->id, err.msg);
	}
	pthread_mutex_unlock(&sb->kill_lock);
}

static void *timer_main(void *arg)
{
	bl_sandbox *sb = arg;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += sb->timeout_sec;
	pthread_mutex_lock(&sb->lock);
	while (!sb->closing) {
		if (pthread_cond_timedwait(&sb->cond, &sb->lock, &ts) == ETIMEDOUT)
			break;
	}
	bool fire = !sb->closing;
	if (fire)
		sb->timed_out = true;
	pthread_mutex_unlock(&sb->lock);
	if (fire) {
		bl_info("sandbox %s: timed out after %u s, destroying the VM", sb->id,
			sb->timeout_sec);
		kill_vm(sb);
	}
	return NULL;
}

static int start_timer(bl_sandbox *sb, bl_error_t *err)
{
	if (!sb->timeout_sec)
		return 0;
	int r = pthread_create(&sb->timer, NULL, timer_main, sb);
	if (r)
		return bl_set_error_errno(err, r, "deadline thread");
	sb->timer_running = true;
	return 0;
}

static void stop_timer(bl_sandbox *sb)
{
	pthread_mutex_lock(&sb->lock);
	sb->closing = true;
	pthread_cond_broadcast(&sb->cond);
	pthread_mutex_unlock(&sb->lock);
	if (sb->timer_running) {
		pthread_join(sb->timer, NULL);
		sb->timer_running = false;
	}
}

void bl_sandbox_cancel(bl_sandbox *sb)
{
	if (!sb)
		return;
	pthread_mutex_lock(&sb->lock);
	sb->cancelled = true;
	bool owned = sb->owned;
	if (!owned && sb->agent)
		bl_agent_close(sb->agent);
	pthread_mutex_unlock(&sb->lock);
	if (owned)
		kill_vm(sb);
}

/* ------------------------------------------------------------ create */

static bl_sandbox *sandbox_new(void)
{
	bl_sandbox *sb = bl_malloc0(sizeof(*sb));
	pthread_mutex_init(&sb->lock, NULL);
	pthread_mutex_init(&sb->kill_lock, NULL);
	pthread_mutex_init(&sb->share_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sb->cond, &ca);
	pthread_condattr_destroy(&ca);
	sb->rootfs_fd = -1;
	sb->pool_fd = -1;
	return sb;
}

static void sandbox_free_fields(bl_sandbox *sb)
{
	bl_agent_free(sb->agent);
	bl_vm_free(sb->vm);
	/* Still here: kept for a QEMU that may run (release_net). */
	bl_net_abandon(steal_pointer(&sb->net));
	bl_image_defaults_clear(&sb->img);
	bl_strv_free(sb->args);
	bl_strv_free(sb->env);
	free(sb->cwd);
	free(sb->user);
	free(sb->image);
	free(sb->rootfs);
	if (sb->rootfs_fd >= 0)
		close(sb->rootfs_fd);
	sb->rootfs_fd = -1;
	free(sb->share);
	free(sb->dir);
	free(sb->state_root);
	if (sb->pool_fd >= 0)
		close(sb->pool_fd);
	pthread_mutex_destroy(&sb->lock);
	pthread_mutex_destroy(&sb->kill_lock);
	pthread_mutex_destroy(&sb->share_lock);
	pthread_cond_destroy(&sb->cond);
	free(sb);
}

static int check_options(const bl_sandbox_options *o, bl_error_t *err)
{
	if (!o->network && ((o->net_allow && o->net_allow[0]) || (o->net_deny && o->net_deny[0]) ||
			    (o->net_publish && o->net_publish[0])))
		return bl_set_error(err, BL_EINVAL,
				    "network rules and published ports need the network option");
	if (o->memory_mib && (o->memory_mib < 64 || o->memory_mib > 65536))
		return bl_set_error(err, BL_EINVAL, "memory %u MiB out of range (64-65536)",
				    o->memory_mib);
	if (o->vcpus > 64)
		return bl_set_error(err, BL_EINVAL, "cpus %u out of range (1-64)", o->vcpus);
	if (o->disk_mib > 1024 * 1024)
		return bl_set_error(err, BL_EINVAL, "disk %u MiB out of range", o->disk_mib);
	if (o->bare && (o->image || o->rootfs || o->args))
		return bl_set_error(err, BL_EINVAL,
				    "a bare sandbox has no built-in container: give no image, "
				    "rootfs or command (use bl_container_create)");
	if (o->image && o->rootfs)
		return bl_set_error(err, BL_EINVAL,
				    "give an image or a rootfs directory, not both");
	if (o->id && !bl_sandbox_id_valid(o->id))
		return bl_set_error(
		    err, BL_EINVAL,
		    "sandbox name '%.40s' must be 1-32 of [A-Za-z0-9_.-], not starting with '.'",
		    o->id);
	if (o->cwd && o->cwd[0] != '/')
		return bl_set_error(err, BL_EINVAL, "working directory '%s' is not absolute",
				    o->cwd);
	for (size_t i = 0; o->env && o->env[i]; i++)
		if (!bl_spec_valid_env(o->env[i]))
			return bl_set_error(err, BL_EINVAL, "environment entry '%s' is not K=V",
					    o->env[i]);
	return 0;
}

static int resolve_image(bl_sandbox *sb, const bl_sandbox_options *o, bl_error_t *err)
{
	uint64_t t0 = bl_now_monotonic_ns();
	_cleanup_free_ char *config = NULL;
	if (o->rootfs) {
		/* Opened once; everything later goes through this descriptor. */
		struct stat st;
		sb->rootfs_fd = open(o->rootfs, O_PATH | O_CLOEXEC);
		if (sb->rootfs_fd < 0)
			return bl_set_error(err, BL_ENOTFOUND, "rootfs directory %s: %s", o->rootfs,
					    strerror(errno));
		if (fstat(sb->rootfs_fd, &st) < 0 || !S_ISDIR(st.st_mode))
			return bl_set_error(err, BL_EINVAL, "rootfs %s is not a directory",
					    o->rootfs);
		char link[64];
		snprintf(link, sizeof(link), "/proc/self/fd/%d", sb->rootfs_fd);
		sb->rootfs = realpath(link, NULL);
		if (!sb->rootfs)
			return bl_set_error_errno(err, errno, "rootfs %s", o->rootfs);
		sb->image = bl_strdup(sb->rootfs);
	} else {
		const char *ref = o->image ? o->image : BL_DEFAULT_IMAGE;
		int r = bl_image_resolve(ref, o->image_store, &sb->rootfs, &config, err);
		if (r < 0)
			return bl_error_prefix(err, "image");
		sb->image = bl_strdup(ref);
		sb->rootfs_fd = open(sb->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (sb->rootfs_fd < 0)
			return bl_set_error_errno(err, errno, "image %s: open %s", ref, sb->rootfs);
	}
	int r = bl_image_defaults_parse(config, &sb->img, err);
	if (r < 0)
		return bl_error_prefix(err, "image %s", sb->image);
	sb->t.image_ms = ms_since(t0);
	return 0;
}

static int make_state_dir(bl_sandbox *sb, const bl_sandbox_options *o, bl_error_t *err)
{
	sb->state_root = bl_strdup(bl_state_dir(o->state_dir));
	/* The parents stay traversable (the default's parent /run/boxlite holds
	 * the libvirt roots QEMU must reach); the state root and each sandbox
	 * directory are root's only: base.json holds the options (secrets in
	 * -e), and libvirt itself opens the console log and agent.sock for QEMU. */
	_cleanup_free_ char *parent = bl_strdup(sb->state_root);
	char *slash = strrchr(parent, '/');
	if (slash && slash != parent) {
		*slash = '\0';
		(void)bl_mkdir_p(parent, 0711, NULL);
	}
	int r = bl_mkdir_p(sb->state_root, 0700, err);
	if (r < 0)
		return bl_error_prefix(err, "state directory");
	if (chmod(sb->state_root, 0700) < 0)
		return bl_set_error_errno(err, errno, "chmod %s", sb->state_root);
	for (int attempt = 0; attempt < 8; attempt++) {
		if (o->id)
			snprintf(sb->id, sizeof(sb->id), "%s", o->id);
		else
			bl_sandbox_random_id(sb->id, sizeof(sb->id));
		free(sb->dir);
		sb->dir = bl_asprintf("%s/%s", sb->state_root, sb->id);
		if (mkdir(sb->dir, 0700) == 0)
			return 0;
		if (errno != EEXIST || o->id) {
			int e = errno;
			free(steal_pointer(&sb->dir));
			if (e == EEXIST)
				return bl_set_error(err, BL_EEXIST, "sandbox %s already exists",
						    o->id);
			return bl_set_error_errno(err, e, "mkdir %s/%s", sb->state_root, sb->id);
		}
	}
	free(steal_pointer(&sb->dir));
	return bl_set_error(err, BL_ESYSTEM, "could not pick a free sandbox id");
}

static void copy_process_layer(bl_sandbox *sb, const bl_sandbox_options *o)
{
	sb->args = strv_copy(o->args);
	sb->env = strv_copy(o->env);
	sb->cwd = o->cwd ? bl_strdup(o->cwd) : NULL;
	sb->user = o->user ? bl_strdup(o->user) : NULL;
	sb->stdin_open = o->stdin_open;
	sb->layer = (bl_spec_process){
	    .args = (const char *const *)sb->args,
	    .env = (const char *const *)sb->env,
	    .cwd = sb->cwd,
	    .user = sb->user,
	    .terminal = o->tty,
	};
}

static int boot_vm(bl_sandbox *sb, const bl_sandbox_options *o, bl_error_t *err)
{
	bl_accel accel;
	int r = bl_accel_choose(o->accel, &accel, sb->accel_why, sizeof(sb->accel_why), err);
	if (r < 0)
		return r;
	bl_info("sandbox %s: accelerator %s", sb->id, sb->accel_why);
	_cleanup_free_ char *kernel = o->kernel ? bl_strdup(o->kernel) : bl_default_kernel();
	_cleanup_free_ char *initrd = o->initrd ? bl_strdup(o->initrd) : bl_default_initrd();
	_cleanup_free_ char *log = bl_asprintf("%s/console.log", sb->dir);
	_cleanup_free_ char *sock = bl_asprintf("%s/agent.sock", sb->dir);
	_cleanup_free_ char *name = bl_asprintf("boxlite-%s", sb->id);
	uint64_t t0 = bl_now_monotonic_ns();
	r = bl_vm_open(o->uri, &sb->vm, err);
	if (r < 0)
		return r;
	sb->t.libvirt_open_ms = ms_since(t0);
	bl_vm_config cfg = {
	    .name = name,
	    .kernel = kernel,
	    .initrd = initrd,
	    .memory_mib = sb->memory_mib,
	    .vcpus = o->vcpus ? o->vcpus : BL_DEFAULT_VCPUS,
	    .accel = accel,
	    .console_log = log,
	    .agent_socket = sock,
	    .shares = {{.tag = BL_SHARE_TAG, .dir = sb->share}},
	    .n_shares = 1,
	    .cpu_shares = sb->boot_shares,
	};
	if (sb->net) {
		/* The firewall is in place before QEMU can send anything. */
		sb->net_uid =
		    getenv("BOXLITE_QEMU_UIDS") && !strcmp(getenv("BOXLITE_QEMU_UIDS"), "off")
			? 0
			: bl_vm_uid_take();
		uint64_t tn = bl_now_monotonic_ns();
		r = bl_net_start(sb->net, sb->net_uid, err);
		if (r < 0)
			return bl_error_prefix(err, "network");
		bl_info("sandbox %s: network set up in %.1f ms", sb->id, ms_since(tn));
		cfg.qemu_uid = sb->net_uid;
		cfg.qemu_args = bl_net_qemu_args(sb->net);
		cfg.cmdline_extra = bl_net_cmdline(sb->net);
	}
	t0 = bl_now_monotonic_ns();
	pthread_mutex_lock(&sb->kill_lock);
	pthread_mutex_lock(&sb->lock);
	bool cancelled = sb->cancelled || sb->timed_out;
	pthread_mutex_unlock(&sb->lock);
	r = cancelled ? 0 : bl_vm_start(sb->vm, &cfg, err);
	pthread_mutex_unlock(&sb->kill_lock);
	if (cancelled)
		return bl_set_error(err, BL_ECANCELED, "sandbox cancelled");
	if (r < 0)
		return r;
	sb->t.vm_start_ms = ms_since(t0);
	/* Whoever connects to the channel controls the guest: root only. */
	(void)chmod(sock, 0600);
	bl_info("sandbox %s: VM started in %.0f ms (libvirt open %.0f ms)", sb->id,
		sb->t.vm_start_ms, sb->t.libvirt_open_ms);
	return 0;
}

static int connect_agent(bl_sandbox *sb, uint64_t created_ns, bl_error_t *err)
{
	uint64_t t0 = bl_now_monotonic_ns();
	uint64_t boot = (uint64_t)BL_BOOT_TIMEOUT_SEC * 1000000000ull;
	if (sb->timeout_sec && (uint64_t)sb->timeout_sec * 1000000000ull < boot)
		boot = (uint64_t)sb->timeout_sec * 1000000000ull + 500000000ull;
	_cleanup_free_ char *sock = bl_asprintf("%s/agent.sock", sb->dir);
	bl_agent *a = NULL;
	int r = bl_agent_connect_channel(sock, created_ns + boot, &a, err);
	if (r < 0)
		return bl_sandbox_map_error(sb, r, err);
	pthread_mutex_lock(&sb->lock);
	sb->agent = a;
	bool dead = sb->timed_out || sb->cancelled;
	pthread_mutex_unlock(&sb->lock);
	if (dead)
		bl_agent_close(a);
	sb->t.agent_ready_ms = ms_since(t0);
	bl_info("sandbox %s: agent ready %.0f ms after VM start", sb->id, sb->t.agent_ready_ms);
	return dead ? bl_sandbox_map_error(sb, -BL_ECANCELED, err) : 0;
}

static int setup_guest(bl_sandbox *sb, const bl_sandbox_options *o, bl_error_t *err)
{
	uint64_t t0 = bl_now_monotonic_ns();
	const char *host = o->hostname ? o->hostname : "boxlite";
	int r = bl_agent_init(sb->agent, (int64_t)bl_now_realtime_ns(), host, err);
	if (r < 0)
		return bl_sandbox_map_error(sb, bl_error_prefix(err, "agent Init"), err);
	sb->t.init_ms = ms_since(t0);
	return 0;
}

/* The spec of the built-in container from the options and the image. */
static int main_spec(bl_sandbox *sb, const bl_sandbox_options *o, char **ret, bl_error_t *err)
{
	const char *host = o->hostname ? o->hostname : "boxlite";
	const bl_spec_process *layers[] = {&sb->layer};
	_cleanup_free_ char *process = NULL;
	bl_spec_process pause = {.args = pause_args};
	const bl_spec_process *pause_layers[] = {&pause, &sb->layer};
	int r;
	if (sb->args)
		r = bl_spec_process_json(layers, 1, &sb->img, &process, err);
	else
		r = bl_spec_process_json(pause_layers, 2, &sb->img, &process, err);
	if (r < 0)
		return r;
	unsigned reserve =
	    sb->memory_mib / 4 > BL_GUEST_RESERVE_MIB ? BL_GUEST_RESERVE_MIB : sb->memory_mib / 4;
	bl_spec_config sc = {
	    .hostname = host,
	    .memory_limit_bytes = (uint64_t)(sb->memory_mib - reserve) << 20,
	    .pids_limit = o->pids_max ? o->pids_max : BL_DEFAULT_PIDS_MAX,
	    .network = o->network,
	};
	return bl_spec_build(&sc, process, ret, err);
}

/* Adds the console's last lines to a boot/agent failure, and keeps a copy of
 * the whole log beside the temporary files for diagnosis. */
static void annotate_failure(bl_sandbox *sb, bl_error_t *err)
{
	if (!err || !sb->dir || err->code == BL_EINVAL || err->code == BL_ENOTFOUND ||
	    err->code == BL_ECANCELED || err->code == BL_EUNSUPPORTED)
		return;
	_cleanup_free_ char *src = bl_asprintf("%s/console.log", sb->dir);
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	if (bl_read_file(src, 16 << 20, &data, &len, NULL) < 0 || len == 0)
		return;
	/* $TMPDIR is writable by others: a fresh name, created exclusively
	 * (mkostemps: O_EXCL, 0600), never a predictable path. */
	const char *tmp = getenv("TMPDIR");
	_cleanup_free_ char *dst =
	    bl_asprintf("%s/boxlite-%s-console-XXXXXX.log", tmp && *tmp ? tmp : "/tmp", sb->id);
	_cleanup_close_ int fd = mkostemps(dst, 4, O_CLOEXEC);
	if (fd >= 0 && bl_write_full(fd, data, len) < 0) {
		(void)unlink(dst);
		return;
	}
	if (fd >= 0) {
		size_t used = strlen(err->msg);
		snprintf(err->msg + used, sizeof(err->msg) - used, " (guest console kept in %s)",
			 dst);
	}
}

/* A pre-booted VM from the warm pool when one of this shape is ready: 0
 * when taken (the state directory is now the VM's), 1 when the caller boots
 * one itself, <0 on an error after the take. */
static int take_from_pool(bl_sandbox *sb, const bl_sandbox_options *o, bl_error_t *err)
{
	const char *e = getenv("BOXLITE_POOL");
	if (o->uri || o->network || (e && !strcmp(e, "off")))
		return 1;
	_cleanup_free_ char *sock =
	    bl_asprintf("%s/%s/%s", sb->state_root, BL_POOL_DIR, BL_POOL_SOCK);
	if (access(sock, F_OK) < 0)
		return 1;
	bl_pool_shape shape;
	bl_error_t why = BL_ERROR_INIT;
	if (bl_pool_shape_for(o, sb->memory_mib, &shape, NULL, 0, &why) < 0)
		return 1;
	uint64_t t0 = bl_now_monotonic_ns();
	int lease = -1, afd = -1;
	pid_t qpid = 0;
	if (bl_pool_take(sb->state_root, sb->id, &shape, &lease, &afd, &qpid, sb->accel_why,
			 sizeof(sb->accel_why), &why) < 0) {
		bl_info("sandbox %s: %s; booting a VM", sb->id, why.msg);
		return 1;
	}
	sb->pooled = true;
	sb->pool_fd = lease;
	sb->pool_qemu_pid = qpid;
	sb->share = bl_asprintf("%s/%s", sb->dir, BL_SHARE_DIR);
	bl_agent *a = NULL;
	int r = bl_agent_from_fd(afd, false, 0, &a, err);
	if (r < 0)
		return r;
	pthread_mutex_lock(&sb->lock);
	sb->agent = a;
	pthread_mutex_unlock(&sb->lock);
	sb->t.vm_start_ms = ms_since(t0);
	bl_info("sandbox %s: took a pooled VM (QEMU pid %d) in %.1f ms", sb->id, (int)qpid,
		sb->t.vm_start_ms);
	return 0;
}

/* Booted: from now on the VM weighs as much as any running one. */
static void run_shares(bl_sandbox *sb)
{
	pthread_mutex_lock(&sb->kill_lock);
	bl_error_t e = BL_ERROR_INIT;
	if (sb->vm && bl_vm_set_shares(sb->vm, BL_VM_SHARES_RUN, &e) < 0)
		bl_debug("sandbox %s: %s", sb->id, e.msg);
	pthread_mutex_unlock(&sb->kill_lock);
}

int bl_sandbox_boot_spare(const char *pool_dir, const bl_pool_shape *shape, bl_sandbox **ret,
			  int *ret_fd, bl_error_t *err)
{
	bl_sandbox_options o = {
	    .bare = true,
	    .state_dir = pool_dir,
	    .memory_mib = shape->memory_mib,
	    .vcpus = shape->vcpus,
	    .kernel = shape->kernel,
	    .initrd = shape->initrd,
	    .accel = shape->accel == BL_ACCEL_KVM ? "kvm" : "tcg",
	};
	uint64_t created = bl_now_monotonic_ns();
	bl_sandbox *sb = sandbox_new();
	sb->owned = true;
	sb->created = (int64_t)time(NULL);
	snprintf(sb->owner, sizeof(sb->owner), "pool");
	sb->memory_mib = shape->memory_mib;
	sb->bare = true;
	sb->disk_mib = BL_DEFAULT_DISK_MIB;
	sb->boot_shares = BL_VM_SHARES_POOL;
	int fd = -1;
	int r = make_state_dir(sb, &o, err);
	if (r == 0)
		r = bl_share_setup(sb, err);
	if (r == 0)
		r = boot_vm(sb, &o, err);
	if (r == 0) {
		_cleanup_free_ char *sock = bl_asprintf("%s/agent.sock", sb->dir);
		uint64_t boot = (uint64_t)BL_BOOT_TIMEOUT_SEC * 1000000000ull;
		r = bl_agent_channel_fd(sock, created + boot, &fd, err);
		if (r < 0)
			r = bl_sandbox_map_error(sb, r, err);
	}
	if (r < 0) {
		annotate_failure(sb, err);
		bl_sandbox_destroy(sb);
		return r;
	}
	*ret = sb;
	*ret_fd = fd;
	return 0;
}

void bl_sandbox_spare_moved(bl_sandbox *sb, const char *dir, const char *id)
{
	free(sb->dir);
	sb->dir = bl_strdup(dir);
	snprintf(sb->id, sizeof(sb->id), "%s", id);
	if (sb->share) {
		free(sb->share);
		sb->share = bl_asprintf("%s/%s", dir, BL_SHARE_DIR);
	}
	_cleanup_free_ char *log = bl_asprintf("%s/console.log", dir);
	bl_vm_console_moved(sb->vm, log);
}

void bl_sandbox_spare_kill(bl_sandbox *sb)
{
	kill_vm(sb);
}

int bl_sandbox_create(const bl_sandbox_options *o, bl_sandbox **ret, bl_error_t *err)
{
	int r = check_options(o, err);
	if (r < 0)
		return r;
	uint64_t created = bl_now_monotonic_ns();
	bl_sandbox *sb = sandbox_new();
	sb->owned = true;
	sb->created = (int64_t)time(NULL);
	snprintf(sb->owner, sizeof(sb->owner), "%s", o->owner ? o->owner : "library");
	sb->timeout_sec = o->timeout_sec;
	sb->memory_mib = o->memory_mib ? o->memory_mib : BL_DEFAULT_MEMORY_MIB;
	sb->bare = o->bare;
	sb->disk_mib = o->disk_mib ? o->disk_mib : BL_DEFAULT_DISK_MIB;
	copy_process_layer(sb, o);
	if (o->on_handle)
		o->on_handle(sb, o->on_handle_user);
	_cleanup_free_ char *spec = NULL;
	r = o->network ? bl_net_new(o, &sb->net, err) : 0;
	if (r == 0)
		r = sb->bare ? 0 : resolve_image(sb, o, err);
	if (r == 0 && !sb->bare)
		r = main_spec(sb, o, &spec, err);
	if (r == 0)
		r = make_state_dir(sb, o, err);
	if (r == 0 && !o->rootfs) /* rmi, prune and eviction leave the image alone */
		(void)bl_image_pin(sb->rootfs, sb->dir, NULL);
	if (r == 0)
		r = take_from_pool(sb, o, err);
	bool cold = r == 1;
	if (cold)
		r = 0;
	if (r == 0)
		r = bl_meta_write(sb, "running", bl_sandbox_qemu_pid(sb), err);
	if (r == 0 && cold)
		r = bl_share_setup(sb, err);
	if (r == 0)
		r = start_timer(sb, err);
	if (r == 0 && cold)
		r = boot_vm(sb, o, err);
	if (r == 0 && cold)
		(void)bl_meta_write(sb, "running", bl_vm_qemu_pid(sb->vm), NULL);
	if (r == 0 && cold)
		r = connect_agent(sb, created, err);
	if (r == 0)
		r = setup_guest(sb, o, err);
	if (r == 0 && !sb->bare) {
		uint64_t t0 = bl_now_monotonic_ns();
		r = bl_container_create_main(sb, spec, err);
		sb->t.container_ms = ms_since(t0);
	}
	if (r == 0)
		r = bl_base_write(sb, err);
	if (r == 0 && cold)
		run_shares(sb);
	if (r < 0) {
		r = bl_sandbox_map_error(sb, r, err);
		annotate_failure(sb, err);
		if (o->on_handle)
			o->on_handle(NULL, o->on_handle_user);
		bl_sandbox_destroy(sb);
		return r;
	}
	*ret = sb;
	return 0;
}

/* ------------------------------------------------------------ attach */

int bl_sandbox_attach(const char *id, const char *state_dir, bl_sandbox **ret, bl_error_t *err)
{
	if (!bl_sandbox_id_valid(id))
		return bl_set_error(err, BL_EINVAL, "'%.40s' is not a sandbox id", id);
	bl_sandbox *sb = sandbox_new();
	snprintf(sb->id, sizeof(sb->id), "%s", id);
	sb->state_root = bl_strdup(bl_state_dir(state_dir));
	sb->dir = bl_asprintf("%s/%s", sb->state_root, id);
	int r = 0;
	if (access(sb->dir, F_OK) < 0)
		r = bl_set_error(err, BL_ENOTFOUND, "no sandbox %s", id);
	if (r == 0)
		r = bl_base_read(sb, err);
	if (r == 0) {
		_cleanup_free_ char *api = bl_asprintf("%s/api.sock", sb->dir);
		r = bl_agent_dial(api, &sb->agent, err);
		if (r < 0)
			r = bl_error_prefix(err, "sandbox %s is not running", id);
	}
	if (r < 0) {
		sandbox_free_fields(sb);
		return r;
	}
	sb->main = bl_container_attach_main(sb);
	*ret = sb;
	return 0;
}

/* ------------------------------------------------------------ stop/destroy */

int bl_sandbox_stop(bl_sandbox *sb, bl_error_t *err)
{
	if (!sb->owned) {
		ttrpc_status st = {0};
		_cleanup_free_ uint8_t *out = NULL;
		size_t out_len = 0;
		int r = ttrpc_client_call_raw(bl_agent_ttrpc(sb->agent), BL_MONITOR_SERVICE, "Stop",
					      NULL, 0, NULL, 0, 60ull * 1000000000ull, &st, &out,
					      &out_len, err);
		if (r < 0 && err && err->code == BL_EAGENTLOST)
			return 0; /* the monitor went away with its sandbox */
		if (r == 0 && st.code != TTRPC_OK)
			return bl_set_error(err, ttrpc_code_to_bl(st.code), "stop: %s", st.message);
		return r;
	}
	if (sb->agent) {
		bl_error_t ignored = BL_ERROR_INIT;
		(void)bl_agent_shutdown(sb->agent, &ignored);
		(void)bl_vm_wait_gone(sb->vm, 1000, &ignored);
	}
	kill_vm(sb);
	return 0;
}

/* True once QEMU's pid is gone (reaped) or was never known; waits a while. */
static bool qemu_gone(pid_t pid)
{
	for (int i = 0; pid > 0 && i < 200; i++) {
		if (kill(pid, 0) < 0 && errno == ESRCH)
			return true;
		usleep(10000);
	}
	return pid <= 0;
}

/* The network goes after QEMU: a QEMU that might still run keeps its
 * firewall table and uid (fail closed; bl_net_gc removes them later). */
static void release_net(bl_sandbox *sb, pid_t qpid)
{
	if (!sb->net)
		return;
	if (!qemu_gone(qpid)) {
		bl_warn("sandbox %s: QEMU %d still runs: its network policy stays", sb->id,
			(int)qpid);
		return;
	}
	bl_net_free(steal_pointer(&sb->net));
	if (sb->net_uid)
		bl_vm_uid_release(sb->net_uid);
	sb->net_uid = 0;
}

/* A pooled VM: its owner destroys it and removes the share and the
 * directory when the lease closes, so nothing here waits for that (RELEASE
 * first when the directory stays, for `logs`). */
static void release_pooled(bl_sandbox *sb, bool remove_dir)
{
	if (sb->agent)
		bl_agent_close(sb->agent);
	bl_agent_free(steal_pointer(&sb->agent));
	while (sb->containers) {
		/* Their binds go with the share (a detached unmount of its tree). */
		bl_container *c = sb->containers;
		bl_strv_free(steal_pointer(&c->mounts));
		free(steal_pointer(&c->host_dir));
		bl_container_release(c);
	}
	sb->main = NULL;
	free(steal_pointer(&sb->share));
	pthread_mutex_lock(&sb->kill_lock);
	bl_error_t e = BL_ERROR_INIT;
	if (!remove_dir && sb->pool_fd >= 0 &&
	    bl_pool_lease_call(sb->pool_fd, BL_POOL_OP_RELEASE, &e) < 0)
		bl_warn("sandbox %s: %s", sb->id, e.msg);
	if (sb->pool_fd >= 0)
		close(sb->pool_fd);
	sb->pool_fd = -1;
	pthread_mutex_unlock(&sb->kill_lock);
	if (!remove_dir && sb->dir) {
		_cleanup_free_ char *api = bl_asprintf("%s/api.sock", sb->dir);
		(void)unlink(api);
		(void)bl_meta_write(sb, "stopped", 0, NULL);
	}
}

static void release(bl_sandbox *sb, bool remove_dir)
{
	stop_timer(sb);
	if (sb->pooled) {
		release_pooled(sb, remove_dir);
		return;
	}
	pid_t qpid = sb->vm ? bl_vm_qemu_pid(sb->vm) : 0;
	if (sb->owned)
		kill_vm(sb);
	else if (sb->agent)
		bl_agent_close(sb->agent);
	bl_agent_free(steal_pointer(&sb->agent));
	bl_vm_free(steal_pointer(&sb->vm));
	release_net(sb, qpid);
	/* The VM is gone: only the host side of each container is left. */
	while (sb->containers)
		bl_container_release(sb->containers);
	sb->main = NULL;
	if (sb->share) {
		/* The VM is gone; bl_rm_rf would refuse the mount point anyway. */
		bl_share_unmount(sb->dir);
		free(steal_pointer(&sb->share));
	}
	if (sb->owned && sb->dir) {
		bl_error_t e = BL_ERROR_INIT;
		if (remove_dir) {
			if (bl_rm_rf(sb->dir, &e) < 0)
				bl_warn("remove %s: %s", sb->dir, e.msg);
		} else {
			_cleanup_free_ char *sock = bl_asprintf("%s/agent.sock", sb->dir);
			_cleanup_free_ char *api = bl_asprintf("%s/api.sock", sb->dir);
			(void)unlink(sock);
			(void)unlink(api);
			(void)bl_meta_write(sb, "stopped", 0, NULL);
		}
	}
}

void bl_sandbox_destroy(bl_sandbox *sb)
{
	if (!sb)
		return;
	release(sb, true);
	sandbox_free_fields(sb);
}

void bl_sandbox_release(bl_sandbox *sb)
{
	if (!sb)
		return;
	release(sb, false);
	sandbox_free_fields(sb);
}

/* ------------------------------------------------------------ liveness */

static bool agent_closed(bl_sandbox *sb)
{
	pthread_mutex_lock(&sb->lock);
	bool closed = !sb->agent || ttrpc_client_is_closed(bl_agent_ttrpc(sb->agent)) ||
		      sb->timed_out || sb->cancelled;
	pthread_mutex_unlock(&sb->lock);
	return closed;
}

bool bl_sandbox_alive(bl_sandbox *sb)
{
	return !agent_closed(sb);
}

int bl_sandbox_wait_dead(bl_sandbox *sb, int timeout_ms, bl_error_t *err)
{
	uint64_t deadline =
	    timeout_ms < 0 ? UINT64_MAX : bl_now_monotonic_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (unsigned i = 0;; i++) {
		if (agent_closed(sb))
			return 0;
		/* QEMU gone but the channel not yet closed: ask libvirt now and then. */
		if (sb->owned && i % 10 == 9) {
			pthread_mutex_lock(&sb->kill_lock);
			bool running = sb->vm && bl_vm_is_running(sb->vm);
			if (sb->pooled)
				running = sb->pool_qemu_pid > 0 &&
					  (kill(sb->pool_qemu_pid, 0) == 0 || errno == EPERM);
			pthread_mutex_unlock(&sb->kill_lock);
			if (!running) {
				pthread_mutex_lock(&sb->lock);
				if (sb->agent)
					bl_agent_close(sb->agent);
				pthread_mutex_unlock(&sb->lock);
				return 0;
			}
		}
		if (bl_now_monotonic_ns() >= deadline)
			return bl_set_error(err, BL_ETIMEOUT, "sandbox %s is still running",
					    sb->id);
		struct timespec ts = {0, 50 * 1000000};
		nanosleep(&ts, NULL);
	}
}

int bl_sandbox_ping(bl_sandbox *sb, char *version, size_t version_len, bl_error_t *err)
{
	if (!sb->agent)
		return bl_set_error(err, BL_EAGENTLOST, "sandbox %s has no agent connection",
				    sb->id);
	int r = bl_agent_ping(sb->agent, version, version_len, err);
	return bl_sandbox_map_error(sb, r, err);
}

/* ------------------------------------------------------------ host info */

int bl_host_info_get(bl_host_info *ret, bl_error_t *err)
{
	*ret = (bl_host_info){0};
	bl_accel accel;
	int r = bl_accel_choose(NULL, &accel, ret->accel_why, sizeof(ret->accel_why), err);
	if (r < 0)
		return r;
	ret->libvirt_version = bl_vm_libvirt_version();
	snprintf(ret->caps_cache_dir, sizeof(ret->caps_cache_dir), "%s", bl_vm_caps_cache_dir());
	return 0;
}

/* ------------------------------------------------------------ suspend */

static int suspend_vm(bl_sandbox *sb, bool suspend, bl_error_t *err)
{
	if (!sb->owned)
		return bl_set_error(err, BL_ESTATE, "only the owner suspends the VM");
	pthread_mutex_lock(&sb->kill_lock);
	int r;
	if (sb->pooled) {
		r = sb->pool_fd < 0
			? bl_set_error(err, BL_ESTATE, "the VM is not running")
			: bl_pool_lease_call(sb->pool_fd,
					     suspend ? BL_POOL_OP_SUSPEND : BL_POOL_OP_RESUME, err);
		if (r == 0)
			sb->pool_suspended = suspend;
	} else {
		r = sb->vm ? bl_vm_suspend(sb->vm, suspend, err)
			   : bl_set_error(err, BL_ESTATE, "the VM is not running");
	}
	pthread_mutex_unlock(&sb->kill_lock);
	return bl_sandbox_map_error(sb, r, err);
}

int bl_sandbox_suspend(bl_sandbox *sb, bl_error_t *err)
{
	return suspend_vm(sb, true, err);
}

int bl_sandbox_resume(bl_sandbox *sb, bl_error_t *err)
{
	return suspend_vm(sb, false, err);
}

bool bl_sandbox_suspended(bl_sandbox *sb)
{
	pthread_mutex_lock(&sb->kill_lock);
	bool s =
	    sb->owned && (sb->pooled ? sb->pool_suspended : sb->vm && bl_vm_is_suspended(sb->vm));
	pthread_mutex_unlock(&sb->kill_lock);
	return s;
}
