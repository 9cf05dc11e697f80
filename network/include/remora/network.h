/* Pod networking. This build has no pod network yet: the module reports that truthfully
 * so the Status RPC's NetworkReady condition stays false until networking lands. */
#ifndef REMORA_NETWORK_H
#define REMORA_NETWORK_H

#include <stdbool.h>

#include <json-c/json.h>

#include "remora/error.h"

struct rm_network;

/* section is the config file's "network" object (NULL when absent); unknown keys are
 * INVALID_ARGUMENT. */
struct rm_network *rm_network_open(struct json_object *section, struct rm_error **err);
void rm_network_close(struct rm_network *net);

/* Whether pods can get a network now. When not, *reason is a CamelCase reason for the
 * NetworkReady condition and *message says why in words. Strings are static. */
bool rm_network_ready(const struct rm_network *net, const char **reason, const char **message);

#endif
