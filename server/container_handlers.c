/* CRI container calls: thin wrappers over the container manager. */
#include <stdlib.h>
#include <string.h>

#include "api.pb-c.h"
#include "daemon.h"
#include "handlers.h"
#include "remora/containers.h"
#include "remora/xalloc.h"

#define REQ(type) const type *in = (const type *)req

static void *copy_to_arena(struct rm_arena *a, const uint8_t *data, size_t len)
{
        uint8_t *p = rm_arena_alloc(a, len ? len : 1);
        if (len)
                memcpy(p, data, len);
        return p;
}

/* The container an answer names, until the front end says whether it was delivered. */
struct ctr_answer {
        struct rm_container_manager *mgr;
        char *id;
};

static void ctr_answered(void *arg, bool delivered)
{
        struct ctr_answer *a = arg;
        rm_containers_answered(a->mgr, a->id, delivered);
        free(a->id);
        free(a);
}

RM_HANDLER(create_container)
{
        REQ(Runtime__V1__CreateContainerRequest);
        char *id = NULL;
        if (rm_containers_create(call->daemon->containers, in, call->cancel, &id, err) < 0)
                return -1;
        Runtime__V1__CreateContainerResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__create_container_response__init(r);
        r->container_id = rm_arena_strdup(call->arena, id);
        struct ctr_answer *a = xzalloc(sizeof(*a));
        a->mgr = call->daemon->containers;
        a->id = id;
        call->after_send = ctr_answered;
        call->after_send_arg = a;
        *resp = &r->base;
        return 0;
}

RM_HANDLER(start_container)
{
        REQ(Runtime__V1__StartContainerRequest);
        if (rm_containers_start(call->daemon->containers, in->container_id, err) < 0)
                return -1;
        Runtime__V1__StartContainerResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__start_container_response__init(r);
        *resp = &r->base;
        return 0;
}

RM_HANDLER(stop_container)
{
        REQ(Runtime__V1__StopContainerRequest);
        if (in->timeout < 0)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "timeout must not be negative");
        if (rm_containers_stop(call->daemon->containers, in->container_id, in->timeout,
                               call->cancel, err) < 0)
                return -1;
        Runtime__V1__StopContainerResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__stop_container_response__init(r);
        *resp = &r->base;
        return 0;
}

RM_HANDLER(remove_container)
{
        REQ(Runtime__V1__RemoveContainerRequest);
        if (rm_containers_remove(call->daemon->containers, in->container_id, err) < 0)
                return -1;
        Runtime__V1__RemoveContainerResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__remove_container_response__init(r);
        *resp = &r->base;
        return 0;
}

RM_HANDLER(list_containers)
{
        (void)err;
        (void)resp; /* answered with the encoded list */
        REQ(Runtime__V1__ListContainersRequest);
        call->raw = rm_containers_list_packed(call->daemon->containers, in->filter, &call->raw_len);
        return 0;
}

RM_HANDLER(container_status)
{
        REQ(Runtime__V1__ContainerStatusRequest);
        Runtime__V1__ContainerStatusResponse *r = rm_containers_status(
            call->daemon->containers, in->container_id, in->verbose, call->arena, err);
        if (r == NULL)
                return -1;
        *resp = &r->base;
        return 0;
}

RM_HANDLER(exec_sync)
{
        REQ(Runtime__V1__ExecSyncRequest);
        struct rm_ctr_exec_result res = {0};
        if (rm_containers_exec_sync(call->daemon->containers, in, call->cancel, &res, err) < 0)
                return -1;
        Runtime__V1__ExecSyncResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__exec_sync_response__init(r);
        r->exit_code = res.exit_code;
        r->stdout.data = copy_to_arena(call->arena, res.out, res.out_len);
        r->stdout.len = res.out_len;
        r->stderr.data = copy_to_arena(call->arena, res.err, res.err_len);
        r->stderr.len = res.err_len;
        free(res.out);
        free(res.err);
        *resp = &r->base;
        return 0;
}
