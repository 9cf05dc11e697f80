/* remora-shim --exec-reaper: the first process of an exec inside a container (see
 * remora/exec_reaper.h for how it gets there). It is the child subreaper of the command
 * it runs, so everything the command starts stays below it even when a parent dies, and
 * it can kill and reap all of it: the container's init, which may never reap, is left
 * no zombie and no process of the exec. Only libc and /proc. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "exec_reaper.h"
#include "remora/exec_reaper.h"

struct proc {
        pid_t pid, ppid;
        bool mine;
};

static int by_pid(const void *a, const void *b)
{
        pid_t x = ((const struct proc *)a)->pid, y = ((const struct proc *)b)->pid;
        return (x > y) - (x < y);
}

/* Parent of pid from /proc/<pid>/stat ("pid (comm) state ppid ..."; comm may hold
 * spaces and parentheses, so the last ')' ends it); 0 when unreadable. */
static pid_t parent_of(pid_t pid)
{
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return 0;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
                return 0;
        buf[n] = '\0';
        char *end = strrchr(buf, ')');
        int ppid = 0;
        if (end == NULL || sscanf(end + 1, " %*c %d", &ppid) != 1)
                return 0;
        return (pid_t)ppid;
}

/* Every live descendant of this process, from one pass over /proc (a process started
 * during the pass may be missed: callers pass again). Returns the count; *out is
 * malloc'd (NULL when none). */
static size_t descendants(pid_t **out)
{
        *out = NULL;
        DIR *d = opendir("/proc");
        if (d == NULL)
                return 0;
        struct proc *all = NULL;
        size_t n = 0, cap = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
                char *end;
                long pid = strtol(e->d_name, &end, 10);
                if (*end != '\0' || pid <= 0)
                        continue;
                if (n == cap) {
                        cap = cap ? cap * 2 : 256;
                        struct proc *grown = realloc(all, cap * sizeof(*all));
                        if (grown == NULL)
                                break;
                        all = grown;
                }
                all[n++] = (struct proc){.pid = (pid_t)pid, .ppid = parent_of((pid_t)pid)};
        }
        closedir(d);
        qsort(all, n, sizeof(*all), by_pid);
        /* Mark children of marked processes until nothing changes: a pass per level. */
        pid_t self = getpid();
        size_t found = 0;
        for (bool changed = true; changed;) {
                changed = false;
                for (size_t i = 0; i < n; i++) {
                        if (all[i].mine || all[i].pid == self)
                                continue;
                        struct proc key = {.pid = all[i].ppid};
                        struct proc *parent = bsearch(&key, all, n, sizeof(*all), by_pid);
                        if (all[i].ppid == self || (parent && parent->mine)) {
                                all[i].mine = true;
                                changed = true;
                                found++;
                        }
                }
        }
        if (found > 0 && (*out = malloc(found * sizeof(pid_t))) != NULL) {
                size_t k = 0;
                for (size_t i = 0; i < n; i++)
                        if (all[i].mine)
                                (*out)[k++] = all[i].pid;
        } else {
                found = 0;
        }
        free(all);
        return found;
}

/* SIGKILL every descendant, then reap until none is left. */
static void kill_all(void)
{
        for (;;) {
                pid_t *pids;
                size_t n = descendants(&pids);
                for (size_t i = 0; i < n; i++)
                        kill(pids[i], SIGKILL);
                free(pids);
                int ws;
                pid_t w;
                while ((w = waitpid(-1, &ws, WNOHANG)) > 0)
                        ;
                if (w < 0 && errno == ECHILD)
                        return;
                /* Children left that have not died yet (or were forked during the pass):
                 * look again shortly. */
                struct timespec ts = {0, 5 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
}

/* True when a descendant still holds the pipe behind our stdout or stderr: the exec's
 * output is not finished while it does. A terminal does not count: an interactive
 * session ends with its shell, as without the reaper. */
static bool output_held(void)
{
        struct stat mine[2];
        if (isatty(1) || fstat(1, &mine[0]) < 0 || fstat(2, &mine[1]) < 0)
                return false;
        pid_t *pids;
        size_t n = descendants(&pids);
        bool held = false;
        for (size_t i = 0; i < n && !held; i++) {
                char dir[64];
                snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pids[i]);
                DIR *d = opendir(dir);
                if (d == NULL)
                        continue;
                struct dirent *e;
                while (!held && (e = readdir(d)) != NULL) {
                        struct stat st;
                        if (e->d_name[0] == '.' || fstatat(dirfd(d), e->d_name, &st, 0) < 0)
                                continue;
                        for (int k = 0; k < 2; k++)
                                held |= st.st_dev == mine[k].st_dev && st.st_ino == mine[k].st_ino;
                }
                closedir(d);
        }
        free(pids);
        return held;
}

static int exit_code(int ws)
{
        return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

static const int ignored[] = {SIGINT, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU, SIGPIPE};
#define N_IGNORED (sizeof(ignored) / sizeof(ignored[0]))

static const char *not_found(int e)
{
        return e == ENOENT ? "executable file not found in $PATH" : strerror(e);
}

/* The command, as the child (or as the reaper itself when it cannot reap): the caller's
 * signal state back, then exec. An exec error goes back over report (close-on-exec, so
 * a successful exec just closes it), or to stderr when there is none. */
__attribute__((noreturn)) static void run_command(char **cmd, const sigset_t *oldmask,
                                                  const struct sigaction *old, int report)
{
        for (size_t i = 0; i < N_IGNORED; i++)
                sigaction(ignored[i], &old[i], NULL);
        sigprocmask(SIG_SETMASK, oldmask, NULL);
        execvp(cmd[0], cmd);
        int e = errno;
        if (report < 0 || write(report, &e, sizeof(e)) < 0)
                fprintf(stderr, "remora exec: %s: %s\n", cmd[0], not_found(e));
        _exit(e == ENOENT ? RM_EXEC_REAPER_NOT_FOUND : RM_EXEC_REAPER_CANNOT);
}

int rm_exec_reaper_main(int argc, char **argv)
{
        int first = 2;
        if (first < argc && strcmp(argv[first], "--") == 0)
                first++;
        if (first >= argc) {
                fprintf(stderr, "remora exec: no command\n");
                return RM_EXEC_REAPER_CANNOT;
        }
        char **cmd = argv + first;
        close(RM_EXEC_REAPER_SELF_FD);
        int ctl = RM_EXEC_REAPER_CTL_FD;
        if (fcntl(ctl, F_SETFD, FD_CLOEXEC) < 0)
                ctl = -1; /* run by hand: no daemon to watch */
        prctl(PR_SET_NAME, "remora-exec");
        /* Without it (a seccomp profile that forbids it) orphans go to the container's
         * init instead; the kill below still reaches them while their parents live. */
        prctl(PR_SET_CHILD_SUBREAPER, 1);

        sigset_t mask, oldmask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, &oldmask);
        int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        /* A terminal's job-control signals are for the command (same process group). */
        struct sigaction ign = {.sa_handler = SIG_IGN}, old[N_IGNORED];
        for (size_t i = 0; i < N_IGNORED; i++)
                sigaction(ignored[i], &ign, &old[i]);

        /* A container's own seccomp profile may refuse what the reaper needs: then it
         * becomes the command itself (the exec works, without the reaping). */
        int report[2] = {-1, -1};
        pid_t child = sfd >= 0 && pipe2(report, O_CLOEXEC) == 0 ? fork() : -1;
        if (child <= 0) {
                if (child < 0 && sfd >= 0)
                        close(sfd);
                run_command(cmd, &oldmask, old, report[1]);
        }
        close(report[1]);
        int e = 0;
        if (read(report[0], &e, sizeof(e)) == (ssize_t)sizeof(e))
                fprintf(stderr, "remora exec: %s: %s\n", cmd[0], not_found(e));
        close(report[0]);

        bool killing = false, done = false;
        int status = 0;
        while (!killing) {
                /* Once the command is done, wait only for what still writes its output. */
                if (done && !output_held())
                        break;
                struct pollfd p[2] = {{.fd = sfd, .events = POLLIN}, {.fd = ctl, .events = POLLIN}};
                int n = poll(p, 2, done ? 100 : -1);
                if (n < 0 && errno != EINTR)
                        killing = true;
                if (p[1].revents)
                        killing = true; /* the daemon gave up on the exec */
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGHUP)
                                killing = true;
                int ws;
                pid_t w;
                while ((w = waitpid(-1, &ws, WNOHANG)) > 0)
                        if (w == child) {
                                status = exit_code(ws);
                                done = true;
                        }
        }
        if (killing) {
                kill_all();
                return done ? status : 128 + SIGKILL;
        }
        /* Whatever already died is reaped; a process the command left running on purpose
         * (its output elsewhere) goes on, as with any runtime. */
        while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
        return status;
}
