#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "remora/cancel.h"
#include "remora/cleanup.h"
#include "remora/clock.h"
#include "remora/xalloc.h"

extern char **environ;

struct sink {
        char *buf;
        size_t len, cap, max;
        bool dropped; /* more came than max: the rest was read and thrown away */
};

static void sink_add(struct sink *s, const char *p, size_t n)
{
        if (n > s->max - s->len) {
                s->dropped = true; /* keep draining the pipe, drop the excess */
                n = s->max - s->len;
        }
        if (n == 0)
                return;
        if (s->len + n + 1 > s->cap) {
                size_t cap = s->cap ? s->cap : 256;
                while (cap < s->len + n + 1)
                        cap *= 2;
                s->buf = xrealloc(s->buf, cap);
                s->cap = cap;
        }
        memcpy(s->buf + s->len, p, n);
        s->len += n;
        s->buf[s->len] = '\0';
}

void rm__cmd_result_clear(struct rm__cmd_result *r)
{
        free(r->out);
        free(r->errout);
        memset(r, 0, sizeof(*r));
}

static void close_fd(int *fd)
{
        if (*fd >= 0)
                close(*fd);
        *fd = -1;
}

static bool reaped(pid_t pid, int *ws)
{
        for (;;) {
                pid_t w = waitpid(pid, ws, WNOHANG);
                if (w == pid)
                        return true;
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0) {
                        *ws = 0;
                        return true; /* not ours to wait for any more */
                }
                return false;
        }
}

static void pause_ms(long ms)
{
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
}

/* The deadline or the call's token ran out: ask the program to stop, give it the grace,
 * then SIGKILL; always reaped. */
static void stop_program(const struct rm__cmd *c, pid_t pid, int *ws)
{
        if (c->on_timeout) {
                c->on_timeout(pid, c->data);
                long long until = rm_mono_ms() + (c->stop_grace_ms > 0 ? c->stop_grace_ms : 0);
                while (!reaped(pid, ws)) {
                        if (rm_mono_ms() >= until) {
                                kill(pid, SIGKILL);
                                break;
                        }
                        pause_ms(1);
                }
        } else {
                kill(pid, SIGKILL);
        }
        while (waitpid(pid, ws, 0) < 0 && errno == EINTR)
                ;
}

static long long cancel_deadline_ms(const struct rm_cancel *cancel)
{
        if (cancel == NULL || cancel->deadline_ns == 0)
                return 0;
        return cancel->deadline_ns / 1000000;
}

/* The extra fds, moved out of the way of 0..(3 + n) first so that no dup2 of the
 * child's file actions overwrites a source another one still needs. */
static int add_extra_fds(const struct rm__cmd *c, posix_spawn_file_actions_t *fa, int *high)
{
        for (int i = 0; i < c->n_extra; i++) {
                high[i] = fcntl(c->extra_fds[i], F_DUPFD_CLOEXEC, 3 + c->n_extra + 16);
                if (high[i] < 0)
                        return -1;
        }
        for (int i = 0; i < c->n_extra; i++)
                posix_spawn_file_actions_adddup2(fa, high[i], 3 + i);
        return 0;
}

int rm__cmd_run(const struct rm__cmd *c, struct rm__cmd_result *r, struct rm_error **err)
{
        memset(r, 0, sizeof(*r));
        int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1};
        if ((c->input && pipe2(in, O_CLOEXEC) < 0) ||
            (!c->stdio && (pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0))) {
                rm_error_sys(err, "pipe for %s", c->argv[0]);
                for (int i = 0; i < 2; i++) {
                        close_fd(&in[i]);
                        close_fd(&out[i]);
                        close_fd(&errp[i]);
                }
                return -1;
        }

        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        if (c->input)
                posix_spawn_file_actions_adddup2(&fa, in[0], 0);
        else if (!c->stdio || c->stdio[0] < 0)
                posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        else
                posix_spawn_file_actions_adddup2(&fa, c->stdio[0], 0);
        for (int i = 1; i <= 2; i++) {
                if (!c->stdio)
                        posix_spawn_file_actions_adddup2(&fa, i == 1 ? out[1] : errp[1], i);
                else if (c->stdio[i] < 0)
                        posix_spawn_file_actions_addopen(&fa, i, "/dev/null", O_WRONLY, 0);
                else
                        posix_spawn_file_actions_adddup2(&fa, c->stdio[i], i);
        }
        int high[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
        int extra_rc = c->n_extra <= 8 ? add_extra_fds(c, &fa, high) : (errno = EINVAL, -1);
        int extra_errno = errno;
        /* runc gets the three descriptors above, the extra ones at 3.. and no other: every
         * fd of the daemon is O_CLOEXEC, and this closes any a library opened without it. */
        posix_spawn_file_actions_addclosefrom_np(&fa, 3 + (c->n_extra > 0 ? c->n_extra : 0));
        /* A fresh signal mask and default dispositions: the daemon's blocked signals must
         * not leak into runc (or, through it, into the container). */
        posix_spawnattr_t attr;
        posix_spawnattr_init(&attr);
        sigset_t none, all;
        sigemptyset(&none);
        sigfillset(&all);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &all);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

        pid_t pid = -1;
        int rc = extra_rc < 0
                     ? extra_errno
                     : posix_spawn(&pid, c->argv[0], &fa, &attr, (char *const *)c->argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        for (int i = 0; i < 8; i++)
                close_fd(&high[i]);
        close_fd(&in[0]);
        close_fd(&out[1]);
        close_fd(&errp[1]);
        if (rc != 0) {
                close_fd(&in[1]);
                close_fd(&out[0]);
                close_fd(&errp[0]);
                return rm_error_sys_errno(err, rc, "run %s", c->argv[0]);
        }
        if (c->on_start)
                c->on_start(pid, c->data);

        size_t max = c->out_max ? c->out_max : (1u << 20);
        struct sink so = {.max = max}, se = {.max = max};
        size_t written = 0;
        if (in[1] >= 0)
                fcntl(in[1], F_SETFL, O_NONBLOCK);
        int timeout_ms = c->timeout_ms > 0 ? c->timeout_ms : 30000;
        long long deadline = rm_mono_ms() + timeout_ms;
        long long cancel_at = cancel_deadline_ms(c->cancel);
        int cancel_fd = c->cancel ? c->cancel->fd : -1;
        bool timed_out = false, cancelled = false;
        while (in[1] >= 0 || out[0] >= 0 || errp[0] >= 0) {
                struct pollfd pf[4] = {{.fd = in[1], .events = POLLOUT},
                                       {.fd = out[0], .events = POLLIN},
                                       {.fd = errp[0], .events = POLLIN},
                                       {.fd = cancel_fd, .events = POLLIN}};
                long long now = rm_mono_ms();
                if ((cancelled = rm_cancelled(c->cancel)) || (timed_out = now >= deadline))
                        break;
                long long left = deadline - now;
                if (cancel_at > 0 && cancel_at - now < left)
                        left = cancel_at - now > 0 ? cancel_at - now : 1;
                int n = poll(pf, 4, (int)left);
                if (n < 0 && errno != EINTR)
                        break;
                if (n <= 0)
                        continue;
                if (pf[0].revents) {
                        ssize_t w = write(in[1], c->input + written, c->input_len - written);
                        if (w > 0)
                                written += (size_t)w;
                        if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == c->input_len)
                                close_fd(&in[1]);
                }
                for (int i = 1; i <= 2; i++) {
                        if (!pf[i].revents)
                                continue;
                        char buf[8192];
                        ssize_t got = read(pf[i].fd, buf, sizeof(buf));
                        if (got > 0)
                                sink_add(i == 1 ? &so : &se, buf, (size_t)got);
                        else if (got == 0 || (errno != EINTR && errno != EAGAIN))
                                close_fd(i == 1 ? &out[0] : &errp[0]);
                }
        }
        close_fd(&in[1]);
        close_fd(&out[0]);
        close_fd(&errp[0]);

        int ws = 0;
        /* The pipes closed; the program may still be running (when stdio was handed over,
         * there were no pipes at all), so the deadline and the token still hold. */
        while (!timed_out && !cancelled && !reaped(pid, &ws)) {
                if ((cancelled = rm_cancelled(c->cancel)) || (timed_out = rm_mono_ms() >= deadline))
                        break;
                pause_ms(1);
        }
        if (timed_out || cancelled) {
                stop_program(c, pid, &ws);
                free(so.buf);
                free(se.buf);
                if (cancelled)
                        return rm_error_set(err, RM_CANCELLED, "%s stopped: the call was cancelled",
                                            c->argv[0]);
                return rm_error_set(err, RM_DEADLINE_EXCEEDED, "%s did not finish within %d ms",
                                    c->argv[0], timeout_ms);
        }
        r->out = so.buf ? so.buf : xstrdup("");
        r->out_len = so.len;
        r->out_truncated = so.dropped;
        r->errout = se.buf ? se.buf : xstrdup("");
        r->err_len = se.len;
        r->err_truncated = se.dropped;
        r->wstatus = ws;
        return 0;
}

static const char *last_line(const char *s, char *buf, size_t len)
{
        size_t n = strlen(s);
        while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\r'))
                n--;
        if (n == 0)
                return NULL;
        size_t start = n;
        while (start > 0 && s[start - 1] != '\n')
                start--;
        snprintf(buf, len, "%.*s", (int)(n - start), s + start);
        return buf;
}

const char *rm__cmd_reason(const struct rm__cmd_result *r, char *buf, size_t len)
{
        const char *line = r->errout ? last_line(r->errout, buf, len) : NULL;
        if (!line && r->out)
                line = last_line(r->out, buf, len);
        if (line)
                return line;
        if (WIFSIGNALED(r->wstatus))
                snprintf(buf, len, "killed by signal %d", WTERMSIG(r->wstatus));
        else
                snprintf(buf, len, "exit status %d", WEXITSTATUS(r->wstatus));
        return buf;
}
