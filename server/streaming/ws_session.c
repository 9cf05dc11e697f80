/* WebSocket sessions (RFC 6455): the Kubernetes channel protocols for exec, attach and
 * port forward. One message per frame sequence, its first byte naming the channel. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <microhttpd.h>
#include "remora/log.h"
#include "remora/xalloc.h"
#include "streaming_int.h"

#define MAX_MESSAGE (1u << 20)

/* ---- socket output ---- */

static int ws_send(int sock, uint8_t op, const void *data, size_t len)
{
        uint8_t hdr[10];
        size_t h = rm__ws_header(op, true, len, hdr);
        if (rm__send_all(sock, hdr, h) < 0)
                return -1;
        return len ? rm__send_all(sock, data, len) : 0;
}

/* A channel message: one channel byte then data (or a digit then base64 text). */
static int send_channel(struct rm_session *s, uint8_t ch, const void *data, size_t len)
{
        if (s->base64) {
                char *msg = xmalloc(2 + 4 * ((len + 2) / 3) + 1);
                msg[0] = (char)('0' + ch);
                size_t n = rm__base64(data, len, false, msg + 1);
                int rc = ws_send(s->sock, RM_WS_TEXT, msg, 1 + n);
                free(msg);
                return rc;
        }
        uint8_t *msg = xmalloc(1 + len);
        msg[0] = ch;
        memcpy(msg + 1, data, len);
        int rc = ws_send(s->sock, RM_WS_BINARY, msg, 1 + len);
        free(msg);
        return rc;
}

static void send_close(struct rm_session *s, uint16_t code)
{
        uint8_t b[2] = {(uint8_t)(code >> 8), (uint8_t)code};
        ws_send(s->sock, RM_WS_CLOSE, b, 2);
}

/* ---- socket input: frames assembled into messages ---- */

struct reader {
        uint8_t *buf;
        size_t len, cap;
        uint8_t *msg; /* the message being assembled from fragments */
        size_t msg_len;
        uint8_t msg_op;
        bool in_msg;
};

static void reader_init(struct reader *r, const uint8_t *extra, size_t n)
{
        r->cap = MAX_MESSAGE + 64;
        r->buf = xmalloc(r->cap);
        r->len = n < r->cap ? n : r->cap;
        memcpy(r->buf, extra, r->len);
        r->msg = NULL;
        r->msg_len = 0;
        r->in_msg = false;
}

static void reader_free(struct reader *r)
{
        free(r->buf);
        free(r->msg);
}

/* Take the next complete message out of the buffer (answering pings on the way). */
static int reader_next(struct rm_session *s, struct reader *r)
{
        for (;;) {
                struct rm_ws_frame f;
                const char *why = NULL;
                ssize_t n = rm__ws_parse(r->buf, r->len, MAX_MESSAGE, &f, &why);
                if (n == 0)
                        return RD_NONE;
                if (n < 0) {
                        rm_log_debug("streaming: dropping a WebSocket client: %s", why);
                        send_close(s, 1002);
                        return RD_ERROR;
                }
                int result = RD_NONE;
                switch (f.op) {
                case RM_WS_PING:
                        ws_send(s->sock, RM_WS_PONG, f.payload, f.len);
                        break;
                case RM_WS_PONG:
                        break;
                case RM_WS_CLOSE:
                        send_close(s, 1000);
                        result = RD_CLOSED;
                        break;
                default:
                        if ((f.op == RM_WS_CONT) != r->in_msg || r->msg_len + f.len > MAX_MESSAGE) {
                                send_close(s, f.op == RM_WS_CONT || r->in_msg ? 1002 : 1009);
                                result = RD_ERROR;
                                break;
                        }
                        if (!r->in_msg) {
                                r->msg_op = f.op;
                                r->msg_len = 0;
                                free(r->msg);
                                r->msg = xmalloc(MAX_MESSAGE);
                        }
                        memcpy(r->msg + r->msg_len, f.payload, f.len);
                        r->msg_len += f.len;
                        r->in_msg = !f.fin;
                        if (f.fin)
                                result = RD_MESSAGE;
                }
                memmove(r->buf, r->buf + n, r->len - (size_t)n);
                r->len -= (size_t)n;
                if (result != RD_NONE)
                        return result;
        }
}

/* Read what the socket has; RD_CLOSED on EOF. */
static int reader_fill(struct rm_session *s, struct reader *r)
{
        if (r->len == r->cap)
                return RD_ERROR;
        ssize_t n = recv(s->sock, r->buf + r->len, r->cap - r->len, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return RD_NONE;
        if (n <= 0)
                return RD_CLOSED;
        r->len += (size_t)n;
        return RD_NONE;
}

/* Decode a message into channel and payload (in place). */
static int message_channel(struct rm_session *s, struct reader *r, uint8_t *ch, uint8_t **data,
                           size_t *len)
{
        if (r->msg_len < 1)
                return -1;
        if (s->base64) {
                if (r->msg[0] < '0' || r->msg[0] > '9')
                        return -1;
                *ch = (uint8_t)(r->msg[0] - '0');
                ssize_t n = rm__base64_decode((char *)r->msg + 1, r->msg_len - 1, r->msg + 1);
                if (n < 0)
                        return -1;
                *data = r->msg + 1;
                *len = (size_t)n;
                return 0;
        }
        *ch = r->msg[0];
        *data = r->msg + 1;
        *len = r->msg_len - 1;
        return 0;
}

/* ---- port forward: channel 2i carries port i's data, 2i+1 its errors ---- */

struct pf_port {
        struct rm_worker w;
        int sp[2]; /* sp[0] is ours, sp[1] the backend's */
        bool reported;
};

void rm__ws_portforward(struct rm_session *s)
{
        size_t n = s->n_ports;
        struct pf_port *pp = calloc(n, sizeof(*pp));
        int done[2] = {-1, -1};
        struct reader r;
        reader_init(&r, s->extra, s->extra_len);
        uint8_t *chunk = xmalloc(RM_READ_CHUNK);
        if (pp == NULL || pipe2(done, O_CLOEXEC) < 0)
                goto out;
        for (size_t i = 0; i < n; i++) {
                pp[i].sp[0] = pp[i].sp[1] = -1;
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pp[i].sp) < 0)
                        goto out;
                pp[i].w = (struct rm_worker){
                    .s = s, .done_fd = done[1], .port = s->ports[i], .pf_fd = pp[i].sp[1]};
                uint8_t le[2] = {(uint8_t)s->ports[i], (uint8_t)(s->ports[i] >> 8)};
                if (send_channel(s, (uint8_t)(2 * i), le, 2) < 0 ||
                    send_channel(s, (uint8_t)(2 * i + 1), le, 2) < 0)
                        goto out;
                if (rm__worker_start(&pp[i].w) < 0)
                        goto out;
        }
        for (;;) {
                int rd;
                while ((rd = reader_next(s, &r)) != RD_NONE) {
                        if (rd != RD_MESSAGE)
                                goto out;
                        uint8_t ch, *data;
                        size_t len;
                        if (message_channel(s, &r, &ch, &data, &len) < 0 || ch % 2 || ch / 2 >= n ||
                            pp[ch / 2].sp[0] < 0)
                                continue;
                        /* Blocking: a target that stops reading holds the client back. */
                        if (rm__send_all(pp[ch / 2].sp[0], data, len) < 0)
                                rm__close_fd(&pp[ch / 2].sp[0]);
                }
                size_t live = 0;
                for (size_t i = 0; i < n; i++)
                        live += pp[i].sp[0] >= 0;
                if (live == 0)
                        break;
                struct pollfd p[n + 2];
                p[0] = (struct pollfd){.fd = s->sock, .events = POLLIN};
                p[1] = (struct pollfd){.fd = done[0], .events = POLLIN};
                for (size_t i = 0; i < n; i++)
                        p[i + 2] = (struct pollfd){.fd = pp[i].sp[0], .events = POLLIN};
                if (poll(p, (nfds_t)(n + 2), -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (p[0].revents && reader_fill(s, &r) != RD_NONE)
                        goto out;
                if (p[1].revents) {
                        char b;
                        ssize_t ignored = read(done[0], &b, 1);
                        (void)ignored;
                        for (size_t i = 0; i < n; i++) {
                                struct rm_worker *w = &pp[i].w;
                                if (!w->started || w->joined || pp[i].reported)
                                        continue;
                                /* A worker that has returned is about to exit: the
                                 * join waits only for that. */
                                if (!atomic_load(&w->returned))
                                        continue;
                                rm__worker_join(w);
                                pp[i].reported = true;
                                if (w->rc < 0)
                                        send_channel(s, (uint8_t)(2 * i + 1), w->err->msg,
                                                     strlen(w->err->msg));
                                rm__close_fd(&pp[i].sp[1]);
                        }
                }
                for (size_t i = 0; i < n; i++) {
                        if (!p[i + 2].revents)
                                continue;
                        ssize_t got = read(pp[i].sp[0], chunk, RM_READ_CHUNK);
                        if (got < 0 && (errno == EINTR || errno == EAGAIN))
                                continue;
                        if (got <= 0) {
                                rm__close_fd(&pp[i].sp[0]);
                                continue;
                        }
                        if (send_channel(s, (uint8_t)(2 * i), chunk, (size_t)got) < 0)
                                goto out;
                }
        }
        send_close(s, 1000);
out:
        rm__cancel_backend(s);
        for (size_t i = 0; pp && i < n; i++) {
                if (pp[i].sp[0] >= 0)
                        shutdown(pp[i].sp[0], SHUT_RDWR);
                rm__worker_join(&pp[i].w);
                rm__close_fd(&pp[i].sp[0]);
                rm__close_fd(&pp[i].sp[1]);
                rm_error_free(pp[i].w.err);
        }
        free(pp);
        rm__close_fd(&done[0]);
        rm__close_fd(&done[1]);
        free(chunk);
        reader_free(&r);
}

/* ---- exec and attach: the relay over WebSocket messages ---- */

static int ws_fill(struct rm_session *s, void *t)
{
        return reader_fill(s, t);
}

static int ws_next(struct rm_session *s, void *t, struct rm_chan_msg *m)
{
        struct reader *r = t;
        for (;;) {
                int rd = reader_next(s, r);
                if (rd != RD_MESSAGE)
                        return rd;
                uint8_t *data;
                if (message_channel(s, r, &m->ch, &data, &m->len) < 0)
                        continue;
                m->data = data;
                /* Only v5 has a close signal; earlier clients end stdin by hanging up. */
                if (m->ch == CH_CLOSE && s->version < 5)
                        continue;
                return RD_MESSAGE;
        }
}

static int ws_send_chan(struct rm_session *s, void *t, uint8_t ch, const void *data, size_t len)
{
        (void)t;
        return send_channel(s, ch, data, len);
}

static void ws_finish(struct rm_session *s, void *t, struct rm_worker *w)
{
        (void)t;
        char *msg = s->version >= 4 ? rm__status_json(w) : rm__status_text(w);
        if (msg)
                send_channel(s, CH_ERROR, msg, strlen(msg));
        free(msg);
        send_close(s, 1000);
        rm__linger(s);
}

static bool ws_ready(struct rm_session *s, void *t)
{
        (void)s;
        (void)t;
        return true;
}

static const struct rm_transport ws_transport = {
    .fill = ws_fill, .next = ws_next, .send = ws_send_chan, .finish = ws_finish, .ready = ws_ready};

void rm__ws_exec(struct rm_session *s)
{
        struct reader r;
        reader_init(&r, s->extra, s->extra_len);
        rm__relay_exec(s, &ws_transport, &r);
        reader_free(&r);
}
