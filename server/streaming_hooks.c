/* The streaming server's backend: how Exec, Attach and PortForward sessions reach
 * containers and pods. Not wired yet: every call fails with UNIMPLEMENTED, which the
 * session reports to the client on its error channel. The intended wiring: exec through
 * `runc exec` (--console-socket for a tty), attach through the shim's attach socket,
 * port forward by connecting to the port from inside the pod's network namespace. */
#include "hooks.h"

static int unwired_exec(void *ctx, const char *container_id, char *const *argv,
                        const struct rm_stream_io *io, int *exit_code, struct rm_error **err)
{
        (void)ctx;
        (void)argv;
        (void)io;
        (void)exit_code;
        return rm_error_set(err, RM_UNIMPLEMENTED, "exec in %s: not wired to containers yet",
                            container_id);
}

static int unwired_attach(void *ctx, const char *container_id, const struct rm_stream_io *io,
                          struct rm_error **err)
{
        (void)ctx;
        (void)io;
        return rm_error_set(err, RM_UNIMPLEMENTED, "attach to %s: not wired to containers yet",
                            container_id);
}

static int unwired_port_forward(void *ctx, const char *pod_id, int32_t port, int fd, int cancel,
                                struct rm_error **err)
{
        (void)ctx;
        (void)fd;
        (void)cancel;
        return rm_error_set(err, RM_UNIMPLEMENTED,
                            "port forward to %s port %d: not wired to pods yet", pod_id, port);
}

const struct rm_stream_backend_ops rm__stream_backend = {
    .exec = unwired_exec, .attach = unwired_attach, .port_forward = unwired_port_forward};
