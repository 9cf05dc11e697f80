/* Lookups inside a container rootfs, shared by the spec builder's parts. */
#ifndef REMORA_CONTAINER_ROOTFS_H
#define REMORA_CONTAINER_ROOTFS_H

#include "remora/error.h"

/* openat2 with RESOLVE_IN_ROOT from rootfd; -1 and errno on failure. */
int rm__rootfs_openat(int rootfd, const char *path, int flags);

/* Open path inside the rootfs directory; -1 and *err on failure (errno kept). */
int rm__rootfs_open(const char *rootfs, const char *path, int flags, struct rm_error **err);

#endif
