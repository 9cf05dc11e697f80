/* ListMetricDescriptors and ListPodSandboxMetrics (StreamPodSandboxMetrics shares the
 * latter through list_stream.c): the cAdvisor-named metric families that kubelet serves
 * on /metrics/cadvisor when its PodAndContainerStatsFromCRI gate is on.
 *
 * Where the list comes from (kubernetes/kubernetes):
 *  - pkg/kubelet/server/server.go: with PodAndContainerStatsFromCRI, /metrics/cadvisor is
 *    served by collectors.NewCRIMetricsCollector instead of cAdvisor; the cAdvisor sets it
 *    replaces are cpu, memory, cpuLoad, diskIO, disk, network, app, process and oom.
 *  - pkg/kubelet/metrics/collectors/cri_metrics.go: a Metric is dropped unless its name
 *    came back from ListMetricDescriptors; its label_values are matched to the
 *    descriptor's label_keys by position; kubelet itself appends "namespace", "pod" and
 *    "container" (newer releases), so a runtime must not send those keys.
 *  - pkg/kubelet/stats/cri_stats_provider.go reads pod and container figures from
 *    ListPodSandboxStats, not from these metrics: the two are kept consistent by reading
 *    the same cgroup files.
 * The base label keys ("id", "name", "image"), "cpu"="total", "interface", and
 * "failure_type"/"scope" follow cAdvisor's own exposition, as CRI-O sends them. Values
 * are read live (Metric.timestamp 0, as the CRI asks), but for the writable layer's size,
 * which is walked at most every RM_LAYER_REUSE_NS and then carries the walk's time. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.pb-c.h"
#include "daemon.h"
#include "handlers.h"
#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/xalloc.h"

enum family {
        CPU_USAGE,
        MEM_USAGE,
        MEM_WORKING_SET,
        MEM_RSS,
        MEM_FAILURES,
        MEM_LIMIT,
        PROCESSES,
        OOM_EVENTS,
        FS_USAGE,
        START_TIME,
        NET_RX_BYTES,
        NET_RX_PACKETS,
        NET_RX_ERRORS,
        NET_RX_DROPPED,
        NET_TX_BYTES,
        NET_TX_PACKETS,
        NET_TX_ERRORS,
        NET_TX_DROPPED,
        N_FAMILIES
};

#define COUNTER RUNTIME__V1__METRIC_TYPE__COUNTER
#define GAUGE   RUNTIME__V1__METRIC_TYPE__GAUGE

static const struct {
        const char *name, *help;
        Runtime__V1__MetricType type;
        const char *extra[2]; /* label keys after id, name, image */
} families[N_FAMILIES] = {
    [CPU_USAGE] = {"container_cpu_usage_seconds_total",
                   "Cumulative CPU time consumed, in whole seconds.",
                   COUNTER,
                   {"cpu"}},
    [MEM_USAGE] = {"container_memory_usage_bytes",
                   "Current memory usage in bytes, page cache included.",
                   GAUGE,
                   {NULL}},
    [MEM_WORKING_SET] = {"container_memory_working_set_bytes",
                         "Current working set in bytes (usage minus inactive file pages).",
                         GAUGE,
                         {NULL}},
    [MEM_RSS] = {"container_memory_rss",
                 "Anonymous and swap cache memory in bytes.",
                 GAUGE,
                 {NULL}},
    [MEM_FAILURES] = {"container_memory_failures_total",
                      "Cumulative page faults (pgfault) and major page faults (pgmajfault).",
                      COUNTER,
                      {"failure_type", "scope"}},
    [MEM_LIMIT] = {"container_spec_memory_limit_bytes",
                   "Memory limit in bytes, 0 when there is none.",
                   GAUGE,
                   {NULL}},
    [PROCESSES] = {"container_processes",
                   "Number of processes (tasks) in the cgroup.",
                   GAUGE,
                   {NULL}},
    [OOM_EVENTS] = {"container_oom_events_total",
                    "Processes the kernel's OOM killer killed in the cgroup.",
                    COUNTER,
                    {NULL}},
    [FS_USAGE] = {"container_fs_usage_bytes",
                  "Bytes used by the container's writable layer.",
                  GAUGE,
                  {NULL}},
    [START_TIME] = {"container_start_time_seconds",
                    "When the container started, in seconds since the Unix epoch.",
                    GAUGE,
                    {NULL}},
    [NET_RX_BYTES] = {"container_network_receive_bytes_total",
                      "Cumulative count of bytes received.",
                      COUNTER,
                      {"interface"}},
    [NET_RX_PACKETS] = {"container_network_receive_packets_total",
                        "Cumulative count of packets received.",
                        COUNTER,
                        {"interface"}},
    [NET_RX_ERRORS] = {"container_network_receive_errors_total",
                       "Cumulative count of errors encountered while receiving.",
                       COUNTER,
                       {"interface"}},
    [NET_RX_DROPPED] = {"container_network_receive_packets_dropped_total",
                        "Cumulative count of packets dropped while receiving.",
                        COUNTER,
                        {"interface"}},
    [NET_TX_BYTES] = {"container_network_transmit_bytes_total",
                      "Cumulative count of bytes transmitted.",
                      COUNTER,
                      {"interface"}},
    [NET_TX_PACKETS] = {"container_network_transmit_packets_total",
                        "Cumulative count of packets transmitted.",
                        COUNTER,
                        {"interface"}},
    [NET_TX_ERRORS] = {"container_network_transmit_errors_total",
                       "Cumulative count of errors encountered while transmitting.",
                       COUNTER,
                       {"interface"}},
    [NET_TX_DROPPED] = {"container_network_transmit_packets_dropped_total",
                        "Cumulative count of packets dropped while transmitting.",
                        COUNTER,
                        {"interface"}},
};

static const char *const base_keys[] = {"id", "name", "image"};
#define N_BASE 3

/* /proc/net/dev columns of each NET_ family, in family order. */
static const int net_columns[] = {0, 1, 2, 3, 8, 9, 10, 11};
/* Interfaces reported per pod, at most (a pod has eth0, sometimes a second). */
#define MAX_IFACES 8

static size_t n_extra(enum family f)
{
        return families[f].extra[0] == NULL ? 0 : families[f].extra[1] == NULL ? 1 : 2;
}

RM_HANDLER(list_metric_descriptors)
{
        (void)req;
        (void)err;
        struct rm_arena *a = call->arena;
        Runtime__V1__ListMetricDescriptorsResponse *r = rm_arena_alloc(a, sizeof(*r));
        runtime__v1__list_metric_descriptors_response__init(r);
        r->descriptors = (Runtime__V1__MetricDescriptor **)rm_arena_ptrs(a, N_FAMILIES);
        for (size_t f = 0; f < N_FAMILIES; f++) {
                Runtime__V1__MetricDescriptor *m = rm_arena_alloc(a, sizeof(*m));
                runtime__v1__metric_descriptor__init(m);
                m->name = (char *)families[f].name;
                m->help = (char *)families[f].help;
                m->n_label_keys = N_BASE + n_extra(f);
                m->label_keys = (char **)rm_arena_ptrs(a, m->n_label_keys);
                for (size_t k = 0; k < N_BASE; k++)
                        m->label_keys[k] = (char *)base_keys[k];
                for (size_t k = 0; k < n_extra(f); k++)
                        m->label_keys[N_BASE + k] = (char *)families[f].extra[k];
                r->descriptors[r->n_descriptors++] = m;
        }
        *resp = &r->base;
        return 0;
}

/* ---- building metrics ---- */

/* The metrics of one pod or container: its label values and where they go. */
struct sink {
        struct rm_arena *a;
        const char *base[N_BASE];
        Runtime__V1__Metric **v;
        size_t n, cap;
};

static void sink_init(struct sink *s, struct rm_arena *a, size_t cap, const char *id,
                      const char *name, const char *image)
{
        s->a = a;
        s->base[0] = id;
        s->base[1] = name;
        s->base[2] = image;
        s->v = (Runtime__V1__Metric **)rm_arena_ptrs(a, cap);
        s->n = 0;
        s->cap = cap;
}

/* The last metric emitted, to give it a timestamp when its figure was not read live. */
static Runtime__V1__Metric *last(struct sink *s)
{
        return s->n ? s->v[s->n - 1] : NULL;
}

static void emit(struct sink *s, enum family f, uint64_t value, const char *x0, const char *x1)
{
        if (s->n == s->cap)
                return;
        Runtime__V1__Metric *m = rm_arena_alloc(s->a, sizeof(*m));
        runtime__v1__metric__init(m);
        m->name = (char *)families[f].name;
        m->metric_type = families[f].type;
        m->n_label_values = N_BASE + n_extra(f);
        m->label_values = (char **)rm_arena_ptrs(s->a, m->n_label_values);
        for (size_t k = 0; k < N_BASE; k++)
                m->label_values[k] = (char *)s->base[k];
        const char *extra[2] = {x0, x1};
        for (size_t k = 0; k < n_extra(f); k++)
                m->label_values[N_BASE + k] = (char *)(extra[k] ? extra[k] : "");
        m->value = rm_arena_alloc(s->a, sizeof(*m->value));
        runtime__v1__uint64_value__init(m->value);
        m->value->value = value;
        s->v[s->n++] = m;
}

/* The families every cgroup has: CPU, memory, processes, OOM kills. */
static void emit_cgroup(struct sink *s, const struct rm_cgroup_stats *cs, uint64_t oom_kills,
                        bool have_pids)
{
        if (cs->has_cpu)
                emit(s, CPU_USAGE, cs->cpu_usage_ns / 1000000000ULL, "total", NULL);
        if (cs->has_memory) {
                emit(s, MEM_USAGE, cs->memory_usage, NULL, NULL);
                emit(s, MEM_WORKING_SET, cs->memory_working_set, NULL, NULL);
                emit(s, MEM_RSS, cs->memory_rss, NULL, NULL);
                /* memory.stat's figures count the cgroup's descendants too */
                emit(s, MEM_FAILURES, cs->page_faults, "pgfault", "hierarchy");
                emit(s, MEM_FAILURES, cs->major_page_faults, "pgmajfault", "hierarchy");
                emit(s, MEM_LIMIT, cs->memory_limit, NULL, NULL);
                emit(s, OOM_EVENTS, oom_kills, NULL, NULL);
        }
        if (have_pids)
                emit(s, PROCESSES, cs->pids, NULL, NULL);
}

/* One interface line of /proc/net/dev ("  eth0: 1 2 3 ..."). */
static void emit_netdev(struct sink *s, char *text)
{
        char *save = NULL;
        int line = 0;
        size_t ifaces = 0;
        for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                if (line++ < 2)
                        continue; /* two header lines */
                char *colon = strchr(l, ':');
                if (colon == NULL)
                        continue;
                *colon = '\0';
                char *name = l + strspn(l, " ");
                unsigned long long v[12] = {0};
                if (strcmp(name, "lo") == 0 ||
                    sscanf(colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu",
                           &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9],
                           &v[10], &v[11]) != 12)
                        continue;
                if (ifaces++ == MAX_IFACES)
                        break;
                const char *iface = rm_arena_strdup(s->a, name);
                for (int f = NET_RX_BYTES; f <= NET_TX_DROPPED; f++)
                        emit(s, (enum family)f, v[net_columns[f - NET_RX_BYTES]], iface, NULL);
        }
}

/* Read /proc/net/dev inside each pod's network namespace, all on one short-lived thread
 * (a thread's network namespace is its own; the daemon's other threads never move). */
struct netdev_job {
        size_t n;
        const char **paths; /* NULL: the pod has the host's network */
        char **texts;       /* malloc'd, NULL when unreadable */
};

static void *netdev_reader(void *arg)
{
        struct netdev_job *job = arg;
        for (size_t i = 0; i < job->n; i++) {
                if (job->paths[i] == NULL)
                        continue;
                cleanup_close int fd = open(job->paths[i], O_RDONLY | O_CLOEXEC);
                if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
                        continue;
                cleanup_error struct rm_error *ignored = NULL;
                job->texts[i] = rm_read_file("/proc/thread-self/net/dev", 1 << 20, NULL, &ignored);
        }
        return NULL;
}

/* "k8s_<container>_<pod>_<namespace>_<uid>_<attempt>", the name cAdvisor shows. */
static const char *container_label(struct rm_arena *a, const struct rm_ctr_sample *c,
                                   const Runtime__V1__PodSandbox *p)
{
        const Runtime__V1__PodSandboxMetadata *m = p->metadata;
        return rm_arena_printf(a, "k8s_%s_%s_%s_%s_%u", c->name, m ? m->name : "",
                               m ? m->namespace_ : "", m ? m->uid : "", c->attempt);
}

static Runtime__V1__ContainerMetrics *container_metrics(struct rm_arena *a,
                                                        const struct rm_ctr_sample *c,
                                                        const Runtime__V1__PodSandbox *p,
                                                        bool have_pids)
{
        Runtime__V1__ContainerMetrics *cm = rm_arena_alloc(a, sizeof(*cm));
        runtime__v1__container_metrics__init(cm);
        cm->container_id = (char *)c->id;
        struct sink s;
        sink_init(&s, a, N_FAMILIES + 2, c->id, container_label(a, c, p), c->image);
        if (c->have_cgroup)
                emit_cgroup(&s, &c->cs, c->oom_kills, have_pids);
        if (c->have_layer) {
                emit(&s, FS_USAGE, c->layer_bytes, NULL, NULL);
                if (last(&s) && c->layer_at)
                        last(&s)->timestamp = c->layer_at; /* a reused walk says when */
        }
        if (c->started_at > 0)
                emit(&s, START_TIME, (uint64_t)c->started_at / 1000000000ULL, NULL, NULL);
        cm->metrics = s.v;
        cm->n_metrics = s.n;
        return cm;
}

/* The pod's own cgroup when it has one, else the sum of its containers'. */
static bool pod_cgroup_figures(struct rm_daemon *d, const char *cgroup_parent,
                               const struct rm_ctr_sample *ctrs, size_t n, const char *pod_id,
                               struct rm_cgroup_stats *cs, uint64_t *oom)
{
        cleanup_error struct rm_error *ignored = NULL;
        if (cgroup_parent && rm_cgroup_stats(&d->cgroups, cgroup_parent, cs, &ignored) == 0) {
                *oom = rm_cgroup_oom_kills(&d->cgroups, cgroup_parent);
                return true;
        }
        memset(cs, 0, sizeof(*cs));
        *oom = 0;
        size_t found = 0;
        for (size_t i = 0; i < n; i++) {
                const struct rm_ctr_sample *c = &ctrs[i];
                if (!c->have_cgroup || strcmp(c->pod_id, pod_id) != 0)
                        continue;
                found++;
                cs->has_cpu |= c->cs.has_cpu;
                cs->has_memory |= c->cs.has_memory;
                cs->cpu_usage_ns += c->cs.cpu_usage_ns;
                cs->memory_usage += c->cs.memory_usage;
                cs->memory_working_set += c->cs.memory_working_set;
                cs->memory_rss += c->cs.memory_rss;
                cs->page_faults += c->cs.page_faults;
                cs->major_page_faults += c->cs.major_page_faults;
                cs->pids += c->cs.pids;
                *oom += c->oom_kills;
        }
        return found > 0;
}

RM_HANDLER(list_pod_sandbox_metrics)
{
        (void)req;
        (void)err;
        struct rm_daemon *d = call->daemon;
        struct rm_arena *a = call->arena;
        /* Ready pods only, as ListPodSandboxStats: a stopped pod has nothing to read. */
        Runtime__V1__PodSandboxStateValue ready = RUNTIME__V1__POD_SANDBOX_STATE_VALUE__INIT;
        ready.state = RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY;
        Runtime__V1__PodSandboxFilter f = RUNTIME__V1__POD_SANDBOX_FILTER__INIT;
        f.state = &ready;
        Runtime__V1__ListPodSandboxResponse *l = rm_sandbox_list(d->sandboxes, &f, a);
        size_t n_ctrs = 0;
        struct rm_ctr_sample *ctrs = rm_containers_samples(d->containers, &d->cgroups, a, &n_ctrs);
        bool have_pids = d->cgroups.mode == RM_CGROUP_V2 || d->cgroups.pids[0];

        size_t np = l->n_items;
        struct rm_sandbox_view *views = rm_arena_alloc(a, sizeof(*views) * (np ? np : 1));
        bool *viewed = rm_arena_alloc(a, sizeof(bool) * (np ? np : 1));
        struct netdev_job job = {.n = np};
        job.paths = rm_arena_alloc(a, sizeof(char *) * (np ? np : 1));
        job.texts = rm_arena_alloc(a, sizeof(char *) * (np ? np : 1));
        for (size_t i = 0; i < np; i++) {
                cleanup_error struct rm_error *gone = NULL;
                viewed[i] =
                    rm_sandbox_view(d->sandboxes, l->items[i]->id, a, &views[i], &gone) == 0;
                job.paths[i] = viewed[i] ? views[i].netns_path : NULL;
        }
        pthread_t t;
        if (np > 0 && pthread_create(&t, NULL, netdev_reader, &job) == 0)
                pthread_join(t, NULL);

        Runtime__V1__ListPodSandboxMetricsResponse *r = rm_arena_alloc(a, sizeof(*r));
        runtime__v1__list_pod_sandbox_metrics_response__init(r);
        r->pod_metrics = (Runtime__V1__PodSandboxMetrics **)rm_arena_ptrs(a, np ? np : 1);
        for (size_t i = 0; i < np; i++) {
                const Runtime__V1__PodSandbox *p = l->items[i];
                Runtime__V1__PodSandboxMetrics *pm = rm_arena_alloc(a, sizeof(*pm));
                runtime__v1__pod_sandbox_metrics__init(pm);
                pm->pod_sandbox_id = p->id;
                struct sink s;
                sink_init(&s, a, N_FAMILIES + 8 * MAX_IFACES, p->id, "POD", "");
                struct rm_cgroup_stats cs;
                uint64_t oom = 0;
                const char *parent = viewed[i] ? views[i].cgroup_parent : NULL;
                if (pod_cgroup_figures(d, parent, ctrs, n_ctrs, p->id, &cs, &oom))
                        emit_cgroup(&s, &cs, oom, have_pids);
                if (job.texts[i]) {
                        emit_netdev(&s, job.texts[i]);
                        free(job.texts[i]);
                }
                pm->metrics = s.v;
                pm->n_metrics = s.n;
                size_t mine = 0;
                for (size_t k = 0; k < n_ctrs; k++)
                        mine += strcmp(ctrs[k].pod_id, p->id) == 0;
                pm->container_metrics =
                    (Runtime__V1__ContainerMetrics **)rm_arena_ptrs(a, mine ? mine : 1);
                for (size_t k = 0; k < n_ctrs; k++)
                        if (strcmp(ctrs[k].pod_id, p->id) == 0)
                                pm->container_metrics[pm->n_container_metrics++] =
                                    container_metrics(a, &ctrs[k], p, have_pids);
                r->pod_metrics[r->n_pod_metrics++] = pm;
        }
        *resp = &r->base;
        return 0;
}
