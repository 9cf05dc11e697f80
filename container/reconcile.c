/* Start-up of the container manager: the records against what a crash (or a reboot) left.
 * Each record is matched with the runtime's state, its monitor and its exit file (by
 * pid); a StartContainer cut off is undone; what no record owns (runc state, bundles,
 * writable layers, exit files, monitors) is removed; a damaged record becomes a
 * recovered container whose process is left running. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "manager_internal.h"
#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/log.h"
#include "remora/orphans.h"
#include "remora/xalloc.h"

/* Whether the runtime has state for id. Without a runtime root (unit tests' fakes) it is
 * assumed to. */
static bool runtime_has(const struct rm_container_manager *mgr, const char *id)
{
        if (mgr->ops.runtime_roots == NULL)
                return true;
        for (const char *const *root = mgr->ops.runtime_roots; *root; root++) {
                cleanup_free char *path = xasprintf("%s/%s/state.json", *root, id);
                if (access(path, F_OK) == 0)
                        return true;
        }
        return false;
}

static bool pid_alive(pid_t pid)
{
        return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

static const char *annotation(struct json_object *spec, const char *key)
{
        struct json_object *a = NULL, *v = NULL;
        if (json_object_object_get_ex(spec, "annotations", &a) &&
            json_object_object_get_ex(a, key, &v))
                return json_object_get_string(v);
        return NULL;
}

/* A container whose record is damaged, rebuilt from its bundle (config.json, init.pid):
 * listed, with its process left running, so the operator can stop and remove it by ID. */
static struct ctr *recovered(struct rm_container_manager *mgr, const char *id)
{
        cleanup_free char *bundle = xasprintf("%s/%s", mgr->bundles, id);
        cleanup_free char *config = xasprintf("%s/config.json", bundle);
        cleanup_free char *pidfile = xasprintf("%s/init.pid", bundle);
        cleanup_json struct json_object *spec = json_object_from_file(config);
        cleanup_free char *pidtext = rm_read_file(pidfile, 64, NULL, NULL);
        struct ctr *c = xzalloc(sizeof(*c));
        pthread_mutex_init(&c->op, NULL);
        pthread_mutex_init(&c->save_lock, NULL);
        memcpy(c->id, id, RM_ID_LEN + 1);
        const char *pod = spec ? annotation(spec, "io.kubernetes.cri.sandbox-id") : NULL;
        const char *name = spec ? annotation(spec, "io.kubernetes.cri.container-name") : NULL;
        char fallback[64];
        snprintf(fallback, sizeof(fallback), "recovered-%.12s", id);
        c->pod_id = xstrdup(pod ? pod : "");
        c->name = xstrdup(name && *name ? name : fallback);
        c->image = xstrdup("");
        c->image_id = xstrdup("");
        c->image_ref = xstrdup("");
        c->log_path = xstrdup("");
        c->runtime_handler = xstrdup("");
        c->labels = json_object_new_object();
        json_object_object_add(c->labels, "io.remora.recovered",
                               json_object_new_string("damaged-record"));
        c->annotations = json_object_new_object();
        c->mounts = json_object_new_array();
        c->resources = json_object_new_object();
        c->message = xstrdup("its record was damaged and rebuilt at start-up");
        c->created_at = rm__now_ns();
        struct json_object *linux = NULL, *cg = NULL;
        if (spec && json_object_object_get_ex(spec, "linux", &linux) &&
            json_object_object_get_ex(linux, "cgroupsPath", &cg))
                c->cgroup_path = xstrdup(json_object_get_string(cg));
        else
                c->cgroup_path = xstrdup("");
        c->pid = pidtext ? (pid_t)atoi(pidtext) : 0;
        if (c->pid > 0 && runtime_has(mgr, id)) {
                /* What runs stays running; the checks below find an exit if there was one. */
                c->state = RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
                c->started_at = c->created_at;
                c->reason = xstrdup("");
        } else {
                c->state = RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED;
                c->exit_code = 255;
                c->finished_at = c->created_at;
                c->reason = xstrdup("Unknown");
        }
        c->recovered = true;
        return c;
}

int rm__ctr_load_one(const char *id, struct json_object *doc, const struct rm_error *bad,
                     void *data, struct rm_error **err)
{
        (void)err;
        struct rm_container_manager *mgr = data;
        if (!rm_id_valid(id)) {
                rm_log_warn("container record %s: not a container ID; leaving it", id);
                return 0;
        }
        cleanup_error struct rm_error *why = NULL;
        struct ctr *c = doc ? rm__ctr_from_json(id, doc, &why) : NULL;
        if (c == NULL) {
                if (doc)
                        rm_store_set_aside(mgr->store, CTR_KIND, id, why->msg);
                c = recovered(mgr, id);
                mgr->repairs++;
                rm_log_warn("container %s: its record was damaged (%s); rebuilt as %s (%s), its "
                            "process left as it was",
                            id,
                            doc   ? why->msg
                            : bad ? bad->msg
                                  : "unreadable",
                            c->name,
                            c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING ? "running"
                                                                                        : "exited");
        }
        pthread_mutex_lock(&mgr->lock);
        rm__index_add(mgr, c);
        pthread_mutex_unlock(&mgr->lock);
        return 0;
}

static bool indexed(const struct rm_container_manager *mgr, const char *id)
{
        for (size_t i = 0; i < mgr->n; i++)
                if (strcmp(mgr->ctrs[i]->id, id) == 0)
                        return true;
        return false;
}

/* Kill the container's monitor (so no exit file appears after), then delete it from the
 * runtime, --force: its processes go too. The exit file goes with the delete op. */
static void runtime_undo(struct rm_container_manager *mgr, const char *id)
{
        cleanup_free char *bundle = xasprintf("%s/%s", mgr->bundles, id);
        rm_shims_kill(bundle);
        cleanup_error struct rm_error *e = NULL;
        if (mgr->ops.delete(mgr->ops.ctx, id, true, &e) < 0 && e->code != RM_NOT_FOUND)
                rm_log_warn("container %s: deleting its runtime state: %s", id, e->msg);
}

/* Directories with no record: a create interrupted by a crash, or a remove whose record
 * went first. */
static void sweep_dirs(struct rm_container_manager *mgr, const char *dir, bool bundles)
{
        cleanup_dir DIR *d = opendir(dir);
        struct dirent *e;
        while (d && (e = readdir(d))) {
                if (!rm_id_valid(e->d_name) || indexed(mgr, e->d_name))
                        continue;
                cleanup_free char *path = xasprintf("%s/%s", dir, e->d_name);
                if (bundles) {
                        runtime_undo(mgr, e->d_name);
                        cleanup_free char *rootfs = xasprintf("%s/rootfs", path);
                        umount2(rootfs, MNT_DETACH); /* may not be mounted: fine */
                        cleanup_error struct rm_error *vol_err = NULL;
                        if (rm__imgvol_unmount_all(path, &vol_err) < 0)
                                rm_log_warn("leftover of container %s: %s", e->d_name,
                                            vol_err->msg);
                }
                /* Idmapped mounts under <path>/idmap: bind sources in a bundle, image
                 * layers in a container directory (a pod with its own user namespace). */
                rm__ctr_userns_release(path);
                cleanup_error struct rm_error *why = NULL;
                if (rm_remove_tree(path, &why) < 0)
                        rm_log_warn("leftover of container %s: %s", e->d_name, why->msg);
                else
                        mgr->repairs++;
                rm_log_info("removed %s, which no container record owns", path);
        }
}

/* runc state and exit files with no record: a RemoveContainer whose deferred runc delete
 * a crash cut off. Infra containers ("infra-<pod>") are the sandbox side's. */
static void sweep_runtime(struct rm_container_manager *mgr)
{
        /* Every handler's root (i > 0), then the exit files (i == 0). */
        size_t n_roots = 0;
        while (mgr->ops.runtime_roots && mgr->ops.runtime_roots[n_roots])
                n_roots++;
        for (size_t i = 0; i <= n_roots; i++) {
                const char *dir = i == 0 ? mgr->ops.exit_dir : mgr->ops.runtime_roots[i - 1];
                cleanup_dir DIR *d = dir ? opendir(dir) : NULL;
                struct dirent *e;
                while (d && (e = readdir(d))) {
                        /* an exit file's temp of a monitor killed while writing it */
                        char id[RM_ID_LEN + 1] = "";
                        if (i == 0 && strlen(e->d_name) == RM_ID_LEN + 4 &&
                            strcmp(e->d_name + RM_ID_LEN, ".tmp") == 0)
                                snprintf(id, sizeof(id), "%.*s", RM_ID_LEN, e->d_name);
                        const char *name = *id ? id : e->d_name;
                        if (!rm_id_valid(name) || indexed(mgr, name))
                                continue;
                        if (i > 0) {
                                runtime_undo(mgr, e->d_name);
                                mgr->repairs++;
                                rm_log_info("deleted container %s from the runtime: no record "
                                            "owns it (a removal cut off by a crash)",
                                            e->d_name);
                        } else if (unlinkat(dirfd(d), e->d_name, 0) == 0) {
                                mgr->repairs++;
                                rm_log_info("removed exit file %s/%s, which no record owns", dir,
                                            e->d_name);
                        }
                }
        }
}

static void set_exited(struct rm_container_manager *mgr, struct ctr *c, int code,
                       const char *reason, const char *message)
{
        pthread_mutex_lock(&mgr->lock);
        c->state = RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED;
        c->exit_code = code;
        c->finished_at = rm__now_ns();
        c->start_pending = false;
        rm__replace_str(&c->reason, reason);
        rm__replace_str(&c->message, message);
        pthread_mutex_unlock(&mgr->lock);
        mgr->repairs++;
        rm_log_warn("container %s: %s: %s", c->id, reason, message);
}

/* Queue the runtime delete of an exited container still in the runtime. */
static void reap_later(struct rm_container_manager *mgr, struct ctr *c)
{
        mgr->reap = xrealloc(mgr->reap, (mgr->n_reap + 1) * sizeof(char *));
        mgr->reap[mgr->n_reap++] = xstrdup(c->id);
}

/* One record against the runtime; returns true when the record changed. */
static bool reconcile_one(struct rm_container_manager *mgr, struct ctr *c)
{
        bool changed = c->recovered;
        if (c->start_pending) {
                /* A StartContainer that never answered is undone, never half-kept: runc
                 * create may have run, and the process may even have started. */
                runtime_undo(mgr, c->id);
                set_exited(mgr, c, 128, "StartError",
                           "remorad stopped while starting the container; the start was "
                           "undone when it came back");
                c->pid = 0;
                c->runtime_deleted = true;
                return true;
        }
        bool live = c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING ||
                    (c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED && c->pid);
        if (live && rm__ctr_refresh_exit(mgr, c))
                return false; /* recorded and saved (exit file matched by pid) */
        if (live && !runtime_has(mgr, c->id)) {
                set_exited(mgr, c, 255, "NodeRestarted",
                           "the node restarted (or remorad's state directory was lost) while "
                           "the container ran; neither its monitor nor its exit status "
                           "survived");
                c->runtime_deleted = true;
                return true;
        }
        if (live && mgr->ops.runtime_roots && !pid_alive(c->pid)) {
                cleanup_free char *bundle = xasprintf("%s/%s", mgr->bundles, c->id);
                if (rm_shim_alive(bundle) || rm__ctr_refresh_exit(mgr, c))
                        return changed; /* its monitor is about to record the exit */
                set_exited(mgr, c, 255, "Unknown",
                           "the container's process and its monitor are gone and left no "
                           "exit status");
                reap_later(mgr, c);
                return true;
        }
        if (c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED && c->pid &&
            !c->runtime_deleted && mgr->ops.runtime_roots) {
                if (runtime_has(mgr, c->id))
                        reap_later(mgr, c); /* the watcher's delete was cut off */
                else
                        c->runtime_deleted = true;
        }
        return changed;
}

void rm__ctr_reconcile(struct rm_container_manager *mgr)
{
        rm__trash_empty(mgr); /* removes cut off after their directories moved */
        sweep_dirs(mgr, mgr->bundles, true);
        sweep_dirs(mgr, mgr->dir, false);
        sweep_runtime(mgr);
        size_t was_live = 0, exited = 0;
        for (size_t i = 0; i < mgr->n; i++) {
                struct ctr *c = mgr->ctrs[i];
                bool live = c->state != RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED;
                was_live += live;
                if (reconcile_one(mgr, c)) {
                        cleanup_error struct rm_error *e = NULL;
                        if (rm__ctr_save(mgr, c, &e) < 0)
                                rm_log_warn("container %s: %s", c->id, e->msg);
                }
                c->recovered = false;
                exited += live && c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED;
        }
        if (mgr->n)
                rm_log_info("loaded %zu containers; %zu of the %zu not exited exited while "
                            "remorad was not running",
                            mgr->n, exited, was_live);
}

size_t rm_containers_repairs(struct rm_container_manager *mgr)
{
        return mgr->repairs;
}
