/*
 * The guest's network interface (with boxlite.net=on on the kernel command
 * line): address, route and DNS of QEMU's user-mode network, set with
 * ioctls at boot; containers sharing the guest's network namespace get the
 * resolver in their /etc/resolv.conf.
 */
#pragma once

#include <stdbool.h>

/* Configures the first non-loopback interface; false when there is none
 * (the host asked for no network, or the device is missing). */
bool agent_net_setup(void);
bool agent_net_enabled(void);
/* Writes etc/resolv.conf under the container root `root` (resolved inside
 * it; a symlink there is replaced). Quiet no-op without a network. */
void agent_net_write_resolv(const char *root);
