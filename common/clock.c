/* Monotonic time for waits (see remora/clock.h). */
#include "remora/clock.h"

int64_t rm_mono_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t rm_mono_ms(void)
{
        return rm_mono_ns() / 1000000;
}

struct timespec rm_mono_timespec(int64_t ns)
{
        return (struct timespec){.tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL};
}

void rm_cond_init_monotonic(pthread_cond_t *cv)
{
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(cv, &attr);
        pthread_condattr_destroy(&attr);
}
