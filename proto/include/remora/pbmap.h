/* CRI map fields (labels, annotations, ...) from JSON objects of strings. */
#ifndef REMORA_PBMAP_H
#define REMORA_PBMAP_H

#include <stddef.h>
#include <json-c/json.h>
#include <protobuf-c/protobuf-c.h>

#include "remora/arena.h"

/* The entries of a protobuf-c map<string, string> field, built in the arena from the
 * JSON object map (NULL: none). desc is the map's entry message, e.g.
 * runtime__v1__pod_sandbox__labels_entry__descriptor; the result is cast to that
 * field's entry pointer type. */
void **rm_pb_map_from_json(struct rm_arena *a, const ProtobufCMessageDescriptor *desc,
                           struct json_object *map, size_t *n);

#endif
