/* userns_options as kubelet sends them, and what is refused by name. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "userns.h"

static Runtime__V1__IDMapping map(uint32_t host, uint32_t ctr, uint32_t len)
{
        Runtime__V1__IDMapping m = RUNTIME__V1__IDMAPPING__INIT;
        m.host_id = host;
        m.container_id = ctr;
        m.length = len;
        return m;
}

struct req {
        Runtime__V1__NamespaceOption ns;
        Runtime__V1__UserNamespace u;
        Runtime__V1__IDMapping uid, gid;
        Runtime__V1__IDMapping *uids[2], *gids[2];
};

/* A request as kubelet's user namespace manager makes it: one range of 65536 at an
 * offset that is a multiple of 65536. */
static void kubelet_request(struct req *r)
{
        memset(r, 0, sizeof(*r));
        runtime__v1__namespace_option__init(&r->ns);
        runtime__v1__user_namespace__init(&r->u);
        r->ns.pid = RUNTIME__V1__NAMESPACE_MODE__CONTAINER;
        r->ns.userns_options = &r->u;
        r->u.mode = RUNTIME__V1__NAMESPACE_MODE__POD;
        r->uid = map(65536 * 7, 0, 65536);
        r->gid = map(65536 * 7, 0, 65536);
        r->uids[0] = &r->uid;
        r->gids[0] = &r->gid;
        r->u.uids = r->uids;
        r->u.gids = r->gids;
        r->u.n_uids = r->u.n_gids = 1;
}

static void expect_invalid(struct req *r, const char *needle)
{
        bool on = true;
        struct rm_idrange u, g;
        struct rm_error *err = NULL;
        assert_int_equal(rm__pod_userns_parse(&r->ns, &on, &u, &g, &err), -1);
        assert_non_null(err);
        if (strstr(err->msg, needle) == NULL)
                fail_msg("\"%s\" not in \"%s\"", needle, err->msg);
        assert_int_equal(err->code, RM_INVALID_ARGUMENT);
        rm_error_free(err);
}

static void test_kubelet_request_accepted(void **state)
{
        (void)state;
        struct req r;
        kubelet_request(&r);
        bool on = false;
        struct rm_idrange u, g;
        assert_int_equal(rm__pod_userns_parse(&r.ns, &on, &u, &g, NULL), 0);
        assert_true(on);
        assert_int_equal(u.host, 65536 * 7);
        assert_int_equal(u.len, 65536);
        assert_int_equal(g.host, 65536 * 7);
        /* idsPerPod may be a larger multiple of 65536 */
        r.uid.length = r.gid.length = 65536 * 2;
        assert_int_equal(rm__pod_userns_parse(&r.ns, &on, &u, &g, NULL), 0);
        assert_int_equal(u.len, 65536 * 2);
}

static void test_node_or_absent_is_the_host(void **state)
{
        (void)state;
        bool on = true;
        struct rm_idrange u, g;
        assert_int_equal(rm__pod_userns_parse(NULL, &on, &u, &g, NULL), 0);
        assert_false(on);
        struct req r;
        kubelet_request(&r);
        r.u.mode = RUNTIME__V1__NAMESPACE_MODE__NODE;
        r.u.n_uids = r.u.n_gids = 0;
        on = true;
        assert_int_equal(rm__pod_userns_parse(&r.ns, &on, &u, &g, NULL), 0);
        assert_false(on);
        r.u.n_uids = 1;
        expect_invalid(&r, "mode NODE takes no uids or gids");
}

static void test_bad_requests_name_the_field(void **state)
{
        (void)state;
        struct req r;
        kubelet_request(&r);
        r.u.n_uids = 0;
        expect_invalid(&r, "userns_options.uids: exactly one mapping");
        kubelet_request(&r);
        r.uids[1] = &r.gid;
        r.u.n_uids = 2;
        expect_invalid(&r, "userns_options.uids: exactly one mapping is needed, got 2");
        kubelet_request(&r);
        r.gid.length = 1000;
        expect_invalid(&r, "userns_options.gids[0].length 1000");
        kubelet_request(&r);
        r.uid.host_id = 0;
        expect_invalid(&r, "userns_options.uids[0].host_id must not be 0");
        kubelet_request(&r);
        r.gid.container_id = 1;
        expect_invalid(&r, "userns_options.gids[0].container_id must be 0");
        kubelet_request(&r);
        r.uid.host_id = UINT32_MAX - 65535;
        expect_invalid(&r, "runs past the last ID");
        kubelet_request(&r);
        r.u.mode = RUNTIME__V1__NAMESPACE_MODE__TARGET;
        expect_invalid(&r, "userns_options.mode 3");
        kubelet_request(&r);
        r.ns.network = RUNTIME__V1__NAMESPACE_MODE__NODE;
        expect_invalid(&r, "namespace_options.network NODE");
        kubelet_request(&r);
        r.ns.ipc = RUNTIME__V1__NAMESPACE_MODE__NODE;
        expect_invalid(&r, "namespace_options.ipc NODE");
        kubelet_request(&r);
        r.ns.pid = RUNTIME__V1__NAMESPACE_MODE__NODE;
        expect_invalid(&r, "namespace_options.pid NODE");
}

static void test_record_round_trip(void **state)
{
        (void)state;
        struct rm_idrange u = {131072, 65536}, g = {196608, 131072}, u2, g2;
        struct json_object *o = rm__pod_userns_json(&u, &g);
        assert_true(rm__pod_userns_from_json(o, &u2, &g2));
        assert_memory_equal(&u, &u2, sizeof(u));
        assert_memory_equal(&g, &g2, sizeof(g));
        json_object_put(o);
        assert_false(rm__pod_userns_from_json(NULL, &u2, &g2));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_kubelet_request_accepted),
            cmocka_unit_test(test_node_or_absent_is_the_host),
            cmocka_unit_test(test_bad_requests_name_the_field),
            cmocka_unit_test(test_record_round_trip),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
