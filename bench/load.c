/* Scenario `load`: the calls kubelet polls, timed while slow calls hold the runtime —
 * `--load-execs` ExecSync `sleep` in flight, `--load-stops` StopContainer calls waiting
 * out a grace period (containers that ignore SIGTERM) and pulls in a loop. One endpoint
 * at a time: the load is the runtime's own. */
#include <grpc/status.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ops.h"
#include "remora/xalloc.h"

#define PROBE_SECONDS 8 /* how long the quick calls are timed, inside --load-seconds */
#define LOAD_PULLS    "under load: pulls completed"

struct load {
        struct bench *b;
        struct endpoint *ep;
        const char *cid; /* ExecSync target, or StopContainer target */
        atomic_bool stop;
        atomic_int failed;
        atomic_int pulled; /* PullImage calls that succeeded */
        char *first_error;
        pthread_mutex_t lock;
};

static void note_failure(struct load *l, const char *what, struct cri_result *res)
{
        atomic_fetch_add(&l->failed, 1);
        pthread_mutex_lock(&l->lock);
        if (!l->first_error)
                l->first_error = xasprintf("%s: %s", what, res->msg ? res->msg : "failed");
        pthread_mutex_unlock(&l->lock);
}

struct job {
        struct load *l;
        char *cid;
};

static void *exec_thread(void *arg)
{
        struct job *j = arg;
        char secs[16];
        snprintf(secs, sizeof(secs), "%d", j->l->b->load_seconds);
        char *argv[] = {"/bin/sleep", secs};
        Runtime__V1__ExecSyncRequest r = RUNTIME__V1__EXEC_SYNC_REQUEST__INIT;
        r.container_id = j->cid;
        r.cmd = argv;
        r.n_cmd = 2;
        r.timeout = j->l->b->load_seconds + 40;
        struct cri_result res;
        if (op_call(j->l->b, j->l->ep, RT "ExecSync", &r.base, NULL, NULL, &res) != GRPC_STATUS_OK)
                note_failure(j->l, "ExecSync", &res);
        cri_result_clear(&res);
        return NULL;
}

static void *stop_thread(void *arg)
{
        struct job *j = arg;
        Runtime__V1__StopContainerRequest r = RUNTIME__V1__STOP_CONTAINER_REQUEST__INIT;
        r.container_id = j->cid;
        r.timeout = j->l->b->load_seconds;
        struct cri_result res;
        if (op_call(j->l->b, j->l->ep, RT "StopContainer", &r.base, NULL, NULL, &res) !=
            GRPC_STATUS_OK)
                note_failure(j->l, "StopContainer", &res);
        cri_result_clear(&res);
        return NULL;
}

static void *pull_thread(void *arg)
{
        struct job *j = arg;
        Runtime__V1__ImageSpec spec = RUNTIME__V1__IMAGE_SPEC__INIT;
        spec.image = (char *)j->l->b->pull_image;
        while (!atomic_load(&j->l->stop) && !bench_interrupted) {
                struct cri_result res;
                Runtime__V1__RemoveImageRequest rm = RUNTIME__V1__REMOVE_IMAGE_REQUEST__INIT;
                rm.image = &spec;
                op_call(j->l->b, j->l->ep, IMG "RemoveImage", &rm.base, NULL, NULL, &res);
                cri_result_clear(&res);
                Runtime__V1__PullImageRequest req = RUNTIME__V1__PULL_IMAGE_REQUEST__INIT;
                req.image = &spec;
                if (op_call(j->l->b, j->l->ep, IMG "PullImage", &req.base, NULL, NULL, &res) !=
                    GRPC_STATUS_OK) {
                        note_failure(j->l, "PullImage", &res);
                        cri_result_clear(&res);
                        break;
                }
                atomic_fetch_add(&j->l->pulled, 1);
                cri_result_clear(&res);
        }
        return NULL;
}

/* One quick call; its time goes to "under load: <method>". */
static void probe(struct load *l, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *desc, const char *const *names)
{
        char path[96], name[96];
        snprintf(path, sizeof(path), RT "%s", method);
        snprintf(name, sizeof(name), "under load: %s", method);
        struct cri_result res;
        ProtobufCMessage *resp = NULL;
        op_call(l->b, l->ep, path, req, desc, &resp, &res);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        if (res.status == GRPC_STATUS_OK)
                fig_add(l->ep, name, "ms", res.ms);
        else
                op_fail(l->ep, names, method, &res);
        cri_result_clear(&res);
}

static void probe_all(struct load *l, const char *pod_id, const char *cid, const char *const *names)
{
        Runtime__V1__VersionRequest v = RUNTIME__V1__VERSION_REQUEST__INIT;
        probe(l, "Version", &v.base, &runtime__v1__version_response__descriptor, names);
        Runtime__V1__StatusRequest st = RUNTIME__V1__STATUS_REQUEST__INIT;
        probe(l, "Status", &st.base, &runtime__v1__status_response__descriptor, names);
        Runtime__V1__ListPodSandboxRequest lp = RUNTIME__V1__LIST_POD_SANDBOX_REQUEST__INIT;
        probe(l, "ListPodSandbox", &lp.base, &runtime__v1__list_pod_sandbox_response__descriptor,
              names);
        Runtime__V1__ListContainersRequest lc = RUNTIME__V1__LIST_CONTAINERS_REQUEST__INIT;
        probe(l, "ListContainers", &lc.base, &runtime__v1__list_containers_response__descriptor,
              names);
        Runtime__V1__PodSandboxStatusRequest ps = RUNTIME__V1__POD_SANDBOX_STATUS_REQUEST__INIT;
        ps.pod_sandbox_id = (char *)pod_id;
        probe(l, "PodSandboxStatus", &ps.base,
              &runtime__v1__pod_sandbox_status_response__descriptor, names);
        Runtime__V1__ContainerStatusRequest cs = RUNTIME__V1__CONTAINER_STATUS_REQUEST__INIT;
        cs.container_id = (char *)cid;
        probe(l, "ContainerStatus", &cs.base, &runtime__v1__container_status_response__descriptor,
              names);
}

static void load_one(struct bench *b, struct endpoint *ep, const char *const *names)
{
        static char *stubborn_cmd[] = {"/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"};
        struct cri_result res;
        if (!op_require_image(b, ep, names))
                return;
        struct pod p = {0};
        if (op_run_pod(b, ep, &p, &res) != GRPC_STATUS_OK) {
                op_fail(ep, names, "RunPodSandbox", &res);
                cri_result_clear(&res);
                return;
        }
        cri_result_clear(&res);
        int nstop = b->load_stops;
        char **cids = xzalloc(sizeof(char *) * (size_t)(nstop + 1));
        bool ok = true;
        for (int i = 0; i <= nstop && ok; i++) {
                /* cids[0] runs the image's command; the others ignore SIGTERM. */
                const char *what = "CreateContainer";
                if (op_create_ctr_cmd(b, ep, &p, i ? stubborn_cmd : NULL, i ? 3 : 0, &cids[i],
                                      &res) == GRPC_STATUS_OK) {
                        cri_result_clear(&res);
                        what = "StartContainer";
                        op_ctr(b, ep, what, cids[i], &res);
                }
                ok = res.status == GRPC_STATUS_OK;
                if (!ok)
                        op_fail(ep, names, what, &res);
                cri_result_clear(&res);
        }
        struct load l = {.b = b, .ep = ep};
        pthread_mutex_init(&l.lock, NULL);
        bool pulls = strcmp(b->pull_image, b->image) != 0;
        int nthreads = b->load_execs + nstop + (pulls ? b->load_pulls : 0);
        pthread_t *t = xzalloc(sizeof(pthread_t) * (size_t)(nthreads ? nthreads : 1));
        struct job *jobs = xzalloc(sizeof(struct job) * (size_t)(nthreads ? nthreads : 1));
        int started = 0;
        for (int i = 0; ok && i < nthreads; i++) {
                void *(*fn)(void *) = pull_thread;
                jobs[i].l = &l;
                if (i < b->load_execs) {
                        fn = exec_thread;
                        jobs[i].cid = cids[0];
                } else if (i < b->load_execs + nstop) {
                        fn = stop_thread;
                        jobs[i].cid = cids[1 + i - b->load_execs];
                }
                if (pthread_create(&t[i], NULL, fn, &jobs[i]) != 0)
                        break;
                started++;
        }
        if (ok) {
                sleep(2); /* every exec started */
                double until = cri_now_ms() + PROBE_SECONDS * 1000.0;
                while (cri_now_ms() < until && !bench_interrupted) {
                        probe_all(&l, p.id, cids[0], names);
                        usleep(10000);
                }
        }
        atomic_store(&l.stop, true);
        for (int i = 0; i < started; i++)
                pthread_join(t[i], NULL);
        if (atomic_load(&l.failed))
                fprintf(stderr, "remora-bench: load %s: %d slow calls failed, first: %s\n",
                        ep->label, atomic_load(&l.failed), l.first_error);
        /* That the pulls were load at all: how many went through while the rest ran. */
        if (ok && pulls)
                fig_set_value(ep, LOAD_PULLS, "pulls", atomic_load(&l.pulled));
        free(l.first_error);
        pthread_mutex_destroy(&l.lock);
        free(t);
        free(jobs);
        for (int i = 0; i <= nstop; i++)
                free(cids[i]);
        free(cids);
        op_teardown_pod(b, ep, &p);
}

void scenario_load(struct bench *b)
{
        static const char *const names[] = {"under load: Version",
                                            "under load: Status",
                                            "under load: ListPodSandbox",
                                            "under load: ListContainers",
                                            "under load: PodSandboxStatus",
                                            "under load: ContainerStatus",
                                            NULL};
        for (size_t e = 0; e < b->nep && !bench_interrupted; e++) {
                for (int k = 0; names[k]; k++)
                        fig_get(&b->ep[e], names[k], "ms", false);
                if (strcmp(b->pull_image, b->image) != 0)
                        fig_get(&b->ep[e], LOAD_PULLS, "pulls", true);
                fprintf(stderr,
                        "remora-bench: load %s: %d ExecSync sleep, %d stops waiting out %d s, "
                        "%d pull loops\n",
                        b->ep[e].label, b->load_execs, b->load_stops, b->load_seconds,
                        strcmp(b->pull_image, b->image) ? b->load_pulls : 0);
                load_one(b, &b->ep[e], names);
        }
}
