/* The CRI log writer of remora-shim: which records a stream of bytes becomes, whatever
 * way the reads cut it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "shim_tests.h"

#include "cri_log.h"

struct rec {
        char tag;
        size_t len;
        const char *text; /* into the log buffer */
};

struct log {
        char *data;
        size_t len;
        struct rec recs[16];
        size_t n;
};

/* Feed input to a fresh writer cut at the given positions (ascending), flush, and parse
 * the records written. */
static void run(const char *input, size_t len, const size_t *cuts, size_t ncuts, struct log *out)
{
        int fd = memfd_create("cri-log", MFD_CLOEXEC);
        assert_true(fd >= 0);
        struct rm_cri_stream *s = calloc(1, sizeof(*s));
        assert_non_null(s);
        s->name = "stdout";
        size_t at = 0;
        for (size_t i = 0; i <= ncuts; i++) {
                size_t end = i < ncuts ? cuts[i] : len;
                rm_cri_feed(fd, s, input + at, end - at);
                at = end;
        }
        rm_cri_flush(fd, s);
        free(s);
        off_t size = lseek(fd, 0, SEEK_END);
        out->data = malloc((size_t)size + 1);
        assert_int_equal(pread(fd, out->data, (size_t)size, 0), size);
        close(fd);
        out->len = (size_t)size;
        out->n = 0;
        for (char *p = out->data; p < out->data + out->len;) {
                char *nl = memchr(p, '\n', (size_t)(out->data + out->len - p));
                assert_non_null(nl);
                /* <time> stdout <tag> <text> */
                char *sp = memchr(p, ' ', (size_t)(nl - p));
                assert_non_null(sp);
                assert_true(nl - sp >= 10);
                assert_memory_equal(sp, " stdout ", 8);
                assert_true(sp[9] == ' ');
                assert_true(out->n < 16);
                out->recs[out->n++] =
                    (struct rec){.tag = sp[8], .text = sp + 10, .len = (size_t)(nl - sp - 10)};
                p = nl + 1;
        }
}

/* The records expected: tag and a slice [from, from + len) of the input. */
struct want {
        char tag;
        size_t from, len;
};

static void check(const char *input, const struct log *got, const struct want *w, size_t nw,
                  const char *how)
{
        if (got->n != nw)
                fail_msg("%s: %zu records, want %zu", how, got->n, nw);
        for (size_t i = 0; i < nw; i++) {
                if (got->recs[i].tag != w[i].tag || got->recs[i].len != w[i].len ||
                    memcmp(got->recs[i].text, input + w[i].from, w[i].len) != 0)
                        fail_msg("%s: record %zu is %c of %zu bytes, want %c of %zu", how, i,
                                 got->recs[i].tag, got->recs[i].len, w[i].tag, w[i].len);
        }
}

/* Every single cut, and for short inputs every pair of cuts, gives the same records. */
static void every_cut(const char *input, size_t len, const struct want *w, size_t nw)
{
        struct log l;
        char how[64];
        run(input, len, NULL, 0, &l);
        check(input, &l, w, nw, "one read");
        free(l.data);
        for (size_t i = 0; i <= len; i++) {
                size_t cut[1] = {i};
                run(input, len, cut, 1, &l);
                snprintf(how, sizeof(how), "cut at %zu", i);
                check(input, &l, w, nw, how);
                free(l.data);
        }
        /* Two cuts: everywhere for short inputs, around the limit for long ones. */
        size_t lo = len < 64 ? 0 : RM_CRI_LINE_MAX - 3, hi = len < 64 ? len : RM_CRI_LINE_MAX + 3;
        for (size_t i = lo; i <= hi && i <= len; i++)
                for (size_t j = i; j <= hi && j <= len; j++) {
                        size_t cut[2] = {i, j};
                        run(input, len, cut, 2, &l);
                        snprintf(how, sizeof(how), "cuts at %zu and %zu", i, j);
                        check(input, &l, w, nw, how);
                        free(l.data);
                }
}

/* n bytes of a pattern (no newline), so that a piece shows where it was cut. */
static char *pattern(size_t n, size_t extra)
{
        char *p = malloc(n + extra + 1);
        for (size_t i = 0; i < n; i++)
                p[i] = (char)('a' + i % 26);
        p[n] = '\0';
        return p;
}

static void test_final_chunk_without_newline_is_partial(void **state)
{
        (void)state;
        every_cut("abcd", 4, (struct want[]){{'P', 0, 4}}, 1);
        every_cut("abcd\n", 5, (struct want[]){{'F', 0, 4}}, 1);
        every_cut("a\n\nbc", 5, (struct want[]){{'F', 0, 1}, {'F', 2, 0}, {'P', 3, 2}}, 3);
        every_cut("", 0, NULL, 0);
        every_cut("\n", 1, (struct want[]){{'F', 0, 0}}, 1);
}

static void test_line_of_exactly_the_limit_is_one_full_record(void **state)
{
        (void)state;
        const size_t L = RM_CRI_LINE_MAX;
        char *p = pattern(L, 4);
        memcpy(p + L, "\nz\n", 4);
        every_cut(p, L + 1, (struct want[]){{'F', 0, L}}, 1);
        every_cut(p, L + 3, (struct want[]){{'F', 0, L}, {'F', L + 1, 1}}, 2);
        /* no newline at all: one piece, ended by the flush */
        every_cut(p, L, (struct want[]){{'P', 0, L}}, 1);
        free(p);
}

static void test_longer_lines_are_cut_at_the_limit(void **state)
{
        (void)state;
        const size_t L = RM_CRI_LINE_MAX;
        char *p = pattern(2 * L + 1, 1);
        p[L + 1] = '\n';
        every_cut(p, L + 2, (struct want[]){{'P', 0, L}, {'F', L, 1}}, 2);
        free(p);
        p = pattern(2 * L, 1);
        p[2 * L] = '\n';
        every_cut(p, 2 * L + 1, (struct want[]){{'P', 0, L}, {'F', L, L}}, 2);
        every_cut(p, 2 * L, (struct want[]){{'P', 0, L}, {'P', L, L}}, 2);
        free(p);
}

int rm_test_cri_log(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_final_chunk_without_newline_is_partial),
            cmocka_unit_test(test_line_of_exactly_the_limit_is_one_full_record),
            cmocka_unit_test(test_longer_lines_are_cut_at_the_limit),
        };
        return cmocka_run_group_tests_name("cri_log", tests, NULL, NULL);
}
