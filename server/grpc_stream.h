/* Server-streaming calls (GetContainerEvents, the Stream* lists): registered with the
 * gRPC server on the unary calls' completion queue, so the same pollers see their
 * completions (one queue: a completion never has to wake another thread to be taken). An
 * open stream holds no thread. Messages are queued per stream and sent one at a time; a
 * stream whose queue overflows ends with RESOURCE_EXHAUSTED. */
#ifndef REMORA_GRPC_STREAM_H
#define REMORA_GRPC_STREAM_H

#include <grpc/grpc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "remora/error.h"

/* Messages a stream may have waiting before its client counts as too slow. */
#define RM_STREAM_MAX_QUEUED 1024

struct rm_grpc_stream;

/* A tag on the server's completion queue: the poller that takes the completion calls fn
 * with its result. Every tag the front end posts starts with one. */
struct rm_cq_tag {
        void (*fn)(struct rm_cq_tag *t, bool ok);
};

/* Called on a poller thread (it must not block) when a client opens a stream, with its request. On
 * success the callee owns the stream: it sends with rm_grpc_stream_send and ends it with
 * rm_grpc_stream_finish (exactly once). On failure the call ends with *err's status. */
typedef int (*rm_stream_open_fn)(void *ctx, const uint8_t *in, size_t in_len,
                                 struct rm_grpc_stream *stream, struct rm_error **err);

/* Called on a poller thread, once, when the client has gone (cancelled, disconnected, or
 * the stream ended for overflow): the owner should drop it and call
 * rm_grpc_stream_finish. */
typedef void (*rm_stream_gone_fn)(void *data, struct rm_grpc_stream *stream);

struct rm_stream_method {
        const char *path; /* "/runtime.v1.RuntimeService/GetContainerEvents" */
        rm_stream_open_fn open;
        void *ctx;
};

void rm_grpc_stream_on_gone(struct rm_grpc_stream *s, rm_stream_gone_fn fn, void *data);

/* Queue one message (the bytes are copied). -1 once the stream has ended or overflowed:
 * the owner should stop sending and finish it. Safe from any thread. */
int rm_grpc_stream_send(struct rm_grpc_stream *s, const uint8_t *msg, size_t len);

/* End the stream with OK (err NULL) or err's status, after the queued messages, and
 * release the owner's hold on it. */
void rm_grpc_stream_finish(struct rm_grpc_stream *s, const struct rm_error *err);

struct rm_stream_pump;

/* Register methods (before grpc_server_start); their calls come to cq, whose pollers
 * dispatch rm_cq_tag completions. */
struct rm_stream_pump *rm_stream_pump_new(grpc_server *server, grpc_completion_queue *cq,
                                          const struct rm_stream_method *methods, size_t n);
/* After grpc_server_start: post the first requests. */
void rm_stream_pump_start(struct rm_stream_pump *p);
/* During shutdown: end every open stream with UNAVAILABLE so the server can finish. */
void rm_stream_pump_cancel_all(struct rm_stream_pump *p);
/* After the server has shut down and its queue's pollers have stopped: free. */
void rm_stream_pump_free(struct rm_stream_pump *p);

/* How many streams are open (for tests and Status). */
size_t rm_stream_pump_open_count(struct rm_stream_pump *p);

#endif
