/* Finding what a crashed daemon left running: the monitor processes (remora-shim) of
 * containers and infra processes, which live in their bundle directory. */
#ifndef REMORA_ORPHANS_H
#define REMORA_ORPHANS_H

#include <stdbool.h>

/* SIGKILL every remora-shim whose working directory is bundle (a shim chdirs there
 * before it runs `runc create`, and stays). Returns how many were killed. Used before a
 * runtime delete of a container nothing should monitor any more, so that no exit file
 * appears after it. */
int rm_shims_kill(const char *bundle);

/* Remove a container's exit file and the temporary file a monitor killed while writing
 * it leaves beside it ("<path>.tmp"). */
void rm_exit_file_remove(const char *path);

/* Whether a remora-shim works in bundle. */
bool rm_shim_alive(const char *bundle);

#endif
