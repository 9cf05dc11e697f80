/* The gRPC C core front end: a unix-socket HTTP/2 server, asynchronous from end to end.
 * Every CRI method is registered with the server, so a new call arrives with its request
 * already read. A few threads each poll a completion queue of their own: they accept
 * calls, serve the quick ones inline (status and list calls, from memory) and hand the
 * rest to an elastic pool (pool.h); responses are sent with one batch (initial metadata,
 * message and status) and their completion comes back to the call's queue, so no thread
 * that polls a queue ever waits for a handler. Each call owns a cancellation token, set
 * when the client cancels or its deadline passes. It knows bytes and method names only;
 * decoding and dispatch live in dispatch.c. */
#ifndef REMORA_GRPC_SERVER_H
#define REMORA_GRPC_SERVER_H

#include <grpc/grpc.h>
#include <stddef.h>
#include <stdint.h>

#include "dispatch.h"
#include "grpc_stream.h"
#include "remora/error.h"
#include "remora/metrics.h"

struct rm_call;

/* Threads the elastic pool may grow to, and how long one stays idle before it retires. */
#define RM_POOL_MAX_THREADS 512
#define RM_POOL_IDLE_MS     10000

/* Serve one unary call: method is the full path ("/runtime.v1.RuntimeService/Version"),
 * in the request bytes. On success *out (malloc'd, may be empty) is the response. call is
 * the front end's per-call state (dispatch.h), zeroed apart from its cancel token; its
 * after_send, when the handler set it, is called once the response's send completed. */
typedef int (*rm_dispatch_fn)(void *ctx, struct rm_call *call, const char *method,
                              const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len,
                              struct rm_error **err);

/* One registered unary method. */
struct rm_grpc_method {
        const char *path;
        enum rm_call_kind kind;
};

struct rm_grpc_server;

/* Listen on the unix socket at path (mode 0660) with `pollers` completion-queue threads,
 * each polling without sleeping for poll_spin_us after handling a completion (0: never).
 * Calls of methods go to dispatch; unknown methods answer UNIMPLEMENTED; calls of the
 * n_streams server-streaming methods go to their open functions instead. */
struct rm_grpc_server *rm_grpc_server_start(const char *path, int pollers, int poll_spin_us,
                                            int max_message_bytes,
                                            const struct rm_grpc_method *methods, size_t n_methods,
                                            rm_dispatch_fn dispatch, void *ctx,
                                            const struct rm_stream_method *streams,
                                            size_t n_streams, struct rm_error **err);

/* Copy a (possibly compressed, possibly fragmented) message into one slice. */
grpc_slice rm__grpc_flatten(grpc_byte_buffer *bb);

/* What the front end holds now (Status verbose info; tests). */
struct rm_grpc_load {
        size_t in_flight;    /* calls accepted and not yet finished */
        size_t cancelled;    /* of those, calls whose client cancelled or passed its deadline */
        size_t pool_threads; /* the elastic pool's threads, */
        size_t pool_busy;    /* and how many of them run a call */
};
void rm_grpc_server_load(struct rm_grpc_server *srv, struct rm_grpc_load *load);

/* How long calls waited from their arrival to their handler starting (for /metrics):
 * next to nothing for quick calls, a pool thread's pick-up for the others. */
const struct rm_histo *rm_grpc_server_wait(const struct rm_grpc_server *srv);

/* Stop accepting, wait for calls in flight (cancelling them after a grace period), stop
 * the threads and free everything. */
void rm_grpc_server_stop(struct rm_grpc_server *srv);

#endif
