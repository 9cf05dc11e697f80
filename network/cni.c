/* CNI mode: find the network config, run its plugins for ADD / DEL / CHECK, cache what
 * ADD returned. The cache record (kind "cni" in a store under <state>/network) is written
 * "pending" with the config before the first plugin runs, so a crash mid-ADD leaves
 * something reconcile can DEL. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cni.h"
#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/log.h"
#include "remora/store.h"
#include "remora/xalloc.h"

#define KIND          "cni"
#define IFNAME        "eth0"
#define MAX_STDOUT    (1u << 20)
#define MAX_CONF_SIZE (1u << 20)
#define MAX_MESSAGES  32

struct rm__cni {
        char *conf_dir, *bin_dir, *cache_dir;
        int timeout_ms;
        pthread_mutex_t lock; /* busy, msgs, cache */
        pthread_cond_t idle;  /* signalled when a pod leaves busy */
        char **busy;          /* pods with a CNI call under way */
        size_t n_busy;
        char *msgs[MAX_MESSAGES]; /* readiness messages handed out, kept until free */
        size_t n_msgs;
        struct rm_store *cache;
        /* Failed plugin runs by type, for /metrics (under fail_lock: invoke has a const c). */
        pthread_mutex_t *fail_lock;
        struct rm_network_stats *fails;
};

static void note_failure(const struct rm__cni *c, const char *type)
{
        pthread_mutex_lock(c->fail_lock);
        struct rm_network_stats *f = c->fails;
        size_t i = 0;
        while (i < f->n_plugins && strcmp(f->plugins[i].type, type ? type : "?") != 0)
                i++;
        if (i == f->n_plugins && i < RM_NET_STATS_PLUGINS)
                snprintf(f->plugins[f->n_plugins++].type, sizeof(f->plugins[0].type), "%s",
                         type ? type : "?");
        if (i < f->n_plugins)
                f->plugins[i].failures++;
        pthread_mutex_unlock(c->fail_lock);
}

void rm__cni_failures(struct rm__cni *c, struct rm_network_stats *out)
{
        pthread_mutex_lock(c->fail_lock);
        out->n_plugins = c->fails->n_plugins;
        memcpy(out->plugins, c->fails->plugins, sizeof(out->plugins));
        pthread_mutex_unlock(c->fail_lock);
}

struct rm__cni *rm__cni_new(const char *conf_dir, const char *bin_dir, const char *cache_dir,
                            int timeout_ms)
{
        struct rm__cni *c = xzalloc(sizeof(*c));
        c->conf_dir = xstrdup(conf_dir);
        c->bin_dir = xstrdup(bin_dir);
        c->cache_dir = xstrdup(cache_dir);
        c->timeout_ms = timeout_ms;
        pthread_mutex_init(&c->lock, NULL);
        c->fail_lock = xzalloc(sizeof(*c->fail_lock));
        pthread_mutex_init(c->fail_lock, NULL);
        c->fails = xzalloc(sizeof(*c->fails));
        pthread_cond_init(&c->idle, NULL);
        return c;
}

void rm__cni_free(struct rm__cni *c)
{
        if (c == NULL)
                return;
        for (size_t i = 0; i < c->n_msgs; i++)
                free(c->msgs[i]);
        rm_store_close(c->cache);
        free(c->busy);
        pthread_cond_destroy(&c->idle);
        pthread_mutex_destroy(&c->lock);
        pthread_mutex_destroy(c->fail_lock);
        free(c->fail_lock);
        free(c->fails);
        free(c->conf_dir);
        free(c->bin_dir);
        free(c->cache_dir);
        free(c);
}

/* ---- one call per pod at a time; different pods run side by side ---- */

static bool busy_has(const struct rm__cni *c, const char *id)
{
        for (size_t i = 0; i < c->n_busy; i++)
                if (strcmp(c->busy[i], id) == 0)
                        return true;
        return false;
}

static void pod_lock(struct rm__cni *c, const char *id)
{
        pthread_mutex_lock(&c->lock);
        while (busy_has(c, id))
                pthread_cond_wait(&c->idle, &c->lock);
        c->busy = xrealloc(c->busy, (c->n_busy + 1) * sizeof(*c->busy));
        c->busy[c->n_busy++] = (char *)id;
        pthread_mutex_unlock(&c->lock);
}

static void pod_unlock(struct rm__cni *c, const char *id)
{
        pthread_mutex_lock(&c->lock);
        for (size_t i = 0; i < c->n_busy; i++)
                if (strcmp(c->busy[i], id) == 0) {
                        c->busy[i] = c->busy[--c->n_busy];
                        break;
                }
        pthread_cond_broadcast(&c->idle);
        pthread_mutex_unlock(&c->lock);
}

static struct rm_store *cache_store(struct rm__cni *c, struct rm_error **err)
{
        pthread_mutex_lock(&c->lock);
        if (c->cache == NULL)
                c->cache = rm_store_open(c->cache_dir, err);
        struct rm_store *s = c->cache;
        pthread_mutex_unlock(&c->lock);
        if (s == NULL)
                rm_error_wrap(err, "CNI result cache");
        return s;
}

/* ---- the network config ---- */

struct netconf {
        struct json_object *list; /* {cniVersion, name, plugins, ...}, owned */
        const char *version, *name;
        int ver; /* major*10000 + minor*100 + patch */
        size_t n;
        char **bins; /* the plugins' executables, in list order */
        bool disable_check;
};

static void netconf_release(struct netconf *nc)
{
        for (size_t i = 0; i < nc->n && nc->bins; i++)
                free(nc->bins[i]);
        free(nc->bins);
        if (nc->list)
                json_object_put(nc->list);
        memset(nc, 0, sizeof(*nc));
}

static const char *jstr(struct json_object *o, const char *key)
{
        struct json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

static bool jbool(struct json_object *o, const char *key)
{
        struct json_object *v;
        return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_boolean) &&
               json_object_get_boolean(v);
}

static int parse_version(const char *v)
{
        static const char *const ok[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0"};
        static const int num[] = {300, 301, 400, 10000};
        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
                if (strcmp(v, ok[i]) == 0)
                        return num[i];
        return -1;
}

/* Look type up in each directory of the colon-separated bin_dir. */
static char *find_plugin(const char *bin_dir, const char *type)
{
        const char *p = bin_dir;
        while (*p) {
                const char *colon = strchr(p, ':');
                size_t len = colon ? (size_t)(colon - p) : strlen(p);
                if (len > 0) {
                        char *path = xasprintf("%.*s/%s", (int)len, p, type);
                        if (access(path, X_OK) == 0)
                                return path;
                        free(path);
                }
                if (colon == NULL)
                        break;
                p = colon + 1;
        }
        return NULL;
}

/* Check a plugin list (taken over by nc) and find its plugins. what names its source. */
static int netconf_from_list(struct json_object *list, const char *what, const char *bin_dir,
                             struct netconf *nc, struct rm_error **err)
{
        memset(nc, 0, sizeof(*nc));
        nc->list = list;
        struct json_object *plugins;
        nc->version = jstr(list, "cniVersion");
        nc->name = jstr(list, "name");
        if (nc->version == NULL)
                return rm_error_set(err, RM_FAILED_PRECONDITION,
                                    "%s: cniVersion: missing or not a string", what);
        if ((nc->ver = parse_version(nc->version)) < 0)
                return rm_error_set(err, RM_FAILED_PRECONDITION,
                                    "%s: cniVersion \"%s\" is not supported (0.3.0, 0.3.1, 0.4.0, "
                                    "1.0.0 are)",
                                    what, nc->version);
        if (nc->name == NULL || nc->name[0] == '\0')
                return rm_error_set(err, RM_FAILED_PRECONDITION,
                                    "%s: name: missing or not a string", what);
        if (!json_object_object_get_ex(list, "plugins", &plugins) ||
            !json_object_is_type(plugins, json_type_array) ||
            json_object_array_length(plugins) == 0)
                return rm_error_set(err, RM_FAILED_PRECONDITION,
                                    "%s: plugins: missing, not an array or empty", what);
        nc->disable_check = jbool(list, "disableCheck");
        nc->n = json_object_array_length(plugins);
        nc->bins = xzalloc(nc->n * sizeof(*nc->bins));
        for (size_t i = 0; i < nc->n; i++) {
                struct json_object *p = json_object_array_get_idx(plugins, i);
                const char *type =
                    json_object_is_type(p, json_type_object) ? jstr(p, "type") : NULL;
                if (type == NULL || type[0] == '\0' || strchr(type, '/') ||
                    strcmp(type, ".") == 0 || strcmp(type, "..") == 0)
                        return rm_error_set(
                            err, RM_FAILED_PRECONDITION,
                            "%s: plugins[%zu].type: missing or not a plain file name", what, i);
                nc->bins[i] = find_plugin(bin_dir, type);
                if (nc->bins[i] == NULL)
                        return rm_error_set(err, RM_FAILED_PRECONDITION,
                                            "%s: plugin \"%s\" not found in %s", what, type,
                                            bin_dir);
        }
        return 0;
}

static bool has_suffix(const char *s, const char *suffix)
{
        size_t n = strlen(s), m = strlen(suffix);
        return n > m && strcmp(s + n - m, suffix) == 0;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* An error from a system call here means "not ready", whatever its errno says. */
static int not_ready(struct rm_error **err, int ret)
{
        if (err && *err)
                (*err)->code = RM_FAILED_PRECONDITION;
        return ret;
}

/* The lexically first *.conflist, *.conf or *.json of conf_dir; a single-plugin config
 * is wrapped as a list of one. Errors are FAILED_PRECONDITION naming the dir or file. */
static int netconf_load(const struct rm__cni *c, struct netconf *nc, struct rm_error **err)
{
        memset(nc, 0, sizeof(*nc));
        cleanup_dir DIR *d = opendir(c->conf_dir);
        if (d == NULL)
                return not_ready(
                    err, rm_error_sys(err, "no CNI network config: directory %s", c->conf_dir));
        char *best = NULL;
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
                if (de->d_name[0] == '.' ||
                    !(has_suffix(de->d_name, ".conflist") || has_suffix(de->d_name, ".conf") ||
                      has_suffix(de->d_name, ".json")))
                        continue;
                char *name = de->d_name;
                if (best == NULL || cmp_str(&name, &best) < 0) {
                        free(best);
                        best = xstrdup(name);
                }
        }
        if (best == NULL)
                return rm_error_set(err, RM_FAILED_PRECONDITION,
                                    "no CNI network config in %s (no *.conflist, *.conf or *.json "
                                    "file)",
                                    c->conf_dir);
        cleanup_free char *path = xasprintf("%s/%s", c->conf_dir, best);
        bool is_list = has_suffix(best, ".conflist");
        free(best);
        cleanup_free char *text = rm_read_file(path, MAX_CONF_SIZE, NULL, err);
        if (text == NULL)
                return not_ready(err, rm_error_wrap(err, "CNI network config"));
        struct json_object *doc = json_tokener_parse(text);
        if (doc == NULL || !json_object_is_type(doc, json_type_object)) {
                if (doc)
                        json_object_put(doc);
                return rm_error_set(err, RM_FAILED_PRECONDITION,
                                    "CNI network config %s is not a JSON object", path);
        }
        if (!is_list) {
                /* a single plugin: it carries cniVersion and name itself */
                struct json_object *list = json_object_new_object(), *plugins;
                struct json_object *v;
                if (json_object_object_get_ex(doc, "cniVersion", &v))
                        json_object_object_add(list, "cniVersion", json_object_get(v));
                if (json_object_object_get_ex(doc, "name", &v))
                        json_object_object_add(list, "name", json_object_get(v));
                plugins = json_object_new_array();
                json_object_array_add(plugins, doc);
                json_object_object_add(list, "plugins", plugins);
                doc = list;
        }
        return netconf_from_list(doc, path, c->bin_dir, nc, err);
}

bool rm__cni_ready(struct rm__cni *c, const char **message)
{
        struct netconf nc;
        cleanup_error struct rm_error *e = NULL;
        int r = netconf_load(c, &nc, &e);
        netconf_release(&nc);
        if (r == 0)
                return true;
        /* the caller keeps the string: hand out one copy per distinct message */
        pthread_mutex_lock(&c->lock);
        *message = NULL;
        for (size_t i = 0; i < c->n_msgs && *message == NULL; i++)
                if (strcmp(c->msgs[i], e->msg) == 0)
                        *message = c->msgs[i];
        if (*message == NULL && c->n_msgs < MAX_MESSAGES) {
                c->msgs[c->n_msgs] = xstrdup(e->msg);
                *message = c->msgs[c->n_msgs++];
        }
        if (*message == NULL)
                *message = "CNI network config is not usable (see the daemon log)";
        pthread_mutex_unlock(&c->lock);
        return false;
}

/* ---- calling the plugins ---- */

struct call {
        const char *cmd; /* ADD, DEL, CHECK */
        const char *pod_id;
        const char *netns;
        char *cni_args;
        struct json_object *ports; /* runtimeConfig.portMappings, borrowed */
};

static const char *const cni_codes[] = {[1] = "incompatible CNI version",
                                        [2] = "unsupported field in network config",
                                        [3] = "container unknown or does not exist",
                                        [4] = "invalid environment variables",
                                        [5] = "I/O failure",
                                        [6] = "failed to decode content",
                                        [7] = "invalid network config",
                                        [11] = "try again later"};

/* Words for a failed run: the plugin's error JSON when it wrote one, else its stderr. */
static int plugin_failed(const char *type, size_t i, size_t n, const char *cmd,
                         const struct rm__cni_exec_out *o, struct rm_error **err)
{
        char how[64];
        if (WIFEXITED(o->status))
                snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(o->status));
        else
                snprintf(how, sizeof(how), "killed by signal %d", WTERMSIG(o->status));
        cleanup_json struct json_object *e = json_tokener_parse(o->stdout_buf);
        const char *msg = e ? jstr(e, "msg") : NULL;
        if (msg) {
                const char *details = jstr(e, "details");
                struct json_object *code_o = NULL;
                int code = e && json_object_object_get_ex(e, "code", &code_o)
                               ? json_object_get_int(code_o)
                               : 0;
                const char *what =
                    code > 0 && (size_t)code < sizeof(cni_codes) / sizeof(cni_codes[0])
                        ? cni_codes[code]
                        : NULL;
                return rm_error_set(
                    err, code == 11 ? RM_UNAVAILABLE : RM_INTERNAL,
                    "plugin \"%s\" (%zu of %zu) %s failed: %s%s%s (CNI error %d%s%s)", type, i + 1,
                    n, cmd, msg, details && *details ? ": " : "", details ? details : "", code,
                    what ? ", " : "", what ? what : "");
        }
        size_t len = strlen(o->stderr_buf);
        while (len > 0 && (o->stderr_buf[len - 1] == '\n' || o->stderr_buf[len - 1] == ' '))
                len--;
        return rm_error_set(err, RM_INTERNAL, "plugin \"%s\" (%zu of %zu) %s failed: %s%s%.*s",
                            type, i + 1, n, cmd, how, len ? ": " : "", (int)len, o->stderr_buf);
}

static void free_strv(char **v)
{
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

/* Run plugin i of nc for call with prev as prevResult (may be NULL). For ADD the
 * plugin's result is stored in *result; DEL and CHECK give none. */
static int invoke(const struct rm__cni *c, const struct netconf *nc, size_t i,
                  const struct call *call, struct json_object *prev, struct json_object **result,
                  struct rm_error **err)
{
        struct json_object *plugins, *conf = NULL;
        json_object_object_get_ex(nc->list, "plugins", &plugins);
        struct json_object *src = json_object_array_get_idx(plugins, i);
        const char *type = jstr(src, "type");
        if (json_object_deep_copy(src, &conf, NULL) < 0)
                return rm_error_set(err, RM_INTERNAL, "copy the config of plugin \"%s\"", type);
        cleanup_json struct json_object *in = conf;
        json_object_object_add(in, "name", json_object_new_string(nc->name));
        json_object_object_add(in, "cniVersion", json_object_new_string(nc->version));
        if (prev)
                json_object_object_add(in, "prevResult", json_object_get(prev));
        struct json_object *caps;
        if (json_object_object_get_ex(src, "capabilities", &caps) && jbool(caps, "portMappings") &&
            call->ports) {
                struct json_object *rc = json_object_new_object();
                json_object_object_add(rc, "portMappings", json_object_get(call->ports));
                json_object_object_add(in, "runtimeConfig", rc);
        }
        const char *input = json_object_to_json_string_ext(in, JSON_C_TO_STRING_PLAIN |
                                                                   JSON_C_TO_STRING_NOSLASHESCAPE);

        char **envp = xzalloc(8 * sizeof(*envp));
        envp[0] = xasprintf("CNI_COMMAND=%s", call->cmd);
        envp[1] = xasprintf("CNI_CONTAINERID=%s", call->pod_id);
        envp[2] = xasprintf("CNI_NETNS=%s", call->netns ? call->netns : "");
        envp[3] = xasprintf("CNI_IFNAME=%s", IFNAME);
        envp[4] = xasprintf("CNI_ARGS=%s", call->cni_args);
        envp[5] = xasprintf("CNI_PATH=%s", c->bin_dir);
        /* plugins run helpers (iptables, ip6tables) by name */
        envp[6] = xstrdup("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        struct rm__cni_exec_req req = {.path = nc->bins[i],
                                       .envp = envp,
                                       .input = input,
                                       .input_len = strlen(input),
                                       .timeout_ms = c->timeout_ms,
                                       .max_stdout = MAX_STDOUT};
        struct rm__cni_exec_out out;
        int r = rm__cni_exec(&req, &out, err);
        free_strv(envp);
        if (r < 0) {
                note_failure(c, type);
                return rm_error_wrap(err, "plugin \"%s\" (%zu of %zu) %s", type, i + 1, nc->n,
                                     call->cmd);
        }
        if (out.status != 0) {
                note_failure(c, type);
                plugin_failed(type, i, nc->n, call->cmd, &out, err);
                rm__cni_exec_out_release(&out);
                return -1;
        }
        if (result) {
                *result = json_tokener_parse(out.stdout_buf);
                if (*result == NULL || !json_object_is_type(*result, json_type_object)) {
                        if (*result)
                                json_object_put(*result);
                        *result = NULL;
                        rm__cni_exec_out_release(&out);
                        note_failure(c, type);
                        return rm_error_set(err, RM_INTERNAL,
                                            "plugin \"%s\" (%zu of %zu) %s: its result is not a "
                                            "JSON object",
                                            type, i + 1, nc->n, call->cmd);
                }
        }
        rm__cni_exec_out_release(&out);
        return 0;
}

/* DEL every plugin of nc in reverse order. All of them run even when one fails (the
 * others' resources are freed all the same); the first failure is returned. */
static int del_all(const struct rm__cni *c, const struct netconf *nc, const struct call *call,
                   struct json_object *prev, struct rm_error **err)
{
        int ret = 0;
        for (size_t i = nc->n; i-- > 0;) {
                cleanup_error struct rm_error *e = NULL;
                if (invoke(c, nc, i, call, nc->ver >= 400 ? prev : NULL, NULL, &e) < 0) {
                        if (ret == 0 && err)
                                *err = steal_pointer(&e);
                        else
                                rm_log_warn("pod %s: %s", call->pod_id, e->msg);
                        ret = -1;
                }
        }
        return ret;
}

static bool cni_arg_ok(const char *s)
{
        return s == NULL || (strchr(s, ';') == NULL && strchr(s, '=') == NULL);
}

static char *make_cni_args(const char *pod_id, const char *name, const char *ns)
{
        return xasprintf("IgnoreUnknown=1%s%s%s%s;K8S_POD_INFRA_CONTAINER_ID=%s",
                         ns ? ";K8S_POD_NAMESPACE=" : "", ns ? ns : "",
                         name ? ";K8S_POD_NAME=" : "", name ? name : "", pod_id);
}

static struct json_object *ports_json(const struct rm_port_mapping *p, size_t n)
{
        struct json_object *arr = json_object_new_array();
        for (size_t i = 0; i < n; i++) {
                struct json_object *o = json_object_new_object();
                json_object_object_add(o, "hostPort", json_object_new_int(p[i].host_port));
                json_object_object_add(o, "containerPort",
                                       json_object_new_int(p[i].container_port));
                json_object_object_add(o, "protocol",
                                       json_object_new_string(p[i].protocol == IPPROTO_UDP ? "udp"
                                                              : p[i].protocol == IPPROTO_SCTP
                                                                  ? "sctp"
                                                                  : "tcp"));
                if (p[i].host_ip && *p[i].host_ip)
                        json_object_object_add(o, "hostIP", json_object_new_string(p[i].host_ip));
                json_object_array_add(arr, o);
        }
        return arr;
}

/* A namespace path plugins can enter, or "" when it is gone (unmounted or removed):
 * plugins treat an empty CNI_NETNS on DEL as "the namespace is already gone". */
static const char *usable_netns(const char *path)
{
        struct statfs sf;
        if (path == NULL || statfs(path, &sf) < 0 || (unsigned long)sf.f_type != NSFS_MAGIC)
                return "";
        return path;
}

int rm__cni_result_ips(struct json_object *result, struct rm_pod_network_result *res,
                       struct rm_error **err)
{
        res->n_ips = 0;
        struct json_object *ips;
        if (!json_object_object_get_ex(result, "ips", &ips))
                return 0; /* a result without addresses: the pod has none */
        if (!json_object_is_type(ips, json_type_array))
                return rm_error_set(err, RM_INTERNAL, "CNI result: ips is not an array");
        char *v4 = NULL, *v6 = NULL;
        for (size_t i = 0; i < json_object_array_length(ips); i++) {
                struct json_object *ip = json_object_array_get_idx(ips, i);
                const char *addr =
                    json_object_is_type(ip, json_type_object) ? jstr(ip, "address") : NULL;
                const char *slash = addr ? strchr(addr, '/') : NULL;
                char buf[INET6_ADDRSTRLEN + 1];
                unsigned char bin[16];
                if (slash == NULL || (size_t)(slash - addr) >= sizeof(buf)) {
                        free(v4);
                        free(v6);
                        return rm_error_set(err, RM_INTERNAL,
                                            "CNI result: ips[%zu].address: missing or not a CIDR",
                                            i);
                }
                memcpy(buf, addr, (size_t)(slash - addr));
                buf[slash - addr] = '\0';
                if (inet_pton(AF_INET, buf, bin) == 1) {
                        if (v4 == NULL)
                                v4 = xstrdup(buf);
                } else if (inet_pton(AF_INET6, buf, bin) == 1) {
                        if (v6 == NULL)
                                v6 = xstrdup(buf);
                } else {
                        free(v4);
                        free(v6);
                        return rm_error_set(err, RM_INTERNAL,
                                            "CNI result: ips[%zu].address: \"%s\" is not an IP "
                                            "address",
                                            i, addr);
                }
        }
        if (v4)
                res->ips[res->n_ips++] = v4;
        if (v6)
                res->ips[res->n_ips++] = v6;
        return 0;
}

/* ---- the cache ---- */

static struct json_object *cache_doc(const struct netconf *nc, const struct rm__cni_pod *pod,
                                     struct json_object *ports, struct json_object *result)
{
        struct json_object *doc = json_object_new_object();
        json_object_object_add(doc, "state", json_object_new_string(result ? "ready" : "pending"));
        json_object_object_add(doc, "netns", json_object_new_string(pod->netns));
        if (pod->name)
                json_object_object_add(doc, "name", json_object_new_string(pod->name));
        if (pod->namespace_)
                json_object_object_add(doc, "namespace", json_object_new_string(pod->namespace_));
        json_object_object_add(doc, "ifName", json_object_new_string(IFNAME));
        json_object_object_add(doc, "portMappings", json_object_get(ports));
        json_object_object_add(doc, "config", json_object_get(nc->list));
        if (result)
                json_object_object_add(doc, "result", json_object_get(result));
        return doc;
}

/* What DEL and CHECK need of a pod: from its cache or, lacking one, the current config. */
struct pod_state {
        struct json_object *doc; /* the cache record, NULL when there is none */
        struct netconf nc;
        struct json_object *result, *ports; /* borrowed from doc */
        const char *netns;
        char *cni_args;
        bool ready;
};

static void pod_state_release(struct pod_state *ps)
{
        netconf_release(&ps->nc);
        if (ps->doc)
                json_object_put(ps->doc);
        free(ps->cni_args);
        memset(ps, 0, sizeof(*ps));
}

/* Returns 1 with ps filled from the cache, 0 when there is no (usable) cache, -1. */
static int pod_state_load(struct rm__cni *c, const char *pod_id, struct pod_state *ps,
                          struct rm_error **err)
{
        memset(ps, 0, sizeof(*ps));
        struct rm_store *s = cache_store(c, err);
        if (s == NULL)
                return -1;
        cleanup_error struct rm_error *ge = NULL;
        struct json_object *doc = rm_store_get(s, KIND, pod_id, &ge);
        if (doc == NULL) {
                if (ge->code == RM_NOT_FOUND)
                        return 0;
                rm_log_warn("pod %s: ignoring its CNI cache: %s", pod_id, ge->msg);
                return 0;
        }
        ps->doc = doc;
        struct json_object *cfg;
        if (!json_object_object_get_ex(doc, "config", &cfg) ||
            !json_object_is_type(cfg, json_type_object)) {
                rm_log_warn("pod %s: its CNI cache has no config; using the current one", pod_id);
                json_object_put(steal_pointer(&ps->doc));
                return 0;
        }
        cleanup_free char *what = xasprintf("cached CNI config of pod %s", pod_id);
        if (netconf_from_list(json_object_get(cfg), what, c->bin_dir, &ps->nc, err) < 0)
                return -1;
        const char *state = jstr(doc, "state");
        ps->ready = state && strcmp(state, "ready") == 0;
        if (json_object_object_get_ex(doc, "result", &ps->result) &&
            !json_object_is_type(ps->result, json_type_object))
                ps->result = NULL;
        if (json_object_object_get_ex(doc, "portMappings", &ps->ports) &&
            !json_object_is_type(ps->ports, json_type_array))
                ps->ports = NULL;
        ps->netns = jstr(doc, "netns");
        ps->cni_args = make_cni_args(pod_id, jstr(doc, "name"), jstr(doc, "namespace"));
        return 1;
}

/* DEL with the pod's lock held: ps from pod_state_load. The cache goes on success. */
static int del_locked(struct rm__cni *c, const char *pod_id, const char *netns,
                      struct pod_state *ps, struct rm_error **err)
{
        struct call call = {.cmd = "DEL",
                            .pod_id = pod_id,
                            .netns = usable_netns(netns ? netns : ps->netns),
                            .cni_args = ps->cni_args,
                            .ports = ps->ports};
        if (del_all(c, &ps->nc, &call, ps->result, err) < 0)
                return rm_error_wrap(err, "CNI DEL for pod %s", pod_id);
        /* also drops a cache record that could not be read */
        if (rm_store_delete(cache_store(c, NULL), KIND, pod_id, err) < 0)
                return rm_error_wrap(err, "CNI DEL for pod %s: remove its cache", pod_id);
        return 0;
}

/* ---- ADD / DEL / CHECK ---- */

static int add_locked(struct rm__cni *c, const struct rm__cni_pod *pod,
                      struct rm_pod_network_result *res, struct rm_error **err)
{
        struct pod_state old;
        int have = pod_state_load(c, pod->pod_id, &old, err);
        if (have < 0) {
                pod_state_release(&old);
                return -1;
        }
        if (have && old.ready && old.result) {
                /* a retried setup: the first one's addresses */
                int r = rm__cni_result_ips(old.result, res, err);
                pod_state_release(&old);
                return r;
        }
        if (have) {
                /* an ADD that never finished (remorad died in it): undo it first */
                int r = del_locked(c, pod->pod_id, pod->netns, &old, err);
                pod_state_release(&old);
                if (r < 0)
                        return rm_error_wrap(err, "undo an unfinished earlier ADD");
        } else {
                pod_state_release(&old);
        }

        struct netconf nc;
        if (netconf_load(c, &nc, err) < 0) {
                netconf_release(&nc);
                return rm_error_wrap(err, "pod network is not ready");
        }
        cleanup_json struct json_object *ports = ports_json(pod->ports, pod->n_ports);
        cleanup_free char *args = make_cni_args(pod->pod_id, pod->name, pod->namespace_);
        struct call call = {.cmd = "ADD",
                            .pod_id = pod->pod_id,
                            .netns = pod->netns,
                            .cni_args = args,
                            .ports = ports};
        struct rm_store *s = cache_store(c, err);
        cleanup_json struct json_object *pending = s ? cache_doc(&nc, pod, ports, NULL) : NULL;
        if (s == NULL || rm_store_put(s, KIND, pod->pod_id, pending, err) < 0) {
                netconf_release(&nc);
                return rm_error_wrap(err, "record the pod's CNI config");
        }

        cleanup_json struct json_object *prev = NULL;
        const char *step = NULL;
        for (size_t i = 0; i < nc.n; i++) {
                struct json_object *out = NULL;
                if (invoke(c, &nc, i, &call, prev, &out, err) < 0) {
                        step = "ADD";
                        break;
                }
                if (prev)
                        json_object_put(prev);
                prev = out;
        }
        if (step == NULL && rm__cni_result_ips(prev, res, err) < 0)
                step = "ADD result";
        if (step == NULL) {
                cleanup_json struct json_object *done = cache_doc(&nc, pod, ports, prev);
                if (rm_store_put(s, KIND, pod->pod_id, done, err) < 0) {
                        rm_pod_network_result_release(res);
                        step = "cache the ADD result";
                }
        }
        if (step) {
                /* roll back: DEL the whole list, as the spec asks after a failed ADD */
                struct call del = call;
                del.cmd = "DEL";
                del.netns = usable_netns(pod->netns);
                cleanup_error struct rm_error *de = NULL;
                if (del_all(c, &nc, &del, prev, &de) < 0)
                        rm_log_error("pod %s: rollback DEL failed, kept for reconcile: %s",
                                     pod->pod_id, de->msg);
                else
                        rm_store_delete(s, KIND, pod->pod_id, NULL);
                rm_error_wrap(err, "CNI network \"%s\"", nc.name);
                netconf_release(&nc);
                return -1;
        }
        netconf_release(&nc);
        return 0;
}

int rm__cni_add(struct rm__cni *c, const struct rm__cni_pod *pod, struct rm_pod_network_result *res,
                struct rm_error **err)
{
        res->n_ips = 0;
        if (!cni_arg_ok(pod->name) || !cni_arg_ok(pod->namespace_))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "pod name and namespace must not contain ';' or '='");
        pod_lock(c, pod->pod_id);
        int r = add_locked(c, pod, res, err);
        pod_unlock(c, pod->pod_id);
        return r;
}

int rm__cni_del(struct rm__cni *c, const char *pod_id, const char *netns, struct rm_error **err)
{
        pod_lock(c, pod_id);
        struct pod_state ps;
        int have = pod_state_load(c, pod_id, &ps, err);
        int r = 0;
        if (have == 0) {
                /* no cache: DEL with the current config, if there is one */
                cleanup_error struct rm_error *le = NULL;
                if (netconf_load(c, &ps.nc, &le) < 0)
                        rm_log_debug("pod %s: no cache and no CNI config, nothing to DEL: %s",
                                     pod_id, le->msg);
                else {
                        ps.cni_args = make_cni_args(pod_id, NULL, NULL);
                        r = del_locked(c, pod_id, netns, &ps, err);
                }
        } else if (have > 0) {
                r = del_locked(c, pod_id, netns, &ps, err);
        } else {
                r = -1;
        }
        pod_state_release(&ps);
        pod_unlock(c, pod_id);
        return r;
}

int rm__cni_check(struct rm__cni *c, const char *pod_id, const char *netns, struct rm_error **err)
{
        pod_lock(c, pod_id);
        struct pod_state ps;
        int have = pod_state_load(c, pod_id, &ps, err);
        int r;
        if (have == 0)
                r = rm_error_set(err, RM_NOT_FOUND, "pod %s has no CNI result to CHECK", pod_id);
        else if (have < 0)
                r = -1;
        else if (ps.nc.ver < 400 || ps.nc.disable_check)
                r = 1;
        else if (!ps.ready || ps.result == NULL)
                r = rm_error_set(err, RM_FAILED_PRECONDITION, "pod %s: its CNI ADD never finished",
                                 pod_id);
        else {
                struct call call = {.cmd = "CHECK",
                                    .pod_id = pod_id,
                                    .netns = netns ? netns : ps.netns,
                                    .cni_args = ps.cni_args,
                                    .ports = ps.ports};
                r = 0;
                for (size_t i = 0; i < ps.nc.n && r == 0; i++)
                        r = invoke(c, &ps.nc, i, &call, ps.result, NULL, err);
        }
        pod_state_release(&ps);
        pod_unlock(c, pod_id);
        return r;
}

/* ---- reconcile ---- */

struct doomed {
        const char *const *live;
        size_t n_live;
        char **ids;
        size_t n;
};

static int collect(const char *id, struct json_object *doc, const struct rm_error *bad, void *data,
                   struct rm_error **err)
{
        (void)bad;
        (void)err;
        struct doomed *d = data;
        const char *state = doc ? jstr(doc, "state") : NULL;
        bool live = false;
        for (size_t i = 0; i < d->n_live && !live; i++)
                live = strcmp(d->live[i], id) == 0;
        if (live && state && strcmp(state, "ready") == 0)
                return 0;
        d->ids = xrealloc(d->ids, (d->n + 1) * sizeof(*d->ids));
        d->ids[d->n++] = xstrdup(id);
        return 0;
}

int rm__cni_reconcile(struct rm__cni *c, const char *const *live, size_t n_live,
                      struct rm_error **err)
{
        struct rm_store *s = cache_store(c, err);
        if (s == NULL)
                return -1;
        struct doomed d = {.live = live, .n_live = n_live};
        if (rm_store_list(s, KIND, collect, &d, err) < 0) {
                for (size_t i = 0; i < d.n; i++)
                        free(d.ids[i]);
                free(d.ids);
                return -1;
        }
        int failed = 0;
        for (size_t i = 0; i < d.n; i++) {
                cleanup_error struct rm_error *e = NULL;
                if (rm__cni_del(c, d.ids[i], NULL, &e) < 0) {
                        rm_log_error("network reconcile: %s", e->msg);
                        failed++;
                } else {
                        rm_log_info("network reconcile: CNI DEL for pod %s", d.ids[i]);
                }
                free(d.ids[i]);
        }
        free(d.ids);
        return failed;
}
