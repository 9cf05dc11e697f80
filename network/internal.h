/* Shared-internal pieces of the network module: config, netlink, nftables, IPAM. */
#ifndef REMORA_NETWORK_INTERNAL_H
#define REMORA_NETWORK_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <json-c/json.h>

#include "remora/error.h"
#include "remora/network.h"

enum rm__net_mode { RM_NET_BRIDGE, RM_NET_CNI, RM_NET_NONE };

struct rm__net_config {
        enum rm__net_mode mode;
        char bridge[16];          /* IFNAMSIZ */
        uint32_t subnet;          /* host order, network address */
        int prefix;               /* 8..30 */
        uint32_t gateway;         /* host order, first address of the subnet */
        bool has_v6;              /* network.subnet6 is set: pods are dual-stack */
        struct in6_addr subnet6;  /* network address, host bits zero */
        int prefix6;              /* 48..120 */
        struct in6_addr gateway6; /* <subnet6>::1 */
        int mtu;
        char nft_table[64];     /* the ip (and with subnet6, ip6) nftables tables Remora owns */
        char veth_prefix[8];    /* host veth names are <prefix><pod id head>, 15 bytes total */
        char cni_conf_dir[512]; /* copies: the config section may go after open */
        char cni_bin_dir[512];  /* one or more directories, ':'-separated */
        int cni_timeout_s;      /* per plugin run */
};

/* Fill cfg from the "network" section over the defaults. Errors name "network.<key>". */
int rm__net_config_parse(struct json_object *section, struct rm__net_config *cfg,
                         struct rm_error **err);

/* Dotted quad of a host-order address into buf (at least 16 bytes). */
const char *rm__ip4_str(uint32_t addr, char *buf);
/* Text form of an IPv6 address into buf (at least INET6_ADDRSTRLEN bytes). */
const char *rm__ip6_str(const struct in6_addr *addr, char *buf);

/* Netlink. One socket per struct; not thread-safe (the caller serializes). */
struct rm__nl;
struct rm__nl *rm__nl_open(struct rm_error **err);
void rm__nl_close(struct rm__nl *nl);
/* Create or adopt the bridge: up, the gateway address on it (and with subnet6 the IPv6
 * gateway, without duplicate address detection). *ifindex out. */
int rm__nl_bridge_ensure(struct rm__nl *nl, const struct rm__net_config *cfg, int *ifindex,
                         struct rm_error **err);
/* Create the veth pair host_name <-> eth0 with eth0 in the namespace netns_fd, host end
 * on the bridge, both up with mtu. */
int rm__nl_veth_create(struct rm__nl *nl, const char *host_name, int bridge_ifindex, int mtu,
                       int netns_fd, struct rm_error **err);
/* Delete a host link by name; a missing link is not an error. */
int rm__nl_link_delete(struct rm__nl *nl, const char *name, struct rm_error **err);
/* Set a host link down (a bridge port stops forwarding at once, a veth takes its peer
 * down with it); a missing link is not an error. */
int rm__nl_link_down(struct rm__nl *nl, const char *name, struct rm_error **err);

/* Deferred link deletion. Deleting a veth costs the caller a kernel RCU barrier (about
 * 20 ms here) after the link is already unlisted; the reaper pays it on its own thread
 * and socket, so pod teardown returns once the link is down. */
struct rm__reaper;
struct rm__reaper *rm__reaper_start(struct rm_error **err);
/* Queue a link for deletion. */
void rm__reaper_add(struct rm__reaper *r, const char *name);
/* The name is wanted again: if it is queued or being deleted, make sure it is gone before
 * returning (deleting it now with nl, the caller's socket, when still queued). */
void rm__reaper_claim(struct rm__reaper *r, struct rm__nl *nl, const char *name);
/* Delete everything still queued, then end the thread. NULL is a no-op. */
void rm__reaper_stop(struct rm__reaper *r);

/* What eth0 of a pod gets: the IPv4 address, and the IPv6 one when addr6 is not NULL. */
struct rm__nl_pod_addrs {
        uint32_t addr;
        int prefix;
        uint32_t gateway;
        const struct in6_addr *addr6;
        int prefix6;
        const struct in6_addr *gateway6;
};
/* Inside netns_fd: lo up, the addresses on eth0 (IPv6 without duplicate address
 * detection, usable at once), a default route per family via its gateway. */
int rm__nl_pod_configure(int netns_fd, const struct rm__nl_pod_addrs *a, struct rm_error **err);
/* Names of the links enslaved to bridge_ifindex whose names start with prefix. Calls
 * visit for each; returns 0 or -1. */
int rm__nl_bridge_ports(struct rm__nl *nl, int bridge_ifindex, const char *prefix,
                        void (*visit)(const char *name, void *data), void *data,
                        struct rm_error **err);

/* nftables: the table with NAT chains and hostport maps. */
struct rm__nft;
struct rm__nft *rm__nft_open(const struct rm__net_config *cfg, struct rm_error **err);
void rm__nft_close(struct rm__nft *nft);
/* (Re)create the table from scratch, dropping every element. */
int rm__nft_reset(struct rm__nft *nft, struct rm_error **err);
/* Whether host_ip names one IPv6 address or "::" (not "" nor an IPv4 address). */
bool rm__nft_host_ip_is_v6(const char *host_ip);
/* Add the pod's port mappings atomically; EEXIST conflicts are FAILED_PRECONDITION. A
 * mapping on every host address goes to both families when pod_ip6 is not NULL; one with
 * an IPv6 host_ip only to pod_ip6 (the caller checks there is one). */
int rm__nft_ports_add(struct rm__nft *nft, uint32_t pod_ip, const struct in6_addr *pod_ip6,
                      const struct rm_port_mapping *ports, size_t n, struct rm_error **err);
/* Remove them; elements already gone are skipped. */
void rm__nft_ports_del(struct rm__nft *nft, uint32_t pod_ip, const struct in6_addr *pod_ip6,
                       const struct rm_port_mapping *ports, size_t n);

#endif
