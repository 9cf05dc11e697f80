/* Method table and protobuf-c glue: bytes in, a typed handler, bytes out. The table is
 * built from protoc-c's service descriptors, so it lists every RPC of RuntimeService and
 * ImageService by construction; methods without a handler answer UNIMPLEMENTED. */
#ifndef REMORA_DISPATCH_H
#define REMORA_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "remora/arena.h"
#include "remora/cancel.h"
#include "remora/error.h"

struct rm_daemon;

/* What a handler gets for one call. Build the response from the arena; it is freed
 * after the response is encoded. */
struct rm_call {
        struct rm_daemon *daemon;
        struct rm_arena *arena;
        const char *method;
        /* Set when the client cancels or its deadline passes; NULL where the front end
         * gives none (and for RM_CALL_PROMISE methods, which finish what they started). */
        const struct rm_cancel *cancel;
        /* Optional, set by the handler: called once, after the response (or error status)
         * has been sent, with delivered = the send succeeded and the client had neither
         * cancelled nor passed its deadline; with false if the call is dropped unsent.
         * Runs on a pool thread for pool methods, inline for RM_CALL_QUICK ones. Whatever
         * after_send_arg points to must outlive the call (not the arena). */
        void (*after_send)(void *arg, bool delivered);
        void *after_send_arg;
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

struct rm_dispatch;

/* Build the table for both CRI services. A handler naming a method the proto does not
 * have is INTERNAL (a programming error caught at start-up). */
struct rm_dispatch *rm_dispatch_new(const struct rm_handler_entry *handlers,
                                    struct rm_daemon *daemon, struct rm_error **err);
void rm_dispatch_free(struct rm_dispatch *d);

/* Number of RPCs in the table, and how many of them have a handler. */
size_t rm_dispatch_count(const struct rm_dispatch *d, size_t *implemented);

/* The i-th RPC's path ("/runtime.v1.RuntimeService/Version") and how to run it
 * (i < rm_dispatch_count). Methods without a handler are RM_CALL_QUICK. */
const char *rm_dispatch_method(const struct rm_dispatch *d, size_t i, enum rm_call_kind *kind);

/* What one call produced besides its status. */
struct rm_call_reply {
        uint8_t *out; /* malloc'd response bytes (may be NULL when out_len is 0) */
        size_t out_len;
        void (*after_send)(void *arg, bool delivered); /* from struct rm_call */
        void *after_send_arg;
};

/* Serve one call (ctx is the struct rm_dispatch): decode, run the handler, encode into
 * reply. Unknown or unimplemented method: UNIMPLEMENTED naming it; undecodable request:
 * INVALID_ARGUMENT. reply->after_send may be set on failure too. */
int rm_dispatch_serve(void *ctx, const char *method, const uint8_t *in, size_t in_len,
                      const struct rm_cancel *cancel, struct rm_call_reply *reply,
                      struct rm_error **err);

/* rm_dispatch_serve without a cancel token; an after_send hook is called at once with
 * delivered = true on success (for tests and in-process callers). */
int rm_dispatch_call(void *ctx, const char *method, const uint8_t *in, size_t in_len, uint8_t **out,
                     size_t *out_len, struct rm_error **err);

#endif
