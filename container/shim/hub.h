/* remora-shim's side of the attach socket: the clients attached to the container. */
#ifndef REMORA_SHIM_HUB_H
#define REMORA_SHIM_HUB_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>

#include "remora/shim_attach.h"

#define RM_HUB_MAX_CLIENTS 16

struct rm_hub_client {
        int fd;
        size_t len;         /* bytes of an incomplete input frame in buf */
        unsigned char *buf; /* RM_ATTACH_HEADER + RM_ATTACH_MAX_PAYLOAD, while connected */
};

/* Where client input goes: the container's stdin (a pipe or the terminal), -1 when the
 * container has none; the terminal for resizes, -1 without a tty. */
struct rm_hub {
        int listen_fd;
        int stdin_fd;
        int tty_fd;
        bool stdin_once; /* close stdin when the first client leaves */
        struct rm_hub_client clients[RM_HUB_MAX_CLIENTS];
        size_t n;
};

/* Listen on RM_ATTACH_SOCKET in the current directory. */
int rm_hub_listen(struct rm_hub *h);
/* Add the hub's fds to pf (listener first, then clients); returns how many. */
size_t rm_hub_pollfds(const struct rm_hub *h, struct pollfd *pf);
/* Act on the revents of the fds rm_hub_pollfds put at pf. */
void rm_hub_handle(struct rm_hub *h, const struct pollfd *pf, size_t n);
/* Send output to every client (type RM_ATTACH_STDOUT or RM_ATTACH_STDERR). */
void rm_hub_broadcast(struct rm_hub *h, int type, const char *data, size_t len);
/* The container is gone: close every client and the listener, remove the socket. */
void rm_hub_close(struct rm_hub *h, const char *bundle);

#endif
