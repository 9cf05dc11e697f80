/* remora-shim's side of the attach socket: the clients attached to the container. */
#ifndef REMORA_SHIM_HUB_H
#define REMORA_SHIM_HUB_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>

#include "remora/shim_attach.h"

#define RM_HUB_MAX_CLIENTS 16
/* Entries rm_hub_pollfds fills at most: the listener, the container's stdin, the clients. */
#define RM_HUB_MAX_POLLFDS (2 + RM_HUB_MAX_CLIENTS)
/* Input for the container's stdin held while it does not read: past this, the clients are
 * not read from (the attached client is held back) until the container takes some. */
#define RM_HUB_STDIN_MAX (256u << 10)
/* A client held back this long without the container taking any input is cut off, so that
 * a client that left (or a daemon session blocked writing to us) is not held forever. */
#define RM_HUB_STDIN_STALL_MS 10000

struct rm_hub_client {
        int fd;
        size_t len;         /* bytes of an incomplete input frame in buf */
        unsigned char *buf; /* RM_ATTACH_HEADER + RM_ATTACH_MAX_PAYLOAD, while connected */
};

/* Where client input goes: the container's stdin (a pipe or the terminal, non-blocking),
 * -1 when the container has none; the terminal for resizes, -1 without a tty. The shim
 * never waits for the container to read its stdin: what it does not take at once waits in
 * in_buf, and while that holds RM_HUB_STDIN_MAX bytes no client is read from. */
struct rm_hub {
        int listen_fd;
        int stdin_fd;
        int tty_fd;
        bool stdin_once;       /* close stdin when the first client leaves */
        bool in_close;         /* close stdin once in_buf is written */
        unsigned char *in_buf; /* allocated while input waits */
        size_t in_off, in_end; /* the waiting bytes: in_buf[in_off, in_end) */
        long long progress_ms; /* when stdin last took input, or input began to wait */
        unsigned stall_ms;     /* 0: RM_HUB_STDIN_STALL_MS */
        struct rm_hub_client clients[RM_HUB_MAX_CLIENTS];
        size_t n;
};

/* Listen on RM_ATTACH_SOCKET in the current directory. */
int rm_hub_listen(struct rm_hub *h);
/* Add the hub's fds to pf (listener, stdin while input waits, then the clients that may
 * be read from); returns how many (at most RM_HUB_MAX_POLLFDS). Unused entries are -1. */
size_t rm_hub_pollfds(const struct rm_hub *h, struct pollfd *pf);
/* How long poll may wait (ms) before rm_hub_handle must look at a stall; -1: no limit. */
int rm_hub_poll_timeout(const struct rm_hub *h);
/* Act on the revents of the fds rm_hub_pollfds put at pf (also after a poll timeout). */
void rm_hub_handle(struct rm_hub *h, const struct pollfd *pf, size_t n);
/* Bytes of input waiting for the container to read its stdin. */
size_t rm_hub_stdin_pending(const struct rm_hub *h);
/* The container's stdin is gone (its terminal closed): drop what waits for it. */
void rm_hub_stdin_lost(struct rm_hub *h);
/* Send output to every client (type RM_ATTACH_STDOUT or RM_ATTACH_STDERR). */
void rm_hub_broadcast(struct rm_hub *h, int type, const char *data, size_t len);
/* The container is gone: close every client and the listener, remove the socket. */
void rm_hub_close(struct rm_hub *h, const char *bundle);

#endif
