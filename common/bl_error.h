/*
 * The one error convention: fallible functions return 0 (or a valid pointer)
 * on success and a negative bl_code (or NULL) on failure, filling the
 * bl_error_t passed last. Callers add context with bl_error_prefix().
 * The codes and bl_error_t are public, in boxlite_error.h (a new code goes
 * there and in sdk/python/boxlite/errors.py); the helpers here are internal.
 */
#pragma once

#include <stdarg.h>
#include <stddef.h>

#include "boxlite_error.h"

/* Sets err (may be NULL) and returns -code, for `return bl_set_error(...)`. */
int bl_set_error(bl_error_t *err, bl_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like bl_set_error with BL_ESYSTEM, appending strerror(errnum). */
int bl_set_error_errno(bl_error_t *err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepends "context: " to err's message; returns -err->code. */
int bl_error_prefix(bl_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
