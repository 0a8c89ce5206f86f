#include "seccomp.h"
#include "bl_cleanup.h"
#include "bl_util.h"
#include "syscall_names.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_RULES 4096
#define MAX_ARGS  6
#define X32_BIT	  0x40000000u

enum cmp { CMP_NE, CMP_LT, CMP_LE, CMP_EQ, CMP_GE, CMP_GT, CMP_MASKED_EQ };

struct cond {
	unsigned index;
	enum cmp op;
	uint64_t value, value_two;
};

struct rule {
	int nr;
	uint32_t action;
	unsigned n_args;
	struct cond args[MAX_ARGS];
};

struct profile {
	uint32_t default_action;
	struct rule *rules;
	size_t n_rules;
};

/* ------------------------------------------------------------ codegen */

struct prog {
	struct sock_filter *v;
	size_t n, cap;
	bool overflow;
};

static size_t emit(struct prog *p, uint16_t code, uint32_t k, uint8_t jt, uint8_t jf)
{
	if (p->n == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 256;
		p->v = realloc(p->v, p->cap * sizeof(*p->v));
		if (!p->v)
			abort();
	}
	p->v[p->n] = (struct sock_filter){.code = code, .jt = jt, .jf = jf, .k = k};
	return p->n++;
}

#define LD(off)		 emit(p, BPF_LD | BPF_W | BPF_ABS, (off), 0, 0)
#define RET(k)		 emit(p, BPF_RET | BPF_K, (k), 0, 0)
#define JMP(op, k, t, f) emit(p, BPF_JMP | (op) | BPF_K, (k), (t), (f))

/* Jumps to patch once the target is known: (insn index, which branch). */
struct fixups {
	size_t at[64];
	bool jt[64];
	size_t n;
};

static void want(struct fixups *f, size_t insn, bool jt)
{
	if (f->n < BL_ARRAY_SIZE(f->at)) {
		f->at[f->n] = insn;
		f->jt[f->n] = jt;
		f->n++;
	}
}

static void land(struct prog *p, struct fixups *f, size_t target)
{
	for (size_t i = 0; i < f->n; i++) {
		size_t off = target - f->at[i] - 1;
		if (off > 255)
			p->overflow = true;
		if (f->jt[i])
			p->v[f->at[i]].jt = (uint8_t)off;
		else
			p->v[f->at[i]].jf = (uint8_t)off;
	}
	f->n = 0;
}

#define ARG_LO(i) ((uint32_t)(offsetof(struct seccomp_data, args) + 8 * (i)))
#define ARG_HI(i) (ARG_LO(i) + 4)

/* One argument condition: falls through when it holds, else jumps to a
 * rule-fail fixup. */
static void emit_cond(struct prog *p, const struct cond *c, struct fixups *fail)
{
	uint32_t vh = (uint32_t)(c->value >> 32), vl = (uint32_t)c->value;
	struct fixups pass = {0};
	switch (c->op) {
	case CMP_EQ:
		LD(ARG_HI(c->index));
		want(fail, JMP(BPF_JEQ, vh, 0, 0), false);
		LD(ARG_LO(c->index));
		want(fail, JMP(BPF_JEQ, vl, 0, 0), false);
		break;
	case CMP_NE:
		LD(ARG_HI(c->index));
		want(&pass, JMP(BPF_JEQ, vh, 0, 0), false);
		LD(ARG_LO(c->index));
		want(fail, JMP(BPF_JEQ, vl, 0, 0), true);
		break;
	case CMP_MASKED_EQ: {
		uint32_t mh = vh, ml = vl;
		uint32_t wh = (uint32_t)(c->value_two >> 32) & mh, wl = (uint32_t)c->value_two & ml;
		LD(ARG_HI(c->index));
		emit(p, BPF_ALU | BPF_AND | BPF_K, mh, 0, 0);
		want(fail, JMP(BPF_JEQ, wh, 0, 0), false);
		LD(ARG_LO(c->index));
		emit(p, BPF_ALU | BPF_AND | BPF_K, ml, 0, 0);
		want(fail, JMP(BPF_JEQ, wl, 0, 0), false);
		break;
	}
	case CMP_GT:
	case CMP_GE:
		LD(ARG_HI(c->index));
		want(&pass, JMP(BPF_JGT, vh, 0, 0), true);
		want(fail, JMP(BPF_JEQ, vh, 0, 0), false);
		LD(ARG_LO(c->index));
		want(fail, JMP(c->op == CMP_GT ? BPF_JGT : BPF_JGE, vl, 0, 0), false);
		break;
	case CMP_LT:
	case CMP_LE:
		LD(ARG_HI(c->index));
		want(&pass, JMP(BPF_JGE, vh, 0, 0), false); /* hi < vh: holds */
		want(fail, JMP(BPF_JEQ, vh, 0, 0), false);  /* hi > vh: fails */
		LD(ARG_LO(c->index));
		want(fail, JMP(c->op == CMP_LT ? BPF_JGE : BPF_JGT, vl, 0, 0), true);
		break;
	}
	land(p, &pass, p->n);
}

static int compile(const struct profile *pr, agent_seccomp *ret, bl_error_t *err)
{
	struct prog pp = {0}, *p = &pp;
	LD(offsetof(struct seccomp_data, arch));
	JMP(BPF_JEQ, AUDIT_ARCH_X86_64, 1, 0);
	RET(SECCOMP_RET_KILL_PROCESS);
	LD(offsetof(struct seccomp_data, nr));
	JMP(BPF_JGE, X32_BIT, 0, 1);
	RET(SECCOMP_RET_ERRNO | EPERM);
	_cleanup_free_ bool *done = bl_malloc0(pr->n_rules ? pr->n_rules : 1);
	for (size_t i = 0; i < pr->n_rules; i++) {
		if (done[i])
			continue;
		int nr = pr->rules[i].nr;
		/* if (nr != this) skip the group */
		JMP(BPF_JEQ, (uint32_t)nr, 1, 0);
		size_t skip = emit(p, BPF_JMP | BPF_JA, 0, 0, 0);
		for (size_t j = i; j < pr->n_rules; j++) {
			const struct rule *r = &pr->rules[j];
			if (r->nr != nr)
				continue;
			done[j] = true;
			struct fixups fail = {0};
			for (unsigned a = 0; a < r->n_args; a++)
				emit_cond(p, &r->args[a], &fail);
			RET(r->action);
			land(p, &fail, p->n);
			if (r->n_args)
				LD(offsetof(struct seccomp_data, nr)); /* A is clobbered */
		}
		RET(pr->default_action);
		p->v[skip].k = (uint32_t)(p->n - skip - 1);
	}
	RET(pr->default_action);
	if (p->overflow || p->n > BPF_MAXINSNS) {
		free(p->v);
		return bl_set_error(err, BL_EINVAL,
				    "linux.seccomp: the filter is too large (%zu insns)", p->n);
	}
	ret->insns = p->v;
	ret->n_insns = p->n;
	return 0;
}

/* ------------------------------------------------------------ profiles */

static int syscall_nr(const char *name)
{
	for (size_t i = 0; i < BL_ARRAY_SIZE(agent_syscall_names); i++)
		if (!strcmp(agent_syscall_names[i].name, name))
			return agent_syscall_names[i].nr;
	return -1;
}

static struct rule *add_rule(struct profile *pr, int nr, uint32_t action)
{
	if (pr->n_rules >= MAX_RULES)
		return NULL;
	pr->rules = realloc(pr->rules, (pr->n_rules + 1) * sizeof(*pr->rules));
	if (!pr->rules)
		abort();
	struct rule *r = &pr->rules[pr->n_rules++];
	*r = (struct rule){.nr = nr, .action = action};
	return r;
}

static const char *const default_denied[] = {"acct",
					     "add_key",
					     "bpf",
					     "clock_adjtime",
					     "clock_settime",
					     "create_module",
					     "delete_module",
					     "finit_module",
					     "fsconfig",
					     "fsmount",
					     "fsopen",
					     "fspick",
					     "get_kernel_syms",
					     "init_module",
					     "io_uring_enter",
					     "io_uring_register",
					     "io_uring_setup",
					     "ioperm",
					     "iopl",
					     "kexec_file_load",
					     "kexec_load",
					     "keyctl",
					     "lookup_dcookie",
					     "modify_ldt",
					     "mount",
					     "mount_setattr",
					     "move_mount",
					     "move_pages",
					     "name_to_handle_at",
					     "nfsservctl",
					     "open_by_handle_at",
					     "open_tree",
					     "perf_event_open",
					     "pivot_root",
					     "query_module",
					     "quotactl",
					     "quotactl_fd",
					     "reboot",
					     "request_key",
					     "setns",
					     "settimeofday",
					     "swapoff",
					     "swapon",
					     "sysfs",
					     "_sysctl",
					     "syslog",
					     "umount2",
					     "uselib",
					     "userfaultfd",
					     "ustat",
					     "vhangup",
					     "fanotify_init",
					     "get_mempolicy",
					     "set_mempolicy",
					     "mbind",
					     "set_mempolicy_home_node",
					     "afs_syscall",
					     "tuxcall",
					     "security",
					     "vserver",
					     "putpmsg",
					     "getpmsg"};

#define NS_FLAGS                                                                                   \
	(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | \
	 CLONE_NEWCGROUP | CLONE_NEWTIME)

int agent_seccomp_default(agent_seccomp *ret, bl_error_t *err)
{
	struct profile pr = {.default_action = SECCOMP_RET_ALLOW};
	const uint32_t eperm = SECCOMP_RET_ERRNO | EPERM;
	for (size_t i = 0; i < BL_ARRAY_SIZE(default_denied); i++) {
		int nr = syscall_nr(default_denied[i]);
		if (nr >= 0)
			add_rule(&pr, nr, eperm);
	}
	/* clone and unshare: never a new namespace; clone3 cannot be inspected
	 * (its flags are behind a pointer): ENOSYS, and libc falls back. */
	struct rule *r = add_rule(&pr, SYS_clone, SECCOMP_RET_ALLOW);
	r->n_args = 1;
	r->args[0] =
	    (struct cond){.index = 0, .op = CMP_MASKED_EQ, .value = NS_FLAGS, .value_two = 0};
	add_rule(&pr, SYS_clone, eperm);
	r = add_rule(&pr, SYS_unshare, SECCOMP_RET_ALLOW);
	r->n_args = 1;
	r->args[0] =
	    (struct cond){.index = 0, .op = CMP_MASKED_EQ, .value = NS_FLAGS, .value_two = 0};
	add_rule(&pr, SYS_unshare, eperm);
	add_rule(&pr, SYS_clone3, SECCOMP_RET_ERRNO | ENOSYS);
	/* personality: only the values Docker allows (query included). */
	static const uint64_t pers[] = {0x0, 0x8, 0x20000, 0x20008, 0xffffffff};
	for (size_t i = 0; i < BL_ARRAY_SIZE(pers); i++) {
		r = add_rule(&pr, SYS_personality, SECCOMP_RET_ALLOW);
		r->n_args = 1;
		r->args[0] = (struct cond){.index = 0, .op = CMP_EQ, .value = pers[i]};
	}
	add_rule(&pr, SYS_personality, eperm);
	/* ptrace stays (Docker allows it on kernels >= 4.8): the agent is not
	 * dumpable and not in the container's pid namespace. */
	int rc = compile(&pr, ret, err);
	free(pr.rules);
	return rc;
}

static int parse_action(const char *s, json_object *errno_ret, uint32_t *ret, bl_error_t *err)
{
	int e = EPERM;
	if (errno_ret) {
		int64_t v = json_object_get_int64(errno_ret);
		if (!json_object_is_type(errno_ret, json_type_int) || v < 0 || v > 4095)
			return bl_set_error(err, BL_EINVAL, "linux.seccomp: bad errnoRet");
		e = (int)v;
	}
	if (!strcmp(s, "SCMP_ACT_ALLOW"))
		*ret = SECCOMP_RET_ALLOW;
	else if (!strcmp(s, "SCMP_ACT_ERRNO"))
		*ret = SECCOMP_RET_ERRNO | (uint32_t)e;
	else if (!strcmp(s, "SCMP_ACT_KILL") || !strcmp(s, "SCMP_ACT_KILL_THREAD"))
		*ret = SECCOMP_RET_KILL_THREAD;
	else if (!strcmp(s, "SCMP_ACT_KILL_PROCESS"))
		*ret = SECCOMP_RET_KILL_PROCESS;
	else if (!strcmp(s, "SCMP_ACT_TRAP"))
		*ret = SECCOMP_RET_TRAP;
	else if (!strcmp(s, "SCMP_ACT_LOG"))
		*ret = SECCOMP_RET_LOG;
	else if (!strcmp(s, "SCMP_ACT_TRACE"))
		*ret = SECCOMP_RET_ERRNO | ENOSYS; /* no tracer in a sandbox */
	else
		return bl_set_error(err, BL_EINVAL, "linux.seccomp: unsupported action \"%.64s\"",
				    s);
	return 0;
}

static int parse_op(const char *s, enum cmp *ret, bl_error_t *err)
{
	static const struct {
		const char *name;
		enum cmp op;
	} ops[] = {{"SCMP_CMP_NE", CMP_NE},
		   {"SCMP_CMP_LT", CMP_LT},
		   {"SCMP_CMP_LE", CMP_LE},
		   {"SCMP_CMP_EQ", CMP_EQ},
		   {"SCMP_CMP_GE", CMP_GE},
		   {"SCMP_CMP_GT", CMP_GT},
		   {"SCMP_CMP_MASKED_EQ", CMP_MASKED_EQ}};
	for (size_t i = 0; i < BL_ARRAY_SIZE(ops); i++) {
		if (!strcmp(s, ops[i].name)) {
			*ret = ops[i].op;
			return 0;
		}
	}
	return bl_set_error(err, BL_EINVAL, "linux.seccomp: unsupported op \"%.64s\"", s);
}

static const char *str_of(json_object *o)
{
	return o && json_object_is_type(o, json_type_string) ? json_object_get_string(o) : NULL;
}

static bool u64_of(json_object *o, uint64_t *ret)
{
	if (!o) {
		*ret = 0;
		return true;
	}
	if (!json_object_is_type(o, json_type_int))
		return false;
	*ret = json_object_get_uint64(o);
	return true;
}

static int parse_args(json_object *args, struct cond *conds, unsigned *ret_n, bl_error_t *err)
{
	*ret_n = 0;
	if (!args)
		return 0;
	if (!json_object_is_type(args, json_type_array) ||
	    json_object_array_length(args) > MAX_ARGS)
		return bl_set_error(err, BL_EINVAL, "linux.seccomp: syscalls[].args: at most %d",
				    MAX_ARGS);
	for (size_t i = 0; i < json_object_array_length(args); i++) {
		json_object *a = json_object_array_get_idx(args, i);
		json_object *idx = NULL, *val = NULL, *val2 = NULL, *op = NULL;
		if (!json_object_is_type(a, json_type_object))
			return bl_set_error(err, BL_EINVAL, "linux.seccomp: bad args entry");
		json_object_object_get_ex(a, "index", &idx);
		json_object_object_get_ex(a, "value", &val);
		json_object_object_get_ex(a, "valueTwo", &val2);
		json_object_object_get_ex(a, "op", &op);
		uint64_t index;
		struct cond *c = &conds[i];
		if (!idx || !u64_of(idx, &index) || index >= 6 || !u64_of(val, &c->value) ||
		    !u64_of(val2, &c->value_two) || !str_of(op))
			return bl_set_error(err, BL_EINVAL, "linux.seccomp: bad args entry");
		c->index = (unsigned)index;
		int r = parse_op(str_of(op), &c->op, err);
		if (r < 0)
			return r;
	}
	*ret_n = (unsigned)json_object_array_length(args);
	return 0;
}

static int parse_profile(json_object *o, struct profile *pr, bl_error_t *err)
{
	if (!json_object_is_type(o, json_type_object))
		return bl_set_error(err, BL_EINVAL, "linux.seccomp: not an object");
	json_object *da = NULL, *der = NULL, *archs = NULL, *calls = NULL;
	json_object_object_get_ex(o, "defaultAction", &da);
	json_object_object_get_ex(o, "defaultErrnoRet", &der);
	json_object_object_get_ex(o, "architectures", &archs);
	json_object_object_get_ex(o, "syscalls", &calls);
	if (!str_of(da))
		return bl_set_error(err, BL_EINVAL, "linux.seccomp: defaultAction missing");
	int r = parse_action(str_of(da), der, &pr->default_action, err);
	if (r < 0)
		return r;
	if (archs && !json_object_is_type(archs, json_type_array))
		return bl_set_error(err, BL_EINVAL, "linux.seccomp: architectures: not an array");
	if (calls && !json_object_is_type(calls, json_type_array))
		return bl_set_error(err, BL_EINVAL, "linux.seccomp: syscalls: not an array");
	size_t n = calls ? json_object_array_length(calls) : 0;
	for (size_t i = 0; i < n; i++) {
		json_object *s = json_object_array_get_idx(calls, i);
		json_object *names = NULL, *action = NULL, *er = NULL, *args = NULL;
		if (!json_object_is_type(s, json_type_object))
			return bl_set_error(err, BL_EINVAL, "linux.seccomp: bad syscalls entry");
		json_object_object_get_ex(s, "names", &names);
		json_object_object_get_ex(s, "action", &action);
		json_object_object_get_ex(s, "errnoRet", &er);
		json_object_object_get_ex(s, "args", &args);
		uint32_t act;
		if (!names || !json_object_is_type(names, json_type_array) || !str_of(action))
			return bl_set_error(err, BL_EINVAL,
					    "linux.seccomp: syscalls[] needs names and action");
		if ((r = parse_action(str_of(action), er, &act, err)) < 0)
			return r;
		struct cond conds[MAX_ARGS];
		unsigned n_args = 0;
		if ((r = parse_args(args, conds, &n_args, err)) < 0)
			return r;
		for (size_t k = 0; k < json_object_array_length(names); k++) {
			const char *name = str_of(json_object_array_get_idx(names, k));
			if (!name)
				return bl_set_error(err, BL_EINVAL, "linux.seccomp: bad name");
			int nr = syscall_nr(name);
			if (nr < 0)
				continue;
			struct rule *rule = add_rule(pr, nr, act);
			if (!rule)
				return bl_set_error(err, BL_EINVAL,
						    "linux.seccomp: too many rules");
			rule->n_args = n_args;
			memcpy(rule->args, conds, sizeof(conds));
		}
	}
	return 0;
}

int agent_seccomp_from_oci(json_object *o, agent_seccomp *ret, bl_error_t *err)
{
	struct profile pr = {0};
	int r = parse_profile(o, &pr, err);
	if (r == 0)
		r = compile(&pr, ret, err);
	free(pr.rules);
	return r;
}

void agent_seccomp_clear(agent_seccomp *s)
{
	free(s->insns);
	*s = (agent_seccomp){0};
}

int agent_seccomp_install(const agent_seccomp *s)
{
	if (!s || !s->insns)
		return 0;
	struct sock_fprog prog = {.len = (unsigned short)s->n_insns, .filter = s->insns};
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
		return -errno;
	return 0;
}
