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
#include "remora/cleanup.h"
#include "remora/pbmap.h"
#include "remora/confsect.h"
#include "remora/fsutil.h"
#include "remora/ids.h"
#include "remora/log.h"
#include "remora/pbcanon.h"
#include "remora/sandbox.h"
#include "remora/xalloc.h"
#include "sandbox_internal.h"

enum { PIN_NET, PIN_IPC, PIN_UTS };
static const char *const pin_kinds[] = {"netns", "ipcns", "utsns"};

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

/* ---- record fields ---- */

static struct json_object *o_get(const struct pod *p, const char *key)
{
        struct json_object *v = NULL;
        return json_object_object_get_ex(p->doc, key, &v) ? v : NULL;
}

static const char *s_get(const struct pod *p, const char *key)
{
        struct json_object *v = o_get(p, key);
        return v ? json_object_get_string(v) : "";
}

static int64_t i_get(const struct pod *p, const char *key)
{
        struct json_object *v = o_get(p, key);
        return v ? json_object_get_int64(v) : 0;
}

static void s_set(struct pod *p, const char *key, const char *v)
{
        json_object_object_add(p->doc, key, json_object_new_string(v ? v : ""));
}

static void pod_free(struct pod *p)
{
        json_object_put(p->doc);
        pthread_mutex_destroy(&p->op);
        free(p);
}

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
                pod_free(p);
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
                pod_free(p);
}

static int save(struct rm_sandbox_manager *mgr, struct pod *p, struct rm_error **err)
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

int rm__pod_save(struct rm_sandbox_manager *mgr, struct pod *p, struct rm_error **err)
{
        return save(mgr, p, err);
}

/* ---- directories and mounts ---- */

static char *pin_path(const struct rm_sandbox_manager *mgr, int kind, const char *id)
{
        return xasprintf("%s/%s", mgr->pins[kind], id);
}

/* True when path is a live namespace pin (a bind mount of an nsfs file). */
static bool pinned(const char *path)
{
        struct statfs fs;
        return path && *path && statfs(path, &fs) == 0 && fs.f_type == NSFS_MAGIC;
}

static void unmount_shm(const char *dir)
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

static struct json_object *map_json(size_t n, void *const *entries)
{
        struct json_object *o = json_object_new_object();
        for (size_t i = 0; i < n; i++) {
                const Runtime__V1__PodSandboxConfig__LabelsEntry *e = entries[i];
                json_object_object_add(o, e->key, json_object_new_string(e->value ? e->value : ""));
        }
        return o;
}

static struct json_object *strings_json(char *const *v, size_t n)
{
        struct json_object *a = json_object_new_array();
        for (size_t i = 0; i < n; i++)
                json_object_array_add(a, json_object_new_string(v[i]));
        return a;
}

/* The parts of the config Status' verbose info shows, as JSON. */
static struct json_object *config_json(const Runtime__V1__PodSandboxConfig *c)
{
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "hostname",
                               json_object_new_string(c->hostname ? c->hostname : ""));
        json_object_object_add(o, "log_directory",
                               json_object_new_string(c->log_directory ? c->log_directory : ""));
        struct json_object *dns = json_object_new_object();
        if (c->dns_config) {
                const Runtime__V1__DNSConfig *d = c->dns_config;
                json_object_object_add(dns, "servers", strings_json(d->servers, d->n_servers));
                json_object_object_add(dns, "searches", strings_json(d->searches, d->n_searches));
                json_object_object_add(dns, "options", strings_json(d->options, d->n_options));
        }
        json_object_object_add(o, "dns", dns);
        struct json_object *ports = json_object_new_array();
        for (size_t i = 0; i < c->n_port_mappings; i++) {
                const Runtime__V1__PortMapping *p = c->port_mappings[i];
                struct json_object *m = json_object_new_object();
                json_object_object_add(m, "protocol", json_object_new_int(p->protocol));
                json_object_object_add(m, "container_port", json_object_new_int(p->container_port));
                json_object_object_add(m, "host_port", json_object_new_int(p->host_port));
                json_object_object_add(m, "host_ip",
                                       json_object_new_string(p->host_ip ? p->host_ip : ""));
                json_object_array_add(ports, m);
        }
        json_object_object_add(o, "port_mappings", ports);
        struct json_object *sysctls = json_object_new_object();
        for (size_t i = 0; c->linux && i < c->linux->n_sysctls; i++)
                json_object_object_add(sysctls, c->linux->sysctls[i]->key,
                                       json_object_new_string(c->linux->sysctls[i]->value));
        json_object_object_add(o, "sysctls", sysctls);
        return o;
}

/* What a failed run must undo, in reverse order. */
struct undo {
        bool dirs, pins[3], shm, net, infra, cgroup;
};

static void warn_undo(struct pod *p, struct rm_error **e)
{
        rm_log_warn("pod %s: undoing a failed run: %s", p->id, (*e)->msg);
        rm_error_free(*e);
        *e = NULL;
}

static void rollback(struct rm_sandbox_manager *mgr, struct pod *p, const struct undo *u)
{
        struct rm_error *e = NULL;
        if (u->infra && mgr->hooks.infra_remove(mgr->hooks.ctx, p->id, &e) < 0)
                warn_undo(p, &e);
        if (u->cgroup)
                mgr->hooks.pod_cgroup_remove(mgr->hooks.ctx, s_get(p, "cgroup_parent"));
        if (u->net && mgr->hooks.net_teardown(mgr->hooks.ctx, p->id, s_get(p, "netns"), &e) < 0)
                warn_undo(p, &e);
        if (u->shm)
                unmount_shm(s_get(p, "shm"));
        for (int k = 0; k < 3; k++) {
                if (u->pins[k]) {
                        cleanup_free char *path = pin_path(mgr, k, p->id);
                        rm_pinns_unpin(path);
                }
        }
        if (u->dirs) {
                cleanup_free char *dir = xasprintf("%s/%s", mgr->dir, p->id);
                cleanup_free char *sdir = xasprintf("%s/%s", mgr->state, p->id);
                if (rm_remove_tree(sdir, &e) < 0 || rm_remove_tree(dir, &e) < 0)
                        warn_undo(p, &e);
        }
}

/* How the pod uses the host's namespaces. */
struct pod_modes {
        bool host_net, host_ipc, share_pid;
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
        bool want[3] = {!m->host_net, !m->host_ipc, !m->host_net};
        cleanup_free char *net_pin = want[PIN_NET] ? pin_path(mgr, PIN_NET, p->id) : NULL;
        cleanup_free char *ipc_pin = want[PIN_IPC] ? pin_path(mgr, PIN_IPC, p->id) : NULL;
        cleanup_free char *uts_pin = want[PIN_UTS] ? pin_path(mgr, PIN_UTS, p->id) : NULL;
        if (rm_mkdir_p(dir, 0700, err) < 0 || rm_mkdir_p(sdir, 0700, err) < 0)
                return -1;
        u->dirs = true;

        struct rm_pinns_request pr = {
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
        const Runtime__V1__LinuxPodSandboxConfig *lc = c->linux;
        if (lc && lc->cgroup_parent && *lc->cgroup_parent && (lc->resources || lc->overhead) &&
            mgr->hooks.pod_cgroup) {
                bool created = false;
                if (mgr->hooks.pod_cgroup(mgr->hooks.ctx, lc->cgroup_parent, lc->resources,
                                          lc->overhead, &created, err) < 0)
                        return rm_error_wrap(err, "linux.cgroup_parent");
                u->cgroup = created;
                pthread_mutex_lock(&mgr->lock);
                json_object_object_add(p->doc, "cgroup_created", json_object_new_boolean(created));
                json_object_object_add(p->doc, "pod_resources",
                                       rm__pod_resources_json(lc->overhead, lc->resources));
                pthread_mutex_unlock(&mgr->lock);
        }
        if (want[PIN_NET] || want[PIN_IPC] || n_sys) {
                if (rm_pinns_create(&pr, err) < 0)
                        return -1;
                for (int k = 0; k < 3; k++)
                        u->pins[k] = want[k];
        }
        pthread_mutex_lock(&mgr->lock);
        s_set(p, "netns", net_pin);
        s_set(p, "ipcns", ipc_pin);
        s_set(p, "utsns", uts_pin);
        s_set(p, "shm", m->host_ipc ? "/dev/shm" : shm);
        s_set(p, "hostname", hostname);
        pthread_mutex_unlock(&mgr->lock);

        if (!m->host_ipc) {
                if (rm_mkdir_p(shm, 0755, err) < 0)
                        return -1;
                if (mount("shm", shm, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, SHM_OPTIONS) < 0)
                        return rm_error_sys(err, "mount the pod's /dev/shm at %s", shm);
                u->shm = true;
        }

        /* The network, once its namespace exists, so addresses can go in /etc/hosts. */
        char *ips[RM_POD_MAX_IPS] = {NULL, NULL};
        size_t n_ips = 0;
        if (!m->host_net && mgr->hooks.net_setup) {
                int64_t t0 = mono_us();
                if (mgr->hooks.net_setup(mgr->hooks.ctx, p->id, c, net_pin, ips, &n_ips, err) < 0)
                        return rm_error_wrap(err, "pod network");
                u->net = true;
                note_net_time(mgr, p, "net_setup_us", t0);
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

        if (m->share_pid) {
                struct rm_infra_request ir = {
                    .pod_id = p->id,
                    .netns_path = net_pin,
                    .ipcns_path = ipc_pin,
                    .utsns_path = uts_pin,
                    .cgroup_parent = c->linux ? c->linux->cgroup_parent : NULL,
                    .hostname = hostname,
                    .runtime_handler = req->runtime_handler ? req->runtime_handler : "",
                };
                pid_t pid = 0;
                if (mgr->hooks.infra_start(mgr->hooks.ctx, &ir, &pid, err) < 0)
                        return rm_error_wrap(err, "start the pod's infra process");
                u->infra = true;
                pthread_mutex_lock(&mgr->lock);
                json_object_object_add(p->doc, "infra_pid", json_object_new_int(pid));
                pthread_mutex_unlock(&mgr->lock);
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

/* Reserve (name, namespace, uid, attempt), or find the pod an identical request made. */
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
                if (h && json_object_get_uint64(h) == hash && !o->creating &&
                    o->state == RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY)
                        *existing = xstrdup(o->id);
                else
                        rm_error_set(err, RM_ALREADY_EXISTS,
                                     "pod %s/%s (uid %s, attempt %u) already exists as pod "
                                     "sandbox %s; remove it first",
                                     m->namespace_, m->name, m->uid, m->attempt, o->id);
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
        json_object_object_add(p->doc, "labels", map_json(c->n_labels, (void *const *)c->labels));
        json_object_object_add(p->doc, "annotations",
                               map_json(c->n_annotations, (void *const *)c->annotations));
        json_object_object_add(p->doc, "config", config_json(c));
        mgr->pods = xrealloc(mgr->pods, sizeof(*mgr->pods) * (mgr->n + 1));
        mgr->pods[mgr->n++] = p;
        pthread_mutex_unlock(&mgr->lock);
        return p;
}

int rm_sandbox_run(struct rm_sandbox_manager *mgr, const Runtime__V1__RunPodSandboxRequest *req,
                   char **id, struct rm_error **err)
{
        if (rm__pod_config_check(req->config, err) < 0)
                return -1;
        char *existing = NULL;
        struct pod *p = reserve(mgr, req, request_hash(req), &existing, err);
        if (p == NULL) {
                if (existing == NULL)
                        return -1;
                rm_log_info("RunPodSandbox retried for %s/%s: returning %s",
                            req->config->metadata->namespace_, req->config->metadata->name,
                            existing);
                *id = existing;
                return 0;
        }
        struct undo u = {0};
        pthread_mutex_lock(&p->op);
        int rc = setup_pod(mgr, p, req, &u, err);
        if (rc == 0)
                rc = save(mgr, p, err);
        if (rc < 0)
                rollback(mgr, p, &u);
        pthread_mutex_unlock(&p->op);
        pthread_mutex_lock(&mgr->lock);
        p->creating = false;
        p->refs--;
        if (rc < 0) {
                drop_locked(mgr, p);
        } else {
                *id = xstrdup(p->id);
                rm_log_info("pod sandbox %s (%s/%s) is ready", p->id, s_get(p, "namespace"),
                            s_get(p, "name"));
        }
        pthread_mutex_unlock(&mgr->lock);
        return rc;
}

/* ---- stop and remove ---- */

static int stop_locked(struct rm_sandbox_manager *mgr, struct pod *p, struct rm_error **err)
{
        if (p->state == RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_NOTREADY)
                return 0;
        if (i_get(p, "infra_pid") && mgr->hooks.infra_stop &&
            mgr->hooks.infra_stop(mgr->hooks.ctx, p->id, err) < 0)
                return rm_error_wrap(err, "stop pod sandbox %s: infra process", p->id);
        const char *netns = s_get(p, "netns");
        if (*netns && mgr->hooks.net_teardown) {
                int64_t t0 = mono_us();
                if (mgr->hooks.net_teardown(mgr->hooks.ctx, p->id, netns, err) < 0)
                        return rm_error_wrap(err, "stop pod sandbox %s: network", p->id);
                note_net_time(mgr, p, "net_teardown_us", t0);
        }
        for (int k = 0; k < 3; k++) {
                const char *pin = s_get(p, pin_kinds[k]);
                if (*pin)
                        rm_pinns_unpin(pin);
        }
        const char *shm = s_get(p, "shm");
        if (*shm && strcmp(shm, "/dev/shm") != 0)
                unmount_shm(shm);
        pthread_mutex_lock(&mgr->lock);
        p->state = RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_NOTREADY;
        pthread_mutex_unlock(&mgr->lock);
        if (save(mgr, p, err) < 0)
                return -1;
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
        int rc = stop_locked(mgr, p, err);
        if (rc == 0 && i_get(p, "infra_pid") && mgr->hooks.infra_remove &&
            mgr->hooks.infra_remove(mgr->hooks.ctx, p->id, err) < 0)
                rc = rm_error_wrap(err, "remove pod sandbox %s: infra process", p->id);
        cleanup_free char *dir = xasprintf("%s/%s", mgr->dir, p->id);
        cleanup_free char *sdir = xasprintf("%s/%s", mgr->state, p->id);
        if (rc == 0 && (rm_remove_tree(sdir, err) < 0 || rm_remove_tree(dir, err) < 0))
                rc = -1;
        struct json_object *made = NULL;
        if (rc == 0 && json_object_object_get_ex(p->doc, "cgroup_created", &made) &&
            json_object_get_boolean(made) && mgr->hooks.pod_cgroup_remove)
                mgr->hooks.pod_cgroup_remove(mgr->hooks.ctx, s_get(p, "cgroup_parent"));
        if (rc == 0)
                rc = rm_store_delete(mgr->store, POD_KIND, p->id, err);
        pthread_mutex_unlock(&p->op);
        if (rc == 0) {
                pthread_mutex_lock(&mgr->lock);
                rm_log_info("pod sandbox %s removed", p->id);
                drop_locked(mgr, p);
                pthread_mutex_unlock(&mgr->lock);
        }
        put(mgr, p);
        return rc;
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

/* ---- open: load and repair ---- */

static int load_one(const char *id, struct json_object *doc, const struct rm_error *bad, void *data,
                    struct rm_error **err)
{
        (void)err;
        struct rm_sandbox_manager *mgr = data;
        if (doc == NULL || !rm_id_valid(id)) {
                rm_log_warn("pod sandbox record %s is unreadable (%s); leaving it", id,
                            bad ? bad->msg : "not a pod ID");
                return 0;
        }
        struct pod *p = xzalloc(sizeof(*p));
        pthread_mutex_init(&p->op, NULL);
        memcpy(p->id, id, RM_ID_LEN + 1);
        json_object_deep_copy(doc, &p->doc, NULL);
        p->state = (Runtime__V1__PodSandboxState)i_get(p, "state");
        /* A ready pod needs its pins; after a reboot (or a lost mount) they are gone. */
        for (int k = 0; k < 3 && p->state == RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY; k++) {
                const char *pin = s_get(p, pin_kinds[k]);
                if (*pin && !pinned(pin)) {
                        rm_log_warn("pod sandbox %s lost its %s pin %s; marking it NOTREADY", id,
                                    pin_kinds[k], pin);
                        p->state = RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_NOTREADY;
                }
        }
        mgr->pods = xrealloc(mgr->pods, sizeof(*mgr->pods) * (mgr->n + 1));
        mgr->pods[mgr->n++] = p;
        return 0;
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
        for (int k = 0; k < 3; k++) {
                cleanup_dir DIR *d = opendir(mgr->pins[k]);
                struct dirent *e;
                while (d && (e = readdir(d))) {
                        if (e->d_name[0] == '.' || known(mgr, e->d_name, true))
                                continue;
                        cleanup_free char *path = xasprintf("%s/%s", mgr->pins[k], e->d_name);
                        rm_pinns_unpin(path);
                        rm_log_info("removed %s pin %s, which no ready pod owns", pin_kinds[k],
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
                                unmount_shm(shm);
                        }
                        if (ours)
                                continue;
                        cleanup_error struct rm_error *why = NULL;
                        if (rm_remove_tree(path, &why) < 0)
                                rm_log_warn("leftover of pod %s: %s", e->d_name, why->msg);
                        else
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
        mgr->dir = xasprintf("%s/sandboxes", root);
        mgr->state = xasprintf("%s/sandboxes", state);
        for (int k = 0; k < 3; k++)
                mgr->pins[k] = xasprintf("%s/%s", state, pin_kinds[k]);
        mgr->store = store;
        if (hooks)
                mgr->hooks = *hooks;
        int rc =
            rm_mkdir_p(mgr->dir, 0700, err) < 0 || rm_mkdir_p(mgr->state, 0700, err) < 0 ? -1 : 0;
        for (int k = 0; k < 3 && rc == 0; k++)
                rc = rm_mkdir_p(mgr->pins[k], 0700, err);
        if (rc == 0 && rm_store_list(store, POD_KIND, load_one, mgr, err) < 0)
                rc = -1;
        if (rc < 0) {
                rm_error_wrap(err, "open the sandbox manager");
                rm_sandbox_manager_close(mgr);
                return NULL;
        }
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
                pod_free(mgr->pods[i]);
        free(mgr->pods);
        free(mgr->dir);
        free(mgr->state);
        for (int k = 0; k < 3; k++)
                free(mgr->pins[k]);
        pthread_mutex_destroy(&mgr->lock);
        free(mgr);
}
