/* The Stream* calls of CRI v1 (StreamPodSandboxes, StreamContainers, StreamContainerStats,
 * StreamPodSandboxStats, StreamPodSandboxMetrics, StreamImages): each runs its List
 * call's own handler from the method table and sends the result as a server stream in
 * batches of at most RM_LIST_BATCH_BYTES, so a list past the 16 MiB message limit still
 * arrives whole. There is no second implementation of any list. */
#ifndef REMORA_LIST_STREAM_H
#define REMORA_LIST_STREAM_H

#include <stddef.h>

#include "dispatch.h"
#include "grpc_stream.h"

/* A batch stays this small (unless one item alone is bigger): far below any message
 * limit a client sets, and small enough to start arriving while the rest is packed. */
#define RM_LIST_BATCH_BYTES (1024 * 1024)

struct rm_list_streams;

/* Pair every Stream method with its List method. INTERNAL when a pair's requests or
 * responses do not have the same shape (the Stream request is decoded as the List one). */
struct rm_list_streams *rm_list_streams_new(struct rm_dispatch *d, struct rm_daemon *daemon,
                                            struct rm_error **err);
/* Refuse new calls (UNAVAILABLE) and wait for those still producing, which end on their
 * own: before the gRPC server stops, as each ends its stream through the stream pump. */
void rm_list_streams_close(struct rm_list_streams *ls);
/* Close (if not yet) and free. */
void rm_list_streams_free(struct rm_list_streams *ls);

/* The stream methods to register with the gRPC server (and mark in the dispatch table). */
const struct rm_stream_method *rm_list_streams_methods(const struct rm_list_streams *ls, size_t *n);

/* Split list (an encoded List response: entries of its one repeated field) into Stream
 * responses of at most max_bytes each (an entry larger than that goes alone), and hand
 * each to send. 0 when all went, -1 when send failed (the client left), -2 when list is
 * not such an encoding. For the unit tests as much as for the calls. */
int rm_list_stream_batches(const uint8_t *list, size_t len, size_t max_bytes,
                           int (*send)(void *ctx, const uint8_t *msg, size_t len), void *ctx);

#endif
