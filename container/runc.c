/* The runc driver: each operation is one run of the runc binary with --root and
 * --log-format json, so failures come back as runc's own message. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cmd.h"
#include "remora/cancel.h"
#include "remora/cleanup.h"
#include "remora/crashpoint.h"
#include "remora/exec_reaper.h"
#include "remora/fsutil.h"
#include "remora/oci.h"
#include "remora/xalloc.h"

struct rm_oci *rm_oci_new(const struct rm_runtime_ops *ops, const char *binary, const char *root,
                          int timeout_ms)
{
        struct rm_oci *oci = xzalloc(sizeof(*oci));
        oci->ops = ops;
        oci->binary = xstrdup(binary);
        oci->root = xstrdup(root);
        oci->timeout_ms = timeout_ms > 0 ? timeout_ms : RM_OCI_DEFAULT_TIMEOUT_MS;
        return oci;
}

void rm_oci_free(struct rm_oci *oci)
{
        if (oci == NULL)
                return;
        free(oci->binary);
        free(oci->root);
        free(oci);
}

void rm_oci_exec_result_clear(struct rm_oci_exec_result *res)
{
        free(res->out);
        free(res->errout);
        memset(res, 0, sizeof(*res));
}

const char *rm_oci_status_name(enum rm_oci_status status)
{
        switch (status) {
        case RM_OCI_CREATING:
                return "creating";
        case RM_OCI_CREATED:
                return "created";
        case RM_OCI_RUNNING:
                return "running";
        case RM_OCI_PAUSED:
                return "paused";
        case RM_OCI_STOPPED:
                return "stopped";
        default:
                return "unknown";
        }
}

/* runc --log-format json writes {"level":"error","msg":...} lines; the last error's msg is
 * the cause. Anything else (a fake runtime, a crash) is reported as the raw last line. */
static char *runc_message(const char *text)
{
        char *found = NULL;
        cleanup_free char *copy = xstrdup(text ? text : "");
        char *save = NULL;
        for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                cleanup_json struct json_object *o = json_tokener_parse(line);
                struct json_object *msg = NULL;
                free(found);
                if (o && json_object_is_type(o, json_type_object) &&
                    json_object_object_get_ex(o, "msg", &msg))
                        found = xstrdup(json_object_get_string(msg));
                else
                        found = xstrdup(line);
        }
        return found;
}

static bool is_not_found(const char *msg)
{
        return msg && (strstr(msg, "does not exist") || strstr(msg, "not exist"));
}

/* Run runc with the common flags, then args. On exit status != 0, *err holds runc's
 * message (NOT_FOUND for an unknown container). */
static int runc(const struct rm_oci *oci, const char *const *args, const char *input,
                struct rm__cmd_result *r, struct rm_error **err)
{
        const char *argv[64];
        size_t n = 0;
        argv[n++] = oci->binary;
        argv[n++] = "--root";
        argv[n++] = oci->root;
        argv[n++] = "--log-format";
        argv[n++] = "json";
        for (size_t i = 0; args[i] && n < 63; i++)
                argv[n++] = args[i];
        argv[n] = NULL;
        struct rm__cmd c = {
            .argv = argv,
            .input = input,
            .input_len = input ? strlen(input) : 0,
            .timeout_ms = oci->timeout_ms,
        };
        if (rm__cmd_run(&c, r, err) < 0)
                return rm_error_wrap(err, "runc %s", args[0]);
        if (WIFEXITED(r->wstatus) && WEXITSTATUS(r->wstatus) == 0)
                return 0;
        cleanup_free char *msg = runc_message(r->errout);
        if (msg == NULL || *msg == '\0') {
                char buf[256];
                free(msg);
                msg = xstrdup(rm__cmd_reason(r, buf, sizeof(buf)));
        }
        return rm_error_set(err, is_not_found(msg) ? RM_NOT_FOUND : RM_UNKNOWN, "runc %s %s: %s",
                            args[0], args[1] ? args[1] : "", msg);
}

static int simple(const struct rm_oci *oci, const char *const *args, struct rm_error **err)
{
        struct rm__cmd_result r;
        int rc = runc(oci, args, NULL, &r, err);
        rm__cmd_result_clear(&r);
        return rc;
}

static int runc_create(const struct rm_oci *oci, const char *id, const char *bundle,
                       const struct rm_oci_create_opts *opts, struct rm_error **err)
{
        /* The container inherits runc's stdio, so runc's own errors are read back from
         * its log file rather than from a stderr that belongs to the container. */
        cleanup_free char *log = xasprintf("%s/runc-create.log", bundle);
        unlink(log);
        const char *argv[] = {oci->binary,    "--root",       oci->root, "--log",    log,
                              "--log-format", "json",         "create",  "--bundle", bundle,
                              "--pid-file",   opts->pid_file, id,        NULL};
        struct rm__cmd c = {.argv = argv, .stdio = opts->stdio, .timeout_ms = oci->timeout_ms};
        struct rm__cmd_result r;
        if (rm__cmd_run(&c, &r, err) < 0)
                return rm_error_wrap(err, "runc create %s", id);
        int ws = r.wstatus;
        rm__cmd_result_clear(&r);
        if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0)
                return 0;
        cleanup_free char *text = rm_read_file(log, 1 << 20, NULL, NULL);
        cleanup_free char *msg = runc_message(text);
        return rm_error_set(err, RM_UNKNOWN, "runc create %s: %s", id,
                            msg ? msg : "failed without a message");
}

static int runc_start(const struct rm_oci *oci, const char *id, struct rm_error **err)
{
        const char *args[] = {"start", id, NULL};
        return simple(oci, args, err);
}

static int runc_kill(const struct rm_oci *oci, const char *id, int sig, bool all,
                     struct rm_error **err)
{
        char signum[16];
        snprintf(signum, sizeof(signum), "%d", sig);
        const char *args[] = {"kill", id, signum, NULL};
        const char *args_all[] = {"kill", "--all", id, signum, NULL};
        return simple(oci, all ? args_all : args, err);
}

static int runc_delete(const struct rm_oci *oci, const char *id, bool force, struct rm_error **err)
{
        const char *args[] = {"delete", id, NULL};
        const char *args_force[] = {"delete", "--force", id, NULL};
        cleanup_error struct rm_error *e = NULL;
        if (simple(oci, force ? args_force : args, &e) == 0)
                return 0;
        if (e->code == RM_NOT_FOUND)
                return 0; /* already gone: delete is idempotent */
        return rm_error_set(err, e->code, "%s", e->msg);
}

static enum rm_oci_status parse_status(const char *s)
{
        static const char *const names[] = {"",        "creating", "created",
                                            "running", "paused",   "stopped"};
        for (size_t i = 1; i < sizeof(names) / sizeof(names[0]); i++)
                if (strcmp(s, names[i]) == 0)
                        return (enum rm_oci_status)i;
        return RM_OCI_UNKNOWN;
}

static int runc_state(const struct rm_oci *oci, const char *id, struct rm_oci_state *st,
                      struct rm_error **err)
{
        const char *args[] = {"state", id, NULL};
        struct rm__cmd_result r;
        memset(st, 0, sizeof(*st));
        if (runc(oci, args, NULL, &r, err) < 0) {
                rm__cmd_result_clear(&r);
                return -1;
        }
        cleanup_json struct json_object *o = json_tokener_parse(r.out);
        rm__cmd_result_clear(&r);
        struct json_object *status = NULL, *pid = NULL;
        if (!o || !json_object_object_get_ex(o, "status", &status))
                return rm_error_set(err, RM_INTERNAL, "runc state %s: unreadable output", id);
        st->status = parse_status(json_object_get_string(status));
        if (json_object_object_get_ex(o, "pid", &pid))
                st->pid = (pid_t)json_object_get_int(pid);
        return 0;
}

struct exec_run {
        const char *pid_file;
        int ctl; /* write end of the reaper's control pipe; -1 without a reaper */
};

static void exec_started(pid_t pid, void *data)
{
        (void)pid;
        (void)data;
        rm_crashpoint("execsync.started");
}

/* Past the timeout or cancelled: with a reaper, closing its control pipe makes it kill
 * and reap everything the exec started, after which runc exits by itself; without one,
 * the first process is killed (runc reaps it). runc is SIGKILLed only after the grace. */
static void exec_stop(pid_t pid, void *data)
{
        struct exec_run *k = data;
        if (k->ctl >= 0) {
                close(k->ctl);
                k->ctl = -1;
                return;
        }
        cleanup_free char *text = rm_read_file(k->pid_file, 64, NULL, NULL);
        int p = text ? atoi(text) : 0;
        /* No pid yet: runc has not started the command, so runc itself goes. */
        kill(p > 1 ? p : pid, SIGKILL);
}

/* runc's arguments for an exec: [--preserve-fds 2 ID reaper-path flag --] or [ID]. */
static size_t exec_argv(const struct rm_oci *oci, const char *id, const char *pid_file, bool reaper,
                        const char *const *cmd, const char **argv, size_t max)
{
        size_t n = 0;
        const char *pre[] = {oci->binary, "--root", oci->root,    "--log-format",
                             "json",      "exec",   "--pid-file", pid_file};
        for (size_t i = 0; i < sizeof(pre) / sizeof(pre[0]); i++)
                argv[n++] = pre[i];
        if (reaper) {
                argv[n++] = "--preserve-fds";
                argv[n++] = "2";
        }
        argv[n++] = id;
        if (reaper) {
                argv[n++] = RM_EXEC_REAPER_PATH;
                argv[n++] = RM_EXEC_REAPER_FLAG;
                argv[n++] = "--";
        }
        for (size_t i = 0; cmd[i]; i++) {
                if (n >= max - 1)
                        return 0;
                argv[n++] = cmd[i];
        }
        argv[n] = NULL;
        return n;
}

/* The reaper's two fds for runc to hand on: remora-shim itself and the control pipe's
 * read end (ours is fds[2], the write end). */
static int reaper_fds(const char *reaper, int fds[3], struct rm_error **err)
{
        fds[0] = open(reaper, O_RDONLY | O_CLOEXEC);
        if (fds[0] < 0)
                return rm_error_sys(err, "open the exec reaper %s", reaper);
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0) {
                close(fds[0]);
                return rm_error_sys(err, "pipe for the exec reaper");
        }
        fds[1] = p[0];
        fds[2] = p[1];
        return 0;
}

static void close_fds(int *fds, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
}

static int runc_exec(const struct rm_oci *oci, const char *id, const struct rm_oci_exec_opts *o,
                     struct rm_oci_exec_result *res, struct rm_error **err)
{
        memset(res, 0, sizeof(*res));
        const char *argv[256];
        int fds[3] = {-1, -1, -1};
        if (o->reaper && reaper_fds(o->reaper, fds, err) < 0)
                return rm_error_wrap(err, "exec in %s", id);
        cleanup_free char *dir = xasprintf("%s/sync-XXXXXX", o->scratch_root);
        if (mkdtemp(dir) == NULL) {
                close_fds(fds, 3);
                return rm_error_sys(err, "exec in %s: scratch directory under %s", id,
                                    o->scratch_root);
        }
        cleanup_free char *pid_file = xasprintf("%s/pid", dir);
        if (exec_argv(oci, id, pid_file, o->reaper != NULL, o->argv, argv, 256) == 0) {
                close_fds(fds, 3);
                rm_remove_tree(dir, NULL);
                return rm_error_set(err, RM_INVALID_ARGUMENT, "exec in %s: too many arguments", id);
        }
        struct exec_run k = {.pid_file = pid_file, .ctl = fds[2]};
        struct rm__cmd c = {.argv = argv,
                            .extra_fds = fds,
                            .n_extra = o->reaper ? 2 : 0,
                            .timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : oci->timeout_ms,
                            .cancel = o->cancel,
                            .out_max = o->out_max ? o->out_max : RM_OCI_EXEC_OUTPUT_MAX,
                            .on_start = exec_started,
                            .on_timeout = exec_stop,
                            .stop_grace_ms = RM_OCI_EXEC_STOP_GRACE_MS,
                            .data = &k};
        struct rm__cmd_result r;
        int rc = rm__cmd_run(&c, &r, err);
        fds[2] = k.ctl;
        close_fds(fds, 3);
        rm_remove_tree(dir, NULL);
        if (rc < 0)
                return rm_error_wrap(err, "exec in %s", id);
        res->out = r.out;
        res->out_len = r.out_len;
        res->out_truncated = r.out_truncated;
        res->errout = r.errout;
        res->err_len = r.err_len;
        res->err_truncated = r.err_truncated;
        res->exit_code =
            WIFSIGNALED(r.wstatus) ? 128 + WTERMSIG(r.wstatus) : WEXITSTATUS(r.wstatus);
        return 0;
}

static int runc_update(const struct rm_oci *oci, const char *id, const char *resources_json,
                       struct rm_error **err)
{
        const char *args[] = {"update", "--resources", "-", id, NULL};
        struct rm__cmd_result r;
        int rc = runc(oci, args, resources_json, &r, err);
        rm__cmd_result_clear(&r);
        return rc;
}

const struct rm_runtime_ops rm_runc_ops = {
    .create = runc_create,
    .start = runc_start,
    .kill = runc_kill,
    .delete = runc_delete,
    .state = runc_state,
    .exec = runc_exec,
    .update = runc_update,
};
