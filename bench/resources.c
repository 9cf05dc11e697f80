/* Scenarios about state and resources: list latency with many containers, image pulls,
 * memory; and the final cleanup. Memory runs one endpoint at a time so that new helper
 * processes can be attributed. */
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ops.h"
#include "proc.h"
#include "remora/xalloc.h"

#define PER_POD 10 /* containers per pod when filling for list latency */

struct fill {
        struct pod *pods;
        size_t npods;
        size_t ctrs;
        bool ok;
};

static bool grow(struct bench *b, struct endpoint *ep, struct fill *f, size_t target,
                 const char *const *names)
{
        while (f->ctrs < target && !bench_interrupted) {
                struct cri_result res;
                if (f->ctrs % PER_POD == 0) {
                        f->pods = xrealloc(f->pods, (f->npods + 1) * sizeof(struct pod));
                        struct pod *p = &f->pods[f->npods++];
                        memset(p, 0, sizeof(*p));
                        if (op_run_pod(b, ep, p, &res) != GRPC_STATUS_OK) {
                                op_fail(ep, names, "RunPodSandbox", &res);
                                cri_result_clear(&res);
                                return false;
                        }
                        cri_result_clear(&res);
                }
                char *cid = NULL;
                struct pod *p = &f->pods[f->npods - 1];
                const char *what = "CreateContainer";
                if (op_create_ctr(b, ep, p, &cid, &res) == GRPC_STATUS_OK) {
                        cri_result_clear(&res);
                        what = "StartContainer";
                        op_ctr(b, ep, what, cid, &res);
                }
                free(cid);
                if (res.status != GRPC_STATUS_OK) {
                        op_fail(ep, names, what, &res);
                        cri_result_clear(&res);
                        return false;
                }
                cri_result_clear(&res);
                f->ctrs++;
        }
        return !bench_interrupted;
}

static int list_call(struct bench *b, struct endpoint *ep, const char *method,
                     struct cri_result *res)
{
        /* The three list requests are all "filter = unset": one empty message fits. */
        Runtime__V1__ListContainersRequest req = RUNTIME__V1__LIST_CONTAINERS_REQUEST__INIT;
        const ProtobufCMessageDescriptor *d =
            strstr(method, "ListContainers") ? &runtime__v1__list_containers_response__descriptor
            : strstr(method, "ListPodSandbox")
                ? &runtime__v1__list_pod_sandbox_response__descriptor
                : &runtime__v1__list_container_stats_response__descriptor;
        ProtobufCMessage *resp = NULL;
        op_call(b, ep, method, &req.base, d, &resp, res);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        return res->status;
}

void scenario_lists(struct bench *b)
{
        static const char *const methods[] = {"ListContainers", "ListPodSandbox",
                                              "ListContainerStats"};
        size_t nn = b->nlist * 3;
        char **names = xmalloc((nn + 1) * sizeof(char *));
        for (size_t s = 0; s < b->nlist; s++)
                for (size_t m = 0; m < 3; m++)
                        names[s * 3 + m] = xasprintf("%s (%zu ctrs)", methods[m], b->list_sizes[s]);
        names[nn] = NULL;
        const char *const *cn = (const char *const *)names;
        struct fill fills[BENCH_MAX_ENDPOINTS] = {0};
        for (size_t e = 0; e < b->nep; e++) {
                fills[e].ok = true;
                for (size_t i = 0; i < nn; i++)
                        fig_get(&b->ep[e], names[i], "ms", false);
                struct cri_result res;
                if (op_ensure_image(b, &b->ep[e], b->image, &res) != GRPC_STATUS_OK) {
                        op_fail(&b->ep[e], cn, "pull image", &res);
                        fills[e].ok = false;
                }
                cri_result_clear(&res);
        }
        for (size_t s = 0; s < b->nlist && !bench_interrupted; s++) {
                for (size_t e = 0; e < b->nep; e++)
                        if (fills[e].ok)
                                fills[e].ok =
                                    grow(b, &b->ep[e], &fills[e], b->list_sizes[s], cn + s * 3);
                for (int i = 0; i < b->warmup + b->n && !bench_interrupted; i++)
                        for (size_t e = 0; e < b->nep; e++) {
                                if (!fills[e].ok)
                                        continue;
                                for (size_t m = 0; m < 3; m++) {
                                        struct cri_result res;
                                        char path[96];
                                        snprintf(path, sizeof(path), RT "%s", methods[m]);
                                        if (list_call(b, &b->ep[e], path, &res) == GRPC_STATUS_OK) {
                                                if (i >= b->warmup)
                                                        fig_add(&b->ep[e], names[s * 3 + m], "ms",
                                                                res.ms);
                                        } else {
                                                const char *one[] = {names[s * 3 + m], NULL};
                                                op_fail(&b->ep[e], one, methods[m], &res);
                                        }
                                        cri_result_clear(&res);
                                }
                        }
        }
        for (size_t e = 0; e < b->nep; e++) {
                for (size_t i = 0; i < fills[e].npods; i++)
                        op_teardown_pod(b, &b->ep[e], &fills[e].pods[i]);
                free(fills[e].pods);
        }
        for (size_t i = 0; i < nn; i++)
                free(names[i]);
        free(names);
}

static int image_status(struct bench *b, struct endpoint *ep, const char *ref, uint64_t *size,
                        struct cri_result *res)
{
        Runtime__V1__ImageSpec spec = RUNTIME__V1__IMAGE_SPEC__INIT;
        spec.image = (char *)ref;
        Runtime__V1__ImageStatusRequest req = RUNTIME__V1__IMAGE_STATUS_REQUEST__INIT;
        req.image = &spec;
        Runtime__V1__ImageStatusResponse *resp = NULL;
        op_call(b, ep, IMG "ImageStatus", &req.base,
                &runtime__v1__image_status_response__descriptor, (ProtobufCMessage **)&resp, res);
        *size = 0;
        if (resp) {
                if (resp->image)
                        *size = resp->image->size;
                protobuf_c_message_free_unpacked(&resp->base, NULL);
        }
        return res->status;
}

void scenario_image(struct bench *b)
{
        static const char *const names[] = {"PullImage",  "pull throughput",   "ImageStatus",
                                            "ListImages", "pulled image size", NULL};
        double bytes[BENCH_MAX_ENDPOINTS] = {0}, ms[BENCH_MAX_ENDPOINTS] = {0};
        for (size_t e = 0; e < b->nep; e++) {
                for (int k = 0; k < 4; k++)
                        fig_get(&b->ep[e], names[k], "ms", false);
                fig_get(&b->ep[e], names[1], "MB/s", true)->unit = "MB/s";
                fig_get(&b->ep[e], names[4], "MB", true)->unit = "MB";
        }
        for (int i = 0; i < b->warmup + b->n && !bench_interrupted; i++)
                for (size_t e = 0; e < b->nep; e++) {
                        struct endpoint *ep = &b->ep[e];
                        if (ep->figs && fig_get(ep, names[0], "ms", false)->state != FIG_OK)
                                continue;
                        bool rec = i >= b->warmup;
                        struct cri_result res;
                        Runtime__V1__ImageSpec spec = RUNTIME__V1__IMAGE_SPEC__INIT;
                        spec.image = (char *)b->pull_image;
                        /* Each pull starts from nothing: a no-op pull measures nothing. */
                        Runtime__V1__RemoveImageRequest rr =
                            RUNTIME__V1__REMOVE_IMAGE_REQUEST__INIT;
                        rr.image = &spec;
                        op_call(b, ep, IMG "RemoveImage", &rr.base, NULL, NULL, &res);
                        if (res.status != GRPC_STATUS_OK && res.status != GRPC_STATUS_NOT_FOUND) {
                                op_fail(ep, names, "RemoveImage", &res);
                                cri_result_clear(&res);
                                continue;
                        }
                        cri_result_clear(&res);
                        Runtime__V1__PullImageRequest pr = RUNTIME__V1__PULL_IMAGE_REQUEST__INIT;
                        pr.image = &spec;
                        ProtobufCMessage *presp = NULL;
                        op_call(b, ep, IMG "PullImage", &pr.base,
                                &runtime__v1__pull_image_response__descriptor, &presp, &res);
                        if (presp)
                                protobuf_c_message_free_unpacked(presp, NULL);
                        if (res.status != GRPC_STATUS_OK) {
                                op_fail(ep, names, "PullImage", &res);
                                cri_result_clear(&res);
                                continue;
                        }
                        double pull_ms = res.ms;
                        cri_result_clear(&res);
                        uint64_t size;
                        if (image_status(b, ep, b->pull_image, &size, &res) != GRPC_STATUS_OK) {
                                op_fail(ep, names, "ImageStatus", &res);
                                cri_result_clear(&res);
                                continue;
                        }
                        if (rec) {
                                fig_add(ep, "PullImage", "ms", pull_ms);
                                fig_add(ep, "ImageStatus", "ms", res.ms);
                                bytes[e] += (double)size;
                                ms[e] += pull_ms;
                                fig_set_value(ep, "pulled image size", "MB", size / 1e6);
                        }
                        cri_result_clear(&res);
                        Runtime__V1__ListImagesRequest lr = RUNTIME__V1__LIST_IMAGES_REQUEST__INIT;
                        ProtobufCMessage *lresp = NULL;
                        op_call(b, ep, IMG "ListImages", &lr.base,
                                &runtime__v1__list_images_response__descriptor, &lresp, &res);
                        if (lresp)
                                protobuf_c_message_free_unpacked(lresp, NULL);
                        if (res.status == GRPC_STATUS_OK && rec)
                                fig_add(ep, "ListImages", "ms", res.ms);
                        else if (res.status != GRPC_STATUS_OK)
                                op_fail(ep, names + 3, "ListImages", &res);
                        cri_result_clear(&res);
                }
        for (size_t e = 0; e < b->nep; e++)
                if (ms[e] > 0 && fig_get(&b->ep[e], names[0], "ms", false)->state == FIG_OK)
                        fig_set_value(&b->ep[e], "pull throughput", "MB/s",
                                      bytes[e] / 1e6 / (ms[e] / 1000.0));
}

void scenario_memory(struct bench *b)
{
        char with[64];
        snprintf(with, sizeof(with), "daemon RSS with %d pods", b->pods_k);
        const char *names[] = {"daemon RSS idle",          with,
                               "daemon RSS per pod",       "helper RSS per pod",
                               "helper processes per pod", NULL};
        for (size_t e = 0; e < b->nep; e++) {
                struct endpoint *ep = &b->ep[e];
                for (int k = 0; k < 4; k++)
                        fig_get(ep, names[k], "MB", true);
                fig_get(ep, names[4], "count", true);
                if (ep->pid <= 0) {
                        struct cri_result res = {.status = GRPC_STATUS_UNKNOWN,
                                                 .msg = (char *)"no daemon pid (use --pid)"};
                        op_fail(ep, names, "memory", &res);
                        continue;
                }
                fig_set_value(ep, names[0], "MB", ep->rss_idle_kib / 1024.0);
                if (bench_interrupted)
                        continue;
                struct cri_result res;
                if (op_ensure_image(b, ep, b->image, &res) != GRPC_STATUS_OK) {
                        op_fail(ep, names + 1, "pull image", &res);
                        cri_result_clear(&res);
                        continue;
                }
                cri_result_clear(&res);
                struct bench_pids before, after;
                bench_find_helpers(b->helpers, &before);
                long rss0 = bench_rss_kib(ep->pid);
                struct pod *pods = xmalloc(b->pods_k * sizeof(*pods));
                memset(pods, 0, b->pods_k * sizeof(*pods));
                bool ok = true;
                for (int k = 0; k < b->pods_k && ok && !bench_interrupted; k++) {
                        char *cid = NULL;
                        const char *what = "RunPodSandbox";
                        if (op_run_pod(b, ep, &pods[k], &res) == GRPC_STATUS_OK) {
                                cri_result_clear(&res);
                                what = "CreateContainer";
                                if (op_create_ctr(b, ep, &pods[k], &cid, &res) == GRPC_STATUS_OK) {
                                        cri_result_clear(&res);
                                        what = "StartContainer";
                                        op_ctr(b, ep, what, cid, &res);
                                }
                        }
                        free(cid);
                        if (res.status != GRPC_STATUS_OK) {
                                op_fail(ep, names + 1, what, &res);
                                ok = false;
                        }
                        cri_result_clear(&res);
                }
                if (ok && !bench_interrupted) {
                        sleep(1); /* let start-up allocations settle */
                        long rss = bench_rss_kib(ep->pid);
                        bench_find_helpers(b->helpers, &after);
                        size_t count;
                        long helpers = bench_new_rss_kib(&before, &after, &count);
                        fig_set_value(ep, with, "MB", rss / 1024.0);
                        fig_set_value(ep, names[2], "MB", (rss - rss0) / 1024.0 / b->pods_k);
                        fig_set_value(ep, names[3], "MB", helpers / 1024.0 / b->pods_k);
                        fig_set_value(ep, names[4], "count", (double)count / b->pods_k);
                        bench_pids_free(&after);
                }
                bench_pids_free(&before);
                for (int k = 0; k < b->pods_k; k++)
                        op_teardown_pod(b, ep, &pods[k]);
                free(pods);
        }
}

int bench_cleanup(struct bench *b)
{
        int failed = 0;
        for (size_t e = 0; e < b->nep; e++) {
                struct endpoint *ep = &b->ep[e];
                while (ep->npods > 0) {
                        struct pod p = {.id = xstrdup(ep->pods[ep->npods - 1])};
                        if (op_teardown_pod(b, ep, &p) != 0) {
                                failed++;
                                /* keep going with the others */
                                pthread_mutex_lock(&ep->lock);
                                free(ep->pods[--ep->npods]);
                                pthread_mutex_unlock(&ep->lock);
                        }
                }
        }
        return failed;
}
