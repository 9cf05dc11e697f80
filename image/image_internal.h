/* Pieces of the image service shared between its files. */
#ifndef REMORA_IMAGE_INTERNAL_H
#define REMORA_IMAGE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>
#include <openssl/evp.h>

#include "remora/cancel.h"
#include "remora/image.h"

/* ---- digests ---- */

/* "sha256:" and 64 lower-case hex digits (the only algorithm accepted). */
bool rm__digest_ok(const char *d);
/* 0 when d is a valid digest, else INVALID_ARGUMENT naming field ("manifest.layers[2].digest");
 * NULL is "missing". */
int rm__digest_check(const char *d, const char *field, struct rm_error **err);

struct rm_sha256 {
        EVP_MD_CTX *ctx;
};
void rm__sha256_init(struct rm_sha256 *h);
void rm__sha256_update(struct rm_sha256 *h, const void *data, size_t len);
/* Writes "sha256:<hex>" (72 bytes with the NUL) and frees the context. */
void rm__sha256_final(struct rm_sha256 *h, char out[72]);
/* The digest of a buffer. */
void rm__sha256_of(const void *data, size_t len, char out[72]);

/* ---- documents from the registry (manifest.c) ---- */

#define RM__MAX_LAYERS        128 /* overlayfs stacks about 500; Docker stops at 127 */
#define RM__MAX_INDEX_ENTRIES 1024

/* A content descriptor, every field present and checked. */
struct rm__desc {
        char *media_type;
        char *digest;
        int64_t size;
};
void rm__desc_release(struct rm__desc *d);

/* From an index (manifest list), the entry for linux/arch. Every entry must be a full
 * descriptor; NOT_FOUND when none matches. */
int rm__index_pick(const char *body, size_t len, const char *arch, struct rm__desc *out,
                   struct rm_error **err);

struct rm__manifest {
        struct rm__desc config;
        struct rm__desc *layers;
        size_t n_layers;
};
/* An image manifest: config and layer descriptors checked (layer media types remora
 * unpacks, at most RM__MAX_LAYERS, the config's declared size at most max_config). */
int rm__manifest_parse(const char *body, size_t len, int64_t max_config, struct rm__manifest *out,
                       struct rm_error **err);
void rm__manifest_release(struct rm__manifest *m);

/* An image config: *config the document, *diff_ids a NULL-terminated list of exactly
 * n_layers valid digests (free with rm__strv_free). */
int rm__config_parse(const char *body, size_t len, size_t n_layers, struct json_object **config,
                     char ***diff_ids, struct rm_error **err);
void rm__strv_free(char **v);

/* chain[0] = diff[0], chain[i] = sha256(chain[i-1] + " " + diff[i]). */
void rm__chain_ids(char *const *diff_ids, size_t n, char (*out)[72]);

/* ---- hosts and plain HTTP (endpoint.c) ---- */

/* True when hostport ("host", "host:port", "[v6]:port") is localhost, an address in
 * 127.0.0.0/8 or [::1]; parsed, so "localhost.example" or "127.0.0.1.example" are not. */
bool rm__host_is_loopback(const char *hostport);
/* Loopback, or listed in insecure (an array of "host[:port]"). */
bool rm__host_plain_ok(struct json_object *insecure, const char *hostport);
/* Scheme and lower-cased "host[:port]" of an http(s) URL (*hostport malloc'd); -1 when it
 * is not one. */
int rm__url_split(const char *url, bool *https, char **hostport);

/* ---- limits while writing (limits.c) ---- */

#define RM__RESERVE_MAX (1ull << 30)

/* Bytes written on the image store's filesystem are taken from a budget measured with
 * fstatvfs(fd); a write that would leave less than reserve bytes free fails with
 * RESOURCE_EXHAUSTED before it happens. */
struct rm__space {
        int fd;
        uint64_t reserve;
        uint64_t budget;
};
int rm__space_take(struct rm__space *s, uint64_t n, struct rm_error **err);
/* The default reserve: 5 % of the filesystem holding fd, at most 1 GiB. */
uint64_t rm__space_default_reserve(int fd);

/* CANCELLED (or DEADLINE_EXCEEDED when the deadline passed) once c says stop. */
int rm__cancel_check(const struct rm_cancel *c, struct rm_error **err);

/* ---- the registry client ---- */

/* Credentials from the CRI AuthConfig (any may be NULL or empty). */
struct rm_registry_auth {
        const char *username;
        const char *password;
        const char *auth; /* base64 of user:password */
        const char *identity_token;
        const char *registry_token;
};

struct rm_registry;

/* A client for one repository at one endpoint ("http://127.0.0.1:5000" or
 * "https://registry-1.docker.io"). insecure (borrowed, may be NULL) lists the hosts
 * besides loopback that may be spoken to over plain HTTP: credentials are sent over
 * plain HTTP only to those, never to a host a redirect leads to, and a redirect to plain
 * HTTP is followed only to those. cancel (may be NULL) stops a transfer. */
struct rm_registry *rm__registry_new(const char *endpoint, const char *repo,
                                     const struct rm_registry_auth *auth,
                                     struct json_object *insecure, const struct rm_cancel *cancel);
void rm__registry_free(struct rm_registry *r);

/* GET a manifest by tag or digest (checked before the URL is made). On success *body
 * (NUL-terminated), *media_type and *digest (the body's sha256) are malloc'd. Bodies over
 * max bytes are refused. */
int rm__registry_manifest(struct rm_registry *r, const char *reference, size_t max, char **body,
                          size_t *len, char **media_type, char **digest, struct rm_error **err);

/* GET a blob (digest checked before the URL is made) into fd, which must be empty,
 * checking it against digest and size: the transfer is cut off as soon as it passes
 * size, and every byte is taken from space (may be NULL). what names the descriptor in
 * errors ("manifest.layers[2]"). A mismatch is DATA_LOSS. */
int rm__registry_blob(struct rm_registry *r, const char *what, const char *digest, int64_t size,
                      int fd, struct rm__space *space, struct rm_error **err);

/* ---- layers ---- */

/* Unpack the layer blob open at blob_fd (gzip, zstd or plain tar) into the empty
 * directory open at dir_fd, translating whiteouts to overlayfs form and refusing entries
 * that would reach outside it; every byte written is taken from space, cancel is checked
 * between entries and blocks. *diff_id receives the sha256 of the uncompressed stream.
 * name is the layer's name for messages. */
int rm__layer_unpack(int blob_fd, int dir_fd, const char *name, struct rm__space *space,
                     const struct rm_cancel *cancel, char diff_id[72], struct rm_error **err);

/* Remove name below dirfd, recursively, never following a symlink or leaving dirfd's
 * tree (or mount). A missing name is fine. -1 with errno. */
int rm__remove_at(int dirfd, const char *name);

/* ---- the service's state ---- */

#include <pthread.h>
#include <stdatomic.h>

/* One image: its record (kept in memory; the meta store holds the same). */
struct rm_img {
        char id[72]; /* sha256:<config digest> */
        struct json_object *doc;
};

struct rm_image_service {
        char *dir; /* <root>/images */
        char *blobs, *layers, *tmp;
        /* Every file operation in the store is relative to these (O_NOFOLLOW, *at()). */
        int dir_fd, blobs_fd, layers_fd, tmp_fd;
        int64_t max_manifest, max_config; /* bytes */
        int64_t reserve;                  /* free-space reserve, bytes; -1: the default */
        struct rm_store *store;
        struct json_object *insecure; /* array of hosts */
        struct json_object *mirrors;  /* object: host -> array of endpoints */
        pthread_mutex_t lock;         /* the index and in-flight sets */
        pthread_cond_t done;          /* a blob or layer in flight finished */
        struct rm_img **imgs;
        size_t n;
        struct json_object *inflight;         /* digests and chain IDs being fetched or unpacked */
        atomic_uint_fast64_t blob_bytes;      /* for /metrics: bytes of blobs fetched */
        atomic_uint_fast64_t layers_unpacked; /* for /metrics */
        /* Whether a container uses an image (rm_image_service_set_in_use); NULL: whether
         * an overlay mount uses its layers. */
        rm_image_in_use_fn in_use;
        void *in_use_ctx;

        struct json_object *pins; /* key ("blob <digest>", "layer <chain>") -> count */
};

#define IMAGE_KIND "images"

/* Caller holds svc->lock. Find by ID, ID prefix (12+), tag or digest reference; images
 * removed while in use (kept hidden for their containers' layers) are never found. */
struct rm_img *rm__img_find_locked(struct rm_image_service *svc, const char *ref);
/* Record (or merge into) an image and index it; moves the tag from other images. */
int rm__img_commit(struct rm_image_service *svc, struct json_object *doc, const char *tag,
                   const char *repo_digest, struct rm_error **err);

/* Wait until key is not in flight, then claim it: false when it finished meanwhile
 * (exists tells) so nothing needs doing. Release with rm__inflight_done. */
bool rm__inflight_claim(struct rm_image_service *svc, const char *key, bool (*exists)(void *),
                        void *arg);
void rm__inflight_done(struct rm_image_service *svc, const char *key);

/* Pins: a pull pins the blobs and layers it uses ("blob <digest>", "layer <chain>") from
 * before it fetches them until it ends, so that no other pull's clean-up and no
 * RemoveImage removes them meanwhile. */
void rm__pin(struct rm_image_service *svc, const char *key);
/* Drop one pin of each key (an array of strings); a blob or layer no pin holds any more
 * and no image record names (every record in the store is read, whatever it says) is
 * removed: a pull's temporary layer blobs, and all a failed pull brought. */
void rm__unpin(struct rm_image_service *svc, struct json_object *keys);
/* Caller holds svc->lock. */
bool rm__pinned_locked(struct rm_image_service *svc, const char *key);

/* The free-space guard for a write into the store. */
void rm__space_init(struct rm_image_service *svc, struct rm__space *s);

/* At start-up: remove temporary files, and blobs and layers no image record names. */
int rm__store_gc(struct rm_image_service *svc, struct rm_error **err);

#endif
