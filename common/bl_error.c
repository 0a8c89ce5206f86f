#include "bl_error.h"

#include <stdio.h>
#include <string.h>

static int vset(bl_error_t *err, bl_code code, int errnum, const char *fmt, va_list ap)
{
	if (!err)
		return -(int)code;
	err->code = code;
	err->sys_errno = errnum;
	int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	if (errnum && n >= 0 && (size_t)n < sizeof(err->msg))
		snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s", strerror(errnum));
	return -(int)code;
}

int bl_set_error(bl_error_t *err, bl_code code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = vset(err, code, 0, fmt, ap);
	va_end(ap);
	return r;
}

int bl_set_error_errno(bl_error_t *err, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = vset(err, BL_ESYSTEM, errnum, fmt, ap);
	va_end(ap);
	return r;
}

int bl_error_prefix(bl_error_t *err, const char *fmt, ...)
{
	if (!err)
		return -1;
	char prefix[BL_ERROR_MSG_MAX / 2];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -(int)err->code;
	size_t plen = strlen(prefix);
	size_t room = sizeof(err->msg) - 1 - plen - 2;
	size_t olen = strnlen(err->msg, room);
	memmove(err->msg + plen + 2, err->msg, olen);
	memcpy(err->msg, prefix, plen);
	memcpy(err->msg + plen, ": ", 2);
	err->msg[plen + 2 + olen] = '\0';
	return -(int)err->code;
}

void bl_error_clear(bl_error_t *err)
{
	if (!err)
		return;
	err->code = BL_OK;
	err->sys_errno = 0;
	err->msg[0] = '\0';
}

const char *bl_code_name(bl_code code)
{
	static const char *const names[] = {
	    [BL_OK] = "ok",
	    [BL_EINVAL] = "invalid argument",
	    [BL_ETIMEOUT] = "timeout",
	    [BL_EOOM] = "out of memory",
	    [BL_ENOTFOUND] = "not found",
	    [BL_EBACKEND] = "backend failure",
	    [BL_EAGENTLOST] = "guest agent lost",
	    [BL_ESYSTEM] = "system error",
	    [BL_EPROTO] = "protocol error",
	    [BL_EEXIST] = "already exists",
	    [BL_ESTATE] = "invalid state",
	    [BL_ECANCELED] = "canceled",
	    [BL_EUNSUPPORTED] = "unsupported",
	    [BL_EAUTH] = "authentication refused",
	    [BL_ENETWORK] = "network error",
	};
	if ((unsigned)code < sizeof(names) / sizeof(names[0]) && names[code])
		return names[code];
	return "unknown error";
}
