/* The streaming server's backend: how Exec and PortForward sessions reach containers and
 * pods. Exec runs `runc exec` in the foreground with the session's pipes as its stdio (or,
 * for a tty, a pseudo-terminal whose master this thread relays), the command under
 * remora-shim's exec reaper so that a session that ends early leaves no process or
 * zombie in the container; port forward connects to
 * the port from inside the pod's network namespace and copies both ways; attach joins the
 * container's own stdio through its monitor's attach socket. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "hooks.h"
#include "remora/cleanup.h"
#include "remora/clock.h"
#include "remora/exec_reaper.h"
#include "remora/fsutil.h"
#include "remora/log.h"
#include "remora/shim_attach.h"
#include "remora/xalloc.h"

#define MAX_EXEC_ARGS 1024

static bool container_running(struct rm_daemon *d, const char *id, struct rm_error **err)
{
        struct rm_arena *a = rm_arena_new();
        Runtime__V1__ContainerStatusResponse *st =
            rm_containers_status(d->containers, id, false, a, err);
        bool running = st && st->status->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
        if (st && !running)
                rm_error_set(err, RM_FAILED_PRECONDITION, "container %s is not running", id);
        rm_arena_free(a);
        return running;
}

/* A pseudo-terminal pair for a tty exec: runc relays between it (its own stdio) and the
 * container's terminal, and applies our window size to the container's on SIGWINCH. */
static int open_pty(int *master, int *slave, struct rm_error **err)
{
        *master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        char name[64];
        if (*master < 0 || grantpt(*master) < 0 || unlockpt(*master) < 0 ||
            ptsname_r(*master, name, sizeof(name)) != 0) {
                if (*master >= 0)
                        close(*master);
                return rm_error_sys(err, "exec: open a pseudo-terminal");
        }
        *slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (*slave < 0) {
                close(*master);
                return rm_error_sys(err, "exec: open %s", name);
        }
        return 0;
}

static int read_pid_file(const char *path)
{
        cleanup_free char *text = rm_read_file(path, 64, NULL, NULL);
        return text ? atoi(text) : 0;
}

/* Copy what is readable on from to to; false on EOF or error. */
static bool relay(int from, int to)
{
        char buf[32768];
        ssize_t n = read(from, buf, sizeof(buf));
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return true;
        if (n <= 0)
                return false;
        for (ssize_t off = 0; off < n;) {
                ssize_t w = write(to, buf + off, (size_t)(n - off));
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return false;
                off += w;
        }
        return true;
}

/* Read and drop what is readable on fd; false on EOF or error. */
static bool discard(int fd)
{
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof(buf));
        return n > 0 || (n < 0 && (errno == EINTR || errno == EAGAIN));
}

struct exec_run {
        pid_t runc;
        int pidfd;  /* of runc */
        int master; /* tty only, else -1 */
        int ctl;    /* our end of the exec reaper's control pipe */
        const char *pid_file;
};

/* Relay until runc exits. When the client goes away, closing the reaper's control pipe
 * makes it kill and reap everything the exec started, and runc then exits; runc is
 * SIGKILLed only if that takes longer than the grace. */
static void exec_loop(struct exec_run *r, const struct rm_stream_io *io)
{
        int in = io->tty ? io->in : -1; /* without a tty the process reads io->in itself */
        int resize = io->tty ? io->resize : -1;
        int master = r->master;
        long long kill_at = 0;
        for (;;) {
                struct pollfd p[5] = {{.fd = r->pidfd, .events = POLLIN},
                                      {.fd = kill_at ? -1 : io->cancel, .events = POLLIN},
                                      {.fd = master, .events = POLLIN},
                                      {.fd = in, .events = POLLIN},
                                      {.fd = resize, .events = POLLIN}};
                int wait_ms = -1;
                if (kill_at) {
                        long long left = kill_at - rm_mono_ms();
                        if (left <= 0) {
                                int pid = read_pid_file(r->pid_file);
                                if (pid > 1)
                                        kill(pid, SIGKILL);
                                kill(r->runc, SIGKILL);
                                left = 1000;
                                kill_at = rm_mono_ms() + 1000;
                        }
                        wait_ms = (int)left;
                }
                if (poll(p, 5, wait_ms) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (p[1].revents) {
                        close(r->ctl);
                        r->ctl = -1;
                        kill_at = rm_mono_ms() + RM_OCI_EXEC_STOP_GRACE_MS;
                        in = -1;
                        resize = -1;
                }
                /* EIO once the terminal's last user is gone: runc is about to exit. Once the
                 * client is gone the terminal is still drained, so runc never blocks on it. */
                if (p[2].revents &&
                    (kill_at ? !discard(master) : io->out < 0 || !relay(master, io->out)))
                        master = -1;
                if (p[3].revents && !relay(in, r->master)) {
                        /* The client closed stdin: end of input for the terminal. */
                        static const char eot = 4;
                        if (write(r->master, &eot, 1) < 0)
                                rm_log_debug("exec: EOT: %s", strerror(errno));
                        in = -1;
                }
                if (p[4].revents) {
                        struct rm_term_size sz;
                        if (read(resize, &sz, sizeof(sz)) == (ssize_t)sizeof(sz)) {
                                struct winsize ws = {.ws_col = sz.width, .ws_row = sz.height};
                                ioctl(r->master, TIOCSWINSZ, &ws);
                                kill(r->runc, SIGWINCH);
                        } else {
                                resize = -1;
                        }
                }
                if (p[0].revents)
                        break;
        }
}

/* remora-shim for the exec reaper (remora/exec_reaper.h): [0] the binary and [1] the
 * control pipe's read end, for runc to hand on as fds 3 and 4; [2] our write end. */
static int reaper_fds(const char *shim, int fds[3], struct rm_error **err)
{
        int p[2];
        fds[0] = open(shim, O_RDONLY | O_CLOEXEC);
        if (fds[0] < 0)
                return rm_error_sys(err, "exec: open the exec reaper %s", shim);
        if (pipe2(p, O_CLOEXEC) < 0) {
                close(fds[0]);
                return rm_error_sys(err, "exec: pipe for the exec reaper");
        }
        fds[1] = p[0];
        fds[2] = p[1];
        return 0;
}

static void close_reaper_fds(int fds[3])
{
        for (int i = 0; i < 3; i++)
                close(fds[i]);
}

static int stream_exec(void *ctx, const char *container_id, char *const *argv,
                       const struct rm_stream_io *io, int *exit_code, struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        if (!container_running(d, container_id, err))
                return -1;
        cleanup_free char *dir = xasprintf("%s/exec/stream-XXXXXX", d->cfg->state);
        if (mkdtemp(dir) == NULL)
                return rm_error_sys(err, "exec: scratch directory under %s/exec", d->cfg->state);
        cleanup_free char *pid_file = xasprintf("%s/pid", dir);
        cleanup_free char *log = xasprintf("%s/runc.log", dir);
        const char *args[MAX_EXEC_ARGS + 24];
        size_t n = 0;
        const struct rm_oci *oci = rm_runtimes_owner(d->runtimes, container_id)->oci;
        const char *pre[] = {oci->binary,  "--root",       oci->root,        "--log",
                             log,          "--log-format", "json",           "exec",
                             "--pid-file", pid_file,       "--preserve-fds", "2"};
        for (size_t i = 0; i < sizeof(pre) / sizeof(pre[0]); i++)
                args[n++] = pre[i];
        if (io->tty)
                args[n++] = "--tty";
        args[n++] = container_id;
        args[n++] = RM_EXEC_REAPER_PATH;
        args[n++] = RM_EXEC_REAPER_FLAG;
        args[n++] = "--";
        for (size_t i = 0; argv[i]; i++) {
                if (i >= MAX_EXEC_ARGS) {
                        rm_remove_tree(dir, NULL);
                        return rm_error_set(err, RM_INVALID_ARGUMENT, "cmd has more than %d words",
                                            MAX_EXEC_ARGS);
                }
                args[n++] = argv[i];
        }
        args[n] = NULL;

        int master = -1, slave = -1;
        cleanup_close int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        int reaper[3] = {-1, -1, -1};
        if (reaper_fds(d->helpers.shim, reaper, err) < 0) {
                rm_remove_tree(dir, NULL);
                return -1;
        }
        if (io->tty && open_pty(&master, &slave, err) < 0) {
                close_reaper_fds(reaper);
                rm_remove_tree(dir, NULL);
                return -1;
        }
        int fd0 = io->tty ? slave : io->in >= 0 ? io->in : devnull;
        int fd1 = io->tty ? slave : io->out >= 0 ? io->out : devnull;
        int fd2 = io->tty ? slave : io->err >= 0 ? io->err : devnull;
        pid_t pid = fork();
        if (pid == 0) {
                /* Only system calls from here on: the daemon has threads. Every source is
                 * first moved above the targets 0..4, so no dup2 clobbers another. */
                int src[5] = {fd0, fd1, fd2, reaper[0], reaper[1]};
                for (int i = 0; i < 5; i++)
                        if ((src[i] = fcntl(src[i], F_DUPFD, 16)) < 0)
                                _exit(127);
                for (int i = 0; i < 5; i++)
                        if (dup2(src[i], i) < 0)
                                _exit(127);
                close_range(5, ~0U, 0);
                if (io->tty) {
                        setsid();
                        ioctl(0, TIOCSCTTY, 0);
                }
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                execv(args[0], (char *const *)args);
                _exit(127);
        }
        int saved = errno;
        if (slave >= 0)
                close(slave);
        close(reaper[0]);
        close(reaper[1]);
        if (pid < 0) {
                if (master >= 0)
                        close(master);
                close(reaper[2]);
                rm_remove_tree(dir, NULL);
                return rm_error_sys_errno(err, saved, "exec: fork");
        }
        struct exec_run r = {.runc = pid,
                             .pidfd = (int)syscall(SYS_pidfd_open, pid, 0),
                             .master = master,
                             .ctl = reaper[2],
                             .pid_file = pid_file};
        if (r.pidfd >= 0)
                exec_loop(&r, io); /* else (a kernel before 5.3): no relay, just the wait */
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        /* What the terminal still holds after the process ended. */
        if (master >= 0 && io->out >= 0) {
                fcntl(master, F_SETFL, O_NONBLOCK);
                while (relay(master, io->out))
                        ;
        }
        if (master >= 0)
                close(master);
        if (r.pidfd >= 0)
                close(r.pidfd);
        if (r.ctl >= 0)
                close(r.ctl);
        rm_remove_tree(dir, NULL);
        *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return 0;
}

/* ---- port forward ---- */

struct dial {
        const char *netns; /* NULL: the host's (a host-network pod) */
        int32_t port;
        int fd;
        int err;
};

/* Connect from inside the pod's network namespace; the socket stays in it wherever it is
 * used afterwards. A thread of its own joins the namespace, so no other thread moves. */
static void *dial_thread(void *arg)
{
        struct dial *job = arg;
        if (job->netns) {
                int ns = open(job->netns, O_RDONLY | O_CLOEXEC);
                if (ns < 0 || setns(ns, CLONE_NEWNET) < 0) {
                        job->err = errno;
                        if (ns >= 0)
                                close(ns);
                        return NULL;
                }
                close(ns);
        }
        struct sockaddr_in v4 = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)job->port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        struct sockaddr_in6 v6 = {.sin6_family = AF_INET6,
                                  .sin6_port = htons((uint16_t)job->port),
                                  .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&v4, sizeof(v4)) == 0) {
                job->fd = fd;
                return NULL;
        }
        job->err = errno;
        if (fd >= 0)
                close(fd);
        fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&v6, sizeof(v6)) == 0) {
                job->fd = fd;
                return NULL;
        }
        if (fd >= 0)
                close(fd);
        return NULL;
}

static int stream_port_forward(void *ctx, const char *pod_id, int32_t port, int fd, int cancel,
                               struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        if (port <= 0 || port > 65535)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "port %d is not a TCP port", port);
        struct rm_arena *a = rm_arena_new();
        struct rm_sandbox_view v;
        if (rm_sandbox_view(d->sandboxes, pod_id, a, &v, err) < 0) {
                rm_arena_free(a);
                return -1;
        }
        if (!v.ready) {
                rm_arena_free(a);
                return rm_error_set(err, RM_FAILED_PRECONDITION, "pod sandbox %s is not ready",
                                    pod_id);
        }
        struct dial job = {.netns = v.netns_path, .port = port, .fd = -1};
        pthread_t t;
        if (pthread_create(&t, NULL, dial_thread, &job) != 0) {
                rm_arena_free(a);
                return rm_error_set(err, RM_INTERNAL, "port forward: cannot start a thread");
        }
        pthread_join(t, NULL);
        rm_arena_free(a);
        if (job.fd < 0)
                return rm_error_sys_errno(err, job.err, "connect to port %d in pod %s", port,
                                          pod_id);
        cleanup_close int sock = job.fd;
        bool client_open = true;
        for (;;) {
                struct pollfd p[3] = {{.fd = cancel, .events = POLLIN},
                                      {.fd = client_open ? fd : -1, .events = POLLIN},
                                      {.fd = sock, .events = POLLIN}};
                if (poll(p, 3, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (p[0].revents)
                        break;
                if (p[1].revents && !relay(fd, sock)) {
                        /* The client is done sending; the answer may still come. */
                        shutdown(sock, SHUT_WR);
                        client_open = false;
                }
                if (p[2].revents && !relay(sock, fd))
                        break;
        }
        return 0;
}

/* ---- attach ---- */

static bool send_frame(int fd, int type, const char *data, uint32_t len)
{
        unsigned char hdr[RM_ATTACH_HEADER];
        rm_attach_header(hdr, type, len);
        struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)data, len}};
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
        size_t want = sizeof(hdr) + len;
        ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (w == (ssize_t)want)
                return true;
        if (w < 0)
                return false;
        /* A short send: the rest, byte-exact. */
        unsigned char *all = xmalloc(want);
        memcpy(all, hdr, sizeof(hdr));
        if (len)
                memcpy(all + sizeof(hdr), data, len);
        bool ok = true;
        for (size_t off = (size_t)w; ok && off < want;) {
                ssize_t n = send(fd, all + off, want - off, MSG_NOSIGNAL);
                ok = n > 0;
                off += ok ? (size_t)n : 0;
        }
        free(all);
        return ok;
}

/* The monitor's output frames, to the session's stdout and stderr; false at the end. */
struct frames {
        size_t len;
        unsigned char buf[RM_ATTACH_HEADER + RM_ATTACH_MAX_PAYLOAD];
};

static bool output(int sock, struct frames *f, const struct rm_stream_io *io)
{
        ssize_t n = read(sock, f->buf + f->len, sizeof(f->buf) - f->len);
        if (n < 0 && errno == EINTR)
                return true;
        if (n <= 0)
                return false;
        f->len += (size_t)n;
        size_t off = 0;
        uint32_t len;
        int whole;
        while ((whole = rm_attach_complete(f->buf + off, f->len - off, &len)) > 0) {
                int type = f->buf[off];
                int to = type == RM_ATTACH_STDERR ? io->err : io->out;
                const unsigned char *p = f->buf + off + RM_ATTACH_HEADER;
                for (uint32_t done = 0; to >= 0 && done < len;) {
                        ssize_t w = write(to, p + done, len - done);
                        if (w < 0 && errno == EINTR)
                                continue;
                        if (w <= 0)
                                return false;
                        done += (uint32_t)w;
                }
                off += RM_ATTACH_HEADER + len;
        }
        if (whole < 0)
                return false; /* not the shim's protocol */
        memmove(f->buf, f->buf + off, f->len - off);
        f->len -= off;
        return true;
}

static int stream_attach(void *ctx, const char *container_id, const struct rm_stream_io *io,
                         struct rm_error **err)
{
        struct rm_daemon *d = ctx;
        if (!container_running(d, container_id, err))
                return -1;
        cleanup_free char *bundle = xasprintf("%s/containers/%s", d->cfg->state, container_id);
        cleanup_close int sock = rm_shim_attach(bundle, err);
        if (sock < 0)
                return -1;
        cleanup_free struct frames *f = xzalloc(sizeof(*f));
        int in = io->in, resize = io->resize;
        for (;;) {
                struct pollfd p[4] = {{.fd = io->cancel, .events = POLLIN},
                                      {.fd = sock, .events = POLLIN},
                                      {.fd = in, .events = POLLIN},
                                      {.fd = resize, .events = POLLIN}};
                if (poll(p, 4, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (p[0].revents)
                        break; /* the client left: detach, the container goes on */
                if (p[1].revents && !output(sock, f, io))
                        break; /* the container exited */
                if (p[2].revents) {
                        char buf[32768];
                        ssize_t n = read(in, buf, sizeof(buf));
                        if (n > 0) {
                                if (!send_frame(sock, RM_ATTACH_STDIN, buf, (uint32_t)n))
                                        break;
                        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                                send_frame(sock, RM_ATTACH_CLOSE_STDIN, NULL, 0);
                                in = -1;
                        }
                }
                if (p[3].revents) {
                        struct rm_term_size sz;
                        if (read(resize, &sz, sizeof(sz)) == (ssize_t)sizeof(sz)) {
                                char b[4] = {(char)(sz.width >> 8), (char)sz.width,
                                             (char)(sz.height >> 8), (char)sz.height};
                                send_frame(sock, RM_ATTACH_RESIZE, b, 4);
                        } else {
                                resize = -1;
                        }
                }
        }
        return 0;
}

const struct rm_stream_backend_ops rm__stream_backend = {
    .exec = stream_exec, .attach = stream_attach, .port_forward = stream_port_forward};

/* ---- the CRI calls that hand out URLs ---- */

#include "handlers.h"

RM_HANDLER(exec)
{
        const Runtime__V1__ExecRequest *in = (const Runtime__V1__ExecRequest *)req;
        struct rm_daemon *d = call->daemon;
        cleanup_free char *id =
            rm_containers_resolve(d->containers, in->container_id ? in->container_id : "", err);
        if (id == NULL || !container_running(d, id, err))
                return -1;
        Runtime__V1__ExecRequest copy = *in;
        copy.container_id = id;
        char *url = NULL;
        if (rm_streaming_exec_url(d->streaming, &copy, &url, err) < 0)
                return -1;
        Runtime__V1__ExecResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__exec_response__init(r);
        r->url = rm_arena_strdup(call->arena, url);
        free(url);
        *resp = &r->base;
        return 0;
}

RM_HANDLER(port_forward)
{
        const Runtime__V1__PortForwardRequest *in = (const Runtime__V1__PortForwardRequest *)req;
        struct rm_daemon *d = call->daemon;
        cleanup_free char *id =
            rm_sandbox_resolve(d->sandboxes, in->pod_sandbox_id ? in->pod_sandbox_id : "", err);
        if (id == NULL)
                return -1;
        struct rm_arena *a = rm_arena_new();
        struct rm_sandbox_view v;
        int rc = rm_sandbox_view(d->sandboxes, id, a, &v, err);
        bool ready = rc == 0 && v.ready;
        rm_arena_free(a);
        if (rc < 0)
                return -1;
        if (!ready)
                return rm_error_set(err, RM_FAILED_PRECONDITION, "pod sandbox %s is not ready", id);
        Runtime__V1__PortForwardRequest copy = *in;
        copy.pod_sandbox_id = id;
        char *url = NULL;
        if (rm_streaming_portforward_url(d->streaming, &copy, &url, err) < 0)
                return -1;
        Runtime__V1__PortForwardResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__port_forward_response__init(r);
        r->url = rm_arena_strdup(call->arena, url);
        free(url);
        *resp = &r->base;
        return 0;
}

RM_HANDLER(attach)
{
        const Runtime__V1__AttachRequest *in = (const Runtime__V1__AttachRequest *)req;
        struct rm_daemon *d = call->daemon;
        cleanup_free char *id =
            rm_containers_resolve(d->containers, in->container_id ? in->container_id : "", err);
        if (id == NULL || !container_running(d, id, err))
                return -1;
        Runtime__V1__AttachRequest copy = *in;
        copy.container_id = id;
        char *url = NULL;
        if (rm_streaming_attach_url(d->streaming, &copy, &url, err) < 0)
                return -1;
        Runtime__V1__AttachResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__attach_response__init(r);
        r->url = rm_arena_strdup(call->arena, url);
        free(url);
        *resp = &r->base;
        return 0;
}
