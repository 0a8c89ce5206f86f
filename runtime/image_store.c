/*
 * The content-keyed image store (layout in image.h): unpacked images under
 * images/<key>, names as symlinks under names/, flocks under locks/, staging
 * under tmp/. An image appears in images/ only by rename(2) once complete.
 */
#include "image_internal.h"

#include "bl_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static atomic_ulong unpack_count;

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void bl_img_unlockp(int *fd)
{
	if (*fd >= 0) {
		(void)flock(*fd, LOCK_UN);
		(void)close(*fd);
	}
}

unsigned long bl_image_unpack_count(void)
{
	return atomic_load(&unpack_count);
}

/* ------------------------------------------------------------------ store */

char *bl_image_store_path(const char *store_dir)
{
	if (store_dir && *store_dir)
		return bl_strdup(store_dir);
	const char *envs[] = {"BOXLITE_IMAGE_DIR", "BOXLITE_IMAGE_STORE"};
	for (size_t i = 0; i < BL_ARRAY_SIZE(envs); i++) {
		const char *v = getenv(envs[i]);
		if (v && *v)
			return bl_strdup(v);
	}
	return bl_strdup(BL_IMAGE_DEFAULT_STORE);
}

/* Creates the store skeleton if needed; *ret is its absolute path. */
int bl_img_store_open(const char *store_dir, char **ret, bl_error_t *err)
{
	_cleanup_free_ char *dir = bl_image_store_path(store_dir);
	int r = bl_mkdir_p(dir, 0700, err);
	if (r < 0)
		return BL_PREFIX(r, err, "image store");
	static const char *const subs[] = {"images", "names", "locks", "tmp"};
	for (size_t i = 0; i < BL_ARRAY_SIZE(subs); i++) {
		_cleanup_free_ char *p = bl_asprintf("%s/%s", dir, subs[i]);
		if (mkdir(p, 0700) < 0 && errno != EEXIST)
			return bl_set_error_errno(err, errno, "image store: mkdir %s", p);
	}
	char *abs = realpath(dir, NULL);
	if (!abs)
		return bl_set_error_errno(err, errno, "image store: realpath %s", dir);
	*ret = abs;
	return 0;
}

int bl_img_lock_file(const char *path, int *ret_fd, bl_error_t *err)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "open lock %s", path);
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			int e = errno;
			close(fd);
			return bl_set_error_errno(err, e, "flock %s", path);
		}
	}
	*ret_fd = fd;
	return 0;
}

bool bl_img_present(const char *store, const char *key)
{
	_cleanup_free_ char *p = bl_asprintf("%s/images/%s/rootfs", store, key);
	struct stat st;
	return lstat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The rootfs path and stored config of an image present in the store. */
int bl_img_result(const char *store, const char *key, char **ret_rootfs, char **ret_config,
		  bl_error_t *err)
{
	_cleanup_free_ char *cfg_path = bl_asprintf("%s/images/%s/config.json", store, key);
	_cleanup_free_ char *cfg = NULL;
	if (ret_config) {
		bl_error_t e2 = BL_ERROR_INIT;
		int r = bl_read_file(cfg_path, 4 << 20, &cfg, NULL, &e2);
		if (r < 0 && e2.sys_errno != ENOENT) {
			if (err)
				*err = e2;
			return BL_PREFIX(r, err, "image %s", key);
		}
	}
	*ret_rootfs = bl_asprintf("%s/images/%s/rootfs", store, key);
	if (ret_config)
		*ret_config = steal_pointer(&cfg);
	return 0;
}

/* Removes leftovers of unpacks of key that died half-way (key lock held). */
static void remove_stale_tmp(const char *store, const char *key)
{
	_cleanup_free_ char *tmp = bl_asprintf("%s/tmp", store);
	_cleanup_closedir_ DIR *d = opendir(tmp);
	struct dirent *de;
	size_t klen = strlen(key);
	while (d && (de = readdir(d))) {
		if (!strncmp(de->d_name, key, klen) && de->d_name[klen] == '.')
			(void)bl_img_rm_tree_at(dirfd(d), de->d_name, 0);
	}
}

void bl_img_plan_clear(bl_img_plan *p)
{
	free(p->config_json);
	for (size_t i = 0; i < p->n_layers; i++)
		free(p->layers[i].path);
	free(p->layers);
	free(p->source);
	*p = (bl_img_plan){0};
}

/* Fills tmp (a fresh staging dir) with the image: rootfs, config, source. */
static int stage_image(const char *tmp, int src_fd, bl_img_plan *p, const bl_image_limits *lim,
		       bl_error_t *err)
{
	_cleanup_free_ char *rootfs = bl_asprintf("%s/rootfs", tmp);
	_cleanup_free_ char *cfg = bl_asprintf("%s/config.json", tmp);
	_cleanup_free_ char *src = bl_asprintf("%s/source", tmp);
	_cleanup_free_ char *line = bl_asprintf("%s\n", p->source ? p->source : "");
	_cleanup_close_ int root_fd = -1;
	if (mkdir(rootfs, 0755) < 0 ||
	    (root_fd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return bl_set_error_errno(err, errno, "create %s", rootfs);
	bl_img_unpack_job j = {
	    .src_fd = src_fd,
	    .root_fd = root_fd,
	    .layers = p->layers,
	    .n_layers = p->n_layers,
	    .disk_path = p->copy_dir,
	    .lim = lim,
	    .whiteouts = !p->copy_dir,
	    .err = err,
	};
	int r = bl_img_unpack_run(&j);
	if (r < 0)
		return r;
	if (p->config_json &&
	    (r = bl_write_file(cfg, p->config_json, strlen(p->config_json), 0644, err)) < 0)
		return r;
	if ((r = bl_write_file(src, line, strlen(line), 0644, err)) < 0)
		return r;
	(void)fchmod(root_fd, 0755);
	/* The rename below publishes the image: its data must be on disk first. */
	if (syncfs(root_fd) < 0)
		return bl_set_error_errno(err, errno, "syncfs %s", rootfs);
	return 0;
}

/* Unpacks the plan into tmp, then renames it into images/<key>. The key lock
 * is taken here; an image already present is left alone. */
int bl_img_store_install(const char *store, int src_fd, bl_img_plan *p, const bl_image_limits *lim,
			 bl_error_t *err)
{
	_cleanup_free_ char *lock_path = bl_asprintf("%s/locks/%s.lock", store, p->key);
	_cleanup_(bl_img_unlockp) int lock = -1;
	int r = bl_img_lock_file(lock_path, &lock, err);
	if (r < 0 || bl_img_present(store, p->key))
		return r;
	remove_stale_tmp(store, p->key);
	_cleanup_free_ char *tmp = bl_asprintf("%s/tmp/%s.XXXXXX", store, p->key);
	_cleanup_free_ char *final = bl_asprintf("%s/images/%s", store, p->key);
	if (!mkdtemp(tmp))
		return bl_set_error_errno(err, errno, "mkdtemp in %s/tmp", store);
	r = stage_image(tmp, src_fd, p, lim, err);
	if (r == 0 && rename(tmp, final) < 0)
		r = bl_set_error_errno(err, errno, "rename %s to %s", tmp, final);
	if (r < 0) {
		(void)bl_rm_rf(tmp, NULL);
		return r;
	}
	atomic_fetch_add(&unpack_count, 1);
	return 0;
}

static int name_refs(const char *store, const char *key, const char *skip)
{
	_cleanup_free_ char *dir = bl_asprintf("%s/names", store);
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;
	while (d && (de = readdir(d))) {
		char k[BL_SHA256_HEX_LEN + 1];
		if (!bl_image_name_valid(de->d_name) || (skip && !strcmp(de->d_name, skip)))
			continue;
		if (bl_img_name_key(store, de->d_name, k, NULL) == 0 && !strcmp(k, key))
			n++;
	}
	return n;
}

/* Deletes images/<key> atomically (rename away, then remove); lock held. */
static int drop_image(const char *store, const char *key, bl_error_t *err)
{
	_cleanup_free_ char *lock_path = bl_asprintf("%s/locks/%s.lock", store, key);
	_cleanup_(bl_img_unlockp) int lock = -1;
	int r = bl_img_lock_file(lock_path, &lock, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *dir = bl_asprintf("%s/images/%s", store, key);
	_cleanup_free_ char *trash = bl_asprintf("%s/tmp/%s.trash", store, key);
	(void)bl_rm_rf(trash, NULL);
	if (rename(dir, trash) < 0)
		return errno == ENOENT ? 0 : bl_set_error_errno(err, errno, "rename %s", dir);
	return bl_rm_rf(trash, err);
}

int bl_img_set_name(const char *store, const char *name, const char *key, bl_error_t *err)
{
	char old[BL_SHA256_HEX_LEN + 1];
	_cleanup_free_ char *lock_path = bl_asprintf("%s/lock", store);
	_cleanup_(bl_img_unlockp) int lock = -1;
	int r = bl_img_lock_file(lock_path, &lock, err);
	if (r < 0)
		return r;
	bool had_old = bl_img_name_key(store, name, old, NULL) == 0;
	_cleanup_free_ char *tmp = bl_asprintf("%s/names/.%s.tmp", store, name);
	_cleanup_free_ char *link = bl_asprintf("%s/names/%s", store, name);
	_cleanup_free_ char *target = bl_asprintf("../images/%s", key);
	(void)unlink(tmp);
	if (symlink(target, tmp) < 0)
		return bl_set_error_errno(err, errno, "symlink %s", tmp);
	if (rename(tmp, link) < 0) {
		r = bl_set_error_errno(err, errno, "rename %s", link);
		(void)unlink(tmp);
		return r;
	}
	if (had_old && strcmp(old, key) != 0 && name_refs(store, old, NULL) == 0)
		return drop_image(store, old, err);
	return 0;
}

int bl_image_list(const char *store_dir, char ***ret_names, bl_error_t *err)
{
	_cleanup_free_ char *store = NULL;
	int r = bl_img_store_open(store_dir, &store, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *dir = bl_asprintf("%s/names", store);
	_cleanup_closedir_ DIR *d = opendir(dir);
	if (!d)
		return bl_set_error_errno(err, errno, "opendir %s", dir);
	_cleanup_strv_ char **v = bl_malloc0(sizeof(char *));
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		char k[BL_SHA256_HEX_LEN + 1];
		if (!bl_image_name_valid(de->d_name) ||
		    bl_img_name_key(store, de->d_name, k, NULL) < 0)
			continue;
		char **nv = realloc(v, sizeof(char *) * (n + 2));
		if (!nv)
			abort();
		v = nv;
		v[n++] = bl_strdup(de->d_name);
		v[n] = NULL;
	}
	qsort(v, n, sizeof(char *), cmp_str);
	*ret_names = steal_pointer(&v);
	return 0;
}

int bl_image_remove(const char *name, const char *store_dir, bl_error_t *err)
{
	if (!bl_image_name_valid(name))
		return bl_set_error(err, BL_EINVAL, "invalid image name '%.200s'",
				    name ? name : "");
	_cleanup_free_ char *store = NULL;
	int r = bl_img_store_open(store_dir, &store, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *lock_path = bl_asprintf("%s/lock", store);
	_cleanup_(bl_img_unlockp) int lock = -1;
	if ((r = bl_img_lock_file(lock_path, &lock, err)) < 0)
		return r;
	char key[BL_SHA256_HEX_LEN + 1];
	_cleanup_free_ char *link = bl_asprintf("%s/names/%s", store, name);
	r = bl_img_name_key(store, name, key, err);
	if (r == -BL_EPROTO) {
		(void)unlink(link); /* a broken name is still removable */
		bl_error_clear(err);
		return 0;
	}
	if (r < 0)
		return r;
	if (unlink(link) < 0)
		return bl_set_error_errno(err, errno, "unlink %s", link);
	if (name_refs(store, key, NULL) == 0)
		return drop_image(store, key, err);
	return 0;
}
