/* A pod's user namespace option (NamespaceOption.userns_options): checked, recorded. */
#ifndef REMORA_SANDBOX_USERNS_H
#define REMORA_SANDBOX_USERNS_H

#include <stdbool.h>
#include <json-c/json.h>

#include "api.pb-c.h"
#include "pinns.h"
#include "remora/arena.h"
#include "remora/error.h"

/* Whether the pod asks for its own user namespace (mode POD), with its ID mappings in
 * *uids and *gids. Absent options and mode NODE are the host's. Bad mappings are
 * INVALID_ARGUMENT naming the field. */
int rm__pod_userns_parse(const Runtime__V1__NamespaceOption *ns, bool *on, struct rm_idrange *uids,
                         struct rm_idrange *gids, struct rm_error **err);

/* The mappings as the pod's record keeps them, and back (false when the record has
 * none). */
struct json_object *rm__pod_userns_json(const struct rm_idrange *uids,
                                        const struct rm_idrange *gids);
bool rm__pod_userns_from_json(struct json_object *o, struct rm_idrange *uids,
                              struct rm_idrange *gids);

/* userns_options as PodSandboxStatus reports them: NODE when the record has no
 * mappings. */
Runtime__V1__UserNamespace *rm__pod_userns_status(struct json_object *o, struct rm_arena *a);

#endif
