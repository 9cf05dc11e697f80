/* The transport-independent half of a session: backend calls in worker threads, and the
 * exec/attach relay between a client transport (WebSocket or SPDY) and the backend's
 * pipes. The backend only ever sees file descriptors (struct rm_stream_io). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <microhttpd.h>
#include "remora/clock.h"
#include "remora/log.h"
#include "remora/xalloc.h"
#include "streaming_int.h"

#define MAX_PENDING   (256u << 10)
#define READY_TIMEOUT 30 /* seconds a SPDY client gets to open its streams */

void rm__close_fd(int *fd)
{
        if (*fd >= 0)
                close(*fd);
        *fd = -1;
}

int rm__send_all(int sock, const void *buf, size_t len)
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

/* Under the server lock: rm_streaming_close may be closing the same fd. */
void rm__cancel_backend(struct rm_session *s)
{
        pthread_mutex_lock(&s->srv->lock);
        rm__close_fd(&s->cancel[1]);
        pthread_mutex_unlock(&s->srv->lock);
}

static const char *kind_name(enum rm_stream_kind kind)
{
        switch (kind) {
        case RM_STREAM_EXEC:
                return "exec";
        case RM_STREAM_ATTACH:
                return "attach";
        case RM_STREAM_PORTFORWARD:
                return "port forward";
        }
        return "?";
}

static void *worker_main(void *arg)
{
        struct rm_worker *w = arg;
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
        if (w->rc < 0) /* the client gets it on its error stream; the operator here */
                rm_log_info("streaming: %s: %s", kind_name(s->req->kind), w->err->msg);
        atomic_store(&w->returned, true);
        char b = 1;
        ssize_t ignored = write(w->done_fd, &b, 1);
        (void)ignored;
        return NULL;
}

int rm__worker_start(struct rm_worker *w)
{
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
                return -1;
        w->started = true;
        return 0;
}

void rm__worker_join(struct rm_worker *w)
{
        if (w->started && !w->joined) {
                pthread_join(w->thread, NULL);
                w->joined = true;
        }
}

char *rm__status_json(const struct rm_worker *w)
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
        char *out = xstrdup(json_object_to_json_string_ext(st, JSON_C_TO_STRING_PLAIN));
        json_object_put(st);
        return out;
}

char *rm__status_text(const struct rm_worker *w)
{
        if (w->rc < 0)
                return xstrdup(w->err->msg);
        if (w->exit_code == 0)
                return NULL;
        char *msg;
        if (asprintf(&msg, "command terminated with exit code %d", w->exit_code) < 0)
                abort();
        return msg;
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

void rm__relay_exec(struct rm_session *s, const struct rm_transport *tp, void *t)
{
        struct rm_stream_req *req = s->req;
        int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1}, rsz[2] = {-1, -1};
        int done[2] = {-1, -1};
        struct rm_worker w = {.s = s};
        uint8_t *pending = NULL, *chunk = xmalloc(RM_READ_CHUNK);
        size_t pending_len = 0;
        bool in_eof = false, finished = false;
        int64_t deadline = rm__now() + READY_TIMEOUT;

        if (!mkpipe(done) || (req->in && !mkpipe(in)) || (req->out && !mkpipe(out)) ||
            (req->err && !req->tty && !mkpipe(errp)) || (req->tty && !mkpipe(rsz))) {
                rm_error_sys(&w.err, "pipes for a streaming session");
                w.rc = -1;
                tp->finish(s, t, &w);
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
        for (;;) {
                if (!w.started && tp->ready(s, t)) {
                        if (rm__worker_start(&w) < 0) {
                                rm_error_set(&w.err, RM_RESOURCE_EXHAUSTED,
                                             "no thread for the backend call");
                                w.rc = -1;
                                tp->finish(s, t, &w);
                                goto out;
                        }
                }
                if (!w.started && rm__now() > deadline) {
                        rm_log_debug("streaming: client never opened its streams");
                        goto out;
                }
                /* Messages already buffered are handled before waiting on anything. */
                int rd;
                struct rm_chan_msg m;
                while (pending_len < MAX_PENDING && (rd = tp->next(s, t, &m)) != RD_NONE) {
                        if (rd != RD_MESSAGE)
                                goto out;
                        if (m.ch == CH_STDIN && in[1] >= 0 && !in_eof && m.len > 0) {
                                pending = realloc(pending, pending_len + m.len);
                                if (pending == NULL)
                                        abort();
                                memcpy(pending + pending_len, m.data, m.len);
                                pending_len += m.len;
                        } else if (m.ch == CH_RESIZE) {
                                apply_resize(rsz[1], m.data, m.len);
                        } else if (m.ch == CH_CLOSE && m.len >= 1 && m.data[0] == CH_STDIN) {
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
                                rm__close_fd(&in[1]);
                        }
                }
                if (in_eof && pending_len == 0)
                        rm__close_fd(&in[1]);
                if (finished && out[0] < 0 && errp[0] < 0)
                        break;

                struct pollfd p[5] = {
                    {.fd = pending_len < MAX_PENDING ? s->sock : -1, .events = POLLIN},
                    {.fd = w.started ? out[0] : -1, .events = POLLIN},
                    {.fd = w.started ? errp[0] : -1, .events = POLLIN},
                    {.fd = finished ? -1 : done[0], .events = POLLIN},
                    {.fd = pending_len ? in[1] : -1, .events = POLLOUT},
                };
                if (poll(p, 5, w.started ? -1 : 1000) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (p[0].revents && tp->fill(s, t) != RD_NONE)
                        goto out;
                for (int i = 1; i <= 2; i++) {
                        int *fd = i == 1 ? &out[0] : &errp[0];
                        if (!p[i].revents)
                                continue;
                        ssize_t n = read(*fd, chunk, RM_READ_CHUNK);
                        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                                continue;
                        if (n <= 0) {
                                rm__close_fd(fd);
                                continue;
                        }
                        if (tp->send(s, t, (uint8_t)i, chunk, (size_t)n) < 0)
                                goto out;
                }
                if (p[3].revents) {
                        /* The call returned: our copies of its write ends go, so the
                         * output pipes reach EOF once the process's last writer exits. */
                        rm__worker_join(&w);
                        finished = true;
                        rm__close_fd(&out[1]);
                        rm__close_fd(&errp[1]);
                }
        }
        tp->finish(s, t, &w);
out:
        rm__cancel_backend(s);
        rm__close_fd(&in[1]);
        rm__worker_join(&w);
        int *fds[] = {&in[0],  &out[0], &out[1],  &errp[0], &errp[1],
                      &rsz[0], &rsz[1], &done[0], &done[1]};
        for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
                rm__close_fd(fds[i]);
        free(pending);
        free(chunk);
        rm_error_free(w.err);
}

void *rm__session_main(void *arg)
{
        struct rm_session *s = arg;
        /* The socket may come non-blocking from MHD; the relay loops poll before reading. */
        int fl = fcntl(s->sock, F_GETFL);
        if (fl >= 0)
                fcntl(s->sock, F_SETFL, fl & ~O_NONBLOCK);
        /* Who opened what into which container: one line at the start, one at the end. */
        const char *kind = kind_name(s->req->kind);
        bool pf = s->req->kind == RM_STREAM_PORTFORWARD;
        int64_t t0 = rm_mono_ns();
        rm_log_info("streaming: %s session for %s %.12s over %s started", kind,
                    pf ? "pod" : "container", s->req->id, s->spdy ? "SPDY" : "WebSocket");
        if (pf)
                s->spdy ? rm__spdy_portforward(s) : rm__ws_portforward(s);
        else
                s->spdy ? rm__spdy_exec(s) : rm__ws_exec(s);
        rm_log_info("streaming: %s session for %s %.12s ended after %lld ms", kind,
                    pf ? "pod" : "container", s->req->id,
                    (long long)((rm_mono_ns() - t0) / 1000000));

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
        rm__close_fd(&s->cancel[0]);
        rm__close_fd(&s->cancel[1]);
        rm__stream_req_free(s->req);
        free(s->extra);
        free(s->ports);
        free(s);
        return NULL;
}

void rm__linger(struct rm_session *s)
{
        /* Closing with unread input would reset the connection and could destroy what the
         * client has not read yet: half-close, then drain briefly until it hangs up. */
        shutdown(s->sock, SHUT_WR);
        char buf[4096];
        int64_t end = rm__now() + 2;
        while (rm__now() <= end) {
                struct pollfd p = {.fd = s->sock, .events = POLLIN};
                if (poll(&p, 1, 500) <= 0)
                        continue;
                if (recv(s->sock, buf, sizeof(buf), 0) <= 0)
                        break;
        }
}
