/* Checking a PodSandboxConfig field by field, and writing the pod's files. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <json-c/json.h>

#include "podconfig.h"
#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/xalloc.h"

#define LOWER_ALNUM "abcdefghijklmnopqrstuvwxyz0123456789"
#define ALNUM       LOWER_ALNUM "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

/* Pod names and namespaces: kubelet sends DNS-1123 subdomains, other CRI clients (critest,
 * crictl users) also upper-case letters and '_'. Refused: what would break a path, a CNI_ARGS
 * list (';', '=') or a log line (spaces, control characters). */
static bool meta_name_ok(const char *s)
{
        size_t n = s ? strlen(s) : 0;
        return n > 0 && n <= 253 && strspn(s, ALNUM "-_.") == n;
}

static bool hostname_ok(const char *s)
{
        size_t n = strlen(s);
        return n > 0 && n <= 64 && strspn(s, ALNUM "-.") == n && s[0] != '-' && s[0] != '.';
}

static bool ip_ok(const char *s)
{
        unsigned char buf[16];
        return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static bool has_space(const char *s)
{
        return s[strcspn(s, " \t\r\n")] != '\0';
}

static int check_metadata(const Runtime__V1__PodSandboxMetadata *m, struct rm_error **err)
{
        if (m == NULL)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "config.metadata is missing");
        if (!meta_name_ok(m->name))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.metadata.name \"%s\" must be 1-253 characters of "
                                    "letters, digits, '-', '_' and '.'",
                                    m->name ? m->name : "");
        if (!meta_name_ok(m->namespace_))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.metadata.namespace \"%s\" must be 1-253 characters "
                                    "of letters, digits, '-', '_' and '.'",
                                    m->namespace_ ? m->namespace_ : "");
        size_t n = m->uid ? strlen(m->uid) : 0;
        if (n == 0 || n > 128 || strspn(m->uid, ALNUM "-_.") != n)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.metadata.uid \"%s\" must be 1-128 letters, digits, "
                                    "'-', '_' and '.'",
                                    m->uid ? m->uid : "");
        return 0;
}

static int check_dns(const Runtime__V1__DNSConfig *d, struct rm_error **err)
{
        if (d == NULL)
                return 0;
        for (size_t i = 0; i < d->n_servers; i++) {
                if (!ip_ok(d->servers[i]))
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "config.dns_config.servers[%zu] \"%s\" is not an IP "
                                            "address",
                                            i, d->servers[i]);
        }
        char *const *lists[] = {d->searches, d->options};
        size_t counts[] = {d->n_searches, d->n_options};
        const char *names[] = {"searches", "options"};
        for (size_t l = 0; l < 2; l++) {
                for (size_t i = 0; i < counts[l]; i++) {
                        const char *s = lists[l][i];
                        if (*s == '\0' || has_space(s) || strlen(s) > 253)
                                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                                    "config.dns_config.%s[%zu] \"%s\" must be "
                                                    "non-empty, without white space",
                                                    names[l], i, s);
                }
        }
        return 0;
}

static int check_ports(const Runtime__V1__PodSandboxConfig *c, struct rm_error **err)
{
        for (size_t i = 0; i < c->n_port_mappings; i++) {
                const Runtime__V1__PortMapping *p = c->port_mappings[i];
                if (p->protocol != RUNTIME__V1__PROTOCOL__TCP &&
                    p->protocol != RUNTIME__V1__PROTOCOL__UDP &&
                    p->protocol != RUNTIME__V1__PROTOCOL__SCTP)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "config.port_mappings[%zu].protocol %d is not TCP, "
                                            "UDP or SCTP",
                                            i, (int)p->protocol);
                if (p->container_port < 1 || p->container_port > 65535)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "config.port_mappings[%zu].container_port %d is not "
                                            "a port (1-65535)",
                                            i, p->container_port);
                if (p->host_port < 0 || p->host_port > 65535)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "config.port_mappings[%zu].host_port %d is not a port "
                                            "(0-65535)",
                                            i, p->host_port);
                if (p->host_ip && *p->host_ip && !ip_ok(p->host_ip))
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "config.port_mappings[%zu].host_ip \"%s\" is not an "
                                            "IP address",
                                            i, p->host_ip);
        }
        return 0;
}

/* IPC sysctls the kernel keeps per IPC namespace. */
static bool ipc_sysctl(const char *key)
{
        static const char *const keys[] = {
            "kernel.shm_rmid_forced", "kernel.shmmax", "kernel.shmall",
            "kernel.shmmni",          "kernel.msgmax", "kernel.msgmnb",
            "kernel.msgmni",          "kernel.sem",    NULL};
        for (const char *const *k = keys; *k; k++) {
                if (strcmp(key, *k) == 0)
                        return true;
        }
        return strncmp(key, "fs.mqueue.", 10) == 0;
}

char *rm__sysctl_normalize(const char *key, struct rm_error **err)
{
        size_t n = key ? strlen(key) : 0;
        if (n == 0 || n > 255 || strspn(key, LOWER_ALNUM "_-./") != n) {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "sysctl \"%s\": the name may only hold lower-case letters, digits, "
                             "'_', '-', '.' and '/'",
                             key ? key : "");
                return NULL;
        }
        /* The slash form ("net/ipv4/ip_forward") has the dots as separators swapped. */
        char *norm = xstrdup(key);
        if (strchr(key, '/')) {
                for (char *p = norm; *p; p++)
                        *p = *p == '/' ? '.' : *p == '.' ? '/' : *p;
        }
        /* Every component non-empty and not "." or "..": no way out of /proc/sys. */
        bool ok = norm[0] != '.' && norm[n - 1] != '.' && strstr(norm, "..") == NULL &&
                  strchr(norm, '/') == NULL;
        if (!ok) {
                rm_error_set(err, RM_INVALID_ARGUMENT, "sysctl \"%s\" is not a valid name", key);
                free(norm);
                return NULL;
        }
        return norm;
}

int rm__sysctl_check(const char *key, const char *value, bool host_net, bool host_ipc,
                     struct rm_error **err)
{
        bool net = strncmp(key, "net.", 4) == 0;
        if (!net && !ipc_sysctl(key))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "sysctl \"%s\" is not namespaced: a pod may only set net.* "
                                    "and IPC sysctls",
                                    key);
        if (net && host_net)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "sysctl \"%s\" would change the host: the pod uses the host "
                                    "network",
                                    key);
        if (!net && host_ipc)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "sysctl \"%s\" would change the host: the pod uses the host "
                                    "IPC namespace",
                                    key);
        size_t n = value ? strlen(value) : 0;
        if (n == 0 || n > 4096 || value[strcspn(value, "=+\t\r\n")] != '\0' || value[0] == ' ' ||
            value[n - 1] == ' ')
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "sysctl \"%s\": the value \"%s\" must be non-empty, free of "
                                    "'=', '+', tabs, newlines and outer spaces",
                                    key, value ? value : "");
        return 0;
}

/* Bounds on what a RunPodSandbox request puts into the pod's record and its list entry.
 *
 * ListPodSandbox answers in one message, at most 16 MiB (RM_MAX_MESSAGE_BYTES, kubelet's
 * own limit too), and a node runs up to 110 pods, so a pod's list entry gets 152 KiB. The
 * entry is its labels and annotations plus about 1 KiB of ID, metadata (name and namespace
 * at most 253 bytes, uid 128) and times; each map entry costs at most 12 bytes of framing:
 *   128 KiB + 1,024 x 12 B + 1 KiB = 141 KiB,  x 110 pods = 15.1 MiB < 16 MiB.
 * (Kubernetes allows 256 KiB of annotations: a pod above 128 KiB of labels and annotations
 * is refused here, where containerd would take it and then fail to list 110 of them.)
 *
 * The record is JSON, where a control character escapes to six bytes; worst case:
 *   labels + annotations 128 KiB x 6 = 768 KiB, sysctls 64 KiB x 6 = 384 KiB,
 *   DNS 3 x 64 x 253 B x 6 = 285 KiB, port mappings 1,024 x ~120 B = 120 KiB,
 *   log_directory (kept twice) and cgroup_parent 3 x 4 KiB x 6 = 72 KiB:
 * about 1.6 MiB, a tenth of what the store reads back (RECORD_MAX_BYTES, 16 MiB). */
#define META_MAX_BYTES    (128 * 1024)
#define META_MAX_ENTRIES  1024
#define PATH_MAX_BYTES    4096
#define DNS_MAX_ENTRIES   64
#define PORTS_MAX         1024
#define SYSCTLS_MAX       256
#define SYSCTLS_MAX_BYTES (64 * 1024)

static size_t len0(const char *s)
{
        return s ? strlen(s) : 0;
}

static int check_limits(const Runtime__V1__PodSandboxConfig *c, struct rm_error **err)
{
        size_t bytes = 0;
        for (size_t i = 0; i < c->n_labels; i++)
                bytes += len0(c->labels[i]->key) + len0(c->labels[i]->value);
        for (size_t i = 0; i < c->n_annotations; i++)
                bytes += len0(c->annotations[i]->key) + len0(c->annotations[i]->value);
        size_t entries = c->n_labels + c->n_annotations;
        if (bytes > META_MAX_BYTES || entries > META_MAX_ENTRIES)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.labels and config.annotations hold %zu entries of %zu "
                                    "bytes (keys and values); a pod may have at most %d entries "
                                    "of %d bytes",
                                    entries, bytes, META_MAX_ENTRIES, META_MAX_BYTES);
        if (len0(c->log_directory) > PATH_MAX_BYTES)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.log_directory is %zu bytes long; at most %d",
                                    len0(c->log_directory), PATH_MAX_BYTES);
        if (c->linux && len0(c->linux->cgroup_parent) > PATH_MAX_BYTES)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.linux.cgroup_parent is %zu bytes long; at most %d",
                                    len0(c->linux->cgroup_parent), PATH_MAX_BYTES);
        const Runtime__V1__DNSConfig *d = c->dns_config;
        if (d && (d->n_servers > DNS_MAX_ENTRIES || d->n_searches > DNS_MAX_ENTRIES ||
                  d->n_options > DNS_MAX_ENTRIES))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.dns_config has %zu servers, %zu searches and %zu "
                                    "options; at most %d of each",
                                    d->n_servers, d->n_searches, d->n_options, DNS_MAX_ENTRIES);
        if (c->n_port_mappings > PORTS_MAX)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.port_mappings has %zu entries; at most %d",
                                    c->n_port_mappings, PORTS_MAX);
        bytes = 0;
        size_t n_sysctls = c->linux ? c->linux->n_sysctls : 0;
        for (size_t i = 0; i < n_sysctls; i++)
                bytes += len0(c->linux->sysctls[i]->key) + len0(c->linux->sysctls[i]->value);
        if (n_sysctls > SYSCTLS_MAX || bytes > SYSCTLS_MAX_BYTES)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.linux.sysctls has %zu entries of %zu bytes; at most "
                                    "%d entries of %d bytes",
                                    n_sysctls, bytes, SYSCTLS_MAX, SYSCTLS_MAX_BYTES);
        return 0;
}

int rm__pod_config_check(const Runtime__V1__PodSandboxConfig *c, struct rm_error **err)
{
        if (c == NULL)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "config is missing");
        if (check_metadata(c->metadata, err) < 0 || check_limits(c, err) < 0)
                return -1;
        if (c->hostname && *c->hostname && !hostname_ok(c->hostname))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.hostname \"%s\" must be 1-64 letters, digits, '-' "
                                    "and '.'",
                                    c->hostname);
        /* A host-network pod shares the node's UTS namespace: its containers' hostname
         * would be the node's while /etc/hostname and $HOSTNAME said otherwise. kubelet
         * never sends one; containerd refuses it too. */
        const Runtime__V1__LinuxSandboxSecurityContext *sc =
            c->linux ? c->linux->security_context : NULL;
        if (c->hostname && *c->hostname && sc && sc->namespace_options &&
            sc->namespace_options->network == RUNTIME__V1__NAMESPACE_MODE__NODE)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.hostname \"%s\" cannot be set for a pod on the host "
                                    "network (namespace_options.network NODE): the pod has the "
                                    "node's hostname",
                                    c->hostname);
        if (c->log_directory && *c->log_directory &&
            (c->log_directory[0] != '/' || strstr(c->log_directory, "/../")))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.log_directory \"%s\" must be an absolute path",
                                    c->log_directory);
        const char *parent = c->linux ? c->linux->cgroup_parent : NULL;
        if (parent && *parent &&
            (strstr(parent, "..") || strspn(parent, ALNUM "-_./:") != strlen(parent)))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.linux.cgroup_parent \"%s\" is not a cgroup path",
                                    parent);
        return check_dns(c->dns_config, err) < 0 ? -1 : check_ports(c, err);
}

/* ---- the config as JSON ---- */

struct json_object *rm__pod_map_json(size_t n, void *const *entries)
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

struct json_object *rm__pod_config_json(const Runtime__V1__PodSandboxConfig *c)
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

/* ---- pod files ---- */

static int write_text(const char *path, const char *text, struct rm_error **err)
{
        cleanup_free char *tmp = xasprintf("%s.tmp", path);
        cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || rm_write_all(fd, text, strlen(text)) < 0 || fsync(fd) < 0)
                return rm_error_sys(err, "write %s", tmp);
        if (rename(tmp, path) < 0)
                return rm_error_sys(err, "rename %s", tmp);
        return 0;
}

static char *host_file(const char *path)
{
        char *text = rm_read_file(path, 1 << 20, NULL, NULL);
        return text ? text : xstrdup("");
}

int rm__pod_files_write(const char *dir, const Runtime__V1__PodSandboxConfig *c,
                        const char *hostname, const char *ip, bool host_net, struct rm_error **err)
{
        cleanup_free char *hn_path = xasprintf("%s/hostname", dir);
        cleanup_free char *hosts_path = xasprintf("%s/hosts", dir);
        cleanup_free char *resolv_path = xasprintf("%s/resolv.conf", dir);
        cleanup_free char *hn = xasprintf("%s\n", hostname);
        if (write_text(hn_path, hn, err) < 0)
                return -1;

        cleanup_free char *hosts = NULL;
        if (host_net) {
                hosts = host_file("/etc/hosts");
        } else {
                hosts = xasprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost "
                                  "ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\n"
                                  "%s%s%s%s",
                                  ip && *ip ? ip : "", ip && *ip ? "\t" : "",
                                  ip && *ip ? hostname : "", ip && *ip ? "\n" : "");
        }
        if (write_text(hosts_path, hosts, err) < 0)
                return -1;

        const Runtime__V1__DNSConfig *d = c->dns_config;
        cleanup_free char *resolv = NULL;
        if (d && (d->n_servers || d->n_searches || d->n_options)) {
                size_t cap = 64;
                for (size_t i = 0; i < d->n_servers; i++)
                        cap += strlen(d->servers[i]) + 16;
                for (size_t i = 0; i < d->n_searches; i++)
                        cap += strlen(d->searches[i]) + 2;
                for (size_t i = 0; i < d->n_options; i++)
                        cap += strlen(d->options[i]) + 2;
                resolv = xzalloc(cap);
                if (d->n_searches) {
                        strcat(resolv, "search");
                        for (size_t i = 0; i < d->n_searches; i++)
                                strcat(strcat(resolv, " "), d->searches[i]);
                        strcat(resolv, "\n");
                }
                for (size_t i = 0; i < d->n_servers; i++)
                        strcat(strcat(strcat(resolv, "nameserver "), d->servers[i]), "\n");
                if (d->n_options) {
                        strcat(resolv, "options");
                        for (size_t i = 0; i < d->n_options; i++)
                                strcat(strcat(resolv, " "), d->options[i]);
                        strcat(resolv, "\n");
                }
        } else {
                resolv = host_file("/etc/resolv.conf");
        }
        return write_text(resolv_path, resolv, err);
}
