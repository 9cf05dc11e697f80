/* CRI pod sandbox calls: thin wrappers over the sandbox manager. */
#include <stdlib.h>

#include "api.pb-c.h"
#include "daemon.h"
#include "handlers.h"

RM_HANDLER(run_pod_sandbox)
{
        const Runtime__V1__RunPodSandboxRequest *in =
            (const Runtime__V1__RunPodSandboxRequest *)req;
        char *id = NULL;
        if (rm_sandbox_run(call->daemon->sandboxes, in, &id, err) < 0)
                return -1;
        Runtime__V1__RunPodSandboxResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__run_pod_sandbox_response__init(r);
        r->pod_sandbox_id = rm_arena_strdup(call->arena, id);
        free(id);
        *resp = &r->base;
        return 0;
}

RM_HANDLER(stop_pod_sandbox)
{
        const Runtime__V1__StopPodSandboxRequest *in =
            (const Runtime__V1__StopPodSandboxRequest *)req;
        if (rm_sandbox_stop(call->daemon->sandboxes, in->pod_sandbox_id, err) < 0)
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
        if (rm_sandbox_remove(call->daemon->sandboxes, in->pod_sandbox_id, err) < 0)
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
        const Runtime__V1__ListPodSandboxRequest *in =
            (const Runtime__V1__ListPodSandboxRequest *)req;
        *resp = &rm_sandbox_list(call->daemon->sandboxes, in->filter, call->arena)->base;
        return 0;
}
