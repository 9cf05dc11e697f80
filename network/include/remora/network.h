/* Pod networking: what a pod's network namespace gets between RunPodSandbox and
 * StopPodSandbox. The sandbox layer creates and pins the namespace; this module fills it
 * (interfaces, addresses, routes, port mappings) and empties it again. It knows nothing
 * of containers. The built-in mode ("bridge", the default) puts every pod on a Linux
 * bridge with an address from the configured subnet, masquerade and hostPort DNAT in an
 * nftables table Remora owns; mode "none" gives pods loopback only; mode "cni" runs the
 * CNI plugins of the first network config in cni_conf_dir (ADD at setup, DEL at
 * teardown) and is ready once that config and its plugins are there. */
#ifndef REMORA_NETWORK_H
#define REMORA_NETWORK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

#include "remora/error.h"
#include "remora/store.h"

struct rm_network;

/* Open pod networking. section is the config file's "network" object (NULL when absent);
 * unknown keys are INVALID_ARGUMENT. Persistent records (IP allocations, the journal) go
 * through store; runtime files under <state>/network. */
struct rm_network *rm_network_open(struct json_object *section, const char *root, const char *state,
                                   struct rm_store *store, struct rm_error **err);
void rm_network_close(struct rm_network *net);

/* Figures for /metrics, read under the network lock (a bitmap count, no syscall). In
 * CNI mode addresses belong to the plugins: the IPAM figures are then zero. */
#define RM_NET_STATS_PLUGINS 16
struct rm_network_stats {
        uint32_t ipv4_in_use, ipv4_free;
        uint32_t ipv6_in_use, ipv6_free;
        size_t n_plugins;
        struct {
                char type[64]; /* the plugin's "type" */
                uint64_t failures;
        } plugins[RM_NET_STATS_PLUGINS]; /* CNI plugin runs that failed, by plugin */
};
void rm_network_stats(struct rm_network *net, struct rm_network_stats *out);

/* For `remorad --check`: parse the "network" section without opening anything, and list
 * the nftables tables (read-only) to show libnftables and the kernel answer. */
int rm_network_config_check(struct json_object *section, struct rm_error **err);
int rm_network_nft_check(struct rm_error **err);

/* Whether pods can get a network now. When not, *reason is a CamelCase reason for the
 * NetworkReady condition and *message says why in words. Strings are static. */
bool rm_network_ready(const struct rm_network *net, const char **reason, const char **message);

/* One CRI PortMapping. protocol is IPPROTO_TCP, IPPROTO_UDP or IPPROTO_SCTP. */
struct rm_port_mapping {
        int protocol;
        int32_t container_port;
        int32_t host_port;
        const char *host_ip; /* "" or NULL: every host address */
};

/* What the sandbox layer knows about a pod when it asks for its network. */
struct rm_pod_network_request {
        const char *pod_id; /* 64 hex characters */
        const char *name;   /* PodSandboxMetadata name and namespace, for CNI args */
        const char *namespace_;
        const char *netns_path; /* the pinned network namespace */
        const struct rm_port_mapping *ports;
        size_t n_ports;
};

/* The addresses a pod got, primary first (IPv4 before IPv6 in dual stack). */
#define RM_POD_MAX_IPS 2
struct rm_pod_network_result {
        char *ips[RM_POD_MAX_IPS];
        size_t n_ips;
};
void rm_pod_network_result_release(struct rm_pod_network_result *res);

/* Give the pod in req->netns_path its network. On failure everything made so far is
 * undone and the error names the step. With no pod network configured this succeeds
 * and leaves res empty (the pod has loopback only). */
int rm_network_pod_setup(struct rm_network *net, const struct rm_pod_network_request *req,
                         struct rm_pod_network_result *res, struct rm_error **err);

/* Undo rm_network_pod_setup for pod_id: addresses, links, rules. netns_path may be NULL
 * or name a namespace that is already gone; teardown still releases what the records
 * say the pod held. Tearing down a pod that has nothing is not an error. */
int rm_network_pod_teardown(struct rm_network *net, const char *pod_id, const char *netns_path,
                            struct rm_error **err);

/* Start-up: whether the pod's network is all there (its record finished, its veth on the
 * host). Always true without a bridge network of Remora's own (mode none or cni). */
bool rm_network_pod_present(struct rm_network *net, const char *pod_id);

/* Start-up reconcile: undo every pod network whose pod is not in live_pod_ids (the pods
 * the server still has) or whose setup never finished (a crash mid-setup): its port
 * mappings, veth and address record. Also removes veths on the bridge that no record
 * owns. Call once after open, before serving. Returns -1 if something could not be
 * undone (it is kept and retried by the next reconcile). */
int rm_network_reconcile(struct rm_network *net, const char *const *live_pod_ids, size_t n_live,
                         struct rm_error **err);

#endif
