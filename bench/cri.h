/* A minimal blocking CRI client over the gRPC C core: one channel per endpoint, a
 * completion queue per call, so any thread may call. */
#ifndef REMORA_BENCH_CRI_H
#define REMORA_BENCH_CRI_H

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

struct cri_conn {
        char *target; /* "unix:///path" as given */
        char *path;   /* the socket path, for SO_PEERCRED */
        grpc_channel *channel;
};

/* The outcome of one call: status is a grpc_status_code (0 = OK); msg is the status
 * details (malloc'd, may be NULL); ms is the round-trip time of the call itself. */
struct cri_result {
        int status;
        char *msg;
        double ms;
};

/* Opens a channel to TARGET ("unix:///path"); NULL with *why set when the target is not
 * a unix socket URL. */
struct cri_conn *cri_open(const char *target, const char **why);
void cri_close(struct cri_conn *c);

/* Calls METHOD (e.g. "/runtime.v1.RuntimeService/Version") with REQ and a deadline of
 * TIMEOUT_S seconds. On OK and RESP_DESC non-NULL, *RESP receives the unpacked response
 * (free with protobuf_c_message_free_unpacked). Returns res->status. */
int cri_call(struct cri_conn *c, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, double timeout_s,
             struct cri_result *res);

/* Frees res->msg. */
void cri_result_clear(struct cri_result *res);

/* Monotonic time in milliseconds. */
double cri_now_ms(void);

#endif
