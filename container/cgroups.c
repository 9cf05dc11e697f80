/* cgroup layout detection and usage figures from cgroupfs, for v1 (including hybrid
 * hosts like this one, whose v2 tree at /sys/fs/cgroup/unified holds no controllers) and
 * for pure v2. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "remora/cgroups.h"
#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/log.h"
#include "remora/xalloc.h"

/* Does the comma-separated list hold word? */
static bool has_word(const char *list, const char *word)
{
        size_t n = strlen(word);
        for (const char *p = list; p && *p;) {
                if (strncmp(p, word, n) == 0 && (p[n] == ',' || p[n] == '\0'))
                        return true;
                p = strchr(p, ',');
                p = p ? p + 1 : NULL;
        }
        return false;
}

int rm_cgroup_detect(struct rm_cgroup_host *host, struct rm_error **err)
{
        memset(host, 0, sizeof(*host));
        cleanup_file FILE *f = fopen("/proc/self/mountinfo", "re");
        if (f == NULL)
                return rm_error_sys(err, "read /proc/self/mountinfo");
        char *line = NULL;
        size_t cap = 0;
        bool v1 = false;
        while (getline(&line, &cap, f) > 0) {
                char *sep = strstr(line, " - ");
                char mnt[256], fstype[32], source[64], super[512];
                if (sep == NULL || sscanf(line, "%*s %*s %*s %*s %255s", mnt) != 1 ||
                    sscanf(sep + 3, "%31s %63s %511s", fstype, source, super) != 3)
                        continue;
                if ((strcmp(fstype, "cgroup2") == 0 || strcmp(fstype, "cgroup") == 0) &&
                    host->n_hierarchies < RM_CGROUP_MAX_HIERARCHIES)
                        snprintf(host->hierarchies[host->n_hierarchies++],
                                 sizeof(host->hierarchies[0]), "%s", mnt);
                if (strcmp(fstype, "cgroup2") == 0 && host->root[0] == '\0') {
                        snprintf(host->root, sizeof(host->root), "%s", mnt);
                } else if (strcmp(fstype, "cgroup") == 0) {
                        v1 = true;
                        if (has_word(super, "cpuacct") && !host->cpuacct[0])
                                snprintf(host->cpuacct, sizeof(host->cpuacct), "%s", mnt);
                        if (has_word(super, "cpu") && !host->cpu[0])
                                snprintf(host->cpu, sizeof(host->cpu), "%s", mnt);
                        if (has_word(super, "memory") && !host->memory[0])
                                snprintf(host->memory, sizeof(host->memory), "%s", mnt);
                        if (has_word(super, "pids") && !host->pids[0])
                                snprintf(host->pids, sizeof(host->pids), "%s", mnt);
                }
        }
        free(line);
        if (v1) {
                host->mode = RM_CGROUP_V1;
                return 0;
        }
        if (host->root[0] == '\0')
                return rm_error_set(err, RM_FAILED_PRECONDITION,
                                    "no cgroup filesystem is mounted on this host");
        host->mode = RM_CGROUP_V2;
        return 0;
}

/* A cgroup path Remora made itself still gets checked before it is joined to a mount. */
static bool path_ok(const char *path)
{
        return path[0] == '/' && strstr(path, "/../") == NULL &&
               (strlen(path) < 3 || strcmp(path + strlen(path) - 3, "/..") != 0);
}

/* One number from a single-value cgroup file; false when absent. "max" reads as 0. */
static bool read_u64(const char *dir, const char *path, const char *file, uint64_t *out)
{
        cleanup_free char *full = xasprintf("%s%s/%s", dir, path, file);
        cleanup_free char *text = rm_read_file(full, 4096, NULL, NULL);
        if (text == NULL)
                return false;
        *out = strncmp(text, "max", 3) == 0 ? 0 : strtoull(text, NULL, 10);
        return true;
}

/* Look keys up in a "key value" file (memory.stat, cpu.stat). */
static bool read_keyed(const char *dir, const char *path, const char *file, const char *const *keys,
                       uint64_t *values, size_t n)
{
        cleanup_free char *full = xasprintf("%s%s/%s", dir, path, file);
        cleanup_file FILE *f = fopen(full, "re");
        if (f == NULL)
                return false;
        char key[64];
        unsigned long long v;
        while (fscanf(f, "%63s %llu", key, &v) == 2) {
                for (size_t i = 0; i < n; i++) {
                        if (keys[i] && strcmp(key, keys[i]) == 0)
                                values[i] = v;
                }
        }
        return true;
}

/* Limits at or above this are the kernel's way of saying "none" on v1. */
#define V1_UNLIMITED (1ULL << 62)

static void working_set(struct rm_cgroup_stats *s, uint64_t inactive_file)
{
        s->memory_working_set =
            s->memory_usage > inactive_file ? s->memory_usage - inactive_file : 0;
}

static void stats_v1(const struct rm_cgroup_host *h, const char *path, struct rm_cgroup_stats *s)
{
        if (h->cpuacct[0])
                s->has_cpu = read_u64(h->cpuacct, path, "cpuacct.usage", &s->cpu_usage_ns);
        if (h->memory[0] && read_u64(h->memory, path, "memory.usage_in_bytes", &s->memory_usage)) {
                s->has_memory = true;
                /* The total_ figures include child cgroups, which a pod cgroup has. */
                static const char *const keys[] = {"total_inactive_file", "total_rss",
                                                   "total_pgfault", "total_pgmajfault"};
                uint64_t v[4] = {0};
                read_keyed(h->memory, path, "memory.stat", keys, v, 4);
                working_set(s, v[0]);
                s->memory_rss = v[1];
                s->page_faults = v[2];
                s->major_page_faults = v[3];
                if (read_u64(h->memory, path, "memory.limit_in_bytes", &s->memory_limit) &&
                    s->memory_limit >= V1_UNLIMITED)
                        s->memory_limit = 0;
        }
        if (h->pids[0])
                read_u64(h->pids, path, "pids.current", &s->pids);
}

static void stats_v2(const struct rm_cgroup_host *h, const char *path, struct rm_cgroup_stats *s)
{
        static const char *const cpu_keys[] = {"usage_usec"};
        uint64_t usec = 0;
        if (read_keyed(h->root, path, "cpu.stat", cpu_keys, &usec, 1)) {
                s->has_cpu = true;
                s->cpu_usage_ns = usec * 1000;
        }
        if (read_u64(h->root, path, "memory.current", &s->memory_usage)) {
                s->has_memory = true;
                static const char *const keys[] = {"inactive_file", "anon", "pgfault",
                                                   "pgmajfault"};
                uint64_t v[4] = {0};
                read_keyed(h->root, path, "memory.stat", keys, v, 4);
                working_set(s, v[0]);
                s->memory_rss = v[1];
                s->page_faults = v[2];
                s->major_page_faults = v[3];
                read_u64(h->root, path, "memory.max", &s->memory_limit);
        }
        read_u64(h->root, path, "pids.current", &s->pids);
}

int rm_cgroup_stats(const struct rm_cgroup_host *host, const char *path,
                    struct rm_cgroup_stats *out, struct rm_error **err)
{
        memset(out, 0, sizeof(*out));
        if (path == NULL || !path_ok(path))
                return rm_error_set(err, RM_INVALID_ARGUMENT, "cgroup path \"%s\" is not valid",
                                    path ? path : "");
        if (host->mode == RM_CGROUP_V2)
                stats_v2(host, path, out);
        else
                stats_v1(host, path, out);
        if (!out->has_cpu && !out->has_memory)
                return rm_error_set(err, RM_NOT_FOUND, "cgroup %s has no cpu or memory figures",
                                    path);
        return 0;
}

bool rm_cgroup_oom_killed(const struct rm_cgroup_host *host, const char *path)
{
        return rm_cgroup_oom_kills(host, path) > 0;
}

uint64_t rm_cgroup_oom_kills(const struct rm_cgroup_host *host, const char *path)
{
        if (path == NULL || !path_ok(path))
                return 0;
        static const char *const keys[] = {"oom_kill"};
        uint64_t kills = 0;
        if (host->mode == RM_CGROUP_V2)
                read_keyed(host->root, path, "memory.events", keys, &kills, 1);
        else if (host->memory[0])
                read_keyed(host->memory, path, "memory.oom_control", keys, &kills, 1);
        return kills;
}

void rm_spec_host_detect(const struct rm_cgroup_host *cg, struct rm_spec_host *out)
{
        out->cgroup_v2 = cg->mode == RM_CGROUP_V2;
        out->oom_score_adj_min = -1000;
        cleanup_free char *text = rm_read_file("/proc/self/oom_score_adj", 64, NULL, NULL);
        if (text == NULL)
                return;
        int cur = atoi(text);
        if (cur <= -1000)
                return;
        /* Try one step down and back: lowering needs CAP_SYS_RESOURCE, which some hosts
         * (this one among them) withhold even from root. */
        cleanup_close int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        char buf[16];
        int len = snprintf(buf, sizeof(buf), "%d", cur - 1);
        if (fd >= 0 && write(fd, buf, (size_t)len) == len) {
                len = snprintf(buf, sizeof(buf), "%d", cur);
                if (pwrite(fd, buf, (size_t)len, 0) != len)
                        rm_log_warn("restoring oom_score_adj to %d: %s", cur, strerror(errno));
                return;
        }
        out->oom_score_adj_min = cur;
        rm_log_info("this host refuses lowering oom_score_adj below remorad's own (%d): "
                    "containers asking for less get %d",
                    cur, cur);
}

/* ---- removal from every hierarchy ---- */

bool rm_cgroup_exists(const struct rm_cgroup_host *host, const char *path)
{
        if (path == NULL || !path_ok(path) || strcmp(path, "/") == 0)
                return false;
        for (size_t i = 0; i < host->n_hierarchies; i++) {
                cleanup_free char *dir = xasprintf("%s%s", host->hierarchies[i], path);
                struct stat st;
                if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
                        return true;
        }
        return false;
}

/* rmdir dir after its sub-cgroups (depth first); returns how many stayed. */
static int remove_tree(const char *dir)
{
        int left = 0;
        cleanup_dir DIR *d = opendir(dir);
        if (d == NULL)
                return errno == ENOENT ? 0 : 1;
        struct dirent *e;
        while ((e = readdir(d))) {
                if (e->d_type != DT_DIR || strcmp(e->d_name, ".") == 0 ||
                    strcmp(e->d_name, "..") == 0)
                        continue;
                cleanup_free char *sub = xasprintf("%s/%s", dir, e->d_name);
                left += remove_tree(sub);
        }
        /* A cgroup whose last process just exited can stay busy for a moment. */
        for (int tries = 0; rmdir(dir) < 0; tries++) {
                if (errno == ENOENT)
                        return left;
                if (errno != EBUSY || tries == 20) {
                        rm_log_warn("remove cgroup %s: %s", dir, strerror(errno));
                        return left + 1;
                }
                usleep(5000);
        }
        return left;
}

int rm_cgroup_remove(const struct rm_cgroup_host *host, const char *path)
{
        if (path == NULL || !path_ok(path) || strcmp(path, "/") == 0)
                return 0;
        int left = 0;
        for (size_t i = 0; i < host->n_hierarchies; i++) {
                cleanup_free char *dir = xasprintf("%s%s", host->hierarchies[i], path);
                left += remove_tree(dir);
        }
        return left;
}
