/* Running one CNI plugin: fork and exec from a multi-threaded daemon, feed the config on
 * stdin, collect stdout and stderr, and kill the plugin's process group when it overruns
 * its time. Everything the child needs is built before fork, so the child only calls
 * async-signal-safe functions between fork and exec. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cni.h"
#include "remora/cleanup.h"
#include "remora/xalloc.h"

#define STDERR_KEEP 4096 /* the tail of stderr that goes into an error message */

static long long now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The child side: wire the three descriptors to 0/1/2, drop every other descriptor,
 * undo what the daemon did to signals, exec. Only async-signal-safe calls here. */
static void __attribute__((noreturn))
child(const char *path, char *const argv[], char *const envp[], int in_fd, int out_fd, int err_fd,
      int max_fd)
{
        if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
                _exit(126);
        /* kernels before 5.9 have no close_range: close one by one up to the limit */
        if (close_range(3, ~0U, 0) < 0)
                for (int fd = 3; fd < max_fd; fd++)
                        close(fd);
        /* own process group, so a timeout kills what the plugin started too */
        setpgid(0, 0);
        struct sigaction dfl;
        memset(&dfl, 0, sizeof(dfl));
        dfl.sa_handler = SIG_DFL;
        sigaction(SIGPIPE, &dfl, NULL);
        sigaction(SIGCHLD, &dfl, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(path, argv, envp);
        _exit(127);
}

struct sink {
        char *buf;
        size_t len, cap, max;
        bool overflow;
        bool keep_tail; /* stderr: keep the last bytes instead of failing */
};

static void sink_add(struct sink *s, const char *data, size_t n)
{
        if (s->keep_tail) {
                if (n >= s->max) {
                        data += n - s->max;
                        n = s->max;
                        s->len = 0;
                } else if (s->len + n > s->max) {
                        size_t drop = s->len + n - s->max;
                        memmove(s->buf, s->buf + drop, s->len - drop);
                        s->len -= drop;
                }
        } else if (s->len + n > s->max) {
                s->overflow = true;
                return;
        }
        if (s->len + n + 1 > s->cap) {
                s->cap = s->len + n + 1 < 2 * s->cap ? 2 * s->cap : s->len + n + 1;
                s->buf = xrealloc(s->buf, s->cap);
        }
        memcpy(s->buf + s->len, data, n);
        s->len += n;
        s->buf[s->len] = '\0';
}

/* Kill the plugin's group (and the plugin, in case setpgid had not run yet) and reap. */
static void kill_and_reap(pid_t pid)
{
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
}

int rm__cni_exec(const struct rm__cni_exec_req *req, struct rm__cni_exec_out *out,
                 struct rm_error **err)
{
        memset(out, 0, sizeof(*out));
        /* stdin is a socket so that writing to a plugin that exited early gives EPIPE
         * (MSG_NOSIGNAL) instead of a SIGPIPE that would take the daemon down */
        int in_sv[2], out_p[2], err_p[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_sv) < 0)
                return rm_error_sys(err, "socketpair for plugin stdin");
        cleanup_close int in_parent = in_sv[0], in_child = in_sv[1];
        if (pipe2(out_p, O_CLOEXEC) < 0)
                return rm_error_sys(err, "pipe for plugin stdout");
        cleanup_close int out_parent = out_p[0], out_child = out_p[1];
        if (pipe2(err_p, O_CLOEXEC) < 0)
                return rm_error_sys(err, "pipe for plugin stderr");
        cleanup_close int err_parent = err_p[0], err_child = err_p[1];
        char *const argv[] = {(char *)req->path, NULL};
        long open_max = sysconf(_SC_OPEN_MAX);
        int max_fd = open_max > 0 && open_max < 65536 ? (int)open_max : 65536;

        pid_t pid = fork();
        if (pid < 0)
                return rm_error_sys(err, "fork for %s", req->path);
        if (pid == 0)
                child(req->path, argv, req->envp, in_child, out_child, err_child, max_fd);
        close(steal_fd(&in_child));
        close(steal_fd(&out_child));
        close(steal_fd(&err_child));
        if (fcntl(in_parent, F_SETFL, O_NONBLOCK) < 0 ||
            fcntl(out_parent, F_SETFL, O_NONBLOCK) < 0 ||
            fcntl(err_parent, F_SETFL, O_NONBLOCK) < 0) {
                int saved = errno;
                kill_and_reap(pid);
                return rm_error_sys_errno(err, saved, "set plugin pipes non-blocking");
        }

        struct sink so = {.max = req->max_stdout}, se = {.max = STDERR_KEEP, .keep_tail = true};
        size_t written = 0;
        if (req->input_len == 0)
                close(steal_fd(&in_parent));
        long long deadline = now_ms() + req->timeout_ms;
        int fail_errno = 0;
        const char *fail_what = NULL;
        while (out_parent >= 0 || err_parent >= 0) {
                struct pollfd fds[3] = {{.fd = in_parent, .events = POLLOUT},
                                        {.fd = out_parent, .events = POLLIN},
                                        {.fd = err_parent, .events = POLLIN}};
                long long left = deadline - now_ms();
                if (left <= 0)
                        break;
                int r = poll(fds, 3, (int)(left > 1000 ? 1000 : left));
                if (r < 0 && errno != EINTR) {
                        fail_errno = errno;
                        fail_what = "poll plugin pipes";
                        break;
                }
                if (r <= 0)
                        continue;
                if (in_parent >= 0 && fds[0].revents) {
                        ssize_t w = send(in_parent, req->input + written, req->input_len - written,
                                         MSG_NOSIGNAL | MSG_DONTWAIT);
                        if (w > 0)
                                written += (size_t)w;
                        /* a plugin that stops reading early is its own business */
                        if ((w < 0 && errno != EAGAIN && errno != EINTR) ||
                            written == req->input_len)
                                close(steal_fd(&in_parent));
                }
                for (int i = 1; i < 3; i++) {
                        int *fd = i == 1 ? &out_parent : &err_parent;
                        if (*fd < 0 || fds[i].revents == 0)
                                continue;
                        char buf[16384];
                        ssize_t n = read(*fd, buf, sizeof(buf));
                        if (n > 0)
                                sink_add(i == 1 ? &so : &se, buf, (size_t)n);
                        else if (n == 0 || (errno != EAGAIN && errno != EINTR))
                                close(steal_fd(fd));
                }
                if (so.overflow)
                        break;
        }
        /* the outputs are closed (or we gave up on them): wait for the exit itself */
        int status = 0;
        pid_t w = 0;
        while (!so.overflow && !fail_what) {
                w = waitpid(pid, &status, WNOHANG);
                if (w == pid || (w < 0 && errno != EINTR))
                        break;
                if (now_ms() >= deadline)
                        break;
                nanosleep(&(struct timespec){.tv_nsec = 2 * 1000 * 1000}, NULL);
        }
        if (w != pid) {
                kill_and_reap(pid);
                free(so.buf);
                free(se.buf);
                if (so.overflow)
                        return rm_error_set(err, RM_INTERNAL,
                                            "%s wrote more than %zu bytes to stdout; killed",
                                            req->path, req->max_stdout);
                if (fail_what)
                        return rm_error_sys_errno(err, fail_errno, "%s", fail_what);
                return rm_error_set(err, RM_DEADLINE_EXCEEDED, "%s timed out after %d ms; killed",
                                    req->path, req->timeout_ms);
        }
        out->status = status;
        out->stdout_buf = so.buf ? so.buf : xstrdup("");
        out->stdout_len = so.len;
        out->stderr_buf = se.buf ? se.buf : xstrdup("");
        return 0;
}

void rm__cni_exec_out_release(struct rm__cni_exec_out *out)
{
        free(out->stdout_buf);
        free(out->stderr_buf);
        memset(out, 0, sizeof(*out));
}
