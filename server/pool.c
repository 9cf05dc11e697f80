#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pool.h"
#include "remora/clock.h"
#include "remora/log.h"
#include "remora/xalloc.h"

struct job {
        struct job *next;
        rm_pool_fn fn;
        void *arg;
};

struct rm_pool {
        pthread_mutex_t lock;
        pthread_cond_t work; /* a job was queued, or stopping */
        pthread_cond_t idle; /* a job ended or a thread retired */
        struct job *head, *tail;
        size_t queued;
        size_t threads, waiting, running;
        size_t max;
        int idle_ms;
        bool stopping;
        struct timespec last_trim;
        /* Threads that retired, joined by the next submit or by free. */
        pthread_t *retired;
        size_t n_retired, cap_retired;
};

static void deadline_in(struct timespec *ts, int ms)
{
        *ts = rm_mono_timespec(rm_mono_ns() + (int64_t)ms * 1000000LL);
}

/* Caller holds p->lock. */
static void retire_locked(struct rm_pool *p)
{
        if (p->n_retired == p->cap_retired) {
                p->cap_retired = p->cap_retired ? p->cap_retired * 2 : 16;
                p->retired = xrealloc(p->retired, sizeof(pthread_t) * p->cap_retired);
        }
        p->retired[p->n_retired++] = pthread_self();
        p->threads--;
        pthread_cond_broadcast(&p->idle);
}

/* After a burst, give the heap's free pages back: the calls that made them (execs,
 * pulls, lifecycles of many pods) are over. At most once per idle period, not at stop. */
static void trim_after_burst(struct rm_pool *p)
{
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        pthread_mutex_lock(&p->lock);
        long since_ms = (now.tv_sec - p->last_trim.tv_sec) * 1000L +
                        (now.tv_nsec - p->last_trim.tv_nsec) / 1000000L;
        bool due = !p->stopping && since_ms >= p->idle_ms;
        if (due)
                p->last_trim = now;
        pthread_mutex_unlock(&p->lock);
        if (due)
                malloc_trim(0);
}

static void *pool_main(void *arg)
{
        struct rm_pool *p = arg;
        bool idle_out = false;
        pthread_mutex_lock(&p->lock);
        for (;;) {
                if (p->head == NULL) {
                        if (p->stopping)
                                break;
                        struct timespec until;
                        deadline_in(&until, p->idle_ms);
                        p->waiting++;
                        int rc = 0;
                        while (p->head == NULL && !p->stopping && rc != ETIMEDOUT)
                                rc = pthread_cond_timedwait(&p->work, &p->lock, &until);
                        p->waiting--;
                        if (p->head == NULL) {
                                idle_out = rc == ETIMEDOUT;
                                break; /* idle too long, or stopping */
                        }
                }
                struct job *j = p->head;
                p->head = j->next;
                if (p->head == NULL)
                        p->tail = NULL;
                p->queued--;
                p->running++;
                pthread_mutex_unlock(&p->lock);
                j->fn(j->arg);
                free(j);
                pthread_mutex_lock(&p->lock);
                p->running--;
                if (p->running == 0 && p->head == NULL)
                        pthread_cond_broadcast(&p->idle);
        }
        pthread_mutex_unlock(&p->lock);
        if (idle_out)
                trim_after_burst(p);
        pthread_mutex_lock(&p->lock);
        retire_locked(p);
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

/* Join the threads that retired. Caller holds p->lock; the joins wait only for a thread
 * that has already dropped the lock to return. */
static void reap_locked(struct rm_pool *p)
{
        for (size_t i = 0; i < p->n_retired; i++)
                if (!pthread_equal(p->retired[i], pthread_self()))
                        pthread_join(p->retired[i], NULL);
        p->n_retired = 0;
}

struct rm_pool *rm_pool_new(size_t max_threads, int idle_ms)
{
        struct rm_pool *p = xzalloc(sizeof(*p));
        pthread_mutex_init(&p->lock, NULL);
        rm_cond_init_monotonic(&p->work);
        pthread_cond_init(&p->idle, NULL);
        p->max = max_threads ? max_threads : 1;
        p->idle_ms = idle_ms > 0 ? idle_ms : 1;
        return p;
}

void rm_pool_submit(struct rm_pool *p, rm_pool_fn fn, void *arg)
{
        struct job *j = xzalloc(sizeof(*j));
        j->fn = fn;
        j->arg = arg;
        pthread_mutex_lock(&p->lock);
        if (p->tail)
                p->tail->next = j;
        else
                p->head = j;
        p->tail = j;
        p->queued++;
        if (p->queued > p->waiting && p->threads < p->max) {
                pthread_t t;
                int rc = pthread_create(&t, NULL, pool_main, p);
                if (rc == 0)
                        p->threads++;
                else if (p->threads == 0)
                        rm_log_error("cannot start a call thread (%s); the call waits for one",
                                     strerror(rc));
        } else {
                pthread_cond_signal(&p->work);
        }
        if (p->n_retired > 0)
                reap_locked(p);
        pthread_mutex_unlock(&p->lock);
}

void rm_pool_drain(struct rm_pool *p)
{
        pthread_mutex_lock(&p->lock);
        while (p->head != NULL || p->running > 0)
                pthread_cond_wait(&p->idle, &p->lock);
        pthread_mutex_unlock(&p->lock);
}

void rm_pool_free(struct rm_pool *p)
{
        if (p == NULL)
                return;
        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        pthread_cond_broadcast(&p->work);
        while (p->threads > 0)
                pthread_cond_wait(&p->idle, &p->lock);
        reap_locked(p);
        pthread_mutex_unlock(&p->lock);
        free(p->retired);
        pthread_cond_destroy(&p->work);
        pthread_cond_destroy(&p->idle);
        pthread_mutex_destroy(&p->lock);
        free(p);
}

size_t rm_pool_threads(struct rm_pool *p, size_t *busy)
{
        pthread_mutex_lock(&p->lock);
        size_t n = p->threads;
        if (busy)
                *busy = p->running;
        pthread_mutex_unlock(&p->lock);
        return n;
}
