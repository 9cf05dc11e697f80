/* Pieces of the image service shared between its files. */
#ifndef REMORA_IMAGE_INTERNAL_H
#define REMORA_IMAGE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>
#include <openssl/evp.h>

#include "remora/image.h"

/* ---- digests ---- */

/* "sha256:" and 64 hex digits. */
bool rm__digest_ok(const char *d);

struct rm_sha256 {
        EVP_MD_CTX *ctx;
};
void rm__sha256_init(struct rm_sha256 *h);
void rm__sha256_update(struct rm_sha256 *h, const void *data, size_t len);
/* Writes "sha256:<hex>" (72 bytes with the NUL) and frees the context. */
void rm__sha256_final(struct rm_sha256 *h, char out[72]);
/* The digest of a buffer. */
void rm__sha256_of(const void *data, size_t len, char out[72]);

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
 * "https://registry-1.docker.io"). */
struct rm_registry *rm__registry_new(const char *endpoint, const char *repo,
                                     const struct rm_registry_auth *auth);
void rm__registry_free(struct rm_registry *r);

/* GET a manifest by tag or digest. On success *body (NUL-terminated), *media_type and
 * *digest (the body's sha256) are malloc'd. Bodies over max bytes are refused. */
int rm__registry_manifest(struct rm_registry *r, const char *reference, size_t max, char **body,
                          size_t *len, char **media_type, char **digest, struct rm_error **err);

/* GET a blob into the file path (created), checking it against digest and size (size
 * < 0: unknown). A mismatch is DATA_LOSS and removes the file. */
int rm__registry_blob(struct rm_registry *r, const char *digest, int64_t size, const char *path,
                      struct rm_error **err);

/* ---- layers ---- */

/* Unpack the layer blob at blob_path (gzip, zstd or plain tar) into the new directory
 * dir, translating whiteouts to overlayfs form and refusing entries that would reach
 * outside dir. *diff_id receives the sha256 of the uncompressed tar stream. */
int rm__layer_unpack(const char *blob_path, const char *dir, char diff_id[72],
                     struct rm_error **err);

/* ---- the service's state ---- */

#include <pthread.h>

/* One image: its record (kept in memory; the meta store holds the same). */
struct rm_img {
        char id[72]; /* sha256:<config digest> */
        struct json_object *doc;
};

struct rm_image_service {
        char *dir; /* <root>/images */
        char *blobs, *layers, *tmp;
        struct rm_store *store;
        struct json_object *insecure; /* array of hosts */
        struct json_object *mirrors;  /* object: host -> array of endpoints */
        pthread_mutex_t lock;         /* the index and in-flight sets */
        pthread_cond_t done;          /* a blob or layer in flight finished */
        struct rm_img **imgs;
        size_t n;
        struct json_object *inflight; /* digests and chain IDs being fetched or unpacked */
        /* Whether a container uses an image (rm_image_service_set_in_use); NULL: whether
         * an overlay mount uses its layers. */
        rm_image_in_use_fn in_use;
        void *in_use_ctx;
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

#endif
