/* Port mappings and masquerade in an nftables table Remora owns, through libnftables
 * (in process: no `nft` child per pod). Per-pod state lives in two maps keyed by
 * (host IP,) protocol and host port, so removing a pod deletes elements by key and
 * never needs rule handles. */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <nftables/libnftables.h>

#include "internal.h"
#include "remora/cleanup.h"
#include "remora/xalloc.h"

struct rm__nft {
        struct nft_ctx *ctx;
        struct rm__net_config cfg;
};

/* libnftables opens its netlink socket at nft_ctx_new (once: it stopped reopening it in
 * 0.9.9) without close-on-exec and does not hand it out, so it would reach every shim and
 * runc the daemon starts. Every NETLINK_NETFILTER socket in this process is libnftables',
 * so each one found without FD_CLOEXEC gets it. */
static void nft_sockets_cloexec(void)
{
        cleanup_dir DIR *d = opendir("/proc/self/fd");
        if (d == NULL)
                return;
        struct dirent *e;
        while ((e = readdir(d))) {
                if (e->d_name[0] < '0' || e->d_name[0] > '9')
                        continue;
                int fd = atoi(e->d_name);
                int flags = fcntl(fd, F_GETFD);
                if (fd == dirfd(d) || flags < 0 || (flags & FD_CLOEXEC))
                        continue;
                int domain = 0, proto = 0;
                socklen_t len = sizeof(domain);
                if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 ||
                    domain != AF_NETLINK)
                        continue;
                len = sizeof(proto);
                if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 &&
                    proto == NETLINK_NETFILTER)
                        fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
        }
}

struct rm__nft *rm__nft_open(const struct rm__net_config *cfg, struct rm_error **err)
{
        struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
        if (ctx == NULL) {
                rm_error_set(err, RM_INTERNAL, "nftables: cannot create a context");
                return NULL;
        }
        nft_sockets_cloexec();
        nft_ctx_buffer_output(ctx);
        nft_ctx_buffer_error(ctx);
        struct rm__nft *nft = xzalloc(sizeof(*nft));
        nft->ctx = ctx;
        nft->cfg = *cfg;
        return nft;
}

void rm__nft_close(struct rm__nft *nft)
{
        if (nft == NULL)
                return;
        nft_ctx_free(nft->ctx);
        free(nft);
}

static int run(struct rm__nft *nft, const char *cmd, struct rm_error **err)
{
        if (nft_run_cmd_from_buffer(nft->ctx, cmd) == 0)
                return 0;
        const char *e = nft_ctx_get_error_buffer(nft->ctx);
        /* The first line of libnftables' message is the reason; the rest echoes input. */
        size_t n = e ? strcspn(e, "\n") : 0;
        bool exists = e && strstr(e, "File exists") != NULL;
        return rm_error_set(err, exists ? RM_FAILED_PRECONDITION : RM_INTERNAL, "nftables: %.*s",
                            (int)n, e ? e : "failed");
}

/* The IPv6 twin of the ip table, same name, family ip6. There is no route_localnet for
 * IPv6, so a hostPort is reached through the node's addresses, not ::1. Without subnet6
 * a table left by an earlier dual-stack run is dropped, and no new one is made. */
static int reset6(struct rm__nft *nft, struct rm_error **err)
{
        char sub[INET6_ADDRSTRLEN + 8], buf[INET6_ADDRSTRLEN];
        const struct rm__net_config *c = &nft->cfg;
        cleanup_free char *cmd = NULL;
        if (!c->has_v6) {
                if (asprintf(&cmd, "add table ip6 %1$s\ndelete table ip6 %1$s\n", c->nft_table) < 0)
                        abort();
                nft_run_cmd_from_buffer(nft->ctx, cmd);
                return 0;
        }
        snprintf(sub, sizeof(sub), "%s/%d", rm__ip6_str(&c->subnet6, buf), c->prefix6);
        if (asprintf(&cmd,
                     "add table ip6 %1$s\n"
                     "delete table ip6 %1$s\n"
                     "table ip6 %1$s {\n"
                     " map hp_any { type inet_proto . inet_service : ipv6_addr . inet_service; }\n"
                     " map hp_ip { type ipv6_addr . inet_proto . inet_service :"
                     " ipv6_addr . inet_service; }\n"
                     " chain prerouting { type nat hook prerouting priority -100; policy accept;"
                     " fib daddr type local jump hostports; }\n"
                     " chain output { type nat hook output priority -100; policy accept;"
                     " fib daddr type local jump hostports; }\n"
                     " chain hostports {\n"
                     "  dnat ip6 to ip6 daddr . meta l4proto . th dport map @hp_ip\n"
                     "  dnat ip6 to meta l4proto . th dport map @hp_any\n"
                     " }\n"
                     " chain postrouting { type nat hook postrouting priority 100; policy accept;\n"
                     "  ip6 saddr %2$s oifname != \"%3$s\" masquerade\n"
                     /* pod to a hostPort of another pod: replies must come back via the host */
                     "  ct status dnat ip6 saddr %2$s ip6 daddr %2$s masquerade\n"
                     " }\n"
                     "}\n",
                     c->nft_table, sub, c->bridge) < 0)
                abort();
        return run(nft, cmd, err);
}

int rm__nft_reset(struct rm__nft *nft, struct rm_error **err)
{
        char sub[40], buf[16];
        const struct rm__net_config *c = &nft->cfg;
        snprintf(sub, sizeof(sub), "%s/%d", rm__ip4_str(c->subnet, buf), c->prefix);
        cleanup_free char *cmd = NULL;
        /* add+delete makes the delete succeed on a first start; the batch is atomic. */
        if (asprintf(&cmd,
                     "add table ip %1$s\n"
                     "delete table ip %1$s\n"
                     "table ip %1$s {\n"
                     " map hp_any { type inet_proto . inet_service : ipv4_addr . inet_service; }\n"
                     " map hp_ip { type ipv4_addr . inet_proto . inet_service :"
                     " ipv4_addr . inet_service; }\n"
                     " chain prerouting { type nat hook prerouting priority -100; policy accept;"
                     " fib daddr type local jump hostports; }\n"
                     " chain output { type nat hook output priority -100; policy accept;"
                     " fib daddr type local jump hostports; }\n"
                     " chain hostports {\n"
                     "  dnat ip to ip daddr . meta l4proto . th dport map @hp_ip\n"
                     "  dnat ip to meta l4proto . th dport map @hp_any\n"
                     " }\n"
                     " chain postrouting { type nat hook postrouting priority 100; policy accept;\n"
                     "  ip saddr %2$s oifname != \"%3$s\" masquerade\n"
                     /* hostPort through 127.0.0.1: the pod must answer a routable source */
                     "  ip saddr 127.0.0.0/8 ip daddr %2$s masquerade\n"
                     /* pod to a hostPort of another pod: replies must come back via the host */
                     "  ct status dnat ip saddr %2$s ip daddr %2$s masquerade\n"
                     " }\n"
                     "}\n",
                     c->nft_table, sub, c->bridge) < 0)
                abort();
        if (run(nft, cmd, err) < 0)
                return rm_error_wrap(err, "set up nftables table ip %s", c->nft_table);
        if (reset6(nft, err) < 0)
                return rm_error_wrap(err, "set up nftables table ip6 %s", c->nft_table);
        return 0;
}

static const char *proto_name(int p)
{
        return p == IPPROTO_UDP ? "udp" : p == IPPROTO_SCTP ? "sctp" : "tcp";
}

static bool any_host(const char *ip)
{
        return ip == NULL || *ip == '\0' || strcmp(ip, "0.0.0.0") == 0 || strcmp(ip, "::") == 0;
}

bool rm__nft_host_ip_is_v6(const char *host_ip)
{
        struct in6_addr a;
        return host_ip != NULL && inet_pton(AF_INET6, host_ip, &a) == 1;
}

/* One element, as "add"/"create"/"delete" takes it; pod6 NULL: the ip table. */
static void element(FILE *f, const char *verb, const char *table, uint32_t pod_ip,
                    const struct in6_addr *pod6, const struct rm_port_mapping *p)
{
        char buf[INET6_ADDRSTRLEN];
        const char *family = pod6 ? "ip6" : "ip";
        if (any_host(p->host_ip))
                fprintf(f, "%s element %s %s hp_any { %s . %d", verb, family, table,
                        proto_name(p->protocol), p->host_port);
        else
                fprintf(f, "%s element %s %s hp_ip { %s . %s . %d", verb, family, table, p->host_ip,
                        proto_name(p->protocol), p->host_port);
        if (strcmp(verb, "delete") != 0)
                fprintf(f, " : %s . %d", pod6 ? rm__ip6_str(pod6, buf) : rm__ip4_str(pod_ip, buf),
                        p->container_port);
        fputs(" }\n", f);
}

/* The elements one mapping makes: "0.0.0.0" only in ip, "::" only in ip6, every host
 * address ("") in both when the pod has an IPv6 address. */
static void elements(FILE *f, const char *verb, const char *table, uint32_t pod_ip,
                     const struct in6_addr *pod6, const struct rm_port_mapping *p)
{
        bool v6 = rm__nft_host_ip_is_v6(p->host_ip);
        bool every = p->host_ip == NULL || *p->host_ip == '\0';
        if (!v6)
                element(f, verb, table, pod_ip, NULL, p);
        if (pod6 && (v6 || every))
                element(f, verb, table, pod_ip, pod6, p);
}

int rm__nft_ports_add(struct rm__nft *nft, uint32_t pod_ip, const struct in6_addr *pod_ip6,
                      const struct rm_port_mapping *ports, size_t n, struct rm_error **err)
{
        if (n == 0)
                return 0;
        cleanup_free char *cmd = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&cmd, &len);
        if (f == NULL)
                abort();
        for (size_t i = 0; i < n; i++)
                elements(f, "create", nft->cfg.nft_table, pod_ip, pod_ip6, &ports[i]);
        fclose(f);
        if (run(nft, cmd, err) < 0)
                return rm_error_wrap(err, "add port mappings (a host port may be taken)");
        return 0;
}

void rm__nft_ports_del(struct rm__nft *nft, uint32_t pod_ip, const struct in6_addr *pod_ip6,
                       const struct rm_port_mapping *ports, size_t n)
{
        /* One command per element: a missing one (already removed) must not stop the rest. */
        for (size_t i = 0; i < n; i++) {
                cleanup_free char *cmd = NULL;
                size_t len = 0;
                FILE *f = open_memstream(&cmd, &len);
                if (f == NULL)
                        abort();
                elements(f, "delete", nft->cfg.nft_table, pod_ip, pod_ip6, &ports[i]);
                fclose(f);
                /* a batch of two deletes would stop at the first missing one */
                char *line = cmd, *nl;
                while (line && *line) {
                        nl = strchr(line, '\n');
                        if (nl)
                                *nl = '\0';
                        nft_run_cmd_from_buffer(nft->ctx, line);
                        line = nl ? nl + 1 : NULL;
                }
        }
}
