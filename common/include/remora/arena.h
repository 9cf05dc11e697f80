/* A per-call arena: handlers build their protobuf-c responses from it and the server
 * releases everything at once after the response is packed. */
#ifndef REMORA_ARENA_H
#define REMORA_ARENA_H

#include <stddef.h>

struct rm_arena;

struct rm_arena *rm_arena_new(void);
void rm_arena_free(struct rm_arena *arena);

/* Zeroed memory that lives until rm_arena_free. Aborts on out-of-memory. */
void *rm_arena_alloc(struct rm_arena *arena, size_t size);
char *rm_arena_strdup(struct rm_arena *arena, const char *s);
char *rm_arena_printf(struct rm_arena *arena, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* An array of n zeroed pointers, for protobuf-c repeated message fields. */
#define rm_arena_ptrs(arena, n) ((void **)rm_arena_alloc((arena), sizeof(void *) * (n)))

#endif
