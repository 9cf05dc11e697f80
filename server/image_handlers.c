/* CRI ImageService: thin wrappers over the image service. */
#include <stdatomic.h>
#include <stdlib.h>

#include "api.pb-c.h"
#include "daemon.h"
#include "handlers.h"

RM_HANDLER(pull_image)
{
        const Runtime__V1__PullImageRequest *in = (const Runtime__V1__PullImageRequest *)req;
        const char *ref = in->image ? in->image->image : NULL;
        if (ref == NULL || *ref == '\0')
                return rm_error_set(err, RM_INVALID_ARGUMENT, "image.image is empty");
        char *id = NULL;
        struct rm_server_counters *c = &call->daemon->counters;
        uint64_t t0 = rm_metrics_now_ns();
        int rc = rm_image_pull(call->daemon->images, ref, in->auth, call->cancel, &id, err);
        rm_histo_observe(&c->pull_duration, rm_metrics_now_ns() - t0);
        unsigned code = rc == 0 ? 0 : (unsigned)(*err)->code;
        atomic_fetch_add(&c->pulls[code < 17 ? code : RM_UNKNOWN], 1);
        if (rc < 0)
                return -1;
        Runtime__V1__PullImageResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__pull_image_response__init(r);
        r->image_ref = rm_arena_strdup(call->arena, id);
        free(id);
        *resp = &r->base;
        return 0;
}

RM_HANDLER(list_images)
{
        (void)err;
        const Runtime__V1__ListImagesRequest *in = (const Runtime__V1__ListImagesRequest *)req;
        *resp = &rm_image_list(call->daemon->images, in->filter, call->arena)->base;
        return 0;
}

RM_HANDLER(image_status)
{
        const Runtime__V1__ImageStatusRequest *in = (const Runtime__V1__ImageStatusRequest *)req;
        const char *ref = in->image ? in->image->image : NULL;
        if (ref == NULL || *ref == '\0')
                return rm_error_set(err, RM_INVALID_ARGUMENT, "image.image is empty");
        Runtime__V1__ImageStatusResponse *r =
            rm_image_status(call->daemon->images, ref, in->verbose, call->arena, err);
        if (r == NULL)
                return -1;
        *resp = &r->base;
        return 0;
}

RM_HANDLER(remove_image)
{
        const Runtime__V1__RemoveImageRequest *in = (const Runtime__V1__RemoveImageRequest *)req;
        const char *ref = in->image ? in->image->image : NULL;
        if (ref == NULL || *ref == '\0')
                return rm_error_set(err, RM_INVALID_ARGUMENT, "image.image is empty");
        if (rm_image_remove(call->daemon->images, ref, err) < 0)
                return -1;
        Runtime__V1__RemoveImageResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__remove_image_response__init(r);
        *resp = &r->base;
        return 0;
}

RM_HANDLER(image_fs_info)
{
        (void)req;
        Runtime__V1__ImageFsInfoResponse *r =
            rm_image_fs_info(call->daemon->images, call->arena, err);
        if (r == NULL)
                return -1;
        *resp = &r->base;
        return 0;
}
