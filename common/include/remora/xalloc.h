/* Allocation that aborts on out-of-memory instead of returning NULL. */
#ifndef REMORA_XALLOC_H
#define REMORA_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xzalloc(size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
