#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "remora/answers.h"
#include "remora/clock.h"
#include "remora/xalloc.h"

/* One object whose answers are not all settled as delivered. */
struct entry {
        char *id;
        int pending; /* answers on their way */
        bool lost;   /* the last answer sent never reached its client */
};

struct rm_answers {
        pthread_mutex_t lock;
        pthread_cond_t settled; /* an answer ended or an entry went */
        struct entry *entries;
        size_t n;
};

struct rm_answers *rm_answers_new(void)
{
        struct rm_answers *a = xzalloc(sizeof(*a));
        pthread_mutex_init(&a->lock, NULL);
        rm_cond_init_monotonic(&a->settled);
        return a;
}

void rm_answers_free(struct rm_answers *a)
{
        if (a == NULL)
                return;
        for (size_t i = 0; i < a->n; i++)
                free(a->entries[i].id);
        free(a->entries);
        pthread_cond_destroy(&a->settled);
        pthread_mutex_destroy(&a->lock);
        free(a);
}

/* Caller holds a->lock. */
static struct entry *find(struct rm_answers *a, const char *id)
{
        for (size_t i = 0; i < a->n; i++) {
                if (strcmp(a->entries[i].id, id) == 0)
                        return &a->entries[i];
        }
        return NULL;
}

static void drop(struct rm_answers *a, struct entry *e)
{
        free(e->id);
        *e = a->entries[--a->n];
}

void rm_answers_begin(struct rm_answers *a, const char *id)
{
        pthread_mutex_lock(&a->lock);
        struct entry *e = find(a, id);
        if (e == NULL) {
                a->entries = xrealloc(a->entries, sizeof(*a->entries) * (a->n + 1));
                e = &a->entries[a->n++];
                *e = (struct entry){.id = xstrdup(id)};
        }
        e->pending++;
        pthread_mutex_unlock(&a->lock);
}

void rm_answers_end(struct rm_answers *a, const char *id, bool delivered)
{
        pthread_mutex_lock(&a->lock);
        struct entry *e = find(a, id);
        if (e) {
                if (e->pending > 0)
                        e->pending--;
                if (delivered)
                        drop(a, e);
                else
                        e->lost = true;
                pthread_cond_broadcast(&a->settled);
        }
        pthread_mutex_unlock(&a->lock);
}

void rm_answers_forget(struct rm_answers *a, const char *id)
{
        pthread_mutex_lock(&a->lock);
        struct entry *e = find(a, id);
        if (e) {
                drop(a, e);
                pthread_cond_broadcast(&a->settled);
        }
        pthread_mutex_unlock(&a->lock);
}

enum rm_answer rm_answers_claim(struct rm_answers *a, const char *id,
                                const struct rm_cancel *cancel, int64_t timeout_ms)
{
        int64_t until = rm_mono_ns() + timeout_ms * 1000000LL;
        enum rm_answer r;
        pthread_mutex_lock(&a->lock);
        for (;;) {
                struct entry *e = find(a, id);
                if (e == NULL) {
                        r = RM_ANSWER_DELIVERED;
                        break;
                }
                if (e->pending == 0) {
                        e->pending++;
                        r = RM_ANSWER_LOST;
                        break;
                }
                int64_t now = rm_mono_ns();
                if (now >= until || rm_cancelled(cancel)) {
                        r = RM_ANSWER_PENDING;
                        break;
                }
                /* Wake at least every 50 ms to look at the caller's token, which has no
                 * condition variable of its own. */
                int64_t wake = now + 50000000LL < until ? now + 50000000LL : until;
                struct timespec ts = {.tv_sec = wake / 1000000000LL,
                                      .tv_nsec = wake % 1000000000LL};
                pthread_cond_timedwait(&a->settled, &a->lock, &ts);
        }
        pthread_mutex_unlock(&a->lock);
        return r;
}
