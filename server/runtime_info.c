/* Version and Status: what the runtime is and whether it can run pods now. */
#include <string.h>
#include <unistd.h>

#include "api.pb-c.h"
#include "daemon.h"
#include "dispatch.h"
#include "handlers.h"
#include "remora/cleanup.h"
#include "version.h"

/* The CRI's own "version of the kubelet runtime API" field; every runtime reports 0.1.0. */
#define CRI_VERSION_FIELD "0.1.0"

RM_HANDLER(version)
{
        (void)req;
        (void)err;
        Runtime__V1__VersionResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__version_response__init(r);
        r->version = CRI_VERSION_FIELD;
        r->runtime_name = "remora";
        r->runtime_version = REMORA_VERSION;
        r->runtime_api_version = "v1";
        *resp = &r->base;
        return 0;
}

static Runtime__V1__RuntimeCondition *condition(struct rm_arena *arena, const char *type,
                                                bool status, const char *reason,
                                                const char *message)
{
        Runtime__V1__RuntimeCondition *c = rm_arena_alloc(arena, sizeof(*c));
        runtime__v1__runtime_condition__init(c);
        c->type = (char *)type;
        c->status = status;
        c->reason = rm_arena_strdup(arena, reason);
        c->message = rm_arena_strdup(arena, message);
        return c;
}

/* The runtime can run containers when its OCI runtime binary is there and the daemon's
 * directories are writable. */
static Runtime__V1__RuntimeCondition *runtime_ready(struct rm_call *call)
{
        const struct rm_daemon *d = call->daemon;
        cleanup_error struct rm_error *why = NULL;
        if (!rm_runtime_usable(d->runtime, &why))
                return condition(call->arena, "RuntimeReady", false, "OCIRuntimeUnavailable",
                                 why->msg);
        const char *dirs[] = {d->cfg->root, d->cfg->state};
        for (size_t i = 0; i < 2; i++) {
                if (access(dirs[i], W_OK | X_OK) < 0) {
                        rm_error_sys(&why, "directory %s is not writable", dirs[i]);
                        return condition(call->arena, "RuntimeReady", false,
                                         "StateDirectoryUnavailable", why->msg);
                }
        }
        return condition(call->arena, "RuntimeReady", true, "", "");
}

static Runtime__V1__StatusResponse__InfoEntry *info_entry(struct rm_arena *arena, const char *key,
                                                          struct json_object *value)
{
        Runtime__V1__StatusResponse__InfoEntry *e = rm_arena_alloc(arena, sizeof(*e));
        runtime__v1__status_response__info_entry__init(e);
        e->key = (char *)key;
        e->value = rm_arena_strdup(
            arena, json_object_to_json_string_ext(value, JSON_C_TO_STRING_PLAIN |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE));
        return e;
}

static struct json_object *runtime_json(const struct rm_daemon *d)
{
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "handler", json_object_new_string(d->runtime->handler));
        json_object_object_add(o, "configured", json_object_new_string(d->runtime->configured));
        json_object_object_add(o, "path",
                               d->runtime->path ? json_object_new_string(d->runtime->path) : NULL);
        return o;
}

static struct json_object *build_json(const struct rm_daemon *d)
{
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "version", json_object_new_string(REMORA_VERSION));
        json_object_object_add(o, "commit", json_object_new_string(REMORA_GIT_COMMIT));
        json_object_object_add(o, "started", json_object_new_int64((int64_t)d->started));
        json_object_object_add(o, "pid", json_object_new_int((int)getpid()));
        return o;
}

RM_HANDLER(status)
{
        (void)err;
        const Runtime__V1__StatusRequest *in = (const Runtime__V1__StatusRequest *)req;
        struct rm_arena *a = call->arena;
        const struct rm_daemon *d = call->daemon;

        Runtime__V1__RuntimeStatus *st = rm_arena_alloc(a, sizeof(*st));
        runtime__v1__runtime_status__init(st);
        st->n_conditions = 2;
        st->conditions = (Runtime__V1__RuntimeCondition **)rm_arena_ptrs(a, 2);
        st->conditions[0] = runtime_ready(call);
        const char *reason = "", *message = "";
        bool net = rm_network_ready(d->network, &reason, &message);
        st->conditions[1] = condition(a, "NetworkReady", net, reason, message);

        Runtime__V1__StatusResponse *r = rm_arena_alloc(a, sizeof(*r));
        runtime__v1__status_response__init(r);
        r->status = st;
        if (in->verbose) {
                cleanup_json struct json_object *config = rm_config_to_json(d->cfg);
                cleanup_json struct json_object *runtime = runtime_json(d);
                cleanup_json struct json_object *build = build_json(d);
                r->n_info = 3;
                r->info = (Runtime__V1__StatusResponse__InfoEntry **)rm_arena_ptrs(a, 3);
                r->info[0] = info_entry(a, "config", config);
                r->info[1] = info_entry(a, "runtime", runtime);
                r->info[2] = info_entry(a, "build", build);
        }
        *resp = &r->base;
        return 0;
}
