/* ContainerStats: CPU and memory from the container's cgroup, the writable layer's size
 * from a walk of its upper directory. Nothing here calls runc: kubelet polls these every
 * few seconds for every container. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "manager_internal.h"
#include "remora/cgroups.h"
#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/pbmap.h"
#include "remora/xalloc.h"

/* Samples older than this are dropped (their container is probably gone). */
#define RATE_MAX_AGE_NS (10LL * 60 * 1000000000LL)

static int64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

bool rm_containers_cpu_rate(struct rm_container_manager *mgr, const char *key, int64_t at_ns,
                            uint64_t usage_ns, uint64_t *nano_cores)
{
        bool have = false;
        pthread_mutex_lock(&mgr->rates_lock);
        struct cpu_sample *slot = NULL;
        size_t keep = 0;
        for (size_t i = 0; i < mgr->n_rates; i++) {
                struct cpu_sample *s = &mgr->rates[i];
                if (strcmp(s->key, key) == 0) {
                        if (at_ns > s->at_ns && usage_ns >= s->usage_ns) {
                                /* ns of CPU per ns of wall time, in billionths of a core */
                                double rate = (double)(usage_ns - s->usage_ns) /
                                              (double)(at_ns - s->at_ns) * 1e9;
                                *nano_cores = (uint64_t)rate;
                                have = true;
                        }
                } else if (at_ns - s->at_ns > RATE_MAX_AGE_NS) {
                        continue;
                }
                mgr->rates[keep] = *s;
                if (strcmp(s->key, key) == 0)
                        slot = &mgr->rates[keep];
                keep++;
        }
        mgr->n_rates = keep;
        if (slot == NULL) {
                mgr->rates = xrealloc(mgr->rates, (mgr->n_rates + 1) * sizeof(*mgr->rates));
                slot = &mgr->rates[mgr->n_rates++];
                snprintf(slot->key, sizeof(slot->key), "%s", key);
        }
        slot->at_ns = at_ns;
        slot->usage_ns = usage_ns;
        pthread_mutex_unlock(&mgr->rates_lock);
        return have;
}

static Runtime__V1__UInt64Value *u64(struct rm_arena *a, uint64_t v)
{
        Runtime__V1__UInt64Value *p = rm_arena_alloc(a, sizeof(*p));
        runtime__v1__uint64_value__init(p);
        p->value = v;
        return p;
}

static Runtime__V1__FilesystemUsage *layer_usage(const struct rm_container_manager *mgr,
                                                 const char *id, int64_t at, struct rm_arena *a)
{
        cleanup_free char *upper = xasprintf("%s/%s/upper", mgr->dir, id);
        uint64_t bytes, inodes;
        if (rm_tree_usage(upper, &bytes, &inodes) < 0)
                return NULL;
        Runtime__V1__FilesystemUsage *fs = rm_arena_alloc(a, sizeof(*fs));
        runtime__v1__filesystem_usage__init(fs);
        fs->timestamp = at;
        fs->fs_id = rm_arena_alloc(a, sizeof(*fs->fs_id));
        runtime__v1__filesystem_identifier__init(fs->fs_id);
        fs->fs_id->mountpoint = rm_arena_strdup(a, mgr->dir);
        fs->used_bytes = u64(a, bytes);
        fs->inodes_used = u64(a, inodes);
        return fs;
}

/* What is copied out under the manager's lock; the figures are read without it. */
struct pick {
        Runtime__V1__ContainerStats *stats;
        const char *id;
        const char *cgroup; /* NULL: not created or running, so no cgroup to read */
};

static void pick_init(struct pick *p, const struct ctr *c, struct rm_arena *a)
{
        Runtime__V1__ContainerAttributes *at = rm_arena_alloc(a, sizeof(*at));
        runtime__v1__container_attributes__init(at);
        at->id = rm_arena_strdup(a, c->id);
        at->metadata = rm__ctr_metadata(c, a);
        at->labels = (Runtime__V1__ContainerAttributes__LabelsEntry **)rm_pb_map_from_json(
            a, &runtime__v1__container_attributes__labels_entry__descriptor, c->labels,
            &at->n_labels);
        at->annotations =
            (Runtime__V1__ContainerAttributes__AnnotationsEntry **)rm_pb_map_from_json(
                a, &runtime__v1__container_attributes__annotations_entry__descriptor,
                c->annotations, &at->n_annotations);
        p->stats = rm_arena_alloc(a, sizeof(*p->stats));
        runtime__v1__container_stats__init(p->stats);
        p->stats->attributes = at;
        p->id = at->id;
        bool live = c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING ||
                    c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED;
        p->cgroup = live && *c->cgroup_path ? rm_arena_strdup(a, c->cgroup_path) : NULL;
}

static void fill(struct rm_container_manager *mgr, const struct rm_cgroup_host *cg, struct pick *p,
                 struct rm_arena *a)
{
        int64_t at = now_ns();
        Runtime__V1__ContainerStats *s = p->stats;
        s->writable_layer = layer_usage(mgr, p->id, at, a);
        struct rm_cgroup_stats cs;
        cleanup_error struct rm_error *ignored = NULL;
        if (p->cgroup == NULL || rm_cgroup_stats(cg, p->cgroup, &cs, &ignored) < 0)
                return;
        if (cs.has_cpu)
                s->cpu = rm_cpu_usage(mgr, p->id, &cs, at, a);
        if (cs.has_memory)
                s->memory = rm_memory_usage(&cs, at, a);
}

Runtime__V1__MemoryUsage *rm_memory_usage(const struct rm_cgroup_stats *cs, int64_t at,
                                          struct rm_arena *a)
{
        Runtime__V1__MemoryUsage *m = rm_arena_alloc(a, sizeof(*m));
        runtime__v1__memory_usage__init(m);
        m->timestamp = at;
        m->working_set_bytes = u64(a, cs->memory_working_set);
        m->usage_bytes = u64(a, cs->memory_usage);
        m->rss_bytes = u64(a, cs->memory_rss);
        m->page_faults = u64(a, cs->page_faults);
        m->major_page_faults = u64(a, cs->major_page_faults);
        if (cs->memory_limit > 0)
                m->available_bytes = u64(a, cs->memory_limit > cs->memory_working_set
                                                ? cs->memory_limit - cs->memory_working_set
                                                : 0);
        return m;
}

Runtime__V1__ContainerStats *rm_containers_stats_one(struct rm_container_manager *mgr,
                                                     const struct rm_cgroup_host *cg,
                                                     const char *id, struct rm_arena *a,
                                                     struct rm_error **err)
{
        struct pick p;
        pthread_mutex_lock(&mgr->lock);
        struct ctr *c = NULL;
        for (size_t i = 0; i < mgr->n && id && rm_id_valid(id); i++) {
                if (strcmp(mgr->ctrs[i]->id, id) == 0 && !mgr->ctrs[i]->creating)
                        c = mgr->ctrs[i];
        }
        if (c)
                pick_init(&p, c, a);
        pthread_mutex_unlock(&mgr->lock);
        if (c == NULL) {
                rm_error_set(err, RM_NOT_FOUND, "container %s not found", id ? id : "");
                return NULL;
        }
        fill(mgr, cg, &p, a);
        return p.stats;
}

Runtime__V1__ContainerStats **rm_containers_stats(struct rm_container_manager *mgr,
                                                  const struct rm_cgroup_host *cg,
                                                  const Runtime__V1__ContainerStatsFilter *sf,
                                                  struct rm_arena *a, size_t *n)
{
        /* The stats filter is the container filter without the state: the label entries
         * of both are protobuf-c map entries of the same layout. */
        Runtime__V1__ContainerFilter f;
        runtime__v1__container_filter__init(&f);
        if (sf) {
                f.id = sf->id;
                f.pod_sandbox_id = sf->pod_sandbox_id;
                f.n_label_selector = sf->n_label_selector;
                f.label_selector =
                    (Runtime__V1__ContainerFilter__LabelSelectorEntry **)sf->label_selector;
        }
        pthread_mutex_lock(&mgr->lock);
        struct pick *picks = rm_arena_alloc(a, sizeof(*picks) * (mgr->n ? mgr->n : 1));
        size_t k = 0;
        for (size_t i = 0; i < mgr->n; i++) {
                const struct ctr *c = mgr->ctrs[i];
                bool live = c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING ||
                            c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED;
                if (live && rm__ctr_matches(c, &f))
                        pick_init(&picks[k++], c, a);
        }
        pthread_mutex_unlock(&mgr->lock);
        Runtime__V1__ContainerStats **out =
            (Runtime__V1__ContainerStats **)rm_arena_ptrs(a, k ? k : 1);
        for (size_t i = 0; i < k; i++) {
                fill(mgr, cg, &picks[i], a);
                out[i] = picks[i].stats;
        }
        *n = k;
        return out;
}

/* The layer's size from a walk at most RM_LAYER_REUSE_NS old, walking it when there is
 * none; samples of containers gone for RATE_MAX_AGE_NS are dropped on the way. */
static bool layer_reused(struct rm_container_manager *mgr, struct rm_ctr_sample *s, int64_t now)
{
        bool found = false;
        pthread_mutex_lock(&mgr->rates_lock);
        size_t keep = 0;
        for (size_t i = 0; i < mgr->n_layers; i++) {
                struct layer_sample *l = &mgr->layers[i];
                if (strcmp(l->key, s->id) == 0 && now - l->at_ns <= RM_LAYER_REUSE_NS &&
                    now >= l->at_ns) {
                        s->layer_bytes = l->bytes;
                        s->layer_inodes = l->inodes;
                        s->layer_at = l->at_ns;
                        found = true;
                }
                if (now - l->at_ns <= RATE_MAX_AGE_NS)
                        mgr->layers[keep++] = *l;
        }
        mgr->n_layers = keep;
        pthread_mutex_unlock(&mgr->rates_lock);
        return found;
}

static void layer_walked(struct rm_container_manager *mgr, const struct rm_ctr_sample *s,
                         int64_t now)
{
        pthread_mutex_lock(&mgr->rates_lock);
        struct layer_sample *slot = NULL;
        for (size_t i = 0; i < mgr->n_layers && slot == NULL; i++)
                if (strcmp(mgr->layers[i].key, s->id) == 0)
                        slot = &mgr->layers[i];
        if (slot == NULL) {
                mgr->layers = xrealloc(mgr->layers, (mgr->n_layers + 1) * sizeof(*mgr->layers));
                slot = &mgr->layers[mgr->n_layers++];
                snprintf(slot->key, sizeof(slot->key), "%s", s->id);
        }
        slot->at_ns = now;
        slot->bytes = s->layer_bytes;
        slot->inodes = s->layer_inodes;
        pthread_mutex_unlock(&mgr->rates_lock);
}

struct rm_ctr_sample *rm_containers_samples(struct rm_container_manager *mgr,
                                            const struct rm_cgroup_host *cg, struct rm_arena *a,
                                            size_t *n)
{
        /* Copied under the lock, read from cgroupfs and the layer without it. */
        pthread_mutex_lock(&mgr->lock);
        size_t cap = mgr->n ? mgr->n : 1;
        struct rm_ctr_sample *out = rm_arena_alloc(a, sizeof(*out) * cap);
        const char **paths = rm_arena_alloc(a, sizeof(char *) * cap);
        size_t k = 0;
        for (size_t i = 0; i < mgr->n; i++) {
                const struct ctr *c = mgr->ctrs[i];
                bool live = c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING ||
                            c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED;
                if (!live || c->creating)
                        continue;
                struct rm_ctr_sample *s = &out[k];
                memset(s, 0, sizeof(*s));
                s->id = rm_arena_strdup(a, c->id);
                s->pod_id = rm_arena_strdup(a, c->pod_id);
                s->name = rm_arena_strdup(a, c->name);
                s->image = rm_arena_strdup(a, c->image);
                s->attempt = c->attempt;
                s->started_at = c->started_at;
                paths[k++] = *c->cgroup_path ? rm_arena_strdup(a, c->cgroup_path) : NULL;
        }
        pthread_mutex_unlock(&mgr->lock);
        for (size_t i = 0; i < k; i++) {
                struct rm_ctr_sample *s = &out[i];
                cleanup_error struct rm_error *ignored = NULL;
                s->have_cgroup = paths[i] && rm_cgroup_stats(cg, paths[i], &s->cs, &ignored) == 0;
                if (s->have_cgroup)
                        s->oom_kills = rm_cgroup_oom_kills(cg, paths[i]);
                int64_t now = now_ns();
                s->have_layer = layer_reused(mgr, s, now);
                if (!s->have_layer) {
                        cleanup_free char *upper = xasprintf("%s/%s/upper", mgr->dir, s->id);
                        s->have_layer =
                            rm_tree_usage(upper, &s->layer_bytes, &s->layer_inodes) == 0;
                        if (s->have_layer)
                                layer_walked(mgr, s, now);
                }
        }
        *n = k;
        return out;
}

Runtime__V1__CpuUsage *rm_cpu_usage(struct rm_container_manager *mgr, const char *key,
                                    const struct rm_cgroup_stats *cs, int64_t at,
                                    struct rm_arena *a)
{
        Runtime__V1__CpuUsage *cpu = rm_arena_alloc(a, sizeof(*cpu));
        runtime__v1__cpu_usage__init(cpu);
        cpu->timestamp = at;
        cpu->usage_core_nano_seconds = u64(a, cs->cpu_usage_ns);
        uint64_t rate;
        if (rm_containers_cpu_rate(mgr, key, at, cs->cpu_usage_ns, &rate))
                cpu->usage_nano_cores = u64(a, rate);
        return cpu;
}

int rm_containers_pod_usage(struct rm_container_manager *mgr, const struct rm_cgroup_host *cg,
                            const char *pod_id, struct rm_cgroup_stats *sum)
{
        memset(sum, 0, sizeof(*sum));
        pthread_mutex_lock(&mgr->lock);
        char **paths = xzalloc(sizeof(char *) * (mgr->n + 1));
        size_t k = 0;
        for (size_t i = 0; i < mgr->n; i++) {
                const struct ctr *c = mgr->ctrs[i];
                bool live = c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING ||
                            c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED;
                if (live && !c->creating && *c->cgroup_path && strcmp(c->pod_id, pod_id) == 0)
                        paths[k++] = xstrdup(c->cgroup_path);
        }
        pthread_mutex_unlock(&mgr->lock);
        int found = 0;
        for (size_t i = 0; i < k; i++) {
                struct rm_cgroup_stats cs;
                cleanup_error struct rm_error *ignored = NULL;
                if (rm_cgroup_stats(cg, paths[i], &cs, &ignored) == 0) {
                        found++;
                        sum->has_cpu |= cs.has_cpu;
                        sum->has_memory |= cs.has_memory;
                        sum->cpu_usage_ns += cs.cpu_usage_ns;
                        sum->memory_usage += cs.memory_usage;
                        sum->memory_working_set += cs.memory_working_set;
                        sum->memory_rss += cs.memory_rss;
                        sum->page_faults += cs.page_faults;
                        sum->major_page_faults += cs.major_page_faults;
                        sum->pids += cs.pids;
                }
                free(paths[i]);
        }
        free(paths);
        return found;
}
