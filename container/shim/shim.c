/* remora-shim: the monitor of one container (or pod infra process).
 *
 * remorad starts it detached (double fork, setsid), so the daemon is never the parent of a
 * container. The shim becomes the child subreaper, runs `runc create` with the container's
 * stdio going to pipes it owns, reports "ok <container pid>" or "error <message>" on the
 * sync fd, then copies the container's output into the CRI log file, reaps the container's
 * init when it exits, writes the exit file atomically and exits. It never depends on the
 * daemon being alive after the report.
 *
 * While the container runs, the shim listens on <bundle>/ctl.sock (0600) for one-line
 * commands from the daemon, one per connection: "reopen-log" closes the CRI log file and
 * opens it again at its path (kubelet's rotation renames the file first), then answers
 * "ok" or "error <message>". On <bundle>/attach.sock (see attach.h) it shares the
 * container's output and takes its input; with a tty, runc hands the terminal's master
 * over <bundle>/console.sock during create and the shim relays it.
 *
 * Run as `remora-shim --exec-reaper -- CMD...` it is instead the first process of an
 * exec inside a container (exec_reaper.c).
 *
 * Only libc: it runs once per container, so it must stay small. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cri_log.h"
#include "exec_reaper.h"
#include "hub.h"
#include "remora/exec_reaper.h"

#define CTL_NAME     "ctl.sock"
#define CONSOLE_NAME "console.sock"

struct opts {
        const char *runtime, *root, *id, *bundle, *pid_file, *exit_file, *log_path, *shim_log;
        int sync_fd;
        bool tty, stdin, stdin_once, detach;
};

static void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void diag(const char *fmt, ...)
{
        char line[1024], ts[48];
        rm_cri_timestamp(ts, sizeof(ts));
        int n = snprintf(line, sizeof(line), "%s remora-shim[%d] ", ts, (int)getpid());
        va_list ap;
        va_start(ap, fmt);
        n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
        va_end(ap);
        if (n > (int)sizeof(line) - 2)
                n = (int)sizeof(line) - 2;
        line[n++] = '\n';
        if (write(2, line, (size_t)n) < 0)
                return;
}

static void report(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(int fd, const char *fmt, ...)
{
        if (fd < 0)
                return;
        char line[4096];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
        va_end(ap);
        if (n > (int)sizeof(line) - 2)
                n = (int)sizeof(line) - 2;
        for (int i = 0; i < n; i++)
                if (line[i] == '\n')
                        line[i] = ' ';
        line[n++] = '\n';
        if (write(fd, line, (size_t)n) < 0)
                diag("sync pipe: %s", strerror(errno));
}

static int parse_args(int argc, char **argv, struct opts *o)
{
        static const struct option longopts[] = {
            {"runtime", required_argument, NULL, 'r'},  {"root", required_argument, NULL, 'R'},
            {"id", required_argument, NULL, 'i'},       {"bundle", required_argument, NULL, 'b'},
            {"pid-file", required_argument, NULL, 'p'}, {"exit-file", required_argument, NULL, 'e'},
            {"log-path", required_argument, NULL, 'l'}, {"shim-log", required_argument, NULL, 's'},
            {"sync-fd", required_argument, NULL, 'S'},  {"tty", no_argument, NULL, 't'},
            {"stdin", no_argument, NULL, 'I'},          {"stdin-once", no_argument, NULL, 'O'},
            {"detach", no_argument, NULL, 'D'},         {NULL, 0, NULL, 0},
        };
        memset(o, 0, sizeof(*o));
        o->sync_fd = -1;
        int c;
        while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
                switch (c) {
                case 'r':
                        o->runtime = optarg;
                        break;
                case 'R':
                        o->root = optarg;
                        break;
                case 'i':
                        o->id = optarg;
                        break;
                case 'b':
                        o->bundle = optarg;
                        break;
                case 'p':
                        o->pid_file = optarg;
                        break;
                case 'e':
                        o->exit_file = optarg;
                        break;
                case 'l':
                        o->log_path = optarg;
                        break;
                case 's':
                        o->shim_log = optarg;
                        break;
                case 'D':
                        o->detach = true;
                        break;
                case 'S':
                        o->sync_fd = atoi(optarg);
                        break;
                case 't':
                        o->tty = true;
                        break;
                case 'I':
                        o->stdin = true;
                        break;
                case 'O':
                        o->stdin_once = true;
                        break;
                default:
                        return -1;
                }
        }
        if (!o->runtime || !o->root || !o->id || !o->bundle || !o->pid_file || !o->exit_file)
                return -1;
        return 0;
}

/* The message of the last error record in runc's JSON log ("msg":"..."), unescaped. */
static void runc_log_error(const char *path, char *out, size_t len)
{
        snprintf(out, len, "runc create failed (no message in %.1000s)", path);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        static char text[65536];
        ssize_t n = read(fd, text, sizeof(text) - 1);
        close(fd);
        if (n <= 0)
                return;
        text[n] = '\0';
        char *last = NULL;
        for (char *p = strstr(text, "\"level\":\"error\""); p;
             p = strstr(p + 1, "\"level\":\"error\""))
                last = p;
        if (!last)
                return;
        char *line_start = last;
        while (line_start > text && line_start[-1] != '\n')
                line_start--;
        char *m = strstr(line_start, "\"msg\":\"");
        if (!m)
                return;
        m += 7;
        size_t j = 0;
        for (; *m && *m != '"' && j + 1 < len; m++) {
                if (*m == '\\' && m[1]) {
                        m++;
                        out[j++] = *m == 'n' ? ' ' : *m == 't' ? ' ' : *m;
                } else {
                        out[j++] = *m;
                }
        }
        out[j] = '\0';
}

static int read_pid(const char *path)
{
        char buf[32] = {0};
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -1;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        return n > 0 ? atoi(buf) : -1;
}

/* Fork and exec runc create with the container's stdio; returns its wait status. */
static int run_create(const struct opts *o, int in, int out, int err_fd, const sigset_t *oldmask)
{
        char log[PATH_MAX];
        snprintf(log, sizeof(log), "%s/runc-create.log", o->bundle);
        unlink(log);
        /* The console socket is named relative to the bundle, runc's working directory: its
         * full path may not fit in sun_path. */
        const char *argv[] = {o->runtime, "--root",       o->root,      "--log",
                              log,        "--log-format", "json",       "create",
                              "--bundle", o->bundle,      "--pid-file", o->pid_file,
                              o->id,      NULL,           NULL,         NULL};
        if (o->tty) {
                argv[12] = "--console-socket";
                argv[13] = CONSOLE_NAME;
                argv[14] = o->id;
        }
        pid_t pid = fork();
        if (pid < 0)
                return -1;
        if (pid == 0) {
                if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err_fd, 2) < 0 ||
                    chdir(o->bundle) < 0)
                        _exit(127);
                /* runc needs its stdio only (the console socket is a path). */
                close_range(3, ~0U, 0);
                sigprocmask(SIG_SETMASK, oldmask, NULL);
                signal(SIGPIPE, SIG_DFL);
                execv(o->runtime, (char *const *)argv);
                _exit(127);
        }
        int ws;
        while (waitpid(pid, &ws, 0) < 0) {
                if (errno != EINTR)
                        return -1;
        }
        return ws;
}

struct exit_record {
        int pid, status;
        struct timespec at;
};

/* Write the exit file: temp file, fsync, rename, fsync the directory, so a reader sees
 * either nothing or the whole record even if the machine dies in between. */
static int write_exit_file(const char *path, const struct exit_record *r)
{
        char tmp[PATH_MAX], ts[48], body[512];
        struct tm tm;
        gmtime_r(&r->at.tv_sec, &tm);
        size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(ts + n, sizeof(ts) - n, ".%09ldZ", r->at.tv_nsec);
        int code = WIFEXITED(r->status) ? WEXITSTATUS(r->status) : 128 + WTERMSIG(r->status);
        int sig = WIFSIGNALED(r->status) ? WTERMSIG(r->status) : 0;
        int len =
            snprintf(body, sizeof(body),
                     "{\"pid\":%d,\"exit_code\":%d,\"signal\":%d,\"finished_at\":\"%s\","
                     "\"finished_at_ns\":%lld}\n",
                     r->pid, code, sig, ts, (long long)r->at.tv_sec * 1000000000LL + r->at.tv_nsec);
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -1;
        if (write(fd, body, (size_t)len) != len || fsync(fd) < 0) {
                close(fd);
                unlink(tmp);
                return -1;
        }
        close(fd);
        if (rename(tmp, path) < 0) {
                unlink(tmp);
                return -1;
        }
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
                *slash = '\0';
                int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dfd >= 0) {
                        fsync(dfd);
                        close(dfd);
                }
        }
        return 0;
}

/* Copy what the container wrote on one stream to the log and to attached clients; false
 * at its end (EIO on a terminal whose last user is gone counts as the end). */
static bool pump(int *fd, int logfd, struct rm_cri_stream *s, struct rm_hub *hub, int type)
{
        char buf[65536];
        ssize_t n = read(*fd, buf, sizeof(buf));
        if (n > 0) {
                rm_cri_feed(logfd, s, buf, (size_t)n);
                rm_hub_broadcast(hub, type, buf, (size_t)n);
                return true;
        }
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return false;
        rm_cri_flush(logfd, s);
        close(*fd);
        *fd = -1;
        return false;
}

/* A listening socket named name in the current directory (the bundle), 0600. */
static int listen_here(const char *name)
{
        unlink(name);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", name);
        mode_t old = umask(0077);
        int rc = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        umask(old);
        if (rc < 0 || listen(fd, 1) < 0) {
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        return fd;
}

/* The terminal's master, which runc sent on the console socket during create. */
static int receive_console(int lfd)
{
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
                return -1;
        char byte[256];
        char control[CMSG_SPACE(sizeof(int))];
        struct iovec iov = {byte, sizeof(byte)};
        struct msghdr m = {.msg_iov = &iov,
                           .msg_iovlen = 1,
                           .msg_control = control,
                           .msg_controllen = sizeof(control)};
        ssize_t n = recvmsg(c, &m, MSG_CMSG_CLOEXEC);
        close(c);
        struct cmsghdr *cm = n >= 0 ? CMSG_FIRSTHDR(&m) : NULL;
        if (cm == NULL || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                return -1;
        int fd;
        memcpy(&fd, CMSG_DATA(cm), sizeof(fd));
        return fd;
}

/* Bind the control socket in the bundle. The path is made relative (chdir) because a
 * bundle path may be longer than sun_path allows. */
static int ctl_listen(void)
{
        int fd = listen_here(CTL_NAME);
        if (fd >= 0)
                fcntl(fd, F_SETFL, O_NONBLOCK);
        return fd;
}

static int reopen_log(const char *path, int *logfd, char *msg, size_t len)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (fd < 0) {
                snprintf(msg, len, "open %s: %s", path, strerror(errno));
                return -1;
        }
        if (*logfd >= 0)
                close(*logfd);
        *logfd = fd;
        return 0;
}

/* Serve one connection: read a command line (a client gets a second to send it), act,
 * answer. Log lines keep flowing through the pipes' buffers meanwhile. */
static void ctl_serve(int lfd, const struct opts *o, int *logfd)
{
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
                return;
        struct timeval tv = {.tv_sec = 1};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        char cmd[128];
        size_t n = 0;
        while (n < sizeof(cmd) - 1) {
                ssize_t r = read(c, cmd + n, sizeof(cmd) - 1 - n);
                if (r <= 0)
                        break;
                n += (size_t)r;
                if (memchr(cmd, '\n', n))
                        break;
        }
        cmd[n] = '\0';
        char *nl = strchr(cmd, '\n');
        if (nl)
                *nl = '\0';
        char reply[1024] = "ok";
        if (strcmp(cmd, "reopen-log") == 0) {
                char msg[900];
                if (!o->log_path)
                        snprintf(reply, sizeof(reply), "error the container has no log file");
                else if (reopen_log(o->log_path, logfd, msg, sizeof(msg)) < 0)
                        snprintf(reply, sizeof(reply), "error %s", msg);
                else
                        diag("reopened %s", o->log_path);
        } else {
                snprintf(reply, sizeof(reply), "error unknown command \"%.64s\"", cmd);
        }
        size_t len = strlen(reply);
        reply[len++] = '\n';
        if (write(c, reply, len) < 0)
                diag("control reply: %s", strerror(errno));
        close(c);
}

int main(int argc, char **argv)
{
        if (argc > 1 && strcmp(argv[1], RM_EXEC_REAPER_FLAG) == 0)
                return rm_exec_reaper_main(argc, argv);
        struct opts o;
        if (parse_args(argc, argv, &o) < 0) {
                fprintf(stderr, "usage: remora-shim --runtime PATH --root DIR --id ID --bundle DIR "
                                "--pid-file PATH --exit-file PATH [--log-path PATH] "
                                "[--shim-log PATH] [--sync-fd N] [--tty] [--stdin] "
                                "[--stdin-once] [--detach]\n");
                return 2;
        }
        /* --detach: the process the daemon spawned exits at once and a child goes on, so
         * the shim is not the daemon's child (it outlives a restart and is reaped by init
         * or a subreaper). Forking here, in a small static process, is much cheaper than
         * a fork of the daemon. */
        if (o.detach) {
                pid_t child = fork();
                if (child < 0) {
                        report(o.sync_fd, "error fork: %s", strerror(errno));
                        return 1;
                }
                if (child > 0)
                        _exit(0);
        }
        /* The sync fd was handed on without O_CLOEXEC; runc and the container must not
         * inherit it, or the daemon would never see it close. */
        if (o.sync_fd >= 0)
                fcntl(o.sync_fd, F_SETFD, FD_CLOEXEC);
        if (o.shim_log) {
                int fd = open(o.shim_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
                if (fd >= 0) {
                        dup2(fd, 2);
                        close(fd);
                }
        }
        report(o.sync_fd, "shim %d", (int)getpid());

        /* Orphans of the container (its init above all, once runc create exits) are
         * reparented to us, so we can reap them and read the exit status. */
        if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
                report(o.sync_fd, "error subreaper: %s", strerror(errno));
                return 1;
        }
        signal(SIGPIPE, SIG_IGN);
        sigset_t mask, oldmask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, &oldmask);
        sigset_t chld;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
        if (sfd < 0) {
                report(o.sync_fd, "error signalfd: %s", strerror(errno));
                return 1;
        }

        /* Sockets are made in the bundle, by relative names (a full path may not fit in
         * sun_path); the shim stays there. */
        if (chdir(o.bundle) < 0) {
                report(o.sync_fd, "error bundle %s: %s", o.bundle, strerror(errno));
                return 1;
        }
        int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        int outp[2] = {-1, -1}, errp[2] = {-1, -1}, inp[2] = {-1, -1};
        int console = -1, master = -1;
        if (!o.tty && (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 ||
                       (o.stdin && pipe2(inp, O_CLOEXEC) < 0))) {
                report(o.sync_fd, "error pipes: %s", strerror(errno));
                return 1;
        }
        if (o.tty && (console = listen_here(CONSOLE_NAME)) < 0) {
                report(o.sync_fd, "error console socket: %s", strerror(errno));
                return 1;
        }
        int logfd = -1;
        if (o.log_path) {
                logfd = open(o.log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
                if (logfd < 0) {
                        report(o.sync_fd, "error open log %s: %s", o.log_path, strerror(errno));
                        return 1;
                }
        }

        int ws = run_create(&o, inp[0] >= 0 ? inp[0] : devnull, outp[1] >= 0 ? outp[1] : devnull,
                            errp[1] >= 0 ? errp[1] : devnull, &oldmask);
        for (int *fd = (int[]){outp[1], errp[1], inp[0], devnull}, i = 0; i < 4; i++)
                if (fd[i] >= 0)
                        close(fd[i]);
        if (console >= 0) {
                if (ws != -1 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0)
                        master = receive_console(console);
                close(console);
                unlink(CONSOLE_NAME);
        }
        if (ws == -1 || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
                char msg[2048];
                char log[PATH_MAX];
                snprintf(log, sizeof(log), "%s/runc-create.log", o.bundle);
                if (ws == -1)
                        snprintf(msg, sizeof(msg), "run %s: %s", o.runtime, strerror(errno));
                else if (WIFEXITED(ws) && WEXITSTATUS(ws) == 127)
                        snprintf(msg, sizeof(msg), "could not execute %s", o.runtime);
                else
                        runc_log_error(log, msg, sizeof(msg));
                report(o.sync_fd, "error %s", msg);
                return 1;
        }
        int cpid = read_pid(o.pid_file);
        if (cpid <= 0) {
                report(o.sync_fd, "error runc wrote no pid to %s", o.pid_file);
                return 1;
        }
        if (o.tty && master < 0) {
                report(o.sync_fd, "error runc sent no terminal on %s/%s", o.bundle, CONSOLE_NAME);
                return 1;
        }
        int ctl = ctl_listen();
        if (ctl < 0)
                diag("control socket in %s: %s (log reopen unavailable)", o.bundle,
                     strerror(errno));
        struct rm_hub hub = {.stdin_fd = !o.stdin ? -1
                                         : o.tty  ? master
                                                  : inp[1],
                             .tty_fd = master,
                             .stdin_once = o.stdin_once};
        /* The shim never waits on the container's stdin (see hub.h). On the terminal this
         * makes reads of the master non-blocking too; pump copes with EAGAIN. */
        if (hub.stdin_fd >= 0)
                fcntl(hub.stdin_fd, F_SETFL, fcntl(hub.stdin_fd, F_GETFL) | O_NONBLOCK);
        if (rm_hub_listen(&hub) < 0)
                diag("attach socket in %s: %s (attach unavailable)", o.bundle, strerror(errno));
        report(o.sync_fd, "ok %d", cpid);
        if (o.sync_fd >= 0)
                close(o.sync_fd);

        struct rm_cri_stream so = {.name = "stdout"}, se = {.name = "stderr"};
        struct exit_record rec = {.pid = cpid};
        bool exited = false;
        while (!exited) {
                struct pollfd pf[5 + RM_HUB_MAX_POLLFDS] = {{.fd = sfd, .events = POLLIN},
                                                            {.fd = outp[0], .events = POLLIN},
                                                            {.fd = errp[0], .events = POLLIN},
                                                            {.fd = master, .events = POLLIN},
                                                            {.fd = ctl, .events = POLLIN}};
                size_t nhub = hub.listen_fd >= 0 ? rm_hub_pollfds(&hub, pf + 5) : 0;
                int wait_ms = nhub ? rm_hub_poll_timeout(&hub) : -1;
                if (poll(pf, 5 + nhub, wait_ms) < 0 && errno != EINTR) {
                        diag("poll: %s", strerror(errno));
                        break;
                }
                if (pf[1].revents)
                        pump(&outp[0], logfd, &so, &hub, RM_ATTACH_STDOUT);
                if (pf[2].revents)
                        pump(&errp[0], logfd, &se, &hub, RM_ATTACH_STDERR);
                if (pf[3].revents) {
                        pump(&master, logfd, &so, &hub, RM_ATTACH_STDOUT);
                        if (master < 0 && hub.tty_fd >= 0) { /* pump closed it */
                                if (hub.stdin_fd == hub.tty_fd)
                                        rm_hub_stdin_lost(&hub);
                                hub.tty_fd = -1;
                        }
                }
                if (pf[4].revents)
                        ctl_serve(ctl, &o, &logfd);
                if (nhub)
                        rm_hub_handle(&hub, pf + 5, nhub);
                if (pf[0].revents) {
                        struct signalfd_siginfo si;
                        while (read(sfd, &si, sizeof(si)) > 0)
                                ;
                        int st;
                        pid_t p;
                        while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
                                if (p == cpid) {
                                        clock_gettime(CLOCK_REALTIME, &rec.at);
                                        rec.status = st;
                                        exited = true;
                                }
                        }
                }
        }
        if (ctl >= 0) {
                close(ctl);
                unlink(CTL_NAME);
        }
        /* The init is gone. Whatever it (or a process sharing its pipes) wrote is read
         * without blocking: a process left holding the pipe must not keep us alive. */
        for (int i = 0; i < 3; i++) {
                int *fd = i == 0 ? &outp[0] : i == 1 ? &errp[0] : &master;
                struct rm_cri_stream *st = i == 1 ? &se : &so;
                int type = i == 1 ? RM_ATTACH_STDERR : RM_ATTACH_STDOUT;
                if (*fd < 0)
                        continue;
                fcntl(*fd, F_SETFL, O_NONBLOCK);
                while (*fd >= 0 && pump(fd, logfd, st, &hub, type))
                        ;
                if (*fd >= 0) {
                        rm_cri_flush(logfd, st);
                        close(*fd);
                }
        }
        /* The stdin pipe, unless the hub closed it already (end of input). */
        if (hub.stdin_fd >= 0 && hub.stdin_fd == inp[1])
                close(inp[1]);
        rm_hub_close(&hub, o.bundle);
        if (logfd >= 0)
                close(logfd);
        if (write_exit_file(o.exit_file, &rec) < 0) {
                diag("write exit file %s: %s", o.exit_file, strerror(errno));
                return 1;
        }
        return 0;
}
