/* Pod sandboxes: pinned namespaces, pod files, cgroups and the pod state machine. */
#ifndef REMORA_SANDBOX_H
#define REMORA_SANDBOX_H

#include <json-c/json.h>

#include "remora/error.h"
#include "remora/store.h"

struct rm_sandbox_manager;

/* Open the sandbox manager: per-pod directories live under <root>/sandboxes and pinned
 * namespaces under <state>/netns (both created 0700 if missing). section is the config
 * file's "sandbox" object (NULL when absent); unknown keys are INVALID_ARGUMENT. */
struct rm_sandbox_manager *rm_sandbox_manager_open(const char *root, const char *state,
                                                   struct json_object *section,
                                                   struct rm_store *store, struct rm_error **err);
void rm_sandbox_manager_close(struct rm_sandbox_manager *mgr);

#endif
