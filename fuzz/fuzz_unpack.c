/* The layer unpacker on any bytes (compressed or not): it may refuse them, but nothing
 * may appear, change or vanish outside the layer directory. The layer is unpacked at
 * <tmp>/a/layer beside canaries <tmp>/canary and <tmp>/a/canary, and both directories
 * must hold exactly what they held before once the layer directory is removed. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int top_fd = -1, a_fd = -1;

static void make_canary(int dirfd)
{
        int fd = openat(dirfd, "canary", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, "canary\n", 7) != 7)
                abort();
        close(fd);
}

static void setup(void)
{
        /* Under $TMPDIR: fuzz/run points it at a directory it removes afterwards. */
        const char *tmp = getenv("TMPDIR");
        char tmpl[4096];
        snprintf(tmpl, sizeof(tmpl), "%s/remora-fuzz-unpack-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (mkdtemp(tmpl) == NULL)
                abort();
        top_fd = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (top_fd < 0 || mkdirat(top_fd, "a", 0755) < 0)
                abort();
        a_fd = openat(top_fd, "a", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        make_canary(top_fd);
        make_canary(a_fd);
}

/* The names in dirfd other than "." and "..", and that canary still says "canary\n". */
static void expect_only(int dirfd, const char *a, const char *b)
{
        int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = fdopendir(fd);
        if (d == NULL)
                abort();
        for (struct dirent *e; (e = readdir(d));) {
                if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, a) &&
                    (b == NULL || strcmp(e->d_name, b))) {
                        fprintf(stderr, "unpack left %s outside the layer\n", e->d_name);
                        abort();
                }
        }
        closedir(d);
        char buf[16] = "";
        int c = openat(dirfd, "canary", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;
        if (c < 0 || read(c, buf, sizeof(buf)) != 7 || memcmp(buf, "canary\n", 7) != 0 ||
            fstat(c, &st) < 0 || st.st_nlink != 1) {
                fprintf(stderr, "the canary was changed\n");
                abort();
        }
        close(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (top_fd < 0)
                setup();
        int blob = memfd_create("layer", MFD_CLOEXEC);
        if (blob < 0 || (size && write(blob, data, size) != (ssize_t)size) ||
            lseek(blob, 0, SEEK_SET) < 0)
                abort();
        if (mkdirat(a_fd, "layer", 0755) < 0)
                abort();
        int dfd = openat(a_fd, "layer", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct rm__space space = {.fd = a_fd, .reserve = 0};
        struct rm_error *e = NULL;
        char diff_id[72];
        rm__layer_unpack(blob, dfd, "fuzz", &space, NULL, diff_id, &e);
        rm_error_free(e);
        close(dfd);
        close(blob);
        expect_only(a_fd, "canary", "layer");
        expect_only(top_fd, "canary", "a");
        if (rm__remove_at(a_fd, "layer") < 0)
                abort();
        return 0;
}
