#include "spec.h"
#include "bl_cleanup.h"
#include "bl_util.h"
#include "validate.h"

#include <json-c/json.h>
#include <limits.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/mount.h>
#include <sys/resource.h>

BL_DEFINE_CLEANUP(json_object, json_object_put)
BL_DEFINE_CLEANUP(agent_process_spec, agent_process_spec_free)
BL_DEFINE_CLEANUP(agent_spec, agent_spec_free)

#define JV(o, k) json_object_object_get(o, k)

/* Parses len bytes of JSON with a depth limit; the whole input must be one value. */
static json_object *parse_json(const char *buf, size_t len, bl_error_t *err)
{
	if (len == 0 || len > AGENT_SPEC_MAX_BYTES) {
		bl_set_error(err, BL_EINVAL, "JSON of %zu bytes (1..%u allowed)", len,
			     AGENT_SPEC_MAX_BYTES);
		return NULL;
	}
	struct json_tokener *tok = json_tokener_new_ex(AGENT_SPEC_MAX_DEPTH);
	if (!tok)
		abort();
	json_object *o = json_tokener_parse_ex(tok, buf, (int)len);
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	size_t end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!o || jerr != json_tokener_success) {
		json_object_put(o);
		bl_set_error(err, BL_EINVAL, "malformed JSON: %s",
			     jerr == json_tokener_continue ? "truncated"
							   : json_tokener_error_desc(jerr));
		return NULL;
	}
	for (; end < len; end++) {
		if (!strchr(" \t\r\n", buf[end])) {
			json_object_put(o);
			bl_set_error(err, BL_EINVAL, "malformed JSON: trailing data");
			return NULL;
		}
	}
	return o;
}

/* A JSON string without embedded NULs, at most max bytes; NULL o is "absent". */
static int get_string(json_object *o, const char *what, size_t max, char **ret, bl_error_t *err)
{
	if (!json_object_is_type(o, json_type_string))
		return bl_set_error(err, BL_EINVAL, "%s: not a string", what);
	size_t n = (size_t)json_object_get_string_len(o);
	const char *s = json_object_get_string(o);
	if (n > max)
		return bl_set_error(err, BL_EINVAL, "%s: longer than %zu bytes", what, max);
	if (strlen(s) != n)
		return bl_set_error(err, BL_EINVAL, "%s: contains a NUL byte", what);
	*ret = bl_strdup(s);
	return 0;
}

static int get_bool(json_object *o, const char *what, bool *ret, bl_error_t *err)
{
	if (!o)
		return 0;
	if (!json_object_is_type(o, json_type_boolean))
		return bl_set_error(err, BL_EINVAL, "%s: not a boolean", what);
	*ret = json_object_get_boolean(o);
	return 0;
}

/* An integer in [min, max] (max may exceed INT64_MAX for unsigned fields). */
static int get_int(json_object *o, const char *what, int64_t min, uint64_t max, int64_t *ret_s,
		   uint64_t *ret_u, bl_error_t *err)
{
	if (!json_object_is_type(o, json_type_int))
		return bl_set_error(err, BL_EINVAL, "%s: not an integer", what);
	int64_t s = json_object_get_int64(o);
	uint64_t u = s < 0 ? 0 : json_object_get_uint64(o);
	if (s < min || (s >= 0 && u > max))
		return bl_set_error(err, BL_EINVAL, "%s: out of range", what);
	if (ret_s)
		*ret_s = s;
	if (ret_u)
		*ret_u = u;
	return 0;
}

static int get_u32(json_object *o, const char *what, uint32_t *ret, bl_error_t *err)
{
	uint64_t u = 0;
	if (!o)
		return 0;
	int r = get_int(o, what, 0, UINT32_MAX - 1, NULL, &u, err);
	if (r == 0)
		*ret = (uint32_t)u;
	return r;
}

static int check_array(json_object *o, const char *what, size_t max, size_t *ret_n, bl_error_t *err)
{
	if (!json_object_is_type(o, json_type_array))
		return bl_set_error(err, BL_EINVAL, "%s: not an array", what);
	size_t n = json_object_array_length(o);
	if (n > max)
		return bl_set_error(err, BL_EINVAL, "%s: more than %zu entries", what, max);
	*ret_n = n;
	return 0;
}

/* Array of strings into a NULL-terminated vector, bounded in count and total size. */
static int get_strv(json_object *o, const char *what, size_t max, size_t *total, char ***ret,
		    bl_error_t *err)
{
	size_t n;
	int r = check_array(o, what, max, &n, err);
	if (r < 0)
		return r;
	_cleanup_strv_ char **v = bl_malloc0((n + 1) * sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		r = get_string(json_object_array_get_idx(o, i), what, AGENT_SPEC_MAX_STRING, &v[i],
			       err);
		if (r < 0)
			return r;
		*total += strlen(v[i]) + 1;
		if (*total > AGENT_SPEC_MAX_ARGV_TOTAL)
			return bl_set_error(err, BL_EINVAL, "%s: too large in total", what);
	}
	*ret = steal_pointer(&v);
	return 0;
}

static bool valid_abs_path(const char *p)
{
	if (p[0] != '/' || strlen(p) > AGENT_SPEC_MAX_PATH)
		return false;
	for (const char *s = p; (s = strstr(s, "..")); s += 2) {
		if (s[-1] == '/' && (s[2] == '/' || s[2] == '\0'))
			return false;
	}
	return true;
}

static int parse_env(json_object *o, size_t *total, agent_process_spec *p, bl_error_t *err)
{
	if (!o) {
		p->env = bl_malloc0(sizeof(char *));
		return 0;
	}
	int r = get_strv(o, "process.env", AGENT_SPEC_MAX_ENV, total, &p->env, err);
	if (r < 0)
		return r;
	for (char **e = p->env; *e; e++) {
		const char *eq = strchr(*e, '=');
		if (!eq || eq == *e)
			return bl_set_error(err, BL_EINVAL,
					    "process.env: \"%.64s\" is not KEY=VALUE", *e);
	}
	return 0;
}

static int parse_gids(json_object *o, agent_process_spec *p, bl_error_t *err)
{
	size_t n;
	if (!o)
		return 0;
	int r = check_array(o, "process.user.additionalGids", AGENT_SPEC_MAX_GROUPS, &n, err);
	if (r < 0)
		return r;
	p->additional_gids = bl_malloc0(n * sizeof(gid_t));
	for (size_t i = 0; i < n; i++) {
		uint32_t g = 0;
		r = get_u32(json_object_array_get_idx(o, i), "process.user.additionalGids", &g,
			    err);
		if (r < 0)
			return r;
		p->additional_gids[i] = g;
	}
	p->n_additional_gids = n;
	return 0;
}

static int parse_user(json_object *o, agent_process_spec *p, bl_error_t *err)
{
	if (!o)
		return 0;
	if (!json_object_is_type(o, json_type_object))
		return bl_set_error(err, BL_EINVAL, "process.user: not an object");
	int r = get_u32(JV(o, "uid"), "process.user.uid", &p->uid, err);
	if (r == 0)
		r = get_u32(JV(o, "gid"), "process.user.gid", &p->gid, err);
	if (r == 0 && JV(o, "umask")) {
		r = get_u32(JV(o, "umask"), "process.user.umask", &p->umask, err);
		if (r == 0 && p->umask > 0777)
			r = bl_set_error(err, BL_EINVAL, "process.user.umask: out of range");
	}
	if (r == 0)
		r = parse_gids(JV(o, "additionalGids"), p, err);
	if (r == 0 && JV(o, "username")) {
		r = get_string(JV(o, "username"), "process.user.username", 256, &p->username, err);
		if (r == 0 && p->username[0] == '\0')
			free(steal_pointer(&p->username));
	}
	return r;
}

/* One capability set: names like "CAP_CHOWN" into a bit mask. */
static int parse_capset(json_object *o, const char *what, uint64_t *ret, bl_error_t *err)
{
	size_t n;
	*ret = 0;
	if (!o)
		return 0;
	int r = check_array(o, what, AGENT_SPEC_MAX_CAPS, &n, err);
	for (size_t i = 0; r == 0 && i < n; i++) {
		_cleanup_free_ char *name = NULL;
		cap_value_t cap;
		r = get_string(json_object_array_get_idx(o, i), what, 64, &name, err);
		if (r < 0)
			break;
		if (strncasecmp(name, "CAP_", 4) || cap_from_name(name, &cap) < 0 || cap < 0 ||
		    cap > 63)
			return bl_set_error(err, BL_EINVAL, "%s: unknown capability \"%s\"", what,
					    name);
		*ret |= 1ull << cap;
	}
	return r;
}

static int parse_caps(json_object *o, agent_process_spec *p, bl_error_t *err)
{
	if (!o)
		return 0;
	if (!json_object_is_type(o, json_type_object))
		return bl_set_error(err, BL_EINVAL, "process.capabilities: not an object");
	p->has_caps = true;
	agent_caps *c = &p->caps;
	int r = parse_capset(JV(o, "bounding"), "process.capabilities.bounding", &c->bounding, err);
	if (r == 0)
		r = parse_capset(JV(o, "effective"), "process.capabilities.effective",
				 &c->effective, err);
	if (r == 0)
		r = parse_capset(JV(o, "permitted"), "process.capabilities.permitted",
				 &c->permitted, err);
	if (r == 0)
		r = parse_capset(JV(o, "inheritable"), "process.capabilities.inheritable",
				 &c->inheritable, err);
	if (r == 0)
		r = parse_capset(JV(o, "ambient"), "process.capabilities.ambient", &c->ambient,
				 err);
	return r;
}

static const struct {
	const char *name;
	int resource;
} rlimit_names[] = {
    {"RLIMIT_AS", RLIMIT_AS},
    {"RLIMIT_CORE", RLIMIT_CORE},
    {"RLIMIT_CPU", RLIMIT_CPU},
    {"RLIMIT_DATA", RLIMIT_DATA},
    {"RLIMIT_FSIZE", RLIMIT_FSIZE},
    {"RLIMIT_LOCKS", RLIMIT_LOCKS},
    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},
    {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE},
    {"RLIMIT_NICE", RLIMIT_NICE},
    {"RLIMIT_NOFILE", RLIMIT_NOFILE},
    {"RLIMIT_NPROC", RLIMIT_NPROC},
    {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},
    {"RLIMIT_RTTIME", RLIMIT_RTTIME},
    {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_STACK", RLIMIT_STACK},
};

int agent_rlimit_from_name(const char *name)
{
	for (size_t i = 0; i < BL_ARRAY_SIZE(rlimit_names); i++) {
		if (!strcmp(name, rlimit_names[i].name))
			return rlimit_names[i].resource;
	}
	return -1;
}

static int parse_rlimit(json_object *o, agent_rlimit *rl, bl_error_t *err)
{
	_cleanup_free_ char *type = NULL;
	if (!json_object_is_type(o, json_type_object))
		return bl_set_error(err, BL_EINVAL, "process.rlimits: entry not an object");
	int r = get_string(JV(o, "type"), "process.rlimits.type", 64, &type, err);
	if (r < 0)
		return r;
	rl->resource = agent_rlimit_from_name(type);
	if (rl->resource < 0)
		return bl_set_error(err, BL_EINVAL, "process.rlimits: unknown type \"%s\"", type);
	r = get_int(JV(o, "soft"), "process.rlimits.soft", 0, UINT64_MAX, NULL, &rl->soft, err);
	if (r == 0)
		r = get_int(JV(o, "hard"), "process.rlimits.hard", 0, UINT64_MAX, NULL, &rl->hard,
			    err);
	if (r == 0 && rl->soft > rl->hard)
		r = bl_set_error(err, BL_EINVAL, "process.rlimits: %s soft above hard", type);
	return r;
}

static int parse_rlimits(json_object *o, agent_process_spec *p, bl_error_t *err)
{
	size_t n;
	if (!o)
		return 0;
	int r = check_array(o, "process.rlimits", AGENT_SPEC_MAX_RLIMITS, &n, err);
	if (r < 0)
		return r;
	p->rlimits = bl_malloc0(n * sizeof(agent_rlimit));
	for (size_t i = 0; i < n; i++) {
		r = parse_rlimit(json_object_array_get_idx(o, i), &p->rlimits[i], err);
		if (r < 0)
			return r;
		p->n_rlimits = i + 1;
	}
	return 0;
}

static int parse_args_cwd(json_object *o, size_t *total, agent_process_spec *p, bl_error_t *err)
{
	if (!JV(o, "args"))
		return bl_set_error(err, BL_EINVAL, "process.args: missing");
	int r = get_strv(JV(o, "args"), "process.args", AGENT_SPEC_MAX_ARGS, total, &p->args, err);
	if (r < 0)
		return r;
	if (!p->args[0] || !p->args[0][0])
		return bl_set_error(err, BL_EINVAL, "process.args: empty command");
	if (!JV(o, "cwd")) {
		p->cwd = bl_strdup("/");
		return 0;
	}
	r = get_string(JV(o, "cwd"), "process.cwd", AGENT_SPEC_MAX_PATH, &p->cwd, err);
	if (r == 0 && !valid_abs_path(p->cwd))
		r = bl_set_error(err, BL_EINVAL, "process.cwd: not a clean absolute path");
	return r;
}

static int parse_process_obj(json_object *o, agent_process_spec **ret, bl_error_t *err)
{
	if (!json_object_is_type(o, json_type_object))
		return bl_set_error(err, BL_EINVAL, "process: not an object");
	_cleanup_(agent_process_spec_freep) agent_process_spec *p = bl_malloc0(sizeof(*p));
	p->umask = 022;
	size_t total = 0;
	int r = parse_args_cwd(o, &total, p, err);
	if (r == 0)
		r = parse_env(JV(o, "env"), &total, p, err);
	if (r == 0)
		r = parse_user(JV(o, "user"), p, err);
	if (r == 0)
		r = get_bool(JV(o, "terminal"), "process.terminal", &p->terminal, err);
	if (r == 0)
		r = get_bool(JV(o, "noNewPrivileges"), "process.noNewPrivileges",
			     &p->no_new_privileges, err);
	if (r == 0)
		r = parse_caps(JV(o, "capabilities"), p, err);
	if (r == 0)
		r = parse_rlimits(JV(o, "rlimits"), p, err);
	if (r == 0 && JV(o, "oomScoreAdj")) {
		int64_t v = 0;
		r = get_int(JV(o, "oomScoreAdj"), "process.oomScoreAdj", -1000, 1000, &v, NULL,
			    err);
		p->has_oom_score_adj = r == 0;
		p->oom_score_adj = (int)v;
	}
	if (r == 0)
		*ret = steal_pointer(&p);
	return r;
}

int agent_process_spec_parse(const char *json, size_t len, agent_process_spec **ret,
			     bl_error_t *err)
{
	_cleanup_(json_object_putp) json_object *o = parse_json(json, len, err);
	if (!o)
		return bl_error_prefix(err, "process");
	return parse_process_obj(o, ret, err);
}

/* "size=1m,mode=1777" etc. from OCI mount options; flag words become flags. */
static int parse_mount_options(json_object *o, agent_mount *m, bl_error_t *err)
{
	static const struct {
		const char *opt;
		unsigned long set;
	} flags[] = {{"nosuid", MS_NOSUID}, {"nodev", MS_NODEV}, {"noexec", MS_NOEXEC},
		     {"ro", MS_RDONLY},	    {"rw", 0},		 {"strictatime", MS_STRICTATIME}};
	size_t n, used = 0;
	int r = o ? check_array(o, "mounts.options", 32, &n, err) : (n = 0, 0);
	m->data = bl_malloc0(AGENT_SPEC_MAX_MOUNT_DATA);
	for (size_t i = 0; r == 0 && i < n; i++) {
		_cleanup_free_ char *opt = NULL;
		r = get_string(json_object_array_get_idx(o, i), "mounts.options", 128, &opt, err);
		if (r < 0)
			break;
		bool is_flag = false;
		for (size_t f = 0; f < BL_ARRAY_SIZE(flags); f++) {
			if (!strcmp(opt, flags[f].opt)) {
				m->flags |= flags[f].set;
				is_flag = true;
			}
		}
		if (is_flag)
			continue;
		if (strchr(opt, ',') || used + strlen(opt) + 2 > AGENT_SPEC_MAX_MOUNT_DATA)
			return bl_set_error(err, BL_EINVAL, "mounts.options: bad option");
		used += (size_t)snprintf(m->data + used, AGENT_SPEC_MAX_MOUNT_DATA - used, "%s%s",
					 used ? "," : "", opt);
	}
	return r;
}

static bool is_fixed_mount(const char *dst)
{
	static const char *const fixed[] = {"/proc", "/dev",	    "/dev/pts",	     "/dev/shm",
					    "/sys",  "/dev/mqueue", "/sys/fs/cgroup"};
	for (size_t i = 0; i < BL_ARRAY_SIZE(fixed); i++) {
		if (!strcmp(dst, fixed[i]))
			return true;
	}
	return false;
}

/* A bind mount (type "bind"): a share-relative source; options ro/rw,
 * noexec, (r)bind and propagation words; anything else is refused. */
static int parse_bind(json_object *o, agent_spec *s, char *dst_owned, bl_error_t *err)
{
	_cleanup_free_ char *dst = dst_owned, *src = NULL;
	static const char *const ignored[] = {
	    "bind",	"rbind",      "rprivate", "private",	"rslave",     "slave", "rshared",
	    "shared",	"nosuid",     "nodev",	  "rw",		"suid",	      "dev",   "exec",
	    "relatime", "norelatime", "noatime",  "nodiratime", "strictatime"};
	int r = get_string(JV(o, "source"), "mounts.source", AGENT_SPEC_MAX_PATH, &src, err);
	if (r < 0)
		return r;
	if (!agent_valid_subpath(src) || !src[0])
		return bl_set_error(err, BL_EINVAL,
				    "mounts: bind source \"%.64s\" is not a share-relative path",
				    src);
	agent_bind *b = &s->binds[s->n_binds];
	size_t n = 0;
	json_object *opts = JV(o, "options");
	r = opts ? check_array(opts, "mounts.options", 32, &n, err) : 0;
	for (size_t i = 0; r == 0 && i < n; i++) {
		_cleanup_free_ char *opt = NULL;
		r = get_string(json_object_array_get_idx(opts, i), "mounts.options", 64, &opt, err);
		if (r < 0)
			break;
		bool known = false;
		for (size_t k = 0; k < BL_ARRAY_SIZE(ignored); k++)
			known = known || !strcmp(opt, ignored[k]);
		if (!strcmp(opt, "ro"))
			b->flags |= MS_RDONLY;
		else if (!strcmp(opt, "noexec"))
			b->flags |= MS_NOEXEC;
		else if (!known)
			r = bl_set_error(err, BL_EINVAL,
					 "mounts: bind option \"%s\" is not supported", opt);
	}
	if (r < 0)
		return r;
	b->source = steal_pointer(&src);
	b->destination = steal_pointer(&dst);
	s->n_binds++;
	return 0;
}

static int parse_mount(json_object *o, agent_spec *s, bl_error_t *err)
{
	_cleanup_free_ char *type = NULL, *dst = NULL;
	if (!json_object_is_type(o, json_type_object))
		return bl_set_error(err, BL_EINVAL, "mounts: entry not an object");
	int r =
	    get_string(JV(o, "destination"), "mounts.destination", AGENT_SPEC_MAX_PATH, &dst, err);
	if (r < 0)
		return r;
	if (!valid_abs_path(dst))
		return bl_set_error(err, BL_EINVAL,
				    "mounts.destination: not a clean absolute path");
	if (JV(o, "type") && (r = get_string(JV(o, "type"), "mounts.type", 64, &type, err)) < 0)
		return r;
	if (type && !strcmp(type, "bind"))
		return parse_bind(o, s, steal_pointer(&dst), err);
	if (!type || strcmp(type, "tmpfs") || is_fixed_mount(dst))
		return 0;
	agent_mount *m = &s->mounts[s->n_mounts];
	r = parse_mount_options(JV(o, "options"), m, err);
	m->destination = steal_pointer(&dst);
	s->n_mounts++;
	return r;
}

static int parse_mounts(json_object *o, agent_spec *s, bl_error_t *err)
{
	size_t n;
	if (!o)
		return 0;
	int r = check_array(o, "mounts", AGENT_SPEC_MAX_MOUNTS, &n, err);
	if (r < 0)
		return r;
	s->mounts = bl_malloc0(n * sizeof(agent_mount));
	s->binds = bl_malloc0(n * sizeof(agent_bind));
	for (size_t i = 0; r == 0 && i < n; i++)
		r = parse_mount(json_object_array_get_idx(o, i), s, err);
	return r;
}

static int check_object(json_object *o, const char *what, bl_error_t *err)
{
	if (o && !json_object_is_type(o, json_type_object))
		return bl_set_error(err, BL_EINVAL, "%s: not an object", what);
	return 0;
}

static int parse_resources(json_object *o, agent_spec *s, bl_error_t *err)
{
	json_object *mem = o ? JV(o, "memory") : NULL, *pids = o ? JV(o, "pids") : NULL;
	json_object *cpu = o ? JV(o, "cpu") : NULL;
	int r = check_object(o, "linux.resources", err);
	if (r == 0)
		r = check_object(mem, "linux.resources.memory", err);
	if (r == 0)
		r = check_object(pids, "linux.resources.pids", err);
	if (r == 0)
		r = check_object(cpu, "linux.resources.cpu", err);
	if (r == 0 && mem && JV(mem, "limit"))
		r = get_int(JV(mem, "limit"), "linux.resources.memory.limit", -1, INT64_MAX,
			    &s->memory_limit, NULL, err);
	if (r == 0 && pids && JV(pids, "limit"))
		r = get_int(JV(pids, "limit"), "linux.resources.pids.limit", -1, INT64_MAX,
			    &s->pids_limit, NULL, err);
	if (r == 0 && cpu && JV(cpu, "quota"))
		r = get_int(JV(cpu, "quota"), "linux.resources.cpu.quota", -1, INT64_MAX,
			    &s->cpu_quota, NULL, err);
	if (r == 0 && cpu && JV(cpu, "period"))
		r = get_int(JV(cpu, "period"), "linux.resources.cpu.period", 0, 1000000, NULL,
			    &s->cpu_period, err);
	if (s->memory_limit == 0)
		s->memory_limit = -1;
	if (s->pids_limit == 0)
		s->pids_limit = -1;
	if (s->cpu_quota == 0)
		s->cpu_quota = -1;
	return r;
}

/* linux.namespaces given without "network" means: share the guest's. */
static int parse_namespaces(json_object *o, agent_spec *s, bl_error_t *err)
{
	size_t n;
	if (!o)
		return 0;
	int r = check_array(o, "linux.namespaces", 16, &n, err);
	s->new_netns = false;
	for (size_t i = 0; r == 0 && i < n; i++) {
		json_object *ns = json_object_array_get_idx(o, i);
		_cleanup_free_ char *type = NULL;
		r = check_object(ns, "linux.namespaces entry", err);
		if (r == 0 && !ns)
			r = bl_set_error(err, BL_EINVAL, "linux.namespaces: null entry");
		if (r == 0)
			r = get_string(JV(ns, "type"), "linux.namespaces.type", 32, &type, err);
		if (r == 0 && !strcmp(type, "network"))
			s->new_netns = true;
	}
	return r;
}

static int parse_linux(json_object *o, agent_spec *s, bl_error_t *err)
{
	int r = check_object(o, "linux", err);
	if (r < 0 || !o)
		return r;
	r = parse_resources(JV(o, "resources"), s, err);
	if (r == 0)
		r = parse_namespaces(JV(o, "namespaces"), s, err);
	if (r == 0 && JV(o, "seccomp"))
		r = agent_seccomp_from_oci(JV(o, "seccomp"), &s->seccomp, err);
	return r;
}

static int parse_root_hostname(json_object *o, agent_spec *s, bl_error_t *err)
{
	json_object *root = JV(o, "root");
	int r = check_object(root, "root", err);
	if (r == 0 && root)
		r = get_bool(JV(root, "readonly"), "root.readonly", &s->root_readonly, err);
	if (r == 0 && JV(o, "hostname"))
		r = get_string(JV(o, "hostname"), "hostname", 64, &s->hostname, err);
	if (r == 0 && s->hostname && !s->hostname[0])
		free(steal_pointer(&s->hostname));
	return r;
}

int agent_spec_parse(const char *json, size_t len, agent_spec **ret, bl_error_t *err)
{
	_cleanup_(json_object_putp) json_object *o = parse_json(json, len, err);
	if (!o)
		return bl_error_prefix(err, "spec");
	if (!json_object_is_type(o, json_type_object))
		return bl_set_error(err, BL_EINVAL, "spec: not a JSON object");
	_cleanup_(agent_spec_freep) agent_spec *s = bl_malloc0(sizeof(*s));
	s->memory_limit = s->pids_limit = s->cpu_quota = -1;
	s->new_netns = true;
	int r = 0;
	if (JV(o, "process"))
		r = parse_process_obj(JV(o, "process"), &s->process, err);
	if (r == 0)
		r = parse_root_hostname(o, s, err);
	if (r == 0)
		r = parse_linux(JV(o, "linux"), s, err);
	if (r == 0)
		r = parse_mounts(JV(o, "mounts"), s, err);
	if (r == 0 && !s->seccomp.insns)
		r = agent_seccomp_default(&s->seccomp, err);
	if (r < 0)
		return bl_error_prefix(err, "spec");
	*ret = steal_pointer(&s);
	return 0;
}

void agent_process_spec_free(agent_process_spec *p)
{
	if (!p)
		return;
	bl_strv_free(p->args);
	bl_strv_free(p->env);
	free(p->cwd);
	free(p->additional_gids);
	free(p->username);
	free(p->rlimits);
	free(p);
}

void agent_spec_free(agent_spec *s)
{
	if (!s)
		return;
	agent_process_spec_free(s->process);
	free(s->hostname);
	for (size_t i = 0; i < s->n_mounts; i++) {
		free(s->mounts[i].destination);
		free(s->mounts[i].data);
	}
	free(s->mounts);
	for (size_t i = 0; i < s->n_binds; i++) {
		free(s->binds[i].source);
		free(s->binds[i].destination);
	}
	free(s->binds);
	agent_seccomp_clear(&s->seccomp);
	free(s);
}

uint64_t agent_caps_default(void)
{
	static const int caps[] = {
	    CAP_CHOWN,	    CAP_DAC_OVERRIDE, CAP_FSETID,  CAP_FOWNER,		 CAP_SETGID,
	    CAP_SETUID,	    CAP_SETFCAP,      CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_KILL,
	    CAP_SYS_CHROOT, CAP_AUDIT_WRITE,
	};
	uint64_t m = 0;
	for (size_t i = 0; i < BL_ARRAY_SIZE(caps); i++)
		m |= 1ull << caps[i];
	return m;
}

const char *agent_env_get(char *const *env, const char *name)
{
	size_t n = strlen(name);
	for (; env && *env; env++) {
		if (!strncmp(*env, name, n) && (*env)[n] == '=')
			return *env + n + 1;
	}
	return NULL;
}
