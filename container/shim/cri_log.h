/* The CRI container log format kubelet reads:
 *   <RFC3339Nano time> <stdout|stderr> <F|P> <text>\n
 * F ends a line, P is a piece of a line that continues in the next record: a line longer
 * than RM_CRI_LINE_MAX is cut into pieces of exactly RM_CRI_LINE_MAX bytes, and output
 * that ends without a newline ends with a P record. Used by remora-shim; no dependency
 * beyond libc so the shim stays small. */
#ifndef REMORA_CRI_LOG_H
#define REMORA_CRI_LOG_H

#include <stddef.h>

#define RM_CRI_LINE_MAX 16384

struct rm_cri_stream {
        const char *name; /* "stdout" or "stderr" */
        size_t len;
        char buf[RM_CRI_LINE_MAX];
};

/* Append output of the stream; every complete line (and every 16 KiB piece of a longer
 * one) is written to fd as one record with one write. The records depend only on the
 * bytes, never on how they were cut into calls. fd < 0 discards. */
void rm_cri_feed(int fd, struct rm_cri_stream *s, const char *data, size_t n);

/* At end of stream: write what is left (a line without its newline) as a P record. */
void rm_cri_flush(int fd, struct rm_cri_stream *s);

/* Format the current time as RFC 3339 with nanoseconds in UTC into buf (>= 40 bytes). */
void rm_cri_timestamp(char *buf, size_t len);

#endif
