/* From a CRI ContainerConfig, the image's config and the pod to an OCI runtime spec
 * (config.json) for runc. Every field of the request is checked here, before runc sees
 * it: a bad one is INVALID_ARGUMENT naming the field. */
#ifndef REMORA_SPEC_H
#define REMORA_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <json-c/json.h>

#include "api.pb-c.h"
#include "remora/error.h"

/* What a container takes from its image's config. NULL / 0 means the image has none. */
struct rm_spec_image {
        char **entrypoint;
        size_t n_entrypoint;
        char **cmd;
        size_t n_cmd;
        char **env; /* "KEY=value" */
        size_t n_env;
        const char *working_dir;
        const char *user;        /* "uid", "name", "uid:gid", "name:group", ... */
        const char *stop_signal; /* STOPSIGNAL: "SIGQUIT", "QUIT" or "3" */
};

/* A pod's own user namespace: its pinned nsfs file and its single uid and gid mapping
 * (container IDs 0..len-1 are host IDs host..host+len-1). */
struct rm_spec_userns {
        const char *path;
        uint32_t uid_host, uid_len;
        uint32_t gid_host, gid_len;
};

/* What a container takes from its pod. Namespace paths are the pod's pinned namespaces;
 * NULL means the host's (for net, ipc, uts) or, for pid, see pid_mode. */
struct rm_spec_pod {
        const char *pod_id;
        const char *hostname;
        const char *netns_path;
        const char *ipcns_path;
        const char *utsns_path;
        const struct rm_spec_userns *userns; /* NULL: the host's user namespace */
        /* The container's own PID namespace (CONTAINER), the host's (NODE), or the one at
         * pidns_path (POD: the infra process's; TARGET: the target container's). */
        Runtime__V1__NamespaceMode pid_mode;
        const char *pidns_path;
        /* Pod files bind-mounted into every container; NULL when the pod has none. */
        const char *hostname_file;
        const char *hosts_file;
        const char *resolv_file;
        const char *shm_dir; /* NULL: the container gets its own /dev/shm */
        const char *cgroup_parent;
        bool privileged; /* the pod may hold privileged containers */
        /* The pod's runtime handler, and whether it has recursive read-only mounts. */
        const char *runtime_handler;
        bool recursive_read_only;
};

/* Facts about the host that shape the spec, found once at start. */
struct rm_spec_host {
        bool cgroup_v2;            /* pure cgroup v2: `unified` resources allowed */
        int64_t oom_score_adj_min; /* lowest oom_score_adj the host lets us set */
};

/* Build the OCI spec for container id. rootfs is the container's mounted root
 * filesystem: user and group names are resolved from its /etc/passwd and /etc/group,
 * never the host's. Returns a new JSON object, or NULL and *err (INVALID_ARGUMENT naming
 * the offending field for bad input). */
struct json_object *rm_spec_build(const char *id, const Runtime__V1__ContainerConfig *cfg,
                                  const struct rm_spec_image *img, const struct rm_spec_pod *pod,
                                  const struct rm_spec_host *host, const char *rootfs,
                                  struct rm_error **err);

/* Check LinuxContainerResources as CreateContainer and UpdateContainerResources do
 * (INVALID_ARGUMENT naming the field), for callers that apply them elsewhere. */
int rm_spec_resources_check(const Runtime__V1__LinuxContainerResources *res,
                            const struct rm_spec_host *host, struct rm_error **err);

/* The process's arguments by Kubernetes' rules: a command replaces the image's
 * Entrypoint and drops its Cmd; args alone replace Cmd. Returns a NULL-terminated array
 * (free with rm_strv_free) or NULL and *err when nothing is left to run. */
char **rm_spec_process_args(const Runtime__V1__ContainerConfig *cfg,
                            const struct rm_spec_image *img, struct rm_error **err);

/* A resolved user: uid, primary gid, supplementary gids and the passwd home. */
struct rm_spec_user {
        uint32_t uid;
        uint32_t gid;
        uint32_t *groups;
        size_t n_groups;
        char *home; /* NULL when the user has no passwd entry */
};
void rm_spec_user_release(struct rm_spec_user *u);

/* Resolve the user a container runs as from its security context (run_as_user,
 * run_as_username, run_as_group, supplemental_groups) or else the image's User, with
 * names looked up inside rootfs. sc may be NULL. */
int rm_spec_resolve_user(const Runtime__V1__LinuxContainerSecurityContext *sc,
                         const char *image_user, const char *rootfs, struct rm_spec_user *out,
                         struct rm_error **err);

/* The capability set from the default set and a CRI Capability (add/drop, "ALL"), as
 * upper-case "CAP_..." names in capability-number order. Unknown names are
 * INVALID_ARGUMENT naming them. privileged means every capability the kernel has. */
struct json_object *rm_spec_capabilities(const Runtime__V1__Capability *caps, bool privileged,
                                         struct rm_error **err);

/* The linux.seccomp object for a SecurityProfile, or NULL with *out_none set when the
 * container runs unconfined (profile NULL, Unconfined, or privileged). Localhost profiles are read
 * from localhost_ref and every syscall name checked with libseccomp. caps is the container's
 * capability list (some of the default profile's blocks lift when the matching capability is held).
 */
struct json_object *rm_spec_seccomp(const Runtime__V1__SecurityProfile *profile, bool privileged,
                                    struct json_object *caps, bool *out_none,
                                    struct rm_error **err);

/* Create a directory and its parents inside rootfs, resolving every component (symlinks
 * included) within rootfs so nothing outside it can be reached. */
int rm_rootfs_mkdir(const char *rootfs, const char *path, mode_t mode, struct rm_error **err);

void rm_strv_free(char **v);

#endif
