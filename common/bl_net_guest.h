/*
 * The guest side of a sandbox's network (QEMU user-mode networking): fixed
 * addresses, known to the host (runtime/net.c) and the agent (agent/net.c).
 */
#pragma once

#define BL_NET_GUEST_ADDR   "10.0.2.15"
#define BL_NET_GUEST_PREFIX 24
#define BL_NET_SUBNET	    "10.0.2.0/24"
/* The gateway: QEMU maps it to the host's 127.0.0.1 (host.boxlite.internal);
 * also the guest's DNS server (the host's resolver for the sandbox). */
#define BL_NET_GATEWAY	 "10.0.2.2"
#define BL_NET_HOST_NAME "host.boxlite.internal"
/* On the kernel command line: the agent configures the interface. */
#define BL_NET_CMDLINE_KEY "boxlite.net"
