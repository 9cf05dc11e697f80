/* Named crash points for the crash-consistency tests. A durable step of a call is marked
 * with rm_crashpoint("call.step"); when remorad runs with REMORA_CRASH_AT=call.step (or
 * call.step:N, the Nth time that point is reached) the process kills itself there with
 * SIGKILL, as an operator's kill -9 would. Without the variable a crash point costs one
 * predictable branch. Names are lower-case words joined by dots: <call>.<step>. */
#ifndef REMORA_CRASHPOINT_H
#define REMORA_CRASHPOINT_H

/* Read REMORA_CRASH_AT once, at start-up, before threads exist. */
void rm_crashpoint_init(void);
/* True when a crash point is armed (tests log it). */
const char *rm_crashpoint_armed(void);
void rm__crashpoint_hit(const char *name);

extern const char *rm__crash_at;

static inline void rm_crashpoint(const char *name)
{
        if (__builtin_expect(rm__crash_at != 0, 0))
                rm__crashpoint_hit(name);
}

#endif
