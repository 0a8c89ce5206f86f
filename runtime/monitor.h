/*
 * The owner of a long-lived sandbox: serves STATE/<id>/api.sock with ttrpc,
 * forwarding every boxlite.agent.v1.Agent request verbatim to the guest agent
 * (so clients use the same agent client code as an in-process owner), plus
 * its own service boxlite.sandbox.v1.Monitor:
 *   Stop  (empty request/response): shuts the VM down; the monitor then exits.
 *   Info  (empty request): a JSON object {id, qemu_pid, accel, pid}.
 */
#pragma once

#include "boxlite.h"

typedef struct bl_monitor bl_monitor;

/* Starts the sandbox's init (pause) process and serves api.sock. */
int bl_monitor_start(bl_sandbox *sb, bl_monitor **ret, bl_error_t *err);
/* Blocks until Stop, the end of the VM, or bl_monitor_request_stop. */
void bl_monitor_wait(bl_monitor *m);
/* Thread-safe; async-signal-safe (writes to a pipe). */
void bl_monitor_request_stop(bl_monitor *m);
/* Stops serving (the sandbox itself stays with the caller). */
void bl_monitor_free(bl_monitor *m);
