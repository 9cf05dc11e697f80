/* The daemon's state, passed down to every handler (no mutable globals). */
#ifndef REMORA_DAEMON_H
#define REMORA_DAEMON_H

#include <pthread.h>
#include <time.h>

#include "remora/container.h"
#include "remora/cgroups.h"
#include "remora/containers.h"
#include "remora/oci.h"
#include "remora/shim.h"
#include "remora/image.h"
#include "remora/network.h"
#include "remora/sandbox.h"
#include "remora/server.h"
#include "remora/store.h"
#include "remora/streaming.h"
#include "metrics.h"

struct rm_dispatch;
struct rm_events;
struct rm_grpc_server;
struct rm_list_streams;

struct rm_daemon {
        const struct rm_config *cfg;
        char *socket_path;
        /* flock'd <state>/remorad.lock and <root>/remorad.lock, held while running */
        int lock_fds[2];
        time_t started;
        /* The node's pod CIDR(s) from UpdateRuntimeConfig, "" until kubelet sends them. */
        pthread_mutex_t runtime_config_lock;
        char *pod_cidr;
        struct rm_store *store;
        struct rm_runtimes *runtimes; /* the runtime handlers (RuntimeClass) */
        struct rm_runtime *runtime;   /* the default one, in runtimes */
        struct rm_network *network;
        struct rm_image_service *images;
        struct rm_sandbox_manager *sandboxes;
        struct rm_container_manager *containers;
        struct rm_helpers helpers; /* remora-shim and remora-pause */
        char *exit_dir;            /* <state>/exits: the shims' exit files */
        struct rm_cgroup_host cgroups;
        struct rm_spec_host host; /* detected once at start (and logged once) */
        /* Why pods cannot have their own user namespace here (no idmapped mounts on the
         * root or state filesystem), NULL when they can; detected once at start. */
        char *userns_unavailable;
        struct rm_dispatch *dispatch;
        struct rm_events *events;
        struct rm_list_streams *lists; /* the Stream* calls */
        struct rm_grpc_server *grpc;
        struct rm_streaming *streaming;    /* Exec/Attach/PortForward URLs point here */
        struct rm_metrics_server *metrics; /* NULL unless metrics.address is set */
        char **runtime_roots;              /* every handler's root, and dropped ones', NULL-ended */
        struct rm_server_counters counters;
        /* Status's RuntimeReady verdict: it stats the runtime binary and probes two
         * directories, so it is checked at most once per RM_READY_CHECK_NS. */
        struct {
                pthread_mutex_t lock;
                int64_t checked_ns; /* CLOCK_MONOTONIC; 0: never */
                bool ok;
                char *reason, *message; /* when not ok */
        } ready;
};

#define RM_READY_CHECK_NS 1000000000LL

#endif
