#include <stdlib.h>
#include <string.h>

#include "remora/pblist.h"
#include "remora/xalloc.h"

/* Field 1, wire type 2 (length-delimited). */
#define LIST_TAG 0x0a

void rm_pb_packed_clear(struct rm_pb_packed *p)
{
        free(p->bytes);
        *p = (struct rm_pb_packed){0};
}

void rm_pb_packed_set(struct rm_pb_packed *p, const ProtobufCMessage *msg, int version)
{
        size_t len = protobuf_c_message_get_packed_size(msg);
        uint8_t *bytes = xmalloc(len ? len : 1);
        protobuf_c_message_pack(msg, bytes);
        free(p->bytes);
        *p = (struct rm_pb_packed){bytes, len, version, true};
}

const struct rm_pb_packed *rm_pb_packed_fresh(struct rm_pb_packed *p, int version,
                                              ProtobufCMessage *(*build)(const void *obj,
                                                                         struct rm_arena *a),
                                              const void *obj, struct rm_arena **arena)
{
        if (p->valid && p->version == version)
                return p;
        if (*arena == NULL)
                *arena = rm_arena_new();
        rm_pb_packed_set(p, build(obj, *arena), version);
        return p;
}

static size_t varint_size(size_t v)
{
        size_t n = 1;
        while (v >= 0x80) {
                v >>= 7;
                n++;
        }
        return n;
}

size_t rm_pb_list_entry_size(const struct rm_pb_packed *p)
{
        return 1 + varint_size(p->len) + p->len;
}

uint8_t *rm_pb_list_entry_write(const struct rm_pb_packed *p, uint8_t *out)
{
        *out++ = LIST_TAG;
        size_t v = p->len;
        while (v >= 0x80) {
                *out++ = (uint8_t)(v | 0x80);
                v >>= 7;
        }
        *out++ = (uint8_t)v;
        memcpy(out, p->bytes, p->len);
        return out + p->len;
}

uint8_t *rm_pb_list_build(void *const *objs, size_t n,
                          const struct rm_pb_packed *(*item)(void *obj, void *ctx), void *ctx,
                          size_t *len)
{
        const struct rm_pb_packed **items = xmalloc(sizeof(*items) * (n ? n : 1));
        size_t k = 0, total = 0;
        for (size_t i = 0; i < n; i++) {
                const struct rm_pb_packed *it = item(objs[i], ctx);
                if (it == NULL)
                        continue;
                total += rm_pb_list_entry_size(it);
                items[k++] = it;
        }
        uint8_t *out = xmalloc(total ? total : 1), *p = out;
        for (size_t i = 0; i < k; i++)
                p = rm_pb_list_entry_write(items[i], p);
        free(items);
        *len = total;
        return out;
}

int rm_pb_list_next(const uint8_t **p, const uint8_t *end, size_t *entry_len)
{
        const uint8_t *q = *p;
        if (q == end)
                return 0;
        if (*q++ != LIST_TAG)
                return -1;
        size_t len = 0;
        for (int shift = 0;; shift += 7) {
                if (q == end || shift > 28)
                        return -1; /* lists are far below 4 GiB */
                uint8_t b = *q++;
                len |= (size_t)(b & 0x7f) << shift;
                if (!(b & 0x80))
                        break;
        }
        if ((size_t)(end - q) < len)
                return -1;
        *entry_len = (size_t)(q - *p) + len;
        *p = q + len;
        return 1;
}
