/*
 * Seccomp filters for container processes: a subset of the OCI runtime
 * spec's linux.seccomp compiled to classic BPF by hand (the agent is static
 * and x86_64 only), and boxlite's default profile, equivalent to Docker's
 * default one for a container without CAP_SYS_ADMIN: namespace creation
 * (clone/unshare with CLONE_NEW*, clone3), mount and the new mount API,
 * pivot_root, keyctl/add_key/request_key, bpf, perf_event_open, userfaultfd,
 * io_uring, kexec, module, clock, swap, reboot, quota, accounting,
 * open_by_handle_at, iopl/ioperm/modify_ldt and personality changes are
 * refused with EPERM (clone3 with ENOSYS, so libc falls back to clone).
 *
 * OCI subset: defaultAction, defaultErrnoRet, architectures (only the native
 * x86_64 is run; every other architecture and the x32 ABI are refused),
 * syscalls[].names/action/errnoRet/args (index, value, valueTwo, op: all of
 * SCMP_CMP_*). Actions: SCMP_ACT_ALLOW, _ERRNO, _KILL, _KILL_THREAD,
 * _KILL_PROCESS, _TRAP, _LOG, _TRACE (no tracer: ENOSYS). Rules are tried in
 * order; the first whose arguments all match decides; unknown syscall names
 * are skipped (as runc does).
 */
#pragma once

#include <json-c/json.h>
#include <linux/filter.h>
#include <stddef.h>

#include "bl_error.h"

typedef struct agent_seccomp {
	struct sock_filter *insns;
	size_t n_insns;
} agent_seccomp;

/* Compiles an OCI linux.seccomp object. */
int agent_seccomp_from_oci(json_object *o, agent_seccomp *ret, bl_error_t *err);
/* boxlite's default profile (applied when the spec has no linux.seccomp). */
int agent_seccomp_default(agent_seccomp *ret, bl_error_t *err);
void agent_seccomp_clear(agent_seccomp *s);
/* Installs the filter on the calling thread; raw system calls only (for the
 * child between clone and execve). Returns 0 or -errno. */
int agent_seccomp_install(const agent_seccomp *s);
