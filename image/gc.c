/* What in the image store may be removed: pins held by pulls in progress, the names
 * image records hold, and the start-up sweep of whatever an interrupted pull left. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "image_internal.h"
#include "remora/cleanup.h"
#include "remora/log.h"
#include "remora/xalloc.h"

void rm__space_init(struct rm_image_service *svc, struct rm__space *s)
{
        s->fd = svc->dir_fd;
        s->reserve =
            svc->reserve >= 0 ? (uint64_t)svc->reserve : rm__space_default_reserve(svc->dir_fd);
        s->budget = 0;
}

void rm__pin(struct rm_image_service *svc, const char *key)
{
        pthread_mutex_lock(&svc->lock);
        struct json_object *v = NULL;
        int64_t n = json_object_object_get_ex(svc->pins, key, &v) ? json_object_get_int64(v) : 0;
        json_object_object_add(svc->pins, key, json_object_new_int64(n + 1));
        pthread_mutex_unlock(&svc->lock);
}

bool rm__pinned_locked(struct rm_image_service *svc, const char *key)
{
        return json_object_object_get_ex(svc->pins, key, NULL);
}

static void add_ref(struct json_object *refs, const char *kind, const char *digest)
{
        if (digest == NULL)
                return;
        cleanup_free char *key = xasprintf("%s %s", kind, digest);
        json_object_object_add(refs, key, NULL);
}

static void add_doc_refs(struct json_object *refs, struct json_object *doc)
{
        struct json_object *id = NULL, *chain = NULL;
        if (json_object_object_get_ex(doc, "id", &id))
                add_ref(refs, "blob", json_object_get_string(id));
        if (json_object_object_get_ex(doc, "chain", &chain) &&
            json_object_is_type(chain, json_type_array)) {
                for (size_t i = 0; i < json_object_array_length(chain); i++)
                        add_ref(refs, "layer",
                                json_object_get_string(json_object_array_get_idx(chain, i)));
        }
}

static int visit_ref(const char *id, struct json_object *doc, const struct rm_error *bad,
                     void *data, struct rm_error **err)
{
        (void)id;
        if (doc == NULL)
                return rm_error_set(err, RM_DATA_LOSS, "image record %s is unreadable (%s)", id,
                                    bad ? bad->msg : "?");
        add_doc_refs(data, doc);
        return 0;
}

/* Every "blob <id>" and "layer <chain>" any image record names: every record in the
 * store, whatever else it says (hidden or half-removed images included), and every image
 * in memory. NULL when a record cannot be read: then nothing may be removed. Caller holds
 * svc->lock. */
static struct json_object *referenced_locked(struct rm_image_service *svc, struct rm_error **err)
{
        struct json_object *refs = json_object_new_object();
        if (rm_store_list(svc->store, IMAGE_KIND, visit_ref, refs, err) < 0) {
                json_object_put(refs);
                return NULL;
        }
        for (size_t i = 0; i < svc->n; i++)
                add_doc_refs(refs, svc->imgs[i]->doc);
        return refs;
}

/* Remove the blob or layer a key names. */
static int remove_key(struct rm_image_service *svc, const char *key)
{
        if (strncmp(key, "blob ", 5) == 0 && rm__digest_ok(key + 5))
                return unlinkat(svc->blobs_fd, key + 5 + 7, 0) == 0 || errno == ENOENT ? 0 : -1;
        if (strncmp(key, "layer ", 6) == 0 && rm__digest_ok(key + 6))
                return rm__remove_at(svc->layers_fd, key + 6 + 7);
        return 0;
}

void rm__unpin(struct rm_image_service *svc, struct json_object *keys)
{
        pthread_mutex_lock(&svc->lock);
        cleanup_json struct json_object *free_now = json_object_new_array();
        for (size_t i = 0; keys && i < json_object_array_length(keys); i++) {
                const char *key = json_object_get_string(json_object_array_get_idx(keys, i));
                struct json_object *v = NULL;
                if (!json_object_object_get_ex(svc->pins, key, &v))
                        continue;
                int64_t n = json_object_get_int64(v);
                if (n > 1) {
                        json_object_object_add(svc->pins, key, json_object_new_int64(n - 1));
                        continue;
                }
                json_object_array_add(free_now, json_object_new_string(key));
                json_object_object_del(svc->pins, key);
        }
        if (json_object_array_length(free_now) > 0) {
                cleanup_error struct rm_error *e = NULL;
                cleanup_json struct json_object *refs = referenced_locked(svc, &e);
                if (refs == NULL)
                        rm_log_warn("image store: left unreferenced blobs and layers in place: %s",
                                    e->msg);
                for (size_t i = 0; refs && i < json_object_array_length(free_now); i++) {
                        const char *key =
                            json_object_get_string(json_object_array_get_idx(free_now, i));
                        if (json_object_object_get_ex(refs, key, NULL))
                                continue;
                        if (remove_key(svc, key) < 0)
                                rm_log_warn("image store: removing %s: %s", key, strerror(errno));
                }
        }
        pthread_mutex_unlock(&svc->lock);
}

/* Remove every entry of dirfd that refs does not name as "<kind> sha256:<entry>". */
static int sweep(struct rm_image_service *svc, int dirfd, const char *kind,
                 struct json_object *refs, const char *skip, size_t *removed)
{
        int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        if (d == NULL) {
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        cleanup_json struct json_object *names = json_object_new_array();
        for (struct dirent *e; (e = readdir(d));) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
                    (skip && strcmp(e->d_name, skip) == 0))
                        continue;
                cleanup_free char *key = xasprintf("%s sha256:%s", kind, e->d_name);
                if (refs == NULL || !json_object_object_get_ex(refs, key, NULL))
                        json_object_array_add(names, json_object_new_string(e->d_name));
        }
        closedir(d);
        (void)svc;
        for (size_t i = 0; i < json_object_array_length(names); i++) {
                const char *n = json_object_get_string(json_object_array_get_idx(names, i));
                if (rm__remove_at(dirfd, n) < 0) {
                        rm_log_warn("image store: could not remove stray %s %s: %s", kind, n,
                                    strerror(errno));
                        continue;
                }
                rm_log_info("image store: removed %s %s, which no image record names", kind, n);
                (*removed)++;
        }
        return 0;
}

int rm__store_gc(struct rm_image_service *svc, struct rm_error **err)
{
        size_t tmp = 0, blobs = 0, layers = 0;
        /* Temporary files and directories belong to pulls that died with the daemon. */
        if (sweep(svc, svc->tmp_fd, "temporary", NULL, NULL, &tmp) < 0)
                return rm_error_sys(err, "sweep %s", svc->tmp);
        pthread_mutex_lock(&svc->lock);
        cleanup_error struct rm_error *e = NULL;
        cleanup_json struct json_object *refs = referenced_locked(svc, &e);
        int rc = 0;
        if (refs == NULL) {
                rm_log_warn("image store: not removing stray blobs or layers: %s", e->msg);
        } else if (sweep(svc, svc->blobs_fd, "blob", refs, NULL, &blobs) < 0 ||
                   sweep(svc, svc->layers_fd, "layer", refs, "empty", &layers) < 0) {
                rc = rm_error_sys(err, "sweep the image store %s", svc->dir);
        }
        pthread_mutex_unlock(&svc->lock);
        if (tmp + blobs + layers > 0)
                rm_log_info("image store: removed %zu temporary entries, %zu blobs and %zu layers "
                            "left by interrupted pulls",
                            tmp, blobs, layers);
        return rc;
}
