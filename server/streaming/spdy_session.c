/* SPDY/3.1 sessions as Kubernetes clients (client-go over moby/spdystream) run them: the
 * client opens one stream per channel (header "streamtype") and the server answers each;
 * port forward opens a data and an error stream per request ("port", "requestid"). Flow
 * control is not used by these clients, so WINDOW_UPDATE and SETTINGS are ignored. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include "remora/log.h"
#include "remora/xalloc.h"
#include "streaming_int.h"

#define MAX_FRAME          (1u << 20)
#define MAX_REQUESTS       64
#define RST_PROTOCOL_ERROR 1
#define RST_REFUSED_STREAM 3

struct spdy_conn {
        struct rm_spdy_z z;
        uint8_t *buf;
        size_t len, cap;
        size_t drop; /* bytes of buf consumed by the last message handed out */
        uint32_t last_id;
        /* exec: the client's stream for each channel, 0 when it has none */
        uint32_t ids[5];
        bool eof_pending; /* stdin ended with data: report the EOF on the next call */
        uint8_t *rsz;     /* resize stream: JSON objects, one per line */
        size_t rsz_len, rsz_drop;
};

static int conn_init(struct spdy_conn *c, struct rm_session *s)
{
        memset(c, 0, sizeof(*c));
        c->cap = MAX_FRAME + 8;
        c->buf = xmalloc(c->cap);
        c->len = s->extra_len < c->cap ? s->extra_len : c->cap;
        memcpy(c->buf, s->extra, c->len);
        return rm__spdy_z_init(&c->z);
}

static void conn_free(struct spdy_conn *c)
{
        rm__spdy_z_free(&c->z);
        free(c->buf);
        free(c->rsz);
}

static int send_data(struct rm_session *s, uint32_t id, uint8_t flags, const void *data, size_t len)
{
        uint8_t h[8];
        rm__spdy_data_header(id, flags, len, h);
        if (rm__send_all(s->sock, h, 8) < 0)
                return -1;
        return len ? rm__send_all(s->sock, data, len) : 0;
}

static void send_rst(struct rm_session *s, uint32_t id, uint32_t status)
{
        uint8_t f[16];
        rm__spdy_control_header(RM_SPDY_RST_STREAM, 0, 8, f);
        rm__put32(f + 8, id);
        rm__put32(f + 12, status);
        rm__send_all(s->sock, f, sizeof(f));
}

static void send_goaway(struct rm_session *s, struct spdy_conn *c)
{
        uint8_t f[16];
        rm__spdy_control_header(RM_SPDY_GOAWAY, 0, 8, f);
        rm__put32(f + 8, c->last_id);
        rm__put32(f + 12, 0);
        rm__send_all(s->sock, f, sizeof(f));
}

static int send_reply(struct rm_session *s, struct spdy_conn *c, uint32_t id)
{
        uint8_t *block;
        size_t blen;
        if (rm__spdy_headers_encode(&c->z, NULL, 0, &block, &blen) < 0)
                return -1;
        uint8_t h[12];
        rm__spdy_control_header(RM_SPDY_SYN_REPLY, 0, 4 + blen, h);
        rm__put32(h + 8, id);
        int rc = rm__send_all(s->sock, h, 12) < 0 || rm__send_all(s->sock, block, blen) < 0;
        free(block);
        return rc ? -1 : 0;
}

static int conn_fill(struct rm_session *s, struct spdy_conn *c)
{
        if (c->drop) {
                memmove(c->buf, c->buf + c->drop, c->len - c->drop);
                c->len -= c->drop;
                c->drop = 0;
        }
        if (c->len == c->cap)
                return RD_ERROR;
        ssize_t n = recv(s->sock, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return RD_NONE;
        if (n <= 0)
                return RD_CLOSED;
        c->len += (size_t)n;
        return RD_NONE;
}

/* A SYN_STREAM's ID and headers; answers PING, and reports GOAWAY as RD_CLOSED. Returns
 * RD_MESSAGE for a frame the caller must look at (f), RD_NONE when more input is needed. */
static int next_frame(struct rm_session *s, struct spdy_conn *c, struct rm_spdy_frame *f)
{
        for (;;) {
                if (c->drop) {
                        memmove(c->buf, c->buf + c->drop, c->len - c->drop);
                        c->len -= c->drop;
                        c->drop = 0;
                }
                ssize_t n = rm__spdy_parse(c->buf, c->len, MAX_FRAME, f);
                if (n == 0)
                        return RD_NONE;
                if (n < 0) {
                        rm_log_debug("streaming: bad SPDY frame; ending the connection");
                        return RD_ERROR;
                }
                c->drop = (size_t)n;
                if (!f->control)
                        return RD_MESSAGE;
                switch (f->type) {
                case RM_SPDY_PING:
                        rm__send_all(s->sock, c->buf, (size_t)n);
                        continue;
                case RM_SPDY_GOAWAY:
                        return RD_CLOSED;
                case RM_SPDY_SYN_STREAM:
                case RM_SPDY_RST_STREAM:
                        if (f->len < (f->type == RM_SPDY_SYN_STREAM ? 10u : 8u))
                                return RD_ERROR;
                        return RD_MESSAGE;
                default: /* SETTINGS, WINDOW_UPDATE, HEADERS, NOOP: nothing to do */
                        continue;
                }
        }
}

/* Decode a SYN_STREAM's headers (a failure corrupts the shared zlib state: fatal). */
static int syn_headers(struct spdy_conn *c, const struct rm_spdy_frame *f, uint32_t *id,
                       struct rm_spdy_headers *h)
{
        *id = rm__be32(f->payload) & 0x7FFFFFFF;
        if (*id == 0 || rm__spdy_headers_decode(&c->z, f->payload + 10, f->len - 10, h) < 0)
                return -1;
        if (*id > c->last_id)
                c->last_id = *id;
        return 0;
}

/* ---- exec and attach ---- */

static int channel_of(const char *type)
{
        static const char *const names[] = {"stdin", "stdout", "stderr", "error", "resize"};
        for (int i = 0; i < 5; i++)
                if (type && strcasecmp(type, names[i]) == 0)
                        return i;
        return -1;
}

static int sx_fill(struct rm_session *s, void *t)
{
        return conn_fill(s, t);
}

static int sx_next(struct rm_session *s, void *t, struct rm_chan_msg *m)
{
        struct spdy_conn *c = t;
        if (c->rsz_drop) {
                memmove(c->rsz, c->rsz + c->rsz_drop, c->rsz_len - c->rsz_drop);
                c->rsz_len -= c->rsz_drop;
                c->rsz_drop = 0;
        }
        static const uint8_t stdin_ch = CH_STDIN;
        if (c->eof_pending) {
                c->eof_pending = false;
                *m = (struct rm_chan_msg){CH_CLOSE, &stdin_ch, 1};
                return RD_MESSAGE;
        }
        for (;;) {
                /* A complete resize line already buffered goes first. */
                uint8_t *nl = c->rsz ? memchr(c->rsz, '\n', c->rsz_len) : NULL;
                if (nl) {
                        c->rsz_drop = (size_t)(nl - c->rsz) + 1;
                        *m = (struct rm_chan_msg){CH_RESIZE, c->rsz, (size_t)(nl - c->rsz)};
                        return RD_MESSAGE;
                }
                struct rm_spdy_frame f;
                int rd = next_frame(s, c, &f);
                if (rd != RD_MESSAGE)
                        return rd;
                if (f.control && f.type == RM_SPDY_SYN_STREAM) {
                        uint32_t id;
                        struct rm_spdy_headers h;
                        if (syn_headers(c, &f, &id, &h) < 0)
                                return RD_ERROR;
                        int ch = channel_of(rm__spdy_header(&h, "streamtype"));
                        rm__spdy_headers_free(&h);
                        if (ch < 0 || c->ids[ch]) {
                                send_rst(s, id, RST_REFUSED_STREAM);
                                continue;
                        }
                        c->ids[ch] = id;
                        if (send_reply(s, c, id) < 0)
                                return RD_CLOSED;
                        continue;
                }
                if (f.control) { /* RST_STREAM */
                        uint32_t id = rm__be32(f.payload) & 0x7FFFFFFF;
                        for (int ch = 0; ch < 5; ch++)
                                if (c->ids[ch] == id)
                                        c->ids[ch] = 0;
                        if (id && id == c->ids[CH_STDIN]) {
                                *m = (struct rm_chan_msg){CH_CLOSE, &stdin_ch, 1};
                                return RD_MESSAGE;
                        }
                        continue;
                }
                bool fin = f.flags & RM_SPDY_FLAG_FIN;
                if (f.stream_id == c->ids[CH_STDIN] && f.stream_id) {
                        if (f.len == 0 && !fin)
                                continue;
                        if (f.len == 0) {
                                *m = (struct rm_chan_msg){CH_CLOSE, &stdin_ch, 1};
                                return RD_MESSAGE;
                        }
                        c->eof_pending = fin;
                        *m = (struct rm_chan_msg){CH_STDIN, f.payload, f.len};
                        return RD_MESSAGE;
                }
                if (f.stream_id == c->ids[CH_RESIZE] && f.stream_id && f.len) {
                        if (c->rsz_len + f.len > (64u << 10))
                                c->rsz_len = 0; /* not JSON lines: forget it */
                        c->rsz = realloc(c->rsz, c->rsz_len + f.len);
                        if (c->rsz == NULL)
                                abort();
                        memcpy(c->rsz + c->rsz_len, f.payload, f.len);
                        c->rsz_len += f.len;
                }
                /* Anything else (data on our output streams, unknown IDs) is dropped. */
        }
}

static int sx_send(struct rm_session *s, void *t, uint8_t ch, const void *data, size_t len)
{
        struct spdy_conn *c = t;
        if (ch >= 5 || c->ids[ch] == 0)
                return 0; /* the client reset that stream: drop its output */
        return send_data(s, c->ids[ch], 0, data, len);
}

static void sx_finish(struct rm_session *s, void *t, struct rm_worker *w)
{
        struct spdy_conn *c = t;
        char *msg = s->version >= 4 ? rm__status_json(w) : rm__status_text(w);
        if (msg && c->ids[CH_ERROR])
                send_data(s, c->ids[CH_ERROR], 0, msg, strlen(msg));
        free(msg);
        for (int ch = 0; ch < 5; ch++)
                if (c->ids[ch])
                        send_data(s, c->ids[ch], RM_SPDY_FLAG_FIN, NULL, 0);
        send_goaway(s, c);
        rm__linger(s);
}

static bool sx_ready(struct rm_session *s, void *t)
{
        struct spdy_conn *c = t;
        const struct rm_stream_req *r = s->req;
        return c->ids[CH_ERROR] && (!r->in || c->ids[CH_STDIN]) && (!r->out || c->ids[CH_STDOUT]) &&
               (!r->err || r->tty || c->ids[CH_STDERR]);
}

static const struct rm_transport spdy_transport = {
    .fill = sx_fill, .next = sx_next, .send = sx_send, .finish = sx_finish, .ready = sx_ready};

void rm__spdy_exec(struct rm_session *s)
{
        struct spdy_conn c;
        if (conn_init(&c, s) == 0)
                rm__relay_exec(s, &spdy_transport, &c);
        conn_free(&c);
}

/* ---- port forward: a (data, error) stream pair per request ID ---- */

struct pf_req {
        char *request_id;
        int32_t port;
        uint32_t data_id, error_id;
        int sp[2]; /* sp[0] ours, sp[1] the backend's */
        struct rm_worker w;
        bool reported, data_fin_sent;
};

static struct pf_req *find_req(struct pf_req *reqs, size_t n, const char *rid)
{
        for (size_t i = 0; i < n; i++)
                if (reqs[i].request_id && strcmp(reqs[i].request_id, rid) == 0)
                        return &reqs[i];
        return NULL;
}

static void pf_end(struct pf_req *r)
{
        if (r->sp[0] >= 0)
                shutdown(r->sp[0], SHUT_RDWR);
        rm__worker_join(&r->w);
        rm__close_fd(&r->sp[0]);
        rm__close_fd(&r->sp[1]);
        rm_error_free(r->w.err);
        free(r->request_id);
        memset(r, 0, sizeof(*r));
        r->sp[0] = r->sp[1] = -1;
}

/* A SYN_STREAM for port forward: pair it with its request, start the call when both
 * streams are there. */
static int pf_syn(struct rm_session *s, struct spdy_conn *c, const struct rm_spdy_frame *f,
                  struct pf_req *reqs, int done_fd)
{
        uint32_t id;
        struct rm_spdy_headers h;
        if (syn_headers(c, f, &id, &h) < 0)
                return -1;
        const char *type = rm__spdy_header(&h, "streamtype");
        const char *port = rm__spdy_header(&h, "port");
        const char *rid = rm__spdy_header(&h, "requestid");
        char *end = NULL;
        long p = port ? strtol(port, &end, 10) : 0;
        bool is_data = type && strcasecmp(type, "data") == 0;
        bool is_err = type && strcasecmp(type, "error") == 0;
        struct pf_req *r = rid ? find_req(reqs, MAX_REQUESTS, rid) : NULL;
        if (r == NULL && rid) {
                for (size_t i = 0; i < MAX_REQUESTS; i++)
                        if (reqs[i].request_id == NULL) {
                                r = &reqs[i];
                                r->request_id = xstrdup(rid);
                                r->port = (int32_t)p;
                                break;
                        }
        }
        bool ok = r && (is_data || is_err) && end && *end == '\0' && p > 0 && p <= 65535 &&
                  r->port == p && !(is_data ? r->data_id : r->error_id);
        rm__spdy_headers_free(&h);
        if (!ok) {
                send_rst(s, id, RST_REFUSED_STREAM);
                return 0;
        }
        *(is_data ? &r->data_id : &r->error_id) = id;
        if (send_reply(s, c, id) < 0)
                return -1;
        if (r->data_id && r->error_id) {
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, r->sp) < 0) {
                        send_rst(s, r->data_id, RST_REFUSED_STREAM);
                        return 0;
                }
                r->w = (struct rm_worker){
                    .s = s, .done_fd = done_fd, .port = r->port, .pf_fd = r->sp[1]};
                if (rm__worker_start(&r->w) < 0)
                        rm__close_fd(&r->sp[0]);
        }
        return 0;
}

void rm__spdy_portforward(struct rm_session *s)
{
        struct spdy_conn c;
        struct pf_req *reqs = calloc(MAX_REQUESTS, sizeof(*reqs));
        int done[2] = {-1, -1};
        uint8_t *chunk = xmalloc(RM_READ_CHUNK);
        if (reqs == NULL)
                abort();
        for (size_t i = 0; i < MAX_REQUESTS; i++)
                reqs[i].sp[0] = reqs[i].sp[1] = -1;
        if (conn_init(&c, s) < 0 || pipe2(done, O_CLOEXEC) < 0)
                goto out;
        for (;;) {
                struct rm_spdy_frame f;
                int rd;
                while ((rd = next_frame(s, &c, &f)) == RD_MESSAGE) {
                        if (f.control && f.type == RM_SPDY_SYN_STREAM) {
                                if (pf_syn(s, &c, &f, reqs, done[1]) < 0)
                                        goto out;
                                continue;
                        }
                        uint32_t id = f.control ? rm__be32(f.payload) & 0x7FFFFFFF : f.stream_id;
                        for (size_t i = 0; i < MAX_REQUESTS; i++) {
                                struct pf_req *r = &reqs[i];
                                if (r->request_id == NULL ||
                                    (id != r->data_id && id != r->error_id))
                                        continue;
                                if (f.control) { /* RST_STREAM: the client gave up */
                                        pf_end(r);
                                } else if (id == r->data_id && r->sp[0] >= 0) {
                                        /* Blocking: a target that stops reading holds the
                                         * client back, as TCP would. */
                                        if (f.len && rm__send_all(r->sp[0], f.payload, f.len) < 0)
                                                rm__close_fd(&r->sp[0]);
                                        else if (f.flags & RM_SPDY_FLAG_FIN)
                                                shutdown(r->sp[0], SHUT_WR);
                                }
                        }
                }
                if (rd != RD_NONE)
                        goto out;
                struct pollfd p[MAX_REQUESTS + 2];
                p[0] = (struct pollfd){.fd = s->sock, .events = POLLIN};
                p[1] = (struct pollfd){.fd = done[0], .events = POLLIN};
                for (size_t i = 0; i < MAX_REQUESTS; i++)
                        p[i + 2] = (struct pollfd){.fd = reqs[i].sp[0], .events = POLLIN};
                if (poll(p, MAX_REQUESTS + 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (p[0].revents && conn_fill(s, &c) != RD_NONE)
                        goto out;
                if (p[1].revents) {
                        char b;
                        ssize_t ignored = read(done[0], &b, 1);
                        (void)ignored;
                        for (size_t i = 0; i < MAX_REQUESTS; i++) {
                                struct pf_req *r = &reqs[i];
                                if (!r->w.started || r->w.joined || !atomic_load(&r->w.returned))
                                        continue;
                                rm__worker_join(&r->w);
                                if (r->w.rc < 0)
                                        send_data(s, r->error_id, 0, r->w.err->msg,
                                                  strlen(r->w.err->msg));
                                send_data(s, r->error_id, RM_SPDY_FLAG_FIN, NULL, 0);
                                /* Our end drains to EOF now that the backend's is closed. */
                                rm__close_fd(&r->sp[1]);
                        }
                }
                for (size_t i = 0; i < MAX_REQUESTS; i++) {
                        struct pf_req *r = &reqs[i];
                        if (!p[i + 2].revents || r->sp[0] < 0)
                                continue;
                        ssize_t got = read(r->sp[0], chunk, RM_READ_CHUNK);
                        if (got < 0 && (errno == EINTR || errno == EAGAIN))
                                continue;
                        if (got <= 0) {
                                rm__close_fd(&r->sp[0]);
                                if (!r->data_fin_sent)
                                        send_data(s, r->data_id, RM_SPDY_FLAG_FIN, NULL, 0);
                                r->data_fin_sent = true;
                                continue;
                        }
                        if (send_data(s, r->data_id, 0, chunk, (size_t)got) < 0)
                                goto out;
                }
                /* A request whose call and data are both over frees its slot. */
                for (size_t i = 0; i < MAX_REQUESTS; i++)
                        if (reqs[i].request_id && reqs[i].w.joined && reqs[i].sp[0] < 0)
                                pf_end(&reqs[i]);
        }
out:
        rm__cancel_backend(s);
        for (size_t i = 0; i < MAX_REQUESTS; i++)
                pf_end(&reqs[i]);
        free(reqs);
        rm__close_fd(&done[0]);
        rm__close_fd(&done[1]);
        free(chunk);
        conn_free(&c);
}
