#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "remora/confsect.h"

const char *rm__ip4_str(uint32_t addr, char *buf)
{
        struct in_addr a = {.s_addr = htonl(addr)};
        return inet_ntop(AF_INET, &a, buf, 16);
}

const char *rm__ip6_str(const struct in6_addr *addr, char *buf)
{
        return inet_ntop(AF_INET6, addr, buf, INET6_ADDRSTRLEN);
}

/* An IPv6 prefix such as fd77::/64; the gateway is its first address (<prefix>::1). The
 * prefix length leaves at least 8 host bits and keeps the interface ID out of the
 * network part (/48../120). */
static int parse_subnet6(const char *s, struct rm__net_config *cfg, struct rm_error **err)
{
        char ip[INET6_ADDRSTRLEN];
        const char *slash = strchr(s, '/');
        struct in6_addr a;
        char *end = NULL;
        long prefix = -1;
        if (slash != NULL && (size_t)(slash - s) < sizeof(ip)) {
                memcpy(ip, s, (size_t)(slash - s));
                ip[slash - s] = '\0';
                prefix = strtol(slash + 1, &end, 10);
        }
        if (slash == NULL || (size_t)(slash - s) >= sizeof(ip) || end == slash + 1 ||
            *end != '\0' || inet_pton(AF_INET6, ip, &a) != 1)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "network.subnet6: \"%s\" is not an IPv6 prefix such as "
                                    "fd77::/64",
                                    s);
        if (prefix < 48 || prefix > 120)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "network.subnet6: prefix length /%ld is outside /48../120",
                                    prefix);
        for (int bit = (int)prefix; bit < 128; bit++)
                if (a.s6_addr[bit / 8] & (0x80u >> (bit % 8)))
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "network.subnet6: \"%s\" has host bits set", s);
        if (IN6_IS_ADDR_MULTICAST(&a) || IN6_IS_ADDR_LINKLOCAL(&a) || IN6_IS_ADDR_UNSPECIFIED(&a))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "network.subnet6: \"%s\" is not a unicast prefix pods can "
                                    "route (use a ULA such as fd77::/64 or a global one)",
                                    s);
        cfg->has_v6 = true;
        cfg->subnet6 = a;
        cfg->prefix6 = (int)prefix;
        cfg->gateway6 = a;
        cfg->gateway6.s6_addr[15] |= 1;
        return 0;
}

static int parse_subnet(const char *s, struct rm__net_config *cfg, struct rm_error **err)
{
        char ip[32];
        const char *slash = strchr(s, '/');
        if (slash == NULL || (size_t)(slash - s) >= sizeof(ip))
                return rm_error_set(
                    err, RM_INVALID_ARGUMENT,
                    "network.subnet: \"%s\" is not an IPv4 CIDR such as 10.77.0.0/16", s);
        memcpy(ip, s, (size_t)(slash - s));
        ip[slash - s] = '\0';
        struct in_addr a;
        char *end;
        long prefix = strtol(slash + 1, &end, 10);
        if (inet_pton(AF_INET, ip, &a) != 1 || *end != '\0' || end == slash + 1)
                return rm_error_set(
                    err, RM_INVALID_ARGUMENT,
                    "network.subnet: \"%s\" is not an IPv4 CIDR such as 10.77.0.0/16", s);
        if (prefix < 8 || prefix > 30)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "network.subnet: prefix length /%ld is outside /8../30",
                                    prefix);
        uint32_t addr = ntohl(a.s_addr);
        uint32_t mask = prefix == 0 ? 0 : ~0u << (32 - prefix);
        if (addr & ~mask)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "network.subnet: \"%s\" has host bits set", s);
        cfg->subnet = addr;
        cfg->prefix = (int)prefix;
        cfg->gateway = addr + 1;
        return 0;
}

static bool valid_ifname(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > 15)
                return false;
        for (size_t i = 0; i < n; i++)
                if (s[i] == '/' || s[i] == ':' || s[i] <= ' ' || s[i] == 0x7f)
                        return false;
        return strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static bool valid_ident(const char *s, size_t max)
{
        size_t n = strlen(s);
        if (n == 0 || n > max)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                      (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
                        return false;
        return true;
}

/* One or more absolute directories separated by ':' (empty entries are skipped). */
static bool valid_path_list(const char *s)
{
        bool any = false;
        for (const char *p = s; *p;) {
                const char *colon = strchr(p, ':');
                size_t len = colon ? (size_t)(colon - p) : strlen(p);
                if (len > 0) {
                        if (p[0] != '/')
                                return false;
                        any = true;
                }
                if (colon == NULL)
                        break;
                p = colon + 1;
        }
        return any;
}

int rm__net_config_parse(struct json_object *section, struct rm__net_config *cfg,
                         struct rm_error **err)
{
        static const char *const known[] = {
            "mode",      "bridge",      "subnet",       "subnet6",     "mtu",
            "nft_table", "veth_prefix", "cni_conf_dir", "cni_bin_dir", "cni_plugin_timeout",
            NULL};
        if (rm_confsect_check_keys("network", section, known, err) < 0)
                return -1;
        memset(cfg, 0, sizeof(*cfg));
        const char *mode = "bridge", *bridge = "remora0", *subnet = "10.77.0.0/16";
        const char *table = "remora", *vprefix = "rmv", *subnet6 = NULL;
        int64_t mtu = 1500, cni_timeout = 60;
        const char *conf_dir = "/etc/cni/net.d", *bin_dir = "/usr/lib/cni";
        if (rm_confsect_string("network", section, "mode", &mode, err) < 0 ||
            rm_confsect_string("network", section, "bridge", &bridge, err) < 0 ||
            rm_confsect_string("network", section, "subnet", &subnet, err) < 0 ||
            rm_confsect_string("network", section, "subnet6", &subnet6, err) < 0 ||
            rm_confsect_int("network", section, "mtu", 576, 65535, &mtu, err) < 0 ||
            rm_confsect_string("network", section, "nft_table", &table, err) < 0 ||
            rm_confsect_string("network", section, "veth_prefix", &vprefix, err) < 0 ||
            rm_confsect_string("network", section, "cni_conf_dir", &conf_dir, err) < 0 ||
            rm_confsect_string("network", section, "cni_bin_dir", &bin_dir, err) < 0 ||
            rm_confsect_int("network", section, "cni_plugin_timeout", 1, 3600, &cni_timeout, err) <
                0)
                return -1;
        if (strcmp(mode, "bridge") == 0)
                cfg->mode = RM_NET_BRIDGE;
        else if (strcmp(mode, "cni") == 0)
                cfg->mode = RM_NET_CNI;
        else if (strcmp(mode, "none") == 0)
                cfg->mode = RM_NET_NONE;
        else
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "network.mode: \"%s\" is not one of bridge, cni, none", mode);
        if (!valid_ifname(bridge))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "network.bridge: \"%s\" is not a valid interface name "
                                    "(1-15 bytes, no '/', ':' or spaces)",
                                    bridge);
        strcpy(cfg->bridge, bridge);
        if (parse_subnet(subnet, cfg, err) < 0)
                return -1;
        if (subnet6 != NULL && parse_subnet6(subnet6, cfg, err) < 0)
                return -1;
        cfg->mtu = (int)mtu;
        if (!valid_ident(table, sizeof(cfg->nft_table) - 1))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "network.nft_table: \"%s\" must be 1-63 of [A-Za-z0-9_]",
                                    table);
        strcpy(cfg->nft_table, table);
        if (!valid_ident(vprefix, 4))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "network.veth_prefix: \"%s\" must be 1-4 of [A-Za-z0-9_]",
                                    vprefix);
        strcpy(cfg->veth_prefix, vprefix);
        if (conf_dir[0] != '/' || strlen(conf_dir) >= sizeof(cfg->cni_conf_dir))
                return rm_error_set(
                    err, RM_INVALID_ARGUMENT,
                    "network.cni_conf_dir: must be an absolute path under %zu bytes",
                    sizeof(cfg->cni_conf_dir));
        if (!valid_path_list(bin_dir) || strlen(bin_dir) >= sizeof(cfg->cni_bin_dir))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "network.cni_bin_dir: must be absolute paths, separated by "
                                    "':', under %zu bytes",
                                    sizeof(cfg->cni_bin_dir));
        strcpy(cfg->cni_conf_dir, conf_dir);
        strcpy(cfg->cni_bin_dir, bin_dir);
        cfg->cni_timeout_s = (int)cni_timeout;
        return 0;
}
