/*
 * Pieces shared by the ttrpc server and client (and their tests and fuzz
 * target): fd I/O that can be woken, a buffered frame reader, and the
 * hand-written encoders of the two envelopes (payload sent without copying).
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "ttrpc.h"

/*
 * One end of a byte stream. A socket stays blocking and is woken with
 * shutdown(2); anything else (a virtio-serial port, a pty, a pair of pipes)
 * is made non-blocking and waits in poll(2) beside a wake eventfd.
 */
typedef struct ttrpc_io {
	int fd;	     /* read from */
	int wfd;     /* written to: fd itself, or the write end of a pipe pair */
	int wake_fd; /* eventfd, -1 for sockets */
	bool is_socket;
	atomic_bool woken;   /* reads and writes fail */
	atomic_bool rd_done; /* reads fail, writes go on */
} ttrpc_io;

/* Takes ownership of fd only on success. */
int ttrpc_io_init(ttrpc_io *io, int fd, bl_error_t *err);
/* Same with separate read and write fds (may be equal). */
int ttrpc_io_init_pair(ttrpc_io *io, int rfd, int wfd, bl_error_t *err);
/* Makes blocked and later reads and writes fail (ECANCELED or EOF). */
void ttrpc_io_wake(ttrpc_io *io);
/* Makes blocked and later reads end (EOF or ECANCELED); writes still work. */
void ttrpc_io_stop_reading(ttrpc_io *io);
void ttrpc_io_destroy(ttrpc_io *io);
/* >0 bytes, 0 at EOF, -1 with errno. */
ssize_t ttrpc_io_read(ttrpc_io *io, void *buf, size_t len);
/* Writes everything (iov is consumed); 0 or -1 with errno. Never raises SIGPIPE: sockets use
 * MSG_NOSIGNAL; other fds block SIGPIPE in the calling thread around the write and consume one
 * the write raised (EPIPE is returned). */
int ttrpc_io_writev(ttrpc_io *io, struct iovec *iov, int cnt);

#define TTRPC_READ_BUF (64u * 1024)

/* Buffered frame reader; one thread at a time. */
typedef struct ttrpc_reader {
	uint8_t *buf;
	size_t cap, start, end;
	/* The last body was large and read straight into its destination: read
	 * the next header alone rather than most of a body into buf. */
	bool big;
} ttrpc_reader;

int ttrpc_reader_init(ttrpc_reader *r);
void ttrpc_reader_free(ttrpc_reader *r);
/* 1: header read; 0: clean EOF between frames; -1: error or EOF inside a frame. */
int ttrpc_read_header(ttrpc_reader *r, ttrpc_io *io, ttrpc_frame_header *h);
/* Reads len bytes into a new malloc'd buffer (NULL for len 0): 1 or -1. */
int ttrpc_read_body(ttrpc_reader *r, ttrpc_io *io, size_t len, uint8_t **out);
/* Reads len bytes into dst; a large body goes straight there, not through
 * the buffer: 1 or -1. */
int ttrpc_read_exact(ttrpc_reader *r, ttrpc_io *io, uint8_t *dst, size_t len);
/* Reads and drops len bytes without allocating: 1 or -1. */
int ttrpc_skip_body(ttrpc_reader *r, ttrpc_io *io, size_t len);

/* Sends one Response frame; code TTRPC_OK omits the status. A response that
 * would exceed TTRPC_MAX_DATA is replaced by ResourceExhausted. 0 or -1. */
int ttrpc_send_response(ttrpc_io *io, pthread_mutex_t *wlock, uint32_t id, int code,
			const char *msg, const uint8_t *payload, size_t len);
/* Encodes the frame header and Response envelope up to the payload bytes,
 * which follow it on the wire: returns its length. *len is the payload's,
 * set to 0 when the payload is not sent (an error, or too large: then
 * ResourceExhausted replaces the code, as ttrpc_send_response does). */
#define TTRPC_RESPONSE_HEAD_MAX (TTRPC_HEADER_LEN + 1100 + 32)
size_t ttrpc_encode_response_head(uint8_t head[TTRPC_RESPONSE_HEAD_MAX], uint32_t id, int code,
				  const char *msg, size_t *len);
/* Sends one Request frame (wlock NULL: the caller holds the write lock). 0, -1 with errno (write
 * failed), or -2 (too large). */
int ttrpc_send_request(ttrpc_io *io, pthread_mutex_t *wlock, uint32_t id, const char *service,
		       const char *method, const uint8_t *payload, size_t len, int64_t timeout_nano,
		       const ttrpc_kv *md, size_t n_md);

/*
 * A Request decoded in place: payload points into the frame, which must
 * outlive it; the NUL-terminated strings and the metadata array live in
 * space (or one heap block when they do not fit). Same acceptance as
 * protobuf-c's unpacker for this message: unknown fields skipped, the last
 * of a repeated scalar wins, a known field with the wrong wire type or a
 * truncated field rejects the whole message.
 */
typedef struct ttrpc_request {
	const char *service;
	const char *method;
	const uint8_t *payload;
	size_t payload_len;
	int64_t timeout_nano;
	size_t n_metadata;
	ttrpc_kv *metadata;
	void *heap;
	_Alignas(ttrpc_kv) char space[512];
} ttrpc_request;

/* 0, or -1 when buf is not a valid Request (nothing to release then). */
int ttrpc_request_decode(const uint8_t *buf, size_t len, ttrpc_request *req);
void ttrpc_request_release(ttrpc_request *req);

/* Varint encoder: writes at most 10 bytes, returns the count. */
size_t ttrpc_put_varint(uint8_t *out, uint64_t v);

struct ttrpc_reply {
	int code;
	char message[1024];
	uint8_t *payload;
	size_t len;
};
