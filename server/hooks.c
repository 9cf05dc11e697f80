/* The seams between managers, wired here so that no manager depends on another:
 * the sandbox manager reaches pod networking through these adapters. */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"
#include "events.h"
#include "hooks.h"
#include "remora/xalloc.h"

static int net_setup(void *ctx, const char *pod_id, const Runtime__V1__PodSandboxConfig *cfg,
                     const char *netns_path, char *ips[RM_POD_MAX_IPS], size_t *n_ips,
                     struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        struct rm_port_mapping *ports = xzalloc(sizeof(*ports) * (cfg->n_port_mappings + 1));
        for (size_t i = 0; i < cfg->n_port_mappings; i++) {
                const Runtime__V1__PortMapping *p = cfg->port_mappings[i];
                ports[i].protocol = p->protocol == RUNTIME__V1__PROTOCOL__UDP    ? IPPROTO_UDP
                                    : p->protocol == RUNTIME__V1__PROTOCOL__SCTP ? IPPROTO_SCTP
                                                                                 : IPPROTO_TCP;
                ports[i].container_port = p->container_port;
                ports[i].host_port = p->host_port;
                ports[i].host_ip = p->host_ip;
        }
        struct rm_pod_network_request req = {
            .pod_id = pod_id,
            .name = cfg->metadata->name,
            .namespace_ = cfg->metadata->namespace_,
            .netns_path = netns_path,
            .ports = ports,
            .n_ports = cfg->n_port_mappings,
        };
        struct rm_pod_network_result res = {0};
        int rc = rm_network_pod_setup(d->network, &req, &res, err);
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
        return rm_network_pod_teardown(d->network, pod_id, netns_path, err);
}

void rm__sandbox_hooks(struct rm_daemon *d, struct rm_sandbox_hooks *h)
{
        *h = (struct rm_sandbox_hooks){
            .ctx = d,
            .net_setup = net_setup,
            .net_teardown = net_teardown,
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
        out->spec.hostname_file = v.hostname_file;
        out->spec.hosts_file = v.hosts_file;
        out->spec.resolv_file = v.resolv_file;
        out->spec.shm_dir = v.shm_dir;
        out->spec.cgroup_parent = v.cgroup_parent;
        out->spec.privileged = v.privileged;
        return 0;
}

/* A container event as GetContainerEvents sends it: the pod's status and the statuses of
 * all its containers, as they are now. */
static void on_event(void *ctx, const char *container_id, const char *pod_id,
                     Runtime__V1__ContainerEventType type)
{
        struct rm_daemon *d = ctx;
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
