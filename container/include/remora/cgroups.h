/* The host's cgroups as Remora reads them: which version is in charge, where each v1
 * controller is mounted, and the usage figures stats need, read straight from cgroupfs
 * (no runc call, no helper process). */
#ifndef REMORA_CGROUPS_H
#define REMORA_CGROUPS_H

#include <stdbool.h>
#include <stdint.h>

#include "remora/error.h"
#include "remora/spec.h"

enum rm_cgroup_mode {
        RM_CGROUP_V1, /* v1 controllers (a v2 hierarchy may sit beside them: hybrid) */
        RM_CGROUP_V2, /* the unified hierarchy only, at /sys/fs/cgroup */
};

#define RM_CGROUP_MAX_HIERARCHIES 24

/* Where each v1 controller Remora reads is mounted; empty strings when absent. */
struct rm_cgroup_host {
        enum rm_cgroup_mode mode;
        char root[256]; /* v2: the unified mount point */
        char cpuacct[256];
        char cpu[256];
        char memory[256];
        char pids[256];
        /* Every cgroup hierarchy mounted (v1 controllers, named ones like systemd, and the
         * v2 tree), where runc may make a container's or pod's cgroup. */
        char hierarchies[RM_CGROUP_MAX_HIERARCHIES][256];
        size_t n_hierarchies;
};

/* Detect the cgroup layout from /proc/self/mountinfo. */
int rm_cgroup_detect(struct rm_cgroup_host *host, struct rm_error **err);

/* Usage of one cgroup. A field that the kernel does not report stays 0 and its
 * has_ flag false. */
struct rm_cgroup_stats {
        uint64_t cpu_usage_ns;
        uint64_t memory_usage;       /* bytes charged, page cache included */
        uint64_t memory_working_set; /* usage minus inactive file pages */
        uint64_t memory_rss;
        uint64_t memory_limit; /* 0: unlimited */
        uint64_t page_faults;
        uint64_t major_page_faults;
        uint64_t pids;
        bool has_cpu;
        bool has_memory;
};

/* Read the stats of the cgroup at path (as in the OCI spec's cgroupsPath: "/a/b/id"). */
int rm_cgroup_stats(const struct rm_cgroup_host *host, const char *path,
                    struct rm_cgroup_stats *out, struct rm_error **err);

/* Whether the kernel's OOM killer has killed a process of the cgroup at path
 * (memory.oom_control on v1, memory.events on v2, key oom_kill). */
bool rm_cgroup_oom_killed(const struct rm_cgroup_host *host, const char *path);
/* How many times it has (0 when the figure cannot be read). */
uint64_t rm_cgroup_oom_kills(const struct rm_cgroup_host *host, const char *path);

/* Whether the cgroup at path exists in any hierarchy. */
bool rm_cgroup_exists(const struct rm_cgroup_host *host, const char *path);

/* Remove the cgroup at path, and the cgroups below it, from every hierarchy it exists
 * in (a v1 host has ten or so; runc makes a cgroup in each). Returns how many
 * directories could not be removed (still holding processes), each logged; 0 when none
 * is left. A path that exists nowhere is fine. */
int rm_cgroup_remove(const struct rm_cgroup_host *host, const char *path);

/* Facts the spec builder needs: cgroup v2 or not, and the lowest oom_score_adj this
 * process may give its children (its own, where the host refuses lowering it, which is
 * logged once). */
void rm_spec_host_detect(const struct rm_cgroup_host *cg, struct rm_spec_host *out);

#endif
