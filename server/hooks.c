/* The seams between managers, wired here so that no manager depends on another:
 * the sandbox manager reaches pod networking through these adapters. */
#include <netinet/in.h>
#include <stdlib.h>

#include "daemon.h"
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
