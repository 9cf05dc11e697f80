/* remora-shim's attach hub and the container's stdin: a client may send far more than the
 * container reads; the hub must never block on it, hold a bounded amount, hold the client
 * back past that, and still deliver every byte in order (and end of input after them). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "shim_tests.h"

#include "hub.h"

struct rig {
        char dir[64];
        struct rm_hub hub;
        int client;  /* the attached client's end */
        int pipe[2]; /* the container's stdin */
        size_t sent, got;
        unsigned char frame[RM_ATTACH_HEADER + 4096];
        size_t frame_off, frame_len; /* what of the current frame is still to send */
};

static unsigned char byte_at(size_t i)
{
        return (unsigned char)(i * 7 + i / 251);
}

static int setup(void **state)
{
        struct rig *r = calloc(1, sizeof(*r));
        strcpy(r->dir, "/tmp/remora-unit-hub-XXXXXX");
        assert_non_null(mkdtemp(r->dir));
        assert_int_equal(chdir(r->dir), 0);
        assert_int_equal(pipe2(r->pipe, O_CLOEXEC), 0);
        fcntl(r->pipe[1], F_SETFL, O_NONBLOCK);
        fcntl(r->pipe[0], F_SETFL, O_NONBLOCK);
        r->hub = (struct rm_hub){.stdin_fd = r->pipe[1], .tty_fd = -1};
        assert_int_equal(rm_hub_listen(&r->hub), 0);
        r->client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strcpy(sa.sun_path, RM_ATTACH_SOCKET);
        assert_int_equal(connect(r->client, (struct sockaddr *)&sa, sizeof(sa)), 0);
        fcntl(r->client, F_SETFL, O_NONBLOCK);
        /* Guard: a hub that blocks ends the test here. */
        alarm(60);
        *state = r;
        return 0;
}

static int teardown(void **state)
{
        struct rig *r = *state;
        alarm(0);
        close(r->client);
        if (r->pipe[0] >= 0)
                close(r->pipe[0]);
        if (r->hub.stdin_fd >= 0)
                close(r->hub.stdin_fd);
        rm_hub_close(&r->hub, r->dir);
        assert_int_equal(chdir("/"), 0);
        rmdir(r->dir);
        free(r);
        return 0;
}

/* One pass of the shim's loop for the hub, without waiting. */
static void turn(struct rig *r)
{
        struct pollfd pf[RM_HUB_MAX_POLLFDS];
        size_t n = rm_hub_pollfds(&r->hub, pf);
        assert_true(n <= RM_HUB_MAX_POLLFDS);
        assert_true(poll(pf, n, 0) >= 0);
        rm_hub_handle(&r->hub, pf, n);
}

/* The client sends stdin frames of the numbered byte stream until its socket is full or
 * total bytes are out. */
static void client_send(struct rig *r, size_t total)
{
        for (;;) {
                if (r->frame_off == r->frame_len) {
                        if (r->sent >= total)
                                return;
                        size_t len = total - r->sent < 4096 ? total - r->sent : 4096;
                        rm_attach_header(r->frame, RM_ATTACH_STDIN, (uint32_t)len);
                        for (size_t i = 0; i < len; i++)
                                r->frame[RM_ATTACH_HEADER + i] = byte_at(r->sent + i);
                        r->sent += len;
                        r->frame_off = 0;
                        r->frame_len = RM_ATTACH_HEADER + len;
                }
                ssize_t w = send(r->client, r->frame + r->frame_off, r->frame_len - r->frame_off,
                                 MSG_NOSIGNAL);
                if (w < 0 && errno == EAGAIN)
                        return;
                assert_true(w > 0);
                r->frame_off += (size_t)w;
        }
}

/* The container reads up to max bytes of its stdin and checks they come in order; returns
 * 0 at end of file. */
static ssize_t container_read(struct rig *r, size_t max)
{
        unsigned char buf[65536];
        ssize_t n = read(r->pipe[0], buf, max < sizeof(buf) ? max : sizeof(buf));
        if (n < 0 && errno == EAGAIN)
                return -1;
        for (ssize_t i = 0; i < n; i++)
                if (buf[i] != byte_at(r->got + (size_t)i))
                        fail_msg("stdin byte %zu out of order", r->got + (size_t)i);
        if (n > 0)
                r->got += (size_t)n;
        return n;
}

static bool client_held_back(struct rig *r)
{
        struct pollfd pf[RM_HUB_MAX_POLLFDS];
        size_t n = rm_hub_pollfds(&r->hub, pf);
        assert_true(n >= 3);
        return pf[2].fd < 0;
}

static void test_flood_is_bounded_and_delivered_in_order(void **state)
{
        struct rig *r = *state;
        const size_t total = 4u << 20;
        turn(r); /* accept the client */
        assert_int_equal(r->hub.n, 1);
        /* The container reads nothing: the hub fills the pipe, then its buffer, then stops
         * reading the client, whose socket fills. */
        for (int i = 0; i < 200; i++) {
                client_send(r, total);
                turn(r);
                assert_true(rm_hub_stdin_pending(&r->hub) <=
                            RM_HUB_STDIN_MAX + RM_ATTACH_HEADER + RM_ATTACH_MAX_PAYLOAD);
        }
        assert_true(rm_hub_stdin_pending(&r->hub) >= RM_HUB_STDIN_MAX);
        assert_true(client_held_back(r));
        assert_true(r->sent < total);
        /* Now it reads, slowly: every byte arrives, in order. */
        while (r->got < total) {
                client_send(r, total);
                turn(r);
                container_read(r, 10000);
        }
        assert_int_equal(r->got, total);
        assert_int_equal(rm_hub_stdin_pending(&r->hub), 0);
        assert_null(r->hub.in_buf);
        assert_false(client_held_back(r));
}

static void test_end_of_input_comes_after_the_waiting_bytes(void **state)
{
        struct rig *r = *state;
        turn(r);
        const size_t total = 1u << 20;
        while (r->sent < total || r->frame_off < r->frame_len) {
                client_send(r, total);
                turn(r);
                if (client_held_back(r))
                        container_read(r, 65536);
        }
        unsigned char close_frame[RM_ATTACH_HEADER];
        rm_attach_header(close_frame, RM_ATTACH_CLOSE_STDIN, 0);
        assert_int_equal(send(r->client, close_frame, sizeof(close_frame), 0), RM_ATTACH_HEADER);
        for (int i = 0; i < 20; i++)
                turn(r);
        assert_true(rm_hub_stdin_pending(&r->hub) > 0);
        assert_true(r->hub.stdin_fd >= 0);
        ssize_t n;
        while ((n = container_read(r, 65536)) != 0)
                turn(r);
        assert_int_equal(r->got, total);
        assert_int_equal(r->hub.stdin_fd, -1);
}

static void test_container_closing_stdin_frees_the_client(void **state)
{
        struct rig *r = *state;
        turn(r);
        for (int i = 0; i < 100; i++) {
                client_send(r, 8u << 20);
                turn(r);
        }
        assert_true(client_held_back(r));
        close(r->pipe[0]);
        r->pipe[0] = -1;
        turn(r);
        assert_int_equal(r->hub.stdin_fd, -1);
        assert_int_equal(rm_hub_stdin_pending(&r->hub), 0);
        assert_false(client_held_back(r));
        /* The client's input is read (and dropped) again; the client stays. */
        size_t before = r->sent;
        for (int i = 0; i < 100; i++) {
                client_send(r, 8u << 20);
                turn(r);
        }
        assert_true(r->sent > before);
        assert_int_equal(r->hub.n, 1);
}

static void test_a_sender_held_back_too_long_is_cut_off(void **state)
{
        struct rig *r = *state;
        r->hub.stall_ms = 200;
        turn(r);
        /* A second client that only listens. */
        int reader = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strcpy(sa.sun_path, RM_ATTACH_SOCKET);
        assert_int_equal(connect(reader, (struct sockaddr *)&sa, sizeof(sa)), 0);
        turn(r);
        assert_int_equal(r->hub.n, 2);
        for (int i = 0; i < 100; i++) {
                client_send(r, 8u << 20);
                turn(r);
        }
        assert_true(client_held_back(r));
        assert_int_equal(r->hub.n, 2);
        int t = rm_hub_poll_timeout(&r->hub);
        assert_true(t >= 0 && t <= 200);
        usleep(250 * 1000);
        turn(r);
        assert_int_equal(r->hub.n, 1);
        assert_int_equal(r->hub.clients[0].fd >= 0, 1);
        /* The sender sees its end: the hub closed it. */
        char c;
        ssize_t got;
        while ((got = recv(r->client, &c, 1, MSG_DONTWAIT)) > 0)
                ;
        assert_true(got == 0 || (got < 0 && errno != EAGAIN));
        /* What waits is still the container's, in order, once it reads. */
        size_t want = r->got + rm_hub_stdin_pending(&r->hub);
        while (r->got < want) {
                turn(r);
                container_read(r, 65536);
        }
        close(reader);
}

int rm_test_hub(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_flood_is_bounded_and_delivered_in_order, setup,
                                            teardown),
            cmocka_unit_test_setup_teardown(test_end_of_input_comes_after_the_waiting_bytes, setup,
                                            teardown),
            cmocka_unit_test_setup_teardown(test_container_closing_stdin_frees_the_client, setup,
                                            teardown),
            cmocka_unit_test_setup_teardown(test_a_sender_held_back_too_long_is_cut_off, setup,
                                            teardown),
        };
        return cmocka_run_group_tests_name("hub", tests, NULL, NULL);
}
