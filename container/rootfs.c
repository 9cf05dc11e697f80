/* Paths inside a container's root filesystem. The image controls every symlink in it, so
 * each lookup is done by the kernel with RESOLVE_IN_ROOT: "..", absolute symlinks and
 * magic links all stay inside the rootfs. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "remora/cleanup.h"
#include "remora/spec.h"
#include "remora/xalloc.h"
#include "rootfs.h"

int rm__rootfs_openat(int rootfd, const char *path, int flags)
{
        struct open_how how = {
            .flags = (uint64_t)(flags | O_CLOEXEC),
            .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        while (*path == '/')
                path++;
        if (*path == '\0')
                path = ".";
        return (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
}

int rm__rootfs_open(const char *rootfs, const char *path, int flags, struct rm_error **err)
{
        cleanup_close int rootfd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return rm_error_sys(err, "open container rootfs %s", rootfs);
        int fd = rm__rootfs_openat(rootfd, path, flags);
        if (fd < 0)
                return rm_error_sys(err, "open %s inside the container rootfs %s", path, rootfs);
        return fd;
}

int rm_rootfs_mkdir(const char *rootfs, const char *path, mode_t mode, struct rm_error **err)
{
        if (path[0] != '/')
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "%s is not an absolute path inside the container", path);
        cleanup_close int dirfd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
                return rm_error_sys(err, "open container rootfs %s", rootfs);
        /* A rootfs whose root is not the host's root belongs to a pod's user namespace:
         * what is made here goes to that namespace's root, as the image's own files do. */
        struct stat root;
        if (fstat(dirfd, &root) < 0)
                return rm_error_sys(err, "stat container rootfs %s", rootfs);
        bool chown_new = root.st_uid != 0 || root.st_gid != 0;

        /* Walk one component at a time from the root, creating what is missing; each step
         * is resolved inside the rootfs from the root fd, never from a host path. */
        cleanup_free char *copy = xstrdup(path);
        cleanup_free char *prefix = xzalloc(strlen(path) + 2);
        char *save = NULL;
        for (char *comp = strtok_r(copy, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
                if (strcmp(comp, ".") == 0)
                        continue;
                size_t parent_len = strlen(prefix);
                strcat(prefix, "/");
                strcat(prefix, comp);
                cleanup_close int fd = rm__rootfs_openat(dirfd, prefix, O_PATH | O_DIRECTORY);
                if (fd >= 0)
                        continue;
                if (errno == ENOTDIR)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "%s inside the container is not a directory", prefix);
                if (errno != ENOENT)
                        return rm_error_sys(err, "open %s inside the container rootfs", prefix);
                prefix[parent_len] = '\0';
                cleanup_close int parent =
                    rm__rootfs_openat(dirfd, parent_len ? prefix : "/", O_PATH | O_DIRECTORY);
                prefix[parent_len] = '/';
                if (parent < 0)
                        return rm_error_sys(err, "open the parent of %s inside the container",
                                            prefix);
                if (mkdirat(parent, comp, mode) < 0) {
                        if (errno == EEXIST)
                                continue;
                        return rm_error_sys(err, "create %s inside the container rootfs", prefix);
                }
                if (chown_new &&
                    fchownat(parent, comp, root.st_uid, root.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
                        return rm_error_sys(err, "give %s inside the container rootfs to its root",
                                            prefix);
        }
        return 0;
}
