/* The daemon's side of remora-shim: locating it, starting it detached, reading its
 * report and the exit file it leaves. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "remora/cleanup.h"
#include "remora/clock.h"
#include "remora/fsutil.h"
#include "remora/shim.h"
#include "remora/xalloc.h"

static int locate_one(const char *configured, const char *name, const char *exe_dir, char **out,
                      struct rm_error **err)
{
        cleanup_free char *path =
            configured && *configured ? xstrdup(configured) : xasprintf("%s/%s", exe_dir, name);
        struct stat st;
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) || access(path, X_OK) < 0)
                return rm_error_set(err, RM_FAILED_PRECONDITION,
                                    "%s not found or not executable at %s%s", name, path,
                                    configured && *configured
                                        ? ""
                                        : " (it is looked up next to the daemon's executable)");
        *out = steal_pointer(&path);
        return 0;
}

int rm_helpers_locate(const char *shim_path, const char *pause_path, struct rm_helpers *out,
                      struct rm_error **err)
{
        memset(out, 0, sizeof(*out));
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n < 0)
                return rm_error_sys(err, "read /proc/self/exe");
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash)
                *slash = '\0';
        if (locate_one(shim_path, "remora-shim", exe, &out->shim, err) < 0 ||
            locate_one(pause_path, "remora-pause", exe, &out->pause, err) < 0) {
                rm_helpers_clear(out);
                return -1;
        }
        return 0;
}

void rm_helpers_clear(struct rm_helpers *h)
{
        free(h->shim);
        free(h->pause);
        h->shim = h->pause = NULL;
}

int rm_shim_spawn(const struct rm_shim_request *req, struct rm_shim_result *res,
                  struct rm_error **err)
{
        memset(res, 0, sizeof(*res));
        const char *argv[26];
        size_t n = 0;
        argv[n++] = req->shim;
        argv[n++] = "--runtime";
        argv[n++] = req->oci->binary;
        argv[n++] = "--root";
        argv[n++] = req->oci->root;
        argv[n++] = "--id";
        argv[n++] = req->id;
        argv[n++] = "--bundle";
        argv[n++] = req->bundle;
        argv[n++] = "--pid-file";
        argv[n++] = req->pid_file;
        argv[n++] = "--exit-file";
        argv[n++] = req->exit_file;
        argv[n++] = "--sync-fd";
        argv[n++] = "3";
        argv[n++] = "--detach";
        if (req->tty)
                argv[n++] = "--tty";
        if (req->stdin)
                argv[n++] = "--stdin";
        if (req->stdin_once)
                argv[n++] = "--stdin-once";
        if (req->log_path) {
                argv[n++] = "--log-path";
                argv[n++] = req->log_path;
        }
        if (req->shim_log) {
                argv[n++] = "--shim-log";
                argv[n++] = req->shim_log;
        }
        argv[n] = NULL;

        cleanup_close int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull < 0)
                return rm_error_sys(err, "open /dev/null");
        int sync[2];
        if (pipe2(sync, O_CLOEXEC) < 0)
                return rm_error_sys(err, "shim sync pipe");
        cleanup_close int rd = sync[0];
        int wr = sync[1];

        /* posix_spawn (a vfork, no copy of the daemon's page tables) of a shim that
         * forks once more by itself (--detach) and lets its first process exit: the shim
         * ends up in a session of its own and is not the daemon's child. */
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        posix_spawn_file_actions_init(&fa);
        posix_spawnattr_init(&attr);
        /* fd 3 is the sync pipe, handed on (dup2 clears O_CLOEXEC; for wr == 3 glibc
         * clears it too) */
        posix_spawn_file_actions_adddup2(&fa, devnull, 0);
        posix_spawn_file_actions_adddup2(&fa, devnull, 1);
        posix_spawn_file_actions_adddup2(&fa, devnull, 2);
        posix_spawn_file_actions_adddup2(&fa, wr, 3);
        /* Nothing else reaches the shim, even a descriptor a library opened without
         * O_CLOEXEC. */
        posix_spawn_file_actions_addclosefrom_np(&fa, 4);
        sigset_t none, pipe_only;
        sigemptyset(&none);
        sigemptyset(&pipe_only);
        sigaddset(&pipe_only, SIGPIPE);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &pipe_only);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
                                            POSIX_SPAWN_SETSIGDEF);
        pid_t mid = 0;
        int e = posix_spawn(&mid, req->shim, &fa, &attr, (char *const *)argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        close(wr);
        if (e != 0)
                return rm_error_sys_errno(err, e, "start %s for %s", req->shim, req->id);
        int ws;
        while (waitpid(mid, &ws, 0) < 0 && errno == EINTR)
                ;
        if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
                return rm_error_set(err, RM_INTERNAL,
                                    "start remora-shim for %s: it exited with status %d before "
                                    "detaching",
                                    req->id, WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);

        /* Read the report until the shim closes the pipe (after "ok", or as it exits). */
        int timeout = req->timeout_ms > 0 ? req->timeout_ms : req->oci->timeout_ms;
        long long deadline = rm_mono_ms() + timeout + 1000;
        char buf[4096];
        size_t len = 0;
        for (;;) {
                long long left = deadline - rm_mono_ms();
                if (left <= 0) {
                        /* the shim's process group is the first child's pid */
                        kill(-mid, SIGKILL);
                        return rm_error_set(err, RM_DEADLINE_EXCEEDED,
                                            "remora-shim for %s did not report within %d ms",
                                            req->id, timeout);
                }
                struct pollfd pf = {.fd = rd, .events = POLLIN};
                int pr = poll(&pf, 1, (int)left);
                if (pr < 0 && errno != EINTR)
                        return rm_error_sys(err, "wait for remora-shim of %s", req->id);
                if (pr <= 0)
                        continue;
                ssize_t got = read(rd, buf + len, sizeof(buf) - 1 - len);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got <= 0)
                        break;
                len += (size_t)got;
                if (len == sizeof(buf) - 1)
                        break;
        }
        buf[len] = '\0';

        char *save = NULL;
        for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                if (strncmp(line, "shim ", 5) == 0)
                        res->shim_pid = atoi(line + 5);
                else if (strncmp(line, "ok ", 3) == 0)
                        res->container_pid = atoi(line + 3);
                else if (strncmp(line, "error ", 6) == 0)
                        return rm_error_set(err, RM_UNKNOWN, "create %s: %s", req->id, line + 6);
        }
        if (res->container_pid <= 0)
                return rm_error_set(err, RM_INTERNAL,
                                    "create %s: remora-shim exited without a report", req->id);
        return 0;
}

int rm_exit_file_read(const char *path, struct rm_exit_status *st, struct rm_error **err)
{
        memset(st, 0, sizeof(*st));
        cleanup_error struct rm_error *e = NULL;
        cleanup_free char *text = rm_read_file(path, 4096, NULL, &e);
        if (!text) {
                if (e->errnum == ENOENT)
                        return 0;
                return rm_error_set(err, e->code, "%s", e->msg);
        }
        cleanup_json struct json_object *o = json_tokener_parse(text);
        struct json_object *pid, *code, *sig, *ns;
        if (!o || !json_object_object_get_ex(o, "pid", &pid) ||
            !json_object_object_get_ex(o, "exit_code", &code) ||
            !json_object_object_get_ex(o, "signal", &sig) ||
            !json_object_object_get_ex(o, "finished_at_ns", &ns))
                return rm_error_set(err, RM_DATA_LOSS, "exit file %s is damaged", path);
        st->pid = json_object_get_int(pid);
        st->exit_code = json_object_get_int(code);
        st->signal = json_object_get_int(sig);
        st->finished_ns = json_object_get_int64(ns);
        return 1;
}

/* Connect to a socket of the shim in bundle. The socket is reached through an O_PATH fd
 * of the bundle: the full path may not fit in sun_path, and a daemon with threads cannot
 * chdir. */
static int shim_connect(const char *bundle, const char *name, int timeout_ms, struct rm_error **err)
{
        cleanup_close int dir = open(bundle, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0)
                return rm_error_sys(err, "open the bundle %s", bundle);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s", dir, name);
        cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return rm_error_sys(err, "socket");
        if (timeout_ms > 0) {
                struct timeval tv = {.tv_sec = timeout_ms / 1000,
                                     .tv_usec = (timeout_ms % 1000) * 1000};
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        }
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                if (errno == ENOENT || errno == ECONNREFUSED)
                        return rm_error_set(err, RM_FAILED_PRECONDITION,
                                            "no monitor listens in %s (the container is not "
                                            "running)",
                                            bundle);
                return rm_error_sys(err, "connect to the monitor in %s", bundle);
        }
        return steal_fd(&fd);
}

int rm_shim_attach(const char *bundle, struct rm_error **err)
{
        return shim_connect(bundle, "attach.sock", 0, err);
}

int rm_shim_command(const char *bundle, const char *command, int timeout_ms, struct rm_error **err)
{
        cleanup_close int fd = shim_connect(bundle, "ctl.sock", timeout_ms, err);
        if (fd < 0)
                return -1;
        cleanup_free char *line = xasprintf("%s\n", command);
        if (write(fd, line, strlen(line)) != (ssize_t)strlen(line))
                return rm_error_sys(err, "send \"%s\" to the monitor", command);
        char reply[1024];
        size_t n = 0;
        while (n < sizeof(reply) - 1) {
                ssize_t r = read(fd, reply + n, sizeof(reply) - 1 - n);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                        return rm_error_set(err, RM_DEADLINE_EXCEEDED,
                                            "the monitor did not answer \"%s\" within %d ms",
                                            command, timeout_ms);
                if (r <= 0)
                        break;
                n += (size_t)r;
                if (memchr(reply, '\n', n))
                        break;
        }
        reply[n] = '\0';
        char *nl = strchr(reply, '\n');
        if (nl == NULL)
                return rm_error_set(err, RM_UNAVAILABLE,
                                    "the monitor closed the connection without answering \"%s\"",
                                    command);
        *nl = '\0';
        if (strcmp(reply, "ok") == 0)
                return 0;
        return rm_error_set(err, RM_INTERNAL, "monitor: %s",
                            strncmp(reply, "error ", 6) == 0 ? reply + 6 : reply);
}
