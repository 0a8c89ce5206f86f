/*
 * Layer extraction. Every byte of a layer is untrusted: layers are extracted
 * by libarchive with its SECURE_* checks from a thread whose working directory
 * (unshared from the process) is the new rootfs, and whiteouts are applied
 * only through openat2(RESOLVE_IN_ROOT). Each layer is hashed as stored and,
 * when a diff_id is expected, again after decompression.
 *
 * Decisions: device nodes and sockets in layers are skipped (the guest gets a
 * devtmpfs); setuid/setgid bits are dropped from files, since the store sits
 * on the host and the sandbox runs with no_new_privileges anyway; xattrs,
 * ACLs and file flags are not restored; owners are restored only when running
 * as root.
 */
#include "image_internal.h"

#include "bl_util.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

BL_DEFINE_CLEANUP(struct archive, archive_read_free)
BL_DEFINE_CLEANUP(struct archive, archive_write_free)
BL_DEFINE_CLEANUP(struct archive_entry, archive_entry_free)

int bl_img_open_in_root(int root_fd, const char *path, int flags, uint64_t resolve)
{
	struct open_how how = {
	    .flags = (uint64_t)(flags | O_CLOEXEC),
	    .resolve = resolve | RESOLVE_NO_MAGICLINKS,
	};
	int fd;
	do
		fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof(how));
	while (fd < 0 && errno == EINTR);
	return fd;
}

int bl_img_path_clean(const char *in, char *out, size_t len, bl_error_t *err)
{
	if (!in)
		return bl_set_error(err, BL_EPROTO, "entry without a path");
	if (in[0] == '/')
		return bl_set_error(err, BL_EPROTO, "absolute path '%.200s'", in);
	size_t o = 0;
	int depth = 0;
	for (const char *p = in; *p;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		const char *e = strchrnul(p, '/');
		size_t n = (size_t)(e - p);
		if (n == 1 && p[0] == '.') {
			p = e;
			continue;
		}
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return bl_set_error(err, BL_EPROTO, "'..' in path '%.200s'", in);
		if (++depth > BL_IMG_PATH_MAX_DEPTH || o + 1 + n + 1 > len)
			return bl_set_error(err, BL_EPROTO, "path too long or deep '%.200s'", in);
		if (o)
			out[o++] = '/';
		memcpy(out + o, p, n);
		o += n;
		p = e;
	}
	out[o] = '\0';
	return 0;
}

/* Removes name under dir_fd (a tree or a file) without following symlinks. */
int bl_img_rm_tree_at(int dir_fd, const char *name, int depth)
{
	if (unlinkat(dir_fd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	if (depth > BL_IMG_PATH_MAX_DEPTH + 8)
		return -ELOOP;
	int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	_cleanup_closedir_ DIR *d = fdopendir(fd);
	if (!d) {
		int e = errno;
		close(fd);
		return -e;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		int r = bl_img_rm_tree_at(dirfd(d), de->d_name, depth + 1);
		if (r < 0)
			return r;
	}
	if (unlinkat(dir_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void set_reset(bl_img_unpack_job *j)
{
	for (size_t i = 0; i < j->n_set; i++)
		free(j->set[i]);
	j->n_set = 0;
	j->set_sorted = true;
}

static void set_add(bl_img_unpack_job *j, const char *path)
{
	if (j->n_set == j->cap_set) {
		j->cap_set = j->cap_set ? j->cap_set * 2 : 256;
		j->set = realloc(j->set, sizeof(char *) * j->cap_set);
		if (!j->set)
			abort();
	}
	j->set[j->n_set++] = bl_strdup(path);
	j->set_sorted = false;
}

/* True when path or something below it was created by the current layer. */
static bool set_covers(bl_img_unpack_job *j, const char *path)
{
	if (!j->set_sorted) {
		qsort(j->set, j->n_set, sizeof(char *), cmp_str);
		j->set_sorted = true;
	}
	if (bsearch(&path, j->set, j->n_set, sizeof(char *), cmp_str))
		return true;
	size_t plen = strlen(path);
	_cleanup_free_ char *prefix = bl_asprintf("%s/", path);
	size_t lo = 0, hi = j->n_set;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(j->set[mid], prefix) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < j->n_set && !strncmp(j->set[lo], prefix, plen + 1);
}

static int open_dir_in_root(bl_img_unpack_job *j, const char *rel)
{
	if (!rel[0])
		return fcntl(j->root_fd, F_DUPFD_CLOEXEC, 3);
	return bl_img_open_in_root(j->root_fd, rel, O_RDONLY | O_DIRECTORY, RESOLVE_IN_ROOT);
}

/* Removes, below dir (rel), what lower layers put there and this layer did not. */
static int opaque_prune(bl_img_unpack_job *j, int dir_fd, const char *rel, int depth)
{
	if (depth > BL_IMG_PATH_MAX_DEPTH)
		return bl_set_error(j->err, BL_EPROTO, "opaque directory too deep");
	int fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return bl_set_error_errno(j->err, errno, "dup");
	_cleanup_closedir_ DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return bl_set_error_errno(j->err, errno, "opendir %s", rel);
	}
	_cleanup_strv_ char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n + 2 > cap) {
			cap = cap ? cap * 2 : 32;
			char **nv = realloc(names, sizeof(char *) * cap);
			if (!nv)
				abort();
			names = nv;
		}
		names[n++] = bl_strdup(de->d_name);
		names[n] = NULL;
	}
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *child =
		    rel[0] ? bl_asprintf("%s/%s", rel, names[i]) : bl_strdup(names[i]);
		if (!set_covers(j, child)) {
			int r = bl_img_rm_tree_at(dir_fd, names[i], 0);
			if (r < 0)
				return bl_set_error_errno(j->err, -r, "opaque: remove %s", child);
			continue;
		}
		_cleanup_close_ int cfd =
		    openat(dir_fd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (cfd < 0)
			continue; /* not a directory: nothing below it */
		int r = opaque_prune(j, cfd, child, depth + 1);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Applies a whiteout entry found at clean path `path` (base starts ".wh."). */
static int apply_whiteout(bl_img_unpack_job *j, const char *path)
{
	char parent[BL_IMG_REL_PATH_MAX];
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	size_t plen = slash ? (size_t)(slash - path) : 0;
	memcpy(parent, path, plen);
	parent[plen] = '\0';
	_cleanup_close_ int dfd = open_dir_in_root(j, parent);
	if (dfd < 0 && errno != ENOENT && errno != ENOTDIR)
		return bl_set_error_errno(j->err, errno, "whiteout %s", path);
	if (!strcmp(base, ".wh..wh..opq"))
		return dfd < 0 ? 0 : opaque_prune(j, dfd, parent, 0);
	const char *name = base + 4;
	if (!name[0] || !strcmp(name, ".") || !strcmp(name, "..") || !strncmp(name, ".wh.", 4))
		return bl_set_error(j->err, BL_EPROTO, "bad whiteout '%.200s'", path);
	if (dfd < 0)
		return 0;
	int r = bl_img_rm_tree_at(dfd, name, 0);
	if (r < 0)
		return bl_set_error_errno(j->err, -r, "whiteout %s", path);
	return 0;
}

/* A hardlink target must already exist inside the rootfs, reached without any
 * symlink, and not be a directory. */
static int check_hardlink(bl_img_unpack_job *j, const char *target)
{
	_cleanup_close_ int fd = bl_img_open_in_root(j->root_fd, target, O_PATH | O_NOFOLLOW,
						     RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);
	if (fd < 0)
		return bl_set_error(j->err, BL_EPROTO, "hardlink target '%.200s' %s", target,
				    errno == ENOENT ? "does not exist" : "escapes the rootfs");
	struct stat st;
	if (fstat(fd, &st) < 0 || S_ISDIR(st.st_mode))
		return bl_set_error(j->err, BL_EPROTO, "hardlink to directory '%.200s'", target);
	return 0;
}

/* Makes room for an entry: its parent must be reached without symlinks (an
 * explicit error, as libarchive's SECURE_SYMLINKS would give), and whatever a
 * lower layer left at the path is removed unless both are directories. */
static int prepare_target(bl_img_unpack_job *j, const char *path, bool is_dir)
{
	const char *slash = strrchr(path, '/');
	char parent[BL_IMG_REL_PATH_MAX];
	size_t plen = slash ? (size_t)(slash - path) : 0;
	memcpy(parent, path, plen);
	parent[plen] = '\0';
	_cleanup_close_ int dfd = -1;
	if (plen)
		dfd = bl_img_open_in_root(j->root_fd, parent, O_RDONLY | O_DIRECTORY,
					  RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);
	else
		dfd = fcntl(j->root_fd, F_DUPFD_CLOEXEC, 3);
	if (dfd < 0) {
		if (errno == ENOENT)
			return 0; /* libarchive creates the missing parents */
		if (errno == ELOOP || errno == EXDEV)
			return bl_set_error(j->err, BL_EPROTO, "'%.200s' goes through a symlink",
					    path);
		if (errno == ENOTDIR)
			return bl_set_error(j->err, BL_EPROTO,
					    "parent of '%.200s' is not a directory", path);
		return bl_set_error_errno(j->err, errno, "open parent of %s", path);
	}
	const char *base = slash ? slash + 1 : path;
	struct stat st;
	if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	int r = 0;
	if (S_ISDIR(st.st_mode) && !is_dir)
		r = bl_img_rm_tree_at(dfd, base, 0);
	else if (!S_ISDIR(st.st_mode) && unlinkat(dfd, base, 0) < 0)
		r = -errno;
	if (r < 0)
		return bl_set_error_errno(j->err, -r, "replace %s", path);
	return 0;
}

static int archive_fail(bl_img_unpack_job *j, struct archive *a, const char *what, const char *path)
{
	int e = archive_errno(a);
	const char *msg = archive_error_string(a);
	bl_code code =
	    (e == ENOSPC || e == EDQUOT || e == EIO || e == EROFS || e == ENOMEM || e == EMFILE)
		? BL_ESYSTEM
		: BL_EPROTO;
	return bl_set_error(j->err, code, "%s '%.200s': %s", what, path ? path : "",
			    msg ? msg : "libarchive error");
}

static int extract_flags(void)
{
	/* No ARCHIVE_EXTRACT_UNLINK: it would replace a symlinked parent by a
	 * directory; prepare_target() unlinks the final component instead. */
	int f = ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
		ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;
	if (geteuid() == 0)
		f |= ARCHIVE_EXTRACT_OWNER;
	return f;
}

static int copy_data(bl_img_unpack_job *j, struct archive *in, struct archive *out,
		     const char *path)
{
	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		int r = archive_read_data_block(in, &buf, &len, &off);
		if (r == ARCHIVE_EOF)
			return 0;
		if (r < ARCHIVE_WARN)
			return archive_fail(j, in, "read", path);
		if (archive_write_data_block(out, buf, len, off) < ARCHIVE_WARN)
			return archive_fail(j, out, "write", path);
	}
}

static int handle_entry(bl_img_unpack_job *j, struct archive *in, struct archive *out,
			struct archive_entry *e, const char *raw_path)
{
	char path[BL_IMG_REL_PATH_MAX], target[BL_IMG_REL_PATH_MAX];
	if (++j->entries > j->lim->max_entries)
		return bl_set_error(j->err, BL_EPROTO, "image has more than %llu entries",
				    (unsigned long long)j->lim->max_entries);
	int r = bl_img_path_clean(raw_path, path, sizeof(path), j->err);
	if (r < 0)
		return r;
	mode_t type = archive_entry_filetype(e);
	if (!path[0] || type == AE_IFCHR || type == AE_IFBLK || type == AE_IFSOCK)
		return 0; /* the root itself, or a device the guest's devtmpfs provides */
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	if (j->whiteouts && !strncmp(base, ".wh.", 4))
		return apply_whiteout(j, path);
	const char *link = archive_entry_hardlink(e);
	if (link) {
		if ((r = bl_img_path_clean(link, target, sizeof(target), j->err)) < 0)
			return BL_PREFIX(r, j->err, "hardlink '%.200s'", path);
		if ((r = check_hardlink(j, target)) < 0)
			return r;
		archive_entry_set_hardlink(e, target);
	} else if (type == AE_IFREG) {
		la_int64_t size = archive_entry_size(e);
		if (size < 0 || (uint64_t)size > j->lim->max_unpacked_bytes - j->bytes)
			return bl_set_error(j->err, BL_EPROTO,
					    "image unpacks to more than %llu bytes",
					    (unsigned long long)j->lim->max_unpacked_bytes);
		j->bytes += (uint64_t)size;
	} else if (type != AE_IFDIR && type != AE_IFLNK && type != AE_IFIFO) {
		return bl_set_error(j->err, BL_EPROTO, "unsupported entry type for '%.200s'", path);
	}
	if (type != AE_IFDIR)
		archive_entry_set_perm(e, archive_entry_perm(e) & ~(mode_t)(S_ISUID | S_ISGID));
	archive_entry_set_pathname(e, path);
	if (j->whiteouts)
		set_add(j, path);
	if ((r = prepare_target(j, path, type == AE_IFDIR && !link)) < 0)
		return r;
	if (archive_write_header(out, e) < ARCHIVE_WARN)
		return archive_fail(j, out, "extract", path);
	if (!link && type == AE_IFREG && archive_entry_size(e) > 0 &&
	    (r = copy_data(j, in, out, path)) < 0)
		return r;
	if (archive_write_finish_entry(out) < ARCHIVE_WARN)
		return archive_fail(j, out, "extract", path);
	return 0;
}

static int extract_stream(bl_img_unpack_job *j, struct archive *in, const char *what)
{
	_cleanup_(archive_write_freep) struct archive *out = archive_write_disk_new();
	if (!out)
		abort();
	archive_write_disk_set_options(out, extract_flags());
	for (;;) {
		struct archive_entry *e;
		int r = archive_read_next_header(in, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN)
			return archive_fail(j, in, "read", what);
		const char *p = archive_entry_pathname(e);
		if (!p)
			p = archive_entry_pathname_utf8(e);
		r = handle_entry(j, in, out, e, p);
		if (r < 0)
			return r;
	}
	if (archive_write_close(out) < ARCHIVE_WARN)
		return archive_fail(j, out, "finish", what);
	return 0;
}

typedef struct hashing_reader {
	int fd;
	bl_sha256 sha;
	uint64_t n, max;
	char buf[BL_IMG_READ_BLOCK];
} hashing_reader;

static la_ssize_t hashing_read(struct archive *a, void *p, const void **buf)
{
	hashing_reader *h = p;
	ssize_t n;
	do
		n = read(h->fd, h->buf, sizeof(h->buf));
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		archive_set_error(a, errno, "read layer");
		return -1;
	}
	h->n += (uint64_t)n;
	if (h->n > h->max) {
		archive_set_error(a, EFBIG, "layer blob larger than %llu bytes",
				  (unsigned long long)h->max);
		return -1;
	}
	bl_sha256_update(&h->sha, h->buf, (size_t)n);
	*buf = h->buf;
	return n;
}

/* Hashes what the archive reader left unread (padding, trailing bytes). */
static int hashing_drain(hashing_reader *h)
{
	for (;;) {
		ssize_t n = read(h->fd, h->buf, sizeof(h->buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		h->n += (uint64_t)n;
		if (h->n > h->max)
			return -EFBIG;
		bl_sha256_update(&h->sha, h->buf, (size_t)n);
	}
}

struct archive *bl_img_tar_reader(void)
{
	struct archive *a = archive_read_new();
	if (!a)
		abort();
	/* No filter_all: it includes filters that run external programs. */
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_bzip2(a);
	archive_read_support_filter_xz(a);
	archive_read_support_filter_zstd(a);
	archive_read_support_format_tar(a);
	return a;
}

static void hashing_reader_freep(hashing_reader **h)
{
	if (*h) {
		bl_sha256_free(&(*h)->sha);
		free(*h);
	}
}

/* The decompressed stream of a layer (libarchive's "raw" format behind its
 * decompression filters), hashed as the tar reader consumes it. */
typedef struct diff_reader {
	struct archive *raw;
	bl_sha256 sha;
	uint64_t n;
	char buf[BL_IMG_READ_BLOCK];
} diff_reader;

static void diff_reader_freep(diff_reader **d)
{
	if (*d) {
		bl_sha256_free(&(*d)->sha);
		if ((*d)->raw)
			archive_read_free((*d)->raw);
		free(*d);
	}
}

static la_ssize_t diff_read(struct archive *a, void *p, const void **buf)
{
	diff_reader *d = p;
	la_ssize_t n = archive_read_data(d->raw, d->buf, sizeof(d->buf));
	if (n < 0) {
		archive_set_error(a, archive_errno(d->raw), "decompress layer: %s",
				  archive_error_string(d->raw));
		return -1;
	}
	d->n += (uint64_t)n;
	bl_sha256_update(&d->sha, d->buf, (size_t)n);
	*buf = d->buf;
	return n;
}

/* Hashes the decompressed bytes the tar reader left (end blocks, padding). */
static int diff_drain(diff_reader *d)
{
	for (;;) {
		la_ssize_t n = archive_read_data(d->raw, d->buf, sizeof(d->buf));
		if (n < 0)
			return -EPROTO;
		if (n == 0)
			return 0;
		d->n += (uint64_t)n;
		bl_sha256_update(&d->sha, d->buf, (size_t)n);
	}
}

static struct archive *raw_reader(void)
{
	struct archive *a = archive_read_new();
	if (!a)
		abort();
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_bzip2(a);
	archive_read_support_filter_xz(a);
	archive_read_support_filter_zstd(a);
	archive_read_support_format_raw(a);
	return a;
}

/* A tar reader over the decompressed stream of h, hashing it into *ret_d. */
static int open_diff_reader(bl_img_unpack_job *j, hashing_reader *h, const char *path,
			    diff_reader **ret_d, struct archive **ret_in)
{
	diff_reader *d = bl_malloc0(sizeof(*d));
	*ret_d = d;
	bl_sha256_init(&d->sha);
	d->raw = raw_reader();
	struct archive_entry *e;
	if (archive_read_open(d->raw, h, NULL, hashing_read, NULL) != ARCHIVE_OK ||
	    archive_read_next_header(d->raw, &e) != ARCHIVE_OK)
		return archive_fail(j, d->raw, "open layer", path);
	struct archive *in = archive_read_new();
	if (!in)
		abort();
	archive_read_support_format_tar(in);
	*ret_in = in;
	if (archive_read_open(in, d, NULL, diff_read, NULL) != ARCHIVE_OK)
		return archive_fail(j, in, "open layer", path);
	return 0;
}

static int verify_layer(bl_img_unpack_job *j, const bl_img_layer *l, hashing_reader *h,
			diff_reader *d)
{
	char got[BL_SHA256_HEX_LEN + 1];
	int r = hashing_drain(h);
	if (r < 0)
		return bl_set_error_errno(j->err, -r, "read layer %s", l->path);
	bl_sha256_final_hex(&h->sha, got);
	if (l->expect_hex[0] && strcmp(got, l->expect_hex) != 0)
		return bl_set_error(j->err, BL_EPROTO,
				    "layer %s: digest mismatch (expected sha256:%s, got sha256:%s)",
				    l->path, l->expect_hex, got);
	if (l->expect_size != UINT64_MAX && h->n != l->expect_size)
		return bl_set_error(j->err, BL_EPROTO, "layer %s: size %llu, descriptor says %llu",
				    l->path, (unsigned long long)h->n,
				    (unsigned long long)l->expect_size);
	if (!d)
		return 0;
	if (diff_drain(d) < 0)
		return archive_fail(j, d->raw, "decompress layer", l->path);
	bl_sha256_final_hex(&d->sha, got);
	if (strcmp(got, l->expect_diff_hex) != 0)
		return bl_set_error(j->err, BL_EPROTO,
				    "layer %s: digest mismatch after decompression (diff_id "
				    "sha256:%s, got sha256:%s)",
				    l->path, l->expect_diff_hex, got);
	return 0;
}

static int extract_layer(bl_img_unpack_job *j, const bl_img_layer *l)
{
	_cleanup_(hashing_reader_freep) hashing_reader *h = bl_malloc0(sizeof(*h));
	_cleanup_(diff_reader_freep) diff_reader *d = NULL;
	_cleanup_close_ int fd =
	    bl_img_open_in_root(j->src_fd, l->path, O_RDONLY | O_NOCTTY, RESOLVE_IN_ROOT);
	if (fd < 0)
		return errno == ENOENT
			   ? bl_set_error(j->err, BL_ENOTFOUND, "layer %s is missing", l->path)
			   : bl_set_error_errno(j->err, errno, "open layer %s", l->path);
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return bl_set_error(j->err, BL_EPROTO, "layer %s is not a regular file", l->path);
	h->fd = fd;
	h->max = j->lim->max_blob_bytes;
	bl_sha256_init(&h->sha);
	_cleanup_(archive_read_freep) struct archive *in = NULL;
	int r;
	if (l->expect_diff_hex[0]) {
		if ((r = open_diff_reader(j, h, l->path, &d, &in)) < 0)
			return r;
	} else {
		in = bl_img_tar_reader();
		if (archive_read_open(in, h, NULL, hashing_read, NULL) != ARCHIVE_OK)
			return archive_fail(j, in, "open layer", l->path);
	}
	set_reset(j);
	if ((r = extract_stream(j, in, l->path)) < 0)
		return r;
	return verify_layer(j, l, h, d);
}

static int extract_tarball(bl_img_unpack_job *j)
{
	_cleanup_(archive_read_freep) struct archive *in = bl_img_tar_reader();
	if (archive_read_open_filename(in, j->tar_path, BL_IMG_READ_BLOCK) != ARCHIVE_OK)
		return archive_fail(j, in, "open", j->tar_path);
	return extract_stream(j, in, j->tar_path);
}

/* Copies a host directory tree (an image given as a plain rootfs dir). */
static int copy_tree(bl_img_unpack_job *j)
{
	_cleanup_(archive_read_freep) struct archive *in = archive_read_disk_new();
	_cleanup_(archive_write_freep) struct archive *out = archive_write_disk_new();
	_cleanup_(archive_entry_freep) struct archive_entry *e = archive_entry_new();
	if (!in || !out || !e)
		abort();
	archive_read_disk_set_symlink_physical(in);
	archive_read_disk_set_behavior(in, ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS |
					       ARCHIVE_READDISK_NO_XATTR | ARCHIVE_READDISK_NO_ACL |
					       ARCHIVE_READDISK_NO_FFLAGS);
	archive_write_disk_set_options(out, extract_flags());
	if (archive_read_disk_open(in, j->disk_path) != ARCHIVE_OK)
		return archive_fail(j, in, "open", j->disk_path);
	size_t plen = strlen(j->disk_path);
	for (;;) {
		int r = archive_read_next_header2(in, e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN)
			return archive_fail(j, in, "read", j->disk_path);
		(void)archive_read_disk_descend(in);
		const char *p = archive_entry_pathname(e);
		if (!p || strncmp(p, j->disk_path, plen) != 0 || (p[plen] && p[plen] != '/'))
			return bl_set_error(j->err, BL_EPROTO, "unexpected path in copy");
		_cleanup_free_ char *rel = bl_strdup(p[plen] ? p + plen + 1 : "");
		if ((r = handle_entry(j, in, out, e, rel)) < 0)
			return r;
	}
	if (archive_write_close(out) < ARCHIVE_WARN)
		return archive_fail(j, out, "finish", j->disk_path);
	return 0;
}

/* Runs in its own thread with its own cwd (CLONE_FS unshared) set to the new
 * rootfs, so libarchive's relative paths and SECURE_* checks are anchored
 * there without touching the process's cwd. */
static void *unpack_thread(void *p)
{
	bl_img_unpack_job *j = p;
	if (unshare(CLONE_FS) < 0) {
		j->ret = bl_set_error_errno(j->err, errno, "unshare(CLONE_FS)");
		return NULL;
	}
	if (fchdir(j->root_fd) < 0) {
		j->ret = bl_set_error_errno(j->err, errno, "fchdir rootfs");
		return NULL;
	}
	umask(022);
	if (j->tar_path)
		j->ret = extract_tarball(j);
	else if (j->disk_path)
		j->ret = copy_tree(j);
	else
		for (size_t i = 0; i < j->n_layers && j->ret == 0; i++)
			j->ret = extract_layer(j, &j->layers[i]);
	return NULL;
}

int bl_img_unpack_run(bl_img_unpack_job *j)
{
	pthread_t t;
	j->ret = 0;
	int e = pthread_create(&t, NULL, unpack_thread, j);
	if (e)
		return bl_set_error_errno(j->err, e, "pthread_create");
	pthread_join(t, NULL);
	set_reset(j);
	free(j->set);
	j->set = NULL;
	j->cap_set = 0;
	return j->ret;
}
