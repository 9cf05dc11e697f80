/* Scope-bound cleanup (GNU cleanup attribute) for the resources Remora handles. */
#ifndef REMORA_CLEANUP_H
#define REMORA_CLEANUP_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <json-c/json.h>

#include "remora/error.h"

static inline void rm__cleanup_free(void *p)
{
        free(*(void **)p);
}

static inline void rm__cleanup_close(int *fd)
{
        if (*fd >= 0)
                close(*fd);
}

static inline void rm__cleanup_file(FILE **f)
{
        if (*f)
                fclose(*f);
}

static inline void rm__cleanup_dir(DIR **d)
{
        if (*d)
                closedir(*d);
}

static inline void rm__cleanup_json(struct json_object **o)
{
        if (*o)
                json_object_put(*o);
}

static inline void rm__cleanup_error(struct rm_error **e)
{
        rm_error_free(*e);
}

#define cleanup_free  __attribute__((cleanup(rm__cleanup_free)))
#define cleanup_close __attribute__((cleanup(rm__cleanup_close)))
#define cleanup_file  __attribute__((cleanup(rm__cleanup_file)))
#define cleanup_dir   __attribute__((cleanup(rm__cleanup_dir)))
#define cleanup_json  __attribute__((cleanup(rm__cleanup_json)))
#define cleanup_error __attribute__((cleanup(rm__cleanup_error)))

/* Hand ownership out of a cleanup-managed variable: returns the value, leaves NULL. */
#define steal_pointer(pp)                                                                          \
        ({                                                                                         \
                __typeof__(*(pp)) rm__stolen = *(pp);                                              \
                *(pp) = NULL;                                                                      \
                rm__stolen;                                                                        \
        })

/* The same for file descriptors: returns the fd, leaves -1. */
#define steal_fd(fdp)                                                                              \
        ({                                                                                         \
                int rm__stolen_fd = *(fdp);                                                        \
                *(fdp) = -1;                                                                       \
                rm__stolen_fd;                                                                     \
        })

#endif
