/* Condition variables on CLOCK_MONOTONIC with optional deadlines. */
#pragma once

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

static inline void agent_cond_init(pthread_cond_t *c)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
}

/* Waits until woken or the deadline (0 = none); false once it has passed. */
static inline bool agent_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m,
					 uint64_t deadline_ns)
{
	if (!deadline_ns) {
		pthread_cond_wait(c, m);
		return true;
	}
	struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000ull),
			      .tv_nsec = (long)(deadline_ns % 1000000000ull)};
	return pthread_cond_timedwait(c, m, &ts) != ETIMEDOUT;
}
