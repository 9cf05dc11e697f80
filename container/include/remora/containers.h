/* The container manager: CRI containers from CreateContainer to RemoveContainer. It owns
 * the records (meta store kind "containers"), the in-memory index every Status and List
 * call is served from, and the state machine; images, pods and the OCI runtime are
 * reached through the ops below, so the server wires the real ones and tests fakes. */
#ifndef REMORA_CONTAINERS_H
#define REMORA_CONTAINERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "api.pb-c.h"
#include "remora/arena.h"
#include "remora/cancel.h"
#include "remora/cgroups.h"
#include "remora/error.h"
#include "remora/spec.h"
#include "remora/store.h"

/* An image as a container uses it. Strings live in the arena passed to image_lookup. */
struct rm_ctr_image {
        const char *id;  /* "sha256:<config digest>" */
        const char *ref; /* a name the image is known by (repo digest or tag) */
        struct rm_spec_image config;
        char **volumes; /* the image's VOLUME paths: made as empty directories */
        size_t n_volumes;
};

/* A pod as its containers see it. Strings live in the arena passed to pod_lookup. */
struct rm_ctr_pod {
        bool ready;
        const char *log_directory;   /* "" when the pod keeps no logs */
        const char *runtime_handler; /* "" for the default */
        const char *pid_ns_path;     /* the infra process's PID namespace, NULL without */
        struct rm_spec_pod spec;     /* namespaces, pod files, cgroup parent */
};

/* Everything a runtime needs to create a container (runc create under a monitor). */
struct rm_ctr_create {
        const char *id;
        const char *bundle;   /* holds config.json */
        const char *log_path; /* CRI log file, NULL for none */
        const char *runtime_handler;
        bool tty;
        bool stdin;
        bool stdin_once;
};

/* The result of a command run to completion in a container. */
struct rm_ctr_exec_result {
        int exit_code;
        uint8_t *out; /* malloc'd, may be NULL */
        size_t out_len;
        uint8_t *err;
        size_t err_len;
        bool timed_out;
};

struct rm_container_ops {
        void *ctx;
        /* Resolve a CRI image reference (name, ID or digest) to a pulled image. */
        int (*image_lookup)(void *ctx, const char *ref, struct rm_arena *a,
                            struct rm_ctr_image *out, struct rm_error **err);
        /* Mount the image's layers at target with upper and work dirs under dir, and hold
         * the image while mounted. With userns (NULL: the host's), the layers are seen
         * through idmapped mounts of it and what the container writes is owned by its root. */
        int (*rootfs_mount)(void *ctx, const char *image_id, const char *dir, const char *target,
                            const struct rm_spec_userns *userns, struct rm_error **err);
        int (*rootfs_unmount)(void *ctx, const char *image_id, const char *dir, const char *target,
                              struct rm_error **err);
        /* The unpacked layer directories of a pulled image, top first, for an image
         * volume; NOT_FOUND when not pulled. May be NULL: image volumes are refused. */
        int (*image_layers)(void *ctx, const char *image_id, struct rm_arena *a, char ***dirs,
                            size_t *n, struct rm_error **err);
        /* The pod a container joins, by ID or unique prefix; NOT_FOUND when there is none.
         * out->spec.pod_id is the pod's full ID. */
        int (*pod_lookup)(void *ctx, const char *pod_id, struct rm_arena *a, struct rm_ctr_pod *out,
                          struct rm_error **err);

        /* The OCI runtime behind a monitor process. */
        int (*create)(void *ctx, const struct rm_ctr_create *c, pid_t *pid, struct rm_error **err);
        int (*start)(void *ctx, const char *id, struct rm_error **err);
        int (*kill)(void *ctx, const char *id, int sig, struct rm_error **err);
        /* Remove the runtime's state of a stopped (or, with force, any) container. */
        int (*delete)(void *ctx, const char *id, bool force, struct rm_error **err);
        /* 1 with the exit code and time (ns) once the container's process (pid) has
         * exited, 0 while it runs, -1 on error. An exit recorded for another pid (a
         * previous monitor's) is not this process's: 0. */
        int (*exit_status)(void *ctx, const char *id, pid_t pid, int *code, int64_t *finished_ns,
                           struct rm_error **err);
        int (*exec_sync)(void *ctx, const char *id, char *const *argv, int64_t timeout_s,
                         const struct rm_cancel *cancel, struct rm_ctr_exec_result *res,
                         struct rm_error **err);
        /* Remove the cgroup at path from every hierarchy (a container's whose runtime
         * state is gone, after a reboot); may be NULL. */
        void (*cgroup_remove)(void *ctx, const char *cgroup_path);
        /* Whether the OOM killer struck in the cgroup at path (the container's, looked at
         * once it exited); may be NULL. */
        bool (*oom_killed)(void *ctx, const char *cgroup_path);
        /* Apply OCI LinuxResources (JSON) to a created or running container. */
        int (*update)(void *ctx, const char *id, const char *resources_json, struct rm_error **err);
        /* Have the container's monitor reopen its log file (bundle: its OCI bundle). */
        int (*reopen_log)(void *ctx, const char *id, const char *bundle, struct rm_error **err);
        /* Told of every change (created, started, stopped, deleted), after the record is
         * written and outside the manager's locks; may be NULL. */
        void (*event)(void *ctx, const char *container_id, const char *pod_id,
                      Runtime__V1__ContainerEventType type);
        /* A directory in which a file named after the container appears (created or
         * renamed in) when it exits, so the manager notices exits without polling; NULL
         * to rely on polling only. */
        const char *exit_dir;
        /* The runtime's state directory (runc --root): one entry per container it has. */
        const char *const *runtime_roots; /* every handler's runc --root, NULL-ended */
};

struct rm_container_manager;

/* Open the manager: per-container directories under <root>/containers, bundles under
 * <state>/containers. Loads every record and reconciles it with the runtime: containers
 * that exited while the daemon was away are marked EXITED with their exit status. */
struct rm_container_manager *rm_containers_open(const char *root, const char *state,
                                                struct rm_store *store,
                                                const struct rm_container_ops *ops,
                                                const struct rm_spec_host *host,
                                                struct rm_error **err);
void rm_containers_close(struct rm_container_manager *mgr);

/* CreateContainer. A request with the (pod, name, attempt) of an existing container is
 * ALREADY_EXISTS naming it, except an identical request whose first answer never reached
 * its client (the client's deadline passed or it cancelled while the container was being
 * made): that retry gets the first container's ID. A retry arriving while the first call
 * is still at work waits for it (until cancel, which may be NULL, fires). The caller
 * reports with rm_containers_answered whether the ID it got reached its client. Nothing
 * is left behind on failure. */
int rm_containers_create(struct rm_container_manager *mgr,
                         const Runtime__V1__CreateContainerRequest *req,
                         const struct rm_cancel *cancel, char **id, struct rm_error **err);
/* Whether the answer carrying container id (from rm_containers_create) reached its
 * client. Known in memory only: after a restart every container counts as delivered. */
void rm_containers_answered(struct rm_container_manager *mgr, const char *id, bool delivered);
int rm_containers_start(struct rm_container_manager *mgr, const char *id, struct rm_error **err);
/* SIGTERM (or the container's stop signal), SIGKILL after timeout seconds; stopping an
 * exited container succeeds. cancel (may be NULL) is the caller's token. */
int rm_containers_stop(struct rm_container_manager *mgr, const char *id, int64_t timeout,
                       const struct rm_cancel *cancel, struct rm_error **err);
/* How many things start-up repaired (records rebuilt, runtime state, exit files and
 * directories removed, containers marked exited), for /metrics. */
size_t rm_containers_repairs(struct rm_container_manager *mgr);

/* Removing a container that does not exist succeeds, as the CRI requires. */
int rm_containers_remove(struct rm_container_manager *mgr, const char *id, struct rm_error **err);

/* ContainerStatus response built in the arena. NOT_FOUND for an unknown ID. */
Runtime__V1__ContainerStatusResponse *rm_containers_status(struct rm_container_manager *mgr,
                                                           const char *id, bool verbose,
                                                           struct rm_arena *a,
                                                           struct rm_error **err);
/* ListContainers response built in the arena. */
Runtime__V1__ListContainersResponse *rm_containers_list(struct rm_container_manager *mgr,
                                                        const Runtime__V1__ContainerFilter *f,
                                                        struct rm_arena *a);
/* The same response, encoded (malloc'd, *len bytes): each container's item is packed
 * once and kept until its state changes, so a list is mostly a copy. */
uint8_t *rm_containers_list_packed(struct rm_container_manager *mgr,
                                   const Runtime__V1__ContainerFilter *f, size_t *len);
/* ExecSync. cancel (may be NULL): once it is set the exec's processes are killed. */
int rm_containers_exec_sync(struct rm_container_manager *mgr,
                            const Runtime__V1__ExecSyncRequest *req, const struct rm_cancel *cancel,
                            struct rm_ctr_exec_result *res, struct rm_error **err);

/* UpdateContainerResources: validated as at create, applied by the runtime, recorded
 * so ContainerStatus.resources shows them. FAILED_PRECONDITION once exited. */
int rm_containers_update(struct rm_container_manager *mgr,
                         const Runtime__V1__UpdateContainerResourcesRequest *req,
                         struct rm_error **err);
/* ReopenContainerLog: FAILED_PRECONDITION unless running with a log file. */
int rm_containers_reopen_log(struct rm_container_manager *mgr, const char *id,
                             struct rm_error **err);

/* Usage figures of containers (ContainerStats), read from cgroupfs and the writable
 * layer. A figure the host does not report is left unset. */
Runtime__V1__ContainerStats *rm_containers_stats_one(struct rm_container_manager *mgr,
                                                     const struct rm_cgroup_host *cg,
                                                     const char *id, struct rm_arena *a,
                                                     struct rm_error **err);
/* Every container matching the filter (ID prefix, pod ID prefix, labels). */
Runtime__V1__ContainerStats **rm_containers_stats(struct rm_container_manager *mgr,
                                                  const struct rm_cgroup_host *cg,
                                                  const Runtime__V1__ContainerStatsFilter *f,
                                                  struct rm_arena *a, size_t *n);

/* One created or running container's figures, for ListPodSandboxMetrics: read once per
 * container, as ListContainerStats reads them. Strings live in the arena. */
struct rm_ctr_sample {
        const char *id, *pod_id, *name, *image; /* image: the reference CreateContainer named */
        uint32_t attempt;
        int64_t started_at; /* ns, 0 until started */
        bool have_cgroup;
        struct rm_cgroup_stats cs;
        uint64_t oom_kills;
        bool have_layer; /* the writable layer's size was read */
        uint64_t layer_bytes, layer_inodes;
        int64_t layer_at; /* ns: when the layer was walked, 0 when walked by this call */
};
/* The writable layer is walked at most once per RM_LAYER_REUSE_NS per container: a walk
 * per scrape would cost as much as every other figure together (cAdvisor, too, sizes
 * layers on its own schedule, not per request). */
#define RM_LAYER_REUSE_NS (10LL * 1000000000LL)
/* Every created or running container, in no particular order. */
struct rm_ctr_sample *rm_containers_samples(struct rm_container_manager *mgr,
                                            const struct rm_cgroup_host *cg, struct rm_arena *a,
                                            size_t *n);

/* MemoryUsage from a cgroup's figures; available_bytes only when a limit is set. */
Runtime__V1__MemoryUsage *rm_memory_usage(const struct rm_cgroup_stats *cs, int64_t at,
                                          struct rm_arena *a);

/* CpuUsage from a cgroup's figures, usage_nano_cores against the previous sample of key. */
Runtime__V1__CpuUsage *rm_cpu_usage(struct rm_container_manager *mgr, const char *key,
                                    const struct rm_cgroup_stats *cs, int64_t at,
                                    struct rm_arena *a);
/* The summed cgroup figures of a pod's created and running containers (for a pod with no
 * cgroup of its own); returns how many containers were read. */
int rm_containers_pod_usage(struct rm_container_manager *mgr, const struct rm_cgroup_host *cg,
                            const char *pod_id, struct rm_cgroup_stats *sum);

/* The CPU rate between two samples of a cgroup's cumulative usage, kept per key (a
 * container or pod ID) by the manager: nano-cores since the previous sample, or false
 * for the first sample of that key. */
bool rm_containers_cpu_rate(struct rm_container_manager *mgr, const char *key, int64_t now_ns,
                            uint64_t usage_ns, uint64_t *nano_cores);

/* Whether any container (in whatever state, one being created included) uses image_id:
 * as its root filesystem (image_id) or as an image volume (the record's image_volumes).
 * RemoveImage keeps such an image's layers until the last user is removed. */
bool rm_containers_use_image(struct rm_container_manager *mgr, const char *image_id);

/* IDs of the containers in pod_id (for pod stop/remove); a malloc'd NULL-terminated
 * array. */
char **rm_containers_of_pod(struct rm_container_manager *mgr, const char *pod_id);

/* RemoveContainer leaves the runtime's delete (runc's state and the container's cgroup)
 * to the watcher thread. This waits until none is pending for pod_id, so the pod's
 * cgroup and namespaces can go: RemovePodSandbox calls it after removing the containers. */
void rm_containers_settle(struct rm_container_manager *mgr, const char *pod_id);

/* A full ID from a unique prefix (as crictl users type them). NOT_FOUND or
 * INVALID_ARGUMENT (ambiguous, naming the candidates' count). */
char *rm_containers_resolve(struct rm_container_manager *mgr, const char *id_or_prefix,
                            struct rm_error **err);

#endif
