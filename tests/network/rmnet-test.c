/* A test driver for the network module against the real kernel (not installed):
 *   rmnet-test CONFIG_JSON STORE_DIR setup POD_ID NETNS [PROTO:HOST_IP:HOST_PORT:CPORT...]
 *   rmnet-test CONFIG_JSON STORE_DIR teardown POD_ID [NETNS]
 *   rmnet-test CONFIG_JSON STORE_DIR reconcile [LIVE_POD_ID...]
 *   rmnet-test CONFIG_JSON STORE_DIR ready
 *   rmnet-test CONFIG_JSON STORE_DIR bench COUNT ID_PREFIX NETNS_DIR
 *   rmnet-test CONFIG_JSON STORE_DIR recycle POD_ID NETNS_DIR COUNT
 *   rmnet-test CONFIG_JSON STORE_DIR setup-loop POD_PREFIX NETNS_DIR COUNT
 *   rmnet-test CONFIG_JSON STORE_DIR setup-par POD_PREFIX NETNS_DIR COUNT
 * setup prints the pod's IPs, one a line (IPv4 first); an IPv6 HOST_IP goes in brackets;
 * bench prints setup and teardown p50/p95 in microseconds;
 * setup-loop sets up pods <prefix>0..COUNT-1 in NETNS_DIR/<n> (to be killed midway);
 * setup-par does the same from COUNT threads at once and prints "<id> <ip> [<ip6>]" lines. */
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "remora/network.h"
#include "remora/store.h"

static int fail(struct rm_error *e)
{
        fprintf(stderr, "error: %s (%s)\n", e->msg, rm_code_name(e->code));
        rm_error_free(e);
        return 1;
}

static int parse_port(const char *s, struct rm_port_mapping *p, char *hostip, size_t hlen)
{
        char proto[8];
        int hp, cp;
        /* PROTO:HOST_IP:HOST_PORT:CPORT, HOST_IP may be empty or an IPv6 one in brackets */
        const char *c1 = strchr(s, ':');
        const char *ip = c1 ? c1 + 1 : NULL, *ip_end, *c2;
        if (ip && *ip == '[') {
                ip++;
                ip_end = strchr(ip, ']');
                c2 = ip_end && ip_end[1] == ':' ? ip_end + 1 : NULL;
        } else {
                c2 = ip ? strchr(ip, ':') : NULL;
                ip_end = c2;
        }
        if (!c1 || !c2 || (size_t)(c1 - s) >= sizeof(proto) || (size_t)(ip_end - ip) >= hlen ||
            sscanf(c2 + 1, "%d:%d", &hp, &cp) != 2)
                return -1;
        memcpy(proto, s, (size_t)(c1 - s));
        proto[c1 - s] = '\0';
        memcpy(hostip, ip, (size_t)(ip_end - ip));
        hostip[ip_end - ip] = '\0';
        p->protocol = strcmp(proto, "udp") == 0    ? IPPROTO_UDP
                      : strcmp(proto, "sctp") == 0 ? IPPROTO_SCTP
                      : strcmp(proto, "tcp") == 0  ? IPPROTO_TCP
                                                   : -1;
        p->host_port = hp;
        p->container_port = cp;
        p->host_ip = hostip;
        return 0;
}

static double now_us(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

/* COUNT pods one after the other, each as a sandbox has it: its own ID, its own namespace
 * (nsdir/<i>), set up then torn down. */
static int bench(struct rm_network *net, int count, const char *prefix, const char *nsdir)
{
        double *su = calloc((size_t)count, sizeof(double)),
               *td = calloc((size_t)count, sizeof(double));
        for (int i = 0; i < count; i++) {
                struct rm_error *e = NULL;
                char id[128], netns[4096];
                snprintf(id, sizeof(id), "%s%d", prefix, i);
                snprintf(netns, sizeof(netns), "%s/%d", nsdir, i);
                struct rm_pod_network_request req = {.pod_id = id, .netns_path = netns};
                struct rm_pod_network_result res = {0};
                double t0 = now_us();
                if (rm_network_pod_setup(net, &req, &res, &e) < 0)
                        return fail(e);
                double t1 = now_us();
                if (rm_network_pod_teardown(net, id, netns, &e) < 0)
                        return fail(e);
                double t2 = now_us();
                rm_pod_network_result_release(&res);
                su[i] = t1 - t0;
                td[i] = t2 - t1;
        }
        qsort(su, (size_t)count, sizeof(double), cmp_double);
        qsort(td, (size_t)count, sizeof(double), cmp_double);
        printf("setup_p50_us=%.0f setup_p95_us=%.0f teardown_p50_us=%.0f teardown_p95_us=%.0f\n",
               su[count / 2], su[count * 95 / 100], td[count / 2], td[count * 95 / 100]);
        free(su);
        free(td);
        return 0;
}

struct par {
        struct rm_network *net;
        char id[128], path[4096], ip[64], ip6[64];
        int rc;
};

static void *par_setup(void *arg)
{
        struct par *p = arg;
        struct rm_error *e = NULL;
        struct rm_pod_network_request req = {.pod_id = p->id, .netns_path = p->path};
        struct rm_pod_network_result res = {0};
        if (rm_network_pod_setup(p->net, &req, &res, &e) < 0) {
                p->rc = fail(e);
                return NULL;
        }
        snprintf(p->ip, sizeof(p->ip), "%s", res.ips[0]);
        snprintf(p->ip6, sizeof(p->ip6), "%s", res.n_ips > 1 ? res.ips[1] : "");
        rm_pod_network_result_release(&res);
        return NULL;
}

int main(int argc, char **argv)
{
        if (argc < 4) {
                fprintf(stderr, "usage: rmnet-test CONFIG_JSON STORE_DIR CMD ARGS...\n");
                return 2;
        }
        struct rm_error *e = NULL;
        struct json_object *cfg = json_tokener_parse(argv[1]);
        if (cfg == NULL) {
                fprintf(stderr, "bad config JSON\n");
                return 2;
        }
        struct rm_store *store = rm_store_open(argv[2], &e);
        if (store == NULL)
                return fail(e);
        /* runtime files (the CNI result cache) go next to the store, not in /run */
        char state[4096];
        snprintf(state, sizeof(state), "%s-state", argv[2]);
        struct rm_network *net = rm_network_open(cfg, "/", state, store, &e);
        if (net == NULL)
                return fail(e);
        const char *cmd = argv[3];
        int rc = 0;
        if (strcmp(cmd, "ready") == 0) {
                const char *reason = "", *message = "";
                bool ok = rm_network_ready(net, &reason, &message);
                printf("%s %s %s\n", ok ? "true" : "false", ok ? "" : reason, ok ? "" : message);
        } else if (strcmp(cmd, "setup") == 0 && argc >= 6) {
                size_t n = (size_t)(argc - 6);
                struct rm_port_mapping *ports = calloc(n + 1, sizeof(*ports));
                char(*hostips)[64] = calloc(n + 1, 64);
                for (size_t i = 0; i < n; i++)
                        if (parse_port(argv[6 + i], &ports[i], hostips[i], 64) < 0) {
                                fprintf(stderr, "bad port %s\n", argv[6 + i]);
                                return 2;
                        }
                struct rm_pod_network_request req = {.pod_id = argv[4],
                                                     .name = "test",
                                                     .namespace_ = "default",
                                                     .netns_path = argv[5],
                                                     .ports = ports,
                                                     .n_ports = n};
                struct rm_pod_network_result res = {0};
                if (rm_network_pod_setup(net, &req, &res, &e) < 0)
                        rc = fail(e);
                for (size_t i = 0; i < res.n_ips; i++)
                        printf("%s\n", res.ips[i]);
                rm_pod_network_result_release(&res);
                free(ports);
                free(hostips);
        } else if (strcmp(cmd, "teardown") == 0 && argc >= 5) {
                if (rm_network_pod_teardown(net, argv[4], argc > 5 ? argv[5] : NULL, &e) < 0)
                        rc = fail(e);
        } else if (strcmp(cmd, "reconcile") == 0) {
                if (rm_network_reconcile(net, (const char *const *)argv + 4, (size_t)(argc - 4),
                                         &e) < 0)
                        rc = fail(e);
        } else if (strcmp(cmd, "bench") == 0 && argc == 7) {
                rc = bench(net, atoi(argv[4]), argv[5], argv[6]);
        } else if (strcmp(cmd, "recycle") == 0 && argc == 7) {
                /* one pod ID set up and torn down COUNT times, in NETNS_DIR/<n> each time:
                 * every setup wants the veth name the last teardown queued for deletion */
                for (int i = 0; i < atoi(argv[6]); i++) {
                        char path[4096];
                        snprintf(path, sizeof(path), "%s/%d", argv[5], i);
                        struct rm_pod_network_request req = {.pod_id = argv[4], .netns_path = path};
                        struct rm_pod_network_result res = {0};
                        if (rm_network_pod_setup(net, &req, &res, &e) < 0)
                                return fail(e);
                        rm_pod_network_result_release(&res);
                        if (rm_network_pod_teardown(net, argv[4], path, &e) < 0)
                                return fail(e);
                }
        } else if (strcmp(cmd, "setup-loop") == 0 && argc == 7) {
                for (int i = 0; i < atoi(argv[6]); i++) {
                        char id[128], path[4096];
                        snprintf(id, sizeof(id), "%s%d", argv[4], i);
                        snprintf(path, sizeof(path), "%s/%d", argv[5], i);
                        struct rm_pod_network_request req = {.pod_id = id, .netns_path = path};
                        struct rm_pod_network_result res = {0};
                        if (rm_network_pod_setup(net, &req, &res, &e) < 0)
                                return fail(e);
                        printf("%s %s\n", id, res.ips[0]);
                        fflush(stdout);
                        rm_pod_network_result_release(&res);
                }
        } else if (strcmp(cmd, "setup-par") == 0 && argc == 7) {
                int n = atoi(argv[6]);
                struct par *ps = calloc((size_t)n, sizeof(*ps));
                pthread_t *th = calloc((size_t)n, sizeof(*th));
                for (int i = 0; i < n; i++) {
                        ps[i].net = net;
                        snprintf(ps[i].id, sizeof(ps[i].id), "%s%d", argv[4], i);
                        snprintf(ps[i].path, sizeof(ps[i].path), "%s/%d", argv[5], i);
                        pthread_create(&th[i], NULL, par_setup, &ps[i]);
                }
                for (int i = 0; i < n; i++) {
                        pthread_join(th[i], NULL);
                        rc |= ps[i].rc;
                        printf("%s %s%s%s\n", ps[i].id, ps[i].ip, ps[i].ip6[0] ? " " : "",
                               ps[i].ip6);
                }
                free(ps);
                free(th);
        } else {
                fprintf(stderr, "unknown command or wrong arguments: %s\n", cmd);
                rc = 2;
        }
        rm_network_close(net);
        rm_store_close(store);
        json_object_put(cfg);
        return rc;
}
