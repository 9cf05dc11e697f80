/* Deferred deletion of pod veths (see internal.h). One thread, one netlink socket of its
 * own; the queue is short (pods stopped in the last few tens of milliseconds). */
#include <net/if.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "remora/cleanup.h"
#include "remora/log.h"
#include "remora/xalloc.h"

struct rm__reaper {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        pthread_t thread;
        struct rm__nl *nl;
        char (*queue)[IFNAMSIZ];
        size_t n, cap;
        char busy[IFNAMSIZ]; /* being deleted by the thread, "" when idle */
        bool stopping;
};

static void delete_link(struct rm__nl *nl, const char *name)
{
        cleanup_error struct rm_error *e = NULL;
        /* a failure leaves a downed port on the bridge: start-up reconcile removes it */
        if (rm__nl_link_delete(nl, name, &e) < 0)
                rm_log_warn("pod network: delete %s: %s", name, e->msg);
}

static void *reap(void *arg)
{
        struct rm__reaper *r = arg;
        pthread_mutex_lock(&r->lock);
        for (;;) {
                while (r->n == 0 && !r->stopping)
                        pthread_cond_wait(&r->cond, &r->lock);
                if (r->n == 0)
                        break;
                memcpy(r->busy, r->queue[0], IFNAMSIZ);
                memmove(r->queue, r->queue + 1, --r->n * IFNAMSIZ);
                pthread_mutex_unlock(&r->lock);
                delete_link(r->nl, r->busy);
                pthread_mutex_lock(&r->lock);
                r->busy[0] = '\0';
                pthread_cond_broadcast(&r->cond);
        }
        pthread_mutex_unlock(&r->lock);
        return NULL;
}

struct rm__reaper *rm__reaper_start(struct rm_error **err)
{
        struct rm__nl *nl = rm__nl_open(err);
        if (nl == NULL)
                return NULL;
        struct rm__reaper *r = xzalloc(sizeof(*r));
        r->nl = nl;
        pthread_mutex_init(&r->lock, NULL);
        pthread_cond_init(&r->cond, NULL);
        int e = pthread_create(&r->thread, NULL, reap, r);
        if (e != 0) {
                rm__nl_close(nl);
                pthread_cond_destroy(&r->cond);
                pthread_mutex_destroy(&r->lock);
                free(r);
                rm_error_sys_errno(err, e, "start the link reaper thread");
                return NULL;
        }
        return r;
}

void rm__reaper_add(struct rm__reaper *r, const char *name)
{
        pthread_mutex_lock(&r->lock);
        if (r->n == r->cap) {
                r->cap = r->cap ? r->cap * 2 : 16;
                r->queue = xrealloc(r->queue, r->cap * IFNAMSIZ);
        }
        snprintf(r->queue[r->n++], IFNAMSIZ, "%s", name);
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
}

void rm__reaper_claim(struct rm__reaper *r, struct rm__nl *nl, const char *name)
{
        pthread_mutex_lock(&r->lock);
        bool queued = false;
        for (size_t i = 0; i < r->n; i++) {
                if (strcmp(r->queue[i], name) == 0) {
                        memmove(r->queue + i, r->queue + i + 1, (r->n - i - 1) * IFNAMSIZ);
                        r->n--;
                        queued = true;
                        break;
                }
        }
        while (!queued && strcmp(r->busy, name) == 0)
                pthread_cond_wait(&r->cond, &r->lock);
        pthread_mutex_unlock(&r->lock);
        if (queued)
                delete_link(nl, name);
}

void rm__reaper_stop(struct rm__reaper *r)
{
        if (r == NULL)
                return;
        pthread_mutex_lock(&r->lock);
        r->stopping = true;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
        pthread_join(r->thread, NULL);
        rm__nl_close(r->nl);
        pthread_cond_destroy(&r->cond);
        pthread_mutex_destroy(&r->lock);
        free(r->queue);
        free(r);
}
