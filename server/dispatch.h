/* Method table and protobuf-c glue: bytes in, a typed handler, bytes out. The table is
 * built from protoc-c's service descriptors, so it lists every RPC of RuntimeService and
 * ImageService by construction; methods without a handler answer UNIMPLEMENTED. */
#ifndef REMORA_DISPATCH_H
#define REMORA_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <protobuf-c/protobuf-c.h>

#include "remora/arena.h"
#include "remora/cancel.h"
#include "remora/error.h"

struct rm_daemon;

/* What a handler gets for one call. The front end owns it (zeroed, cancel set), the
 * dispatcher fills in daemon, arena and method. Build the response from the arena; it is
 * freed after the response is encoded. */
struct rm_call {
        struct rm_daemon *daemon;
        struct rm_arena *arena;
        const char *method;
        /* Set when the client cancels or its deadline passes; NULL where the front end
         * gives none (and for RM_CALL_PROMISE methods, which finish what they started). */
        const struct rm_cancel *cancel;
        /* A handler that must know whether its answer reached the client sets these (the
         * argument malloc'd or owned elsewhere, never in the arena). The front end calls
         * after_send exactly once, after the send of the response (or of the error)
         * completed: delivered is true only when the handler succeeded, the send
         * succeeded, the call was not cancelled and its deadline had not passed (false
         * also when the call is dropped unsent). On a pool thread for pool methods, on
         * the polling thread for RM_CALL_QUICK ones. */
        void (*after_send)(void *arg, bool delivered);
        void *after_send_arg;
        /* A handler may answer with bytes it encoded itself (malloc'd, the response
         * message's encoding, e.g. a list from rm_pb_packed items): it sets these and
         * leaves *resp NULL. */
        uint8_t *raw;
        size_t raw_len;
};

typedef int (*rm_handler_fn)(struct rm_call *call, const ProtobufCMessage *req,
                             ProtobufCMessage **resp, struct rm_error **err);

/* How the front end runs a method's calls. */
enum rm_call_kind {
        /* On the elastic pool (may block: runc, exec, pulls, CNI, disk walks). A call
         * whose client gave up before it started is answered CANCELLED unrun. */
        RM_CALL_POOL = 0,
        /* Inline on the thread that polls the completion queue: memory only, short
         * locks, never a process, a network round trip or a wait. */
        RM_CALL_QUICK,
        /* On the pool, and always run to the end (StopContainer, StopPodSandbox: kubelet
         * relies on the stop happening even when it stopped waiting); cancel is NULL. */
        RM_CALL_PROMISE,
};

struct rm_handler_entry {
        const char *service; /* "runtime.v1.RuntimeService" */
        const char *method;  /* "Version" */
        rm_handler_fn fn;
        enum rm_call_kind kind;
};

/* The handlers remorad serves; ends with an entry whose fn is NULL. */
extern const struct rm_handler_entry rm_handlers[];

/* Methods remorad deliberately does not implement, with the reason UNIMPLEMENTED gives;
 * ends with an entry whose method is NULL. */
struct rm_unimplemented_entry {
        const char *service;
        const char *method;
        const char *why;
};
extern const struct rm_unimplemented_entry rm_unimplemented[];

struct rm_dispatch;

/* Build the table for both CRI services. A handler naming a method the proto does not
 * have is INTERNAL (a programming error caught at start-up). */
struct rm_dispatch *rm_dispatch_new(const struct rm_handler_entry *handlers,
                                    struct rm_daemon *daemon, struct rm_error **err);
void rm_dispatch_free(struct rm_dispatch *d);

/* Number of RPCs in the table, and how many of them are served (a unary handler, or
 * marked as served by the stream front end). */
size_t rm_dispatch_count(const struct rm_dispatch *d, size_t *implemented);

/* The call-path families of /metrics: remora_cri_calls_total, ..._call_duration_seconds
 * and ..._calls_in_flight. */
void rm_dispatch_metrics_write(struct rm_dispatch *d, FILE *out);

/* Count a call of path that was served outside rm_dispatch_call (the Stream* calls):
 * its gRPC status code and how long it took. */
void rm_dispatch_record(struct rm_dispatch *d, const char *path, int code, uint64_t ns);

/* Calls of one method (its full path) being handled now. */
int rm_dispatch_in_flight(struct rm_dispatch *d, const char *method);

/* Give each listed method's UNIMPLEMENTED answer its reason. INTERNAL for a method CRI v1
 * does not have. */
int rm_dispatch_explain(struct rm_dispatch *d, const struct rm_unimplemented_entry *list,
                        struct rm_error **err);

/* Note that the server-streaming method at path ("/runtime.v1.RuntimeService/X") is
 * served by the stream front end. INTERNAL when CRI v1 has no such method. */
int rm_dispatch_mark_streamed(struct rm_dispatch *d, const char *path, struct rm_error **err);

/* The unary handler of path with its request and response types, for the stream calls
 * that share a List call's implementation; NULL when path has none. */
rm_handler_fn rm_dispatch_handler(const struct rm_dispatch *d, const char *path,
                                  const ProtobufCMessageDescriptor **input,
                                  const ProtobufCMessageDescriptor **output);

/* The response type of path (any method of the two services), NULL when unknown. */
const ProtobufCMessageDescriptor *rm_dispatch_output(const struct rm_dispatch *d, const char *path,
                                                     const ProtobufCMessageDescriptor **input);

/* The i-th RPC's path ("/runtime.v1.RuntimeService/Version") and how to run it
 * (i < rm_dispatch_count). Methods without a handler are RM_CALL_QUICK. */
const char *rm_dispatch_method(const struct rm_dispatch *d, size_t i, enum rm_call_kind *kind);

/* rm_dispatch_fn for the gRPC front end (ctx is the struct rm_dispatch; call is the
 * front end's, zeroed apart from cancel, which is dropped for RM_CALL_PROMISE methods).
 * Unknown or unimplemented method: UNIMPLEMENTED naming it; undecodable request:
 * INVALID_ARGUMENT. */
int rm_dispatch_call(void *ctx, struct rm_call *call, const char *method, const uint8_t *in,
                     size_t in_len, uint8_t **out, size_t *out_len, struct rm_error **err);

#endif
