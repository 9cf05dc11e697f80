/* The attach clients of one container, served from remora-shim's poll loop. */
#include "hub.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

int rm_hub_listen(struct rm_hub *h)
{
        h->n = 0;
        unlink(RM_ATTACH_SOCKET);
        h->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (h->listen_fd < 0)
                return -1;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        memcpy(sa.sun_path, RM_ATTACH_SOCKET, sizeof(RM_ATTACH_SOCKET));
        mode_t old = umask(0077);
        int rc = bind(h->listen_fd, (struct sockaddr *)&sa, sizeof(sa));
        umask(old);
        if (rc < 0 || listen(h->listen_fd, 8) < 0) {
                close(h->listen_fd);
                h->listen_fd = -1;
                return -1;
        }
        return 0;
}

#define CLIENT_BUF (RM_ATTACH_HEADER + RM_ATTACH_MAX_PAYLOAD)
/* One read of a client adds at most CLIENT_BUF bytes of input, and a client is read only
 * while less than RM_HUB_STDIN_MAX waits. */
#define STDIN_CAP (RM_HUB_STDIN_MAX + CLIENT_BUF)

static long long now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

size_t rm_hub_stdin_pending(const struct rm_hub *h)
{
        return h->in_end - h->in_off;
}

static bool throttled(const struct rm_hub *h)
{
        return h->stdin_fd >= 0 && rm_hub_stdin_pending(h) >= RM_HUB_STDIN_MAX;
}

size_t rm_hub_pollfds(const struct rm_hub *h, struct pollfd *pf)
{
        pf[0] = (struct pollfd){.fd = h->listen_fd, .events = POLLIN};
        bool waiting = h->stdin_fd >= 0 && rm_hub_stdin_pending(h) > 0;
        pf[1] = (struct pollfd){.fd = waiting ? h->stdin_fd : -1, .events = POLLOUT};
        /* A client held back is left out altogether: even its hang-up would wake us. */
        bool hold = throttled(h);
        for (size_t i = 0; i < h->n; i++)
                pf[2 + i] = (struct pollfd){.fd = hold ? -1 : h->clients[i].fd, .events = POLLIN};
        return 2 + h->n;
}

static void discard_input(struct rm_hub *h)
{
        free(h->in_buf);
        h->in_buf = NULL;
        h->in_off = h->in_end = 0;
}

void rm_hub_stdin_lost(struct rm_hub *h)
{
        discard_input(h);
        h->stdin_fd = -1;
        h->in_close = false;
}

static void close_stdin_now(struct rm_hub *h)
{
        h->in_close = false;
        if (h->stdin_fd >= 0 && h->stdin_fd != h->tty_fd)
                close(h->stdin_fd);
        h->stdin_fd = -1;
}

/* The container closed its stdin (a write failed): nothing will ever read it. */
static void stdin_closed(struct rm_hub *h)
{
        int fd = h->stdin_fd;
        bool tty = fd == h->tty_fd;
        rm_hub_stdin_lost(h);
        if (!tty)
                close(fd);
}

/* Write what waits (and then p) without blocking; keep the rest. */
static void stdin_put(struct rm_hub *h, const unsigned char *p, size_t len)
{
        if (h->stdin_fd < 0 || h->in_close)
                return; /* no stdin, or input has ended */
        while (rm_hub_stdin_pending(h) == 0 && len > 0) {
                ssize_t w = write(h->stdin_fd, p, len);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0 && errno == EAGAIN)
                        break;
                if (w <= 0) {
                        stdin_closed(h);
                        return;
                }
                h->progress_ms = now_ms();
                p += w;
                len -= (size_t)w;
        }
        if (len == 0)
                return;
        if (rm_hub_stdin_pending(h) == 0)
                h->progress_ms = now_ms();
        if (h->in_buf == NULL) {
                h->in_buf = malloc(STDIN_CAP);
                if (h->in_buf == NULL)
                        return; /* out of memory: the input is lost, the log is not */
        }
        if (h->in_end + len > STDIN_CAP) {
                memmove(h->in_buf, h->in_buf + h->in_off, rm_hub_stdin_pending(h));
                h->in_end -= h->in_off;
                h->in_off = 0;
        }
        if (h->in_end + len > STDIN_CAP)
                len = STDIN_CAP - h->in_end; /* cannot happen: clients are held back first */
        memcpy(h->in_buf + h->in_end, p, len);
        h->in_end += len;
}

/* The container's stdin can take more: give it what waits. */
static void stdin_drain(struct rm_hub *h)
{
        while (h->stdin_fd >= 0 && rm_hub_stdin_pending(h) > 0) {
                ssize_t w = write(h->stdin_fd, h->in_buf + h->in_off, rm_hub_stdin_pending(h));
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0 && errno == EAGAIN)
                        return;
                if (w <= 0) {
                        stdin_closed(h);
                        return;
                }
                h->in_off += (size_t)w;
                h->progress_ms = now_ms();
        }
        discard_input(h);
        if (h->in_close)
                close_stdin_now(h);
}

/* End of input: after what still waits for the container has been written. */
static void close_stdin(struct rm_hub *h)
{
        if (h->tty_fd >= 0 && h->stdin_fd == h->tty_fd) {
                /* A terminal has no end of file of its own: ^D at the start of a line. */
                static const unsigned char eot = 4;
                stdin_put(h, &eot, 1);
                return;
        }
        if (rm_hub_stdin_pending(h) > 0)
                h->in_close = true;
        else
                close_stdin_now(h);
}

static void drop(struct rm_hub *h, size_t i)
{
        close(h->clients[i].fd);
        free(h->clients[i].buf);
        h->clients[i] = h->clients[--h->n];
        if (h->stdin_once)
                close_stdin(h);
}

static void frame(struct rm_hub *h, int type, const unsigned char *p, uint32_t len)
{
        switch (type) {
        case RM_ATTACH_STDIN:
                stdin_put(h, p, len);
                break;
        case RM_ATTACH_RESIZE:
                if (h->tty_fd >= 0 && len == 4) {
                        struct winsize ws = {.ws_col = (unsigned short)(p[0] << 8 | p[1]),
                                             .ws_row = (unsigned short)(p[2] << 8 | p[3])};
                        ioctl(h->tty_fd, TIOCSWINSZ, &ws);
                }
                break;
        case RM_ATTACH_CLOSE_STDIN:
                close_stdin(h);
                break;
        default:
                break;
        }
}

/* Read what client i sent and act on every complete frame; false when it is gone. */
static bool input(struct rm_hub *h, struct rm_hub_client *c)
{
        if (throttled(h))
                return true; /* polled before another client filled the buffer */
        ssize_t r = read(c->fd, c->buf + c->len, CLIENT_BUF - c->len);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
                return true;
        if (r <= 0)
                return false;
        c->len += (size_t)r;
        size_t off = 0;
        uint32_t len;
        int whole;
        while ((whole = rm_attach_complete(c->buf + off, c->len - off, &len)) > 0) {
                frame(h, c->buf[off], c->buf + off + RM_ATTACH_HEADER, len);
                off += RM_ATTACH_HEADER + len;
        }
        if (whole < 0)
                return false; /* not our protocol */
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= off;
        return true;
}

static long long stall_ms(const struct rm_hub *h)
{
        return h->stall_ms ? h->stall_ms : RM_HUB_STDIN_STALL_MS;
}

int rm_hub_poll_timeout(const struct rm_hub *h)
{
        if (!throttled(h))
                return -1;
        long long left = h->progress_ms + stall_ms(h) - now_ms();
        return left < 0 ? 0 : (int)left;
}

/* The container has taken nothing for a while and clients are held back: cut off those
 * with input still unread (a partial frame, or bytes in the socket); readers stay. */
static void cut_off_senders(struct rm_hub *h)
{
        for (size_t i = h->n; i-- > 0;) {
                int unread = 0;
                if (ioctl(h->clients[i].fd, FIONREAD, &unread) < 0)
                        unread = 1;
                if (h->clients[i].len > 0 || unread > 0)
                        drop(h, i);
        }
        h->progress_ms = now_ms(); /* a new client gets a whole period */
}

void rm_hub_handle(struct rm_hub *h, const struct pollfd *pf, size_t n)
{
        if (n > 1 && pf[1].fd >= 0 && pf[1].revents)
                stdin_drain(h);
        if (throttled(h) && now_ms() - h->progress_ms >= stall_ms(h))
                cut_off_senders(h);
        /* Clients by fd: output sent since the poll may have dropped (and moved) some. */
        for (size_t i = 2; i < n; i++) {
                if (pf[i].fd < 0 || pf[i].revents == 0)
                        continue;
                for (size_t j = 0; j < h->n; j++) {
                        if (h->clients[j].fd != pf[i].fd)
                                continue;
                        if (!input(h, &h->clients[j]))
                                drop(h, j);
                        break;
                }
        }
        if (pf[0].revents & POLLIN) {
                int c = accept4(h->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                /* Buffers only for connected clients: the shim stays small otherwise. */
                unsigned char *buf =
                    c >= 0 && h->n < RM_HUB_MAX_CLIENTS ? malloc(CLIENT_BUF) : NULL;
                if (c >= 0 && buf == NULL) {
                        close(c);
                } else if (c >= 0) {
                        h->clients[h->n].fd = c;
                        h->clients[h->n].len = 0;
                        h->clients[h->n].buf = buf;
                        h->n++;
                }
        }
}

void rm_hub_broadcast(struct rm_hub *h, int type, const char *data, size_t len)
{
        for (size_t i = h->n; i-- > 0;) {
                const char *p = data;
                size_t left = len;
                bool ok = true;
                while (ok && left > 0) {
                        uint32_t part =
                            left > RM_ATTACH_MAX_PAYLOAD ? RM_ATTACH_MAX_PAYLOAD : (uint32_t)left;
                        unsigned char hdr[RM_ATTACH_HEADER];
                        rm_attach_header(hdr, type, part);
                        struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)p, part}};
                        struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
                        ssize_t w = sendmsg(h->clients[i].fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
                        /* A short or refused send would tear the frame: drop the client. */
                        ok = w == (ssize_t)(sizeof(hdr) + part);
                        p += part;
                        left -= part;
                }
                if (!ok)
                        drop(h, i);
        }
}

void rm_hub_close(struct rm_hub *h, const char *bundle)
{
        discard_input(h);
        for (size_t i = 0; i < h->n; i++) {
                close(h->clients[i].fd);
                free(h->clients[i].buf);
        }
        h->n = 0;
        if (h->listen_fd >= 0) {
                close(h->listen_fd);
                h->listen_fd = -1;
                char path[PATH_MAX];
                snprintf(path, sizeof(path), "%s/" RM_ATTACH_SOCKET, bundle);
                unlink(path);
        }
}
