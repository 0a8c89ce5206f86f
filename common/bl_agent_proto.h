/*
 * The host-guest contract of boxlite, in one place for both sides: the
 * runtime (runtime/agent_client.c, the monitor) and the guest agent (agent/)
 * include this header. The messages are proto/agent.proto.
 *
 * Transport: one byte stream, a virtio-serial port named BL_AGENT_PORT_NAME
 * (or AF_VSOCK port BL_AGENT_VSOCK_PORT). Before its first ttrpc frame the
 * agent writes BL_AGENT_PREAMBLE; the host reads it to learn the guest is
 * ready, then speaks ttrpc as the client. The agent never initiates.
 *
 * Bump BL_AGENT_PROTO_VERSION (and with it the preamble) for any change that
 * an older peer would misread; adding a method or a field is compatible.
 */
#pragma once

#include <stddef.h>

#define BL_AGENT_PROTO_VERSION 1
#define BL_AGENT_SERVICE       "boxlite.agent.v1.Agent"
#define BL_AGENT_PORT_NAME     "org.boxlite.agent"
#define BL_AGENT_VSOCK_PORT    1024
#define BL_AGENT_PREAMBLE      "BOXLITE-AGENT 1\n"
#define BL_AGENT_PREAMBLE_LEN  16
/* Largest WriteStdin / ReadOutput payload, either way. */
#define BL_AGENT_IO_MAX (1u << 20)
/* Container and exec ids: [A-Za-z0-9_.-]{1,64}, not "." or "..". */
#define BL_AGENT_ID_MAX 64
/* Containers per guest. */
#define BL_AGENT_MAX_CONTAINERS 64
/* The virtio-fs tag of the per-VM share carrying every container's rootfs
 * (at <n>/rootfs) and bind-mount sources (at <n>/m<k>). */
#define BL_AGENT_SHARE_TAG "share"

/* Exec argv[0]s that run the agent's own archiver in the container instead
 * of a program of the image (agent/archive.c): [COPY_OUT, PATH] writes a tar
 * of PATH to stdout, [COPY_IN, DIR] unpacks a tar from stdin into DIR. */
#define BL_AGENT_COPY_OUT_PATH "/.boxlite/copy-out"
#define BL_AGENT_COPY_IN_PATH  "/.boxlite/copy-in"

/* Every method of BL_AGENT_SERVICE. */
typedef enum bl_agent_method {
	BL_AGENT_PING,
	BL_AGENT_INIT,
	BL_AGENT_CREATE_CONTAINER,
	BL_AGENT_START_PROCESS,
	BL_AGENT_WAIT_PROCESS,
	BL_AGENT_SIGNAL_PROCESS,
	BL_AGENT_WRITE_STDIN,
	BL_AGENT_CLOSE_STDIN,
	BL_AGENT_READ_STDOUT,
	BL_AGENT_READ_STDERR,
	BL_AGENT_RESIZE_PTY,
	BL_AGENT_STATS,
	BL_AGENT_LIST_PIDS,
	BL_AGENT_DELETE_CONTAINER,
	BL_AGENT_SHUTDOWN,
	BL_AGENT_PAUSE_CONTAINER,
	BL_AGENT_RESUME_CONTAINER,
	BL_AGENT_UPDATE_CONTAINER,
	BL_AGENT_N_METHODS,
} bl_agent_method;

/* Method names indexed by bl_agent_method, NULL-terminated. */
extern const char *const bl_agent_methods[BL_AGENT_N_METHODS + 1];
