/* Pod networking: the mode switch, and the built-in bridge mode: the bridge, per-pod veth and
 * addresses, IPAM and the network journal. Every pod's record (kind "network", id = pod ID) is
 * written in state "pending" with the address and interface names before anything is made, and
 * turned "ready" when setup finishes; so after a crash, reconcile knows what to undo. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cni.h"
#include "internal.h"
#include "remora/cleanup.h"
#include "remora/log.h"
#include "remora/network.h"
#include "remora/xalloc.h"

#define KIND "network"

struct rm_network {
        struct rm__net_config cfg;
        struct rm_store *store;
        pthread_mutex_t lock; /* IPAM, the netlink socket, the nft context */
        struct rm__nl *nl;
        struct rm__nft *nft;
        struct rm__reaper *reaper; /* bridge mode: deletes downed veths off the call path */
        struct rm__cni *cni;       /* mode "cni" only */
        int bridge_ifindex;
        bool ready;
        const char *reason;
        char message[512];
        uint8_t *used; /* one bit per address of the subnet */
        uint32_t size, next;
        uint8_t *used6; /* the same over the first size6 addresses of subnet6 */
        uint32_t size6, next6;
};

/* Pods get IPv6 addresses from the first 2^16 of subnet6 (a /64 has far more than any
 * node runs pods); the bitmap stays small whatever the prefix. */
#define V6_POOL_BITS 16

/* ---- IPAM: a bitmap over the subnet, persisted as the pods' records. ---- */

static bool ip_used(const struct rm_network *n, uint32_t off)
{
        return n->used[off / 8] & (1u << (off % 8));
}

static void ip_mark(struct rm_network *n, uint32_t ip, bool on)
{
        uint32_t off = ip - n->cfg.subnet;
        if (off >= n->size)
                return;
        if (on)
                n->used[off / 8] |= (uint8_t)(1u << (off % 8));
        else
                n->used[off / 8] &= (uint8_t) ~(1u << (off % 8));
}

/* Next free address after the last one handed out, so a released address is not reused
 * at once (a stale peer's ARP entry or conntrack flow would reach the new pod). */
static int ip_alloc(struct rm_network *n, uint32_t *out, struct rm_error **err)
{
        for (uint32_t i = 0; i < n->size; i++) {
                uint32_t off = (n->next + i) % n->size;
                /* network address, gateway and broadcast are never pods' */
                if (off < 2 || off == n->size - 1 || ip_used(n, off))
                        continue;
                n->next = off + 1;
                ip_mark(n, n->cfg.subnet + off, true);
                *out = n->cfg.subnet + off;
                return 0;
        }
        return rm_error_set(err, RM_RESOURCE_EXHAUSTED, "no free address left in %s/%d",
                            rm__ip4_str(n->cfg.subnet, (char[16]){0}), n->cfg.prefix);
}

/* IPv6: the offset of addr in subnet6, or UINT32_MAX when outside the pool. The pool lies
 * in the last 32 bits (prefix6 <= 120, pool <= 2^16), so the first 12 bytes must match. */
static uint32_t ip6_offset(const struct rm_network *n, const struct in6_addr *addr)
{
        const struct in6_addr *sub = &n->cfg.subnet6;
        if (memcmp(addr->s6_addr, sub->s6_addr, 12) != 0)
                return UINT32_MAX;
        uint32_t a, b;
        memcpy(&a, addr->s6_addr + 12, 4);
        memcpy(&b, sub->s6_addr + 12, 4);
        uint32_t off = ntohl(a) - ntohl(b);
        return off < n->size6 ? off : UINT32_MAX;
}

static struct in6_addr ip6_at(const struct rm_network *n, uint32_t off)
{
        struct in6_addr a = n->cfg.subnet6;
        uint32_t low;
        memcpy(&low, a.s6_addr + 12, 4);
        low = htonl(ntohl(low) + off);
        memcpy(a.s6_addr + 12, &low, 4);
        return a;
}

static void ip6_mark(struct rm_network *n, const struct in6_addr *addr, bool on)
{
        uint32_t off = n->used6 ? ip6_offset(n, addr) : UINT32_MAX;
        if (off == UINT32_MAX)
                return;
        if (on)
                n->used6[off / 8] |= (uint8_t)(1u << (off % 8));
        else
                n->used6[off / 8] &= (uint8_t) ~(1u << (off % 8));
}

/* As ip_alloc: round-robin, so a released address rests before it is handed out again. */
static int ip6_alloc(struct rm_network *n, struct in6_addr *out, struct rm_error **err)
{
        for (uint32_t i = 0; i < n->size6; i++) {
                uint32_t off = (n->next6 + i) % n->size6;
                /* the subnet-router anycast address and the gateway are never pods' */
                if (off < 2 || n->used6[off / 8] & (1u << (off % 8)))
                        continue;
                n->next6 = off + 1;
                n->used6[off / 8] |= (uint8_t)(1u << (off % 8));
                *out = ip6_at(n, off);
                return 0;
        }
        char buf[INET6_ADDRSTRLEN];
        return rm_error_set(err, RM_RESOURCE_EXHAUSTED, "no free IPv6 address left in %s/%d",
                            rm__ip6_str(&n->cfg.subnet6, buf), n->cfg.prefix6);
}

/* ---- records ---- */

struct pod_rec {
        char ip_s[16];
        uint32_t ip;
        char ip6_s[INET6_ADDRSTRLEN]; /* "" when the pod has no IPv6 address */
        struct in6_addr ip6;
        char veth[16];
        bool ready;
        struct rm_port_mapping *ports;
        size_t n_ports;
        struct json_object *doc; /* owns the host_ip strings */
};

static const struct in6_addr *rec_ip6(const struct pod_rec *r)
{
        return r->ip6_s[0] ? &r->ip6 : NULL;
}

static void pod_rec_release(struct pod_rec *r)
{
        free(r->ports);
        if (r->doc)
                json_object_put(r->doc);
        memset(r, 0, sizeof(*r));
}

static struct json_object *rec_doc(const struct pod_rec *r, const struct rm_port_mapping *ports,
                                   size_t n)
{
        struct json_object *doc = json_object_new_object();
        json_object_object_add(doc, "state",
                               json_object_new_string(r->ready ? "ready" : "pending"));
        json_object_object_add(doc, "ip", json_object_new_string(r->ip_s));
        if (r->ip6_s[0])
                json_object_object_add(doc, "ip6", json_object_new_string(r->ip6_s));
        json_object_object_add(doc, "veth", json_object_new_string(r->veth));
        struct json_object *arr = json_object_new_array();
        for (size_t i = 0; i < n; i++) {
                struct json_object *p = json_object_new_object();
                json_object_object_add(p, "protocol", json_object_new_int(ports[i].protocol));
                json_object_object_add(p, "container_port",
                                       json_object_new_int(ports[i].container_port));
                json_object_object_add(p, "host_port", json_object_new_int(ports[i].host_port));
                json_object_object_add(
                    p, "host_ip", json_object_new_string(ports[i].host_ip ? ports[i].host_ip : ""));
                json_object_array_add(arr, p);
        }
        json_object_object_add(doc, "ports", arr);
        return doc;
}

static const char *jstr(struct json_object *o, const char *key)
{
        struct json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

/* Parse a record; doc is taken over by r. */
static int rec_parse(const char *id, struct json_object *doc, struct pod_rec *r,
                     struct rm_error **err)
{
        memset(r, 0, sizeof(*r));
        r->doc = doc;
        const char *state = jstr(doc, "state"), *ip = jstr(doc, "ip"), *veth = jstr(doc, "veth");
        struct in_addr a;
        struct json_object *arr;
        if (!state || !ip || !veth || strlen(veth) > 15 || inet_pton(AF_INET, ip, &a) != 1 ||
            !json_object_object_get_ex(doc, "ports", &arr) ||
            !json_object_is_type(arr, json_type_array)) {
                return rm_error_set(err, RM_DATA_LOSS, "network record %s is malformed", id);
        }
        snprintf(r->ip_s, sizeof(r->ip_s), "%s", ip);
        r->ip = ntohl(a.s_addr);
        /* absent in IPv4-only setups and in records written before subnet6 existed */
        const char *ip6 = jstr(doc, "ip6");
        if (ip6 != NULL) {
                if (inet_pton(AF_INET6, ip6, &r->ip6) != 1)
                        return rm_error_set(err, RM_DATA_LOSS, "network record %s is malformed",
                                            id);
                rm__ip6_str(&r->ip6, r->ip6_s);
        }
        snprintf(r->veth, sizeof(r->veth), "%s", veth);
        r->ready = strcmp(state, "ready") == 0;
        r->n_ports = json_object_array_length(arr);
        r->ports = xzalloc((r->n_ports ? r->n_ports : 1) * sizeof(*r->ports));
        for (size_t i = 0; i < r->n_ports; i++) {
                struct json_object *p = json_object_array_get_idx(arr, i), *v;
                if (json_object_object_get_ex(p, "protocol", &v))
                        r->ports[i].protocol = json_object_get_int(v);
                if (json_object_object_get_ex(p, "container_port", &v))
                        r->ports[i].container_port = json_object_get_int(v);
                if (json_object_object_get_ex(p, "host_port", &v))
                        r->ports[i].host_port = json_object_get_int(v);
                r->ports[i].host_ip = jstr(p, "host_ip");
        }
        return 0;
}

/* ---- open ---- */

static int write_sysctl(const char *path, const char *value, struct rm_error **err)
{
        cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, value, strlen(value)) < 0)
                return rm_error_sys(err, "write %s", path);
        return 0;
}

static int load_one(const char *id, struct json_object *doc, const struct rm_error *bad, void *data,
                    struct rm_error **err)
{
        (void)bad;
        (void)err;
        struct rm_network *n = data;
        if (doc == NULL)
                return 0;
        struct pod_rec r;
        cleanup_error struct rm_error *e = NULL;
        if (rec_parse(id, json_object_get(doc), &r, &e) == 0) {
                ip_mark(n, r.ip, true);
                if (rec_ip6(&r))
                        ip6_mark(n, &r.ip6, true);
                /* a live pod keeps its port mappings across a restart of remorad */
                if (r.ready && r.n_ports)
                        rm__nft_ports_add(n->nft, r.ip, n->cfg.has_v6 ? rec_ip6(&r) : NULL, r.ports,
                                          r.n_ports, NULL);
        } else {
                rm_log_warn("%s", e->msg);
        }
        pod_rec_release(&r);
        return 0;
}

static int bridge_up(struct rm_network *n, struct rm_error **err)
{
        char path[128];
        n->nl = rm__nl_open(err);
        if (n->nl == NULL)
                return rm_error_wrap(err, "open netlink");
        if (rm__nl_bridge_ensure(n->nl, &n->cfg, &n->bridge_ifindex, err) < 0)
                return rm_error_wrap(err, "bridge %s", n->cfg.bridge);
        if (write_sysctl("/proc/sys/net/ipv4/ip_forward", "1", err) < 0)
                return rm_error_wrap(err, "enable IP forwarding");
        /* DNAT of 127.0.0.1 traffic to a pod leaves with a loopback source: allow it */
        snprintf(path, sizeof(path), "/proc/sys/net/ipv4/conf/%s/route_localnet", n->cfg.bridge);
        if (write_sysctl(path, "1", err) < 0)
                return rm_error_wrap(err, "enable route_localnet on %s", n->cfg.bridge);
        if (n->cfg.has_v6) {
                if (write_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1", err) < 0)
                        return rm_error_wrap(err, "enable IPv6 forwarding");
        }
        n->nft = rm__nft_open(&n->cfg, err);
        if (n->nft == NULL || rm__nft_reset(n->nft, err) < 0)
                return -1;
        if (rm_store_list(n->store, KIND, load_one, n, err) < 0)
                return rm_error_wrap(err, "load network records");
        return 0;
}

struct rm_network *rm_network_open(struct json_object *section, const char *root, const char *state,
                                   struct rm_store *store, struct rm_error **err)
{
        (void)root;
        struct rm__net_config cfg;
        if (rm__net_config_parse(section, &cfg, err) < 0)
                return NULL;
        struct rm_network *n = xzalloc(sizeof(*n));
        n->cfg = cfg;
        n->store = store;
        pthread_mutex_init(&n->lock, NULL);
        n->size = 1u << (32 - cfg.prefix);
        n->used = xzalloc(n->size / 8 + 1);
        n->next = 2;
        if (cfg.has_v6) {
                int bits = 128 - cfg.prefix6 < V6_POOL_BITS ? 128 - cfg.prefix6 : V6_POOL_BITS;
                n->size6 = 1u << bits;
                n->used6 = xzalloc(n->size6 / 8 + 1);
                n->next6 = 2;
        }
        switch (cfg.mode) {
        case RM_NET_NONE:
                n->reason = "NetworkDisabled";
                snprintf(n->message, sizeof(n->message),
                         "network.mode is \"none\": pods get loopback only");
                return n;
        case RM_NET_CNI: {
                /* readiness is decided at each call: the config may appear later */
                cleanup_free char *cache = xasprintf("%s/network", state);
                n->cni =
                    rm__cni_new(cfg.cni_conf_dir, cfg.cni_bin_dir, cache, cfg.cni_timeout_s * 1000);
                n->reason = "NetworkPluginNotReady";
                return n;
        }
        case RM_NET_BRIDGE:
                break;
        }
        /* A broken host network must not keep remorad from serving: report it instead. */
        cleanup_error struct rm_error *e = NULL;
        if (bridge_up(n, &e) < 0) {
                n->reason = "BridgeSetupFailed";
                snprintf(n->message, sizeof(n->message), "%s", e->msg);
                rm_log_error("pod network: %s", e->msg);
                return n;
        }
        /* without the reaper, teardown deletes veths itself: slower, not wrong */
        n->reaper = rm__reaper_start(&e);
        if (n->reaper == NULL)
                rm_log_warn("pod network: %s; veths are deleted synchronously", e->msg);
        n->ready = true;
        return n;
}

void rm_network_close(struct rm_network *net)
{
        if (net == NULL)
                return;
        rm__reaper_stop(net->reaper); /* first: it finishes what teardowns queued */
        rm__nl_close(net->nl);
        rm__nft_close(net->nft);
        rm__cni_free(net->cni);
        pthread_mutex_destroy(&net->lock);
        free(net->used);
        free(net->used6);
        free(net);
}

bool rm_network_ready(const struct rm_network *net, const char **reason, const char **message)
{
        if (net->cni) {
                if (rm__cni_ready(net->cni, message))
                        return true;
                *reason = net->reason;
                return false;
        }
        if (net->ready)
                return true;
        *reason = net->reason;
        *message = net->message;
        return false;
}

void rm_pod_network_result_release(struct rm_pod_network_result *res)
{
        for (size_t i = 0; i < res->n_ips; i++)
                free(res->ips[i]);
        res->n_ips = 0;
}

/* ---- setup / teardown ---- */

/* v6: IPv6 host addresses are allowed (bridge mode with subnet6). */
static int check_ports(const struct rm_port_mapping *p, size_t n, bool v6, struct rm_error **err)
{
        for (size_t i = 0; i < n; i++) {
                struct in_addr a;
                if (p[i].protocol != IPPROTO_TCP && p[i].protocol != IPPROTO_UDP &&
                    p[i].protocol != IPPROTO_SCTP)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "port_mappings[%zu].protocol: %d is not TCP, UDP or "
                                            "SCTP",
                                            i, p[i].protocol);
                if (p[i].container_port < 1 || p[i].container_port > 65535)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "port_mappings[%zu].container_port: %d is outside "
                                            "1..65535",
                                            i, p[i].container_port);
                if (p[i].host_port < 1 || p[i].host_port > 65535)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "port_mappings[%zu].host_port: %d is outside 1..65535",
                                            i, p[i].host_port);
                if (!p[i].host_ip || !*p[i].host_ip || inet_pton(AF_INET, p[i].host_ip, &a) == 1)
                        continue;
                if (!rm__nft_host_ip_is_v6(p[i].host_ip))
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "port_mappings[%zu].host_ip: \"%s\" is not an IP "
                                            "address",
                                            i, p[i].host_ip);
                if (!v6)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "port_mappings[%zu].host_ip: \"%s\" is IPv6 and "
                                            "pods have no IPv6 address (IPv6 hostPorts need "
                                            "the bridge mode with network.subnet6)",
                                            i, p[i].host_ip);
        }
        return 0;
}

/* Undo what a record says a pod holds. Returns -1 (record kept) when the veth would not go.
 * With the reaper, the veth is only set down here (its bridge port and the pod's eth0 stop
 * passing traffic at once) and deleted just after on the reaper's thread; its address can
 * be released now, as the allocator does not hand a released address out again soon. */
static int undo(struct rm_network *n, const char *pod_id, struct pod_rec *r, struct rm_error **err)
{
        rm__nft_ports_del(n->nft, r->ip, n->cfg.has_v6 ? rec_ip6(r) : NULL, r->ports, r->n_ports);
        if (n->reaper) {
                if (rm__nl_link_down(n->nl, r->veth, err) < 0)
                        return rm_error_wrap(err, "teardown %s: set veth %s down", pod_id, r->veth);
                rm__reaper_add(n->reaper, r->veth);
        } else if (rm__nl_link_delete(n->nl, r->veth, err) < 0) {
                return rm_error_wrap(err, "teardown %s: delete veth %s", pod_id, r->veth);
        }
        if (rm_store_delete(n->store, KIND, pod_id, err) < 0)
                return rm_error_wrap(err, "teardown %s: release address %s", pod_id, r->ip_s);
        ip_mark(n, r->ip, false);
        if (rec_ip6(r))
                ip6_mark(n, &r->ip6, false);
        return 0;
}

static void result_fill(struct rm_pod_network_result *res, const struct pod_rec *r)
{
        res->ips[0] = xstrdup(r->ip_s);
        res->n_ips = 1;
        if (r->ip6_s[0])
                res->ips[res->n_ips++] = xstrdup(r->ip6_s);
}

static int setup_locked(struct rm_network *n, const struct rm_pod_network_request *req,
                        struct rm_pod_network_result *res, struct rm_error **err)
{
        const char *id = req->pod_id;
        cleanup_error struct rm_error *nf = NULL;
        cleanup_json struct json_object *old = rm_store_get(n->store, KIND, id, &nf);
        if (old != NULL) {
                struct pod_rec r;
                if (rec_parse(id, json_object_get(old), &r, err) < 0 || !r.ready) {
                        pod_rec_release(&r);
                        return rm_error_set(err, RM_ALREADY_EXISTS,
                                            "pod %s already has an unfinished network setup", id);
                }
                result_fill(res, &r);
                pod_rec_release(&r);
                return 0;
        }
        struct pod_rec r = {0};
        if (ip_alloc(n, &r.ip, err) < 0)
                return rm_error_wrap(err, "allocate address");
        rm__ip4_str(r.ip, r.ip_s);
        if (n->cfg.has_v6) {
                if (ip6_alloc(n, &r.ip6, err) < 0) {
                        ip_mark(n, r.ip, false);
                        return rm_error_wrap(err, "allocate IPv6 address");
                }
                rm__ip6_str(&r.ip6, r.ip6_s);
        }
        snprintf(r.veth, sizeof(r.veth), "%s%.*s", n->cfg.veth_prefix,
                 (int)(15 - strlen(n->cfg.veth_prefix)), id);
        /* journal first: from here a crash leaves a record reconcile will undo */
        cleanup_json struct json_object *doc = rec_doc(&r, req->ports, req->n_ports);
        if (rm_store_put(n->store, KIND, id, doc, err) < 0) {
                ip_mark(n, r.ip, false);
                if (rec_ip6(&r))
                        ip6_mark(n, &r.ip6, false);
                return rm_error_wrap(err, "record address %s", r.ip_s);
        }
        r.ports = (struct rm_port_mapping *)req->ports; /* borrowed for undo */
        r.n_ports = 0;
        const char *step;
        cleanup_close int fd = open(req->netns_path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                rm_error_sys(err, "%s", req->netns_path);
                step = "open network namespace";
                goto fail;
        }
        if (n->reaper) /* a pod ID set up again right after its teardown */
                rm__reaper_claim(n->reaper, n->nl, r.veth);
        if (rm__nl_veth_create(n->nl, r.veth, n->bridge_ifindex, n->cfg.mtu, fd, err) < 0) {
                step = "create veth";
                goto fail;
        }
        struct rm__nl_pod_addrs addrs = {.addr = r.ip,
                                         .prefix = n->cfg.prefix,
                                         .gateway = n->cfg.gateway,
                                         .addr6 = rec_ip6(&r),
                                         .prefix6 = n->cfg.prefix6,
                                         .gateway6 = &n->cfg.gateway6};
        if (rm__nl_pod_configure(fd, &addrs, err) < 0) {
                step = "configure eth0";
                goto fail;
        }
        if (rm__nft_ports_add(n->nft, r.ip, rec_ip6(&r), req->ports, req->n_ports, err) < 0) {
                step = "port mappings";
                goto fail;
        }
        r.n_ports = req->n_ports;
        r.ready = true;
        json_object_put(doc);
        doc = rec_doc(&r, req->ports, req->n_ports);
        if (rm_store_put(n->store, KIND, id, doc, err) < 0) {
                step = "record setup";
                goto fail;
        }
        result_fill(res, &r);
        return 0;
fail:;
        cleanup_error struct rm_error *ue = NULL;
        if (undo(n, id, &r, &ue) < 0)
                rm_log_error("pod %s: rollback left state for reconcile: %s", id, ue->msg);
        return rm_error_wrap(err, "%s", step);
}

static int cni_setup(struct rm_network *net, const struct rm_pod_network_request *req,
                     struct rm_pod_network_result *res, struct rm_error **err)
{
        if (req->pod_id == NULL || !rm_store_valid_name(req->pod_id))
                return rm_error_set(err, RM_INVALID_ARGUMENT, "pod_id: not a valid pod ID");
        if (req->netns_path == NULL || req->netns_path[0] != '/')
                return rm_error_set(err, RM_INVALID_ARGUMENT, "netns_path: must be absolute");
        if (check_ports(req->ports, req->n_ports, false, err) < 0)
                return -1;
        struct rm__cni_pod pod = {.pod_id = req->pod_id,
                                  .name = req->name,
                                  .namespace_ = req->namespace_,
                                  .netns = req->netns_path,
                                  .ports = req->ports,
                                  .n_ports = req->n_ports};
        if (rm__cni_add(net->cni, &pod, res, err) < 0)
                return rm_error_wrap(err, "network setup for pod %s", req->pod_id);
        return 0;
}

int rm_network_pod_setup(struct rm_network *net, const struct rm_pod_network_request *req,
                         struct rm_pod_network_result *res, struct rm_error **err)
{
        res->n_ips = 0;
        if (net->cfg.mode == RM_NET_NONE)
                return 0; /* loopback only: the sandbox layer brings lo up */
        if (net->cni)
                return cni_setup(net, req, res, err);
        if (!net->ready)
                return rm_error_set(err, RM_FAILED_PRECONDITION, "pod network is not ready: %s",
                                    net->message);
        if (req->pod_id == NULL || !rm_store_valid_name(req->pod_id))
                return rm_error_set(err, RM_INVALID_ARGUMENT, "pod_id: not a valid pod ID");
        if (req->netns_path == NULL || req->netns_path[0] != '/')
                return rm_error_set(err, RM_INVALID_ARGUMENT, "netns_path: must be absolute");
        if (check_ports(req->ports, req->n_ports, net->cfg.has_v6, err) < 0)
                return -1;
        pthread_mutex_lock(&net->lock);
        int r = setup_locked(net, req, res, err);
        pthread_mutex_unlock(&net->lock);
        if (r < 0)
                return rm_error_wrap(err, "network setup for pod %s", req->pod_id);
        return 0;
}

static int teardown_locked(struct rm_network *n, const char *pod_id, struct rm_error **err)
{
        cleanup_error struct rm_error *nf = NULL;
        struct json_object *doc = rm_store_get(n->store, KIND, pod_id, &nf);
        if (doc == NULL) {
                if (nf->code == RM_NOT_FOUND)
                        return 0;
                /* unreadable: nothing is known to undo; drop it so it cannot block */
                return rm_store_delete(n->store, KIND, pod_id, err);
        }
        struct pod_rec r;
        if (rec_parse(pod_id, doc, &r, err) < 0) {
                pod_rec_release(&r);
                return rm_store_delete(n->store, KIND, pod_id, err);
        }
        int ret = undo(n, pod_id, &r, err);
        pod_rec_release(&r);
        return ret;
}

int rm_network_pod_teardown(struct rm_network *net, const char *pod_id, const char *netns_path,
                            struct rm_error **err)
{
        if (net->cfg.mode == RM_NET_NONE || (net->cfg.mode == RM_NET_BRIDGE && net->nl == NULL))
                return 0;
        if (pod_id == NULL || !rm_store_valid_name(pod_id))
                return rm_error_set(err, RM_INVALID_ARGUMENT, "pod_id: not a valid pod ID");
        if (net->cni)
                return rm__cni_del(net->cni, pod_id, netns_path, err);
        /* bridge: deleting the host end removes eth0 wherever it is, netns_path unused */
        pthread_mutex_lock(&net->lock);
        int r = teardown_locked(net, pod_id, err);
        pthread_mutex_unlock(&net->lock);
        return r;
}

/* ---- reconcile ---- */

bool rm_network_pod_present(struct rm_network *net, const char *pod_id)
{
        if (net->cfg.mode != RM_NET_BRIDGE || net->cni)
                return true;
        if (pod_id == NULL || !rm_store_valid_name(pod_id))
                return false;
        cleanup_json struct json_object *doc = rm_store_get(net->store, KIND, pod_id, NULL);
        if (doc == NULL)
                return false;
        struct pod_rec r;
        bool ok = rec_parse(pod_id, json_object_get(doc), &r, NULL) == 0 && r.ready &&
                  if_nametoindex(r.veth) > 0;
        pod_rec_release(&r);
        return ok;
}

struct reconcile_ctx {
        struct rm_network *n;
        const char *const *live;
        size_t n_live;
        char **keep; /* veth names of pods that stay */
        size_t n_keep;
        int undone, failed;
};

static bool is_live(const struct reconcile_ctx *c, const char *id)
{
        for (size_t i = 0; i < c->n_live; i++)
                if (strcmp(c->live[i], id) == 0)
                        return true;
        return false;
}

static int reconcile_one(const char *id, struct json_object *doc, const struct rm_error *bad,
                         void *data, struct rm_error **err)
{
        (void)bad;
        (void)err;
        struct reconcile_ctx *c = data;
        struct pod_rec r;
        cleanup_error struct rm_error *e = NULL;
        if (doc == NULL || rec_parse(id, json_object_get(doc), &r, &e) < 0) {
                if (doc != NULL)
                        pod_rec_release(&r);
                rm_store_delete(c->n->store, KIND, id, NULL);
                c->undone++;
                return 0;
        }
        if (r.ready && is_live(c, id)) {
                c->keep = xrealloc(c->keep, (c->n_keep + 1) * sizeof(*c->keep));
                c->keep[c->n_keep++] = xstrdup(r.veth);
        } else if (undo(c->n, id, &r, &e) < 0) {
                rm_log_error("network reconcile: %s", e->msg);
                c->failed++;
        } else {
                c->undone++;
        }
        pod_rec_release(&r);
        return 0;
}

static void stray_port(const char *name, void *data)
{
        struct reconcile_ctx *c = data;
        for (size_t i = 0; i < c->n_keep; i++)
                if (strcmp(c->keep[i], name) == 0)
                        return;
        if (rm__nl_link_delete(c->n->nl, name, NULL) == 0) {
                rm_log_info("network reconcile: removed stray veth %s", name);
                c->undone++;
        }
}

int rm_network_reconcile(struct rm_network *net, const char *const *live_pod_ids, size_t n_live,
                         struct rm_error **err)
{
        if (net->cni) {
                int failed = rm__cni_reconcile(net->cni, live_pod_ids, n_live, err);
                if (failed < 0)
                        return rm_error_wrap(err, "network reconcile");
                if (failed > 0)
                        return rm_error_set(err, RM_INTERNAL,
                                            "network reconcile: CNI DEL failed for %d pod(s)",
                                            failed);
                return 0;
        }
        if (net->cfg.mode != RM_NET_BRIDGE || !net->ready)
                return 0;
        struct reconcile_ctx c = {.n = net, .live = live_pod_ids, .n_live = n_live};
        pthread_mutex_lock(&net->lock);
        int r = rm_store_list(net->store, KIND, reconcile_one, &c, err);
        if (r >= 0)
                r = rm__nl_bridge_ports(net->nl, net->bridge_ifindex, net->cfg.veth_prefix,
                                        stray_port, &c, err);
        pthread_mutex_unlock(&net->lock);
        for (size_t i = 0; i < c.n_keep; i++)
                free(c.keep[i]);
        free(c.keep);
        if (r < 0)
                return rm_error_wrap(err, "network reconcile");
        if (c.undone || c.failed)
                rm_log_info("network reconcile: undid %d pod network(s), %d failed", c.undone,
                            c.failed);
        if (c.failed)
                return rm_error_set(err, RM_INTERNAL,
                                    "network reconcile: %d pod network(s) could not be undone",
                                    c.failed);
        return 0;
}

static uint32_t popcount_bits(const uint8_t *bits, uint32_t n)
{
        uint32_t c = 0;
        for (uint32_t i = 0; bits && i < (n + 7) / 8; i++)
                c += (uint32_t)__builtin_popcount(bits[i]);
        return c;
}

void rm_network_stats(struct rm_network *net, struct rm_network_stats *out)
{
        memset(out, 0, sizeof(*out));
        if (net->cni) {
                rm__cni_failures(net->cni, out);
                return;
        }
        if (net->cfg.mode != RM_NET_BRIDGE)
                return;
        pthread_mutex_lock(&net->lock);
        /* The network address, the gateway and the broadcast address are never pods'
         * (IPv6: the subnet-router anycast address and the gateway), as in ip_alloc. */
        out->ipv4_in_use = popcount_bits(net->used, net->size);
        out->ipv4_free = net->size > 3 ? net->size - 3 - out->ipv4_in_use : 0;
        if (net->used6) {
                out->ipv6_in_use = popcount_bits(net->used6, net->size6);
                out->ipv6_free = net->size6 > 2 ? net->size6 - 2 - out->ipv6_in_use : 0;
        }
        pthread_mutex_unlock(&net->lock);
}
