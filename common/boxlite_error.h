/*
 * libboxlite's errors (public: installed as <boxlite/boxlite_error.h>).
 * Fallible functions return 0 (or a valid pointer) on success and a negative
 * bl_code (or NULL) on failure, filling the bl_error_t passed last.
 */
#pragma once

typedef enum bl_code {
	BL_OK = 0,
	BL_EINVAL = 1,	   /* invalid argument or option */
	BL_ETIMEOUT = 2,   /* the sandbox or a call ran out of time */
	BL_EOOM = 3,	   /* the sandboxed program ran out of memory */
	BL_ENOTFOUND = 4,  /* image, sandbox, container or process not found */
	BL_EBACKEND = 5,   /* libvirt / QEMU / virtiofsd failure */
	BL_EAGENTLOST = 6, /* the guest agent went away or broke protocol */
	BL_ESYSTEM = 7,	   /* a host system call failed (sys_errno says which) */
	BL_EPROTO = 8,	   /* malformed input from a peer, image or bundle */
	BL_EEXIST = 9,	   /* already exists */
	BL_ESTATE = 10,	   /* not valid in the object's current state */
	BL_ECANCELED = 11, /* interrupted by a signal or shutdown */
	BL_EUNSUPPORTED = 12,
	BL_EAUTH = 13,	  /* a registry refused the credentials (or asked for some) */
	BL_ENETWORK = 14, /* a registry unreachable, TLS failure, rate limited, cut off */
} bl_code;

#define BL_ERROR_MSG_MAX 1024

typedef struct bl_error {
	bl_code code;
	int sys_errno; /* errno of the failing system call, or 0 */
	char msg[BL_ERROR_MSG_MAX];
} bl_error_t;

#define BL_ERROR_INIT                                    \
	{                                                \
		.code = BL_OK, .sys_errno = 0, .msg = "" \
	}

void bl_error_clear(bl_error_t *err);
const char *bl_code_name(bl_code code);
