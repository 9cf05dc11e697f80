/* The image service: registry client, content store, unpacked layers, image records, and
 * root filesystems for containers. */
#ifndef REMORA_IMAGE_H
#define REMORA_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

#include "api.pb-c.h"
#include "remora/arena.h"
#include "remora/cancel.h"
#include "remora/error.h"
#include "remora/store.h"

/* ---- references ---- */

/* A normalized image reference: docker.io/library/busybox:latest. */
struct rm_image_ref {
        char *domain; /* "docker.io", "127.0.0.1:5000" */
        char *path;   /* "library/busybox" */
        char *tag;    /* NULL when only a digest was given */
        char *digest; /* "sha256:...", NULL when none */
};

/* Parse and normalize s the way Kubernetes does. INVALID_ARGUMENT names the reference. */
int rm_image_ref_parse(const char *s, struct rm_image_ref *out, struct rm_error **err);
void rm_image_ref_release(struct rm_image_ref *r);
/* "domain/path" and the full normalized string (malloc'd). */
char *rm_image_ref_repo(const struct rm_image_ref *r);
char *rm_image_ref_string(const struct rm_image_ref *r);

/* ---- the service ---- */

struct rm_image_service;

/* Open the image store under <root>/images (created 0700 if missing). section is the
 * config file's "image" object (NULL when absent): insecure_registries (hosts spoken to
 * over plain HTTP; loopback hosts always are) and mirrors ({"docker.io":
 * ["http://127.0.0.1:5000"]}). Unknown keys are INVALID_ARGUMENT. */
struct rm_image_service *rm_image_service_open(const char *root, struct json_object *section,
                                               struct rm_store *store, struct rm_error **err);
void rm_image_service_close(struct rm_image_service *svc);

/* For /metrics: bytes of blobs (layers and configs) fetched from registries, and layers
 * unpacked, since start. */
void rm_image_service_counters(struct rm_image_service *svc, uint64_t *blob_bytes,
                               uint64_t *layers_unpacked);

/* The directory holding blobs, layers and image records. */
const char *rm_image_service_dir(const struct rm_image_service *svc);

/* PullImage: fetch ref (mirrors first, then the registry itself), verify every blob and
 * layer, unpack the layers and record the image. *image_id is "sha256:<config digest>".
 * auth may be NULL. An interrupted or failed pull leaves no image record. cancel (may be
 * NULL) is the caller's token. */
int rm_image_pull(struct rm_image_service *svc, const char *ref,
                  const Runtime__V1__AuthConfig *auth, const struct rm_cancel *cancel,
                  char **image_id, struct rm_error **err);

Runtime__V1__ListImagesResponse *rm_image_list(struct rm_image_service *svc,
                                               const Runtime__V1__ImageFilter *filter,
                                               struct rm_arena *a);
/* ImageStatus: an unknown image is not an error; the response then has no image. */
Runtime__V1__ImageStatusResponse *rm_image_status(struct rm_image_service *svc, const char *ref,
                                                  bool verbose, struct rm_arena *a,
                                                  struct rm_error **err);
/* RemoveImage by ID, ID prefix, tag or digest; an unknown image is not an error. The
 * image's names and record go at once, as in containerd; when a container uses it, its
 * record stays hidden (never listed or found by a reference, but named by the store so
 * its layers and config survive) until rm_image_prune finds no container using it. A pull
 * of the same image brings the record back. */
int rm_image_remove(struct rm_image_service *svc, const char *ref, struct rm_error **err);

/* Whether a container uses the image with this ID ("sha256:..."). Called with the image
 * service's lock held: it must not call back into the image service. */
typedef bool (*rm_image_in_use_fn)(void *ctx, const char *image_id);
/* Tell the service how to ask (the server asks the container manager). Without it an
 * image counts as used while an overlay mount uses its layers. */
void rm_image_service_set_in_use(struct rm_image_service *svc, rm_image_in_use_fn fn, void *ctx);
/* Drop every removed image no container uses any more, with the layers no other image
 * record names. The server calls it after each container removal and once at start. */
void rm_image_prune(struct rm_image_service *svc);
Runtime__V1__ImageFsInfoResponse *rm_image_fs_info(struct rm_image_service *svc, struct rm_arena *a,
                                                   struct rm_error **err);

/* ---- for containers ---- */

/* What a container takes from an image; strings and arrays live in the arena. */
struct rm_image_info {
        const char *id;  /* sha256:... */
        const char *ref; /* a repo digest or tag the image is known by */
        char **entrypoint;
        size_t n_entrypoint;
        char **cmd;
        size_t n_cmd;
        char **env;
        size_t n_env;
        const char *working_dir;
        const char *user;
        const char *stop_signal;
        char **volumes;
        size_t n_volumes;
};

/* Find a pulled image by reference, ID or ID prefix: NOT_FOUND when not pulled. */
int rm_image_lookup(struct rm_image_service *svc, const char *ref, struct rm_arena *a,
                    struct rm_image_info *out, struct rm_error **err);

/* For a container in its own user namespace: the layers are presented through idmapped
 * mounts of that namespace, and the upper and work directories belong to its root. */
struct rm_image_idmap {
        int userns_fd;
        uint32_t uid, gid; /* the host IDs of the namespace's root */
};

/* Mount image id's layers at target as overlayfs, with upper and work directories under
 * dir (made if missing), and release that mount. id may name an image removed since the
 * container looked it up (its record is kept while the container uses it). With idmap,
 * each layer is first attached through an idmapped mount under <dir>/idmap (these stay
 * while the rootfs is mounted, so the layers show as in use) and unmount removes those
 * too. */
int rm_image_mount(struct rm_image_service *svc, const char *id, const char *dir,
                   const char *target, const struct rm_image_idmap *idmap, struct rm_error **err);
int rm_image_unmount(struct rm_image_service *svc, const char *dir, const char *target,
                     struct rm_error **err);

/* The unpacked layer directories of pulled image id, top layer first (one empty
 * directory for an image without layers), in the arena; NOT_FOUND when not pulled. They
 * are read-only to every caller: an image volume mounts them as an overlay without an
 * upper directory. */
int rm_image_layer_dirs(struct rm_image_service *svc, const char *id, struct rm_arena *a,
                        char ***dirs, size_t *n, struct rm_error **err);

#endif
