/*
 * Containers in a sandbox's VM: the host side of their root filesystems and
 * bind mounts (all below the one per-VM share), their creation and deletion
 * in the guest, and the per-container calls (start, exec, signal, pids,
 * stats, pause, resume, update).
 */
#include "sandbox_internal.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* The share's own tmpfs holds only directories and empty mount points, and
 * is read-only (superblock-wide, so in virtiofsd's copy too: the guest
 * cannot write into it) except while the host adds or removes them. */
#define SHARE_TMPFS_OPTS  "size=1m,nr_inodes=4096,mode=0755"
#define SHARE_TMPFS_FLAGS (MS_NOSUID | MS_NODEV | MS_NOEXEC)

/* Takes share_lock and makes the share writable, or the reverse. */
static int share_writable(bl_sandbox *sb, bool writable, bl_error_t *err)
{
	if (writable)
		pthread_mutex_lock(&sb->share_lock);
	int r = 0;
	if (mount(NULL, sb->share, NULL,
		  MS_REMOUNT | SHARE_TMPFS_FLAGS | (writable ? 0 : MS_RDONLY), NULL) < 0)
		r = bl_set_error_errno(err, errno, "share: remount %s %s", sb->share,
				       writable ? "read-write" : "read-only");
	if (!writable || r < 0)
		pthread_mutex_unlock(&sb->share_lock);
	return r;
}

/* ------------------------------------------------------------ host share */

int bl_share_setup(bl_sandbox *sb, bl_error_t *err)
{
	_cleanup_free_ char *dst = bl_asprintf("%s/%s", sb->dir, BL_SHARE_DIR);
	if (mkdir(dst, 0755) < 0 && errno != EEXIST)
		return bl_set_error_errno(err, errno, "share: mkdir %s", dst);
	if (mount("boxlite-share", dst, "tmpfs", SHARE_TMPFS_FLAGS | MS_RDONLY, SHARE_TMPFS_OPTS) <
	    0) {
		int e = errno;
		(void)rmdir(dst);
		return bl_set_error_errno(err, e, "share: mount tmpfs on %s", dst);
	}
	sb->share = steal_pointer(&dst);
	/* Shared: binds made below it later propagate into the namespace of
	 * the virtiofsd serving it (a slave copy). */
	if (mount(NULL, sb->share, NULL, MS_SHARED, NULL) < 0)
		return bl_set_error_errno(err, errno, "share: make %s shared", sb->share);
	return 0;
}

/* Before Linux 5.12 (no mount_setattr): bind, then remount with the flags;
 * a copy propagated in between would keep the source's flags. */
static int bind_legacy(const char *src, const char *dst, bool readonly)
{
	unsigned long fl = MS_REMOUNT | MS_BIND | MS_NODEV | MS_NOSUID | (readonly ? MS_RDONLY : 0);
	if (mount(src, dst, NULL, MS_BIND, NULL) < 0 ||
	    mount(NULL, dst, NULL, MS_PRIVATE, NULL) < 0 || mount(NULL, dst, NULL, fl, NULL) < 0)
		return -errno;
	return 0;
}

/* Not recursive: only src's own mount, never what is mounted below it on
 * the host (a /proc or /sys left mounted inside an image directory by a
 * build, say, must not reach the guest). */
int bl_share_bind(const char *src, const char *dst, bool readonly, bl_error_t *err)
{
	_cleanup_close_ int fd = open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	struct mount_attr ma = {.attr_set = MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID |
					    (readonly ? MOUNT_ATTR_RDONLY : 0),
				.propagation = MS_PRIVATE};
	int r = 0;
	if (fd < 0 || mount_setattr(fd, "", AT_EMPTY_PATH, &ma, sizeof(ma)) < 0)
		r = errno == ENOSYS ? bind_legacy(src, dst, readonly) : -errno;
	else if (move_mount(fd, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		r = -errno;
	if (r < 0)
		return bl_set_error_errno(err, -r, "bind %s on %s", src, dst);
	struct statvfs sv;
	if (statvfs(dst, &sv) < 0 || !(sv.f_flag & ST_NODEV) ||
	    (readonly && !(sv.f_flag & ST_RDONLY))) {
		(void)umount2(dst, MNT_DETACH);
		return bl_set_error(err, BL_ESYSTEM, "bind %s on %s: attributes not applied", src,
				    dst);
	}
	return 0;
}

/* Makes the mount point dst (a directory, or an empty file for a file src). */
static int make_mount_point(const char *src, const char *dst, bl_error_t *err)
{
	struct stat st;
	if (stat(src, &st) < 0)
		return bl_set_error(err, errno == ENOENT ? BL_ENOTFOUND : BL_ESYSTEM,
				    "bind source %s: %s", src, strerror(errno));
	if (S_ISDIR(st.st_mode)) {
		if (mkdir(dst, 0755) < 0)
			return bl_set_error_errno(err, errno, "mkdir %s", dst);
		return 0;
	}
	if (!S_ISREG(st.st_mode))
		return bl_set_error(err, BL_EUNSUPPORTED,
				    "bind source %s is not a directory or a regular file", src);
	int fd = open(dst, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "create %s", dst);
	close(fd);
	return 0;
}

static void strv_push(char ***v, char *s)
{
	size_t n = 0;
	while (*v && (*v)[n])
		n++;
	*v = realloc(*v, (n + 2) * sizeof(char *));
	if (!*v)
		abort();
	(*v)[n] = s;
	(*v)[n + 1] = NULL;
}

/* Binds src at host_dir/name and remembers the mount. */
static int share_add(bl_container *c, const char *src, const char *name, bool readonly,
		     bl_error_t *err)
{
	_cleanup_free_ char *dst = bl_asprintf("%s/%s", c->host_dir, name);
	int r = make_mount_point(src, dst, err);
	if (r < 0)
		return r;
	r = bl_share_bind(src, dst, readonly, err);
	if (r < 0) {
		(void)remove(dst);
		return r;
	}
	strv_push(&c->mounts, steal_pointer(&dst));
	return 0;
}

static void share_remove(bl_container *c)
{
	bl_error_t e = BL_ERROR_INIT;
	if (!c->host_dir)
		return;
	if (share_writable(c->sb, true, &e) < 0)
		bl_warn("%s", e.msg);
	size_t n = 0;
	while (c->mounts && c->mounts[n])
		n++;
	while (n-- > 0) {
		if (umount2(c->mounts[n], MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL &&
		    errno != ENOENT)
			bl_warn("unmount %s: %s", c->mounts[n], strerror(errno));
		if (!c->guest_seen)
			(void)remove(c->mounts[n]);
	}
	bl_strv_free(steal_pointer(&c->mounts));
	if (c->guest_seen) {
		free(steal_pointer(&c->host_dir));
	} else {
		if (rmdir(c->host_dir) < 0 && errno != ENOENT)
			bl_warn("remove %s: %s", c->host_dir, strerror(errno));
		free(steal_pointer(&c->host_dir));
	}
	if (e.code == BL_OK && share_writable(c->sb, false, &e) < 0)
		bl_warn("%s", e.msg);
}

/* ------------------------------------------------------------ objects */

static bl_container *container_new(bl_sandbox *sb, const char *id)
{
	bl_container *c = bl_malloc0(sizeof(*c));
	c->sb = sb;
	snprintf(c->id, sizeof(c->id), "%s", id);
	c->img = &c->own_img;
	c->layer = &c->own_layer;
	return c;
}

static void container_link(bl_container *c)
{
	pthread_mutex_lock(&c->sb->lock);
	c->next = c->sb->containers;
	c->sb->containers = c;
	pthread_mutex_unlock(&c->sb->lock);
}

static void container_unlink(bl_container *c)
{
	bl_sandbox *sb = c->sb;
	pthread_mutex_lock(&sb->lock);
	for (bl_container **pp = &sb->containers; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	if (sb->main == c)
		sb->main = NULL;
	pthread_mutex_unlock(&sb->lock);
}

static void container_free(bl_container *c)
{
	share_remove(c);
	bl_image_defaults_clear(&c->own_img);
	bl_strv_free(c->annotations);
	free(c->process_json);
	free(c);
}

void bl_container_release(bl_container *c)
{
	container_unlink(c);
	container_free(c);
}

static bool valid_id(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n > BL_CONTAINER_ID_MAX || !strcmp(id, ".") || !strcmp(id, ".."))
		return false;
	for (const char *s = id; *s; s++)
		if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') &&
		    !(*s >= '0' && *s <= '9') && !strchr("_.-", *s))
			return false;
	return true;
}

static void random_id(char *buf, size_t len, const char *prefix)
{
	uint8_t rnd[6] = {0};
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		abort();
	snprintf(buf, len, "%s%02x%02x%02x%02x%02x%02x", prefix, rnd[0], rnd[1], rnd[2], rnd[3],
		 rnd[4], rnd[5]);
}

bl_container *bl_sandbox_find_container(bl_sandbox *sb, const char *id)
{
	pthread_mutex_lock(&sb->lock);
	bl_container *c = sb->containers;
	while (c && strcmp(c->id, id))
		c = c->next;
	pthread_mutex_unlock(&sb->lock);
	return c;
}

/* Names the container's share directory <share>/c<N>, N never reused in
 * this VM (the guest may cache a deleted container's entries). */
static void claim_slot(bl_container *c)
{
	bl_sandbox *sb = c->sb;
	pthread_mutex_lock(&sb->lock);
	unsigned slot = sb->next_slot++;
	pthread_mutex_unlock(&sb->lock);
	snprintf(c->share_name, sizeof(c->share_name), "c%u", slot);
}

/* Makes the directory (with share_lock held: the share is writable). */
static int container_share_dir(bl_container *c, bl_error_t *err)
{
	_cleanup_free_ char *dir = bl_asprintf("%s/%s", c->sb->share, c->share_name);
	if (mkdir(dir, 0755) < 0)
		return bl_set_error_errno(err, errno, "share: mkdir %s", dir);
	c->host_dir = steal_pointer(&dir);
	return 0;
}

static uint64_t memory_for_containers(const bl_sandbox *sb)
{
	unsigned reserve =
	    sb->memory_mib / 4 > BL_GUEST_RESERVE_MIB ? BL_GUEST_RESERVE_MIB : sb->memory_mib / 4;
	return (uint64_t)(sb->memory_mib - reserve) << 20;
}

static int guest_create(bl_container *c, const char *spec, bool readonly, unsigned disk_mib,
			bl_error_t *err)
{
	bl_sandbox *sb = c->sb;
	_cleanup_free_ char *subdir = bl_asprintf("%s/rootfs", c->share_name);
	bl_agent_rootfs rf = {
	    .share_tag = BL_SHARE_TAG,
	    .share_subdir = subdir,
	    .readonly = readonly,
	    .upper_size_bytes = (uint64_t)(disk_mib ? disk_mib : sb->disk_mib) << 20,
	};
	bl_debug("container %s: spec %s", c->id, spec);
	c->guest_seen = true;
	int r = bl_agent_create_container(sb->agent, c->id, spec, &rf, err);
	if (r < 0)
		return bl_sandbox_map_error(sb, bl_error_prefix(err, "create container %s", c->id),
					    err);
	return 0;
}

int bl_container_create_main(bl_sandbox *sb, const char *spec_json, bl_error_t *err)
{
	bl_container *c = container_new(sb, BL_CONTAINER_ID);
	c->img = &sb->img;
	c->layer = &sb->layer;
	c->tty = sb->layer.terminal;
	c->stdin_open = sb->stdin_open;
	claim_slot(c);
	int r = share_writable(sb, true, err);
	if (r < 0) {
		container_free(c);
		return r;
	}
	r = container_share_dir(c, err);
	if (r == 0) {
		_cleanup_free_ char *dst = bl_asprintf("%s/rootfs", c->host_dir);
		if (mkdir(dst, 0755) < 0)
			r = bl_set_error_errno(err, errno, "share: mkdir %s", dst);
		/* By the descriptor opened when the rootfs was resolved (the magic
		 * link is the open directory, not a new lookup): a path component
		 * swapped since cannot redirect the share. */
		_cleanup_free_ char *src = sb->rootfs_fd >= 0
					       ? bl_asprintf("/proc/self/fd/%d", sb->rootfs_fd)
					       : bl_strdup(sb->rootfs);
		if (r == 0 && (r = bl_share_bind(src, dst, true, err)) < 0)
			(void)rmdir(dst);
		else if (r == 0)
			strv_push(&c->mounts, steal_pointer(&dst));
		if (r < 0)
			bl_error_prefix(err, "read-only image view");
	}
	bl_error_t e2 = BL_ERROR_INIT;
	if (share_writable(sb, false, &e2) < 0 && r == 0)
		r = bl_set_error(err, e2.code, "%s", e2.msg);
	if (r == 0)
		r = guest_create(c, spec_json, false, sb->disk_mib, err);
	if (r < 0) {
		container_free(c);
		return r;
	}
	container_link(c);
	sb->main = c;
	return 0;
}

bl_container *bl_container_attach_main(bl_sandbox *sb)
{
	bl_container *c = container_new(sb, BL_CONTAINER_ID);
	c->img = &sb->img;
	c->layer = &sb->layer;
	c->started = true; /* the monitor started it */
	container_link(c);
	return c;
}

/* The spec and what exec inherits, for spec_json NULL: the image's
 * defaults (or a pause process) under the sandbox's limits. */
static int default_spec(bl_container *c, const char *config_json, char **ret, bl_error_t *err)
{
	int r = bl_image_defaults_parse(config_json, &c->own_img, err);
	if (r < 0)
		return r;
	static const char *const pause_args[] = {
	    "/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done",
	    NULL};
	bl_spec_process pause = {.args = pause_args, .terminal = c->tty};
	bl_spec_process tty = {.terminal = c->tty};
	const bl_spec_process *layers[] = {c->own_img.entrypoint || c->own_img.cmd ? &tty : &pause};
	_cleanup_free_ char *process = NULL;
	r = bl_spec_process_json(layers, 1, &c->own_img, &process, err);
	if (r < 0)
		return r;
	bl_spec_config sc = {
	    .hostname = "boxlite",
	    .memory_limit_bytes = memory_for_containers(c->sb),
	    .pids_limit = BL_DEFAULT_PIDS_MAX,
	};
	return bl_spec_build(&sc, process, ret, err);
}

static int check_create(bl_sandbox *sb, const bl_container_options *o, bl_error_t *err)
{
	if (!sb->owned)
		return bl_set_error(err, BL_ESTATE,
				    "containers are created by the sandbox's owner only");
	if (!sb->agent || !sb->share)
		return bl_set_error(err, BL_ESTATE, "the sandbox is not running");
	if (o->id && !valid_id(o->id))
		return bl_set_error(err, BL_EINVAL,
				    "container id '%.70s' must be 1-64 of [A-Za-z0-9_.-]", o->id);
	if (o->id && bl_sandbox_find_container(sb, o->id))
		return bl_set_error(err, BL_EEXIST, "container %s already exists", o->id);
	if (!o->rootfs == !o->image)
		return bl_set_error(err, BL_EINVAL, "give a rootfs directory or an image");
	if (o->disk_mib > 1024 * 1024)
		return bl_set_error(err, BL_EINVAL, "disk %u MiB out of range", o->disk_mib);
	return 0;
}

static int resolve_root(const bl_container_options *o, char **ret_root, char **ret_config,
			bl_error_t *err)
{
	if (o->image) {
		int r = bl_image_resolve(o->image, o->image_store, ret_root, ret_config, err);
		return r < 0 ? bl_error_prefix(err, "image") : 0;
	}
	struct stat st;
	if (stat(o->rootfs, &st) < 0)
		return bl_set_error(err, BL_ENOTFOUND, "rootfs directory %s: %s", o->rootfs,
				    strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return bl_set_error(err, BL_EINVAL, "rootfs %s is not a directory", o->rootfs);
	*ret_root = realpath(o->rootfs, NULL);
	return *ret_root ? 0 : bl_set_error_errno(err, errno, "rootfs %s", o->rootfs);
}

/* Shares the rootfs (read-only: the guest's overlay holds the writes) and
 * every bind source, then creates the container in the guest. */
static int create_in(bl_container *c, const bl_container_options *o, bl_error_t *err)
{
	bl_sandbox *sb = c->sb;
	_cleanup_free_ char *root = NULL, *config = NULL, *spec = NULL;
	int r = resolve_root(o, &root, &config, err);
	if (r < 0)
		return r;
	if (o->image) /* rmi and prune leave it alone while the sandbox lives */
		(void)bl_image_pin(root, sb->dir, NULL);
	bl_oci oci = {0};
	bool readonly = o->readonly_rootfs;
	int64_t shares = 0;
	claim_slot(c);
	if (o->spec_json) {
		bl_oci_policy pol = {
		    .ignore_lsm = o->ignore_lsm,
		    .ignore_hooks = o->ignore_hooks,
		    .memory_max_bytes = memory_for_containers(sb),
		};
		r = bl_oci_translate(o->spec_json, c->share_name, &pol, &oci, err);
		if (r == 0) {
			spec = steal_pointer(&oci.agent_spec);
			readonly = readonly || oci.root_readonly;
			c->tty = o->tty || oci.terminal;
			c->annotations = steal_pointer(&oci.annotations);
			c->own_img = oci.proc;
			oci.proc = (bl_image_defaults){0};
			c->process_json = steal_pointer(&oci.process_json);
			shares = oci.cpu_shares;
		}
	} else {
		c->tty = o->tty;
		r = default_spec(c, config, &spec, err);
	}
	c->stdin_open = o->stdin_open;
	bool locked = r == 0 && share_writable(sb, true, err) == 0;
	if (r == 0 && !locked)
		r = -(err ? (int)err->code : BL_ESYSTEM);
	if (r == 0)
		r = container_share_dir(c, err);
	if (r == 0)
		r = share_add(c, root, "rootfs", true, err);
	for (size_t i = 0; r == 0 && i < oci.n_binds; i++)
		r = share_add(c, oci.binds[i].source, oci.binds[i].share_name,
			      oci.binds[i].readonly, err);
	bl_error_t e2 = BL_ERROR_INIT;
	if (locked && share_writable(sb, false, &e2) < 0 && r == 0)
		r = bl_set_error(err, e2.code, "%s", e2.msg);
	bl_oci_clear(&oci);
	if (r == 0)
		r = guest_create(c, spec, readonly, o->disk_mib, err);
	if (r == 0 && shares > 0) {
		/* cgroup v1 shares [2, 262144] onto cgroup v2 weight [1, 10000]. */
		int64_t w = 1 + ((shares < 2 ? 2 : shares) - 2) * 9999 / 262142;
		bl_agent_limits lim = {-1, -1, -1, w, -1};
		r = bl_agent_update_container(sb->agent, c->id, &lim, err);
		if (r < 0) {
			bl_error_t ignored = BL_ERROR_INIT;
			(void)bl_agent_delete_container(sb->agent, c->id, &ignored);
			r = bl_error_prefix(err, "cpu shares");
		}
	}
	return r;
}

int bl_container_create(bl_sandbox *sb, const bl_container_options *o, bl_container **ret,
			bl_error_t *err)
{
	int r = check_create(sb, o, err);
	if (r < 0)
		return r;
	char id[BL_CONTAINER_ID_MAX + 1];
	if (o->id)
		snprintf(id, sizeof(id), "%s", o->id);
	else
		random_id(id, sizeof(id), "c");
	bl_container *c = container_new(sb, id);
	r = create_in(c, o, err);
	if (r < 0) {
		container_free(c);
		return bl_sandbox_map_error(sb, r, err);
	}
	container_link(c);
	bl_info("sandbox %s: container %s created (share %s)", sb->id, c->id, c->share_name);
	*ret = c;
	return 0;
}

/* ------------------------------------------------------------ accessors */

bl_container *bl_sandbox_container(bl_sandbox *sb)
{
	return sb->main;
}

const char *bl_container_id(const bl_container *c)
{
	return c->id;
}

bl_sandbox *bl_container_sandbox(const bl_container *c)
{
	return c->sb;
}

const char *bl_container_annotation(const bl_container *c, const char *key)
{
	for (size_t i = 0; c->annotations && c->annotations[i]; i += 2)
		if (!strcmp(c->annotations[i], key))
			return c->annotations[i + 1];
	return NULL;
}

const char *bl_container_status(bl_container *c)
{
	pthread_mutex_lock(&c->sb->lock);
	const char *s = c->stopped   ? "stopped"
			: c->paused  ? "paused"
			: c->started ? "running"
				     : "created";
	pthread_mutex_unlock(&c->sb->lock);
	return s;
}

/* ------------------------------------------------------------ calls */

int bl_container_signal(bl_container *c, int sig, bool all, bl_error_t *err)
{
	if (sig <= 0 || sig >= 65)
		return bl_set_error(err, BL_EINVAL, "signal %d out of range", sig);
	int r = bl_agent_signal_process(c->sb->agent, c->id, "", sig, all, err);
	return bl_sandbox_map_error(c->sb, r, err);
}

int bl_container_pids(bl_container *c, uint32_t **ret, size_t *ret_n, bl_error_t *err)
{
	int r = bl_agent_list_pids(c->sb->agent, c->id, ret, ret_n, err);
	return bl_sandbox_map_error(c->sb, r, err);
}

int bl_container_stats(bl_container *c, bl_stats *ret, bl_error_t *err)
{
	bl_agent_stats st = {0};
	int r = bl_agent_stats_get(c->sb->agent, c->id, &st, err);
	if (r < 0)
		return bl_sandbox_map_error(c->sb, r, err);
	*ret = (bl_stats){
	    .memory_current = st.memory_current,
	    .memory_max = st.memory_max,
	    .memory_peak = st.memory_peak,
	    .memory_anon = st.memory_anon,
	    .memory_file = st.memory_file,
	    .pids_current = st.pids_current,
	    .pids_max = st.pids_max,
	    .cpu_usage_usec = st.cpu_usage_usec,
	    .cpu_user_usec = st.cpu_user_usec,
	    .cpu_system_usec = st.cpu_system_usec,
	    .cpu_nr_periods = st.cpu_nr_periods,
	    .cpu_nr_throttled = st.cpu_nr_throttled,
	    .cpu_throttled_usec = st.cpu_throttled_usec,
	    .events_low = st.events_low,
	    .events_high = st.events_high,
	    .events_max = st.events_max,
	    .events_oom = st.events_oom,
	    .events_oom_kill = st.oom_kills,
	};
	return 0;
}

static int set_paused(bl_container *c, bool paused, bl_error_t *err)
{
	int r = bl_agent_pause_container(c->sb->agent, c->id, paused, err);
	if (r < 0)
		return bl_sandbox_map_error(c->sb, r, err);
	pthread_mutex_lock(&c->sb->lock);
	c->paused = paused;
	pthread_mutex_unlock(&c->sb->lock);
	return 0;
}

int bl_container_pause(bl_container *c, bl_error_t *err)
{
	return set_paused(c, true, err);
}

int bl_container_resume(bl_container *c, bl_error_t *err)
{
	return set_paused(c, false, err);
}

void bl_resources_init(bl_resources *r)
{
	*r = (bl_resources){-1, -1, -1, -1, -1};
}

int bl_container_update(bl_container *c, const bl_resources *res, bl_error_t *err)
{
	uint64_t max = memory_for_containers(c->sb);
	if (res->memory_limit > 0 && (uint64_t)res->memory_limit > max)
		return bl_set_error(err, BL_EUNSUPPORTED,
				    "memory limit %lld MiB: the VM has %llu MiB for containers and "
				    "its memory cannot grow",
				    (long long)(res->memory_limit >> 20),
				    (unsigned long long)(max >> 20));
	if (res->memory_limit == 0)
		return bl_set_error(err, BL_EUNSUPPORTED,
				    "an unlimited memory limit: containers stay within the VM's "
				    "%llu MiB (give that as the limit)",
				    (unsigned long long)(max >> 20));
	if (res->cpu_shares > 262144 || res->cpu_period > 1000000 ||
	    (res->cpu_period > 0 && res->cpu_period < 1000) ||
	    (res->cpu_quota > 0 && res->cpu_quota < 1000) || res->pids_limit > (1 << 22))
		return bl_set_error(err, BL_EINVAL, "resource limits out of range");
	int64_t weight = -1;
	if (res->cpu_shares == 0)
		weight = 0;
	else if (res->cpu_shares > 0)
		weight = 1 + ((res->cpu_shares < 2 ? 2 : res->cpu_shares) - 2) * 9999 / 262142;
	bl_agent_limits lim = {
	    .memory_limit = res->memory_limit,
	    .cpu_quota = res->cpu_quota,
	    .cpu_period = res->cpu_period,
	    .cpu_weight = weight,
	    .pids_limit = res->pids_limit,
	};
	int r = bl_agent_update_container(c->sb->agent, c->id, &lim, err);
	return bl_sandbox_map_error(c->sb, r, err);
}

int bl_container_update_json(bl_container *c, const char *resources_json, bl_error_t *err)
{
	bl_oci_resources o;
	int r = bl_oci_resources_parse(resources_json, &o, err);
	if (r < 0)
		return r;
	bl_resources res = {
	    .memory_limit = o.memory_limit,
	    .cpu_quota = o.cpu_quota,
	    .cpu_period = o.cpu_period,
	    .cpu_shares = o.cpu_shares,
	    .pids_limit = o.pids_limit,
	};
	/* containerd sends the whole resources object: an unset memory limit
	 * means "no limit", which here is the VM's size. */
	if (res.memory_limit == 0)
		res.memory_limit = (int64_t)memory_for_containers(c->sb);
	return bl_container_update(c, &res, err);
}

int bl_container_delete(bl_container *c, bl_error_t *err)
{
	if (!c)
		return 0;
	bl_sandbox *sb = c->sb;
	int r = 0;
	if (sb->owned && sb->agent) {
		r = bl_agent_delete_container(sb->agent, c->id, err);
		r = bl_sandbox_map_error(sb, r, err);
		if (r < 0 && err && err->code == BL_ENOTFOUND)
			r = 0; /* never created in the guest, or already gone */
	}
	bl_info("sandbox %s: container %s deleted", sb->id, c->id);
	bl_container_release(c);
	return r;
}
