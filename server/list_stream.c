/* Stream* calls: the List call's handler, its response cut into batches. A call runs on
 * a thread of its own (the stream pump serves every stream and must not wait on stats
 * reads), which the daemon waits for before it frees the managers it reads. */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "dispatch.h"
#include "list_stream.h"
#include "remora/cleanup.h"
#include "remora/log.h"
#include "remora/metrics.h"
#include "remora/pblist.h"
#include "remora/xalloc.h"

#define RUNTIME "/runtime.v1.RuntimeService/"
#define IMAGE   "/runtime.v1.ImageService/"

/* Each Stream method and the List method whose filter and items it shares. */
static const struct {
        const char *stream, *list;
} pairs[] = {
    {RUNTIME "StreamPodSandboxes", RUNTIME "ListPodSandbox"},
    {RUNTIME "StreamContainers", RUNTIME "ListContainers"},
    {RUNTIME "StreamContainerStats", RUNTIME "ListContainerStats"},
    {RUNTIME "StreamPodSandboxStats", RUNTIME "ListPodSandboxStats"},
    {RUNTIME "StreamPodSandboxMetrics", RUNTIME "ListPodSandboxMetrics"},
    {IMAGE "StreamImages", IMAGE "ListImages"},
};
#define N_PAIRS (sizeof(pairs) / sizeof(pairs[0]))

struct list_method {
        struct rm_list_streams *ls;
        const char *path; /* the Stream method */
        rm_handler_fn fn; /* the List method's handler */
        const ProtobufCMessageDescriptor *list_in;
};

struct rm_list_streams {
        struct rm_daemon *daemon;
        struct list_method lm[N_PAIRS];
        struct rm_stream_method methods[N_PAIRS];
        size_t n;
        pthread_mutex_t lock;
        pthread_cond_t idle;
        size_t active; /* calls still producing */
        bool closing;  /* no new calls: the daemon is stopping */
};

struct job {
        struct list_method *lm;
        struct rm_grpc_stream *stream;
        uint8_t *in;
        size_t in_len;
};

/* Two messages with the same fields (numbers, kinds, message types), so that the bytes
 * of one decode as the other. */
static bool same_fields(const ProtobufCMessageDescriptor *a, const ProtobufCMessageDescriptor *b)
{
        if (a->n_fields != b->n_fields)
                return false;
        for (unsigned i = 0; i < a->n_fields; i++) {
                const ProtobufCFieldDescriptor *x = &a->fields[i], *y = &b->fields[i];
                if (x->id != y->id || x->label != y->label || x->type != y->type ||
                    x->descriptor != y->descriptor)
                        return false;
        }
        return true;
}

/* A list response: exactly one field, a repeated message. */
static bool one_list(const ProtobufCMessageDescriptor *d)
{
        return d->n_fields == 1 && d->fields[0].label == PROTOBUF_C_LABEL_REPEATED &&
               d->fields[0].type == PROTOBUF_C_TYPE_MESSAGE;
}

int rm_list_stream_batches(const uint8_t *list, size_t len, size_t max_bytes,
                           int (*send)(void *ctx, const uint8_t *msg, size_t len), void *ctx)
{
        const uint8_t *end = list + len, *start = list, *p = list;
        size_t entry = 0;
        int more;
        /* A Stream response has the List response's one field, so a run of its entries
         * is a Stream response as it stands. */
        while ((more = rm_pb_list_next(&p, end, &entry)) == 1) {
                size_t batch = (size_t)(p - start);
                if (batch > max_bytes && batch > entry) {
                        /* This entry starts the next batch. */
                        if (send(ctx, start, batch - entry) < 0)
                                return -1;
                        start = p - entry;
                }
        }
        if (more < 0)
                return -2;
        if (p > start && send(ctx, start, (size_t)(p - start)) < 0)
                return -1;
        return 0;
}

static int send_to_stream(void *ctx, const uint8_t *msg, size_t len)
{
        return rm_grpc_stream_send(ctx, msg, len);
}

static void *job_main(void *arg)
{
        struct job *j = arg;
        struct list_method *lm = j->lm;
        struct rm_error *err = NULL;
        uint64_t t0 = rm_metrics_now_ns();
        ProtobufCMessage *req = protobuf_c_message_unpack(lm->list_in, NULL, j->in_len, j->in);
        if (req == NULL) {
                rm_error_set(&err, RM_INVALID_ARGUMENT,
                             "%s: the request (%zu bytes) does not decode", lm->path, j->in_len);
        } else {
                struct rm_call call = {
                    .daemon = lm->ls->daemon, .arena = rm_arena_new(), .method = lm->path};
                ProtobufCMessage *resp = NULL;
                if (lm->fn(&call, req, &resp, &err) == 0 && (resp || call.raw)) {
                        if (resp) {
                                call.raw_len = protobuf_c_message_get_packed_size(resp);
                                call.raw = xmalloc(call.raw_len ? call.raw_len : 1);
                                protobuf_c_message_pack(resp, call.raw);
                        }
                        if (rm_list_stream_batches(call.raw, call.raw_len, RM_LIST_BATCH_BYTES,
                                                   send_to_stream, j->stream) == -2)
                                rm_error_set(&err, RM_INTERNAL,
                                             "%s: the list did not encode as its items", lm->path);
                }
                free(call.raw);
                protobuf_c_message_free_unpacked(req, NULL);
                rm_arena_free(call.arena);
        }
        if (err)
                rm_log(err->code == RM_INVALID_ARGUMENT ? RM_LOG_INFO : RM_LOG_WARN,
                       "%s failed: %s: %s", lm->path, rm_code_name(err->code), err->msg);
        /* Sends what is queued, then the status; a client already gone is fine. */
        rm_grpc_stream_finish(j->stream, err);
        if (lm->ls->daemon->dispatch)
                rm_dispatch_record(lm->ls->daemon->dispatch, lm->path, err ? (int)err->code : 0,
                                   rm_metrics_now_ns() - t0);
        rm_error_free(err);
        struct rm_list_streams *ls = lm->ls;
        free(j->in);
        free(j);
        pthread_mutex_lock(&ls->lock);
        if (--ls->active == 0)
                pthread_cond_broadcast(&ls->idle);
        pthread_mutex_unlock(&ls->lock);
        return NULL;
}

static int open_stream(void *ctx, const uint8_t *in, size_t in_len, struct rm_grpc_stream *stream,
                       struct rm_error **err)
{
        struct list_method *lm = ctx;
        struct rm_list_streams *ls = lm->ls;
        struct job *j = xzalloc(sizeof(*j));
        j->lm = lm;
        j->stream = stream;
        j->in = xmalloc(in_len ? in_len : 1);
        memcpy(j->in, in, in_len);
        j->in_len = in_len;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_mutex_lock(&ls->lock);
        bool closing = ls->closing;
        ls->active += !closing;
        pthread_mutex_unlock(&ls->lock);
        if (closing) {
                pthread_attr_destroy(&attr);
                free(j->in);
                free(j);
                return rm_error_set(err, RM_UNAVAILABLE, "%s: remorad is shutting down", lm->path);
        }
        pthread_t t;
        int rc = pthread_create(&t, &attr, job_main, j);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
                pthread_mutex_lock(&ls->lock);
                ls->active--;
                pthread_mutex_unlock(&ls->lock);
                free(j->in);
                free(j);
                rm_error_sys_errno(err, rc, "%s: start a thread for the call", lm->path);
                (*err)->code = RM_UNAVAILABLE;
                return -1;
        }
        return 0;
}

struct rm_list_streams *rm_list_streams_new(struct rm_dispatch *d, struct rm_daemon *daemon,
                                            struct rm_error **err)
{
        struct rm_list_streams *ls = xzalloc(sizeof(*ls));
        ls->daemon = daemon;
        pthread_mutex_init(&ls->lock, NULL);
        pthread_cond_init(&ls->idle, NULL);
        for (size_t i = 0; i < N_PAIRS; i++) {
                const ProtobufCMessageDescriptor *list_in, *list_out, *stream_in;
                rm_handler_fn fn = rm_dispatch_handler(d, pairs[i].list, &list_in, &list_out);
                const ProtobufCMessageDescriptor *stream_out =
                    rm_dispatch_output(d, pairs[i].stream, &stream_in);
                if (fn == NULL)
                        continue; /* no List call, no Stream call: both UNIMPLEMENTED */
                if (stream_out == NULL || !same_fields(stream_in, list_in) || !one_list(list_out) ||
                    !one_list(stream_out) ||
                    list_out->fields[0].descriptor != stream_out->fields[0].descriptor) {
                        rm_error_set(err, RM_INTERNAL, "%s does not have the shape of %s",
                                     pairs[i].stream, pairs[i].list);
                        rm_list_streams_free(ls);
                        return NULL;
                }
                struct list_method *lm = &ls->lm[ls->n];
                *lm = (struct list_method){ls, pairs[i].stream, fn, list_in};
                ls->methods[ls->n] = (struct rm_stream_method){pairs[i].stream, open_stream, lm};
                ls->n++;
        }
        return ls;
}

void rm_list_streams_close(struct rm_list_streams *ls)
{
        if (ls == NULL)
                return;
        pthread_mutex_lock(&ls->lock);
        ls->closing = true;
        while (ls->active > 0)
                pthread_cond_wait(&ls->idle, &ls->lock);
        pthread_mutex_unlock(&ls->lock);
}

void rm_list_streams_free(struct rm_list_streams *ls)
{
        if (ls == NULL)
                return;
        rm_list_streams_close(ls);
        pthread_cond_destroy(&ls->idle);
        pthread_mutex_destroy(&ls->lock);
        free(ls);
}

const struct rm_stream_method *rm_list_streams_methods(const struct rm_list_streams *ls, size_t *n)
{
        *n = ls->n;
        return ls->methods;
}
