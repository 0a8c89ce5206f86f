/* Scope-bound cleanup helpers (GNU C cleanup attribute). */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <dirent.h>

static inline void bl_freep(void *p)
{
	free(*(void **)p);
}

static inline void bl_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		(void)close(*fd);
		errno = saved;
	}
}

static inline void bl_fclosep(FILE **f)
{
	if (*f)
		(void)fclose(*f);
}

static inline void bl_closedirp(DIR **d)
{
	if (*d)
		(void)closedir(*d);
}

/* Frees a NULL-terminated array of strings and the array. */
static inline void bl_strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static inline void bl_strv_freep(char ***v)
{
	bl_strv_free(*v);
}

#define _cleanup_(f)	   __attribute__((cleanup(f)))
#define _cleanup_free_	   _cleanup_(bl_freep)
#define _cleanup_close_	   _cleanup_(bl_closep)
#define _cleanup_fclose_   _cleanup_(bl_fclosep)
#define _cleanup_closedir_ _cleanup_(bl_closedirp)
#define _cleanup_strv_	   _cleanup_(bl_strv_freep)

/* Declares TYPE##_freep(TYPE **) calling FUNC on a non-NULL pointer. */
#define BL_DEFINE_CLEANUP(type, func)        \
	static inline void func##p(type **p) \
	{                                    \
		if (*p)                      \
			func(*p);            \
	}

#define steal_pointer(pp)                       \
	({                                      \
		__typeof__(*(pp)) _tmp = *(pp); \
		*(pp) = NULL;                   \
		_tmp;                           \
	})

#define steal_fd(fdp)             \
	({                        \
		int _fd = *(fdp); \
		*(fdp) = -1;      \
		_fd;              \
	})

#define BL_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
