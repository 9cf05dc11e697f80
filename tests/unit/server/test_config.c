#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "remora/cleanup.h"
#include "remora/server.h"
#include "tests.h"

static struct json_object *parse(const char *text)
{
        struct json_object *o = json_tokener_parse(text);
        assert_non_null(o);
        return o;
}

/* Apply text to a default config and expect failure mentioning needle. */
static void expect_rejected(const char *text, const char *needle)
{
        struct rm_config cfg;
        rm_config_init(&cfg);
        cleanup_json struct json_object *doc = parse(text);
        cleanup_error struct rm_error *err = NULL;
        assert_int_equal(rm_config_apply_json(&cfg, doc, &err), -1);
        assert_non_null(err);
        assert_int_equal(err->code, RM_INVALID_ARGUMENT);
        if (strstr(err->msg, needle) == NULL)
                fail_msg("\"%s\" not in \"%s\"", needle, err->msg);
        /* A rejected document changes nothing. */
        assert_string_equal(cfg.root, RM_DEFAULT_ROOT);
        assert_string_equal(cfg.state, RM_DEFAULT_STATE);
        assert_int_equal(cfg.workers, RM_DEFAULT_WORKERS);
        assert_int_equal(cfg.poll_spin_us, RM_DEFAULT_POLL_SPIN_US);
        assert_null(cfg.listen);
        rm_config_release(&cfg);
}

static void test_defaults(void **state)
{
        (void)state;
        struct rm_config cfg;
        rm_config_init(&cfg);
        cleanup_error struct rm_error *err = NULL;
        assert_int_equal(rm_config_finish(&cfg, &err), 0);
        assert_string_equal(cfg.listen, "unix:///run/remora/remora.sock");
        assert_string_equal(cfg.root, "/var/lib/remora");
        assert_string_equal(cfg.runtime_path, "runc");
        assert_int_equal(cfg.log_level, RM_LOG_INFO);
        rm_config_release(&cfg);
}

static void test_apply_all_keys(void **state)
{
        (void)state;
        struct rm_config cfg;
        rm_config_init(&cfg);
        cleanup_json struct json_object *doc =
            parse("{\"listen\":\"unix:/tmp/x.sock\",\"root\":\"/a\",\"state\":\"/b\","
                  "\"log_level\":\"debug\",\"workers\":3,\"poll_spin_us\":0,"
                  "\"runtime_path\":\"/usr/sbin/runc\"}");
        cleanup_error struct rm_error *err = NULL;
        assert_int_equal(rm_config_apply_json(&cfg, doc, &err), 0);
        assert_null(err);
        assert_string_equal(cfg.listen, "unix:/tmp/x.sock");
        assert_string_equal(cfg.root, "/a");
        assert_string_equal(cfg.state, "/b");
        assert_int_equal(cfg.log_level, RM_LOG_DEBUG);
        assert_int_equal(cfg.workers, 3);
        assert_int_equal(cfg.poll_spin_us, 0);
        assert_string_equal(cfg.runtime_path, "/usr/sbin/runc");
        rm_config_release(&cfg);
}

static void test_listen_defaults_to_state_dir(void **state)
{
        (void)state;
        struct rm_config cfg;
        rm_config_init(&cfg);
        cleanup_json struct json_object *doc = parse("{\"state\":\"/tmp/st\"}");
        assert_int_equal(rm_config_apply_json(&cfg, doc, NULL), 0);
        assert_int_equal(rm_config_finish(&cfg, NULL), 0);
        assert_string_equal(cfg.listen, "unix:///tmp/st/remora.sock");
        rm_config_release(&cfg);
}

static void test_rejections(void **state)
{
        (void)state;
        expect_rejected("{\"bogus\":1}", "unknown config key \"bogus\"");
        expect_rejected("{\"root\":1}", "\"root\" must be a string");
        expect_rejected("{\"root\":\"\"}", "\"root\" is empty");
        expect_rejected("{\"state\":\"rel/dir\"}", "\"state\" must be an absolute path");
        expect_rejected("{\"workers\":\"2\"}", "\"workers\" must be an integer");
        expect_rejected("{\"workers\":1.5}", "\"workers\" must be an integer");
        expect_rejected("{\"workers\":0}", "between 1 and 256");
        expect_rejected("{\"workers\":100000}", "between 1 and 256");
        expect_rejected("{\"poll_spin_us\":-1}", "\"poll_spin_us\" must be between 0 and 1000");
        expect_rejected("{\"poll_spin_us\":\"50\"}", "\"poll_spin_us\" must be an integer");
        expect_rejected("{\"log_level\":\"verbose\"}", "\"log_level\"");
        expect_rejected("{\"listen\":\"tcp://1.2.3.4:5\"}", "\"listen\"");
        expect_rejected("{\"listen\":\"unix://relative.sock\"}", "absolute socket path");
        expect_rejected("[]", "must be a JSON object");
        /* A bad key after a good one: the good one must not stick either. */
        expect_rejected("{\"root\":\"/ok\",\"nope\":true}", "\"nope\"");
}

static void test_socket_path(void **state)
{
        (void)state;
        cleanup_free char *a = rm_config_socket_path("unix:///run/x.sock", NULL);
        cleanup_free char *b = rm_config_socket_path("unix:/run/y.sock", NULL);
        assert_string_equal(a, "/run/x.sock");
        assert_string_equal(b, "/run/y.sock");
        char longpath[200];
        memset(longpath, 'a', sizeof(longpath));
        memcpy(longpath, "unix:///", 8);
        longpath[sizeof(longpath) - 1] = '\0';
        cleanup_error struct rm_error *err = NULL;
        assert_null(rm_config_socket_path(longpath, &err));
        assert_non_null(strstr(err->msg, "107 bytes"));
}

static void test_load_file(void **state)
{
        (void)state;
        char path[] = "/tmp/remora-config-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        const char *text = "{\"workers\": 5}";
        assert_int_equal(write(fd, text, strlen(text)), (int)strlen(text));
        close(fd);

        struct rm_config cfg;
        rm_config_init(&cfg);
        assert_int_equal(rm_config_load_file(&cfg, path, true, NULL), 0);
        assert_int_equal(cfg.workers, 5);
        assert_string_equal(cfg.config_path, path);

        /* Missing: fine when optional, an error naming the file when required. */
        unlink(path);
        assert_int_equal(rm_config_load_file(&cfg, path, false, NULL), 0);
        cleanup_error struct rm_error *err = NULL;
        assert_int_equal(rm_config_load_file(&cfg, path, true, &err), -1);
        assert_int_equal(err->code, RM_NOT_FOUND);
        assert_non_null(strstr(err->msg, path));
        rm_config_release(&cfg);
}

static void test_trailing_garbage_rejected(void **state)
{
        (void)state;
        char path[] = "/tmp/remora-config-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        const char *text = "{\"workers\": 5} {";
        assert_int_equal(write(fd, text, strlen(text)), (int)strlen(text));
        close(fd);
        struct rm_config cfg;
        rm_config_init(&cfg);
        cleanup_error struct rm_error *err = NULL;
        assert_int_equal(rm_config_load_file(&cfg, path, true, &err), -1);
        assert_int_equal(err->code, RM_INVALID_ARGUMENT);
        assert_int_equal(cfg.workers, RM_DEFAULT_WORKERS);
        unlink(path);
        rm_config_release(&cfg);
}

int run_config_tests(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_defaults),
            cmocka_unit_test(test_apply_all_keys),
            cmocka_unit_test(test_listen_defaults_to_state_dir),
            cmocka_unit_test(test_rejections),
            cmocka_unit_test(test_socket_path),
            cmocka_unit_test(test_load_file),
            cmocka_unit_test(test_trailing_garbage_rejected),
        };
        return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
