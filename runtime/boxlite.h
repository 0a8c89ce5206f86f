/*
 * libboxlite: run untrusted code in a QEMU micro-VM, one VM per sandbox.
 *
 * A sandbox is a VM (libvirt transient microvm domain) whose guest agent runs
 * one container ("main") over the image's root filesystem, shared read-only
 * through virtio-fs, with a private writable layer: an overlay whose upper
 * directory is a guest tmpfs of `disk_mib` (writes never reach the host disk
 * and count against the guest's RAM). Processes run in that container.
 *
 * Ownership: whoever creates a sandbox owns it (its VM lives as long as the
 * bl_sandbox). A sandbox owned by another process (the `boxlite` monitor of a
 * long-lived sandbox) is reached with bl_sandbox_attach(); the same process
 * functions then work through the owner's api.sock.
 *
 * Errors follow boxlite_error.h: BL_EINVAL (bad option), BL_ETIMEOUT (the
 * sandbox's deadline passed; its VM is destroyed), BL_EOOM, BL_ENOTFOUND
 * (image, sandbox, command), BL_EBACKEND (libvirt, QEMU), BL_EAGENTLOST (the
 * guest agent went away), BL_EPROTO (a malformed agent reply), BL_ECANCELED
 * (bl_sandbox_cancel), BL_EUNSUPPORTED.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "boxlite_error.h"
#include "boxlite_image.h"

#define BOXLITE_VERSION "0.1.0"

#define BL_DEFAULT_MEMORY_MIB	 512
#define BL_DEFAULT_VCPUS	 1
#define BL_DEFAULT_DISK_MIB	 256
#define BL_DEFAULT_PIDS_MAX	 512
#define BL_DEFAULT_STATE_DIR	 "/run/boxlite/sandboxes"
#define BL_DEFAULT_IMAGE	 "default"
#define BL_SANDBOX_ID_MAX	 32
#define BL_DEFAULT_NET_MAX_CONNS 256
#define BL_DEFAULT_NET_RATE_KIB	 (32 * 1024)
/* Guest RAM kept out of the containers' memory for the guest kernel and
 * agent (at most a quarter of the VM): size a VM for a container limit L as
 * L + BL_GUEST_RESERVE_MIB. */
#define BL_GUEST_RESERVE_MIB 40

typedef struct bl_sandbox bl_sandbox;
typedef struct bl_process bl_process;
typedef struct bl_container bl_container;

typedef struct bl_sandbox_options {
	const char *image;	 /* image reference; NULL (and no rootfs): "default" */
	const char *rootfs;	 /* a plain host directory used as the image */
	const char *image_store; /* NULL: $BOXLITE_IMAGE_STORE or the built-in store */
	unsigned memory_mib;	 /* guest RAM; 0: BL_DEFAULT_MEMORY_MIB */
	unsigned vcpus;		 /* 0: 1 */
	unsigned disk_mib;	 /* writable layer (guest tmpfs); 0: BL_DEFAULT_DISK_MIB */
	unsigned pids_max;	 /* container pids limit; 0: BL_DEFAULT_PIDS_MAX */
	unsigned timeout_sec;	 /* whole-sandbox deadline from create; 0: none */
	/* The container's init process; args NULL: the image's entrypoint+cmd when
	 * `start_init` asks for it, else a pause process (a long-lived sandbox). */
	const char *const *args;
	const char *const *env; /* NULL-terminated "K=V", over the image's env */
	const char *cwd;	/* NULL: the image's WorkingDir or "/" */
	const char *user;	/* "uid[:gid]" or "name[:group]"; NULL: the image's or root */
	const char *hostname;	/* NULL: "boxlite" */
	bool tty;		/* init process on a pty */
	bool stdin_open;	/* init process gets a stdin pipe */
	bool network;		/* a network device: see the net_* fields at the end */
	const char *uri;	/* libvirt URI; NULL: embedded driver (per-sandbox root) */
	const char *accel;	/* "kvm", "tcg", NULL: $BOXLITE_ACCEL or auto */
	const char *state_dir;	/* NULL: $BOXLITE_STATE_DIR or BL_DEFAULT_STATE_DIR */
	const char *id;		/* sandbox id ([A-Za-z0-9_.-], <= 32); NULL: random */
	const char *kernel;	/* NULL: $BOXLITE_KERNEL or next to the program / installed */
	const char *initrd;	/* NULL: $BOXLITE_INITRD or likewise */
	const char *owner;	/* recorded in meta.json ("run", "monitor", ...) */
	/* Called with the sandbox as soon as it exists (before booting), so
	 * another thread may bl_sandbox_cancel() it, and with NULL just before a
	 * failed create frees it. */
	void (*on_handle)(bl_sandbox *sb, void *user);
	void *on_handle_user;
	/* (Appended fields keep the layout of the ones above.)
	 * true: boot the VM and set the guest up with NO built-in container; the
	 * image/rootfs and process options above are then ignored (give none) and
	 * containers come from bl_container_create(). false: today's behaviour,
	 * one container "main" from the image or rootfs and the options above
	 * (bl_sandbox_container() returns it). */
	bool bare;
	/* (Appended.) Networking, with `network` true (runtime/README.md,
	 * "Network"); without it the VM has no network device at all. The host's
	 * firewall enforces the lists. Rules: "HOST[:PORT]" (a name, resolved by
	 * the host at create; the guest's DNS answers allowed names only),
	 * "A.B.C.D[/N][:PORT]", "host:PORT" (a service on the host's 127.0.0.1,
	 * host.boxlite.internal in the guest), "*" (every public address; the
	 * host, loopback and private ranges stay refused unless named). A PORT
	 * covers TCP and UDP. Nothing allowed: the guest reaches nothing. */
	const char *const *net_allow;
	const char *const *net_deny; /* refused even when allowed */
	/* Published ports: "[ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp]" (ADDR
	 * 127.0.0.1 unless given; HOST_PORT 0 or "GUEST_PORT" alone: a free one,
	 * see bl_sandbox_port). */
	const char *const *net_publish;
	unsigned net_max_conns; /* concurrent connections; 0: BL_DEFAULT_NET_MAX_CONNS */
	unsigned net_rate_kib;	/* KiB/s, each direction; 0: BL_DEFAULT_NET_RATE_KIB */
} bl_sandbox_options;

/* Where the time of bl_sandbox_create went (milliseconds). */
typedef struct bl_sandbox_timings {
	double image_ms, libvirt_open_ms, vm_start_ms, agent_ready_ms, init_ms, container_ms;
} bl_sandbox_timings;

/* Boots the VM, waits for the agent, sets the guest up and creates the
 * container (the init process is not started: see bl_sandbox_start). */
int bl_sandbox_create(const bl_sandbox_options *opts, bl_sandbox **ret, bl_error_t *err);
/* Connects to the api.sock of a sandbox owned by another process. */
int bl_sandbox_attach(const char *id, const char *state_dir, bl_sandbox **ret, bl_error_t *err);

const char *bl_sandbox_id(const bl_sandbox *sb);
/* The sandbox's state directory (console.log, meta.json, ...). */
const char *bl_sandbox_dir(const bl_sandbox *sb);
/* One line naming the accelerator chosen and why. */
const char *bl_sandbox_accel_reason(const bl_sandbox *sb);
void bl_sandbox_get_timings(const bl_sandbox *sb, bl_sandbox_timings *ret);
/* QEMU's host pid (owned sandboxes with the embedded driver), else 0. */
pid_t bl_sandbox_qemu_pid(const bl_sandbox *sb);
/* The host address of a published guest port (proto "tcp", "udp" or NULL
 * for tcp): BL_ENOTFOUND when it is not published. Owned sandboxes. */
int bl_sandbox_port(const bl_sandbox *sb, unsigned guest_port, const char *proto, char *addr,
		    size_t addr_len, unsigned *host_port, bl_error_t *err);
/* The connections the network policy refused so far (malloc'd text, one
 * "ADDR:PORT/PROTO PACKETS" or "ADDR/PROTO PACKETS" line per destination,
 * plus "over-limit N" for connections cut by the limit; "" when none).
 * Owned sandboxes with a network. */
int bl_sandbox_net_refused(bl_sandbox *sb, char **ret, bl_error_t *err);
/* Last `max` bytes of the guest console (malloc'd, NUL-terminated), or NULL. */
char *bl_sandbox_console_tail(const bl_sandbox *sb, size_t max);

typedef struct bl_process_options {
	const char *const *args; /* NULL-terminated, required for exec */
	const char *const *env;	 /* over the sandbox's env */
	const char *cwd;	 /* NULL: the sandbox's */
	const char *user;	 /* NULL: the sandbox's */
	bool tty;
	bool stdin_open;
} bl_process_options;

/* Starts the "main" container's init process (the options' args). */
int bl_sandbox_start(bl_sandbox *sb, bl_process **ret, bl_error_t *err);
/* Runs another process in the running "main" container. */
int bl_sandbox_exec(bl_sandbox *sb, const bl_process_options *po, bl_process **ret,
		    bl_error_t *err);

/* Writes all of buf to the process's stdin. */
int bl_process_write(bl_process *p, const void *buf, size_t len, bl_error_t *err);
int bl_process_close_stdin(bl_process *p, bl_error_t *err);
/* Blocks for output of stream 1 (stdout) or 2 (stderr); returns the bytes
 * read, 0 at end of stream, <0 on error. */
ssize_t bl_process_read(bl_process *p, int stream, void *buf, size_t len, bl_error_t *err);
int bl_process_resize(bl_process *p, unsigned rows, unsigned cols, bl_error_t *err);
int bl_process_signal(bl_process *p, int sig, bl_error_t *err);
/* The guest pid of the process. */
uint32_t bl_process_pid(const bl_process *p);
/* The process's exec id ("" for a container's init process). */
const char *bl_process_exec_id(const bl_process *p);
/* The container the process runs in (valid while that container is). */
bl_container *bl_process_container(const bl_process *p);
/* Guest CLOCK_REALTIME (ns) of the exit, after a successful bl_process_wait;
 * else 0. */
int64_t bl_process_exited_at(const bl_process *p);

typedef struct bl_exit {
	int status;	 /* exit code, or 128+signal */
	int signal;	 /* terminating signal or 0 */
	bool oom_killed; /* the container's memory limit killed something */
} bl_exit;

/* Waits for the process to end. BL_ETIMEOUT when the sandbox's deadline
 * passed first (the VM is then already destroyed). */
int bl_process_wait(bl_process *p, bl_exit *ret, bl_error_t *err);
/* Streams in_fd (-1: none) to stdin and stdout/stderr to out_fd/err_fd until
 * both streams end, then waits. Write errors on out_fd/err_fd drop output. */
int bl_process_run_io(bl_process *p, int in_fd, int out_fd, int err_fd, bl_exit *ret,
		      bl_error_t *err);
void bl_process_free(bl_process *p);

/*
 * Files in and out of a running sandbox, through the agent's own archiver
 * run inside the container (no tar needed in the image). copy_out archives
 * the guest path (untrusted all the same) and extracts it in-process into
 * host_dir/BASENAME under the image-layer rules (entries only under that
 * name, no absolute names or "..", regular files, directories and symlinks
 * (those pointing outside the copied tree left out), no setuid/setgid bits,
 * no device nodes or FIFOs (the agent leaves them out), nothing through a
 * symlink,
 * limits: 1 GiB or $BOXLITE_COPY_MAX_BYTES, 100000 entries), into a fresh
 * temporary directory renamed into place; BL_EEXIST if the name exists,
 * BL_EPROTO for an archive breaking a rule (nothing is left then).
 * copy_in archives host_path (symlinks not followed) and unpacks it into the
 * guest directory (made when missing).
 */
int bl_sandbox_copy_out(bl_sandbox *sb, const char *guest_path, const char *host_dir,
			bl_error_t *err);
int bl_sandbox_copy_in(bl_sandbox *sb, const char *host_path, const char *guest_dir,
		       bl_error_t *err);
/* copy_out with its own byte limit (0: the default) instead of the
 * environment's. */
int bl_sandbox_copy_out_limit(bl_sandbox *sb, const char *guest_path, const char *host_dir,
			      uint64_t max_bytes, bl_error_t *err);
/* copy_in under another name: host_path becomes guest_path (absolute); the
 * guest directories on the way are made when missing (as mkdir -p, also by
 * copy_in for guest_dir). */
int bl_sandbox_copy_in_as(bl_sandbox *sb, const char *host_path, const char *guest_path,
			  bl_error_t *err);

/* ------------------------------------------------------------ containers
 *
 * A sandbox (one VM) holds any number of containers (at most 64), each with
 * its own root filesystem, namespaces and cgroup in the guest. Every
 * container's host directories reach the guest through ONE virtio-fs share
 * per VM: STATE/<id>/share/ is a small tmpfs with shared mount propagation
 * that virtiofsd serves; creating a container bind-mounts its rootfs
 * (read-only, nodev, nosuid) at share/<n>/rootfs and the host sources of its
 * OCI bind mounts at share/<n>/m<k>, where they appear in the running
 * virtiofsd's mount namespace. The guest lays an overlay over the rootfs
 * (upper: a guest tmpfs of disk_mib) unless the root is read-only.
 *
 * Thread safety: calls on different containers and processes may run
 * concurrently; bl_process_wait/read/write of one process may run
 * concurrently with each other. bl_container_delete and bl_sandbox_destroy
 * must not race with other calls on the same object.
 */

#define BL_CONTAINER_ID_MAX 64 /* [A-Za-z0-9_.-], not "." or ".." */
#define BL_EXEC_ID_MAX	    64

typedef struct bl_container_options {
	/* Container id, unique in the sandbox; NULL: random. */
	const char *id;
	/* An OCI runtime spec (a bundle's config.json), untrusted: bounded and
	 * validated. Honoured: process (args, env, cwd, user uid/gid/
	 * additionalGids/umask, terminal, capabilities, noNewPrivileges,
	 * rlimits, oomScoreAdj), hostname, root.readonly (root.path is ignored:
	 * the root is `rootfs`), linux.resources memory.limit / cpu.quota+period /
	 * cpu.shares / pids.limit, linux.namespaces (network: own empty one, or
	 * the VM's), mounts (bind of host paths, shared into the VM; tmpfs; the
	 * usual proc/sysfs/devpts/mqueue/cgroup/dev entries, which the guest
	 * provides itself), annotations (kept, readable with
	 * bl_container_annotation), linux.seccomp (compiled by the guest agent;
	 * without one, boxlite's default profile applies). Anything else that
	 * changes behaviour (devices, apparmor, selinux, uid mappings, hooks,
	 * other mount types, sysctl, ...) is BL_EUNSUPPORTED naming the field. NULL: a
	 * default spec from the image's config (like the "main" container). */
	const char *spec_json;
	/* Host directory with the container's root filesystem (a bundle's
	 * rootfs, or an unpacked image). */
	const char *rootfs;
	/* Instead of rootfs: an image reference resolved in image_store. */
	const char *image;
	const char *image_store;
	/* No writable layer at all (also when spec root.readonly is true). */
	bool readonly_rootfs;
	/* Writable layer (guest tmpfs upper); 0: BL_DEFAULT_DISK_MIB. */
	unsigned disk_mib;
	/* Init process stdio: a pty (also when spec process.terminal is true),
	 * a stdin pipe (else /dev/null). */
	bool tty;
	bool stdin_open;
	/* Accept (and do not apply) AppArmor and SELinux settings
	 * (process.apparmorProfile, process.selinuxLabel, linux.mountLabel):
	 * there is no LSM in the guest; the VM is the isolation boundary.
	 * false: they are BL_EUNSUPPORTED. (Seccomp is always applied.) */
	bool ignore_lsm;
	/* Accept (and do not run) OCI hooks; false: BL_EUNSUPPORTED. */
	bool ignore_hooks;
} bl_container_options;

/* Creates a container in a running sandbox (owned, not attached): shares its
 * rootfs and bind sources into the VM and creates it in the guest. Its init
 * process is not started (bl_container_start). */
int bl_container_create(bl_sandbox *sb, const bl_container_options *o, bl_container **ret,
			bl_error_t *err);
/* The built-in "main" container of a non-bare sandbox; NULL for a bare one
 * (or once it was deleted). Owned by the sandbox. */
bl_container *bl_sandbox_container(bl_sandbox *sb);
/* The container with that id, or NULL. */
bl_container *bl_sandbox_find_container(bl_sandbox *sb, const char *id);
const char *bl_container_id(const bl_container *c);
bl_sandbox *bl_container_sandbox(const bl_container *c);
/* A value of the spec's annotations, or NULL. */
const char *bl_container_annotation(const bl_container *c, const char *key);

/* Starts the init process (spec.process); once per container. The caller
 * owns *ret (bl_process_free). */
int bl_container_start(bl_container *c, bl_process **ret, bl_error_t *err);
/* Runs another process in the running container. exec_id: the caller's
 * ([A-Za-z0-9_.-], <= 64; containerd's exec ids) or NULL for a generated
 * one; BL_EEXIST if taken. process_json: an OCI Process object (untrusted,
 * validated like the spec's). */
int bl_container_exec(bl_container *c, const char *exec_id, const char *process_json, bool tty,
		      bool stdin_open, bl_process **ret, bl_error_t *err);
/* Like bl_container_exec from options: env is merged over the container's
 * process env, cwd/user default to the container's. */
int bl_container_exec_opts(bl_container *c, const char *exec_id, const bl_process_options *po,
			   bl_process **ret, bl_error_t *err);
/* Signals the init process, or with `all` every process of the container. */
int bl_container_signal(bl_container *c, int sig, bool all, bl_error_t *err);
/* The guest pids of the container's processes (malloc'd array). */
int bl_container_pids(bl_container *c, uint32_t **ret, size_t *ret_n, bl_error_t *err);

/* cgroup v2 figures of the container in the guest (0 when unknown). */
typedef struct bl_stats {
	uint64_t memory_current, memory_max /* 0: unlimited */, memory_peak;
	uint64_t memory_anon, memory_file;
	uint64_t pids_current, pids_max /* 0: unlimited */;
	uint64_t cpu_usage_usec, cpu_user_usec, cpu_system_usec;
	uint64_t cpu_nr_periods, cpu_nr_throttled, cpu_throttled_usec;
	/* memory.events */
	uint64_t events_low, events_high, events_max, events_oom, events_oom_kill;
} bl_stats;

int bl_container_stats(bl_container *c, bl_stats *ret, bl_error_t *err);
/* Freezes / thaws every process of the container (cgroup.freeze). */
int bl_container_pause(bl_container *c, bl_error_t *err);
int bl_container_resume(bl_container *c, bl_error_t *err);
/* "created", "running", "paused", "stopped" (as far as the library knows). */
const char *bl_container_status(bl_container *c);

/* New limits for a running container; a field < 0 keeps the current value. */
typedef struct bl_resources {
	int64_t memory_limit; /* bytes; 0: unlimited (within the VM's RAM) */
	int64_t cpu_quota;    /* usec per period; 0: unlimited */
	int64_t cpu_period;   /* usec; 0: 100000 */
	int64_t cpu_shares;   /* cgroup v1 shares, mapped to cpu.weight; 0: default */
	int64_t pids_limit;   /* 0: unlimited */
} bl_resources;

/* Sets every field to -1 (keep). */
void bl_resources_init(bl_resources *r);
/* Applies new limits in the guest. A memory limit above what the VM has
 * (its RAM minus the guest's reserve) is BL_EUNSUPPORTED: the VM's memory
 * cannot grow. */
int bl_container_update(bl_container *c, const bl_resources *r, bl_error_t *err);
/* The same from an OCI LinuxResources JSON object (containerd's
 * UpdateTaskRequest.resources); members the VM cannot honour (blockIO,
 * devices, hugepageLimits, rdma, network, unified, cpus/mems) are
 * BL_EUNSUPPORTED. */
int bl_container_update_json(bl_container *c, const char *resources_json, bl_error_t *err);

/* Kills what still runs, deletes the container in the guest, unmounts its
 * shares on the host and frees it: c is invalid afterwards even on error
 * (which then only reports the guest part; the host part always happens).
 * Processes of the container must be freed by their owners (their calls
 * fail with BL_ENOTFOUND). */
int bl_container_delete(bl_container *c, bl_error_t *err);

/* ------------------------------------------------------------ code sessions
 *
 * A code session keeps one Python interpreter running in a sandbox, like a
 * notebook kernel: variables, imports and functions of one run are there in
 * the next. It is the Python SDK's CodeBox (the same guest-side driver,
 * sdk/python/boxlite/_driver.py, compiled into the library): a final
 * expression's repr is printed; output of child processes is captured too;
 * an uncaught exception gives exit code 1 and the traceback on stderr, the
 * state kept. Everything the interpreter sends is untrusted: frames are
 * checked, sizes bounded, output capped per run; a violation kills it.
 *
 * Thread safety: runs of one session are serialised (a second caller waits);
 * bl_codebox_interrupt may be called from any thread; bl_codebox_free must
 * not race with the other calls. The sandbox must outlive the session.
 */
typedef struct bl_codebox bl_codebox;

#define BL_CODEBOX_MAX_CODE (16u << 20) /* bytes of code per run */

typedef struct bl_codebox_options {
	const char *python;	   /* the interpreter command; NULL: "python3" */
	const char *const *env;	   /* the interpreter's environment, over the sandbox's */
	const char *cwd;	   /* NULL: the sandbox's */
	const char *user;	   /* NULL: the sandbox's */
	size_t max_output;	   /* bytes kept per stream and run; 0: 1 MiB (then truncated) */
	unsigned start_timeout_ms; /* for the interpreter to come up; 0: 120000 */
	/* Called from a reader thread with each piece of a run's output (stream
	 * 1: stdout, 2: stderr) as it arrives; may be NULL. */
	void (*on_output)(int stream, const char *buf, size_t len, void *user);
	void *on_output_user;
} bl_codebox_options;

typedef struct bl_codebox_result {
	char *stdout_data; /* malloc'd, NUL-terminated (may hold other NULs) */
	size_t stdout_len;
	char *stderr_data;
	size_t stderr_len;
	int exit_code;	  /* 0; 1 after an exception; SystemExit's code; 130 interrupted */
	bool truncated;	  /* output past max_output was dropped */
	bool timed_out;	  /* the run passed its timeout (or was interrupted) */
	bool state_lost;  /* the interpreter died or was killed: the next run starts afresh */
	char error[104];  /* the uncaught exception's class name, or "" */
	char resource[8]; /* a limit an uncaught exception came from: "memory" (MemoryError),
			     "disk" (ENOSPC), "pids" (fork/thread failure), or "" */
	double duration_ms;
} bl_codebox_result;

/* Starts the interpreter in the sandbox's main container and waits for it.
 * BL_ENOTFOUND when the image has no such interpreter. */
int bl_codebox_create(bl_sandbox *sb, const bl_codebox_options *o, bl_codebox **ret,
		      bl_error_t *err);
/* Runs code (UTF-8, NUL-terminated) in the interpreter; timeout_ms <= 0:
 * none. *res is always filled (bl_codebox_result_clear it). Returns 0 when
 * the run finished, whatever its exit code (an interpreter that died on the
 * way gives state_lost and a note on stderr); BL_ETIMEOUT past the timeout
 * and BL_ECANCELED after bl_codebox_interrupt: the run got a
 * KeyboardInterrupt and kept the state, or, when it did not stop within 5
 * s, the interpreter was killed (state_lost); BL_EOOM when the sandbox's
 * memory limit killed the interpreter; BL_EPROTO when it broke the
 * protocol (killed); a dead interpreter is restarted by the next run. */
int bl_codebox_run(bl_codebox *cb, const char *code, int timeout_ms, bl_codebox_result *res,
		   bl_error_t *err);
/* Interrupts the running run, if any, also one still waiting for its
 * interpreter to start (then its code never runs: BL_ECANCELED). Thread-safe;
 * not async-signal-safe. */
void bl_codebox_interrupt(bl_codebox *cb);
/* A fresh interpreter: the state of earlier runs is gone. */
int bl_codebox_restart(bl_codebox *cb, bl_error_t *err);
/* The interpreter's guest pid (0 when none runs). */
uint32_t bl_codebox_pid(bl_codebox *cb);
/* Kills the interpreter and everything it started; the sandbox stays.
 * Accepts NULL. */
void bl_codebox_free(bl_codebox *cb);
void bl_codebox_result_clear(bl_codebox_result *res);

/* ------------------------------------------------------------ VM liveness */

/* True while the VM runs and the agent answers (no round trip: the state of
 * the channel). */
bool bl_sandbox_alive(bl_sandbox *sb);
/* Blocks until the VM is gone (QEMU ended, the agent channel closed) or
 * timeout_ms passes (-1: forever). 0 when gone, BL_ETIMEOUT otherwise.
 * When the VM dies every pending and later call on it fails at once:
 * BL_EBACKEND "sandbox ended: QEMU (pid N) was killed by signal 9" (or
 * virtiofsd) when a VM process died, BL_EAGENTLOST when the agent went away
 * otherwise, BL_ETIMEOUT / BL_ECANCELED after the deadline / a cancel. */
int bl_sandbox_wait_dead(bl_sandbox *sb, int timeout_ms, bl_error_t *err);
/* Stops the whole VM's vCPUs (libvirt suspend; no CPU used, memory kept),
 * e.g. when its only container is paused; calls into the guest block until
 * bl_sandbox_resume (the sandbox's deadline still runs). Owned sandboxes. */
int bl_sandbox_suspend(bl_sandbox *sb, bl_error_t *err);
int bl_sandbox_resume(bl_sandbox *sb, bl_error_t *err);
bool bl_sandbox_suspended(bl_sandbox *sb);
/* One agent round trip; version (may be NULL) receives the agent's. */
int bl_sandbox_ping(bl_sandbox *sb, char *version, size_t version_len, bl_error_t *err);

/* Asks the guest to shut down, then destroys the VM. The sandbox stays valid
 * for bl_sandbox_destroy. For an attached sandbox: asks its owner to stop. */
int bl_sandbox_stop(bl_sandbox *sb, bl_error_t *err);
/* Async-signal-unsafe but thread-safe: kills the VM now and makes every
 * pending and later call fail with BL_ECANCELED (SIGINT handling). */
void bl_sandbox_cancel(bl_sandbox *sb);
/* Releases everything: VM, QEMU, virtiofsd, every container (and its host
 * mounts), the share, sockets and the state directory.
 * For an attached sandbox it only disconnects. Accepts NULL. */
void bl_sandbox_destroy(bl_sandbox *sb);
/* Like bl_sandbox_destroy but keeps the state directory (console.log,
 * meta.json marked stopped); used by a monitor so `logs` works after stop. */
void bl_sandbox_release(bl_sandbox *sb);

/* ------------------------------------------------------------------ state */

typedef struct bl_sandbox_info {
	char id[BL_SANDBOX_ID_MAX + 1];
	char image[256];
	char status[16]; /* running, stopped, dead */
	char owner[16];
	pid_t pid; /* owning process */
	pid_t qemu_pid;
	int64_t created; /* unix seconds */
	unsigned memory_mib;
} bl_sandbox_info;

/* The state directory in use (option, $BOXLITE_STATE_DIR or the default). */
const char *bl_state_dir(const char *override);
/* Lists sandboxes; those whose owner is gone are reported "dead". */
int bl_sandbox_list(const char *state_dir, bl_sandbox_info **ret, size_t *ret_n, bl_error_t *err);
int bl_sandbox_info_get(const char *state_dir, const char *id, bl_sandbox_info *ret,
			bl_error_t *err);
/* Removes a dead or stopped sandbox's leftovers (kills its QEMU if it still
 * runs). A live one needs force (then its owner is stopped first). */
int bl_sandbox_remove(const char *state_dir, const char *id, bool force, bl_error_t *err);
/* Removes every dead sandbox; returns how many. */
int bl_sandbox_gc(const char *state_dir, bl_error_t *err);

/*
 * Call once at program start, before any thread exists: makes the process a
 * child subreaper, so the QEMU and virtiofsd that libvirt daemonizes are
 * reaped here when they end (an init that does not reap would leave zombies
 * that libvirt waits on for seconds). Returns 0 or a negative errno.
 * (A slow create under TCG with a root:root 0600 /dev/kvm is a host set-up
 * problem, warned about at VM start: run packaging/host-setup.sh.)
 */
int bl_host_prepare(void);

/* A fresh random sandbox id (12 hex digits). */
void bl_sandbox_random_id(char *buf, size_t len);

/* Default guest kernel and initramfs paths (malloc'd). */
char *bl_default_kernel(void);
char *bl_default_initrd(void);

/* ------------------------------------------------------------ host */

typedef struct bl_host_info {
	char accel_why[200];	       /* the accelerator boxlite would choose, and why */
	unsigned long libvirt_version; /* major * 1000000 + minor * 1000 + micro */
	char caps_cache_dir[256];      /* the shared warm libvirt capabilities cache */
} bl_host_info;

/* What a sandbox on this host would use. */
int bl_host_info_get(bl_host_info *ret, bl_error_t *err);

typedef struct bl_probe_result {
	double started_s;  /* libvirt's create returned */
	double answered_s; /* the guest's answer arrived */
	double released_s; /* the VM was destroyed */
	char accel_why[160];
	char console_tail[4096]; /* the guest console's end, on failure */
} bl_probe_result;

/* Host self-test: boots kernel + initrd (NULL: the defaults) in a probe VM
 * that mounts a virtio-fs share and answers over the agent channel; the VM
 * and everything made for it are gone on return. */
int bl_host_probe(const char *uri, const char *kernel, const char *initrd, bl_probe_result *res,
		  bl_error_t *err);

/* ------------------------------------------------------------ images */

/* (Pull, list, remove, import, pin: boxlite_image.h.) */
int bl_image_list(const char *store_dir, char ***ret_names, bl_error_t *err);
int bl_image_remove(const char *name, const char *store_dir, bl_error_t *err);
/* Resolves a reference to its root filesystem directory and config JSON
 * (both malloc'd; *ret_config may be NULL). */
int bl_image_resolve(const char *ref, const char *store_dir, char **ret_rootfs,
		     char **ret_config_json, bl_error_t *err);

/* ------------------------------------------------------------ monitor */

/*
 * The owner of a long-lived sandbox (`boxlite create`): serves
 * STATE/<id>/api.sock, forwarding the agent protocol to the guest, plus
 * Stop and Info. bl_sandbox_attach() connects to it.
 */
typedef struct bl_monitor bl_monitor;

/* Starts the sandbox's init (pause) process and serves api.sock. */
int bl_monitor_start(bl_sandbox *sb, bl_monitor **ret, bl_error_t *err);
/* Blocks until Stop, the end of the VM, or bl_monitor_request_stop. */
void bl_monitor_wait(bl_monitor *m);
/* Thread-safe; async-signal-safe (writes to a pipe). */
void bl_monitor_request_stop(bl_monitor *m);
/* Stops serving (the sandbox itself stays with the caller). */
void bl_monitor_free(bl_monitor *m);

/* ------------------------------------------------------------ warm pool */

/*
 * A pool of pre-booted VMs of one shape (memory, vCPUs, kernel, initramfs,
 * accelerator), owned by one process per state directory and reached over
 * STATE/.pool/pool.sock. bl_sandbox_create takes a VM from it when its shape
 * matches (and boots one itself otherwise); a pooled VM serves exactly one
 * sandbox and is never returned. Off unless a pool runs ($BOXLITE_POOL=off
 * ignores a running one).
 */
typedef struct bl_pool_options {
	const char *state_dir; /* NULL: $BOXLITE_STATE_DIR or the default */
	unsigned size;	       /* VMs kept ready, 1-64 */
	unsigned memory_mib;   /* 0: BL_DEFAULT_MEMORY_MIB */
	unsigned vcpus;	       /* 0: BL_DEFAULT_VCPUS */
	const char *kernel;    /* NULL: as for sandboxes */
	const char *initrd;
	const char *accel; /* NULL: $BOXLITE_ACCEL or auto */
} bl_pool_options;

typedef struct bl_pool_status {
	int32_t pid;
	uint32_t size, ready, booting, taken;
	uint32_t memory_mib, vcpus;
	uint64_t served;   /* VMs handed to sandboxes */
	uint64_t replaced; /* spares that died while waiting */
	uint64_t failed;   /* boots that failed */
	char accel[8];
	char last_error[160];
} bl_pool_status;

/* Serves the pool in this process until bl_pool_stop() (from anywhere).
 * `ready_fd` (>= 0) receives "OK\n" once the socket listens, or
 * "<code> <message>\n" when starting failed, and is closed. */
int bl_pool_serve(const bl_pool_options *o, int ready_fd, bl_error_t *err);
/* BL_ENOTFOUND when no pool runs for state_dir. */
int bl_pool_status_get(const char *state_dir, bl_pool_status *ret, bl_error_t *err);
/* Stops the pool: its spare VMs and the sandboxes still running on its VMs
 * are destroyed; returns once the owner has removed everything. */
int bl_pool_stop(const char *state_dir, bl_error_t *err);
