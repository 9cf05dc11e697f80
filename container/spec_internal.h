/* Pieces of the spec builder shared between its files. */
#ifndef REMORA_CONTAINER_SPEC_INTERNAL_H
#define REMORA_CONTAINER_SPEC_INTERNAL_H

#include <json-c/json.h>

#include "remora/spec.h"

/* The ambient capabilities a CRI Capability asks for, each of which must also be in held
 * (the container's capability list). */
struct json_object *rm__spec_ambient(const Runtime__V1__Capability *caps, struct json_object *held,
                                     struct rm_error **err);

/* linux.resources from LinuxContainerResources, validated; oom_score_adj is returned
 * separately (it belongs to process) after clamping to what the host allows. */
struct json_object *rm__spec_resources(const Runtime__V1__LinuxContainerResources *res,
                                       const struct rm_spec_host *host, bool *has_oom, int64_t *oom,
                                       struct rm_error **err);

/* The mounts list: defaults, the pod's files, the request's mounts (checked and sorted
 * so parents come first). *propagation gets the rootfs propagation the mounts need. */
struct json_object *rm__spec_mounts(const Runtime__V1__ContainerConfig *cfg,
                                    const struct rm_spec_pod *pod, bool privileged,
                                    const char **propagation, struct rm_error **err);

/* linux.devices and their cgroup rules from the request; privileged adds every host
 * device. */
int rm__spec_devices(const Runtime__V1__ContainerConfig *cfg, bool privileged,
                     struct json_object *linux, struct rm_error **err);

#endif
