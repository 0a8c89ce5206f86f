/*
 * A sandbox's network (runtime/README.md, "Network"): QEMU's user-mode
 * networking (in-process slirp, a virtio-net-device on microvm) under a QEMU
 * uid of the sandbox's own, and the host's firewall (an nftables table per
 * sandbox matching that uid) as the policy: allow/deny lists, loopback and
 * private ranges refused unless named, connection and bandwidth limits, a
 * record of refused connections. A small DNS responder in this process
 * answers the guest's queries for allowed names only.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bl_cleanup.h"
#include "bl_error.h"
#include "boxlite.h"

#define BL_NET_MAX_RULES 64
#define BL_NET_MAX_PORTS 16
#define BL_NET_MAX_NAMES 32
#define BL_NET_MAX_ADDRS 8 /* per name */

typedef struct bl_net_rule {
	uint32_t addr;	/* network byte order */
	uint8_t prefix; /* 0-32 */
	uint16_t port;	/* 0: every port (and every protocol) */
	int name;	/* index into names, or -1 */
	bool loopback;	/* "host[:PORT]": the host's 127.0.0.1 */
} bl_net_rule;

typedef struct bl_net_port {
	uint32_t host_addr; /* network byte order */
	uint16_t host_port; /* 0 until bl_net_prepare picks a free one */
	uint16_t guest_port;
	bool udp;
} bl_net_port;

typedef struct bl_net_name {
	char name[254]; /* lower case, no trailing dot */
	uint32_t addrs[BL_NET_MAX_ADDRS];
	size_t n_addrs;
} bl_net_name;

typedef struct bl_net bl_net;

/* Parses a rule ("*", "host[:PORT]", "A.B.C.D[/N][:PORT]", "NAME[:PORT]")
 * without resolving; *ret_name receives NAME (malloc'd) or NULL. */
int bl_net_parse_rule(const char *s, bl_net_rule *ret, bool *ret_all, char **ret_name,
		      bl_error_t *err);
/* Parses "[ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp]" or "GUEST_PORT[/proto]". */
int bl_net_parse_port(const char *s, bl_net_port *ret, bl_error_t *err);

/* Validates the options and resolves the names (no side effects yet). */
int bl_net_new(const bl_sandbox_options *o, bl_net **ret, bl_error_t *err);
/* Installs the firewall for QEMU uid `uid`, starts the DNS responder and
 * binds nothing else; the VM may start once this returns. */
int bl_net_start(bl_net *n, unsigned uid, bl_error_t *err);
/* Extra QEMU arguments (the netdev and the device). */
const char *const *bl_net_qemu_args(const bl_net *n);
/* Kernel command line words for the agent. */
const char *bl_net_cmdline(const bl_net *n);
/* Refused connections as text ("ADDR:PORT/PROTO COUNT" lines). */
int bl_net_refused(bl_net *n, char **ret, bl_error_t *err);
/* The host side of a published guest port. */
int bl_net_port_lookup(const bl_net *n, unsigned guest_port, bool udp, uint32_t *ret_addr,
		       unsigned *ret_port);
/* Removes the firewall table, stops the responder (after the VM is gone). */
void bl_net_free(bl_net *n);
/* Frees n but leaves its firewall table in place (for a QEMU that may
 * still run: fail closed). */
void bl_net_abandon(bl_net *n);
BL_DEFINE_CLEANUP(bl_net, bl_net_free)
/* Removes the tables of sandboxes whose QEMU uid nobody holds any more. */
void bl_net_gc(void);
/* Answers one DNS query (exposed for the unit tests and the fuzz target):
 * returns the reply's length, 0 to send nothing. */
size_t bl_net_dns_answer(const bl_net_name *names, size_t n_names, bool forward_all,
			 const uint8_t *q, size_t qlen, uint8_t *out, size_t out_max);
