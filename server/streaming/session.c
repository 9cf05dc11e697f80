/* WebSocket sessions: the Kubernetes channel protocols for exec, attach and port forward.
 * A session thread relays between the socket and pipes; the backend call runs in a worker
 * thread of its own and only sees file descriptors (struct rm_stream_io). */
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

enum { CH_STDIN = 0, CH_STDOUT = 1, CH_STDERR = 2, CH_ERROR = 3, CH_RESIZE = 4, CH_CLOSE = 255 };
#define MAX_MESSAGE (1u << 20)
#define MAX_PENDING (256u << 10)
#define READ_CHUNK  (32u << 10)

static void close_fd(int *fd)
{
        if (*fd >= 0)
                close(*fd);
        *fd = -1;
}

/* ---- socket output ---- */

static int send_all(int sock, const void *buf, size_t len)
{
        const uint8_t *p = buf;
        while (len > 0) {
                ssize_t n = send(sock, p, len, MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                        struct pollfd pfd = {.fd = sock, .events = POLLOUT};
                        poll(&pfd, 1, -1);
                        continue;
                }
                if (n <= 0)
                        return -1;
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

static int ws_send(int sock, uint8_t op, const void *data, size_t len)
{
        uint8_t hdr[10];
        size_t h = rm__ws_header(op, true, len, hdr);
        if (send_all(sock, hdr, h) < 0)
                return -1;
        return len ? send_all(sock, data, len) : 0;
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

/* What reader_next produced. */
enum { RD_NONE, RD_MESSAGE, RD_CLOSED, RD_ERROR };

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

/* ---- backend calls in worker threads ---- */

struct worker {
        struct rm_session *s;
        pthread_t thread;
        bool started, joined;
        int done_fd; /* written (one byte) when the call returns */
        struct rm_stream_io io;
        int32_t port;
        int pf_fd;
        int rc;
        int exit_code;
        struct rm_error *err;
        atomic_bool returned; /* set before done_fd is written */
};

static void *worker_main(void *arg)
{
        struct worker *w = arg;
        struct rm_session *s = w->s;
        const struct rm_stream_backend_ops *ops = s->srv->ops;
        void *ctx = s->srv->ctx;
        switch (s->req->kind) {
        case RM_STREAM_EXEC:
                w->rc = ops->exec(ctx, s->req->id, s->req->argv, &w->io, &w->exit_code, &w->err);
                break;
        case RM_STREAM_ATTACH:
                w->rc = ops->attach(ctx, s->req->id, &w->io, &w->err);
                break;
        case RM_STREAM_PORTFORWARD:
                w->rc =
                    ops->port_forward(ctx, s->req->id, w->port, w->pf_fd, s->cancel[0], &w->err);
                break;
        }
        if (w->rc < 0 && w->err == NULL)
                rm_error_set(&w->err, RM_INTERNAL, "backend failed without saying why");
        atomic_store(&w->returned, true);
        char b = 1;
        ssize_t ignored = write(w->done_fd, &b, 1);
        (void)ignored;
        return NULL;
}

static int worker_start(struct worker *w)
{
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
                return -1;
        w->started = true;
        return 0;
}

static void worker_join(struct worker *w)
{
        if (w->started && !w->joined) {
                pthread_join(w->thread, NULL);
                w->joined = true;
        }
}

/* Under the server lock: rm_streaming_close may be closing the same fd. */
static void cancel_backend(struct rm_session *s)
{
        pthread_mutex_lock(&s->srv->lock);
        close_fd(&s->cancel[1]);
        pthread_mutex_unlock(&s->srv->lock);
}

/* ---- exec and attach ---- */

static char *status_json(struct rm_session *s, struct worker *w)
{
        struct json_object *st = json_object_new_object();
        json_object_object_add(st, "metadata", json_object_new_object());
        if (w->rc == 0 && w->exit_code == 0) {
                json_object_object_add(st, "status", json_object_new_string("Success"));
        } else if (w->rc == 0) {
                char msg[64];
                snprintf(msg, sizeof(msg), "command terminated with non-zero exit code: %d",
                         w->exit_code);
                json_object_object_add(st, "status", json_object_new_string("Failure"));
                json_object_object_add(st, "message", json_object_new_string(msg));
                json_object_object_add(st, "reason", json_object_new_string("NonZeroExitCode"));
                struct json_object *cause = json_object_new_object();
                snprintf(msg, sizeof(msg), "%d", w->exit_code);
                json_object_object_add(cause, "reason", json_object_new_string("ExitCode"));
                json_object_object_add(cause, "message", json_object_new_string(msg));
                struct json_object *causes = json_object_new_array();
                json_object_array_add(causes, cause);
                struct json_object *details = json_object_new_object();
                json_object_object_add(details, "causes", causes);
                json_object_object_add(st, "details", details);
        } else {
                json_object_object_add(st, "status", json_object_new_string("Failure"));
                json_object_object_add(st, "message", json_object_new_string(w->err->msg));
                json_object_object_add(st, "reason", json_object_new_string("InternalError"));
        }
        (void)s;
        char *out = xstrdup(json_object_to_json_string_ext(st, JSON_C_TO_STRING_PLAIN));
        json_object_put(st);
        return out;
}

/* The error channel before v4 carries only a failure's text. */
static void send_exit(struct rm_session *s, struct worker *w)
{
        if (s->version >= 4) {
                char *j = status_json(s, w);
                send_channel(s, CH_ERROR, j, strlen(j));
                free(j);
        } else if (w->rc < 0) {
                send_channel(s, CH_ERROR, w->err->msg, strlen(w->err->msg));
        } else if (w->exit_code != 0) {
                char msg[64];
                int n = snprintf(msg, sizeof(msg), "command terminated with exit code %d",
                                 w->exit_code);
                send_channel(s, CH_ERROR, msg, (size_t)n);
        }
}

static bool mkpipe(int p[2])
{
        return pipe2(p, O_CLOEXEC) == 0;
}

static void apply_resize(int fd, const uint8_t *data, size_t len)
{
        if (fd < 0)
                return;
        struct json_tokener *tk = json_tokener_new();
        struct json_object *j = json_tokener_parse_ex(tk, (const char *)data, (int)len);
        json_tokener_free(tk);
        if (j == NULL)
                return;
        struct json_object *w, *h;
        if (json_object_object_get_ex(j, "Width", &w) &&
            json_object_object_get_ex(j, "Height", &h)) {
                int64_t wi = json_object_get_int64(w), hi = json_object_get_int64(h);
                if (wi > 0 && wi <= 0xFFFF && hi > 0 && hi <= 0xFFFF) {
                        struct rm_term_size ts = {(uint16_t)wi, (uint16_t)hi};
                        /* A full pipe means the backend lags; a resize can be dropped. */
                        ssize_t ignored = write(fd, &ts, sizeof(ts));
                        (void)ignored;
                }
        }
        json_object_put(j);
}

static void serve_exec(struct rm_session *s)
{
        struct rm_stream_req *req = s->req;
        int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1}, rsz[2] = {-1, -1};
        int done[2] = {-1, -1};
        struct worker w = {.s = s};
        struct reader r;
        reader_init(&r, s->extra, s->extra_len);
        uint8_t *pending = NULL;
        size_t pending_len = 0;
        bool in_eof = false, finished = false;

        if (!mkpipe(done) || (req->in && !mkpipe(in)) || (req->out && !mkpipe(out)) ||
            (req->err && !req->tty && !mkpipe(errp)) || (req->tty && !mkpipe(rsz))) {
                rm_error_sys(&w.err, "pipes for a streaming session");
                w.rc = -1;
                send_exit(s, &w);
                goto out;
        }
        if (in[1] >= 0)
                fcntl(in[1], F_SETFL, O_NONBLOCK);
        if (rsz[1] >= 0)
                fcntl(rsz[1], F_SETFL, O_NONBLOCK);
        w.done_fd = done[1];
        w.io = (struct rm_stream_io){.in = in[0],
                                     .out = out[1],
                                     .err = errp[1],
                                     .resize = rsz[0],
                                     .cancel = s->cancel[0],
                                     .tty = req->tty};
        if (worker_start(&w) < 0) {
                rm_error_set(&w.err, RM_RESOURCE_EXHAUSTED, "no thread for the backend call");
                w.rc = -1;
                send_exit(s, &w);
                goto out;
        }
        uint8_t *chunk = xmalloc(READ_CHUNK);
        for (;;) {
                /* Messages already buffered are handled before waiting on anything. */
                int rd;
                while (pending_len < MAX_PENDING && (rd = reader_next(s, &r)) != RD_NONE) {
                        if (rd != RD_MESSAGE)
                                goto gone;
                        uint8_t ch, *data;
                        size_t len;
                        if (message_channel(s, &r, &ch, &data, &len) < 0)
                                continue;
                        if (ch == CH_STDIN && in[1] >= 0 && !in_eof && len > 0) {
                                pending = realloc(pending, pending_len + len);
                                memcpy(pending + pending_len, data, len);
                                pending_len += len;
                        } else if (ch == CH_RESIZE) {
                                apply_resize(rsz[1], data, len);
                        } else if (ch == CH_CLOSE && s->version >= 5 && len >= 1 &&
                                   data[0] == CH_STDIN) {
                                in_eof = true;
                        }
                }
                if (in[1] >= 0 && pending_len > 0) {
                        ssize_t n = write(in[1], pending, pending_len);
                        if (n > 0) {
                                memmove(pending, pending + n, pending_len - (size_t)n);
                                pending_len -= (size_t)n;
                        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                                /* The process closed its stdin: drop what it won't read. */
                                pending_len = 0;
                                close_fd(&in[1]);
                        }
                }
                if (in_eof && pending_len == 0)
                        close_fd(&in[1]);
                if (finished && out[0] < 0 && errp[0] < 0)
                        break;

                struct pollfd p[5];
                int np = 0;
                p[np++] = (struct pollfd){.fd = pending_len < MAX_PENDING ? s->sock : -1,
                                          .events = POLLIN};
                p[np++] = (struct pollfd){.fd = out[0], .events = POLLIN};
                p[np++] = (struct pollfd){.fd = errp[0], .events = POLLIN};
                p[np++] = (struct pollfd){.fd = finished ? -1 : done[0], .events = POLLIN};
                p[np++] = (struct pollfd){.fd = pending_len ? in[1] : -1, .events = POLLOUT};
                if (poll(p, (nfds_t)np, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (p[0].revents) {
                        int rc = reader_fill(s, &r);
                        if (rc != RD_NONE)
                                goto gone;
                }
                for (int i = 1; i <= 2; i++) {
                        int *fd = i == 1 ? &out[0] : &errp[0];
                        if (!p[i].revents)
                                continue;
                        ssize_t n = read(*fd, chunk, READ_CHUNK);
                        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                                continue;
                        if (n <= 0) {
                                close_fd(fd);
                                continue;
                        }
                        if (send_channel(s, (uint8_t)i, chunk, (size_t)n) < 0)
                                goto gone;
                }
                if (p[3].revents) {
                        /* The call returned: our copies of its write ends go, so the
                         * output pipes reach EOF once the process's last writer exits. */
                        worker_join(&w);
                        finished = true;
                        close_fd(&out[1]);
                        close_fd(&errp[1]);
                }
        }
        free(chunk);
        send_exit(s, &w);
        send_close(s, 1000);
        goto out;
gone:
        free(chunk);
out:
        cancel_backend(s);
        close_fd(&in[1]);
        worker_join(&w);
        int *fds[] = {&in[0],  &out[0], &out[1],  &errp[0], &errp[1],
                      &rsz[0], &rsz[1], &done[0], &done[1]};
        for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
                close_fd(fds[i]);
        free(pending);
        reader_free(&r);
        rm_error_free(w.err);
}

/* ---- port forward: channel 2i carries port i's data, 2i+1 its errors ---- */

struct pf_port {
        struct worker w;
        int sp[2]; /* sp[0] is ours, sp[1] the backend's */
        bool reported;
};

static void serve_portforward(struct rm_session *s)
{
        size_t n = s->n_ports;
        struct pf_port *pp = calloc(n, sizeof(*pp));
        int done[2] = {-1, -1};
        struct reader r;
        reader_init(&r, s->extra, s->extra_len);
        uint8_t *chunk = xmalloc(READ_CHUNK);
        if (pp == NULL || !mkpipe(done))
                goto out;
        for (size_t i = 0; i < n; i++) {
                pp[i].sp[0] = pp[i].sp[1] = -1;
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pp[i].sp) < 0)
                        goto out;
                pp[i].w = (struct worker){
                    .s = s, .done_fd = done[1], .port = s->ports[i], .pf_fd = pp[i].sp[1]};
                uint8_t le[2] = {(uint8_t)s->ports[i], (uint8_t)(s->ports[i] >> 8)};
                if (send_channel(s, (uint8_t)(2 * i), le, 2) < 0 ||
                    send_channel(s, (uint8_t)(2 * i + 1), le, 2) < 0)
                        goto out;
                if (worker_start(&pp[i].w) < 0)
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
                        if (send_all(pp[ch / 2].sp[0], data, len) < 0)
                                close_fd(&pp[ch / 2].sp[0]);
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
                                struct worker *w = &pp[i].w;
                                if (!w->started || w->joined || pp[i].reported)
                                        continue;
                                /* A worker that has returned is about to exit: the
                                 * join waits only for that. */
                                if (!atomic_load(&w->returned))
                                        continue;
                                worker_join(w);
                                pp[i].reported = true;
                                if (w->rc < 0)
                                        send_channel(s, (uint8_t)(2 * i + 1), w->err->msg,
                                                     strlen(w->err->msg));
                                close_fd(&pp[i].sp[1]);
                        }
                }
                for (size_t i = 0; i < n; i++) {
                        if (!p[i + 2].revents)
                                continue;
                        ssize_t got = read(pp[i].sp[0], chunk, READ_CHUNK);
                        if (got < 0 && (errno == EINTR || errno == EAGAIN))
                                continue;
                        if (got <= 0) {
                                close_fd(&pp[i].sp[0]);
                                continue;
                        }
                        if (send_channel(s, (uint8_t)(2 * i), chunk, (size_t)got) < 0)
                                goto out;
                }
        }
        send_close(s, 1000);
out:
        cancel_backend(s);
        for (size_t i = 0; pp && i < n; i++) {
                if (pp[i].sp[0] >= 0)
                        shutdown(pp[i].sp[0], SHUT_RDWR);
                worker_join(&pp[i].w);
                close_fd(&pp[i].sp[0]);
                close_fd(&pp[i].sp[1]);
                rm_error_free(pp[i].w.err);
        }
        free(pp);
        close_fd(&done[0]);
        close_fd(&done[1]);
        free(chunk);
        reader_free(&r);
}

void *rm__session_main(void *arg)
{
        struct rm_session *s = arg;
        /* The socket may come non-blocking from MHD; the relay loops poll before reading. */
        int fl = fcntl(s->sock, F_GETFL);
        if (fl >= 0)
                fcntl(s->sock, F_SETFL, fl & ~O_NONBLOCK);
        if (s->req->kind == RM_STREAM_PORTFORWARD)
                serve_portforward(s);
        else
                serve_exec(s);

        struct rm_streaming *srv = s->srv;
        pthread_mutex_lock(&srv->lock);
        for (struct rm_session **p = &srv->sessions; *p; p = &(*p)->next)
                if (*p == s) {
                        *p = s->next;
                        break;
                }
        MHD_upgrade_action(s->urh, MHD_UPGRADE_ACTION_CLOSE);
        pthread_cond_broadcast(&srv->idle);
        pthread_mutex_unlock(&srv->lock);
        close_fd(&s->cancel[0]);
        close_fd(&s->cancel[1]);
        rm__stream_req_free(s->req);
        free(s->extra);
        free(s->ports);
        free(s);
        return NULL;
}
