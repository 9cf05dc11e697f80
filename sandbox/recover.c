/* Start-up of the sandbox manager: load the pod records, finish or undo what a crash cut
 * off, and remove what no record owns. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "remora/answers.h"
#include "remora/cleanup.h"
#include "remora/confsect.h"
#include "remora/fsutil.h"
#include "remora/log.h"
#include "remora/xalloc.h"
#include "pinns.h"
#include "sandbox_internal.h"

/* ---- open: load and repair ---- */

/* A pod record that could not be read (set aside by the store): what it described is
 * rebuilt from what exists, as a pod the operator can see and remove by ID, with its
 * containers left running. Its metadata is lost; the pins found are its parts. */
static struct json_object *recovered_doc(struct rm_sandbox_manager *mgr, const char *id)
{
        struct json_object *doc = json_object_new_object();
        struct json_object *labels = json_object_new_object();
        json_object_object_add(labels, "io.remora.recovered",
                               json_object_new_string("damaged-record"));
        char name[64];
        snprintf(name, sizeof(name), "recovered-%.12s", id);
        json_object_object_add(doc, "name", json_object_new_string(name));
        json_object_object_add(doc, "namespace", json_object_new_string("remora-recovered"));
        json_object_object_add(doc, "uid", json_object_new_string(id));
        json_object_object_add(doc, "attempt", json_object_new_int64(0));
        json_object_object_add(doc, "labels", labels);
        json_object_object_add(doc, "annotations", json_object_new_object());
        json_object_object_add(doc, "infra", json_object_new_boolean(true));
        json_object_object_add(doc, "net", json_object_new_boolean(true));
        bool any = false;
        for (int k = 0; k < N_PINS; k++) {
                cleanup_free char *pin = rm__pin_path(mgr, k, id);
                bool have = rm__pinned(pin);
                any |= have;
                json_object_object_add(doc, rm__pin_kinds[k],
                                       json_object_new_string(have ? pin : ""));
        }
        cleanup_free char *shm = xasprintf("%s/%s/shm", mgr->state, id);
        json_object_object_add(doc, "shm", json_object_new_string(shm));
        json_object_object_add(
            doc, "state",
            json_object_new_int(any ? RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY
                                    : RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_NOTREADY));
        return doc;
}

static int load_one(const char *id, struct json_object *doc, const struct rm_error *bad, void *data,
                    struct rm_error **err)
{
        (void)err;
        struct rm_sandbox_manager *mgr = data;
        if (!rm_id_valid(id)) {
                rm_log_warn("pod sandbox record %s: not a pod ID; leaving it", id);
                return 0;
        }
        struct pod *p = xzalloc(sizeof(*p));
        pthread_mutex_init(&p->op, NULL);
        memcpy(p->id, id, RM_ID_LEN + 1);
        if (doc == NULL) {
                p->doc = recovered_doc(mgr, id);
                json_object_object_add(p->doc, "recovered", json_object_new_boolean(true));
                mgr->repairs++;
                rm_log_warn("pod sandbox %s: its record was damaged (%s); listed as %s so it can "
                            "be removed by ID",
                            id, bad ? bad->msg : "unreadable", s_get(p, "name"));
        } else {
                json_object_deep_copy(doc, &p->doc, NULL);
        }
        p->state = (Runtime__V1__PodSandboxState)i_get(p, "state");
        mgr->pods = xrealloc(mgr->pods, sizeof(*mgr->pods) * (mgr->n + 1));
        mgr->pods[mgr->n++] = p;
        return 0;
}

/* True when dir is a mount point (its device differs from its parent's). */
static bool mounted_at(const char *dir)
{
        cleanup_free char *parent = xasprintf("%s/..", dir);
        struct stat a, b;
        return stat(dir, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

/* What a READY pod is missing, or NULL when all its parts exist. */
static const char *missing_part(struct rm_sandbox_manager *mgr, struct pod *p)
{
        static const char *const pins[N_PINS] = {"netns pin", "ipcns pin", "utsns pin",
                                                 "userns pin"};
        for (int k = 0; k < N_PINS; k++) {
                const char *pin = s_get(p, rm__pin_kinds[k]);
                if (*pin && !rm__pinned(pin))
                        return pins[k];
        }
        const char *shm = s_get(p, "shm");
        if (*shm && strcmp(shm, "/dev/shm") != 0 && !mounted_at(shm))
                return "shm";
        if (*s_get(p, "netns") && mgr->hooks.net_present &&
            !mgr->hooks.net_present(mgr->hooks.ctx, p->id))
                return "network";
        pid_t infra = (pid_t)i_get(p, "infra_pid");
        if (infra > 0 && mgr->hooks.infra_alive &&
            !mgr->hooks.infra_alive(mgr->hooks.ctx, p->id, infra))
                return "infra process";
        return NULL;
}

/* Undo a RunPodSandbox that never finished, from its intent record. */
static void undo_run(struct rm_sandbox_manager *mgr, struct pod *p)
{
        struct undo u = {.record = true,
                         .dirs = true,
                         .shm = strcmp(s_get(p, "shm"), "/dev/shm") != 0 && *s_get(p, "shm"),
                         .net = i_get(p, "net") != 0,
                         .infra = i_get(p, "infra") != 0,
                         .cgroup = rm__pod_cgroup_owned(p)};
        for (int k = 0; k < N_PINS; k++)
                u.pins[k] = *s_get(p, rm__pin_kinds[k]) != '\0';
        rm__pod_rollback(mgr, p, &u);
        mgr->repairs++;
        rm_log_info("pod sandbox %s: undid its RunPodSandbox, cut off by a crash", p->id);
}

/* Finish or undo what a crash cut off, pod by pod (see rm_sandbox_manager_open). */
static void repair(struct rm_sandbox_manager *mgr)
{
        for (size_t i = 0; i < mgr->n;) {
                struct pod *p = mgr->pods[i];
                if (i_get(p, "run_pending")) {
                        undo_run(mgr, p);
                        mgr->pods[i] = mgr->pods[--mgr->n];
                        rm__pod_free(p);
                        continue;
                }
                i++;
                cleanup_error struct rm_error *e = NULL;
                if (p->state == RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY) {
                        const char *gone = missing_part(mgr, p);
                        if (gone == NULL) {
                                if (i_get(p, "recovered") && rm__pod_save(mgr, p, &e) < 0)
                                        rm_log_warn("pod sandbox %s: %s", p->id, e->msg);
                                continue;
                        }
                        mgr->repairs++;
                        rm_log_warn("pod sandbox %s lost its %s; marking it NOTREADY", p->id, gone);
                        p->state = RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_NOTREADY;
                } else if (!i_get(p, "recovered")) {
                        /* A stop cut off after NOTREADY was recorded: the infra process may
                         * still run; network, pins and shm go with the sweeps below. */
                        pid_t infra = (pid_t)i_get(p, "infra_pid");
                        if (!(infra > 0 && mgr->hooks.infra_alive &&
                              mgr->hooks.infra_alive(mgr->hooks.ctx, p->id, infra)))
                                continue;
                }
                if (rm__pod_save(mgr, p, &e) < 0)
                        rm_log_warn("pod sandbox %s: %s", p->id, e->msg);
                cleanup_error struct rm_error *te = NULL;
                if (rm__pod_teardown(mgr, p, &te) < 0)
                        rm_log_warn("pod sandbox %s: finishing its stop: %s", p->id, te->msg);
        }
}

static bool known(const struct rm_sandbox_manager *mgr, const char *id, bool need_ready)
{
        for (size_t i = 0; i < mgr->n; i++) {
                if (strcmp(mgr->pods[i]->id, id) == 0)
                        return !need_ready ||
                               mgr->pods[i]->state == RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY;
        }
        return false;
}

/* Pins, shm mounts and directories that no pod owns: left by a crash mid-run. */
static void sweep(struct rm_sandbox_manager *mgr)
{
        for (int k = 0; k < N_PINS; k++) {
                cleanup_dir DIR *d = opendir(mgr->pins[k]);
                struct dirent *e;
                while (d && (e = readdir(d))) {
                        if (e->d_name[0] == '.' || known(mgr, e->d_name, true))
                                continue;
                        cleanup_free char *path = xasprintf("%s/%s", mgr->pins[k], e->d_name);
                        rm_pinns_unpin(path);
                        mgr->repairs++;
                        rm_log_info("removed %s pin %s, which no ready pod owns", rm__pin_kinds[k],
                                    path);
                }
        }
        const char *dirs[] = {mgr->state, mgr->dir};
        for (int i = 0; i < 2; i++) {
                cleanup_dir DIR *d = opendir(dirs[i]);
                struct dirent *e;
                while (d && (e = readdir(d))) {
                        if (!rm_id_valid(e->d_name))
                                continue;
                        bool ours = known(mgr, e->d_name, false);
                        cleanup_free char *path = xasprintf("%s/%s", dirs[i], e->d_name);
                        /* A NOTREADY pod's shm goes too: its stop may have been cut off. */
                        if (i == 0 && !known(mgr, e->d_name, true)) {
                                cleanup_free char *shm = xasprintf("%s/shm", path);
                                rm__unmount_shm(shm);
                        }
                        if (ours)
                                continue;
                        cleanup_error struct rm_error *why = NULL;
                        if (rm_remove_tree(path, &why) < 0)
                                rm_log_warn("leftover of pod %s: %s", e->d_name, why->msg);
                        else
                                mgr->repairs++;
                        rm_log_info("removed %s, left by a pod run interrupted by a "
                                    "crash",
                                    path);
                }
        }
}

struct rm_sandbox_manager *rm_sandbox_manager_open(const char *root, const char *state,
                                                   struct json_object *section,
                                                   struct rm_store *store,
                                                   const struct rm_sandbox_hooks *hooks,
                                                   struct rm_error **err)
{
        static const char *const known_keys[] = {NULL};
        if (rm_confsect_check_keys("sandbox", section, known_keys, err) < 0)
                return NULL;
        struct rm_sandbox_manager *mgr = xzalloc(sizeof(*mgr));
        pthread_mutex_init(&mgr->lock, NULL);
        mgr->answers = rm_answers_new();
        mgr->dir = xasprintf("%s/sandboxes", root);
        mgr->state = xasprintf("%s/sandboxes", state);
        for (int k = 0; k < N_PINS; k++)
                mgr->pins[k] = xasprintf("%s/%s", state, rm__pin_kinds[k]);
        mgr->store = store;
        if (hooks)
                mgr->hooks = *hooks;
        int rc =
            rm_mkdir_p(mgr->dir, 0700, err) < 0 || rm_mkdir_p(mgr->state, 0700, err) < 0 ? -1 : 0;
        for (int k = 0; k < N_PINS && rc == 0; k++)
                rc = rm_mkdir_p(mgr->pins[k], 0700, err);
        if (rc == 0 && rm_store_list(store, POD_KIND, load_one, mgr, err) < 0)
                rc = -1;
        if (rc < 0) {
                rm_error_wrap(err, "open the sandbox manager");
                rm_sandbox_manager_close(mgr);
                return NULL;
        }
        repair(mgr);
        sweep(mgr);
        if (mgr->n)
                rm_log_info("loaded %zu pod sandboxes", mgr->n);
        return mgr;
}

void rm_sandbox_manager_close(struct rm_sandbox_manager *mgr)
{
        if (mgr == NULL)
                return;
        for (size_t i = 0; i < mgr->n; i++)
                rm__pod_free(mgr->pods[i]);
        free(mgr->pods);
        free(mgr->dir);
        free(mgr->state);
        for (int k = 0; k < N_PINS; k++)
                free(mgr->pins[k]);
        rm_answers_free(mgr->answers);
        pthread_mutex_destroy(&mgr->lock);
        free(mgr);
}

size_t rm_sandbox_repairs(struct rm_sandbox_manager *mgr)
{
        return mgr->repairs;
}
