/*
 * The warm pool's internals: the protocol between its owner (bl_pool_serve,
 * one process per state directory) and the sandboxes that take its VMs, and
 * the sandbox module's hooks for both sides.
 *
 * One SOCK_SEQPACKET unix socket, STATE/.pool/pool.sock (0600, root's
 * directory); every message is one bl_pool_msg. A TAKE connection becomes the
 * taken VM's lease: its reply carries the agent channel's descriptor
 * (SCM_RIGHTS, the preamble already read); KILL, SUSPEND, RESUME and RELEASE
 * then act on that VM, and the lease's close destroys the VM and removes its
 * share and state directory.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "boxlite.h"
#include "vm.h"

#define BL_POOL_DIR	   ".pool"
#define BL_POOL_SOCK	   "pool.sock"
#define BL_POOL_MAGIC	   0x424c504cu /* "BLPL" */
#define BL_POOL_PATH_MAX   1024
#define BL_POOL_MAX_SIZE   64
#define BL_POOL_REPLY_SECS 30

typedef enum bl_pool_op {
	BL_POOL_OP_TAKE = 1,
	BL_POOL_OP_STATUS = 2,
	BL_POOL_OP_STOP = 3,
	BL_POOL_OP_KILL = 4,	/* lease: destroy the VM now (deadline, cancel) */
	BL_POOL_OP_SUSPEND = 5, /* lease */
	BL_POOL_OP_RESUME = 6,	/* lease */
	BL_POOL_OP_RELEASE = 7, /* lease: destroy the VM, unmount, keep the directory */
} bl_pool_op;

/* What a pooled VM is: it serves a sandbox only when all of these match. */
typedef struct bl_pool_shape {
	uint32_t memory_mib;
	uint32_t vcpus;
	uint32_t accel; /* bl_accel */
	char kernel[BL_POOL_PATH_MAX];
	char initrd[BL_POOL_PATH_MAX];
} bl_pool_shape;

typedef struct bl_pool_msg {
	uint32_t magic;
	uint32_t op;
	int32_t status; /* replies: 0 or -BL_E* */
	int32_t qemu_pid;
	bl_pool_shape shape;
	char id[BL_SANDBOX_ID_MAX + 1]; /* TAKE: the sandbox's (its directory exists, empty) */
	char text[192];			/* replies: the error, or TAKE's accelerator reason */
	bl_pool_status st;		/* STATUS reply */
} bl_pool_msg;

/* The shape a sandbox of these options needs (kernel and initrd resolved). */
int bl_pool_shape_for(const bl_sandbox_options *o, unsigned memory_mib, bl_pool_shape *ret,
		      char *why, size_t why_len, bl_error_t *err);

/* Client side: asks the pool of state_root for a VM of `shape` for sandbox
 * `id` (STATE/<id> exists and is empty; on success it is the VM's directory).
 * Returns 0 with the lease and the agent channel, or <0 (no pool, no VM of
 * that shape ready, or an error: the caller boots a VM itself). */
int bl_pool_take(const char *state_root, const char *id, const bl_pool_shape *shape, int *ret_lease,
		 int *ret_agent_fd, pid_t *ret_qemu_pid, char *why, size_t why_len,
		 bl_error_t *err);
/* One request on a lease, waiting for its reply. */
int bl_pool_lease_call(int lease, bl_pool_op op, bl_error_t *err);

/* Owner side (sandbox.c): boots a spare bare VM in pool_dir (no Init); its
 * agent channel's descriptor comes back in *ret_fd. */
int bl_sandbox_boot_spare(const char *pool_dir, const bl_pool_shape *shape, bl_sandbox **ret,
			  int *ret_fd, bl_error_t *err);
/* The spare's directory moved to dir (a take). */
void bl_sandbox_spare_moved(bl_sandbox *sb, const char *dir, const char *id);
/* Destroys the VM only (KILL, RELEASE); the sandbox stays to be freed. */
void bl_sandbox_spare_kill(bl_sandbox *sb);
bl_vm *bl_sandbox_vm(bl_sandbox *sb);
