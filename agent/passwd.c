#include "passwd.h"
#include "bl_cleanup.h"
#include "bl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct field {
	const char *p;
	size_t n;
} field;

#define MAX_FIELDS 8

bool agent_parse_u32(const char *s, size_t len, uint32_t *ret)
{
	uint64_t v = 0;
	if (len == 0 || len > 10)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v >= UINT32_MAX)
		return false;
	*ret = (uint32_t)v;
	return true;
}

/* Splits one line into ':'-separated fields; returns their count (lines with
 * more than MAX_FIELDS fields count as MAX_FIELDS + 1, i.e. malformed). */
static size_t split_line(const char *p, size_t n, field *f)
{
	size_t k = 0, start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && p[i] != ':')
			continue;
		if (k == MAX_FIELDS)
			return MAX_FIELDS + 1;
		f[k].p = p + start;
		f[k].n = i - start;
		k++;
		start = i + 1;
	}
	return k;
}

/* Calls fn on every well-formed line (no NULs, bounded length) until it returns nonzero. */
static int for_each_line(const char *buf, size_t len, size_t want_fields,
			 int (*fn)(const field *f, void *ctx), void *ctx)
{
	size_t off = 0;
	while (buf && off < len) {
		const char *nl = memchr(buf + off, '\n', len - off);
		size_t n = nl ? (size_t)(nl - (buf + off)) : len - off;
		const char *line = buf + off;
		off += n + 1;
		if (n == 0 || n > AGENT_PASSWD_MAX_LINE || memchr(line, '\0', n) || line[0] == '#')
			continue;
		field f[MAX_FIELDS];
		if (split_line(line, n, f) != want_fields)
			continue;
		int r = fn(f, ctx);
		if (r)
			return r;
	}
	return 0;
}

static bool field_eq(const field *f, const char *s)
{
	return f->n == strlen(s) && !memcmp(f->p, s, f->n);
}

static void field_copy(const field *f, char *dst, size_t size)
{
	size_t n = f->n < size - 1 ? f->n : size - 1;
	memcpy(dst, f->p, n);
	dst[n] = '\0';
}

struct pw_query {
	const char *name;
	uint32_t uid;
	agent_pwent *out;
};

static int pw_match(const field *f, void *ctx)
{
	struct pw_query *q = ctx;
	uint32_t uid, gid;
	if (f[0].n == 0 || f[0].n >= sizeof(q->out->name) ||
	    !agent_parse_u32(f[2].p, f[2].n, &uid) || !agent_parse_u32(f[3].p, f[3].n, &gid))
		return 0;
	if (q->name ? !field_eq(&f[0], q->name) : uid != q->uid)
		return 0;
	field_copy(&f[0], q->out->name, sizeof(q->out->name));
	field_copy(&f[5], q->out->home, sizeof(q->out->home));
	q->out->uid = uid;
	q->out->gid = gid;
	return 1;
}

int agent_passwd_find(const char *buf, size_t len, const char *name, uint32_t uid, agent_pwent *ret)
{
	struct pw_query q = {.name = name, .uid = uid, .out = ret};
	return for_each_line(buf, len, 7, pw_match, &q);
}

struct gr_query {
	const char *name;
	uint32_t gid;
};

static int gr_match(const field *f, void *ctx)
{
	struct gr_query *q = ctx;
	return field_eq(&f[0], q->name) && agent_parse_u32(f[2].p, f[2].n, &q->gid);
}

int agent_group_find(const char *buf, size_t len, const char *name, uint32_t *ret_gid)
{
	struct gr_query q = {.name = name};
	int r = for_each_line(buf, len, 4, gr_match, &q);
	if (r)
		*ret_gid = q.gid;
	return r;
}

struct gr_members {
	const char *user;
	gid_t *gids;
	size_t n, max;
};

static bool list_has(const field *list, const char *user)
{
	size_t ulen = strlen(user), start = 0;
	for (size_t i = 0; i <= list->n; i++) {
		if (i < list->n && list->p[i] != ',')
			continue;
		if (i - start == ulen && !memcmp(list->p + start, user, ulen))
			return true;
		start = i + 1;
	}
	return false;
}

static int gr_member(const field *f, void *ctx)
{
	struct gr_members *m = ctx;
	uint32_t gid;
	if (!agent_parse_u32(f[2].p, f[2].n, &gid) || !list_has(&f[3], m->user))
		return 0;
	for (size_t i = 0; i < m->n; i++) {
		if (m->gids[i] == gid)
			return 0;
	}
	m->gids[m->n++] = gid;
	return m->n == m->max;
}

size_t agent_group_members(const char *buf, size_t len, const char *user, gid_t *gids, size_t max)
{
	struct gr_members m = {.user = user, .gids = gids, .max = max};
	if (max > 0 && user[0])
		(void)for_each_line(buf, len, 4, gr_member, &m);
	return m.n;
}

static int resolve_user_part(const char *u, const char *passwd, size_t plen, agent_user *ret,
			     agent_pwent *pw, bl_error_t *err)
{
	if (agent_parse_u32(u, strlen(u), &ret->uid)) {
		if (agent_passwd_find(passwd, plen, NULL, ret->uid, pw) == 1)
			ret->gid = pw->gid;
		else
			pw->name[0] = '\0';
		return 0;
	}
	if (agent_passwd_find(passwd, plen, u, 0, pw) != 1)
		return bl_set_error(err, BL_ENOTFOUND, "user \"%.64s\" not found in /etc/passwd",
				    u);
	ret->uid = pw->uid;
	ret->gid = pw->gid;
	return 0;
}

int agent_user_resolve_buf(const char *spec, const char *passwd, size_t passwd_len,
			   const char *group, size_t group_len, agent_user *ret, bl_error_t *err)
{
	char u[256];
	if (!spec || !spec[0] || strlen(spec) >= sizeof(u))
		return bl_set_error(err, BL_EINVAL, "bad user \"%.64s\"", spec ? spec : "");
	memset(ret, 0, sizeof(*ret));
	snprintf(u, sizeof(u), "%s", spec);
	char *g = strchr(u, ':');
	if (g)
		*g++ = '\0';
	if (!u[0] || (g && !g[0]))
		return bl_set_error(err, BL_EINVAL, "bad user \"%.64s\"", spec);
	_cleanup_free_ agent_pwent *pw = bl_malloc0(sizeof(*pw));
	int r = resolve_user_part(u, passwd, passwd_len, ret, pw, err);
	if (r < 0)
		return r;
	snprintf(ret->home, sizeof(ret->home), "%s", pw->name[0] ? pw->home : "");
	if (g && !agent_parse_u32(g, strlen(g), &ret->gid) &&
	    agent_group_find(group, group_len, g, &ret->gid) != 1)
		return bl_set_error(err, BL_ENOTFOUND, "group \"%.64s\" not found in /etc/group",
				    g);
	if (pw->name[0])
		ret->n_gids = agent_group_members(group, group_len, pw->name, ret->gids,
						  AGENT_USER_MAX_GROUPS);
	return 0;
}

int agent_read_in_root(int rootfd, const char *path, size_t max, char **ret, size_t *ret_len,
		       bl_error_t *err)
{
	struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
			       .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	*ret = NULL;
	_cleanup_close_ int fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
	if (fd < 0)
		return errno == ENOENT ? 0 : bl_set_error_errno(err, errno, "open %s", path);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return bl_set_error_errno(err, errno, "stat %s", path);
	if (!S_ISREG(st.st_mode))
		return bl_set_error(err, BL_EPROTO, "%s is not a regular file", path);
	/* Sized by fstat, not by max: a zeroed 1 MiB buffer per file costs
	 * hundreds of page faults, per exec. Grows if the file does. */
	size_t cap = (size_t)st.st_size < max ? (size_t)st.st_size + 1 : max + 1;
	_cleanup_free_ char *buf = bl_malloc0(cap + 1);
	size_t len = 0;
	for (;;) {
		ssize_t n = bl_read_full(fd, buf + len, cap - len);
		if (n < 0)
			return bl_set_error_errno(err, errno, "read %s", path);
		len += (size_t)n;
		if (len > max)
			return bl_set_error(err, BL_EPROTO, "%s is larger than %zu bytes", path,
					    max);
		if (len < cap)
			break;
		size_t ncap = cap * 2 < max + 1 ? cap * 2 : max + 1;
		char *nb = realloc(buf, ncap + 1);
		if (!nb)
			abort();
		buf = nb;
		cap = ncap;
	}
	buf[len] = '\0';
	*ret_len = len;
	*ret = steal_pointer(&buf);
	return 0;
}

int agent_user_resolve(int rootfd, const char *spec, agent_user *ret, bl_error_t *err)
{
	_cleanup_free_ char *pw = NULL, *gr = NULL;
	size_t pwlen = 0, grlen = 0;
	int r = agent_read_in_root(rootfd, "/etc/passwd", AGENT_PASSWD_MAX_BYTES, &pw, &pwlen, err);
	if (r == 0)
		r = agent_read_in_root(rootfd, "/etc/group", AGENT_PASSWD_MAX_BYTES, &gr, &grlen,
				       err);
	if (r < 0)
		return r;
	return agent_user_resolve_buf(spec, pw, pwlen, gr, grlen, ret, err);
}
