/* Container lifecycle: create, start, stop, remove, list; the index and records. Calls on
 * live containers are in running.c, exit handling in exits.c. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "manager_internal.h"
#include "remora/answers.h"
#include "remora/cleanup.h"
#include "remora/clock.h"
#include "remora/crashpoint.h"
#include "remora/fsutil.h"
#include "remora/log.h"
#include "remora/orphans.h"
#include "remora/pbcanon.h"
#include "remora/xalloc.h"
#include "spec_internal.h"

/* After SIGKILL a process is gone within milliseconds unless stuck in the kernel; how
 * long to wait for that before giving up on the stop. */
#define KILL_WAIT_SECONDS 10
/* How long an identical CreateContainer waits for the first call to finish and answer,
 * unless its own client gives up first: kubelet's default request timeout. */
#define ANSWER_WAIT_MS 120000

int64_t rm__now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void rm__replace_str(char **slot, const char *v)
{
        free(*slot);
        *slot = xstrdup(v ? v : "");
}

/* ---- the index (callers hold mgr->lock) ---- */

void rm__index_add(struct rm_container_manager *mgr, struct ctr *c)
{
        mgr->ctrs = xrealloc(mgr->ctrs, sizeof(*mgr->ctrs) * (mgr->n + 1));
        mgr->ctrs[mgr->n++] = c;
}

static void index_drop(struct rm_container_manager *mgr, struct ctr *c)
{
        for (size_t i = 0; i < mgr->n; i++) {
                if (mgr->ctrs[i] == c) {
                        mgr->ctrs[i] = mgr->ctrs[--mgr->n];
                        break;
                }
        }
        c->removed = true;
        if (c->refs == 0)
                rm__ctr_free(c);
}

struct ctr *rm__ctr_find_locked(struct rm_container_manager *mgr, const char *id_or_prefix,
                                struct rm_error **err)
{
        cleanup_free const char **ids = xzalloc(sizeof(char *) * (mgr->n + 1));
        for (size_t i = 0; i < mgr->n; i++)
                ids[i] = mgr->ctrs[i]->creating ? "" : mgr->ctrs[i]->id;
        long i = rm_id_match(ids, mgr->n, id_or_prefix, "container", err);
        return i < 0 ? NULL : mgr->ctrs[i];
}

/* Find a container and hold a reference so it outlives a concurrent remove. */
struct ctr *rm__ctr_get(struct rm_container_manager *mgr, const char *id, struct rm_error **err)
{
        pthread_mutex_lock(&mgr->lock);
        struct ctr *c = rm__ctr_find_locked(mgr, id, err);
        if (c)
                c->refs++;
        pthread_mutex_unlock(&mgr->lock);
        return c;
}

void rm__ctr_put(struct rm_container_manager *mgr, struct ctr *c)
{
        pthread_mutex_lock(&mgr->lock);
        if (--c->refs == 0 && c->removed)
                rm__ctr_free(c);
        pthread_mutex_unlock(&mgr->lock);
}

int rm__ctr_save(struct rm_container_manager *mgr, struct ctr *c, struct rm_error **err)
{
        pthread_mutex_lock(&c->save_lock);
        pthread_mutex_lock(&mgr->lock);
        cleanup_json struct json_object *doc = rm__ctr_to_json(c);
        pthread_mutex_unlock(&mgr->lock);
        int rc = rm_store_put(mgr->store, CTR_KIND, c->id, doc, err);
        pthread_mutex_unlock(&c->save_lock);
        return rc;
}

void rm__ctr_emit(struct rm_container_manager *mgr, const char *id, const char *pod_id,
                  Runtime__V1__ContainerEventType type)
{
        if (mgr->ops.event)
                mgr->ops.event(mgr->ops.ctx, id, pod_id, type);
}

/* ---- directories ---- */

struct paths {
        char *dir;    /* <root>/containers/<id> */
        char *bundle; /* <state>/containers/<id> */
        char *rootfs; /* <bundle>/rootfs */
};

static void paths_init(const struct rm_container_manager *mgr, const char *id, struct paths *p)
{
        p->dir = xasprintf("%s/%s", mgr->dir, id);
        p->bundle = xasprintf("%s/%s", mgr->bundles, id);
        p->rootfs = xasprintf("%s/rootfs", p->bundle);
}

static void paths_release(struct paths *p)
{
        free(p->dir);
        free(p->bundle);
        free(p->rootfs);
}

/* ---- create ---- */

/* A client retrying a CreateContainer it gave up on gets the first container back.
 * Equal requests hash equal whatever order a client wrote their maps in. The request
 * is ours for the call, so sorting its maps in place is harmless. */
static uint64_t request_hash(const Runtime__V1__CreateContainerRequest *req)
{
        return rm_pb_canonical_hash((ProtobufCMessage *)&req->base);
}

static struct json_object *json_map(size_t n, void *const *entries)
{
        struct json_object *o = json_object_new_object();
        for (size_t i = 0; i < n; i++) {
                const Runtime__V1__ContainerConfig__LabelsEntry *e = entries[i];
                json_object_object_add(o, e->key, json_object_new_string(e->value ? e->value : ""));
        }
        return o;
}

static struct json_object *json_mounts(const Runtime__V1__ContainerConfig *cfg)
{
        struct json_object *a = json_object_new_array();
        for (size_t i = 0; i < cfg->n_mounts; i++) {
                const Runtime__V1__Mount *m = cfg->mounts[i];
                struct json_object *o = json_object_new_object();
                json_object_object_add(
                    o, "container_path",
                    json_object_new_string(m->container_path ? m->container_path : ""));
                json_object_object_add(o, "host_path",
                                       json_object_new_string(m->host_path ? m->host_path : ""));
                json_object_object_add(o, "readonly", json_object_new_boolean(m->readonly));
                json_object_object_add(o, "propagation", json_object_new_int(m->propagation));
                if (m->image && m->image->image && *m->image->image) {
                        json_object_object_add(o, "image", json_object_new_string(m->image->image));
                        json_object_object_add(
                            o, "image_sub_path",
                            json_object_new_string(m->image_sub_path ? m->image_sub_path : ""));
                        /* An image volume is read-only whatever the request said. */
                        json_object_object_add(o, "readonly", json_object_new_boolean(true));
                }
                json_object_array_add(a, o);
        }
        return a;
}

/* A name kubelet builds from a pod's container name: a DNS label, which also keeps it
 * safe in paths and logs. */
static bool name_valid(const char *s)
{
        size_t n = s ? strlen(s) : 0;
        return n > 0 && n <= 253 &&
               strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                         "0123456789-_.") == n;
}

/* What a failed create must undo, in reverse order of doing. */
struct undo {
        bool dirs;
        bool mounted;
        bool idmapped; /* bind sources under <bundle>/idmap */
        const char *image_id;
};

static void rollback(struct rm_container_manager *mgr, const char *id, const struct paths *p,
                     const struct undo *u)
{
        struct rm_error *e = NULL;
        if (u->idmapped)
                rm__ctr_userns_release(p->bundle);
        if (u->mounted &&
            mgr->ops.rootfs_unmount(mgr->ops.ctx, u->image_id, p->dir, p->rootfs, &e) < 0) {
                rm_log_warn("container %s: undoing a failed create: %s", id, e->msg);
                rm_error_free(e);
                e = NULL;
        }
        if (u->dirs && (rm__imgvol_unmount_all(p->bundle, &e) < 0 ||
                        rm_remove_tree(p->bundle, &e) < 0 || rm_remove_tree(p->dir, &e) < 0)) {
                rm_log_warn("container %s: undoing a failed create: %s", id, e->msg);
                rm_error_free(e);
        }
}

/* Make the log file's directory; kubelet names it <pod log dir>/<container>/<n>.log. */
static char *log_path_for(const char *log_dir, const char *rel, struct rm_error **err)
{
        if (log_dir == NULL || *log_dir == '\0' || rel == NULL || *rel == '\0')
                return xstrdup("");
        if (rel[0] == '/' || strstr(rel, "..")) {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "config.log_path \"%s\" must be relative to the pod's log "
                             "directory and free of \"..\"",
                             rel);
                return NULL;
        }
        char *path = xasprintf("%s/%s", log_dir, rel);
        cleanup_free char *parent = xstrdup(path);
        *strrchr(parent, '/') = '\0';
        if (rm_mkdir_p(parent, 0755, err) < 0) {
                free(path);
                rm_error_wrap(err, "config.log_path");
                return NULL;
        }
        return path;
}

static int build_and_create(struct rm_container_manager *mgr, struct ctr *c,
                            const Runtime__V1__CreateContainerRequest *req, struct paths *p,
                            struct undo *u, struct rm_arena *a, struct rm_error **err)
{
        const Runtime__V1__ContainerConfig *cfg = req->config;
        struct rm_ctr_pod pod;
        memset(&pod, 0, sizeof(pod));
        if (mgr->ops.pod_lookup(mgr->ops.ctx, c->pod_id, a, &pod, err) < 0)
                return rm_error_wrap(err, "pod_sandbox_id");
        if (!pod.ready)
                return rm_error_set(err, RM_FAILED_PRECONDITION,
                                    "pod sandbox %s is not ready; start a new pod", c->pod_id);
        const char *ref = cfg->image ? cfg->image->image : NULL;
        if (ref == NULL || *ref == '\0')
                return rm_error_set(err, RM_INVALID_ARGUMENT, "config.image.image is empty");
        int stop_signal = 0;
        if (rm__stop_signal_from_cri(cfg->stop_signal, &stop_signal, err) < 0)
                return -1;
        struct rm_ctr_image img;
        memset(&img, 0, sizeof(img));
        if (mgr->ops.image_lookup(mgr->ops.ctx, ref, a, &img, err) < 0)
                return rm_error_wrap(err, "config.image.image");
        /* The container's stop signal overrides the image's (KEP-4960). */
        if (stop_signal == 0)
                stop_signal = rm__stop_signal_from_image(img.config.stop_signal);

        /* The container's PID namespace: its own, the host's, the pod's or a target's. */
        const Runtime__V1__LinuxContainerSecurityContext *sc =
            cfg->linux ? cfg->linux->security_context : NULL;
        const Runtime__V1__NamespaceOption *ns = sc ? sc->namespace_options : NULL;
        /* Unset means POD, as the CRI's enum default says; a pod without a shared PID
         * namespace (no infra process) has none to join, so its containers get their own. */
        pod.spec.pid_mode = ns ? ns->pid : RUNTIME__V1__NAMESPACE_MODE__POD;
        pod.spec.pidns_path = NULL;
        if (pod.spec.pid_mode == RUNTIME__V1__NAMESPACE_MODE__POD) {
                pod.spec.pidns_path = pod.pid_ns_path;
                if (pod.pid_ns_path == NULL)
                        pod.spec.pid_mode = RUNTIME__V1__NAMESPACE_MODE__CONTAINER;
        }
        if (pod.spec.pid_mode == RUNTIME__V1__NAMESPACE_MODE__TARGET) {
                struct ctr *t = rm__ctr_get(mgr, ns->target_id ? ns->target_id : "", err);
                if (t == NULL)
                        return rm_error_wrap(err, "namespace_options.target_id");
                pthread_mutex_lock(&mgr->lock);
                bool running = t->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
                pod.spec.pidns_path =
                    running ? rm_arena_printf(a, "/proc/%d/ns/pid", t->pid) : NULL;
                pthread_mutex_unlock(&mgr->lock);
                rm__ctr_put(mgr, t);
                if (!running)
                        return rm_error_set(err, RM_FAILED_PRECONDITION,
                                            "namespace_options.target_id %s is not running",
                                            ns->target_id);
        }

        pthread_mutex_lock(&mgr->lock);
        rm__replace_str(&c->image_id, img.id);
        rm__replace_str(&c->image_ref, img.ref ? img.ref : img.id);
        rm__replace_str(&c->runtime_handler, pod.runtime_handler);
        pthread_mutex_unlock(&mgr->lock);

        if (rm_mkdir_p(p->dir, 0700, err) < 0 || rm_mkdir_p(p->rootfs, 0700, err) < 0)
                return -1;
        u->dirs = true;
        cleanup_free char *log = log_path_for(pod.log_directory, cfg->log_path, err);
        if (log == NULL)
                return -1;
        if (mgr->ops.rootfs_mount(mgr->ops.ctx, img.id, p->dir, p->rootfs, pod.spec.userns, err) <
            0)
                return rm_error_wrap(err, "mount the root filesystem of image %s", img.id);
        u->mounted = true;
        u->image_id = rm_arena_strdup(a, img.id);

        /* The image's volumes start as empty directories, made inside the rootfs (a path
         * through a symlink cannot reach the host). */
        for (size_t i = 0; i < img.n_volumes; i++) {
                if (rm_rootfs_mkdir(p->rootfs, img.volumes[i], 0755, err) < 0)
                        return rm_error_wrap(err, "image volume %s", img.volumes[i]);
        }
        /* Image volumes are mounted under the bundle; the spec binds them read-only. */
        const Runtime__V1__ContainerConfig *eff = cfg;
        cleanup_json struct json_object *vols = json_object_new_array();
        if (rm__imgvol_prepare(mgr, p->bundle, cfg, a, &eff, vols, err) < 0)
                return -1;
        cleanup_json struct json_object *spec =
            rm_spec_build(c->id, eff, &img.config, &pod.spec, &mgr->host, p->rootfs, err);
        if (spec == NULL)
                return -1;
        if (pod.spec.userns) {
                u->idmapped = true;
                if (rm__ctr_userns_prepare(spec, p->bundle, pod.spec.userns, err) < 0)
                        return -1;
                rm_crashpoint("create.idmapped");
        }
        cleanup_free char *config = xasprintf("%s/config.json", p->bundle);
        /* Made 0600 before anything is written (json-c keeps an existing file's mode): the
         * environment may hold secrets, and a userns pod's bundle is searchable by all. */
        cleanup_close int cfd = open(config, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (cfd < 0 || json_object_to_file_ext(config, spec, JSON_C_TO_STRING_PLAIN) < 0)
                return rm_error_set(err, RM_INTERNAL, "write %s: %s", config,
                                    cfd < 0 ? strerror(errno) : json_util_get_last_err());
        struct json_object *uid = NULL, *gid = NULL, *user = NULL, *process = NULL, *linux = NULL,
                           *cgpath = NULL, *groups = NULL;
        json_object_object_get_ex(spec, "linux", &linux);
        json_object_object_get_ex(linux, "cgroupsPath", &cgpath);
        json_object_object_get_ex(spec, "process", &process);
        json_object_object_get_ex(process, "user", &user);
        json_object_object_get_ex(user, "uid", &uid);
        json_object_object_get_ex(user, "gid", &gid);
        json_object_object_get_ex(user, "additionalGids", &groups);

        /* The runtime's create (runc create under its monitor) waits for StartContainer, as
         * in containerd: CreateContainer stays cheap, and a container never started costs
         * no process. */
        pthread_mutex_lock(&mgr->lock);
        c->tty = cfg->tty;
        c->stdin = cfg->stdin;
        c->stdin_once = cfg->stdin_once;
        c->uid = (uint32_t)json_object_get_int64(uid);
        c->gid = (uint32_t)json_object_get_int64(gid);
        json_object_put(c->groups);
        c->groups = groups ? json_object_get(groups) : json_object_new_array();
        rm__replace_str(&c->log_path, log);
        rm__replace_str(&c->cgroup_path, cgpath ? json_object_get_string(cgpath) : "");
        c->stop_signal = stop_signal;
        json_object_put(c->image_volumes);
        c->image_volumes = json_object_get(vols);
        pthread_mutex_unlock(&mgr->lock);
        return 0;
}

static int exists_error(const Runtime__V1__ContainerMetadata *m, const char *pod_id, const char *id,
                        const char *why, struct rm_error **err)
{
        return rm_error_set(err, RM_ALREADY_EXISTS,
                            "container name %s (attempt %u) is already used in pod %s by "
                            "container %s%s; remove it first",
                            m->name, m->attempt, pod_id, id, why);
}

/* Reserve (pod, name, attempt), or find the container an identical request made
 * (*existing): whether the retry gets it depends on what became of the first answer. */
static struct ctr *reserve(struct rm_container_manager *mgr,
                           const Runtime__V1__CreateContainerRequest *req, const char *pod_id,
                           uint64_t hash, char **existing, struct rm_error **err)
{
        const Runtime__V1__ContainerConfig *cfg = req->config;
        pthread_mutex_lock(&mgr->lock);
        for (size_t i = 0; i < mgr->n; i++) {
                struct ctr *o = mgr->ctrs[i];
                if (strcmp(o->pod_id, pod_id) != 0 || strcmp(o->name, cfg->metadata->name) != 0 ||
                    o->attempt != cfg->metadata->attempt)
                        continue;
                if (o->request_hash == hash)
                        *existing = xstrdup(o->id);
                else
                        exists_error(cfg->metadata, pod_id, o->id, "", err);
                pthread_mutex_unlock(&mgr->lock);
                return NULL;
        }
        struct ctr *c = xzalloc(sizeof(*c));
        pthread_mutex_init(&c->op, NULL);
        pthread_mutex_init(&c->save_lock, NULL);
        rm_id_new(c->id);
        c->creating = true;
        c->refs = 1;
        c->pod_id = xstrdup(pod_id);
        c->name = xstrdup(cfg->metadata->name);
        c->attempt = cfg->metadata->attempt;
        c->image = xstrdup(cfg->image && cfg->image->image ? cfg->image->image : "");
        c->image_id = xstrdup("");
        c->image_ref = xstrdup("");
        c->log_path = xstrdup("");
        c->runtime_handler = xstrdup("");
        c->reason = xstrdup("");
        c->message = xstrdup("");
        c->request_hash = hash;
        c->labels = json_map(cfg->n_labels, (void *const *)cfg->labels);
        c->annotations = json_map(cfg->n_annotations, (void *const *)cfg->annotations);
        c->mounts = json_mounts(cfg);
        c->image_volumes = json_object_new_array();
        c->cgroup_path = xstrdup("");
        c->resources = rm__resources_to_json(cfg->linux ? cfg->linux->resources : NULL);
        c->state = RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED;
        rm__index_add(mgr, c);
        rm_answers_begin(mgr->answers, c->id); /* ended by rm_containers_answered */
        pthread_mutex_unlock(&mgr->lock);
        return c;
}

/* An identical CreateContainer found container id: 0 with *id when the first answer
 * never reached its client, 1 when the container went meanwhile (reserve again), -1
 * ALREADY_EXISTS. */
static int retried(struct rm_container_manager *mgr, const Runtime__V1__ContainerMetadata *m,
                   const char *pod_id, char *existing, const struct rm_cancel *cancel, char **id,
                   struct rm_error **err)
{
        enum rm_answer a = rm_answers_claim(mgr->answers, existing, cancel, ANSWER_WAIT_MS);
        pthread_mutex_lock(&mgr->lock);
        struct ctr *o = NULL;
        for (size_t i = 0; i < mgr->n && o == NULL; i++)
                o = strcmp(mgr->ctrs[i]->id, existing) == 0 ? mgr->ctrs[i] : NULL;
        bool made = o && !o->creating;
        pthread_mutex_unlock(&mgr->lock);
        if (o == NULL) {
                rm_answers_forget(mgr->answers, existing);
                free(existing);
                return 1; /* its create failed */
        }
        if (a == RM_ANSWER_LOST && made) {
                rm_log_info("CreateContainer retried for %s in pod %s after its answer was lost: "
                            "returning %s",
                            m->name, pod_id, existing);
                *id = existing;
                return 0;
        }
        if (a == RM_ANSWER_LOST)
                rm_answers_end(mgr->answers, existing, false);
        exists_error(m, pod_id, existing,
                     a == RM_ANSWER_PENDING
                         ? " (an identical earlier call is still making or answering it)"
                         : " (an identical earlier call already returned it)",
                     err);
        free(existing);
        return -1;
}

int rm_containers_create(struct rm_container_manager *mgr,
                         const Runtime__V1__CreateContainerRequest *req,
                         const struct rm_cancel *cancel, char **id, struct rm_error **err)
{
        const Runtime__V1__ContainerConfig *cfg = req->config;
        if (cfg == NULL)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "config is missing");
        if (cfg->metadata == NULL || !name_valid(cfg->metadata->name))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.metadata.name \"%s\" must be 1-253 characters of "
                                    "letters, digits, '-', '_' and '.'",
                                    cfg->metadata && cfg->metadata->name ? cfg->metadata->name
                                                                         : "");
        if (req->pod_sandbox_id == NULL || *req->pod_sandbox_id == '\0')
                return rm_error_set(err, RM_INVALID_ARGUMENT, "pod_sandbox_id is empty");
        if (rm__ctr_config_limits(cfg, err) < 0)
                return -1;

        /* Resolve the pod first so a prefix and a full ID reserve the same name. */
        struct rm_arena *a = rm_arena_new();
        struct rm_ctr_pod pod;
        if (mgr->ops.pod_lookup(mgr->ops.ctx, req->pod_sandbox_id, a, &pod, err) < 0) {
                rm_arena_free(a);
                return rm_error_wrap(err, "pod_sandbox_id");
        }
        cleanup_free char *pod_id =
            xstrdup(pod.spec.pod_id ? pod.spec.pod_id : req->pod_sandbox_id);
        uint64_t hash = request_hash(req);
        struct ctr *c = NULL;
        while (c == NULL) {
                char *existing = NULL;
                c = reserve(mgr, req, pod_id, hash, &existing, err);
                if (c)
                        break;
                int rc =
                    existing ? retried(mgr, cfg->metadata, pod_id, existing, cancel, id, err) : -1;
                if (rc <= 0) {
                        rm_arena_free(a);
                        return rc;
                }
        }

        struct paths p;
        paths_init(mgr, c->id, &p);
        struct undo u = {0};
        pthread_mutex_lock(&c->op);
        c->created_at = rm__now_ns();
        int rc = build_and_create(mgr, c, req, &p, &u, a, err);
        if (rc == 0) {
                /* Everything is mounted, nothing recorded: the start-up sweep's case. */
                rm_crashpoint("container.create.before_record");
                rc = rm__ctr_save(mgr, c, err);
        }
        if (rc < 0)
                rollback(mgr, c->id, &p, &u);
        pthread_mutex_unlock(&c->op);
        rm_arena_free(a);
        paths_release(&p);

        pthread_mutex_lock(&mgr->lock);
        c->creating = false;
        if (rc < 0) {
                c->refs--;
                rm_answers_forget(mgr->answers, c->id);
                index_drop(mgr, c);
                pthread_mutex_unlock(&mgr->lock);
                return rc;
        }
        *id = xstrdup(c->id);
        rm_log_info("created container %s (%s) in pod %s", c->id, c->name, c->pod_id);
        pthread_mutex_unlock(&mgr->lock);
        rm__ctr_emit(mgr, c->id, c->pod_id,
                     RUNTIME__V1__CONTAINER_EVENT_TYPE__CONTAINER_CREATED_EVENT);
        rm__ctr_put(mgr, c);
        return 0;
}

void rm_containers_answered(struct rm_container_manager *mgr, const char *id, bool delivered)
{
        rm_answers_end(mgr->answers, id, delivered);
}

/* ---- start, stop, remove ---- */

/* A start that failed leaves the container EXITED with the reason, as kubelet expects
 * (it creates a new one), and nothing of it in the runtime. Caller holds c->op. */
static void start_failed(struct rm_container_manager *mgr, struct ctr *c, const char *msg)
{
        cleanup_error struct rm_error *e = NULL;
        if (mgr->ops.delete(mgr->ops.ctx, c->id, true, &e) < 0)
                rm_log_warn("container %s: cleaning up a failed start: %s", c->id, e->msg);
        pthread_mutex_lock(&mgr->lock);
        c->state = RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED;
        c->exit_code = 128;
        c->finished_at = rm__now_ns();
        c->pid = 0;
        c->start_pending = false;
        c->runtime_deleted = true;
        rm__replace_str(&c->reason, "StartError");
        rm__replace_str(&c->message, msg);
        pthread_cond_broadcast(&mgr->changed);
        pthread_mutex_unlock(&mgr->lock);
        cleanup_error struct rm_error *save_err = NULL;
        if (rm__ctr_save(mgr, c, &save_err) < 0)
                rm_log_warn("container %s: recording a failed start: %s", c->id, save_err->msg);
        rm__ctr_emit(mgr, c->id, c->pod_id,
                     RUNTIME__V1__CONTAINER_EVENT_TYPE__CONTAINER_STOPPED_EVENT);
}

/* runc create under a monitor, then runc start. Caller holds c->op. */
static int runtime_create_start(struct rm_container_manager *mgr, struct ctr *c, int64_t *started,
                                struct rm_error **err)
{
        cleanup_free char *bundle = xasprintf("%s/%s", mgr->bundles, c->id);
        pthread_mutex_lock(&mgr->lock);
        cleanup_free char *log = xstrdup(c->log_path);
        cleanup_free char *handler = xstrdup(c->runtime_handler);
        struct rm_ctr_create cc = {
            .id = c->id,
            .bundle = bundle,
            .log_path = *log ? log : NULL,
            .runtime_handler = handler,
            .tty = c->tty,
            .stdin = c->stdin,
            .stdin_once = c->stdin_once,
        };
        /* Intent before runc create: a crash from here on leaves a record saying so, and
         * start-up undoes the start (see rm_containers_open). */
        c->start_pending = true;
        pthread_mutex_unlock(&mgr->lock);
        if (rm__ctr_save(mgr, c, err) < 0) {
                pthread_mutex_lock(&mgr->lock);
                c->start_pending = false;
                pthread_mutex_unlock(&mgr->lock);
                return rm_error_wrap(err, "start container %s", c->id);
        }
        rm_crashpoint("startcontainer.intent");
        pid_t pid = 0;
        /* The start time is taken before runc start: a quick process may have exited by
         * the time it returns, and must not look as if it ended before it began. */
        if (mgr->ops.create(mgr->ops.ctx, &cc, &pid, err) < 0 ||
            (rm_crashpoint("startcontainer.created"), *started = rm__now_ns(),
             mgr->ops.start(mgr->ops.ctx, c->id, err)) < 0) {
                rm_error_wrap(err, "start container %s", c->id);
                start_failed(mgr, c, (*err)->msg);
                return -1;
        }
        rm_crashpoint("startcontainer.started");
        pthread_mutex_lock(&mgr->lock);
        c->pid = pid;
        pthread_mutex_unlock(&mgr->lock);
        return 0;
}

int rm_containers_start(struct rm_container_manager *mgr, const char *id, struct rm_error **err)
{
        struct ctr *c = rm__ctr_get(mgr, id, err);
        if (c == NULL)
                return -1;
        pthread_mutex_lock(&c->op);
        int rc = 0;
        int64_t started = 0;
        pthread_mutex_lock(&mgr->lock);
        Runtime__V1__ContainerState state = c->state;
        pthread_mutex_unlock(&mgr->lock);
        if (state != RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED) {
                rc = rm_error_set(err, RM_FAILED_PRECONDITION,
                                  "container %s is %s, not CREATED; only a created container can "
                                  "be started",
                                  c->id,
                                  protobuf_c_enum_descriptor_get_value(
                                      &runtime__v1__container_state__descriptor, state)
                                      ->name);
        } else {
                /* An exit is not recorded while the start is under way (the watcher would
                 * announce STOPPED before STARTED, and the start then overwrite EXITED);
                 * a quick exit is picked up right after STARTED instead. */
                pthread_mutex_lock(&mgr->lock);
                c->starting = true;
                pthread_mutex_unlock(&mgr->lock);
                if (runtime_create_start(mgr, c, &started, err) < 0) {
                        rc = -1;
                        pthread_mutex_lock(&mgr->lock);
                        c->starting = false;
                        pthread_mutex_unlock(&mgr->lock);
                } else {
                        /* exit_lock: no exit is recorded until STARTED is out. */
                        pthread_mutex_lock(&mgr->exit_lock);
                        pthread_mutex_lock(&mgr->lock);
                        if (c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED)
                                c->state = RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
                        c->started_at = started;
                        c->start_pending = false;
                        c->starting = false;
                        pthread_mutex_unlock(&mgr->lock);
                        rc = rm__ctr_save(mgr, c, err);
                        if (rc == 0)
                                rm_crashpoint("startcontainer.saved");
                        if (rc == 0)
                                rm__ctr_emit(
                                    mgr, c->id, c->pod_id,
                                    RUNTIME__V1__CONTAINER_EVENT_TYPE__CONTAINER_STARTED_EVENT);
                        pthread_mutex_unlock(&mgr->exit_lock);
                        rm__ctr_refresh_exit(mgr, c);
                }
        }
        pthread_mutex_unlock(&c->op);
        rm__ctr_put(mgr, c);
        return rc;
}

/* A signal the runtime refused ("container not running") because the container exited
 * by itself just then: its monitor records the exit within moments, and the stop is done
 * with the container's own exit code. Then *err is dropped and true returned. */
static bool exited_meanwhile(struct rm_container_manager *mgr, struct ctr *c, struct rm_error **err)
{
        if (!rm__ctr_wait_exit(mgr, c, KILL_WAIT_SECONDS * 1000))
                return false;
        rm_log_debug("container %s exited by itself while being stopped (%s)", c->id, (*err)->msg);
        rm_error_free(*err);
        *err = NULL;
        return true;
}

/* Signal, wait, escalate. Caller holds c->op. */
void rm__ctr_rootfs_release(struct rm_container_manager *mgr, struct ctr *c)
{
        struct paths p;
        paths_init(mgr, c->id, &p);
        pthread_mutex_lock(&mgr->lock);
        cleanup_free char *image_id = xstrdup(c->image_id);
        pthread_mutex_unlock(&mgr->lock);
        cleanup_error struct rm_error *err = NULL;
        if (mgr->ops.rootfs_unmount(mgr->ops.ctx, image_id, p.dir, p.rootfs, &err) < 0)
                rm_log_warn("container %s exited; its root filesystem stays mounted until it is "
                            "removed: %s",
                            c->id, err->msg);
        paths_release(&p);
}

static int stop_locked(struct rm_container_manager *mgr, struct ctr *c, int64_t timeout,
                       struct rm_error **err)
{
        if (rm__ctr_refresh_exit(mgr, c))
                return 0;
        pthread_mutex_lock(&mgr->lock);
        int sig = c->stop_signal ? c->stop_signal : SIGTERM;
        bool started = c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
        bool never_ran = c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED;
        if (never_ran) {
                /* Nothing runs yet (the runtime's create waits for start): just EXITED. */
                c->state = RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED;
                c->finished_at = rm__now_ns();
                rm__replace_str(&c->reason, "NotStarted");
                rm__replace_str(&c->message, "stopped before it was started");
                pthread_cond_broadcast(&mgr->changed);
        }
        pthread_mutex_unlock(&mgr->lock);
        if (never_ran) {
                if (rm__ctr_save(mgr, c, err) < 0)
                        return -1;
                rm__ctr_emit(mgr, c->id, c->pod_id,
                             RUNTIME__V1__CONTAINER_EVENT_TYPE__CONTAINER_STOPPED_EVENT);
                return 0;
        }
        if (started && timeout > 0) {
                if (mgr->ops.kill(mgr->ops.ctx, c->id, sig, err) < 0)
                        return exited_meanwhile(mgr, c, err)
                                   ? 0
                                   : rm_error_wrap(err, "stop container %s", c->id);
                rm_crashpoint("stopcontainer.signalled");
                if (rm__ctr_wait_exit(mgr, c, timeout * 1000))
                        return 0;
                rm_log_info("container %s did not stop within %llds of signal %d; killing it",
                            c->id, (long long)timeout, sig);
        }
        if (mgr->ops.kill(mgr->ops.ctx, c->id, SIGKILL, err) < 0)
                return exited_meanwhile(mgr, c, err)
                           ? 0
                           : rm_error_wrap(err, "kill container %s", c->id);
        rm_crashpoint("stopcontainer.killed");
        if (!rm__ctr_wait_exit(mgr, c, KILL_WAIT_SECONDS * 1000))
                return rm_error_set(err, RM_DEADLINE_EXCEEDED,
                                    "container %s is still running %ds after SIGKILL", c->id,
                                    KILL_WAIT_SECONDS);
        return 0;
}

int rm_containers_stop(struct rm_container_manager *mgr, const char *id, int64_t timeout,
                       const struct rm_cancel *cancel, struct rm_error **err)
{
        (void)cancel; /* a stop keeps its promise; the front end frees the caller */
        struct ctr *c = rm__ctr_get(mgr, id, err);
        if (c == NULL)
                return -1;
        pthread_mutex_lock(&c->op);
        int rc = stop_locked(mgr, c, timeout, err);
        pthread_mutex_unlock(&c->op);
        rm__ctr_put(mgr, c);
        return rc;
}

/* What a container out of the runtime may still have: an exit file (its delete was cut
 * off between runc's part and the file), a cgroup (its runc state was lost). */
static void forget_runtime(struct rm_container_manager *mgr, const struct ctr *c)
{
        if (mgr->ops.exit_dir) {
                cleanup_free char *exits = xasprintf("%s/%s", mgr->ops.exit_dir, c->id);
                rm_exit_file_remove(exits);
        }
        if (*c->cgroup_path && mgr->ops.cgroup_remove)
                mgr->ops.cgroup_remove(mgr->ops.ctx, c->cgroup_path);
}

/* Move a removed container's directory into trash (one rename; the watcher removes
 * it), or remove it here when it cannot move. */
static int to_trash(struct rm_container_manager *mgr, const char *path, const char *trash,
                    struct rm_error **err)
{
        const char *name = strrchr(path, '/') + 1;
        cleanup_free char *target = xasprintf("%s/%s", trash, name);
        if (rename(path, target) == 0) {
                pthread_mutex_lock(&mgr->lock);
                mgr->trash_pending = true;
                pthread_mutex_unlock(&mgr->lock);
                char one = 1;
                if (mgr->wake[1] >= 0 && write(mgr->wake[1], &one, 1) < 0)
                        rm_log_debug("waking the container watcher: %s", strerror(errno));
                return 0;
        }
        if (errno == ENOENT)
                return 0; /* a remove cut off earlier moved or removed it */
        return rm_remove_tree(path, err);
}

void rm__trash_empty(struct rm_container_manager *mgr)
{
        for (size_t i = 0; i < 2; i++) {
                cleanup_dir DIR *d = opendir(mgr->trash[i]);
                struct dirent *e;
                while (d && (e = readdir(d))) {
                        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                                continue;
                        cleanup_free char *path = xasprintf("%s/%s", mgr->trash[i], e->d_name);
                        cleanup_error struct rm_error *err = NULL;
                        if (rm_remove_tree(path, &err) < 0)
                                rm_log_warn("removing a removed container's files: %s", err->msg);
                }
        }
}

int rm_containers_remove(struct rm_container_manager *mgr, const char *id, struct rm_error **err)
{
        struct rm_error *lookup = NULL;
        struct ctr *c = rm__ctr_get(mgr, id, &lookup);
        if (c == NULL) {
                if (lookup->code == RM_NOT_FOUND) {
                        rm_error_free(lookup);
                        return 0;
                }
                *err = lookup;
                return -1;
        }
        pthread_mutex_lock(&c->op);
        int rc = stop_locked(mgr, c, 0, err);
        struct paths p;
        paths_init(mgr, c->id, &p);
        pthread_mutex_lock(&mgr->lock);
        bool in_runtime = c->pid != 0 && !c->runtime_deleted;
        pthread_mutex_unlock(&mgr->lock);
        if (rc == 0)
                rm_crashpoint("removecontainer.stopped");
        /* Unmounted whatever the record says of the image (a recovered record knows none). */
        if (rc == 0 && mgr->ops.rootfs_unmount(mgr->ops.ctx, c->image_id, p.dir, p.rootfs, err) < 0)
                rc = rm_error_wrap(err, "remove container %s", c->id);
        if (rc == 0 && rm__imgvol_unmount_all(p.bundle, err) < 0)
                rc = rm_error_wrap(err, "remove container %s", c->id);
        if (rc == 0)
                rm__ctr_userns_release(p.bundle);
        if (rc == 0)
                rm_crashpoint("removecontainer.unmounted");
        if (rc == 0 && (to_trash(mgr, p.bundle, mgr->trash[0], err) < 0 ||
                        to_trash(mgr, p.dir, mgr->trash[1], err) < 0))
                rc = -1;
        if (rc == 0)
                rm_crashpoint("removecontainer.dirs");
        /* The record goes last; runc's delete follows on the watcher. A crash between
         * the two leaves runc state no record owns, which start-up deletes. */
        if (rc == 0)
                rc = rm_store_delete(mgr->store, CTR_KIND, c->id, err);
        if (rc == 0)
                rm_crashpoint("removecontainer.record");
        paths_release(&p);
        pthread_mutex_unlock(&c->op);
        if (rc == 0) {
                pthread_mutex_lock(&mgr->lock);
                rm_log_info("removed container %s", c->id);
                rm_answers_forget(mgr->answers, c->id);
                index_drop(mgr, c);
                /* The process is gone (stopped above); runc's delete, a Go binary's start
                 * and a cgroup removal, happens on the watcher. A crash before it runs
                 * leaves runc state without a record, which the next start deletes. */
                if (in_runtime)
                        rm__gone_add(mgr, c->id, c->pod_id);
                else
                        forget_runtime(mgr, c);
                pthread_mutex_unlock(&mgr->lock);
                rm__ctr_emit(mgr, c->id, c->pod_id,
                             RUNTIME__V1__CONTAINER_EVENT_TYPE__CONTAINER_DELETED_EVENT);
        }
        rm__ctr_put(mgr, c);
        return rc;
}

/* ---- open and close ---- */

struct rm_container_manager *rm_containers_open(const char *root, const char *state,
                                                struct rm_store *store,
                                                const struct rm_container_ops *ops,
                                                const struct rm_spec_host *host,
                                                struct rm_error **err)
{
        struct rm_container_manager *mgr = xzalloc(sizeof(*mgr));
        mgr->dir = xasprintf("%s/containers", root);
        mgr->bundles = xasprintf("%s/containers", state);
        mgr->trash[0] = xasprintf("%s/.trash", mgr->bundles);
        mgr->trash[1] = xasprintf("%s/.trash", mgr->dir);
        mgr->store = store;
        mgr->ops = *ops;
        mgr->host = *host;
        mgr->wake[0] = mgr->wake[1] = -1;
        mgr->answers = rm_answers_new();
        pthread_mutex_init(&mgr->lock, NULL);
        pthread_mutex_init(&mgr->rates_lock, NULL);
        pthread_mutex_init(&mgr->exit_lock, NULL);
        rm_cond_init_monotonic(&mgr->changed); /* waits in exits.c */
        if (rm_mkdir_p(mgr->trash[0], 0700, err) < 0 || rm_mkdir_p(mgr->trash[1], 0700, err) < 0 ||
            rm_store_list(store, CTR_KIND, rm__ctr_load_one, mgr, err) < 0) {
                rm_containers_close(mgr);
                return NULL;
        }
        rm__ctr_reconcile(mgr);

        if (pipe2(mgr->wake, O_CLOEXEC) < 0) {
                rm_error_sys(err, "create the container watcher's pipe");
                rm_containers_close(mgr);
                return NULL;
        }
        int rc = pthread_create(&mgr->watcher, NULL, rm__exit_watcher, mgr);
        if (rc != 0) {
                rm_error_sys_errno(err, rc, "start the container exit watcher");
                rm_containers_close(mgr);
                return NULL;
        }
        mgr->watching = true;
        return mgr;
}

void rm_containers_close(struct rm_container_manager *mgr)
{
        if (mgr == NULL)
                return;
        if (mgr->watching) {
                char b = 0;
                if (write(mgr->wake[1], &b, 1) < 0)
                        rm_log_warn("stopping the container watcher: %s", strerror(errno));
                pthread_join(mgr->watcher, NULL);
        }
        for (int i = 0; i < 2; i++) {
                if (mgr->wake[i] >= 0)
                        close(mgr->wake[i]);
        }
        for (size_t i = 0; i < mgr->n; i++)
                rm__ctr_free(mgr->ctrs[i]);
        free(mgr->ctrs);
        for (size_t i = 0; i < mgr->n_reap; i++)
                free(mgr->reap[i]);
        free(mgr->reap);
        for (size_t i = 0; i < mgr->n_gone; i++) {
                free(mgr->gone[i].id);
                free(mgr->gone[i].pod_id);
        }
        free(mgr->gone);
        rm_answers_free(mgr->answers);
        pthread_cond_destroy(&mgr->changed);
        pthread_mutex_destroy(&mgr->lock);
        pthread_mutex_destroy(&mgr->rates_lock);
        pthread_mutex_destroy(&mgr->exit_lock);
        free(mgr->rates);
        free(mgr->layers);
        free(mgr->dir);
        free(mgr->bundles);
        free(mgr->trash[0]);
        free(mgr->trash[1]);
        free(mgr);
}
