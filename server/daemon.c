#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon.h"
#include "dispatch.h"
#include "events.h"
#include "grpc_server.h"
#include "hooks.h"
#include "remora/cleanup.h"
#include "remora/confsect.h"
#include "remora/fsutil.h"
#include "remora/log.h"
#include "remora/xalloc.h"

/* Take <dir>/remorad.lock, so that two daemons never share a directory. The lock dies
 * with the process, so a crashed daemon never blocks the next one. */
static int take_lock(const char *dir, const char *what, int *lock_fd, struct rm_error **err)
{
        cleanup_free char *path = xasprintf("%s/remorad.lock", dir);
        cleanup_close int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return rm_error_sys(err, "open lock file %s", path);
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno != EWOULDBLOCK)
                        return rm_error_sys(err, "lock %s", path);
                char pid[32] = "";
                ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
                pid[n > 0 ? n : 0] = '\0';
                pid[strcspn(pid, "\n")] = '\0';
                return rm_error_set(err, RM_FAILED_PRECONDITION,
                                    "another remorad (pid %s) is already using %s directory %s "
                                    "(lock %s); stop it or give this one a different --%s",
                                    *pid ? pid : "unknown", what, dir, path, what);
        }
        char buf[32];
        int len = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
        if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)len, 0) != len)
                return rm_error_sys(err, "write pid to %s", path);
        *lock_fd = steal_fd(&fd);
        return 0;
}

/* True when something accepts connections on the unix socket at path. */
static bool socket_is_live(const char *path)
{
        cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return false;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        return connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
}

/* Create the socket's directory (0700) and clear a socket left by a crashed daemon. A
 * socket something still answers on, or a file that is not a socket, is left alone. */
static int prepare_socket(const char *path, struct rm_error **err)
{
        cleanup_free char *copy = xstrdup(path);
        if (rm_mkdir_p(dirname(copy), 0700, err) < 0)
                return rm_error_wrap(err, "socket directory");

        struct stat st;
        if (lstat(path, &st) < 0) {
                if (errno == ENOENT)
                        return 0;
                return rm_error_sys(err, "stat socket %s", path);
        }
        if (!S_ISSOCK(st.st_mode))
                return rm_error_set(err, RM_FAILED_PRECONDITION,
                                    "%s exists and is not a socket; refusing to replace it", path);
        if (socket_is_live(path))
                return rm_error_set(err, RM_FAILED_PRECONDITION,
                                    "another server is listening on %s; stop it or choose another "
                                    "--listen address",
                                    path);
        if (unlink(path) < 0)
                return rm_error_sys(err, "remove stale socket %s", path);
        rm_log_info("removed stale socket %s left by a previous run", path);
        return 0;
}

/* Containers need runc, remora-shim beside remorad, and the host's cgroup layout. */
static int open_containers(struct rm_daemon *d, struct rm_error **err)
{
        const struct rm_config *cfg = d->cfg;
        if (rm_cgroup_detect(&d->cgroups, err) < 0 ||
            rm_helpers_locate(NULL, NULL, &d->helpers, err) < 0)
                return rm_error_wrap(err, "containers");
        rm_spec_host_detect(&d->cgroups, &d->host);
        cleanup_free char *runc_root = xasprintf("%s/runc", cfg->state);
        d->exit_dir = xasprintf("%s/exits", cfg->state);
        if (rm_mkdir_p(runc_root, 0700, err) < 0 || rm_mkdir_p(d->exit_dir, 0700, err) < 0)
                return -1;
        d->oci = rm_oci_new(&rm_runc_ops, d->runtime->path ? d->runtime->path : cfg->runtime_path,
                            runc_root, 0);
        struct rm_container_ops ops;
        rm__container_ops(d, &ops);
        d->containers = rm_containers_open(cfg->root, cfg->state, d->store, &ops, &d->host, err);
        return d->containers ? 0 : -1;
}

/* Undo pod networks whose pod is gone or not ready (a crash between the two), and what a
 * crashed setup left. A failure is logged: what is left is retried at the next start. */
static void reconcile_network(struct rm_daemon *d)
{
        struct rm_arena *a = rm_arena_new();
        Runtime__V1__PodSandboxStateValue ready = RUNTIME__V1__POD_SANDBOX_STATE_VALUE__INIT;
        ready.state = RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY;
        Runtime__V1__PodSandboxFilter f = RUNTIME__V1__POD_SANDBOX_FILTER__INIT;
        f.state = &ready;
        Runtime__V1__ListPodSandboxResponse *l = rm_sandbox_list(d->sandboxes, &f, a);
        const char **ids = rm_arena_alloc(a, sizeof(char *) * (l->n_items + 1));
        for (size_t i = 0; i < l->n_items; i++)
                ids[i] = l->items[i]->id;
        cleanup_error struct rm_error *e = NULL;
        if (rm_network_reconcile(d->network, ids, l->n_items, &e) < 0)
                rm_log_warn("pod networking: reconcile at start: %s", e->msg);
        rm_arena_free(a);
}

static int open_managers(struct rm_daemon *d, struct rm_error **err)
{
        const struct rm_config *cfg = d->cfg;
        d->store = rm_store_open(cfg->root, err);
        if (d->store == NULL)
                return -1;
        d->runtime = rm_runtime_new("", cfg->runtime_path);
        if (d->runtime->path == NULL)
                rm_log_warn("OCI runtime %s not found; RuntimeReady stays false until it is "
                            "installed and remorad restarted",
                            cfg->runtime_path);
        d->streaming =
            rm_streaming_open(cfg->sections[RM_SECTION_STREAMING], &rm__stream_backend, d, err);
        if (d->streaming == NULL)
                return -1;
        d->network = rm_network_open(cfg->sections[RM_SECTION_NETWORK], cfg->root, cfg->state,
                                     d->store, err);
        if (d->network == NULL)
                return -1;
        d->images =
            rm_image_service_open(cfg->root, cfg->sections[RM_SECTION_IMAGE], d->store, err);
        if (d->images == NULL)
                return -1;
        struct rm_sandbox_hooks hooks;
        rm__sandbox_hooks(d, &hooks);
        rm__infra_hooks(d, &hooks);
        d->sandboxes = rm_sandbox_manager_open(
            cfg->root, cfg->state, cfg->sections[RM_SECTION_SANDBOX], d->store, &hooks, err);
        if (d->sandboxes == NULL)
                return -1;
        reconcile_network(d);
        if (open_containers(d, err) < 0)
                return -1;
        d->dispatch = rm_dispatch_new(rm_handlers, d, err);
        return d->dispatch ? 0 : -1;
}

static void release(struct rm_daemon *d)
{
        /* First: live sessions call into the managers below. */
        rm_streaming_close(d->streaming);
        rm_dispatch_free(d->dispatch);
        rm_events_free(d->events);
        rm_containers_close(d->containers);
        rm_oci_free(d->oci);
        rm_helpers_clear(&d->helpers);
        free(d->exit_dir);
        rm_sandbox_manager_close(d->sandboxes);
        rm_image_service_close(d->images);
        rm_network_close(d->network);
        rm_runtime_free(d->runtime);
        rm_store_close(d->store);
        for (size_t i = 0; i < 2; i++) {
                if (d->lock_fds[i] >= 0)
                        close(d->lock_fds[i]);
        }
        free(d->socket_path);
        free(d->pod_cidr);
        pthread_mutex_destroy(&d->runtime_config_lock);
        free(d);
}

struct rm_daemon *rm_daemon_start(struct rm_config *cfg, struct rm_error **err)
{
        struct rm_daemon *d = xzalloc(sizeof(*d));
        d->cfg = cfg;
        d->lock_fds[0] = d->lock_fds[1] = -1;
        d->started = time(NULL);
        pthread_mutex_init(&d->runtime_config_lock, NULL);
        d->pod_cidr = xstrdup("");

        d->socket_path = rm_config_socket_path(cfg->listen, err);
        if (d->socket_path == NULL || rm_mkdir_p(cfg->root, 0700, err) < 0 ||
            rm_mkdir_p(cfg->state, 0700, err) < 0 ||
            take_lock(cfg->state, "state", &d->lock_fds[0], err) < 0 ||
            take_lock(cfg->root, "root", &d->lock_fds[1], err) < 0 ||
            prepare_socket(d->socket_path, err) < 0 || open_managers(d, err) < 0) {
                release(d);
                return NULL;
        }

        d->events = rm_events_new();
        const struct rm_stream_method streams[] = {
            {"/runtime.v1.RuntimeService/GetContainerEvents", rm_events_open, d->events},
        };
        size_t n_methods = rm_dispatch_count(d->dispatch, NULL);
        struct rm_grpc_method *methods = xzalloc(sizeof(*methods) * n_methods);
        for (size_t i = 0; i < n_methods; i++)
                methods[i].path = rm_dispatch_method(d->dispatch, i, &methods[i].kind);
        d->grpc = rm_grpc_server_start(d->socket_path, cfg->workers, RM_MAX_MESSAGE_BYTES, methods,
                                       n_methods, rm_dispatch_call, d->dispatch, streams,
                                       sizeof(streams) / sizeof(streams[0]), err);
        free(methods);
        if (d->grpc == NULL) {
                release(d);
                return NULL;
        }
        size_t implemented = 0, total = rm_dispatch_count(d->dispatch, &implemented);
        rm_log_info("remorad listening on %s (%d gRPC threads, %zu of %zu CRI methods implemented, "
                    "root %s, state %s)",
                    cfg->listen, cfg->workers, implemented, total, cfg->root, cfg->state);
        return d;
}

void rm_daemon_stop(struct rm_daemon *d)
{
        if (d == NULL)
                return;
        rm_grpc_server_stop(d->grpc);
        release(d);
}
