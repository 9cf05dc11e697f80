/* Image volumes (CRI Mount.image, Mount.image_sub_path): a pulled image's unpacked layers
 * mounted read-only as an overlay with no upper directory, under the container's bundle
 * (<bundle>/imgvol/<i>), then bind-mounted into the container, whole or one path in it.
 * Keeping the mounts under the bundle ties their life to the container's: removal and
 * the start-up sweep of bundles without a record unmount whatever is there. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "manager_internal.h"
#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/xalloc.h"
#include "rootfs.h"

#define IMGVOL_DIR "imgvol"

static bool is_image_mount(const Runtime__V1__Mount *m)
{
        return m->image && m->image->image && *m->image->image;
}

/* The fields of mounts[i] that image volumes use, checked before anything is made. */
static int check_fields(const Runtime__V1__Mount *m, size_t i, struct rm_error **err)
{
        const char *sub = m->image_sub_path ? m->image_sub_path : "";
        if (!is_image_mount(m)) {
                if (*sub)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "mounts[%zu].image_sub_path \"%s\" is set but "
                                            "mounts[%zu].image is not",
                                            i, sub, i);
                return 0;
        }
        if (m->host_path && *m->host_path)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "mounts[%zu].host_path and mounts[%zu].image are mutually "
                                    "exclusive",
                                    i, i);
        if (sub[0] == '/')
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "mounts[%zu].image_sub_path \"%s\" must be relative to the "
                                    "image's root",
                                    i, sub);
        for (const char *p = sub; *p;) {
                size_t n = strcspn(p, "/");
                if (n == 2 && p[0] == '.' && p[1] == '.')
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "mounts[%zu].image_sub_path \"%s\" must not contain "
                                            "\"..\"",
                                            i, sub);
                p += n;
                p += *p == '/';
        }
        return 0;
}

/* Mount the layers (top first) read-only at <bundle>/imgvol/<i>. overlayfs wants two
 * lower directories when there is no upper one: a one-layer image gets an empty one
 * under it. */
static char *mount_layers(const char *bundle, size_t i, char **dirs, size_t n, const char *id,
                          struct rm_arena *a, struct rm_error **err)
{
        char *target = rm_arena_printf(a, "%s/%s/%zu", bundle, IMGVOL_DIR, i);
        cleanup_free char *base = xasprintf("%s/%s/.base", bundle, IMGVOL_DIR);
        if (rm_mkdir_p(target, 0755, err) < 0 || rm_mkdir_p(base, 0755, err) < 0)
                return NULL;
        size_t len = strlen("lowerdir=") + strlen(base) + 1;
        for (size_t k = 0; k < n; k++)
                len += strlen(dirs[k]) + 1;
        cleanup_free char *opts = xzalloc(len + 1);
        strcat(opts, "lowerdir=");
        for (size_t k = 0; k < n; k++) {
                if (k)
                        strcat(opts, ":");
                strcat(opts, dirs[k]);
        }
        if (n < 2) {
                strcat(opts, ":");
                strcat(opts, base);
        }
        if (mount("overlay", target, "overlay", MS_RDONLY | MS_NODEV, opts) < 0) {
                rm_error_sys(err, "mount image %s read-only at %s", id, target);
                return NULL;
        }
        return target;
}

/* The host path of sub inside the mounted image at root, resolved by the kernel with
 * RESOLVE_IN_ROOT: "..", absolute symlinks and magic links stay inside the image. */
static char *resolve_sub(const char *root, const char *sub, size_t i, const char *id,
                         struct rm_arena *a, struct rm_error **err)
{
        if (*sub == '\0')
                return (char *)root;
        cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0) {
                rm_error_sys(err, "open the mounted image %s at %s", id, root);
                return NULL;
        }
        cleanup_close int fd = rm__rootfs_openat(rootfd, sub, O_PATH);
        if (fd < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        rm_error_set(err, RM_INVALID_ARGUMENT,
                                     "mounts[%zu].image_sub_path \"%s\" does not exist in image "
                                     "%s",
                                     i, sub, id);
                else
                        rm_error_set(err, RM_INVALID_ARGUMENT,
                                     "mounts[%zu].image_sub_path \"%s\" cannot be resolved "
                                     "inside image %s: %s",
                                     i, sub, id, strerror(errno));
                return NULL;
        }
        char link[64], real[PATH_MAX];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, real, sizeof(real) - 1);
        if (n < 0) {
                rm_error_sys(err, "mounts[%zu].image_sub_path: read %s", i, link);
                return NULL;
        }
        real[n] = '\0';
        size_t rl = strlen(root);
        /* The kernel kept the lookup inside root; checked again, as this path is what runc
         * binds. */
        if (strncmp(real, root, rl) != 0 || (real[rl] != '/' && real[rl] != '\0')) {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "mounts[%zu].image_sub_path \"%s\" resolves outside image %s", i, sub,
                             id);
                return NULL;
        }
        return rm_arena_strdup(a, real);
}

static void add_id(struct json_object *ids, const char *id)
{
        for (size_t k = 0; k < json_object_array_length(ids); k++) {
                if (strcmp(json_object_get_string(json_object_array_get_idx(ids, k)), id) == 0)
                        return;
        }
        json_object_array_add(ids, json_object_new_string(id));
}

int rm__imgvol_prepare(struct rm_container_manager *mgr, const char *bundle,
                       const Runtime__V1__ContainerConfig *cfg, struct rm_arena *a,
                       const Runtime__V1__ContainerConfig **out, struct json_object *ids,
                       struct rm_error **err)
{
        *out = cfg;
        size_t count = 0;
        for (size_t i = 0; i < cfg->n_mounts; i++) {
                if (check_fields(cfg->mounts[i], i, err) < 0)
                        return -1;
                count += is_image_mount(cfg->mounts[i]);
        }
        if (count == 0)
                return 0;
        if (mgr->ops.image_layers == NULL)
                return rm_error_set(err, RM_UNIMPLEMENTED, "image volumes are not available");

        Runtime__V1__ContainerConfig *copy = rm_arena_alloc(a, sizeof(*copy));
        *copy = *cfg;
        copy->mounts = (Runtime__V1__Mount **)rm_arena_ptrs(a, cfg->n_mounts);
        for (size_t i = 0; i < cfg->n_mounts; i++) {
                const Runtime__V1__Mount *m = cfg->mounts[i];
                copy->mounts[i] = (Runtime__V1__Mount *)m;
                if (!is_image_mount(m))
                        continue;
                struct rm_ctr_image img;
                memset(&img, 0, sizeof(img));
                if (mgr->ops.image_lookup(mgr->ops.ctx, m->image->image, a, &img, err) < 0)
                        return rm_error_wrap(err, "mounts[%zu].image.image", i);
                char **dirs = NULL;
                size_t n = 0;
                if (mgr->ops.image_layers(mgr->ops.ctx, img.id, a, &dirs, &n, err) < 0)
                        return rm_error_wrap(err, "mounts[%zu].image.image", i);
                const char *root = mount_layers(bundle, i, dirs, n, img.id, a, err);
                if (root == NULL)
                        return rm_error_wrap(err, "mounts[%zu].image.image", i);
                const char *src = resolve_sub(root, m->image_sub_path ? m->image_sub_path : "", i,
                                              img.id, a, err);
                if (src == NULL)
                        return -1;
                add_id(ids, img.id);
                /* To the spec builder it is now a read-only bind of a prepared path. */
                Runtime__V1__Mount *pm = rm_arena_alloc(a, sizeof(*pm));
                *pm = *m;
                pm->host_path = (char *)src;
                pm->readonly = true;
                pm->image = NULL;
                pm->image_sub_path = (char *)"";
                copy->mounts[i] = pm;
        }
        *out = copy;
        return 0;
}

int rm__imgvol_unmount_all(const char *bundle, struct rm_error **err)
{
        cleanup_free char *dir = xasprintf("%s/%s", bundle, IMGVOL_DIR);
        cleanup_dir DIR *d = opendir(dir);
        if (d == NULL)
                return errno == ENOENT || errno == ENOTDIR ? 0 : rm_error_sys(err, "open %s", dir);
        struct dirent *e;
        int rc = 0;
        while ((e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                cleanup_free char *path = xasprintf("%s/%s", dir, e->d_name);
                /* Stacked mounts, should a crash have left two, come off one by one. */
                for (int k = 0; k < 16 && umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) == 0; k++)
                        ;
                if (errno != EINVAL && errno != ENOENT && rc == 0)
                        rc = rm_error_sys(err, "unmount image volume %s", path);
        }
        return rc;
}
