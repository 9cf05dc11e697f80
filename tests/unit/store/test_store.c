#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "remora/cleanup.h"
#include "remora/log.h"
#include "remora/store.h"
#include "remora/xalloc.h"

/* The steps of a put, in order, as the wrapped calls see them. */
enum step {
        STEP_NONE = 0,
        STEP_WRITE,      /* writing the temp file */
        STEP_FSYNC_FILE, /* fsync of the temp file */
        STEP_RENAME,     /* rename over the record */
        STEP_AFTER_RENAME,
        STEP_FSYNC_DIR, /* fsync of the kind directory */
};

static const char *const step_names[] = {"none",   "write",        "fsync",
                                         "rename", "after-rename", "fsync-dir"};

/* What the wrappers do when the armed step is reached. */
static enum step crash_at; /* _exit like a power cut: no cleanup runs */
static enum step fail_at;  /* return -1 with EIO */

#define CRASH_EXIT 42

ssize_t __real_write(int fd, const void *buf, size_t n);
int __real_fsync(int fd);
int __real_rename(const char *from, const char *to);

ssize_t __wrap_write(int fd, const void *buf, size_t n);
int __wrap_fsync(int fd);
int __wrap_rename(const char *from, const char *to);

ssize_t __wrap_write(int fd, const void *buf, size_t n)
{
        if (fd > STDERR_FILENO && crash_at == STEP_WRITE) {
                /* Die half way through the data. */
                __real_write(fd, buf, n / 2);
                _exit(CRASH_EXIT);
        }
        if (fd > STDERR_FILENO && fail_at == STEP_WRITE) {
                errno = EIO;
                return -1;
        }
        return __real_write(fd, buf, n);
}

int __wrap_fsync(int fd)
{
        struct stat st;
        enum step s = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) ? STEP_FSYNC_DIR : STEP_FSYNC_FILE;
        if (crash_at == s)
                _exit(CRASH_EXIT);
        if (fail_at == s) {
                errno = EIO;
                return -1;
        }
        return __real_fsync(fd);
}

int __wrap_rename(const char *from, const char *to)
{
        if (crash_at == STEP_RENAME)
                _exit(CRASH_EXIT);
        if (fail_at == STEP_RENAME) {
                errno = EIO;
                return -1;
        }
        int rc = __real_rename(from, to);
        if (crash_at == STEP_AFTER_RENAME)
                _exit(CRASH_EXIT);
        return rc;
}

static char *make_root(void)
{
        char tmpl[] = "/tmp/remora-store-XXXXXX";
        assert_non_null(mkdtemp(tmpl));
        return xasprintf("%s/meta", tmpl);
}

static void remove_root(char *root)
{
        *strrchr(root, '/') = '\0'; /* the mkdtemp directory above "meta" */
        cleanup_free char *cmd = xasprintf("rm -rf '%s'", root);
        assert_int_equal(system(cmd), 0);
        free(root);
}

static struct json_object *doc_with(const char *key, const char *value)
{
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, key, json_object_new_string(value));
        return o;
}

static void put_value(struct rm_store *s, const char *kind, const char *id, const char *value)
{
        cleanup_json struct json_object *doc = doc_with("value", value);
        cleanup_error struct rm_error *err = NULL;
        if (rm_store_put(s, kind, id, doc, &err) < 0)
                fail_msg("put %s/%s: %s", kind, id, err->msg);
}

/* The "value" of kind/id, or NULL with *code set when get fails. */
static char *get_value(struct rm_store *s, const char *kind, const char *id, enum rm_code *code)
{
        cleanup_error struct rm_error *err = NULL;
        cleanup_json struct json_object *doc = rm_store_get(s, kind, id, &err);
        if (doc == NULL) {
                *code = err->code;
                return NULL;
        }
        struct json_object *v = NULL;
        assert_true(json_object_object_get_ex(doc, "value", &v));
        return xstrdup(json_object_get_string(v));
}

static void assert_value(struct rm_store *s, const char *kind, const char *id, const char *want)
{
        enum rm_code code = RM_OK;
        cleanup_free char *got = get_value(s, kind, id, &code);
        if (got == NULL)
                fail_msg("get %s/%s failed with %s", kind, id, rm_code_name(code));
        assert_string_equal(got, want);
}

static int count_files(const char *dir, bool temp_only)
{
        cleanup_dir DIR *d = opendir(dir);
        assert_non_null(d);
        int n = 0;
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (!temp_only || de->d_name[0] == '.')
                        n++;
        }
        return n;
}

struct listing {
        int good, bad;
        char ids[8][64];
        enum rm_code bad_code;
};

static int collect(const char *id, struct json_object *doc, const struct rm_error *bad, void *data,
                   struct rm_error **err)
{
        (void)err;
        struct listing *l = data;
        if (doc) {
                snprintf(l->ids[l->good % 8], sizeof(l->ids[0]), "%s", id);
                l->good++;
        } else {
                l->bad++;
                l->bad_code = bad->code;
        }
        return 0;
}

static void test_round_trip_replace_delete(void **state)
{
        (void)state;
        char *root = make_root();
        struct rm_store *s = rm_store_open(root, NULL);
        assert_non_null(s);
        assert_string_equal(rm_store_root(s), root);

        put_value(s, "pods", "abc", "one");
        assert_value(s, "pods", "abc", "one");
        put_value(s, "pods", "abc", "two");
        assert_value(s, "pods", "abc", "two");

        cleanup_free char *dir = xasprintf("%s/pods", root);
        assert_int_equal(count_files(dir, false), 1);
        struct stat st;
        cleanup_free char *file = xasprintf("%s/abc.json", dir);
        assert_int_equal(stat(file, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);

        assert_int_equal(rm_store_delete(s, "pods", "abc", NULL), 0);
        enum rm_code code = RM_OK;
        assert_null(get_value(s, "pods", "abc", &code));
        assert_int_equal(code, RM_NOT_FOUND);
        /* Deleting what is not there is fine. */
        assert_int_equal(rm_store_delete(s, "pods", "abc", NULL), 0);
        assert_int_equal(rm_store_delete(s, "nokind", "abc", NULL), 0);
        rm_store_close(s);
        remove_root(root);
}

static void test_list(void **state)
{
        (void)state;
        char *root = make_root();
        struct rm_store *s = rm_store_open(root, NULL);
        struct listing l = {0};
        /* A kind never written lists empty. */
        assert_int_equal(rm_store_list(s, "containers", collect, &l, NULL), 0);

        put_value(s, "containers", "c1", "a");
        put_value(s, "containers", "c2", "b");
        put_value(s, "containers", "c3", "c");
        put_value(s, "pods", "p1", "x");

        /* Things that are not records: a temp file, other names, a corrupt record. */
        cleanup_free char *dir = xasprintf("%s/containers", root);
        const char *junk[] = {".c4.json.tmp-abcdef", "README", "c5.json.bak"};
        for (size_t i = 0; i < 3; i++) {
                cleanup_free char *p = xasprintf("%s/%s", dir, junk[i]);
                FILE *f = fopen(p, "w");
                fputs("{\"value\":\"junk\"}", f);
                fclose(f);
        }
        cleanup_free char *corrupt = xasprintf("%s/c6.json", dir);
        FILE *f = fopen(corrupt, "w");
        fputs("{\"value\": \"trunc", f);
        fclose(f);

        memset(&l, 0, sizeof(l));
        rm_log_set_level(RM_LOG_ERROR); /* the corrupt record is logged as a warning */
        assert_int_equal(rm_store_list(s, "containers", collect, &l, NULL), 4);
        assert_int_equal(l.good, 3);
        assert_int_equal(l.bad, 1);
        assert_int_equal(l.bad_code, RM_DATA_LOSS);

        /* The corrupt record was moved aside: kept, but no longer a record. */
        enum rm_code code = RM_OK;
        assert_null(get_value(s, "containers", "c6", &code));
        assert_int_equal(code, RM_NOT_FOUND);
        cleanup_dir DIR *d = opendir(dir);
        struct dirent *de;
        int aside = 0;
        while ((de = readdir(d)))
                aside += strncmp(de->d_name, "c6.json.corrupt-", 16) == 0;
        assert_int_equal(aside, 1);
        memset(&l, 0, sizeof(l));
        assert_int_equal(rm_store_list(s, "containers", collect, &l, NULL), 3);
        assert_int_equal(l.bad, 0);
        rm_store_close(s);
        remove_root(root);
}

static int stop_at_first(const char *id, struct json_object *doc, const struct rm_error *bad,
                         void *data, struct rm_error **err)
{
        (void)doc;
        (void)bad;
        (*(int *)data)++;
        return rm_error_set(err, RM_ABORTED, "stop at %s", id);
}

static void test_visitor_can_stop_listing(void **state)
{
        (void)state;
        char *root = make_root();
        struct rm_store *s = rm_store_open(root, NULL);
        put_value(s, "k", "a", "1");
        put_value(s, "k", "b", "2");
        int calls = 0;
        cleanup_error struct rm_error *err = NULL;
        assert_int_equal(rm_store_list(s, "k", stop_at_first, &calls, &err), -1);
        assert_int_equal(calls, 1);
        assert_int_equal(err->code, RM_ABORTED);
        rm_store_close(s);
        remove_root(root);
}

static void test_invalid_names(void **state)
{
        (void)state;
        char *root = make_root();
        struct rm_store *s = rm_store_open(root, NULL);
        char long_name[130];
        memset(long_name, 'a', 129);
        long_name[129] = '\0';
        const char *bad[] = {"../x", ".hidden", "a/b", "", ".", "..", "sp ace", long_name, NULL};
        cleanup_json struct json_object *doc = doc_with("value", "v");
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                cleanup_error struct rm_error *e1 = NULL, *e2 = NULL, *e3 = NULL, *e4 = NULL;
                assert_int_equal(rm_store_put(s, "pods", bad[i], doc, &e1), -1);
                assert_int_equal(e1->code, RM_INVALID_ARGUMENT);
                if (bad[i] && bad[i][0])
                        assert_non_null(strstr(e1->msg, bad[i]));
                assert_int_equal(rm_store_put(s, bad[i], "id", doc, &e2), -1);
                assert_int_equal(e2->code, RM_INVALID_ARGUMENT);
                assert_null(rm_store_get(s, "pods", bad[i], &e3));
                assert_int_equal(e3->code, RM_INVALID_ARGUMENT);
                assert_int_equal(rm_store_delete(s, "pods", bad[i], &e4), -1);
                assert_int_equal(e4->code, RM_INVALID_ARGUMENT);
        }
        long_name[128] = '\0';
        assert_true(rm_store_valid_name(long_name));
        assert_true(rm_store_valid_name("sha256-0123abc_x.y"));

        /* Only objects are records. */
        cleanup_json struct json_object *arr = json_object_new_array();
        cleanup_error struct rm_error *err = NULL;
        assert_int_equal(rm_store_put(s, "pods", "x", arr, &err), -1);
        assert_int_equal(err->code, RM_INVALID_ARGUMENT);
        /* Nothing escaped the root. */
        cleanup_free char *escaped = xasprintf("%s/../x.json", root);
        assert_int_equal(access(escaped, F_OK), -1);
        rm_store_close(s);
        remove_root(root);
}

static void test_open_sweeps_temp_files(void **state)
{
        (void)state;
        char *root = make_root();
        struct rm_store *s = rm_store_open(root, NULL);
        put_value(s, "pods", "p", "v");
        rm_store_close(s);

        cleanup_free char *dir = xasprintf("%s/pods", root);
        cleanup_free char *tmp = xasprintf("%s/.p.json.tmp-123456", dir);
        FILE *f = fopen(tmp, "w");
        fputs("{\"value\":", f);
        fclose(f);
        assert_int_equal(count_files(dir, true), 1);

        s = rm_store_open(root, NULL);
        assert_int_equal(count_files(dir, true), 0);
        assert_value(s, "pods", "p", "v");
        rm_store_close(s);
        remove_root(root);
}

/* Fork a child that crashes at step while replacing "old" with "new"; then reopen the
 * store and check what a restarted daemon would find. */
static void crash_during_put(enum step step, const char *want)
{
        char *root = make_root();
        struct rm_store *s = rm_store_open(root, NULL);
        put_value(s, "pods", "p", "old");
        rm_store_close(s);

        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct rm_store *cs = rm_store_open(root, NULL);
                cleanup_json struct json_object *doc = doc_with("value", "new");
                crash_at = step;
                int rc = rm_store_put(cs, "pods", "p", doc, NULL);
                _exit(rc == 0 ? 0 : 1); /* only reached when no crash was armed */
        }
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), step == STEP_NONE ? 0 : CRASH_EXIT);

        s = rm_store_open(root, NULL);
        assert_value(s, "pods", "p", want);
        cleanup_free char *dir = xasprintf("%s/pods", root);
        assert_int_equal(count_files(dir, true), 0);
        struct listing l = {0};
        assert_int_equal(rm_store_list(s, "pods", collect, &l, NULL), 1);
        assert_int_equal(l.good, 1);
        assert_int_equal(l.bad, 0);
        rm_store_close(s);
        remove_root(root);
}

static void test_crash_at_each_step(void **state)
{
        (void)state;
        /* Until the rename, the old record stands; from the rename on, the new one. */
        crash_during_put(STEP_WRITE, "old");
        crash_during_put(STEP_FSYNC_FILE, "old");
        crash_during_put(STEP_RENAME, "old");
        crash_during_put(STEP_AFTER_RENAME, "new");
        crash_during_put(STEP_FSYNC_DIR, "new");
        crash_during_put(STEP_NONE, "new");
}

static void test_crash_during_first_put(void **state)
{
        (void)state;
        /* No previous record: a crash before the rename leaves none, not a broken one. */
        char *root = make_root();
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct rm_store *cs = rm_store_open(root, NULL);
                cleanup_json struct json_object *doc = doc_with("value", "new");
                crash_at = STEP_FSYNC_FILE;
                rm_store_put(cs, "pods", "p", doc, NULL);
                _exit(1);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        assert_int_equal(WEXITSTATUS(status), CRASH_EXIT);
        struct rm_store *s = rm_store_open(root, NULL);
        enum rm_code code = RM_OK;
        assert_null(get_value(s, "pods", "p", &code));
        assert_int_equal(code, RM_NOT_FOUND);
        struct listing l = {0};
        assert_int_equal(rm_store_list(s, "pods", collect, &l, NULL), 0);
        rm_store_close(s);
        remove_root(root);
}

static void fail_during_put(enum step step, const char *want)
{
        char *root = make_root();
        struct rm_store *s = rm_store_open(root, NULL);
        put_value(s, "pods", "p", "old");

        cleanup_json struct json_object *doc = doc_with("value", "new");
        cleanup_error struct rm_error *err = NULL;
        fail_at = step;
        int rc = rm_store_put(s, "pods", "p", doc, &err);
        fail_at = STEP_NONE;
        assert_int_equal(rc, -1);
        assert_int_equal(err->errnum, EIO);
        if (strstr(err->msg, step == STEP_FSYNC_DIR ? "fsync directory" : step_names[step]) ==
                NULL ||
            strstr(err->msg, "/pods") == NULL)
                fail_msg("error does not name the step and path: %s", err->msg);

        assert_value(s, "pods", "p", want);
        cleanup_free char *dir = xasprintf("%s/pods", root);
        assert_int_equal(count_files(dir, true), 0);
        rm_store_close(s);
        remove_root(root);
}

static void test_failure_at_each_step(void **state)
{
        (void)state;
        fail_during_put(STEP_WRITE, "old");
        fail_during_put(STEP_FSYNC_FILE, "old");
        fail_during_put(STEP_RENAME, "old");
        /* The rename happened; only its durability is in doubt, and the caller is told. */
        fail_during_put(STEP_FSYNC_DIR, "new");
}

static void test_delete_reports_dir_fsync_failure(void **state)
{
        (void)state;
        char *root = make_root();
        struct rm_store *s = rm_store_open(root, NULL);
        put_value(s, "pods", "p", "v");
        cleanup_error struct rm_error *err = NULL;
        fail_at = STEP_FSYNC_DIR;
        assert_int_equal(rm_store_delete(s, "pods", "p", &err), -1);
        fail_at = STEP_NONE;
        assert_non_null(strstr(err->msg, "fsync directory"));
        rm_store_close(s);
        remove_root(root);
}

int main(void)
{
        rm_log_set_level(RM_LOG_ERROR);
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_round_trip_replace_delete),
            cmocka_unit_test(test_list),
            cmocka_unit_test(test_visitor_can_stop_listing),
            cmocka_unit_test(test_invalid_names),
            cmocka_unit_test(test_open_sweeps_temp_files),
            cmocka_unit_test(test_crash_at_each_step),
            cmocka_unit_test(test_crash_during_first_put),
            cmocka_unit_test(test_failure_at_each_step),
            cmocka_unit_test(test_delete_reports_dir_fsync_failure),
        };
        return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
