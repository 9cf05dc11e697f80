/* Test helper shared by the container unit tests: a file with text at dir/rel, its
 * parent directories made as needed. */
#ifndef REMORA_TEST_CONTAINERS_FILES_H
#define REMORA_TEST_CONTAINERS_FILES_H

#include <stdio.h>
#include <string.h>

#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/xalloc.h"

static inline void write_file(const char *dir, const char *rel, const char *text)
{
        cleanup_free char *path = xasprintf("%s/%s", dir, rel);
        cleanup_free char *parent = xstrdup(path);
        *strrchr(parent, '/') = '\0';
        assert_int_equal(rm_mkdir_p(parent, 0755, NULL), 0);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

#endif
