/* Noticing that containers exited: the exit files their monitors write, watched with
 * inotify and swept every second in case an event was missed; recording the exit (with
 * OOMKilled when the cgroup says so) and deleting runc's state afterwards. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include "manager_internal.h"
#include "remora/cleanup.h"
#include "remora/clock.h"
#include "remora/crashpoint.h"
#include "remora/log.h"
#include "remora/xalloc.h"

/* How often running containers are checked when no exit notification arrives. */
#define SWEEP_MS 1000

static bool refresh_exit_locked(struct rm_container_manager *mgr, struct ctr *c);

/* Ask the runtime whether c has exited; if so record it. Returns true when exited. */
bool rm__ctr_refresh_exit(struct rm_container_manager *mgr, struct ctr *c)
{
        pthread_mutex_lock(&mgr->exit_lock);
        bool exited = refresh_exit_locked(mgr, c);
        pthread_mutex_unlock(&mgr->exit_lock);
        return exited;
}

static bool refresh_exit_locked(struct rm_container_manager *mgr, struct ctr *c)
{
        pthread_mutex_lock(&mgr->lock);
        Runtime__V1__ContainerState state = c->state;
        pid_t pid = c->pid;
        bool starting = c->starting;
        pthread_mutex_unlock(&mgr->lock);
        if (state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED)
                return true;
        if (starting)
                return false; /* StartContainer looks again once it has said STARTED */
        if (state != RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING &&
            (state != RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED || pid == 0))
                return false; /* a created container is in the runtime only once started */
        int code = 0;
        int64_t finished = 0;
        cleanup_error struct rm_error *err = NULL;
        int rc = mgr->ops.exit_status(mgr->ops.ctx, c->id, pid, &code, &finished, &err);
        if (rc < 0) {
                rm_log_warn("container %s: reading its exit status: %s", c->id, err->msg);
                return false;
        }
        if (rc == 0)
                return false;
        pthread_mutex_lock(&mgr->lock);
        cleanup_free char *cgroup = xstrdup(c->cgroup_path);
        pthread_mutex_unlock(&mgr->lock);
        /* The cgroup is still there: runc's delete comes after this, from the watcher. */
        bool oom = code != 0 && *cgroup && mgr->ops.oom_killed &&
                   mgr->ops.oom_killed(mgr->ops.ctx, cgroup);
        /* The root filesystem goes with the process, before the exit is published (as
         * containerd's shim unmounts it at task delete): whoever waits for EXITED, a
         * StopContainer or a RemoveContainer, finds it gone, and RemoveContainer only
         * removes directories. */
        rm__ctr_rootfs_release(mgr, c);
        rm_crashpoint("exit.unmounted");
        pthread_mutex_lock(&mgr->lock);
        c->state = RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED;
        c->exit_code = code;
        c->finished_at = finished ? finished : rm__now_ns();
        rm__replace_str(&c->reason, oom ? "OOMKilled" : code == 0 ? "Completed" : "Error");
        pthread_cond_broadcast(&mgr->changed);
        pthread_mutex_unlock(&mgr->lock);
        cleanup_error struct rm_error *save_err = NULL;
        if (rm__ctr_save(mgr, c, &save_err) < 0)
                rm_log_warn("container %s exited with %d but its record was not updated: %s", c->id,
                            code, save_err->msg);
        else
                rm_log_info("container %s exited with code %d", c->id, code);
        rm__ctr_emit(mgr, c->id, c->pod_id,
                     RUNTIME__V1__CONTAINER_EVENT_TYPE__CONTAINER_STOPPED_EVENT);
        /* runc's state and cgroup go now, off this path, so RemoveContainer is cheap. */
        pthread_mutex_lock(&mgr->lock);
        mgr->reap = xrealloc(mgr->reap, (mgr->n_reap + 1) * sizeof(char *));
        mgr->reap[mgr->n_reap++] = xstrdup(c->id);
        pthread_mutex_unlock(&mgr->lock);
        char one = 1;
        if (mgr->wake[1] >= 0 && write(mgr->wake[1], &one, 1) < 0)
                rm_log_debug("waking the container watcher: %s", strerror(errno));
        return true;
}

/* Delete the runtime's state of exited containers (the watcher's job). A container some
 * call is working on is left for the next round. */
static void reap_exited(struct rm_container_manager *mgr)
{
        pthread_mutex_lock(&mgr->lock);
        char **ids = mgr->reap;
        size_t n = mgr->n_reap;
        mgr->reap = NULL;
        mgr->n_reap = 0;
        pthread_mutex_unlock(&mgr->lock);
        for (size_t i = 0; i < n; i++) {
                struct ctr *c = rm__ctr_get(mgr, ids[i], NULL);
                if (c && pthread_mutex_trylock(&c->op) != 0) {
                        pthread_mutex_lock(&mgr->lock);
                        mgr->reap = xrealloc(mgr->reap, (mgr->n_reap + 1) * sizeof(char *));
                        mgr->reap[mgr->n_reap++] = steal_pointer(&ids[i]);
                        pthread_mutex_unlock(&mgr->lock);
                        rm__ctr_put(mgr, c);
                        continue;
                }
                if (c) {
                        pthread_mutex_lock(&mgr->lock);
                        bool due = c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED &&
                                   c->pid != 0 && !c->runtime_deleted;
                        pthread_mutex_unlock(&mgr->lock);
                        /* An exited container's calls (RemoveContainer) need nothing of its
                         * runtime state, so they do not wait for this delete: one that
                         * removes the container meanwhile still sees it in the runtime and
                         * queues its own delete, which runs after this one on this thread
                         * and finds nothing left. */
                        pthread_mutex_unlock(&c->op);
                        cleanup_error struct rm_error *e = NULL;
                        if (due && mgr->ops.delete(mgr->ops.ctx, c->id, false, &e) == 0) {
                                pthread_mutex_lock(&mgr->lock);
                                c->runtime_deleted = true;
                                pthread_mutex_unlock(&mgr->lock);
                        } else if (due) {
                                rm_log_debug("container %s: deleting its runtime state: %s", c->id,
                                             e->msg);
                        }
                        rm__ctr_put(mgr, c);
                }
                free(ids[i]);
        }
        free(ids);
}

void rm__gone_add(struct rm_container_manager *mgr, const char *id, const char *pod_id)
{
        mgr->gone = xrealloc(mgr->gone, (mgr->n_gone + 1) * sizeof(*mgr->gone));
        mgr->gone[mgr->n_gone++] = (struct gone){xstrdup(id), xstrdup(pod_id ? pod_id : "")};
        char one = 1;
        if (mgr->wake[1] >= 0 && write(mgr->wake[1], &one, 1) < 0)
                rm_log_debug("waking the container watcher: %s", strerror(errno));
}

bool rm__gone_pending(const struct rm_container_manager *mgr, const char *pod_id)
{
        if (mgr->deleting_pod && strcmp(mgr->deleting_pod, pod_id) == 0)
                return true;
        for (size_t i = 0; i < mgr->n_gone; i++)
                if (strcmp(mgr->gone[i].pod_id, pod_id) == 0)
                        return true;
        return false;
}

/* runc delete --force for removed containers, oldest first; settle waits for these. */
static void delete_gone(struct rm_container_manager *mgr)
{
        pthread_mutex_lock(&mgr->lock);
        while (mgr->n_gone) {
                struct gone g = mgr->gone[0];
                memmove(mgr->gone, mgr->gone + 1, --mgr->n_gone * sizeof(*mgr->gone));
                mgr->deleting_pod = g.pod_id;
                pthread_mutex_unlock(&mgr->lock);
                cleanup_error struct rm_error *e = NULL;
                rm_crashpoint("removecontainer.deferred");
                if (mgr->ops.delete(mgr->ops.ctx, g.id, true, &e) < 0 && e->code != RM_NOT_FOUND)
                        rm_log_warn("removed container %s: deleting its runtime state: %s", g.id,
                                    e->msg);
                pthread_mutex_lock(&mgr->lock);
                mgr->deleting_pod = NULL;
                pthread_cond_broadcast(&mgr->changed);
                free(g.id);
                free(g.pod_id);
        }
        pthread_mutex_unlock(&mgr->lock);
}

/* Wait until c exits or timeout_ms passes; true when it exited. */
bool rm__ctr_wait_exit(struct rm_container_manager *mgr, struct ctr *c, int64_t timeout_ms)
{
        int64_t end_ns = rm_mono_ns() + timeout_ms * 1000000LL;
        for (;;) {
                if (rm__ctr_refresh_exit(mgr, c))
                        return true;
                int64_t now = rm_mono_ns();
                if (now >= end_ns)
                        return false;
                /* Woken by the watcher on an exit; re-check at least every 50 ms anyway. */
                int64_t until = now + 50000000LL < end_ns ? now + 50000000LL : end_ns;
                struct timespec ts = rm_mono_timespec(until);
                pthread_mutex_lock(&mgr->lock);
                pthread_cond_timedwait(&mgr->changed, &mgr->lock, &ts);
                pthread_mutex_unlock(&mgr->lock);
        }
}

/* The snapshot of running containers' IDs the watcher checks. */
static char **live_ids(struct rm_container_manager *mgr)
{
        pthread_mutex_lock(&mgr->lock);
        char **ids = xzalloc(sizeof(char *) * (mgr->n + 1));
        size_t k = 0;
        for (size_t i = 0; i < mgr->n; i++) {
                Runtime__V1__ContainerState s = mgr->ctrs[i]->state;
                if (!mgr->ctrs[i]->creating &&
                    (s == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING ||
                     s == RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED))
                        ids[k++] = xstrdup(mgr->ctrs[i]->id);
        }
        pthread_mutex_unlock(&mgr->lock);
        return ids;
}

static void check_one(struct rm_container_manager *mgr, const char *id)
{
        if (!rm_id_valid(id))
                return;
        struct ctr *c = rm__ctr_get(mgr, id, NULL);
        if (c == NULL)
                return;
        rm__ctr_refresh_exit(mgr, c);
        rm__ctr_put(mgr, c);
}

/* Notices exits: an inotify watch on the runtime's exit directory for prompt updates,
 * and a sweep of running containers every second in case an event was missed. */
void *rm__exit_watcher(void *arg)
{
        struct rm_container_manager *mgr = arg;
        cleanup_close int ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        if (ino >= 0 && mgr->ops.exit_dir &&
            inotify_add_watch(ino, mgr->ops.exit_dir, IN_CLOSE_WRITE | IN_MOVED_TO) < 0)
                rm_log_warn("watching %s for container exits: %s; relying on polling",
                            mgr->ops.exit_dir, strerror(errno));
        for (;;) {
                struct pollfd p[2] = {{.fd = mgr->wake[0], .events = POLLIN},
                                      {.fd = ino, .events = POLLIN}};
                int n = poll(p, ino >= 0 ? 2 : 1, SWEEP_MS);
                if (n > 0 && p[0].revents) {
                        char b[64];
                        ssize_t len = read(mgr->wake[0], b, sizeof(b));
                        if (len <= 0 || memchr(b, 0, (size_t)len)) {
                                delete_gone(mgr); /* owed before the daemon goes */
                                return NULL;
                        }
                }
                if (n > 0 && ino >= 0 && p[1].revents) {
                        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
                        ssize_t len = read(ino, buf, sizeof(buf));
                        for (ssize_t off = 0; off < len;) {
                                const struct inotify_event *ev = (const void *)(buf + off);
                                if (ev->len)
                                        check_one(mgr, ev->name);
                                off += (ssize_t)(sizeof(*ev) + ev->len);
                        }
                }
                if (n == 0) {
                        char **ids = live_ids(mgr);
                        for (char **id = ids; *id; id++)
                                check_one(mgr, *id);
                        rm_strv_free(ids);
                }
                delete_gone(mgr);
                reap_exited(mgr);
                pthread_mutex_lock(&mgr->lock);
                bool trash = mgr->trash_pending;
                mgr->trash_pending = false;
                pthread_mutex_unlock(&mgr->lock);
                if (trash)
                        rm__trash_empty(mgr);
        }
}

void rm_containers_settle(struct rm_container_manager *mgr, const char *pod_id)
{
        /* runc delete has its own deadline in the driver; this bound only keeps a wedged
         * runtime from holding RemovePodSandbox for ever */
        int64_t end = rm_mono_ns() + 60 * 1000000000LL;
        pthread_mutex_lock(&mgr->lock);
        while (rm__gone_pending(mgr, pod_id)) {
                int64_t now = rm_mono_ns();
                if (now >= end) {
                        rm_log_warn("pod %s: its containers' runtime state is still being "
                                    "deleted; going on without waiting",
                                    pod_id);
                        break;
                }
                /* re-check at least every 100 ms */
                struct timespec ts = rm_mono_timespec(now + 100000000LL);
                pthread_cond_timedwait(&mgr->changed, &mgr->lock, &ts);
        }
        pthread_mutex_unlock(&mgr->lock);
}
