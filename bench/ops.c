#include "ops.h"

#include <grpc/status.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "remora/cleanup.h"
#include "remora/error.h"
#include "remora/xalloc.h"

int op_call(struct bench *b, struct endpoint *ep, const char *method, const ProtobufCMessage *req,
            const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp, struct cri_result *res)
{
        return cri_call(ep->conn, method, req, desc, resp, b->timeout_s, res);
}

void op_name(struct bench *b, const char *what, char *buf, size_t len)
{
        pthread_mutex_lock(&b->seq_lock);
        unsigned long s = ++b->seq;
        pthread_mutex_unlock(&b->seq_lock);
        snprintf(buf, len, "rb-%s-%s-%lu", b->run_id, what, s);
}

void op_pod_cfg(struct pod_cfg *pc, const char *name, bool shared_pid, bool host_network)
{
        snprintf(pc->name, sizeof(pc->name), "%s", name);
        runtime__v1__pod_sandbox_metadata__init(&pc->meta);
        pc->meta.name = pc->name;
        pc->meta.uid = pc->name;
        pc->meta.namespace_ = "remora-bench";
        runtime__v1__linux_pod_sandbox_config__init(&pc->linux);
        /* As kubelet sends them: one PID namespace per container unless the pod asks to
         * share one (shareProcessNamespace, --shared-pid here). */
        runtime__v1__namespace_option__init(&pc->ns);
        pc->ns.pid =
            shared_pid ? RUNTIME__V1__NAMESPACE_MODE__POD : RUNTIME__V1__NAMESPACE_MODE__CONTAINER;
        /* The node's network: the pod lifecycle without network setup and teardown, so
         * that the difference from a default run is their cost. */
        pc->ns.network =
            host_network ? RUNTIME__V1__NAMESPACE_MODE__NODE : RUNTIME__V1__NAMESPACE_MODE__POD;
        runtime__v1__linux_sandbox_security_context__init(&pc->sc);
        pc->sc.namespace_options = &pc->ns;
        pc->linux.security_context = &pc->sc;
        runtime__v1__pod_sandbox_config__init(&pc->cfg);
        pc->cfg.metadata = &pc->meta;
        pc->cfg.linux = &pc->linux;
        /* No log directory: container logs are not what is measured. */
}

static void track(struct endpoint *ep, const char *id)
{
        pthread_mutex_lock(&ep->lock);
        ep->pods = xrealloc(ep->pods, (ep->npods + 1) * sizeof(char *));
        ep->pods[ep->npods++] = xstrdup(id);
        pthread_mutex_unlock(&ep->lock);
}

static void untrack(struct endpoint *ep, const char *id)
{
        pthread_mutex_lock(&ep->lock);
        for (size_t i = 0; i < ep->npods; i++)
                if (strcmp(ep->pods[i], id) == 0) {
                        free(ep->pods[i]);
                        ep->pods[i] = ep->pods[--ep->npods];
                        break;
                }
        pthread_mutex_unlock(&ep->lock);
}

int op_run_pod(struct bench *b, struct endpoint *ep, struct pod *p, struct cri_result *res)
{
        op_name(b, "pod", p->name, sizeof(p->name));
        p->id = NULL;
        struct pod_cfg pc;
        op_pod_cfg(&pc, p->name, b->shared_pid, b->host_network);
        Runtime__V1__RunPodSandboxRequest req = RUNTIME__V1__RUN_POD_SANDBOX_REQUEST__INIT;
        req.config = &pc.cfg;
        Runtime__V1__RunPodSandboxResponse *resp = NULL;
        op_call(b, ep, RT "RunPodSandbox", &req.base,
                &runtime__v1__run_pod_sandbox_response__descriptor, (ProtobufCMessage **)&resp,
                res);
        if (res->status == GRPC_STATUS_OK) {
                p->id = xstrdup(resp->pod_sandbox_id);
                track(ep, p->id);
                protobuf_c_message_free_unpacked(&resp->base, NULL);
        }
        return res->status;
}

int op_pod_status(struct bench *b, struct endpoint *ep, const char *id, struct cri_result *res)
{
        Runtime__V1__PodSandboxStatusRequest req = RUNTIME__V1__POD_SANDBOX_STATUS_REQUEST__INIT;
        req.pod_sandbox_id = (char *)id;
        ProtobufCMessage *resp = NULL;
        op_call(b, ep, RT "PodSandboxStatus", &req.base,
                &runtime__v1__pod_sandbox_status_response__descriptor, &resp, res);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        return res->status;
}

int op_pod_info_number(struct bench *b, struct endpoint *ep, const char *id, const char *key,
                       double *out, struct cri_result *res)
{
        Runtime__V1__PodSandboxStatusRequest req = RUNTIME__V1__POD_SANDBOX_STATUS_REQUEST__INIT;
        req.pod_sandbox_id = (char *)id;
        req.verbose = true;
        ProtobufCMessage *resp = NULL;
        *out = -1;
        op_call(b, ep, RT "PodSandboxStatus", &req.base,
                &runtime__v1__pod_sandbox_status_response__descriptor, &resp, res);
        if (resp == NULL)
                return res->status;
        const Runtime__V1__PodSandboxStatusResponse *r = (const void *)resp;
        for (size_t i = 0; i < r->n_info; i++) {
                if (strcmp(r->info[i]->key, "info") != 0)
                        continue;
                cleanup_json struct json_object *doc = json_tokener_parse(r->info[i]->value);
                struct json_object *v = NULL;
                if (doc && json_object_object_get_ex(doc, key, &v) &&
                    (json_object_is_type(v, json_type_int) ||
                     json_object_is_type(v, json_type_double)))
                        *out = json_object_get_double(v);
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        return res->status;
}

int op_stop_pod(struct bench *b, struct endpoint *ep, const char *id, struct cri_result *res)
{
        Runtime__V1__StopPodSandboxRequest req = RUNTIME__V1__STOP_POD_SANDBOX_REQUEST__INIT;
        req.pod_sandbox_id = (char *)id;
        return op_call(b, ep, RT "StopPodSandbox", &req.base, NULL, NULL, res);
}

int op_remove_pod(struct bench *b, struct endpoint *ep, const char *id, struct cri_result *res)
{
        Runtime__V1__RemovePodSandboxRequest req = RUNTIME__V1__REMOVE_POD_SANDBOX_REQUEST__INIT;
        req.pod_sandbox_id = (char *)id;
        op_call(b, ep, RT "RemovePodSandbox", &req.base, NULL, NULL, res);
        if (res->status == GRPC_STATUS_OK)
                untrack(ep, id);
        return res->status;
}

int op_create_ctr(struct bench *b, struct endpoint *ep, const struct pod *p, char **cid,
                  struct cri_result *res)
{
        return op_create_ctr_cmd(b, ep, p, NULL, 0, cid, res);
}

int op_create_ctr_cmd(struct bench *b, struct endpoint *ep, const struct pod *p, char **command,
                      size_t n_command, char **cid, struct cri_result *res)
{
        char name[96];
        op_name(b, "ctr", name, sizeof(name));
        char log[128];
        snprintf(log, sizeof(log), "%s.log", name);
        struct pod_cfg pc;
        op_pod_cfg(&pc, p->name, b->shared_pid, b->host_network);
        Runtime__V1__ContainerMetadata meta = RUNTIME__V1__CONTAINER_METADATA__INIT;
        meta.name = name;
        Runtime__V1__ImageSpec image = RUNTIME__V1__IMAGE_SPEC__INIT;
        image.image = (char *)b->image;
        Runtime__V1__LinuxContainerConfig linux = RUNTIME__V1__LINUX_CONTAINER_CONFIG__INIT;
        Runtime__V1__ContainerConfig cfg = RUNTIME__V1__CONTAINER_CONFIG__INIT;
        cfg.metadata = &meta;
        cfg.image = &image;
        cfg.log_path = log;
        cfg.linux = &linux;
        cfg.command = command;
        cfg.n_command = n_command;
        Runtime__V1__LinuxContainerSecurityContext sc =
            RUNTIME__V1__LINUX_CONTAINER_SECURITY_CONTEXT__INIT;
        sc.namespace_options = &pc.ns;
        linux.security_context = &sc;
        Runtime__V1__CreateContainerRequest req = RUNTIME__V1__CREATE_CONTAINER_REQUEST__INIT;
        req.pod_sandbox_id = p->id;
        req.config = &cfg;
        req.sandbox_config = &pc.cfg;
        Runtime__V1__CreateContainerResponse *resp = NULL;
        *cid = NULL;
        op_call(b, ep, RT "CreateContainer", &req.base,
                &runtime__v1__create_container_response__descriptor, (ProtobufCMessage **)&resp,
                res);
        if (res->status == GRPC_STATUS_OK) {
                *cid = xstrdup(resp->container_id);
                protobuf_c_message_free_unpacked(&resp->base, NULL);
        }
        return res->status;
}

int op_ctr(struct bench *b, struct endpoint *ep, const char *method, const char *cid,
           struct cri_result *res)
{
        char path[96];
        snprintf(path, sizeof(path), RT "%s", method);
        if (strcmp(method, "StartContainer") == 0) {
                Runtime__V1__StartContainerRequest r = RUNTIME__V1__START_CONTAINER_REQUEST__INIT;
                r.container_id = (char *)cid;
                return op_call(b, ep, path, &r.base, NULL, NULL, res);
        }
        if (strcmp(method, "StopContainer") == 0) {
                Runtime__V1__StopContainerRequest r = RUNTIME__V1__STOP_CONTAINER_REQUEST__INIT;
                r.container_id = (char *)cid;
                r.timeout = 10; /* the bench images exit on SIGTERM at once */
                return op_call(b, ep, path, &r.base, NULL, NULL, res);
        }
        if (strcmp(method, "RemoveContainer") == 0) {
                Runtime__V1__RemoveContainerRequest r = RUNTIME__V1__REMOVE_CONTAINER_REQUEST__INIT;
                r.container_id = (char *)cid;
                return op_call(b, ep, path, &r.base, NULL, NULL, res);
        }
        Runtime__V1__ContainerStatusRequest r = RUNTIME__V1__CONTAINER_STATUS_REQUEST__INIT;
        r.container_id = (char *)cid;
        Runtime__V1__ContainerStatusResponse *resp = NULL;
        op_call(b, ep, RT "ContainerStatus", &r.base,
                &runtime__v1__container_status_response__descriptor, (ProtobufCMessage **)&resp,
                res);
        if (resp) {
                /* "Running" is what is measured: a container that is not is a failure. */
                if (!resp->status ||
                    resp->status->state != RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING) {
                        res->status = GRPC_STATUS_FAILED_PRECONDITION;
                        free(res->msg);
                        res->msg = xstrdup("the container is not RUNNING after StartContainer");
                }
                protobuf_c_message_free_unpacked(&resp->base, NULL);
        }
        return res->status;
}

int op_ensure_image(struct bench *b, struct endpoint *ep, const char *ref, struct cri_result *res)
{
        Runtime__V1__ImageSpec spec = RUNTIME__V1__IMAGE_SPEC__INIT;
        spec.image = (char *)ref;
        Runtime__V1__ImageStatusRequest sreq = RUNTIME__V1__IMAGE_STATUS_REQUEST__INIT;
        sreq.image = &spec;
        Runtime__V1__ImageStatusResponse *sresp = NULL;
        op_call(b, ep, IMG "ImageStatus", &sreq.base,
                &runtime__v1__image_status_response__descriptor, (ProtobufCMessage **)&sresp, res);
        if (res->status != GRPC_STATUS_OK)
                return res->status;
        bool have = sresp->image != NULL;
        protobuf_c_message_free_unpacked(&sresp->base, NULL);
        if (have)
                return GRPC_STATUS_OK;
        cri_result_clear(res);
        Runtime__V1__PullImageRequest preq = RUNTIME__V1__PULL_IMAGE_REQUEST__INIT;
        preq.image = &spec;
        ProtobufCMessage *presp = NULL;
        op_call(b, ep, IMG "PullImage", &preq.base, &runtime__v1__pull_image_response__descriptor,
                &presp, res);
        if (presp)
                protobuf_c_message_free_unpacked(presp, NULL);
        return res->status;
}

int op_teardown_pod(struct bench *b, struct endpoint *ep, struct pod *p)
{
        if (!p->id)
                return 0;
        struct cri_result res;
        int st = op_stop_pod(b, ep, p->id, &res);
        cri_result_clear(&res);
        if (st == GRPC_STATUS_OK)
                st = op_remove_pod(b, ep, p->id, &res);
        if (st != GRPC_STATUS_OK)
                fprintf(stderr, "remora-bench: %s: teardown of %s: %s\n", ep->label, p->id,
                        res.msg ? res.msg : "failed");
        cri_result_clear(&res);
        free(p->id);
        p->id = NULL;
        return st;
}

void op_fail(struct endpoint *ep, const char *const *names, const char *method,
             const struct cri_result *res)
{
        char note[512];
        snprintf(note, sizeof(note), "%s: %s%s%s", method, rm_code_name((enum rm_code)res->status),
                 res->msg ? ": " : "", res->msg ? res->msg : "");
        bool unsup = res->status == GRPC_STATUS_UNIMPLEMENTED;
        if (!unsup)
                fprintf(stderr, "remora-bench: %s: %s\n", ep->label, note);
        fig_mark(ep, names, NULL, unsup ? FIG_UNSUPPORTED : FIG_FAILED, note);
}

bool op_require_image(struct bench *b, struct endpoint *ep, const char *const *names)
{
        struct cri_result res;
        bool ok = op_ensure_image(b, ep, b->image, &res) == GRPC_STATUS_OK;
        if (!ok)
                op_fail(ep, names, "pull image", &res);
        cri_result_clear(&res);
        return ok;
}
