/* Scenarios that run long or big: `soak` (many pod lifecycles, ExecSyncs and pulls; the
 * daemon's RSS and open fds at the start, after the first lifecycles and at the end) and
 * `node` (a full node's pods: RSS, list latencies, and the time from a restart to the
 * first ListContainers that has every container). One endpoint at a time for the soak, so
 * a runtime's memory is its own; the node's list latencies interleave the endpoints. */
#include <dirent.h>
#include <errno.h>
#include <grpc/status.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ops.h"
#include "proc.h"
#include "remora/xalloc.h"

static long fd_count(pid_t pid)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
        DIR *d = opendir(path);
        if (!d)
                return -1;
        long n = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                n += de->d_name[0] != '.';
        closedir(d);
        return n;
}

static int exec_sync(struct bench *b, struct endpoint *ep, const char *cid, struct cri_result *res)
{
        static char *argv[] = {"/bin/true"};
        Runtime__V1__ExecSyncRequest r = RUNTIME__V1__EXEC_SYNC_REQUEST__INIT;
        r.container_id = (char *)cid;
        r.cmd = argv;
        r.n_cmd = 1;
        r.timeout = 30;
        Runtime__V1__ExecSyncResponse *resp = NULL;
        op_call(b, ep, RT "ExecSync", &r.base, &runtime__v1__exec_sync_response__descriptor,
                (ProtobufCMessage **)&resp, res);
        if (resp) {
                if (resp->exit_code != 0) {
                        res->status = GRPC_STATUS_UNKNOWN;
                        free(res->msg);
                        res->msg = xasprintf("/bin/true exited %d", resp->exit_code);
                }
                protobuf_c_message_free_unpacked(&resp->base, NULL);
        }
        return res->status;
}

static int pull(struct bench *b, struct endpoint *ep, const char *ref, struct cri_result *res)
{
        Runtime__V1__ImageSpec spec = RUNTIME__V1__IMAGE_SPEC__INIT;
        spec.image = (char *)ref;
        Runtime__V1__RemoveImageRequest rm = RUNTIME__V1__REMOVE_IMAGE_REQUEST__INIT;
        rm.image = &spec;
        op_call(b, ep, IMG "RemoveImage", &rm.base, NULL, NULL, res);
        cri_result_clear(res);
        Runtime__V1__PullImageRequest req = RUNTIME__V1__PULL_IMAGE_REQUEST__INIT;
        req.image = &spec;
        return op_call(b, ep, IMG "PullImage", &req.base, NULL, NULL, res);
}

/* Pod + one running container; on failure the pod is torn down and *cid is NULL. */
static bool pod_up(struct bench *b, struct endpoint *ep, struct pod *p, int ctrs, char **cids,
                   const char *const *names)
{
        struct cri_result res;
        memset(p, 0, sizeof(*p));
        const char *what = "RunPodSandbox";
        bool ok = op_run_pod(b, ep, p, &res) == GRPC_STATUS_OK;
        for (int i = 0; i < ctrs; i++)
                cids[i] = NULL;
        for (int i = 0; ok && i < ctrs; i++) {
                cri_result_clear(&res);
                what = "CreateContainer";
                ok = op_create_ctr(b, ep, p, &cids[i], &res) == GRPC_STATUS_OK;
                if (ok) {
                        cri_result_clear(&res);
                        what = "StartContainer";
                        ok = op_ctr(b, ep, what, cids[i], &res) == GRPC_STATUS_OK;
                }
        }
        if (!ok) {
                op_fail(ep, names, what, &res);
                op_teardown_pod(b, ep, p);
        }
        cri_result_clear(&res);
        return ok;
}

static void free_cids(char **cids, int n)
{
        for (int i = 0; i < n; i++) {
                free(cids[i]);
                cids[i] = NULL;
        }
}

static void set_resources(struct endpoint *ep, const char *rss_name, const char *fd_name)
{
        long kib = bench_rss_kib(ep->pid);
        if (kib > 0)
                fig_set_value(ep, rss_name, "MB", kib / 1024.0);
        long fds = fd_count(ep->pid);
        if (fd_name && fds >= 0)
                fig_set_value(ep, fd_name, "count", (double)fds);
}

static void soak_one(struct bench *b, struct endpoint *ep, const char *const *names)
{
        struct cri_result res;
        if (!op_require_image(b, ep, names))
                return;
        bool pulls = b->soak_pulls > 0 && strcmp(b->pull_image, b->image) != 0;
        if (b->soak_pulls > 0 && !pulls)
                fprintf(stderr, "remora-bench: soak: --pull-image is the container image; no "
                                "pulls\n");
        set_resources(ep, names[0], names[3]);
        struct pod execpod;
        char *execcid = NULL;
        if (!pod_up(b, ep, &execpod, 1, &execcid, names))
                return;
        int n = b->soak_pods;
        int early = n >= 1000 ? 100 : (n + 9) / 10;
        long execs_done = 0, pulls_done = 0;
        for (int i = 0; i < n && !bench_interrupted; i++) {
                struct pod p;
                char *cid = NULL;
                double t0 = cri_now_ms();
                if (!pod_up(b, ep, &p, 1, &cid, names))
                        break;
                bool ok = op_ctr(b, ep, "StopContainer", cid, &res) == GRPC_STATUS_OK;
                cri_result_clear(&res);
                ok = ok && op_ctr(b, ep, "RemoveContainer", cid, &res) == GRPC_STATUS_OK;
                cri_result_clear(&res);
                free(cid);
                ok = ok && op_stop_pod(b, ep, p.id, &res) == GRPC_STATUS_OK;
                cri_result_clear(&res);
                ok = ok && op_remove_pod(b, ep, p.id, &res) == GRPC_STATUS_OK;
                if (!ok) {
                        op_fail(ep, names, "pod lifecycle", &res);
                        cri_result_clear(&res);
                        op_teardown_pod(b, ep, &p);
                        break;
                }
                cri_result_clear(&res);
                free(p.id);
                fig_add(ep, "soak: pod lifecycle", "ms", cri_now_ms() - t0);
                /* Spread the execs and pulls evenly over the lifecycles. */
                long want_execs = (long)b->soak_execs * (i + 1) / n;
                for (; execs_done < want_execs && !bench_interrupted; execs_done++) {
                        if (exec_sync(b, ep, execcid, &res) != GRPC_STATUS_OK) {
                                op_fail(ep, names, "ExecSync", &res);
                                cri_result_clear(&res);
                                execs_done = b->soak_execs; /* stop trying */
                                break;
                        }
                        fig_add(ep, "soak: ExecSync", "ms", res.ms);
                        cri_result_clear(&res);
                }
                long want_pulls = pulls ? (long)b->soak_pulls * (i + 1) / n : 0;
                for (; pulls_done < want_pulls && !bench_interrupted; pulls_done++) {
                        if (pull(b, ep, b->pull_image, &res) != GRPC_STATUS_OK) {
                                op_fail(ep, names, "PullImage", &res);
                                cri_result_clear(&res);
                                pulls = false;
                                break;
                        }
                        fig_add(ep, "soak: PullImage", "ms", res.ms);
                        cri_result_clear(&res);
                }
                if (i + 1 == early)
                        set_resources(ep, names[1], NULL);
                if ((i + 1) % 100 == 0)
                        fprintf(stderr,
                                "remora-bench: soak %s: %d lifecycles, %ld execs, %ld "
                                "pulls, RSS %.1f MB\n",
                                ep->label, i + 1, execs_done, pulls_done,
                                bench_rss_kib(ep->pid) / 1024.0);
        }
        free(execcid);
        op_teardown_pod(b, ep, &execpod);
        set_resources(ep, names[2], names[4]);
        sleep(5); /* idle: what the daemon gives back by itself */
        set_resources(ep, names[5], NULL);
}

void scenario_soak(struct bench *b)
{
        char early[96];
        int n = b->soak_pods;
        snprintf(early, sizeof(early), "soak: daemon RSS after %d lifecycles",
                 n >= 1000 ? 100 : (n + 9) / 10);
        const char *names[] = {"soak: daemon RSS start",
                               early,
                               "soak: daemon RSS end",
                               "soak: daemon fds start",
                               "soak: daemon fds end",
                               "soak: daemon RSS end + 5 s idle",
                               NULL};
        for (size_t e = 0; e < b->nep && !bench_interrupted; e++) {
                struct endpoint *ep = &b->ep[e];
                for (int k = 0; names[k]; k++)
                        fig_get(ep, names[k], k == 3 || k == 4 ? "count" : "MB", true);
                fig_get(ep, "soak: pod lifecycle", "ms", false);
                fig_get(ep, "soak: ExecSync", "ms", false);
                fig_get(ep, "soak: PullImage", "ms", false);
                if (ep->pid <= 0) {
                        struct cri_result res = {.status = GRPC_STATUS_UNKNOWN,
                                                 .msg = (char *)"no daemon pid (use --pid)"};
                        op_fail(ep, names, "soak", &res);
                        continue;
                }
                soak_one(b, ep, names);
        }
}

/* ---- node ---- */

static int list(struct bench *b, struct endpoint *ep, const char *method, size_t *count,
                struct cri_result *res)
{
        /* Every list request here is "no filter": one empty message fits them all. */
        Runtime__V1__ListContainersRequest req = RUNTIME__V1__LIST_CONTAINERS_REQUEST__INIT;
        const ProtobufCMessageDescriptor *d =
            strcmp(method, "ListContainers") == 0
                ? &runtime__v1__list_containers_response__descriptor
            : strcmp(method, "ListPodSandbox") == 0
                ? &runtime__v1__list_pod_sandbox_response__descriptor
            : strcmp(method, "ListContainerStats") == 0
                ? &runtime__v1__list_container_stats_response__descriptor
                : &runtime__v1__list_pod_sandbox_stats_response__descriptor;
        char path[96];
        snprintf(path, sizeof(path), RT "%s", method);
        ProtobufCMessage *resp = NULL;
        op_call(b, ep, path, &req.base, d, &resp, res);
        if (resp && count) {
                /* Field 1 of each list response is the repeated items. */
                const ProtobufCFieldDescriptor *f = &d->fields[0];
                *count = *(const size_t *)((const char *)resp + f->quantifier_offset);
        }
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        return res->status;
}

/* Stop the daemon (SIGTERM, wait for it to go), run the start command and time until a
 * ListContainers on a fresh connection lists all `want` containers. */
static void restart(struct bench *b, struct endpoint *ep, const char *cmd, size_t want,
                    const char *name)
{
        kill(ep->pid, SIGTERM);
        for (int i = 0; i < 6000 && kill(ep->pid, 0) == 0; i++) {
                usleep(10000);
                char path[64];
                snprintf(path, sizeof(path), "/proc/%d/stat", (int)ep->pid);
                FILE *f = fopen(path, "re");
                char buf[256] = "";
                if (f) {
                        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
                        buf[n] = '\0';
                        fclose(f);
                }
                char *p = strrchr(buf, ')');
                if (p && p[1] == ' ' && p[2] == 'Z')
                        break; /* a zombie of our shell: gone as a daemon */
        }
        double t0 = cri_now_ms();
        if (system(cmd) != 0) {
                struct cri_result res = {.status = GRPC_STATUS_UNKNOWN,
                                         .msg = (char *)"the --restart command failed"};
                const char *names[] = {name, NULL};
                op_fail(ep, names, "restart", &res);
                return;
        }
        const char *why = NULL;
        for (int i = 0; i < 6000 && !bench_interrupted; i++) {
                struct cri_conn *c = cri_open(ep->conn->target, &why);
                struct cri_conn *old = ep->conn;
                ep->conn = c;
                struct cri_result res;
                size_t n = 0;
                double saved = b->timeout_s;
                b->timeout_s = 1;
                int st = list(b, ep, "ListContainers", &n, &res);
                b->timeout_s = saved;
                cri_result_clear(&res);
                if (st == GRPC_STATUS_OK && n >= want) {
                        fig_set_value(ep, name, "ms", cri_now_ms() - t0);
                        cri_close(old);
                        ep->pid = bench_peer_pid(c->path);
                        return;
                }
                ep->conn = old;
                cri_close(c);
                usleep(5000);
        }
        struct cri_result res = {.status = GRPC_STATUS_DEADLINE_EXCEEDED,
                                 .msg = (char *)"no full ListContainers within 60 s"};
        const char *names[] = {name, NULL};
        op_fail(ep, names, "restart", &res);
}

void scenario_node(struct bench *b)
{
        static const char *const lists[] = {"ListPodSandbox", "ListContainers",
                                            "ListContainerStats", "ListPodSandboxStats"};
        char rss[64], lat[4][96], rst[96];
        int np = b->node_pods;
        snprintf(rss, sizeof(rss), "node: daemon RSS with %d pods x 2", np);
        for (int k = 0; k < 4; k++)
                snprintf(lat[k], sizeof(lat[k]), "node: %s (%d pods x 2)", lists[k], np);
        snprintf(rst, sizeof(rst), "node: restart to full ListContainers");
        const char *names[] = {rss, lat[0], lat[1], lat[2], lat[3], rst, NULL};
        struct pod *pods[BENCH_MAX_ENDPOINTS] = {0};
        bool up[BENCH_MAX_ENDPOINTS] = {0};
        for (size_t e = 0; e < b->nep && !bench_interrupted; e++) {
                struct endpoint *ep = &b->ep[e];
                fig_get(ep, rss, "MB", true);
                for (int k = 0; k < 4; k++)
                        fig_get(ep, lat[k], "ms", false);
                fig_get(ep, rst, "ms", true);
                struct cri_result res;
                if (op_ensure_image(b, ep, b->image, &res) != GRPC_STATUS_OK) {
                        op_fail(ep, names, "pull image", &res);
                        cri_result_clear(&res);
                        continue;
                }
                cri_result_clear(&res);
                pods[e] = xzalloc(sizeof(struct pod) * np);
                up[e] = true;
                double t0 = cri_now_ms();
                for (int i = 0; i < np && up[e] && !bench_interrupted; i++) {
                        char *cids[2];
                        up[e] = pod_up(b, ep, &pods[e][i], 2, cids, names);
                        free_cids(cids, 2);
                }
                fprintf(stderr, "remora-bench: node %s: %d pods x 2 up in %.1f s\n", ep->label, np,
                        (cri_now_ms() - t0) / 1000.0);
                if (up[e] && ep->pid > 0) {
                        sleep(1);
                        set_resources(ep, rss, NULL);
                }
        }
        for (int i = 0; i < b->warmup + b->n && !bench_interrupted; i++)
                for (size_t e = 0; e < b->nep; e++) {
                        struct endpoint *ep = &b->ep[e];
                        for (int k = 0; k < 4 && up[e]; k++) {
                                struct cri_result res;
                                if (list(b, ep, lists[k], NULL, &res) == GRPC_STATUS_OK) {
                                        if (i >= b->warmup)
                                                fig_add(ep, lat[k], "ms", res.ms);
                                } else {
                                        const char *one[] = {lat[k], NULL};
                                        op_fail(ep, one, lists[k], &res);
                                }
                                cri_result_clear(&res);
                        }
                }
        for (size_t e = 0; e < b->nep && !bench_interrupted; e++) {
                struct endpoint *ep = &b->ep[e];
                if (!up[e])
                        continue;
                if (b->restart[e] && ep->pid > 0)
                        restart(b, ep, b->restart[e], (size_t)np * 2, rst);
                else
                        fig_mark(ep, (const char *const[]){rst, NULL}, "ms", FIG_UNSUPPORTED,
                                 "no --restart command for this endpoint");
        }
        for (size_t e = 0; e < b->nep; e++) {
                if (pods[e])
                        for (int i = 0; i < np; i++)
                                if (pods[e][i].id)
                                        op_teardown_pod(b, &b->ep[e], &pods[e][i]);
                free(pods[e]);
        }
}
