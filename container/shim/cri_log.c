#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "cri_log.h"

void rm_cri_timestamp(char *buf, size_t len)
{
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(buf + n, len - n, ".%09ldZ", ts.tv_nsec);
}

static void emit(int fd, const struct rm_cri_stream *s, const char *text, size_t n, char tag)
{
        if (fd < 0)
                return;
        char head[80];
        rm_cri_timestamp(head, sizeof(head));
        size_t hl = strlen(head);
        hl += (size_t)snprintf(head + hl, sizeof(head) - hl, " %s %c ", s->name, tag);
        struct iovec iov[3] = {{head, hl}, {(void *)text, n}, {"\n", 1}};
        size_t total = hl + n + 1, done = 0;
        /* One writev per record so a reader never sees half of one; a short write (disk
         * full) is finished rather than left torn. */
        while (done < total) {
                ssize_t w = writev(fd, iov, 3);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return; /* the log is lost, the container keeps running */
                }
                done += (size_t)w;
                size_t skip = (size_t)w;
                for (int i = 0; i < 3; i++) {
                        size_t take = skip < iov[i].iov_len ? skip : iov[i].iov_len;
                        iov[i].iov_base = (char *)iov[i].iov_base + take;
                        iov[i].iov_len -= take;
                        skip -= take;
                }
        }
}

/* A record ends where the container wrote a newline. A line longer than RM_CRI_LINE_MAX
 * is cut into P records of exactly RM_CRI_LINE_MAX bytes, but only once a byte past the
 * limit has arrived that is not the newline: a line of exactly the limit is one F record
 * however the reads were cut (as containerd does). */
void rm_cri_feed(int fd, struct rm_cri_stream *s, const char *data, size_t n)
{
        while (n > 0) {
                const char *nl = memchr(data, '\n', n);
                size_t seg = nl ? (size_t)(nl - data) : n;
                if (seg > 0 && s->len == RM_CRI_LINE_MAX) {
                        /* the line goes on past the limit: what is held is a piece */
                        emit(fd, s, s->buf, RM_CRI_LINE_MAX, 'P');
                        s->len = 0;
                }
                size_t room = RM_CRI_LINE_MAX - s->len;
                if (seg > room) {
                        if (s->len == 0) {
                                /* more than the limit follows: a piece straight from data */
                                emit(fd, s, data, RM_CRI_LINE_MAX, 'P');
                        } else {
                                memcpy(s->buf + s->len, data, room);
                                s->len = RM_CRI_LINE_MAX;
                        }
                        data += room;
                        n -= room;
                        continue;
                }
                if (!nl) {
                        memcpy(s->buf + s->len, data, seg);
                        s->len += seg;
                        return;
                }
                if (s->len == 0) {
                        emit(fd, s, data, seg, 'F');
                } else {
                        memcpy(s->buf + s->len, data, seg);
                        emit(fd, s, s->buf, s->len + seg, 'F');
                        s->len = 0;
                }
                data += seg + 1;
                n -= seg + 1;
        }
}

/* What is left has no newline (the container never wrote one): a P record, so a reader
 * (kubelet appends a newline to F records) shows no line end the program did not write. */
void rm_cri_flush(int fd, struct rm_cri_stream *s)
{
        if (s->len > 0)
                emit(fd, s, s->buf, s->len, 'P');
        s->len = 0;
}
