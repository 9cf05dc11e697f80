/* What remora-bench reads about processes: the daemon behind a socket, its RSS and CPU
 * time, and the helper processes (shims, monitors) a runtime starts per pod. */
#ifndef REMORA_BENCH_PROC_H
#define REMORA_BENCH_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* The pid of the process that accepted a connection on the unix socket PATH
 * (SO_PEERCRED); -1 when it cannot be found. */
pid_t bench_peer_pid(const char *path);

/* Resident set size of PID in KiB (VmRSS); -1 when the process is gone. */
long bench_rss_kib(pid_t pid);

/* User + system CPU time of PID in milliseconds (/proc/PID/stat); -1 when gone. */
double bench_cpu_ms(pid_t pid);

/* A set of pids, sorted. */
struct bench_pids {
        pid_t *v;
        size_t n;
};

/* The processes whose comm starts with one of NAMES (NULL-terminated). */
void bench_find_helpers(const char *const *names, struct bench_pids *out);

/* Sum of VmRSS (KiB) of the pids in NOW that are not in BEFORE; *count gets how many. */
long bench_new_rss_kib(const struct bench_pids *before, const struct bench_pids *now,
                       size_t *count);

void bench_pids_free(struct bench_pids *p);

#endif
