/* CNI mode against fake plugins: shell scripts in a temp bin dir that log how they were
 * called (argument environment, stdin) and print canned results. No kernel state. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "cni.h"
#include "internal.h"
#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/network.h"
#include "remora/xalloc.h"

#include "test_cni.h"

#define POD_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define POD_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

/* what plugin "fakea" and "fakeb" print on ADD */
#define RESULT_A                                                                                   \
        "{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"eth0\"}],"                          \
        "\"ips\":[{\"address\":\"10.22.0.9/16\",\"interface\":0}]}"
#define RESULT_B                                                                                   \
        "{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"eth0\"}],\"ips\":["                 \
        "{\"address\":\"fd00::5/64\",\"interface\":0},"                                            \
        "{\"address\":\"10.22.0.5/16\",\"interface\":0}],\"dns\":{}}"

struct env {
        char base[64];
        char *conf, *bin, *state, *log, *store_dir;
        struct rm_store *store;
        struct rm_network *net;
};

static void write_text(const char *path, const char *text, mode_t mode)
{
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
        assert_int_equal(chmod(path, mode), 0);
}

/* A fake plugin: logs "<name> <command>" to calls, its environment and stdin to
 * <name>.<command>.env / .in, then runs body. */
static void plugin(struct env *e, const char *name, const char *body)
{
        cleanup_free char *path = xasprintf("%s/%s", e->bin, name);
        cleanup_free char *text = xasprintf("#!/bin/sh\n"
                                            "L=%s\n"
                                            "echo \"%s $CNI_COMMAND\" >> $L/calls\n"
                                            "env | sort > $L/%s.$CNI_COMMAND.env\n"
                                            "cat > $L/%s.$CNI_COMMAND.in\n"
                                            "%s\n",
                                            e->log, name, name, name, body);
        write_text(path, text, 0755);
}

static void ok_plugin(struct env *e, const char *name, const char *result)
{
        cleanup_free char *body =
            xasprintf("if [ \"$CNI_COMMAND\" = ADD ]; then printf '%%s' '%s'; fi\nexit 0", result);
        plugin(e, name, body);
}

static void conflist(struct env *e, const char *file, const char *text)
{
        cleanup_free char *path = xasprintf("%s/%s", e->conf, file);
        write_text(path, text, 0644);
}

static char *read_log(struct env *e, const char *file)
{
        cleanup_free char *path = xasprintf("%s/%s", e->log, file);
        cleanup_error struct rm_error *err = NULL;
        char *s = rm_read_file(path, 1 << 20, NULL, &err);
        if (s == NULL)
                fail_msg("%s", err->msg);
        return s;
}

static bool log_exists(struct env *e, const char *file)
{
        cleanup_free char *path = xasprintf("%s/%s", e->log, file);
        return access(path, F_OK) == 0;
}

static void clear_log(struct env *e)
{
        cleanup_free char *cmd = xasprintf("rm -f %s/*", e->log);
        assert_int_equal(system(cmd), 0);
}

static struct json_object *read_json_log(struct env *e, const char *file)
{
        cleanup_free char *s = read_log(e, file);
        struct json_object *o = json_tokener_parse(s);
        if (o == NULL)
                fail_msg("%s is not JSON: %s", file, s);
        return o;
}

static void open_net(struct env *e, int timeout)
{
        cleanup_free char *cfg = xasprintf("{\"mode\":\"cni\",\"cni_conf_dir\":\"%s\","
                                           "\"cni_bin_dir\":\"/nonexistent/bin:%s\","
                                           "\"cni_plugin_timeout\":%d}",
                                           e->conf, e->bin, timeout);
        cleanup_json struct json_object *o = json_tokener_parse(cfg);
        cleanup_error struct rm_error *err = NULL;
        e->net = rm_network_open(o, e->base, e->state, e->store, &err);
        assert_non_null(e->net);
}

static int env_setup(void **state)
{
        struct env *e = xzalloc(sizeof(*e));
        snprintf(e->base, sizeof(e->base), "/tmp/rm-unit-cni.XXXXXX");
        assert_non_null(mkdtemp(e->base));
        e->conf = xasprintf("%s/net.d", e->base);
        e->bin = xasprintf("%s/bin", e->base);
        e->state = xasprintf("%s/state", e->base);
        e->log = xasprintf("%s/log", e->base);
        e->store_dir = xasprintf("%s/store", e->base);
        assert_int_equal(mkdir(e->bin, 0755), 0);
        assert_int_equal(mkdir(e->log, 0755), 0);
        assert_int_equal(mkdir(e->state, 0700), 0);
        cleanup_error struct rm_error *err = NULL;
        e->store = rm_store_open(e->store_dir, &err);
        assert_non_null(e->store);
        *state = e;
        return 0;
}

static int env_teardown(void **state)
{
        struct env *e = *state;
        rm_network_close(e->net);
        rm_store_close(e->store);
        cleanup_free char *cmd = xasprintf("rm -rf %s", e->base);
        assert_int_equal(system(cmd), 0);
        free(e->conf);
        free(e->bin);
        free(e->state);
        free(e->log);
        free(e->store_dir);
        free(e);
        return 0;
}

static char *cache_path(struct env *e, const char *pod)
{
        return xasprintf("%s/network/cni/%s.json", e->state, pod);
}

static void assert_contains(const char *hay, const char *needle)
{
        if (strstr(hay, needle) == NULL)
                fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

static void assert_json_eq(struct json_object *a, const char *expected)
{
        cleanup_json struct json_object *b = json_tokener_parse(expected);
        assert_non_null(b);
        if (!json_object_equal(a, b))
                fail_msg("%s != %s", json_object_to_json_string(a), expected);
}

static struct json_object *field(struct json_object *o, const char *key)
{
        struct json_object *v = NULL;
        json_object_object_get_ex(o, key, &v);
        return v;
}

#define TWO_PLUGINS                                                                                \
        "{\"cniVersion\":\"1.0.0\",\"name\":\"testnet\",\"plugins\":["                             \
        "{\"type\":\"fakea\",\"capabilities\":{\"portMappings\":true},\"x\":1},"                   \
        "{\"type\":\"fakeb\"}]}"

static void setup_pod(struct env *e, const char *pod, struct rm_pod_network_result *res,
                      struct rm_error **err, int expect)
{
        static const struct rm_port_mapping ports[] = {
            {.protocol = IPPROTO_TCP,
             .container_port = 80,
             .host_port = 8080,
             .host_ip = "127.0.0.1"},
            {.protocol = IPPROTO_UDP, .container_port = 53, .host_port = 5353}};
        struct rm_pod_network_request req = {.pod_id = pod,
                                             .name = "web",
                                             .namespace_ = "prod",
                                             .netns_path = "/nonexistent/netns",
                                             .ports = ports,
                                             .n_ports = 2};
        int r = rm_network_pod_setup(e->net, &req, res, err);
        if (r != expect)
                fail_msg("setup returned %d: %s", r, *err ? (*err)->msg : "");
}

static void test_cni_ready_follows_the_config_dir(void **state)
{
        struct env *e = *state;
        open_net(e, 60);
        const char *reason = NULL, *message = NULL;
        /* no dir at all */
        assert_false(rm_network_ready(e->net, &reason, &message));
        assert_string_equal(reason, "NetworkPluginNotReady");
        assert_contains(message, e->conf);
        /* an empty dir */
        assert_int_equal(mkdir(e->conf, 0755), 0);
        assert_false(rm_network_ready(e->net, &reason, &message));
        assert_contains(message, e->conf);
        assert_contains(message, "no CNI network config");
        /* setup refuses while not ready, naming the dir */
        struct rm_pod_network_result res = {0};
        cleanup_error struct rm_error *err = NULL;
        setup_pod(e, POD_A, &res, &err, -1);
        assert_int_equal(err->code, RM_FAILED_PRECONDITION);
        assert_contains(err->msg, e->conf);
        /* a config whose plugin is missing: not ready, naming the plugin and the dirs */
        conflist(e, "10-test.conflist", TWO_PLUGINS);
        ok_plugin(e, "fakeb", RESULT_B);
        assert_false(rm_network_ready(e->net, &reason, &message));
        assert_contains(message, "\"fakea\"");
        assert_contains(message, e->bin);
        assert_contains(message, "/nonexistent/bin");
        /* the plugin arrives: ready, without reopening */
        ok_plugin(e, "fakea", RESULT_A);
        assert_true(rm_network_ready(e->net, &reason, &message));
        /* a broken config that sorts first wins and is reported with its file name */
        conflist(e, "05-broken.conflist", "{\"cniVersion\":\"1.0.0\",\"plugins\":[]}");
        assert_false(rm_network_ready(e->net, &reason, &message));
        assert_contains(message, "05-broken.conflist");
        conflist(e, "05-broken.conflist",
                 "{\"cniVersion\":\"0.2.0\",\"name\":\"n\","
                 "\"plugins\":[{\"type\":\"fakea\"}]}");
        assert_false(rm_network_ready(e->net, &reason, &message));
        assert_contains(message, "cniVersion \"0.2.0\"");
        /* a single-plugin .conf sorting first is used as a list of one */
        conflist(e, "01-single.conf",
                 "{\"cniVersion\":\"0.4.0\",\"name\":\"one\",\"type\":\"fakeb\"}");
        assert_true(rm_network_ready(e->net, &reason, &message));
        assert_int_equal(rm_network_pod_setup(e->net,
                                              &(struct rm_pod_network_request){
                                                  .pod_id = POD_A, .netns_path = "/nonexistent"},
                                              &res, &err),
                         0);
        assert_int_equal(res.n_ips, 2);
        rm_pod_network_result_release(&res);
        cleanup_json struct json_object *in = read_json_log(e, "fakeb.ADD.in");
        assert_string_equal(json_object_get_string(field(in, "name")), "one");
        assert_string_equal(json_object_get_string(field(in, "cniVersion")), "0.4.0");
        assert_false(log_exists(e, "fakea.ADD.in"));
}

static void test_cni_add_del_chain_and_cache(void **state)
{
        struct env *e = *state;
        assert_int_equal(mkdir(e->conf, 0755), 0);
        conflist(e, "10-test.conflist", TWO_PLUGINS);
        ok_plugin(e, "fakea", RESULT_A);
        ok_plugin(e, "fakeb", RESULT_B);
        open_net(e, 60);
        struct rm_pod_network_result res = {0};
        cleanup_error struct rm_error *err = NULL;
        setup_pod(e, POD_A, &res, &err, 0);
        /* IPv4 first, from the last plugin's result */
        assert_int_equal(res.n_ips, 2);
        assert_string_equal(res.ips[0], "10.22.0.5");
        assert_string_equal(res.ips[1], "fd00::5");
        rm_pod_network_result_release(&res);

        cleanup_free char *calls = read_log(e, "calls");
        assert_string_equal(calls, "fakea ADD\nfakeb ADD\n");
        cleanup_free char *env = read_log(e, "fakea.ADD.env");
        assert_contains(env, "CNI_COMMAND=ADD\n");
        assert_contains(env, "CNI_CONTAINERID=" POD_A "\n");
        assert_contains(env, "CNI_NETNS=/nonexistent/netns\n");
        assert_contains(env, "CNI_IFNAME=eth0\n");
        assert_contains(env, "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web;"
                             "K8S_POD_INFRA_CONTAINER_ID=" POD_A "\n");
        cleanup_free char *cni_path = xasprintf("CNI_PATH=/nonexistent/bin:%s\n", e->bin);
        assert_contains(env, cni_path);

        /* first plugin: its own config plus name/cniVersion and the port mappings */
        cleanup_json struct json_object *in_a = read_json_log(e, "fakea.ADD.in");
        assert_string_equal(json_object_get_string(field(in_a, "name")), "testnet");
        assert_string_equal(json_object_get_string(field(in_a, "cniVersion")), "1.0.0");
        assert_int_equal(json_object_get_int(field(in_a, "x")), 1);
        assert_null(field(in_a, "prevResult"));
        assert_json_eq(field(in_a, "runtimeConfig"),
                       "{\"portMappings\":[{\"hostPort\":8080,\"containerPort\":80,"
                       "\"protocol\":\"tcp\",\"hostIP\":\"127.0.0.1\"},"
                       "{\"hostPort\":5353,\"containerPort\":53,\"protocol\":\"udp\"}]}");
        /* second plugin: the first one's result, no port mappings (no capability) */
        cleanup_json struct json_object *in_b = read_json_log(e, "fakeb.ADD.in");
        assert_json_eq(field(in_b, "prevResult"), RESULT_A);
        assert_null(field(in_b, "runtimeConfig"));

        /* the result is cached; a retried setup gets it without calling a plugin */
        cleanup_free char *cache = cache_path(e, POD_A);
        assert_int_equal(access(cache, F_OK), 0);
        clear_log(e);
        setup_pod(e, POD_A, &res, &err, 0);
        assert_string_equal(res.ips[0], "10.22.0.5");
        rm_pod_network_result_release(&res);
        assert_false(log_exists(e, "calls"));

        /* a restart of remorad in between: DEL still gets the cached result */
        rm_network_close(e->net);
        open_net(e, 60);
        assert_int_equal(rm_network_pod_teardown(e->net, POD_A, "/nonexistent/netns", &err), 0);
        cleanup_free char *dcalls = read_log(e, "calls");
        assert_string_equal(dcalls, "fakeb DEL\nfakea DEL\n");
        cleanup_json struct json_object *del_a = read_json_log(e, "fakea.DEL.in");
        cleanup_json struct json_object *del_b = read_json_log(e, "fakeb.DEL.in");
        assert_json_eq(field(del_a, "prevResult"), RESULT_B);
        assert_json_eq(field(del_b, "prevResult"), RESULT_B);
        assert_non_null(field(del_a, "runtimeConfig"));
        cleanup_free char *denv = read_log(e, "fakea.DEL.env");
        /* the namespace is gone: plugins are told so with an empty CNI_NETNS */
        assert_contains(denv, "CNI_NETNS=\n");
        assert_contains(denv, "K8S_POD_NAME=web;");
        assert_int_equal(access(cache, F_OK), -1);

        /* DEL of a pod with no cache still runs, without prevResult */
        clear_log(e);
        assert_int_equal(rm_network_pod_teardown(e->net, POD_A, NULL, &err), 0);
        cleanup_free char *again = read_log(e, "calls");
        assert_string_equal(again, "fakeb DEL\nfakea DEL\n");
        cleanup_json struct json_object *del_a2 = read_json_log(e, "fakea.DEL.in");
        assert_null(field(del_a2, "prevResult"));
}

static void test_cni_plugin_error_rolls_back(void **state)
{
        struct env *e = *state;
        assert_int_equal(mkdir(e->conf, 0755), 0);
        conflist(e, "10-test.conflist",
                 "{\"cniVersion\":\"0.4.0\",\"name\":\"n\",\"plugins\":[{\"type\":\"fakea\"},"
                 "{\"type\":\"fakec\"}]}");
        ok_plugin(e, "fakea", RESULT_A);
        plugin(e, "fakec",
               "if [ \"$CNI_COMMAND\" = ADD ]; then\n"
               "  printf '{\"cniVersion\":\"0.4.0\",\"code\":7,\"msg\":\"bad subnet\","
               "\"details\":\"10.0.0.0/33\"}'\n  exit 1\nfi\nexit 0");
        open_net(e, 60);
        struct rm_pod_network_result res = {0};
        cleanup_error struct rm_error *err = NULL;
        setup_pod(e, POD_A, &res, &err, -1);
        assert_int_equal(res.n_ips, 0);
        assert_contains(err->msg, "plugin \"fakec\" (2 of 2) ADD failed: bad subnet: 10.0.0.0/33");
        assert_contains(err->msg, POD_A);
        cleanup_free char *calls = read_log(e, "calls");
        assert_string_equal(calls, "fakea ADD\nfakec ADD\nfakec DEL\nfakea DEL\n");
        /* the rollback DEL carries what the plugins made so far */
        cleanup_json struct json_object *del = read_json_log(e, "fakea.DEL.in");
        assert_json_eq(field(del, "prevResult"), RESULT_A);
        cleanup_free char *cache = cache_path(e, POD_A);
        assert_int_equal(access(cache, F_OK), -1);

        /* a plugin that fails without error JSON: its exit status and stderr */
        plugin(e, "fakec", "echo 'no such bridge' >&2; exit 3");
        rm_error_free(steal_pointer(&err));
        setup_pod(e, POD_A, &res, &err, -1);
        assert_contains(err->msg, "plugin \"fakec\" (2 of 2) ADD failed: exited with status 3: "
                                  "no such bridge");
        /* ...and DEL reports the first failure but still runs every plugin */
        clear_log(e);
        rm_error_free(steal_pointer(&err));
        assert_int_equal(rm_network_pod_teardown(e->net, POD_A, NULL, &err), -1);
        assert_contains(err->msg, "\"fakec\"");
        cleanup_free char *dcalls = read_log(e, "calls");
        assert_string_equal(dcalls, "fakec DEL\nfakea DEL\n");
}

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Alive: present and not a zombie (an orphan may wait a while for its reaper). */
static bool process_alive(int pid)
{
        cleanup_free char *path = xasprintf("/proc/%d/stat", pid);
        for (int i = 0; i < 100; i++) {
                cleanup_error struct rm_error *err = NULL;
                cleanup_free char *stat = rm_read_file(path, 4096, NULL, &err);
                const char *paren = stat ? strrchr(stat, ')') : NULL;
                if (paren == NULL || paren[1] == '\0' || paren[2] == 'Z' || paren[2] == 'X')
                        return false;
                usleep(10000);
        }
        return true;
}

static void test_cni_timeout_kills_the_plugin(void **state)
{
        struct env *e = *state;
        assert_int_equal(mkdir(e->conf, 0755), 0);
        conflist(e, "10-test.conflist",
                 "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"plugins\":[{\"type\":\"fakeh\"}]}");
        /* the grandchild holds stdout open too: the whole group must go */
        cleanup_free char *body = xasprintf("if [ \"$CNI_COMMAND\" = ADD ]; then\n"
                                            "  sleep 30 & echo $! > %s/sleeper\n  wait\nfi\nexit 0",
                                            e->log);
        plugin(e, "fakeh", body);
        open_net(e, 1);
        struct rm_pod_network_result res = {0};
        cleanup_error struct rm_error *err = NULL;
        double t0 = now_s();
        setup_pod(e, POD_A, &res, &err, -1);
        double took = now_s() - t0;
        assert_true(took < 5.0);
        assert_int_equal(err->code, RM_DEADLINE_EXCEEDED);
        assert_contains(err->msg, "plugin \"fakeh\" (1 of 1) ADD");
        assert_contains(err->msg, "timed out");
        cleanup_free char *calls = read_log(e, "calls");
        assert_string_equal(calls, "fakeh ADD\nfakeh DEL\n");
        cleanup_free char *pid = read_log(e, "sleeper");
        assert_true(atoi(pid) > 1);
        assert_false(process_alive(atoi(pid)));
}

static void test_cni_missing_plugin_is_named(void **state)
{
        struct env *e = *state;
        assert_int_equal(mkdir(e->conf, 0755), 0);
        conflist(e, "10-test.conflist",
                 "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"plugins\":[{\"type\":\"fakea\"},"
                 "{\"type\":\"nosuch\"}]}");
        ok_plugin(e, "fakea", RESULT_A);
        open_net(e, 60);
        struct rm_pod_network_result res = {0};
        cleanup_error struct rm_error *err = NULL;
        setup_pod(e, POD_A, &res, &err, -1);
        assert_contains(err->msg, "plugin \"nosuch\" not found in /nonexistent/bin:");
        assert_contains(err->msg, e->bin);
        assert_false(log_exists(e, "calls"));
}

static void test_cni_reconcile_dels_dead_pods(void **state)
{
        struct env *e = *state;
        assert_int_equal(mkdir(e->conf, 0755), 0);
        conflist(e, "10-test.conflist", TWO_PLUGINS);
        ok_plugin(e, "fakea", RESULT_A);
        ok_plugin(e, "fakeb", RESULT_B);
        open_net(e, 60);
        struct rm_pod_network_result res = {0};
        cleanup_error struct rm_error *err = NULL;
        setup_pod(e, POD_A, &res, &err, 0);
        rm_pod_network_result_release(&res);
        setup_pod(e, POD_B, &res, &err, 0);
        rm_pod_network_result_release(&res);
        clear_log(e);
        const char *live[] = {POD_A};
        assert_int_equal(rm_network_reconcile(e->net, live, 1, &err), 0);
        cleanup_free char *calls = read_log(e, "calls");
        assert_string_equal(calls, "fakeb DEL\nfakea DEL\n");
        cleanup_free char *env = read_log(e, "fakea.DEL.env");
        assert_contains(env, "CNI_CONTAINERID=" POD_B "\n");
        cleanup_free char *ca = cache_path(e, POD_A), *cb = cache_path(e, POD_B);
        assert_int_equal(access(ca, F_OK), 0);
        assert_int_equal(access(cb, F_OK), -1);
}

static void test_cni_check(void **state)
{
        struct env *e = *state;
        assert_int_equal(mkdir(e->conf, 0755), 0);
        conflist(e, "10-test.conflist", TWO_PLUGINS);
        ok_plugin(e, "fakea", RESULT_A);
        ok_plugin(e, "fakeb", RESULT_B);
        cleanup_free char *cache = xasprintf("%s/network", e->state);
        struct rm__cni *c = rm__cni_new(e->conf, e->bin, cache, 5000);
        cleanup_error struct rm_error *err = NULL;
        assert_int_equal(rm__cni_check(c, POD_A, "/x", &err), -1);
        assert_int_equal(err->code, RM_NOT_FOUND);
        struct rm__cni_pod pod = {.pod_id = POD_A, .netns = "/nonexistent"};
        struct rm_pod_network_result res = {0};
        assert_int_equal(rm__cni_add(c, &pod, &res, &err), 0);
        rm_pod_network_result_release(&res);
        clear_log(e);
        assert_int_equal(rm__cni_check(c, POD_A, NULL, &err), 0);
        cleanup_free char *calls = read_log(e, "calls");
        assert_string_equal(calls, "fakea CHECK\nfakeb CHECK\n");
        cleanup_json struct json_object *in = read_json_log(e, "fakea.CHECK.in");
        assert_json_eq(field(in, "prevResult"), RESULT_B);
        /* a failing CHECK names the plugin */
        plugin(e, "fakeb", "printf '{\"code\":3,\"msg\":\"eth0 is gone\"}'; exit 1");
        rm_error_free(steal_pointer(&err));
        assert_int_equal(rm__cni_check(c, POD_A, NULL, &err), -1);
        assert_contains(err->msg, "plugin \"fakeb\" (2 of 2) CHECK failed: eth0 is gone");
        ok_plugin(e, "fakeb", RESULT_B);
        assert_int_equal(rm__cni_del(c, POD_A, NULL, &err), 0);
        /* disableCheck: nothing runs */
        conflist(e, "10-test.conflist",
                 "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"disableCheck\":true,"
                 "\"plugins\":[{\"type\":\"fakea\"}]}");
        assert_int_equal(rm__cni_add(c, &pod, &res, &err), 0);
        rm_pod_network_result_release(&res);
        clear_log(e);
        assert_int_equal(rm__cni_check(c, POD_A, NULL, &err), 1);
        assert_false(log_exists(e, "calls"));
        rm__cni_free(c);
}

struct par_setup {
        struct env *e;
        const char *pod;
        struct rm_pod_network_result res;
        int rc;
};

static void *par_setup_run(void *arg)
{
        struct par_setup *p = arg;
        struct rm_pod_network_request req = {.pod_id = p->pod, .netns_path = "/nonexistent"};
        cleanup_error struct rm_error *err = NULL;
        p->rc = rm_network_pod_setup(p->e->net, &req, &p->res, &err);
        return NULL;
}

static double run_pair(struct env *e, const char *pod1, const char *pod2, struct par_setup *p)
{
        pthread_t th[2];
        p[0] = (struct par_setup){.e = e, .pod = pod1};
        p[1] = (struct par_setup){.e = e, .pod = pod2};
        double t0 = now_s();
        for (int i = 0; i < 2; i++)
                assert_int_equal(pthread_create(&th[i], NULL, par_setup_run, &p[i]), 0);
        for (int i = 0; i < 2; i++)
                pthread_join(th[i], NULL);
        return now_s() - t0;
}

static void test_cni_pods_in_parallel_one_pod_serialized(void **state)
{
        struct env *e = *state;
        assert_int_equal(mkdir(e->conf, 0755), 0);
        conflist(e, "10-test.conflist",
                 "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"plugins\":[{\"type\":\"fakes\"}]}");
        plugin(e, "fakes", "sleep 1; printf '%s' '" RESULT_A "'");
        open_net(e, 60);
        struct par_setup p[2];
        /* two pods: their plugins run side by side */
        double took = run_pair(e, POD_A, POD_B, p);
        assert_int_equal(p[0].rc, 0);
        assert_int_equal(p[1].rc, 0);
        rm_pod_network_result_release(&p[0].res);
        rm_pod_network_result_release(&p[1].res);
        if (took >= 1.9)
                fail_msg("two pods took %.2f s: their ADDs did not overlap", took);
        /* one pod twice at once: one ADD, the other call waits and gets its result */
        assert_int_equal(rm_network_pod_teardown(e->net, POD_A, NULL, NULL), 0);
        clear_log(e);
        took = run_pair(e, POD_A, POD_A, p);
        assert_int_equal(p[0].rc, 0);
        assert_int_equal(p[1].rc, 0);
        assert_string_equal(p[0].res.ips[0], "10.22.0.9");
        assert_string_equal(p[1].res.ips[0], "10.22.0.9");
        rm_pod_network_result_release(&p[0].res);
        rm_pod_network_result_release(&p[1].res);
        cleanup_free char *calls = read_log(e, "calls");
        assert_string_equal(calls, "fakes ADD\n");
        assert_int_equal(rm_network_pod_teardown(e->net, POD_A, NULL, NULL), 0);
        assert_int_equal(rm_network_pod_teardown(e->net, POD_B, NULL, NULL), 0);
}

static void test_cni_result_ips(void **state)
{
        (void)state;
        struct rm_pod_network_result res = {0};
        cleanup_error struct rm_error *err = NULL;
        /* 0.4.0 carries a version per address; 1.0.0 does not */
        cleanup_json struct json_object *r04 = json_tokener_parse(
            "{\"cniVersion\":\"0.4.0\",\"ips\":[{\"version\":\"6\",\"address\":\"fd00::2/64\"},"
            "{\"version\":\"4\",\"address\":\"10.1.2.3/24\",\"gateway\":\"10.1.2.1\"},"
            "{\"version\":\"4\",\"address\":\"10.9.9.9/24\"}]}");
        assert_int_equal(rm__cni_result_ips(r04, &res, &err), 0);
        assert_int_equal(res.n_ips, 2);
        assert_string_equal(res.ips[0], "10.1.2.3");
        assert_string_equal(res.ips[1], "fd00::2");
        rm_pod_network_result_release(&res);
        cleanup_json struct json_object *none = json_tokener_parse("{\"cniVersion\":\"1.0.0\"}");
        assert_int_equal(rm__cni_result_ips(none, &res, &err), 0);
        assert_int_equal(res.n_ips, 0);
        cleanup_json struct json_object *bad =
            json_tokener_parse("{\"ips\":[{\"address\":\"10.1.2.3/24\"},{\"address\":\"x/1\"}]}");
        assert_int_equal(rm__cni_result_ips(bad, &res, &err), -1);
        assert_contains(err->msg, "ips[1].address");
        assert_int_equal(res.n_ips, 0);
}

int rm_test_cni_run(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_cni_ready_follows_the_config_dir, env_setup,
                                            env_teardown),
            cmocka_unit_test_setup_teardown(test_cni_add_del_chain_and_cache, env_setup,
                                            env_teardown),
            cmocka_unit_test_setup_teardown(test_cni_plugin_error_rolls_back, env_setup,
                                            env_teardown),
            cmocka_unit_test_setup_teardown(test_cni_timeout_kills_the_plugin, env_setup,
                                            env_teardown),
            cmocka_unit_test_setup_teardown(test_cni_missing_plugin_is_named, env_setup,
                                            env_teardown),
            cmocka_unit_test_setup_teardown(test_cni_reconcile_dels_dead_pods, env_setup,
                                            env_teardown),
            cmocka_unit_test_setup_teardown(test_cni_check, env_setup, env_teardown),
            cmocka_unit_test_setup_teardown(test_cni_pods_in_parallel_one_pod_serialized, env_setup,
                                            env_teardown),
            cmocka_unit_test(test_cni_result_ips),
        };
        return cmocka_run_group_tests_name("cni", tests, NULL, NULL);
}
