#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "remora/pbcanon.h"

/* protoc-c turns map<string, string> into repeated messages named "...Entry" with a key
 * and a value field; that shape is how a map is recognised here. */
static bool is_map_entry(const ProtobufCMessageDescriptor *d)
{
        size_t n = strlen(d->name);
        return n > 5 && strcmp(d->name + n - 5, "Entry") == 0 && d->n_fields == 2 &&
               strcmp(d->fields[0].name, "key") == 0 && d->fields[0].type == PROTOBUF_C_TYPE_STRING;
}

static int by_key(const void *a, const void *b)
{
        const ProtobufCMessage *x = *(ProtobufCMessage *const *)a;
        const ProtobufCMessage *y = *(ProtobufCMessage *const *)b;
        const char *kx = *(char *const *)((const char *)x + x->descriptor->fields[0].offset);
        const char *ky = *(char *const *)((const char *)y + y->descriptor->fields[0].offset);
        return strcmp(kx ? kx : "", ky ? ky : "");
}

static void canonicalize(ProtobufCMessage *m)
{
        const ProtobufCMessageDescriptor *d = m->descriptor;
        for (unsigned i = 0; i < d->n_fields; i++) {
                const ProtobufCFieldDescriptor *f = &d->fields[i];
                if (f->type != PROTOBUF_C_TYPE_MESSAGE)
                        continue;
                char *base = (char *)m;
                if (f->label == PROTOBUF_C_LABEL_REPEATED) {
                        size_t n = *(size_t *)(base + f->quantifier_offset);
                        ProtobufCMessage **items = *(ProtobufCMessage ***)(base + f->offset);
                        for (size_t j = 0; j < n; j++)
                                canonicalize(items[j]);
                        if (n > 1 && is_map_entry(f->descriptor))
                                qsort(items, n, sizeof(*items), by_key);
                } else {
                        ProtobufCMessage *sub = *(ProtobufCMessage **)(base + f->offset);
                        if (sub)
                                canonicalize(sub);
                }
        }
}

uint64_t rm_pb_canonical_hash(ProtobufCMessage *m)
{
        canonicalize(m);
        size_t len = protobuf_c_message_get_packed_size(m);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf == NULL)
                abort();
        protobuf_c_message_pack(m, buf);
        uint64_t h = 1469598103934665603ULL;
        for (size_t i = 0; i < len; i++)
                h = (h ^ buf[i]) * 1099511628211ULL;
        free(buf);
        return h;
}
