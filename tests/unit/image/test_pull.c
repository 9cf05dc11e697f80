/* rm_image_pull against a registry in this process that serves a manifest and a config
 * and then trickles a layer: cancelling the token (or its deadline passing) stops the
 * download, the pull fails with CANCELLED / DEADLINE_EXCEEDED, and the store is left as
 * it was. */
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "image_internal.h"
#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/store.h"
#include "remora/xalloc.h"
#include "tests.h"

#define LAYER_DIGEST "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define LAYER_SIZE   (1 << 20)

struct srv {
        int lfd;
        int port;
        pthread_t thread;
        atomic_bool stop;
        atomic_int requests;
        atomic_int layer_bytes;
        struct rm_cancel *cancel_at_64k; /* set once 64 KiB of the layer went out */
        char config[256];
        char config_digest[72];
        char manifest[1024];
};

static void send_all(int fd, const void *buf, size_t n)
{
        send(fd, buf, n, MSG_NOSIGNAL);
}

static void respond(int fd, int code, const char *ctype, const char *body)
{
        char head[256];
        int n = snprintf(head, sizeof(head),
                         "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: "
                         "close\r\n\r\n",
                         code, ctype, strlen(body));
        send_all(fd, head, (size_t)n);
        send_all(fd, body, strlen(body));
}

static void trickle_layer(struct srv *s, int fd)
{
        char head[256];
        int n = snprintf(head, sizeof(head),
                         "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
                         LAYER_SIZE);
        send_all(fd, head, (size_t)n);
        static char zeros[64 << 10];
        if (send(fd, zeros, sizeof(zeros), MSG_NOSIGNAL) > 0)
                atomic_fetch_add(&s->layer_bytes, (int)sizeof(zeros));
        if (s->cancel_at_64k)
                rm_cancel_set(s->cancel_at_64k);
        /* Then 1 KiB every 20 ms, for at most 10 s, until the client hangs up. */
        for (int i = 0; i < 500 && !atomic_load(&s->stop); i++) {
                usleep(20000);
                if (send(fd, zeros, 1024, MSG_NOSIGNAL) <= 0)
                        return;
                atomic_fetch_add(&s->layer_bytes, 1024);
        }
}

static void *serve(void *arg)
{
        struct srv *s = arg;
        while (!atomic_load(&s->stop)) {
                struct pollfd p = {.fd = s->lfd, .events = POLLIN};
                if (poll(&p, 1, 100) <= 0)
                        continue;
                int fd = accept(s->lfd, NULL, NULL);
                if (fd < 0)
                        continue;
                char req[4096];
                size_t got = 0;
                while (got < sizeof(req) - 1) {
                        ssize_t r = recv(fd, req + got, sizeof(req) - 1 - got, 0);
                        if (r <= 0)
                                break;
                        got += (size_t)r;
                        req[got] = '\0';
                        if (strstr(req, "\r\n\r\n"))
                                break;
                }
                req[got] = '\0';
                atomic_fetch_add(&s->requests, 1);
                char path[1024] = "";
                sscanf(req, "GET %1023s", path);
                cleanup_free char *cfg_path = xasprintf("/v2/r/blobs/%s", s->config_digest);
                if (strcmp(path, "/v2/r/manifests/t") == 0)
                        respond(fd, 200, "application/vnd.oci.image.manifest.v1+json", s->manifest);
                else if (strcmp(path, cfg_path) == 0)
                        respond(fd, 200, "application/octet-stream", s->config);
                else if (strcmp(path, "/v2/r/blobs/" LAYER_DIGEST) == 0)
                        trickle_layer(s, fd);
                else
                        respond(fd, 404, "application/json", "{}");
                close(fd);
        }
        return NULL;
}

static void srv_start(struct srv *s)
{
        memset(s, 0, sizeof(*s));
        snprintf(s->config, sizeof(s->config),
                 "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
                 "\"diff_ids\":[\"sha256:%064d\"]}}",
                 0);
        rm__sha256_of(s->config, strlen(s->config), s->config_digest);
        snprintf(
            s->manifest, sizeof(s->manifest),
            "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
            "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
            "\"digest\":\"%s\",\"size\":%zu},\"layers\":[{\"mediaType\":"
            "\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"" LAYER_DIGEST
            "\",\"size\":%d}]}",
            s->config_digest, strlen(s->config), LAYER_SIZE);
        s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
        socklen_t len = sizeof(a);
        getsockname(s->lfd, (struct sockaddr *)&a, &len);
        s->port = ntohs(a.sin_port);
        assert_int_equal(listen(s->lfd, 16), 0);
        pthread_create(&s->thread, NULL, serve, s);
}

static void srv_stop(struct srv *s)
{
        atomic_store(&s->stop, true);
        pthread_join(s->thread, NULL);
        close(s->lfd);
}

/* Entries of root/images/<sub> (or of root/images with sub NULL), joined by spaces. */
static char *list(const char *root, const char *sub)
{
        cleanup_free char *path =
            sub ? xasprintf("%s/images/%s", root, sub) : xasprintf("%s/images", root);
        DIR *d = opendir(path);
        assert_non_null(d);
        char *out = xstrdup("");
        for (struct dirent *e; (e = readdir(d));) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                        continue;
                char *next = xasprintf("%s%s%s", out, *out ? " " : "", e->d_name);
                free(out);
                out = next;
        }
        closedir(d);
        return out;
}

static void assert_store_empty(const char *root)
{
        cleanup_free char *blobs = list(root, "blobs");
        cleanup_free char *layers = list(root, "layers");
        cleanup_free char *tmp = list(root, "tmp");
        assert_string_equal(blobs, "");
        assert_string_equal(layers, "empty");
        assert_string_equal(tmp, "");
        /* no image record beside the three directories */
        cleanup_free char *top = list(root, NULL);
        assert_int_equal(strlen(top), strlen("blobs layers tmp"));
}

static double now(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Pull from s with cancel; returns the error code, *secs how long it took. */
static enum rm_code pull_with(struct srv *s, const char *root, const struct rm_cancel *cancel,
                              double *secs)
{
        struct rm_error *e = NULL;
        struct rm_store *store = rm_store_open(root, &e);
        assert_non_null(store);
        struct rm_image_service *svc = rm_image_service_open(root, NULL, store, &e);
        assert_non_null(svc);
        cleanup_free char *ref = xasprintf("127.0.0.1:%d/r:t", s->port);
        char *id = NULL;
        double t0 = now();
        int rc = rm_image_pull(svc, ref, NULL, cancel, &id, &e);
        *secs = now() - t0;
        assert_int_equal(rc, -1);
        assert_null(id);
        enum rm_code code = e->code;
        print_message("pull: %s %s (%.2f s)\n", rm_code_name(code), e->msg, *secs);
        rm_error_free(e);
        rm_image_service_close(svc);
        rm_store_close(store);
        return code;
}

static char *temp_root(void)
{
        char tmpl[] = "/tmp/remora-unit-image-XXXXXX";
        assert_non_null(mkdtemp(tmpl));
        return xstrdup(tmpl);
}

static void cancel_stops_the_download(void **state)
{
        (void)state;
        struct srv s;
        srv_start(&s);
        struct rm_cancel c;
        rm_cancel_init(&c, 0);
        s.cancel_at_64k = &c;
        cleanup_free char *root = temp_root();
        double secs;
        assert_int_equal(pull_with(&s, root, &c, &secs), RM_CANCELLED);
        /* stopped within curl's progress interval, far before the 10 s trickle ends */
        assert_true(secs < 4.0);
        int sent = atomic_load(&s.layer_bytes);
        usleep(300000);
        assert_true(atomic_load(&s.layer_bytes) - sent <= 1024); /* the client hung up */
        assert_true(sent < LAYER_SIZE / 2);
        assert_store_empty(root);
        srv_stop(&s);
        rm_cancel_release(&c);
        rm_remove_tree(root, NULL);
}

static void a_cancelled_token_pulls_nothing(void **state)
{
        (void)state;
        struct srv s;
        srv_start(&s);
        struct rm_cancel c;
        rm_cancel_init(&c, 0);
        rm_cancel_set(&c);
        cleanup_free char *root = temp_root();
        double secs;
        assert_int_equal(pull_with(&s, root, &c, &secs), RM_CANCELLED);
        assert_int_equal(atomic_load(&s.requests), 0);
        assert_store_empty(root);
        srv_stop(&s);
        rm_cancel_release(&c);
        rm_remove_tree(root, NULL);
}

static void the_deadline_stops_the_download(void **state)
{
        (void)state;
        struct srv s;
        srv_start(&s);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        struct rm_cancel c;
        rm_cancel_init(&c, (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec + 500000000LL);
        cleanup_free char *root = temp_root();
        double secs;
        assert_int_equal(pull_with(&s, root, &c, &secs), RM_DEADLINE_EXCEEDED);
        assert_true(secs < 4.0);
        assert_true(atomic_load(&s.layer_bytes) > 0); /* it was stopped mid-layer */
        assert_store_empty(root);
        srv_stop(&s);
        rm_cancel_release(&c);
        rm_remove_tree(root, NULL);
}

const struct CMUnitTest rm_test_pull[] = {
    cmocka_unit_test(cancel_stops_the_download),
    cmocka_unit_test(a_cancelled_token_pulls_nothing),
    cmocka_unit_test(the_deadline_stops_the_download),
};
const size_t rm_test_pull_n = sizeof(rm_test_pull) / sizeof(*rm_test_pull);
