/* The container manager's reach into images and the OCI runtime: its ops, backed by the
 * image service, runc (rm_runc_ops) and remora-shim. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "hooks.h"
#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/log.h"
#include "remora/orphans.h"
#include "remora/xalloc.h"

static int image_lookup(void *ctx, const char *ref, struct rm_arena *a, struct rm_ctr_image *out,
                        struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        struct rm_image_info info;
        if (rm_image_lookup(d->images, ref, a, &info, err) < 0)
                return -1;
        memset(out, 0, sizeof(*out));
        out->id = info.id;
        out->ref = info.ref;
        out->config.entrypoint = info.entrypoint;
        out->config.n_entrypoint = info.n_entrypoint;
        out->config.cmd = info.cmd;
        out->config.n_cmd = info.n_cmd;
        out->config.env = info.env;
        out->config.n_env = info.n_env;
        out->config.working_dir = info.working_dir;
        out->config.user = info.user;
        out->config.stop_signal = info.stop_signal;
        out->volumes = info.volumes;
        out->n_volumes = info.n_volumes;
        return 0;
}

static int image_layers(void *ctx, const char *image_id, struct rm_arena *a, char ***dirs,
                        size_t *n, struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        return rm_image_layer_dirs(d->images, image_id, a, dirs, n, err);
}

static int rootfs_mount(void *ctx, const char *image_id, const char *dir, const char *target,
                        const struct rm_spec_userns *userns, struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        if (userns == NULL)
                return rm_image_mount(d->images, image_id, dir, target, NULL, err);
        if (d->userns_unavailable)
                return rm_error_set(err, RM_FAILED_PRECONDITION,
                                    "this host cannot run pods in their own user namespace: %s",
                                    d->userns_unavailable);
        cleanup_close int ns = open(userns->path, O_RDONLY | O_CLOEXEC);
        if (ns < 0)
                return rm_error_sys(err, "open the pod's user namespace %s", userns->path);
        struct rm_image_idmap idmap = {ns, userns->uid_host, userns->gid_host};
        return rm_image_mount(d->images, image_id, dir, target, &idmap, err);
}

static int rootfs_unmount(void *ctx, const char *image_id, const char *dir, const char *target,
                          struct rm_error **err)
{
        (void)image_id;
        struct rm_daemon *d = ctx;
        return rm_image_unmount(d->images, dir, target, err);
}

bool rm__image_in_use(void *ctx, const char *image_id)
{
        struct rm_daemon *d = ctx;
        if (d->containers == NULL)
                return true; /* not known yet: keep everything */
        return rm_containers_use_image(d->containers, image_id);
}

static char *exit_file(const struct rm_daemon *d, const char *id)
{
        return xasprintf("%s/%s", d->exit_dir, id);
}

/* The driver of the handler whose root holds container id's runtime state. */
static const struct rm_oci *oci_of(const struct rm_daemon *d, const char *id)
{
        return rm_runtimes_owner(d->runtimes, id)->oci;
}

static int create(void *ctx, const struct rm_ctr_create *c, pid_t *pid, struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        /* The pod's handler, recorded in the container's record at CreateContainer. */
        const struct rm_runtime *rt = rm_runtimes_select(d->runtimes, c->runtime_handler, err);
        if (rt == NULL)
                return rm_error_wrap(err, "container %s", c->id);
        if (!rm_runtime_usable(rt, err))
                return rm_error_wrap(err, "runtime handler %s", rt->handler);
        const struct rm_oci *oci = rt->oci;
        cleanup_free char *pid_file = xasprintf("%s/init.pid", c->bundle);
        cleanup_free char *shim_log = xasprintf("%s/shim.log", c->bundle);
        cleanup_free char *exits = exit_file(d, c->id);
        struct rm_shim_request req = {
            .shim = d->helpers.shim,
            .oci = oci,
            .id = c->id,
            .bundle = c->bundle,
            .pid_file = pid_file,
            .exit_file = exits,
            .log_path = c->log_path,
            .shim_log = shim_log,
            .tty = c->tty,
            .stdin = c->stdin,
            .stdin_once = c->stdin_once,
        };
        struct rm_shim_result res;
        if (rm_shim_spawn(&req, &res, err) < 0) {
                cleanup_error struct rm_error *ignored = NULL;
                oci->ops->delete (oci, c->id, true, &ignored);
                return -1;
        }
        *pid = res.container_pid;
        return 0;
}

static int start(void *ctx, const char *id, struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        const struct rm_oci *oci = oci_of(d, id);
        return oci->ops->start(oci, id, err);
}

static int kill_ctr(void *ctx, const char *id, int sig, struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        /* SIGKILL goes to every process of the container; other signals to its init only,
         * as a container's own stop logic expects. */
        const struct rm_oci *oci = oci_of(d, id);
        int rc = oci->ops->kill(oci, id, sig, sig == SIGKILL, err);
        if (rc < 0 && (*err)->code == RM_NOT_FOUND) {
                rm_error_free(*err);
                *err = NULL;
                return 0; /* already gone */
        }
        return rc;
}

static int delete_ctr(void *ctx, const char *id, bool force, struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        const struct rm_oci *oci = oci_of(d, id);
        if (oci->ops->delete (oci, id, force, err) < 0)
                return -1;
        cleanup_free char *exits = exit_file(d, id);
        rm_exit_file_remove(exits);
        return 0;
}

static int exit_status(void *ctx, const char *id, pid_t pid, int *code, int64_t *finished_ns,
                       struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        cleanup_free char *exits = exit_file(d, id);
        struct rm_exit_status st;
        int rc = rm_exit_file_read(exits, &st, err);
        if (rc == 1 && pid > 0 && st.pid != pid) {
                rm_log_warn("container %s: exit file %s is for pid %d, not %d; ignoring it", id,
                            exits, (int)st.pid, (int)pid);
                return 0;
        }
        if (rc == 1) {
                *code = st.exit_code;
                *finished_ns = st.finished_ns;
        }
        return rc;
}

/* <state>/exec: ExecSync's sync-* and the streaming server's stream-* scratch directories. */
static char *exec_scratch_root(const struct rm_daemon *d)
{
        return xasprintf("%s/exec", d->cfg->state);
}

/* Removes the entries of dir whose names start with prefix ("" for all); the count. */
static size_t remove_entries(const char *dir, const char *prefix)
{
        cleanup_dir DIR *d = opendir(dir);
        size_t n = 0;
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
                    strncmp(e->d_name, prefix, strlen(prefix)) != 0)
                        continue;
                cleanup_free char *path = xasprintf("%s/%s", dir, e->d_name);
                cleanup_error struct rm_error *err = NULL;
                if (rm_remove_tree(path, &err) < 0)
                        rm_log_warn("exec scratch directory %s: %s", path, err->msg);
                else
                        n++;
        }
        return n;
}

/* Start-up: the scratch directories of execs a previous run was killed in the middle of
 * (their processes are gone: the reaper kills them when the daemon's end of its pipe
 * closes), and the <state>/exec-* of versions before <state>/exec. Nothing runs an exec
 * yet. */
static void exec_scratch_reset(const struct rm_daemon *d)
{
        cleanup_free char *root = exec_scratch_root(d);
        size_t n = remove_entries(root, "") + remove_entries(d->cfg->state, "exec-");
        if (n > 0)
                rm_log_info("removed %zu exec scratch directories left by a previous run", n);
        cleanup_error struct rm_error *err = NULL;
        if (rm_mkdir_p(root, 0700, &err) < 0)
                rm_log_warn("exec scratch directory: %s", err->msg);
}

static int exec_sync(void *ctx, const char *id, char *const *argv, int64_t timeout_s,
                     const struct rm_cancel *cancel, struct rm_ctr_exec_result *res,
                     struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        struct rm_oci_exec_result r = {0};
        cleanup_free char *scratch = exec_scratch_root(d);
        /* The CRI's 0 means no timeout; a day stands in for that. */
        int ms = timeout_s > 0 ? (int)(timeout_s > 86400 ? 86400000 : timeout_s * 1000) : 86400000;
        struct rm_oci_exec_opts o = {.argv = (const char *const *)argv,
                                     .timeout_ms = ms,
                                     .cancel = cancel,
                                     .scratch_root = scratch,
                                     .reaper = d->helpers.shim};
        const struct rm_oci *oci = oci_of(d, id);
        if (oci->ops->exec(oci, id, &o, &r, err) < 0) {
                if ((*err)->code == RM_DEADLINE_EXCEEDED)
                        rm_error_wrap(err, "command timed out after %llds", (long long)timeout_s);
                return -1;
        }
        if (r.out_truncated || r.err_truncated)
                rm_log_info("exec in %s: output past %u bytes per stream was dropped", id,
                            RM_OCI_EXEC_OUTPUT_MAX);
        res->exit_code = r.exit_code;
        res->out = (uint8_t *)r.out;
        res->out_len = r.out_len;
        res->err = (uint8_t *)r.errout;
        res->err_len = r.err_len;
        return 0;
}

static int update(void *ctx, const char *id, const char *resources_json, struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        const struct rm_oci *oci = oci_of(d, id);
        return oci->ops->update(oci, id, resources_json, err);
}

static bool oom_killed(void *ctx, const char *cgroup_path)
{
        struct rm_daemon *d = ctx;
        return rm_cgroup_oom_killed(&d->cgroups, cgroup_path);
}

static void cgroup_remove(void *ctx, const char *cgroup_path)
{
        struct rm_daemon *d = ctx;
        rm_cgroup_remove(&d->cgroups, cgroup_path);
}

/* The monitor answers within a second unless it is wedged. */
#define SHIM_COMMAND_TIMEOUT_MS 5000

static int reopen_log(void *ctx, const char *id, const char *bundle, struct rm_error **err)
{
        (void)ctx;
        (void)id;
        return rm_shim_command(bundle, "reopen-log", SHIM_COMMAND_TIMEOUT_MS, err);
}

void rm__container_ops(struct rm_daemon *d, struct rm_container_ops *ops)
{
        memset(ops, 0, sizeof(*ops));
        exec_scratch_reset(d);
        rm__container_ops_common(d, ops);
        ops->image_lookup = image_lookup;
        ops->rootfs_mount = rootfs_mount;
        ops->rootfs_unmount = rootfs_unmount;
        ops->image_layers = image_layers;
        ops->create = create;
        ops->start = start;
        ops->kill = kill_ctr;
        ops->delete = delete_ctr;
        ops->exit_status = exit_status;
        ops->exec_sync = exec_sync;
        ops->update = update;
        ops->oom_killed = oom_killed;
        ops->cgroup_remove = cgroup_remove;
        ops->reopen_log = reopen_log;
        ops->exit_dir = d->exit_dir;
        ops->runtime_roots = (const char *const *)d->runtime_roots;
}
