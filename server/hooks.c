/* The seams between managers, wired here so that no manager depends on another:
 * the sandbox manager reaches pod networking through these adapters. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "events.h"
#include "hooks.h"
#include "remora/cleanup.h"
#include "remora/crashpoint.h"
#include "remora/fsutil.h"
#include "remora/log.h"
#include "remora/xalloc.h"

static int net_setup(void *ctx, const char *pod_id, const Runtime__V1__PodSandboxConfig *cfg,
                     const char *netns_path, char *ips[RM_POD_MAX_IPS], size_t *n_ips,
                     struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        struct rm_port_mapping *ports = xzalloc(sizeof(*ports) * (cfg->n_port_mappings + 1));
        size_t n = 0;
        for (size_t i = 0; i < cfg->n_port_mappings; i++) {
                const Runtime__V1__PortMapping *p = cfg->port_mappings[i];
                /* A container port without a host port (kubelet sends one per declared
                 * containerPort) publishes nothing, as in containerd and CRI-O. */
                if (p->host_port == 0)
                        continue;
                ports[n].protocol = p->protocol == RUNTIME__V1__PROTOCOL__UDP    ? IPPROTO_UDP
                                    : p->protocol == RUNTIME__V1__PROTOCOL__SCTP ? IPPROTO_SCTP
                                                                                 : IPPROTO_TCP;
                ports[n].container_port = p->container_port;
                ports[n].host_port = p->host_port;
                ports[n++].host_ip = p->host_ip;
        }
        struct rm_pod_network_request req = {
            .pod_id = pod_id,
            .name = cfg->metadata->name,
            .namespace_ = cfg->metadata->namespace_,
            .netns_path = netns_path,
            .ports = ports,
            .n_ports = n,
        };
        struct rm_pod_network_result res = {0};
        uint64_t t0 = rm_metrics_now_ns();
        int rc = rm_network_pod_setup(d->network, &req, &res, err);
        rm_histo_observe(&d->counters.net_setup, rm_metrics_now_ns() - t0);
        free(ports);
        if (rc < 0)
                return -1;
        *n_ips = 0;
        for (size_t i = 0; i < res.n_ips && i < RM_POD_MAX_IPS; i++)
                ips[(*n_ips)++] = xstrdup(res.ips[i]);
        rm_pod_network_result_release(&res);
        return 0;
}

static int net_teardown(void *ctx, const char *pod_id, const char *netns_path,
                        struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        uint64_t t0 = rm_metrics_now_ns();
        int rc = rm_network_pod_teardown(d->network, pod_id, netns_path, err);
        rm_histo_observe(&d->counters.net_teardown, rm_metrics_now_ns() - t0);
        return rc;
}

/* ---- the pod's cgroup ---- */

/* The directories of cgroup path in the hierarchies Remora writes limits to: the unified
 * one on v2; memory and cpu on v1. */
static size_t pod_cgroup_dirs(const struct rm_cgroup_host *cg, const char *path, char *dirs[2])
{
        if (cg->mode == RM_CGROUP_V2) {
                dirs[0] = xasprintf("%s%s", cg->root, path);
                return 1;
        }
        size_t n = 0;
        if (cg->memory[0])
                dirs[n++] = xasprintf("%s%s", cg->memory, path);
        if (cg->cpu[0])
                dirs[n++] = xasprintf("%s%s", cg->cpu, path);
        return n;
}

static int put_value(const char *dir, const char *file, const char *value, struct rm_error **err)
{
        cleanup_free char *path = xasprintf("%s/%s", dir, file);
        cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, value, strlen(value)) != (ssize_t)strlen(value))
                return rm_error_sys(err, "write %s to %s", value, path);
        return 0;
}

static int64_t sum(int64_t a, int64_t b)
{
        return a > 0 && b > 0 ? a + b : a > 0 ? a : 0;
}

static int pod_cgroup(void *ctx, const char *parent,
                      const Runtime__V1__LinuxContainerResources *res,
                      const Runtime__V1__LinuxContainerResources *over, bool *created,
                      struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        *created = false;
        if (parent[0] != '/' || strstr(parent, "/../") || strstr(parent, "/./"))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "cgroup_parent \"%s\" must be an absolute path", parent);
        /* The pod is sized for its containers plus its overhead: what kubelet gives
         * the pod cgroup it manages itself, so doing it again there changes nothing. */
        Runtime__V1__LinuxContainerResources none = RUNTIME__V1__LINUX_CONTAINER_RESOURCES__INIT;
        if (res == NULL)
                res = &none;
        if (over == NULL)
                over = &none;
        int64_t memory = sum(res->memory_limit_in_bytes, over->memory_limit_in_bytes);
        int64_t shares = sum(res->cpu_shares, over->cpu_shares);
        int64_t period = res->cpu_period > 0 ? res->cpu_period : 100000;
        int64_t quota = sum(res->cpu_quota, over->cpu_quota);
        char *dirs[2] = {NULL, NULL};
        size_t n = pod_cgroup_dirs(&d->cgroups, parent, dirs);
        int rc = 0;
        for (size_t i = 0; i < n && rc == 0; i++) {
                struct stat st;
                if (stat(dirs[i], &st) < 0) {
                        rc = rm_mkdir_p(dirs[i], 0755, err);
                        *created = rc == 0;
                }
        }
        char v[64];
        if (d->cgroups.mode == RM_CGROUP_V2) {
                if (rc == 0 && memory > 0) {
                        snprintf(v, sizeof(v), "%lld", (long long)memory);
                        rc = put_value(dirs[0], "memory.max", v, err);
                }
                if (rc == 0 && shares > 0) {
                        /* cpu.weight from shares, as runc converts them */
                        long long w = 1 + ((shares - 2) * 9999) / 262142;
                        snprintf(v, sizeof(v), "%lld", w < 1 ? 1 : w);
                        rc = put_value(dirs[0], "cpu.weight", v, err);
                }
                if (rc == 0 && quota > 0) {
                        snprintf(v, sizeof(v), "%lld %lld", (long long)quota, (long long)period);
                        rc = put_value(dirs[0], "cpu.max", v, err);
                }
        } else {
                const char *mem = d->cgroups.memory[0] ? dirs[0] : NULL;
                const char *cpu = d->cgroups.cpu[0] ? dirs[n - 1] : NULL;
                if (rc == 0 && mem && memory > 0) {
                        snprintf(v, sizeof(v), "%lld", (long long)memory);
                        rc = put_value(mem, "memory.limit_in_bytes", v, err);
                }
                if (rc == 0 && cpu && shares > 0) {
                        snprintf(v, sizeof(v), "%lld", (long long)shares);
                        rc = put_value(cpu, "cpu.shares", v, err);
                }
                if (rc == 0 && cpu && quota > 0) {
                        snprintf(v, sizeof(v), "%lld", (long long)period);
                        rc = put_value(cpu, "cpu.cfs_period_us", v, err);
                        snprintf(v, sizeof(v), "%lld", (long long)quota);
                        if (rc == 0)
                                rc = put_value(cpu, "cpu.cfs_quota_us", v, err);
                }
        }
        if (rc < 0 && *created) {
                for (size_t i = 0; i < n; i++)
                        rmdir(dirs[i]);
                *created = false;
        }
        for (size_t i = 0; i < n; i++)
                free(dirs[i]);
        return rc;
}

/* A resize, never a creation: the pod's cgroup must still be there in every hierarchy. */
static int pod_cgroup_update(void *ctx, const char *parent,
                             const Runtime__V1__LinuxContainerResources *res,
                             const Runtime__V1__LinuxContainerResources *over,
                             struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        char *dirs[2] = {NULL, NULL};
        size_t n = pod_cgroup_dirs(&d->cgroups, parent, dirs);
        int rc = 0;
        for (size_t i = 0; i < n; i++) {
                struct stat st;
                if (rc == 0 && stat(dirs[i], &st) < 0)
                        rc = rm_error_set(err, RM_FAILED_PRECONDITION, "its cgroup %s is gone (%s)",
                                          dirs[i], strerror(errno));
                free(dirs[i]);
        }
        if (rc == 0 && n == 0)
                rc = rm_error_set(err, RM_FAILED_PRECONDITION,
                                  "this host has no cgroup hierarchy remora writes limits to");
        bool created = false;
        return rc < 0 ? rc : pod_cgroup(ctx, parent, res, over, &created, err);
}

static bool pod_cgroup_exists(void *ctx, const char *parent)
{
        struct rm_daemon *d = ctx;
        return rm_cgroup_exists(&d->cgroups, parent);
}

/* From every hierarchy: runc makes a pod's parent cgroup in all of them. */
static void pod_cgroup_remove(void *ctx, const char *parent)
{
        struct rm_daemon *d = ctx;
        int left = rm_cgroup_remove(&d->cgroups, parent);
        if (left)
                rm_log_warn("pod cgroup %s: %d director%s could not be removed", parent, left,
                            left == 1 ? "y" : "ies");
}

static bool net_present(void *ctx, const char *pod_id)
{
        struct rm_daemon *d = ctx;
        return rm_network_pod_present(d->network, pod_id);
}

void rm__sandbox_hooks(struct rm_daemon *d, struct rm_sandbox_hooks *h)
{
        *h = (struct rm_sandbox_hooks){
            .ctx = d,
            .net_setup = net_setup,
            .net_teardown = net_teardown,
            .pod_cgroup = pod_cgroup,
            .pod_cgroup_update = pod_cgroup_update,
            .pod_cgroup_exists = pod_cgroup_exists,
            .pod_cgroup_remove = pod_cgroup_remove,
            .userns_unavailable = d->userns_unavailable,
            .net_present = net_present,
        };
}

/* ---- containers ---- */

static int pod_lookup(void *ctx, const char *pod_id, struct rm_arena *a, struct rm_ctr_pod *out,
                      struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        struct rm_sandbox_view v;
        if (rm_sandbox_view(d->sandboxes, pod_id, a, &v, err) < 0)
                return -1;
        memset(out, 0, sizeof(*out));
        out->ready = v.ready;
        out->log_directory = v.log_directory;
        out->runtime_handler = v.runtime_handler;
        out->pid_ns_path = v.pidns_path;
        out->spec.pod_id = v.id;
        out->spec.hostname = v.hostname;
        out->spec.netns_path = v.netns_path;
        out->spec.ipcns_path = v.ipcns_path;
        out->spec.utsns_path = v.utsns_path;
        if (v.userns_path) {
                struct rm_spec_userns *u = rm_arena_alloc(a, sizeof(*u));
                u->path = v.userns_path;
                u->uid_host = v.uid_host;
                u->uid_len = v.uid_len;
                u->gid_host = v.gid_host;
                u->gid_len = v.gid_len;
                out->spec.userns = u;
        }
        out->spec.hostname_file = v.hostname_file;
        out->spec.hosts_file = v.hosts_file;
        out->spec.resolv_file = v.resolv_file;
        out->spec.shm_dir = v.shm_dir;
        out->spec.cgroup_parent = v.cgroup_parent;
        out->spec.privileged = v.privileged;
        const struct rm_runtime *rt = rm_runtimes_find(d->runtimes, v.runtime_handler);
        out->spec.runtime_handler = rt ? rt->handler : v.runtime_handler;
        out->spec.recursive_read_only = rt && rt->recursive_read_only;
        return 0;
}

/* A container event as GetContainerEvents sends it: the pod's status and the statuses of
 * all its containers, as they are now. */
static void on_event(void *ctx, const char *container_id, const char *pod_id,
                     Runtime__V1__ContainerEventType type)
{
        struct rm_daemon *d = ctx;
        /* An image removed while this container used it goes with its last container. */
        if (type == RUNTIME__V1__CONTAINER_EVENT_TYPE__CONTAINER_DELETED_EVENT && d->images) {
                rm_crashpoint("removecontainer.image_prune");
                rm_image_prune(d->images);
        }
        if (d->events == NULL || rm_events_subscribers(d->events) == 0)
                return;
        struct rm_arena *a = rm_arena_new();
        Runtime__V1__ContainerEventResponse ev = RUNTIME__V1__CONTAINER_EVENT_RESPONSE__INIT;
        ev.container_id = (char *)container_id;
        ev.container_event_type = type;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ev.created_at = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
        Runtime__V1__PodSandboxStatusResponse *ps =
            rm_sandbox_status(d->sandboxes, pod_id, false, a, NULL);
        ev.pod_sandbox_status = ps ? ps->status : NULL;
        Runtime__V1__ContainerFilter f = RUNTIME__V1__CONTAINER_FILTER__INIT;
        f.pod_sandbox_id = (char *)pod_id;
        Runtime__V1__ListContainersResponse *l = rm_containers_list(d->containers, &f, a);
        ev.containers_statuses =
            (Runtime__V1__ContainerStatus **)rm_arena_ptrs(a, l->n_containers + 1);
        for (size_t i = 0; i < l->n_containers; i++) {
                Runtime__V1__ContainerStatusResponse *cs =
                    rm_containers_status(d->containers, l->containers[i]->id, false, a, NULL);
                if (cs)
                        ev.containers_statuses[ev.n_containers_statuses++] = cs->status;
        }
        rm_events_publish(d->events, &ev);
        rm_arena_free(a);
}

void rm__container_ops_common(struct rm_daemon *d, struct rm_container_ops *ops)
{
        ops->ctx = d;
        ops->pod_lookup = pod_lookup;
        ops->event = on_event;
}
