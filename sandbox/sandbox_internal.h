/* The sandbox manager's shared state, split across sandbox.c (records, index,
 * lifecycle, status) and resources.c (UpdatePodSandboxResources). */
#ifndef REMORA_SANDBOX_INTERNAL_H
#define REMORA_SANDBOX_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <json-c/json.h>

#include "remora/ids.h"
#include "remora/sandbox.h"

#define POD_KIND "sandboxes"
/* The per-pod /dev/shm, as Docker and containerd size it. */
#define SHM_OPTIONS "mode=1777,size=65536k"

struct pod {
        char id[RM_ID_LEN + 1];
        struct json_object *doc; /* the record: everything that must survive a restart */
        Runtime__V1__PodSandboxState state;
        bool creating;
        bool removed;
        int refs;
        pthread_mutex_t op; /* serializes lifecycle operations on this pod */
};

struct rm_sandbox_manager {
        char *dir;     /* <root>/sandboxes: pod files */
        char *state;   /* <state>/sandboxes: shm mounts */
        char *pins[4]; /* <state>/netns, ipcns, utsns, userns */
        struct rm_store *store;
        struct rm_sandbox_hooks hooks;
        pthread_mutex_t lock; /* the index and every pod's doc and state */
        struct pod **pods;
        size_t n;
        struct rm_answers *answers; /* which RunPodSandbox answers reached their client */
};

/* A pod by ID or unique prefix, with a reference (drop it with put). */
struct pod *rm__pod_get(struct rm_sandbox_manager *mgr, const char *id, struct rm_error **err);
void rm__pod_put(struct rm_sandbox_manager *mgr, struct pod *p);
/* Write the pod's record (its doc, under mgr->lock) to the store. */
int rm__pod_save(struct rm_sandbox_manager *mgr, struct pod *p, struct rm_error **err);

/* resources.c: the pod's resources as the record and PodSandboxStatus keep them. */
struct json_object *rm__pod_resources_json(const Runtime__V1__LinuxContainerResources *overhead,
                                           const Runtime__V1__LinuxContainerResources *resources);

#endif
