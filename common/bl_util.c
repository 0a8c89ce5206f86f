#include "bl_util.h"
#include "bl_cleanup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

ssize_t bl_read_full(int fd, void *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = read(fd, (char *)buf + done, len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

int bl_write_full(int fd, const void *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(fd, (const char *)buf + done, len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		done += (size_t)n;
	}
	return 0;
}

int bl_read_file(const char *path, size_t max, char **ret_buf, size_t *ret_len, bl_error_t *err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "open %s", path);
	_cleanup_free_ char *buf = bl_malloc0(max + 2);
	ssize_t n = bl_read_full(fd, buf, max + 1);
	if (n < 0)
		return bl_set_error_errno(err, errno, "read %s", path);
	if ((size_t)n > max)
		return bl_set_error(err, BL_EPROTO, "%s is larger than %zu bytes", path, max);
	buf[n] = '\0';
	if (ret_len)
		*ret_len = (size_t)n;
	*ret_buf = steal_pointer(&buf);
	return 0;
}

int bl_write_file(const char *path, const void *buf, size_t len, int mode, bl_error_t *err)
{
	_cleanup_close_ int fd =
	    open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, (mode_t)mode);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "create %s", path);
	if (bl_write_full(fd, buf, len) < 0)
		return bl_set_error_errno(err, errno, "write %s", path);
	return 0;
}

int bl_mkdir_p(const char *path, int mode, bl_error_t *err)
{
	_cleanup_free_ char *p = bl_strdup(path);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, (mode_t)mode) < 0 && errno != EEXIST)
			return bl_set_error_errno(err, errno, "mkdir %s", p);
		*s = '/';
	}
	if (mkdir(p, (mode_t)mode) < 0 && errno != EEXIST)
		return bl_set_error_errno(err, errno, "mkdir %s", p);
	return 0;
}

/* A bind mount of the same filesystem keeps st_dev: ask statx. */
static bool is_mount_root(int parent, const char *name)
{
	struct statx stx;
	if (statx(parent, name, AT_SYMLINK_NOFOLLOW, STATX_TYPE, &stx) < 0)
		return false;
	return (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
	       (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

static int rm_rf_at(int parent, const char *name, dev_t dev, bl_error_t *err)
{
	struct stat st;
	if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : bl_set_error_errno(err, errno, "stat %s", name);
	if (!S_ISDIR(st.st_mode)) {
		if (unlinkat(parent, name, 0) < 0 && errno != ENOENT)
			return bl_set_error_errno(err, errno, "unlink %s", name);
		return 0;
	}
	if (st.st_dev != dev)
		return bl_set_error(err, BL_ESTATE, "%s is a mount point; not removing", name);
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "open %s", name);
	_cleanup_closedir_ DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return bl_set_error_errno(err, errno, "fdopendir %s", name);
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if ((de->d_type == DT_DIR || de->d_type == DT_UNKNOWN) &&
		    is_mount_root(dirfd(d), de->d_name))
			return bl_set_error(err, BL_ESTATE, "%s/%s is a mount point; not removing",
					    name, de->d_name);
		int r = rm_rf_at(dirfd(d), de->d_name, dev, err);
		if (r < 0)
			return r;
	}
	if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return bl_set_error_errno(err, errno, "rmdir %s", name);
	return 0;
}

int bl_rm_rf(const char *path, bl_error_t *err)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : bl_set_error_errno(err, errno, "stat %s", path);
	return rm_rf_at(AT_FDCWD, path, st.st_dev, err);
}

uint64_t bl_now_monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t bl_now_realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

char *bl_strdup(const char *s)
{
	char *r = strdup(s);
	if (!r)
		abort();
	return r;
}

void *bl_malloc0(size_t n)
{
	void *p = calloc(1, n ? n : 1);
	if (!p)
		abort();
	return p;
}

char *bl_asprintf(const char *fmt, ...)
{
	va_list ap;
	char *r = NULL;
	va_start(ap, fmt);
	int n = vasprintf(&r, fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	return r;
}

void bl_sanitize_text(char *buf, size_t len, bool keep_newlines)
{
	unsigned char *p = (unsigned char *)buf;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = p[i];
		if (c == '\n' || c == '\t') {
			if (!keep_newlines)
				p[i] = ' ';
			continue;
		}
		if (c < 0x20 || c == 0x7f) {
			p[i] = '?';
			continue;
		}
		if (c < 0x80)
			continue;
		/* UTF-8: a lead byte and its continuation bytes stay; a stray
		 * continuation byte (0x80-0xbf: C1 controls among them) does not. */
		size_t need = c >= 0xf0 && c < 0xf5   ? 3
			      : c >= 0xe0	      ? 2
			      : c >= 0xc2 && c < 0xe0 ? 1
						      : 0;
		if (c >= 0xf5)
			need = 0;
		size_t k = 1;
		while (k <= need && i + k < len && (p[i + k] & 0xc0) == 0x80)
			k++;
		if (need == 0 || k != need + 1) {
			p[i] = '?';
			continue;
		}
		i += need;
	}
}
