/* The OCI spec's top level: process, root, namespaces, security; mounts, devices and
 * resources come from their own files. */
#include <stdlib.h>
#include <string.h>

#include "remora/cleanup.h"
#include "remora/xalloc.h"
#include "spec_internal.h"

#define OCI_VERSION  "1.0.2"
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

void rm_strv_free(char **v)
{
        if (v == NULL)
                return;
        for (char **p = v; *p; p++)
                free(*p);
        free(v);
}

static void strv_append(char ***v, size_t *n, char *const *items, size_t count)
{
        *v = xrealloc(*v, sizeof(char *) * (*n + count + 1));
        for (size_t i = 0; i < count; i++)
                (*v)[(*n)++] = xstrdup(items[i]);
        (*v)[*n] = NULL;
}

char **rm_spec_process_args(const Runtime__V1__ContainerConfig *cfg,
                            const struct rm_spec_image *img, struct rm_error **err)
{
        char **argv = NULL;
        size_t n = 0;
        if (cfg->n_command > 0) {
                strv_append(&argv, &n, cfg->command, cfg->n_command);
                strv_append(&argv, &n, cfg->args, cfg->n_args);
        } else {
                strv_append(&argv, &n, img->entrypoint, img->n_entrypoint);
                if (cfg->n_args > 0)
                        strv_append(&argv, &n, cfg->args, cfg->n_args);
                else
                        strv_append(&argv, &n, img->cmd, img->n_cmd);
        }
        if (n == 0 || argv[0][0] == '\0') {
                rm_strv_free(argv);
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "nothing to run: the request has no command or args and the image "
                             "has no Entrypoint or Cmd");
                return NULL;
        }
        return argv;
}

static struct json_object *strv_json(char *const *v, size_t n)
{
        struct json_object *a = json_object_new_array();
        for (size_t i = 0; i < n; i++)
                json_object_array_add(a, json_object_new_string(v[i]));
        return a;
}

/* The environment being built: a JSON array of "K=V" and, beside it, each key's index
 * in the array (a json-c object is a hash table), so that a request with many variables
 * costs linear time, not a scan of the array per variable. */
struct env {
        struct json_object *list;
        struct json_object *index;
};

/* Set key=value, replacing an earlier value of key in place. */
static void env_set(struct env *e, const char *key, size_t key_len, const char *kv)
{
        cleanup_free char *k = xasprintf("%.*s", (int)key_len, key);
        struct json_object *at = NULL;
        if (json_object_object_get_ex(e->index, k, &at)) {
                json_object_array_put_idx(e->list, (size_t)json_object_get_int64(at),
                                          json_object_new_string(kv));
                return;
        }
        json_object_object_add(e->index, k,
                               json_object_new_int64((int64_t)json_object_array_length(e->list)));
        json_object_array_add(e->list, json_object_new_string(kv));
}

static bool env_has(const struct env *e, const char *key)
{
        return json_object_object_get_ex(e->index, key, NULL);
}

/* The image's environment, then the request's (which wins), then what every process
 * expects: PATH, HOME from the user's passwd entry, HOSTNAME. */
static struct json_object *build_env(const Runtime__V1__ContainerConfig *cfg,
                                     const struct rm_spec_image *img,
                                     const struct rm_spec_user *user, const char *hostname,
                                     struct rm_error **err)
{
        cleanup_json struct json_object *list = json_object_new_array();
        cleanup_json struct json_object *index = json_object_new_object();
        struct env env = {list, index};
        for (size_t i = 0; i < img->n_env; i++) {
                const char *eq = strchr(img->env[i], '=');
                if (eq && eq != img->env[i])
                        env_set(&env, img->env[i], (size_t)(eq - img->env[i]), img->env[i]);
        }
        for (size_t i = 0; i < cfg->n_envs; i++) {
                const Runtime__V1__KeyValue *kv = cfg->envs[i];
                if (kv->key == NULL || kv->key[0] == '\0' || strchr(kv->key, '=')) {
                        rm_error_set(err, RM_INVALID_ARGUMENT,
                                     "envs[%zu].key \"%s\" must be non-empty and free of '='", i,
                                     kv->key ? kv->key : "");
                        return NULL;
                }
                if (kv->value.len && memchr(kv->value.data, '\0', kv->value.len)) {
                        rm_error_set(err, RM_INVALID_ARGUMENT,
                                     "envs[%zu] (%s): the value holds a NUL byte", i, kv->key);
                        return NULL;
                }
                cleanup_free char *s = xasprintf("%s=%.*s", kv->key, (int)kv->value.len,
                                                 kv->value.len ? (const char *)kv->value.data : "");
                env_set(&env, kv->key, strlen(kv->key), s);
        }
        if (!env_has(&env, "PATH"))
                env_set(&env, "PATH", 4, "PATH=" DEFAULT_PATH);
        if (!env_has(&env, "HOME")) {
                cleanup_free char *home =
                    xasprintf("HOME=%s", user->home && *user->home ? user->home : "/");
                env_set(&env, "HOME", 4, home);
        }
        if (hostname && *hostname && !env_has(&env, "HOSTNAME")) {
                cleanup_free char *h = xasprintf("HOSTNAME=%s", hostname);
                env_set(&env, "HOSTNAME", 8, h);
        }
        return steal_pointer(&list);
}

static void add_ns(struct json_object *list, const char *type, const char *path)
{
        struct json_object *ns = json_object_new_object();
        json_object_object_add(ns, "type", json_object_new_string(type));
        if (path)
                json_object_object_add(ns, "path", json_object_new_string(path));
        json_object_array_add(list, ns);
}

static struct json_object *id_mapping(uint32_t host, uint32_t len)
{
        struct json_object *m = json_object_new_object();
        json_object_object_add(m, "containerID", json_object_new_int64(0));
        json_object_object_add(m, "hostID", json_object_new_int64(host));
        json_object_object_add(m, "size", json_object_new_int64(len));
        struct json_object *a = json_object_new_array();
        json_object_array_add(a, m);
        return a;
}

static int build_namespaces(struct json_object *linux, const struct rm_spec_pod *pod,
                            const struct rm_spec_host *host, struct rm_error **err)
{
        struct json_object *list = json_object_new_array();
        json_object_object_add(linux, "namespaces", list);
        if (pod->userns) {
                /* Joined first, so the namespaces made for the container belong to it.
                 * runc 1.1 does not read the mappings of a namespace it joins by path yet
                 * needs them (to find the host ID of root), so they are given as well. */
                const struct rm_spec_userns *u = pod->userns;
                add_ns(list, "user", u->path);
                json_object_object_add(linux, "uidMappings", id_mapping(u->uid_host, u->uid_len));
                json_object_object_add(linux, "gidMappings", id_mapping(u->gid_host, u->gid_len));
        }
        switch (pod->pid_mode) {
        case RUNTIME__V1__NAMESPACE_MODE__CONTAINER:
                add_ns(list, "pid", NULL);
                break;
        case RUNTIME__V1__NAMESPACE_MODE__POD:
        case RUNTIME__V1__NAMESPACE_MODE__TARGET:
                if (pod->pidns_path == NULL)
                        return rm_error_set(err, RM_FAILED_PRECONDITION,
                                            "namespace_options.pid: the PID namespace to join is "
                                            "not available");
                add_ns(list, "pid", pod->pidns_path);
                break;
        case RUNTIME__V1__NAMESPACE_MODE__NODE:
                if (pod->userns)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "namespace_options.pid NODE: a container of a pod "
                                            "with its own user namespace cannot use the host's "
                                            "PID namespace");
                break;
        default:
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "namespace_options.pid %d is not a namespace mode",
                                    (int)pod->pid_mode);
        }
        if (pod->netns_path)
                add_ns(list, "network", pod->netns_path);
        if (pod->ipcns_path)
                add_ns(list, "ipc", pod->ipcns_path);
        if (pod->utsns_path)
                add_ns(list, "uts", pod->utsns_path);
        add_ns(list, "mount", NULL);
        if (host->cgroup_v2)
                add_ns(list, "cgroup", NULL);
        return 0;
}

/* What a non-privileged container gets when the request sends no list of its own: the
 * lists containerd and CRI-O use. Without them a CRI client other than kubelet (crictl,
 * critest) got a writable /proc/sys, and kernel.core_pattern there runs a program of the
 * container's choosing as root on the host. */
static const char *const default_masked[] = {"/proc/acpi",
                                             "/proc/asound",
                                             "/proc/kcore",
                                             "/proc/keys",
                                             "/proc/latency_stats",
                                             "/proc/timer_list",
                                             "/proc/timer_stats",
                                             "/proc/sched_debug",
                                             "/proc/scsi",
                                             "/sys/firmware",
                                             "/sys/devices/virtual/powercap",
                                             NULL};
static const char *const default_readonly[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", NULL};

static int path_list(struct json_object *linux, const char *key, const char *field,
                     char *const *paths, size_t n, const char *const *defaults,
                     struct rm_error **err)
{
        struct json_object *list = json_object_new_array();
        json_object_object_add(linux, key, list);
        if (n == 0) {
                for (; *defaults; defaults++)
                        json_object_array_add(list, json_object_new_string(*defaults));
                return 0;
        }
        for (size_t i = 0; i < n; i++) {
                if (paths[i] == NULL || paths[i][0] != '/')
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "%s[%zu] \"%s\" must be an absolute path", field, i,
                                            paths[i] ? paths[i] : "");
                json_object_array_add(list, json_object_new_string(paths[i]));
        }
        return 0;
}

/* The seccomp profile, mapping the deprecated seccomp_profile_path when the typed field
 * is absent ("runtime/default", "unconfined", "localhost/<path>"). */
static int add_seccomp(struct json_object *linux,
                       const Runtime__V1__LinuxContainerSecurityContext *sc, bool privileged,
                       struct json_object *caps, struct rm_error **err)
{
        Runtime__V1__SecurityProfile legacy = RUNTIME__V1__SECURITY_PROFILE__INIT;
        const Runtime__V1__SecurityProfile *profile = sc ? sc->seccomp : NULL;
        /* Older kubelets still fill the deprecated field; read it on purpose. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        const char *old = sc ? sc->seccomp_profile_path : NULL;
#pragma GCC diagnostic pop
        if (profile == NULL && old && *old) {
                if (strcmp(old, "runtime/default") == 0 || strcmp(old, "docker/default") == 0) {
                        legacy.profile_type =
                            RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__RuntimeDefault;
                } else if (strcmp(old, "unconfined") == 0) {
                        legacy.profile_type =
                            RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__Unconfined;
                } else if (strncmp(old, "localhost/", 10) == 0) {
                        legacy.profile_type =
                            RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__Localhost;
                        legacy.localhost_ref = (char *)old + 10;
                } else {
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "seccomp_profile_path \"%s\" is not runtime/default, "
                                            "unconfined or localhost/<path>",
                                            old);
                }
                profile = &legacy;
        }
        bool none = false;
        struct json_object *seccomp = rm_spec_seccomp(profile, privileged, caps, &none, err);
        if (seccomp == NULL && !none)
                return -1;
        if (seccomp)
                json_object_object_add(linux, "seccomp", seccomp);
        return 0;
}

static struct json_object *build_process(const Runtime__V1__ContainerConfig *cfg,
                                         const struct rm_spec_image *img,
                                         const struct rm_spec_pod *pod, const char *rootfs,
                                         struct json_object *caps, struct rm_error **err)
{
        const Runtime__V1__LinuxContainerSecurityContext *sc =
            cfg->linux ? cfg->linux->security_context : NULL;
        cleanup_json struct json_object *p = json_object_new_object();
        json_object_object_add(p, "terminal", json_object_new_boolean(cfg->tty));

        char **argv = rm_spec_process_args(cfg, img, err);
        if (argv == NULL)
                return NULL;
        size_t argc = 0;
        while (argv[argc])
                argc++;
        json_object_object_add(p, "args", strv_json(argv, argc));
        rm_strv_free(argv);

        struct rm_spec_user user;
        if (rm_spec_resolve_user(sc, img->user, rootfs, &user, err) < 0)
                return NULL;
        struct json_object *u = json_object_new_object();
        json_object_object_add(u, "uid", json_object_new_int64(user.uid));
        json_object_object_add(u, "gid", json_object_new_int64(user.gid));
        if (user.n_groups) {
                struct json_object *g = json_object_new_array();
                for (size_t i = 0; i < user.n_groups; i++)
                        json_object_array_add(g, json_object_new_int64(user.groups[i]));
                json_object_object_add(u, "additionalGids", g);
        }
        json_object_object_add(p, "user", u);
        struct json_object *env = build_env(cfg, img, &user, pod->hostname, err);
        rm_spec_user_release(&user);
        if (env == NULL)
                return NULL;
        json_object_object_add(p, "env", env);

        const char *cwd = cfg->working_dir && *cfg->working_dir   ? cfg->working_dir
                          : img->working_dir && *img->working_dir ? img->working_dir
                                                                  : "/";
        if (cwd[0] != '/') {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "working_dir \"%s\" must be an absolute path", cwd);
                return NULL;
        }
        if (rm_rootfs_mkdir(rootfs, cwd, 0755, err) < 0) {
                rm_error_wrap(err, "working_dir %s", cwd);
                return NULL;
        }
        json_object_object_add(p, "cwd", json_object_new_string(cwd));

        struct json_object *c = json_object_new_object();
        json_object_object_add(c, "bounding", json_object_get(caps));
        json_object_object_add(c, "effective", json_object_get(caps));
        json_object_object_add(c, "permitted", json_object_get(caps));
        struct json_object *ambient = rm__spec_ambient(sc ? sc->capabilities : NULL, caps, err);
        if (ambient == NULL) {
                json_object_put(c);
                return NULL;
        }
        if (json_object_array_length(ambient) > 0) {
                json_object_object_add(c, "inheritable", json_object_get(ambient));
                json_object_object_add(c, "ambient", ambient);
        } else {
                json_object_put(ambient);
        }
        json_object_object_add(p, "capabilities", c);
        json_object_object_add(p, "noNewPrivileges",
                               json_object_new_boolean(sc && sc->no_new_privs));
        return steal_pointer(&p);
}

/* AppArmor and SELinux are accepted for compatibility; this host applies neither, and the
 * spec says so in an annotation that ContainerStatus' verbose info shows. */
static void note_lsm(struct json_object *annotations,
                     const Runtime__V1__LinuxContainerSecurityContext *sc)
{
        if (sc == NULL)
                return;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        const char *old_apparmor = sc->apparmor_profile;
#pragma GCC diagnostic pop
        bool apparmor =
            (sc->apparmor && sc->apparmor->profile_type !=
                                 RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__Unconfined) ||
            (old_apparmor && *old_apparmor);
        bool selinux =
            sc->selinux_options && ((sc->selinux_options->type && *sc->selinux_options->type) ||
                                    (sc->selinux_options->level && *sc->selinux_options->level));
        if (apparmor)
                json_object_object_add(annotations, "io.remora.apparmor",
                                       json_object_new_string("not applied: remora does not "
                                                              "support AppArmor"));
        if (selinux)
                json_object_object_add(annotations, "io.remora.selinux",
                                       json_object_new_string("not applied: remora does not "
                                                              "support SELinux"));
}

struct json_object *rm_spec_build(const char *id, const Runtime__V1__ContainerConfig *cfg,
                                  const struct rm_spec_image *img, const struct rm_spec_pod *pod,
                                  const struct rm_spec_host *host, const char *rootfs,
                                  struct rm_error **err)
{
        const Runtime__V1__LinuxContainerSecurityContext *sc =
            cfg->linux ? cfg->linux->security_context : NULL;
        bool privileged = sc && sc->privileged;
        if (privileged && !pod->privileged) {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "security_context.privileged: the pod is not privileged, so its "
                             "containers cannot be");
                return NULL;
        }
        if (privileged && pod->userns) {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "security_context.privileged: a container of a pod with its own "
                             "user namespace (userns_options mode POD) cannot be privileged");
                return NULL;
        }
        cleanup_json struct json_object *spec = json_object_new_object();
        json_object_object_add(spec, "ociVersion", json_object_new_string(OCI_VERSION));

        cleanup_json struct json_object *caps =
            rm_spec_capabilities(sc ? sc->capabilities : NULL, privileged, err);
        if (caps == NULL)
                return NULL;
        struct json_object *process = build_process(cfg, img, pod, rootfs, caps, err);
        if (process == NULL)
                return NULL;
        json_object_object_add(spec, "process", process);

        struct json_object *root = json_object_new_object();
        json_object_object_add(root, "path", json_object_new_string(rootfs));
        json_object_object_add(root, "readonly",
                               json_object_new_boolean(sc && sc->readonly_rootfs));
        json_object_object_add(spec, "root", root);

        const char *propagation = NULL;
        struct json_object *mounts = rm__spec_mounts(cfg, pod, privileged, &propagation, err);
        if (mounts == NULL)
                return NULL;
        json_object_object_add(spec, "mounts", mounts);

        struct json_object *linux = json_object_new_object();
        json_object_object_add(spec, "linux", linux);
        bool has_oom = false;
        int64_t oom = 0;
        struct json_object *resources = rm__spec_resources(
            cfg->linux ? cfg->linux->resources : NULL, host, &has_oom, &oom, err);
        if (resources == NULL)
                return NULL;
        json_object_object_add(linux, "resources", resources);
        if (has_oom)
                json_object_object_add(process, "oomScoreAdj", json_object_new_int64(oom));
        if (rm__spec_devices(cfg, privileged, linux, err) < 0 ||
            build_namespaces(linux, pod, host, err) < 0)
                return NULL;
        /* cgroupfs driver: <parent>/<id>, with the parent made absolute ("/" alone is the
         * root). */
        const char *parent =
            pod->cgroup_parent && *pod->cgroup_parent ? pod->cgroup_parent : "/remora";
        size_t plen = strlen(parent);
        while (plen > 0 && parent[plen - 1] == '/')
                plen--;
        cleanup_free char *cgpath =
            xasprintf("%s%.*s/%s", parent[0] == '/' ? "" : "/", (int)plen, parent, id);
        json_object_object_add(linux, "cgroupsPath", json_object_new_string(cgpath));
        if (propagation)
                json_object_object_add(linux, "rootfsPropagation",
                                       json_object_new_string(propagation));
        if (!privileged && (path_list(linux, "maskedPaths", "security_context.masked_paths",
                                      sc ? sc->masked_paths : NULL, sc ? sc->n_masked_paths : 0,
                                      default_masked, err) < 0 ||
                            path_list(linux, "readonlyPaths", "security_context.readonly_paths",
                                      sc ? sc->readonly_paths : NULL, sc ? sc->n_readonly_paths : 0,
                                      default_readonly, err) < 0))
                return NULL;
        if (add_seccomp(linux, sc, privileged, caps, err) < 0)
                return NULL;

        struct json_object *annotations = json_object_new_object();
        json_object_object_add(spec, "annotations", annotations);
        json_object_object_add(annotations, "io.kubernetes.cri.container-type",
                               json_object_new_string("container"));
        if (pod->pod_id)
                json_object_object_add(annotations, "io.kubernetes.cri.sandbox-id",
                                       json_object_new_string(pod->pod_id));
        if (cfg->metadata && cfg->metadata->name)
                json_object_object_add(annotations, "io.kubernetes.cri.container-name",
                                       json_object_new_string(cfg->metadata->name));
        note_lsm(annotations, sc);
        return steal_pointer(&spec);
}
