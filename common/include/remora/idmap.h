/* Idmapped mounts (open_tree + mount_setattr MOUNT_ATTR_IDMAP): how a pod with its own
 * user namespace sees host files with the owners it expects, without chowning them. */
#ifndef REMORA_IDMAP_H
#define REMORA_IDMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "remora/error.h"

/* Clone the mount tree at src (recursively when recursive), idmap it through the user
 * namespace userns_fd and attach it at target, which must exist (a directory for a
 * directory, a file for a file). A filesystem that cannot be idmapped is
 * FAILED_PRECONDITION naming src and what the kernel said. */
int rm_idmap_mount(const char *src, const char *target, int userns_fd, bool recursive,
                   struct rm_error **err);

/* Whether the filesystem holding dir can be idmapped on this kernel: tried once on a
 * detached clone with a throwaway user namespace. false with *why (a malloc'd reason)
 * when not. */
bool rm_idmap_supported(const char *dir, char **why);

/* A new user namespace mapping 0..len-1 to uid..uid+len-1 and gid..gid+len-1, as an
 * O_RDONLY fd of its nsfs file; -1 and *err when it cannot be made. */
int rm_userns_new(uint32_t uid, uint32_t gid, uint32_t len, struct rm_error **err);

/* Unmount every idmapped mount attached under <dir>/idmap (missing is fine; a failure is
 * logged). With remove, the mount points and <dir>/idmap go too. */
void rm_idmap_release_all(const char *dir, bool remove);

/* Whether path and every directory above it let others search them, as a process in a
 * pod's user namespace (which has no power over host files) needs to reach what is below;
 * FAILED_PRECONDITION naming the first that does not. */
int rm_idmap_reachable(const char *path, struct rm_error **err);

#endif
