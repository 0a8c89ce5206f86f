/* Internals shared by the sandbox, process, state and monitor modules. */
#pragma once

#include <pthread.h>
#include <stdbool.h>

#include "agent_client.h"
#include "boxlite.h"
#include "spec.h"
#include "vm.h"

#define BL_CONTAINER_ID "main"
#define BL_SHARE_TAG	"rootfs"
/* In the state directory: the read-only bind of the image virtiofsd serves. */
#define BL_SHARE_DIR	   "rootfs"
#define BL_MONITOR_SERVICE "boxlite.sandbox.v1.Monitor"
/* Guest RAM kept out of the container's memory limit for the kernel and agent. */
#define BL_GUEST_RESERVE_MIB 40
/* Longest wait for the agent's preamble when no sandbox timeout is shorter. */
#define BL_BOOT_TIMEOUT_SEC 120

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
	pthread_mutex_t kill_lock; /* serializes VM start and kill */
	pthread_cond_t cond;
	pthread_t timer;
	bool timer_running, closing, timed_out, cancelled;
	bool init_started;
	bool stdin_open; /* init process gets a stdin pipe */
};

struct bl_process {
	bl_sandbox *sb;
	char eid[40];
	uint32_t pid;
	bool tty;
};

/* Turns a failed agent call into the sandbox's state: BL_ETIMEOUT after the
 * deadline, BL_ECANCELED after bl_sandbox_cancel; else r unchanged. */
int bl_sandbox_map_error(bl_sandbox *sb, int r, bl_error_t *err);

/* Unmounts (detached) and removes a sandbox's read-only image view; quiet
 * when there is none. Needed before removing the state directory. */
void bl_share_unmount(const char *sandbox_dir);

/* State files. */
char *bl_sandbox_path(const char *state_root, const char *id, const char *file);
bool bl_sandbox_id_valid(const char *id);
int bl_meta_write(bl_sandbox *sb, const char *status, pid_t qemu_pid, bl_error_t *err);
int bl_base_write(bl_sandbox *sb, bl_error_t *err);
int bl_base_read(bl_sandbox *sb, bl_error_t *err);
/* Start time of a process (for pid reuse checks), 0 when it is gone. */
unsigned long long bl_proc_starttime(pid_t pid);
