/* Unpacking a layer into a directory overlayfs can use as a lower layer.
 *
 * The archive is hostile until proven otherwise: every entry is created with *at()
 * calls relative to the layer directory, each path component opened without following
 * symlinks, so no entry (a "../" path, an absolute path, a symlinked parent, a hardlink
 * to a file outside) can touch anything outside the directory. Whiteouts become what
 * overlayfs understands: ".wh.NAME" a 0/0 character device, ".wh..wh..opq" the
 * trusted.overlay.opaque xattr on its directory.
 *
 * The blob is decompressed once: an outer libarchive reader (any filter, raw format)
 * inflates it and feeds both the diff ID hash and an inner tar reader. */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "image_internal.h"
#include "remora/cleanup.h"
#include "remora/crashpoint.h"
#include "remora/xalloc.h"

#define WHITEOUT_PREFIX ".wh."
#define OPAQUE_MARKER   ".wh..wh..opq"

struct feed {
        struct archive *outer;
        struct rm_sha256 hash;
        char buf[1 << 16];
        const char *err;
};

static la_ssize_t feed_read(struct archive *inner, void *data, const void **out)
{
        (void)inner;
        struct feed *f = data;
        la_ssize_t n = archive_read_data(f->outer, f->buf, sizeof(f->buf));
        if (n < 0) {
                f->err = archive_error_string(f->outer);
                return -1;
        }
        rm__sha256_update(&f->hash, f->buf, (size_t)n);
        *out = f->buf;
        return n;
}

/* Open one path component below dirfd: never a symlink, never "..". */
static int open_component(int dirfd, const char *name, int flags)
{
        struct open_how how = {
            .flags = (uint64_t)(flags | O_NOFOLLOW | O_CLOEXEC),
            .resolve =
                RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
        };
        return (int)syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
}

/* Check an entry's path: relative, no "..", normalized into out (no "./", no "//"). */
static int clean_path(const char *entry, const char *path, char **out, struct rm_error **err)
{
        if (path[0] == '/')
                return rm_error_set(err, RM_INVALID_ARGUMENT, "layer entry %s has an absolute path",
                                    entry);
        char *clean = xzalloc(strlen(path) + 1);
        cleanup_free char *copy = xstrdup(path);
        char *save = NULL;
        for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                if (strcmp(c, ".") == 0)
                        continue;
                if (strcmp(c, "..") == 0) {
                        free(clean);
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "layer entry %s leads outside the layer (\"..\")",
                                            entry);
                }
                if (*clean)
                        strcat(clean, "/");
                strcat(clean, c);
        }
        *out = clean;
        return 0;
}

/* Open (creating as directories) every component of parent below rootfd. */
static int open_parent(int rootfd, const char *entry, const char *parent, struct rm_error **err)
{
        int fd = fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
        if (*parent == '\0')
                return fd;
        cleanup_free char *copy = xstrdup(parent);
        char *save = NULL;
        for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                int next = open_component(fd, c, O_PATH | O_DIRECTORY);
                if (next < 0 && errno == ENOENT) {
                        if (mkdirat(fd, c, 0755) < 0 && errno != EEXIST) {
                                rm_error_sys(err, "layer entry %s: create its directory %s", entry,
                                             c);
                                close(fd);
                                return -1;
                        }
                        next = open_component(fd, c, O_PATH | O_DIRECTORY);
                }
                close(fd);
                if (next < 0) {
                        if (errno == ELOOP || errno == ENOTDIR || errno == EXDEV)
                                rm_error_set(err, RM_INVALID_ARGUMENT,
                                             "layer entry %s goes through a symlink or a "
                                             "non-directory (%s)",
                                             entry, c);
                        else
                                rm_error_sys(err, "layer entry %s: open %s", entry, c);
                        return -1;
                }
                fd = next;
        }
        return fd;
}

int rm__remove_at(int dir, const char *name)
{
        if (unlinkat(dir, name, 0) == 0 || errno == ENOENT)
                return 0;
        if (errno != EISDIR && errno != EPERM)
                return -1;
        int fd = open_component(dir, name, O_RDONLY | O_DIRECTORY);
        if (fd < 0)
                return -1;
        DIR *d = fdopendir(fd);
        if (d == NULL) {
                close(fd);
                return -1;
        }
        struct dirent *e;
        int rc = 0;
        while ((e = readdir(d)) && rc == 0) {
                if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                        rc = rm__remove_at(dirfd(d), e->d_name);
        }
        closedir(d);
        return rc < 0 ? -1 : unlinkat(dir, name, AT_REMOVEDIR);
}

/* A relative symlink target must not climb above the layer root from where it sits. */
static bool symlink_stays_inside(const char *entry_path, const char *target)
{
        if (target[0] == '/')
                return true; /* resolved against the container's root, not the host's */
        int depth = 0;
        for (const char *p = entry_path; *p; p++)
                depth += *p == '/';
        cleanup_free char *copy = xstrdup(target);
        char *save = NULL;
        for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                if (strcmp(c, "..") == 0)
                        depth--;
                else if (strcmp(c, ".") != 0)
                        depth++;
                if (depth < 0)
                        return false;
        }
        return true;
}

static int set_meta(int parent, const char *name, struct archive_entry *e, bool symlink,
                    const char *entry, struct rm_error **err)
{
        int flags = AT_SYMLINK_NOFOLLOW;
        if (fchownat(parent, name, (uid_t)archive_entry_uid(e), (gid_t)archive_entry_gid(e),
                     flags) < 0)
                return rm_error_sys(err, "layer entry %s: chown", entry);
        if (!symlink && fchmodat(parent, name, archive_entry_perm(e), 0) < 0)
                return rm_error_sys(err, "layer entry %s: chmod", entry);
        struct timespec ts[2] = {
            {.tv_sec = archive_entry_mtime(e), .tv_nsec = archive_entry_mtime_nsec(e)},
            {.tv_sec = archive_entry_mtime(e), .tv_nsec = archive_entry_mtime_nsec(e)},
        };
        if (utimensat(parent, name, ts, flags) < 0)
                return rm_error_sys(err, "layer entry %s: set times", entry);
        return 0;
}

/* What an unpack is held to. */
struct limits {
        struct rm__space *space;
        const struct rm_cancel *cancel;
};

static int write_file(struct archive *a, int parent, const char *name, const char *entry,
                      int64_t size, struct limits *lim, struct rm_error **err)
{
        cleanup_close int fd =
            openat(parent, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return rm_error_sys(err, "layer entry %s: create", entry);
        const void *buf;
        size_t len;
        la_int64_t off;
        int r;
        while ((r = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK) {
                if (rm__cancel_check(lim->cancel, err) < 0 ||
                    rm__space_take(lim->space, len, err) < 0)
                        return rm_error_wrap(err, "layer entry %s", entry);
                if (pwrite(fd, buf, len, off) != (ssize_t)len)
                        return rm_error_sys(err, "layer entry %s: write", entry);
        }
        if (r != ARCHIVE_EOF)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "layer entry %s: %s", entry,
                                    archive_error_string(a));
        /* A sparse file may end in a hole: set the size the archive says. */
        if (ftruncate(fd, size) < 0)
                return rm_error_sys(err, "layer entry %s: set its size", entry);
        return 0;
}

static int make_whiteout(int parent, const char *name, const char *entry, struct rm_error **err)
{
        if (rm__remove_at(parent, name) < 0)
                return rm_error_sys(err, "layer entry %s: remove what it whites out", entry);
        if (mknodat(parent, name, S_IFCHR | 0000, makedev(0, 0)) < 0)
                return rm_error_sys(err, "layer entry %s: create the whiteout", entry);
        return 0;
}

static int make_opaque(int rootfd, const char *entry, const char *parent_path,
                       struct rm_error **err)
{
        int pfd = open_parent(rootfd, entry, parent_path, err);
        if (pfd < 0)
                return -1;
        /* setxattr needs a real fd, not O_PATH. */
        cleanup_close int dfd = open_component(pfd, ".", O_RDONLY | O_DIRECTORY);
        close(pfd);
        if (dfd < 0 || fsetxattr(dfd, "trusted.overlay.opaque", "y", 1, 0) < 0)
                return rm_error_sys(err, "layer entry %s: mark its directory opaque", entry);
        return 0;
}

static int hardlink(int rootfd, int parent, const char *name, const char *entry,
                    const char *target_raw, struct rm_error **err)
{
        cleanup_free char *target = NULL;
        if (clean_path(entry, target_raw, &target, err) < 0)
                return rm_error_wrap(err, "hardlink target");
        struct open_how how = {
            .flags = O_PATH | O_NOFOLLOW | O_CLOEXEC,
            .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        cleanup_close int fd = (int)syscall(SYS_openat2, rootfd, target, &how, sizeof(how));
        if (fd < 0)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "layer entry %s is a hardlink to %s, which is not a file of "
                                    "this layer",
                                    entry, target_raw);
        if (rm__remove_at(parent, name) < 0 || linkat(fd, "", parent, name, AT_EMPTY_PATH) < 0)
                return rm_error_sys(err, "layer entry %s: link to %s", entry, target_raw);
        return 0;
}

static int unpack_entry(struct archive *a, struct archive_entry *e, int rootfd, struct limits *lim,
                        struct rm_error **err)
{
        const char *raw = archive_entry_pathname(e);
        if (raw == NULL)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "layer entry without a name");
        cleanup_free char *path = NULL;
        if (clean_path(raw, raw, &path, err) < 0)
                return -1;
        if (*path == '\0')
                return 0; /* the layer's root itself */
        /* Every entry costs an inode and at least a block, data or not. */
        if (rm__cancel_check(lim->cancel, err) < 0 || rm__space_take(lim->space, 4096, err) < 0)
                return rm_error_wrap(err, "layer entry %s", raw);
        char *slash = strrchr(path, '/');
        const char *name = slash ? slash + 1 : path;
        cleanup_free char *parent_path =
            slash ? strndup(path, (size_t)(slash - path)) : xstrdup("");

        if (strcmp(name, OPAQUE_MARKER) == 0)
                return make_opaque(rootfd, raw, parent_path, err);
        cleanup_close int parent = open_parent(rootfd, raw, parent_path, err);
        if (parent < 0)
                return -1;
        if (strncmp(name, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)) == 0) {
                const char *hidden = name + strlen(WHITEOUT_PREFIX);
                if (*hidden == '\0' || strcmp(hidden, ".") == 0 || strcmp(hidden, "..") == 0)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "layer entry %s is not a valid whiteout", raw);
                return make_whiteout(parent, hidden, raw, err);
        }
        const char *link = archive_entry_hardlink(e);
        if (link)
                return hardlink(rootfd, parent, name, raw, link, err);

        mode_t type = archive_entry_filetype(e);
        if (type == AE_IFDIR) {
                struct stat st;
                if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode) &&
                    rm__remove_at(parent, name) < 0)
                        return rm_error_sys(err, "layer entry %s: replace", raw);
                if (mkdirat(parent, name, 0755) < 0 && errno != EEXIST)
                        return rm_error_sys(err, "layer entry %s: mkdir", raw);
                return set_meta(parent, name, e, false, raw, err);
        }
        if (rm__remove_at(parent, name) < 0)
                return rm_error_sys(err, "layer entry %s: replace", raw);
        switch (type) {
        case AE_IFREG:
                if (write_file(a, parent, name, raw, archive_entry_size(e), lim, err) < 0)
                        return -1;
                break;
        case AE_IFLNK: {
                const char *target = archive_entry_symlink(e);
                if (target == NULL || !symlink_stays_inside(path, target))
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "layer entry %s is a symlink to %s, which leads "
                                            "outside the layer",
                                            raw, target ? target : "(nothing)");
                if (symlinkat(target, parent, name) < 0)
                        return rm_error_sys(err, "layer entry %s: symlink", raw);
                return set_meta(parent, name, e, true, raw, err);
        }
        case AE_IFCHR:
        case AE_IFBLK:
        case AE_IFIFO:
                if (mknodat(parent, name, type | archive_entry_perm(e), archive_entry_rdev(e)) < 0)
                        return rm_error_sys(err, "layer entry %s: mknod", raw);
                break;
        default:
                return 0; /* sockets and the like have no place in an image */
        }
        return set_meta(parent, name, e, false, raw, err);
}

int rm__layer_unpack(int blob_fd, int dir_fd, const char *name, struct rm__space *space,
                     const struct rm_cancel *cancel, char diff_id[72], struct rm_error **err)
{
        struct limits lim = {.space = space, .cancel = cancel};
        struct feed *f = xzalloc(sizeof(*f));
        f->outer = archive_read_new();
        archive_read_support_filter_all(f->outer);
        archive_read_support_format_raw(f->outer);
        struct archive_entry *raw_entry;
        struct archive *inner = archive_read_new();
        archive_read_support_format_tar(inner);
        archive_read_support_format_gnutar(inner);
        int rc = 0;
        if (archive_read_open_fd(f->outer, blob_fd, 1 << 16) != ARCHIVE_OK ||
            archive_read_next_header(f->outer, &raw_entry) != ARCHIVE_OK) {
                rc = rm_error_set(err, RM_INVALID_ARGUMENT, "layer %s: %s", name,
                                  archive_error_string(f->outer));
        }
        if (rc == 0) {
                rm__sha256_init(&f->hash);
                if (archive_read_open(inner, f, NULL, feed_read, NULL) != ARCHIVE_OK)
                        rc = rm_error_set(err, RM_INVALID_ARGUMENT, "layer %s is not a tar: %s",
                                          name, archive_error_string(inner));
                struct archive_entry *e;
                for (size_t n = 0; rc == 0; n++) {
                        int r = archive_read_next_header(inner, &e);
                        if (r == ARCHIVE_EOF)
                                break;
                        if (r < ARCHIVE_WARN) {
                                rc = rm_error_set(err, RM_INVALID_ARGUMENT, "layer %s: %s", name,
                                                  f->err ? f->err : archive_error_string(inner));
                                break;
                        }
                        rc = unpack_entry(inner, e, dir_fd, &lim, err);
                        if (n == 0)
                                rm_crashpoint("pull.layer_partial");
                }
                /* What follows the tar's end (padding) still counts for the diff ID. */
                const void *unused;
                while (rc == 0 && feed_read(inner, f, &unused) > 0)
                        if (rm__cancel_check(cancel, err) < 0)
                                rc = -1;
                if (rc == 0 && f->err)
                        rc = rm_error_set(err, RM_INVALID_ARGUMENT, "layer %s: %s", name, f->err);
                rm__sha256_final(&f->hash, diff_id);
        }
        archive_read_free(inner);
        archive_read_free(f->outer);
        free(f);
        return rc;
}
