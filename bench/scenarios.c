/* Latency scenarios: RPC baseline, pod lifecycle, container lifecycle, parallel pods.
 * With two endpoints every iteration runs on A then on B, so both see the same machine. */
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "proc.h"
#include "remora/xalloc.h"

static void declare(struct bench *b, const char *const *names, const char *unit, bool value)
{
        for (size_t e = 0; e < b->nep; e++)
                for (const char *const *n = names; *n; n++)
                        fig_get(&b->ep[e], *n, unit, value);
}

static bool live(const struct endpoint *ep, const char *const *names)
{
        for (size_t i = 0; i < ep->nfigs; i++)
                if (strcmp(ep->figs[i].name, names[0]) == 0)
                        return ep->figs[i].state == FIG_OK;
        return true;
}

void scenario_rpc(struct bench *b)
{
        static const char *const names[] = {"Version", "Status", NULL};
        declare(b, names, "ms", false);
        for (int i = 0; i < b->warmup + b->n && !bench_interrupted; i++)
                for (size_t e = 0; e < b->nep; e++) {
                        struct endpoint *ep = &b->ep[e];
                        struct cri_result res;
                        Runtime__V1__VersionRequest v = RUNTIME__V1__VERSION_REQUEST__INIT;
                        if (op_call(b, ep, RT "Version", &v.base, NULL, NULL, &res) == 0) {
                                if (i >= b->warmup)
                                        fig_add(ep, "Version", "ms", res.ms);
                        } else {
                                op_fail(ep, names, "Version", &res);
                        }
                        cri_result_clear(&res);
                        Runtime__V1__StatusRequest s = RUNTIME__V1__STATUS_REQUEST__INIT;
                        if (op_call(b, ep, RT "Status", &s.base, NULL, NULL, &res) == 0) {
                                if (i >= b->warmup)
                                        fig_add(ep, "Status", "ms", res.ms);
                        } else {
                                op_fail(ep, names + 1, "Status", &res);
                        }
                        cri_result_clear(&res);
                }
}

/* One timed step: records RES.ms under NAME, or marks the scenario's figures and
 * returns false. */
static bool step(struct endpoint *ep, const char *const *names, const char *name, int st,
                 struct cri_result *res, bool record)
{
        bool ok = st == GRPC_STATUS_OK;
        if (ok && record)
                fig_add(ep, name, "ms", res->ms);
        if (!ok)
                op_fail(ep, names, name, res);
        cri_result_clear(res);
        return ok;
}

void scenario_pod(struct bench *b)
{
        static const char *const names[] = {"RunPodSandbox",
                                            "PodSandboxStatus",
                                            "StopPodSandbox",
                                            "RemovePodSandbox",
                                            "daemon CPU per pod lifecycle",
                                            NULL};
        declare(b, names, "ms", false);
        fig_get(&b->ep[0], names[4], "ms cpu", true)->unit = "ms cpu";
        if (b->nep > 1)
                fig_get(&b->ep[1], names[4], "ms cpu", true)->unit = "ms cpu";
        double cpu[BENCH_MAX_ENDPOINTS] = {0};
        int counted[BENCH_MAX_ENDPOINTS] = {0};
        for (int i = 0; i < b->warmup + b->n && !bench_interrupted; i++)
                for (size_t e = 0; e < b->nep; e++) {
                        struct endpoint *ep = &b->ep[e];
                        if (!live(ep, names))
                                continue;
                        bool rec = i >= b->warmup;
                        double c0 = ep->pid > 0 ? bench_cpu_ms(ep->pid) : -1;
                        struct pod p;
                        struct cri_result res;
                        bool ok = step(ep, names, "RunPodSandbox", op_run_pod(b, ep, &p, &res),
                                       &res, rec) &&
                                  step(ep, names, "PodSandboxStatus",
                                       op_pod_status(b, ep, p.id, &res), &res, rec) &&
                                  step(ep, names, "StopPodSandbox", op_stop_pod(b, ep, p.id, &res),
                                       &res, rec) &&
                                  step(ep, names, "RemovePodSandbox",
                                       op_remove_pod(b, ep, p.id, &res), &res, rec);
                        double c1 = ep->pid > 0 ? bench_cpu_ms(ep->pid) : -1;
                        if (ok && rec && c0 >= 0 && c1 >= 0) {
                                cpu[e] += c1 - c0;
                                counted[e]++;
                        }
                        if (ok)
                                free(p.id);
                        else
                                op_teardown_pod(b, ep, &p);
                }
        for (size_t e = 0; e < b->nep; e++)
                if (counted[e] && live(&b->ep[e], names))
                        fig_set_value(&b->ep[e], names[4], "ms cpu", cpu[e] / counted[e]);
}

/* The share of RunPodSandbox and StopPodSandbox spent on the pod network, as the daemon
 * itself timed it (PodSandboxStatus verbose info: networkSetupMicros, networkTeardownMicros).
 * A runtime that reports no such numbers gets its figures marked unsupported. */
void scenario_network(struct bench *b)
{
        static const char *const names[] = {"pod network setup", "pod network teardown", NULL};
        static const char *const keys[] = {"networkSetupMicros", "networkTeardownMicros"};
        declare(b, names, "ms", false);
        for (int i = 0; i < b->warmup + b->n && !bench_interrupted; i++)
                for (size_t e = 0; e < b->nep; e++) {
                        struct endpoint *ep = &b->ep[e];
                        if (!live(ep, names))
                                continue;
                        struct pod p;
                        struct cri_result res;
                        double us[2] = {-1, -1};
                        bool ok = step(ep, names, "RunPodSandbox", op_run_pod(b, ep, &p, &res),
                                       &res, false) &&
                                  step(ep, names, "PodSandboxStatus",
                                       op_pod_info_number(b, ep, p.id, keys[0], &us[0], &res), &res,
                                       false) &&
                                  step(ep, names, "StopPodSandbox", op_stop_pod(b, ep, p.id, &res),
                                       &res, false) &&
                                  step(ep, names, "PodSandboxStatus",
                                       op_pod_info_number(b, ep, p.id, keys[1], &us[1], &res), &res,
                                       false);
                        op_teardown_pod(b, ep, &p);
                        if (!ok)
                                continue;
                        if (us[0] < 0 || us[1] < 0) {
                                fig_mark(ep, names, "ms", FIG_UNSUPPORTED,
                                         "PodSandboxStatus(verbose) reports no network timings");
                                continue;
                        }
                        if (i >= b->warmup)
                                for (int k = 0; k < 2; k++)
                                        fig_add(ep, names[k], "ms", us[k] / 1000.0);
                }
}

/* Pod + container to RUNNING, timed as one; the pod stays for the caller. */
static bool pod_with_container(struct bench *b, struct endpoint *ep, const char *const *names,
                               struct pod *p, char **cid, double *ms)
{
        struct cri_result res;
        double t0 = cri_now_ms();
        *cid = NULL;
        bool ok =
            step(ep, names, "RunPodSandbox", op_run_pod(b, ep, p, &res), &res, false) &&
            step(ep, names, "CreateContainer", op_create_ctr(b, ep, p, cid, &res), &res, false) &&
            step(ep, names, "StartContainer", op_ctr(b, ep, "StartContainer", *cid, &res), &res,
                 false);
        *ms = cri_now_ms() - t0;
        return ok;
}

static bool need_image(struct bench *b, struct endpoint *ep, const char *const *names)
{
        struct cri_result res;
        int st = op_ensure_image(b, ep, b->image, &res);
        if (st != GRPC_STATUS_OK) {
                char what[256];
                snprintf(what, sizeof(what), "pull %s", b->image);
                op_fail(ep, names, what, &res);
        }
        cri_result_clear(&res);
        return st == GRPC_STATUS_OK;
}

void scenario_container(struct bench *b)
{
        static const char *const names[] = {"CreateContainer",
                                            "StartContainer",
                                            "ContainerStatus",
                                            "StopContainer",
                                            "RemoveContainer",
                                            "pod+container to RUNNING",
                                            NULL};
        declare(b, names, "ms", false);
        struct pod pods[BENCH_MAX_ENDPOINTS] = {0};
        for (size_t e = 0; e < b->nep; e++) {
                struct endpoint *ep = &b->ep[e];
                struct cri_result res;
                if (need_image(b, ep, names))
                        step(ep, names, "RunPodSandbox", op_run_pod(b, ep, &pods[e], &res), &res,
                             false);
        }
        for (int i = 0; i < b->warmup + b->n && !bench_interrupted; i++)
                for (size_t e = 0; e < b->nep; e++) {
                        struct endpoint *ep = &b->ep[e];
                        if (!live(ep, names))
                                continue;
                        bool rec = i >= b->warmup;
                        struct cri_result res;
                        char *cid = NULL;
                        bool ok = step(ep, names, "CreateContainer",
                                       op_create_ctr(b, ep, &pods[e], &cid, &res), &res, rec) &&
                                  step(ep, names, "StartContainer",
                                       op_ctr(b, ep, "StartContainer", cid, &res), &res, rec) &&
                                  step(ep, names, "ContainerStatus",
                                       op_ctr(b, ep, "ContainerStatus", cid, &res), &res, rec) &&
                                  step(ep, names, "StopContainer",
                                       op_ctr(b, ep, "StopContainer", cid, &res), &res, rec) &&
                                  step(ep, names, "RemoveContainer",
                                       op_ctr(b, ep, "RemoveContainer", cid, &res), &res, rec);
                        free(cid);
                        if (!ok)
                                continue;
                        /* From scratch: a fresh pod and its container to RUNNING. */
                        struct pod p = {0};
                        double ms;
                        if (pod_with_container(b, ep, names, &p, &cid, &ms) && rec)
                                fig_add(ep, "pod+container to RUNNING", "ms", ms);
                        free(cid);
                        op_teardown_pod(b, ep, &p);
                }
        for (size_t e = 0; e < b->nep; e++)
                op_teardown_pod(b, &b->ep[e], &pods[e]);
}

struct worker {
        struct bench *b;
        struct endpoint *ep;
        const char *const *names;
        struct pod pod;
        bool ok;
        double ms;
};

static void *par_up(void *arg)
{
        struct worker *w = arg;
        char *cid = NULL;
        w->ok = pod_with_container(w->b, w->ep, w->names, &w->pod, &cid, &w->ms);
        free(cid);
        return NULL;
}

static void *par_down(void *arg)
{
        struct worker *w = arg;
        op_teardown_pod(w->b, w->ep, &w->pod);
        return NULL;
}

static void run_threads(struct worker *w, int n, void *(*fn)(void *))
{
        pthread_t *t = xmalloc(n * sizeof(pthread_t));
        for (int i = 0; i < n; i++)
                pthread_create(&t[i], NULL, fn, &w[i]);
        for (int i = 0; i < n; i++)
                pthread_join(t[i], NULL);
        free(t);
}

void scenario_parallel(struct bench *b)
{
        char lat[64], thr[64];
        snprintf(lat, sizeof(lat), "parallel %d: pod+container to RUNNING", b->parallel);
        snprintf(thr, sizeof(thr), "parallel %d: throughput", b->parallel);
        const char *names[] = {lat, thr, NULL};
        declare(b, names, "ms", false);
        for (size_t e = 0; e < b->nep; e++)
                fig_get(&b->ep[e], thr, "pods/s", true)->unit = "pods/s";
        double wall[BENCH_MAX_ENDPOINTS] = {0};
        int done[BENCH_MAX_ENDPOINTS] = {0};
        struct worker *w = xmalloc(b->parallel * sizeof(*w));
        for (size_t e = 0; e < b->nep; e++)
                need_image(b, &b->ep[e], names);
        for (int i = 0; i < b->warmup + b->n && !bench_interrupted; i++)
                for (size_t e = 0; e < b->nep; e++) {
                        struct endpoint *ep = &b->ep[e];
                        if (!live(ep, names))
                                continue;
                        memset(w, 0, b->parallel * sizeof(*w));
                        for (int k = 0; k < b->parallel; k++)
                                w[k] = (struct worker){.b = b, .ep = ep, .names = names};
                        double t0 = cri_now_ms();
                        run_threads(w, b->parallel, par_up);
                        double t = cri_now_ms() - t0;
                        bool all = true;
                        for (int k = 0; k < b->parallel; k++) {
                                all = all && w[k].ok;
                                if (w[k].ok && i >= b->warmup)
                                        fig_add(ep, lat, "ms", w[k].ms);
                        }
                        if (all && i >= b->warmup) {
                                wall[e] += t;
                                done[e] += b->parallel;
                        }
                        run_threads(w, b->parallel, par_down);
                }
        free(w);
        for (size_t e = 0; e < b->nep; e++)
                if (done[e] && live(&b->ep[e], names))
                        fig_set_value(&b->ep[e], thr, "pods/s", done[e] / (wall[e] / 1000.0));
}
