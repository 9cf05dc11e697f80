/* The fake streaming backend (see fake_backend.h). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "fake_backend.h"

static int pidfd_open_(pid_t pid)
{
        return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int dev_null(void)
{
        return open("/dev/null", O_RDWR | O_CLOEXEC);
}

static int wait_exit(pid_t pid)
{
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int copy_some(int from, int to)
{
        char buf[8192];
        ssize_t n = read(from, buf, sizeof(buf));
        if (n <= 0)
                return -1;
        for (ssize_t off = 0; off < n;) {
                ssize_t w = write(to, buf + off, (size_t)(n - off));
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return -1;
                off += w;
        }
        return 0;
}

static int fake_exec(void *ctx, const char *container_id, char *const *argv,
                     const struct rm_stream_io *io, int *exit_code, struct rm_error **err)
{
        (void)ctx;
        (void)container_id;
        int master = -1, slave = -1;
        if (io->tty && openpty(&master, &slave, NULL, NULL, NULL) < 0)
                return rm_error_sys(err, "openpty");
        int null = dev_null();
        pid_t pid = fork();
        if (pid < 0) {
                close(null);
                return rm_error_sys(err, "fork");
        }
        if (pid == 0) {
                if (io->tty) {
                        setsid();
                        ioctl(slave, TIOCSCTTY, 0);
                        dup2(slave, 0);
                        dup2(slave, 1);
                        dup2(slave, 2);
                } else {
                        dup2(io->in >= 0 ? io->in : null, 0);
                        dup2(io->out >= 0 ? io->out : null, 1);
                        dup2(io->err >= 0 ? io->err : null, 2);
                }
                execvp(argv[0], argv);
                _exit(127);
        }
        close(null);
        if (slave >= 0)
                close(slave);
        int pfd = pidfd_open_(pid);
        bool exited = false, in_open = io->in >= 0;
        for (;;) {
                struct pollfd p[5] = {
                    {.fd = pfd, .events = POLLIN},
                    {.fd = io->cancel, .events = POLLIN},
                    {.fd = master, .events = POLLIN},
                    {.fd = io->tty && in_open ? io->in : -1, .events = POLLIN},
                    {.fd = io->resize, .events = POLLIN},
                };
                if (exited)
                        p[0].fd = -1;
                if (poll(p, 5, exited ? 100 : -1) <= 0 && exited)
                        break; /* output drained */
                if (p[1].revents) {
                        kill(pid, SIGKILL);
                        if (!exited)
                                *exit_code = wait_exit(pid);
                        break;
                }
                if (p[0].revents) {
                        exited = true;
                        *exit_code = wait_exit(pid);
                        if (master < 0)
                                break;
                }
                if (p[2].revents && (io->out < 0 || copy_some(master, io->out) < 0)) {
                        if (exited)
                                break;
                        close(master); /* EIO: no slave left open, or the client is gone */
                        master = -1;
                }
                /* Resize first: a client sends it before the input it types. */
                if (p[4].revents) {
                        struct rm_term_size ts;
                        if (read(io->resize, &ts, sizeof(ts)) == sizeof(ts)) {
                                struct winsize ws = {.ws_col = ts.width, .ws_row = ts.height};
                                ioctl(master, TIOCSWINSZ, &ws);
                        }
                }
                if (p[3].revents && copy_some(io->in, master) < 0) {
                        /* stdin EOF on a terminal: send ^D as a user would. */
                        ssize_t ignored = write(master, "\x04", 1);
                        (void)ignored;
                        in_open = false;
                }
        }
        if (pfd >= 0)
                close(pfd);
        if (master >= 0)
                close(master);
        return 0;
}

static int fake_attach(void *ctx, const char *container_id, const struct rm_stream_io *io,
                       struct rm_error **err)
{
        (void)ctx;
        (void)container_id;
        (void)err;
        for (;;) {
                struct pollfd p[2] = {{.fd = io->cancel, .events = POLLIN},
                                      {.fd = io->in, .events = POLLIN}};
                poll(p, 2, -1);
                if (p[0].revents)
                        return 0;
                if (p[1].revents && (io->out < 0 || copy_some(io->in, io->out) < 0))
                        return 0;
        }
}

static int fake_port_forward(void *ctx, const char *pod_id, int32_t port, int fd, int cancel,
                             struct rm_error **err)
{
        (void)ctx;
        (void)pod_id;
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                rm_error_sys(err, "connect to port %d", port);
                if (c >= 0)
                        close(c);
                return -1;
        }
        for (;;) {
                struct pollfd p[3] = {{.fd = cancel, .events = POLLIN},
                                      {.fd = fd, .events = POLLIN},
                                      {.fd = c, .events = POLLIN}};
                poll(p, 3, -1);
                if (p[0].revents || (p[1].revents && copy_some(fd, c) < 0) ||
                    (p[2].revents && copy_some(c, fd) < 0))
                        break;
        }
        close(c);
        return 0;
}

const struct rm_stream_backend_ops rm_fake_stream_ops = {
    .exec = fake_exec, .attach = fake_attach, .port_forward = fake_port_forward};
