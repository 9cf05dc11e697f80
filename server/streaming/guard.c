/* Connections that have not upgraded yet: each gets header_timeout_ms from its accept to
 * become a session, and at most max_pending wait at once (a new one pushes out the oldest).
 * A slowloris then holds a bounded number of connections for a bounded time, and a real
 * client, which sends its request at once, always gets in.
 *
 * libmicrohttpd tells us when a connection starts and closes; a connection is dropped by
 * shutting its socket down, which its poll thread sees as the peer's end and closes. MHD
 * reports the close before it closes the fd, and the list is changed only under the lock,
 * so a listed fd is always still the connection's. */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <microhttpd.h>
#include "remora/clock.h"
#include "remora/xalloc.h"
#include "streaming_int.h"

struct pending_conn {
        struct pending_conn *prev, *next;
        int fd;
        int64_t deadline_ms;
        bool listed;  /* still waiting to upgrade */
        bool dropped; /* shut down, MHD has yet to notice */
};

struct rm_conn_guard {
        pthread_mutex_t lock;
        pthread_cond_t wake;
        pthread_t sweeper;
        bool stop;
        int64_t timeout_ms, max_pending;
        struct pending_conn *head, *tail; /* in accept order, so by deadline too */
        int64_t live;                     /* listed and not dropped */
};

static void unlink_conn(struct rm_conn_guard *g, struct pending_conn *p)
{
        if (!p->listed)
                return;
        if (p->prev)
                p->prev->next = p->next;
        else
                g->head = p->next;
        if (p->next)
                p->next->prev = p->prev;
        else
                g->tail = p->prev;
        p->prev = p->next = NULL;
        p->listed = false;
        if (!p->dropped)
                g->live--;
}

static void drop_conn(struct rm_conn_guard *g, struct pending_conn *p)
{
        shutdown(p->fd, SHUT_RDWR);
        p->dropped = true;
        g->live--;
}

/* Drop what has overstayed; returns the next deadline (ms), or -1 when nothing waits. */
static int64_t sweep(struct rm_conn_guard *g, int64_t now)
{
        for (struct pending_conn *p = g->head; p; p = p->next) {
                if (p->dropped)
                        continue;
                if (p->deadline_ms > now)
                        return p->deadline_ms;
                drop_conn(g, p);
        }
        return -1;
}

static void *sweeper_main(void *arg)
{
        struct rm_conn_guard *g = arg;
        pthread_mutex_lock(&g->lock);
        while (!g->stop) {
                int64_t next = sweep(g, rm_mono_ms());
                if (next < 0) {
                        pthread_cond_wait(&g->wake, &g->lock);
                        continue;
                }
                struct timespec at = {.tv_sec = next / 1000, .tv_nsec = (next % 1000) * 1000000};
                pthread_cond_timedwait(&g->wake, &g->lock, &at);
        }
        pthread_mutex_unlock(&g->lock);
        return NULL;
}

struct rm_conn_guard *rm__guard_new(int64_t timeout_ms, int64_t max_pending)
{
        struct rm_conn_guard *g = xzalloc(sizeof(*g));
        g->timeout_ms = timeout_ms;
        g->max_pending = max_pending;
        pthread_mutex_init(&g->lock, NULL);
        rm_cond_init_monotonic(&g->wake);
        if (pthread_create(&g->sweeper, NULL, sweeper_main, g) != 0)
                abort();
        return g;
}

void rm__guard_free(struct rm_conn_guard *g)
{
        if (g == NULL)
                return;
        pthread_mutex_lock(&g->lock);
        g->stop = true;
        pthread_cond_signal(&g->wake);
        pthread_mutex_unlock(&g->lock);
        pthread_join(g->sweeper, NULL);
        /* MHD has stopped and reported every connection closed: nothing is left. */
        pthread_cond_destroy(&g->wake);
        pthread_mutex_destroy(&g->lock);
        free(g);
}

void rm__guard_notify(void *cls, struct MHD_Connection *c, void **socket_context, int code)
{
        struct rm_conn_guard *g = cls;
        if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
                struct pending_conn *p = *socket_context;
                if (p == NULL)
                        return;
                pthread_mutex_lock(&g->lock);
                unlink_conn(g, p);
                pthread_mutex_unlock(&g->lock);
                free(p);
                *socket_context = NULL;
                return;
        }
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (info == NULL)
                return;
        struct pending_conn *p = xzalloc(sizeof(*p));
        p->fd = info->connect_fd;
        p->listed = true;
        *socket_context = p;
        pthread_mutex_lock(&g->lock);
        p->deadline_ms = rm_mono_ms() + g->timeout_ms;
        p->prev = g->tail;
        if (g->tail)
                g->tail->next = p;
        else
                g->head = p;
        g->tail = p;
        g->live++;
        /* Over the cap: the oldest waiting connection makes room for the new one. */
        for (struct pending_conn *q = g->head; q && g->live > g->max_pending; q = q->next)
                if (!q->dropped)
                        drop_conn(g, q);
        pthread_cond_signal(&g->wake); /* it may have had nothing to wait for */
        pthread_mutex_unlock(&g->lock);
}

void rm__guard_upgraded(struct rm_conn_guard *g, struct MHD_Connection *c)
{
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        if (info == NULL || info->socket_context == NULL)
                return;
        pthread_mutex_lock(&g->lock);
        unlink_conn(g, info->socket_context);
        pthread_mutex_unlock(&g->lock);
}
