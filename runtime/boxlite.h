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
 * Errors follow bl_error.h: BL_EINVAL (bad option), BL_ETIMEOUT (the
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

#include "bl_error.h"
#include "boxlite_image.h"

#define BOXLITE_VERSION "0.1.0"

#define BL_DEFAULT_MEMORY_MIB 512
#define BL_DEFAULT_VCPUS      1
#define BL_DEFAULT_DISK_MIB   256
#define BL_DEFAULT_PIDS_MAX   512
#define BL_DEFAULT_STATE_DIR  "/run/boxlite/sandboxes"
#define BL_DEFAULT_IMAGE      "default"
#define BL_SANDBOX_ID_MAX     32

typedef struct bl_sandbox bl_sandbox;
typedef struct bl_process bl_process;

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
	bool network;		/* not supported yet: BL_EUNSUPPORTED */
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

/* Starts the container's init process (the options' args). */
int bl_sandbox_start(bl_sandbox *sb, bl_process **ret, bl_error_t *err);
/* Runs another process in the running container. */
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
 * Files in and out of a running sandbox. copy_out archives the guest path
 * (the guest's tar writes it: untrusted) and extracts it in-process into
 * host_dir/BASENAME under the image-layer rules (entries only under that
 * name, no absolute names or "..", regular files, directories and symlinks
 * staying inside only, no setuid/setgid bits, nothing through a symlink,
 * limits: 1 GiB or $BOXLITE_COPY_MAX_BYTES, 100000 entries), into a fresh
 * temporary directory renamed into place; BL_EEXIST if the name exists,
 * BL_EPROTO for an archive breaking a rule (nothing is left then).
 * copy_in archives host_path (symlinks not followed) and unpacks it into the
 * guest directory with the guest's tar.
 */
int bl_sandbox_copy_out(bl_sandbox *sb, const char *guest_path, const char *host_dir,
			bl_error_t *err);
int bl_sandbox_copy_in(bl_sandbox *sb, const char *host_path, const char *guest_dir,
		       bl_error_t *err);

/* Asks the guest to shut down, then destroys the VM. The sandbox stays valid
 * for bl_sandbox_destroy. For an attached sandbox: asks its owner to stop. */
int bl_sandbox_stop(bl_sandbox *sb, bl_error_t *err);
/* Async-signal-unsafe but thread-safe: kills the VM now and makes every
 * pending and later call fail with BL_ECANCELED (SIGINT handling). */
void bl_sandbox_cancel(bl_sandbox *sb);
/* Releases everything: VM, QEMU, virtiofsd, the read-only image mount,
 * sockets and the state directory.
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
