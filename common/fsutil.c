#include <errno.h>
#include <ftw.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/xalloc.h"

int rm_mkdir_p(const char *path, mode_t mode, struct rm_error **err)
{
        if (path == NULL || *path == '\0')
                return rm_error_set(err, RM_INVALID_ARGUMENT, "empty directory path");

        cleanup_free char *buf = xstrdup(path);
        size_t len = strlen(buf);
        while (len > 1 && buf[len - 1] == '/')
                buf[--len] = '\0';

        for (char *p = buf + 1;; p++) {
                char c = *p;
                if (c != '/' && c != '\0')
                        continue;
                *p = '\0';
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return rm_error_sys(err, "create directory %s", buf);
                *p = c;
                if (c == '\0')
                        break;
        }

        struct stat st;
        if (stat(buf, &st) < 0)
                return rm_error_sys(err, "stat %s", buf);
        if (!S_ISDIR(st.st_mode))
                return rm_error_set(err, RM_FAILED_PRECONDITION, "%s exists and is not a directory",
                                    buf);
        return 0;
}

char *rm_read_file(const char *path, size_t max, size_t *len, struct rm_error **err)
{
        cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                rm_error_sys(err, "open %s", path);
                return NULL;
        }
        struct stat st;
        if (fstat(fd, &st) < 0) {
                rm_error_sys(err, "stat %s", path);
                return NULL;
        }
        if (!S_ISREG(st.st_mode)) {
                rm_error_set(err, RM_INVALID_ARGUMENT, "%s is not a regular file", path);
                return NULL;
        }
        if ((size_t)st.st_size > max) {
                rm_error_set(err, RM_RESOURCE_EXHAUSTED, "%s is %lld bytes, over the limit of %zu",
                             path, (long long)st.st_size, max);
                return NULL;
        }

        size_t cap = (size_t)st.st_size + 1, used = 0;
        cleanup_free char *buf = xmalloc(cap);
        for (;;) {
                if (used + 1 >= cap) {
                        if (cap > max + 1) {
                                rm_error_set(err, RM_RESOURCE_EXHAUSTED,
                                             "%s grew over the limit of %zu bytes", path, max);
                                return NULL;
                        }
                        cap *= 2;
                        buf = xrealloc(buf, cap);
                }
                ssize_t r = read(fd, buf + used, cap - used - 1);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        rm_error_sys(err, "read %s", path);
                        return NULL;
                }
                if (r == 0)
                        break;
                used += (size_t)r;
        }
        if (used > max) {
                rm_error_set(err, RM_RESOURCE_EXHAUSTED, "%s grew over the limit of %zu bytes",
                             path, max);
                return NULL;
        }
        buf[used] = '\0';
        if (len)
                *len = used;
        return steal_pointer(&buf);
}

int rm_write_all(int fd, const void *buf, size_t len)
{
        const char *p = buf;
        while (len > 0) {
                ssize_t w = write(fd, p, len);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return -1;
                }
                p += w;
                len -= (size_t)w;
        }
        return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)ftw;
        if (flag == FTW_DP)
                return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
        return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

int rm_remove_tree(const char *path, struct rm_error **err)
{
        if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0 && errno != ENOENT)
                return rm_error_sys(err, "remove %s", path);
        return 0;
}

/* nftw has no user pointer: one walk's totals live in thread-local storage. */
static __thread uint64_t usage_bytes, usage_inodes;

static int usage_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)path;
        (void)flag;
        (void)ftw;
        usage_bytes += (uint64_t)st->st_blocks * 512;
        usage_inodes++;
        return 0;
}

int rm_tree_usage(const char *path, uint64_t *bytes, uint64_t *inodes)
{
        usage_bytes = usage_inodes = 0;
        if (nftw(path, usage_one, 32, FTW_PHYS | FTW_MOUNT) < 0)
                return -1;
        *bytes = usage_bytes;
        *inodes = usage_inodes;
        return 0;
}
