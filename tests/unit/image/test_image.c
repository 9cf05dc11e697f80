/* The parsers and checks a hostile registry's documents go through. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image_internal.h"
#include "remora/cleanup.h"
#include "remora/xalloc.h"
#include "tests.h"

#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define D1    "sha256:" HEX64

static void loopback_is_parsed(void **state)
{
        (void)state;
        const char *yes[] = {"localhost", "localhost:5000", "LOCALHOST:1",
                             "127.0.0.1", "127.0.0.1:5000", "127.255.3.4:65535",
                             "[::1]",     "[::1]:5000",     "[0:0:0:0:0:0:0:1]:80"};
        for (size_t i = 0; i < sizeof(yes) / sizeof(*yes); i++)
                assert_true(rm__host_is_loopback(yes[i]));
        const char *no[] = {"localhost.example",
                            "localhost.example:5000",
                            "127.0.0.1.example",
                            "127.0.0.1.example:5000",
                            "localhostfoo",
                            "localhostfoo:80",
                            "128.0.0.1",
                            "10.0.0.1:5000",
                            "127.1",
                            "[::2]",
                            "[::1",
                            "[::1]x",
                            "[::1]:",
                            "localhost:",
                            "localhost:0",
                            "localhost:65536",
                            "localhost:80:80",
                            "127.0.0.1:5000/x",
                            "",
                            "[::ffff:127.0.0.1]",
                            "localhost:+80",
                            "localhost :80"};
        for (size_t i = 0; i < sizeof(no) / sizeof(*no); i++) {
                if (rm__host_is_loopback(no[i]))
                        fail_msg("%s taken for loopback", no[i]);
        }
        assert_false(rm__host_is_loopback(NULL));
}

static void plain_http_needs_loopback_or_the_list(void **state)
{
        (void)state;
        cleanup_json struct json_object *ins = json_tokener_parse("[\"reg.example:5000\"]");
        assert_true(rm__host_plain_ok(ins, "reg.example:5000"));
        assert_true(rm__host_plain_ok(ins, "127.0.0.1:5000"));
        assert_false(rm__host_plain_ok(ins, "reg.example"));
        assert_false(rm__host_plain_ok(ins, "reg.example:5000.evil"));
        assert_false(rm__host_plain_ok(NULL, "localhost.example"));
        assert_false(rm__host_plain_ok(NULL, "127.0.0.1.example"));
        assert_false(rm__host_plain_ok(NULL, "localhostfoo"));
}

static void urls_split(void **state)
{
        (void)state;
        bool https = false;
        char *host = NULL;
        assert_int_equal(rm__url_split("https://Reg.Example:443/v2/x", &https, &host), 0);
        assert_true(https);
        assert_string_equal(host, "reg.example:443");
        free(host);
        assert_int_equal(rm__url_split("http://u:p@127.0.0.1:5000?x", &https, &host), 0);
        assert_false(https);
        assert_string_equal(host, "127.0.0.1:5000");
        free(host);
        assert_int_equal(rm__url_split("ftp://x/", &https, &host), -1);
        assert_int_equal(rm__url_split("http:///x", &https, &host), -1);
}

static void expect_error(int rc, struct rm_error **ep, enum rm_code code, const char *needle)
{
        struct rm_error *e = *ep;
        *ep = NULL;
        assert_int_equal(rc, -1);
        assert_non_null(e);
        if (e->code != code || strstr(e->msg, needle) == NULL)
                fail_msg("got %s \"%s\", want %s with \"%s\"", rm_code_name(e->code), e->msg,
                         rm_code_name(code), needle);
        rm_error_free(e);
}

static void digests_are_checked(void **state)
{
        (void)state;
        assert_true(rm__digest_ok(D1));
        const char *bad[] = {
            "sha256:" HEX64 "0",
            "sha256:0123",
            "sha256:../../../../tmp/victim",
            "SHA256:" HEX64,
            "sha512:" HEX64 HEX64,
            "sha256:" HEX64 "/..",
            "sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "",
            "sha256:"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
                struct rm_error *e = NULL;
                expect_error(rm__digest_check(bad[i], "manifest.layers[2].digest", &e), &e,
                             RM_INVALID_ARGUMENT, "manifest.layers[2].digest");
        }
        struct rm_error *e = NULL;
        expect_error(rm__digest_check(NULL, "x.digest", &e), &e, RM_INVALID_ARGUMENT,
                     "x.digest is missing");
}

static int parse_manifest(const char *json, struct rm_error **e)
{
        struct rm__manifest m;
        int rc = rm__manifest_parse(json, strlen(json), 8 << 20, &m, e);
        if (rc == 0)
                rm__manifest_release(&m);
        return rc;
}

#define CFG                                                                                        \
        "{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"" D1             \
        "\",\"size\":10}"
#define LAYER                                                                                      \
        "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"" D1          \
        "\",\"size\":5}"

static void manifests_name_the_bad_field(void **state)
{
        (void)state;
        struct rm_error *e = NULL;
        const char *good = "{\"config\":" CFG ",\"layers\":[" LAYER "," LAYER "]}";
        struct rm__manifest m;
        assert_int_equal(rm__manifest_parse(good, strlen(good), 8 << 20, &m, &e), 0);
        assert_int_equal(m.n_layers, 2);
        assert_int_equal(m.layers[1].size, 5);
        assert_string_equal(m.config.digest, D1);
        rm__manifest_release(&m);

        struct {
                const char *json, *needle;
                enum rm_code code;
        } cases[] = {
            {"{\"config\":" CFG ",\"layers\":[" LAYER "," LAYER ",{\"mediaType\":\"application/"
             "vnd.oci.image.layer.v1.tar\",\"size\":1}]}",
             "manifest.layers[2].digest is missing", RM_INVALID_ARGUMENT},
            {"{\"config\":" CFG ",\"layers\":[{\"digest\":\"" D1 "\",\"size\":1}]}",
             "manifest.layers[0].mediaType is missing", RM_INVALID_ARGUMENT},
            {"{\"config\":" CFG
             ",\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\","
             "\"digest\":\"" D1 "\"}]}",
             "manifest.layers[0].size is missing", RM_INVALID_ARGUMENT},
            {"{\"config\":" CFG
             ",\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\","
             "\"digest\":\"sha256:../../../../tmp/victim\",\"size\":1}]}",
             "manifest.layers[0].digest is not a digest", RM_INVALID_ARGUMENT},
            {"{\"config\":{\"mediaType\":\"x\",\"digest\":\"" D1 "\"},\"layers\":[]}",
             "manifest.config.size is missing", RM_INVALID_ARGUMENT},
            {"{\"config\":{\"mediaType\":\"x\",\"digest\":\"" D1
             "\",\"size\":99999999},\"layers\":[]}",
             "image.max_config_bytes", RM_INVALID_ARGUMENT},
            {"{\"config\":" CFG "}", "manifest.layers is missing", RM_INVALID_ARGUMENT},
            {"{\"layers\":[]}", "manifest.config is not a descriptor", RM_INVALID_ARGUMENT},
            {"[]", "not a valid JSON object", RM_INVALID_ARGUMENT},
            {"{\"config\":" CFG ",\"layers\":[]} trailing", "not a valid JSON object",
             RM_INVALID_ARGUMENT},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
                e = NULL;
                expect_error(parse_manifest(cases[i].json, &e), &e, cases[i].code, cases[i].needle);
        }
        /* NUL inside the body */
        char nul[] = "{\"config\":1}\0{}";
        e = NULL;
        expect_error(rm__manifest_parse(nul, sizeof(nul) - 1, 1 << 20, &m, &e), &e,
                     RM_INVALID_ARGUMENT, "JSON");
}

static void indexes_check_every_entry(void **state)
{
        (void)state;
        struct rm__desc d;
        struct rm_error *e = NULL;
        const char *ok = "{\"manifests\":[{\"mediaType\":\"m\",\"digest\":\"" D1 "\",\"size\":3,"
                         "\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"}}]}";
        assert_int_equal(rm__index_pick(ok, strlen(ok), "arm64", &d, &e), 0);
        assert_string_equal(d.digest, D1);
        rm__desc_release(&d);
        expect_error(rm__index_pick(ok, strlen(ok), "amd64", &d, &e), &e, RM_NOT_FOUND,
                     "linux/amd64");
        e = NULL;
        const char *bad = "{\"manifests\":[{\"mediaType\":\"m\",\"digest\":\"" D1 "\",\"size\":3,"
                          "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}},"
                          "{\"mediaType\":\"m\",\"digest\":\"sha256:x/../y\",\"size\":3}]}";
        expect_error(rm__index_pick(bad, strlen(bad), "amd64", &d, &e), &e, RM_INVALID_ARGUMENT,
                     "index.manifests[1].digest");
}

static void configs_check_diff_ids(void **state)
{
        (void)state;
        struct json_object *doc = NULL;
        char **ids = NULL;
        struct rm_error *e = NULL;
        const char *ok = "{\"rootfs\":{\"diff_ids\":[\"" D1 "\",\"" D1 "\"]},\"config\":{}}";
        assert_int_equal(rm__config_parse(ok, strlen(ok), 2, &doc, &ids, &e), 0);
        assert_string_equal(ids[1], D1);
        assert_null(ids[2]);
        char chains[2][72];
        rm__chain_ids(ids, 2, chains);
        assert_string_equal(chains[0], D1);
        char want[72];
        rm__sha256_of(D1 " " D1, strlen(D1 " " D1), want);
        assert_string_equal(chains[1], want);
        rm__strv_free(ids);
        json_object_put(doc);
        expect_error(rm__config_parse(ok, strlen(ok), 3, &doc, &ids, &e), &e, RM_INVALID_ARGUMENT,
                     "config.rootfs.diff_ids has 2 entries");
        e = NULL;
        const char *bad = "{\"rootfs\":{\"diff_ids\":[\"" D1 "\",\"sha256:../../etc\"]}}";
        expect_error(rm__config_parse(bad, strlen(bad), 2, &doc, &ids, &e), &e, RM_INVALID_ARGUMENT,
                     "config.rootfs.diff_ids[1]");
        e = NULL;
        const char *num = "{\"rootfs\":{\"diff_ids\":[1]}}";
        expect_error(rm__config_parse(num, strlen(num), 1, &doc, &ids, &e), &e, RM_INVALID_ARGUMENT,
                     "config.rootfs.diff_ids[0] is missing");
}

static void space_reserve_is_kept(void **state)
{
        (void)state;
        cleanup_close int fd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct rm__space s = {.fd = fd, .reserve = 0};
        struct rm_error *e = NULL;
        assert_int_equal(rm__space_take(&s, 4096, &e), 0);
        s = (struct rm__space){.fd = fd, .reserve = UINT64_MAX / 2};
        expect_error(rm__space_take(&s, 1, &e), &e, RM_RESOURCE_EXHAUSTED,
                     "image.free_space_reserve");
        uint64_t def = rm__space_default_reserve(fd);
        assert_true(def > 0 && def <= RM__RESERVE_MAX);
}

static void cancel_and_deadline(void **state)
{
        (void)state;
        struct rm_error *e = NULL;
        assert_int_equal(rm__cancel_check(NULL, &e), 0);
        struct rm_cancel c;
        rm_cancel_init(&c, 0);
        assert_int_equal(rm__cancel_check(&c, &e), 0);
        rm_cancel_set(&c);
        expect_error(rm__cancel_check(&c, &e), &e, RM_CANCELLED, "cancelled");
        rm_cancel_release(&c);
        rm_cancel_init(&c, 1); /* long past */
        e = NULL;
        expect_error(rm__cancel_check(&c, &e), &e, RM_DEADLINE_EXCEEDED, "deadline");
        rm_cancel_release(&c);
}

const struct CMUnitTest rm_test_parsing[] = {
    cmocka_unit_test(loopback_is_parsed),
    cmocka_unit_test(plain_http_needs_loopback_or_the_list),
    cmocka_unit_test(urls_split),
    cmocka_unit_test(digests_are_checked),
    cmocka_unit_test(manifests_name_the_bad_field),
    cmocka_unit_test(indexes_check_every_entry),
    cmocka_unit_test(configs_check_diff_ids),
    cmocka_unit_test(space_reserve_is_kept),
    cmocka_unit_test(cancel_and_deadline),
};
const size_t rm_test_parsing_n = sizeof(rm_test_parsing) / sizeof(*rm_test_parsing);
