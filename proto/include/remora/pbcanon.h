/* A stable fingerprint of a protobuf message. Go clients serialize map fields in random
 * order, so the same request can arrive as different bytes; this sorts every map (in
 * place, recursively) before hashing, so equal requests hash equal. */
#ifndef REMORA_PBCANON_H
#define REMORA_PBCANON_H

#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

/* Sort m's map fields by key, in place, then FNV-1a-hash its encoding. */
uint64_t rm_pb_canonical_hash(ProtobufCMessage *m);

#endif
