/* Internals shared by the sandbox, process, state and monitor modules. */
#pragma once

#include <pthread.h>
#include <stdbool.h>

#include "agent_client.h"
#include "bl_agent_proto.h"
#include "boxlite.h"
#include "spec.h"
#include "vm.h"

#define BL_CONTAINER_ID "main"
#define BL_SHARE_TAG	BL_AGENT_SHARE_TAG
/* In the state directory: the per-VM share virtiofsd serves (a small tmpfs
 * with shared propagation; containers' rootfs and bind sources are bind
 * mounts below it, at <cN>/rootfs and <cN>/m<k>). */
#define BL_SHARE_DIR "share"
/* What older versions named it (cleaned up for dead sandboxes). */
#define BL_SHARE_DIR_OLD   "rootfs"
#define BL_MONITOR_SERVICE "boxlite.sandbox.v1.Monitor"
/* Longest wait for the agent's preamble when no sandbox timeout is shorter. */
#define BL_BOOT_TIMEOUT_SEC 120

struct bl_container {
	bl_sandbox *sb;
	char id[BL_CONTAINER_ID_MAX + 1];
	char share_name[16]; /* "c<N>": its directory in the share */
	char *host_dir;	     /* sb->share/<share_name>, NULL when nothing was shared */
	char **mounts;	     /* host mount points made under host_dir, in order */
	/* What exec inherits (pointers to the sandbox's for "main"). */
	bl_image_defaults own_img;
	bl_spec_process own_layer;
	const bl_image_defaults *img;
	const bl_spec_process *layer;
	char **annotations; /* key, value, ..., NULL */
	char *process_json; /* the spec's process (exec_opts' base), or NULL */
	bool tty, stdin_open;
	bool started, paused, stopped;
	/* The guest was told about the share directory: its entries stay until
	 * the share goes (virtiofsd may hold them open, and a pending removal
	 * would keep the share from going read-only again). */
	bool guest_seen;
	bl_container *next;
};

struct bl_sandbox {
	char id[BL_SANDBOX_ID_MAX + 1];
	char *state_root; /* parent of dir */
	char *dir;	  /* state_root/id */
	bool owned;	  /* this process owns the VM */
	bl_vm *vm;
	bl_agent *agent;
	char *image;
	char *rootfs;
	int rootfs_fd;	       /* O_PATH of rootfs until the share is bound, else -1 */
	char *share;	       /* dir/BL_SHARE_DIR while mounted */
	bl_image_defaults img; /* what exec inherits (image + sandbox layer) */
	bl_spec_process layer; /* the sandbox options' process layer */
	char **args, **env;
	char *cwd, *user;
	char accel_why[160];
	char owner[16];
	bl_sandbox_timings t;
	unsigned timeout_sec;
	unsigned memory_mib;
	int64_t created; /* unix seconds */
	/* Deadline timer and cancellation. */
	pthread_mutex_t lock;
	pthread_mutex_t kill_lock;  /* serializes VM start and kill */
	pthread_mutex_t share_lock; /* the share is writable while held (host side) */
	pthread_cond_t cond;
	pthread_t timer;
	bool timer_running, closing, timed_out, cancelled;
	bool stdin_open; /* init process gets a stdin pipe */
	bool bare;
	bl_container *containers; /* guarded by lock */
	bl_container *main;	  /* the built-in container, or NULL */
	unsigned next_slot;
	unsigned disk_mib;
	struct bl_net *net; /* with options.network (net.c) */
	unsigned net_uid;   /* the QEMU uid the network's firewall matches */
	/* A VM taken from the warm pool (pool.h): its owner holds the domain,
	 * this is the lease (-1: none, or released). */
	bool pooled, pool_suspended;
	int pool_fd;
	pid_t pool_qemu_pid;
	unsigned boot_shares; /* cpu.shares while booting; 0: BL_VM_SHARES_BOOT */
};

struct bl_process {
	bl_sandbox *sb;
	bl_container *c;
	char cid[BL_CONTAINER_ID_MAX + 1];
	char eid[BL_EXEC_ID_MAX + 1];
	int64_t exited_at_ns;
	uint32_t pid;
	bool tty;
};

/* Turns a failed agent call into the sandbox's state: BL_ETIMEOUT after the
 * deadline, BL_ECANCELED after bl_sandbox_cancel; else r unchanged. */
int bl_sandbox_map_error(bl_sandbox *sb, int r, bl_error_t *err);

/* Unmounts (detached) and removes a sandbox's read-only image view; quiet
 * when there is none. Needed before removing the state directory. */
void bl_share_unmount(const char *sandbox_dir);

/* containers (container.c) */
/* Mounts the share (a tmpfs with shared propagation) at dir/BL_SHARE_DIR. */
int bl_share_setup(bl_sandbox *sb, bl_error_t *err);
/* The built-in container from the sandbox options (image, process layer). */
int bl_container_create_main(bl_sandbox *sb, const char *spec_json, bl_error_t *err);
/* A container object for an attached sandbox's "main" (nothing shared). */
bl_container *bl_container_attach_main(bl_sandbox *sb);
/* Unmounts the container's host mounts and frees it (no guest call). */
void bl_container_release(bl_container *c);
/* A read-only (or read-write), nodev, nosuid bind of src at dst, made with
 * its attributes before it is attached (so the copy that propagates into
 * virtiofsd's namespace has them too). */
int bl_share_bind(const char *src, const char *dst, bool readonly, bl_error_t *err);

/* State files. */
char *bl_sandbox_path(const char *state_root, const char *id, const char *file);
bool bl_sandbox_id_valid(const char *id);
int bl_meta_write(bl_sandbox *sb, const char *status, pid_t qemu_pid, bl_error_t *err);
int bl_base_write(bl_sandbox *sb, bl_error_t *err);
int bl_base_read(bl_sandbox *sb, bl_error_t *err);
/* Start time of a process (for pid reuse checks), 0 when it is gone. */
unsigned long long bl_proc_starttime(pid_t pid);
