#include "binds.h"
#include "bl_cleanup.h"
#include "bl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int open_in(int dirfd, const char *path, int flags)
{
	struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC),
			       .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

/* Opens (creating it if missing) the mount point `dst` inside rootfd. */
static int open_target(int rootfd, const char *dst, bool dir, bl_error_t *err)
{
	_cleanup_free_ char *path = bl_strdup(dst);
	int fd = open_in(rootfd, path, O_PATH);
	if (fd >= 0 || errno != ENOENT)
		return fd >= 0 ? fd : bl_set_error_errno(err, errno, "mount point %.200s", dst);
	/* Create the missing components one by one, each resolved in the root. */
	for (char *s = path + 1;; s++) {
		bool last = *s == '\0';
		if (*s != '/' && !last)
			continue;
		char saved = *s;
		*s = '\0';
		_cleanup_close_ int cur = open_in(rootfd, path, O_PATH);
		if (cur < 0 && errno == ENOENT) {
			char *slash = strrchr(path, '/');
			*slash = '\0';
			_cleanup_close_ int parent =
			    open_in(rootfd, path[0] ? path : "/", O_PATH | O_DIRECTORY);
			*slash = '/';
			if (parent < 0)
				return bl_set_error_errno(err, errno, "mount point %.200s", dst);
			int r;
			if (!last || dir)
				r = mkdirat(parent, slash + 1, 0755);
			else {
				r = openat(parent, slash + 1,
					   O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC,
					   0644);
				if (r >= 0)
					r = close(r);
			}
			if (r < 0 && errno != EEXIST)
				return bl_set_error_errno(err, errno, "create mount point %.200s",
							  dst);
		} else if (cur < 0) {
			return bl_set_error_errno(err, errno, "mount point %.200s", dst);
		}
		*s = saved;
		if (last)
			break;
	}
	fd = open_in(rootfd, dst, O_PATH);
	return fd >= 0 ? fd : bl_set_error_errno(err, errno, "mount point %.200s", dst);
}

static int bind_one(int sharefd, int rootfd, const agent_bind *b, bl_error_t *err)
{
	_cleanup_close_ int src = open_in(sharefd, b->source, O_PATH);
	if (src < 0)
		return bl_set_error_errno(err, errno, "bind source %.200s", b->source);
	struct stat st;
	if (fstat(src, &st) < 0)
		return bl_set_error_errno(err, errno, "stat bind source");
	if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
		return bl_set_error(err, BL_EINVAL, "bind source %.200s: not a file or directory",
				    b->source);
	_cleanup_close_ int dst = open_target(rootfd, b->destination, S_ISDIR(st.st_mode), err);
	if (dst < 0)
		return dst;
	struct stat dt;
	if (fstat(dst, &dt) < 0 || S_ISDIR(dt.st_mode) != S_ISDIR(st.st_mode))
		return bl_set_error(err, BL_EINVAL, "mount point %.200s: %s expected",
				    b->destination, S_ISDIR(st.st_mode) ? "directory" : "file");
	/* A detached copy with its final attributes, then attached: never
	 * visible writable when it should be read-only. */
	_cleanup_close_ int tree = (int)syscall(
	    SYS_open_tree, src, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
	if (tree < 0)
		return bl_set_error_errno(err, errno, "clone bind source %.200s", b->source);
	struct mount_attr ma = {.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
				.propagation = MS_PRIVATE};
	if (b->flags & MS_RDONLY)
		ma.attr_set |= MOUNT_ATTR_RDONLY;
	if (b->flags & MS_NOEXEC)
		ma.attr_set |= MOUNT_ATTR_NOEXEC;
	if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &ma, sizeof(ma)) < 0)
		return bl_set_error_errno(err, errno, "bind %.200s: set attributes", b->source);
	if (syscall(SYS_move_mount, tree, "", dst, "",
		    MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
		return bl_set_error_errno(err, errno, "bind %.200s on %.200s", b->source,
					  b->destination);
	return 0;
}

int agent_binds_mount(const char *share_dir, const char *root, const agent_bind *binds, size_t n,
		      bl_error_t *err)
{
	if (n == 0)
		return 0;
	_cleanup_close_ int sharefd = open(share_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sharefd < 0 || rootfd < 0)
		return bl_set_error_errno(err, errno, "open %s", sharefd < 0 ? share_dir : root);
	for (size_t i = 0; i < n; i++) {
		int r = bind_one(sharefd, rootfd, &binds[i], err);
		if (r < 0)
			return bl_error_prefix(err, "mount %s", binds[i].destination);
	}
	return 0;
}
