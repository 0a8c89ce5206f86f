#include "copy.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"
#include "bl_agent_proto.h"
#include "boxlite.h"

#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Normalises an entry name into out ("./a//b/" -> "a/b"); false when it is
 * absolute, has a ".." component or is empty. */
static bool clean_name(const char *name, char *out, size_t len)
{
	if (!name || name[0] == '/')
		return false;
	size_t o = 0;
	for (const char *p = name; *p;) {
		while (*p == '/')
			p++;
		const char *e = strchrnul(p, '/');
		size_t n = (size_t)(e - p);
		if (n == 0)
			break;
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return false;
		if (!(n == 1 && p[0] == '.')) {
			if (o + n + 2 > len)
				return false;
			if (o)
				out[o++] = '/';
			memcpy(out + o, p, n);
			o += n;
		}
		p = e;
	}
	out[o] = '\0';
	return o > 0;
}

/* A symlink at name (clean, relative to the copy's root, first component
 * top) pointing at target stays inside top at every step, lexically (the
 * host never follows it here; whoever does later stays in the copy). */
static bool link_stays_inside(const char *name, const char *target)
{
	if (!target || !target[0] || target[0] == '/')
		return false;
	int depth = 0; /* components of the link's directory, top included */
	for (const char *p = name; *p; p++)
		depth += *p == '/';
	if (depth < 1)
		return false; /* the top entry itself is a symlink */
	for (const char *p = target; *p;) {
		while (*p == '/')
			p++;
		const char *e = strchrnul(p, '/');
		size_t n = (size_t)(e - p);
		if (n == 2 && p[0] == '.' && p[1] == '.')
			depth--;
		else if (n && !(n == 1 && p[0] == '.'))
			depth++;
		if (depth < 1)
			return false;
		p = e;
	}
	return true;
}

/* The directory that will hold name (its parent), opened below root without
 * following any symlink or leaving root. */
static int open_parent(int root, const char *name, const char **ret_base)
{
	const char *slash = strrchr(name, '/');
	*ret_base = slash ? slash + 1 : name;
	if (!slash)
		return fcntl(root, F_DUPFD_CLOEXEC, 3);
	_cleanup_free_ char *dir = strndup(name, (size_t)(slash - name));
	if (!dir)
		abort();
	struct open_how how = {
	    .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
	    .resolve =
		RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
	};
	return (int)syscall(SYS_openat2, root, dir, &how, sizeof(how));
}

static int copy_data(struct archive *a, int fd, uint64_t *bytes, uint64_t max, const char *name,
		     bl_error_t *err)
{
	char buf[65536];
	for (;;) {
		la_ssize_t n = archive_read_data(a, buf, sizeof(buf));
		if (n == 0)
			return 0;
		if (n < 0)
			return bl_set_error(err, BL_EPROTO, "copy: %s: %s", name,
					    archive_error_string(a) ?: "bad data");
		*bytes += (uint64_t)n;
		if (*bytes > max)
			return bl_set_error(err, BL_EPROTO,
					    "copy: more than %llu bytes: cut off (the limit)",
					    (unsigned long long)max);
		if (bl_write_full(fd, buf, (size_t)n) < 0)
			return bl_set_error_errno(err, errno, "copy: write %s", name);
	}
}

static int extract_one(struct archive *a, struct archive_entry *e, int root, const char *top,
		       uint64_t *bytes, uint64_t max_bytes, bl_error_t *err)
{
	char name[4096];
	const char *raw = archive_entry_pathname(e);
	if (!clean_name(raw, name, sizeof(name)))
		return bl_set_error(err, BL_EPROTO, "copy: entry name \"%.200s\" is not allowed",
				    raw ? raw : "");
	size_t tl = strlen(top);
	if (strncmp(name, top, tl) || (name[tl] != '\0' && name[tl] != '/'))
		return bl_set_error(err, BL_EPROTO, "copy: entry \"%.200s\" is outside \"%s\"",
				    name, top);
	if (archive_entry_hardlink(e))
		return bl_set_error(err, BL_EPROTO, "copy: hard link \"%.200s\" refused", name);
	mode_t type = archive_entry_filetype(e);
	mode_t perm = archive_entry_perm(e) & 0777; /* no setuid, setgid, sticky */
	if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)
		return bl_set_error(err, BL_EPROTO,
				    "copy: \"%.200s\" is a device, FIFO or socket: refused", name);
	const char *base;
	_cleanup_close_ int pfd = open_parent(root, name, &base);
	if (pfd < 0)
		return bl_set_error(err, BL_EPROTO,
				    "copy: \"%.200s\": its directory is missing or a symlink (%s)",
				    name, strerror(errno));
	if (type == AE_IFDIR) {
		if (mkdirat(pfd, base, 0700) < 0) {
			struct stat st;
			if (errno != EEXIST || fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
			    !S_ISDIR(st.st_mode))
				return bl_set_error(err, BL_EPROTO,
						    "copy: directory \"%.200s\": %s", name,
						    strerror(errno == EEXIST ? EEXIST : errno));
			return 0;
		}
		/* Owner keeps rwx while the copy fills the directory. */
		if (fchmodat(pfd, base, perm | 0700, 0) < 0)
			return bl_set_error_errno(err, errno, "copy: chmod %s", name);
		return 0;
	}
	if (type == AE_IFLNK) {
		const char *target = archive_entry_symlink(e);
		if (!link_stays_inside(name, target)) {
			/* The top entry itself: nothing would be copied. Below it,
			 * the link is left out (whoever reads the copy later
			 * would follow it out of it). */
			if (!strchr(name, '/'))
				return bl_set_error(
				    err, BL_EPROTO,
				    "copy: symlink \"%.200s\" -> \"%.200s\" leaves the copy", name,
				    target ? target : "");
			return 1;
		}
		if (symlinkat(target, pfd, base) < 0)
			return bl_set_error(err, BL_EPROTO, "copy: symlink \"%.200s\": %s", name,
					    strerror(errno));
		return 0;
	}
	_cleanup_close_ int fd =
	    openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return bl_set_error(err, BL_EPROTO, "copy: file \"%.200s\": %s", name,
				    strerror(errno));
	int r = copy_data(a, fd, bytes, max_bytes, name, err);
	if (r == 0 && fchmod(fd, perm) < 0)
		r = bl_set_error_errno(err, errno, "copy: chmod %s", name);
	return r;
}

int bl_copy_extract(struct archive *a, const char *dest_dir, const char *top,
		    const bl_copy_limits *lim, bl_error_t *err)
{
	uint64_t max_bytes = lim && lim->max_bytes ? lim->max_bytes : BL_COPY_MAX_BYTES;
	uint64_t max_entries = lim && lim->max_entries ? lim->max_entries : BL_COPY_MAX_ENTRIES;
	char topc[256];
	if (!clean_name(top, topc, sizeof(topc)) || strchr(topc, '/'))
		return bl_set_error(err, BL_EINVAL, "copy: bad name \"%.200s\"", top);
	_cleanup_close_ int dfd = open(dest_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return bl_set_error_errno(err, errno, "copy: destination %s", dest_dir);
	struct stat st;
	if (fstatat(dfd, topc, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return bl_set_error(err, BL_EEXIST, "copy: %s/%s already exists", dest_dir, topc);
	char tmp[64];
	int tries = 0;
	for (;;) {
		uint32_t rnd = 0;
		if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
			rnd = (uint32_t)bl_now_monotonic_ns();
		snprintf(tmp, sizeof(tmp), ".boxlite-copy-%08x", rnd);
		if (mkdirat(dfd, tmp, 0700) == 0)
			break;
		if (errno != EEXIST || ++tries > 16)
			return bl_set_error_errno(err, errno, "copy: mkdir in %s", dest_dir);
	}
	_cleanup_free_ char *tmp_path = bl_asprintf("%s/%s", dest_dir, tmp);
	int root = openat(dfd, tmp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int r = root < 0 ? bl_set_error_errno(err, errno, "copy: open %s", tmp_path) : 0;
	uint64_t bytes = 0, entries = 0, left_out = 0;
	bool saw_top = false;
	while (r == 0) {
		struct archive_entry *e;
		int ar = archive_read_next_header(a, &e);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar < ARCHIVE_WARN) {
			r = bl_set_error(err, BL_EPROTO, "copy: bad archive: %s",
					 archive_error_string(a) ?: "unreadable");
			break;
		}
		if (++entries > max_entries) {
			r = bl_set_error(err, BL_EPROTO, "copy: more than %llu entries: cut off",
					 (unsigned long long)max_entries);
			break;
		}
		r = extract_one(a, e, root, topc, &bytes, max_bytes, err);
		if (r > 0)
			left_out++, r = 0;
		saw_top = true;
	}
	if (r == 0 && left_out)
		bl_warn("copy: %llu symlink(s) pointing outside the copied tree left out",
			(unsigned long long)left_out);
	if (r == 0 && !saw_top)
		r = bl_set_error(err, BL_EPROTO, "copy: the archive is empty");
	if (r == 0 && renameat2(root, topc, dfd, topc, RENAME_NOREPLACE) < 0)
		r = errno == EEXIST
			? bl_set_error(err, BL_EEXIST, "copy: %s/%s already exists", dest_dir, topc)
			: bl_set_error(err, BL_EPROTO, "copy: %s missing from the archive", topc);
	if (root >= 0)
		close(root);
	(void)bl_rm_rf(tmp_path, NULL);
	return r;
}

/* ------------------------------------------------------------ sandboxes */

struct proc_reader {
	bl_process *p;
	char buf[65536];
	bl_error_t err;
};

static la_ssize_t proc_read(struct archive *a, void *user, const void **buf)
{
	struct proc_reader *r = user;
	ssize_t n = bl_process_read(r->p, 1, r->buf, sizeof(r->buf), &r->err);
	if (n < 0) {
		archive_set_error(a, EIO, "%s", r->err.msg);
		return -1;
	}
	*buf = r->buf;
	return n;
}

static char *dir_of(const char *path, const char **ret_base)
{
	_cleanup_free_ char *p = bl_strdup(path);
	size_t n = strlen(p);
	while (n > 1 && p[n - 1] == '/')
		p[--n] = '\0';
	char *slash = strrchr(p, '/');
	*ret_base = path + (slash ? (size_t)(slash - p) + 1 : 0);
	if (!slash)
		return bl_strdup(".");
	if (slash == p)
		return bl_strdup("/");
	*slash = '\0';
	return steal_pointer(&p);
}

int bl_sandbox_copy_out(bl_sandbox *sb, const char *path, const char *dest_dir, bl_error_t *err)
{
	uint64_t max = 0;
	const char *mb = getenv("BOXLITE_COPY_MAX_BYTES");
	if (mb && *mb)
		max = strtoull(mb, NULL, 10);
	return bl_sandbox_copy_out_limit(sb, path, dest_dir, max, err);
}

int bl_sandbox_copy_out_limit(bl_sandbox *sb, const char *path, const char *dest_dir,
			      uint64_t max_bytes, bl_error_t *err)
{
	if (!path || path[0] != '/')
		return bl_set_error(err, BL_EINVAL, "copy out: the guest path must be absolute");
	const char *base = NULL;
	_cleanup_free_ char *dir = dir_of(path, &base);
	_cleanup_free_ char *top = bl_strdup(base);
	top[strcspn(top, "/")] = '\0';
	if (!top[0] || !strcmp(top, ".") || !strcmp(top, ".."))
		return bl_set_error(err, BL_EINVAL, "copy out: %s names no file", path);
	/* The agent's archiver writes it inside the container (no tar of the
	 * image involved); nothing in it is trusted all the same. */
	const char *const args[] = {BL_AGENT_COPY_OUT_PATH, path, NULL};
	bl_process_options po = {.args = args};
	bl_process *p = NULL;
	int r = bl_sandbox_exec(sb, &po, &p, err);
	if (r < 0)
		return r;
	struct archive *a = archive_read_new();
	archive_read_support_format_tar(a);
	_cleanup_free_ struct proc_reader *rd = bl_malloc0(sizeof(*rd));
	rd->p = p;
	rd->err = (bl_error_t)BL_ERROR_INIT;
	if (archive_read_open(a, rd, NULL, proc_read, NULL) != ARCHIVE_OK)
		r = bl_set_error(err, BL_EPROTO, "copy out: %s", archive_error_string(a) ?: "?");
	bl_copy_limits lim = {.max_bytes = max_bytes};
	if (r == 0)
		r = bl_copy_extract(a, dest_dir, top, &lim, err);
	archive_read_free(a);
	bl_error_t e2 = BL_ERROR_INIT;
	bl_exit ex = {0};
	if (r < 0)
		(void)bl_process_signal(p, SIGKILL, &e2);
	/* Drain what the guest still sends, then collect its status. */
	char sink[65536];
	while (bl_process_read(p, 1, sink, sizeof(sink), &e2) > 0)
		;
	_cleanup_free_ char *msg = bl_malloc0(1024);
	size_t ml = 0;
	for (ssize_t n; (n = bl_process_read(p, 2, sink, sizeof(sink), &e2)) > 0;) {
		size_t take = (size_t)n < 1023 - ml ? (size_t)n : 1023 - ml;
		memcpy(msg + ml, sink, take);
		ml += take;
	}
	int wr = bl_process_wait(p, &ex, &e2);
	bl_process_free(p);
	/* The archiver's own failure (a missing path, say) explains an empty or
	 * cut stream better than libarchive does: it wins, unless we killed it. */
	bool ours = r < 0 && (ex.signal == SIGKILL || !err || strstr(err->msg, "cut off"));
	if ((r == 0 && (wr < 0 || ex.status != 0)) || (r < 0 && wr == 0 && ex.status && !ours)) {
		bl_error_clear(err);
		bl_sanitize_text(msg, ml, false);
		r = bl_set_error(err, BL_EPROTO,
				 "copy out: the guest's archiver failed (status %d)%s%.300s",
				 ex.status, ml ? ": " : "", msg);
	}
	return r;
}

struct proc_writer {
	bl_process *p;
	bl_error_t err;
};

static la_ssize_t proc_write(struct archive *a, void *user, const void *buf, size_t len)
{
	struct proc_writer *w = user;
	if (bl_process_write(w->p, buf, len, &w->err) < 0) {
		archive_set_error(a, EIO, "%s", w->err.msg);
		return -1;
	}
	return (la_ssize_t)len;
}

/* Writes src (a host path, not followed if a symlink) as an archive whose
 * names start at top instead of src. */
static int write_tree(struct archive *out, const char *src, const char *top, bl_error_t *err)
{
	size_t strip = strlen(src);
	struct archive *disk = archive_read_disk_new();
	archive_read_disk_set_symlink_physical(disk);
	archive_read_disk_set_standard_lookup(disk);
	int r = 0;
	if (archive_read_disk_open(disk, src) != ARCHIVE_OK)
		r = bl_set_error(err, BL_ENOTFOUND, "copy in: %s: %s", src,
				 archive_error_string(disk) ?: "?");
	while (r == 0) {
		struct archive_entry *e = archive_entry_new();
		int ar = archive_read_next_header2(disk, e);
		if (ar == ARCHIVE_EOF) {
			archive_entry_free(e);
			break;
		}
		if (ar < ARCHIVE_WARN) {
			r = bl_set_error(err, BL_ESYSTEM, "copy in: %s",
					 archive_error_string(disk) ?: "?");
			archive_entry_free(e);
			break;
		}
		archive_read_disk_descend(disk);
		const char *name = archive_entry_pathname(e);
		if (strncmp(name, src, strip) || (name[strip] && name[strip] != '/')) {
			r = bl_set_error(err, BL_ESYSTEM, "copy in: unexpected name %s", name);
			archive_entry_free(e);
			break;
		}
		_cleanup_free_ char *renamed = bl_asprintf("%s%s", top, name + strip);
		archive_entry_copy_pathname(e, renamed);
		if (archive_write_header(out, e) < ARCHIVE_WARN)
			r = bl_set_error(err, BL_EPROTO, "copy in: %s",
					 archive_error_string(out) ?: "?");
		const char *srcpath = archive_entry_sourcepath(e);
		if (r == 0 && archive_entry_filetype(e) == AE_IFREG && srcpath) {
			_cleanup_close_ int fd = open(srcpath, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			char buf[65536];
			ssize_t n;
			while (fd >= 0 && (n = read(fd, buf, sizeof(buf))) > 0)
				if (archive_write_data(out, buf, (size_t)n) < 0) {
					r = bl_set_error(err, BL_EPROTO, "copy in: %s",
							 archive_error_string(out) ?: "?");
					break;
				}
		}
		archive_entry_free(e);
	}
	archive_read_free(disk);
	return r;
}

/* Unpacks src in the guest as dest_dir/top (top: a relative name, its
 * missing directories made by the agent). */
static int copy_in(bl_sandbox *sb, const char *src, const char *dest_dir, const char *top,
		   bl_error_t *err)
{
	/* The agent's archiver unpacks it inside the container. */
	const char *const args[] = {BL_AGENT_COPY_IN_PATH, dest_dir, NULL};
	bl_process_options po = {.args = args, .stdin_open = true};
	bl_process *p = NULL;
	int r = bl_sandbox_exec(sb, &po, &p, err);
	if (r < 0)
		return r;
	struct archive *out = archive_write_new();
	archive_write_set_format_pax_restricted(out);
	archive_write_set_bytes_in_last_block(out, 1);
	struct proc_writer w = {.p = p, .err = BL_ERROR_INIT};
	if (archive_write_open(out, &w, NULL, proc_write, NULL) != ARCHIVE_OK)
		r = bl_set_error(err, BL_ESYSTEM, "copy in: %s", archive_error_string(out) ?: "?");
	if (r == 0)
		r = write_tree(out, src, top, err);
	if (archive_write_close(out) != ARCHIVE_OK && r == 0)
		r = bl_set_error(err, BL_EPROTO, "copy in: %s", archive_error_string(out) ?: "?");
	archive_write_free(out);
	bl_error_t e2 = BL_ERROR_INIT;
	(void)bl_process_close_stdin(p, &e2);
	char sink[4096], msg[512] = "";
	size_t ml = 0;
	for (ssize_t n; (n = bl_process_read(p, 1, sink, sizeof(sink), &e2)) > 0;)
		;
	for (ssize_t n; (n = bl_process_read(p, 2, sink, sizeof(sink), &e2)) > 0;) {
		size_t take = (size_t)n < sizeof(msg) - 1 - ml ? (size_t)n : sizeof(msg) - 1 - ml;
		memcpy(msg + ml, sink, take);
		ml += take;
	}
	bl_exit ex = {0};
	int wr = bl_process_wait(p, &ex, &e2);
	bl_process_free(p);
	if (r == 0 && (wr < 0 || ex.status != 0)) {
		bl_sanitize_text(msg, ml, false);
		r = bl_set_error(err, BL_EPROTO,
				 "copy in: the guest's archiver failed (status %d)%s%.300s",
				 ex.status, ml ? ": " : "", msg);
	}
	return r;
}

/* The name under which guest_path's last component lands (no "." or ".."),
 * and src without trailing slashes (as write_tree renames from it). */
static int copy_in_names(const char *src, const char *guest_path, char **top, char **clean,
			 bl_error_t *err)
{
	struct stat st;
	if (!src || lstat(src, &st) < 0)
		return bl_set_error(err, BL_ENOTFOUND, "copy in: %s: %s", src ? src : "",
				    strerror(errno));
	const char *base = NULL;
	_cleanup_free_ char *dir = dir_of(guest_path, &base);
	_cleanup_free_ char *t = bl_strdup(base);
	t[strcspn(t, "/")] = '\0';
	if (!t[0] || !strcmp(t, ".") || !strcmp(t, ".."))
		return bl_set_error(err, BL_EINVAL, "copy in: %s names no file", guest_path);
	char *c = bl_strdup(src);
	for (size_t n = strlen(c); n > 1 && c[n - 1] == '/';)
		c[--n] = '\0';
	*top = steal_pointer(&t);
	*clean = c;
	return 0;
}

int bl_sandbox_copy_in(bl_sandbox *sb, const char *src, const char *dest_dir, bl_error_t *err)
{
	if (!dest_dir || dest_dir[0] != '/')
		return bl_set_error(err, BL_EINVAL,
				    "copy in: the guest directory must be absolute");
	_cleanup_free_ char *top = NULL, *clean = NULL;
	int r = copy_in_names(src, src, &top, &clean, err);
	return r < 0 ? r : copy_in(sb, clean, dest_dir, top, err);
}

int bl_sandbox_copy_in_as(bl_sandbox *sb, const char *src, const char *guest_path, bl_error_t *err)
{
	if (!guest_path || guest_path[0] != '/')
		return bl_set_error(err, BL_EINVAL, "copy in: the guest path must be absolute");
	_cleanup_free_ char *top = NULL, *clean = NULL;
	const char *base = NULL;
	_cleanup_free_ char *dir = dir_of(guest_path, &base);
	int r = copy_in_names(src, guest_path, &top, &clean, err);
	return r < 0 ? r : copy_in(sb, clean, dir, top, err);
}
