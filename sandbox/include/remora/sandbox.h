/* Pod sandboxes: pinned namespaces, pod files, the pod state machine. Networking and the
 * infra process (for pods sharing one PID namespace) are reached through hooks the
 * server supplies, so this module depends on neither. */
#ifndef REMORA_SANDBOX_H
#define REMORA_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <json-c/json.h>

#include "api.pb-c.h"
#include "remora/arena.h"
#include "remora/cancel.h"
#include "remora/error.h"
#include "remora/store.h"

#define RM_POD_MAX_IPS 2

/* What the infra process needs: the pod's pinned namespaces to join and its cgroup. */
struct rm_infra_request {
        const char *pod_id;
        const char *netns_path; /* NULL: the host's */
        const char *ipcns_path;
        const char *utsns_path;
        const char *userns_path; /* NULL: the host's */
        uint32_t uid_host, uid_len, gid_host, gid_len;
        const char *cgroup_parent;
        const char *hostname;
        const char *runtime_handler; /* the pod's RuntimeClass handler, "" for the default */
};

struct rm_sandbox_hooks {
        void *ctx;
        /* Give the pod at netns_path its network; fill ips (malloc'd strings, primary
         * first). With no pod network this succeeds with *n_ips 0. */
        int (*net_setup)(void *ctx, const char *pod_id, const Runtime__V1__PodSandboxConfig *cfg,
                         const char *netns_path, char *ips[RM_POD_MAX_IPS], size_t *n_ips,
                         struct rm_error **err);
        int (*net_teardown)(void *ctx, const char *pod_id, const char *netns_path,
                            struct rm_error **err);
        /* Size the pod's cgroup (cgroup_parent) for its containers plus its overhead,
         * making it when missing (*created says so); NULL to skip. */
        int (*pod_cgroup)(void *ctx, const char *cgroup_parent,
                          const Runtime__V1__LinuxContainerResources *resources,
                          const Runtime__V1__LinuxContainerResources *overhead, bool *created,
                          struct rm_error **err);
        /* Resize the pod's existing cgroup as pod_cgroup does; FAILED_PRECONDITION when
         * it is gone. NULL: UpdatePodSandboxResources is refused. */
        int (*pod_cgroup_update)(void *ctx, const char *cgroup_parent,
                                 const Runtime__V1__LinuxContainerResources *resources,
                                 const Runtime__V1__LinuxContainerResources *overhead,
                                 struct rm_error **err);
        /* Whether the cgroup exists already (in any hierarchy): when it does not, Remora
         * or runc makes it and RemovePodSandbox removes it. NULL: never ours. */
        bool (*pod_cgroup_exists)(void *ctx, const char *cgroup_parent);
        /* Remove a pod cgroup Remora or runc made, from every hierarchy; missing is
         * fine. */
        void (*pod_cgroup_remove)(void *ctx, const char *cgroup_parent);
        /* Start the pod's infra process (its PID 1); NULL when this build has none. */
        int (*infra_start)(void *ctx, const struct rm_infra_request *req, pid_t *pid,
                           struct rm_error **err);
        /* Stop and remove it; both succeed when there is nothing to do. */
        int (*infra_stop)(void *ctx, const char *pod_id, struct rm_error **err);
        int (*infra_remove)(void *ctx, const char *pod_id, struct rm_error **err);
        /* Why this host cannot give a pod its own user namespace (userns_options POD is
         * then FAILED_PRECONDITION with this reason); NULL when it can. */
        const char *userns_unavailable;
        /* At start-up: whether the pod's infra process (pid) still runs. */
        bool (*infra_alive)(void *ctx, const char *pod_id, pid_t pid);
        /* At start-up: whether the pod's network (veth, address, port mappings) is all
         * there; NULL: assumed so. */
        bool (*net_present)(void *ctx, const char *pod_id);
};

struct rm_sandbox_manager;

/* How many things start-up repaired (runs undone, stops finished, damaged records,
 * leftover pins and directories removed), for /metrics. */
size_t rm_sandbox_repairs(struct rm_sandbox_manager *mgr);

/* Open the sandbox manager: pod files under <root>/sandboxes/<id>, pins and shm under
 * <state>. section is the config file's "sandbox" object (NULL when absent). Loads the
 * records and repairs what a crash left (each repair logged): a RunPodSandbox that did
 * not finish is undone from its intent record; a READY pod missing any part (pin, shm,
 * network, infra process) becomes NOTREADY and the rest of it is torn down, as a
 * StopPodSandbox cut off is finished; pins, shm mounts and directories no record owns are
 * removed; a damaged record is replaced by a recovered NOTREADY pod (metadata name
 * "recovered-<id>") so the operator can still remove what it described by ID. */
struct rm_sandbox_manager *rm_sandbox_manager_open(const char *root, const char *state,
                                                   struct json_object *section,
                                                   struct rm_store *store,
                                                   const struct rm_sandbox_hooks *hooks,
                                                   struct rm_error **err);
void rm_sandbox_manager_close(struct rm_sandbox_manager *mgr);

/* RunPodSandbox. A request with the (name, namespace, uid, attempt) of an existing pod
 * is ALREADY_EXISTS naming it, except an identical request whose first answer never
 * reached its client (the client's deadline passed or it cancelled while the pod was
 * being made): that retry gets the first pod's ID. A retry arriving while the first call
 * is still at work waits for it (until cancel, which may be NULL, fires). The caller
 * reports with rm_sandbox_answered whether the ID it got reached its client. A failure
 * leaves nothing behind. */
int rm_sandbox_run(struct rm_sandbox_manager *mgr, const Runtime__V1__RunPodSandboxRequest *req,
                   const struct rm_cancel *cancel, char **id, struct rm_error **err);
/* Whether the answer carrying pod id (from rm_sandbox_run) reached its client. What is
 * known lives in memory only: after a restart every pod counts as delivered. */
void rm_sandbox_answered(struct rm_sandbox_manager *mgr, const char *id, bool delivered);
/* StopPodSandbox (after the server stopped the pod's containers): network, infra
 * process, namespaces and shm go; the pod stays, NOTREADY. Idempotent. */
int rm_sandbox_stop(struct rm_sandbox_manager *mgr, const char *id, struct rm_error **err);
/* RemovePodSandbox: stops it if needed and removes everything. Unknown IDs succeed. */
int rm_sandbox_remove(struct rm_sandbox_manager *mgr, const char *id, struct rm_error **err);

/* UpdatePodSandboxResources (the caller has validated both): the pod's cgroup is resized
 * for resources plus overhead and both are recorded, so PodSandboxStatus(verbose) shows
 * them ("podResources") across restarts. FAILED_PRECONDITION for a pod that is not ready
 * or has no cgroup of Remora's (RunPodSandbox gave no linux.cgroup_parent). */
int rm_sandbox_update_resources(struct rm_sandbox_manager *mgr, const char *id,
                                const Runtime__V1__LinuxContainerResources *overhead,
                                const Runtime__V1__LinuxContainerResources *resources,
                                struct rm_error **err);

Runtime__V1__PodSandboxStatusResponse *rm_sandbox_status(struct rm_sandbox_manager *mgr,
                                                         const char *id, bool verbose,
                                                         struct rm_arena *a, struct rm_error **err);
Runtime__V1__ListPodSandboxResponse *rm_sandbox_list(struct rm_sandbox_manager *mgr,
                                                     const Runtime__V1__PodSandboxFilter *f,
                                                     struct rm_arena *a);
/* The same response, encoded (malloc'd, *len bytes): each pod's item is packed once and
 * kept until its state changes. */
uint8_t *rm_sandbox_list_packed(struct rm_sandbox_manager *mgr,
                                const Runtime__V1__PodSandboxFilter *f, size_t *len);

/* A pod as its containers see it. Strings live in the arena. */
struct rm_sandbox_view {
        const char *id;
        bool ready;
        const char *log_directory;
        const char *runtime_handler;
        const char *hostname;
        const char *netns_path; /* NULL when the pod uses the host's */
        const char *ipcns_path;
        const char *utsns_path;
        const char *pidns_path; /* the infra process's, NULL without one */
        /* The pod's own user namespace (NULL: the host's) and its mappings: container
         * IDs 0..len-1 are host IDs host..host+len-1. */
        const char *userns_path;
        uint32_t uid_host, uid_len, gid_host, gid_len;
        const char *hostname_file;
        const char *hosts_file;
        const char *resolv_file;
        const char *shm_dir;
        const char *cgroup_parent;
        bool privileged;
};

/* Look a pod up by ID or unique prefix. */
int rm_sandbox_view(struct rm_sandbox_manager *mgr, const char *id, struct rm_arena *a,
                    struct rm_sandbox_view *out, struct rm_error **err);

/* A full pod ID from a unique prefix (NOT_FOUND / INVALID_ARGUMENT when ambiguous). */
char *rm_sandbox_resolve(struct rm_sandbox_manager *mgr, const char *id, struct rm_error **err);

#endif
