/* The attach socket of remora-shim: clients (the daemon's attach sessions) receive the
 * container's output as it is produced and send its input, in frames of
 *   <type: 1 byte> <length: 4 bytes, big-endian> <payload>
 * From the shim: RM_ATTACH_STDOUT, RM_ATTACH_STDERR. To the shim: RM_ATTACH_STDIN (data
 * for the container's stdin), RM_ATTACH_RESIZE (width and height, 2 bytes each,
 * big-endian; tty only), RM_ATTACH_CLOSE_STDIN (end of input). A client too slow to take
 * output is dropped rather than let it hold the container up. Shared with the daemon. */
#ifndef REMORA_SHIM_ATTACH_H
#define REMORA_SHIM_ATTACH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum rm_attach_frame {
        RM_ATTACH_STDIN = 0,
        RM_ATTACH_STDOUT = 1,
        RM_ATTACH_STDERR = 2,
        RM_ATTACH_RESIZE = 3,
        RM_ATTACH_CLOSE_STDIN = 4,
};

#define RM_ATTACH_HEADER      5
#define RM_ATTACH_MAX_PAYLOAD 65536
#define RM_ATTACH_SOCKET      "attach.sock"

static inline void rm_attach_header(unsigned char *h, int type, uint32_t len)
{
        h[0] = (unsigned char)type;
        h[1] = (unsigned char)(len >> 24);
        h[2] = (unsigned char)(len >> 16);
        h[3] = (unsigned char)(len >> 8);
        h[4] = (unsigned char)len;
}

static inline uint32_t rm_attach_length(const unsigned char *h)
{
        return (uint32_t)h[1] << 24 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 8 | h[4];
}

/* Whether buf (avail bytes read so far) starts with a whole frame: 1 with its payload
 * length in *len, 0 when more bytes are needed, -1 when it cannot be a frame of ours. */
static inline int rm_attach_complete(const unsigned char *buf, size_t avail, uint32_t *len)
{
        if (avail < RM_ATTACH_HEADER)
                return 0;
        *len = rm_attach_length(buf);
        if (*len > RM_ATTACH_MAX_PAYLOAD)
                return -1;
        return avail - RM_ATTACH_HEADER >= *len;
}

#endif
