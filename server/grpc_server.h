/* The gRPC C core front end: a unix-socket HTTP/2 server and a pool of worker threads,
 * each with its own completion queue, each running a call to completion. It knows bytes
 * and method names only; decoding and dispatch live in dispatch.c. */
#ifndef REMORA_GRPC_SERVER_H
#define REMORA_GRPC_SERVER_H

#include <grpc/grpc.h>
#include <stddef.h>
#include <stdint.h>

#include "grpc_stream.h"
#include "remora/error.h"

struct rm_call;

/* Serve one unary call: method is the full path ("/runtime.v1.RuntimeService/Version"),
 * in the request bytes. On success *out (malloc'd, may be empty) is the response. call is
 * the front end's per-call state (dispatch.h); its after_send, when the handler set it,
 * is called once the response's send completed. */
typedef int (*rm_dispatch_fn)(void *ctx, struct rm_call *call, const char *method,
                              const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len,
                              struct rm_error **err);

struct rm_grpc_server;

/* Listen on the unix socket at path (mode 0660) and start workers threads. Calls of
 * the n_streams server-streaming methods go to their open functions instead. */
struct rm_grpc_server *rm_grpc_server_start(const char *path, int workers, int max_message_bytes,
                                            rm_dispatch_fn dispatch, void *ctx,
                                            const struct rm_stream_method *streams,
                                            size_t n_streams, struct rm_error **err);

/* Copy a (possibly compressed, possibly fragmented) message into one slice. */
grpc_slice rm__grpc_flatten(grpc_byte_buffer *bb);

/* Stop accepting, wait for calls in flight, join the workers and free everything. */
void rm_grpc_server_stop(struct rm_grpc_server *srv);

#endif
