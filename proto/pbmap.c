#include "remora/pbmap.h"

/* Every protobuf-c map<string, string> entry message has this layout: the message
 * header, then key, then value. */
struct string_entry {
        ProtobufCMessage base;
        char *key;
        char *value;
};

void **rm_pb_map_from_json(struct rm_arena *a, const ProtobufCMessageDescriptor *desc,
                           struct json_object *map, size_t *n)
{
        *n = map ? (size_t)json_object_object_length(map) : 0;
        void **out = rm_arena_ptrs(a, *n ? *n : 1);
        size_t i = 0;
        if (map == NULL)
                return out;
        json_object_object_foreach(map, key, val)
        {
                struct string_entry *e = rm_arena_alloc(a, desc->sizeof_message);
                protobuf_c_message_init(desc, e);
                e->key = rm_arena_strdup(a, key);
                e->value = rm_arena_strdup(a, json_object_get_string(val));
                out[i++] = e;
        }
        return out;
}
