/* The monotonic clock for waits and deadlines: a wall-clock step (NTP at boot, an
 * operator's date) must neither cut a grace period short nor stretch it. */
#pragma once

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC now, in ns; and in ms. */
int64_t rm_mono_ns(void);
int64_t rm_mono_ms(void);

/* ns on CLOCK_MONOTONIC as the absolute time pthread_cond_timedwait takes. */
struct timespec rm_mono_timespec(int64_t ns);

/* A condition variable whose timed waits read CLOCK_MONOTONIC. */
void rm_cond_init_monotonic(pthread_cond_t *cv);
