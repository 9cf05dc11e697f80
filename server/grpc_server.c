#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "grpc_server.h"
#include "pool.h"
#include "remora/cleanup.h"
#include "remora/clock.h"
#include "remora/log.h"
#include "remora/metrics.h"
#include "remora/xalloc.h"

/* Completion queues the pollers share. gRPC's poller thread takes a completion off its
 * own queue without waking another thread, so fewer queues mean fewer hand-offs. */
#ifndef RM_GRPC_QUEUES
#define RM_GRPC_QUEUES 1
#endif

/* How long shutdown waits for calls in flight before cancelling them. */
#define SHUTDOWN_GRACE_SECONDS 30

static char tag_shutdown;

enum tag_kind { TAG_NEW, TAG_SEND, TAG_CLOSE };

struct gcall;

/* Completion tags point at one of these, inside the call they belong to. */
struct tag {
        struct rm_cq_tag base;
        enum tag_kind kind;
        struct gcall *c;
};

static void on_event(struct rm_cq_tag *t, bool ok);

struct poller {
        struct rm_grpc_server *srv;
        grpc_completion_queue *cq; /* shared with the pollers of the same queue */
        bool owns_cq;
        pthread_t thread;
        bool running;
};

struct reg {
        const char *path; /* points into the caller's method table */
        enum rm_call_kind kind;
        void *handle;
};

/* One call, from the request posted for it to the last completion. */
struct gcall {
        uint64_t arrived_ns; /* when the call was handed over, for the wait histogram */
        struct tag t_new, t_send, t_close;
        struct rm_grpc_server *srv;
        struct poller *p;
        struct reg *r; /* NULL: a method that is not registered */
        grpc_call *call;
        gpr_timespec deadline;
        grpc_metadata_array md;
        grpc_call_details details; /* unregistered calls only */
        grpc_byte_buffer *payload;
        struct rm_cancel cancel;
        /* Orders setting the token (poller) against closing its eventfd (pool thread, as
         * soon as the handler returns: the fd must not outlive the call's work, and must
         * not be written after it is closed). */
        pthread_mutex_t cancel_lock;
        /* The handling (ends when the send completes) and the close watch of pool calls. */
        atomic_int refs;
        int cancelled; /* GRPC_OP_RECV_CLOSE_ON_SERVER's verdict */
        bool send_ok;
        bool accepted;
        bool counted_cancelled;
        struct rm_call rcall; /* what the handler sees; after_send comes back in it */
        uint8_t *out;
        size_t out_len;
        struct rm_error *err;
        grpc_byte_buffer *resp;
        grpc_slice status_details;
        bool have_details;
};

struct rm_grpc_server {
        grpc_server *server;
        grpc_completion_queue *shutdown_cq;
        struct poller *pollers;
        int n_pollers;
        struct reg *regs;
        size_t n_regs;
        rm_dispatch_fn dispatch;
        void *ctx;
        char *path;
        struct rm_stream_pump *pump;
        struct rm_pool *pool;
        atomic_size_t calls;
        atomic_size_t cancelled_calls;
        struct rm_histo wait; /* from a call's arrival to its handler starting */
        int64_t spin_ns;      /* how long a poller polls without sleeping after a completion */
};

grpc_slice rm__grpc_flatten(grpc_byte_buffer *bb)
{
        grpc_byte_buffer_reader reader;
        if (!grpc_byte_buffer_reader_init(&reader, bb))
                return grpc_empty_slice();
        grpc_slice s = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        return s;
}

/* ---- posting requests ---- */

static struct gcall *gcall_new(struct rm_grpc_server *srv, struct poller *p, struct reg *r)
{
        struct gcall *c = xzalloc(sizeof(*c));
        c->t_new = (struct tag){{on_event}, TAG_NEW, c};
        c->t_send = (struct tag){{on_event}, TAG_SEND, c};
        c->t_close = (struct tag){{on_event}, TAG_CLOSE, c};
        c->srv = srv;
        c->p = p;
        c->r = r;
        c->cancel.fd = -1;
        pthread_mutex_init(&c->cancel_lock, NULL);
        atomic_init(&c->refs, 1);
        grpc_metadata_array_init(&c->md);
        grpc_call_details_init(&c->details);
        return c;
}

static void gcall_free(struct gcall *c)
{
        if (c->call)
                grpc_call_unref(c->call);
        if (c->payload)
                grpc_byte_buffer_destroy(c->payload);
        if (c->resp)
                grpc_byte_buffer_destroy(c->resp);
        if (c->have_details)
                grpc_slice_unref(c->status_details);
        grpc_metadata_array_destroy(&c->md);
        grpc_call_details_destroy(&c->details);
        rm_cancel_release(&c->cancel);
        pthread_mutex_destroy(&c->cancel_lock);
        rm_error_free(c->err);
        free(c->out);
        if (c->accepted)
                atomic_fetch_sub(&c->srv->calls, 1);
        if (c->counted_cancelled)
                atomic_fetch_sub(&c->srv->cancelled_calls, 1);
        free(c);
}

/* Ask for the next call of r (NULL: of any unregistered method) on p's queue. */
static void post_request(struct rm_grpc_server *srv, struct poller *p, struct reg *r)
{
        struct gcall *c = gcall_new(srv, p, r);
        grpc_call_error rc;
        if (r)
                rc = grpc_server_request_registered_call(srv->server, r->handle, &c->call,
                                                         &c->deadline, &c->md, &c->payload, p->cq,
                                                         p->cq, &c->t_new);
        else
                rc = grpc_server_request_call(srv->server, &c->call, &c->details, &c->md, p->cq,
                                              p->cq, &c->t_new);
        if (rc != GRPC_CALL_OK)
                gcall_free(c);
}

/* ---- finishing a call ---- */

struct after_job {
        void (*fn)(void *arg, bool delivered);
        void *arg;
        bool delivered;
};

static void run_after_job(void *arg)
{
        struct after_job *j = arg;
        j->fn(j->arg, j->delivered);
        free(j);
}

/* The last reference went: tell the handler whether its answer arrived, then free. */
static void finalize(struct gcall *c)
{
        if (c->rcall.after_send) {
                bool delivered = c->send_ok && !c->cancelled && c->err == NULL;
                if (c->r == NULL || c->r->kind == RM_CALL_QUICK) {
                        c->rcall.after_send(c->rcall.after_send_arg, delivered);
                } else {
                        struct after_job *j = xzalloc(sizeof(*j));
                        *j = (struct after_job){c->rcall.after_send, c->rcall.after_send_arg,
                                                delivered};
                        rm_pool_submit(c->srv->pool, run_after_job, j);
                }
        }
        gcall_free(c);
}

static void unref(struct gcall *c)
{
        if (atomic_fetch_sub(&c->refs, 1) == 1)
                finalize(c);
}

/* Send initial metadata, the response (or the error status) and the status in one batch;
 * with_close also watches for the end of the call there. The handling's reference passes
 * to the batch: c must not be touched after this. */
static void start_send(struct gcall *c, bool with_close)
{
        grpc_op ops[4];
        memset(ops, 0, sizeof(ops));
        size_t n = 0;
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        if (c->err == NULL) {
                uint8_t *out = c->out ? c->out : xmalloc(1);
                c->out = NULL;
                grpc_slice body = grpc_slice_new(out, c->out_len, free);
                c->resp = grpc_raw_byte_buffer_create(&body, 1);
                grpc_slice_unref(body);
                ops[n].op = GRPC_OP_SEND_MESSAGE;
                ops[n++].data.send_message.send_message = c->resp;
        }
        c->status_details = grpc_slice_from_copied_string(c->err ? c->err->msg : "");
        c->have_details = true;
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status =
            c->err ? (grpc_status_code)c->err->code : GRPC_STATUS_OK;
        ops[n++].data.send_status_from_server.status_details = &c->status_details;
        if (with_close) {
                ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
                ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
        }
        if (grpc_call_start_batch(c->call, ops, n, &c->t_send, NULL) != GRPC_CALL_OK) {
                c->send_ok = false;
                unref(c);
        }
}

/* ---- serving ---- */

/* The call's deadline on CLOCK_MONOTONIC in ns, 0 when it has none. */
static int64_t deadline_ns(gpr_timespec deadline)
{
        if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) == 0)
                return 0;
        gpr_timespec left = gpr_time_sub(deadline, gpr_now(deadline.clock_type));
        int64_t left_ns = left.tv_sec * 1000000000LL + left.tv_nsec;
        return rm_mono_ns() + (left_ns > 0 ? left_ns : 0) + 1;
}

static void run_handler(struct gcall *c)
{
        if (c->payload == NULL) {
                rm_error_set(&c->err, RM_INVALID_ARGUMENT, "%s: the request carried no message",
                             c->r->path);
                return;
        }
        if (c->r->kind == RM_CALL_POOL && rm_cancelled(&c->cancel)) {
                /* Its client is gone: the answer would reach no one. */
                bool by_client = atomic_load(&c->cancel.cancelled);
                rm_error_set(&c->err, by_client ? RM_CANCELLED : RM_DEADLINE_EXCEEDED,
                             "%s: the client %s before the call started", c->r->path,
                             by_client ? "cancelled" : "passed its deadline");
                rm_log_debug("%s", c->err->msg);
                return;
        }
        rm_histo_observe(&c->srv->wait, rm_metrics_now_ns() - c->arrived_ns);
        grpc_slice in = rm__grpc_flatten(c->payload);
        grpc_byte_buffer_destroy(c->payload);
        c->payload = NULL;
        c->rcall.cancel = &c->cancel;
        c->srv->dispatch(c->srv->ctx, &c->rcall, c->r->path, GRPC_SLICE_START_PTR(in),
                         GRPC_SLICE_LENGTH(in), &c->out, &c->out_len, &c->err);
        grpc_slice_unref(in);
        if (c->err != NULL) {
                free(c->out);
                c->out = NULL;
        }
}

static void pool_job(void *arg)
{
        struct gcall *c = arg;
        run_handler(c);
        /* Nobody waits on the token's fd any more; the flag stays readable. */
        pthread_mutex_lock(&c->cancel_lock);
        rm_cancel_release(&c->cancel);
        pthread_mutex_unlock(&c->cancel_lock);
        start_send(c, false);
}

static void on_new(struct gcall *c, bool ok)
{
        struct rm_grpc_server *srv = c->srv;
        if (!ok) { /* the server is shutting down */
                gcall_free(c);
                return;
        }
        c->arrived_ns = rm_metrics_now_ns();
        post_request(srv, c->p, c->r);
        c->accepted = true;
        atomic_fetch_add(&srv->calls, 1);

        if (c->r == NULL) {
                char *method = grpc_slice_to_c_string(c->details.method);
                rm_error_set(&c->err, RM_UNIMPLEMENTED, "unknown method %s", method);
                rm_log_debug("%s", c->err->msg);
                gpr_free(method);
                start_send(c, true);
                return;
        }
        if (c->r->kind == RM_CALL_QUICK) {
                /* No eventfd: a quick call never waits, so nobody polls its token. */
                atomic_init(&c->cancel.cancelled, false);
                c->cancel.deadline_ns = deadline_ns(c->deadline);
                run_handler(c);
                start_send(c, true);
                return;
        }
        rm_cancel_init(&c->cancel, deadline_ns(c->deadline));
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        op.data.recv_close_on_server.cancelled = &c->cancelled;
        atomic_fetch_add(&c->refs, 1);
        if (grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL) != GRPC_CALL_OK)
                atomic_fetch_sub(&c->refs, 1);
        rm_pool_submit(srv->pool, pool_job, c);
}

/* A completion of one of a unary call's tags. */
static void on_event(struct rm_cq_tag *base, bool ok)
{
        struct tag *t = (struct tag *)base;
        struct gcall *c = t->c;
        switch (t->kind) {
        case TAG_NEW:
                on_new(c, ok);
                break;
        case TAG_SEND:
                /* Sent in time: a status that left after the deadline is not. */
                c->send_ok = ok && (c->cancel.deadline_ns == 0 || !rm_cancelled(&c->cancel));
                unref(c);
                break;
        case TAG_CLOSE:
                /* Cancelled, or past its deadline: tell the handler to give up. */
                if (c->cancelled) {
                        pthread_mutex_lock(&c->cancel_lock);
                        rm_cancel_set(&c->cancel);
                        pthread_mutex_unlock(&c->cancel_lock);
                        c->counted_cancelled = true;
                        atomic_fetch_add(&c->srv->cancelled_calls, 1);
                }
                unref(c);
                break;
        }
}

/* Unary calls and streams share the queue; each tag says who handles it. */
static void *poller_main(void *arg)
{
        struct poller *p = arg;
        int64_t spin_ns = p->srv->spin_ns, busy_until = 0;
        for (;;) {
                /* Right after a completion, poll without sleeping for a while: the next
                 * call of a burst is then taken without a wake-up. */
                bool spin = spin_ns > 0 && (int64_t)rm_metrics_now_ns() < busy_until;
                grpc_event ev = grpc_completion_queue_next(
                    p->cq,
                    spin ? gpr_inf_past(GPR_CLOCK_MONOTONIC) : gpr_inf_future(GPR_CLOCK_MONOTONIC),
                    NULL);
                if (ev.type == GRPC_QUEUE_SHUTDOWN)
                        return NULL;
                if (ev.type != GRPC_OP_COMPLETE) {
                        if (spin)
                                sched_yield(); /* anything else runnable here goes first */
                        continue;
                }
                struct rm_cq_tag *t = ev.tag;
                t->fn(t, ev.success != 0);
                if (spin_ns > 0)
                        busy_until = (int64_t)rm_metrics_now_ns() + spin_ns;
        }
}

/* ---- start and stop ---- */

static bool is_stream(const char *path, const struct rm_stream_method *streams, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (strcmp(streams[i].path, path) == 0)
                        return true;
        return false;
}

static void free_server(struct rm_grpc_server *srv)
{
        if (srv->server)
                grpc_server_destroy(srv->server);
        bool any_running = false;
        for (int i = 0; i < srv->n_pollers; i++) {
                if (srv->pollers[i].owns_cq)
                        grpc_completion_queue_shutdown(srv->pollers[i].cq);
                any_running |= srv->pollers[i].running;
        }
        for (int i = 0; i < srv->n_pollers; i++) {
                struct poller *p = &srv->pollers[i];
                if (p->running)
                        pthread_join(p->thread, NULL);
                else if (p->owns_cq && !any_running)
                        while (grpc_completion_queue_next(p->cq,
                                                          gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL)
                                   .type != GRPC_QUEUE_SHUTDOWN)
                                ;
        }
        for (int i = 0; i < srv->n_pollers; i++)
                if (srv->pollers[i].owns_cq)
                        grpc_completion_queue_destroy(srv->pollers[i].cq);
        /* Its tags came to the pollers' queue, which is drained now. */
        rm_stream_pump_free(srv->pump);
        if (srv->shutdown_cq) {
                grpc_completion_queue_shutdown(srv->shutdown_cq);
                while (grpc_completion_queue_next(srv->shutdown_cq,
                                                  gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL)
                           .type != GRPC_QUEUE_SHUTDOWN)
                        ;
                grpc_completion_queue_destroy(srv->shutdown_cq);
        }
        rm_pool_free(srv->pool);
        free(srv->pollers);
        free(srv->regs);
        free(srv->path);
        free(srv);
}

struct rm_grpc_server *rm_grpc_server_start(const char *path, int pollers, int poll_spin_us,
                                            int max_message_bytes,
                                            const struct rm_grpc_method *methods, size_t n_methods,
                                            rm_dispatch_fn dispatch, void *ctx,
                                            const struct rm_stream_method *streams,
                                            size_t n_streams, struct rm_error **err)
{
        struct rm_grpc_server *srv = xzalloc(sizeof(*srv));
        srv->dispatch = dispatch;
        srv->ctx = ctx;
        srv->path = xstrdup(path);
        srv->n_pollers = pollers;
        srv->pollers = xzalloc(sizeof(struct poller) * (size_t)pollers);
        srv->pool = rm_pool_new(RM_POOL_MAX_THREADS, RM_POOL_IDLE_MS);
        srv->spin_ns = (int64_t)poll_spin_us * 1000;
        atomic_init(&srv->calls, 0);
        atomic_init(&srv->cancelled_calls, 0);

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
        int queues = pollers < RM_GRPC_QUEUES ? pollers : RM_GRPC_QUEUES;
        for (int i = 0; i < pollers; i++) {
                struct poller *p = &srv->pollers[i];
                p->srv = srv;
                if (i < queues) {
                        p->cq = grpc_completion_queue_create_for_next(NULL);
                        p->owns_cq = true;
                        grpc_server_register_completion_queue(srv->server, p->cq, NULL);
                } else {
                        p->cq = srv->pollers[i % queues].cq;
                }
        }
        /* Registered methods get their request with the call: one wait less per call. */
        srv->regs = xzalloc(sizeof(struct reg) * (n_methods ? n_methods : 1));
        for (size_t i = 0; i < n_methods; i++) {
                if (is_stream(methods[i].path, streams, n_streams))
                        continue;
                struct reg *r = &srv->regs[srv->n_regs];
                r->path = methods[i].path;
                r->kind = methods[i].kind;
                r->handle = grpc_server_register_method(
                    srv->server, r->path, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
                if (r->handle != NULL)
                        srv->n_regs++;
        }
        srv->pump = rm_stream_pump_new(srv->server, srv->pollers[0].cq, streams, n_streams);

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
                free_server(srv);
                return NULL;
        }
        grpc_server_start(srv->server);
        rm_stream_pump_start(srv->pump);

        /* kubelet runs as root; a group may be granted access by chgrp'ing the socket. */
        if (chmod(path, 0660) < 0) {
                rm_error_sys(err, "set mode 0660 on socket %s", path);
                rm_grpc_server_stop(srv);
                return NULL;
        }

        for (int i = 0; i < pollers; i++) {
                struct poller *p = &srv->pollers[i];
                post_request(srv, p, NULL);
                for (size_t m = 0; m < srv->n_regs; m++)
                        post_request(srv, p, &srv->regs[m]);
                int rc = pthread_create(&p->thread, NULL, poller_main, p);
                if (rc != 0) {
                        rm_error_sys_errno(err, rc, "start gRPC thread %d", i);
                        rm_grpc_server_stop(srv);
                        return NULL;
                }
                p->running = true;
        }
        return srv;
}

void rm_grpc_server_load(struct rm_grpc_server *srv, struct rm_grpc_load *load)
{
        load->in_flight = atomic_load(&srv->calls);
        load->cancelled = atomic_load(&srv->cancelled_calls);
        load->pool_threads = rm_pool_threads(srv->pool, &load->pool_busy);
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
                /* Their tokens are set as the cancellations come back; handlers give up. */
                grpc_server_cancel_all_calls(srv->server);
                grpc_completion_queue_next(srv->shutdown_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                           NULL);
        }
        /* Handlers still running start their sends on the pollers' queues: let them
         * finish, and the pollers see every call through, before the queues close. */
        rm_pool_drain(srv->pool);
        for (int i = 0; i < 5000 && atomic_load(&srv->calls) > 0; i++)
                nanosleep(&(struct timespec){0, 1000000}, NULL);
        if (atomic_load(&srv->calls) > 0)
                rm_log_warn("%zu calls were still held at shutdown", atomic_load(&srv->calls));

        struct stat st;
        if (lstat(srv->path, &st) == 0 && S_ISSOCK(st.st_mode) && unlink(srv->path) < 0)
                rm_log_warn("cannot remove socket %s: %s", srv->path, strerror(errno));
        free_server(srv);
}

const struct rm_histo *rm_grpc_server_wait(const struct rm_grpc_server *srv)
{
        return &srv->wait;
}
