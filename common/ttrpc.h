/*
 * ttrpc in C: containerd's RPC protocol (10-byte frames carrying protobuf
 * Request/Response messages) for the shim, the runtime and the guest agent.
 *
 * Wire format: 4-byte big-endian length, 4-byte big-endian stream id, 1-byte
 * type (1 request, 2 response, 3 data), 1-byte flags; at most 4 MiB of data.
 * Clients use odd, increasing stream ids. Statuses are gRPC codes.
 *
 * Both ends work over any connected stream fd: a unix socket, AF_VSOCK, or a
 * virtio-serial port (the agent's channel when the host has no vhost-vsock),
 * a pty, or a pair of pipes. A non-socket fd is switched to O_NONBLOCK.
 *
 * SIGPIPE: the library never changes signal dispositions and never lets a
 * write to a peer that has gone kill the process. Sockets are written with
 * MSG_NOSIGNAL. Other fds (pipes, char devices) are written with SIGPIPE
 * blocked in the writing thread; a SIGPIPE that write raised is consumed
 * (sigtimedwait) before the thread's mask is restored, and the write fails
 * with EPIPE (the connection closes, calls fail with BL_EAGENTLOST). A SIGPIPE
 * already pending, or one aimed at a thread that blocks SIGPIPE itself, is
 * left alone. Callers need not ignore SIGPIPE.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "bl_error.h"

#define TTRPC_HEADER_LEN	 10
#define TTRPC_MAX_DATA		 (4u << 20)
#define TTRPC_TYPE_REQUEST	 0x01
#define TTRPC_TYPE_RESPONSE	 0x02
#define TTRPC_TYPE_DATA		 0x03
#define TTRPC_FLAG_REMOTE_CLOSED 0x01
#define TTRPC_FLAG_REMOTE_OPEN	 0x02
#define TTRPC_FLAG_NO_DATA	 0x04

/* gRPC status codes. */
enum ttrpc_code {
	TTRPC_OK = 0,
	TTRPC_CANCELLED = 1,
	TTRPC_UNKNOWN = 2,
	TTRPC_INVALID_ARGUMENT = 3,
	TTRPC_DEADLINE_EXCEEDED = 4,
	TTRPC_NOT_FOUND = 5,
	TTRPC_ALREADY_EXISTS = 6,
	TTRPC_PERMISSION_DENIED = 7,
	TTRPC_RESOURCE_EXHAUSTED = 8,
	TTRPC_FAILED_PRECONDITION = 9,
	TTRPC_ABORTED = 10,
	TTRPC_OUT_OF_RANGE = 11,
	TTRPC_UNIMPLEMENTED = 12,
	TTRPC_INTERNAL = 13,
	TTRPC_UNAVAILABLE = 14,
	TTRPC_DATA_LOSS = 15,
	TTRPC_UNAUTHENTICATED = 16,
};

typedef struct ttrpc_frame_header {
	uint32_t length;
	uint32_t stream_id;
	uint8_t type;
	uint8_t flags;
} ttrpc_frame_header;

void ttrpc_header_encode(const ttrpc_frame_header *h, uint8_t out[TTRPC_HEADER_LEN]);
void ttrpc_header_decode(const uint8_t in[TTRPC_HEADER_LEN], ttrpc_frame_header *h);

typedef struct ttrpc_status {
	int code;	   /* enum ttrpc_code */
	char message[512]; /* truncated remote message */
} ttrpc_status;

typedef struct ttrpc_kv {
	const char *key;
	const char *value;
} ttrpc_kv;

/* ------------------------------------------------------------------ server */

typedef struct ttrpc_server ttrpc_server;

/* What a handler sees of one request. Valid only during the handler call. */
typedef struct ttrpc_call {
	const char *service;
	const char *method;
	const uint8_t *payload;
	size_t payload_len;
	uint64_t deadline_ns; /* CLOCK_MONOTONIC deadline from timeout_nano, 0 = none */
	size_t n_metadata;
	const ttrpc_kv *metadata;
	void *conn_data; /* per-connection pointer, see ttrpc_server_set_conn_callbacks */
} ttrpc_call;

/* Returns the first metadata value for key, or NULL. */
const char *ttrpc_call_metadata(const ttrpc_call *call, const char *key);

/* What a handler produces. Fill it with the helpers below. */
typedef struct ttrpc_reply ttrpc_reply;

/* Packs msg as the response payload; returns TTRPC_OK. */
int ttrpc_reply_message(ttrpc_reply *reply, const ProtobufCMessage *msg);
/* Takes ownership of a malloc'd payload. */
int ttrpc_reply_raw(ttrpc_reply *reply, uint8_t *payload, size_t len);
/* Sets an error status; returns code so handlers can `return ttrpc_reply_error(...)`. */
int ttrpc_reply_error(ttrpc_reply *reply, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * A handler runs on a worker thread and may block (a Wait); other requests,
 * on this and other connections, keep being served. It returns TTRPC_OK after
 * filling the reply, or an error code (set with ttrpc_reply_error).
 */
typedef int (*ttrpc_handler_fn)(void *user, const ttrpc_call *call, ttrpc_reply *reply);

ttrpc_server *ttrpc_server_new(void);
int ttrpc_server_register(ttrpc_server *srv, const char *service, const char *method,
			  ttrpc_handler_fn fn, void *user);
/* Optional: called when a connection opens (return value becomes conn_data)
 * and after it closed and all its handlers finished. */
void ttrpc_server_set_conn_callbacks(ttrpc_server *srv, void *(*opened)(void *user, int fd),
				     void (*closed)(void *user, void *conn_data), void *user);
/* Accepted connections whose peer (SO_PEERCRED) has another uid than this
 * process's effective uid are closed at once (containerd's shims require the
 * same user). Off by default; set before adding listeners. */
void ttrpc_server_require_same_uid(ttrpc_server *srv, bool on);
/* Binds and listens on a unix socket path (mode 0600; an existing socket file is replaced). */
int ttrpc_server_listen_unix(ttrpc_server *srv, const char *path, bl_error_t *err);
/* Takes ownership of a listening socket (the shim's fd 3, an AF_VSOCK listener). */
int ttrpc_server_add_listener(ttrpc_server *srv, int listen_fd, bl_error_t *err);
/* Takes ownership of an already-connected stream (a virtio-serial port). */
int ttrpc_server_add_conn(ttrpc_server *srv, int fd, bl_error_t *err);
/* Same over two one-way fds (a pair of pipes): reads rfd, writes wfd. Takes both. */
int ttrpc_server_add_conn_pair(ttrpc_server *srv, int rfd, int wfd, bl_error_t *err);
/* Serves in background threads. */
int ttrpc_server_start(ttrpc_server *srv, bl_error_t *err);
/* Stops accepting, closes connections, waits for running handlers. Idempotent,
 * safe to call from a handler's thread (then it does not wait for itself). */
void ttrpc_server_shutdown(ttrpc_server *srv);
void ttrpc_server_free(ttrpc_server *srv);

/* ------------------------------------------------------------------ client */

typedef struct ttrpc_client ttrpc_client;

/* Takes ownership of a connected stream fd. */
ttrpc_client *ttrpc_client_new(int fd, bl_error_t *err);
/* Same over two one-way fds (a pair of pipes): reads rfd, writes wfd. Takes both. */
ttrpc_client *ttrpc_client_new_pair(int rfd, int wfd, bl_error_t *err);
/* Connects to a unix socket path (an optional "unix://" prefix is accepted). */
ttrpc_client *ttrpc_client_dial_unix(const char *path, bl_error_t *err);

/*
 * One unary call; thread-safe, many may be in flight on one client.
 * timeout_ns 0 means none; it is also sent as timeout_nano.
 * Returns 0 when a response arrived (then *status says OK or the remote
 * error, and *ret_payload holds the malloc'd payload on OK), or <0 with err:
 * BL_ETIMEOUT on deadline (also when the server answered DeadlineExceeded
 * to a call with a timeout), BL_EAGENTLOST when the connection closed or
 * broke, BL_EPROTO on a malformed response.
 */
int ttrpc_client_call_raw(ttrpc_client *c, const char *service, const char *method,
			  const uint8_t *payload, size_t len, const ttrpc_kv *md, size_t n_md,
			  uint64_t timeout_ns, ttrpc_status *status, uint8_t **ret_payload,
			  size_t *ret_len, bl_error_t *err);
/* Same with protobuf-c messages: packs req, unpacks the response as resp_desc
 * (free it with protobuf_c_message_free_unpacked). A remote non-OK status is
 * returned as <0 too, with err->msg "service/method: <remote message>" and
 * status filled when not NULL. */
int ttrpc_client_call(ttrpc_client *c, const char *service, const char *method,
		      const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
		      ProtobufCMessage **resp, uint64_t timeout_ns, const ttrpc_kv *md, size_t n_md,
		      ttrpc_status *status, bl_error_t *err);
/* Fails all calls in flight with BL_EAGENTLOST and stops the reader. */
void ttrpc_client_close(ttrpc_client *c);
bool ttrpc_client_is_closed(ttrpc_client *c);
void ttrpc_client_free(ttrpc_client *c);

/* ------------------------------------------------------------------ codes */

/* "NotFound", "Unimplemented", ... (gRPC's spelling). */
const char *ttrpc_code_name(int code);
/* A remote status as a bl_code, and back: ONE table (common/ttrpc.c) in which
 * every bl_code has its own status (BL_EBACKEND Unknown, BL_ESYSTEM Internal,
 * BL_EPROTO DataLoss, BL_EOOM ResourceExhausted, BL_EAGENTLOST Unavailable,
 * ...), so codes survive the protocol; OutOfRange reads as BL_EINVAL,
 * PermissionDenied as BL_ESYSTEM, anything unknown as BL_EPROTO. */
bl_code ttrpc_code_to_bl(int code);
/* A bl_code (either sign) as a status for handlers. */
int ttrpc_code_from_bl(int code);
/* ttrpc_code_from_bl, except that a failed system call with EACCES/EPERM is
 * PERMISSION_DENIED (which maps back to BL_ESYSTEM). */
int ttrpc_code_from_error(const bl_error_t *e);
