/* A container's record in the meta store, and back. */
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
        json_object_object_add(o, "state", json_object_new_int(c->state));
        json_object_object_add(o, "created_at", json_object_new_int64(c->created_at));
        json_object_object_add(o, "started_at", json_object_new_int64(c->started_at));
        json_object_object_add(o, "finished_at", json_object_new_int64(c->finished_at));
        json_object_object_add(o, "exit_code", json_object_new_int(c->exit_code));
        put_str(o, "reason", c->reason);
        put_str(o, "message", c->message);
        json_object_object_add(o, "stop_signal", json_object_new_int(c->stop_signal));
        json_object_object_add(o, "pid", json_object_new_int(c->pid));
        json_object_object_add(o, "uid", json_object_new_int64(c->uid));
        json_object_object_add(o, "gid", json_object_new_int64(c->gid));
        return o;
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
        c->state = (Runtime__V1__ContainerState)num(&r, "state");
        c->created_at = num(&r, "created_at");
        c->started_at = num(&r, "started_at");
        c->finished_at = num(&r, "finished_at");
        c->exit_code = (int)num(&r, "exit_code");
        c->reason = str(&r, "reason");
        c->message = str(&r, "message");
        c->stop_signal = (int)num(&r, "stop_signal");
        c->pid = (pid_t)num(&r, "pid");
        c->uid = (uint32_t)num(&r, "uid");
        c->gid = (uint32_t)num(&r, "gid");
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
        free(c->reason);
        free(c->message);
        pthread_mutex_destroy(&c->op);
        free(c);
}
