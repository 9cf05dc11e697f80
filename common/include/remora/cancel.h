/* A call's cancellation token. The gRPC front end owns one per call and sets it when the
 * client cancels or its deadline passes; long work (ExecSync, PullImage, a stop waiting
 * out its grace period) polls it, or waits on its fd, and gives up where that is safe.
 * A NULL token is never cancelled, so callers without a client (start-up, tests) pass
 * NULL. */
#ifndef REMORA_CANCEL_H
#define REMORA_CANCEL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct rm_cancel {
        atomic_bool cancelled; /* set once, never cleared */
        int64_t deadline_ns;   /* CLOCK_MONOTONIC; 0: no deadline */
        int fd; /* eventfd, readable once cancelled, for poll(); -1 when the owner made none */
};

/* A token with no deadline and an eventfd (fd is -1 if eventfd failed). */
void rm_cancel_init(struct rm_cancel *c, int64_t deadline_ns);
/* Mark it cancelled (idempotent, async-signal-safe apart from the eventfd write). */
void rm_cancel_set(struct rm_cancel *c);
void rm_cancel_release(struct rm_cancel *c);

/* True once cancelled or past its deadline. NULL: false. */
bool rm_cancelled(const struct rm_cancel *c);

#endif
