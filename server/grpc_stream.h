/* Server-streaming calls (GetContainerEvents): registered with the gRPC server so their
 * calls bind to a completion queue of their own, served by one pump thread, never by a
 * worker, so an open stream holds no worker. Messages are queued per stream and sent one
 * at a time; a stream whose queue overflows ends with RESOURCE_EXHAUSTED. */
#ifndef REMORA_GRPC_STREAM_H
#define REMORA_GRPC_STREAM_H

#include <grpc/grpc.h>
#include <stddef.h>
#include <stdint.h>

#include "remora/error.h"

/* Messages a stream may have waiting before its client counts as too slow. */
#define RM_STREAM_MAX_QUEUED 1024

struct rm_grpc_stream;

/* Called on the pump thread when a client opens a stream, with its request. On success
 * the callee owns the stream: it sends with rm_grpc_stream_send and ends it with
 * rm_grpc_stream_finish (exactly once). On failure the call ends with *err's status. */
typedef int (*rm_stream_open_fn)(void *ctx, const uint8_t *in, size_t in_len,
                                 struct rm_grpc_stream *stream, struct rm_error **err);

/* Called on the pump thread, once, when the client has gone (cancelled, disconnected, or
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

/* Register methods (before grpc_server_start) and the pump's completion queue. */
struct rm_stream_pump *rm_stream_pump_new(grpc_server *server,
                                          const struct rm_stream_method *methods, size_t n);
/* After grpc_server_start: post the first requests and start the pump thread. */
int rm_stream_pump_start(struct rm_stream_pump *p, struct rm_error **err);
/* During shutdown: end every open stream with UNAVAILABLE so the server can finish. */
void rm_stream_pump_cancel_all(struct rm_stream_pump *p);
/* After the server has shut down: stop the thread and free. */
void rm_stream_pump_free(struct rm_stream_pump *p);

/* How many streams are open (for tests and Status). */
size_t rm_stream_pump_open_count(struct rm_stream_pump *p);

#endif
