#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "dispatch.h"
#include "grpc_server.h"
#include "remora/cleanup.h"
#include "remora/log.h"
#include "remora/xalloc.h"

/* How long shutdown waits for calls in flight before cancelling them. */
#define SHUTDOWN_GRACE_SECONDS 30

/* Completion-queue tags. Each worker has only one operation outstanding at a time on its
 * own queue, so fixed tags are unambiguous. */
static char tag_new_call, tag_recv, tag_send, tag_shutdown;

struct worker {
        struct rm_grpc_server *srv;
        grpc_completion_queue *cq;
        pthread_t thread;
        bool running;
};

struct rm_grpc_server {
        grpc_server *server;
        grpc_completion_queue *shutdown_cq;
        struct worker *workers;
        int n_workers;
        rm_dispatch_fn dispatch;
        void *ctx;
        char *path;
        struct rm_stream_pump *pump;
};

/* Wait for the one outstanding operation on cq; true when it completed successfully. */
static bool wait_for(grpc_completion_queue *cq, void *tag)
{
        for (;;) {
                grpc_event ev =
                    grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
                if (ev.type == GRPC_QUEUE_SHUTDOWN)
                        return false;
                if (ev.type == GRPC_OP_COMPLETE && ev.tag == tag)
                        return ev.success != 0;
        }
}

grpc_slice rm__grpc_flatten(grpc_byte_buffer *bb)
{
        grpc_byte_buffer_reader reader;
        if (!grpc_byte_buffer_reader_init(&reader, bb))
                return grpc_empty_slice();
        grpc_slice s = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        return s;
}

/* Sends the response; true when it reached the client as far as the server can tell:
 * the batch completed, the call was not cancelled (the client's cancel or its deadline,
 * which the core enforces, both end the call) and the deadline had not passed. */
static bool respond(struct worker *w, grpc_call *call, gpr_timespec deadline, uint8_t *out,
                    size_t out_len, const struct rm_error *err)
{
        grpc_op ops[4];
        memset(ops, 0, sizeof(ops));
        size_t n = 0;
        grpc_byte_buffer *bb = NULL;
        int cancelled = 0;

        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        if (err == NULL) {
                grpc_slice body = grpc_slice_new(out ? out : xmalloc(1), out_len, free);
                bb = grpc_raw_byte_buffer_create(&body, 1);
                grpc_slice_unref(body);
                ops[n].op = GRPC_OP_SEND_MESSAGE;
                ops[n++].data.send_message.send_message = bb;
        } else {
                free(out);
        }
        grpc_slice details = grpc_slice_from_copied_string(err ? err->msg : "");
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status =
            err ? (grpc_status_code)err->code : GRPC_STATUS_OK;
        ops[n++].data.send_status_from_server.status_details = &details;
        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[n++].data.recv_close_on_server.cancelled = &cancelled;

        bool sent = grpc_call_start_batch(call, ops, n, &tag_send, NULL) == GRPC_CALL_OK &&
                    wait_for(w->cq, &tag_send);
        grpc_slice_unref(details);
        if (bb)
                grpc_byte_buffer_destroy(bb);
        gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
        return sent && !cancelled &&
               gpr_time_cmp(now, gpr_convert_clock_type(deadline, GPR_CLOCK_MONOTONIC)) < 0;
}

static void serve_call(struct worker *w, grpc_call *call, const grpc_call_details *details)
{
        grpc_byte_buffer *payload = NULL;
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &payload;
        if (grpc_call_start_batch(call, &op, 1, &tag_recv, NULL) != GRPC_CALL_OK ||
            !wait_for(w->cq, &tag_recv)) {
                if (payload)
                        grpc_byte_buffer_destroy(payload);
                return; /* the client went away before sending its request */
        }

        char *method = grpc_slice_to_c_string(details->method);
        struct rm_call rcall = {0};
        cleanup_error struct rm_error *err = NULL;
        uint8_t *out = NULL;
        size_t out_len = 0;
        if (payload == NULL) {
                rm_error_set(&err, RM_INVALID_ARGUMENT, "%s: the request carried no message",
                             method);
        } else {
                grpc_slice in = rm__grpc_flatten(payload);
                grpc_byte_buffer_destroy(payload);
                w->srv->dispatch(w->srv->ctx, &rcall, method, GRPC_SLICE_START_PTR(in),
                                 GRPC_SLICE_LENGTH(in), &out, &out_len, &err);
                grpc_slice_unref(in);
        }
        gpr_free(method);
        bool delivered = respond(w, call, details->deadline, out, out_len, err);
        if (rcall.after_send)
                rcall.after_send(rcall.after_send_arg, delivered && err == NULL);
}

static void *worker_main(void *arg)
{
        struct worker *w = arg;
        for (;;) {
                grpc_call *call = NULL;
                grpc_call_details details;
                grpc_metadata_array md;
                grpc_call_details_init(&details);
                grpc_metadata_array_init(&md);

                /* Fails (success == 0) once the server shuts down: that ends the worker. */
                bool got = grpc_server_request_call(w->srv->server, &call, &details, &md, w->cq,
                                                    w->cq, &tag_new_call) == GRPC_CALL_OK &&
                           wait_for(w->cq, &tag_new_call);
                if (got)
                        serve_call(w, call, &details);
                if (call)
                        grpc_call_unref(call);
                grpc_call_details_destroy(&details);
                grpc_metadata_array_destroy(&md);
                if (!got)
                        return NULL;
        }
}

static void drain_and_destroy(grpc_completion_queue *cq)
{
        if (cq == NULL)
                return;
        grpc_completion_queue_shutdown(cq);
        while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
                ;
        grpc_completion_queue_destroy(cq);
}

static void release(struct rm_grpc_server *srv)
{
        if (srv->server)
                grpc_server_destroy(srv->server);
        rm_stream_pump_free(srv->pump);
        for (int i = 0; i < srv->n_workers; i++)
                drain_and_destroy(srv->workers[i].cq);
        drain_and_destroy(srv->shutdown_cq);
        free(srv->workers);
        free(srv->path);
        free(srv);
}

struct rm_grpc_server *rm_grpc_server_start(const char *path, int workers, int max_message_bytes,
                                            rm_dispatch_fn dispatch, void *ctx,
                                            const struct rm_stream_method *streams,
                                            size_t n_streams, struct rm_error **err)
{
        struct rm_grpc_server *srv = xzalloc(sizeof(*srv));
        srv->dispatch = dispatch;
        srv->ctx = ctx;
        srv->path = xstrdup(path);
        srv->n_workers = workers;
        srv->workers = xzalloc(sizeof(struct worker) * (size_t)workers);

        grpc_arg args[2];
        memset(args, 0, sizeof(args));
        args[0].type = GRPC_ARG_INTEGER;
        args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
        args[0].value.integer = max_message_bytes;
        args[1].type = GRPC_ARG_INTEGER;
        args[1].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
        args[1].value.integer = max_message_bytes;
        grpc_channel_args channel_args = {.num_args = 2, .args = args};

        srv->server = grpc_server_create(&channel_args, NULL);
        srv->shutdown_cq = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(srv->server, srv->shutdown_cq, NULL);
        for (int i = 0; i < workers; i++) {
                srv->workers[i].srv = srv;
                srv->workers[i].cq = grpc_completion_queue_create_for_next(NULL);
                grpc_server_register_completion_queue(srv->server, srv->workers[i].cq, NULL);
        }
        srv->pump = rm_stream_pump_new(srv->server, streams, n_streams);

        cleanup_free char *addr = xasprintf("unix:%s", path);
        grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
        /* The socket is bound here: make it owner-only from birth, then open it to the
         * group below, so it is never briefly reachable with the process umask's mode. */
        mode_t old_umask = umask(0177);
        int port = grpc_server_add_http2_port(srv->server, addr, creds);
        umask(old_umask);
        grpc_server_credentials_release(creds);
        if (port == 0) {
                rm_error_set(err, RM_UNAVAILABLE, "cannot listen on %s (see gRPC's log above)",
                             addr);
                grpc_server_destroy(srv->server);
                srv->server = NULL;
                release(srv);
                return NULL;
        }
        grpc_server_start(srv->server);
        if (rm_stream_pump_start(srv->pump, err) < 0) {
                rm_grpc_server_stop(srv);
                return NULL;
        }

        /* kubelet runs as root; a group may be granted access by chgrp'ing the socket. */
        if (chmod(path, 0660) < 0) {
                rm_error_sys(err, "set mode 0660 on socket %s", path);
                rm_grpc_server_stop(srv);
                return NULL;
        }

        for (int i = 0; i < workers; i++) {
                int rc =
                    pthread_create(&srv->workers[i].thread, NULL, worker_main, &srv->workers[i]);
                if (rc != 0) {
                        rm_error_sys_errno(err, rc, "start gRPC worker thread %d", i);
                        rm_grpc_server_stop(srv);
                        return NULL;
                }
                srv->workers[i].running = true;
        }
        return srv;
}

void rm_grpc_server_stop(struct rm_grpc_server *srv)
{
        if (srv == NULL)
                return;

        /* Closes the listener at once; completes when every call in flight has finished. */
        grpc_server_shutdown_and_notify(srv->server, srv->shutdown_cq, &tag_shutdown);
        /* Event streams never end by themselves: end them so shutdown can complete. */
        rm_stream_pump_cancel_all(srv->pump);
        gpr_timespec deadline =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                         gpr_time_from_seconds(SHUTDOWN_GRACE_SECONDS, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(srv->shutdown_cq, deadline, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
                rm_log_warn("calls still running after %d s of shutdown; cancelling them",
                            SHUTDOWN_GRACE_SECONDS);
                grpc_server_cancel_all_calls(srv->server);
                wait_for(srv->shutdown_cq, &tag_shutdown);
        }

        for (int i = 0; i < srv->n_workers; i++) {
                if (srv->workers[i].running)
                        pthread_join(srv->workers[i].thread, NULL);
        }

        struct stat st;
        if (lstat(srv->path, &st) == 0 && S_ISSOCK(st.st_mode) && unlink(srv->path) < 0)
                rm_log_warn("cannot remove socket %s: %s", srv->path, strerror(errno));
        release(srv);
}
