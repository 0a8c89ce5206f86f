/*
 * The agent's own archiver, for copying files in and out of a container
 * without trusting (or needing) a tar in its image. The agent binary is
 * re-exec'd inside the container as BL_AGENT_COPY_OUT_PATH or
 * BL_AGENT_COPY_IN_PATH, like any exec: the container's namespaces, root,
 * credentials and seccomp filter, so it sees exactly what the container sees
 * and nothing more.
 *
 * copy-out PATH: writes PATH (not followed if a symlink) and, for a
 * directory, everything under it as a POSIX tar (ustar headers, a pax record
 * for long names and large sizes) to stdout, names starting at PATH's last
 * component. Regular files, directories and symlinks; hard links become
 * plain files; device nodes, FIFOs and sockets are left out (said on stderr).
 * The host treats the stream as hostile anyway (runtime/copy.c).
 *
 * copy-in DIR: reads such a tar from stdin and unpacks it under DIR
 * (followed, as tar -C; made first when missing, as mkdir -p): relative names without "..", nothing
 * created through a symlink the archive itself made, regular files, directories and symlinks only;
 * owner kept when running as root, modes and mtimes kept.
 */
#include "archive.h"
#include "bl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK	  512
#define MAX_DEPTH 128
#define MAX_NAME  4096

struct ustar {
	char name[100], mode[8], uid[8], gid[8], size[12], mtime[12], chksum[8], type;
	char linkname[100], magic[6], version[2], uname[32], gname[32], devmajor[8], devminor[8],
	    prefix[155], pad[12];
};
_Static_assert(sizeof(struct ustar) == BLOCK, "ustar header is one block");

static const char *prog = "copy";
static int status;

static void complain(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "%s: ", prog);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	status = 1;
}

static bool write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n, len -= (size_t)n;
	}
	return true;
}

/* 1: a whole buffer, 0: EOF before its first byte, -1: error or short. */
static int read_full(int fd, void *buf, size_t len)
{
	char *p = buf;
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(fd, p + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			return got ? -1 : 0;
		got += (size_t)n;
	}
	return 1;
}

/* ------------------------------------------------------------ writing */

static void octal(char *field, size_t width, uint64_t v)
{
	/* width - 1 digits and a NUL; callers ensure v fits */
	field[width - 1] = '\0';
	for (size_t i = width - 1; i-- > 0; v >>= 3)
		field[i] = (char)('0' + (v & 7));
}

static void checksum(struct ustar *h)
{
	memset(h->chksum, ' ', sizeof(h->chksum));
	unsigned sum = 0;
	for (size_t i = 0; i < BLOCK; i++)
		sum += ((unsigned char *)h)[i];
	octal(h->chksum, 7, sum);
	h->chksum[7] = ' ';
}

/* Appends "LEN key=value\n" (LEN counting itself) to rec. */
static size_t pax_record(char *rec, size_t off, size_t cap, const char *key, const char *val,
			 size_t vlen)
{
	size_t body = strlen(key) + vlen + 3; /* ' ', '=', '\n' */
	size_t len = body + 1;
	while (len < body + (size_t)snprintf(NULL, 0, "%zu", len))
		len++;
	if (off + len > cap)
		return off;
	int n = snprintf(rec + off, cap - off, "%zu %s=", len, key);
	memcpy(rec + off + (size_t)n, val, vlen);
	rec[off + (size_t)n + vlen] = '\n';
	return off + len;
}

static bool emit_header(const char *name, const struct stat *st, char type, const char *link,
			uint64_t size)
{
	struct ustar h;
	memset(&h, 0, sizeof(h));
	size_t nlen = strlen(name), llen = link ? strlen(link) : 0;
	bool pax = nlen >= sizeof(h.name) || llen >= sizeof(h.linkname) || size > 077777777777ull;
	if (pax) {
		char rec[2 * MAX_NAME + 128];
		size_t off = 0;
		if (nlen >= sizeof(h.name))
			off = pax_record(rec, off, sizeof(rec), "path", name, nlen);
		if (llen >= sizeof(h.linkname))
			off = pax_record(rec, off, sizeof(rec), "linkpath", link, llen);
		if (size > 077777777777ull) {
			char num[24];
			int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)size);
			off = pax_record(rec, off, sizeof(rec), "size", num, (size_t)n);
		}
		struct ustar x;
		memset(&x, 0, sizeof(x));
		memcpy(x.name, "././@PaxHeader", 14);
		octal(x.mode, sizeof(x.mode), 0644);
		octal(x.uid, sizeof(x.uid), 0);
		octal(x.gid, sizeof(x.gid), 0);
		octal(x.size, sizeof(x.size), off);
		octal(x.mtime, sizeof(x.mtime), 0);
		x.type = 'x';
		memcpy(x.magic, "ustar", 6);
		memcpy(x.version, "00", 2);
		checksum(&x);
		char pad[BLOCK] = {0};
		if (!write_all(1, &x, sizeof(x)) || !write_all(1, rec, off) ||
		    !write_all(1, pad, (BLOCK - off % BLOCK) % BLOCK))
			return false;
	}
	memcpy(h.name, name, nlen < sizeof(h.name) ? nlen : sizeof(h.name) - 1);
	octal(h.mode, sizeof(h.mode), st->st_mode & 07777);
	octal(h.uid, sizeof(h.uid), st->st_uid <= 07777777 ? st->st_uid : 0);
	octal(h.gid, sizeof(h.gid), st->st_gid <= 07777777 ? st->st_gid : 0);
	octal(h.size, sizeof(h.size), size <= 077777777777ull ? size : 0);
	octal(h.mtime, sizeof(h.mtime), st->st_mtime > 0 ? (uint64_t)st->st_mtime : 0);
	h.type = type;
	if (link)
		memcpy(h.linkname, link, llen < sizeof(h.linkname) ? llen : sizeof(h.linkname) - 1);
	memcpy(h.magic, "ustar", 6);
	memcpy(h.version, "00", 2);
	checksum(&h);
	return write_all(1, &h, sizeof(h));
}

/* Exactly size bytes of fd (zeros if it shrank meanwhile), then the padding. */
static bool emit_data(int fd, uint64_t size)
{
	static char buf[65536];
	uint64_t left = size;
	bool eof = false;
	while (left) {
		size_t want = left < sizeof(buf) ? (size_t)left : sizeof(buf);
		ssize_t n = eof ? 0 : read(fd, buf, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			eof = true;
			memset(buf, 0, want);
			n = (ssize_t)want;
		}
		if (!write_all(1, buf, (size_t)n))
			return false;
		left -= (uint64_t)n;
	}
	char pad[BLOCK] = {0};
	return write_all(1, pad, (BLOCK - size % BLOCK) % BLOCK);
}

/* Writes the entry `name` (in dirfd) as archive name `aname`; false only
 * when the output is gone (then nothing more can be written). */
static bool out_entry(int parent, const char *name, char *aname, size_t alen, int depth)
{
	struct stat st;
	if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		complain("%s: %s", aname, strerror(errno));
		return true;
	}
	if (S_ISREG(st.st_mode)) {
		int fd = openat(parent, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
		if (fd < 0) {
			complain("%s: %s", aname, strerror(errno));
			return true;
		}
		bool ok = emit_header(aname, &st, '0', NULL, (uint64_t)st.st_size) &&
			  emit_data(fd, (uint64_t)st.st_size);
		close(fd);
		return ok;
	}
	if (S_ISLNK(st.st_mode)) {
		char target[MAX_NAME];
		ssize_t n = readlinkat(parent, name, target, sizeof(target) - 1);
		if (n < 0) {
			complain("%s: %s", aname, strerror(errno));
			return true;
		}
		target[n] = '\0';
		return emit_header(aname, &st, '2', target, 0);
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "%s: %s: not a file, directory or symlink: left out\n", prog,
			aname);
		return true;
	}
	if (depth >= MAX_DEPTH) {
		complain("%s: nested deeper than %d levels", aname, MAX_DEPTH);
		return true;
	}
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		complain("%s: %s", aname, strerror(errno));
		return true;
	}
	aname[alen] = '/';
	aname[alen + 1] = '\0';
	bool ok = emit_header(aname, &st, '5', NULL, 0);
	DIR *d = ok ? fdopendir(fd) : NULL;
	if (!d) {
		close(fd);
		aname[alen] = '\0';
		return ok;
	}
	struct dirent *de;
	while (ok && (errno = 0, de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		size_t dlen = strlen(de->d_name);
		if (alen + 1 + dlen + 2 > MAX_NAME) {
			complain("%s%s: name too long", aname, de->d_name);
			continue;
		}
		memcpy(aname + alen + 1, de->d_name, dlen + 1);
		ok = out_entry(dirfd(d), de->d_name, aname, alen + 1 + dlen, depth + 1);
		aname[alen + 1] = '\0';
	}
	closedir(d);
	aname[alen] = '\0';
	return ok;
}

static int copy_out(const char *path)
{
	size_t len = strlen(path);
	while (len > 1 && path[len - 1] == '/')
		len--;
	char dir[MAX_NAME], base[MAX_NAME];
	if (len == 0 || len >= sizeof(dir)) {
		complain("bad path");
		return 1;
	}
	memcpy(dir, path, len);
	dir[len] = '\0';
	char *slash = strrchr(dir, '/');
	snprintf(base, sizeof(base), "%s", slash ? slash + 1 : dir);
	if (slash == dir)
		dir[1] = '\0';
	else if (slash)
		*slash = '\0';
	else
		snprintf(dir, sizeof(dir), ".");
	if (!base[0] || !strcmp(base, ".") || !strcmp(base, "..")) {
		complain("%s names no file", path);
		return 1;
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct stat st;
	if (dfd < 0 || fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		complain("%s: %s", path, strerror(errno));
		return 1;
	}
	char aname[MAX_NAME + 2];
	snprintf(aname, sizeof(aname), "%s", base);
	bool ok = out_entry(dfd, base, aname, strlen(aname), 0);
	char end[2 * BLOCK] = {0};
	if (!ok || !write_all(1, end, sizeof(end))) {
		complain("writing the archive: %s", strerror(errno));
		return 1;
	}
	close(dfd);
	return status;
}

/* ------------------------------------------------------------ reading */

static uint64_t parse_octal(const char *f, size_t width, bool *bad)
{
	uint64_t v = 0;
	size_t i = 0;
	while (i < width && (f[i] == ' ' || f[i] == '\0'))
		i++;
	for (; i < width && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 60)
			*bad = true;
		v = v * 8 + (uint64_t)(f[i] - '0');
	}
	for (; i < width; i++)
		if (f[i] != ' ' && f[i] != '\0')
			*bad = true;
	return v;
}

static bool skip_data(uint64_t size)
{
	char buf[BLOCK];
	for (uint64_t left = (size + BLOCK - 1) / BLOCK; left; left--)
		if (read_full(0, buf, BLOCK) != 1)
			return false;
	return true;
}

struct pax {
	char path[MAX_NAME], linkpath[MAX_NAME];
	bool has_path, has_link, has_size;
	uint64_t size;
};

/* Parses an extended header's records (only path, linkpath and size matter). */
static bool parse_pax(char *rec, size_t len, struct pax *px)
{
	size_t off = 0;
	while (off < len) {
		char *end = NULL;
		unsigned long long rl = strtoull(rec + off, &end, 10);
		if (!end || *end != ' ' || rl < 5 || rl > len - off || rec[off + rl - 1] != '\n')
			return false;
		char *kv = end + 1, *eq = memchr(kv, '=', (size_t)(rec + off + rl - 1 - kv));
		if (!eq)
			return false;
		size_t klen = (size_t)(eq - kv), vlen = (size_t)(rec + off + rl - 1 - (eq + 1));
		char *val = eq + 1;
		if (klen == 4 && !memcmp(kv, "path", 4) && vlen < MAX_NAME) {
			memcpy(px->path, val, vlen), px->path[vlen] = '\0', px->has_path = true;
		} else if (klen == 8 && !memcmp(kv, "linkpath", 8) && vlen < MAX_NAME) {
			memcpy(px->linkpath, val, vlen), px->linkpath[vlen] = '\0';
			px->has_link = true;
		} else if (klen == 4 && !memcmp(kv, "size", 4)) {
			char num[24];
			if (vlen == 0 || vlen >= sizeof(num))
				return false;
			memcpy(num, val, vlen), num[vlen] = '\0';
			px->size = strtoull(num, &end, 10);
			if (*end)
				return false;
			px->has_size = true;
		}
		off += rl;
	}
	return true;
}

/* Normalises an archive name in place: strips "./" and trailing slashes;
 * refuses absolute names, "..", empty ones. */
static bool clean_name(char *name)
{
	while (name[0] == '.' && name[1] == '/')
		memmove(name, name + 2, strlen(name + 2) + 1);
	size_t n = strlen(name);
	while (n && name[n - 1] == '/')
		name[--n] = '\0';
	if (!n || name[0] == '/')
		return false;
	for (const char *c = name; *c;) {
		size_t seg = strcspn(c, "/");
		if (seg == 0 || (seg == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		c += seg;
		if (*c)
			c++;
	}
	return true;
}

/* Opens the directory holding name's last component under root, creating
 * missing directories, never following a symlink; *last points into name. */
static int open_parent(int root, char *name, const char **last)
{
	int fd = dup(root);
	char *c = name;
	for (char *slash; fd >= 0 && (slash = strchr(c, '/'));) {
		*slash = '\0';
		if (strcmp(c, ".")) {
			if (mkdirat(fd, c, 0755) < 0 && errno != EEXIST) {
				close(fd);
				*slash = '/';
				return -1;
			}
			int next = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			close(fd);
			fd = next;
		}
		*slash = '/';
		c = slash + 1;
	}
	*last = c;
	return fd;
}

/* Makes room for a new entry: an existing non-directory goes (as tar does). */
static void clear_slot(int dfd, const char *leaf, bool keep_dir)
{
	struct stat st;
	if (fstatat(dfd, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		if (!keep_dir)
			(void)unlinkat(dfd, leaf, AT_REMOVEDIR);
	} else {
		(void)unlinkat(dfd, leaf, 0);
	}
}

static bool in_entry(int root, const struct ustar *h, char *name, const char *link, uint64_t size)
{
	bool bad = false;
	mode_t mode = (mode_t)parse_octal(h->mode, sizeof(h->mode), &bad) & 07777;
	uid_t uid = (uid_t)parse_octal(h->uid, sizeof(h->uid), &bad);
	gid_t gid = (gid_t)parse_octal(h->gid, sizeof(h->gid), &bad);
	time_t mtime = (time_t)parse_octal(h->mtime, sizeof(h->mtime), &bad);
	char type = h->type ? h->type : '0';
	if (type == '5' && name[0] && strspn(name, "./") == strlen(name) && !strstr(name, ".."))
		return skip_data(size); /* "./": DIR itself */
	if (!clean_name(name)) {
		complain("%s: refused (absolute, \"..\" or empty name)", name);
		return skip_data(size);
	}
	if (type != '0' && type != '7' && type != '5' && type != '2') {
		complain("%s: refused (entry type '%c')", name, type);
		return skip_data(size);
	}
	const char *leaf = NULL;
	int dfd = open_parent(root, name, &leaf);
	if (dfd < 0) {
		complain("%s: %s", name, strerror(errno));
		return skip_data(size);
	}
	bool ok = true;
	int fd = -1;
	if (type == '5') {
		clear_slot(dfd, leaf, true);
		if (mkdirat(dfd, leaf, 0700) < 0 && errno != EEXIST)
			complain("%s: %s", name, strerror(errno));
		fd = openat(dfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		ok = skip_data(size);
	} else if (type == '2') {
		clear_slot(dfd, leaf, false);
		if (symlinkat(link, dfd, leaf) < 0)
			complain("%s: %s", name, strerror(errno));
		else if (geteuid() == 0)
			(void)!fchownat(dfd, leaf, uid, gid, AT_SYMLINK_NOFOLLOW);
		ok = skip_data(size);
	} else {
		clear_slot(dfd, leaf, false);
		fd = openat(dfd, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			complain("%s: %s", name, strerror(errno));
		static char buf[65536];
		for (uint64_t left = size; ok && left;) {
			size_t want = left < sizeof(buf) ? (size_t)left : sizeof(buf);
			ok = read_full(0, buf, want) == 1;
			if (ok && fd >= 0 && !write_all(fd, buf, want)) {
				complain("%s: %s", name, strerror(errno));
				close(fd);
				fd = -1;
			}
			left -= want;
		}
		char pad[BLOCK];
		if (ok && size % BLOCK)
			ok = read_full(0, pad, BLOCK - size % BLOCK) == 1;
	}
	if (fd >= 0) {
		if (geteuid() == 0)
			(void)!fchown(fd, uid, gid);
		(void)fchmod(fd, mode);
		struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = mtime}};
		(void)futimens(fd, ts);
		close(fd);
	}
	close(dfd);
	return ok;
}

/* mkdir -p, following symlinks (all inside the container). */
static void make_dirs(const char *dir)
{
	char p[MAX_NAME];
	if (snprintf(p, sizeof(p), "%s", dir) >= (int)sizeof(p))
		return;
	for (char *c = p + 1; *c; c++) {
		if (*c != '/')
			continue;
		*c = '\0';
		(void)mkdir(p, 0755);
		*c = '/';
	}
	(void)mkdir(p, 0755);
}

static int copy_in(const char *dir)
{
	int root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0 && errno == ENOENT) {
		make_dirs(dir);
		root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	if (root < 0) {
		complain("%s: %s", dir, strerror(errno));
		return 1;
	}
	struct pax px = {0};
	for (;;) {
		struct ustar h;
		int r = read_full(0, &h, sizeof(h));
		if (r == 0)
			break;
		if (r < 0) {
			complain("the archive ends inside a header");
			return 1;
		}
		static const char zero[BLOCK];
		if (!memcmp(&h, zero, BLOCK))
			break;
		bool bad = false;
		uint64_t sum = parse_octal(h.chksum, sizeof(h.chksum), &bad);
		memset(h.chksum, ' ', sizeof(h.chksum));
		uint64_t mine = 0;
		for (size_t i = 0; i < BLOCK; i++)
			mine += ((unsigned char *)&h)[i];
		uint64_t size = parse_octal(h.size, sizeof(h.size), &bad);
		if (bad || sum != mine || memcmp(h.magic, "ustar", 5)) {
			complain("not a tar archive (bad header)");
			return 1;
		}
		if (h.type == 'x' || h.type == 'g') {
			if (size > 2 * MAX_NAME + 4096) {
				complain("extended header too large");
				return 1;
			}
			char rec[2 * MAX_NAME + 4096 + BLOCK];
			size_t padded = (size_t)((size + BLOCK - 1) / BLOCK * BLOCK);
			if (read_full(0, rec, padded) != 1) {
				complain("the archive ends inside an extended header");
				return 1;
			}
			if (h.type == 'x' && !parse_pax(rec, (size_t)size, &px)) {
				complain("malformed extended header");
				return 1;
			}
			continue;
		}
		char name[MAX_NAME + 256], link[MAX_NAME];
		if (px.has_path) {
			snprintf(name, sizeof(name), "%s", px.path);
		} else if (h.prefix[0]) {
			snprintf(name, sizeof(name), "%.*s/%.*s", (int)sizeof(h.prefix), h.prefix,
				 (int)sizeof(h.name), h.name);
		} else {
			snprintf(name, sizeof(name), "%.*s", (int)sizeof(h.name), h.name);
		}
		if (px.has_link)
			snprintf(link, sizeof(link), "%s", px.linkpath);
		else
			snprintf(link, sizeof(link), "%.*s", (int)sizeof(h.linkname), h.linkname);
		if (px.has_size)
			size = px.size;
		memset(&px, 0, sizeof(px));
		if (!in_entry(root, &h, name, link, size)) {
			complain("the archive ends inside an entry");
			return 1;
		}
	}
	close(root);
	return status;
}

int agent_archive_main(int argc, char **argv)
{
	bool out = !strcmp(argv[0], BL_AGENT_COPY_OUT_PATH);
	prog = out ? "copy-out" : "copy-in";
	if (argc != 2) {
		complain("usage: %s PATH", argv[0]);
		return 2;
	}
	return out ? copy_out(argv[1]) : copy_in(argv[1]);
}
