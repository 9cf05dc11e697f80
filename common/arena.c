#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "remora/arena.h"
#include "remora/xalloc.h"

/* Allocations are chained; a call's response is small, so a list is enough. */
struct chunk {
        struct chunk *next;
        max_align_t data[];
};

struct rm_arena {
        struct chunk *head;
};

struct rm_arena *rm_arena_new(void)
{
        return xzalloc(sizeof(struct rm_arena));
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

void *rm_arena_alloc(struct rm_arena *arena, size_t size)
{
        if (size > SIZE_MAX - sizeof(struct chunk))
                abort();
        struct chunk *c = xzalloc(sizeof(struct chunk) + size);
        c->next = arena->head;
        arena->head = c;
        return c->data;
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
