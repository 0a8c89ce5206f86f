/*
 * Process output and input. One epoll thread moves bytes from every output
 * fd into a bounded per-stream buffer; when a buffer is full that fd is no
 * longer polled, so the process blocks on its pipe (backpressure). Readers
 * block on a condition variable until data or EOF: no polling loops.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bl_error.h"

#define AGENT_STREAM_MAX (1u << 20)

typedef struct agent_stream agent_stream;
typedef struct agent_stdin agent_stdin;

/* Starts the epoll thread. */
int agent_io_start(bl_error_t *err);

/* Takes ownership of fd (made non-blocking) and starts buffering it. A pty
 * master's EIO counts as EOF. */
agent_stream *agent_stream_new(int fd);
/* Blocks until data (returns up to max bytes, malloc'd), EOF (*ret_eof) or
 * the CLOCK_MONOTONIC deadline (0 = none; then returns no data, no EOF). */
int agent_stream_read(agent_stream *s, size_t max, uint64_t deadline_ns, uint8_t **ret,
		      size_t *ret_len, bool *ret_eof);
/* Stops reading and drops buffered data; readers see EOF. */
void agent_stream_close(agent_stream *s);
/* Closes and frees; no reader may be inside. Accepts NULL. */
void agent_stream_free(agent_stream *s);

/* Takes ownership of fd (the write end of a pipe, or a pty master dup). */
agent_stdin *agent_stdin_new(int fd, bool pty);
/* Writes all of buf unless the reader goes away, stdin is closed or the
 * deadline passes; *ret_written says how much went through. */
int agent_stdin_write(agent_stdin *in, const void *buf, size_t len, uint64_t deadline_ns,
		      size_t *ret_written, bl_error_t *err);
/* Closes the pipe (EOF for the process); on a pty sends the EOF character. */
int agent_stdin_close(agent_stdin *in, bl_error_t *err);
void agent_stdin_free(agent_stdin *in);
