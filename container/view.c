/* ContainerStatus and ListContainers answers, built from memory into the call's arena. */
#include <string.h>

#include "manager_internal.h"
#include "remora/cleanup.h"
#include "remora/pbmap.h"
#include "remora/xalloc.h"

Runtime__V1__ContainerMetadata *rm__ctr_metadata(const struct ctr *c, struct rm_arena *a)
{
        Runtime__V1__ContainerMetadata *m = rm_arena_alloc(a, sizeof(*m));
        runtime__v1__container_metadata__init(m);
        m->name = rm_arena_strdup(a, c->name);
        m->attempt = c->attempt;
        return m;
}

static Runtime__V1__ImageSpec *image_spec(const struct ctr *c, struct rm_arena *a)
{
        Runtime__V1__ImageSpec *s = rm_arena_alloc(a, sizeof(*s));
        runtime__v1__image_spec__init(s);
        s->image = rm_arena_strdup(a, c->image);
        s->user_specified_image = rm_arena_strdup(a, c->image);
        return s;
}

static const char *jstr(struct json_object *o, const char *key)
{
        struct json_object *v = NULL;
        return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "";
}

static Runtime__V1__Mount **mounts(const struct ctr *c, struct rm_arena *a, size_t *n)
{
        *n = c->mounts ? json_object_array_length(c->mounts) : 0;
        Runtime__V1__Mount **out = (Runtime__V1__Mount **)rm_arena_ptrs(a, *n ? *n : 1);
        for (size_t i = 0; i < *n; i++) {
                struct json_object *m = json_object_array_get_idx(c->mounts, i), *v = NULL;
                Runtime__V1__Mount *pm = rm_arena_alloc(a, sizeof(*pm));
                runtime__v1__mount__init(pm);
                pm->container_path = rm_arena_strdup(a, jstr(m, "container_path"));
                pm->host_path = rm_arena_strdup(a, jstr(m, "host_path"));
                if (json_object_object_get_ex(m, "readonly", &v))
                        pm->readonly = json_object_get_boolean(v);
                if (json_object_object_get_ex(m, "propagation", &v))
                        pm->propagation = json_object_get_int(v);
                if (json_object_object_get_ex(m, "image", &v)) {
                        pm->image = rm_arena_alloc(a, sizeof(*pm->image));
                        runtime__v1__image_spec__init(pm->image);
                        pm->image->image = rm_arena_strdup(a, json_object_get_string(v));
                        pm->image_sub_path = rm_arena_strdup(a, jstr(m, "image_sub_path"));
                }
                out[i] = pm;
        }
        return out;
}

static Runtime__V1__ContainerUser *user(const struct ctr *c, struct rm_arena *a)
{
        Runtime__V1__LinuxContainerUser *l = rm_arena_alloc(a, sizeof(*l));
        runtime__v1__linux_container_user__init(l);
        l->uid = c->uid;
        l->gid = c->gid;
        size_t n = c->groups ? json_object_array_length(c->groups) : 0;
        l->supplemental_groups = rm_arena_alloc(a, sizeof(int64_t) * (n + 1));
        for (size_t i = 0; i < n; i++)
                l->supplemental_groups[i] =
                    json_object_get_int64(json_object_array_get_idx(c->groups, i));
        l->n_supplemental_groups = n;
        Runtime__V1__ContainerUser *u = rm_arena_alloc(a, sizeof(*u));
        runtime__v1__container_user__init(u);
        u->linux = l;
        return u;
}

static Runtime__V1__ContainerStatusResponse__InfoEntry *info(struct rm_arena *a, const char *key,
                                                             struct json_object *value)
{
        Runtime__V1__ContainerStatusResponse__InfoEntry *e = rm_arena_alloc(a, sizeof(*e));
        runtime__v1__container_status_response__info_entry__init(e);
        e->key = (char *)key;
        e->value =
            rm_arena_strdup(a, json_object_to_json_string_ext(
                                   value, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        return e;
}

Runtime__V1__ContainerStatusResponse *rm__ctr_status(const struct rm_container_manager *mgr,
                                                     const struct ctr *c, bool verbose,
                                                     struct rm_arena *a)
{
        Runtime__V1__ContainerStatus *s = rm_arena_alloc(a, sizeof(*s));
        runtime__v1__container_status__init(s);
        s->id = rm_arena_strdup(a, c->id);
        s->metadata = rm__ctr_metadata(c, a);
        s->state = c->state;
        s->created_at = c->created_at;
        s->started_at = c->started_at;
        s->finished_at = c->finished_at;
        s->exit_code = c->exit_code;
        s->image = image_spec(c, a);
        s->image_ref = rm_arena_strdup(a, c->image_ref);
        s->image_id = rm_arena_strdup(a, c->image_id);
        s->reason = rm_arena_strdup(a, c->reason ? c->reason : "");
        s->message = rm_arena_strdup(a, c->message ? c->message : "");
        s->labels = (Runtime__V1__ContainerStatus__LabelsEntry **)rm_pb_map_from_json(
            a, &runtime__v1__container_status__labels_entry__descriptor, c->labels, &s->n_labels);
        s->annotations = (Runtime__V1__ContainerStatus__AnnotationsEntry **)rm_pb_map_from_json(
            a, &runtime__v1__container_status__annotations_entry__descriptor, c->annotations,
            &s->n_annotations);
        s->mounts = mounts(c, a, &s->n_mounts);
        s->log_path = rm_arena_strdup(a, c->log_path);
        s->user = user(c, a);
        s->stop_signal = rm__stop_signal_to_cri(c->stop_signal);
        if (c->resources) {
                s->resources = rm_arena_alloc(a, sizeof(*s->resources));
                runtime__v1__container_resources__init(s->resources);
                s->resources->linux = rm__resources_from_json(c->resources, a);
        }

        Runtime__V1__ContainerStatusResponse *r = rm_arena_alloc(a, sizeof(*r));
        runtime__v1__container_status_response__init(r);
        r->status = s;
        if (verbose) {
                struct json_object *o = json_object_new_object();
                json_object_object_add(o, "pid", json_object_new_int(c->pid));
                json_object_object_add(o, "sandboxID", json_object_new_string(c->pod_id));
                cleanup_free char *bundle = xasprintf("%s/%s", mgr->bundles, c->id);
                json_object_object_add(o, "bundle", json_object_new_string(bundle));
                json_object_object_add(o, "runtimeHandler",
                                       json_object_new_string(c->runtime_handler));
                r->n_info = 1;
                r->info = (Runtime__V1__ContainerStatusResponse__InfoEntry **)rm_arena_ptrs(a, 1);
                r->info[0] = info(a, "info", o);
                json_object_put(o);
        }
        return r;
}

Runtime__V1__Container *rm__ctr_summary(const struct ctr *c, struct rm_arena *a)
{
        Runtime__V1__Container *s = rm_arena_alloc(a, sizeof(*s));
        runtime__v1__container__init(s);
        s->id = rm_arena_strdup(a, c->id);
        s->pod_sandbox_id = rm_arena_strdup(a, c->pod_id);
        s->metadata = rm__ctr_metadata(c, a);
        s->image = image_spec(c, a);
        s->image_ref = rm_arena_strdup(a, c->image_ref);
        s->image_id = rm_arena_strdup(a, c->image_id);
        s->state = c->state;
        s->created_at = c->created_at;
        s->labels = (Runtime__V1__Container__LabelsEntry **)rm_pb_map_from_json(
            a, &runtime__v1__container__labels_entry__descriptor, c->labels, &s->n_labels);
        s->annotations = (Runtime__V1__Container__AnnotationsEntry **)rm_pb_map_from_json(
            a, &runtime__v1__container__annotations_entry__descriptor, c->annotations,
            &s->n_annotations);
        return s;
}

static bool prefix_of(const char *prefix, const char *s)
{
        return prefix == NULL || *prefix == '\0' || strncmp(s, prefix, strlen(prefix)) == 0;
}

bool rm__ctr_matches(const struct ctr *c, const Runtime__V1__ContainerFilter *f)
{
        if (c->creating)
                return false;
        if (f == NULL)
                return true;
        if (!prefix_of(f->id, c->id) || !prefix_of(f->pod_sandbox_id, c->pod_id))
                return false;
        if (f->state && f->state->state != c->state)
                return false;
        for (size_t i = 0; i < f->n_label_selector; i++) {
                struct json_object *v = NULL;
                if (!json_object_object_get_ex(c->labels, f->label_selector[i]->key, &v) ||
                    strcmp(json_object_get_string(v), f->label_selector[i]->value) != 0)
                        return false;
        }
        return true;
}
