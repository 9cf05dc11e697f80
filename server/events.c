/* GetContainerEvents: every subscriber gets every container event, in order. A slow
 * subscriber is cut off by its own stream's bounded queue, never by blocking here. */
#include <pthread.h>
#include <stdlib.h>

#include "api.pb-c.h"
#include "events.h"
#include "remora/cleanup.h"
#include "remora/log.h"
#include "remora/xalloc.h"

struct subscriber {
        struct rm_events *hub;
        struct rm_grpc_stream *stream;
        struct subscriber *next;
};

struct rm_events {
        pthread_mutex_t lock; /* the list; also orders publishes */
        struct subscriber *subs;
        size_t n;
};

struct rm_events *rm_events_new(void)
{
        struct rm_events *h = xzalloc(sizeof(*h));
        pthread_mutex_init(&h->lock, NULL);
        return h;
}

/* Unlink sub (caller holds the lock) and end its stream. */
static void drop_locked(struct rm_events *h, struct subscriber *sub)
{
        for (struct subscriber **pp = &h->subs; *pp; pp = &(*pp)->next) {
                if (*pp == sub) {
                        *pp = sub->next;
                        h->n--;
                        break;
                }
        }
        rm_grpc_stream_finish(sub->stream, NULL);
        free(sub);
}

void rm_events_free(struct rm_events *h)
{
        if (h == NULL)
                return;
        pthread_mutex_lock(&h->lock);
        while (h->subs)
                drop_locked(h, h->subs);
        pthread_mutex_unlock(&h->lock);
        pthread_mutex_destroy(&h->lock);
        free(h);
}

static void gone(void *data, struct rm_grpc_stream *stream)
{
        (void)stream;
        struct subscriber *sub = data;
        struct rm_events *h = sub->hub;
        pthread_mutex_lock(&h->lock);
        drop_locked(h, sub);
        pthread_mutex_unlock(&h->lock);
}

int rm_events_open(void *ctx, const uint8_t *in, size_t in_len, struct rm_grpc_stream *stream,
                   struct rm_error **err)
{
        struct rm_events *h = ctx;
        Runtime__V1__GetEventsRequest *req =
            runtime__v1__get_events_request__unpack(NULL, in_len, in);
        if (req == NULL)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "the request (%zu bytes) does not decode as "
                                    "runtime.v1.GetEventsRequest",
                                    in_len);
        runtime__v1__get_events_request__free_unpacked(req, NULL);
        struct subscriber *sub = xzalloc(sizeof(*sub));
        sub->hub = h;
        sub->stream = stream;
        pthread_mutex_lock(&h->lock);
        sub->next = h->subs;
        h->subs = sub;
        h->n++;
        rm_grpc_stream_on_gone(stream, gone, sub);
        pthread_mutex_unlock(&h->lock);
        rm_log_debug("container event subscriber joined (%zu now)", h->n);
        return 0;
}

void rm_events_publish(struct rm_events *h, const Runtime__V1__ContainerEventResponse *ev)
{
        size_t len = runtime__v1__container_event_response__get_packed_size(ev);
        cleanup_free uint8_t *buf = xmalloc(len ? len : 1);
        runtime__v1__container_event_response__pack(ev, buf);
        /* A stream that refuses (overflowed or ended) is not dropped here: its gone
         * callback does that, always, once the call is over, so a subscriber is freed in
         * exactly one place. */
        pthread_mutex_lock(&h->lock);
        for (struct subscriber *sub = h->subs; sub; sub = sub->next)
                rm_grpc_stream_send(sub->stream, buf, len);
        pthread_mutex_unlock(&h->lock);
}

size_t rm_events_subscribers(struct rm_events *h)
{
        pthread_mutex_lock(&h->lock);
        size_t n = h->n;
        pthread_mutex_unlock(&h->lock);
        return n;
}
