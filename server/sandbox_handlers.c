/* CRI pod sandbox calls: thin wrappers over the sandbox manager. */
#include <stdlib.h>

#include "api.pb-c.h"
#include "daemon.h"
#include "handlers.h"
#include "remora/crashpoint.h"
#include "remora/xalloc.h"

/* The pod an answer names, until the front end says whether it was delivered. */
struct pod_answer {
        struct rm_sandbox_manager *mgr;
        char *id;
};

static void pod_answered(void *arg, bool delivered)
{
        struct pod_answer *a = arg;
        rm_sandbox_answered(a->mgr, a->id, delivered);
        free(a->id);
        free(a);
}

RM_HANDLER(run_pod_sandbox)
{
        const Runtime__V1__RunPodSandboxRequest *in =
            (const Runtime__V1__RunPodSandboxRequest *)req;
        char *id = NULL;
        /* The RuntimeClass handler is checked before anything of the pod is made. */
        const struct rm_runtime *rt =
            rm_runtimes_select(call->daemon->runtimes, in->runtime_handler, err);
        if (rt == NULL)
                return -1;
        /* (The default handler's absence shows in RuntimeReady instead.) */
        if (rt != call->daemon->runtime && !rm_runtime_usable(rt, err))
                return rm_error_wrap(err, "runtime handler %s", rt->handler);
        if (rm_sandbox_run(call->daemon->sandboxes, in, call->cancel, &id, err) < 0)
                return -1;
        Runtime__V1__RunPodSandboxResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__run_pod_sandbox_response__init(r);
        r->pod_sandbox_id = rm_arena_strdup(call->arena, id);
        struct pod_answer *a = xzalloc(sizeof(*a));
        a->mgr = call->daemon->sandboxes;
        a->id = id;
        call->after_send = pod_answered;
        call->after_send_arg = a;
        *resp = &r->base;
        return 0;
}

/* Stop (with no grace period) or remove every container of the pod, first. */
static int each_container(struct rm_daemon *d, const char *pod_id, bool remove,
                          struct rm_error **err)
{
        if (d->containers == NULL)
                return 0;
        char **ids = rm_containers_of_pod(d->containers, pod_id);
        int rc = 0;
        for (char **id = ids; *id; id++) {
                if (rc == 0)
                        rc = remove ? rm_containers_remove(d->containers, *id, err)
                                    : rm_containers_stop(d->containers, *id, 0, NULL, err);
                free(*id);
        }
        free(ids);
        return rc;
}

RM_HANDLER(stop_pod_sandbox)
{
        const Runtime__V1__StopPodSandboxRequest *in =
            (const Runtime__V1__StopPodSandboxRequest *)req;
        struct rm_daemon *d = call->daemon;
        char *pod_id = rm_sandbox_resolve(d->sandboxes, in->pod_sandbox_id, err);
        if (pod_id == NULL)
                return -1;
        int rc = each_container(d, pod_id, false, err);
        if (rc == 0)
                rm_crashpoint("stoppodsandbox.containers");
        if (rc == 0)
                rc = rm_sandbox_stop(d->sandboxes, pod_id, err);
        free(pod_id);
        if (rc < 0)
                return -1;
        Runtime__V1__StopPodSandboxResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__stop_pod_sandbox_response__init(r);
        *resp = &r->base;
        return 0;
}

RM_HANDLER(remove_pod_sandbox)
{
        const Runtime__V1__RemovePodSandboxRequest *in =
            (const Runtime__V1__RemovePodSandboxRequest *)req;
        struct rm_daemon *d = call->daemon;
        struct rm_error *lookup = NULL;
        char *pod_id = rm_sandbox_resolve(d->sandboxes, in->pod_sandbox_id, &lookup);
        if (pod_id == NULL && lookup->code != RM_NOT_FOUND) {
                *err = lookup;
                return -1;
        }
        rm_error_free(lookup);
        int rc = 0;
        if (pod_id) {
                rc = each_container(d, pod_id, true, err);
                if (rc == 0 && d->containers)
                        rm_containers_settle(d->containers, pod_id); /* runc's deletes */
                if (rc == 0)
                        rm_crashpoint("removepodsandbox.containers");
                if (rc == 0)
                        rc = rm_sandbox_remove(d->sandboxes, pod_id, err);
                free(pod_id);
        }
        if (rc < 0)
                return -1;
        Runtime__V1__RemovePodSandboxResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__remove_pod_sandbox_response__init(r);
        *resp = &r->base;
        return 0;
}

RM_HANDLER(pod_sandbox_status)
{
        const Runtime__V1__PodSandboxStatusRequest *in =
            (const Runtime__V1__PodSandboxStatusRequest *)req;
        Runtime__V1__PodSandboxStatusResponse *r = rm_sandbox_status(
            call->daemon->sandboxes, in->pod_sandbox_id, in->verbose, call->arena, err);
        if (r == NULL)
                return -1;
        *resp = &r->base;
        return 0;
}

RM_HANDLER(list_pod_sandbox)
{
        (void)err;
        (void)resp; /* answered with the encoded list */
        const Runtime__V1__ListPodSandboxRequest *in =
            (const Runtime__V1__ListPodSandboxRequest *)req;
        call->raw = rm_sandbox_list_packed(call->daemon->sandboxes, in->filter, &call->raw_len);
        return 0;
}

/* Both parts are checked as a container's resources are, before anything is written. */
RM_HANDLER(update_pod_sandbox_resources)
{
        const Runtime__V1__UpdatePodSandboxResourcesRequest *in =
            (const Runtime__V1__UpdatePodSandboxResourcesRequest *)req;
        struct rm_daemon *d = call->daemon;
        if (in->overhead == NULL && in->resources == NULL)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "overhead and resources are both missing: there is nothing "
                                    "to update");
        if (in->overhead && rm_spec_resources_check(in->overhead, &d->host, err) < 0)
                return rm_error_wrap(err, "overhead");
        if (in->resources && rm_spec_resources_check(in->resources, &d->host, err) < 0)
                return rm_error_wrap(err, "resources");
        char *pod_id =
            rm_sandbox_resolve(d->sandboxes, in->pod_sandbox_id ? in->pod_sandbox_id : "", err);
        if (pod_id == NULL)
                return -1;
        int rc =
            rm_sandbox_update_resources(d->sandboxes, pod_id, in->overhead, in->resources, err);
        free(pod_id);
        if (rc < 0)
                return -1;
        Runtime__V1__UpdatePodSandboxResourcesResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__update_pod_sandbox_resources_response__init(r);
        *resp = &r->base;
        return 0;
}
