/* The infra process of a pod that shares one PID namespace: remora-pause as PID 1, run
 * by runc under remora-shim from a root filesystem Remora makes itself (the one static
 * binary), joining the pod's pinned network, IPC and UTS namespaces. No image is pulled. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "hooks.h"
#include "remora/cleanup.h"
#include "remora/crashpoint.h"
#include "remora/fsutil.h"
#include "remora/idmap.h"
#include "remora/ids.h"
#include "remora/log.h"
#include "remora/orphans.h"
#include "remora/xalloc.h"

/* Infra containers are named after their pod, with a prefix no CRI ID can have. */
static char *infra_id(const char *pod_id)
{
        return xasprintf("infra-%s", pod_id);
}

/* <state>/infra-rootfs: /pause (a copy of remora-pause) and the mount points runc needs. */
static int prepare_rootfs(struct rm_daemon *d, const char *rootfs, struct rm_error **err)
{
        cleanup_free char *pause = xasprintf("%s/pause", rootfs);
        if (access(pause, X_OK) == 0)
                return 0;
        const char *dirs[] = {"proc", "dev", "sys", "etc", "tmp"};
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
                cleanup_free char *p = xasprintf("%s/%s", rootfs, dirs[i]);
                if (rm_mkdir_p(p, 0755, err) < 0)
                        return -1;
        }
        size_t len = 0;
        cleanup_free char *bin = rm_read_file(d->helpers.pause, 16 << 20, &len, err);
        if (bin == NULL)
                return rm_error_wrap(err, "read remora-pause");
        /* A temporary file of this thread's own: two RunPodSandbox calls of PID-sharing pods
         * may install /pause at once (the first rename wins; both copies are the same). */
        cleanup_free char *tmp = xasprintf("%s.tmp-%lx", pause, (unsigned long)pthread_self());
        cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
        if (fd < 0 || rm_write_all(fd, bin, len) < 0 || fsync(fd) < 0 || rename(tmp, pause) < 0) {
                int e = errno;
                unlink(tmp);
                errno = e;
                return rm_error_sys(err, "install %s", pause);
        }
        return 0;
}

static int infra_start(void *ctx, const struct rm_infra_request *req, pid_t *pid,
                       struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        const struct rm_runtime *rt = rm_runtimes_select(d->runtimes, req->runtime_handler, err);
        if (rt == NULL || !rm_runtime_usable(rt, err))
                return -1;
        const struct rm_oci *oci = rt->oci;
        cleanup_free char *rootfs = xasprintf("%s/infra-rootfs", d->cfg->state);
        cleanup_free char *id = infra_id(req->pod_id);
        cleanup_free char *bundle = xasprintf("%s/infra/%s", d->cfg->state, req->pod_id);
        if (prepare_rootfs(d, rootfs, err) < 0 || rm_mkdir_p(bundle, 0700, err) < 0)
                return -1;

        /* The infra's own config: pause, no capabilities, read-only root, nobody. */
        static char *cmd[] = {"/pause"};
        static char *drop_all[] = {"ALL"};
        Runtime__V1__ContainerConfig cfg = RUNTIME__V1__CONTAINER_CONFIG__INIT;
        Runtime__V1__ContainerMetadata meta = RUNTIME__V1__CONTAINER_METADATA__INIT;
        Runtime__V1__LinuxContainerConfig lc = RUNTIME__V1__LINUX_CONTAINER_CONFIG__INIT;
        Runtime__V1__LinuxContainerSecurityContext sc =
            RUNTIME__V1__LINUX_CONTAINER_SECURITY_CONTEXT__INIT;
        Runtime__V1__Capability caps = RUNTIME__V1__CAPABILITY__INIT;
        Runtime__V1__Int64Value nobody = RUNTIME__V1__INT64_VALUE__INIT;
        Runtime__V1__LinuxContainerResources res = RUNTIME__V1__LINUX_CONTAINER_RESOURCES__INIT;
        meta.name = "infra";
        cfg.metadata = &meta;
        cfg.command = cmd;
        cfg.n_command = 1;
        caps.drop_capabilities = drop_all;
        caps.n_drop_capabilities = 1;
        nobody.value = 65534;
        sc.capabilities = &caps;
        sc.readonly_rootfs = true;
        sc.no_new_privs = true;
        sc.run_as_user = &nobody;
        res.oom_score_adj = -998; /* the pod's anchor goes last; clamped where refused */
        lc.security_context = &sc;
        lc.resources = &res;
        cfg.linux = &lc;
        struct rm_spec_image img = {0};
        struct rm_spec_pod pod = {
            .pod_id = req->pod_id,
            .hostname = req->hostname,
            .netns_path = req->netns_path,
            .ipcns_path = req->ipcns_path,
            .utsns_path = req->utsns_path,
            .pid_mode = RUNTIME__V1__NAMESPACE_MODE__CONTAINER,
            .cgroup_parent = req->cgroup_parent,
        };
        struct rm_spec_userns userns = {req->userns_path, req->uid_host, req->uid_len,
                                        req->gid_host, req->gid_len};
        if (req->userns_path) {
                /* runc resolves the infra rootfs from inside the pod's user namespace. */
                struct stat st;
                if (stat(d->cfg->state, &st) == 0 && (st.st_mode & 0011) != 0011)
                        chmod(d->cfg->state, (st.st_mode & 0777) | 0011);
                if (rm_idmap_reachable(d->cfg->state, err) < 0)
                        return rm_error_wrap(err, "infra rootfs");
                pod.userns = &userns;
        }
        cleanup_json struct json_object *spec =
            rm_spec_build(id, &cfg, &img, &pod, &d->host, rootfs, err);
        if (spec == NULL)
                return rm_error_wrap(err, "infra spec");
        cleanup_free char *config = xasprintf("%s/config.json", bundle);
        if (json_object_to_file_ext(config, spec, JSON_C_TO_STRING_PLAIN) < 0)
                return rm_error_set(err, RM_INTERNAL, "write %s", config);

        cleanup_free char *pid_file = xasprintf("%s/init.pid", bundle);
        cleanup_free char *shim_log = xasprintf("%s/shim.log", bundle);
        cleanup_free char *exits = xasprintf("%s/%s", d->exit_dir, id);
        struct rm_shim_request sr = {
            .shim = d->helpers.shim,
            .oci = oci,
            .id = id,
            .bundle = bundle,
            .pid_file = pid_file,
            .exit_file = exits,
            .shim_log = shim_log,
        };
        struct rm_shim_result r;
        cleanup_error struct rm_error *ignored = NULL;
        if (rm_shim_spawn(&sr, &r, err) < 0) {
                oci->ops->delete (oci, id, true, &ignored);
                return -1;
        }
        rm_crashpoint("runpodsandbox.infracreated");
        if (oci->ops->start(oci, id, err) < 0) {
                oci->ops->delete (oci, id, true, &ignored);
                return -1;
        }
        *pid = r.container_pid;
        return 0;
}

static int infra_stop(void *ctx, const char *pod_id, struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        cleanup_free char *id = infra_id(pod_id);
        const struct rm_oci *oci = rm_runtimes_owner(d->runtimes, id)->oci;
        if (oci->ops->kill(oci, id, SIGKILL, true, err) < 0) {
                if ((*err)->code != RM_NOT_FOUND)
                        return -1;
                rm_error_free(*err);
                *err = NULL;
        }
        return 0;
}

/* The infra's cgroup, from its bundle's config (before the bundle goes). */
static char *infra_cgroup(const char *bundle)
{
        cleanup_free char *config = xasprintf("%s/config.json", bundle);
        cleanup_json struct json_object *spec = json_object_from_file(config);
        struct json_object *linux = NULL, *path = NULL;
        if (spec && json_object_object_get_ex(spec, "linux", &linux) &&
            json_object_object_get_ex(linux, "cgroupsPath", &path))
                return xstrdup(json_object_get_string(path));
        return NULL;
}

/* Everything of the infra: its monitor first (so no exit file appears after the delete),
 * runc's state, the exit file, the bundle, and the cgroup when runc's delete left it. */
static int infra_remove(void *ctx, const char *pod_id, struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        cleanup_free char *id = infra_id(pod_id);
        cleanup_free char *bundle = xasprintf("%s/infra/%s", d->cfg->state, pod_id);
        /* Without a bundle (lost with <state>), the cgroup of a pod without a parent. */
        cleanup_free char *cgroup = infra_cgroup(bundle);
        if (cgroup == NULL)
                cgroup = xasprintf("/remora/%s", id);
        rm_shims_kill(bundle);
        const struct rm_oci *oci = rm_runtimes_owner(d->runtimes, id)->oci;
        if (oci->ops->delete (oci, id, true, err) < 0)
                return -1;
        cleanup_free char *exits = xasprintf("%s/%s", d->exit_dir, id);
        rm_exit_file_remove(exits);
        if (cgroup)
                rm_cgroup_remove(&d->cgroups, cgroup);
        return rm_remove_tree(bundle, err);
}

static bool infra_alive(void *ctx, const char *pod_id, pid_t pid)
{
        struct rm_daemon *d = ctx;
        cleanup_free char *id = infra_id(pod_id);
        cleanup_free char *state =
            xasprintf("%s/%s/state.json", rm_runtimes_owner(d->runtimes, id)->root, id);
        return pid > 0 && access(state, F_OK) == 0 && kill(pid, 0) == 0;
}

/* Infra containers (runc state, bundle) of pods the sandbox manager does not know: left by
 * a RunPodSandbox or RemovePodSandbox a crash cut off. */
void rm__infra_reconcile(struct rm_daemon *d)
{
        cleanup_free char *infra_dir = xasprintf("%s/infra", d->cfg->state);
        /* The bundles (i == 0), the exit files, then every handler's runc root. */
        size_t n = 2;
        while (d->runtime_roots[n - 2])
                n++;
        for (size_t i = 0; i < n; i++) {
                const char *path = i == 0   ? infra_dir
                                   : i == 1 ? d->exit_dir
                                            : d->runtime_roots[i - 2];
                cleanup_dir DIR *dir = opendir(path);
                struct dirent *e;
                while (dir && (e = readdir(dir))) {
                        char pod[RM_ID_LEN + 1];
                        const char *name = e->d_name;
                        if (i > 0 && strncmp(name, "infra-", 6) != 0)
                                continue;
                        /* "infra-<pod>", and in the exit directory also "infra-<pod>.tmp" */
                        snprintf(pod, sizeof(pod), "%.*s", RM_ID_LEN, i > 0 ? name + 6 : name);
                        if (!rm_id_valid(pod))
                                continue;
                        struct rm_arena *a = rm_arena_new();
                        struct rm_sandbox_view v;
                        cleanup_error struct rm_error *nf = NULL;
                        bool known = rm_sandbox_view(d->sandboxes, pod, a, &v, &nf) == 0 &&
                                     strcmp(v.id, pod) == 0;
                        rm_arena_free(a);
                        if (known)
                                continue;
                        cleanup_error struct rm_error *e2 = NULL;
                        if (infra_remove(d, pod, &e2) < 0)
                                rm_log_warn("infra process of pod %s, which no record owns: %s",
                                            pod, e2->msg);
                        else
                                rm_log_info("removed the infra process of pod %s, which no "
                                            "record owns",
                                            pod);
                }
        }
}

void rm__infra_hooks(struct rm_daemon *d, struct rm_sandbox_hooks *h)
{
        (void)d; /* the hooks' ctx is the daemon, already set by rm__sandbox_hooks */
        h->infra_start = infra_start;
        h->infra_stop = infra_stop;
        h->infra_remove = infra_remove;
        h->infra_alive = infra_alive;
}
