/* The built-in bridge over rtnetlink (libnl-route-3). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/route.h>

#include "internal.h"
#include "remora/cleanup.h"
#include "remora/xalloc.h"

struct rm__nl {
        struct nl_sock *sk;
};

static void put_link(struct rtnl_link **l)
{
        if (*l)
                rtnl_link_put(*l);
}
static void put_addr(struct nl_addr **a)
{
        if (*a)
                nl_addr_put(*a);
}
static void put_rtaddr(struct rtnl_addr **a)
{
        if (*a)
                rtnl_addr_put(*a);
}
static void put_route(struct rtnl_route **r)
{
        if (*r)
                rtnl_route_put(*r);
}
static void free_sock(struct nl_sock **s)
{
        if (*s)
                nl_socket_free(*s);
}
static void free_cache(struct nl_cache **c)
{
        if (*c)
                nl_cache_free(*c);
}
#define cleanup_link    __attribute__((cleanup(put_link)))
#define cleanup_nladdr  __attribute__((cleanup(put_addr)))
#define cleanup_rtaddr  __attribute__((cleanup(put_rtaddr)))
#define cleanup_route   __attribute__((cleanup(put_route)))
#define cleanup_nlsock  __attribute__((cleanup(free_sock)))
#define cleanup_nlcache __attribute__((cleanup(free_cache)))

/* libnl returns negative NLE_* codes; map the common ones to errno for the error. */
static int nl_fail(struct rm_error **err, int nle, const char *what)
{
        enum rm_code code;
        switch (-nle) {
        case NLE_EXIST:
                code = RM_ALREADY_EXISTS;
                break;
        case NLE_OBJ_NOTFOUND:
        case NLE_NODEV:
                code = RM_NOT_FOUND;
                break;
        case NLE_PERM:
        case NLE_NOACCESS:
                code = RM_PERMISSION_DENIED;
                break;
        case NLE_INVAL:
        case NLE_RANGE:
                code = RM_INVALID_ARGUMENT;
                break;
        default:
                code = RM_INTERNAL;
        }
        return rm_error_set(err, code, "%s: %s", what, nl_geterror(nle));
}

static struct nl_sock *connect_route(struct rm_error **err)
{
        cleanup_nlsock struct nl_sock *sk = nl_socket_alloc();
        if (sk == NULL) {
                rm_error_set(err, RM_RESOURCE_EXHAUSTED, "netlink: cannot allocate a socket");
                return NULL;
        }
        int r = nl_connect(sk, NETLINK_ROUTE);
        if (r < 0) {
                nl_fail(err, r, "netlink: connect");
                return NULL;
        }
        return steal_pointer(&sk);
}

struct rm__nl *rm__nl_open(struct rm_error **err)
{
        struct nl_sock *sk = connect_route(err);
        if (sk == NULL)
                return NULL;
        struct rm__nl *nl = xzalloc(sizeof(*nl));
        nl->sk = sk;
        return nl;
}

void rm__nl_close(struct rm__nl *nl)
{
        if (nl == NULL)
                return;
        nl_socket_free(nl->sk);
        free(nl);
}

/* An address of either family: raw is 4 (network order) or 16 bytes. IPv6 ones skip
 * duplicate address detection, which would keep them tentative (unusable) for seconds. */
static int add_addr(struct nl_sock *sk, int ifindex, int family, const void *raw, int prefix,
                    bool tolerate_exist, struct rm_error **err)
{
        char buf[INET6_ADDRSTRLEN], what[96];
        cleanup_nladdr struct nl_addr *local =
            nl_addr_build(family, raw, family == AF_INET6 ? 16 : 4);
        cleanup_rtaddr struct rtnl_addr *a = rtnl_addr_alloc();
        if (local == NULL || a == NULL)
                return rm_error_set(err, RM_RESOURCE_EXHAUSTED, "netlink: out of memory");
        nl_addr_set_prefixlen(local, prefix);
        rtnl_addr_set_ifindex(a, ifindex);
        rtnl_addr_set_family(a, family);
        rtnl_addr_set_local(a, local);
        rtnl_addr_set_prefixlen(a, prefix);
        if (family == AF_INET6)
                rtnl_addr_set_flags(a, IFA_F_NODAD);
        int r = rtnl_addr_add(sk, a, tolerate_exist ? NLM_F_REPLACE : 0);
        if (r < 0 && !(tolerate_exist && r == -NLE_EXIST)) {
                snprintf(what, sizeof(what), "add address %s/%d",
                         inet_ntop(family, raw, buf, sizeof(buf)), prefix);
                return nl_fail(err, r, what);
        }
        return 0;
}

static int add_addr4(struct nl_sock *sk, int ifindex, uint32_t ip, int prefix, bool tolerate_exist,
                     struct rm_error **err)
{
        uint32_t be = htonl(ip);
        return add_addr(sk, ifindex, AF_INET, &be, prefix, tolerate_exist, err);
}

int rm__nl_bridge_ensure(struct rm__nl *nl, const struct rm__net_config *cfg, int *ifindex,
                         struct rm_error **err)
{
        cleanup_link struct rtnl_link *br = NULL;
        int r = rtnl_link_get_kernel(nl->sk, 0, cfg->bridge, &br);
        if (r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV) {
                cleanup_link struct rtnl_link *nb = rtnl_link_bridge_alloc();
                if (nb == NULL)
                        return rm_error_set(err, RM_RESOURCE_EXHAUSTED, "netlink: out of memory");
                rtnl_link_set_name(nb, cfg->bridge);
                rtnl_link_set_mtu(nb, (unsigned)cfg->mtu);
                rtnl_link_set_flags(nb, IFF_UP);
                r = rtnl_link_add(nl->sk, nb, NLM_F_CREATE | NLM_F_EXCL);
                if (r < 0 && r != -NLE_EXIST)
                        return nl_fail(err, r, "create bridge");
                r = rtnl_link_get_kernel(nl->sk, 0, cfg->bridge, &br);
        }
        if (r < 0)
                return nl_fail(err, r, "look up bridge");
        const char *type = rtnl_link_get_type(br);
        if (type == NULL || strcmp(type, "bridge") != 0)
                return rm_error_set(err, RM_FAILED_PRECONDITION,
                                    "interface %s exists and is not a bridge (it is %s)",
                                    cfg->bridge, type ? type : "a plain device");
        *ifindex = rtnl_link_get_ifindex(br);
        if (!(rtnl_link_get_flags(br) & IFF_UP)) {
                cleanup_link struct rtnl_link *chg = rtnl_link_alloc();
                rtnl_link_set_flags(chg, IFF_UP);
                r = rtnl_link_change(nl->sk, br, chg, 0);
                if (r < 0)
                        return nl_fail(err, r, "set bridge up");
        }
        if (add_addr4(nl->sk, *ifindex, cfg->gateway, cfg->prefix, true, err) < 0)
                return -1;
        if (!cfg->has_v6)
                return 0;
        /* a host booted with IPv6 off on new links would refuse the gateway address */
        char path[96];
        snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", cfg->bridge);
        cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1)
                return rm_error_sys(err, "write %s", path);
        return add_addr(nl->sk, *ifindex, AF_INET6, &cfg->gateway6, cfg->prefix6, true, err);
}

int rm__nl_veth_create(struct rm__nl *nl, const char *host_name, int bridge_ifindex, int mtu,
                       int netns_fd, struct rm_error **err)
{
        cleanup_link struct rtnl_link *veth = rtnl_link_veth_alloc();
        if (veth == NULL)
                return rm_error_set(err, RM_RESOURCE_EXHAUSTED, "netlink: out of memory");
        cleanup_link struct rtnl_link *peer = rtnl_link_veth_get_peer(veth);
        rtnl_link_set_name(veth, host_name);
        rtnl_link_set_master(veth, bridge_ifindex);
        rtnl_link_set_mtu(veth, (unsigned)mtu);
        rtnl_link_set_flags(veth, IFF_UP);
        /* The peer is born in the pod's namespace: no move afterwards (ARCHITECTURE). */
        rtnl_link_set_name(peer, "eth0");
        rtnl_link_set_mtu(peer, (unsigned)mtu);
        /* not IFF_UP: veth refuses to open one end before its peer is registered */
        rtnl_link_set_ns_fd(peer, netns_fd);
        int r = rtnl_link_add(nl->sk, veth, NLM_F_CREATE | NLM_F_EXCL);
        if (r < 0)
                return nl_fail(err, r, "create veth pair");
        return 0;
}

int rm__nl_link_delete(struct rm__nl *nl, const char *name, struct rm_error **err)
{
        cleanup_link struct rtnl_link *l = rtnl_link_alloc();
        if (l == NULL)
                return rm_error_set(err, RM_RESOURCE_EXHAUSTED, "netlink: out of memory");
        rtnl_link_set_name(l, name);
        int r = rtnl_link_delete(nl->sk, l);
        if (r < 0 && r != -NLE_OBJ_NOTFOUND && r != -NLE_NODEV)
                return nl_fail(err, r, "delete link");
        return 0;
}

int rm__nl_link_down(struct rm__nl *nl, const char *name, struct rm_error **err)
{
        cleanup_link struct rtnl_link *l = NULL;
        int r = rtnl_link_get_kernel(nl->sk, 0, name, &l);
        if (r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV)
                return 0;
        if (r < 0)
                return nl_fail(err, r, name);
        cleanup_link struct rtnl_link *chg = rtnl_link_alloc();
        if (chg == NULL)
                return rm_error_set(err, RM_RESOURCE_EXHAUSTED, "netlink: out of memory");
        rtnl_link_unset_flags(chg, IFF_UP);
        r = rtnl_link_change(nl->sk, l, chg, 0);
        if (r < 0 && r != -NLE_OBJ_NOTFOUND && r != -NLE_NODEV)
                return nl_fail(err, r, name);
        return 0;
}

/* A route socket inside the namespace: setns on this thread only, then back. */
static struct nl_sock *connect_in_netns(int netns_fd, struct rm_error **err)
{
        cleanup_close int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (self < 0) {
                rm_error_sys(err, "open /proc/thread-self/ns/net");
                return NULL;
        }
        if (setns(netns_fd, CLONE_NEWNET) < 0) {
                rm_error_sys(err, "enter the pod network namespace");
                return NULL;
        }
        struct nl_sock *sk = connect_route(err);
        if (setns(self, CLONE_NEWNET) < 0)
                abort(); /* this thread would serve the next request in the pod's namespace */
        return sk;
}

static int link_up(struct nl_sock *sk, const char *name, struct rm_error **err)
{
        cleanup_link struct rtnl_link *l = NULL;
        int r = rtnl_link_get_kernel(sk, 0, name, &l);
        if (r < 0)
                return nl_fail(err, r, name);
        cleanup_link struct rtnl_link *chg = rtnl_link_alloc();
        rtnl_link_set_flags(chg, IFF_UP);
        r = rtnl_link_change(sk, l, chg, 0);
        if (r < 0)
                return nl_fail(err, r, name);
        return rtnl_link_get_ifindex(l);
}

/* The default route of one family via gw (raw, network order) out of ifindex. */
static int add_default_route(struct nl_sock *sk, int ifindex, int family, const void *gw_raw,
                             struct rm_error **err)
{
        size_t len = family == AF_INET6 ? 16 : 4;
        static const uint8_t zero[16];
        cleanup_nladdr struct nl_addr *gw = nl_addr_build(family, gw_raw, len);
        cleanup_nladdr struct nl_addr *dst = nl_addr_build(family, zero, len);
        cleanup_route struct rtnl_route *rt = rtnl_route_alloc();
        struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
        if (gw == NULL || dst == NULL || rt == NULL || nh == NULL) {
                if (nh)
                        rtnl_route_nh_free(nh);
                return rm_error_set(err, RM_RESOURCE_EXHAUSTED, "netlink: out of memory");
        }
        nl_addr_set_prefixlen(dst, 0);
        rtnl_route_set_family(rt, (uint8_t)family);
        rtnl_route_set_dst(rt, dst);
        rtnl_route_set_table(rt, RT_TABLE_MAIN);
        rtnl_route_set_protocol(rt, RTPROT_BOOT);
        rtnl_route_set_scope(rt, RT_SCOPE_UNIVERSE);
        rtnl_route_set_type(rt, RTN_UNICAST);
        rtnl_route_nh_set_gateway(nh, gw);
        rtnl_route_nh_set_ifindex(nh, ifindex);
        rtnl_route_add_nexthop(rt, nh);
        int r = rtnl_route_add(sk, rt, NLM_F_CREATE | NLM_F_EXCL);
        if (r < 0)
                return nl_fail(err, r,
                               family == AF_INET6 ? "add IPv6 default route" : "add default route");
        return 0;
}

/* A new namespace may start with IPv6 off on its links (disable_ipv6 inherited from the
 * host's default); eth0 needs it on before it can take an IPv6 address. */
static int enable_ipv6(int netns_fd, struct rm_error **err)
{
        cleanup_close int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (self < 0)
                return rm_error_sys(err, "open /proc/thread-self/ns/net");
        if (setns(netns_fd, CLONE_NEWNET) < 0)
                return rm_error_sys(err, "enter the pod network namespace");
        int ret = 0;
        /* /proc/sys/net shows the namespace of the thread that opens the file */
        int fd = open("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1)
                ret = rm_error_sys(err, "write net.ipv6.conf.eth0.disable_ipv6 in the pod");
        if (fd >= 0)
                close(fd);
        if (setns(self, CLONE_NEWNET) < 0)
                abort(); /* this thread would serve the next request in the pod's namespace */
        return ret;
}

int rm__nl_pod_configure(int netns_fd, const struct rm__nl_pod_addrs *a, struct rm_error **err)
{
        cleanup_nlsock struct nl_sock *sk = connect_in_netns(netns_fd, err);
        if (sk == NULL)
                return -1;
        if (link_up(sk, "lo", err) < 0)
                return rm_error_wrap(err, "set lo up");
        int ifindex = link_up(sk, "eth0", err);
        if (ifindex < 0)
                return rm_error_wrap(err, "set eth0 up");
        if (add_addr4(sk, ifindex, a->addr, a->prefix, false, err) < 0)
                return -1;
        uint32_t gw_be = htonl(a->gateway);
        if (add_default_route(sk, ifindex, AF_INET, &gw_be, err) < 0)
                return -1;
        if (a->addr6 == NULL)
                return 0;
        if (enable_ipv6(netns_fd, err) < 0)
                return -1;
        if (add_addr(sk, ifindex, AF_INET6, a->addr6, a->prefix6, false, err) < 0)
                return -1;
        return add_default_route(sk, ifindex, AF_INET6, a->gateway6, err);
}

int rm__nl_bridge_ports(struct rm__nl *nl, int bridge_ifindex, const char *prefix,
                        void (*visit)(const char *name, void *data), void *data,
                        struct rm_error **err)
{
        cleanup_nlcache struct nl_cache *cache = NULL;
        int r = rtnl_link_alloc_cache(nl->sk, AF_UNSPEC, &cache);
        if (r < 0)
                return nl_fail(err, r, "list links");
        size_t plen = strlen(prefix);
        for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
                struct rtnl_link *l = (struct rtnl_link *)o;
                const char *name = rtnl_link_get_name(l);
                if (rtnl_link_get_master(l) == bridge_ifindex && name &&
                    strncmp(name, prefix, plen) == 0)
                        visit(name, data);
        }
        return 0;
}
