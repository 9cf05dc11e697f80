/* linux.resources from the CRI's LinuxContainerResources, validated field by field. */
#include <stdlib.h>
#include <string.h>

#include "remora/cleanup.h"
#include "remora/log.h"
#include "remora/xalloc.h"
#include "manager_internal.h"
#include "spec_internal.h"

/* The kernel's limits for cpu.shares (v1), which runc converts for v2. */
#define MIN_SHARES 2
#define MAX_SHARES 262144
/* CFS period bounds: 1 ms to 1 s. */
#define MIN_PERIOD 1000
#define MAX_PERIOD 1000000

/* "0-3,5,7-8": comma-separated CPUs or memory nodes and ascending ranges. */
static bool cpuset_valid(const char *s)
{
        if (*s == '\0')
                return false;
        while (*s) {
                char *end;
                if (*s < '0' || *s > '9')
                        return false;
                long lo = strtol(s, &end, 10);
                s = end;
                if (*s == '-') {
                        s++;
                        if (*s < '0' || *s > '9')
                                return false;
                        long hi = strtol(s, &end, 10);
                        if (hi < lo)
                                return false;
                        s = end;
                }
                if (*s == ',')
                        s++;
                else if (*s)
                        return false;
        }
        return true;
}

/* Hugepage sizes as the CRI writes them: "2MB", "1GB", "64KB". */
static bool page_size_valid(const char *s)
{
        size_t digits = strspn(s, "0123456789");
        if (digits == 0 || digits > 6)
                return false;
        const char *unit = s + digits;
        return strcmp(unit, "KB") == 0 || strcmp(unit, "MB") == 0 || strcmp(unit, "GB") == 0;
}

static int negative(const char *field, int64_t v, struct rm_error **err)
{
        return rm_error_set(err, RM_INVALID_ARGUMENT, "resources.%s must not be negative, got %lld",
                            field, (long long)v);
}

static int add_cpu(struct json_object *out, const Runtime__V1__LinuxContainerResources *r,
                   struct rm_error **err)
{
        struct json_object *cpu = json_object_new_object();
        json_object_object_add(out, "cpu", cpu);
        if (r->cpu_shares < 0)
                return negative("cpu_shares", r->cpu_shares, err);
        if (r->cpu_shares > 0) {
                if (r->cpu_shares < MIN_SHARES || r->cpu_shares > MAX_SHARES)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "resources.cpu_shares must be between %d and %d, got "
                                            "%lld",
                                            MIN_SHARES, MAX_SHARES, (long long)r->cpu_shares);
                json_object_object_add(cpu, "shares", json_object_new_int64(r->cpu_shares));
        }
        if (r->cpu_period < 0)
                return negative("cpu_period", r->cpu_period, err);
        if (r->cpu_period > 0) {
                if (r->cpu_period < MIN_PERIOD || r->cpu_period > MAX_PERIOD)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "resources.cpu_period must be between %d and %d "
                                            "microseconds, got %lld",
                                            MIN_PERIOD, MAX_PERIOD, (long long)r->cpu_period);
                json_object_object_add(cpu, "period", json_object_new_int64(r->cpu_period));
        }
        /* A negative quota means "no limit" to the kernel; kubelet sends 0 or a value. */
        if (r->cpu_quota > 0) {
                if (r->cpu_quota < MIN_PERIOD)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "resources.cpu_quota must be at least %d "
                                            "microseconds, got %lld",
                                            MIN_PERIOD, (long long)r->cpu_quota);
                json_object_object_add(cpu, "quota", json_object_new_int64(r->cpu_quota));
        }
        if (r->cpuset_cpus && *r->cpuset_cpus) {
                if (!cpuset_valid(r->cpuset_cpus))
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "resources.cpuset_cpus \"%s\" is not a CPU list such "
                                            "as 0-3,5",
                                            r->cpuset_cpus);
                json_object_object_add(cpu, "cpus", json_object_new_string(r->cpuset_cpus));
        }
        if (r->cpuset_mems && *r->cpuset_mems) {
                if (!cpuset_valid(r->cpuset_mems))
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "resources.cpuset_mems \"%s\" is not a node list such "
                                            "as 0-1",
                                            r->cpuset_mems);
                json_object_object_add(cpu, "mems", json_object_new_string(r->cpuset_mems));
        }
        return 0;
}

static int add_memory(struct json_object *out, const Runtime__V1__LinuxContainerResources *r,
                      struct rm_error **err)
{
        struct json_object *mem = json_object_new_object();
        json_object_object_add(out, "memory", mem);
        if (r->memory_limit_in_bytes < 0)
                return negative("memory_limit_in_bytes", r->memory_limit_in_bytes, err);
        if (r->memory_limit_in_bytes > 0)
                json_object_object_add(mem, "limit",
                                       json_object_new_int64(r->memory_limit_in_bytes));
        if (r->memory_swap_limit_in_bytes < 0)
                return negative("memory_swap_limit_in_bytes", r->memory_swap_limit_in_bytes, err);
        if (r->memory_swap_limit_in_bytes > 0) {
                /* The swap limit counts memory plus swap, so it cannot be below the limit. */
                if (r->memory_limit_in_bytes > 0 &&
                    r->memory_swap_limit_in_bytes < r->memory_limit_in_bytes)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "resources.memory_swap_limit_in_bytes (%lld) is below "
                                            "memory_limit_in_bytes (%lld)",
                                            (long long)r->memory_swap_limit_in_bytes,
                                            (long long)r->memory_limit_in_bytes);
                json_object_object_add(mem, "swap",
                                       json_object_new_int64(r->memory_swap_limit_in_bytes));
        }
        return 0;
}

static int add_hugepages(struct json_object *out, const Runtime__V1__LinuxContainerResources *r,
                         struct rm_error **err)
{
        if (r->n_hugepage_limits == 0)
                return 0;
        struct json_object *list = json_object_new_array();
        json_object_object_add(out, "hugepageLimits", list);
        for (size_t i = 0; i < r->n_hugepage_limits; i++) {
                const Runtime__V1__HugepageLimit *h = r->hugepage_limits[i];
                if (h->page_size == NULL || !page_size_valid(h->page_size))
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "resources.hugepage_limits[%zu].page_size \"%s\" is "
                                            "not a size such as 2MB or 1GB",
                                            i, h->page_size ? h->page_size : "");
                struct json_object *e = json_object_new_object();
                json_object_object_add(e, "pageSize", json_object_new_string(h->page_size));
                json_object_object_add(e, "limit", json_object_new_uint64(h->limit));
                json_object_array_add(list, e);
        }
        return 0;
}

static int add_unified(struct json_object *out, const Runtime__V1__LinuxContainerResources *r,
                       const struct rm_spec_host *host, struct rm_error **err)
{
        if (r->n_unified == 0)
                return 0;
        if (!host->cgroup_v2)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "resources.unified needs cgroup v2, and this host runs "
                                    "cgroup v1");
        struct json_object *u = json_object_new_object();
        json_object_object_add(out, "unified", u);
        for (size_t i = 0; i < r->n_unified; i++) {
                const char *key = r->unified[i]->key;
                /* A key is a file name in the cgroup directory: "memory.high". */
                if (key == NULL || *key == '\0' || strchr(key, '/') || key[0] == '.' ||
                    strchr(key, '.') == NULL)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "resources.unified key \"%s\" is not a cgroup v2 file "
                                            "name such as memory.high",
                                            key ? key : "");
                json_object_object_add(
                    u, key,
                    json_object_new_string(r->unified[i]->value ? r->unified[i]->value : ""));
        }
        return 0;
}

struct json_object *rm__spec_resources(const Runtime__V1__LinuxContainerResources *r,
                                       const struct rm_spec_host *host, bool *has_oom, int64_t *oom,
                                       struct rm_error **err)
{
        cleanup_json struct json_object *out = json_object_new_object();
        *has_oom = false;
        /* No device access but what runc grants every container and the request adds. */
        struct json_object *devices = json_object_new_array();
        struct json_object *deny = json_object_new_object();
        json_object_object_add(deny, "allow", json_object_new_boolean(false));
        json_object_object_add(deny, "access", json_object_new_string("rwm"));
        json_object_array_add(devices, deny);
        json_object_object_add(out, "devices", devices);
        if (r == NULL)
                return steal_pointer(&out);

        if (add_cpu(out, r, err) < 0 || add_memory(out, r, err) < 0 ||
            add_hugepages(out, r, err) < 0 || add_unified(out, r, host, err) < 0)
                return NULL;
        if (r->oom_score_adj < -1000 || r->oom_score_adj > 1000) {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "resources.oom_score_adj must be between -1000 and 1000, got %lld",
                             (long long)r->oom_score_adj);
                return NULL;
        }
        *has_oom = true;
        *oom = r->oom_score_adj;
        if (*oom < host->oom_score_adj_min)
                *oom = host->oom_score_adj_min;
        return steal_pointer(&out);
}

int rm_spec_resources_check(const Runtime__V1__LinuxContainerResources *res,
                            const struct rm_spec_host *host, struct rm_error **err)
{
        bool has_oom;
        int64_t oom;
        /* Bounded as a container's are, before anything is built from them. */
        if (rm__ctr_resources_limits(res, "resources", err) < 0)
                return -1;
        cleanup_json struct json_object *out = rm__spec_resources(res, host, &has_oom, &oom, err);
        return out ? 0 : -1;
}
