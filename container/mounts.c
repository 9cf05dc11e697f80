/* The container's mounts and devices: the kernel filesystems every container gets, the
 * pod's shared files, then the request's bind mounts and devices, each host path checked
 * before runc sees it. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "remora/cleanup.h"
#include "remora/xalloc.h"
#include "spec_internal.h"

static struct json_object *options(const char *const *opts)
{
        struct json_object *a = json_object_new_array();
        for (; *opts; opts++)
                json_object_array_add(a, json_object_new_string(*opts));
        return a;
}

static struct json_object *mount_entry(const char *dest, const char *type, const char *source,
                                       struct json_object *opts)
{
        struct json_object *m = json_object_new_object();
        json_object_object_add(m, "destination", json_object_new_string(dest));
        json_object_object_add(m, "type", json_object_new_string(type));
        json_object_object_add(m, "source", json_object_new_string(source));
        json_object_object_add(m, "options", opts);
        return m;
}

/* True when a request mount already covers dest: it replaces the default there. */
static bool requested(const Runtime__V1__ContainerConfig *cfg, const char *dest)
{
        for (size_t i = 0; i < cfg->n_mounts; i++) {
                const char *p = cfg->mounts[i]->container_path;
                size_t n = p ? strlen(p) : 0;
                while (n > 1 && p[n - 1] == '/')
                        n--;
                if (p && strlen(dest) == n && strncmp(p, dest, n) == 0)
                        return true;
        }
        return false;
}

static void add_defaults(struct json_object *list, const Runtime__V1__ContainerConfig *cfg,
                         const struct rm_spec_pod *pod, bool privileged)
{
        static const char *const proc_o[] = {"nosuid", "noexec", "nodev", NULL};
        static const char *const dev_o[] = {"nosuid", "strictatime", "mode=755", "size=65536k",
                                            NULL};
        static const char *const pts_o[] = {"nosuid",    "noexec", "newinstance", "ptmxmode=0666",
                                            "mode=0620", "gid=5",  NULL};
        static const char *const mq_o[] = {"nosuid", "noexec", "nodev", NULL};
        static const char *const sys_ro[] = {"nosuid", "noexec", "nodev", "ro", NULL};
        static const char *const sys_rw[] = {"nosuid", "noexec", "nodev", "rw", NULL};
        static const char *const cg_ro[] = {"nosuid", "noexec", "nodev", "relatime", "ro", NULL};
        static const char *const cg_rw[] = {"nosuid", "noexec", "nodev", "relatime", "rw", NULL};
        static const char *const shm_o[] = {"nosuid",    "noexec",      "nodev",
                                            "mode=1777", "size=65536k", NULL};
        static const char *const bind_rw[] = {"rbind", "rprivate", "rw", NULL};
        static const char *const bind_ro[] = {"rbind", "rprivate", "ro", NULL};

        json_object_array_add(list, mount_entry("/proc", "proc", "proc", options(proc_o)));
        json_object_array_add(list, mount_entry("/dev", "tmpfs", "tmpfs", options(dev_o)));
        json_object_array_add(list, mount_entry("/dev/pts", "devpts", "devpts", options(pts_o)));
        json_object_array_add(list, mount_entry("/dev/mqueue", "mqueue", "mqueue", options(mq_o)));
        json_object_array_add(
            list, mount_entry("/sys", "sysfs", "sysfs", options(privileged ? sys_rw : sys_ro)));
        json_object_array_add(list, mount_entry("/sys/fs/cgroup", "cgroup", "cgroup",
                                                options(privileged ? cg_rw : cg_ro)));
        if (!requested(cfg, "/dev/shm")) {
                if (pod->shm_dir)
                        json_object_array_add(
                            list, mount_entry("/dev/shm", "bind", pod->shm_dir, options(bind_rw)));
                else
                        json_object_array_add(
                            list, mount_entry("/dev/shm", "tmpfs", "shm", options(shm_o)));
        }
        /* A read-only root keeps the pod's files read-only too. */
        const Runtime__V1__LinuxContainerSecurityContext *sc =
            cfg->linux ? cfg->linux->security_context : NULL;
        bool readonly = sc && sc->readonly_rootfs;
        const struct {
                const char *dest;
                const char *src;
        } pod_files[] = {
            {"/etc/hostname", pod->hostname_file},
            {"/etc/hosts", pod->hosts_file},
            {"/etc/resolv.conf", pod->resolv_file},
        };
        for (size_t i = 0; i < 3; i++) {
                if (pod_files[i].src && !requested(cfg, pod_files[i].dest))
                        json_object_array_add(
                            list, mount_entry(pod_files[i].dest, "bind", pod_files[i].src,
                                              options(readonly ? bind_ro : bind_rw)));
        }
}

/* Depth of a container path in components, to mount parents before children. */
static size_t depth(const char *path)
{
        size_t n = 0;
        for (const char *p = path; *p; p++)
                n += *p == '/' && p[1] != '/' && p[1] != '\0';
        return n;
}

struct req_mount {
        const Runtime__V1__Mount *m;
        size_t index;
};

static int by_depth(const void *a, const void *b)
{
        const struct req_mount *x = a, *y = b;
        size_t dx = depth(x->m->container_path), dy = depth(y->m->container_path);
        if (dx != dy)
                return dx < dy ? -1 : 1;
        return x->index < y->index ? -1 : (x->index > y->index);
}

/* mountinfo writes a space, tab, newline or backslash in a path as \ooo (octal). */
static void unescape_octal(char *s)
{
        char *out = s;
        for (char *p = s; *p; p++) {
                if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
                    p[3] >= '0' && p[3] <= '7') {
                        *out++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
                        p += 3;
                } else {
                        *out++ = *p;
                }
        }
        *out = '\0';
}

/* The propagation of the mount holding path, from /proc/self/mountinfo's optional
 * fields: "shared:N" and/or "master:N"; mnt gets that mount's mount point. */
static void host_propagation(const char *path, bool *shared, bool *slave, char mnt_out[PATH_MAX])
{
        *shared = *slave = false;
        snprintf(mnt_out, PATH_MAX, "/");
        cleanup_file FILE *f = fopen("/proc/self/mountinfo", "re");
        if (f == NULL)
                return;
        size_t best = 0;
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0) {
                char mnt[PATH_MAX];
                if (sscanf(line, "%*d %*d %*s %*s %4095s", mnt) != 1)
                        continue;
                unescape_octal(mnt);
                size_t n = strlen(mnt);
                bool covers = strcmp(mnt, "/") == 0 ||
                              (strncmp(path, mnt, n) == 0 && (path[n] == '/' || path[n] == '\0'));
                if (!covers || n < best)
                        continue;
                best = n;
                snprintf(mnt_out, PATH_MAX, "%s", mnt);
                /* Optional fields sit between the 6th field and the " - " separator. */
                char *sep = strstr(line, " - ");
                if (sep)
                        *sep = '\0';
                *shared = strstr(line, " shared:") != NULL;
                *slave = strstr(line, " master:") != NULL;
        }
        free(line);
}

/* Mounts under path on the host reach the container only when the mount holding it is
 * shared (bidirectional) or shared or a slave (host to container). Remora never changes a
 * host mount's propagation behind the operator's back: it refuses, naming the mount. */
static int check_propagation(const char *path, const char *host_path, bool need_shared, size_t i,
                             struct rm_error **err)
{
        bool shared, slave;
        char mnt[PATH_MAX];
        host_propagation(path, &shared, &slave, mnt);
        if (shared || (slave && !need_shared))
                return 0;
        return rm_error_set(err, RM_FAILED_PRECONDITION,
                            "mounts[%zu].host_path %s: %s propagation needs its host mount %s to "
                            "be %s, and it is %s; Remora does not change host mounts (the "
                            "operator can: mount --make-shared %s)",
                            i, host_path, need_shared ? "bidirectional" : "host-to-container", mnt,
                            need_shared ? "shared" : "shared or a slave",
                            slave ? "a slave" : "private", mnt);
}

static int add_request_mount(struct json_object *list, const Runtime__V1__Mount *m, size_t i,
                             const struct rm_spec_pod *pod, bool privileged,
                             const char **propagation, struct rm_error **err)
{
        const char *dest = m->container_path;
        if (dest == NULL || dest[0] != '/')
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "mounts[%zu].container_path \"%s\" must be an absolute path", i,
                                    dest ? dest : "");
        /* The manager mounts image volumes and hands them here as read-only binds. */
        if (m->image && m->image->image && *m->image->image)
                return rm_error_set(err, RM_INTERNAL,
                                    "mounts[%zu].image: the image volume was not prepared", i);
        if (m->host_path == NULL || m->host_path[0] != '/')
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "mounts[%zu].host_path \"%s\" must be an absolute path", i,
                                    m->host_path ? m->host_path : "");
        /* Resolve symlinks on the host now: runc would follow them at start, after any
         * check made here, and a missing source is better refused by name. */
        char real[PATH_MAX];
        if (realpath(m->host_path, real) == NULL) {
                if (errno == ENOENT || errno == ENOTDIR)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "mounts[%zu].host_path %s does not exist", i,
                                            m->host_path);
                return rm_error_sys(err, "mounts[%zu].host_path %s", i, m->host_path);
        }

        const char *prop = "rprivate";
        switch (m->propagation) {
        case RUNTIME__V1__MOUNT_PROPAGATION__PROPAGATION_PRIVATE:
                break;
        case RUNTIME__V1__MOUNT_PROPAGATION__PROPAGATION_HOST_TO_CONTAINER:
                if (check_propagation(real, m->host_path, false, i, err) < 0)
                        return -1;
                prop = "rslave";
                if (*propagation == NULL)
                        *propagation = "rslave";
                break;
        case RUNTIME__V1__MOUNT_PROPAGATION__PROPAGATION_BIDIRECTIONAL:
                if (!privileged)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "mounts[%zu]: bidirectional propagation needs a "
                                            "privileged container",
                                            i);
                if (check_propagation(real, m->host_path, true, i, err) < 0)
                        return -1;
                prop = "rshared";
                *propagation = "rshared";
                break;
        default:
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "mounts[%zu].propagation %d is not known", i,
                                    (int)m->propagation);
        }
        struct json_object *opts = json_object_new_array();
        json_object_array_add(opts, json_object_new_string("rbind"));
        json_object_array_add(opts, json_object_new_string(prop));
        json_object_array_add(opts, json_object_new_string(m->readonly ? "ro" : "rw"));
        if (m->recursive_read_only) {
                /* The CRI asks readonly and private propagation with it; the handler must
                 * know "rro" (runc 1.1 does not and would fail the start with a parse
                 * error): Status tells kubelet which handlers do, a client that asks
                 * anyway is told here. */
                const char *why = !m->readonly                    ? "needs readonly"
                                  : strcmp(prop, "rprivate") != 0 ? "needs private propagation"
                                                                  : NULL;
                if (why == NULL && !pod->recursive_read_only) {
                        json_object_put(opts);
                        return rm_error_set(err, RM_FAILED_PRECONDITION,
                                            "mounts[%zu] (%s): recursive_read_only is not "
                                            "supported by the pod's runtime handler %s (runc 1.1 "
                                            "has no recursive read-only bind mounts; Status "
                                            "reports recursive_read_only_mounts false for it); "
                                            "use readonly alone",
                                            i, dest,
                                            pod->runtime_handler ? pod->runtime_handler : "");
                }
                if (why) {
                        json_object_put(opts);
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "mounts[%zu] (%s): recursive_read_only %s", i, dest,
                                            why);
                }
                json_object_array_add(opts, json_object_new_string("rro"));
        }
        json_object_array_add(list, mount_entry(dest, "bind", real, opts));
        return 0;
}

struct json_object *rm__spec_mounts(const Runtime__V1__ContainerConfig *cfg,
                                    const struct rm_spec_pod *pod, bool privileged,
                                    const char **propagation, struct rm_error **err)
{
        cleanup_json struct json_object *list = json_object_new_array();
        *propagation = NULL;
        add_defaults(list, cfg, pod, privileged);

        cleanup_free struct req_mount *order = xzalloc(sizeof(*order) * (cfg->n_mounts + 1));
        for (size_t i = 0; i < cfg->n_mounts; i++) {
                if (cfg->mounts[i]->container_path == NULL) {
                        rm_error_set(err, RM_INVALID_ARGUMENT,
                                     "mounts[%zu].container_path is empty", i);
                        return NULL;
                }
                order[i] = (struct req_mount){cfg->mounts[i], i};
        }
        qsort(order, cfg->n_mounts, sizeof(*order), by_depth);
        for (size_t i = 0; i < cfg->n_mounts; i++) {
                if (add_request_mount(list, order[i].m, order[i].index, pod, privileged,
                                      propagation, err) < 0)
                        return NULL;
        }
        return steal_pointer(&list);
}

static struct json_object *device_entry(const char *path, const struct stat *st)
{
        struct json_object *d = json_object_new_object();
        json_object_object_add(d, "path", json_object_new_string(path));
        json_object_object_add(d, "type", json_object_new_string(S_ISCHR(st->st_mode) ? "c" : "b"));
        json_object_object_add(d, "major", json_object_new_int64(major(st->st_rdev)));
        json_object_object_add(d, "minor", json_object_new_int64(minor(st->st_rdev)));
        json_object_object_add(d, "fileMode", json_object_new_int(st->st_mode & 07777));
        json_object_object_add(d, "uid", json_object_new_int(0));
        json_object_object_add(d, "gid", json_object_new_int(0));
        return d;
}

static struct json_object *device_rule(const struct stat *st, const char *access)
{
        struct json_object *r = json_object_new_object();
        json_object_object_add(r, "allow", json_object_new_boolean(true));
        json_object_object_add(r, "type", json_object_new_string(S_ISCHR(st->st_mode) ? "c" : "b"));
        json_object_object_add(r, "major", json_object_new_int64(major(st->st_rdev)));
        json_object_object_add(r, "minor", json_object_new_int64(minor(st->st_rdev)));
        json_object_object_add(r, "access", json_object_new_string(access));
        return r;
}

/* Every device node directly under the host's /dev and /dev/<subdir>, for privileged
 * containers (runc's own defaults cover null, zero, tty and friends). */
static void add_host_devices(struct json_object *devices, const char *dir, int level)
{
        cleanup_dir DIR *d = opendir(dir);
        if (d == NULL)
                return;
        struct dirent *e;
        while ((e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                cleanup_free char *path = xasprintf("%s/%s", dir, e->d_name);
                struct stat st;
                if (lstat(path, &st) < 0)
                        continue;
                /* /dev/pts and /dev/mqueue are mounted fresh inside the container. */
                if (S_ISDIR(st.st_mode) && level == 0 && strcmp(e->d_name, "pts") != 0 &&
                    strcmp(e->d_name, "mqueue") != 0 && strcmp(e->d_name, "shm") != 0)
                        add_host_devices(devices, path, 1);
                else if ((S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) &&
                         strcmp(path, "/dev/console") != 0 && strcmp(path, "/dev/ptmx") != 0)
                        json_object_array_add(devices, device_entry(path, &st));
        }
}

int rm__spec_devices(const Runtime__V1__ContainerConfig *cfg, bool privileged,
                     struct json_object *linux, struct rm_error **err)
{
        struct json_object *resources = NULL, *rules = NULL;
        json_object_object_get_ex(linux, "resources", &resources);
        json_object_object_get_ex(resources, "devices", &rules);
        struct json_object *devices = json_object_new_array();
        json_object_object_add(linux, "devices", devices);
        if (privileged) {
                add_host_devices(devices, "/dev", 0);
                struct json_object *all = json_object_new_object();
                json_object_object_add(all, "allow", json_object_new_boolean(true));
                json_object_object_add(all, "access", json_object_new_string("rwm"));
                json_object_array_add(rules, all);
        }
        for (size_t i = 0; i < cfg->n_devices; i++) {
                const Runtime__V1__Device *dev = cfg->devices[i];
                const char *perms =
                    dev->permissions && *dev->permissions ? dev->permissions : "rwm";
                if (strspn(perms, "rwm") != strlen(perms))
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "devices[%zu].permissions \"%s\" may only hold r, w "
                                            "and m",
                                            i, perms);
                if (dev->container_path == NULL || dev->container_path[0] != '/')
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "devices[%zu].container_path \"%s\" must be an "
                                            "absolute path",
                                            i, dev->container_path ? dev->container_path : "");
                struct stat st;
                if (dev->host_path == NULL || stat(dev->host_path, &st) < 0)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "devices[%zu].host_path %s does not exist", i,
                                            dev->host_path ? dev->host_path : "(empty)");
                if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "devices[%zu].host_path %s is not a device node", i,
                                            dev->host_path);
                json_object_array_add(devices, device_entry(dev->container_path, &st));
                json_object_array_add(rules, device_rule(&st, perms));
        }
        return 0;
}
