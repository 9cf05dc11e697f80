/* The sandbox manager's shared state, split across sandbox.c (the lifecycle and
 * queries), recover.c (start-up: load the records, finish or undo what a crash cut off,
 * sweep what no record owns) and resources.c (UpdatePodSandboxResources). */
#ifndef REMORA_SANDBOX_INTERNAL_H
#define REMORA_SANDBOX_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <json-c/json.h>

#include "remora/ids.h"
#include "remora/pblist.h"
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
        /* Its ListPodSandbox item, packed; repacked when state is not the version it was
         * packed at (the rest is fixed once the pod is made). Under the manager's lock. */
        struct rm_pb_packed summary;
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
        size_t repairs;             /* what start-up finished, undid or removed (for /metrics) */
};

enum { PIN_NET, PIN_IPC, PIN_UTS, PIN_USER, N_PINS };
extern const char *const rm__pin_kinds[N_PINS];

/* ---- record fields ---- */

static inline struct json_object *o_get(const struct pod *p, const char *key)
{
        struct json_object *v = NULL;
        return json_object_object_get_ex(p->doc, key, &v) ? v : NULL;
}

static inline const char *s_get(const struct pod *p, const char *key)
{
        struct json_object *v = o_get(p, key);
        return v ? json_object_get_string(v) : "";
}

static inline int64_t i_get(const struct pod *p, const char *key)
{
        struct json_object *v = o_get(p, key);
        return v ? json_object_get_int64(v) : 0;
}

static inline void s_set(struct pod *p, const char *key, const char *v)
{
        json_object_object_add(p->doc, key, json_object_new_string(v ? v : ""));
}

/* What a failed run must undo, in reverse order (from its intent record at start-up). */
struct undo {
        bool record, dirs, pins[N_PINS], shm, net, infra, cgroup;
};

/* sandbox.c */
void rm__pod_free(struct pod *p);
char *rm__pin_path(const struct rm_sandbox_manager *mgr, int kind, const char *id);
/* True when path is a live namespace pin (a bind mount of an nsfs file). */
bool rm__pinned(const char *path);
void rm__unmount_shm(const char *dir);
/* Undo what u says a run made, in reverse order; failures are logged. */
void rm__pod_rollback(struct rm_sandbox_manager *mgr, struct pod *p, const struct undo *u);
/* Stop's teardown (infra process, network, pins, shm); idempotent. */
int rm__pod_teardown(struct rm_sandbox_manager *mgr, struct pod *p, struct rm_error **err);
/* Whether the pod's cgroup parent is the pod's own (made for it), to remove with it. */
bool rm__pod_cgroup_owned(const struct pod *p);

/* A pod by ID or unique prefix, with a reference (drop it with put). */
struct pod *rm__pod_get(struct rm_sandbox_manager *mgr, const char *id, struct rm_error **err);
void rm__pod_put(struct rm_sandbox_manager *mgr, struct pod *p);
/* Write the pod's record (its doc, under mgr->lock) to the store. */
int rm__pod_save(struct rm_sandbox_manager *mgr, struct pod *p, struct rm_error **err);

/* resources.c: the pod's resources as the record and PodSandboxStatus keep them. */
struct json_object *rm__pod_resources_json(const Runtime__V1__LinuxContainerResources *overhead,
                                           const Runtime__V1__LinuxContainerResources *resources);

#endif
