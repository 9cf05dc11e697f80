#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "grpc_server.h"
#include "grpc_stream.h"
#include "remora/cleanup.h"
#include "remora/log.h"
#include "remora/xalloc.h"

enum tag_kind { TAG_NEW, TAG_SEND, TAG_STATUS, TAG_CLOSE };

/* Completion tags point at one of these; kind says which operation completed. */
struct tag {
        struct rm_cq_tag base;
        enum tag_kind kind;
        void *owner;
};

static void on_event(struct rm_cq_tag *t, bool ok);
#define TAG(kind, owner) ((struct tag){{on_event}, (kind), (owner)})

struct registered {
        struct rm_stream_method m;
        void *handle;
        struct rm_stream_pump *pump;
};

/* One posted request for a new call of a registered method. */
struct pending {
        struct tag tag;
        struct registered *r;
        grpc_call *call;
        gpr_timespec deadline;
        grpc_metadata_array md;
        grpc_byte_buffer *payload;
};

struct msg {
        struct msg *next;
        grpc_byte_buffer *bb;
};

struct rm_grpc_stream {
        struct rm_stream_pump *pump;
        grpc_call *call;
        pthread_mutex_t lock;
        struct msg *head, *tail;
        size_t queued;
        grpc_byte_buffer *in_flight;
        bool sending;        /* a SEND_MESSAGE batch is outstanding */
        bool initial_sent;   /* initial metadata went out */
        bool status_wanted;  /* end the call once the queue is empty */
        bool status_started; /* SEND_STATUS_FROM_SERVER is outstanding or done */
        bool gone;           /* the call is over for the client */
        bool finished;       /* the owner released it */
        grpc_status_code code;
        char *details;
        grpc_slice details_slice;
        int cancelled;
        int refs; /* the owner, the close watch, each outstanding batch */
        struct tag t_send, t_status, t_close;
        rm_stream_gone_fn on_gone;
        void *gone_data;
        struct rm_grpc_stream *prev, *next; /* the pump's list of open streams */
};

struct rm_stream_pump {
        grpc_server *server;
        grpc_completion_queue *cq; /* the server's, not ours */
        struct registered *methods;
        size_t n_methods;
        pthread_mutex_t lock; /* the open list and shutting_down */
        struct rm_grpc_stream *open;
        size_t n_open;
        bool shutting_down;
};

static void free_queue(struct rm_grpc_stream *s)
{
        while (s->head) {
                struct msg *m = s->head;
                s->head = m->next;
                grpc_byte_buffer_destroy(m->bb);
                free(m);
        }
        s->tail = NULL;
        s->queued = 0;
}

/* Drop one reference; the caller holds s->lock, which is released (and s freed) here. */
static void unref_unlock(struct rm_grpc_stream *s)
{
        bool last = --s->refs == 0;
        pthread_mutex_unlock(&s->lock);
        if (!last)
                return;
        struct rm_stream_pump *p = s->pump;
        pthread_mutex_lock(&p->lock);
        if (s->prev)
                s->prev->next = s->next;
        else
                p->open = s->next;
        if (s->next)
                s->next->prev = s->prev;
        p->n_open--;
        pthread_mutex_unlock(&p->lock);
        free_queue(s);
        if (s->in_flight)
                grpc_byte_buffer_destroy(s->in_flight);
        if (s->status_started)
                grpc_slice_unref(s->details_slice);
        free(s->details);
        grpc_call_unref(s->call);
        pthread_mutex_destroy(&s->lock);
        free(s);
}

static void add_initial_metadata(struct rm_grpc_stream *s, grpc_op *ops, size_t *n)
{
        if (s->initial_sent)
                return;
        ops[*n].op = GRPC_OP_SEND_INITIAL_METADATA;
        (*n)++;
        s->initial_sent = true;
}

/* Start sending the next queued message. Caller holds s->lock. */
static void send_next_locked(struct rm_grpc_stream *s)
{
        struct msg *m = s->head;
        s->head = m->next;
        if (s->head == NULL)
                s->tail = NULL;
        s->queued--;
        s->in_flight = m->bb;
        free(m);
        grpc_op ops[2];
        memset(ops, 0, sizeof(ops));
        size_t n = 0;
        add_initial_metadata(s, ops, &n);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = s->in_flight;
        if (grpc_call_start_batch(s->call, ops, n, &s->t_send, NULL) == GRPC_CALL_OK) {
                s->sending = true;
                s->refs++;
        } else {
                grpc_byte_buffer_destroy(s->in_flight);
                s->in_flight = NULL;
                s->gone = true;
        }
}

/* Send the final status. Caller holds s->lock; nothing may be in flight. */
static void send_status_locked(struct rm_grpc_stream *s)
{
        grpc_op ops[2];
        memset(ops, 0, sizeof(ops));
        size_t n = 0;
        add_initial_metadata(s, ops, &n);
        s->details_slice = grpc_slice_from_copied_string(s->details ? s->details : "");
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = s->code;
        ops[n++].data.send_status_from_server.status_details = &s->details_slice;
        s->status_started = true;
        if (grpc_call_start_batch(s->call, ops, n, &s->t_status, NULL) == GRPC_CALL_OK)
                s->refs++;
}

/* What to do next once nothing is in flight. Caller holds s->lock. */
static void pump_locked(struct rm_grpc_stream *s)
{
        if (s->sending || s->status_started || s->gone)
                return;
        /* The status goes after every queued message: a stream that ends right after
         * queueing its last messages (the Stream* calls) must not lose them. */
        if (s->head)
                send_next_locked(s);
        else if (s->status_wanted)
                send_status_locked(s);
}

static void want_status_locked(struct rm_grpc_stream *s, grpc_status_code code, const char *details)
{
        if (s->status_wanted)
                return;
        s->status_wanted = true;
        s->code = code;
        s->details = xstrdup(details);
}

void rm_grpc_stream_on_gone(struct rm_grpc_stream *s, rm_stream_gone_fn fn, void *data)
{
        pthread_mutex_lock(&s->lock);
        s->on_gone = fn;
        s->gone_data = data;
        pthread_mutex_unlock(&s->lock);
}

int rm_grpc_stream_send(struct rm_grpc_stream *s, const uint8_t *msg, size_t len)
{
        pthread_mutex_lock(&s->lock);
        if (s->gone || s->status_wanted) {
                pthread_mutex_unlock(&s->lock);
                return -1;
        }
        if (s->queued >= RM_STREAM_MAX_QUEUED) {
                /* The client is not reading: drop what waits and end the stream. */
                free_queue(s);
                cleanup_free char *why = xasprintf("the client fell %d messages behind; the "
                                                   "stream is closed, reconnect to resume",
                                                   RM_STREAM_MAX_QUEUED);
                want_status_locked(s, GRPC_STATUS_RESOURCE_EXHAUSTED, why);
                rm_log_warn("event stream closed: %s", why);
                pump_locked(s);
                pthread_mutex_unlock(&s->lock);
                return -1;
        }
        grpc_slice slice = grpc_slice_from_copied_buffer((const char *)msg, len);
        struct msg *m = xzalloc(sizeof(*m));
        m->bb = grpc_raw_byte_buffer_create(&slice, 1);
        grpc_slice_unref(slice);
        if (s->tail)
                s->tail->next = m;
        else
                s->head = m;
        s->tail = m;
        s->queued++;
        pump_locked(s);
        pthread_mutex_unlock(&s->lock);
        return 0;
}

void rm_grpc_stream_finish(struct rm_grpc_stream *s, const struct rm_error *err)
{
        pthread_mutex_lock(&s->lock);
        if (s->finished) {
                pthread_mutex_unlock(&s->lock);
                return;
        }
        s->finished = true;
        want_status_locked(s, err ? (grpc_status_code)err->code : GRPC_STATUS_OK,
                           err ? err->msg : "");
        pump_locked(s);
        unref_unlock(s);
}

/* ---- the pump ---- */

static void post_request(struct rm_stream_pump *p, struct registered *r)
{
        struct pending *pc = xzalloc(sizeof(*pc));
        pc->tag = TAG(TAG_NEW, pc);
        pc->r = r;
        grpc_metadata_array_init(&pc->md);
        if (grpc_server_request_registered_call(p->server, r->handle, &pc->call, &pc->deadline,
                                                &pc->md, &pc->payload, p->cq, p->cq,
                                                &pc->tag) != GRPC_CALL_OK) {
                grpc_metadata_array_destroy(&pc->md);
                free(pc);
        }
}

static void accept_call(struct rm_stream_pump *p, struct pending *pc)
{
        struct rm_grpc_stream *s = xzalloc(sizeof(*s));
        pthread_mutex_init(&s->lock, NULL);
        s->pump = p;
        s->call = pc->call;
        s->refs = 2; /* the owner and the close watch */
        s->t_send = TAG(TAG_SEND, s);
        s->t_status = TAG(TAG_STATUS, s);
        s->t_close = TAG(TAG_CLOSE, s);
        pthread_mutex_lock(&p->lock);
        s->next = p->open;
        if (p->open)
                p->open->prev = s;
        p->open = s;
        p->n_open++;
        pthread_mutex_unlock(&p->lock);

        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        op.data.recv_close_on_server.cancelled = &s->cancelled;
        if (grpc_call_start_batch(s->call, &op, 1, &s->t_close, NULL) != GRPC_CALL_OK) {
                pthread_mutex_lock(&s->lock);
                s->refs--; /* no close watch */
                s->gone = true;
                pthread_mutex_unlock(&s->lock);
        }

        struct rm_error *err = NULL;
        if (pc->payload == NULL) {
                rm_error_set(&err, RM_INVALID_ARGUMENT, "%s: the request carried no message",
                             pc->r->m.path);
        } else {
                grpc_slice in = rm__grpc_flatten(pc->payload);
                pc->r->m.open(pc->r->m.ctx, GRPC_SLICE_START_PTR(in), GRPC_SLICE_LENGTH(in), s,
                              &err);
                grpc_slice_unref(in);
        }
        if (err) {
                rm_log(err->code == RM_UNIMPLEMENTED ? RM_LOG_DEBUG : RM_LOG_INFO,
                       "%s failed: %s: %s", pc->r->m.path, rm_code_name(err->code), err->msg);
                rm_grpc_stream_finish(s, err);
                rm_error_free(err);
        }
}

static void on_close(struct rm_grpc_stream *s)
{
        pthread_mutex_lock(&s->lock);
        s->gone = true;
        free_queue(s);
        bool tell = !s->finished && s->on_gone;
        rm_stream_gone_fn fn = s->on_gone;
        void *data = s->gone_data;
        pthread_mutex_unlock(&s->lock);
        /* The owner's callback typically finishes the stream; call it unlocked. */
        if (tell)
                fn(data, s);
        pthread_mutex_lock(&s->lock);
        unref_unlock(s);
}

/* A completion of one of the pump's tags, on whichever poller took it. */
static void on_event(struct rm_cq_tag *base, bool ok)
{
        struct tag *t = (struct tag *)base;
        if (t->kind == TAG_NEW) {
                struct pending *pc = t->owner;
                struct rm_stream_pump *p = pc->r->pump;
                pthread_mutex_lock(&p->lock);
                bool down = p->shutting_down;
                pthread_mutex_unlock(&p->lock);
                if (ok && !down)
                        post_request(p, pc->r);
                if (ok)
                        accept_call(p, pc);
                else if (pc->call)
                        grpc_call_unref(pc->call);
                if (pc->payload)
                        grpc_byte_buffer_destroy(pc->payload);
                grpc_metadata_array_destroy(&pc->md);
                free(pc);
                return;
        }
        struct rm_grpc_stream *s = t->owner;
        if (t->kind == TAG_CLOSE) {
                on_close(s);
                return;
        }
        pthread_mutex_lock(&s->lock);
        if (t->kind == TAG_SEND) {
                s->sending = false;
                grpc_byte_buffer_destroy(s->in_flight);
                s->in_flight = NULL;
                if (!ok)
                        s->gone = true;
                pump_locked(s);
        }
        unref_unlock(s);
}

struct rm_stream_pump *rm_stream_pump_new(grpc_server *server, grpc_completion_queue *cq,
                                          const struct rm_stream_method *methods, size_t n)
{
        struct rm_stream_pump *p = xzalloc(sizeof(*p));
        pthread_mutex_init(&p->lock, NULL);
        p->server = server;
        p->cq = cq;
        p->methods = xzalloc(sizeof(*p->methods) * (n ? n : 1));
        p->n_methods = n;
        for (size_t i = 0; i < n; i++) {
                p->methods[i].m = methods[i];
                p->methods[i].pump = p;
                p->methods[i].handle = grpc_server_register_method(
                    server, methods[i].path, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        }
        return p;
}

void rm_stream_pump_start(struct rm_stream_pump *p)
{
        for (size_t i = 0; i < p->n_methods; i++)
                post_request(p, &p->methods[i]);
}

void rm_stream_pump_cancel_all(struct rm_stream_pump *p)
{
        if (p == NULL)
                return;
        pthread_mutex_lock(&p->lock);
        p->shutting_down = true;
        for (struct rm_grpc_stream *s = p->open; s; s = s->next)
                grpc_call_cancel_with_status(s->call, GRPC_STATUS_UNAVAILABLE,
                                             "remorad is shutting down", NULL);
        pthread_mutex_unlock(&p->lock);
}

void rm_stream_pump_free(struct rm_stream_pump *p)
{
        if (p == NULL)
                return;
        if (p->n_open)
                rm_log_warn("%zu event streams were still held at shutdown", p->n_open);
        free(p->methods);
        pthread_mutex_destroy(&p->lock);
        free(p);
}

size_t rm_stream_pump_open_count(struct rm_stream_pump *p)
{
        pthread_mutex_lock(&p->lock);
        size_t n = p->n_open;
        pthread_mutex_unlock(&p->lock);
        return n;
}
