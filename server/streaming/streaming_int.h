/* Internals of the streaming server shared between its files (and its unit tests). */
#ifndef REMORA_STREAMING_INT_H
#define REMORA_STREAMING_INT_H
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/types.h>
#include <time.h>
#include "remora/streaming.h"

/* ---- tokens (tokens.c) ---- */

enum rm_stream_kind { RM_STREAM_EXEC, RM_STREAM_ATTACH, RM_STREAM_PORTFORWARD };

/* A validated request waiting for its client. */
struct rm_stream_req {
        enum rm_stream_kind kind;
        char *id;    /* container ID, or pod ID for port forward */
        char **argv; /* exec only, NULL-terminated */
        bool tty, in, out, err;
        int32_t *ports; /* port forward only */
        size_t n_ports;
};
void rm__stream_req_free(struct rm_stream_req *req);

/* Bytes of randomness in a token; encoded as base64url without padding. */
#define RM_TOKEN_BYTES 18
#define RM_TOKEN_LEN   24

struct rm_token_store;
struct rm_token_store *rm__tokens_new(int64_t ttl_seconds);
void rm__tokens_free(struct rm_token_store *ts);
/* Store req (taking ownership) under a fresh token written to tok (RM_TOKEN_LEN + 1 bytes),
 * as of `now` (CLOCK_MONOTONIC seconds). */
int rm__tokens_put(struct rm_token_store *ts, struct rm_stream_req *req, int64_t now,
                   char tok[RM_TOKEN_LEN + 1], struct rm_error **err);
/* Remove and return the request under tok if it has not expired at `now`; NULL otherwise.
 * Expired entries are dropped on the way. */
struct rm_stream_req *rm__tokens_take(struct rm_token_store *ts, const char *tok, int64_t now);
size_t rm__tokens_count(struct rm_token_store *ts);
int64_t rm__now(void);

/* base64 of data; url selects the URL-safe alphabet without padding. Returns the length
 * written to out (which needs 4 * ((len + 2) / 3) + 1 bytes). */
size_t rm__base64(const uint8_t *data, size_t len, bool url, char *out);
/* Decode standard base64 (padding optional); returns the length, or -1 on bad input. */
ssize_t rm__base64_decode(const char *in, size_t len, uint8_t *out);

/* ---- WebSocket framing (wsframe.c) ---- */

enum rm_ws_op {
        RM_WS_CONT = 0x0,
        RM_WS_TEXT = 0x1,
        RM_WS_BINARY = 0x2,
        RM_WS_CLOSE = 0x8,
        RM_WS_PING = 0x9,
        RM_WS_PONG = 0xA,
};

struct rm_ws_frame {
        bool fin;
        uint8_t op;
        uint8_t *payload; /* points into the parsed buffer, unmasked in place */
        size_t len;
};

/* Parse one client frame at the start of buf. Returns the bytes it spans (> 0), 0 when buf
 * holds only part of it, or -1 (with *why set) when it breaks RFC 6455 for a server:
 * unmasked, reserved bits, unknown opcode, fragmented or long control frame, or a payload
 * over max_payload. */
ssize_t rm__ws_parse(uint8_t *buf, size_t len, size_t max_payload, struct rm_ws_frame *f,
                     const char **why);
/* Write the header of an unmasked server frame into hdr (10 bytes at most); returns its
 * length. */
size_t rm__ws_header(uint8_t op, bool fin, size_t len, uint8_t hdr[10]);
/* Sec-WebSocket-Accept for a client key (29 bytes with NUL). */
void rm__ws_accept(const char *key, char out[29]);
#endif

/* ---- sessions (session.c), run by the server (server.c) ---- */

struct MHD_UpgradeResponseHandle;

struct rm_streaming {
        struct MHD_Daemon *mhd;
        const struct rm_stream_backend_ops *ops;
        void *ctx;
        struct rm_token_store *tokens;
        char address[80];
        pthread_mutex_t lock;
        pthread_cond_t idle;
        struct rm_session *sessions;
        bool closing;
};

/* One upgraded connection and what it carries. */
struct rm_session {
        struct rm_streaming *srv;
        struct rm_stream_req *req;
        int sock;
        struct MHD_UpgradeResponseHandle *urh;
        uint8_t *extra; /* bytes the client sent after its request, already read by MHD */
        size_t extra_len;
        int version;    /* channel protocol version: 1 (channel.k8s.io) .. 5 */
        bool base64;    /* text frames with base64 payloads and digit channels */
        int32_t *ports; /* port forward: the ports asked for in the URL query */
        size_t n_ports;
        int cancel[2]; /* closing cancel[1] tells the backend calls to stop */
        struct rm_session *next;
};

/* Serve s until it ends; then unlink it from the server and free it. Thread entry. */
void *rm__session_main(void *s);
