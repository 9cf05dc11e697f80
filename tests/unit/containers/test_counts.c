/* Lists whose length a client controls, processed without a quadratic step.
 * Supplementary groups: the primary gid first, then the image's groups for the user, then
 * the request's, each once; a request past the kernel's NGROUPS_MAX is refused (200,000
 * groups took 12 s of CPU with a pairwise scan). Environment variables: the last value of
 * a name wins, in the place of its first (100,000 variables meant 5e9 comparisons). */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/spec.h"
#include <json-c/json.h>
#include "remora/xalloc.h"
#include "files.h"

static char *rootfs;

static int setup(void **state)
{
        (void)state;
        char tmpl[] = "/tmp/remora-unit-groups-XXXXXX";
        assert_non_null(mkdtemp(tmpl));
        rootfs = xstrdup(tmpl);
        write_file(rootfs, "etc/passwd",
                   "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n");
        write_file(rootfs, "etc/group",
                   "root:x:0:\nwheel:x:10:root\napp:x:1000:\nstaff:x:50:app\nvideo:x:44:app\n");
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        rm_remove_tree(rootfs, NULL);
        free(rootfs);
        return 0;
}

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void expect_groups(const struct rm_spec_user *u, const uint32_t *want, size_t n)
{
        assert_int_equal(u->n_groups, n);
        for (size_t i = 0; i < n; i++)
                assert_int_equal(u->groups[i], want[i]);
}

/* `id` in a container running 0:0 with additional gid 10 must print groups=0(root),10(wheel),
 * as under containerd and CRI-O: the primary gid is in the list. */
static void test_primary_gid_comes_first(void **state)
{
        (void)state;
        Runtime__V1__LinuxContainerSecurityContext sc =
            RUNTIME__V1__LINUX_CONTAINER_SECURITY_CONTEXT__INIT;
        Runtime__V1__Int64Value uid = RUNTIME__V1__INT64_VALUE__INIT;
        Runtime__V1__Int64Value gid = RUNTIME__V1__INT64_VALUE__INIT;
        sc.run_as_user = &uid;
        sc.run_as_group = &gid;
        int64_t extra[] = {10};
        sc.supplemental_groups = extra;
        sc.n_supplemental_groups = 1;
        struct rm_spec_user u;
        struct rm_error *err = NULL;
        assert_int_equal(rm_spec_resolve_user(&sc, NULL, rootfs, &u, &err), 0);
        /* root is in wheel by the image's /etc/group too: 10 appears once. */
        expect_groups(&u, (const uint32_t[]){0, 10}, 2);
        rm_spec_user_release(&u);

        /* No request at all: the primary gid alone. */
        assert_int_equal(rm_spec_resolve_user(NULL, "app", rootfs, &u, &err), 0);
        expect_groups(&u, (const uint32_t[]){1000, 50, 44}, 3);
        rm_spec_user_release(&u);

        /* app with run_as_group 44: the image's groups keep their order, repeats of the
         * primary and of each other go, the request's come last. */
        uid.value = 1000;
        gid.value = 44;
        int64_t more[] = {7, 50, 44, 7, 3, 1000};
        sc.supplemental_groups = more;
        sc.n_supplemental_groups = 6;
        assert_int_equal(rm_spec_resolve_user(&sc, NULL, rootfs, &u, &err), 0);
        expect_groups(&u, (const uint32_t[]){44, 50, 7, 3, 1000}, 5);
        rm_spec_user_release(&u);
}

static void test_too_many_groups_refused_quickly(void **state)
{
        (void)state;
        size_t n = 200000;
        int64_t *many = xmalloc(sizeof(*many) * n);
        for (size_t i = 0; i < n; i++)
                many[i] = (int64_t)(i + 100);
        Runtime__V1__LinuxContainerSecurityContext sc =
            RUNTIME__V1__LINUX_CONTAINER_SECURITY_CONTEXT__INIT;
        sc.supplemental_groups = many;
        sc.n_supplemental_groups = n;
        struct rm_spec_user u;
        struct rm_error *err = NULL;
        double t0 = now_s();
        assert_int_equal(rm_spec_resolve_user(&sc, NULL, rootfs, &u, &err), -1);
        print_message("200000 groups refused in %.3f s\n", now_s() - t0);
        assert_int_equal(err->code, RM_INVALID_ARGUMENT);
        assert_non_null(strstr(err->msg, "supplemental_groups has 200000 groups"));
        rm_error_free(err);
        err = NULL;

        /* NGROUPS_MAX distinct ones plus the primary gid (0) is one too many. */
        sc.n_supplemental_groups = NGROUPS_MAX;
        assert_int_equal(rm_spec_resolve_user(&sc, NULL, rootfs, &u, &err), -1);
        assert_int_equal(err->code, RM_INVALID_ARGUMENT);
        assert_non_null(strstr(err->msg, "would have 65538 groups"));
        rm_error_free(err);
        free(many);
}

/* 65,536 groups, every one given twice in a scrambled order, reduce to their first
 * occurrences; with 0 (the primary gid) among them the list is exactly NGROUPS_MAX. */
static void test_max_groups_deduplicated_in_order(void **state)
{
        (void)state;
        size_t distinct = NGROUPS_MAX, n = 2 * distinct;
        int64_t *v = xmalloc(sizeof(*v) * n);
        /* A permutation of 0..distinct-1 (an odd multiplier mod a power of two), twice;
         * the second copy reversed. */
        for (size_t i = 0; i < distinct; i++) {
                v[i] = (int64_t)((i * 40503u + 17u) % distinct);
                v[n - 1 - i] = v[i];
        }
        Runtime__V1__LinuxContainerSecurityContext sc =
            RUNTIME__V1__LINUX_CONTAINER_SECURITY_CONTEXT__INIT;
        Runtime__V1__Int64Value uid = RUNTIME__V1__INT64_VALUE__INIT;
        uid.value = 4242; /* no passwd entry: gid 0, no image groups */
        sc.run_as_user = &uid;
        sc.supplemental_groups = v;
        sc.n_supplemental_groups = n;
        struct rm_spec_user u;
        struct rm_error *err = NULL;
        /* 131,072 requested are past NGROUPS_MAX as a count, before any dedupe. */
        assert_int_equal(rm_spec_resolve_user(&sc, NULL, rootfs, &u, &err), -1);
        assert_int_equal(err->code, RM_INVALID_ARGUMENT);
        rm_error_free(err);
        err = NULL;

        sc.n_supplemental_groups = distinct;
        double t0 = now_s();
        assert_int_equal(rm_spec_resolve_user(&sc, NULL, rootfs, &u, &err), 0);
        print_message("65536 groups resolved in %.3f s\n", now_s() - t0);
        assert_int_equal(u.n_groups, NGROUPS_MAX);
        assert_int_equal(u.groups[0], 0);
        size_t k = 1;
        for (size_t i = 0; i < distinct; i++) {
                if (v[i] != 0)
                        assert_int_equal(u.groups[k++], (uint32_t)v[i]);
        }
        assert_int_equal(k, NGROUPS_MAX);
        rm_spec_user_release(&u);

        /* Half of them given twice: the repeats go and the first occurrences stay. */
        for (size_t i = 0; i < distinct / 2; i++)
                v[distinct / 2 + i] = v[i];
        assert_int_equal(rm_spec_resolve_user(&sc, NULL, rootfs, &u, &err), 0);
        bool zero_in_first_half = false;
        for (size_t i = 0; i < distinct / 2; i++)
                zero_in_first_half |= v[i] == 0;
        assert_int_equal(u.n_groups, distinct / 2 + (zero_in_first_half ? 0 : 1));
        for (size_t i = 0, j = 1; i < distinct / 2; i++) {
                if (v[i] != 0)
                        assert_int_equal(u.groups[j++], (uint32_t)v[i]);
        }
        rm_spec_user_release(&u);
        free(v);
}

static void test_many_env_vars_last_value_wins(void **state)
{
        (void)state;
        size_t n = 100000;
        Runtime__V1__KeyValue *kv = xzalloc(sizeof(*kv) * n);
        Runtime__V1__KeyValue **envs = xmalloc(sizeof(*envs) * n);
        char **keys = xmalloc(sizeof(*keys) * n);
        /* 50,000 names, each given twice: V<i>=first then V<i>=second. */
        for (size_t i = 0; i < n; i++) {
                runtime__v1__key_value__init(&kv[i]);
                keys[i] = xasprintf("V%zu", i % (n / 2));
                kv[i].key = keys[i];
                kv[i].value.data = (uint8_t *)(i < n / 2 ? "first" : "second");
                kv[i].value.len = strlen((const char *)kv[i].value.data);
                envs[i] = &kv[i];
        }
        Runtime__V1__ContainerConfig cfg = RUNTIME__V1__CONTAINER_CONFIG__INIT;
        Runtime__V1__ContainerMetadata meta = RUNTIME__V1__CONTAINER_METADATA__INIT;
        meta.name = "env";
        cfg.metadata = &meta;
        cfg.envs = envs;
        cfg.n_envs = n;
        char *cmd[] = {"/bin/true"};
        cfg.command = cmd;
        cfg.n_command = 1;
        char *img_env[] = {"V7=image", "PATH=/img"};
        struct rm_spec_image img = {.env = img_env, .n_env = 2};
        struct rm_spec_pod pod = {
            .pod_id = "p", .hostname = "h", .pid_mode = RUNTIME__V1__NAMESPACE_MODE__CONTAINER};
        struct rm_spec_host host = {.oom_score_adj_min = -1000};
        struct rm_error *err = NULL;
        double t0 = now_s();
        struct json_object *spec = rm_spec_build("c", &cfg, &img, &pod, &host, rootfs, &err);
        if (spec == NULL)
                fail_msg("%s", err->msg);
        print_message("100000 env vars built in %.3f s\n", now_s() - t0);
        struct json_object *process = NULL, *env = NULL;
        assert_true(json_object_object_get_ex(spec, "process", &process));
        assert_true(json_object_object_get_ex(process, "env", &env));
        /* V7 from the image keeps its first place; PATH the image's; HOME and HOSTNAME
         * added at the end. */
        assert_int_equal(json_object_array_length(env), n / 2 + 1 + 2);
        assert_string_equal(json_object_get_string(json_object_array_get_idx(env, 0)), "V7=second");
        assert_string_equal(json_object_get_string(json_object_array_get_idx(env, 1)), "PATH=/img");
        assert_string_equal(json_object_get_string(json_object_array_get_idx(env, 2)), "V0=second");
        assert_string_equal(json_object_get_string(json_object_array_get_idx(env, n / 2)),
                            "V49999=second");
        assert_string_equal(json_object_get_string(json_object_array_get_idx(env, n / 2 + 1)),
                            "HOME=/root");
        assert_string_equal(json_object_get_string(json_object_array_get_idx(env, n / 2 + 2)),
                            "HOSTNAME=h");
        json_object_put(spec);
        for (size_t i = 0; i < n; i++)
                free(keys[i]);
        free(keys);
        free(envs);
        free(kv);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_many_env_vars_last_value_wins),
            cmocka_unit_test(test_primary_gid_comes_first),
            cmocka_unit_test(test_too_many_groups_refused_quickly),
            cmocka_unit_test(test_max_groups_deduplicated_in_order),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
