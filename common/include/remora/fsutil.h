/* Small filesystem helpers shared by every module. */
#ifndef REMORA_FSUTIL_H
#define REMORA_FSUTIL_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

#include "remora/error.h"

/* Create a directory and its missing parents with mode. An existing directory is fine;
 * an existing non-directory is an error naming the path. */
int rm_mkdir_p(const char *path, mode_t mode, struct rm_error **err);

/* Read a whole file into a NUL-terminated buffer, refusing files over max bytes.
 * *len (if given) receives the size without the NUL. */
char *rm_read_file(const char *path, size_t max, size_t *len, struct rm_error **err);

/* rm -rf path, never crossing into another mount (a rootfs left mounted below it stays
 * intact) and never following symlinks. A missing path is fine. */
int rm_remove_tree(const char *path, struct rm_error **err);

/* The disk usage of a tree (allocated blocks, not apparent sizes) and how many inodes it
 * holds, without following symlinks or crossing mounts. -1 with errno when path cannot
 * be walked. */
int rm_tree_usage(const char *path, uint64_t *bytes, uint64_t *inodes);

/* write(2) the whole buffer, retrying on EINTR and short writes. */
int rm_write_all(int fd, const void *buf, size_t len);

#endif
