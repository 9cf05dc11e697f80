/* The container manager's shared state, split across manager.c (lifecycle), record.c
 * (the JSON record) and view.c (Status and List responses). */
#ifndef REMORA_CONTAINER_MANAGER_INTERNAL_H
#define REMORA_CONTAINER_MANAGER_INTERNAL_H

#include <pthread.h>
#include <json-c/json.h>

#include "remora/containers.h"
#include "remora/ids.h"
#include "remora/pblist.h"

struct ctr {
        char id[RM_ID_LEN + 1];
        char *pod_id;
        char *name;
        uint32_t attempt;
        char *image;    /* the reference the request named */
        char *image_id; /* sha256:... */
        char *image_ref;
        char *log_path;        /* "" when none */
        char *runtime_handler; /* "" for the default */
        uint64_t request_hash; /* of the CreateContainer request, for identical retries */
        struct json_object *labels;
        struct json_object *annotations;
        struct json_object *mounts; /* [{container_path, host_path, readonly, propagation,
                                       image, image_sub_path}] */
        /* IDs of the images mounted as image volumes (Mount.image), each once: the image
         * service counts them as users of those images, as it counts image_id. */
        struct json_object *image_volumes;
        Runtime__V1__ContainerState state;
        int64_t created_at;
        int64_t started_at;
        int64_t finished_at;
        int exit_code;
        char *reason;
        char *message;
        int stop_signal;    /* 0: SIGTERM */
        pid_t pid;          /* 0 until started (runc create runs at StartContainer) */
        bool start_pending; /* StartContainer's intent, recorded before runc create */
        bool tty, stdin, stdin_once;
        uint32_t uid; /* the user the process runs as, for ContainerStatus.user */
        uint32_t gid;
        struct json_object *groups; /* [gid...]: the init's groups (getgroups()), primary first */
        char *cgroup_path;          /* the OCI cgroupsPath, "" before create */
        struct json_object *resources; /* LinuxContainerResources, CRI field names */

        /* Not persisted. */
        bool creating;        /* reserved by a CreateContainer still in progress */
        bool starting;        /* a StartContainer is between runc create and RUNNING */
        bool removed;         /* gone from the index; freed when the last reference drops */
        bool runtime_deleted; /* exited and already deleted from the runtime */
        bool recovered;       /* rebuilt at start-up from a damaged record, not saved yet */
        /* Its ListContainers item, packed; repacked when state is not the version it was
         * packed at (nothing else in it changes once the container is created). Read and
         * written under the manager's lock. */
        struct rm_pb_packed summary;
        int refs;
        pthread_mutex_t op; /* serializes lifecycle operations on this container */
        /* Held from a record's snapshot to its write: two saves racing (the exit watcher
         * and a call) reach the disk in the order they were taken. */
        pthread_mutex_t save_lock;
};

/* A writable layer's size as last walked, reused for a while by the metrics call. */
struct layer_sample {
        char key[RM_ID_LEN + 1];
        int64_t at_ns;
        uint64_t bytes, inodes;
};

struct cpu_sample {
        char key[RM_ID_LEN + 1];
        int64_t at_ns;
        uint64_t usage_ns;
};

struct rm_container_manager {
        char *dir;     /* <root>/containers: writable layers */
        char *bundles; /* <state>/containers: bundles and rootfs mount points */
        struct rm_store *store;
        struct rm_container_ops ops;
        struct rm_spec_host host;

        pthread_mutex_t lock; /* the index and every ctr's fields */
        pthread_cond_t changed;
        /* One exit is recorded, saved and announced by one thread: a call that notices it
         * at the same time as the watcher waits here, then finds it recorded (and its
         * STOPPED event sent before anything the call does next). */
        pthread_mutex_t exit_lock;
        struct ctr **ctrs;
        size_t n;

        /* The previous CPU sample per container or pod, for usage_nano_cores. */
        pthread_mutex_t rates_lock;
        struct cpu_sample *rates;
        size_t n_rates;
        /* Under rates_lock too: the layer sizes rm_containers_samples walked last. */
        struct layer_sample *layers;
        size_t n_layers;

        pthread_t watcher;
        bool watching;
        int wake[2]; /* the watcher's pipe: 0 ends it, 1 says there is something to reap */
        char **reap; /* exited containers whose runtime state the watcher deletes */
        size_t n_reap;
        /* Removed containers whose runtime state the watcher still has to delete, and how
         * many of them it is deleting now; settle waits on changed until a pod has none. */
        struct gone {
                char *id, *pod_id;
        } * gone;
        size_t n_gone;
        const char *deleting_pod; /* pod of the container being deleted, or NULL */
        /* RemoveContainer renames a removed container's bundle and writable layer into
         * these (<bundles>/.trash, <dir>/.trash: same filesystems) and the watcher removes
         * them; start-up empties them. trash_pending (under lock): something went in. */
        char *trash[2];
        bool trash_pending;

        struct rm_answers *answers; /* which CreateContainer answers reached their client */
        size_t repairs;             /* what start-up finished, undid or removed (for /metrics) */
};

#define CTR_KIND "containers"

/* manager.c: shared helpers. get takes a reference (put drops it); save writes the
 * record; emit tells the event hook. */
int64_t rm__now_ns(void);
void rm__replace_str(char **slot, const char *v);
struct ctr *rm__ctr_get(struct rm_container_manager *mgr, const char *id, struct rm_error **err);
void rm__ctr_put(struct rm_container_manager *mgr, struct ctr *c);
int rm__ctr_save(struct rm_container_manager *mgr, struct ctr *c, struct rm_error **err);
void rm__ctr_emit(struct rm_container_manager *mgr, const char *id, const char *pod_id,
                  Runtime__V1__ContainerEventType type);

/* Add to the index (caller holds mgr->lock). */
void rm__index_add(struct rm_container_manager *mgr, struct ctr *c);

/* reconcile.c: start-up. load_one is the store visitor that fills the index (a damaged
 * record becomes a recovered container); reconcile then matches the records with the
 * runtime, the monitors and the exit files, and removes what no record owns. */
int rm__ctr_load_one(const char *id, struct json_object *doc, const struct rm_error *bad,
                     void *data, struct rm_error **err);
void rm__ctr_reconcile(struct rm_container_manager *mgr);

/* exits.c. refresh_exit records an exit if the runtime reports one (true once exited);
 * wait_exit waits up to timeout_ms for it; the watcher thread notices exits by itself. */
bool rm__ctr_refresh_exit(struct rm_container_manager *mgr, struct ctr *c);
bool rm__ctr_wait_exit(struct rm_container_manager *mgr, struct ctr *c, int64_t timeout_ms);
void *rm__exit_watcher(void *arg);
/* Removed containers whose runtime delete the watcher owes (callers hold mgr->lock):
 * add queues one and wakes the watcher; pending says whether pod_id has one queued or
 * being deleted. */
void rm__gone_add(struct rm_container_manager *mgr, const char *id, const char *pod_id);
bool rm__gone_pending(const struct rm_container_manager *mgr, const char *pod_id);

/* record.c */
struct json_object *rm__ctr_to_json(const struct ctr *c);
struct ctr *rm__ctr_from_json(const char *id, struct json_object *doc, struct rm_error **err);
void rm__ctr_free(struct ctr *c);
/* LinuxContainerResources as JSON (CRI field names, zero fields left out) and back. */
struct json_object *rm__resources_to_json(const Runtime__V1__LinuxContainerResources *r);
Runtime__V1__LinuxContainerResources *rm__resources_from_json(struct json_object *o,
                                                              struct rm_arena *a);

/* view.c; callers hold mgr->lock. */
Runtime__V1__ContainerStatusResponse *rm__ctr_status(const struct rm_container_manager *mgr,
                                                     const struct ctr *c, bool verbose,
                                                     struct rm_arena *a);
Runtime__V1__Container *rm__ctr_summary(const struct ctr *c, struct rm_arena *a);
bool rm__ctr_matches(const struct ctr *c, const Runtime__V1__ContainerFilter *f);
/* Shared with stats.c. */
Runtime__V1__ContainerMetadata *rm__ctr_metadata(const struct ctr *c, struct rm_arena *a);

/* Image volumes (imgvol.c). prepare checks every mount's image fields (INVALID_ARGUMENT
 * naming mounts[i].image_sub_path and the like), mounts each image volume read-only
 * under bundle and points *out at a copy of cfg (in the arena) whose image mounts are
 * read-only binds of the prepared paths; the images' IDs are added to ids. On failure
 * what it mounted stays under bundle: unmount_all removes every image volume mount
 * there (also those a crash left). */
int rm__imgvol_prepare(struct rm_container_manager *mgr, const char *bundle,
                       const Runtime__V1__ContainerConfig *cfg, struct rm_arena *a,
                       const Runtime__V1__ContainerConfig **out, struct json_object *ids,
                       struct rm_error **err);
int rm__imgvol_unmount_all(const char *bundle, struct rm_error **err);

/* Stop signals (stopsig.c). from_cri: the signal of a CRI Signal enum value, *sig 0 for
 * RUNTIME_DEFAULT, INVALID_ARGUMENT naming config.stop_signal for a value it does not
 * know. from_image: the image's STOPSIGNAL ("SIGQUIT", "QUIT", "3", "SIGRTMIN+2"), 0 when
 * unset or unknown. to_cri: the enum value of a signal (0 meaning SIGTERM). */
int rm__stop_signal_from_cri(int value, int *sig, struct rm_error **err);
int rm__stop_signal_from_image(const char *s);
int rm__stop_signal_to_cri(int sig);

/* Bounds on what a request puts into the record (limits.c): INVALID_ARGUMENT naming the
 * field. field prefixes the resources' field names ("config.linux.resources"). */
int rm__ctr_config_limits(const Runtime__V1__ContainerConfig *cfg, struct rm_error **err);
int rm__ctr_resources_limits(const Runtime__V1__LinuxContainerResources *r, const char *field,
                             struct rm_error **err);

/* userns.c: for a container in its pod's user namespace, attach every bind mount source
 * of spec through an idmapped mount under <bundle>/idmap and point the spec at it; make
 * the bundle reachable from inside the namespace. Release unmounts those (the tree is
 * removed with the bundle). */
int rm__ctr_userns_prepare(struct json_object *spec, const char *bundle,
                           const struct rm_spec_userns *userns, struct rm_error **err);
void rm__ctr_userns_release(const char *bundle);
/* The container id_or_prefix names (a unique prefix will do); NOT_FOUND or
 * INVALID_ARGUMENT (ambiguous) otherwise. Caller holds mgr->lock. */
struct ctr *rm__ctr_find_locked(struct rm_container_manager *mgr, const char *id_or_prefix,
                                struct rm_error **err);
/* Unmount an exited container's root filesystem (lazily: a process of the container
 * that outlived its init keeps its own mount namespace's view); failures are logged and
 * left to RemoveContainer. */
void rm__ctr_rootfs_release(struct rm_container_manager *mgr, struct ctr *c);
/* Remove what is in the trash directories (the watcher, and start-up). */
void rm__trash_empty(struct rm_container_manager *mgr);

#endif
