/* An elastic pool of threads for calls that may block (runc, exec, pulls, stops waiting
 * out a grace period). A job starts at once on an idle thread or on a new one, up to a
 * generous bound; past it jobs queue. Threads idle for a while retire, so a burst leaves
 * no threads behind. */
#ifndef REMORA_POOL_H
#define REMORA_POOL_H

#include <stddef.h>

typedef void (*rm_pool_fn)(void *arg);

struct rm_pool;

/* max_threads >= 1; a thread idle for idle_ms retires. */
struct rm_pool *rm_pool_new(size_t max_threads, int idle_ms);

/* Run fn(arg) on a pool thread. Never blocks; safe from any thread, also from a job. */
void rm_pool_submit(struct rm_pool *p, rm_pool_fn fn, void *arg);

/* Wait until no job is queued or running. */
void rm_pool_drain(struct rm_pool *p);

/* Drain, stop every thread and free. */
void rm_pool_free(struct rm_pool *p);

/* Threads alive now, and how many of them run a job (busy may be NULL). */
size_t rm_pool_threads(struct rm_pool *p, size_t *busy);

#endif
