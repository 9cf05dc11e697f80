/* UpdatePodSandboxResources: kubelet's in-place pod resize tells the runtime the pod's new
 * totals (resources) and its overhead; Remora resizes the pod cgroup it was given and
 * keeps both in the pod's record. */
#include <stdlib.h>

#include "remora/cleanup.h"
#include "remora/log.h"
#include "remora/xalloc.h"
#include "sandbox_internal.h"

static void add_int(struct json_object *o, const char *key, int64_t v)
{
        if (v != 0)
                json_object_object_add(o, key, json_object_new_int64(v));
}

static void add_str(struct json_object *o, const char *key, const char *v)
{
        if (v && *v)
                json_object_object_add(o, key, json_object_new_string(v));
}

/* The fields set, under the CRI's own names (zero and empty ones left out). */
static struct json_object *one_json(const Runtime__V1__LinuxContainerResources *r)
{
        struct json_object *o = json_object_new_object();
        if (r == NULL)
                return o;
        add_int(o, "cpu_period", r->cpu_period);
        add_int(o, "cpu_quota", r->cpu_quota);
        add_int(o, "cpu_shares", r->cpu_shares);
        add_int(o, "memory_limit_in_bytes", r->memory_limit_in_bytes);
        add_int(o, "oom_score_adj", r->oom_score_adj);
        add_str(o, "cpuset_cpus", r->cpuset_cpus);
        add_str(o, "cpuset_mems", r->cpuset_mems);
        add_int(o, "memory_swap_limit_in_bytes", r->memory_swap_limit_in_bytes);
        if (r->n_hugepage_limits) {
                struct json_object *h = json_object_new_array();
                for (size_t i = 0; i < r->n_hugepage_limits; i++) {
                        struct json_object *e = json_object_new_object();
                        add_str(e, "page_size", r->hugepage_limits[i]->page_size);
                        json_object_object_add(
                            e, "limit",
                            json_object_new_int64((int64_t)r->hugepage_limits[i]->limit));
                        json_object_array_add(h, e);
                }
                json_object_object_add(o, "hugepage_limits", h);
        }
        if (r->n_unified) {
                struct json_object *u = json_object_new_object();
                for (size_t i = 0; i < r->n_unified; i++)
                        json_object_object_add(u, r->unified[i]->key,
                                               json_object_new_string(r->unified[i]->value
                                                                          ? r->unified[i]->value
                                                                          : ""));
                json_object_object_add(o, "unified", u);
        }
        return o;
}

struct json_object *rm__pod_resources_json(const Runtime__V1__LinuxContainerResources *overhead,
                                           const Runtime__V1__LinuxContainerResources *resources)
{
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "overhead", one_json(overhead));
        json_object_object_add(o, "resources", one_json(resources));
        return o;
}

int rm_sandbox_update_resources(struct rm_sandbox_manager *mgr, const char *id,
                                const Runtime__V1__LinuxContainerResources *overhead,
                                const Runtime__V1__LinuxContainerResources *resources,
                                struct rm_error **err)
{
        struct pod *p = rm__pod_get(mgr, id, err);
        if (p == NULL)
                return -1;
        pthread_mutex_lock(&p->op);
        pthread_mutex_lock(&mgr->lock);
        bool ready = p->state == RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY;
        struct json_object *v = NULL;
        cleanup_free char *parent = xstrdup(json_object_object_get_ex(p->doc, "cgroup_parent", &v)
                                                ? json_object_get_string(v)
                                                : "");
        pthread_mutex_unlock(&mgr->lock);
        int rc = 0;
        if (!ready)
                rc =
                    rm_error_set(err, RM_FAILED_PRECONDITION,
                                 "pod sandbox %s is not ready; its resources cannot change", p->id);
        else if (*parent == '\0' || mgr->hooks.pod_cgroup_update == NULL)
                rc = rm_error_set(err, RM_FAILED_PRECONDITION,
                                  "pod sandbox %s has no cgroup of remora's to resize (it was "
                                  "run without linux.cgroup_parent)",
                                  p->id);
        else if (mgr->hooks.pod_cgroup_update(mgr->hooks.ctx, parent, resources, overhead, err) < 0)
                rc = rm_error_wrap(err, "pod sandbox %s", p->id);
        if (rc == 0) {
                pthread_mutex_lock(&mgr->lock);
                json_object_object_add(p->doc, "pod_resources",
                                       rm__pod_resources_json(overhead, resources));
                pthread_mutex_unlock(&mgr->lock);
                rc = rm__pod_save(mgr, p, err);
        }
        if (rc == 0)
                rm_log_info("updated the resources of pod sandbox %s (cgroup %s)", p->id, parent);
        pthread_mutex_unlock(&p->op);
        rm__pod_put(mgr, p);
        return rc;
}
