/* Idmapped mounts and throwaway user namespaces. A detached clone of a mount
 * (OPEN_TREE_CLONE) is idmapped with mount_setattr and then attached with move_mount;
 * nothing is visible at target until the mapping is in place. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/idmap.h"
#include "remora/log.h"
#include "remora/xalloc.h"

static int set_idmap(int tree, int userns_fd, bool recursive)
{
        struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns_fd};
        return mount_setattr(tree, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &attr,
                             sizeof(attr));
}

static const char *idmap_lack(int e)
{
        switch (e) {
        case EINVAL:
                return "its filesystem (or a mount below it) does not support idmapped mounts";
        case ENOSYS:
                return "the kernel has no idmapped mounts (Linux 5.12 or later is needed)";
        case EPERM:
                return "the kernel refused the idmapped mount";
        default:
                return "the idmapped mount failed";
        }
}

int rm_idmap_mount(const char *src, const char *target, int userns_fd, bool recursive,
                   struct rm_error **err)
{
        unsigned flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive ? AT_RECURSIVE : 0);
        cleanup_close int tree = open_tree(AT_FDCWD, src, flags);
        if (tree < 0)
                return rm_error_sys(err, "clone the mount at %s for an idmapped mount", src);
        if (set_idmap(tree, userns_fd, recursive) < 0) {
                int e = errno;
                return rm_error_set(err, RM_FAILED_PRECONDITION,
                                    "cannot present %s through an idmapped mount: %s (%s); a pod "
                                    "with its own user namespace needs one",
                                    src, idmap_lack(e), strerror(e));
        }
        if (move_mount(tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
                return rm_error_sys(err, "attach the idmapped mount of %s at %s", src, target);
        return 0;
}

int rm_userns_new(uint32_t uid, uint32_t gid, uint32_t len, struct rm_error **err)
{
        int go[2];
        if (pipe2(go, O_CLOEXEC) < 0)
                return rm_error_sys(err, "create a pipe for a user namespace");
        pid_t pid = fork();
        if (pid == 0) {
                /* Only system calls: the daemon is multi-threaded. Hold no other
                 * helper's pipe (see pinns.c). */
                if (go[0] > 3)
                        close_range(3, (unsigned)go[0] - 1, 0);
                close_range((unsigned)go[0] + 1, ~0U, 0);
                if (unshare(CLONE_NEWUSER) < 0)
                        _exit(1);
                char b;
                while (read(go[0], &b, 1) < 0 && errno == EINTR)
                        ;
                _exit(0);
        }
        int saved = errno;
        close(go[0]);
        if (pid < 0) {
                close(go[1]);
                return rm_error_sys_errno(err, saved, "start a user namespace helper");
        }
        int fd = -1;
        char path[64], map[64];
        snprintf(map, sizeof(map), "0 %u %u\n", uid, len);
        /* The child's unshare races with this: wait until its user namespace differs. */
        char self_ns[64] = "", child_ns[64] = "";
        ssize_t n = readlink("/proc/self/ns/user", self_ns, sizeof(self_ns) - 1);
        if (n > 0)
                self_ns[n] = '\0';
        snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
        for (int i = 0; i < 5000; i++) {
                n = readlink(path, child_ns, sizeof(child_ns) - 1);
                if (n <= 0)
                        break;
                child_ns[n] = '\0';
                if (strcmp(child_ns, self_ns) != 0)
                        break;
                usleep(200);
        }
        int rc = 0;
        if (strcmp(child_ns, self_ns) == 0) {
                rc = rm_error_set(err, RM_FAILED_PRECONDITION,
                                  "cannot create a user namespace (user.max_user_namespaces or "
                                  "the kernel forbids it)");
        } else {
                snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
                cleanup_close int u = open(path, O_WRONLY | O_CLOEXEC);
                if (u < 0 || rm_write_all(u, map, strlen(map)) < 0)
                        rc = rm_error_sys(err, "write %s", path);
                snprintf(map, sizeof(map), "0 %u %u\n", gid, len);
                snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
                cleanup_close int g = rc < 0 ? -1 : open(path, O_WRONLY | O_CLOEXEC);
                if (rc == 0 && (g < 0 || rm_write_all(g, map, strlen(map)) < 0))
                        rc = rm_error_sys(err, "write %s", path);
                snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
                if (rc == 0 && (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
                        rc = rm_error_sys(err, "open %s", path);
        }
        close(go[1]);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
        return rc < 0 ? -1 : fd;
}

bool rm_idmap_supported(const char *dir, char **why)
{
        struct rm_error *e = NULL;
        cleanup_close int ns = rm_userns_new(65534, 65534, 1, &e);
        if (ns < 0) {
                *why = xstrdup(e->msg);
                rm_error_free(e);
                return false;
        }
        cleanup_close int tree = open_tree(AT_FDCWD, dir, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (tree < 0) {
                *why = xasprintf("open_tree %s: %s", dir, strerror(errno));
                return false;
        }
        if (set_idmap(tree, ns, false) < 0) {
                int err = errno;
                *why = xasprintf("%s: %s (%s)", dir, idmap_lack(err), strerror(err));
                return false;
        }
        return true;
}

int rm_idmap_reachable(const char *path, struct rm_error **err)
{
        cleanup_free char *p = xstrdup(path);
        while (*p) {
                struct stat st;
                if (stat(p, &st) < 0)
                        return rm_error_sys(err, "stat %s", p);
                if ((st.st_mode & 0001) == 0)
                        return rm_error_set(err, RM_FAILED_PRECONDITION,
                                            "a pod with its own user namespace needs the state "
                                            "directory's parents searchable by others: %s is "
                                            "mode %04o (chmod o+x %s)",
                                            p, st.st_mode & 07777, p);
                char *slash = strrchr(p, '/');
                if (slash == NULL)
                        break;
                *slash = '\0';
        }
        return 0;
}

void rm_idmap_release_all(const char *dir, bool remove)
{
        cleanup_free char *base = xasprintf("%s/idmap", dir);
        cleanup_dir DIR *d = opendir(base);
        struct dirent *e;
        while (d && (e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                cleanup_free char *path = xasprintf("%s/%s", base, e->d_name);
                if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
                        rm_log_warn("unmount %s: %s", path, strerror(errno));
                if (remove)
                        rmdir(path);
        }
        if (remove)
                rmdir(base);
}
