#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "remora/arena.h"
#include "remora/xalloc.h"

/* Memory comes from chunks that only grow: an allocation bumps a pointer in the newest
 * chunk, and everything goes at once in rm_arena_free. A list of 500 containers makes a
 * few thousand allocations; one malloc each cost more than building the list. Chunks are
 * calloc'd and never reused, so every allocation is zeroed. */
#define FIRST_BYTES 2048         /* inline in the arena itself: most calls need no more */
#define MAX_CHUNK   (256 * 1024) /* chunks double up to this */
#define ALIGN       (_Alignof(max_align_t))

/* Under AddressSanitizer free space is poisoned and every allocation is followed by a
 * poisoned gap, so an overrun inside a chunk is caught as it would be between mallocs. */
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#define REDZONE ALIGN
#else
#define REDZONE                           0
#define ASAN_POISON_MEMORY_REGION(p, n)   ((void)(p), (void)(n))
#define ASAN_UNPOISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#endif

struct chunk {
        struct chunk *next;
        max_align_t data[];
};

struct rm_arena {
        struct chunk *head; /* malloc'd chunks, newest first */
        unsigned char *cur; /* free space of the chunk being bumped */
        size_t left;
        size_t next_chunk; /* the size of the next chunk */
        max_align_t first[FIRST_BYTES / sizeof(max_align_t)];
};

struct rm_arena *rm_arena_new(void)
{
        struct rm_arena *a = xzalloc(sizeof(struct rm_arena));
        a->cur = (unsigned char *)a->first;
        a->left = sizeof(a->first);
        a->next_chunk = 2 * FIRST_BYTES;
        ASAN_POISON_MEMORY_REGION(a->first, sizeof(a->first));
        return a;
}

void rm_arena_free(struct rm_arena *arena)
{
        if (arena == NULL)
                return;
        struct chunk *c = arena->head;
        while (c) {
                struct chunk *next = c->next;
                free(c);
                c = next;
        }
        free(arena);
}

static void *new_chunk(struct rm_arena *a, size_t size)
{
        if (size > SIZE_MAX - sizeof(struct chunk))
                abort();
        struct chunk *c = xzalloc(sizeof(struct chunk) + size);
        c->next = a->head;
        a->head = c;
        ASAN_POISON_MEMORY_REGION(c->data, size);
        return c->data;
}

void *rm_arena_alloc(struct rm_arena *a, size_t size)
{
        if (size > SIZE_MAX - ALIGN - REDZONE)
                abort();
        size_t need = (size + REDZONE + ALIGN - 1) / ALIGN * ALIGN;
        if (need == 0)
                need = ALIGN;
        unsigned char *p;
        if (need <= a->left) {
                p = a->cur;
                a->cur += need;
                a->left -= need;
        } else if (need > a->next_chunk / 4) {
                /* Big ones get a chunk of their own and leave the current one in use. */
                p = new_chunk(a, need);
        } else {
                p = new_chunk(a, a->next_chunk);
                a->cur = p + need;
                a->left = a->next_chunk - need;
                if (a->next_chunk < MAX_CHUNK)
                        a->next_chunk *= 2;
        }
        ASAN_UNPOISON_MEMORY_REGION(p, size);
        return p;
}

char *rm_arena_strdup(struct rm_arena *arena, const char *s)
{
        size_t n = strlen(s) + 1;
        char *p = rm_arena_alloc(arena, n);
        memcpy(p, s, n);
        return p;
}

char *rm_arena_printf(struct rm_arena *arena, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n < 0)
                abort();
        char *p = rm_arena_alloc(arena, (size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(p, (size_t)n + 1, fmt, ap);
        va_end(ap);
        return p;
}
