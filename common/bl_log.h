/* Logging: library code logs through here; the program decides where it goes. */
#pragma once

typedef enum bl_log_level {
	BL_LOG_ERROR = 0,
	BL_LOG_WARN = 1,
	BL_LOG_INFO = 2,
	BL_LOG_DEBUG = 3,
} bl_log_level;

/* Messages above `level` are dropped. Default: BL_LOG_WARN, or $BOXLITE_LOG
 * (error|warn|info|debug) when set. `fd` < 0 disables logging entirely. */
void bl_log_setup(int fd, bl_log_level level, const char *ident);
bl_log_level bl_log_get_level(void);
void bl_log(bl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define bl_error_log(...) bl_log(BL_LOG_ERROR, __VA_ARGS__)
#define bl_warn(...)	  bl_log(BL_LOG_WARN, __VA_ARGS__)
#define bl_info(...)	  bl_log(BL_LOG_INFO, __VA_ARGS__)
#define bl_debug(...)	  bl_log(BL_LOG_DEBUG, __VA_ARGS__)
