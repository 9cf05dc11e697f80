/* Single-use, expiring tokens that stand for validated streaming requests. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include "remora/xalloc.h"
#include "streaming_int.h"

struct token_entry {
        char tok[RM_TOKEN_LEN + 1];
        int64_t expires;
        struct rm_stream_req *req;
        struct token_entry *next;
};

struct rm_token_store {
        pthread_mutex_t lock;
        int64_t ttl;
        struct token_entry *head;
};

void rm__stream_req_free(struct rm_stream_req *req)
{
        if (req == NULL)
                return;
        free(req->id);
        if (req->argv)
                for (char **a = req->argv; *a; a++)
                        free(*a);
        free(req->argv);
        free(req->ports);
        free(req);
}

int64_t rm__now(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec;
}

size_t rm__base64(const uint8_t *data, size_t len, bool url, char *out)
{
        const char *abc = url ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                              : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        size_t o = 0;
        for (size_t i = 0; i < len; i += 3) {
                uint32_t v = (uint32_t)data[i] << 16;
                size_t n = len - i;
                if (n > 1)
                        v |= (uint32_t)data[i + 1] << 8;
                if (n > 2)
                        v |= data[i + 2];
                out[o++] = abc[(v >> 18) & 63];
                out[o++] = abc[(v >> 12) & 63];
                if (n > 1)
                        out[o++] = abc[(v >> 6) & 63];
                else if (!url)
                        out[o++] = '=';
                if (n > 2)
                        out[o++] = abc[v & 63];
                else if (!url)
                        out[o++] = '=';
        }
        out[o] = '\0';
        return o;
}

static int b64val(char c)
{
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

ssize_t rm__base64_decode(const char *in, size_t len, uint8_t *out)
{
        while (len > 0 && in[len - 1] == '=')
                len--;
        if (len % 4 == 1)
                return -1;
        size_t o = 0;
        uint32_t acc = 0;
        int bits = 0;
        for (size_t i = 0; i < len; i++) {
                int v = b64val(in[i]);
                if (v < 0)
                        return -1;
                acc = (acc << 6) | (uint32_t)v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[o++] = (uint8_t)(acc >> bits);
                }
        }
        return (ssize_t)o;
}

struct rm_token_store *rm__tokens_new(int64_t ttl_seconds)
{
        struct rm_token_store *ts = xmalloc(sizeof(*ts));
        pthread_mutex_init(&ts->lock, NULL);
        ts->ttl = ttl_seconds;
        ts->head = NULL;
        return ts;
}

void rm__tokens_free(struct rm_token_store *ts)
{
        if (ts == NULL)
                return;
        for (struct token_entry *e = ts->head, *n; e; e = n) {
                n = e->next;
                rm__stream_req_free(e->req);
                free(e);
        }
        pthread_mutex_destroy(&ts->lock);
        free(ts);
}

/* Drop entries expired at now; the caller holds the lock. */
static void purge(struct rm_token_store *ts, int64_t now)
{
        for (struct token_entry **p = &ts->head; *p;) {
                struct token_entry *e = *p;
                if (e->expires <= now) {
                        *p = e->next;
                        rm__stream_req_free(e->req);
                        free(e);
                } else {
                        p = &e->next;
                }
        }
}

int rm__tokens_put(struct rm_token_store *ts, struct rm_stream_req *req, int64_t now,
                   char tok[RM_TOKEN_LEN + 1], struct rm_error **err)
{
        uint8_t raw[RM_TOKEN_BYTES];
        size_t got = 0;
        while (got < sizeof(raw)) {
                ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        rm__stream_req_free(req);
                        return rm_error_sys(err, "getrandom for a streaming token");
                }
                got += (size_t)n;
        }
        struct token_entry *e = xmalloc(sizeof(*e));
        rm__base64(raw, sizeof(raw), true, e->tok);
        e->expires = now + ts->ttl;
        e->req = req;
        memcpy(tok, e->tok, sizeof(e->tok));
        pthread_mutex_lock(&ts->lock);
        purge(ts, now);
        e->next = ts->head;
        ts->head = e;
        pthread_mutex_unlock(&ts->lock);
        return 0;
}

struct rm_stream_req *rm__tokens_take(struct rm_token_store *ts, const char *tok, int64_t now)
{
        struct rm_stream_req *req = NULL;
        pthread_mutex_lock(&ts->lock);
        purge(ts, now);
        for (struct token_entry **p = &ts->head; *p; p = &(*p)->next) {
                if (strcmp((*p)->tok, tok) == 0) {
                        struct token_entry *e = *p;
                        *p = e->next;
                        req = e->req;
                        free(e);
                        break;
                }
        }
        pthread_mutex_unlock(&ts->lock);
        return req;
}

size_t rm__tokens_count(struct rm_token_store *ts)
{
        size_t n = 0;
        pthread_mutex_lock(&ts->lock);
        for (struct token_entry *e = ts->head; e; e = e->next)
                n++;
        pthread_mutex_unlock(&ts->lock);
        return n;
}
