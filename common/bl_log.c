#include "bl_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int log_fd = 2;
static int log_level = -1;
static char log_ident[32] = "boxlite";

static int level_from_env(void)
{
	const char *e = getenv("BOXLITE_LOG");
	if (!e)
		return BL_LOG_WARN;
	if (!strcmp(e, "error"))
		return BL_LOG_ERROR;
	if (!strcmp(e, "info"))
		return BL_LOG_INFO;
	if (!strcmp(e, "debug"))
		return BL_LOG_DEBUG;
	return BL_LOG_WARN;
}

void bl_log_setup(int fd, bl_log_level level, const char *ident)
{
	log_fd = fd;
	log_level = (int)level;
	if (ident)
		snprintf(log_ident, sizeof(log_ident), "%s", ident);
}

bl_log_level bl_log_get_level(void)
{
	if (log_level < 0)
		log_level = level_from_env();
	return (bl_log_level)log_level;
}

void bl_log(bl_log_level level, const char *fmt, ...)
{
	static const char *const tags[] = {"error", "warning", "info", "debug"};
	if (log_fd < 0 || (int)level > (int)bl_log_get_level())
		return;
	char line[2048];
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int n = snprintf(line, sizeof(line), "%s[%ld.%03ld] %s: ", log_ident, (long)ts.tv_sec,
			 ts.tv_nsec / 1000000, tags[level]);
	va_list ap;
	va_start(ap, fmt);
	if (n > 0 && (size_t)n < sizeof(line))
		n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line) - 1)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* One write so lines from threads and processes do not interleave. */
	(void)!write(log_fd, line, (size_t)n);
}
