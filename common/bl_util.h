/* Small system helpers shared by the runtime, the shim and the agent. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bl_error.h"

/* Full read/write, retrying on EINTR and short transfers. read_full returns
 * the bytes read (less than len only at EOF) or -1 with errno. */
ssize_t bl_read_full(int fd, void *buf, size_t len);
int bl_write_full(int fd, const void *buf, size_t len);

/* Reads at most max bytes of a file into a NUL-terminated buffer. A larger
 * file is an error (BL_EPROTO), never a truncation. */
int bl_read_file(const char *path, size_t max, char **ret_buf, size_t *ret_len, bl_error_t *err);
int bl_write_file(const char *path, const void *buf, size_t len, int mode, bl_error_t *err);

int bl_mkdir_p(const char *path, int mode, bl_error_t *err);
/* Removes a tree without following symlinks and without crossing mounts. */
int bl_rm_rf(const char *path, bl_error_t *err);

/* Text from a guest, an image or a socket, made safe for a terminal in
 * place: control characters (ESC, CSI, BEL, backspace, carriage return, DEL
 * and the C1 range 0x80-0x9f when it is not inside UTF-8) become '?';
 * newline and tab stay when keep_newlines. */
void bl_sanitize_text(char *buf, size_t len, bool keep_newlines);

uint64_t bl_now_monotonic_ns(void);
uint64_t bl_now_realtime_ns(void);

/* strdup that aborts on ENOMEM; allocation failure is not recoverable here. */
char *bl_strdup(const char *s);
void *bl_malloc0(size_t n);
char *bl_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
