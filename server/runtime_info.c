/* Version and Status: what the runtime is and whether it can run pods now. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.pb-c.h"
#include "daemon.h"
#include "dispatch.h"
#include "grpc_server.h"
#include "handlers.h"
#include "remora/cleanup.h"
#include "remora/log.h"
#include "remora/metrics.h"
#include "remora/xalloc.h"
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
static bool check_ready(const struct rm_daemon *d, const char **reason, struct rm_error **why)
{
        if (!rm_runtime_usable(d->runtime, why)) {
                *reason = "OCIRuntimeUnavailable";
                return false;
        }
        const char *dirs[] = {d->cfg->root, d->cfg->state};
        for (size_t i = 0; i < 2; i++) {
                if (access(dirs[i], W_OK | X_OK) < 0) {
                        rm_error_sys(why, "directory %s is not writable", dirs[i]);
                        *reason = "StateDirectoryUnavailable";
                        return false;
                }
        }
        return true;
}

/* The verdict of check_ready, at most RM_READY_CHECK_NS old: kubelet asks every few
 * seconds, a polling client may ask thousands of times a second. */
static Runtime__V1__RuntimeCondition *runtime_ready(struct rm_call *call)
{
        struct rm_daemon *d = call->daemon;
        int64_t now = rm_metrics_now_ns();
        pthread_mutex_lock(&d->ready.lock);
        if (d->ready.checked_ns == 0 || now - d->ready.checked_ns >= RM_READY_CHECK_NS) {
                cleanup_error struct rm_error *why = NULL;
                const char *reason = "";
                d->ready.ok = check_ready(d, &reason, &why);
                free(d->ready.reason);
                free(d->ready.message);
                d->ready.reason = xstrdup(reason);
                d->ready.message = xstrdup(why ? why->msg : "");
                d->ready.checked_ns = now;
        }
        Runtime__V1__RuntimeCondition *c =
            condition(call->arena, "RuntimeReady", d->ready.ok, d->ready.reason, d->ready.message);
        pthread_mutex_unlock(&d->ready.lock);
        return c;
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

/* Whether this host can run user-namespaced pods: idmapped mounts work where their
 * files live (found once at start). */
static bool host_user_namespaces(const struct rm_daemon *d)
{
        return d->userns_unavailable == NULL;
}

/* A handler as the verbose Status shows it; its features too, for clients (crictl before
 * 1.30) that know no Status.runtime_handlers. */
static struct json_object *handler_json(const struct rm_daemon *d, const struct rm_runtime *rt)
{
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "handler", json_object_new_string(rt->handler));
        json_object_object_add(o, "configured", json_object_new_string(rt->configured));
        json_object_object_add(o, "path", rt->path ? json_object_new_string(rt->path) : NULL);
        json_object_object_add(o, "root", json_object_new_string(rt->root));
        json_object_object_add(o, "systemd_cgroup", json_object_new_boolean(rt->systemd_cgroup));
        struct rm_runtime_features f;
        rm_runtime_features(rt, host_user_namespaces(d), &f);
        struct json_object *fo = json_object_new_object();
        json_object_object_add(fo, "recursive_read_only_mounts",
                               json_object_new_boolean(f.recursive_read_only_mounts));
        json_object_object_add(fo, "user_namespaces", json_object_new_boolean(f.user_namespaces));
        json_object_object_add(o, "features", fo);
        return o;
}

/* "runtime": the default handler (as before handlers existed), with "handlers": all, and
 * "runtime_features": Status.features. */
static struct json_object *runtime_json(const struct rm_daemon *d)
{
        struct json_object *o = handler_json(d, d->runtime);
        struct json_object *all = json_object_new_array();
        for (size_t i = 0; i < d->runtimes->n; i++)
                json_object_array_add(all, handler_json(d, d->runtimes->v[i]));
        json_object_object_add(o, "handlers", all);
        struct json_object *features = json_object_new_object();
        json_object_object_add(features, "supplemental_groups_policy",
                               json_object_new_boolean(true));
        json_object_object_add(o, "runtime_features", features);
        return o;
}

static Runtime__V1__RuntimeHandler *handler_entry(struct rm_arena *a, const char *name,
                                                  const struct rm_runtime *rt, bool userns)
{
        struct rm_runtime_features f;
        rm_runtime_features(rt, userns, &f);
        Runtime__V1__RuntimeHandlerFeatures *hf = rm_arena_alloc(a, sizeof(*hf));
        runtime__v1__runtime_handler_features__init(hf);
        hf->recursive_read_only_mounts = f.recursive_read_only_mounts;
        hf->user_namespaces = f.user_namespaces;
        Runtime__V1__RuntimeHandler *h = rm_arena_alloc(a, sizeof(*h));
        runtime__v1__runtime_handler__init(h);
        h->name = rm_arena_strdup(a, name);
        h->features = hf;
        return h;
}

/* Every handler by name, and the default once more under "" (the CRI's name for the
 * handler a pod without a RuntimeClass gets), as containerd lists them. */
static void list_handlers(const struct rm_daemon *d, struct rm_arena *a,
                          Runtime__V1__StatusResponse *r)
{
        bool userns = host_user_namespaces(d);
        r->runtime_handlers = (Runtime__V1__RuntimeHandler **)rm_arena_ptrs(a, d->runtimes->n + 1);
        r->runtime_handlers[r->n_runtime_handlers++] = handler_entry(a, "", d->runtime, userns);
        for (size_t i = 0; i < d->runtimes->n; i++)
                r->runtime_handlers[r->n_runtime_handlers++] =
                    handler_entry(a, d->runtimes->v[i]->handler, d->runtimes->v[i], userns);
        Runtime__V1__RuntimeFeatures *f = rm_arena_alloc(a, sizeof(*f));
        runtime__v1__runtime_features__init(f);
        f->supplemental_groups_policy = true;
        r->features = f;
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

/* The front end's load: calls in flight, those whose client gave up, the pool. */
static struct json_object *calls_json(const struct rm_daemon *d)
{
        struct rm_grpc_load l = {0};
        if (d->grpc)
                rm_grpc_server_load(d->grpc, &l);
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "in_flight", json_object_new_int64((int64_t)l.in_flight));
        json_object_object_add(o, "cancelled", json_object_new_int64((int64_t)l.cancelled));
        json_object_object_add(o, "pool_threads", json_object_new_int64((int64_t)l.pool_threads));
        json_object_object_add(o, "pool_busy", json_object_new_int64((int64_t)l.pool_busy));
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
        list_handlers(d, a, r);
        if (in->verbose) {
                cleanup_json struct json_object *config = rm_config_to_json(d->cfg);
                cleanup_json struct json_object *runtime = runtime_json(d);
                cleanup_json struct json_object *build = build_json(d);
                cleanup_json struct json_object *rc = json_object_new_object();
                pthread_mutex_lock(&call->daemon->runtime_config_lock);
                json_object_object_add(rc, "pod_cidr", json_object_new_string(d->pod_cidr));
                pthread_mutex_unlock(&call->daemon->runtime_config_lock);
                cleanup_json struct json_object *calls = calls_json(d);
                r->n_info = 5;
                r->info = (Runtime__V1__StatusResponse__InfoEntry **)rm_arena_ptrs(a, 5);
                r->info[0] = info_entry(a, "config", config);
                r->info[1] = info_entry(a, "runtime", runtime);
                r->info[2] = info_entry(a, "build", build);
                r->info[3] = info_entry(a, "runtime_config", rc);
                r->info[4] = info_entry(a, "calls", calls);
        }
        *resp = &r->base;
        return 0;
}

/* One CIDR: an IPv4 or IPv6 network address and a prefix length that fits it. */
static bool cidr_valid(const char *s, size_t len)
{
        char buf[INET6_ADDRSTRLEN + 8];
        if (len == 0 || len >= sizeof(buf))
                return false;
        memcpy(buf, s, len);
        buf[len] = '\0';
        char *slash = strchr(buf, '/');
        if (slash == NULL || slash[1] == '\0' ||
            strspn(slash + 1, "0123456789") != strlen(slash + 1))
                return false;
        *slash = '\0';
        long prefix = strtol(slash + 1, NULL, 10);
        unsigned char addr[16];
        if (inet_pton(AF_INET, buf, addr) == 1)
                return prefix <= 32;
        return inet_pton(AF_INET6, buf, addr) == 1 && prefix <= 128;
}

/* kubelet sends the node's pod CIDR (two, comma-separated, in dual stack) once it knows
 * it; Remora keeps it for Status and for networking. */
RM_HANDLER(update_runtime_config)
{
        const Runtime__V1__UpdateRuntimeConfigRequest *in =
            (const Runtime__V1__UpdateRuntimeConfigRequest *)req;
        const char *cidr = in->runtime_config && in->runtime_config->network_config &&
                                   in->runtime_config->network_config->pod_cidr
                               ? in->runtime_config->network_config->pod_cidr
                               : "";
        for (const char *p = cidr; *cidr;) {
                size_t len = strcspn(p, ",");
                if (!cidr_valid(p, len))
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "runtime_config.network_config.pod_cidr \"%s\" is not "
                                            "a CIDR list such as 10.244.0.0/24,fd00::/64",
                                            cidr);
                if (p[len] == '\0')
                        break;
                p += len + 1; /* a trailing comma leaves an empty, invalid entry */
        }
        pthread_mutex_lock(&call->daemon->runtime_config_lock);
        if (strcmp(call->daemon->pod_cidr, cidr) != 0) {
                rm_log_info("pod CIDR set to \"%s\" (was \"%s\")", cidr, call->daemon->pod_cidr);
                free(call->daemon->pod_cidr);
                call->daemon->pod_cidr = xstrdup(cidr);
        }
        pthread_mutex_unlock(&call->daemon->runtime_config_lock);
        Runtime__V1__UpdateRuntimeConfigResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__update_runtime_config_response__init(r);
        *resp = &r->base;
        return 0;
}

/* Remora manages cgroups through cgroupfs directly; kubelet must use the same driver. */
RM_HANDLER(runtime_config)
{
        (void)req;
        (void)err;
        Runtime__V1__LinuxRuntimeConfiguration *l = rm_arena_alloc(call->arena, sizeof(*l));
        runtime__v1__linux_runtime_configuration__init(l);
        l->cgroup_driver = RUNTIME__V1__CGROUP_DRIVER__CGROUPFS;
        Runtime__V1__RuntimeConfigResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__runtime_config_response__init(r);
        r->linux = l;
        *resp = &r->base;
        return 0;
}
