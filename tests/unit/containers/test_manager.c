/* The container manager against fake images, pods and runtime: the state machine, name
 * reservation and identical retries, rollback of a failed create, exits noticed through
 * the exit directory, restart recovery and crash leftovers, filters and prefixes. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "remora/cancel.h"
#include "remora/cleanup.h"
#include "remora/containers.h"
#include "remora/fsutil.h"
#include "remora/ids.h"
#include "remora/xalloc.h"

#define POD_ID "aaaa567890abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* The fake world the ops see. */
struct fake {
        char *base;
        char *exit_dir;
        pthread_mutex_t lock;
        int created, started, deleted, mounted, unmounted, kills;
        int last_signal;
        bool fail_create;
        bool ignore_term; /* a process that ignores SIGTERM */
        bool exits_first; /* the container exits just before any signal reaches it */
        bool pod_ready;
        char events[64]; /* one letter per event: C, S, X (stopped), D */
        size_t n_events;
        char *ids[64];
        int status[64]; /* -1 running, else exit code */
        size_t n;
};

static struct fake F;

/* The wall clock as the code under test reads it: the real one plus a step (NTP at a
 * node's boot, an operator's date). Linked in with --wrap=clock_gettime. */
static _Atomic int64_t realtime_step_ns;
int __real_clock_gettime(clockid_t clk, struct timespec *ts);
int __wrap_clock_gettime(clockid_t clk, struct timespec *ts);
int __wrap_clock_gettime(clockid_t clk, struct timespec *ts)
{
        int rc = __real_clock_gettime(clk, ts);
        int64_t step = realtime_step_ns;
        if (rc == 0 && clk == CLOCK_REALTIME && step != 0) {
                int64_t ns = (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec + step;
                ts->tv_sec = ns / 1000000000LL;
                ts->tv_nsec = ns % 1000000000LL;
        }
        return rc;
}

static int find_fake(const char *id)
{
        for (size_t i = 0; i < F.n; i++) {
                if (strcmp(F.ids[i], id) == 0)
                        return (int)i;
        }
        return -1;
}

/* The exit file a monitor writes: rename into place, as the inotify watch expects. */
static void fake_exit(const char *id, int code)
{
        pthread_mutex_lock(&F.lock);
        int i = find_fake(id);
        if (i >= 0 && F.status[i] < 0)
                F.status[i] = code;
        pthread_mutex_unlock(&F.lock);
        cleanup_free char *tmp = xasprintf("%s/.tmp-%s", F.exit_dir, id);
        cleanup_free char *path = xasprintf("%s/%s", F.exit_dir, id);
        FILE *f = fopen(tmp, "w");
        assert_non_null(f);
        fprintf(f, "%d\n", code);
        fclose(f);
        assert_int_equal(rename(tmp, path), 0);
}

static int image_lookup(void *ctx, const char *ref, struct rm_arena *a, struct rm_ctr_image *out,
                        struct rm_error **err)
{
        (void)ctx;
        if (strcmp(ref, "busybox") != 0)
                return rm_error_set(err, RM_NOT_FOUND, "image %s is not pulled", ref);
        static char *cmd[] = {"/bin/sh"};
        out->id = "sha256:1111";
        out->ref = rm_arena_strdup(a, "docker.io/library/busybox:latest");
        out->config.cmd = cmd;
        out->config.n_cmd = 1;
        out->config.stop_signal = "SIGQUIT";
        return 0;
}

static int rootfs_mount(void *ctx, const char *image_id, const char *dir, const char *target,
                        const struct rm_spec_userns *userns, struct rm_error **err)
{
        (void)ctx;
        (void)userns;
        (void)image_id;
        (void)dir;
        (void)err;
        cleanup_free char *etc = xasprintf("%s/etc", target);
        assert_int_equal(rm_mkdir_p(etc, 0755, NULL), 0);
        F.mounted++;
        return 0;
}

static int rootfs_unmount(void *ctx, const char *image_id, const char *dir, const char *target,
                          struct rm_error **err)
{
        (void)ctx;
        (void)image_id;
        (void)dir;
        (void)target;
        (void)err;
        F.unmounted++;
        return 0;
}

static int pod_lookup(void *ctx, const char *pod_id, struct rm_arena *a, struct rm_ctr_pod *out,
                      struct rm_error **err)
{
        (void)ctx;
        if (strncmp(POD_ID, pod_id, strlen(pod_id)) != 0)
                return rm_error_set(err, RM_NOT_FOUND, "pod sandbox %s not found", pod_id);
        memset(out, 0, sizeof(*out));
        out->ready = F.pod_ready;
        out->log_directory = rm_arena_printf(a, "%s/logs", F.base);
        out->runtime_handler = "";
        out->spec.pod_id = POD_ID;
        out->spec.hostname = "pod";
        out->spec.pid_mode = RUNTIME__V1__NAMESPACE_MODE__CONTAINER;
        return 0;
}

static int fake_create(void *ctx, const struct rm_ctr_create *c, pid_t *pid, struct rm_error **err)
{
        (void)ctx;
        if (F.fail_create)
                return rm_error_set(err, RM_INTERNAL, "runc create failed: fake");
        cleanup_free char *config = xasprintf("%s/config.json", c->bundle);
        assert_int_equal(access(config, F_OK), 0); /* the spec is written before */
        pthread_mutex_lock(&F.lock);
        F.ids[F.n] = xstrdup(c->id);
        F.status[F.n] = -1;
        F.n++;
        F.created++;
        pthread_mutex_unlock(&F.lock);
        *pid = 4242;
        return 0;
}

static int fake_start(void *ctx, const char *id, struct rm_error **err)
{
        (void)ctx;
        (void)id;
        (void)err;
        F.started++;
        return 0;
}

static int fake_kill(void *ctx, const char *id, int sig, struct rm_error **err)
{
        (void)ctx;
        (void)err;
        F.kills++;
        F.last_signal = sig;
        if (F.exits_first) {
                /* The container exited by itself just before the signal, as runc sees it. */
                fake_exit(id, 3);
                return rm_error_set(err, RM_UNKNOWN, "runc kill %s: container not running", id);
        }
        if (sig == SIGKILL || !F.ignore_term)
                fake_exit(id, 128 + sig);
        return 0;
}

static int fake_delete(void *ctx, const char *id, bool force, struct rm_error **err)
{
        (void)ctx;
        (void)id;
        (void)force;
        (void)err;
        F.deleted++;
        return 0;
}

static int fake_exit_status(void *ctx, const char *id, pid_t pid, int *code, int64_t *finished,
                            struct rm_error **err)
{
        (void)ctx;
        (void)pid;
        (void)err;
        pthread_mutex_lock(&F.lock);
        int i = find_fake(id);
        int st = i >= 0 ? F.status[i] : 255;
        pthread_mutex_unlock(&F.lock);
        if (st < 0)
                return 0;
        *code = st;
        *finished = 1000;
        return 1;
}

static int fake_exec(void *ctx, const char *id, char *const *argv, int64_t timeout,
                     const struct rm_cancel *cancel, struct rm_ctr_exec_result *res,
                     struct rm_error **err)
{
        (void)ctx;
        (void)cancel;
        (void)id;
        (void)timeout;
        (void)err;
        res->exit_code = 7;
        res->out = (uint8_t *)xstrdup(argv[0]);
        res->out_len = strlen(argv[0]);
        return 0;
}

static void fake_event(void *ctx, const char *id, const char *pod_id,
                       Runtime__V1__ContainerEventType type)
{
        (void)ctx;
        (void)id;
        assert_string_equal(pod_id, POD_ID);
        pthread_mutex_lock(&F.lock);
        if (F.n_events < sizeof(F.events) - 1)
                F.events[F.n_events++] = "CSXD"[type];
        pthread_mutex_unlock(&F.lock);
}

static struct rm_container_ops ops = {
    .event = fake_event,
    .image_lookup = image_lookup,
    .rootfs_mount = rootfs_mount,
    .rootfs_unmount = rootfs_unmount,
    .pod_lookup = pod_lookup,
    .create = fake_create,
    .start = fake_start,
    .kill = fake_kill,
    .delete = fake_delete,
    .exit_status = fake_exit_status,
    .exec_sync = fake_exec,
};

struct world {
        struct rm_store *store;
        struct rm_container_manager *mgr;
        char *root;
        char *state;
};

static void open_world(struct world *w)
{
        struct rm_error *err = NULL;
        w->store = rm_store_open(w->root, &err);
        assert_non_null(w->store);
        struct rm_spec_host host = {.oom_score_adj_min = -1000};
        w->mgr = rm_containers_open(w->root, w->state, w->store, &ops, &host, &err);
        if (w->mgr == NULL)
                fail_msg("%s", err->msg);
}

static void close_world(struct world *w)
{
        rm_containers_close(w->mgr);
        rm_store_close(w->store);
}

static int setup(void **state)
{
        memset(&F, 0, sizeof(F));
        realtime_step_ns = 0;
        pthread_mutex_init(&F.lock, NULL);
        char tmpl[] = "/tmp/remora-unit-ctr-XXXXXX";
        assert_non_null(mkdtemp(tmpl));
        F.base = xstrdup(tmpl);
        F.exit_dir = xasprintf("%s/exits", F.base);
        F.pod_ready = true;
        assert_int_equal(rm_mkdir_p(F.exit_dir, 0700, NULL), 0);
        ops.exit_dir = F.exit_dir;
        struct world *w = xzalloc(sizeof(*w));
        w->root = xasprintf("%s/root", F.base);
        w->state = xasprintf("%s/state", F.base);
        open_world(w);
        *state = w;
        return 0;
}

static int teardown(void **state)
{
        struct world *w = *state;
        close_world(w);
        cleanup_free char *cmd = xasprintf("rm -rf '%s'", F.base);
        assert_int_equal(system(cmd), 0);
        for (size_t i = 0; i < F.n; i++)
                free(F.ids[i]);
        free(F.base);
        free(F.exit_dir);
        free(w->root);
        free(w->state);
        free(w);
        return 0;
}

struct request {
        Runtime__V1__CreateContainerRequest req;
        Runtime__V1__ContainerConfig cfg;
        Runtime__V1__ContainerMetadata meta;
        Runtime__V1__ImageSpec image;
        Runtime__V1__ContainerConfig__LabelsEntry label;
        Runtime__V1__ContainerConfig__LabelsEntry *labels[1];
};

static void request_init(struct request *r, const char *name, const char *tier)
{
        runtime__v1__create_container_request__init(&r->req);
        runtime__v1__container_config__init(&r->cfg);
        runtime__v1__container_metadata__init(&r->meta);
        runtime__v1__image_spec__init(&r->image);
        runtime__v1__container_config__labels_entry__init(&r->label);
        r->meta.name = (char *)name;
        r->image.image = "busybox";
        r->label.key = "tier";
        r->label.value = (char *)tier;
        r->labels[0] = &r->label;
        r->cfg.metadata = &r->meta;
        r->cfg.image = &r->image;
        r->cfg.labels = r->labels;
        r->cfg.n_labels = 1;
        r->cfg.log_path = "web/0.log";
        r->req.config = &r->cfg;
        r->req.pod_sandbox_id = POD_ID;
}

/* CreateContainer as the gRPC front end drives it: delivered says whether the answer
 * reached the client. */
static char *create_answered(struct world *w, struct request *r, bool delivered)
{
        char *id = NULL;
        struct rm_error *err = NULL;
        if (rm_containers_create(w->mgr, &r->req, NULL, &id, &err) < 0)
                fail_msg("create: %s", err->msg);
        rm_containers_answered(w->mgr, id, delivered);
        return id;
}

static char *create(struct world *w, struct request *r)
{
        return create_answered(w, r, true);
}

static Runtime__V1__ContainerStatus *status(struct world *w, const char *id, struct rm_arena *a)
{
        struct rm_error *err = NULL;
        Runtime__V1__ContainerStatusResponse *r = rm_containers_status(w->mgr, id, true, a, &err);
        if (r == NULL)
                fail_msg("status %s: %s", id, err->msg);
        return r->status;
}

static void expect_code(struct rm_error **err, enum rm_code code, const char *needle)
{
        assert_non_null(*err);
        if (strstr((*err)->msg, needle) == NULL)
                fail_msg("\"%s\" not in \"%s\"", needle, (*err)->msg);
        assert_int_equal((*err)->code, code);
        rm_error_free(*err);
        *err = NULL;
}

static void test_lifecycle(void **state)
{
        struct world *w = *state;
        struct request r;
        request_init(&r, "web", "front");
        cleanup_free char *id = create(w, &r);
        struct rm_arena *a = rm_arena_new();
        Runtime__V1__ContainerStatus *s = status(w, id, a);
        assert_int_equal(s->state, RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED);
        assert_string_equal(s->image_ref, "docker.io/library/busybox:latest");
        assert_string_equal(s->image_id, "sha256:1111");
        assert_true(s->created_at > 0);
        cleanup_free char *log = xasprintf("%s/logs/web/0.log", F.base);
        assert_string_equal(s->log_path, log);
        cleanup_free char *logdir = xasprintf("%s/logs/web", F.base);
        assert_int_equal(access(logdir, F_OK), 0);

        struct rm_error *err = NULL;
        assert_int_equal(rm_containers_start(w->mgr, id, &err), 0);
        s = status(w, id, a);
        assert_int_equal(s->state, RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING);
        assert_int_equal(rm_containers_start(w->mgr, id, &err), -1);
        expect_code(&err, RM_FAILED_PRECONDITION, "not CREATED");

        /* The image's STOPSIGNAL is used. */
        int deleted = F.deleted;
        assert_int_equal(rm_containers_stop(w->mgr, id, 10, NULL, &err), 0);
        assert_int_equal(F.last_signal, SIGQUIT);
        s = status(w, id, a);
        assert_int_equal(s->state, RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED);
        assert_int_equal(s->exit_code, 128 + SIGQUIT);
        assert_string_equal(s->reason, "Error");
        /* The root filesystem went when the exit was recorded. */
        assert_int_equal(F.unmounted, 1);
        int kills = F.kills;
        assert_int_equal(rm_containers_stop(w->mgr, id, 10, NULL, &err), 0); /* idempotent */
        assert_int_equal(F.kills, kills);

        assert_int_equal(rm_containers_remove(w->mgr, id, &err), 0);
        assert_int_equal(F.unmounted, 2); /* RemoveContainer's own unmount finds nothing */
        /* runc's delete runs once, on the watcher (after the exit or after the remove);
         * settle returns when the pod has none pending */
        rm_containers_settle(w->mgr, POD_ID);
        assert_int_equal(F.deleted, deleted + 1);
        assert_null(rm_containers_status(w->mgr, id, false, a, &err));
        expect_code(&err, RM_NOT_FOUND, "not found");
        assert_int_equal(rm_containers_remove(w->mgr, id, &err), 0); /* gone is fine */
        assert_string_equal(F.events, "CSXD"); /* one event per change, in order */
        cleanup_free char *dir = xasprintf("%s/containers/%s", w->root, id);
        cleanup_free char *bundle = xasprintf("%s/containers/%s", w->state, id);
        assert_int_equal(access(dir, F_OK), -1);
        assert_int_equal(access(bundle, F_OK), -1);
        rm_arena_free(a);
}

/* ContainerConfig.stop_signal overrides the image's STOPSIGNAL, the status reports the
 * one in effect, and a value outside the CRI enum is refused by name. */
static void test_stop_signal_from_config(void **state)
{
        struct world *w = *state;
        static const struct {
                Runtime__V1__Signal cri;
                int sig;
        } cases[] = {
            {RUNTIME__V1__SIGNAL__SIGUSR1, SIGUSR1},   {RUNTIME__V1__SIGNAL__SIGIOT, SIGABRT},
            {RUNTIME__V1__SIGNAL__SIGRTMIN, 34},       {RUNTIME__V1__SIGNAL__SIGRTMINPLUS2, 36},
            {RUNTIME__V1__SIGNAL__SIGRTMAXMINUS1, 63}, {RUNTIME__V1__SIGNAL__SIGRTMAX, 64},
        };
        struct rm_arena *a = rm_arena_new();
        struct rm_error *err = NULL;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct request r;
                char name[16];
                snprintf(name, sizeof(name), "sig%zu", i);
                request_init(&r, name, "t");
                r.cfg.stop_signal = cases[i].cri;
                cleanup_free char *id = create(w, &r);
                Runtime__V1__ContainerStatus *s = status(w, id, a);
                /* SIGIOT is reported by its primary name, SIGABRT. */
                assert_int_equal(s->stop_signal, cases[i].cri == RUNTIME__V1__SIGNAL__SIGIOT
                                                     ? RUNTIME__V1__SIGNAL__SIGABRT
                                                     : cases[i].cri);
                assert_int_equal(rm_containers_start(w->mgr, id, &err), 0);
                assert_int_equal(rm_containers_stop(w->mgr, id, 10, NULL, &err), 0);
                assert_int_equal(F.last_signal, cases[i].sig);
                assert_int_equal(rm_containers_remove(w->mgr, id, &err), 0);
        }
        /* Unset: the image's SIGQUIT. */
        struct request r;
        request_init(&r, "fromimage", "t");
        cleanup_free char *id = create(w, &r);
        assert_int_equal(status(w, id, a)->stop_signal, RUNTIME__V1__SIGNAL__SIGQUIT);

        request_init(&r, "bad", "t");
        r.cfg.stop_signal = (Runtime__V1__Signal)999;
        char *bad = NULL;
        assert_int_equal(rm_containers_create(w->mgr, &r.req, NULL, &bad, &err), -1);
        expect_code(&err, RM_INVALID_ARGUMENT, "config.stop_signal 999");
        assert_null(bad);
        rm_arena_free(a);
}

/* A container that ignores SIGTERM stopped with a 1 s timeout, the wall clock stepping
 * an hour ahead 200 ms in when step_clock is set: the seconds the stop took. */
static void *step_clock_soon(void *arg)
{
        (void)arg;
        struct timespec pause = {0, 200 * 1000000L};
        nanosleep(&pause, NULL);
        realtime_step_ns = 3600 * 1000000000LL;
        return NULL;
}

static double stop_stubborn(struct world *w, const char *id, bool step_clock)
{
        struct rm_error *err = NULL;
        assert_int_equal(rm_containers_start(w->mgr, id, &err), 0);
        F.ignore_term = true;
        struct timespec t0, t1;
        pthread_t stepper;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (step_clock)
                assert_int_equal(pthread_create(&stepper, NULL, step_clock_soon, NULL), 0);
        assert_int_equal(rm_containers_stop(w->mgr, id, 1, NULL, &err), 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (step_clock)
                pthread_join(stepper, NULL);
        realtime_step_ns = 0;
        assert_int_equal(F.last_signal, SIGKILL);
        assert_int_equal(F.kills, 2); /* the stop signal, then SIGKILL after the timeout */
        return (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
}

static void test_stop_escalates_to_sigkill(void **state)
{
        struct world *w = *state;
        struct request r;
        request_init(&r, "stubborn", "back");
        cleanup_free char *id = create(w, &r);
        assert_true(stop_stubborn(w, id, false) >= 0.9);
        struct rm_arena *a = rm_arena_new();
        assert_int_equal(status(w, id, a)->exit_code, 128 + SIGKILL);
        rm_arena_free(a);
}

/* The grace period is time that passes, not a wall-clock reading: a step of the clock
 * during the wait neither ends it early (the SIGKILL kubelet's grace period promises not
 * to send yet) nor stretches it. */
static void test_stop_grace_ignores_wall_clock_steps(void **state)
{
        struct world *w = *state;
        struct request r;
        request_init(&r, "stubborn", "back");
        cleanup_free char *id = create(w, &r);
        double waited = stop_stubborn(w, id, true);
        assert_true(waited >= 0.9);
        assert_true(waited < 5);
}

/* A stop racing the container's own exit: runc refuses the signal, the stop is still OK
 * and the container's own exit code is recorded. */
static void test_stop_races_own_exit(void **state)
{
        struct world *w = *state;
        struct request r;
        request_init(&r, "quick", "back");
        cleanup_free char *id = create(w, &r);
        struct rm_error *err = NULL;
        assert_int_equal(rm_containers_start(w->mgr, id, &err), 0);
        F.exits_first = true;
        assert_int_equal(rm_containers_stop(w->mgr, id, 10, NULL, &err), 0);
        assert_null(err);
        struct rm_arena *a = rm_arena_new();
        Runtime__V1__ContainerStatus *s = status(w, id, a);
        assert_int_equal(s->state, RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED);
        assert_int_equal(s->exit_code, 3);
        rm_arena_free(a);
}

static void test_exit_noticed_without_a_call(void **state)
{
        struct world *w = *state;
        struct request r;
        request_init(&r, "short", "back");
        cleanup_free char *id = create(w, &r);
        struct rm_error *err = NULL;
        assert_int_equal(rm_containers_start(w->mgr, id, &err), 0);
        fake_exit(id, 0); /* the process ends by itself */
        struct rm_arena *a = rm_arena_new();
        Runtime__V1__ContainerState st = RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
        for (int i = 0; i < 200 && st != RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED; i++) {
                usleep(10000);
                st = status(w, id, a)->state;
        }
        assert_int_equal(st, RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED);
        assert_string_equal(status(w, id, a)->reason, "Completed");
        rm_arena_free(a);
}

static void test_names_and_retries(void **state)
{
        struct world *w = *state;
        struct request r;
        request_init(&r, "web", "front");
        cleanup_free char *id = create_answered(w, &r, false); /* its client gave up */
        cleanup_free char *again = create(w, &r);              /* the identical retry gets it */
        assert_string_equal(id, again);
        assert_int_equal(F.created, 0); /* the runtime sees it only at start */

        /* That answer was delivered: the same request again is a client's mistake. */
        char *none = NULL;
        struct rm_error *err = NULL;
        assert_int_equal(rm_containers_create(w->mgr, &r.req, NULL, &none, &err), -1);
        expect_code(&err, RM_ALREADY_EXISTS, id);

        struct request other;
        request_init(&other, "web", "changed");
        assert_int_equal(rm_containers_create(w->mgr, &other.req, NULL, &none, &err), -1);
        expect_code(&err, RM_ALREADY_EXISTS, id);
        other.meta.attempt = 1;
        cleanup_free char *next = create(w, &other);
        assert_string_not_equal(next, id);

        request_init(&other, "bad name!", "x");
        assert_int_equal(rm_containers_create(w->mgr, &other.req, NULL, &none, &err), -1);
        expect_code(&err, RM_INVALID_ARGUMENT, "config.metadata.name");
        request_init(&other, "x", "x");
        other.req.pod_sandbox_id = "ffff";
        assert_int_equal(rm_containers_create(w->mgr, &other.req, NULL, &none, &err), -1);
        expect_code(&err, RM_NOT_FOUND, "pod_sandbox_id");
        request_init(&other, "x", "x");
        other.image.image = "nginx";
        assert_int_equal(rm_containers_create(w->mgr, &other.req, NULL, &none, &err), -1);
        expect_code(&err, RM_NOT_FOUND, "config.image.image");
        request_init(&other, "x", "x");
        other.cfg.log_path = "../escape.log";
        assert_int_equal(rm_containers_create(w->mgr, &other.req, NULL, &none, &err), -1);
        expect_code(&err, RM_INVALID_ARGUMENT, "config.log_path");
        F.pod_ready = false;
        request_init(&other, "x", "x");
        assert_int_equal(rm_containers_create(w->mgr, &other.req, NULL, &none, &err), -1);
        expect_code(&err, RM_FAILED_PRECONDITION, "not ready");
        F.pod_ready = true;
}

static size_t count_entries(const char *dir)
{
        cleanup_dir DIR *d = opendir(dir);
        size_t n = 0;
        struct dirent *e;
        while (d && (e = readdir(d)))
                n += e->d_name[0] != '.';
        return n;
}

/* RemoveContainer renames the directories into the trash, which the watcher empties;
 * a name already taken there (no rename possible) means removing them in place. */
static void test_remove_through_trash(void **state)
{
        struct world *w = *state;
        cleanup_free char *dir = xasprintf("%s/containers", w->root);
        cleanup_free char *trash = xasprintf("%s/containers/.trash", w->root);
        cleanup_free char *state_trash = xasprintf("%s/containers/.trash", w->state);
        struct request r1, r2;
        request_init(&r1, "one", "x");
        request_init(&r2, "two", "x");
        cleanup_free char *id1 = create(w, &r1);
        cleanup_free char *id2 = create(w, &r2);
        struct rm_error *err = NULL;
        assert_int_equal(rm_containers_remove(w->mgr, id1, &err), 0);
        cleanup_free char *gone1 = xasprintf("%s/%s", dir, id1);
        assert_int_equal(access(gone1, F_OK), -1);
        for (int i = 0; i < 500 && (count_entries(trash) || count_entries(state_trash)); i++)
                usleep(10000);
        assert_int_equal(count_entries(trash), 0);
        assert_int_equal(count_entries(state_trash), 0);

        cleanup_free char *taken = xasprintf("%s/%s/x", trash, id2);
        assert_int_equal(rm_mkdir_p(taken, 0700, &err), 0);
        assert_int_equal(rm_containers_remove(w->mgr, id2, &err), 0);
        cleanup_free char *gone2 = xasprintf("%s/%s", dir, id2);
        assert_int_equal(access(gone2, F_OK), -1);
        assert_int_equal(count_entries(dir), 0); /* records included */
}

static void test_failed_start_leaves_nothing(void **state)
{
        struct world *w = *state;
        cleanup_free char *dir = xasprintf("%s/containers", w->root);
        cleanup_free char *bundles = xasprintf("%s/containers", w->state);
        F.fail_create = true;
        struct request r;
        request_init(&r, "doomed", "x");
        cleanup_free char *id = create(w, &r);
        assert_int_equal(F.created, 0);
        struct rm_error *err = NULL;
        assert_int_equal(rm_containers_start(w->mgr, id, &err), -1);
        expect_code(&err, RM_INTERNAL, "runc create failed");
        F.fail_create = false;
        struct rm_arena *a = rm_arena_new();
        Runtime__V1__ContainerStatusResponse *st = rm_containers_status(w->mgr, id, false, a, &err);
        assert_non_null(st);
        assert_int_equal(st->status->state, RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED);
        assert_string_equal(st->status->reason, "StartError");
        assert_non_null(strstr(st->status->message, "runc create failed"));
        assert_int_equal(rm_containers_remove(w->mgr, id, &err), 0);
        assert_int_equal(count_entries(dir), 0);
        assert_int_equal(count_entries(bundles), 0);
        assert_int_equal(F.mounted, F.unmounted);
        assert_int_equal(rm_containers_list(w->mgr, NULL, a)->n_containers, 0);
        rm_arena_free(a);
        /* The name is free again. */
        cleanup_free char *ok = create(w, &r);
}

static void test_stop_before_start(void **state)
{
        struct world *w = *state;
        struct request r;
        request_init(&r, "never", "x");
        cleanup_free char *id = create(w, &r);
        struct rm_error *err = NULL;
        assert_int_equal(rm_containers_stop(w->mgr, id, 10, NULL, &err), 0);
        assert_int_equal(F.kills, 0);
        struct rm_arena *a = rm_arena_new();
        Runtime__V1__ContainerStatusResponse *st = rm_containers_status(w->mgr, id, false, a, &err);
        assert_int_equal(st->status->state, RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED);
        assert_int_equal(rm_containers_start(w->mgr, id, &err), -1);
        expect_code(&err, RM_FAILED_PRECONDITION, "not CREATED");
        assert_int_equal(rm_containers_remove(w->mgr, id, &err), 0);
        assert_int_equal(F.deleted, 0);
        rm_arena_free(a);
}

static void test_list_filters_and_prefixes(void **state)
{
        struct world *w = *state;
        struct request a1, a2;
        request_init(&a1, "one", "front");
        request_init(&a2, "two", "back");
        cleanup_free char *id1 = create(w, &a1);
        cleanup_free char *id2 = create(w, &a2);
        struct rm_error *err = NULL;
        assert_int_equal(rm_containers_start(w->mgr, id2, &err), 0);

        struct rm_arena *a = rm_arena_new();
        Runtime__V1__ContainerFilter f = RUNTIME__V1__CONTAINER_FILTER__INIT;
        assert_int_equal(rm_containers_list(w->mgr, &f, a)->n_containers, 2);
        Runtime__V1__ContainerStateValue sv = RUNTIME__V1__CONTAINER_STATE_VALUE__INIT;
        sv.state = RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
        f.state = &sv;
        Runtime__V1__ListContainersResponse *l = rm_containers_list(w->mgr, &f, a);
        assert_int_equal(l->n_containers, 1);
        assert_string_equal(l->containers[0]->id, id2);
        assert_string_equal(l->containers[0]->pod_sandbox_id, POD_ID);
        f.state = NULL;
        Runtime__V1__ContainerFilter__LabelSelectorEntry sel =
            RUNTIME__V1__CONTAINER_FILTER__LABEL_SELECTOR_ENTRY__INIT;
        Runtime__V1__ContainerFilter__LabelSelectorEntry *sels[] = {&sel};
        sel.key = "tier";
        sel.value = "front";
        f.label_selector = sels;
        f.n_label_selector = 1;
        l = rm_containers_list(w->mgr, &f, a);
        assert_int_equal(l->n_containers, 1);
        assert_string_equal(l->containers[0]->id, id1);
        assert_int_equal(l->containers[0]->n_labels, 1);
        f.n_label_selector = 0;
        f.pod_sandbox_id = "bbbb";
        assert_int_equal(rm_containers_list(w->mgr, &f, a)->n_containers, 0);

        /* A unique prefix works everywhere; a shared one is refused. */
        cleanup_free char *p1 = strndup(id1, 12);
        cleanup_free char *full = rm_containers_resolve(w->mgr, p1, &err);
        assert_string_equal(full, id1);
        assert_int_equal(status(w, p1, a)->state, RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED);
        size_t common = 0;
        while (id1[common] == id2[common])
                common++;
        if (common > 0) {
                cleanup_free char *shared = strndup(id1, common);
                assert_null(rm_containers_resolve(w->mgr, shared, &err));
                expect_code(&err, RM_INVALID_ARGUMENT, "ambiguous");
        }
        char **of_pod = rm_containers_of_pod(w->mgr, POD_ID);
        assert_non_null(of_pod[0]);
        assert_non_null(of_pod[1]);
        assert_null(of_pod[2]);
        for (char **p = of_pod; *p; p++)
                free(*p);
        free(of_pod);
        rm_arena_free(a);
}

/* The packed list is byte for byte the list message packed, for every filter, and its
 * kept items follow a state change. */
static void expect_packed_equal(struct world *w, const Runtime__V1__ContainerFilter *f,
                                size_t n_expected)
{
        struct rm_arena *a = rm_arena_new();
        Runtime__V1__ListContainersResponse *l = rm_containers_list(w->mgr, f, a);
        assert_int_equal(l->n_containers, n_expected);
        size_t want_len = runtime__v1__list_containers_response__get_packed_size(l);
        cleanup_free uint8_t *want = xmalloc(want_len + 1);
        runtime__v1__list_containers_response__pack(l, want);
        size_t len = 0;
        cleanup_free uint8_t *got = rm_containers_list_packed(w->mgr, f, &len);
        assert_int_equal(len, want_len);
        assert_memory_equal(got, want, len);
        rm_arena_free(a);
}

static void test_list_packed(void **state)
{
        struct world *w = *state;
        struct request a1, a2;
        request_init(&a1, "one", "front");
        request_init(&a2, "two", "back");
        expect_packed_equal(w, NULL, 0);
        cleanup_free char *id1 = create(w, &a1);
        cleanup_free char *id2 = create(w, &a2);
        expect_packed_equal(w, NULL, 2);
        struct rm_error *err = NULL;
        assert_int_equal(rm_containers_start(w->mgr, id2, &err), 0);
        expect_packed_equal(w, NULL, 2); /* id2's kept item was CREATED */
        Runtime__V1__ContainerFilter f = RUNTIME__V1__CONTAINER_FILTER__INIT;
        Runtime__V1__ContainerStateValue sv = RUNTIME__V1__CONTAINER_STATE_VALUE__INIT;
        sv.state = RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
        f.state = &sv;
        expect_packed_equal(w, &f, 1);
        assert_int_equal(rm_containers_stop(w->mgr, id2, 10, NULL, &err), 0);
        expect_packed_equal(w, &f, 0);
        expect_packed_equal(w, NULL, 2);
        assert_int_equal(rm_containers_remove(w->mgr, id1, &err), 0);
        expect_packed_equal(w, NULL, 1);
}

static void test_exec_sync_needs_running(void **state)
{
        struct world *w = *state;
        struct request r;
        request_init(&r, "exec", "x");
        cleanup_free char *id = create(w, &r);
        Runtime__V1__ExecSyncRequest req = RUNTIME__V1__EXEC_SYNC_REQUEST__INIT;
        char *cmd[] = {"/bin/true"};
        req.container_id = id;
        req.cmd = cmd;
        req.n_cmd = 1;
        struct rm_ctr_exec_result res = {0};
        struct rm_error *err = NULL;
        assert_int_equal(rm_containers_exec_sync(w->mgr, &req, NULL, &res, &err), -1);
        expect_code(&err, RM_FAILED_PRECONDITION, "not running");
        assert_int_equal(rm_containers_start(w->mgr, id, &err), 0);
        assert_int_equal(rm_containers_exec_sync(w->mgr, &req, NULL, &res, &err), 0);
        assert_int_equal(res.exit_code, 7);
        assert_memory_equal(res.out, "/bin/true", 9);
        free(res.out);
        req.n_cmd = 0;
        assert_int_equal(rm_containers_exec_sync(w->mgr, &req, NULL, &res, &err), -1);
        expect_code(&err, RM_INVALID_ARGUMENT, "cmd is empty");
        /* A call whose client already gave up runs nothing. */
        req.n_cmd = 1;
        struct rm_cancel gone;
        rm_cancel_init(&gone, 0);
        rm_cancel_set(&gone);
        memset(&res, 0, sizeof(res));
        assert_int_equal(rm_containers_exec_sync(w->mgr, &req, &gone, &res, &err), -1);
        expect_code(&err, RM_CANCELLED, "cancelled");
        assert_null(res.out);
        rm_cancel_release(&gone);
}

static void test_restart_recovers_state(void **state)
{
        struct world *w = *state;
        struct request r1, r2;
        request_init(&r1, "keeps", "x");
        request_init(&r2, "dies", "x");
        cleanup_free char *id1 = create(w, &r1);
        cleanup_free char *id2 = create(w, &r2);
        struct rm_error *err = NULL;
        assert_int_equal(rm_containers_start(w->mgr, id1, &err), 0);
        assert_int_equal(rm_containers_start(w->mgr, id2, &err), 0);
        close_world(w);

        /* While the daemon is away one container exits, and a crash left the directories
         * of a create that never got its record. */
        pthread_mutex_lock(&F.lock);
        F.status[find_fake(id2)] = 3;
        pthread_mutex_unlock(&F.lock);
        char orphan[RM_ID_LEN + 1];
        memset(orphan, 'c', RM_ID_LEN);
        orphan[RM_ID_LEN] = '\0';
        cleanup_free char *odir = xasprintf("%s/containers/%s/upper", w->root, orphan);
        cleanup_free char *obundle = xasprintf("%s/containers/%s/rootfs", w->state, orphan);
        assert_int_equal(rm_mkdir_p(odir, 0700, NULL), 0);
        assert_int_equal(rm_mkdir_p(obundle, 0700, NULL), 0);
        int deleted = F.deleted;

        open_world(w);
        struct rm_arena *a = rm_arena_new();
        assert_int_equal(status(w, id1, a)->state, RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING);
        /* After a restart every container counts as answered: an identical CreateContainer
         * is refused, naming the first. */
        char *none = NULL;
        assert_int_equal(rm_containers_create(w->mgr, &r1.req, NULL, &none, &err), -1);
        expect_code(&err, RM_ALREADY_EXISTS, id1);
        Runtime__V1__ContainerStatus *s2 = status(w, id2, a);
        assert_int_equal(s2->state, RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED);
        assert_int_equal(s2->exit_code, 3);
        assert_int_equal(s2->n_labels, 1);
        cleanup_free char *odir_top = xasprintf("%s/containers/%s", w->root, orphan);
        cleanup_free char *obundle_top = xasprintf("%s/containers/%s", w->state, orphan);
        assert_int_equal(access(odir_top, F_OK), -1);
        assert_int_equal(access(obundle_top, F_OK), -1);
        assert_int_equal(F.deleted, deleted + 1); /* runc state of the orphan too */
        rm_arena_free(a);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_lifecycle, setup, teardown),
            cmocka_unit_test_setup_teardown(test_stop_escalates_to_sigkill, setup, teardown),
            cmocka_unit_test_setup_teardown(test_stop_grace_ignores_wall_clock_steps, setup,
                                            teardown),
            cmocka_unit_test_setup_teardown(test_stop_signal_from_config, setup, teardown),
            cmocka_unit_test_setup_teardown(test_exit_noticed_without_a_call, setup, teardown),
            cmocka_unit_test_setup_teardown(test_names_and_retries, setup, teardown),
            cmocka_unit_test_setup_teardown(test_stop_before_start, setup, teardown),
            cmocka_unit_test_setup_teardown(test_failed_start_leaves_nothing, setup, teardown),
            cmocka_unit_test_setup_teardown(test_list_filters_and_prefixes, setup, teardown),
            cmocka_unit_test_setup_teardown(test_list_packed, setup, teardown),
            cmocka_unit_test_setup_teardown(test_remove_through_trash, setup, teardown),
            cmocka_unit_test_setup_teardown(test_exec_sync_needs_running, setup, teardown),
            cmocka_unit_test_setup_teardown(test_stop_races_own_exit, setup, teardown),
            cmocka_unit_test_setup_teardown(test_restart_recovers_state, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
