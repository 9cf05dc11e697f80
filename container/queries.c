/* What the container manager answers from memory: ContainerStatus, the lists (as a
 * message tree, and encoded from each container's packed item), and lookups. */
#include <stdlib.h>
#include <string.h>

#include "manager_internal.h"
#include "remora/cleanup.h"
#include "remora/xalloc.h"

Runtime__V1__ContainerStatusResponse *rm_containers_status(struct rm_container_manager *mgr,
                                                           const char *id, bool verbose,
                                                           struct rm_arena *a,
                                                           struct rm_error **err)
{
        pthread_mutex_lock(&mgr->lock);
        struct ctr *c = rm__ctr_find_locked(mgr, id, err);
        Runtime__V1__ContainerStatusResponse *r = c ? rm__ctr_status(mgr, c, verbose, a) : NULL;
        pthread_mutex_unlock(&mgr->lock);
        return r;
}

Runtime__V1__ListContainersResponse *rm_containers_list(struct rm_container_manager *mgr,
                                                        const Runtime__V1__ContainerFilter *f,
                                                        struct rm_arena *a)
{
        Runtime__V1__ListContainersResponse *r = rm_arena_alloc(a, sizeof(*r));
        runtime__v1__list_containers_response__init(r);
        pthread_mutex_lock(&mgr->lock);
        r->containers = (Runtime__V1__Container **)rm_arena_ptrs(a, mgr->n ? mgr->n : 1);
        for (size_t i = 0; i < mgr->n; i++) {
                if (rm__ctr_matches(mgr->ctrs[i], f))
                        r->containers[r->n_containers++] = rm__ctr_summary(mgr->ctrs[i], a);
        }
        pthread_mutex_unlock(&mgr->lock);
        return r;
}

struct list_ctx {
        const Runtime__V1__ContainerFilter *f;
        struct rm_arena *a; /* for repacking, made on the first one */
};

static ProtobufCMessage *summary_of(const void *obj, struct rm_arena *a)
{
        return &rm__ctr_summary(obj, a)->base;
}

static const struct rm_pb_packed *list_item(void *obj, void *ctx)
{
        struct ctr *c = obj;
        struct list_ctx *l = ctx;
        if (!rm__ctr_matches(c, l->f))
                return NULL;
        return rm_pb_packed_fresh(&c->summary, (int)c->state, summary_of, c, &l->a);
}

uint8_t *rm_containers_list_packed(struct rm_container_manager *mgr,
                                   const Runtime__V1__ContainerFilter *f, size_t *len)
{
        struct list_ctx l = {f, NULL};
        pthread_mutex_lock(&mgr->lock);
        uint8_t *out = rm_pb_list_build((void *const *)mgr->ctrs, mgr->n, list_item, &l, len);
        pthread_mutex_unlock(&mgr->lock);
        rm_arena_free(l.a);
        return out;
}

bool rm_containers_use_image(struct rm_container_manager *mgr, const char *image_id)
{
        bool used = false;
        pthread_mutex_lock(&mgr->lock);
        for (size_t i = 0; i < mgr->n && !used; i++) {
                const struct ctr *c = mgr->ctrs[i];
                used = c->image_id && strcmp(c->image_id, image_id) == 0;
                size_t n = c->image_volumes ? json_object_array_length(c->image_volumes) : 0;
                for (size_t k = 0; k < n && !used; k++)
                        used = strcmp(json_object_get_string(
                                          json_object_array_get_idx(c->image_volumes, k)),
                                      image_id) == 0;
        }
        pthread_mutex_unlock(&mgr->lock);
        return used;
}

char **rm_containers_of_pod(struct rm_container_manager *mgr, const char *pod_id)
{
        pthread_mutex_lock(&mgr->lock);
        char **ids = xzalloc(sizeof(char *) * (mgr->n + 1));
        size_t k = 0;
        for (size_t i = 0; i < mgr->n; i++) {
                if (!mgr->ctrs[i]->creating && strcmp(mgr->ctrs[i]->pod_id, pod_id) == 0)
                        ids[k++] = xstrdup(mgr->ctrs[i]->id);
        }
        pthread_mutex_unlock(&mgr->lock);
        return ids;
}

char *rm_containers_resolve(struct rm_container_manager *mgr, const char *id_or_prefix,
                            struct rm_error **err)
{
        pthread_mutex_lock(&mgr->lock);
        struct ctr *c = rm__ctr_find_locked(mgr, id_or_prefix, err);
        char *id = c ? xstrdup(c->id) : NULL;
        pthread_mutex_unlock(&mgr->lock);
        return id;
}
