/* The pod sandbox manager: records, the in-memory index, and the lifecycle. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <linux/magic.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "pinns.h"
#include "podconfig.h"
#include "remora/answers.h"
#include "remora/cleanup.h"
#include "remora/pbmap.h"
#include "remora/confsect.h"
#include "remora/crashpoint.h"
#include "remora/fsutil.h"
#include "remora/ids.h"
#include "remora/log.h"
#include "remora/pbcanon.h"
#include "remora/sandbox.h"
#include "remora/xalloc.h"
#include "sandbox_internal.h"
#include "userns.h"

/* How long an identical RunPodSandbox waits for the first call to finish and answer,
 * unless its own client gives up first: kubelet's default request timeout. */
#define ANSWER_WAIT_MS 120000

static int64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t mono_us(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* How long a network hook took, kept in the record for PodSandboxStatus(verbose): the
 * bench reads it there, as a call's own latency cannot separate it out. */
static void note_net_time(struct rm_sandbox_manager *mgr, struct pod *p, const char *key,
                          int64_t t0)
{
        int64_t us = mono_us() - t0;
        pthread_mutex_lock(&mgr->lock);
        json_object_object_add(p->doc, key, json_object_new_int64(us));
        pthread_mutex_unlock(&mgr->lock);
}

void rm__pod_free(struct pod *p)
{
        json_object_put(p->doc);
        rm_pb_packed_clear(&p->summary);
        pthread_mutex_destroy(&p->op);
        free(p);
}

const char *const rm__pin_kinds[N_PINS] = {"netns", "ipcns", "utsns", "userns"};

/* ---- index (callers hold mgr->lock) ---- */

static struct pod *find_locked(struct rm_sandbox_manager *mgr, const char *id,
                               struct rm_error **err)
{
        cleanup_free const char **ids = xzalloc(sizeof(char *) * (mgr->n + 1));
        for (size_t i = 0; i < mgr->n; i++)
                ids[i] = mgr->pods[i]->creating ? "" : mgr->pods[i]->id;
        long i = rm_id_match(ids, mgr->n, id, "pod sandbox", err);
        return i < 0 ? NULL : mgr->pods[i];
}

static struct pod *get(struct rm_sandbox_manager *mgr, const char *id, struct rm_error **err)
{
        pthread_mutex_lock(&mgr->lock);
        struct pod *p = find_locked(mgr, id ? id : "", err);
        if (p)
                p->refs++;
        pthread_mutex_unlock(&mgr->lock);
        return p;
}

static void put(struct rm_sandbox_manager *mgr, struct pod *p)
{
        pthread_mutex_lock(&mgr->lock);
        if (--p->refs == 0 && p->removed)
                rm__pod_free(p);
        pthread_mutex_unlock(&mgr->lock);
}

static void drop_locked(struct rm_sandbox_manager *mgr, struct pod *p)
{
        for (size_t i = 0; i < mgr->n; i++) {
                if (mgr->pods[i] == p) {
                        mgr->pods[i] = mgr->pods[--mgr->n];
                        break;
                }
        }
        p->removed = true;
        if (p->refs == 0)
                rm__pod_free(p);
}

int rm__pod_save(struct rm_sandbox_manager *mgr, struct pod *p, struct rm_error **err)
{
        pthread_mutex_lock(&mgr->lock);
        json_object_object_add(p->doc, "state", json_object_new_int(p->state));
        cleanup_json struct json_object *copy = NULL;
        json_object_deep_copy(p->doc, &copy, NULL);
        pthread_mutex_unlock(&mgr->lock);
        return rm_store_put(mgr->store, POD_KIND, p->id, copy, err);
}

struct pod *rm__pod_get(struct rm_sandbox_manager *mgr, const char *id, struct rm_error **err)
{
        return get(mgr, id, err);
}

void rm__pod_put(struct rm_sandbox_manager *mgr, struct pod *p)
{
        put(mgr, p);
}

/* ---- directories and mounts ---- */

char *rm__pin_path(const struct rm_sandbox_manager *mgr, int kind, const char *id)
{
        return xasprintf("%s/%s", mgr->pins[kind], id);
}

/* True when path is a live namespace pin (a bind mount of an nsfs file). */
bool rm__pinned(const char *path)
{
        struct statfs fs;
        return path && *path && statfs(path, &fs) == 0 && fs.f_type == NSFS_MAGIC;
}

void rm__unmount_shm(const char *dir)
{
        if (umount2(dir, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
                rm_log_warn("unmount %s: %s", dir, strerror(errno));
}

/* ---- run ---- */

/* The mode of one of the pod's namespaces (0 network, 1 ipc, 2 pid); POD when unset. */
static bool mode_is(const Runtime__V1__NamespaceOption *ns, int which,
                    Runtime__V1__NamespaceMode mode)
{
        Runtime__V1__NamespaceMode m = RUNTIME__V1__NAMESPACE_MODE__POD;
        if (ns)
                m = which == 0 ? ns->network : which == 1 ? ns->ipc : ns->pid;
        return m == mode;
}

/* Equal requests hash equal whatever order a client wrote their maps in. The request
 * is ours for the call, so sorting its maps in place is harmless. */
static uint64_t request_hash(const Runtime__V1__RunPodSandboxRequest *req)
{
        return rm_pb_canonical_hash((ProtobufCMessage *)&req->base);
}

static void warn_undo(struct pod *p, struct rm_error **e)
{
        rm_log_warn("pod %s: undoing a failed run: %s", p->id, (*e)->msg);
        rm_error_free(*e);
        *e = NULL;
}

void rm__pod_rollback(struct rm_sandbox_manager *mgr, struct pod *p, const struct undo *u)
{
        struct rm_error *e = NULL;
        if (u->infra && mgr->hooks.infra_remove &&
            mgr->hooks.infra_remove(mgr->hooks.ctx, p->id, &e) < 0)
                warn_undo(p, &e);
        if (u->cgroup && mgr->hooks.pod_cgroup_remove)
                mgr->hooks.pod_cgroup_remove(mgr->hooks.ctx, s_get(p, "cgroup_parent"));
        if (u->net && mgr->hooks.net_teardown &&
            mgr->hooks.net_teardown(mgr->hooks.ctx, p->id, s_get(p, "netns"), &e) < 0)
                warn_undo(p, &e);
        if (u->shm)
                rm__unmount_shm(s_get(p, "shm"));
        for (int k = 0; k < N_PINS; k++) {
                if (u->pins[k]) {
                        cleanup_free char *path = rm__pin_path(mgr, k, p->id);
                        rm_pinns_unpin(path);
                }
        }
        if (u->dirs) {
                cleanup_free char *dir = xasprintf("%s/%s", mgr->dir, p->id);
                cleanup_free char *sdir = xasprintf("%s/%s", mgr->state, p->id);
                if (rm_remove_tree(sdir, &e) < 0 || rm_remove_tree(dir, &e) < 0)
                        warn_undo(p, &e);
        }
        if (u->record && rm_store_delete(mgr->store, POD_KIND, p->id, &e) < 0)
                warn_undo(p, &e);
}

/* How the pod uses the host's namespaces. */
struct pod_modes {
        bool host_net, host_ipc, share_pid;
        bool userns; /* its own user namespace, mapped by uids and gids */
        struct rm_idrange uids, gids;
};

static int make_pod(struct rm_sandbox_manager *mgr, struct pod *p,
                    const Runtime__V1__RunPodSandboxRequest *req, const struct rm_sysctl *sys,
                    size_t n_sys, const struct pod_modes *m, struct undo *u, struct rm_error **err)
{
        const Runtime__V1__PodSandboxConfig *c = req->config;
        /* No hostname in the config: the node's, as containerd and CRI-O do (a pod name may
         * be longer than the kernel's 64-byte limit). */
        char node[HOST_NAME_MAX + 1] = "localhost";
        if (gethostname(node, sizeof(node)) < 0)
                snprintf(node, sizeof(node), "localhost");
        node[HOST_NAME_MAX] = '\0';
        const char *hostname = c->hostname && *c->hostname ? c->hostname : node;
        cleanup_free char *dir = xasprintf("%s/%s", mgr->dir, p->id);
        cleanup_free char *sdir = xasprintf("%s/%s", mgr->state, p->id);
        cleanup_free char *shm = xasprintf("%s/shm", sdir);
        bool want[N_PINS] = {!m->host_net, !m->host_ipc, !m->host_net, m->userns};
        cleanup_free char *user_pin = want[PIN_USER] ? rm__pin_path(mgr, PIN_USER, p->id) : NULL;
        cleanup_free char *net_pin = want[PIN_NET] ? rm__pin_path(mgr, PIN_NET, p->id) : NULL;
        cleanup_free char *ipc_pin = want[PIN_IPC] ? rm__pin_path(mgr, PIN_IPC, p->id) : NULL;
        cleanup_free char *uts_pin = want[PIN_UTS] ? rm__pin_path(mgr, PIN_UTS, p->id) : NULL;
        const Runtime__V1__LinuxPodSandboxConfig *lc = c->linux;
        const char *parent = lc && lc->cgroup_parent ? lc->cgroup_parent : "";
        /* A cgroup parent that does not exist yet is made by Remora or by runc (in every
         * hierarchy): then it is the pod's, and goes with it. */
        bool cgroup_owned =
            *parent && mgr->hooks.pod_cgroup_exists &&
            !(parent[0] == '/' && mgr->hooks.pod_cgroup_exists(mgr->hooks.ctx, parent));

        /* Intent first: the record names everything this run is about to make, so that a
         * crash at any later step leaves only things start-up can find and undo. */
        pthread_mutex_lock(&mgr->lock);
        json_object_object_add(p->doc, "run_pending", json_object_new_boolean(true));
        json_object_object_add(p->doc, "cgroup_owned", json_object_new_boolean(cgroup_owned));
        json_object_object_add(p->doc, "infra", json_object_new_boolean(m->share_pid));
        json_object_object_add(p->doc, "net", json_object_new_boolean(!m->host_net));
        s_set(p, "netns", net_pin);
        s_set(p, "ipcns", ipc_pin);
        s_set(p, "utsns", uts_pin);
        s_set(p, "userns", user_pin);
        if (m->userns)
                json_object_object_add(p->doc, "userns_map",
                                       rm__pod_userns_json(&m->uids, &m->gids));
        s_set(p, "shm", m->host_ipc ? "/dev/shm" : shm);
        s_set(p, "hostname", hostname);
        p->state = RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_NOTREADY;
        pthread_mutex_unlock(&mgr->lock);
        if (rm__pod_save(mgr, p, err) < 0)
                return rm_error_wrap(err, "record pod sandbox %s", p->id);
        *u = (struct undo){.record = true,
                           .dirs = true,
                           .pins = {want[0], want[1], want[2], want[3]},
                           .shm = !m->host_ipc,
                           .net = !m->host_net,
                           .infra = m->share_pid,
                           .cgroup = cgroup_owned};
        rm_crashpoint("runpodsandbox.intent");

        if (rm_mkdir_p(dir, 0700, err) < 0 || rm_mkdir_p(sdir, 0700, err) < 0)
                return -1;

        struct rm_pinns_request pr = {
            .user = want[PIN_USER],
            .uids = m->uids,
            .gids = m->gids,
            .user_path = user_pin,
            .net = want[PIN_NET],
            .ipc = want[PIN_IPC],
            .uts = want[PIN_UTS],
            .net_path = net_pin,
            .ipc_path = ipc_pin,
            .uts_path = uts_pin,
            .hostname = hostname,
            .sysctls = sys,
            .n_sysctls = n_sys,
        };
        /* The pod's cgroup first: its containers and infra process go under it. */
        if (*parent && (lc->resources || lc->overhead) && mgr->hooks.pod_cgroup) {
                bool created = false;
                if (mgr->hooks.pod_cgroup(mgr->hooks.ctx, lc->cgroup_parent, lc->resources,
                                          lc->overhead, &created, err) < 0)
                        return rm_error_wrap(err, "linux.cgroup_parent");
                pthread_mutex_lock(&mgr->lock);
                json_object_object_add(p->doc, "pod_resources",
                                       rm__pod_resources_json(lc->overhead, lc->resources));
                pthread_mutex_unlock(&mgr->lock);
                rm_crashpoint("runpodsandbox.cgroup");
        }
        if (want[PIN_NET] || want[PIN_IPC] || want[PIN_USER] || n_sys) {
                if (rm_pinns_create(&pr, err) < 0)
                        return -1;
                rm_crashpoint("runpodsandbox.pins");
        }

        if (!m->host_ipc) {
                if (rm_mkdir_p(shm, 0755, err) < 0)
                        return -1;
                if (mount("shm", shm, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, SHM_OPTIONS) < 0)
                        return rm_error_sys(err, "mount the pod's /dev/shm at %s", shm);
                rm_crashpoint("runpodsandbox.shm");
        }

        /* The network, once its namespace exists, so addresses can go in /etc/hosts. */
        char *ips[RM_POD_MAX_IPS] = {NULL, NULL};
        size_t n_ips = 0;
        if (!m->host_net && mgr->hooks.net_setup) {
                int64_t t0 = mono_us();
                if (mgr->hooks.net_setup(mgr->hooks.ctx, p->id, c, net_pin, ips, &n_ips, err) < 0)
                        return rm_error_wrap(err, "pod network");
                note_net_time(mgr, p, "net_setup_us", t0);
                rm_crashpoint("runpodsandbox.network");
        }
        struct json_object *ipa = json_object_new_array();
        for (size_t i = 0; i < n_ips; i++) {
                json_object_array_add(ipa, json_object_new_string(ips[i]));
                free(ips[i]);
        }
        pthread_mutex_lock(&mgr->lock);
        json_object_object_add(p->doc, "ips", ipa);
        pthread_mutex_unlock(&mgr->lock);

        const char *primary =
            n_ips ? json_object_get_string(json_object_array_get_idx(ipa, 0)) : NULL;
        if (rm__pod_files_write(dir, c, hostname, primary, m->host_net, err) < 0)
                return -1;
        rm_crashpoint("runpodsandbox.files");

        if (m->share_pid) {
                struct rm_infra_request ir = {
                    .pod_id = p->id,
                    .netns_path = net_pin,
                    .ipcns_path = ipc_pin,
                    .utsns_path = uts_pin,
                    .userns_path = user_pin,
                    .uid_host = m->uids.host,
                    .uid_len = m->uids.len,
                    .gid_host = m->gids.host,
                    .gid_len = m->gids.len,
                    .cgroup_parent = c->linux ? c->linux->cgroup_parent : NULL,
                    .hostname = hostname,
                    .runtime_handler = req->runtime_handler ? req->runtime_handler : "",
                };
                pid_t pid = 0;
                if (mgr->hooks.infra_start(mgr->hooks.ctx, &ir, &pid, err) < 0)
                        return rm_error_wrap(err, "start the pod's infra process");
                pthread_mutex_lock(&mgr->lock);
                json_object_object_add(p->doc, "infra_pid", json_object_new_int(pid));
                pthread_mutex_unlock(&mgr->lock);
                rm_crashpoint("runpodsandbox.infra");
        }
        return 0;
}

static int setup_pod(struct rm_sandbox_manager *mgr, struct pod *p,
                     const Runtime__V1__RunPodSandboxRequest *req, struct undo *u,
                     struct rm_error **err)
{
        const Runtime__V1__PodSandboxConfig *c = req->config;
        const Runtime__V1__LinuxSandboxSecurityContext *sc =
            c->linux ? c->linux->security_context : NULL;
        const Runtime__V1__NamespaceOption *ns = sc ? sc->namespace_options : NULL;
        struct pod_modes m = {
            .host_net = mode_is(ns, 0, RUNTIME__V1__NAMESPACE_MODE__NODE),
            .host_ipc = mode_is(ns, 1, RUNTIME__V1__NAMESPACE_MODE__NODE),
            .share_pid = mode_is(ns, 2, RUNTIME__V1__NAMESPACE_MODE__POD),
        };
        if (rm__pod_userns_parse(ns, &m.userns, &m.uids, &m.gids, err) < 0)
                return -1;
        if (m.userns && mgr->hooks.userns_unavailable)
                return rm_error_set(err, RM_FAILED_PRECONDITION,
                                    "namespace_options.userns_options mode POD: this host cannot "
                                    "give pods their own user namespace: %s",
                                    mgr->hooks.userns_unavailable);
        if (ns && ns->pid == RUNTIME__V1__NAMESPACE_MODE__TARGET)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "namespace_options.pid TARGET applies to containers, not pods");
        if (m.share_pid && mgr->hooks.infra_start == NULL)
                return rm_error_set(err, RM_UNIMPLEMENTED,
                                    "namespace_options.pid POD (one PID namespace for the pod) "
                                    "needs remora's infra process, which this build cannot start; "
                                    "use CONTAINER");

        /* Sysctls, normalized and checked before anything is made. */
        size_t n_sys = c->linux ? c->linux->n_sysctls : 0;
        cleanup_free struct rm_sysctl *sys = xzalloc(sizeof(*sys) * (n_sys + 1));
        cleanup_free char **names = xzalloc(sizeof(char *) * (n_sys + 1));
        int rc = 0;
        for (size_t i = 0; i < n_sys && rc == 0; i++) {
                names[i] = rm__sysctl_normalize(c->linux->sysctls[i]->key, err);
                if (names[i] == NULL || rm__sysctl_check(names[i], c->linux->sysctls[i]->value,
                                                         m.host_net, m.host_ipc, err) < 0)
                        rc = rm_error_wrap(err, "config.linux.sysctls");
                sys[i].key = names[i];
                sys[i].value = c->linux->sysctls[i]->value;
        }
        if (rc == 0)
                rc = make_pod(mgr, p, req, sys, n_sys, &m, u, err);
        for (size_t i = 0; i < n_sys; i++)
                free(names[i]);
        return rc;
}

static void set_namespaces(struct pod *p, const Runtime__V1__PodSandboxConfig *c)
{
        const Runtime__V1__LinuxSandboxSecurityContext *sc =
            c->linux ? c->linux->security_context : NULL;
        const Runtime__V1__NamespaceOption *ns = sc ? sc->namespace_options : NULL;
        json_object_object_add(p->doc, "privileged", json_object_new_boolean(sc && sc->privileged));
        json_object_object_add(p->doc, "ns_network", json_object_new_int(ns ? ns->network : 0));
        json_object_object_add(p->doc, "ns_pid", json_object_new_int(ns ? ns->pid : 0));
        json_object_object_add(p->doc, "ns_ipc", json_object_new_int(ns ? ns->ipc : 0));
}

static int exists_error(const Runtime__V1__PodSandboxMetadata *m, const char *id, const char *why,
                        struct rm_error **err)
{
        return rm_error_set(err, RM_ALREADY_EXISTS,
                            "pod %s/%s (uid %s, attempt %u) already exists as pod sandbox %s%s; "
                            "remove it first",
                            m->namespace_, m->name, m->uid, m->attempt, id, why);
}

/* Reserve (name, namespace, uid, attempt), or find the pod an identical request made
 * (*existing, while that pod is being made or is ready): whether the retry gets it
 * depends on what became of the first answer. */
static struct pod *reserve(struct rm_sandbox_manager *mgr,
                           const Runtime__V1__RunPodSandboxRequest *req, uint64_t hash,
                           char **existing, struct rm_error **err)
{
        const Runtime__V1__PodSandboxConfig *c = req->config;
        const Runtime__V1__PodSandboxMetadata *m = c->metadata;
        pthread_mutex_lock(&mgr->lock);
        for (size_t i = 0; i < mgr->n; i++) {
                struct pod *o = mgr->pods[i];
                if (strcmp(s_get(o, "name"), m->name) != 0 ||
                    strcmp(s_get(o, "namespace"), m->namespace_) != 0 ||
                    strcmp(s_get(o, "uid"), m->uid) != 0 || i_get(o, "attempt") != m->attempt)
                        continue;
                struct json_object *h = o_get(o, "request_hash");
                if (h && json_object_get_uint64(h) == hash &&
                    (o->creating || o->state == RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY))
                        *existing = xstrdup(o->id);
                else
                        exists_error(m, o->id, "", err);
                pthread_mutex_unlock(&mgr->lock);
                return NULL;
        }
        struct pod *p = xzalloc(sizeof(*p));
        pthread_mutex_init(&p->op, NULL);
        rm_id_new(p->id);
        p->creating = true;
        p->refs = 1;
        p->state = RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY;
        p->doc = json_object_new_object();
        s_set(p, "name", m->name);
        s_set(p, "namespace", m->namespace_);
        s_set(p, "uid", m->uid);
        json_object_object_add(p->doc, "attempt", json_object_new_int64(m->attempt));
        json_object_object_add(p->doc, "request_hash", json_object_new_uint64(hash));
        json_object_object_add(p->doc, "created_at", json_object_new_int64(now_ns()));
        s_set(p, "runtime_handler", req->runtime_handler);
        s_set(p, "log_directory", c->log_directory);
        s_set(p, "cgroup_parent", c->linux ? c->linux->cgroup_parent : "");
        set_namespaces(p, c);
        json_object_object_add(p->doc, "labels",
                               rm__pod_map_json(c->n_labels, (void *const *)c->labels));
        json_object_object_add(p->doc, "annotations",
                               rm__pod_map_json(c->n_annotations, (void *const *)c->annotations));
        json_object_object_add(p->doc, "config", rm__pod_config_json(c));
        mgr->pods = xrealloc(mgr->pods, sizeof(*mgr->pods) * (mgr->n + 1));
        mgr->pods[mgr->n++] = p;
        rm_answers_begin(mgr->answers, p->id); /* ended by rm_sandbox_answered */
        pthread_mutex_unlock(&mgr->lock);
        return p;
}

/* An identical RunPodSandbox found pod id: 0 with *id when the first answer never reached
 * its client, 1 when the pod went meanwhile (reserve again), -1 ALREADY_EXISTS. */
static int retried(struct rm_sandbox_manager *mgr, const Runtime__V1__PodSandboxMetadata *m,
                   char *existing, const struct rm_cancel *cancel, char **id, struct rm_error **err)
{
        enum rm_answer a = rm_answers_claim(mgr->answers, existing, cancel, ANSWER_WAIT_MS);
        pthread_mutex_lock(&mgr->lock);
        struct pod *o = NULL;
        for (size_t i = 0; i < mgr->n && o == NULL; i++)
                o = strcmp(mgr->pods[i]->id, existing) == 0 ? mgr->pods[i] : NULL;
        bool ready = o && !o->creating && o->state == RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY;
        pthread_mutex_unlock(&mgr->lock);
        if (o == NULL) {
                rm_answers_forget(mgr->answers, existing);
                free(existing);
                return 1; /* its create failed */
        }
        if (a == RM_ANSWER_LOST && ready) {
                rm_log_info("RunPodSandbox retried for %s/%s after its answer was lost: "
                            "returning %s",
                            m->namespace_, m->name, existing);
                *id = existing;
                return 0;
        }
        if (a == RM_ANSWER_LOST)
                rm_answers_end(mgr->answers, existing, false);
        exists_error(m, existing,
                     a == RM_ANSWER_PENDING
                         ? " (an identical earlier call is still making or answering it)"
                     : ready ? " (an identical earlier call already returned it)"
                             : "",
                     err);
        free(existing);
        return -1;
}

int rm_sandbox_run(struct rm_sandbox_manager *mgr, const Runtime__V1__RunPodSandboxRequest *req,
                   const struct rm_cancel *cancel, char **id, struct rm_error **err)
{
        if (rm__pod_config_check(req->config, err) < 0)
                return -1;
        uint64_t hash = request_hash(req);
        struct pod *p = NULL;
        while (p == NULL) {
                char *existing = NULL;
                p = reserve(mgr, req, hash, &existing, err);
                if (p)
                        break;
                int rc =
                    existing ? retried(mgr, req->config->metadata, existing, cancel, id, err) : -1;
                if (rc <= 0)
                        return rc;
        }
        struct undo u = {0};
        pthread_mutex_lock(&p->op);
        int rc = setup_pod(mgr, p, req, &u, err);
        if (rc == 0) {
                pthread_mutex_lock(&mgr->lock);
                json_object_object_del(p->doc, "run_pending");
                p->state = RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY;
                pthread_mutex_unlock(&mgr->lock);
                rc = rm__pod_save(mgr, p, err);
                if (rc < 0) {
                        pthread_mutex_lock(&mgr->lock);
                        p->state = RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_NOTREADY;
                        pthread_mutex_unlock(&mgr->lock);
                }
        }
        if (rc < 0)
                rm__pod_rollback(mgr, p, &u);
        else
                rm_crashpoint("runpodsandbox.saved");
        pthread_mutex_unlock(&p->op);
        pthread_mutex_lock(&mgr->lock);
        p->creating = false;
        p->refs--;
        if (rc < 0) {
                rm_answers_forget(mgr->answers, p->id);
                drop_locked(mgr, p);
        } else {
                *id = xstrdup(p->id);
                rm_log_info("pod sandbox %s (%s/%s) is ready", p->id, s_get(p, "namespace"),
                            s_get(p, "name"));
        }
        pthread_mutex_unlock(&mgr->lock);
        return rc;
}

void rm_sandbox_answered(struct rm_sandbox_manager *mgr, const char *id, bool delivered)
{
        rm_answers_end(mgr->answers, id, delivered);
}

/* ---- stop and remove ---- */

/* Tear down what a stopped pod no longer needs: infra process, network, pins, shm. Each
 * step is idempotent, so start-up can run it again for a stop a crash cut off. */
static int teardown(struct rm_sandbox_manager *mgr, struct pod *p, struct rm_error **err)
{
        if ((i_get(p, "infra_pid") || i_get(p, "infra")) && mgr->hooks.infra_stop &&
            mgr->hooks.infra_stop(mgr->hooks.ctx, p->id, err) < 0)
                return rm_error_wrap(err, "stop pod sandbox %s: infra process", p->id);
        rm_crashpoint("stoppodsandbox.infra");
        const char *netns = s_get(p, "netns");
        if (*netns && mgr->hooks.net_teardown) {
                int64_t t0 = mono_us();
                if (mgr->hooks.net_teardown(mgr->hooks.ctx, p->id, netns, err) < 0)
                        return rm_error_wrap(err, "stop pod sandbox %s: network", p->id);
                note_net_time(mgr, p, "net_teardown_us", t0);
        }
        rm_crashpoint("stoppodsandbox.network");
        for (int k = 0; k < N_PINS; k++) {
                const char *pin = s_get(p, rm__pin_kinds[k]);
                if (*pin)
                        rm_pinns_unpin(pin);
        }
        rm_crashpoint("stoppodsandbox.pins");
        const char *shm = s_get(p, "shm");
        if (*shm && strcmp(shm, "/dev/shm") != 0)
                rm__unmount_shm(shm);
        return 0;
}

int rm__pod_teardown(struct rm_sandbox_manager *mgr, struct pod *p, struct rm_error **err)
{
        return teardown(mgr, p, err);
}

/* NOTREADY is recorded before anything is torn down: a crash part-way leaves a NOTREADY
 * pod, whose remaining parts start-up removes, never a READY pod missing some. */
static int stop_locked(struct rm_sandbox_manager *mgr, struct pod *p, struct rm_error **err)
{
        pthread_mutex_lock(&mgr->lock);
        bool ready = p->state == RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY;
        p->state = RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_NOTREADY;
        pthread_mutex_unlock(&mgr->lock);
        if (ready && rm__pod_save(mgr, p, err) < 0) {
                pthread_mutex_lock(&mgr->lock);
                p->state = RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY;
                pthread_mutex_unlock(&mgr->lock);
                return rm_error_wrap(err, "stop pod sandbox %s", p->id);
        }
        if (ready)
                rm_crashpoint("stoppodsandbox.intent");
        /* Torn down again when already NOTREADY: a stop cut off by a failure goes on. */
        if (teardown(mgr, p, err) < 0)
                return -1;
        if (ready)
                rm_log_info("pod sandbox %s stopped", p->id);
        return 0;
}

int rm_sandbox_stop(struct rm_sandbox_manager *mgr, const char *id, struct rm_error **err)
{
        struct pod *p = get(mgr, id, err);
        if (p == NULL)
                return -1;
        pthread_mutex_lock(&p->op);
        int rc = stop_locked(mgr, p, err);
        pthread_mutex_unlock(&p->op);
        put(mgr, p);
        return rc;
}

int rm_sandbox_remove(struct rm_sandbox_manager *mgr, const char *id, struct rm_error **err)
{
        struct rm_error *lookup = NULL;
        struct pod *p = get(mgr, id, &lookup);
        if (p == NULL) {
                if (lookup->code == RM_NOT_FOUND) {
                        rm_error_free(lookup);
                        return 0;
                }
                *err = lookup;
                return -1;
        }
        pthread_mutex_lock(&p->op);
        /* Each step is idempotent and the record goes last: a crash part-way leaves a
         * NOTREADY pod that a repeated RemovePodSandbox finishes. */
        int rc = stop_locked(mgr, p, err);
        rm_crashpoint("removepodsandbox.stopped");
        if (rc == 0 && (i_get(p, "infra_pid") || i_get(p, "infra")) && mgr->hooks.infra_remove &&
            mgr->hooks.infra_remove(mgr->hooks.ctx, p->id, err) < 0)
                rc = rm_error_wrap(err, "remove pod sandbox %s: infra process", p->id);
        rm_crashpoint("removepodsandbox.infra");
        cleanup_free char *dir = xasprintf("%s/%s", mgr->dir, p->id);
        cleanup_free char *sdir = xasprintf("%s/%s", mgr->state, p->id);
        if (rc == 0 && (rm_remove_tree(sdir, err) < 0 || rm_remove_tree(dir, err) < 0))
                rc = -1;
        rm_crashpoint("removepodsandbox.dirs");
        if (rc == 0 && rm__pod_cgroup_owned(p) && mgr->hooks.pod_cgroup_remove)
                mgr->hooks.pod_cgroup_remove(mgr->hooks.ctx, s_get(p, "cgroup_parent"));
        rm_crashpoint("removepodsandbox.cgroup");
        if (rc == 0)
                rc = rm_store_delete(mgr->store, POD_KIND, p->id, err);
        if (rc == 0)
                rm_crashpoint("removepodsandbox.record");
        pthread_mutex_unlock(&p->op);
        if (rc == 0) {
                pthread_mutex_lock(&mgr->lock);
                rm_log_info("pod sandbox %s removed", p->id);
                rm_answers_forget(mgr->answers, p->id);
                drop_locked(mgr, p);
                pthread_mutex_unlock(&mgr->lock);
        }
        put(mgr, p);
        return rc;
}

bool rm__pod_cgroup_owned(const struct pod *p)
{
        struct json_object *v = o_get(p, "cgroup_owned");
        if (v == NULL)
                v = o_get(p, "cgroup_created"); /* records written before cgroup_owned */
        return v && json_object_get_boolean(v) && *s_get(p, "cgroup_parent");
}

/* ---- queries ---- */

static Runtime__V1__PodSandboxMetadata *metadata(const struct pod *p, struct rm_arena *a)
{
        Runtime__V1__PodSandboxMetadata *m = rm_arena_alloc(a, sizeof(*m));
        runtime__v1__pod_sandbox_metadata__init(m);
        m->name = rm_arena_strdup(a, s_get(p, "name"));
        m->namespace_ = rm_arena_strdup(a, s_get(p, "namespace"));
        m->uid = rm_arena_strdup(a, s_get(p, "uid"));
        m->attempt = (uint32_t)i_get(p, "attempt");
        return m;
}

static Runtime__V1__PodSandboxNetworkStatus *network_status(const struct pod *p, struct rm_arena *a)
{
        Runtime__V1__PodSandboxNetworkStatus *net = rm_arena_alloc(a, sizeof(*net));
        runtime__v1__pod_sandbox_network_status__init(net);
        struct json_object *ips = o_get(p, "ips");
        size_t n = ips && p->state == RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY
                       ? json_object_array_length(ips)
                       : 0;
        net->ip =
            rm_arena_strdup(a, n ? json_object_get_string(json_object_array_get_idx(ips, 0)) : "");
        if (n > 1) {
                net->n_additional_ips = n - 1;
                net->additional_ips = (Runtime__V1__PodIP **)rm_arena_ptrs(a, n - 1);
                for (size_t i = 1; i < n; i++) {
                        Runtime__V1__PodIP *ip = rm_arena_alloc(a, sizeof(*ip));
                        runtime__v1__pod_ip__init(ip);
                        ip->ip = rm_arena_strdup(
                            a, json_object_get_string(json_object_array_get_idx(ips, i)));
                        net->additional_ips[i - 1] = ip;
                }
        }
        return net;
}

static Runtime__V1__LinuxPodSandboxStatus *linux_status(const struct pod *p, struct rm_arena *a)
{
        Runtime__V1__NamespaceOption *opt = rm_arena_alloc(a, sizeof(*opt));
        runtime__v1__namespace_option__init(opt);
        opt->network = (Runtime__V1__NamespaceMode)i_get(p, "ns_network");
        opt->pid = (Runtime__V1__NamespaceMode)i_get(p, "ns_pid");
        opt->ipc = (Runtime__V1__NamespaceMode)i_get(p, "ns_ipc");
        opt->userns_options = rm__pod_userns_status(o_get(p, "userns_map"), a);
        Runtime__V1__Namespace *ns = rm_arena_alloc(a, sizeof(*ns));
        runtime__v1__namespace__init(ns);
        ns->options = opt;
        Runtime__V1__LinuxPodSandboxStatus *lx = rm_arena_alloc(a, sizeof(*lx));
        runtime__v1__linux_pod_sandbox_status__init(lx);
        lx->namespaces = ns;
        return lx;
}

static Runtime__V1__PodSandboxStatusResponse__InfoEntry *verbose_info(const struct pod *p,
                                                                      struct rm_arena *a)
{
        cleanup_json struct json_object *o = json_object_new_object();
        json_object_object_add(o, "pid", json_object_new_int((int)i_get(p, "infra_pid")));
        json_object_object_add(o, "netnsPath", json_object_new_string(s_get(p, "netns")));
        json_object_object_add(o, "hostname", json_object_new_string(s_get(p, "hostname")));
        json_object_object_add(o, "cgroupParent",
                               json_object_new_string(s_get(p, "cgroup_parent")));
        json_object_object_add(o, "config", json_object_get(o_get(p, "config")));
        if (o_get(p, "pod_resources"))
                json_object_object_add(o, "podResources",
                                       json_object_get(o_get(p, "pod_resources")));
        /* microseconds the pod's network setup and teardown took, once they have run */
        static const char *const timings[][2] = {{"net_setup_us", "networkSetupMicros"},
                                                 {"net_teardown_us", "networkTeardownMicros"}};
        for (size_t i = 0; i < 2; i++)
                if (o_get(p, timings[i][0]))
                        json_object_object_add(o, timings[i][1],
                                               json_object_new_int64(i_get(p, timings[i][0])));
        Runtime__V1__PodSandboxStatusResponse__InfoEntry *e = rm_arena_alloc(a, sizeof(*e));
        runtime__v1__pod_sandbox_status_response__info_entry__init(e);
        e->key = "info";
        e->value =
            rm_arena_strdup(a, json_object_to_json_string_ext(
                                   o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        return e;
}

static Runtime__V1__PodSandboxStatusResponse *status_of(const struct pod *p, bool verbose,
                                                        struct rm_arena *a)
{
        Runtime__V1__PodSandboxStatus *s = rm_arena_alloc(a, sizeof(*s));
        runtime__v1__pod_sandbox_status__init(s);
        s->id = rm_arena_strdup(a, p->id);
        s->metadata = metadata(p, a);
        s->state = p->state;
        s->created_at = i_get(p, "created_at");
        s->runtime_handler = rm_arena_strdup(a, s_get(p, "runtime_handler"));
        s->labels = (Runtime__V1__PodSandboxStatus__LabelsEntry **)rm_pb_map_from_json(
            a, &runtime__v1__pod_sandbox_status__labels_entry__descriptor, o_get(p, "labels"),
            &s->n_labels);
        s->annotations = (Runtime__V1__PodSandboxStatus__AnnotationsEntry **)rm_pb_map_from_json(
            a, &runtime__v1__pod_sandbox_status__annotations_entry__descriptor,
            o_get(p, "annotations"), &s->n_annotations);
        s->network = network_status(p, a);
        s->linux = linux_status(p, a);

        Runtime__V1__PodSandboxStatusResponse *r = rm_arena_alloc(a, sizeof(*r));
        runtime__v1__pod_sandbox_status_response__init(r);
        r->status = s;
        r->timestamp = now_ns();
        if (verbose) {
                r->n_info = 1;
                r->info = (Runtime__V1__PodSandboxStatusResponse__InfoEntry **)rm_arena_ptrs(a, 1);
                r->info[0] = verbose_info(p, a);
        }
        return r;
}

Runtime__V1__PodSandboxStatusResponse *rm_sandbox_status(struct rm_sandbox_manager *mgr,
                                                         const char *id, bool verbose,
                                                         struct rm_arena *a, struct rm_error **err)
{
        pthread_mutex_lock(&mgr->lock);
        struct pod *p = find_locked(mgr, id ? id : "", err);
        Runtime__V1__PodSandboxStatusResponse *r = p ? status_of(p, verbose, a) : NULL;
        pthread_mutex_unlock(&mgr->lock);
        return r;
}

static bool matches(const struct pod *p, const Runtime__V1__PodSandboxFilter *f)
{
        if (p->creating)
                return false;
        if (f == NULL)
                return true;
        if (f->id && *f->id && strncmp(p->id, f->id, strlen(f->id)) != 0)
                return false;
        if (f->state && f->state->state != p->state)
                return false;
        struct json_object *labels = o_get(p, "labels");
        for (size_t i = 0; i < f->n_label_selector; i++) {
                struct json_object *v = NULL;
                if (!json_object_object_get_ex(labels, f->label_selector[i]->key, &v) ||
                    strcmp(json_object_get_string(v), f->label_selector[i]->value) != 0)
                        return false;
        }
        return true;
}

static Runtime__V1__PodSandbox *summary(const struct pod *p, struct rm_arena *a)
{
        Runtime__V1__PodSandbox *s = rm_arena_alloc(a, sizeof(*s));
        runtime__v1__pod_sandbox__init(s);
        s->id = rm_arena_strdup(a, p->id);
        s->metadata = metadata(p, a);
        s->state = p->state;
        s->created_at = i_get(p, "created_at");
        s->runtime_handler = rm_arena_strdup(a, s_get(p, "runtime_handler"));
        s->labels = (Runtime__V1__PodSandbox__LabelsEntry **)rm_pb_map_from_json(
            a, &runtime__v1__pod_sandbox__labels_entry__descriptor, o_get(p, "labels"),
            &s->n_labels);
        s->annotations = (Runtime__V1__PodSandbox__AnnotationsEntry **)rm_pb_map_from_json(
            a, &runtime__v1__pod_sandbox__annotations_entry__descriptor, o_get(p, "annotations"),
            &s->n_annotations);
        return s;
}

Runtime__V1__ListPodSandboxResponse *rm_sandbox_list(struct rm_sandbox_manager *mgr,
                                                     const Runtime__V1__PodSandboxFilter *f,
                                                     struct rm_arena *a)
{
        Runtime__V1__ListPodSandboxResponse *r = rm_arena_alloc(a, sizeof(*r));
        runtime__v1__list_pod_sandbox_response__init(r);
        pthread_mutex_lock(&mgr->lock);
        r->items = (Runtime__V1__PodSandbox **)rm_arena_ptrs(a, mgr->n ? mgr->n : 1);
        for (size_t i = 0; i < mgr->n; i++) {
                if (matches(mgr->pods[i], f))
                        r->items[r->n_items++] = summary(mgr->pods[i], a);
        }
        pthread_mutex_unlock(&mgr->lock);
        return r;
}

struct list_ctx {
        const Runtime__V1__PodSandboxFilter *f;
        struct rm_arena *a; /* for repacking, made on the first one */
};

static ProtobufCMessage *summary_of(const void *obj, struct rm_arena *a)
{
        return &summary(obj, a)->base;
}

static const struct rm_pb_packed *list_item(void *obj, void *ctx)
{
        struct pod *p = obj;
        struct list_ctx *l = ctx;
        if (!matches(p, l->f))
                return NULL;
        return rm_pb_packed_fresh(&p->summary, (int)p->state, summary_of, p, &l->a);
}

uint8_t *rm_sandbox_list_packed(struct rm_sandbox_manager *mgr,
                                const Runtime__V1__PodSandboxFilter *f, size_t *len)
{
        struct list_ctx l = {f, NULL};
        pthread_mutex_lock(&mgr->lock);
        uint8_t *out = rm_pb_list_build((void *const *)mgr->pods, mgr->n, list_item, &l, len);
        pthread_mutex_unlock(&mgr->lock);
        rm_arena_free(l.a);
        return out;
}

static const char *or_null(struct rm_arena *a, const char *s)
{
        return s && *s ? rm_arena_strdup(a, s) : NULL;
}

int rm_sandbox_view(struct rm_sandbox_manager *mgr, const char *id, struct rm_arena *a,
                    struct rm_sandbox_view *out, struct rm_error **err)
{
        pthread_mutex_lock(&mgr->lock);
        struct pod *p = find_locked(mgr, id ? id : "", err);
        if (p == NULL) {
                pthread_mutex_unlock(&mgr->lock);
                return -1;
        }
        memset(out, 0, sizeof(*out));
        out->id = rm_arena_strdup(a, p->id);
        out->ready = p->state == RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY;
        out->log_directory = rm_arena_strdup(a, s_get(p, "log_directory"));
        out->runtime_handler = rm_arena_strdup(a, s_get(p, "runtime_handler"));
        out->hostname = rm_arena_strdup(a, s_get(p, "hostname"));
        out->netns_path = or_null(a, s_get(p, "netns"));
        out->ipcns_path = or_null(a, s_get(p, "ipcns"));
        out->utsns_path = or_null(a, s_get(p, "utsns"));
        out->userns_path = or_null(a, s_get(p, "userns"));
        struct rm_idrange uids, gids;
        if (out->userns_path && rm__pod_userns_from_json(o_get(p, "userns_map"), &uids, &gids)) {
                out->uid_host = uids.host;
                out->uid_len = uids.len;
                out->gid_host = gids.host;
                out->gid_len = gids.len;
        }
        int infra = (int)i_get(p, "infra_pid");
        out->pidns_path = infra > 0 ? rm_arena_printf(a, "/proc/%d/ns/pid", infra) : NULL;
        out->hostname_file = rm_arena_printf(a, "%s/%s/hostname", mgr->dir, p->id);
        out->hosts_file = rm_arena_printf(a, "%s/%s/hosts", mgr->dir, p->id);
        out->resolv_file = rm_arena_printf(a, "%s/%s/resolv.conf", mgr->dir, p->id);
        out->shm_dir = or_null(a, s_get(p, "shm"));
        out->cgroup_parent = or_null(a, s_get(p, "cgroup_parent"));
        struct json_object *priv = o_get(p, "privileged");
        out->privileged = priv && json_object_get_boolean(priv);
        pthread_mutex_unlock(&mgr->lock);
        return 0;
}

char *rm_sandbox_resolve(struct rm_sandbox_manager *mgr, const char *id, struct rm_error **err)
{
        pthread_mutex_lock(&mgr->lock);
        struct pod *p = find_locked(mgr, id ? id : "", err);
        char *full = p ? xstrdup(p->id) : NULL;
        pthread_mutex_unlock(&mgr->lock);
        return full;
}
