/* The image store: records and the in-memory index, the CRI views of images, removal
 * with layer garbage collection, filesystem usage, and root filesystems for containers. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "image_internal.h"
#include "remora/cleanup.h"
#include "remora/confsect.h"
#include "remora/fsutil.h"
#include "remora/idmap.h"
#include "remora/log.h"
#include "remora/xalloc.h"

static const char *jstr(struct json_object *o, const char *key)
{
        struct json_object *v = NULL;
        return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static struct json_object *jget(struct json_object *o, const char *key)
{
        struct json_object *v = NULL;
        return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static bool array_has(struct json_object *a, const char *s)
{
        for (size_t i = 0; a && i < json_object_array_length(a); i++) {
                if (strcmp(json_object_get_string(json_object_array_get_idx(a, i)), s) == 0)
                        return true;
        }
        return false;
}

static void array_drop(struct json_object *a, const char *s)
{
        for (size_t i = 0; a && i < json_object_array_length(a);) {
                if (strcmp(json_object_get_string(json_object_array_get_idx(a, i)), s) == 0)
                        json_object_array_del_idx(a, i, 1);
                else
                        i++;
        }
}

/* ---- in-flight fetches ---- */

bool rm__inflight_claim(struct rm_image_service *svc, const char *key, bool (*exists)(void *),
                        void *arg)
{
        pthread_mutex_lock(&svc->lock);
        while (array_has(svc->inflight, key))
                pthread_cond_wait(&svc->done, &svc->lock);
        bool need = !exists(arg);
        if (need)
                json_object_array_add(svc->inflight, json_object_new_string(key));
        pthread_mutex_unlock(&svc->lock);
        return need;
}

void rm__inflight_done(struct rm_image_service *svc, const char *key)
{
        pthread_mutex_lock(&svc->lock);
        array_drop(svc->inflight, key);
        pthread_cond_broadcast(&svc->done);
        pthread_mutex_unlock(&svc->lock);
}

/* ---- the index ---- */

static void img_free(struct rm_img *m)
{
        json_object_put(m->doc);
        free(m);
}

/* Removed by RemoveImage while a container used it: kept for the container's layers only. */
static bool hidden(const struct rm_img *m)
{
        struct json_object *v = jget(m->doc, "removed");
        return v && json_object_get_boolean(v);
}

struct rm_img *rm__img_find_locked(struct rm_image_service *svc, const char *ref)
{
        if (ref == NULL || *ref == '\0')
                return NULL;
        /* An ID, with or without "sha256:", or a prefix of at least 12 hex digits. */
        const char *hex = strncmp(ref, "sha256:", 7) == 0 ? ref + 7 : ref;
        size_t n = strlen(hex);
        if (n >= 12 && n <= 64 && strspn(hex, "0123456789abcdef") == n) {
                struct rm_img *found = NULL;
                int matches = 0;
                for (size_t i = 0; i < svc->n; i++) {
                        if (!hidden(svc->imgs[i]) && strncmp(svc->imgs[i]->id + 7, hex, n) == 0) {
                                found = svc->imgs[i];
                                matches++;
                        }
                }
                if (matches == 1)
                        return found;
        }
        struct rm_image_ref r;
        if (rm_image_ref_parse(ref, &r, NULL) < 0)
                return NULL;
        cleanup_free char *repo = rm_image_ref_repo(&r);
        cleanup_free char *tag = r.tag ? xasprintf("%s:%s", repo, r.tag) : NULL;
        cleanup_free char *dig = r.digest ? xasprintf("%s@%s", repo, r.digest) : NULL;
        rm_image_ref_release(&r);
        for (size_t i = 0; i < svc->n; i++) {
                struct json_object *doc = svc->imgs[i]->doc;
                if (hidden(svc->imgs[i]))
                        continue;
                if (dig && array_has(jget(doc, "repo_digests"), dig))
                        return svc->imgs[i];
                if (!dig && tag && array_has(jget(doc, "repo_tags"), tag))
                        return svc->imgs[i];
        }
        return NULL;
}

static int save_locked(struct rm_image_service *svc, struct rm_img *m, struct rm_error **err)
{
        return rm_store_put(svc->store, IMAGE_KIND, m->id + 7, m->doc, err);
}

int rm__img_commit(struct rm_image_service *svc, struct json_object *doc, const char *tag,
                   const char *repo_digest, struct rm_error **err)
{
        const char *id = jstr(doc, "id");
        pthread_mutex_lock(&svc->lock);
        struct rm_img *m = NULL;
        for (size_t i = 0; i < svc->n && !m; i++) {
                if (strcmp(svc->imgs[i]->id, id) == 0)
                        m = svc->imgs[i];
        }
        bool fresh = m == NULL;
        if (fresh) {
                m = xzalloc(sizeof(*m));
                snprintf(m->id, sizeof(m->id), "%s", id);
                m->doc = doc;
                json_object_object_add(doc, "repo_tags", json_object_new_array());
                json_object_object_add(doc, "repo_digests", json_object_new_array());
        } else {
                json_object_put(doc);
                /* Pulled again after a RemoveImage while its container still runs. */
                json_object_object_del(m->doc, "removed");
        }
        /* A tag names one image: take it from whichever image had it before. */
        for (size_t i = 0; tag && i < svc->n; i++) {
                if (svc->imgs[i] != m && array_has(jget(svc->imgs[i]->doc, "repo_tags"), tag)) {
                        array_drop(jget(svc->imgs[i]->doc, "repo_tags"), tag);
                        cleanup_error struct rm_error *e = NULL;
                        if (save_locked(svc, svc->imgs[i], &e) < 0)
                                rm_log_warn("moving tag %s: %s", tag, e->msg);
                }
        }
        if (tag && !array_has(jget(m->doc, "repo_tags"), tag))
                json_object_array_add(jget(m->doc, "repo_tags"), json_object_new_string(tag));
        if (repo_digest && !array_has(jget(m->doc, "repo_digests"), repo_digest))
                json_object_array_add(jget(m->doc, "repo_digests"),
                                      json_object_new_string(repo_digest));
        int rc = save_locked(svc, m, err);
        if (fresh && rc == 0) {
                svc->imgs = xrealloc(svc->imgs, sizeof(*svc->imgs) * (svc->n + 1));
                svc->imgs[svc->n++] = m;
        } else if (fresh) {
                img_free(m);
        }
        pthread_mutex_unlock(&svc->lock);
        return rc;
}

/* ---- CRI views ---- */

static char **strv_arena(struct rm_arena *a, struct json_object *arr, size_t *n)
{
        *n = arr && json_object_is_type(arr, json_type_array) ? json_object_array_length(arr) : 0;
        char **v = (char **)rm_arena_ptrs(a, *n + 1);
        for (size_t i = 0; i < *n; i++)
                v[i] =
                    rm_arena_strdup(a, json_object_get_string(json_object_array_get_idx(arr, i)));
        return v;
}

static Runtime__V1__Image *image_msg(const struct rm_img *m, struct rm_arena *a)
{
        Runtime__V1__Image *im = rm_arena_alloc(a, sizeof(*im));
        runtime__v1__image__init(im);
        im->id = rm_arena_strdup(a, m->id);
        im->repo_tags = strv_arena(a, jget(m->doc, "repo_tags"), &im->n_repo_tags);
        im->repo_digests = strv_arena(a, jget(m->doc, "repo_digests"), &im->n_repo_digests);
        struct json_object *sz = jget(m->doc, "size");
        im->size = sz ? (uint64_t)json_object_get_int64(sz) : 0;
        const char *user = jstr(jget(m->doc, "config"), "User");
        if (user && *user) {
                size_t n = strcspn(user, ":");
                if (strspn(user, "0123456789") == n) {
                        Runtime__V1__Int64Value *uid = rm_arena_alloc(a, sizeof(*uid));
                        runtime__v1__int64_value__init(uid);
                        uid->value = strtoll(user, NULL, 10);
                        im->uid = uid;
                } else {
                        im->username = rm_arena_printf(a, "%.*s", (int)n, user);
                }
        }
        Runtime__V1__ImageSpec *spec = rm_arena_alloc(a, sizeof(*spec));
        runtime__v1__image_spec__init(spec);
        spec->image = im->id;
        im->spec = spec;
        return im;
}

Runtime__V1__ListImagesResponse *rm_image_list(struct rm_image_service *svc,
                                               const Runtime__V1__ImageFilter *filter,
                                               struct rm_arena *a)
{
        Runtime__V1__ListImagesResponse *r = rm_arena_alloc(a, sizeof(*r));
        runtime__v1__list_images_response__init(r);
        const char *want = filter && filter->image && filter->image->image && *filter->image->image
                               ? filter->image->image
                               : NULL;
        pthread_mutex_lock(&svc->lock);
        r->images = (Runtime__V1__Image **)rm_arena_ptrs(a, svc->n + 1);
        struct rm_img *only = want ? rm__img_find_locked(svc, want) : NULL;
        for (size_t i = 0; i < svc->n; i++) {
                if (hidden(svc->imgs[i]))
                        continue;
                if (want == NULL || svc->imgs[i] == only)
                        r->images[r->n_images++] = image_msg(svc->imgs[i], a);
        }
        pthread_mutex_unlock(&svc->lock);
        return r;
}

Runtime__V1__ImageStatusResponse *rm_image_status(struct rm_image_service *svc, const char *ref,
                                                  bool verbose, struct rm_arena *a,
                                                  struct rm_error **err)
{
        (void)err;
        Runtime__V1__ImageStatusResponse *r = rm_arena_alloc(a, sizeof(*r));
        runtime__v1__image_status_response__init(r);
        pthread_mutex_lock(&svc->lock);
        struct rm_img *m = rm__img_find_locked(svc, ref);
        if (m) {
                r->image = image_msg(m, a);
                if (verbose) {
                        cleanup_json struct json_object *o = json_object_new_object();
                        json_object_object_add(o, "chainIDs",
                                               json_object_get(jget(m->doc, "chain")));
                        json_object_object_add(o, "imageConfig",
                                               json_object_get(jget(m->doc, "config")));
                        Runtime__V1__ImageStatusResponse__InfoEntry *e =
                            rm_arena_alloc(a, sizeof(*e));
                        runtime__v1__image_status_response__info_entry__init(e);
                        e->key = "info";
                        e->value = rm_arena_strdup(
                            a, json_object_to_json_string_ext(
                                   o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                        r->n_info = 1;
                        r->info =
                            (Runtime__V1__ImageStatusResponse__InfoEntry **)rm_arena_ptrs(a, 1);
                        r->info[0] = e;
                }
        }
        pthread_mutex_unlock(&svc->lock);
        return r;
}

/* ---- removal ---- */

/* True when an overlay mount uses the layer directory, or an idmapped mount of it is
 * attached for one (at <container dir>/idmap/<chain ID>, see rm_image_mount). */
static bool layer_mounted(const char *layer_dir)
{
        cleanup_file FILE *f = fopen("/proc/self/mountinfo", "re");
        char *line = NULL;
        size_t cap = 0;
        bool used = false;
        const char *slash = strrchr(layer_dir, '/');
        cleanup_free char *idmapped = xasprintf("/idmap%s ", slash ? slash : "/");
        while (f && !used && getline(&line, &cap, f) > 0)
                used = strstr(line, layer_dir) != NULL || strstr(line, idmapped) != NULL;
        free(line);
        return used;
}

static bool chain_used_by_other(struct rm_image_service *svc, const struct rm_img *except,
                                const char *chain)
{
        for (size_t i = 0; i < svc->n; i++) {
                if (svc->imgs[i] != except && array_has(jget(svc->imgs[i]->doc, "chain"), chain))
                        return true;
        }
        return false;
}

/* Whether a container uses image m. Caller holds svc->lock. */
static bool in_use_locked(struct rm_image_service *svc, const struct rm_img *m)
{
        if (svc->in_use)
                return svc->in_use(svc->in_use_ctx, m->id);
        struct json_object *chain = jget(m->doc, "chain");
        for (size_t i = 0; i < json_object_array_length(chain); i++) {
                cleanup_free char *dir =
                    xasprintf("%s/%s", svc->layers,
                              json_object_get_string(json_object_array_get_idx(chain, i)) + 7);
                if (layer_mounted(dir))
                        return true;
        }
        return false;
}

/* Delete m's record, then the layers no other record (hidden ones included) names, and
 * its config blob; m is freed. Caller holds svc->lock. */
static int drop_locked(struct rm_image_service *svc, struct rm_img *m, struct rm_error **err)
{
        if (rm_store_delete(svc->store, IMAGE_KIND, m->id + 7, err) < 0)
                return -1;
        for (size_t i = 0; i < svc->n; i++) {
                if (svc->imgs[i] == m) {
                        svc->imgs[i] = svc->imgs[--svc->n];
                        break;
                }
        }
        struct json_object *chain = jget(m->doc, "chain");
        for (size_t i = 0; i < json_object_array_length(chain); i++) {
                const char *c = json_object_get_string(json_object_array_get_idx(chain, i));
                cleanup_free char *key = xasprintf("layer %s", c);
                if (chain_used_by_other(svc, m, c) || rm__pinned_locked(svc, key) ||
                    !rm__digest_ok(c))
                        continue;
                if (rm__remove_at(svc->layers_fd, c + 7) < 0)
                        rm_log_warn("removing layer %s: %s", c, strerror(errno));
        }
        cleanup_free char *key = xasprintf("blob %s", m->id);
        if (!rm__pinned_locked(svc, key))
                unlinkat(svc->blobs_fd, m->id + 7, 0);
        img_free(m);
        return 0;
}

int rm_image_remove(struct rm_image_service *svc, const char *ref, struct rm_error **err)
{
        pthread_mutex_lock(&svc->lock);
        struct rm_img *m = rm__img_find_locked(svc, ref);
        if (m == NULL) {
                pthread_mutex_unlock(&svc->lock);
                return 0;
        }
        cleanup_free char *id = xstrdup(m->id);
        int rc;
        if (in_use_locked(svc, m)) {
                /* Names go now; the record stays, hidden, so that the layers the container's
                 * root filesystem stands on (and everything a record names) are kept. The
                 * index changes only once the record is written. */
                struct json_object *doc = NULL;
                json_object_deep_copy(m->doc, &doc, NULL);
                json_object_object_add(doc, "removed", json_object_new_boolean(true));
                json_object_object_add(doc, "repo_tags", json_object_new_array());
                json_object_object_add(doc, "repo_digests", json_object_new_array());
                rc = rm_store_put(svc->store, IMAGE_KIND, m->id + 7, doc, err);
                if (rc == 0) {
                        json_object_put(m->doc);
                        m->doc = doc;
                        rm_log_info("removed image %s; its layers stay until the last container "
                                    "using it is removed",
                                    id);
                } else {
                        json_object_put(doc);
                }
        } else {
                rc = drop_locked(svc, m, err);
                if (rc == 0)
                        rm_log_info("removed image %s", id);
        }
        pthread_mutex_unlock(&svc->lock);
        return rc;
}

void rm_image_service_set_in_use(struct rm_image_service *svc, rm_image_in_use_fn fn, void *ctx)
{
        pthread_mutex_lock(&svc->lock);
        svc->in_use = fn;
        svc->in_use_ctx = ctx;
        pthread_mutex_unlock(&svc->lock);
}

void rm_image_prune(struct rm_image_service *svc)
{
        pthread_mutex_lock(&svc->lock);
        for (size_t i = 0; i < svc->n;) {
                struct rm_img *m = svc->imgs[i];
                if (!hidden(m) || in_use_locked(svc, m)) {
                        i++;
                        continue;
                }
                cleanup_free char *id = xstrdup(m->id);
                cleanup_error struct rm_error *e = NULL;
                if (drop_locked(svc, m, &e) < 0) {
                        rm_log_warn("removing image %s after its last container: %s", id, e->msg);
                        i++;
                        continue;
                }
                /* drop_locked moved the last image into slot i: look at it next. */
                rm_log_info("image %s: its last container is gone; its layers are removed", id);
        }
        pthread_mutex_unlock(&svc->lock);
}

/* ---- filesystem usage ---- */

Runtime__V1__ImageFsInfoResponse *rm_image_fs_info(struct rm_image_service *svc, struct rm_arena *a,
                                                   struct rm_error **err)
{
        uint64_t used, inode_count;
        if (rm_tree_usage(svc->dir, &used, &inode_count) < 0) {
                rm_error_sys(err, "measure %s", svc->dir);
                return NULL;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        Runtime__V1__FilesystemUsage *u = rm_arena_alloc(a, sizeof(*u));
        runtime__v1__filesystem_usage__init(u);
        u->timestamp = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
        Runtime__V1__FilesystemIdentifier *fsid = rm_arena_alloc(a, sizeof(*fsid));
        runtime__v1__filesystem_identifier__init(fsid);
        fsid->mountpoint = rm_arena_strdup(a, svc->dir);
        u->fs_id = fsid;
        Runtime__V1__UInt64Value *bytes = rm_arena_alloc(a, sizeof(*bytes));
        runtime__v1__uint64_value__init(bytes);
        bytes->value = used;
        Runtime__V1__UInt64Value *inodes = rm_arena_alloc(a, sizeof(*inodes));
        runtime__v1__uint64_value__init(inodes);
        inodes->value = inode_count;
        u->used_bytes = bytes;
        u->inodes_used = inodes;
        Runtime__V1__ImageFsInfoResponse *r = rm_arena_alloc(a, sizeof(*r));
        runtime__v1__image_fs_info_response__init(r);
        r->n_image_filesystems = 1;
        r->image_filesystems = (Runtime__V1__FilesystemUsage **)rm_arena_ptrs(a, 1);
        r->image_filesystems[0] = u;
        return r;
}

/* ---- for containers ---- */

int rm_image_lookup(struct rm_image_service *svc, const char *ref, struct rm_arena *a,
                    struct rm_image_info *out, struct rm_error **err)
{
        memset(out, 0, sizeof(*out));
        pthread_mutex_lock(&svc->lock);
        struct rm_img *m = rm__img_find_locked(svc, ref);
        if (m == NULL) {
                pthread_mutex_unlock(&svc->lock);
                return rm_error_set(err, RM_NOT_FOUND, "image %s is not pulled", ref);
        }
        struct json_object *c = jget(m->doc, "config");
        out->id = rm_arena_strdup(a, m->id);
        struct json_object *names = jget(m->doc, "repo_digests");
        if (names == NULL || json_object_array_length(names) == 0)
                names = jget(m->doc, "repo_tags");
        out->ref =
            names && json_object_array_length(names)
                ? rm_arena_strdup(a, json_object_get_string(json_object_array_get_idx(names, 0)))
                : out->id;
        out->entrypoint = strv_arena(a, jget(c, "Entrypoint"), &out->n_entrypoint);
        out->cmd = strv_arena(a, jget(c, "Cmd"), &out->n_cmd);
        out->env = strv_arena(a, jget(c, "Env"), &out->n_env);
        const char *s = jstr(c, "WorkingDir");
        out->working_dir = s ? rm_arena_strdup(a, s) : NULL;
        s = jstr(c, "User");
        out->user = s ? rm_arena_strdup(a, s) : NULL;
        s = jstr(c, "StopSignal");
        out->stop_signal = s ? rm_arena_strdup(a, s) : NULL;
        struct json_object *vols = jget(c, "Volumes");
        out->n_volumes = vols && json_object_is_type(vols, json_type_object)
                             ? (size_t)json_object_object_length(vols)
                             : 0;
        out->volumes = (char **)rm_arena_ptrs(a, out->n_volumes + 1);
        size_t i = 0;
        if (out->n_volumes) {
                json_object_object_foreach(vols, key, val)
                {
                        (void)val;
                        out->volumes[i++] = rm_arena_strdup(a, key);
                }
        }
        pthread_mutex_unlock(&svc->lock);
        return 0;
}

/* Append a lower directory to opts: the layer itself, or with idmap the layer attached
 * through an idmapped mount at <dir>/idmap/<its name> (the chain ID, by which
 * RemoveImage finds the layer in use). */
static int append_lower(char *opts, const char *layer, const char *dir,
                        const struct rm_image_idmap *idmap, struct rm_error **err)
{
        if (idmap == NULL) {
                strcat(opts, layer);
                return 0;
        }
        cleanup_free char *at = xasprintf("%s/idmap%s", dir, strrchr(layer, '/'));
        if (rm_mkdir_p(at, 0700, err) < 0 ||
            rm_idmap_mount(layer, at, idmap->userns_fd, false, err) < 0)
                return -1;
        strcat(opts, at);
        return 0;
}

int rm_image_mount(struct rm_image_service *svc, const char *id, const char *dir,
                   const char *target, const struct rm_image_idmap *idmap, struct rm_error **err)
{
        cleanup_free char *upper = xasprintf("%s/upper", dir);
        cleanup_free char *work = xasprintf("%s/work", dir);
        if (rm_mkdir_p(upper, 0755, err) < 0 || rm_mkdir_p(work, 0700, err) < 0 ||
            rm_mkdir_p(target, 0755, err) < 0)
                return -1;
        /* The upper and work directories are not idmapped: overlayfs works in them with
         * the mounter's (host root's) IDs, which an idmapped mount cannot represent (the
         * overlay would come up read-only). They belong to the namespace's root instead,
         * so what the container writes is owned by its mapped IDs on the host. */
        if (idmap &&
            (chown(upper, idmap->uid, idmap->gid) < 0 || chown(work, idmap->uid, idmap->gid) < 0))
                return rm_error_sys(err, "give %s to the pod's user namespace root", dir);
        pthread_mutex_lock(&svc->lock);
        /* By its exact ID even when removed since: the container looked it up before. */
        struct rm_img *m = NULL;
        for (size_t i = 0; i < svc->n && m == NULL; i++)
                m = strcmp(svc->imgs[i]->id, id) == 0 ? svc->imgs[i] : NULL;
        if (m == NULL)
                m = rm__img_find_locked(svc, id);
        if (m == NULL) {
                pthread_mutex_unlock(&svc->lock);
                return rm_error_set(err, RM_NOT_FOUND, "image %s is not pulled", id);
        }
        /* lowerdir lists the top layer first. */
        struct json_object *chain = jget(m->doc, "chain");
        size_t n = json_object_array_length(chain);
        size_t each = strlen(svc->layers) + strlen(dir) + 80;
        size_t cap = 64 + strlen(upper) + strlen(work) + (n + 1) * each;
        cleanup_free char *opts = xzalloc(cap);
        strcat(opts, "lowerdir=");
        int rc = 0;
        if (n == 0) {
                cleanup_free char *empty = xasprintf("%s/empty", svc->layers);
                rc = append_lower(opts, empty, dir, idmap, err);
        }
        for (size_t i = n; rc == 0 && i-- > 0;) {
                cleanup_free char *layer =
                    xasprintf("%s/%s", svc->layers,
                              json_object_get_string(json_object_array_get_idx(chain, i)) + 7);
                rc = append_lower(opts, layer, dir, idmap, err);
                if (i > 0)
                        strcat(opts, ":");
        }
        size_t len = strlen(opts);
        snprintf(opts + len, cap - len, ",upperdir=%s,workdir=%s", upper, work);
        /* Under the lock, so that no RemoveImage removes the layers while they are being
         * mounted. */
        if (rc == 0 && mount("overlay", target, "overlay", 0, opts) < 0)
                rc = rm_error_sys(err, "mount the root filesystem of image %s at %s", id, target);
        pthread_mutex_unlock(&svc->lock);
        if (rc < 0 && idmap)
                rm_idmap_release_all(dir, true);
        return rc;
}

int rm_image_layer_dirs(struct rm_image_service *svc, const char *id, struct rm_arena *a,
                        char ***dirs, size_t *n, struct rm_error **err)
{
        pthread_mutex_lock(&svc->lock);
        struct rm_img *m = rm__img_find_locked(svc, id);
        if (m == NULL) {
                pthread_mutex_unlock(&svc->lock);
                return rm_error_set(err, RM_NOT_FOUND, "image %s is not pulled", id);
        }
        struct json_object *chain = jget(m->doc, "chain");
        size_t k = json_object_array_length(chain);
        *n = k ? k : 1;
        *dirs = (char **)rm_arena_ptrs(a, *n + 1);
        if (k == 0)
                (*dirs)[0] = rm_arena_printf(a, "%s/empty", svc->layers);
        /* Top layer first, as overlayfs's lowerdir lists them. */
        for (size_t i = 0; i < k; i++)
                (*dirs)[i] = rm_arena_printf(
                    a, "%s/%s", svc->layers,
                    json_object_get_string(json_object_array_get_idx(chain, k - 1 - i)) + 7);
        pthread_mutex_unlock(&svc->lock);
        return 0;
}

int rm_image_unmount(struct rm_image_service *svc, const char *dir, const char *target,
                     struct rm_error **err)
{
        (void)svc;
        if (umount2(target, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
                return rm_error_sys(err, "unmount %s", target);
        if (dir)
                rm_idmap_release_all(dir, true);
        return 0;
}

/* ---- open and close ---- */

static int load_one(const char *id, struct json_object *doc, const struct rm_error *bad, void *data,
                    struct rm_error **err)
{
        (void)err;
        struct rm_image_service *svc = data;
        const char *rid = doc ? jstr(doc, "id") : NULL;
        struct json_object *chain = doc ? jget(doc, "chain") : NULL;
        bool chain_ok = chain && json_object_is_type(chain, json_type_array);
        for (size_t i = 0; chain_ok && i < json_object_array_length(chain); i++)
                chain_ok =
                    rm__digest_ok(json_object_get_string(json_object_array_get_idx(chain, i)));
        if (doc == NULL || rid == NULL || !rm__digest_ok(rid) || strcmp(rid + 7, id) != 0 ||
            !chain_ok) {
                rm_log_warn("image record %s is unreadable (%s); leaving it", id,
                            bad ? bad->msg : "bad id or chain");
                return 0;
        }
        struct rm_img *m = xzalloc(sizeof(*m));
        snprintf(m->id, sizeof(m->id), "%s", rid);
        json_object_deep_copy(doc, &m->doc, NULL);
        svc->imgs = xrealloc(svc->imgs, sizeof(*svc->imgs) * (svc->n + 1));
        svc->imgs[svc->n++] = m;
        return 0;
}

static int read_section(struct rm_image_service *svc, struct json_object *section,
                        struct rm_error **err)
{
        static const char *const known[] = {"insecure_registries", "mirrors",
                                            "max_manifest_bytes",  "max_config_bytes",
                                            "free_space_reserve",  NULL};
        if (rm_confsect_check_keys("image", section, known, err) < 0)
                return -1;
        svc->max_manifest = 4 << 20;
        svc->max_config = 8 << 20;
        svc->reserve = -1;
        if (rm_confsect_int("image", section, "max_manifest_bytes", 1024, 64 << 20,
                            &svc->max_manifest, err) < 0 ||
            rm_confsect_int("image", section, "max_config_bytes", 1024, 64 << 20, &svc->max_config,
                            err) < 0 ||
            rm_confsect_int("image", section, "free_space_reserve", 0, INT64_MAX / 2, &svc->reserve,
                            err) < 0)
                return -1;
        struct json_object *ins = NULL;
        if (rm_confsect_strings("image", section, "insecure_registries", &ins, err) < 0)
                return -1;
        svc->insecure = ins ? json_object_get(ins) : NULL;
        struct json_object *mirrors = NULL;
        if (section && json_object_object_get_ex(section, "mirrors", &mirrors)) {
                if (!json_object_is_type(mirrors, json_type_object))
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "config key \"image.mirrors\" must be an object of "
                                            "host: [endpoints]");
                json_object_object_foreach(mirrors, host, list)
                {
                        cleanup_free char *key = xasprintf("mirrors.%s", host);
                        if (!json_object_is_type(list, json_type_array))
                                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                                    "config key \"image.%s\" must be a list of "
                                                    "endpoints",
                                                    key);
                        for (size_t i = 0; i < json_object_array_length(list); i++) {
                                const char *ep =
                                    json_object_get_string(json_object_array_get_idx(list, i));
                                if (ep == NULL || (strncmp(ep, "http://", 7) != 0 &&
                                                   strncmp(ep, "https://", 8) != 0))
                                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                                            "config key \"image.%s\" item %zu must "
                                                            "be an http:// or https:// URL",
                                                            key, i);
                        }
                }
                svc->mirrors = json_object_get(mirrors);
        }
        return 0;
}

/* The store's directories, opened once: every later file operation is relative to them,
 * so no name from a registry is ever joined into a path from the root. */
static int open_dirs(struct rm_image_service *svc, struct rm_error **err)
{
        svc->dir_fd = open(svc->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (svc->dir_fd < 0)
                return rm_error_sys(err, "open %s", svc->dir);
        int *fds[] = {&svc->blobs_fd, &svc->layers_fd, &svc->tmp_fd};
        const char *names[] = {"blobs", "layers", "tmp"};
        for (size_t i = 0; i < 3; i++) {
                *fds[i] =
                    openat(svc->dir_fd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (*fds[i] < 0)
                        return rm_error_sys(err, "open %s/%s", svc->dir, names[i]);
        }
        return 0;
}

struct rm_image_service *rm_image_service_open(const char *root, struct json_object *section,
                                               struct rm_store *store, struct rm_error **err)
{
        struct rm_image_service *svc = xzalloc(sizeof(*svc));
        pthread_mutex_init(&svc->lock, NULL);
        pthread_cond_init(&svc->done, NULL);
        svc->inflight = json_object_new_array();
        svc->pins = json_object_new_object();
        svc->dir_fd = svc->blobs_fd = svc->layers_fd = svc->tmp_fd = -1;
        svc->store = store;
        svc->dir = xasprintf("%s/images", root);
        svc->blobs = xasprintf("%s/blobs", svc->dir);
        svc->layers = xasprintf("%s/layers", svc->dir);
        svc->tmp = xasprintf("%s/tmp", svc->dir);
        cleanup_free char *empty = xasprintf("%s/empty", svc->layers);
        if (read_section(svc, section, err) < 0 || rm_mkdir_p(svc->blobs, 0700, err) < 0 ||
            rm_mkdir_p(empty, 0755, err) < 0 || rm_mkdir_p(svc->tmp, 0700, err) < 0 ||
            open_dirs(svc, err) < 0 || rm_store_list(store, IMAGE_KIND, load_one, svc, err) < 0 ||
            rm__store_gc(svc, err) < 0) {
                rm_error_wrap(err, "open image store");
                rm_image_service_close(svc);
                return NULL;
        }
        curl_global_init(CURL_GLOBAL_DEFAULT);
        if (svc->n)
                rm_log_info("loaded %zu images", svc->n);
        return svc;
}

void rm_image_service_close(struct rm_image_service *svc)
{
        if (svc == NULL)
                return;
        for (size_t i = 0; i < svc->n; i++)
                img_free(svc->imgs[i]);
        free(svc->imgs);
        json_object_put(svc->insecure);
        json_object_put(svc->mirrors);
        json_object_put(svc->inflight);
        json_object_put(svc->pins);
        int fds[] = {svc->dir_fd, svc->blobs_fd, svc->layers_fd, svc->tmp_fd};
        for (size_t i = 0; i < 4; i++) {
                if (fds[i] >= 0)
                        close(fds[i]);
        }
        pthread_cond_destroy(&svc->done);
        pthread_mutex_destroy(&svc->lock);
        free(svc->dir);
        free(svc->blobs);
        free(svc->layers);
        free(svc->tmp);
        free(svc);
}

const char *rm_image_service_dir(const struct rm_image_service *svc)
{
        return svc->dir;
}

void rm_image_service_counters(struct rm_image_service *svc, uint64_t *blob_bytes,
                               uint64_t *layers_unpacked)
{
        *blob_bytes = atomic_load(&svc->blob_bytes);
        *layers_unpacked = atomic_load(&svc->layers_unpacked);
}
