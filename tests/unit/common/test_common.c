#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "remora/answers.h"
#include "remora/arena.h"
#include "remora/cleanup.h"
#include "remora/confsect.h"
#include "remora/error.h"
#include "remora/fsutil.h"
#include "remora/log.h"
#include "remora/xalloc.h"

static void test_error_set_and_wrap(void **state)
{
        (void)state;
        cleanup_error struct rm_error *err = NULL;
        assert_int_equal(rm_error_set(&err, RM_NOT_FOUND, "container %s", "abc"), -1);
        assert_int_equal(err->code, RM_NOT_FOUND);
        assert_int_equal(err->errnum, 0);
        assert_string_equal(err->msg, "container abc");
        assert_int_equal(rm_error_wrap(&err, "stop %d", 7), -1);
        assert_string_equal(err->msg, "stop 7: container abc");
        assert_int_equal(err->code, RM_NOT_FOUND);

        /* Replacing an error frees the old one (ASan would see a leak otherwise). */
        rm_error_set(&err, RM_INTERNAL, "second");
        assert_string_equal(err->msg, "second");

        /* NULL is accepted everywhere: the caller does not care about the detail. */
        assert_int_equal(rm_error_set(NULL, RM_INTERNAL, "dropped"), -1);
        assert_int_equal(rm_error_wrap(NULL, "x"), -1);
        struct rm_error *none = NULL;
        assert_int_equal(rm_error_wrap(&none, "x"), -1);
        assert_null(none);
}

static void test_error_sys(void **state)
{
        (void)state;
        cleanup_error struct rm_error *err = NULL;
        errno = ENOENT;
        rm_error_sys(&err, "open %s", "/nope");
        assert_int_equal(errno, ENOENT); /* preserved for the caller */
        assert_int_equal(err->errnum, ENOENT);
        assert_int_equal(err->code, RM_NOT_FOUND);
        assert_string_equal(err->msg, "open /nope: No such file or directory");

        rm_error_sys_errno(&err, EACCES, "read %s", "/x");
        assert_int_equal(err->code, RM_PERMISSION_DENIED);
        assert_string_equal(err->msg, "read /x: Permission denied");

        assert_int_equal(rm_code_from_errno(EEXIST), RM_ALREADY_EXISTS);
        assert_int_equal(rm_code_from_errno(EINVAL), RM_INVALID_ARGUMENT);
        assert_int_equal(rm_code_from_errno(ENOSPC), RM_RESOURCE_EXHAUSTED);
        assert_int_equal(rm_code_from_errno(EIO), RM_INTERNAL);
        assert_string_equal(rm_code_name(RM_INVALID_ARGUMENT), "INVALID_ARGUMENT");
        assert_string_equal(rm_code_name(RM_UNAUTHENTICATED), "UNAUTHENTICATED");
        assert_string_equal(rm_code_name((enum rm_code)99), "UNKNOWN");
}

static char *temp_dir(void)
{
        char tmpl[] = "/tmp/remora-common-XXXXXX";
        assert_non_null(mkdtemp(tmpl));
        return xstrdup(tmpl);
}

static void remove_tree(const char *dir)
{
        cleanup_free char *cmd = xasprintf("rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
}

static void test_mkdir_p(void **state)
{
        (void)state;
        cleanup_free char *base = temp_dir();
        cleanup_free char *deep = xasprintf("%s/a/b/c/", base);
        assert_int_equal(rm_mkdir_p(deep, 0700, NULL), 0);
        struct stat st;
        cleanup_free char *c = xasprintf("%s/a/b/c", base);
        assert_int_equal(stat(c, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        assert_int_equal(st.st_mode & 0777, 0700);
        /* Existing: fine. */
        assert_int_equal(rm_mkdir_p(c, 0700, NULL), 0);

        /* A file in the way is an error naming it. */
        cleanup_free char *file = xasprintf("%s/file", base);
        FILE *f = fopen(file, "w");
        fclose(f);
        cleanup_error struct rm_error *err = NULL;
        assert_int_equal(rm_mkdir_p(file, 0700, &err), -1);
        assert_non_null(strstr(err->msg, file));
        cleanup_free char *under = xasprintf("%s/sub", file);
        assert_int_equal(rm_mkdir_p(under, 0700, &err), -1);
        assert_int_equal(rm_mkdir_p("", 0700, &err), -1);
        assert_int_equal(err->code, RM_INVALID_ARGUMENT);
        remove_tree(base);
}

static void test_read_file(void **state)
{
        (void)state;
        cleanup_free char *base = temp_dir();
        cleanup_free char *path = xasprintf("%s/data", base);
        FILE *f = fopen(path, "w");
        fputs("hello, world", f);
        fclose(f);

        size_t len = 0;
        cleanup_free char *text = rm_read_file(path, 100, &len, NULL);
        assert_non_null(text);
        assert_int_equal(len, 12);
        assert_string_equal(text, "hello, world");

        cleanup_error struct rm_error *err = NULL;
        assert_null(rm_read_file(path, 5, NULL, &err));
        assert_int_equal(err->code, RM_RESOURCE_EXHAUSTED);
        assert_non_null(strstr(err->msg, path));

        cleanup_free char *missing = xasprintf("%s/missing", base);
        assert_null(rm_read_file(missing, 100, NULL, &err));
        assert_int_equal(err->code, RM_NOT_FOUND);
        assert_non_null(strstr(err->msg, missing));

        assert_null(rm_read_file(base, 100, NULL, &err));
        assert_int_equal(err->code, RM_INVALID_ARGUMENT);

        cleanup_free char *empty_path = xasprintf("%s/empty", base);
        f = fopen(empty_path, "w");
        fclose(f);
        cleanup_free char *empty = rm_read_file(empty_path, 100, &len, NULL);
        assert_non_null(empty);
        assert_int_equal(len, 0);
        remove_tree(base);
}

static void test_log_levels(void **state)
{
        (void)state;
        enum rm_log_level lvl = RM_LOG_ERROR;
        assert_true(rm_log_parse_level("debug", &lvl));
        assert_int_equal(lvl, RM_LOG_DEBUG);
        assert_true(rm_log_parse_level("WARN", &lvl));
        assert_int_equal(lvl, RM_LOG_WARN);
        assert_false(rm_log_parse_level("verbose", &lvl));
        assert_string_equal(rm_log_level_name(RM_LOG_INFO), "info");
}

static void test_log_one_line_per_event(void **state)
{
        (void)state;
        int pipefd[2];
        assert_int_equal(pipe(pipefd), 0);
        int saved = dup(STDERR_FILENO);
        dup2(pipefd[1], STDERR_FILENO);
        enum rm_log_level old = rm_log_get_level();
        rm_log_set_level(RM_LOG_INFO);
        rm_log_info("two\nlines %d", 2);
        rm_log_debug("filtered out");
        rm_log_set_level(old);
        dup2(saved, STDERR_FILENO);
        close(saved);
        close(pipefd[1]);
        char buf[512] = "";
        ssize_t n = read(pipefd[0], buf, sizeof(buf) - 1);
        close(pipefd[0]);
        assert_true(n > 0);
        buf[n] = '\0';
        assert_non_null(strstr(buf, " info  two\\nlines 2\n"));
        assert_null(strstr(buf, "filtered"));
        assert_ptr_equal(strchr(buf, '\n'), buf + n - 1); /* exactly one line */
}

static void test_arena(void **state)
{
        (void)state;
        struct rm_arena *a = rm_arena_new();
        char *s = rm_arena_strdup(a, "abc");
        char *p = rm_arena_printf(a, "%s-%d", s, 42);
        assert_string_equal(p, "abc-42");
        void **ptrs = rm_arena_ptrs(a, 4);
        for (int i = 0; i < 4; i++)
                assert_null(ptrs[i]);
        uint64_t *big = rm_arena_alloc(a, 1 << 20);
        assert_int_equal(big[(1 << 17) - 1], 0);

        /* Many small and middling allocations: each zeroed, aligned and its own (filled
         * with its index, every one is checked after all were made). */
        enum { N = 5000 };
        static unsigned char *blocks[N];
        static size_t sizes[N];
        for (size_t i = 0; i < N; i++) {
                sizes[i] = (i * 37) % 3000;
                blocks[i] = rm_arena_alloc(a, sizes[i]);
                assert_int_equal((uintptr_t)blocks[i] % _Alignof(max_align_t), 0);
                for (size_t k = 0; k < sizes[i]; k++)
                        assert_int_equal(blocks[i][k], 0);
                memset(blocks[i], (int)(i & 0xff), sizes[i]);
        }
        for (size_t i = 0; i < N; i++)
                for (size_t k = 0; k < sizes[i]; k++)
                        assert_int_equal(blocks[i][k], i & 0xff);
        rm_arena_free(a);
        rm_arena_free(NULL);
}

static void test_steal_pointer(void **state)
{
        (void)state;
        cleanup_free char *owned = xstrdup("x");
        char *taken = steal_pointer(&owned);
        assert_null(owned);
        free(taken);
        cleanup_close int fd = dup(STDIN_FILENO);
        int kept = steal_fd(&fd);
        assert_int_equal(fd, -1);
        close(kept);
}

static void expect_error(struct rm_error **err, const char *needle)
{
        assert_non_null(*err);
        assert_int_equal((*err)->code, RM_INVALID_ARGUMENT);
        if (strstr((*err)->msg, needle) == NULL)
                fail_msg("\"%s\" not in \"%s\"", needle, (*err)->msg);
        rm_error_free(*err);
        *err = NULL;
}

static void test_confsect(void **state)
{
        (void)state;
        cleanup_json struct json_object *o = json_tokener_parse(
            "{\"name\": \"x\", \"empty\": \"\", \"on\": true, \"n\": 7, \"list\": [\"a\", \"b\"],"
            " \"badlist\": [\"a\", 3]}");
        struct rm_error *err = NULL;
        static const char *const known[] = {"name", "empty", "on", "n", "list", "badlist", NULL};
        static const char *const fewer[] = {"name", NULL};
        assert_int_equal(rm_confsect_check_keys("s", o, known, &err), 0);
        assert_int_equal(rm_confsect_check_keys("s", NULL, fewer, &err), 0);
        assert_int_equal(rm_confsect_check_keys("s", o, fewer, &err), -1);
        expect_error(&err, "unknown config key \"s.empty\"");

        const char *str = "default";
        assert_int_equal(rm_confsect_string("s", o, "absent", &str, &err), 0);
        assert_string_equal(str, "default");
        assert_int_equal(rm_confsect_string("s", o, "name", &str, &err), 0);
        assert_string_equal(str, "x");
        assert_int_equal(rm_confsect_string("s", o, "empty", &str, &err), -1);
        expect_error(&err, "\"s.empty\" is empty");
        assert_int_equal(rm_confsect_string("s", o, "n", &str, &err), -1);
        expect_error(&err, "\"s.n\" must be a string");

        bool b = false;
        assert_int_equal(rm_confsect_bool("s", o, "on", &b, &err), 0);
        assert_true(b);
        assert_int_equal(rm_confsect_bool("s", o, "name", &b, &err), -1);
        expect_error(&err, "\"s.name\" must be true or false");

        int64_t n = 1;
        assert_int_equal(rm_confsect_int("s", o, "n", 0, 10, &n, &err), 0);
        assert_int_equal(n, 7);
        assert_int_equal(rm_confsect_int("s", o, "n", 8, 10, &n, &err), -1);
        expect_error(&err, "\"s.n\" must be between 8 and 10, got 7");
        assert_int_equal(n, 7);

        struct json_object *list = NULL;
        assert_int_equal(rm_confsect_strings("s", o, "list", &list, &err), 0);
        assert_int_equal(json_object_array_length(list), 2);
        assert_int_equal(rm_confsect_strings("s", o, "badlist", &list, &err), -1);
        expect_error(&err, "\"s.badlist\" item 1");
        assert_int_equal(rm_confsect_strings("s", o, "on", &list, &err), -1);
        expect_error(&err, "must be a list of strings");
}

static int64_t ms_now(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *lose_later(void *arg)
{
        usleep(50000);
        rm_answers_end(arg, "b", false);
        return NULL;
}

static void test_answers(void **state)
{
        (void)state;
        struct rm_answers *a = rm_answers_new();
        /* Never begun here (made before a restart): delivered. */
        assert_int_equal(rm_answers_claim(a, "old", NULL, 1000), RM_ANSWER_DELIVERED);

        /* The first answer is lost: one retry gets it; once that is delivered, no more. */
        rm_answers_begin(a, "a");
        rm_answers_end(a, "a", false);
        assert_int_equal(rm_answers_claim(a, "a", NULL, 1000), RM_ANSWER_LOST);
        rm_answers_end(a, "a", true);
        assert_int_equal(rm_answers_claim(a, "a", NULL, 1000), RM_ANSWER_DELIVERED);
        /* A late report about an answer already settled changes nothing. */
        rm_answers_end(a, "a", false);
        assert_int_equal(rm_answers_claim(a, "a", NULL, 1000), RM_ANSWER_DELIVERED);

        /* A retry waits while the first call works, then gets what became of it. */
        rm_answers_begin(a, "b");
        int64_t t0 = ms_now();
        assert_int_equal(rm_answers_claim(a, "b", NULL, 100), RM_ANSWER_PENDING);
        assert_true(ms_now() - t0 >= 100);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, lose_later, a), 0);
        t0 = ms_now();
        assert_int_equal(rm_answers_claim(a, "b", NULL, 5000), RM_ANSWER_LOST);
        assert_true(ms_now() - t0 < 4000);
        pthread_join(t, NULL);
        /* That retry's answer is on its way: a second retry waits for it in turn. */
        assert_int_equal(rm_answers_claim(a, "b", NULL, 50), RM_ANSWER_PENDING);
        rm_answers_end(a, "b", false);
        assert_int_equal(rm_answers_claim(a, "b", NULL, 50), RM_ANSWER_LOST);

        /* The retry's own client gives up: it stops waiting at once. */
        struct rm_cancel c;
        rm_cancel_init(&c, 0);
        rm_cancel_set(&c);
        t0 = ms_now();
        assert_int_equal(rm_answers_claim(a, "b", &c, 5000), RM_ANSWER_PENDING);
        assert_true(ms_now() - t0 < 1000);
        rm_cancel_release(&c);

        /* Gone objects are forgotten. */
        rm_answers_forget(a, "b");
        assert_int_equal(rm_answers_claim(a, "b", NULL, 50), RM_ANSWER_DELIVERED);
        rm_answers_free(a);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_error_set_and_wrap),
            cmocka_unit_test(test_error_sys),
            cmocka_unit_test(test_mkdir_p),
            cmocka_unit_test(test_read_file),
            cmocka_unit_test(test_log_levels),
            cmocka_unit_test(test_log_one_line_per_event),
            cmocka_unit_test(test_arena),
            cmocka_unit_test(test_steal_pointer),
            cmocka_unit_test(test_confsect),
            cmocka_unit_test(test_answers),
        };
        return cmocka_run_group_tests_name("common", tests, NULL, NULL);
}
