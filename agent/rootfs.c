#include "rootfs.h"
#include "net.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"
#include "validate.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_mutex_t share_lock = PTHREAD_MUTEX_INITIALIZER;

/* Mounts the virtio-fs share `tag` once; returns its directory. Writable: the
 * host decides what is read-only (images are read-only binds there), and
 * read-write bind mounts of containers need it. */
static int share_mount(const char *tag, char **ret_dir, bl_error_t *err)
{
	_cleanup_free_ char *dir = bl_asprintf("%s/%s", AGENT_SHARES_DIR, tag);
	int r = bl_mkdir_p(dir, 0700, err);
	if (r < 0)
		return r;
	pthread_mutex_lock(&share_lock);
	struct stat st, parent;
	r = 0;
	if (stat(dir, &st) == 0 && stat(AGENT_SHARES_DIR, &parent) == 0 &&
	    st.st_dev == parent.st_dev &&
	    mount(tag, dir, "virtiofs", MS_NOSUID | MS_NODEV, NULL) < 0)
		r = bl_set_error_errno(err, errno, "mount virtio-fs share \"%s\"", tag);
	pthread_mutex_unlock(&share_lock);
	if (r == 0)
		*ret_dir = steal_pointer(&dir);
	return r;
}

/* Opens share/subdir without leaving the share (symlinks resolve inside it). */
static int open_lower(const char *share_dir, const char *subdir, bl_error_t *err)
{
	_cleanup_close_ int sfd = open(share_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0)
		return bl_set_error_errno(err, errno, "open %s", share_dir);
	if (!subdir[0])
		return steal_fd(&sfd);
	struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
			       .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	int fd = (int)syscall(SYS_openat2, sfd, subdir, &how, sizeof(how));
	if (fd < 0)
		return bl_set_error_errno(err, errno, "open share subdir \"%.200s\"", subdir);
	return fd;
}

static int mount_upper(const char *cdir, const agent_rootfs_req *req, bl_error_t *err)
{
	_cleanup_free_ char *upper = bl_asprintf("%s/upper", cdir);
	if (mkdir(upper, 0700) < 0 && errno != EEXIST)
		return bl_set_error_errno(err, errno, "mkdir %s", upper);
	if (req->upper_device && req->upper_device[0]) {
		_cleanup_free_ char *dev = bl_asprintf("/dev/%s", req->upper_device);
		if (mount(dev, upper, "ext4", MS_NOSUID | MS_NODEV, NULL) < 0)
			return bl_set_error_errno(err, errno,
						  "mount %s as ext4 (the agent does not format "
						  "disks: mkfs.ext4 it on the host)",
						  dev);
	} else {
		uint64_t size =
		    req->upper_size_bytes ? req->upper_size_bytes : AGENT_DEFAULT_UPPER_BYTES;
		_cleanup_free_ char *opts = bl_asprintf("size=%" PRIu64 ",mode=0755", size);
		if (mount("tmpfs", upper, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
			return bl_set_error_errno(err, errno, "mount tmpfs upper layer");
	}
	_cleanup_free_ char *u = bl_asprintf("%s/upper", upper);
	_cleanup_free_ char *w = bl_asprintf("%s/work", upper);
	if ((mkdir(u, 0755) < 0 && errno != EEXIST) || (mkdir(w, 0700) < 0 && errno != EEXIST))
		return bl_set_error_errno(err, errno, "mkdir upper/work");
	return 0;
}

static int mount_overlay(const char *cdir, int lowerfd, const char *root, bl_error_t *err)
{
	_cleanup_free_ char *opts = bl_asprintf("lowerdir=/proc/self/fd/%d,upperdir=%s/upper/"
						"upper,workdir=%s/upper/work",
						lowerfd, cdir, cdir);
	/* nodev: a device node in the image or made in the writable layer opens
	 * nothing (no device cgroup guards the guest's disks and channel). */
	if (mount("overlay", root, "overlay", MS_NODEV, opts) < 0)
		return bl_set_error_errno(err, errno, "mount overlay");
	return 0;
}

static int check_req(const agent_rootfs_req *req, bl_error_t *err)
{
	if (!agent_valid_id(req->share_tag))
		return bl_set_error(err, BL_EINVAL, "bad share tag");
	if (!agent_valid_subpath(req->share_subdir))
		return bl_set_error(err, BL_EINVAL, "bad share subdir");
	if (req->upper_device && req->upper_device[0] && !agent_valid_devname(req->upper_device))
		return bl_set_error(err, BL_EINVAL, "bad upper device name");
	return 0;
}

int agent_rootfs_mount(const char *id, const agent_rootfs_req *req, char **ret_path,
		       bl_error_t *err)
{
	int r = check_req(req, err);
	_cleanup_free_ char *share = NULL;
	if (r == 0)
		r = share_mount(req->share_tag, &share, err);
	_cleanup_close_ int lowerfd = r < 0 ? -1 : open_lower(share, req->share_subdir, err);
	if (r < 0 || lowerfd < 0)
		return r < 0 ? r : lowerfd;
	_cleanup_free_ char *cdir = bl_asprintf("%s/%s", AGENT_CONTAINERS_DIR, id);
	_cleanup_free_ char *root = bl_asprintf("%s/rootfs", cdir);
	r = bl_mkdir_p(root, 0700, err);
	/* A read-only root gets the overlay too: the mount points its spec
	 * needs and the image lacks (containerd's /run, CRI's /dev/shm) are
	 * created in the upper layer, as runc creates them in the rootfs before
	 * it goes read-only; the launcher remounts "/" read-only once every
	 * mount is in place (agent/launch.c). */
	if (r == 0)
		r = mount_upper(cdir, req, err);
	if (r == 0)
		r = mount_overlay(cdir, lowerfd, root, err);
	if (r < 0) {
		(void)agent_rootfs_unmount(id, NULL);
		return r;
	}
	agent_net_write_resolv(root);
	*ret_path = steal_pointer(&root);
	return 0;
}

int agent_rootfs_unmount(const char *id, bl_error_t *err)
{
	_cleanup_free_ char *cdir = bl_asprintf("%s/%s", AGENT_CONTAINERS_DIR, id);
	_cleanup_free_ char *root = bl_asprintf("%s/rootfs", cdir);
	_cleanup_free_ char *upper = bl_asprintf("%s/upper", cdir);
	(void)umount2(root, MNT_DETACH);
	(void)umount2(upper, MNT_DETACH);
	return bl_rm_rf(cdir, err);
}
