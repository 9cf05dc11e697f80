/* The HTTP side of the streaming server: libmicrohttpd accepts and parses requests; a
 * request naming a live token with a WebSocket upgrade becomes a session thread. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <microhttpd.h>
#include "remora/confsect.h"
#include "remora/log.h"
#include "remora/xalloc.h"
#include "streaming_int.h"

/* ---- request side: URLs for the CRI handlers ---- */

static int put_url(struct rm_streaming *srv, struct rm_stream_req *req, const char *path,
                   char **url, struct rm_error **err)
{
        char tok[RM_TOKEN_LEN + 1];
        if (rm__tokens_put(srv->tokens, req, rm__now(), tok, err) < 0)
                return -1;
        if (asprintf(url, "http://%s/%s/%s", srv->address, path, tok) < 0)
                abort();
        return 0;
}

/* What Exec and Attach share: a container, the streams wanted, a terminal or not. NULL
 * (err set) when the combination is not allowed. */
static struct rm_stream_req *stream_req(enum rm_stream_kind kind, const char *container_id, bool in,
                                        bool out, bool err_, bool tty, struct rm_error **err)
{
        if (container_id == NULL || container_id[0] == '\0') {
                rm_error_set(err, RM_INVALID_ARGUMENT, "container_id is empty");
                return NULL;
        }
        if (!in && !out && !err_) {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "one of stdin, stdout and stderr must be set");
                return NULL;
        }
        if (tty && err_) {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "tty and stderr cannot both be set: a terminal merges stderr into "
                             "stdout");
                return NULL;
        }
        struct rm_stream_req *r = xmalloc(sizeof(*r));
        *r = (struct rm_stream_req){.kind = kind,
                                    .id = xstrdup(container_id),
                                    .tty = tty,
                                    .in = in,
                                    .out = out,
                                    .err = err_};
        return r;
}

int rm_streaming_exec_url(struct rm_streaming *srv, const Runtime__V1__ExecRequest *req, char **url,
                          struct rm_error **err)
{
        if (req->container_id && req->container_id[0] &&
            (req->n_cmd == 0 || req->cmd[0][0] == '\0'))
                return rm_error_set(err, RM_INVALID_ARGUMENT, "cmd is empty");
        struct rm_stream_req *r = stream_req(RM_STREAM_EXEC, req->container_id, req->stdin,
                                             req->stdout, req->stderr, req->tty, err);
        if (r == NULL)
                return -1;
        r->argv = xmalloc((req->n_cmd + 1) * sizeof(char *));
        for (size_t i = 0; i < req->n_cmd; i++)
                r->argv[i] = xstrdup(req->cmd[i]);
        r->argv[req->n_cmd] = NULL;
        return put_url(srv, r, "exec", url, err);
}

int rm_streaming_attach_url(struct rm_streaming *srv, const Runtime__V1__AttachRequest *req,
                            char **url, struct rm_error **err)
{
        struct rm_stream_req *r = stream_req(RM_STREAM_ATTACH, req->container_id, req->stdin,
                                             req->stdout, req->stderr, req->tty, err);
        if (r == NULL)
                return -1;
        return put_url(srv, r, "attach", url, err);
}

int rm_streaming_portforward_url(struct rm_streaming *srv,
                                 const Runtime__V1__PortForwardRequest *req, char **url,
                                 struct rm_error **err)
{
        if (req->pod_sandbox_id == NULL || req->pod_sandbox_id[0] == '\0')
                return rm_error_set(err, RM_INVALID_ARGUMENT, "pod_sandbox_id is empty");
        for (size_t i = 0; i < req->n_port; i++)
                if (req->port[i] <= 0 || req->port[i] > 65535)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "port[%zu] %d is not a TCP port", i, req->port[i]);
        struct rm_stream_req *r = xmalloc(sizeof(*r));
        *r = (struct rm_stream_req){.kind = RM_STREAM_PORTFORWARD,
                                    .id = xstrdup(req->pod_sandbox_id),
                                    .n_ports = req->n_port};
        r->ports = xmalloc((req->n_port + 1) * sizeof(int32_t));
        /* kubelet and crictl send no ports here: they name them per stream instead. */
        if (req->n_port)
                memcpy(r->ports, req->port, req->n_port * sizeof(int32_t));
        return put_url(srv, r, "portforward", url, err);
}

/* ---- HTTP ---- */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned int status, const char *text)
{
        rm_log_debug("streaming: refused with %u: %.*s", status, (int)strcspn(text, "\n"), text);
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
        MHD_add_response_header(resp, "Content-Type", "text/plain; charset=utf-8");
        enum MHD_Result rc = MHD_queue_response(c, status, resp);
        MHD_destroy_response(resp);
        return rc;
}

/* Does the comma-separated header value list contain word (case-insensitively)? */
static bool header_has(const char *value, const char *word)
{
        size_t wl = strlen(word);
        for (const char *p = value; p && *p;) {
                while (*p == ' ' || *p == ',')
                        p++;
                size_t n = strcspn(p, ",");
                size_t t = n;
                while (t > 0 && p[t - 1] == ' ')
                        t--;
                if (t == wl && strncasecmp(p, word, wl) == 0)
                        return true;
                p += n;
        }
        return false;
}

struct proto {
        const char *name;
        int version;
        bool base64;
};

static const struct proto exec_protos[] = {
    {"v5.channel.k8s.io", 5, false},       {"v4.channel.k8s.io", 4, false},
    {"v4.base64.channel.k8s.io", 4, true}, {"channel.k8s.io", 1, false},
    {"base64.channel.k8s.io", 1, true},    {NULL, 0, false},
};
static const struct proto spdy_exec_protos[] = {
    {"v4.channel.k8s.io", 4, false},
    {"v3.channel.k8s.io", 3, false},
    {"v2.channel.k8s.io", 2, false},
    {"channel.k8s.io", 1, false},
    {NULL, 0, false},
};
static const struct proto spdy_pf_protos[] = {{"portforward.k8s.io", 1, false}, {NULL, 0, false}};
static const struct proto pf_protos[] = {
    {"portforward.k8s.io", 1, false},
    {"v4.channel.k8s.io", 4, false},
    {"base64.portforward.k8s.io", 1, true},
    {NULL, 0, false},
};

/* The first protocol the client offers that we speak (clients list their preference
 * first). No header at all means plain binary channels. */
static const struct proto *pick_proto(const char *offer, const struct proto *ours)
{
        static const struct proto none = {NULL, 1, false};
        if (offer == NULL)
                return &none;
        for (const char *p = offer; *p;) {
                while (*p == ' ' || *p == ',')
                        p++;
                size_t n = strcspn(p, ",");
                size_t t = n;
                while (t > 0 && p[t - 1] == ' ')
                        t--;
                for (const struct proto *o = ours; o->name; o++)
                        if (strlen(o->name) == t && strncmp(p, o->name, t) == 0)
                                return o;
                p += n;
        }
        return NULL;
}

/* What a request turns into once upgraded; MHD hands it back to the upgrade callback. */
struct pending {
        struct rm_streaming *srv;
        struct rm_stream_req *req;
        const struct proto *proto;
        bool spdy;
        const struct proto *spdy_list; /* what we speak, for X-Stream-Protocol-Version */
        int32_t *ports;
        size_t n_ports;
        bool bad_port;
};

static enum MHD_Result collect_port(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
        (void)kind;
        struct pending *p = cls;
        if (strcmp(key, "port") != 0 || value == NULL)
                return MHD_YES;
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno || *end || end == value || v <= 0 || v > 65535 || p->n_ports >= 64) {
                p->bad_port = true;
                return MHD_YES;
        }
        p->ports = realloc(p->ports, (p->n_ports + 1) * sizeof(int32_t));
        if (p->ports == NULL)
                abort();
        p->ports[p->n_ports++] = (int32_t)v;
        return MHD_YES;
}

/* SPDY clients name the protocols they speak in X-Stream-Protocol-Version headers, one or
 * several, in order of preference: take the first we speak. */
static enum MHD_Result collect_spdy_proto(void *cls, enum MHD_ValueKind kind, const char *key,
                                          const char *value)
{
        (void)kind;
        struct pending *p = cls;
        if (p->proto == NULL && value && strcasecmp(key, "X-Stream-Protocol-Version") == 0)
                p->proto = pick_proto(value, p->spdy_list);
        return MHD_YES;
}

static void on_upgrade(void *cls, struct MHD_Connection *c, void *con_cls, const char *extra_in,
                       size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
        (void)cls;
        struct pending *pd = con_cls;
        struct rm_streaming *srv = pd->srv;
        rm__guard_upgraded(srv->guard, c);
        struct rm_session *s = xmalloc(sizeof(*s));
        *s = (struct rm_session){.srv = srv,
                                 .req = pd->req,
                                 .sock = sock,
                                 .urh = urh,
                                 .spdy = pd->spdy,
                                 .version = pd->proto->version,
                                 .base64 = pd->proto->base64,
                                 .ports = pd->ports,
                                 .n_ports = pd->n_ports,
                                 .cancel = {-1, -1}};
        pd->req = NULL;
        pd->ports = NULL;
        s->extra = xmalloc(extra_in_size + 1);
        if (extra_in_size)
                memcpy(s->extra, extra_in, extra_in_size);
        s->extra_len = extra_in_size;
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_mutex_lock(&srv->lock);
        bool ok = !srv->closing && pipe2(s->cancel, O_CLOEXEC) == 0;
        if (ok) {
                s->next = srv->sessions;
                srv->sessions = s;
                ok = pthread_create(&t, &attr, rm__session_main, s) == 0;
                if (!ok)
                        srv->sessions = s->next;
        }
        pthread_mutex_unlock(&srv->lock);
        pthread_attr_destroy(&attr);
        if (!ok) {
                MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
                if (s->cancel[0] >= 0) {
                        close(s->cancel[0]);
                        close(s->cancel[1]);
                }
                rm__stream_req_free(s->req);
                free(s->extra);
                free(s->ports);
                free(s);
        }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
        (void)cls;
        (void)c;
        (void)toe;
        struct pending *pd = *con_cls;
        if (pd) {
                rm__stream_req_free(pd->req);
                free(pd->ports);
                free(pd);
                *con_cls = NULL;
        }
}

static enum MHD_Result upgrade_spdy(struct MHD_Connection *c, struct pending *pd,
                                    enum rm_stream_kind kind)
{
        static const struct proto none = {NULL, 1, false};
        pd->spdy = true;
        pd->spdy_list = kind == RM_STREAM_PORTFORWARD ? spdy_pf_protos : spdy_exec_protos;
        bool offered = false;
        MHD_get_connection_values(c, MHD_HEADER_KIND, collect_spdy_proto, pd);
        offered =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Stream-Protocol-Version") != NULL;
        if (pd->proto == NULL && offered)
                return reply(c, MHD_HTTP_FORBIDDEN,
                             "unable to upgrade: no X-Stream-Protocol-Version we speak\n");
        if (pd->proto == NULL)
                pd->proto = &none;
        struct MHD_Response *resp = MHD_create_response_for_upgrade(on_upgrade, pd->srv);
        MHD_add_response_header(resp, "Upgrade", "SPDY/3.1");
        if (pd->proto->name)
                MHD_add_response_header(resp, "X-Stream-Protocol-Version", pd->proto->name);
        enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_SWITCHING_PROTOCOLS, resp);
        MHD_destroy_response(resp);
        return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
        (void)version;
        (void)upload_data;
        struct rm_streaming *srv = cls;
        if (*con_cls != NULL) {
                *upload_data_size = 0; /* a body is not expected; ignore one */
                return MHD_YES;
        }
        struct pending *pd = xmalloc(sizeof(*pd));
        *pd = (struct pending){.srv = srv};
        *con_cls = pd;
        if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
                return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and POST\n");

        enum rm_stream_kind kind;
        const char *tok;
        if (strncmp(url, "/exec/", 6) == 0) {
                kind = RM_STREAM_EXEC;
                tok = url + 6;
        } else if (strncmp(url, "/attach/", 8) == 0) {
                kind = RM_STREAM_ATTACH;
                tok = url + 8;
        } else if (strncmp(url, "/portforward/", 13) == 0) {
                kind = RM_STREAM_PORTFORWARD;
                tok = url + 13;
        } else {
                return reply(c, MHD_HTTP_NOT_FOUND, "not found\n");
        }
        /* Taking the token spends it, whatever happens to this request next. */
        pd->req = rm__tokens_take(srv->tokens, tok, rm__now());
        if (pd->req == NULL || pd->req->kind != kind)
                return reply(c, MHD_HTTP_NOT_FOUND, "unknown or expired streaming token\n");

        const char *upgrade = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Upgrade");
        if (upgrade && header_has(upgrade, "SPDY/3.1"))
                return upgrade_spdy(c, pd, kind);
        if (upgrade == NULL || !header_has(upgrade, "websocket"))
                return reply(c, MHD_HTTP_BAD_REQUEST,
                             "this endpoint needs an Upgrade: websocket or SPDY/3.1 request\n");
        const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-WebSocket-Key");
        const char *wsver =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-WebSocket-Version");
        if (key == NULL || wsver == NULL || strcmp(wsver, "13") != 0)
                return reply(c, MHD_HTTP_BAD_REQUEST,
                             "a WebSocket upgrade needs Sec-WebSocket-Key and version 13\n");
        const char *offer =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-WebSocket-Protocol");
        pd->proto = pick_proto(offer, kind == RM_STREAM_PORTFORWARD ? pf_protos : exec_protos);
        if (pd->proto == NULL)
                return reply(c, MHD_HTTP_BAD_REQUEST, "no supported Sec-WebSocket-Protocol\n");
        if (kind == RM_STREAM_PORTFORWARD) {
                MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_port, pd);
                if (pd->bad_port)
                        return reply(c, MHD_HTTP_BAD_REQUEST, "bad port in the query\n");
                if (pd->n_ports == 0 && pd->req->n_ports > 0) {
                        pd->n_ports = pd->req->n_ports;
                        pd->ports = xmalloc(pd->n_ports * sizeof(int32_t));
                        memcpy(pd->ports, pd->req->ports, pd->n_ports * sizeof(int32_t));
                }
                if (pd->n_ports == 0)
                        return reply(c, MHD_HTTP_BAD_REQUEST, "no port to forward\n");
        }

        char accept[29];
        rm__ws_accept(key, accept);
        struct MHD_Response *resp = MHD_create_response_for_upgrade(on_upgrade, srv);
        MHD_add_response_header(resp, "Upgrade", "websocket");
        MHD_add_response_header(resp, "Sec-WebSocket-Accept", accept);
        if (pd->proto->name)
                MHD_add_response_header(resp, "Sec-WebSocket-Protocol", pd->proto->name);
        enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_SWITCHING_PROTOCOLS, resp);
        MHD_destroy_response(resp);
        return rc;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
        rm__guard_notify(cls, c, socket_context, (int)code);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
        (void)cls;
        char buf[512];
        vsnprintf(buf, sizeof(buf), fmt, ap);
        buf[strcspn(buf, "\n")] = '\0';
        rm_log_debug("streaming: %s", buf);
}

/* "host:port" or "[v6]:port" into a sockaddr. */
static int parse_address(const char *addr, struct sockaddr_storage *ss, struct rm_error **err)
{
        char host[64];
        const char *colon = strrchr(addr, ':');
        if (colon == NULL || (size_t)(colon - addr) >= sizeof(host))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "streaming.address %s is not host:port", addr);
        const char *h = addr;
        size_t hl = (size_t)(colon - addr);
        if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
                h++;
                hl -= 2;
        }
        memcpy(host, h, hl);
        host[hl] = '\0';
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end || end == colon + 1 || port < 0 || port > 65535)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "streaming.address %s: bad port",
                                    addr);
        memset(ss, 0, sizeof(*ss));
        struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
                v4->sin_family = AF_INET;
                v4->sin_port = htons((uint16_t)port);
        } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
                v6->sin6_family = AF_INET6;
                v6->sin6_port = htons((uint16_t)port);
        } else {
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "streaming.address %s: host must be an IP address", addr);
        }
        return 0;
}

struct rm_streaming *rm_streaming_open(struct json_object *section,
                                       const struct rm_stream_backend_ops *ops, void *ctx,
                                       struct rm_error **err)
{
        static const char *const keys[] = {"address", "token_ttl_seconds", "header_timeout_ms",
                                           "max_pending_connections", NULL};
        const char *address = "127.0.0.1:0";
        int64_t ttl = 60, header_ms = 5000, max_pending = 128;
        if (rm_confsect_check_keys("streaming", section, keys, err) < 0 ||
            rm_confsect_string("streaming", section, "address", &address, err) < 0 ||
            rm_confsect_int("streaming", section, "token_ttl_seconds", 1, 86400, &ttl, err) < 0 ||
            rm_confsect_int("streaming", section, "header_timeout_ms", 100, 600000, &header_ms,
                            err) < 0 ||
            rm_confsect_int("streaming", section, "max_pending_connections", 1, 900, &max_pending,
                            err) < 0)
                return NULL;
        struct sockaddr_storage ss;
        if (parse_address(address, &ss, err) < 0)
                return NULL;

        struct rm_streaming *srv = xmalloc(sizeof(*srv));
        *srv = (struct rm_streaming){.ops = ops, .ctx = ctx};
        pthread_mutex_init(&srv->lock, NULL);
        pthread_cond_init(&srv->idle, NULL);
        srv->tokens = rm__tokens_new(ttl);
        srv->guard = rm__guard_new(header_ms, max_pending);
        unsigned int flags =
            MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG;
        if (ss.ss_family == AF_INET6)
                flags |= MHD_USE_IPv6;
        srv->mhd = MHD_start_daemon(
            flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
            MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
            srv, MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv->guard,
            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)30, MHD_OPTION_END);
        if (srv->mhd == NULL) {
                rm_error_set(err, RM_UNAVAILABLE,
                             "streaming server cannot listen on %s (in use, or not a local "
                             "address?)",
                             address);
                rm_streaming_close(srv);
                return NULL;
        }
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
        char host[64];
        if (ss.ss_family == AF_INET6) {
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
                snprintf(srv->address, sizeof(srv->address), "[%s]:%u", host, info->port);
        } else {
                inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
                snprintf(srv->address, sizeof(srv->address), "%s:%u", host, info->port);
        }
        rm_log_info("streaming server listening on %s", srv->address);
        return srv;
}

const char *rm_streaming_address(const struct rm_streaming *srv)
{
        return srv->address;
}

void rm_streaming_close(struct rm_streaming *srv)
{
        if (srv == NULL)
                return;
        pthread_mutex_lock(&srv->lock);
        srv->closing = true;
        /* Shutting the socket down wakes the session's relay; it cancels its backend. */
        for (struct rm_session *s = srv->sessions; s; s = s->next) {
                shutdown(s->sock, SHUT_RDWR);
                if (s->cancel[1] >= 0) {
                        close(s->cancel[1]);
                        s->cancel[1] = -1;
                }
        }
        while (srv->sessions)
                pthread_cond_wait(&srv->idle, &srv->lock);
        pthread_mutex_unlock(&srv->lock);
        if (srv->mhd)
                MHD_stop_daemon(srv->mhd);
        rm__guard_free(srv->guard);
        rm__tokens_free(srv->tokens);
        pthread_cond_destroy(&srv->idle);
        pthread_mutex_destroy(&srv->lock);
        free(srv);
}

void rm_streaming_sessions(struct rm_streaming *srv, size_t *exec, size_t *attach,
                           size_t *portforward)
{
        size_t n[3] = {0};
        pthread_mutex_lock(&srv->lock);
        for (struct rm_session *s = srv->sessions; s; s = s->next)
                if (s->req && (unsigned)s->req->kind < 3)
                        n[s->req->kind]++;
        pthread_mutex_unlock(&srv->lock);
        *exec = n[RM_STREAM_EXEC];
        *attach = n[RM_STREAM_ATTACH];
        *portforward = n[RM_STREAM_PORTFORWARD];
}
