/* boxlite-agent: PID 1 of the guest. */
#pragma once

#include <stddef.h>

#include "bl_agent_proto.h"

/* The contract lives in common/bl_agent_proto.h. */
#define AGENT_PORT_NAME	   BL_AGENT_PORT_NAME
#define AGENT_PREAMBLE	   BL_AGENT_PREAMBLE
#define AGENT_PREAMBLE_LEN BL_AGENT_PREAMBLE_LEN
#define AGENT_VSOCK_PORT   BL_AGENT_VSOCK_PORT

/* Never returns: syncs and reboots the guest (the VM then ends). */
__attribute__((noreturn)) void agent_reboot(const char *why);

/* Looks up key=value on the kernel command line; returns a malloc'd value or NULL. */
char *agent_cmdline_get(const char *key);

/* Opens /dev/vportNpM whose virtio port name is `name` (waits for it to
 * appear); returns the fd or -1. */
int agent_open_port(const char *name);

/* Serves the agent protocol on the host channel; never returns. */
__attribute__((noreturn)) void agent_serve(void);
