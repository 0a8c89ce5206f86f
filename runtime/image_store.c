/*
 * The content-keyed image store (layout in image.h): unpacked images under
 * images/<key>, names as symlinks under names/, flocks under locks/, staging
 * under tmp/. An image appears in images/ only by rename(2) once complete.
 */
#include "image_internal.h"

#include "bl_util.h"
#include "image_ref.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
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
	static const char *const subs[] = {"images", "names",	     "locks", "tmp",
					   "blobs",  "blobs/sha256", "pins"};
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
	bl_strv_free(p->blobs);
	*p = (bl_img_plan){0};
}

/* info.json: what listing, eviction and prune need to know of an image. */
static int write_info(const char *tmp, const bl_img_plan *p, uint64_t bytes, bl_error_t *err)
{
	_cleanup_json_ struct json_object *o = json_object_new_object();
	struct json_object *blobs = json_object_new_array();
	json_object_object_add(o, "size", json_object_new_int64((int64_t)bytes));
	json_object_object_add(
	    o, "created", json_object_new_int64(p->created ? p->created : (int64_t)time(NULL)));
	for (size_t i = 0; p->blobs && p->blobs[i]; i++)
		json_object_array_add(blobs, json_object_new_string(p->blobs[i]));
	json_object_object_add(o, "blobs", blobs);
	const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	_cleanup_free_ char *path = bl_asprintf("%s/info.json", tmp);
	_cleanup_free_ char *used = bl_asprintf("%s/used", tmp);
	int r = bl_write_file(path, text, strlen(text), 0644, err);
	return r < 0 ? r : bl_write_file(used, "", 0, 0644, err);
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
	if ((r = write_info(tmp, p, j.bytes, err)) < 0)
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

/* ------------------------------------------------------------------ names */

/* The file of a name under names/: a reference's '/' become '%' (a
 * character no name and no reference holds). */
static char *name_file(const char *name)
{
	char *f = bl_strdup(name);
	for (char *p = f; *p; p++)
		if (*p == '/')
			*p = '%';
	return f;
}

static char *name_of_file(const char *file)
{
	if (file[0] == '.')
		return NULL;
	char *n = bl_strdup(file);
	for (char *p = n; *p; p++)
		if (*p == '%')
			*p = '/';
	if (!bl_image_name_valid(n) && !bl_image_ref_valid(n)) {
		free(n);
		return NULL;
	}
	return n;
}

int bl_img_name_key(const char *store, const char *name, char key[BL_SHA256_HEX_LEN + 1],
		    bl_error_t *err)
{
	_cleanup_free_ char *file = name_file(name);
	_cleanup_free_ char *link = bl_asprintf("%s/names/%s", store, file);
	char target[256];
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	if (n < 0) {
		if (errno == ENOENT || errno == ENAMETOOLONG)
			return bl_set_error(err, BL_ENOTFOUND, "no image named '%s' in %s", name,
					    store);
		return bl_set_error_errno(err, errno, "readlink %s", link);
	}
	target[n] = '\0';
	if (strncmp(target, "../images/", 10) != 0 ||
	    !bl_img_is_hex64(target + 10, strlen(target + 10)))
		return bl_set_error(err, BL_EPROTO, "image name '%s' has a bad link", name);
	memcpy(key, target + 10, BL_SHA256_HEX_LEN + 1);
	return 0;
}

/* Calls fn for every name of the store (decoded) and its key. */
static void each_name(const char *store, void (*fn)(const char *name, const char *key, void *u),
		      void *u)
{
	_cleanup_free_ char *dir = bl_asprintf("%s/names", store);
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		_cleanup_free_ char *name = name_of_file(de->d_name);
		char k[BL_SHA256_HEX_LEN + 1];
		if (name && bl_img_name_key(store, name, k, NULL) == 0)
			fn(name, k, u);
	}
}

typedef struct count_ctx {
	const char *key, *skip;
	int n;
} count_ctx;

static void count_one(const char *name, const char *key, void *u)
{
	count_ctx *c = u;
	if (!strcmp(key, c->key) && (!c->skip || strcmp(name, c->skip)))
		c->n++;
}

/* Number of names (other than skip) pointing at key. */
static int name_refs(const char *store, const char *key, const char *skip)
{
	count_ctx c = {.key = key, .skip = skip};
	each_name(store, count_one, &c);
	return c.n;
}

/* ------------------------------------------------------------------ pins */

unsigned bl_img_pins(const char *store, const char *key)
{
	_cleanup_free_ char *dir = bl_asprintf("%s/pins/%s", store, key);
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	unsigned n = 0;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		_cleanup_free_ char *p = bl_asprintf("%s/%s", dir, de->d_name);
		_cleanup_free_ char *holder = NULL;
		struct stat st, hs;
		if (lstat(p, &st) < 0)
			continue;
		bool live = bl_read_file(p, 4096, &holder, NULL, NULL) == 0 && holder[0] == '/' &&
			    stat(holder, &hs) == 0;
		if (live)
			n++;
		else
			(void)unlink(p); /* its sandbox is gone */
	}
	if (!n)
		(void)rmdir(dir);
	return n;
}

int bl_image_pin(const char *rootfs, const char *holder_dir, bl_error_t *err)
{
	_cleanup_free_ char *holder = holder_dir ? realpath(holder_dir, NULL) : NULL;
	if (!rootfs || !holder)
		return 0;
	_cleanup_free_ char *p = bl_strdup(rootfs);
	size_t n = strlen(p);
	if (n < 7 + 64 + 8 || strcmp(p + n - 7, "/rootfs"))
		return 0;
	p[n - 7] = '\0';
	char *key = strrchr(p, '/');
	if (!key || !bl_img_is_hex64(key + 1, strlen(key + 1)))
		return 0;
	*key++ = '\0';
	size_t sn = strlen(p);
	if (sn < 7 || strcmp(p + sn - 7, "/images"))
		return 0;
	p[sn - 7] = '\0';
	_cleanup_free_ char *dir = bl_asprintf("%s/pins/%s", p, key);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return bl_set_error_errno(err, errno, "pin image: mkdir %s", dir);
	char id[BL_SHA256_HEX_LEN + 1];
	bl_sha256_hex(holder, strlen(holder), id);
	id[32] = '\0';
	_cleanup_free_ char *pin = bl_asprintf("%s/%s", dir, id);
	return bl_write_file(pin, holder, strlen(holder), 0600, err);
}

/* ------------------------------------------------------------------ images */

void bl_img_touch(const char *store, const char *key)
{
	_cleanup_free_ char *p = bl_asprintf("%s/images/%s/used", store, key);
	if (utimensat(AT_FDCWD, p, NULL, 0) < 0 && errno == ENOENT)
		(void)bl_write_file(p, "", 0, 0644, NULL);
}

static int64_t used_time(const char *store, const char *key)
{
	_cleanup_free_ char *p = bl_asprintf("%s/images/%s/used", store, key);
	struct stat st;
	return stat(p, &st) == 0 ? (int64_t)st.st_mtime : 0;
}

/* size, created and blobs of an image's info.json (absent: zeros, none). */
static void read_info(const char *store, const char *key, uint64_t *size, int64_t *created,
		      char ***blobs)
{
	_cleanup_free_ char *p = bl_asprintf("%s/images/%s/info.json", store, key);
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	*size = 0;
	*created = 0;
	if (blobs)
		*blobs = NULL;
	_cleanup_json_ struct json_object *o = NULL;
	if (bl_read_file(p, 1 << 20, &buf, &len, NULL) < 0 ||
	    bl_img_json_parse(buf, len, 1 << 20, "info.json", json_type_object, &o, NULL) < 0)
		return;
	struct json_object *v = NULL;
	if (json_object_object_get_ex(o, "size", &v))
		*size = (uint64_t)json_object_get_int64(v);
	if (json_object_object_get_ex(o, "created", &v))
		*created = json_object_get_int64(v);
	if (!blobs || !json_object_object_get_ex(o, "blobs", &v) ||
	    !json_object_is_type(v, json_type_array))
		return;
	size_t n = json_object_array_length(v);
	char **out = bl_malloc0(sizeof(char *) * (n + 1));
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		const char *h = json_object_get_string(json_object_array_get_idx(v, i));
		if (h && bl_img_is_hex64(h, strlen(h)))
			out[k++] = bl_strdup(h);
	}
	*blobs = out;
}

/* Deletes images/<key> atomically (rename away, then remove), unless a
 * sandbox uses it: then it stays, for prune to take once unused. */
static int drop_image(const char *store, const char *key, bl_error_t *err)
{
	_cleanup_free_ char *lock_path = bl_asprintf("%s/locks/%s.lock", store, key);
	_cleanup_(bl_img_unlockp) int lock = -1;
	int r = bl_img_lock_file(lock_path, &lock, err);
	if (r < 0)
		return r;
	if (bl_img_pins(store, key))
		return 0;
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
	_cleanup_free_ char *file = name_file(name);
	_cleanup_free_ char *tmp = bl_asprintf("%s/names/.%s.tmp", store, file);
	_cleanup_free_ char *link = bl_asprintf("%s/names/%s", store, file);
	_cleanup_free_ char *target = bl_asprintf("../images/%s", key);
	(void)unlink(tmp);
	if (symlink(target, tmp) < 0)
		return bl_set_error_errno(err, errno, "symlink %s", tmp);
	if (rename(tmp, link) < 0) {
		r = bl_set_error_errno(err, errno, "rename %s", link);
		(void)unlink(tmp);
		return r;
	}
	bl_img_touch(store, key);
	if (had_old && strcmp(old, key) != 0 && name_refs(store, old, NULL) == 0)
		return drop_image(store, old, err);
	return 0;
}

typedef struct list_ctx {
	char **v;
	size_t n;
} list_ctx;

static void list_one(const char *name, const char *key, void *u)
{
	list_ctx *c = u;
	char **nv = realloc(c->v, sizeof(char *) * (c->n + 2));
	if (!nv)
		abort();
	c->v = nv;
	c->v[c->n++] = bl_strdup(name);
	c->v[c->n] = NULL;
}

int bl_image_list(const char *store_dir, char ***ret_names, bl_error_t *err)
{
	_cleanup_free_ char *store = NULL;
	int r = bl_img_store_open(store_dir, &store, err);
	if (r < 0)
		return r;
	list_ctx c = {.v = bl_malloc0(sizeof(char *))};
	each_name(store, list_one, &c);
	qsort(c.v, c.n, sizeof(char *), cmp_str);
	*ret_names = c.v;
	return 0;
}

int bl_image_entries(const char *store_dir, bl_image_entry **ret, size_t *ret_n, bl_error_t *err)
{
	_cleanup_free_ char *store = NULL;
	_cleanup_strv_ char **names = NULL;
	int r = bl_img_store_open(store_dir, &store, err);
	if (r < 0 || (r = bl_image_list(store, &names, err)) < 0)
		return r;
	size_t n = 0;
	while (names[n])
		n++;
	bl_image_entry *v = bl_malloc0(sizeof(*v) * (n ? n : 1));
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		char key[BL_SHA256_HEX_LEN + 1];
		if (bl_img_name_key(store, names[i], key, NULL) < 0 || !bl_img_present(store, key))
			continue;
		bl_image_entry *e = &v[k++];
		e->name = bl_strdup(names[i]);
		snprintf(e->digest, sizeof(e->digest), "sha256:%s", key);
		read_info(store, key, &e->size, &e->created, NULL);
		e->last_used = used_time(store, key);
		e->in_use = bl_img_pins(store, key);
	}
	*ret = v;
	*ret_n = k;
	return 0;
}

void bl_image_entries_free(bl_image_entry *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i].name);
	free(v);
}

int bl_img_gc_lock(const char *store, bool exclusive, int *ret_fd, bl_error_t *err)
{
	_cleanup_free_ char *path = bl_asprintf("%s/gc.lock", store);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "open %s", path);
	while (flock(fd, exclusive ? LOCK_EX : LOCK_SH) < 0) {
		if (errno != EINTR) {
			int e = errno;
			close(fd);
			return bl_set_error_errno(err, e, "flock %s", path);
		}
	}
	*ret_fd = fd;
	return 0;
}

/* Removes one name; refused while the image is in use unless force. */
static int remove_name(const char *store, const char *name, bool force, bl_error_t *err)
{
	char key[BL_SHA256_HEX_LEN + 1];
	_cleanup_free_ char *file = name_file(name);
	_cleanup_free_ char *link = bl_asprintf("%s/names/%s", store, file);
	int r = bl_img_name_key(store, name, key, err);
	if (r == -BL_EPROTO) {
		(void)unlink(link); /* a broken name is still removable */
		bl_error_clear(err);
		return 0;
	}
	if (r < 0)
		return r;
	unsigned pins = bl_img_pins(store, key);
	if (pins && !force)
		return bl_set_error(
		    err, BL_ESTATE,
		    "image '%s' is in use by %u sandbox%s (remove %s first, or force)", name, pins,
		    pins == 1 ? "" : "es", pins == 1 ? "it" : "them");
	if (unlink(link) < 0)
		return bl_set_error_errno(err, errno, "unlink %s", link);
	if (name_refs(store, key, NULL) == 0)
		return drop_image(store, key, err);
	return 0;
}

int bl_image_remove(const char *name, const char *store_dir, bl_error_t *err)
{
	if (!bl_image_name_valid(name) && !bl_image_ref_valid(name))
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
	return remove_name(store, name, true, err);
}

typedef struct by_key_ctx {
	const char *key;
	char **names;
	size_t n;
} by_key_ctx;

static void by_key_one(const char *name, const char *key, void *u)
{
	by_key_ctx *c = u;
	if (strcmp(key, c->key))
		return;
	c->names = realloc(c->names, sizeof(char *) * (c->n + 2));
	if (!c->names)
		abort();
	c->names[c->n++] = bl_strdup(name);
	c->names[c->n] = NULL;
}

int bl_image_rmi(const char *ref, const char *store_dir, bool force, bl_error_t *err)
{
	_cleanup_free_ char *store = NULL;
	int r = bl_img_store_open(store_dir, &store, err);
	if (r < 0)
		return r;
	if (!ref || !*ref)
		return bl_set_error(err, BL_EINVAL, "empty image reference");
	_cleanup_free_ char *lock_path = bl_asprintf("%s/lock", store);
	_cleanup_(bl_img_unlockp) int lock = -1;
	if ((r = bl_img_lock_file(lock_path, &lock, err)) < 0)
		return r;
	char key[BL_SHA256_HEX_LEN + 1];
	if (bl_image_name_valid(ref) && bl_img_name_key(store, ref, key, NULL) == 0)
		return remove_name(store, ref, force, err);
	bl_image_ref pr;
	if (bl_image_ref_parse(ref, &pr, NULL) == 0) {
		_cleanup_free_ char *norm = bl_image_ref_string(&pr);
		if (bl_img_name_key(store, norm, key, NULL) == 0)
			return remove_name(store, norm, force, err);
	}
	if (!strncmp(ref, "sha256:", 7) && bl_img_is_hex64(ref + 7, strlen(ref + 7))) {
		by_key_ctx c = {.key = ref + 7};
		each_name(store, by_key_one, &c);
		_cleanup_strv_ char **names = c.names;
		if (bl_img_pins(store, ref + 7) && !force)
			return bl_set_error(err, BL_ESTATE, "image %.20s is in use by a sandbox",
					    ref);
		for (size_t i = 0; i < c.n; i++)
			if ((r = remove_name(store, names[i], true, err)) < 0)
				return r;
		if (c.n || bl_img_present(store, ref + 7))
			return drop_image(store, ref + 7, err);
	}
	return bl_set_error(err, BL_ENOTFOUND, "no image '%s' in %s", ref, store);
}

/* ------------------------------------------------------------------ gc */

static uint64_t file_size(int dir_fd, const char *name)
{
	struct stat st;
	return fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? (uint64_t)st.st_size : 0;
}

/* Whether a blob's lock is free (no download of it running). */
static bool blob_idle(const char *store, const char *hex)
{
	_cleanup_free_ char *p = bl_asprintf("%s/locks/blob-%s.lock", store, hex);
	_cleanup_close_ int fd = open(p, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return true;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0)
		return false;
	(void)unlink(p);
	return true;
}

typedef struct key_set {
	char **v;
	size_t n;
} key_set;

static void key_set_add(key_set *s, const char *k)
{
	s->v = realloc(s->v, sizeof(char *) * (s->n + 2));
	if (!s->v)
		abort();
	s->v[s->n++] = bl_strdup(k);
	s->v[s->n] = NULL;
}

static bool key_set_has(const key_set *s, const char *k)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->v[i], k))
			return true;
	return false;
}

static void image_keys(const char *store, key_set *out)
{
	_cleanup_free_ char *dir = bl_asprintf("%s/images", store);
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	while (d && (de = readdir(d)))
		if (bl_img_is_hex64(de->d_name, strlen(de->d_name)))
			key_set_add(out, de->d_name);
}

/* Removes blobs no image lists and abandoned partial downloads (gc lock held
 * exclusively). */
static uint64_t drop_unused_blobs(const char *store)
{
	key_set keys = {0}, used = {0};
	image_keys(store, &keys);
	for (size_t i = 0; i < keys.n; i++) {
		uint64_t sz;
		int64_t cr;
		_cleanup_strv_ char **blobs = NULL;
		read_info(store, keys.v[i], &sz, &cr, &blobs);
		for (size_t b = 0; blobs && blobs[b]; b++)
			key_set_add(&used, blobs[b]);
	}
	uint64_t freed = 0;
	_cleanup_free_ char *bdir = bl_asprintf("%s/blobs/sha256", store);
	_cleanup_closedir_ DIR *d = opendir(bdir);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (!bl_img_is_hex64(de->d_name, strlen(de->d_name)) ||
		    key_set_has(&used, de->d_name) || !blob_idle(store, de->d_name))
			continue;
		uint64_t sz = file_size(dirfd(d), de->d_name);
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			freed += sz;
	}
	_cleanup_free_ char *tdir = bl_asprintf("%s/tmp", store);
	_cleanup_closedir_ DIR *t = opendir(tdir);
	while (t && (de = readdir(t))) {
		size_t n = strlen(de->d_name);
		if (strncmp(de->d_name, "blob-", 5) || n != 5 + 64 + 8 ||
		    strcmp(de->d_name + 69, ".partial"))
			continue;
		char hex[BL_SHA256_HEX_LEN + 1];
		memcpy(hex, de->d_name + 5, 64);
		hex[64] = '\0';
		if (!blob_idle(store, hex))
			continue;
		uint64_t sz = file_size(dirfd(t), de->d_name);
		if (unlinkat(dirfd(t), de->d_name, 0) == 0)
			freed += sz;
	}
	bl_strv_free(keys.v);
	bl_strv_free(used.v);
	return freed;
}

int bl_image_prune(const char *store_dir, uint64_t *ret_freed, bl_error_t *err)
{
	_cleanup_free_ char *store = NULL;
	int r = bl_img_store_open(store_dir, &store, err);
	if (r < 0)
		return r;
	_cleanup_(bl_img_unlockp) int gc = -1;
	if ((r = bl_img_gc_lock(store, true, &gc, err)) < 0)
		return r;
	_cleanup_free_ char *lock_path = bl_asprintf("%s/lock", store);
	_cleanup_(bl_img_unlockp) int lock = -1;
	if ((r = bl_img_lock_file(lock_path, &lock, err)) < 0)
		return r;
	key_set keys = {0};
	image_keys(store, &keys);
	uint64_t freed = 0;
	for (size_t i = 0; i < keys.n; i++) {
		if (name_refs(store, keys.v[i], NULL) || bl_img_pins(store, keys.v[i]))
			continue;
		uint64_t sz;
		int64_t cr;
		read_info(store, keys.v[i], &sz, &cr, NULL);
		if ((r = drop_image(store, keys.v[i], err)) < 0)
			break;
		freed += sz;
	}
	bl_strv_free(keys.v);
	if (r < 0)
		return r;
	freed += drop_unused_blobs(store);
	if (ret_freed)
		*ret_freed = freed;
	return 0;
}

static uint64_t store_bytes(const char *store, const key_set *keys)
{
	uint64_t total = 0;
	for (size_t i = 0; i < keys->n; i++) {
		uint64_t sz;
		int64_t cr;
		read_info(store, keys->v[i], &sz, &cr, NULL);
		total += sz;
	}
	_cleanup_free_ char *bdir = bl_asprintf("%s/blobs/sha256", store);
	_cleanup_closedir_ DIR *d = opendir(bdir);
	struct dirent *de;
	while (d && (de = readdir(d)))
		if (de->d_name[0] != '.')
			total += file_size(dirfd(d), de->d_name);
	return total;
}

int bl_img_evict(const char *store, uint64_t max_bytes, const char *keep_key, bl_error_t *err)
{
	if (!max_bytes)
		return 0;
	_cleanup_(bl_img_unlockp) int gc = -1;
	int r = bl_img_gc_lock(store, true, &gc, err);
	if (r < 0)
		return r;
	for (;;) {
		key_set keys = {0};
		image_keys(store, &keys);
		uint64_t total = store_bytes(store, &keys);
		const char *victim = NULL;
		int64_t oldest = INT64_MAX;
		for (size_t i = 0; total > max_bytes && i < keys.n; i++) {
			if ((keep_key && !strcmp(keys.v[i], keep_key)) ||
			    bl_img_pins(store, keys.v[i]))
				continue;
			int64_t t = used_time(store, keys.v[i]);
			if (t < oldest) {
				oldest = t;
				victim = keys.v[i];
			}
		}
		if (!victim) {
			bl_strv_free(keys.v);
			(void)drop_unused_blobs(store);
			return 0;
		}
		by_key_ctx c = {.key = victim};
		each_name(store, by_key_one, &c);
		_cleanup_free_ char *lock_path = bl_asprintf("%s/lock", store);
		_cleanup_(bl_img_unlockp) int lock = -1;
		r = bl_img_lock_file(lock_path, &lock, err);
		for (size_t i = 0; r == 0 && i < c.n; i++) {
			_cleanup_free_ char *file = name_file(c.names[i]);
			_cleanup_free_ char *link = bl_asprintf("%s/names/%s", store, file);
			(void)unlink(link);
		}
		if (r == 0)
			r = drop_image(store, victim, err);
		bl_strv_free(c.names);
		bl_strv_free(keys.v);
		if (r < 0)
			return r;
		(void)drop_unused_blobs(store);
	}
}
