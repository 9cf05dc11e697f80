#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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
#include "remora/fsutil.h"
#include "remora/oci.h"
#include "remora/xalloc.h"

struct fixture {
        char dir[64];
        char *log;
        struct rm_oci *oci;
};

static int setup(void **state)
{
        struct fixture *f = xzalloc(sizeof(*f));
        strcpy(f->dir, "/tmp/remora-unit-runc-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        f->log = xasprintf("%s/calls", f->dir);
        setenv("FAKE_RUNC_LOG", f->log, 1);
        unsetenv("FAKE_RUNC_STDIN");
        unsetenv("FAKE_RUNC_MODE");
        f->oci = rm_oci_new(&rm_runc_ops, FAKE_RUNC, "/run/remora-test/runc", 5000);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        cleanup_free char *cmd = xasprintf("rm -rf %s", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f->log);
        rm_oci_free(f->oci);
        free(f);
        return 0;
}

static char *calls(struct fixture *f)
{
        return rm_read_file(f->log, 1 << 20, NULL, NULL);
}

static void test_start_kill_update_args(void **state)
{
        struct fixture *f = *state;
        cleanup_error struct rm_error *err = NULL;
        cleanup_free char *stdin_copy = xasprintf("%s/stdin", f->dir);
        setenv("FAKE_RUNC_STDIN", stdin_copy, 1);
        assert_int_equal(f->oci->ops->start(f->oci, "c1", &err), 0);
        assert_int_equal(f->oci->ops->kill(f->oci, "c1", 15, false, &err), 0);
        assert_int_equal(f->oci->ops->kill(f->oci, "c1", 9, true, &err), 0);
        assert_int_equal(f->oci->ops->update(f->oci, "c1", "{\"cpu\":{\"shares\":2}}", &err), 0);
        assert_null(err);
        cleanup_free char *c = calls(f);
        assert_string_equal(c, "--root /run/remora-test/runc --log-format json start c1\n"
                               "--root /run/remora-test/runc --log-format json kill c1 15\n"
                               "--root /run/remora-test/runc --log-format json kill --all c1 9\n"
                               "--root /run/remora-test/runc --log-format json update "
                               "--resources - c1\n");
        /* update hands the resources to runc on stdin */
        cleanup_free char *in = rm_read_file(stdin_copy, 4096, NULL, NULL);
        assert_string_equal(in, "{\"cpu\":{\"shares\":2}}");
}

static void test_failure_carries_runc_message(void **state)
{
        struct fixture *f = *state;
        cleanup_error struct rm_error *err = NULL;
        setenv("FAKE_RUNC_MODE", "fail", 1);
        assert_int_equal(f->oci->ops->start(f->oci, "c1", &err), -1);
        assert_non_null(err);
        assert_int_equal(err->code, RM_UNKNOWN);
        assert_string_equal(err->msg,
                            "runc start c1: cgroup busy: resource temporarily unavailable");

        /* A runtime that does not speak JSON: its last stderr line is the reason. */
        setenv("FAKE_RUNC_MODE", "plain", 1);
        assert_int_equal(f->oci->ops->kill(f->oci, "c2", 9, false, &err), -1);
        assert_string_equal(err->msg, "runc kill c2: panic: something broke");
}

static void test_not_found(void **state)
{
        struct fixture *f = *state;
        cleanup_error struct rm_error *err = NULL;
        struct rm_oci_state st;
        setenv("FAKE_RUNC_MODE", "notfound", 1);
        assert_int_equal(f->oci->ops->state(f->oci, "gone", &st, &err), -1);
        assert_int_equal(err->code, RM_NOT_FOUND);
        rm_error_free(err);
        err = NULL;
        /* delete of a missing container succeeds: it is idempotent */
        assert_int_equal(f->oci->ops->delete (f->oci, "gone", true, &err), 0);
        assert_null(err);
        cleanup_free char *c = calls(f);
        assert_non_null(strstr(c, "delete --force gone\n"));
}

static void test_delete_other_failure(void **state)
{
        struct fixture *f = *state;
        cleanup_error struct rm_error *err = NULL;
        setenv("FAKE_RUNC_MODE", "fail", 1);
        assert_int_equal(f->oci->ops->delete (f->oci, "c1", false, &err), -1);
        assert_non_null(strstr(err->msg, "cgroup busy"));
}

static void test_state_parsed(void **state)
{
        struct fixture *f = *state;
        cleanup_error struct rm_error *err = NULL;
        struct rm_oci_state st;
        setenv("FAKE_RUNC_MODE", "state", 1);
        assert_int_equal(f->oci->ops->state(f->oci, "c1", &st, &err), 0);
        assert_int_equal(st.status, RM_OCI_RUNNING);
        assert_int_equal(st.pid, 4242);
        assert_string_equal(rm_oci_status_name(st.status), "running");
}

static void test_timeout_kills(void **state)
{
        struct fixture *f = *state;
        cleanup_error struct rm_error *err = NULL;
        setenv("FAKE_RUNC_MODE", "hang", 1);
        f->oci->timeout_ms = 200;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        assert_int_equal(f->oci->ops->start(f->oci, "c1", &err), -1);
        clock_gettime(CLOCK_MONOTONIC, &b);
        assert_int_equal(err->code, RM_DEADLINE_EXCEEDED);
        double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
        assert_true(ms >= 190 && ms < 2000);
}

/* What is left in the fixture's directory besides the fake runc's call log. */
static int entries(const struct fixture *f)
{
        DIR *d = opendir(f->dir);
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
                n += e->d_name[0] != '.' && strcmp(e->d_name, "calls") != 0;
        closedir(d);
        return n;
}

static void test_exec_captures(void **state)
{
        struct fixture *f = *state;
        cleanup_error struct rm_error *err = NULL;
        setenv("FAKE_RUNC_MODE", "exec", 1);
        struct rm_oci_exec_result res;
        const char *argv[] = {"sh", "-c", "echo hi", NULL};
        struct rm_oci_exec_opts o = {.argv = argv, .scratch_root = f->dir};
        assert_int_equal(f->oci->ops->exec(f->oci, "c1", &o, &res, &err), 0);
        assert_int_equal(res.exit_code, 3);
        assert_string_equal(res.out, "out line\n");
        assert_string_equal(res.errout, "err line\n");
        assert_false(res.out_truncated || res.err_truncated);
        rm_oci_exec_result_clear(&res);
        cleanup_free char *c = calls(f);
        cleanup_free char *want = xasprintf(" exec --pid-file %s/sync-", f->dir);
        assert_non_null(strstr(c, want));
        assert_non_null(strstr(c, "/pid c1 sh -c echo hi\n"));
        assert_int_equal(entries(f), 0);
}

static void test_exec_under_the_reaper(void **state)
{
        struct fixture *f = *state;
        cleanup_error struct rm_error *err = NULL;
        setenv("FAKE_RUNC_MODE", "exec", 1);
        struct rm_oci_exec_result res;
        const char *argv[] = {"true", NULL};
        struct rm_oci_exec_opts o = {.argv = argv, .scratch_root = f->dir, .reaper = FAKE_RUNC};
        assert_int_equal(f->oci->ops->exec(f->oci, "c1", &o, &res, &err), 0);
        rm_oci_exec_result_clear(&res);
        cleanup_free char *c = calls(f);
        assert_non_null(
            strstr(c, "/pid --preserve-fds 2 c1 /proc/self/fd/3 --exec-reaper -- true\n"));
        /* A reaper that cannot be opened is an error before runc runs. */
        o.reaper = "/nonexistent/remora-shim";
        assert_int_equal(f->oci->ops->exec(f->oci, "c1", &o, &res, &err), -1);
        assert_non_null(strstr(err->msg, "/nonexistent/remora-shim"));
        assert_int_equal(entries(f), 0);
}

/* Output past the cap is read and dropped; the exit code still comes back. */
static void test_exec_output_capped(void **state)
{
        struct fixture *f = *state;
        cleanup_error struct rm_error *err = NULL;
        setenv("FAKE_RUNC_MODE", "flood", 1);
        struct rm_oci_exec_result res;
        const char *argv[] = {"x", NULL};
        struct rm_oci_exec_opts o = {.argv = argv, .scratch_root = f->dir, .out_max = 1000};
        assert_int_equal(f->oci->ops->exec(f->oci, "c1", &o, &res, &err), 0);
        assert_int_equal(res.exit_code, 4);
        assert_int_equal(res.out_len, 1000);
        assert_int_equal(res.err_len, 1000);
        assert_true(res.out_truncated && res.err_truncated);
        rm_oci_exec_result_clear(&res);
        assert_int_equal(entries(f), 0);
}

/* A cancelled call stops the exec at once (not at its timeout) and cleans up. */
static void test_exec_cancelled(void **state)
{
        struct fixture *f = *state;
        cleanup_error struct rm_error *err = NULL;
        setenv("FAKE_RUNC_MODE", "hang", 1);
        struct rm_cancel cancel;
        rm_cancel_init(&cancel, 0);
        struct rm_oci_exec_result res;
        const char *argv[] = {"sleep", "100", NULL};
        struct rm_oci_exec_opts o = {
            .argv = argv, .scratch_root = f->dir, .timeout_ms = 20000, .cancel = &cancel};
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        rm_cancel_set(&cancel);
        assert_int_equal(f->oci->ops->exec(f->oci, "c1", &o, &res, &err), -1);
        clock_gettime(CLOCK_MONOTONIC, &b);
        assert_int_equal(err->code, RM_CANCELLED);
        double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
        assert_true(ms < 2000);
        rm_cancel_release(&cancel);
        assert_int_equal(entries(f), 0);
}

static void *cancel_later(void *arg)
{
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
        rm_cancel_set(arg);
        return NULL;
}

static double exec_until_stopped(struct fixture *f, struct rm_cancel *cancel, int code)
{
        cleanup_error struct rm_error *err = NULL;
        setenv("FAKE_RUNC_MODE", "hang", 1);
        struct rm_oci_exec_result res;
        const char *argv[] = {"sleep", "100", NULL};
        struct rm_oci_exec_opts o = {
            .argv = argv, .scratch_root = f->dir, .timeout_ms = 20000, .cancel = cancel};
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        assert_int_equal(f->oci->ops->exec(f->oci, "c1", &o, &res, &err), -1);
        clock_gettime(CLOCK_MONOTONIC, &b);
        assert_int_equal(err->code, code);
        assert_int_equal(entries(f), 0);
        return (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
}

/* Cancelled while it runs: the token's eventfd wakes the wait at once. */
static void test_exec_cancelled_while_running(void **state)
{
        struct rm_cancel cancel;
        rm_cancel_init(&cancel, 0);
        pthread_t t;
        pthread_create(&t, NULL, cancel_later, &cancel);
        double ms = exec_until_stopped(*state, &cancel, RM_CANCELLED);
        pthread_join(t, NULL);
        assert_true(ms >= 150 && ms < 2000);
        rm_cancel_release(&cancel);
}

/* The client's deadline alone (a token without an eventfd) stops it too. */
static void test_exec_client_deadline(void **state)
{
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        struct rm_cancel cancel = {.deadline_ns = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec +
                                                  300000000LL,
                                   .fd = -1};
        atomic_init(&cancel.cancelled, false);
        double ms = exec_until_stopped(*state, &cancel, RM_CANCELLED);
        assert_true(ms >= 250 && ms < 2000);
}

/* Past the timeout, the exec is stopped and its scratch directory is gone too. */
static void test_exec_timeout_cleans_up(void **state)
{
        struct fixture *f = *state;
        cleanup_error struct rm_error *err = NULL;
        setenv("FAKE_RUNC_MODE", "hang", 1);
        struct rm_oci_exec_result res;
        const char *argv[] = {"sleep", "100", NULL};
        struct rm_oci_exec_opts o = {.argv = argv, .scratch_root = f->dir, .timeout_ms = 200};
        assert_int_equal(f->oci->ops->exec(f->oci, "c1", &o, &res, &err), -1);
        assert_int_equal(err->code, RM_DEADLINE_EXCEEDED);
        assert_int_equal(entries(f), 0);
}

static void test_create_stdio_and_log(void **state)
{
        struct fixture *f = *state;
        cleanup_error struct rm_error *err = NULL;
        cleanup_free char *pidf = xasprintf("%s/pid", f->dir);
        cleanup_free char *outp = xasprintf("%s/out", f->dir);
        int out = open(outp, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        assert_true(out >= 0);
        struct rm_oci_create_opts o = {.pid_file = pidf, .stdio = {-1, out, out}};
        setenv("FAKE_RUNC_MODE", "create", 1);
        assert_int_equal(f->oci->ops->create(f->oci, "c1", f->dir, &o, &err), 0);
        /* the container's stdio is the fd given, not a pipe of the daemon */
        cleanup_free char *text = rm_read_file(outp, 4096, NULL, NULL);
        assert_string_equal(text, "container stdout\ncontainer stderr\n");
        cleanup_free char *pid = rm_read_file(pidf, 64, NULL, NULL);
        assert_string_equal(pid, "777\n");

        /* a failed create reports runc's log, not what it printed to the container */
        setenv("FAKE_RUNC_MODE", "create-fail", 1);
        assert_int_equal(f->oci->ops->create(f->oci, "c1", f->dir, &o, &err), -1);
        assert_string_equal(err->msg, "runc create c1: no such file: /bin/nothing");
        close(out);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_start_kill_update_args, setup, teardown),
            cmocka_unit_test_setup_teardown(test_failure_carries_runc_message, setup, teardown),
            cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
            cmocka_unit_test_setup_teardown(test_delete_other_failure, setup, teardown),
            cmocka_unit_test_setup_teardown(test_state_parsed, setup, teardown),
            cmocka_unit_test_setup_teardown(test_timeout_kills, setup, teardown),
            cmocka_unit_test_setup_teardown(test_exec_captures, setup, teardown),
            cmocka_unit_test_setup_teardown(test_exec_under_the_reaper, setup, teardown),
            cmocka_unit_test_setup_teardown(test_exec_output_capped, setup, teardown),
            cmocka_unit_test_setup_teardown(test_exec_cancelled, setup, teardown),
            cmocka_unit_test_setup_teardown(test_exec_cancelled_while_running, setup, teardown),
            cmocka_unit_test_setup_teardown(test_exec_client_deadline, setup, teardown),
            cmocka_unit_test_setup_teardown(test_exec_timeout_cleans_up, setup, teardown),
            cmocka_unit_test_setup_teardown(test_create_stdio_and_log, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
