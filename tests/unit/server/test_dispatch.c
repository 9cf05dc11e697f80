#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.pb-c.h"
#include "dispatch.h"
#include "list_stream.h"
#include "remora/cleanup.h"
#include "remora/pblist.h"
#include "remora/xalloc.h"
#include "tests.h"

static const struct rm_handler_entry no_handlers[] = {{NULL, NULL, NULL, RM_CALL_POOL}};

static char seen_version[64];

/* Echoes the request's version field back as runtime_version. */
static int echo_version(struct rm_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp,
                        struct rm_error **err)
{
        (void)err;
        const Runtime__V1__VersionRequest *in = (const Runtime__V1__VersionRequest *)req;
        snprintf(seen_version, sizeof(seen_version), "%s", in->version);
        Runtime__V1__VersionResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__version_response__init(r);
        r->runtime_version = rm_arena_strdup(call->arena, in->version);
        *resp = &r->base;
        return 0;
}

static int refuse(struct rm_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp,
                  struct rm_error **err)
{
        (void)call;
        (void)req;
        (void)resp;
        return rm_error_set(err, RM_NOT_FOUND, "image %s not found", "busybox");
}

static const struct rm_handler_entry test_handlers[] = {
    {"runtime.v1.RuntimeService", "Version", echo_version, RM_CALL_QUICK},
    {"runtime.v1.ImageService", "ImageStatus", refuse, RM_CALL_QUICK},
    {NULL, NULL, NULL, RM_CALL_POOL},
};

static void test_table_covers_both_services(void **state)
{
        (void)state;
        cleanup_error struct rm_error *err = NULL;
        struct rm_dispatch *d = rm_dispatch_new(no_handlers, NULL, &err);
        assert_non_null(d);
        size_t implemented = 99;
        size_t total = rm_dispatch_count(d, &implemented);
        assert_int_equal(total, runtime__v1__runtime_service__descriptor.n_methods +
                                    runtime__v1__image_service__descriptor.n_methods);
        assert_true(runtime__v1__image_service__descriptor.n_methods >= 5);
        assert_int_equal(implemented, 0);
        rm_dispatch_free(d);
}

static void test_daemon_handlers_all_exist(void **state)
{
        (void)state;
        cleanup_error struct rm_error *err = NULL;
        struct rm_dispatch *d = rm_dispatch_new(rm_handlers, NULL, &err);
        assert_non_null(d);
        size_t implemented = 0, expected = 0;
        rm_dispatch_count(d, &implemented);
        for (const struct rm_handler_entry *h = rm_handlers; h->fn; h++)
                expected++;
        assert_int_equal(implemented, expected);
        rm_dispatch_free(d);
}

static void test_handler_for_unknown_method_is_refused(void **state)
{
        (void)state;
        const struct rm_handler_entry bad[] = {
            {"runtime.v1.RuntimeService", "Versionn", echo_version, RM_CALL_QUICK},
            {NULL, NULL, NULL, RM_CALL_POOL},
        };
        cleanup_error struct rm_error *err = NULL;
        assert_null(rm_dispatch_new(bad, NULL, &err));
        assert_int_equal(err->code, RM_INTERNAL);
        assert_non_null(strstr(err->msg, "/runtime.v1.RuntimeService/Versionn"));
}

static void call(struct rm_dispatch *d, const char *method, const uint8_t *in, size_t len,
                 enum rm_code want, const char *needle)
{
        cleanup_error struct rm_error *err = NULL;
        uint8_t *out = NULL;
        size_t out_len = 0;
        struct rm_call c = {0};
        int rc = rm_dispatch_call(d, &c, method, in, len, &out, &out_len, &err);
        assert_int_equal(rc, -1);
        assert_null(out);
        assert_int_equal(err->code, want);
        if (strstr(err->msg, needle) == NULL)
                fail_msg("\"%s\" not in \"%s\"", needle, err->msg);
}

static void test_errors(void **state)
{
        (void)state;
        struct rm_dispatch *d = rm_dispatch_new(test_handlers, NULL, NULL);
        assert_non_null(d);
        call(d, "/runtime.v1.RuntimeService/Nope", NULL, 0, RM_UNIMPLEMENTED,
             "unknown method /runtime.v1.RuntimeService/Nope");
        call(d, "/runtime.v1.RuntimeService/ListContainers", NULL, 0, RM_UNIMPLEMENTED,
             "/runtime.v1.RuntimeService/ListContainers is not implemented");
        /* A method name without its service is not the same method. */
        call(d, "Version", NULL, 0, RM_UNIMPLEMENTED, "unknown method Version");

        static const uint8_t truncated[] = {0x0a, 0x05, 'a', 'b'};
        call(d, "/runtime.v1.RuntimeService/Version", truncated, sizeof(truncated),
             RM_INVALID_ARGUMENT, "does not decode as runtime.v1.VersionRequest");
        static const uint8_t bad_wire[] = {0x0f};
        call(d, "/runtime.v1.RuntimeService/Version", bad_wire, sizeof(bad_wire),
             RM_INVALID_ARGUMENT, "VersionRequest");

        /* A handler's error reaches the caller with its code and message intact. */
        call(d, "/runtime.v1.ImageService/ImageStatus", NULL, 0, RM_NOT_FOUND,
             "image busybox not found");
        rm_dispatch_free(d);
}

static void test_round_trip(void **state)
{
        (void)state;
        struct rm_dispatch *d = rm_dispatch_new(test_handlers, NULL, NULL);
        Runtime__V1__VersionRequest req = RUNTIME__V1__VERSION_REQUEST__INIT;
        req.version = "v1alpha-test";
        uint8_t buf[64];
        size_t len = runtime__v1__version_request__pack(&req, buf);

        uint8_t *out = NULL;
        size_t out_len = 0;
        cleanup_error struct rm_error *err = NULL;
        struct rm_call c = {0};
        assert_int_equal(rm_dispatch_call(d, &c, "/runtime.v1.RuntimeService/Version", buf, len,
                                          &out, &out_len, &err),
                         0);
        assert_null(err);
        assert_string_equal(seen_version, "v1alpha-test");
        Runtime__V1__VersionResponse *resp =
            runtime__v1__version_response__unpack(NULL, out_len, out);
        assert_non_null(resp);
        assert_string_equal(resp->runtime_version, "v1alpha-test");
        runtime__v1__version_response__free_unpacked(resp, NULL);
        free(out);
        rm_dispatch_free(d);
}

/* A deliberately missing method says why; stream methods count as served, so the
 * daemon's table with its stream methods serves all but CheckpointContainer. */
static void test_why_and_stream_count(void **state)
{
        (void)state;
        struct rm_dispatch *d = rm_dispatch_new(test_handlers, NULL, NULL);
        static const struct rm_unimplemented_entry why[] = {
            {"runtime.v1.RuntimeService", "CheckpointContainer", "no CRIU here"},
            {NULL, NULL, NULL},
        };
        assert_int_equal(rm_dispatch_explain(d, why, NULL), 0);
        call(d, "/runtime.v1.RuntimeService/CheckpointContainer", NULL, 0, RM_UNIMPLEMENTED,
             "CheckpointContainer is not implemented: no CRIU here");
        cleanup_error struct rm_error *err = NULL;
        assert_int_equal(rm_dispatch_mark_streamed(d, "/runtime.v1.RuntimeService/Nope", &err), -1);
        assert_int_equal(err->code, RM_INTERNAL);
        rm_dispatch_free(d);

        d = rm_dispatch_new(rm_handlers, NULL, NULL);
        assert_non_null(d);
        assert_int_equal(rm_dispatch_explain(d, rm_unimplemented, NULL), 0);
        call(d, "/runtime.v1.RuntimeService/CheckpointContainer", NULL, 0, RM_UNIMPLEMENTED,
             "vdso: Unexpected rt vDSO area bounds");
        struct rm_list_streams *ls = rm_list_streams_new(d, NULL, NULL);
        assert_non_null(ls);
        size_t n = 0;
        const struct rm_stream_method *m = rm_list_streams_methods(ls, &n);
        assert_int_equal(n, 6);
        for (size_t i = 0; i < n; i++)
                assert_int_equal(rm_dispatch_mark_streamed(d, m[i].path, NULL), 0);
        assert_int_equal(
            rm_dispatch_mark_streamed(d, "/runtime.v1.RuntimeService/GetContainerEvents", NULL), 0);
        size_t implemented = 0, total = rm_dispatch_count(d, &implemented);
        assert_int_equal(total, 41);
        assert_int_equal(implemented, 40);
        rm_list_streams_free(ls);
        rm_dispatch_free(d);
}

struct collected {
        Runtime__V1__StreamContainersResponse *msgs[64];
        size_t n, max_len;
};

static int collect(void *ctx, const uint8_t *msg, size_t len)
{
        struct collected *c = ctx;
        assert_true(c->n < 64);
        c->msgs[c->n] = runtime__v1__stream_containers_response__unpack(NULL, len, msg);
        assert_non_null(c->msgs[c->n]);
        c->n++;
        if (len > c->max_len)
                c->max_len = len;
        return 0;
}

/* 1,000 containers in batches of at most 8 KiB: every one arrives, once, in order. */
static void test_batches(void **state)
{
        (void)state;
        enum { N = 1000 };
        Runtime__V1__Container ctrs[N], *ptrs[N];
        char ids[N][16];
        for (size_t i = 0; i < N; i++) {
                runtime__v1__container__init(&ctrs[i]);
                snprintf(ids[i], sizeof(ids[i]), "c%05zu", i);
                ctrs[i].id = ids[i];
                ctrs[i].pod_sandbox_id = "pod-with-a-longish-identifier";
                ptrs[i] = &ctrs[i];
        }
        Runtime__V1__ListContainersResponse l = RUNTIME__V1__LIST_CONTAINERS_RESPONSE__INIT;
        l.containers = ptrs;
        l.n_containers = N;
        size_t len = runtime__v1__list_containers_response__get_packed_size(&l);
        cleanup_free uint8_t *bytes = xmalloc(len);
        runtime__v1__list_containers_response__pack(&l, bytes);
        struct collected c = {0};
        assert_int_equal(rm_list_stream_batches(bytes, len, 8192, collect, &c), 0);
        assert_true(c.n > 1);
        assert_true(c.max_len <= 8192);
        size_t seen = 0;
        for (size_t k = 0; k < c.n; k++) {
                for (size_t i = 0; i < c.msgs[k]->n_containers; i++)
                        assert_string_equal(c.msgs[k]->containers[i]->id, ids[seen++]);
                runtime__v1__stream_containers_response__free_unpacked(c.msgs[k], NULL);
        }
        assert_int_equal(seen, N);

        /* An empty list sends nothing. */
        struct collected none = {0};
        assert_int_equal(rm_list_stream_batches(bytes, 0, 8192, collect, &none), 0);
        assert_int_equal(none.n, 0);

        /* Bytes that are not a list's (another field; an entry cut short) are refused. */
        const uint8_t other_field[] = {0x12, 0x00};
        assert_int_equal(rm_list_stream_batches(other_field, 2, 8192, collect, &none), -2);
        assert_int_equal(rm_list_stream_batches(bytes, len - 1, 1u << 30, collect, &none), -2);
        assert_int_equal(none.n, 0);
}

/* Objects for rm_pb_list_build: a packed item each, odd ones left out. */
static const struct rm_pb_packed *every_other(void *obj, void *ctx)
{
        size_t *asked = ctx;
        (*asked)++;
        const struct rm_pb_packed *p = obj;
        return p->version % 2 ? NULL : p;
}

/* A list built from kept items is the list message packed, byte for byte. */
static void test_list_build(void **state)
{
        (void)state;
        enum { N = 300 };
        Runtime__V1__Container ctrs[N], *kept[N];
        struct rm_pb_packed packed[N];
        void *objs[N];
        char ids[N][16];
        size_t n_kept = 0;
        for (size_t i = 0; i < N; i++) {
                runtime__v1__container__init(&ctrs[i]);
                snprintf(ids[i], sizeof(ids[i]), "c%05zu", i);
                ctrs[i].id = ids[i];
                ctrs[i].created_at = (int64_t)i * 1000;
                packed[i] = (struct rm_pb_packed){0};
                rm_pb_packed_set(&packed[i], &ctrs[i].base, (int)i);
                objs[i] = &packed[i];
                if (i % 2 == 0)
                        kept[n_kept++] = &ctrs[i];
        }
        Runtime__V1__ListContainersResponse l = RUNTIME__V1__LIST_CONTAINERS_RESPONSE__INIT;
        l.containers = kept;
        l.n_containers = n_kept;
        size_t want_len = runtime__v1__list_containers_response__get_packed_size(&l);
        cleanup_free uint8_t *want = xmalloc(want_len);
        runtime__v1__list_containers_response__pack(&l, want);
        size_t asked = 0, len = 0;
        cleanup_free uint8_t *got = rm_pb_list_build(objs, N, every_other, &asked, &len);
        assert_int_equal(asked, N);
        assert_int_equal(len, want_len);
        assert_memory_equal(got, want, len);
        size_t none_len = 1;
        cleanup_free uint8_t *none = rm_pb_list_build(objs, 0, every_other, &asked, &none_len);
        assert_non_null(none);
        assert_int_equal(none_len, 0);
        for (size_t i = 0; i < N; i++)
                rm_pb_packed_clear(&packed[i]);
}

static const struct rm_cancel *seen_cancel;
static void hook(void *arg, bool delivered)
{
        (void)arg;
        (void)delivered;
}

/* Records the token it was given and asks to hear about delivery. */
static int note_cancel(struct rm_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp,
                       struct rm_error **err)
{
        (void)req;
        (void)err;
        seen_cancel = call->cancel;
        call->after_send = hook;
        Runtime__V1__StopContainerResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__stop_container_response__init(r);
        *resp = &r->base;
        return 0;
}

static void test_kinds_cancel_and_after_send(void **state)
{
        (void)state;
        const struct rm_handler_entry h[] = {
            {"runtime.v1.RuntimeService", "StopContainer", note_cancel, RM_CALL_PROMISE},
            {"runtime.v1.RuntimeService", "ExecSync", note_cancel, RM_CALL_POOL},
            {"runtime.v1.RuntimeService", "Version", echo_version, RM_CALL_QUICK},
            {NULL, NULL, NULL, RM_CALL_POOL},
        };
        struct rm_dispatch *d = rm_dispatch_new(h, NULL, NULL);
        assert_non_null(d);
        size_t n = rm_dispatch_count(d, NULL);
        int found = 0;
        for (size_t i = 0; i < n; i++) {
                enum rm_call_kind k;
                const char *path = rm_dispatch_method(d, i, &k);
                if (strcmp(path, "/runtime.v1.RuntimeService/StopContainer") == 0)
                        found++, assert_int_equal(k, RM_CALL_PROMISE);
                else if (strcmp(path, "/runtime.v1.RuntimeService/ExecSync") == 0)
                        found++, assert_int_equal(k, RM_CALL_POOL);
                else if (strcmp(path, "/runtime.v1.RuntimeService/Version") == 0)
                        found++, assert_int_equal(k, RM_CALL_QUICK);
                else if (strcmp(path, "/runtime.v1.RuntimeService/ListContainers") == 0)
                        found++, assert_int_equal(k, RM_CALL_QUICK); /* no handler */
        }
        assert_int_equal(found, 4);

        struct rm_cancel token;
        rm_cancel_init(&token, 0);
        /* A pool method sees the call's token and hands its after_send back in the call;
         * a promise never sees a token. */
        struct rm_call rcall = {.cancel = &token};
        uint8_t *out = NULL;
        size_t out_len = 0;
        cleanup_error struct rm_error *err = NULL;
        assert_int_equal(rm_dispatch_call(d, &rcall, "/runtime.v1.RuntimeService/ExecSync", NULL, 0,
                                          &out, &out_len, &err),
                         0);
        assert_ptr_equal(seen_cancel, &token);
        assert_ptr_equal(rcall.after_send, hook);
        assert_null(rcall.arena);
        free(out);
        out = NULL;
        struct rm_call promise = {.cancel = &token};
        assert_int_equal(rm_dispatch_call(d, &promise, "/runtime.v1.RuntimeService/StopContainer",
                                          NULL, 0, &out, &out_len, &err),
                         0);
        assert_null(seen_cancel);
        free(out);
        rm_cancel_release(&token);
        rm_dispatch_free(d);
}

int run_dispatch_tests(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_table_covers_both_services),
            cmocka_unit_test(test_daemon_handlers_all_exist),
            cmocka_unit_test(test_handler_for_unknown_method_is_refused),
            cmocka_unit_test(test_errors),
            cmocka_unit_test(test_round_trip),
            cmocka_unit_test(test_why_and_stream_count),
            cmocka_unit_test(test_batches),
            cmocka_unit_test(test_list_build),
            cmocka_unit_test(test_kinds_cancel_and_after_send),
        };
        return cmocka_run_group_tests_name("dispatch", tests, NULL, NULL);
}
