/* A container in its pod's user namespace: what runc 1.1 needs to find ready. runc
 * mounts from inside that namespace, where host files show as unmapped and host
 * directories are closed to it, so every bind mount source is first attached through an
 * idmapped mount under <bundle>/idmap (the container sees a host root-owned file as owned
 * by its own root), and the bundle is made reachable for that root alone. */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "manager_internal.h"
#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/idmap.h"
#include "remora/log.h"
#include "remora/xalloc.h"

/* runc resolves the rootfs and mount sources as the namespace's root, which has no
 * power over host directories. The bundle is given to that root (0700: host users other
 * than root cannot reach the rootfs or the idmapped sources through it); Remora's two
 * levels above are made searchable (0711, no listing), and anything higher is the
 * operator's, so it is named instead. */
static int make_reachable(const char *bundle, const struct rm_spec_userns *userns,
                          struct rm_error **err)
{
        if (chown(bundle, userns->uid_host, userns->gid_host) < 0 || chmod(bundle, 0700) < 0)
                return rm_error_sys(err, "give %s to the pod's user namespace root", bundle);
        cleanup_free char *path = xstrdup(bundle);
        for (int level = 0; level < 3; level++) {
                char *slash = strrchr(path, '/');
                if (slash == NULL || slash == path)
                        return 0;
                *slash = '\0';
                if (level == 2)
                        break;
                struct stat st;
                if (stat(path, &st) < 0)
                        return rm_error_sys(err, "stat %s", path);
                if ((st.st_mode & 0011) != 0011 && chmod(path, (st.st_mode & 0777) | 0011) < 0)
                        return rm_error_sys(err, "make %s searchable for the pod's user namespace",
                                            path);
        }
        return rm_idmap_reachable(path, err);
}

static bool has_option(struct json_object *m, const char *opt)
{
        struct json_object *opts = NULL;
        json_object_object_get_ex(m, "options", &opts);
        for (size_t i = 0; opts && i < json_object_array_length(opts); i++) {
                if (strcmp(json_object_get_string(json_object_array_get_idx(opts, i)), opt) == 0)
                        return true;
        }
        return false;
}

int rm__ctr_userns_prepare(struct json_object *spec, const char *bundle,
                           const struct rm_spec_userns *userns, struct rm_error **err)
{
        if (make_reachable(bundle, userns, err) < 0)
                return -1;
        cleanup_close int ns = open(userns->path, O_RDONLY | O_CLOEXEC);
        if (ns < 0)
                return rm_error_sys(err, "open the pod's user namespace %s", userns->path);
        cleanup_free char *base = xasprintf("%s/idmap", bundle);
        if (rm_mkdir_p(base, 0711, err) < 0)
                return -1;
        struct json_object *mounts = NULL;
        json_object_object_get_ex(spec, "mounts", &mounts);
        for (size_t i = 0; mounts && i < json_object_array_length(mounts); i++) {
                struct json_object *m = json_object_array_get_idx(mounts, i), *type = NULL,
                                   *src = NULL;
                json_object_object_get_ex(m, "type", &type);
                json_object_object_get_ex(m, "source", &src);
                if (type == NULL || src == NULL || strcmp(json_object_get_string(type), "bind"))
                        continue;
                const char *source = json_object_get_string(src);
                struct stat st;
                if (stat(source, &st) < 0)
                        return rm_error_sys(err, "bind mount source %s", source);
                cleanup_free char *at = xasprintf("%s/%zu", base, i);
                if (S_ISDIR(st.st_mode)) {
                        if (mkdir(at, 0711) < 0 && errno != EEXIST)
                                return rm_error_sys(err, "create %s", at);
                } else {
                        int fd = open(at, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
                        if (fd < 0)
                                return rm_error_sys(err, "create %s", at);
                        close(fd);
                }
                if (rm_idmap_mount(source, at, ns, has_option(m, "rbind"), err) < 0)
                        return rm_error_wrap(
                            err, "mount %s",
                            json_object_get_string(json_object_object_get(m, "destination")));
                json_object_object_add(m, "source", json_object_new_string(at));
        }
        return 0;
}

void rm__ctr_userns_release(const char *bundle)
{
        rm_idmap_release_all(bundle, false);
}
