#include "proc.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "remora/cleanup.h"
#include "remora/xalloc.h"

pid_t bench_peer_pid(const char *path)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return -1;
        strcpy(sa.sun_path, path);
        cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return -1;
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return -1;
        return cred.pid;
}

long bench_rss_kib(pid_t pid)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        cleanup_file FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        char line[256];
        while (fgets(line, sizeof(line), f)) {
                long kib;
                if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
                        return kib;
        }
        return 0; /* a zombie has no VmRSS line */
}

double bench_cpu_ms(pid_t pid)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        cleanup_file FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        char buf[1024];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        /* comm may hold spaces and parentheses: fields resume after the last ')' */
        char *p = strrchr(buf, ')');
        if (!p)
                return -1;
        unsigned long utime = 0, stime = 0;
        /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt
         * cmajflt utime(14) stime(15) */
        if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) !=
            2)
                return -1;
        return (double)(utime + stime) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

static int cmp_pid(const void *a, const void *b)
{
        pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
        return (x > y) - (x < y);
}

void bench_find_helpers(const char *const *names, struct bench_pids *out)
{
        out->v = NULL;
        out->n = 0;
        size_t cap = 0;
        cleanup_dir DIR *d = opendir("/proc");
        if (!d)
                return;
        struct dirent *e;
        while ((e = readdir(d))) {
                if (!isdigit((unsigned char)e->d_name[0]))
                        continue;
                char path[300], comm[64] = "";
                snprintf(path, sizeof(path), "/proc/%s/comm", e->d_name);
                cleanup_file FILE *f = fopen(path, "re");
                if (!f || !fgets(comm, sizeof(comm), f))
                        continue;
                for (const char *const *n = names; *n; n++) {
                        if (strncmp(comm, *n, strlen(*n)) != 0 &&
                            /* comm holds 15 bytes: a longer name matches by its prefix */
                            !(strlen(*n) > 15 && strncmp(comm, *n, 15) == 0))
                                continue;
                        if (out->n == cap) {
                                cap = cap ? cap * 2 : 64;
                                out->v = xrealloc(out->v, cap * sizeof(pid_t));
                        }
                        out->v[out->n++] = (pid_t)atoi(e->d_name);
                        break;
                }
        }
        if (out->n)
                qsort(out->v, out->n, sizeof(pid_t), cmp_pid);
}

long bench_new_rss_kib(const struct bench_pids *before, const struct bench_pids *now, size_t *count)
{
        long sum = 0;
        *count = 0;
        for (size_t i = 0; i < now->n; i++) {
                if (before->n && bsearch(&now->v[i], before->v, before->n, sizeof(pid_t), cmp_pid))
                        continue;
                long kib = bench_rss_kib(now->v[i]);
                if (kib > 0) {
                        sum += kib;
                        (*count)++;
                }
        }
        return sum;
}

void bench_pids_free(struct bench_pids *p)
{
        free(p->v);
        p->v = NULL;
        p->n = 0;
}
