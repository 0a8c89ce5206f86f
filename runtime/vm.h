/*
 * The VM layer of libboxlite: a transient QEMU microvm domain driven through
 * libvirt (embedded driver by default, qemu:///system when asked), with
 * virtio-fs shares, the agent's virtio-serial channel and a console log.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "bl_error.h"

#define BL_VM_MAX_SHARES 4

typedef enum bl_accel {
	BL_ACCEL_TCG = 0,
	BL_ACCEL_KVM = 1,
} bl_accel;

/* KVM only when /dev/kvm opens read-write and the CPU flags show vmx or svm;
 * TCG otherwise. `override` ("kvm", "tcg", NULL/"" = $BOXLITE_ACCEL or auto)
 * wins. `why` (may be NULL) receives a one-line reason for the choice. */
int bl_accel_choose(const char *override, bl_accel *ret, char *why, size_t why_len,
		    bl_error_t *err);
const char *bl_accel_name(bl_accel a);

typedef struct bl_vm_share {
	const char *tag; /* mount tag seen by the guest */
	const char *dir; /* host directory */
	/* false (the default): the host never changes dir while the VM runs (an
	 * image), so the guest may cache it (virtiofsd cache=always). */
	bool mutable_source;
} bl_vm_share;

/* The console log's cap (BOXLITE_CONSOLE_MAX bytes overrides, 4 KiB..64
 * MiB): LOG keeps at most this much, LOG.1 the previous as much. */
#define BL_VM_CONSOLE_MAX (1u << 20)
size_t bl_vm_console_max(void);

typedef struct bl_vm_config {
	const char *name;	   /* domain name, unique on the connection */
	const char *kernel;	   /* uncompressed vmlinux (PVH entry) */
	const char *initrd;	   /* initramfs with the agent as /init */
	const char *cmdline_extra; /* appended to the built-in kernel arguments */
	unsigned memory_mib;
	unsigned vcpus;
	bl_accel accel;
	const char *console_log;  /* file the guest's serial console is written to */
	const char *agent_socket; /* unix socket libvirt binds for the agent channel */
	bl_vm_share shares[BL_VM_MAX_SHARES];
	size_t n_shares;
	const char *virtiofsd;	      /* NULL: /usr/lib/qemu/virtiofsd */
	const char *disk_image;	      /* optional raw image attached as virtio-blk (vda) */
	unsigned qemu_uid;	      /* run QEMU as this uid:gid; 0: libvirt's user (bl_vm_start
				       * picks one of a range for embedded VMs) */
	const char *const *qemu_args; /* NULL-terminated, appended to QEMU's command line
				       * (the network device: runtime/net.c) */
	/* Host CPU weight of the whole VM (cgroup cpu.shares); 0: the default
	 * (BL_VM_SHARES_BOOT while booting; bl_vm_set_shares lowers it). */
	unsigned cpu_shares;
} bl_vm_config;

/* Host CPU weights: a booting VM outweighs running ones, a pool's spare
 * VMs boot behind both. */
#define BL_VM_SHARES_BOOT 8192
#define BL_VM_SHARES_RUN  1024
#define BL_VM_SHARES_POOL 128

/* TCG translation cache for a guest of memory_mib ($BOXLITE_TB_CACHE_MIB
 * overrides; 0 means QEMU's default). */
unsigned bl_vm_tb_cache_mib(unsigned memory_mib);

/* Builds the domain XML with an escaping writer; *ret_xml is malloc'd. */
int bl_vm_domain_xml(const bl_vm_config *cfg, char **ret_xml, bl_error_t *err);

typedef struct bl_vm bl_vm;

/*
 * Opens a libvirt connection. uri NULL or "" means libvirt's embedded driver
 * (no daemon): one root per process, RUN_DIR/libvirt/<pid>, shared by all the
 * process's VMs, seeded from the warm capabilities cache so the first domain
 * does not pay QEMU's capability probe, and removed at process exit (roots of
 * dead processes are removed by the next one). Any other URI (for example
 * "qemu:///system") is used as given.
 */
int bl_vm_open(const char *uri, bl_vm **ret, bl_error_t *err);
/* The process's embedded root, or NULL before the first embedded open. */
const char *bl_vm_embed_root(void);
/* $BOXLITE_RUN_DIR or /run/boxlite. */
const char *bl_vm_run_dir(void);
/* A QEMU uid of the range, held by this process until released (0: none
 * free). A caller that needs the uid before the VM starts (the network's
 * host firewall) takes it, passes it as qemu_uid and releases it itself. */
unsigned bl_vm_uid_take(void);
void bl_vm_uid_release(unsigned uid);
/* True while a live process holds uid (its lock file names it). */
bool bl_vm_uid_held(unsigned uid);
/* Creates and starts the transient domain (QEMU + virtiofsd). */
int bl_vm_start(bl_vm *vm, const bl_vm_config *cfg, bl_error_t *err);
/* True while the domain exists and runs. */
bool bl_vm_is_running(bl_vm *vm);
/* Why the VM died under its owner (QEMU or virtiofsd killed: the reaper
 * then ends the VM at once), or NULL. Embedded driver only. */
const char *bl_vm_dead_reason(bl_vm *vm);
/* The uid (and gid) this VM's QEMU runs as when it has its own, else 0. */
unsigned bl_vm_qemu_uid(const bl_vm *vm);
/* Waits until the domain is gone (guest rebooted) or timeout_ms passes
 * (-1: forever). Returns 0 when gone, BL_ETIMEOUT otherwise. */
int bl_vm_wait_gone(bl_vm *vm, int timeout_ms, bl_error_t *err);
/* Stops (suspend) or continues the guest's vCPUs. */
int bl_vm_suspend(bl_vm *vm, bool suspend, bl_error_t *err);
bool bl_vm_is_suspended(bl_vm *vm);
/* Sets the VM's host CPU weight (cgroup cpu.shares); best effort. */
int bl_vm_set_shares(bl_vm *vm, unsigned shares, bl_error_t *err);
/* The console log was renamed to path (its directory moved). */
void bl_vm_console_moved(bl_vm *vm, const char *path);
/* QEMU's pid on the host, or 0 when unknown. */
pid_t bl_vm_qemu_pid(bl_vm *vm);
/* Destroys the domain if it still exists (kills QEMU; libvirt stops
 * virtiofsd and removes its sockets). Idempotent. */
int bl_vm_destroy(bl_vm *vm, bl_error_t *err);
/* Destroys the domain and drops the connection. Accepts NULL. */
void bl_vm_free(bl_vm *vm);

/* libvirt's version (major * 1000000 + minor * 1000 + micro), 0 if unknown. */
unsigned long bl_vm_libvirt_version(void);
/* Directory holding the shared warm capabilities cache. */
const char *bl_vm_caps_cache_dir(void);

typedef struct bl_vm_probe_result {
	double started_s;  /* libvirt's create returned */
	double answered_s; /* the guest's answer arrived */
	double released_s; /* the VM was destroyed */
	char accel_why[160];
	char console_tail[4096]; /* the guest console's end, on failure */
} bl_vm_probe_result;

/*
 * Host self-test: boots kernel + initrd in a small VM whose agent, in probe
 * mode, mounts a fresh virtio-fs share and answers over the agent channel
 * with the token it found there. Returns 0 when the answer is right; the VM
 * and everything created for it are gone on return, on every path. Times
 * count from just before the libvirt connection opens. On failure err names
 * the cause and res->console_tail holds the end of the guest console.
 */
int bl_vm_probe(const char *uri, const char *kernel, const char *initrd, bl_vm_probe_result *res,
		bl_error_t *err);
