/* The gRPC front end against a real gRPC client on a unix socket, with a fake dispatch:
 * quick calls answered while pool calls block, the call's token set when the client
 * cancels or its deadline passes, after_send told whether the answer was delivered. */
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "grpc_server.h"
#include "remora/xalloc.h"
#include "tests.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int hooks, delivered_true, delivered_false;
static int saw_client_cancel, saw_any_cancel, gate_waiting;
static bool gate_open;

static void after_send(void *arg, bool delivered)
{
        (void)arg;
        pthread_mutex_lock(&lock);
        hooks++;
        if (delivered)
                delivered_true++;
        else
                delivered_false++;
        pthread_cond_broadcast(&changed);
        pthread_mutex_unlock(&lock);
}

static int fake_dispatch(void *ctx, struct rm_call *call, const char *method, const uint8_t *in,
                         size_t in_len, uint8_t **out, size_t *out_len, struct rm_error **err)
{
        (void)ctx;
        (void)in;
        (void)in_len;
        (void)err;
        const struct rm_cancel *cancel = call->cancel;
        call->after_send = after_send;
        if (strcmp(method, "/t.S/Slow") == 0) {
                /* Wait for the token, as an ExecSync waits on its process. */
                for (int i = 0; i < 1000 && !rm_cancelled(cancel); i++)
                        usleep(10000);
                pthread_mutex_lock(&lock);
                saw_any_cancel += rm_cancelled(cancel);
                saw_client_cancel += atomic_load(&cancel->cancelled);
                pthread_cond_broadcast(&changed);
                pthread_mutex_unlock(&lock);
                /* Answer anyway: only the client's absence makes it undelivered. */
        }
        if (strcmp(method, "/t.S/Gate") == 0) {
                pthread_mutex_lock(&lock);
                gate_waiting++;
                pthread_cond_broadcast(&changed);
                while (!gate_open)
                        pthread_cond_wait(&changed, &lock);
                pthread_mutex_unlock(&lock);
        }
        *out = (uint8_t *)xstrdup("ok");
        *out_len = 2;
        return 0;
}

static const struct rm_grpc_method methods[] = {
    {"/t.S/Quick", RM_CALL_QUICK},
    {"/t.S/Slow", RM_CALL_POOL},
    {"/t.S/Gate", RM_CALL_POOL},
};

struct client_call {
        grpc_completion_queue *cq;
        grpc_call *call;
        grpc_byte_buffer *send, *recv;
        grpc_metadata_array initial, trailing;
        grpc_status_code status;
        grpc_slice details;
};

static void start_call(grpc_channel *ch, struct client_call *cc, const char *method, int ms)
{
        memset(cc, 0, sizeof(*cc));
        cc->cq = grpc_completion_queue_create_for_pluck(NULL);
        gpr_timespec deadline = ms > 0 ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                                      gpr_time_from_millis(ms, GPR_TIMESPAN))
                                       : gpr_inf_future(GPR_CLOCK_MONOTONIC);
        grpc_slice m = grpc_slice_from_copied_string(method);
        cc->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cc->cq, m, NULL,
                                            deadline, NULL);
        grpc_slice_unref(m);
        grpc_slice body = grpc_slice_from_static_string("x");
        cc->send = grpc_raw_byte_buffer_create(&body, 1);
        grpc_metadata_array_init(&cc->initial);
        grpc_metadata_array_init(&cc->trailing);
        cc->details = grpc_empty_slice();
        grpc_op ops[6];
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = cc->send;
        ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[3].data.recv_initial_metadata.recv_initial_metadata = &cc->initial;
        ops[4].op = GRPC_OP_RECV_MESSAGE;
        ops[4].data.recv_message.recv_message = &cc->recv;
        ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[5].data.recv_status_on_client.trailing_metadata = &cc->trailing;
        ops[5].data.recv_status_on_client.status = &cc->status;
        ops[5].data.recv_status_on_client.status_details = &cc->details;
        assert_int_equal(grpc_call_start_batch(cc->call, ops, 6, cc, NULL), GRPC_CALL_OK);
}

static grpc_status_code finish_call(struct client_call *cc)
{
        grpc_completion_queue_pluck(cc->cq, cc, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        grpc_slice_unref(cc->details);
        grpc_metadata_array_destroy(&cc->initial);
        grpc_metadata_array_destroy(&cc->trailing);
        if (cc->recv)
                grpc_byte_buffer_destroy(cc->recv);
        grpc_byte_buffer_destroy(cc->send);
        grpc_call_unref(cc->call);
        grpc_completion_queue_shutdown(cc->cq);
        grpc_completion_queue_destroy(cc->cq);
        return cc->status;
}

static double now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Wait (up to 10 s) until *counter reaches at least want. */
#define wait_count(counter, want) wait_count_at(counter, want, #counter, __LINE__)
static void wait_count_at(int *counter, int want, const char *what, int line)
{
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 10;
        pthread_mutex_lock(&lock);
        while (*counter < want && pthread_cond_timedwait(&changed, &lock, &until) == 0)
                ;
        int got = *counter;
        pthread_mutex_unlock(&lock);
        if (got < want)
                fail_msg("line %d: %s is %d, want %d", line, what, got, want);
}

static void test_front_end(void **state)
{
        (void)state;
        char dir[] = "/tmp/rm-fe-XXXXXX";
        assert_non_null(mkdtemp(dir));
        char path[64], target[80];
        snprintf(path, sizeof(path), "%s/s.sock", dir);
        snprintf(target, sizeof(target), "unix:%s", path);
        grpc_init();
        struct rm_error *err = NULL;
        struct rm_grpc_server *srv = rm_grpc_server_start(path, 2, 50, 1 << 20, methods, 3,
                                                          fake_dispatch, NULL, NULL, 0, &err);
        assert_non_null(srv);
        grpc_channel_credentials *creds = grpc_insecure_credentials_create();
        grpc_channel *ch = grpc_channel_create(target, creds, NULL);
        grpc_channel_credentials_release(creds);

        /* A quick call, delivered. */
        struct client_call cc;
        start_call(ch, &cc, "/t.S/Quick", 5000);
        assert_int_equal(finish_call(&cc), GRPC_STATUS_OK);
        wait_count(&delivered_true, 1);

        /* Unknown methods: UNIMPLEMENTED. */
        start_call(ch, &cc, "/t.S/Nope", 5000);
        assert_int_equal(finish_call(&cc), GRPC_STATUS_UNIMPLEMENTED);

        /* 32 pool calls hold their threads (more than the two pollers); quick calls and a
         * 33rd pool call still answer at once. */
        struct client_call held[32];
        for (int i = 0; i < 32; i++)
                start_call(ch, &held[i], "/t.S/Gate", 0);
        wait_count(&gate_waiting, 32);
        for (int i = 0; i < 20; i++) {
                double t0 = now_ms();
                start_call(ch, &cc, "/t.S/Quick", 5000);
                assert_int_equal(finish_call(&cc), GRPC_STATUS_OK);
                assert_true(now_ms() - t0 < 1000);
        }
        struct rm_grpc_load load;
        rm_grpc_server_load(srv, &load);
        assert_true(load.in_flight >= 32);
        assert_true(load.pool_busy >= 32);
        pthread_mutex_lock(&lock);
        gate_open = true;
        pthread_cond_broadcast(&changed);
        pthread_mutex_unlock(&lock);
        for (int i = 0; i < 32; i++)
                assert_int_equal(finish_call(&held[i]), GRPC_STATUS_OK);
        wait_count(&delivered_true, 1 + 20 + 32);

        /* The client's deadline passes: the handler's token says so, the answer is not
         * delivered. */
        start_call(ch, &cc, "/t.S/Slow", 1500);
        /* The handler may see the deadline (and answer) a hair before the client does. */
        grpc_status_code st = finish_call(&cc);
        assert_true(st == GRPC_STATUS_DEADLINE_EXCEEDED || st == GRPC_STATUS_CANCELLED);
        wait_count(&saw_any_cancel, 1);
        wait_count(&delivered_false, 1);

        /* The client cancels (no deadline): the token is set from RECV_CLOSE_ON_SERVER. */
        start_call(ch, &cc, "/t.S/Slow", 0);
        usleep(1000000);
        grpc_call_cancel(cc.call, NULL);
        assert_int_equal(finish_call(&cc), GRPC_STATUS_CANCELLED);
        wait_count(&saw_client_cancel, 1);
        wait_count(&delivered_false, 2);
        assert_int_equal(saw_any_cancel, 2);

        grpc_channel_destroy(ch);
        rm_grpc_server_stop(srv);
        assert_int_equal(access(path, F_OK), -1);
        rmdir(dir);
        /* Exactly one after_send per call that reached a handler. */
        assert_int_equal(hooks, 1 + 20 + 32 + 2);
        grpc_shutdown_blocking();
}

int run_frontend_tests(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_front_end),
        };
        return cmocka_run_group_tests_name("frontend", tests, NULL, NULL);
}
