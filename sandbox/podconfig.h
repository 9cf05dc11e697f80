/* PodSandboxConfig checks and the pod's shared files. */
#ifndef REMORA_SANDBOX_PODCONFIG_H
#define REMORA_SANDBOX_PODCONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <json-c/json.h>

#include "api.pb-c.h"
#include "remora/error.h"

/* Every field Remora uses, checked: INVALID_ARGUMENT naming the first bad one. */
int rm__pod_config_check(const Runtime__V1__PodSandboxConfig *c, struct rm_error **err);

/* A sysctl name in dotted form ("net/ipv4/ip_forward" becomes "net.ipv4.ip_forward"),
 * or NULL when it could reach outside /proc/sys. */
char *rm__sysctl_normalize(const char *key, struct rm_error **err);

/* Whether a pod may set key (normalized) to value given its host namespaces. */
int rm__sysctl_check(const char *key, const char *value, bool host_net, bool host_ipc,
                     struct rm_error **err);

/* A protobuf-c map (labels, annotations: entries with key and value) as a JSON object. */
struct json_object *rm__pod_map_json(size_t n, void *const *entries);
/* The parts of the config PodSandboxStatus' verbose info shows, as JSON. */
struct json_object *rm__pod_config_json(const Runtime__V1__PodSandboxConfig *c);

/* Write hostname, hosts and resolv.conf into dir (atomically, each). ip may be NULL. */
int rm__pod_files_write(const char *dir, const Runtime__V1__PodSandboxConfig *c,
                        const char *hostname, const char *ip, bool host_net, struct rm_error **err);

#endif
