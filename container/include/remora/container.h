/* Containers and the OCI runtime behind them (runc by default). */
#ifndef REMORA_CONTAINER_H
#define REMORA_CONTAINER_H

#include <stdbool.h>

#include "remora/error.h"

/* An OCI runtime handler: a name (RuntimeClass handler, "" for the default) and the
 * binary that implements it. */
struct rm_runtime {
        char *handler;
        char *configured; /* as given in the config: a name looked up in PATH, or a path */
        char *path;       /* absolute path resolved at start, NULL when not found */
};

/* Resolve the runtime binary: an absolute or relative path is used as is, a bare name
 * is searched in $PATH. A runtime that is not there is not an error here (Status
 * reports it); the returned runtime has path NULL. */
struct rm_runtime *rm_runtime_new(const char *handler, const char *configured);
void rm_runtime_free(struct rm_runtime *rt);

/* Whether the runtime binary can be run now. On false, *err says which binary and why
 * (its code is FAILED_PRECONDITION). Re-checks the file each call: a package upgrade or
 * removal shows up without restarting the daemon. */
bool rm_runtime_usable(const struct rm_runtime *rt, struct rm_error **err);

#endif
