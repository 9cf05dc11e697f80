/* Config parsing and mode "none" of the network module; no kernel state is touched
 * (the real-kernel tests are tests/network/test_network_kernel.py). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <arpa/inet.h>

#include "internal.h"
#include "remora/cleanup.h"
#include "remora/network.h"
#include "test_cni.h"

static void parse_ok(const char *json, struct rm__net_config *cfg)
{
        cleanup_json struct json_object *o = json ? json_tokener_parse(json) : NULL;
        cleanup_error struct rm_error *e = NULL;
        assert_int_equal(rm__net_config_parse(o, cfg, &e), 0);
}

static void parse_bad(const char *json, const char *key)
{
        cleanup_json struct json_object *o = json_tokener_parse(json);
        assert_non_null(o);
        struct rm__net_config cfg;
        cleanup_error struct rm_error *e = NULL;
        assert_int_equal(rm__net_config_parse(o, &cfg, &e), -1);
        assert_non_null(e);
        assert_int_equal(e->code, RM_INVALID_ARGUMENT);
        if (strstr(e->msg, key) == NULL)
                fail_msg("%s: error \"%s\" does not name %s", json, e->msg, key);
}

static void test_defaults(void **state)
{
        (void)state;
        struct rm__net_config c;
        parse_ok(NULL, &c);
        assert_int_equal(c.mode, RM_NET_BRIDGE);
        assert_string_equal(c.bridge, "remora0");
        char buf[16];
        assert_string_equal(rm__ip4_str(c.subnet, buf), "10.77.0.0");
        assert_int_equal(c.prefix, 16);
        assert_string_equal(rm__ip4_str(c.gateway, buf), "10.77.0.1");
        assert_int_equal(c.mtu, 1500);
        assert_string_equal(c.nft_table, "remora");
        assert_string_equal(c.veth_prefix, "rmv");
}

static void test_values(void **state)
{
        (void)state;
        struct rm__net_config c;
        parse_ok("{\"mode\":\"none\",\"bridge\":\"br9\",\"subnet\":\"192.168.77.0/24\","
                 "\"mtu\":9000,\"nft_table\":\"t_1\",\"veth_prefix\":\"ab\"}",
                 &c);
        assert_int_equal(c.mode, RM_NET_NONE);
        assert_string_equal(c.bridge, "br9");
        assert_int_equal(c.prefix, 24);
        assert_int_equal(c.mtu, 9000);
        parse_ok("{\"mode\":\"cni\",\"cni_conf_dir\":\"/x\",\"cni_bin_dir\":\"/y\"}", &c);
        assert_int_equal(c.mode, RM_NET_CNI);
        assert_string_equal(c.cni_conf_dir, "/x");
        assert_int_equal(c.cni_timeout_s, 60);
        parse_ok("{\"cni_bin_dir\":\"/opt/cni/bin:/usr/lib/cni\",\"cni_plugin_timeout\":5}", &c);
        assert_string_equal(c.cni_bin_dir, "/opt/cni/bin:/usr/lib/cni");
        assert_int_equal(c.cni_timeout_s, 5);
}

static void test_invalid(void **state)
{
        (void)state;
        parse_bad("{\"mode\":\"overlay\"}", "network.mode");
        parse_bad("{\"mode\":7}", "network.mode");
        parse_bad("{\"subnet\":\"10.0.0.1/8\"}", "network.subnet");
        parse_bad("{\"subnet\":\"10.0.0.0/4\"}", "network.subnet");
        parse_bad("{\"subnet\":\"10.0.0.0/31\"}", "network.subnet");
        parse_bad("{\"subnet\":\"10.0.0.0\"}", "network.subnet");
        parse_bad("{\"subnet\":\"10.0.0.0/\"}", "network.subnet");
        parse_bad("{\"subnet\":\"fd00::/64\"}", "network.subnet");
        parse_bad("{\"mtu\":100}", "network.mtu");
        parse_bad("{\"mtu\":\"1500\"}", "network.mtu");
        parse_bad("{\"bridge\":\"0123456789abcdef\"}", "network.bridge");
        parse_bad("{\"bridge\":\"a b\"}", "network.bridge");
        parse_bad("{\"nft_table\":\"a-b\"}", "network.nft_table");
        parse_bad("{\"veth_prefix\":\"toolong\"}", "network.veth_prefix");
        parse_bad("{\"cni_bin_dir\":\"relative\"}", "network.cni_bin_dir");
        parse_bad("{\"cni_bin_dir\":\"/usr/lib/cni:relative\"}", "network.cni_bin_dir");
        parse_bad("{\"cni_bin_dir\":\":\"}", "network.cni_bin_dir");
        parse_bad("{\"cni_plugin_timeout\":0}", "network.cni_plugin_timeout");
        parse_bad("{\"subnet6\":\"10.0.0.0/24\"}", "network.subnet6");
        parse_bad("{\"subnet6\":\"fd77::\"}", "network.subnet6");
        parse_bad("{\"subnet6\":\"fd77::/\"}", "network.subnet6");
        parse_bad("{\"subnet6\":\"fd77::/64x\"}", "network.subnet6");
        parse_bad("{\"subnet6\":\"fd77::/47\"}", "network.subnet6");
        parse_bad("{\"subnet6\":\"fd77::/121\"}", "network.subnet6");
        parse_bad("{\"subnet6\":\"fd77::1/64\"}", "network.subnet6");
        parse_bad("{\"subnet6\":\"fd77:0:0:1::/48\"}", "network.subnet6");
        parse_bad("{\"subnet6\":\"fe80::/64\"}", "network.subnet6");
        parse_bad("{\"subnet6\":\"ff00::/64\"}", "network.subnet6");
        parse_bad("{\"subnet6\":\"\"}", "network.subnet6");
        parse_bad("{\"subnet6\":64}", "network.subnet6");
        parse_bad("{\"subnet6\":\"fd77:::/64\"}", "network.subnet6");
}

static void test_subnet6(void **state)
{
        (void)state;
        struct rm__net_config c;
        char buf[INET6_ADDRSTRLEN];
        parse_ok(NULL, &c);
        assert_false(c.has_v6);
        parse_ok("{\"subnet6\":\"fd77::/64\"}", &c);
        assert_true(c.has_v6);
        assert_string_equal(rm__ip6_str(&c.subnet6, buf), "fd77::");
        assert_int_equal(c.prefix6, 64);
        assert_string_equal(rm__ip6_str(&c.gateway6, buf), "fd77::1");
        /* the IPv4 side is untouched by subnet6 */
        assert_string_equal(rm__ip4_str(c.subnet, buf), "10.77.0.0");
        assert_int_equal(c.prefix, 16);
        parse_ok("{\"subnet\":\"10.9.0.0/24\",\"subnet6\":\"2001:db8:1:2::ab00/120\"}", &c);
        assert_int_equal(c.prefix6, 120);
        assert_string_equal(rm__ip6_str(&c.gateway6, buf), "2001:db8:1:2::ab01");
        assert_int_equal(c.prefix, 24);
        parse_ok("{\"subnet6\":\"fd00:1:2::/48\"}", &c);
        assert_int_equal(c.prefix6, 48);
        assert_string_equal(rm__ip6_str(&c.gateway6, buf), "fd00:1:2::1");
}

static void test_mode_none(void **state)
{
        (void)state;
        char dir[] = "/tmp/rm-unit-net.XXXXXX";
        assert_non_null(mkdtemp(dir));
        cleanup_error struct rm_error *e = NULL;
        struct rm_store *store = rm_store_open(dir, &e);
        assert_non_null(store);
        cleanup_json struct json_object *cfg = json_tokener_parse("{\"mode\":\"none\"}");
        struct rm_network *net = rm_network_open(cfg, dir, dir, store, &e);
        assert_non_null(net);
        const char *reason = NULL, *message = NULL;
        assert_false(rm_network_ready(net, &reason, &message));
        assert_string_equal(reason, "NetworkDisabled");
        assert_non_null(message);
        struct rm_pod_network_request req = {.pod_id = "abc", .netns_path = "/nonexistent"};
        struct rm_pod_network_result res = {0};
        assert_int_equal(rm_network_pod_setup(net, &req, &res, &e), 0);
        assert_int_equal(res.n_ips, 0);
        assert_int_equal(rm_network_pod_teardown(net, "abc", NULL, &e), 0);
        assert_int_equal(rm_network_reconcile(net, NULL, 0, &e), 0);
        rm_network_close(net);
        rm_store_close(store);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        assert_int_equal(system(cmd), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_defaults),  cmocka_unit_test(test_values),
            cmocka_unit_test(test_invalid),   cmocka_unit_test(test_subnet6),
            cmocka_unit_test(test_mode_none),
        };
        int failed = cmocka_run_group_tests(tests, NULL, NULL);
        return failed + rm_test_cni_run();
}
