/* SPDY/3 framing and header blocks, as spoken by Kubernetes clients (moby/spdystream). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "remora/xalloc.h"
#include "streaming_int.h"

static const uint8_t dictionary[] = {
#include "spdy_dict.inc"
};

#define MAX_HEADER_BLOCK (64u << 10)

ssize_t rm__spdy_parse(const uint8_t *buf, size_t len, size_t max, struct rm_spdy_frame *f)
{
        if (len < 8)
                return 0;
        size_t plen = ((size_t)buf[5] << 16) | ((size_t)buf[6] << 8) | buf[7];
        if (plen > max)
                return -1;
        f->control = buf[0] & 0x80;
        f->flags = buf[4];
        if (f->control) {
                uint16_t version = (uint16_t)(((buf[0] & 0x7F) << 8) | buf[1]);
                if (version != 3)
                        return -1;
                f->type = (uint16_t)((buf[2] << 8) | buf[3]);
                f->stream_id = 0;
        } else {
                f->type = 0;
                f->stream_id = rm__be32(buf) & 0x7FFFFFFF;
        }
        if (len < 8 + plen)
                return 0;
        f->payload = buf + 8;
        f->len = plen;
        return (ssize_t)(8 + plen);
}

void rm__spdy_control_header(uint16_t type, uint8_t flags, size_t len, uint8_t out[8])
{
        out[0] = 0x80;
        out[1] = 3;
        out[2] = (uint8_t)(type >> 8);
        out[3] = (uint8_t)type;
        rm__put32(out + 4, (uint32_t)len);
        out[4] = flags;
}

void rm__spdy_data_header(uint32_t stream_id, uint8_t flags, size_t len, uint8_t out[8])
{
        rm__put32(out, stream_id & 0x7FFFFFFF);
        rm__put32(out + 4, (uint32_t)len);
        out[4] = flags;
}

int rm__spdy_z_init(struct rm_spdy_z *z)
{
        memset(z, 0, sizeof(*z));
        if (deflateInit(&z->def, Z_DEFAULT_COMPRESSION) != Z_OK)
                return -1;
        z->def_ok = true;
        if (deflateSetDictionary(&z->def, dictionary, sizeof(dictionary)) != Z_OK)
                return -1;
        if (inflateInit(&z->inf) != Z_OK)
                return -1;
        z->inf_ok = true;
        return 0;
}

void rm__spdy_z_free(struct rm_spdy_z *z)
{
        if (z->def_ok)
                deflateEnd(&z->def);
        if (z->inf_ok)
                inflateEnd(&z->inf);
        z->def_ok = z->inf_ok = false;
}

int rm__spdy_headers_encode(struct rm_spdy_z *z, const char *const *kv, size_t n, uint8_t **out,
                            size_t *out_len)
{
        size_t raw_len = 4;
        for (size_t i = 0; i < 2 * n; i++)
                raw_len += 4 + strlen(kv[i]);
        uint8_t *raw = xmalloc(raw_len);
        size_t o = 0;
        rm__put32(raw, (uint32_t)n);
        o = 4;
        for (size_t i = 0; i < 2 * n; i++) {
                size_t l = strlen(kv[i]);
                rm__put32(raw + o, (uint32_t)l);
                memcpy(raw + o + 4, kv[i], l);
                o += 4 + l;
        }
        size_t cap = deflateBound(&z->def, raw_len) + 64;
        uint8_t *buf = xmalloc(cap);
        z->def.next_in = raw;
        z->def.avail_in = (uInt)raw_len;
        z->def.next_out = buf;
        z->def.avail_out = (uInt)cap;
        int rc = deflate(&z->def, Z_SYNC_FLUSH);
        free(raw);
        if (rc != Z_OK || z->def.avail_in != 0) {
                free(buf);
                return -1;
        }
        *out = buf;
        *out_len = cap - z->def.avail_out;
        return 0;
}

int rm__spdy_headers_decode(struct rm_spdy_z *z, const uint8_t *in, size_t len,
                            struct rm_spdy_headers *h)
{
        h->h = NULL;
        h->n = 0;
        uint8_t *raw = xmalloc(MAX_HEADER_BLOCK);
        z->inf.next_in = (uint8_t *)in;
        z->inf.avail_in = (uInt)len;
        z->inf.next_out = raw;
        z->inf.avail_out = MAX_HEADER_BLOCK;
        while (z->inf.avail_in > 0) {
                int rc = inflate(&z->inf, Z_SYNC_FLUSH);
                if (rc == Z_NEED_DICT) {
                        if (inflateSetDictionary(&z->inf, dictionary, sizeof(dictionary)) != Z_OK)
                                goto bad;
                        continue;
                }
                if (rc != Z_OK || z->inf.avail_out == 0)
                        goto bad;
        }
        size_t raw_len = MAX_HEADER_BLOCK - z->inf.avail_out;
        if (raw_len < 4)
                goto bad;
        uint32_t n = rm__be32(raw);
        if (n > raw_len / 8)
                goto bad;
        h->h = calloc(n ? n : 1, sizeof(*h->h));
        size_t o = 4;
        for (uint32_t i = 0; i < n; i++) {
                char *parts[2];
                size_t plens[2];
                for (int k = 0; k < 2; k++) {
                        uint32_t l = raw_len - o >= 4 ? rm__be32(raw + o) : UINT32_MAX;
                        o += 4;
                        if (l == UINT32_MAX || o > raw_len || l > raw_len - o) {
                                if (k == 1)
                                        free(parts[0]);
                                goto bad;
                        }
                        parts[k] = xmalloc(l + 1);
                        memcpy(parts[k], raw + o, l);
                        parts[k][l] = '\0';
                        plens[k] = l;
                        o += l;
                }
                h->h[i] = (struct rm_spdy_header){parts[0], parts[1], plens[1]};
                h->n++;
        }
        free(raw);
        return 0;
bad:
        free(raw);
        rm__spdy_headers_free(h);
        return -1;
}

const char *rm__spdy_header(const struct rm_spdy_headers *h, const char *name)
{
        for (size_t i = 0; i < h->n; i++)
                if (strcasecmp(h->h[i].name, name) == 0)
                        return h->h[i].value;
        return NULL;
}

void rm__spdy_headers_free(struct rm_spdy_headers *h)
{
        for (size_t i = 0; i < h->n; i++) {
                free(h->h[i].name);
                free(h->h[i].value);
        }
        free(h->h);
        h->h = NULL;
        h->n = 0;
}
