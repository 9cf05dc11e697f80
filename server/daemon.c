#include <dirent.h>
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
#include "list_stream.h"
#include "remora/cleanup.h"
#include "remora/confsect.h"
#include "remora/fsutil.h"
#include "remora/idmap.h"
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

/* Containers and infra processes need runc, remora-shim beside remorad, and the host's
 * cgroup layout: before the sandbox manager, whose start-up repairs infra processes. */
static int open_runtime(struct rm_daemon *d, struct rm_error **err)
{
        const struct rm_config *cfg = d->cfg;
        if (rm_cgroup_detect(&d->cgroups, err) < 0 ||
            rm_helpers_locate(NULL, NULL, &d->helpers, err) < 0)
                return rm_error_wrap(err, "containers");
        rm_spec_host_detect(&d->cgroups, &d->host);
        d->exit_dir = xasprintf("%s/exits", cfg->state);
        if (rm_mkdir_p(d->exit_dir, 0700, err) < 0)
                return -1;
        for (size_t i = 0; i < d->runtimes->n; i++) {
                if (rm_mkdir_p(d->runtimes->v[i]->root, 0700, err) < 0)
                        return rm_error_wrap(err, "runtime handler %s", d->runtimes->v[i]->handler);
        }
        return 0;
}

static int open_containers(struct rm_daemon *d, struct rm_error **err)
{
        const struct rm_config *cfg = d->cfg;
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

/* Pods in their own user namespace need idmapped mounts where their files live: the
 * image layers and pod files (root) and the bundles (state). Found once, logged once. */
static char *detect_userns(const struct rm_config *cfg)
{
        const char *dirs[] = {cfg->root, cfg->state};
        for (size_t i = 0; i < 2; i++) {
                char *why = NULL;
                if (!rm_idmap_supported(dirs[i], &why)) {
                        rm_log_warn("pods with their own user namespace (userns_options POD) "
                                    "are refused on this host: %s",
                                    why);
                        return why;
                }
        }
        rm_log_info("idmapped mounts work on %s and %s: pods may have their own user namespace",
                    cfg->root, cfg->state);
        return NULL;
}

/* A pod run with a handler the config no longer has: its containers' runc state sits in
 * a root no handler owns, so stopping them would not reach them. Said once at start. */
static void warn_dropped_handlers(struct rm_daemon *d)
{
        struct rm_arena *a = rm_arena_new();
        Runtime__V1__ListPodSandboxResponse *l = rm_sandbox_list(d->sandboxes, NULL, a);
        for (size_t i = 0; i < l->n_items; i++) {
                const char *h = l->items[i]->runtime_handler;
                if (rm_runtimes_find(d->runtimes, h) == NULL)
                        rm_log_warn("pod sandbox %s was run with runtime handler %s, which is no "
                                    "longer configured: its containers cannot be stopped or "
                                    "new ones created until runtimes.handlers.%s is restored",
                                    l->items[i]->id, h, h);
        }
        rm_arena_free(a);
}

static int open_managers(struct rm_daemon *d, struct rm_error **err)
{
        const struct rm_config *cfg = d->cfg;
        d->store = rm_store_open(cfg->root, err);
        if (d->store == NULL)
                return -1;
        d->runtimes = rm_runtimes_new(cfg->sections[RM_SECTION_RUNTIMES], cfg->runtime_path,
                                      cfg->state, &rm_runc_ops, err);
        if (d->runtimes == NULL)
                return -1;
        d->runtime = rm_runtimes_default(d->runtimes);
        /* Every handler's runc root, for what start-up reconciles; and the roots under
         * <state>/runtimes of handlers dropped from the config, whose containers must
         * not be taken for gone. */
        size_t n = 0;
        d->runtime_roots = xzalloc(sizeof(char *) * (d->runtimes->n + 1));
        for (size_t i = 0; i < d->runtimes->n; i++)
                d->runtime_roots[n++] = xstrdup(d->runtimes->v[i]->root);
        cleanup_free char *handlers_dir = xasprintf("%s/runtimes", cfg->state);
        cleanup_dir DIR *dir = opendir(handlers_dir);
        struct dirent *e;
        while (dir && (e = readdir(dir))) {
                cleanup_free char *root = xasprintf("%s/%s", handlers_dir, e->d_name);
                bool known = e->d_name[0] == '.';
                for (size_t i = 0; i < n && !known; i++)
                        known = strcmp(d->runtime_roots[i], root) == 0;
                if (known || e->d_type != DT_DIR)
                        continue;
                d->runtime_roots = xrealloc(d->runtime_roots, sizeof(char *) * (n + 2));
                d->runtime_roots[n++] = steal_pointer(&root);
                d->runtime_roots[n] = NULL;
        }
        for (size_t i = 0; i < d->runtimes->n; i++) {
                const struct rm_runtime *rt = d->runtimes->v[i];
                if (rt->path == NULL)
                        rm_log_warn("OCI runtime %s (handler %s) not found; %s until it is "
                                    "installed and remorad restarted",
                                    rt->configured, rt->handler,
                                    rt == d->runtime ? "RuntimeReady stays false"
                                                     : "its pods fail to start");
                else
                        rm_log_info("runtime handler %s%s: %s --root %s (recursive read-only "
                                    "mounts: %s)",
                                    rt->handler, rt == d->runtime ? " (default)" : "", rt->path,
                                    rt->root, rt->recursive_read_only ? "yes" : "no");
        }
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
        d->userns_unavailable = detect_userns(cfg);
        if (open_runtime(d, err) < 0)
                return -1;
        struct rm_sandbox_hooks hooks;
        rm__sandbox_hooks(d, &hooks);
        rm__infra_hooks(d, &hooks);
        d->sandboxes = rm_sandbox_manager_open(
            cfg->root, cfg->state, cfg->sections[RM_SECTION_SANDBOX], d->store, &hooks, err);
        if (d->sandboxes == NULL)
                return -1;
        rm__infra_reconcile(d);
        reconcile_network(d);
        warn_dropped_handlers(d);
        if (open_containers(d, err) < 0)
                return -1;
        /* Images removed while containers used them: those whose containers went while
         * remorad was away go now. */
        rm_image_service_set_in_use(d->images, rm__image_in_use, d);
        rm_image_prune(d->images);
        d->dispatch = rm_dispatch_new(rm_handlers, d, err);
        if (d->dispatch == NULL || rm_dispatch_explain(d->dispatch, rm_unimplemented, err) < 0)
                return -1;
        d->lists = rm_list_streams_new(d->dispatch, d, err);
        return d->lists ? 0 : -1;
}

static void release(struct rm_daemon *d)
{
        rm_metrics_server_close(d->metrics); /* scrapes read everything below */
        /* First: live sessions and Stream* calls still producing use the managers below. */
        rm_streaming_close(d->streaming);
        rm_list_streams_free(d->lists);
        rm_dispatch_free(d->dispatch);
        rm_events_free(d->events);
        rm_containers_close(d->containers);
        rm_helpers_clear(&d->helpers);
        free(d->exit_dir);
        free(d->userns_unavailable);
        rm_sandbox_manager_close(d->sandboxes);
        rm_image_service_close(d->images);
        rm_network_close(d->network);
        rm_runtimes_free(d->runtimes);
        for (size_t i = 0; d->runtime_roots && d->runtime_roots[i]; i++)
                free(d->runtime_roots[i]);
        free(d->runtime_roots);
        rm_store_close(d->store);
        for (size_t i = 0; i < 2; i++) {
                if (d->lock_fds[i] >= 0)
                        close(d->lock_fds[i]);
        }
        free(d->socket_path);
        free(d->pod_cidr);
        pthread_mutex_destroy(&d->runtime_config_lock);
        pthread_mutex_destroy(&d->ready.lock);
        free(d->ready.reason);
        free(d->ready.message);
        free(d);
}

struct rm_daemon *rm_daemon_start(struct rm_config *cfg, struct rm_error **err)
{
        uint64_t t0 = rm_metrics_now_ns();
        struct rm_daemon *d = xzalloc(sizeof(*d));
        d->cfg = cfg;
        d->lock_fds[0] = d->lock_fds[1] = -1;
        d->started = time(NULL);
        pthread_mutex_init(&d->runtime_config_lock, NULL);
        pthread_mutex_init(&d->ready.lock, NULL);
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
        size_t n_lists = 0;
        const struct rm_stream_method *lists = rm_list_streams_methods(d->lists, &n_lists);
        struct rm_stream_method streams[1 + n_lists];
        streams[0] = (struct rm_stream_method){"/runtime.v1.RuntimeService/GetContainerEvents",
                                               rm_events_open, d->events};
        memcpy(&streams[1], lists, n_lists * sizeof(*lists));
        for (size_t i = 0; i < 1 + n_lists; i++) {
                if (rm_dispatch_mark_streamed(d->dispatch, streams[i].path, err) < 0) {
                        release(d);
                        return NULL;
                }
        }
        size_t n_methods = rm_dispatch_count(d->dispatch, NULL);
        struct rm_grpc_method *methods = xzalloc(sizeof(*methods) * n_methods);
        for (size_t i = 0; i < n_methods; i++)
                methods[i].path = rm_dispatch_method(d->dispatch, i, &methods[i].kind);
        d->grpc = rm_grpc_server_start(d->socket_path, cfg->workers, cfg->poll_spin_us,
                                       RM_MAX_MESSAGE_BYTES, methods, n_methods, rm_dispatch_call,
                                       d->dispatch, streams, 1 + n_lists, err);
        free(methods);
        if (d->grpc == NULL) {
                release(d);
                return NULL;
        }
        d->counters.startup_ns = rm_metrics_now_ns() - t0;
        d->metrics = rm_metrics_server_open(cfg->sections[RM_SECTION_METRICS], d, err);
        if (d->metrics == NULL && *err) {
                rm_list_streams_close(d->lists);
                rm_grpc_server_stop(d->grpc);
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
        /* Stream* calls end their streams through the gRPC server's stream pump. */
        rm_list_streams_close(d->lists);
        rm_grpc_server_stop(d->grpc);
        release(d);
}
