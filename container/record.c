/* A container's record in the meta store, and back. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "manager_internal.h"
#include "remora/cleanup.h"
#include "remora/xalloc.h"

static void put_str(struct json_object *o, const char *key, const char *v)
{
        json_object_object_add(o, key, json_object_new_string(v ? v : ""));
}

struct json_object *rm__ctr_to_json(const struct ctr *c)
{
        struct json_object *o = json_object_new_object();
        put_str(o, "pod_id", c->pod_id);
        put_str(o, "name", c->name);
        json_object_object_add(o, "attempt", json_object_new_int64(c->attempt));
        put_str(o, "image", c->image);
        put_str(o, "image_id", c->image_id);
        put_str(o, "image_ref", c->image_ref);
        put_str(o, "log_path", c->log_path);
        put_str(o, "runtime_handler", c->runtime_handler);
        json_object_object_add(o, "request_hash", json_object_new_uint64(c->request_hash));
        json_object_object_add(o, "labels", json_object_get(c->labels));
        json_object_object_add(o, "annotations", json_object_get(c->annotations));
        json_object_object_add(o, "mounts", json_object_get(c->mounts));
        json_object_object_add(o, "image_volumes",
                               c->image_volumes ? json_object_get(c->image_volumes)
                                                : json_object_new_array());
        json_object_object_add(o, "state", json_object_new_int(c->state));
        json_object_object_add(o, "created_at", json_object_new_int64(c->created_at));
        json_object_object_add(o, "started_at", json_object_new_int64(c->started_at));
        json_object_object_add(o, "finished_at", json_object_new_int64(c->finished_at));
        json_object_object_add(o, "exit_code", json_object_new_int(c->exit_code));
        put_str(o, "reason", c->reason);
        put_str(o, "message", c->message);
        json_object_object_add(o, "stop_signal", json_object_new_int(c->stop_signal));
        json_object_object_add(o, "pid", json_object_new_int(c->pid));
        if (c->start_pending)
                json_object_object_add(o, "start_pending", json_object_new_boolean(true));
        json_object_object_add(o, "uid", json_object_new_int64(c->uid));
        json_object_object_add(o, "gid", json_object_new_int64(c->gid));
        if (c->groups)
                json_object_object_add(o, "groups", json_object_get(c->groups));
        put_str(o, "cgroup_path", c->cgroup_path);
        json_object_object_add(o, "tty", json_object_new_boolean(c->tty));
        json_object_object_add(o, "stdin", json_object_new_boolean(c->stdin));
        json_object_object_add(o, "stdin_once", json_object_new_boolean(c->stdin_once));
        json_object_object_add(o, "resources", json_object_get(c->resources));
        return o;
}

struct json_object *rm__resources_to_json(const Runtime__V1__LinuxContainerResources *r)
{
        struct json_object *o = json_object_new_object();
        if (r == NULL)
                return o;
        static const struct {
                const char *key;
                size_t off;
        } nums[] = {
            {"cpu_period", offsetof(Runtime__V1__LinuxContainerResources, cpu_period)},
            {"cpu_quota", offsetof(Runtime__V1__LinuxContainerResources, cpu_quota)},
            {"cpu_shares", offsetof(Runtime__V1__LinuxContainerResources, cpu_shares)},
            {"memory_limit_in_bytes",
             offsetof(Runtime__V1__LinuxContainerResources, memory_limit_in_bytes)},
            {"oom_score_adj", offsetof(Runtime__V1__LinuxContainerResources, oom_score_adj)},
            {"memory_swap_limit_in_bytes",
             offsetof(Runtime__V1__LinuxContainerResources, memory_swap_limit_in_bytes)},
        };
        for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
                int64_t v = *(const int64_t *)((const char *)r + nums[i].off);
                if (v != 0)
                        json_object_object_add(o, nums[i].key, json_object_new_int64(v));
        }
        if (r->cpuset_cpus && *r->cpuset_cpus)
                put_str(o, "cpuset_cpus", r->cpuset_cpus);
        if (r->cpuset_mems && *r->cpuset_mems)
                put_str(o, "cpuset_mems", r->cpuset_mems);
        if (r->n_hugepage_limits) {
                struct json_object *a = json_object_new_array();
                for (size_t i = 0; i < r->n_hugepage_limits; i++) {
                        struct json_object *h = json_object_new_object();
                        put_str(h, "page_size", r->hugepage_limits[i]->page_size);
                        json_object_object_add(
                            h, "limit", json_object_new_uint64(r->hugepage_limits[i]->limit));
                        json_object_array_add(a, h);
                }
                json_object_object_add(o, "hugepage_limits", a);
        }
        if (r->n_unified) {
                struct json_object *u = json_object_new_object();
                for (size_t i = 0; i < r->n_unified; i++)
                        put_str(u, r->unified[i]->key, r->unified[i]->value);
                json_object_object_add(o, "unified", u);
        }
        return o;
}

static int64_t opt_num(struct json_object *o, const char *key)
{
        struct json_object *v = NULL;
        return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

static char *opt_str(struct json_object *o, const char *key, struct rm_arena *a)
{
        struct json_object *v = NULL;
        return rm_arena_strdup(a, json_object_object_get_ex(o, key, &v) ? json_object_get_string(v)
                                                                        : "");
}

Runtime__V1__LinuxContainerResources *rm__resources_from_json(struct json_object *o,
                                                              struct rm_arena *a)
{
        Runtime__V1__LinuxContainerResources *r = rm_arena_alloc(a, sizeof(*r));
        runtime__v1__linux_container_resources__init(r);
        r->cpu_period = opt_num(o, "cpu_period");
        r->cpu_quota = opt_num(o, "cpu_quota");
        r->cpu_shares = opt_num(o, "cpu_shares");
        r->memory_limit_in_bytes = opt_num(o, "memory_limit_in_bytes");
        r->oom_score_adj = opt_num(o, "oom_score_adj");
        r->memory_swap_limit_in_bytes = opt_num(o, "memory_swap_limit_in_bytes");
        r->cpuset_cpus = opt_str(o, "cpuset_cpus", a);
        r->cpuset_mems = opt_str(o, "cpuset_mems", a);
        struct json_object *v = NULL;
        if (json_object_object_get_ex(o, "hugepage_limits", &v) &&
            json_object_is_type(v, json_type_array)) {
                r->n_hugepage_limits = json_object_array_length(v);
                r->hugepage_limits = (Runtime__V1__HugepageLimit **)rm_arena_ptrs(
                    a, r->n_hugepage_limits ? r->n_hugepage_limits : 1);
                for (size_t i = 0; i < r->n_hugepage_limits; i++) {
                        struct json_object *h = json_object_array_get_idx(v, i), *l = NULL;
                        Runtime__V1__HugepageLimit *hp = rm_arena_alloc(a, sizeof(*hp));
                        runtime__v1__hugepage_limit__init(hp);
                        hp->page_size = opt_str(h, "page_size", a);
                        if (json_object_object_get_ex(h, "limit", &l))
                                hp->limit = json_object_get_uint64(l);
                        r->hugepage_limits[i] = hp;
                }
        }
        if (json_object_object_get_ex(o, "unified", &v) &&
            json_object_is_type(v, json_type_object)) {
                r->n_unified = (size_t)json_object_object_length(v);
                r->unified = (Runtime__V1__LinuxContainerResources__UnifiedEntry **)rm_arena_ptrs(
                    a, r->n_unified ? r->n_unified : 1);
                size_t i = 0;
                json_object_object_foreach(v, key, val)
                {
                        Runtime__V1__LinuxContainerResources__UnifiedEntry *e =
                            rm_arena_alloc(a, sizeof(*e));
                        runtime__v1__linux_container_resources__unified_entry__init(e);
                        e->key = rm_arena_strdup(a, key);
                        e->value = rm_arena_strdup(a, json_object_get_string(val));
                        r->unified[i++] = e;
                }
        }
        return r;
}

/* Field readers that fail on a missing or mistyped field, naming it. */
struct reader {
        struct json_object *doc;
        const char *id;
        struct rm_error **err;
        bool failed;
};

static struct json_object *field(struct reader *r, const char *key, json_type type)
{
        struct json_object *v = NULL;
        if (r->failed)
                return NULL;
        if (!json_object_object_get_ex(r->doc, key, &v) || !json_object_is_type(v, type)) {
                rm_error_set(r->err, RM_DATA_LOSS,
                             "container record %s: field %s is missing or "
                             "not a %s",
                             r->id, key, json_type_to_name(type));
                r->failed = true;
                return NULL;
        }
        return v;
}

static char *str(struct reader *r, const char *key)
{
        struct json_object *v = field(r, key, json_type_string);
        return v ? xstrdup(json_object_get_string(v)) : NULL;
}

static int64_t num(struct reader *r, const char *key)
{
        struct json_object *v = field(r, key, json_type_int);
        return v ? json_object_get_int64(v) : 0;
}

static bool flag(struct reader *r, const char *key)
{
        struct json_object *v = field(r, key, json_type_boolean);
        return v ? json_object_get_boolean(v) : false;
}

static struct json_object *obj(struct reader *r, const char *key, json_type type)
{
        struct json_object *v = field(r, key, type);
        return v ? json_object_get(v) : NULL;
}

struct ctr *rm__ctr_from_json(const char *id, struct json_object *doc, struct rm_error **err)
{
        if (!rm_id_valid(id)) {
                rm_error_set(err, RM_DATA_LOSS, "container record %s: not a container ID", id);
                return NULL;
        }
        struct reader r = {.doc = doc, .id = id, .err = err};
        struct ctr *c = xzalloc(sizeof(*c));
        pthread_mutex_init(&c->op, NULL);
        pthread_mutex_init(&c->save_lock, NULL);
        memcpy(c->id, id, RM_ID_LEN + 1);
        c->pod_id = str(&r, "pod_id");
        c->name = str(&r, "name");
        c->attempt = (uint32_t)num(&r, "attempt");
        c->image = str(&r, "image");
        c->image_id = str(&r, "image_id");
        c->image_ref = str(&r, "image_ref");
        c->log_path = str(&r, "log_path");
        c->runtime_handler = str(&r, "runtime_handler");
        struct json_object *hash = field(&r, "request_hash", json_type_int);
        c->request_hash = hash ? json_object_get_uint64(hash) : 0;
        c->labels = obj(&r, "labels", json_type_object);
        c->annotations = obj(&r, "annotations", json_type_object);
        c->mounts = obj(&r, "mounts", json_type_array);
        /* Records written before image volumes existed have none. */
        struct json_object *vols = NULL;
        c->image_volumes = json_object_object_get_ex(doc, "image_volumes", &vols) &&
                                   json_object_is_type(vols, json_type_array)
                               ? json_object_get(vols)
                               : json_object_new_array();
        c->state = (Runtime__V1__ContainerState)num(&r, "state");
        c->created_at = num(&r, "created_at");
        c->started_at = num(&r, "started_at");
        c->finished_at = num(&r, "finished_at");
        c->exit_code = (int)num(&r, "exit_code");
        c->reason = str(&r, "reason");
        c->message = str(&r, "message");
        c->stop_signal = (int)num(&r, "stop_signal");
        c->pid = (pid_t)num(&r, "pid");
        struct json_object *pending = NULL;
        c->start_pending = json_object_object_get_ex(doc, "start_pending", &pending) &&
                           json_object_get_boolean(pending);
        c->uid = (uint32_t)num(&r, "uid");
        c->gid = (uint32_t)num(&r, "gid");
        /* Optional: records written before the groups were kept have none. */
        struct json_object *groups = NULL;
        if (json_object_object_get_ex(doc, "groups", &groups) &&
            json_object_is_type(groups, json_type_array))
                c->groups = json_object_get(groups);
        c->cgroup_path = str(&r, "cgroup_path");
        c->tty = flag(&r, "tty");
        c->stdin = flag(&r, "stdin");
        c->stdin_once = flag(&r, "stdin_once");
        c->resources = obj(&r, "resources", json_type_object);
        if (r.failed) {
                rm__ctr_free(c);
                return NULL;
        }
        return c;
}

void rm__ctr_free(struct ctr *c)
{
        if (c == NULL)
                return;
        free(c->pod_id);
        free(c->name);
        free(c->image);
        free(c->image_id);
        free(c->image_ref);
        free(c->log_path);
        free(c->runtime_handler);
        json_object_put(c->labels);
        json_object_put(c->annotations);
        json_object_put(c->mounts);
        json_object_put(c->image_volumes);
        json_object_put(c->groups);
        free(c->cgroup_path);
        json_object_put(c->resources);
        free(c->reason);
        free(c->message);
        rm_pb_packed_clear(&c->summary);
        pthread_mutex_destroy(&c->op);
        pthread_mutex_destroy(&c->save_lock);
        free(c);
}
