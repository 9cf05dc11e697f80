/* The streaming server: Exec, Attach and PortForward sessions over HTTP upgrades
 * (WebSocket channel protocols), reached by the single-use URLs the CRI handlers hand out.
 * Containers sit behind struct rm_stream_backend_ops, so the server is tested with a fake. */
#ifndef REMORA_STREAMING_H
#define REMORA_STREAMING_H
#include <stdbool.h>
#include <stdint.h>
#include <json-c/json.h>
#include "remora/error.h"
#include "api.pb-c.h"

/* A terminal size as the client reports it (columns, rows). */
struct rm_term_size {
        uint16_t width;
        uint16_t height;
};

/* The session's side of one Exec or Attach, as file descriptors the backend polls. All are
 * owned by the streaming server: the backend may dup them but must not close them.
 *   in:        read end carrying the client's stdin; EOF when the client closes stdin; -1
 *              when stdin was not requested.
 *   out, err:  write ends for the process's stdout and stderr; -1 when not requested (err is
 *              always -1 with a tty: the terminal merges both into out).
 *   resize:    read end delivering struct rm_term_size records (tty only, else -1); the
 *              backend applies each to the terminal (TIOCSWINSZ on the pty master).
 *   cancel:    becomes readable (EOF) when the client went away: the backend stops the
 *              exec'd process (or detaches, for attach) and returns promptly. */
struct rm_stream_io {
        int in;
        int out;
        int err;
        int resize;
        int cancel;
        bool tty;
};

/* What the streaming server needs from containers. Each call blocks in a session thread
 * of its own and must return once its work is over or io->cancel fires.
 *   exec:         run argv (NULL-terminated) in the container, with a pty when io->tty
 *                 (the backend copies between the pty master and io->in/io->out), and
 *                 store the exit status (or 128+signal) in *exit_code.
 *                 Implementable with `runc exec --console-socket` / plain fds.
 *   attach:       connect io to the container's own stdio (the monitor's attach socket)
 *                 until the container exits or io->cancel fires; detaching must leave the
 *                 container running.
 *   port_forward: connect fd (a socket, owned by the server) to `port` on the pod's
 *                 loopback, inside its network namespace, and copy both ways until either
 *                 side closes; return -1 with err when the connection cannot be made. */
struct rm_stream_backend_ops {
        int (*exec)(void *ctx, const char *container_id, char *const *argv,
                    const struct rm_stream_io *io, int *exit_code, struct rm_error **err);
        int (*attach)(void *ctx, const char *container_id, const struct rm_stream_io *io,
                      struct rm_error **err);
        int (*port_forward)(void *ctx, const char *pod_id, int32_t port, int fd, int cancel,
                            struct rm_error **err);
};

struct rm_streaming;

/* Start the server from the config's "streaming" section (may be NULL: defaults):
 *   address            "host:port" to listen on, default "127.0.0.1:0" (a free port);
 *   token_ttl_seconds  how long an unused URL stays valid, default 60.
 * ops and ctx must outlive the server. */
struct rm_streaming *rm_streaming_open(struct json_object *section,
                                       const struct rm_stream_backend_ops *ops, void *ctx,
                                       struct rm_error **err);
/* Stop listening, end every live session (cancelling its backend call) and wait for them. */
void rm_streaming_close(struct rm_streaming *srv);
/* The address actually bound ("127.0.0.1:40123"), valid until close. */
const char *rm_streaming_address(const struct rm_streaming *srv);

/* Live sessions by kind, for /metrics: exec, attach, port forward. */
void rm_streaming_sessions(struct rm_streaming *srv, size_t *exec, size_t *attach,
                           size_t *portforward);

/* Validate a request, store it under a fresh single-use token that expires after the TTL,
 * and return the URL the client connects to (http://<address>/exec/<token>, /attach/,
 * /portforward/) in *url (malloc'd). Whether the container or pod exists and runs is the
 * caller's check, before this. INVALID_ARGUMENT names the field at fault. */
int rm_streaming_exec_url(struct rm_streaming *srv, const Runtime__V1__ExecRequest *req, char **url,
                          struct rm_error **err);
int rm_streaming_attach_url(struct rm_streaming *srv, const Runtime__V1__AttachRequest *req,
                            char **url, struct rm_error **err);
int rm_streaming_portforward_url(struct rm_streaming *srv,
                                 const Runtime__V1__PortForwardRequest *req, char **url,
                                 struct rm_error **err);
#endif
