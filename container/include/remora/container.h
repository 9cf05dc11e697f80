/* Containers and the OCI runtimes behind them (runc by default): the runtime handlers a
 * RuntimeClass selects, from the config's `runtimes` section. */
#ifndef REMORA_CONTAINER_H
#define REMORA_CONTAINER_H

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#include "remora/error.h"
#include "remora/oci.h"

/* An OCI runtime handler: a name (the RuntimeClass handler), the binary that implements
 * it, its own state root (runc --root) and its options. */
struct rm_runtime {
        char *handler;
        char *configured; /* as given in the config: a name looked up in PATH, or a path */
        char *path;       /* absolute path resolved at start, NULL when not found */
        char *root;       /* runc --root: where this handler keeps its containers' state */
        bool systemd_cgroup;
        /* Recursive read-only bind mounts ("rro"): the runtime lists the option in
         * `<binary> features` and the kernel has mount_setattr (5.12). Found at start. */
        bool recursive_read_only;
        struct rm_oci *oci; /* the driver for this binary and root */
};

/* Resolve the runtime binary: an absolute or relative path is used as is, a bare name
 * is searched in $PATH. A runtime that is not there is not an error here (Status
 * reports it); the returned runtime has path NULL, and no root or driver yet. */
struct rm_runtime *rm_runtime_new(const char *handler, const char *configured);
void rm_runtime_free(struct rm_runtime *rt);

/* Whether the runtime binary can be run now. On false, *err says which binary and why
 * (its code is FAILED_PRECONDITION). Re-checks the file each call: a package upgrade or
 * removal shows up without restarting the daemon. */
bool rm_runtime_usable(const struct rm_runtime *rt, struct rm_error **err);

/* Every configured handler; one of them is the default (the one a pod with an empty
 * runtime_handler gets). */
struct rm_runtimes {
        struct rm_runtime **v;
        size_t n;
        size_t def; /* index of the default handler */
};

#define RM_RUNTIME_DEFAULT_HANDLER "runc"

/* Handlers from the config's `runtimes` section (NULL: only the default):
 *   {"default": "<name>", "handlers": {"<name>": {"path": ..., "root": ...,
 *                                                 "systemd_cgroup": false}}}
 * The default handler (named "runc" unless `default` says otherwise) always exists; its
 * binary is runtime_path unless its entry names a path, its root <state>/runc. Other
 * handlers need a path; their root defaults to <state>/runtimes/<name>. Each handler
 * gets an rm_oci driver with ops, and its features are asked of its binary
 * (`<binary> features`, a few milliseconds). INVALID_ARGUMENT / FAILED_PRECONDITION naming the key
 * on a bad section or an option this host or Remora cannot honour. */
struct rm_runtimes *rm_runtimes_new(struct json_object *section, const char *runtime_path,
                                    const char *state, const struct rm_runtime_ops *ops,
                                    struct rm_error **err);
void rm_runtimes_free(struct rm_runtimes *rts);

static inline struct rm_runtime *rm_runtimes_default(const struct rm_runtimes *rts)
{
        return rts->v[rts->def];
}

/* The handler for a RuntimeClass name: "" (or NULL) is the default. NULL when no handler
 * has that name. */
struct rm_runtime *rm_runtimes_find(const struct rm_runtimes *rts, const char *name);

/* Like rm_runtimes_find, but an unknown name is INVALID_ARGUMENT naming the configured
 * handlers. */
struct rm_runtime *rm_runtimes_select(const struct rm_runtimes *rts, const char *name,
                                      struct rm_error **err);

/* The handler whose root holds the runtime state of container id (<root>/<id>), or the
 * default when none does (the container has no runtime state: any handler's answer is
 * "does not exist"). Runtime calls on an existing container go here, so a restarted
 * daemon keeps using the binary and root the container was created with. */
struct rm_runtime *rm_runtimes_owner(const struct rm_runtimes *rts, const char *id);

/* Optional features of a handler, as Status reports them. */
struct rm_runtime_features {
        bool recursive_read_only_mounts;
        bool user_namespaces;
};

/* What handler rt can do: recursive read-only mounts as detected at start (runc 1.1 has
 * none; 1.2 lists "rro"); user_namespaces_host is the host's own answer (idmapped mounts
 * and a kernel that supports them), detected elsewhere. */
void rm_runtime_features(const struct rm_runtime *rt, bool user_namespaces_host,
                         struct rm_runtime_features *out);

#endif
