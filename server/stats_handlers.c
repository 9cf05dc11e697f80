/* CRI stats calls (container and pod), UpdateContainerResources and ReopenContainerLog.
 * Container figures come from the container manager; a pod's from its cgroup parent when
 * it has one (else the sum of its containers), and its network counters from inside its
 * pinned network namespace. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api.pb-c.h"
#include "daemon.h"
#include "handlers.h"
#include "remora/cleanup.h"
#include "remora/containers.h"
#include "remora/fsutil.h"
#include "remora/xalloc.h"

#define REQ(type) const type *in = (const type *)req

static int64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static Runtime__V1__UInt64Value *u64(struct rm_arena *a, uint64_t v)
{
        Runtime__V1__UInt64Value *p = rm_arena_alloc(a, sizeof(*p));
        runtime__v1__uint64_value__init(p);
        p->value = v;
        return p;
}

RM_HANDLER(container_stats)
{
        REQ(Runtime__V1__ContainerStatsRequest);
        struct rm_daemon *d = call->daemon;
        cleanup_free char *id =
            rm_containers_resolve(d->containers, in->container_id ? in->container_id : "", err);
        if (id == NULL)
                return -1;
        Runtime__V1__ContainerStats *s =
            rm_containers_stats_one(d->containers, &d->cgroups, id, call->arena, err);
        if (s == NULL)
                return -1;
        Runtime__V1__ContainerStatsResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__container_stats_response__init(r);
        r->stats = s;
        *resp = &r->base;
        return 0;
}

RM_HANDLER(list_container_stats)
{
        (void)err;
        REQ(Runtime__V1__ListContainerStatsRequest);
        struct rm_daemon *d = call->daemon;
        Runtime__V1__ListContainerStatsResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__list_container_stats_response__init(r);
        r->stats =
            rm_containers_stats(d->containers, &d->cgroups, in->filter, call->arena, &r->n_stats);
        *resp = &r->base;
        return 0;
}

/* ---- pods ---- */

/* /proc/net/dev of a network namespace, read by a thread that joins it (a thread's
 * network namespace is its own; the daemon's other threads are not moved). */
struct netdev_read {
        const char *netns;
        char *text;
        int err;
};

static void *netdev_thread(void *arg)
{
        struct netdev_read *job = arg;
        int fd = open(job->netns, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) {
                job->err = errno;
                if (fd >= 0)
                        close(fd);
                return NULL;
        }
        close(fd);
        cleanup_error struct rm_error *e = NULL;
        job->text = rm_read_file("/proc/thread-self/net/dev", 1 << 20, NULL, &e);
        if (job->text == NULL)
                job->err = EIO;
        return NULL;
}

static Runtime__V1__NetworkInterfaceUsage *iface(struct rm_arena *a, const char *name,
                                                 const unsigned long long *v)
{
        Runtime__V1__NetworkInterfaceUsage *u = rm_arena_alloc(a, sizeof(*u));
        runtime__v1__network_interface_usage__init(u);
        u->name = rm_arena_strdup(a, name);
        /* /proc/net/dev columns: rx bytes packets errs ..., tx (from the 9th) bytes
         * packets errs ... */
        u->rx_bytes = u64(a, v[0]);
        u->rx_errors = u64(a, v[2]);
        u->tx_bytes = u64(a, v[8]);
        u->tx_errors = u64(a, v[10]);
        return u;
}

/* Every interface but lo; eth0 (or else the first) is the default one. */
static Runtime__V1__NetworkUsage *network_usage(const char *netns, int64_t at, struct rm_arena *a)
{
        struct netdev_read job = {.netns = netns};
        pthread_t t;
        if (pthread_create(&t, NULL, netdev_thread, &job) != 0)
                return NULL;
        pthread_join(t, NULL);
        if (job.text == NULL)
                return NULL;
        Runtime__V1__NetworkUsage *n = rm_arena_alloc(a, sizeof(*n));
        runtime__v1__network_usage__init(n);
        n->timestamp = at;
        size_t cap = 8;
        n->interfaces = (Runtime__V1__NetworkInterfaceUsage **)rm_arena_ptrs(a, cap);
        char *save = NULL;
        int line = 0;
        for (char *l = strtok_r(job.text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                if (line++ < 2)
                        continue; /* two header lines */
                char *colon = strchr(l, ':');
                if (colon == NULL)
                        continue;
                *colon = '\0';
                char *name = l;
                while (*name == ' ')
                        name++;
                unsigned long long v[16] = {0};
                if (sscanf(colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu",
                           &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9],
                           &v[10]) != 11 ||
                    strcmp(name, "lo") == 0)
                        continue;
                Runtime__V1__NetworkInterfaceUsage *u = iface(a, name, v);
                if (strcmp(name, "eth0") == 0)
                        n->default_interface = u;
                if (n->n_interfaces == cap)
                        break;
                n->interfaces[n->n_interfaces++] = u;
        }
        free(job.text);
        if (n->default_interface == NULL && n->n_interfaces > 0)
                n->default_interface = n->interfaces[0];
        return n;
}

static Runtime__V1__PodSandboxStats *pod_stats(struct rm_daemon *d,
                                               const Runtime__V1__PodSandbox *p, struct rm_arena *a)
{
        Runtime__V1__PodSandboxAttributes *at = rm_arena_alloc(a, sizeof(*at));
        runtime__v1__pod_sandbox_attributes__init(at);
        at->id = p->id;
        at->metadata = p->metadata;
        /* Both are protobuf-c map entries of the same layout (header, key, value). */
        at->n_labels = p->n_labels;
        at->labels = (Runtime__V1__PodSandboxAttributes__LabelsEntry **)p->labels;
        at->n_annotations = p->n_annotations;
        at->annotations = (Runtime__V1__PodSandboxAttributes__AnnotationsEntry **)p->annotations;
        Runtime__V1__PodSandboxStats *s = rm_arena_alloc(a, sizeof(*s));
        runtime__v1__pod_sandbox_stats__init(s);
        s->attributes = at;

        Runtime__V1__LinuxPodSandboxStats *l = rm_arena_alloc(a, sizeof(*l));
        runtime__v1__linux_pod_sandbox_stats__init(l);
        s->linux = l;
        Runtime__V1__ContainerStatsFilter f;
        runtime__v1__container_stats_filter__init(&f);
        f.pod_sandbox_id = p->id;
        l->containers = rm_containers_stats(d->containers, &d->cgroups, &f, a, &l->n_containers);

        struct rm_sandbox_view v;
        cleanup_error struct rm_error *e = NULL;
        if (rm_sandbox_view(d->sandboxes, p->id, a, &v, &e) < 0 || !v.ready)
                return s;
        int64_t now = now_ns();
        struct rm_cgroup_stats cs;
        bool have = false;
        if (v.cgroup_parent && *v.cgroup_parent) {
                cleanup_error struct rm_error *ignored = NULL;
                have = rm_cgroup_stats(&d->cgroups, v.cgroup_parent, &cs, &ignored) == 0;
        }
        if (!have)
                have = rm_containers_pod_usage(d->containers, &d->cgroups, p->id, &cs) > 0;
        if (have) {
                if (cs.has_cpu)
                        l->cpu = rm_cpu_usage(d->containers, p->id, &cs, now, a);
                if (cs.has_memory)
                        l->memory = rm_memory_usage(&cs, now, a);
                l->process = rm_arena_alloc(a, sizeof(*l->process));
                runtime__v1__process_usage__init(l->process);
                l->process->timestamp = now;
                l->process->process_count = u64(a, cs.pids);
        }
        if (v.netns_path)
                l->network = network_usage(v.netns_path, now, a);
        return s;
}

RM_HANDLER(pod_sandbox_stats)
{
        REQ(Runtime__V1__PodSandboxStatsRequest);
        struct rm_daemon *d = call->daemon;
        cleanup_free char *id =
            rm_sandbox_resolve(d->sandboxes, in->pod_sandbox_id ? in->pod_sandbox_id : "", err);
        if (id == NULL)
                return -1;
        Runtime__V1__PodSandboxFilter f;
        runtime__v1__pod_sandbox_filter__init(&f);
        f.id = id;
        Runtime__V1__ListPodSandboxResponse *l = rm_sandbox_list(d->sandboxes, &f, call->arena);
        if (l->n_items != 1)
                return rm_error_set(err, RM_NOT_FOUND, "pod sandbox %s not found", id);
        Runtime__V1__PodSandboxStatsResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__pod_sandbox_stats_response__init(r);
        r->stats = pod_stats(d, l->items[0], call->arena);
        *resp = &r->base;
        return 0;
}

RM_HANDLER(list_pod_sandbox_stats)
{
        (void)err;
        REQ(Runtime__V1__ListPodSandboxStatsRequest);
        struct rm_daemon *d = call->daemon;
        /* Ready pods only: a stopped pod has no cgroup or namespace left to read. */
        Runtime__V1__PodSandboxStateValue ready;
        runtime__v1__pod_sandbox_state_value__init(&ready);
        ready.state = RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY;
        Runtime__V1__PodSandboxFilter f;
        runtime__v1__pod_sandbox_filter__init(&f);
        f.state = &ready;
        if (in->filter) {
                f.id = in->filter->id;
                f.n_label_selector = in->filter->n_label_selector;
                f.label_selector = (Runtime__V1__PodSandboxFilter__LabelSelectorEntry **)
                                       in->filter->label_selector;
        }
        Runtime__V1__ListPodSandboxResponse *l = rm_sandbox_list(d->sandboxes, &f, call->arena);
        Runtime__V1__ListPodSandboxStatsResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__list_pod_sandbox_stats_response__init(r);
        r->stats = (Runtime__V1__PodSandboxStats **)rm_arena_ptrs(call->arena,
                                                                  l->n_items ? l->n_items : 1);
        for (size_t i = 0; i < l->n_items; i++)
                r->stats[r->n_stats++] = pod_stats(d, l->items[i], call->arena);
        *resp = &r->base;
        return 0;
}

/* ---- changes to running containers ---- */

RM_HANDLER(update_container_resources)
{
        REQ(Runtime__V1__UpdateContainerResourcesRequest);
        if (rm_containers_update(call->daemon->containers, in, err) < 0)
                return -1;
        Runtime__V1__UpdateContainerResourcesResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__update_container_resources_response__init(r);
        *resp = &r->base;
        return 0;
}

RM_HANDLER(reopen_container_log)
{
        REQ(Runtime__V1__ReopenContainerLogRequest);
        if (rm_containers_reopen_log(call->daemon->containers,
                                     in->container_id ? in->container_id : "", err) < 0)
                return -1;
        Runtime__V1__ReopenContainerLogResponse *r = rm_arena_alloc(call->arena, sizeof(*r));
        runtime__v1__reopen_container_log_response__init(r);
        *resp = &r->base;
        return 0;
}
