/* Unit tests for the streaming server's pieces: tokens, base64, WebSocket framing and
 * request validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include "fake_backend.h"
#include "streaming_int.h"

static struct rm_stream_req *new_req(const char *id)
{
        struct rm_stream_req *r = calloc(1, sizeof(*r));
        r->kind = RM_STREAM_ATTACH;
        r->id = strdup(id);
        return r;
}

static void test_token_single_use(void **state)
{
        (void)state;
        struct rm_token_store *ts = rm__tokens_new(60);
        char tok[RM_TOKEN_LEN + 1];
        assert_int_equal(rm__tokens_put(ts, new_req("c1"), 100, tok, NULL), 0);
        assert_int_equal(strlen(tok), RM_TOKEN_LEN);
        assert_int_equal(
            strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
            RM_TOKEN_LEN);
        assert_null(rm__tokens_take(ts, "nope", 100));
        struct rm_stream_req *r = rm__tokens_take(ts, tok, 101);
        assert_non_null(r);
        assert_string_equal(r->id, "c1");
        rm__stream_req_free(r);
        assert_null(rm__tokens_take(ts, tok, 101));
        rm__tokens_free(ts);
}

static void test_token_expiry(void **state)
{
        (void)state;
        struct rm_token_store *ts = rm__tokens_new(60);
        char a[RM_TOKEN_LEN + 1], b[RM_TOKEN_LEN + 1];
        assert_int_equal(rm__tokens_put(ts, new_req("a"), 100, a, NULL), 0);
        assert_int_equal(rm__tokens_put(ts, new_req("b"), 130, b, NULL), 0);
        assert_null(rm__tokens_take(ts, a, 160));  /* expired exactly at 100 + 60 */
        assert_int_equal(rm__tokens_count(ts), 1); /* and purged */
        struct rm_stream_req *r = rm__tokens_take(ts, b, 189);
        assert_non_null(r);
        rm__stream_req_free(r);
        /* Unused entries are freed with the store (ASan checks). */
        assert_int_equal(rm__tokens_put(ts, new_req("c"), 200, a, NULL), 0);
        rm__tokens_free(ts);
}

static void test_token_unique(void **state)
{
        (void)state;
        struct rm_token_store *ts = rm__tokens_new(60);
        enum { N = 200 };
        char toks[N][RM_TOKEN_LEN + 1];
        for (int i = 0; i < N; i++) {
                assert_int_equal(rm__tokens_put(ts, new_req("x"), 0, toks[i], NULL), 0);
                for (int j = 0; j < i; j++)
                        assert_string_not_equal(toks[i], toks[j]);
        }
        assert_true(RM_TOKEN_BYTES >= 8);
        rm__tokens_free(ts);
}

static void test_base64(void **state)
{
        (void)state;
        char out[64];
        uint8_t back[64];
        assert_int_equal(rm__base64((const uint8_t *)"hello", 5, false, out), 8);
        assert_string_equal(out, "aGVsbG8=");
        rm__base64((const uint8_t *)"\xfb\xff", 2, true, out);
        assert_string_equal(out, "-_8");
        assert_int_equal(rm__base64_decode("aGVsbG8=", 8, back), 5);
        assert_memory_equal(back, "hello", 5);
        assert_int_equal(rm__base64_decode("aGVsbG8", 7, back), 5);
        assert_int_equal(rm__base64_decode("a*==", 4, back), -1);
}

/* Build a masked client frame. */
static size_t client_frame(uint8_t *out, uint8_t b0, const void *data, size_t len)
{
        static const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
        size_t o = 0;
        out[o++] = b0;
        if (len < 126) {
                out[o++] = (uint8_t)(0x80 | len);
        } else if (len <= 0xFFFF) {
                out[o++] = 0x80 | 126;
                out[o++] = (uint8_t)(len >> 8);
                out[o++] = (uint8_t)len;
        } else {
                out[o++] = 0x80 | 127;
                for (int i = 0; i < 8; i++)
                        out[o++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        }
        memcpy(out + o, mask, 4);
        o += 4;
        for (size_t i = 0; i < len; i++)
                out[o + i] = ((const uint8_t *)data)[i] ^ mask[i & 3];
        return o + len;
}

static void test_ws_parse_masked(void **state)
{
        (void)state;
        uint8_t buf[128];
        struct rm_ws_frame f;
        const char *why = NULL;
        size_t n = client_frame(buf, 0x82, "\x00hello", 6);
        for (size_t part = 0; part < n; part++)
                assert_int_equal(rm__ws_parse(buf, part, 1024, &f, &why), 0);
        assert_int_equal(rm__ws_parse(buf, n, 1024, &f, &why), (ssize_t)n);
        assert_true(f.fin);
        assert_int_equal(f.op, RM_WS_BINARY);
        assert_int_equal(f.len, 6);
        assert_memory_equal(f.payload, "\x00hello", 6);
}

static void test_ws_parse_lengths(void **state)
{
        (void)state;
        size_t big = 70000;
        uint8_t *data = malloc(big), *buf = malloc(big + 16);
        for (size_t i = 0; i < big; i++)
                data[i] = (uint8_t)i;
        struct rm_ws_frame f;
        const char *why;
        size_t n = client_frame(buf, 0x82, data, 300);
        assert_int_equal(rm__ws_parse(buf, n, big, &f, &why), (ssize_t)n);
        assert_int_equal(f.len, 300);
        assert_memory_equal(f.payload, data, 300);
        n = client_frame(buf, 0x82, data, big);
        assert_int_equal(rm__ws_parse(buf, n, big, &f, &why), (ssize_t)n);
        assert_int_equal(f.len, big);
        assert_memory_equal(f.payload, data, big);
        /* Oversize is refused from the header alone, before the payload arrives. */
        n = client_frame(buf, 0x82, data, big);
        assert_int_equal(rm__ws_parse(buf, 14, big - 1, &f, &why), -1);
        free(data);
        free(buf);
}

static void test_ws_parse_fragments(void **state)
{
        (void)state;
        uint8_t buf[64];
        struct rm_ws_frame f;
        const char *why;
        size_t n = client_frame(buf, 0x02, "ab", 2);     /* binary, not final */
        size_t m = client_frame(buf + n, 0x80, "cd", 2); /* final continuation */
        assert_int_equal(rm__ws_parse(buf, n + m, 64, &f, &why), (ssize_t)n);
        assert_false(f.fin);
        assert_int_equal(f.op, RM_WS_BINARY);
        assert_int_equal(rm__ws_parse(buf + n, m, 64, &f, &why), (ssize_t)m);
        assert_true(f.fin);
        assert_int_equal(f.op, RM_WS_CONT);
        assert_memory_equal(f.payload, "cd", 2);
}

static void test_ws_parse_invalid(void **state)
{
        (void)state;
        uint8_t buf[256];
        struct rm_ws_frame f;
        const char *why;
        uint8_t unmasked[] = {0x82, 0x01, 'x'};
        assert_int_equal(rm__ws_parse(unmasked, 3, 64, &f, &why), -1);
        size_t n = client_frame(buf, 0xC2, "x", 1); /* RSV1 */
        assert_int_equal(rm__ws_parse(buf, n, 64, &f, &why), -1);
        n = client_frame(buf, 0x83, "x", 1); /* reserved opcode */
        assert_int_equal(rm__ws_parse(buf, n, 64, &f, &why), -1);
        n = client_frame(buf, 0x09, "x", 1); /* fragmented ping */
        assert_int_equal(rm__ws_parse(buf, n, 64, &f, &why), -1);
        uint8_t big[200] = {0};
        n = client_frame(buf, 0x89, big, 126); /* ping over 125 bytes */
        assert_int_equal(rm__ws_parse(buf, n, 1024, &f, &why), -1);
        assert_non_null(why);
}

static void test_ws_header_and_accept(void **state)
{
        (void)state;
        uint8_t h[10];
        assert_int_equal(rm__ws_header(RM_WS_BINARY, true, 5, h), 2);
        assert_int_equal(h[0], 0x82);
        assert_int_equal(h[1], 5);
        assert_int_equal(rm__ws_header(RM_WS_TEXT, true, 1000, h), 4);
        assert_int_equal(h[1], 126);
        assert_int_equal((h[2] << 8) | h[3], 1000);
        assert_int_equal(rm__ws_header(RM_WS_BINARY, false, 70000, h), 10);
        assert_int_equal(h[0], 0x02);
        assert_int_equal(h[1], 127);
        assert_int_equal((h[7] << 16) | (h[8] << 8) | h[9], 70000);
        char acc[29];
        rm__ws_accept("dGhlIHNhbXBsZSBub25jZQ==", acc); /* RFC 6455's example */
        assert_string_equal(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_request_validation(void **state)
{
        (void)state;
        struct rm_error *err = NULL;
        struct rm_streaming *srv = rm_streaming_open(NULL, &rm_fake_stream_ops, NULL, &err);
        assert_non_null(srv);
        char *cmd[] = {"ls"};
        Runtime__V1__ExecRequest ex = RUNTIME__V1__EXEC_REQUEST__INIT;
        ex.container_id = "c1";
        ex.cmd = cmd;
        ex.n_cmd = 1;
        char *url = NULL;
        assert_int_equal(rm_streaming_exec_url(srv, &ex, &url, &err), -1);
        assert_int_equal(err->code, RM_INVALID_ARGUMENT);
        rm_error_free(err);
        err = NULL;
        ex.tty = ex.stderr = true;
        assert_int_equal(rm_streaming_exec_url(srv, &ex, &url, &err), -1);
        assert_non_null(strstr(err->msg, "tty"));
        rm_error_free(err);
        err = NULL;
        ex.stderr = false;
        ex.stdout = true;
        assert_int_equal(rm_streaming_exec_url(srv, &ex, &url, &err), 0);
        char prefix[128];
        snprintf(prefix, sizeof(prefix), "http://%s/exec/", rm_streaming_address(srv));
        assert_int_equal(strncmp(url, prefix, strlen(prefix)), 0);
        assert_int_equal(strlen(url), strlen(prefix) + RM_TOKEN_LEN);
        free(url);
        int32_t ports[] = {80, 70000};
        Runtime__V1__PortForwardRequest pf = RUNTIME__V1__PORT_FORWARD_REQUEST__INIT;
        pf.pod_sandbox_id = "p";
        pf.port = ports;
        pf.n_port = 2;
        assert_int_equal(rm_streaming_portforward_url(srv, &pf, &url, &err), -1);
        assert_non_null(strstr(err->msg, "port[1]"));
        rm_error_free(err);
        rm_streaming_close(srv);
}

static void test_config(void **state)
{
        (void)state;
        struct rm_error *err = NULL;
        struct json_object *bad = json_tokener_parse("{\"adress\": \"127.0.0.1:0\"}");
        assert_null(rm_streaming_open(bad, &rm_fake_stream_ops, NULL, &err));
        assert_non_null(strstr(err->msg, "streaming.adress"));
        rm_error_free(err);
        err = NULL;
        json_object_put(bad);
        bad = json_tokener_parse("{\"address\": \"localhost:1\"}");
        assert_null(rm_streaming_open(bad, &rm_fake_stream_ops, NULL, &err));
        assert_non_null(strstr(err->msg, "streaming.address"));
        rm_error_free(err);
        json_object_put(bad);
}

static void refused(const char *section, const char *key)
{
        struct rm_error *err = NULL;
        struct json_object *bad = json_tokener_parse(section);
        assert_null(rm_streaming_open(bad, &rm_fake_stream_ops, NULL, &err));
        assert_non_null(err);
        if (strstr(err->msg, key) == NULL)
                fail_msg("%s: \"%s\" does not name %s", section, err->msg, key);
        rm_error_free(err);
        json_object_put(bad);
}

static void test_connection_limits_config(void **state)
{
        (void)state;
        refused("{\"header_timeout_ms\": 0}", "streaming.header_timeout_ms");
        refused("{\"header_timeout_ms\": \"5\"}", "streaming.header_timeout_ms");
        refused("{\"header_timeout_ms\": 600001}", "streaming.header_timeout_ms");
        refused("{\"max_pending_connections\": 0}", "streaming.max_pending_connections");
        refused("{\"max_pending_connections\": 901}", "streaming.max_pending_connections");
}

/* Closed by the server (EOF or reset) within ms? */
static bool closed_within(int fd, int ms)
{
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, ms) <= 0)
                return false;
        char b[256];
        return recv(fd, b, sizeof(b), MSG_DONTWAIT) <= 0;
}

static void test_pending_connections_are_bounded(void **state)
{
        (void)state;
        struct rm_error *err = NULL;
        struct json_object *sect =
            json_tokener_parse("{\"header_timeout_ms\": 400, \"max_pending_connections\": 4}");
        struct rm_streaming *srv = rm_streaming_open(sect, &rm_fake_stream_ops, NULL, &err);
        json_object_put(sect);
        assert_non_null(srv);
        const char *addr = rm_streaming_address(srv);
        struct sockaddr_in sa = {.sin_family = AF_INET};
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        sa.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));
        int fds[10];
        for (int i = 0; i < 10; i++) {
                fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                assert_int_equal(connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)), 0);
                if (i % 2 && write(fds[i], "GET /exec/x HTTP/1.1\r\n", 23) != 23)
                        fail_msg("write");
                usleep(20 * 1000); /* accept order = this order */
        }
        /* The six oldest made room for the four newest, well before the timeout. */
        for (int i = 0; i < 6; i++)
                if (!closed_within(fds[i], 200))
                        fail_msg("connection %d still open past the cap", i);
        for (int i = 6; i < 10; i++)
                assert_false(closed_within(fds[i], 0));
        /* The four newest go at the timeout. */
        for (int i = 6; i < 10; i++)
                if (!closed_within(fds[i], 1000))
                        fail_msg("connection %d still open past the header timeout", i);
        for (int i = 0; i < 10; i++)
                close(fds[i]);
        rm_streaming_close(srv);
}

static void test_spdy_frames(void **state)
{
        (void)state;
        uint8_t buf[64];
        struct rm_spdy_frame f;
        rm__spdy_control_header(RM_SPDY_PING, 0, 4, buf);
        memcpy(buf + 8, "\0\0\0\x07", 4);
        assert_int_equal(rm__spdy_parse(buf, 11, 1024, &f), 0);
        assert_int_equal(rm__spdy_parse(buf, 12, 1024, &f), 12);
        assert_true(f.control);
        assert_int_equal(f.type, RM_SPDY_PING);
        assert_int_equal(f.len, 4);
        assert_int_equal(f.payload[3], 7);
        rm__spdy_data_header(0x7FFFFFFF, RM_SPDY_FLAG_FIN, 3, buf);
        memcpy(buf + 8, "abc", 3);
        assert_int_equal(rm__spdy_parse(buf, 11, 1024, &f), 11);
        assert_false(f.control);
        assert_int_equal(f.stream_id, 0x7FFFFFFF);
        assert_int_equal(f.flags, RM_SPDY_FLAG_FIN);
        assert_memory_equal(f.payload, "abc", 3);
        /* Too long for the server, or the wrong version: refused from the header. */
        rm__spdy_data_header(1, 0, 5000, buf);
        assert_int_equal(rm__spdy_parse(buf, 8, 4096, &f), -1);
        rm__spdy_control_header(RM_SPDY_PING, 0, 4, buf);
        buf[1] = 2;
        assert_int_equal(rm__spdy_parse(buf, 12, 1024, &f), -1);
}

static void test_spdy_header_blocks(void **state)
{
        (void)state;
        struct rm_spdy_z a, b;
        assert_int_equal(rm__spdy_z_init(&a), 0);
        assert_int_equal(rm__spdy_z_init(&b), 0);
        /* Several blocks over one compression context, as on a connection. */
        for (int round = 0; round < 3; round++) {
                const char *kv[] = {"streamtype", round == 1 ? "stdout" : "error",
                                    "port",       "8080",
                                    "requestid",  "0"};
                uint8_t *block;
                size_t len;
                assert_int_equal(rm__spdy_headers_encode(&a, kv, 3, &block, &len), 0);
                struct rm_spdy_headers h;
                assert_int_equal(rm__spdy_headers_decode(&b, block, len, &h), 0);
                free(block);
                assert_int_equal(h.n, 3);
                assert_string_equal(rm__spdy_header(&h, "StreamType"), kv[1]);
                assert_string_equal(rm__spdy_header(&h, "port"), "8080");
                assert_null(rm__spdy_header(&h, "missing"));
                rm__spdy_headers_free(&h);
        }
        uint8_t *block;
        size_t len;
        assert_int_equal(rm__spdy_headers_encode(&a, NULL, 0, &block, &len), 0);
        struct rm_spdy_headers h;
        assert_int_equal(rm__spdy_headers_decode(&b, block, len, &h), 0);
        assert_int_equal(h.n, 0);
        rm__spdy_headers_free(&h);
        free(block);
        /* Garbage is refused, not crashed on. */
        struct rm_spdy_z c;
        assert_int_equal(rm__spdy_z_init(&c), 0);
        uint8_t junk[] = {0x78, 0xbb, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4};
        assert_int_equal(rm__spdy_headers_decode(&c, junk, sizeof(junk), &h), -1);
        rm__spdy_z_free(&a);
        rm__spdy_z_free(&b);
        rm__spdy_z_free(&c);
}

static void test_spdy_header_block_lies(void **state)
{
        (void)state;
        /* A block whose count or lengths overrun the data: compress it raw ourselves. */
        struct rm_spdy_z a, b;
        assert_int_equal(rm__spdy_z_init(&a), 0);
        assert_int_equal(rm__spdy_z_init(&b), 0);
        const uint8_t raw[] = {0, 0, 0, 1, 0, 0, 0, 3, 'a', 'b', 'c', 0xff, 0xff, 0xff, 0xff};
        uint8_t out[256];
        a.def.next_in = (uint8_t *)raw;
        a.def.avail_in = sizeof(raw);
        a.def.next_out = out;
        a.def.avail_out = sizeof(out);
        assert_int_equal(deflate(&a.def, Z_SYNC_FLUSH), Z_OK);
        struct rm_spdy_headers h;
        assert_int_equal(rm__spdy_headers_decode(&b, out, sizeof(out) - a.def.avail_out, &h), -1);
        assert_int_equal(h.n, 0);
        rm__spdy_z_free(&a);
        rm__spdy_z_free(&b);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_token_single_use),
            cmocka_unit_test(test_token_expiry),
            cmocka_unit_test(test_token_unique),
            cmocka_unit_test(test_base64),
            cmocka_unit_test(test_ws_parse_masked),
            cmocka_unit_test(test_ws_parse_lengths),
            cmocka_unit_test(test_ws_parse_fragments),
            cmocka_unit_test(test_ws_parse_invalid),
            cmocka_unit_test(test_ws_header_and_accept),
            cmocka_unit_test(test_request_validation),
            cmocka_unit_test(test_config),
            cmocka_unit_test(test_connection_limits_config),
            cmocka_unit_test(test_pending_connections_are_bounded),
            cmocka_unit_test(test_spdy_frames),
            cmocka_unit_test(test_spdy_header_blocks),
            cmocka_unit_test(test_spdy_header_block_lies),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
