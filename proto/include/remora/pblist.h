/* CRI List responses from messages packed ahead of time. Every List response is one
 * repeated message field, number 1, so its encoding is, for each item, the field's tag,
 * the item's length and the item's packed bytes. An object that keeps its item packed
 * (and repacks it only when it changed) makes a list a copy of bytes: no message tree,
 * no second encoding of strings that did not change. */
#ifndef REMORA_PBLIST_H
#define REMORA_PBLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "remora/arena.h"

/* One item, packed; version says what it was packed from (e.g. a state), for its owner to
 * compare. Zero-initialised: empty. */
struct rm_pb_packed {
        uint8_t *bytes;
        size_t len;
        int version;
        bool valid;
};

/* Pack msg into p, replacing what it held. */
void rm_pb_packed_set(struct rm_pb_packed *p, const ProtobufCMessage *msg, int version);
void rm_pb_packed_clear(struct rm_pb_packed *p);

/* p, repacked first when it is not at version: build makes the message from obj in
 * *arena, which is made on the first repack (the caller frees it). */
const struct rm_pb_packed *rm_pb_packed_fresh(struct rm_pb_packed *p, int version,
                                              ProtobufCMessage *(*build)(const void *obj,
                                                                         struct rm_arena *a),
                                              const void *obj, struct rm_arena **arena);

/* The bytes p takes as an item of field 1: tag, length, body. */
size_t rm_pb_list_entry_size(const struct rm_pb_packed *p);
/* Write that entry at out; returns the byte after it. */
uint8_t *rm_pb_list_entry_write(const struct rm_pb_packed *p, uint8_t *out);

/* An encoded List response of n objects: item(objs[i], ctx) returns the object's packed
 * item, brought up to date, or NULL to leave it out. Each item is asked for once. The
 * result is malloc'd (never NULL), *len bytes. */
uint8_t *rm_pb_list_build(void *const *objs, size_t n,
                          const struct rm_pb_packed *(*item)(void *obj, void *ctx), void *ctx,
                          size_t *len);

/* Step *p over the next entry of a packed List response (up to end); *entry_len is the
 * bytes it took, tag and length included. 1 for an entry, 0 at the end, -1 when the
 * bytes are not such a list (another field, a length past the end). */
int rm_pb_list_next(const uint8_t **p, const uint8_t *end, size_t *entry_len);

#endif
