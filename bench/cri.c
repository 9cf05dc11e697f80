#include "cri.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "remora/xalloc.h"

double cri_now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

struct cri_conn *cri_open(const char *target, const char **why)
{
        const char *prefix = "unix://";
        if (strncmp(target, prefix, strlen(prefix)) != 0 || target[strlen(prefix)] != '/') {
                *why = "the endpoint must be unix:///absolute/path";
                return NULL;
        }
        struct cri_conn *c = xmalloc(sizeof(*c));
        c->target = xstrdup(target);
        c->path = xstrdup(target + strlen(prefix));
        /* Large responses: ListContainers with 500 containers is well over 4 MiB on some
         * runtimes' stats calls. */
        grpc_arg args[1];
        args[0].type = GRPC_ARG_INTEGER;
        args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
        args[0].value.integer = 64 * 1024 * 1024;
        grpc_channel_args ca = {.num_args = 1, .args = args};
        grpc_channel_credentials *creds = grpc_insecure_credentials_create();
        c->channel = grpc_channel_create(target, creds, &ca);
        grpc_channel_credentials_release(creds);
        return c;
}

void cri_close(struct cri_conn *c)
{
        if (!c)
                return;
        grpc_channel_destroy(c->channel);
        free(c->target);
        free(c->path);
        free(c);
}

void cri_result_clear(struct cri_result *res)
{
        free(res->msg);
        res->msg = NULL;
}

static grpc_slice flatten(grpc_byte_buffer *bb)
{
        grpc_byte_buffer_reader reader;
        if (!grpc_byte_buffer_reader_init(&reader, bb))
                return grpc_empty_slice();
        grpc_slice s = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        return s;
}

int cri_call(struct cri_conn *c, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, double timeout_s,
             struct cri_result *res)
{
        res->status = GRPC_STATUS_UNKNOWN;
        res->msg = NULL;
        res->ms = 0;
        if (resp)
                *resp = NULL;

        size_t len = protobuf_c_message_get_packed_size(req);
        uint8_t *buf = xmalloc(len ? len : 1);
        protobuf_c_message_pack(req, buf);
        grpc_slice body = grpc_slice_new(buf, len, free);
        grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&body, 1);
        grpc_slice_unref(body);

        grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
        gpr_timespec deadline =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                         gpr_time_from_millis((int64_t)(timeout_s * 1000), GPR_TIMESPAN));
        grpc_slice mslice = grpc_slice_from_copied_string(method);
        grpc_call *call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                                   mslice, NULL, deadline, NULL);
        grpc_slice_unref(mslice);

        grpc_metadata_array initial, trailing;
        grpc_metadata_array_init(&initial);
        grpc_metadata_array_init(&trailing);
        grpc_byte_buffer *recv = NULL;
        grpc_status_code status = GRPC_STATUS_UNKNOWN;
        grpc_slice details = grpc_empty_slice();

        grpc_op ops[6];
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = send;
        ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
        ops[4].op = GRPC_OP_RECV_MESSAGE;
        ops[4].data.recv_message.recv_message = &recv;
        ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
        ops[5].data.recv_status_on_client.status = &status;
        ops[5].data.recv_status_on_client.status_details = &details;

        static int tag;
        double t0 = cri_now_ms();
        grpc_call_error ce = grpc_call_start_batch(call, ops, 6, &tag, NULL);
        if (ce == GRPC_CALL_OK)
                grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        res->ms = cri_now_ms() - t0;

        if (ce != GRPC_CALL_OK) {
                res->msg = xstrdup("grpc_call_start_batch failed");
        } else {
                res->status = status;
                if (GRPC_SLICE_LENGTH(details) > 0)
                        res->msg = grpc_slice_to_c_string(details);
                if (res->msg) {
                        /* gpr memory to libc memory, so callers free() it */
                        char *m = xstrdup(res->msg);
                        gpr_free(res->msg);
                        res->msg = m;
                }
                if (status == GRPC_STATUS_OK && resp && resp_desc) {
                        grpc_slice in = recv ? flatten(recv) : grpc_empty_slice();
                        *resp = protobuf_c_message_unpack(resp_desc, NULL, GRPC_SLICE_LENGTH(in),
                                                          GRPC_SLICE_START_PTR(in));
                        grpc_slice_unref(in);
                        if (!*resp) {
                                res->status = GRPC_STATUS_INTERNAL;
                                res->msg = xstrdup("response did not decode");
                        }
                }
        }

        grpc_slice_unref(details);
        grpc_metadata_array_destroy(&initial);
        grpc_metadata_array_destroy(&trailing);
        if (recv)
                grpc_byte_buffer_destroy(recv);
        grpc_byte_buffer_destroy(send);
        grpc_call_unref(call);
        grpc_completion_queue_shutdown(cq);
        grpc_completion_queue_destroy(cq);
        return res->status;
}
