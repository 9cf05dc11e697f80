/* CNI mode of the network module: a runtime-side client of the Container Network
 * Interface (spec versions 0.3.x, 0.4.0 and 1.0.0). The network config is read from the
 * config dir at every use, so a config dropped in later takes effect without a restart.
 * Each pod's ADD result and the config it was made with are cached under the cache dir,
 * so DEL gets its prevResult and the same plugins even after remorad restarts. */
#ifndef REMORA_NETWORK_CNI_H
#define REMORA_NETWORK_CNI_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <json-c/json.h>

#include "remora/error.h"
#include "remora/network.h"

/* ---- running one plugin (cni_exec.c) ---- */

struct rm__cni_exec_req {
        const char *path;  /* the plugin binary */
        char *const *envp; /* the whole environment it gets */
        const char *input; /* its stdin */
        size_t input_len;
        int timeout_ms;    /* then its process group is killed */
        size_t max_stdout; /* more is an error (and the plugin is killed) */
};

struct rm__cni_exec_out {
        int status; /* as from waitpid */
        char *stdout_buf;
        size_t stdout_len;
        char *stderr_buf; /* its last few KiB */
};

/* Run the plugin to completion. Returns -1 when it could not be started, overran its
 * time (DEADLINE_EXCEEDED) or wrote too much; a plugin that ran and failed is a 0 return
 * with a non-zero status in out. Release out with rm__cni_exec_out_release. */
int rm__cni_exec(const struct rm__cni_exec_req *req, struct rm__cni_exec_out *out,
                 struct rm_error **err);
void rm__cni_exec_out_release(struct rm__cni_exec_out *out);

/* ---- the client (cni.c) ---- */

struct rm__cni;

/* conf_dir: where network configs are looked up. bin_dir: one or more directories,
 * colon-separated, holding the plugins. cache_dir: where per-pod results go (created on
 * first use). timeout_ms bounds each plugin run. */
struct rm__cni *rm__cni_new(const char *conf_dir, const char *bin_dir, const char *cache_dir,
                            int timeout_ms);
void rm__cni_free(struct rm__cni *cni);
/* Copy the count of failed plugin runs by plugin type into out. */
void rm__cni_failures(struct rm__cni *cni, struct rm_network_stats *out);

/* Whether a usable config and all its plugins are present now. When not, *message says
 * why; it stays valid until rm__cni_free. */
bool rm__cni_ready(struct rm__cni *cni, const char **message);

/* What the client needs to know about a pod. */
struct rm__cni_pod {
        const char *pod_id;
        const char *name; /* may be NULL */
        const char *namespace_;
        const char *netns; /* the pinned namespace */
        const struct rm_port_mapping *ports;
        size_t n_ports;
};

/* ADD the pod to the network: every plugin of the list in order. On failure DEL runs
 * for the whole list and the error names the plugin. A pod whose ADD already finished
 * gets its cached addresses again. */
int rm__cni_add(struct rm__cni *cni, const struct rm__cni_pod *pod,
                struct rm_pod_network_result *res, struct rm_error **err);

/* DEL the pod: plugins in reverse order, with the cached config and result when there
 * are some (the current config otherwise). netns may be NULL or gone. The cache goes
 * once every plugin succeeded; a pod never added is not an error. */
int rm__cni_del(struct rm__cni *cni, const char *pod_id, const char *netns, struct rm_error **err);

/* CHECK the pod's network against its cached result. Returns 1 when the config does
 * not allow CHECK (older than 0.4.0, or disableCheck), 0 when every plugin agreed,
 * -1 with the failing plugin named otherwise (NOT_FOUND when the pod has no cache). */
int rm__cni_check(struct rm__cni *cni, const char *pod_id, const char *netns,
                  struct rm_error **err);

/* DEL every cached pod not in live, and every pod whose ADD never finished. Returns
 * the number of pods that could not be removed (their cache is kept), or -1. */
int rm__cni_reconcile(struct rm__cni *cni, const char *const *live, size_t n_live,
                      struct rm_error **err);

/* Pod addresses from a CNI result (its ips[].address), IPv4 first then IPv6. */
int rm__cni_result_ips(struct json_object *result, struct rm_pod_network_result *res,
                       struct rm_error **err);

#endif
