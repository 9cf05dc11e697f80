/* remora-bench: measures a CRI runtime (or two, side by side) over its socket. */
#include <getopt.h>
#include <json-c/json.h>
#include <grpc/grpc.h>
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ops.h"
#include "proc.h"
#include "remora/cleanup.h"
#include "remora/xalloc.h"

volatile sig_atomic_t bench_interrupted;

static void on_signal(int sig)
{
        (void)sig;
        bench_interrupted = 1;
}

static void usage(FILE *out)
{
        fprintf(out,
                "usage: remora-bench --endpoint unix:///path.sock [--endpoint unix:///other.sock]\n"
                "                    [-n N] [--warmup W] [--parallel P] [--pods K]\n"
                "                    [--image REF] [--pull-image REF] [--list-sizes 10,100,500]\n"
                "                    [--pid PID]... [--helper NAME]... [--only LIST]\n"
                "                    [--timeout SECONDS] [--shared-pid] [--host-network]\n"
                "                    [--soak-pods N] [--soak-execs N] [--soak-pulls N]\n"
                "                    [--node-pods N] [--restart CMD]...\n"
                "                    [--load-execs N] [--load-stops N] [--load-pulls N]\n"
                "                    [--load-seconds S]\n"
                "                    [--json FILE] [--html FILE]\n"
                "       remora-bench --from-json FILE --html FILE\n"
                "\n"
                "  -n N            measured iterations per figure (default 20)\n"
                "  --warmup W      unrecorded iterations before them (default 2)\n"
                "  --parallel P    pods started at once in the parallel scenario (default 4)\n"
                "  --pods K        pods running for the memory figures (default 10)\n"
                "  --image REF     container image (default docker.io/remora/bench-busybox:1)\n"
                "  --pull-image R  image pulled for the pull figures (default: --image)\n"
                "  --pid PID       daemon pid of the matching --endpoint (default: SO_PEERCRED)\n"
                "  --helper NAME   comm prefix of per-pod helper processes (default\n"
                "                  containerd-shim and remora-shim)\n"
                "  --only LIST     scenarios: rpc,pod,network,container,parallel,lists,image,\n"
                "                  memory (the default set), soak, node, load (only when\n"
                "                  named)\n"
                "  --load-execs N  load: ExecSync sleep S in flight (default 64)\n"
                "  --load-stops N  load: StopContainer waiting out S s (default 16)\n"
                "  --load-seconds S  load: how long those last (default 20, at least 10)\n"
                "  --load-pulls N  load: threads pulling --pull-image in a loop (default 4)\n"
                "  --soak-pods N   soak: pod lifecycles, each with one container (default 200)\n"
                "  --soak-execs N  soak: ExecSyncs spread over them (default 2000)\n"
                "  --soak-pulls N  soak: RemoveImage + PullImage of --pull-image (default 10)\n"
                "  --node-pods N   node: pods of two running containers (default 110)\n"
                "  --restart CMD   node: after SIGTERM to the daemon of the matching\n"
                "                  --endpoint, a shell command that starts it again in the\n"
                "                  background; times the first full ListContainers\n"
                "  --shared-pid    pods share one PID namespace (shareProcessNamespace); by\n"
                "                  default each container has its own, as kubelet asks\n"
                "  --host-network  pods use the node's network; compared with a default run,\n"
                "                  shows what pod network setup and teardown cost\n"
                "  --json FILE     write the figures as JSON\n"
                "  --html FILE     write a self-contained HTML page: a bar chart per scenario\n"
                "                  (p50 and p95, the runtimes side by side) and the table\n"
                "  --from-json F   with --html: draw a run saved with --json; measures nothing\n");
}

static bool wanted(const struct bench *b, const char *name)
{
        if (!b->only)
                return strcmp(name, "soak") != 0 && strcmp(name, "node") != 0 &&
                       strcmp(name, "load") != 0;
        size_t len = strlen(name);
        for (const char *p = b->only; (p = strstr(p, name)); p += len)
                if ((p == b->only || p[-1] == ',') && (p[len] == ',' || p[len] == '\0'))
                        return true;
        return false;
}

static int parse_int(const char *s, const char *what, int min)
{
        char *end;
        long v = strtol(s, &end, 10);
        if (*s == '\0' || *end != '\0' || v < min || v > 100000) {
                fprintf(stderr, "remora-bench: %s: %s is not an integer >= %d\n", what, s, min);
                exit(2);
        }
        return (int)v;
}

static void identify(struct bench *b, struct endpoint *ep)
{
        Runtime__V1__VersionRequest req = RUNTIME__V1__VERSION_REQUEST__INIT;
        Runtime__V1__VersionResponse *resp = NULL;
        struct cri_result res;
        op_call(b, ep, RT "Version", &req.base, &runtime__v1__version_response__descriptor,
                (ProtobufCMessage **)&resp, &res);
        if (resp) {
                ep->runtime = xasprintf("%s %s", resp->runtime_name, resp->runtime_version);
                protobuf_c_message_free_unpacked(&resp->base, NULL);
        } else {
                fprintf(stderr, "remora-bench: %s: Version failed: %s\n", ep->conn->target,
                        res.msg ? res.msg : "no answer");
        }
        cri_result_clear(&res);
}

int main(int argc, char **argv)
{
        static struct bench b; /* large; zeroed */
        b.n = 20;
        b.warmup = 2;
        b.parallel = 4;
        b.pods_k = 10;
        b.image = "docker.io/remora/bench-busybox:1";
        b.timeout_s = 120;
        b.soak_pods = 200;
        b.soak_execs = 2000;
        b.soak_pulls = 10;
        b.node_pods = 110;
        b.load_execs = 64;
        b.load_stops = 16;
        b.load_seconds = 20;
        b.load_pulls = 4;
        size_t nrestart = 0;
        b.list_sizes[0] = 10, b.list_sizes[1] = 100, b.list_sizes[2] = 500, b.nlist = 3;
        pthread_mutex_init(&b.seq_lock, NULL);
        const char *endpoints[BENCH_MAX_ENDPOINTS];
        pid_t pids[BENCH_MAX_ENDPOINTS] = {0, 0};
        size_t npid = 0, nhelpers = 0;
        const char *from_json = NULL;

        static const struct option longopts[] = {{"endpoint", required_argument, NULL, 'e'},
                                                 {"warmup", required_argument, NULL, 'w'},
                                                 {"parallel", required_argument, NULL, 'p'},
                                                 {"pods", required_argument, NULL, 'k'},
                                                 {"image", required_argument, NULL, 'i'},
                                                 {"pull-image", required_argument, NULL, 'I'},
                                                 {"json", required_argument, NULL, 'j'},
                                                 {"html", required_argument, NULL, 'W'},
                                                 {"from-json", required_argument, NULL, 'F'},
                                                 {"pid", required_argument, NULL, 'P'},
                                                 {"helper", required_argument, NULL, 'H'},
                                                 {"only", required_argument, NULL, 'o'},
                                                 {"timeout", required_argument, NULL, 't'},
                                                 {"list-sizes", required_argument, NULL, 'l'},
                                                 {"shared-pid", no_argument, NULL, 'S'},
                                                 {"host-network", no_argument, NULL, 'N'},
                                                 {"soak-pods", required_argument, NULL, 1001},
                                                 {"soak-execs", required_argument, NULL, 1002},
                                                 {"soak-pulls", required_argument, NULL, 1003},
                                                 {"node-pods", required_argument, NULL, 1004},
                                                 {"restart", required_argument, NULL, 1005},
                                                 {"load-execs", required_argument, NULL, 1006},
                                                 {"load-stops", required_argument, NULL, 1007},
                                                 {"load-pulls", required_argument, NULL, 1008},
                                                 {"load-seconds", required_argument, NULL, 1009},
                                                 {"help", no_argument, NULL, 'h'},
                                                 {NULL, 0, NULL, 0}};
        int c;
        while ((c = getopt_long(argc, argv, "n:h", longopts, NULL)) != -1) {
                switch (c) {
                case 'e':
                        if (b.nep == BENCH_MAX_ENDPOINTS) {
                                fprintf(stderr, "remora-bench: at most two --endpoint\n");
                                return 2;
                        }
                        endpoints[b.nep++] = optarg;
                        break;
                case 'n':
                        b.n = parse_int(optarg, "-n", 1);
                        break;
                case 'w':
                        b.warmup = parse_int(optarg, "--warmup", 0);
                        break;
                case 'p':
                        b.parallel = parse_int(optarg, "--parallel", 1);
                        break;
                case 'k':
                        b.pods_k = parse_int(optarg, "--pods", 1);
                        break;
                case 'i':
                        b.image = optarg;
                        break;
                case 'I':
                        b.pull_image = optarg;
                        break;
                case 'W':
                        b.html = optarg;
                        break;
                case 'F':
                        from_json = optarg;
                        break;
                case 'j':
                        b.json = optarg;
                        break;
                case 'P':
                        if (npid < BENCH_MAX_ENDPOINTS)
                                pids[npid++] = parse_int(optarg, "--pid", 1);
                        break;
                case 'H':
                        if (nhelpers < sizeof(b.helpers) / sizeof(b.helpers[0]) - 1)
                                b.helpers[nhelpers++] = optarg;
                        break;
                case 'o':
                        b.only = optarg;
                        break;
                case 't':
                        b.timeout_s = parse_int(optarg, "--timeout", 1);
                        break;
                case 'l': {
                        b.nlist = 0;
                        char *copy = xstrdup(optarg), *save = NULL;
                        for (char *t = strtok_r(copy, ",", &save); t && b.nlist < 8;
                             t = strtok_r(NULL, ",", &save))
                                b.list_sizes[b.nlist++] = parse_int(t, "--list-sizes", 1);
                        free(copy);
                        break;
                }
                case 1001:
                        b.soak_pods = parse_int(optarg, "--soak-pods", 1);
                        break;
                case 1002:
                        b.soak_execs = parse_int(optarg, "--soak-execs", 0);
                        break;
                case 1003:
                        b.soak_pulls = parse_int(optarg, "--soak-pulls", 0);
                        break;
                case 1004:
                        b.node_pods = parse_int(optarg, "--node-pods", 1);
                        break;
                case 1005:
                        if (nrestart < BENCH_MAX_ENDPOINTS)
                                b.restart[nrestart++] = optarg;
                        break;
                case 1006:
                        b.load_execs = parse_int(optarg, "--load-execs", 0);
                        break;
                case 1007:
                        b.load_stops = parse_int(optarg, "--load-stops", 0);
                        break;
                case 1008:
                        b.load_pulls = parse_int(optarg, "--load-pulls", 0);
                        break;
                case 1009:
                        b.load_seconds = parse_int(optarg, "--load-seconds", 10);
                        break;
                case 'S':
                        b.shared_pid = true;
                        break;
                case 'N':
                        b.host_network = true;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (from_json) {
                /* Draw a saved run; nothing is measured. */
                if (!b.html || b.nep || optind != argc) {
                        usage(stderr);
                        return 2;
                }
                cleanup_json struct json_object *doc = json_object_from_file(from_json);
                if (doc == NULL) {
                        fprintf(stderr, "remora-bench: %s: %s\n", from_json,
                                json_util_get_last_err());
                        return 1;
                }
                return report_html_doc(doc, b.html) < 0 ? 1 : 0;
        }
        if (b.nep == 0 || optind != argc) {
                usage(stderr);
                return 2;
        }
        if (!b.pull_image)
                b.pull_image = b.image;
        if (nhelpers == 0) {
                b.helpers[nhelpers++] = "containerd-shim";
                b.helpers[nhelpers++] = "remora-shim";
        }
        snprintf(b.run_id, sizeof(b.run_id), "%x%lx", (unsigned)getpid() & 0xffff,
                 (unsigned long)time(NULL) & 0xffffff);

        struct sigaction sa = {.sa_handler = on_signal};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);

        grpc_init();
        static const char *const labels[] = {"A", "B"};
        for (size_t e = 0; e < b.nep; e++) {
                struct endpoint *ep = &b.ep[e];
                const char *why = NULL;
                ep->label = labels[e];
                pthread_mutex_init(&ep->lock, NULL);
                ep->conn = cri_open(endpoints[e], &why);
                if (!ep->conn) {
                        fprintf(stderr, "remora-bench: %s: %s\n", endpoints[e], why);
                        return 2;
                }
                ep->pid = pids[e] ? pids[e] : bench_peer_pid(ep->conn->path);
                if (ep->pid <= 0)
                        fprintf(stderr,
                                "remora-bench: %s: no daemon pid (SO_PEERCRED failed); memory "
                                "and CPU figures need --pid\n",
                                endpoints[e]);
                identify(&b, ep);
                if (!ep->runtime) {
                        fprintf(stderr, "remora-bench: %s does not answer Version\n", endpoints[e]);
                        return 1;
                }
                long kib = ep->pid > 0 ? bench_rss_kib(ep->pid) : -1;
                ep->rss_idle_kib = kib > 0 ? (double)kib : 0;
                fprintf(stderr, "remora-bench: %s = %s: %s, pid %d\n", ep->label, endpoints[e],
                        ep->runtime, (int)ep->pid);
        }

        static const struct {
                const char *name;
                void (*run)(struct bench *);
        } scenarios[] = {{"rpc", scenario_rpc},           {"memory", scenario_memory},
                         {"image", scenario_image},       {"pod", scenario_pod},
                         {"network", scenario_network},   {"container", scenario_container},
                         {"parallel", scenario_parallel}, {"lists", scenario_lists},
                         {"soak", scenario_soak},         {"node", scenario_node},
                         {"load", scenario_load}};
        for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
                if (bench_interrupted)
                        break;
                if (!wanted(&b, scenarios[i].name))
                        continue;
                fprintf(stderr, "remora-bench: %s...\n", scenarios[i].name);
                for (size_t e = 0; e < b.nep; e++)
                        b.ep[e].scenario = scenarios[i].name;
                double t0 = cri_now_ms();
                scenarios[i].run(&b);
                fprintf(stderr, "remora-bench: %s done in %.1f s\n", scenarios[i].name,
                        (cri_now_ms() - t0) / 1000.0);
        }
        if (bench_interrupted)
                fprintf(stderr, "remora-bench: interrupted, cleaning up\n");
        int left = bench_cleanup(&b);
        if (left)
                fprintf(stderr, "remora-bench: %d sandboxes could not be removed\n", left);

        report_table(&b);
        int rc = left ? 1 : 0;
        if (b.json && report_json(&b, b.json) < 0)
                rc = 1;
        if (b.html) {
                cleanup_json struct json_object *doc = report_doc(&b);
                if (report_html_doc(doc, b.html) < 0)
                        rc = 1;
        }
        for (size_t e = 0; e < b.nep; e++)
                cri_close(b.ep[e].conn);
        grpc_shutdown();
        return bench_interrupted ? 130 : rc;
}
