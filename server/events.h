/* The container event hub behind GetContainerEvents. */
#ifndef REMORA_EVENTS_H
#define REMORA_EVENTS_H

#include "api.pb-c.h"
#include "grpc_stream.h"

struct rm_events;

struct rm_events *rm_events_new(void);
/* Free the hub once the gRPC server (and its stream thread) has stopped. */
void rm_events_free(struct rm_events *h);

/* rm_stream_open_fn for GetContainerEvents (ctx is the hub). */
int rm_events_open(void *ctx, const uint8_t *in, size_t in_len, struct rm_grpc_stream *stream,
                   struct rm_error **err);

/* Send ev to every subscriber, in the order of calls. */
void rm_events_publish(struct rm_events *h, const Runtime__V1__ContainerEventResponse *ev);

size_t rm_events_subscribers(struct rm_events *h);

#endif
