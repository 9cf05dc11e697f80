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

/* ---- connections not yet upgraded (guard.c) ---- */

struct MHD_Connection;
struct rm_conn_guard;
/* Drop a connection that has not upgraded timeout_ms after its accept, and the oldest such
 * connection when more than max_pending wait. Runs a thread of its own. */
struct rm_conn_guard *rm__guard_new(int64_t timeout_ms, int64_t max_pending);
/* After MHD_stop_daemon. */
void rm__guard_free(struct rm_conn_guard *g);
/* MHD_OPTION_NOTIFY_CONNECTION callback (cls: the guard); the code is an
 * enum MHD_ConnectionNotificationCode. */
void rm__guard_notify(void *cls, struct MHD_Connection *c, void **socket_context, int code);
/* c became a session: it is no longer the guard's. */
void rm__guard_upgraded(struct rm_conn_guard *g, struct MHD_Connection *c);

/* ---- sessions (session.c), run by the server (server.c) ---- */

struct MHD_UpgradeResponseHandle;

struct rm_streaming {
        struct MHD_Daemon *mhd;
        const struct rm_stream_backend_ops *ops;
        void *ctx;
        struct rm_token_store *tokens;
        struct rm_conn_guard *guard;
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
        bool spdy;      /* SPDY/3.1 rather than WebSocket */
        int version;    /* channel protocol version: 1 (channel.k8s.io) .. 5 */
        bool base64;    /* text frames with base64 payloads and digit channels */
        int32_t *ports; /* port forward: the ports asked for in the URL query */
        size_t n_ports;
        int cancel[2]; /* closing cancel[1] tells the backend calls to stop */
        struct rm_session *next;
};

/* Serve s until it ends; then unlink it from the server and free it. Thread entry. */
void *rm__session_main(void *s);

/* ---- SPDY/3 framing (spdy.c) ---- */

/* Big-endian 32-bit fields, as SPDY frames carry them. */
static inline uint32_t rm__be32(const uint8_t *p)
{
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void rm__put32(uint8_t *p, uint32_t v)
{
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

#include <zlib.h>

enum rm_spdy_type {
        RM_SPDY_SYN_STREAM = 1,
        RM_SPDY_SYN_REPLY = 2,
        RM_SPDY_RST_STREAM = 3,
        RM_SPDY_SETTINGS = 4,
        RM_SPDY_PING = 6,
        RM_SPDY_GOAWAY = 7,
        RM_SPDY_HEADERS = 8,
        RM_SPDY_WINDOW_UPDATE = 9,
};
#define RM_SPDY_FLAG_FIN 0x01

struct rm_spdy_frame {
        bool control;
        uint16_t type;      /* control frames */
        uint32_t stream_id; /* data frames */
        uint8_t flags;
        const uint8_t *payload;
        size_t len;
};

/* Parse one frame at the start of buf: bytes it spans, 0 when incomplete, -1 when its
 * length is over max or a control frame is not version 3. */
ssize_t rm__spdy_parse(const uint8_t *buf, size_t len, size_t max, struct rm_spdy_frame *f);
/* 8-byte frame headers. */
void rm__spdy_control_header(uint16_t type, uint8_t flags, size_t len, uint8_t out[8]);
void rm__spdy_data_header(uint32_t stream_id, uint8_t flags, size_t len, uint8_t out[8]);

/* One connection's header compression state: a zlib stream each way, primed with the
 * SPDY/3 dictionary. */
struct rm_spdy_z {
        z_stream def, inf;
        bool def_ok, inf_ok;
};
int rm__spdy_z_init(struct rm_spdy_z *z);
void rm__spdy_z_free(struct rm_spdy_z *z);

struct rm_spdy_header {
        char *name, *value; /* value: several are NUL-separated in SPDY, kept as is */
        size_t value_len;
};
struct rm_spdy_headers {
        struct rm_spdy_header *h;
        size_t n;
};
/* Compress a header block of n name/value pairs (kv[2i], kv[2i+1]) into *out (malloc'd). */
int rm__spdy_headers_encode(struct rm_spdy_z *z, const char *const *kv, size_t n, uint8_t **out,
                            size_t *out_len);
/* Decompress and parse a header block; -1 on corrupt input or one past 64 KiB. */
int rm__spdy_headers_decode(struct rm_spdy_z *z, const uint8_t *in, size_t len,
                            struct rm_spdy_headers *h);
/* The value of name (case-insensitive), or NULL. */
const char *rm__spdy_header(const struct rm_spdy_headers *h, const char *name);
void rm__spdy_headers_free(struct rm_spdy_headers *h);

/* ---- relaying (relay.c), shared by the WebSocket and SPDY sessions ---- */

#include <stdatomic.h>

enum { CH_STDIN = 0, CH_STDOUT = 1, CH_STDERR = 2, CH_ERROR = 3, CH_RESIZE = 4, CH_CLOSE = 255 };
/* What a transport's next() produced. */
enum { RD_NONE, RD_MESSAGE, RD_CLOSED, RD_ERROR };
#define RM_READ_CHUNK (32u << 10)

/* One backend call in a thread of its own. */
struct rm_worker {
        struct rm_session *s;
        pthread_t thread;
        bool started, joined;
        int done_fd; /* written (one byte) when the call returns */
        struct rm_stream_io io;
        int32_t port;
        int pf_fd;
        int rc;
        int exit_code;
        struct rm_error *err;
        atomic_bool returned; /* set before done_fd is written */
};
int rm__worker_start(struct rm_worker *w);
void rm__worker_join(struct rm_worker *w);

/* A channel message from the client: channel and payload (stdin EOF is CH_CLOSE with
 * payload {CH_STDIN}). */
struct rm_chan_msg {
        uint8_t ch;
        const uint8_t *data;
        size_t len;
};

/* How the exec relay talks to its client. */
struct rm_transport {
        /* Read what the socket has into the transport's buffer: RD_NONE or RD_CLOSED. */
        int (*fill)(struct rm_session *s, void *t);
        /* The next buffered message: RD_NONE (need more), RD_MESSAGE, RD_CLOSED, RD_ERROR. */
        int (*next)(struct rm_session *s, void *t, struct rm_chan_msg *m);
        int (*send)(struct rm_session *s, void *t, uint8_t ch, const void *data, size_t len);
        /* The call is over: report it (w) and end the conversation politely. */
        void (*finish)(struct rm_session *s, void *t, struct rm_worker *w);
        /* May the call start (have all the streams it needs arrived)? */
        bool (*ready)(struct rm_session *s, void *t);
};

/* Run an exec or attach session over a transport until it ends either way. */
void rm__relay_exec(struct rm_session *s, const struct rm_transport *tp, void *t);
/* The metav1.Status JSON for a finished call (v4+ error channel). malloc'd. */
char *rm__status_json(const struct rm_worker *w);
/* Text for the error channel before v4: NULL on success. malloc'd. */
char *rm__status_text(const struct rm_worker *w);
void rm__close_fd(int *fd);
int rm__send_all(int sock, const void *buf, size_t len);
void rm__cancel_backend(struct rm_session *s);

/* Protocol handlers. */
void rm__ws_exec(struct rm_session *s);
void rm__ws_portforward(struct rm_session *s);
void rm__spdy_exec(struct rm_session *s);
void rm__spdy_portforward(struct rm_session *s);
/* End a session's connection gracefully (half-close, drain briefly). */
void rm__linger(struct rm_session *s);
