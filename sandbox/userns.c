/* The mappings kubelet sends for a pod with hostUsers: false. Its user namespace manager
 * (kubernetes/kubernetes pkg/kubelet/userns/userns_manager.go: GetOrCreateUserNamespaceMappings,
 * createUserNs, parseUserNsFileAndRecord) gives each pod exactly one uid and one gid
 * mapping, container ID 0, a length of idsPerPod (65536 by default, always a multiple of
 * 65536) at a host offset that is a multiple of that length and never 0; hostUsers: true
 * or unset is sent as mode NODE (or no option at all). Remora accepts what kubelet can
 * send and refuses the rest by name. */
#include <inttypes.h>
#include <stdint.h>

#include "userns.h"

#define USERNS_UNIT 65536u

static int check_one(const char *field, size_t n, Runtime__V1__IDMapping *const *maps,
                     struct rm_idrange *out, struct rm_error **err)
{
        if (n != 1)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "namespace_options.userns_options.%s: exactly one mapping is "
                                    "needed, got %zu",
                                    field, n);
        const Runtime__V1__IDMapping *m = maps[0];
        if (m->container_id != 0)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "namespace_options.userns_options.%s[0].container_id must be "
                                    "0 (container root mapped), got %u",
                                    field, m->container_id);
        if (m->length == 0 || m->length % USERNS_UNIT != 0)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "namespace_options.userns_options.%s[0].length %u must be a "
                                    "positive multiple of %u",
                                    field, m->length, USERNS_UNIT);
        if (m->host_id == 0)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "namespace_options.userns_options.%s[0].host_id must not be "
                                    "0: the host's root may not be mapped into a pod",
                                    field);
        if ((uint64_t)m->host_id + m->length > UINT32_MAX)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "namespace_options.userns_options.%s[0]: host_id %u + length "
                                    "%u runs past the last ID",
                                    field, m->host_id, m->length);
        out->host = m->host_id;
        out->len = m->length;
        return 0;
}

int rm__pod_userns_parse(const Runtime__V1__NamespaceOption *ns, bool *on, struct rm_idrange *uids,
                         struct rm_idrange *gids, struct rm_error **err)
{
        *on = false;
        const Runtime__V1__UserNamespace *u = ns ? ns->userns_options : NULL;
        if (u == NULL || u->mode == RUNTIME__V1__NAMESPACE_MODE__NODE) {
                if (u && (u->n_uids || u->n_gids))
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "namespace_options.userns_options: mode NODE takes no "
                                            "uids or gids");
                return 0;
        }
        if (u->mode != RUNTIME__V1__NAMESPACE_MODE__POD)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "namespace_options.userns_options.mode %d: only POD and NODE "
                                    "are supported",
                                    (int)u->mode);
        if (check_one("uids", u->n_uids, u->uids, uids, err) < 0 ||
            check_one("gids", u->n_gids, u->gids, gids, err) < 0)
                return -1;
        /* The pod's namespaces must all belong to its user namespace: a host namespace
         * would leave its containers without power over it (kubelet forbids these too). */
        const char *host = ns->network == RUNTIME__V1__NAMESPACE_MODE__NODE ? "network"
                           : ns->ipc == RUNTIME__V1__NAMESPACE_MODE__NODE   ? "ipc"
                           : ns->pid == RUNTIME__V1__NAMESPACE_MODE__NODE   ? "pid"
                                                                            : NULL;
        if (host)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "namespace_options.%s NODE cannot be combined with "
                                    "userns_options mode POD (a pod with its own user namespace "
                                    "cannot use the host's %s namespace)",
                                    host, host);
        *on = true;
        return 0;
}

struct json_object *rm__pod_userns_json(const struct rm_idrange *uids,
                                        const struct rm_idrange *gids)
{
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "uid_host", json_object_new_int64(uids->host));
        json_object_object_add(o, "uid_len", json_object_new_int64(uids->len));
        json_object_object_add(o, "gid_host", json_object_new_int64(gids->host));
        json_object_object_add(o, "gid_len", json_object_new_int64(gids->len));
        return o;
}

static uint32_t u32(struct json_object *o, const char *key)
{
        struct json_object *v = NULL;
        return json_object_object_get_ex(o, key, &v) ? (uint32_t)json_object_get_int64(v) : 0;
}

bool rm__pod_userns_from_json(struct json_object *o, struct rm_idrange *uids,
                              struct rm_idrange *gids)
{
        if (o == NULL || !json_object_is_type(o, json_type_object))
                return false;
        uids->host = u32(o, "uid_host");
        uids->len = u32(o, "uid_len");
        gids->host = u32(o, "gid_host");
        gids->len = u32(o, "gid_len");
        return uids->len && gids->len;
}

static Runtime__V1__IDMapping **mapping(struct rm_arena *a, uint32_t host, uint32_t len)
{
        Runtime__V1__IDMapping *m = rm_arena_alloc(a, sizeof(*m));
        runtime__v1__idmapping__init(m);
        m->host_id = host;
        m->container_id = 0;
        m->length = len;
        Runtime__V1__IDMapping **v = (Runtime__V1__IDMapping **)rm_arena_ptrs(a, 1);
        v[0] = m;
        return v;
}

Runtime__V1__UserNamespace *rm__pod_userns_status(struct json_object *o, struct rm_arena *a)
{
        Runtime__V1__UserNamespace *u = rm_arena_alloc(a, sizeof(*u));
        runtime__v1__user_namespace__init(u);
        struct rm_idrange uids, gids;
        if (!rm__pod_userns_from_json(o, &uids, &gids)) {
                u->mode = RUNTIME__V1__NAMESPACE_MODE__NODE;
                return u;
        }
        u->mode = RUNTIME__V1__NAMESPACE_MODE__POD;
        u->n_uids = u->n_gids = 1;
        u->uids = mapping(a, uids.host, uids.len);
        u->gids = mapping(a, gids.host, gids.len);
        return u;
}
