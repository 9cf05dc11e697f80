/* RFC 6455 framing for the server side: parse masked client frames, write server headers. */
#include <string.h>
#include <stdio.h>
#include <openssl/evp.h>
#include "streaming_int.h"

ssize_t rm__ws_parse(uint8_t *buf, size_t len, size_t max_payload, struct rm_ws_frame *f,
                     const char **why)
{
        if (len < 2)
                return 0;
        uint8_t b0 = buf[0], b1 = buf[1];
        if (b0 & 0x70) {
                *why = "reserved bits set (no extension was negotiated)";
                return -1;
        }
        uint8_t op = b0 & 0x0F;
        bool control = op & 0x8;
        if (op != RM_WS_CONT && op != RM_WS_TEXT && op != RM_WS_BINARY && op != RM_WS_CLOSE &&
            op != RM_WS_PING && op != RM_WS_PONG) {
                *why = "unknown opcode";
                return -1;
        }
        if (!(b1 & 0x80)) {
                *why = "client frame not masked";
                return -1;
        }
        uint64_t plen = b1 & 0x7F;
        size_t off = 2;
        if (plen == 126) {
                if (len < 4)
                        return 0;
                plen = ((uint64_t)buf[2] << 8) | buf[3];
                off = 4;
        } else if (plen == 127) {
                if (len < 10)
                        return 0;
                plen = 0;
                for (int i = 0; i < 8; i++)
                        plen = (plen << 8) | buf[2 + i];
                off = 10;
                if (plen >> 63) {
                        *why = "payload length with the top bit set";
                        return -1;
                }
        }
        if (control && (!(b0 & 0x80) || plen > 125)) {
                *why = "control frame fragmented or longer than 125 bytes";
                return -1;
        }
        if (plen > max_payload) {
                *why = "frame larger than the server accepts";
                return -1;
        }
        if (len < off + 4 + plen)
                return 0;
        const uint8_t *mask = buf + off;
        uint8_t *p = buf + off + 4;
        for (uint64_t i = 0; i < plen; i++)
                p[i] ^= mask[i & 3];
        f->fin = b0 & 0x80;
        f->op = op;
        f->payload = p;
        f->len = (size_t)plen;
        return (ssize_t)(off + 4 + plen);
}

size_t rm__ws_header(uint8_t op, bool fin, size_t len, uint8_t hdr[10])
{
        hdr[0] = (uint8_t)((fin ? 0x80 : 0) | (op & 0x0F));
        if (len < 126) {
                hdr[1] = (uint8_t)len;
                return 2;
        }
        if (len <= 0xFFFF) {
                hdr[1] = 126;
                hdr[2] = (uint8_t)(len >> 8);
                hdr[3] = (uint8_t)len;
                return 4;
        }
        hdr[1] = 127;
        for (int i = 0; i < 8; i++)
                hdr[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        return 10;
}

void rm__ws_accept(const char *key, char out[29])
{
        static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
        char buf[160];
        /* A real key is 24 characters; a longer one cannot match anything the client
         * computes, so truncating it is harmless. */
        int n = snprintf(buf, sizeof(buf), "%.100s%s", key, guid);
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        EVP_Digest(buf, (size_t)n, md, &mdlen, EVP_sha1(), NULL);
        rm__base64(md, mdlen, false, out);
}
