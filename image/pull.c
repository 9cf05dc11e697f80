/* PullImage: manifest (list) to platform manifest to config and layers, each verified,
 * layers fetched and unpacked in parallel, the record written last. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "image_internal.h"
#include "remora/cleanup.h"
#include "remora/crashpoint.h"
#include "remora/fsutil.h"
#include "remora/log.h"
#include "remora/xalloc.h"

#define LAYER_THREADS 4

#define MT_OCI_INDEX       "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_LIST     "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_OCI_MANIFEST    "application/vnd.oci.image.manifest.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"

/* The host's architecture in OCI terms. */
static const char *host_arch(void)
{
        struct utsname u;
        if (uname(&u) < 0)
                return "amd64";
        if (strcmp(u.machine, "x86_64") == 0)
                return "amd64";
        if (strcmp(u.machine, "aarch64") == 0)
                return "arm64";
        if (strncmp(u.machine, "arm", 3) == 0)
                return "arm";
        return "unknown";
}

/* Everything one pull knows. */
struct pull {
        struct rm_image_service *svc;
        struct rm_registry *reg;
        const struct rm_cancel *cancel;
        const char *ref_name; /* for messages */
        char *repo;           /* domain/path, for repo digests */
        struct rm__manifest man;
        char **diff_ids;
        char (*chains)[72];
        size_t n;
        struct json_object *pins; /* the keys this pull pinned */
        atomic_size_t next;
        pthread_mutex_t err_lock;
        struct rm_error *first_err;
};

static void pull_pin(struct pull *p, const char *kind, const char *digest)
{
        cleanup_free char *key = xasprintf("%s %s", kind, digest);
        for (size_t i = 0; i < json_object_array_length(p->pins); i++) {
                if (strcmp(json_object_get_string(json_object_array_get_idx(p->pins, i)), key) == 0)
                        return;
        }
        rm__pin(p->svc, key);
        json_object_array_add(p->pins, json_object_new_string(key));
}

/* Drop every pin: what no record names (temporary layer blobs; everything of a failed
 * pull) is removed now, unless another pull holds it. */
static void pull_unpin_all(struct pull *p)
{
        rm__unpin(p->svc, p->pins);
        json_object_put(p->pins);
        p->pins = NULL;
}

/* ---- blobs and layers ---- */

struct at {
        int dirfd;
        const char *name;
};

static bool exists_at(void *arg)
{
        struct at *a = arg;
        return faccessat(a->dirfd, a->name, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

/* Make the blob present in blobs/ (downloading it at most once across concurrent pulls):
 * into tmp/ first, renamed into place once complete and verified. */
static int fetch_blob(struct pull *p, const char *what, const char *digest, int64_t size,
                      struct rm_error **err)
{
        struct rm_image_service *svc = p->svc;
        if (rm__digest_check(digest, what, err) < 0)
                return -1;
        const char *hex = digest + 7;
        /* Keys are kind-qualified: an uncompressed layer's digest is also its diff ID and
         * can be a chain ID, and one pull must not wait on itself. */
        cleanup_free char *key = xasprintf("blob %s", digest);
        struct at here = {svc->blobs_fd, hex};
        if (!rm__inflight_claim(svc, key, exists_at, &here))
                return 0;
        int rc = 0;
        struct rm__space pre;
        rm__space_init(svc, &pre);
        if (rm__space_take(&pre, (uint64_t)size, err) < 0)
                rc = rm_error_wrap(err, "%s (%s) declares %lld bytes", what, digest,
                                   (long long)size);
        char tmp[128];
        snprintf(tmp, sizeof(tmp), "blob-%.64s-%lx", hex, (unsigned long)pthread_self());
        cleanup_close int fd = -1;
        if (rc == 0) {
                fd = openat(svc->tmp_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                            0600);
                if (fd < 0)
                        rc = rm_error_sys(err, "create a temporary file for blob %s", digest);
        }
        if (rc == 0) {
                struct rm__space space;
                rm__space_init(svc, &space);
                rc = rm__registry_blob(p->reg, what, digest, size, fd, &space, err);
        }
        if (rc == 0 && renameat(svc->tmp_fd, tmp, svc->blobs_fd, hex) < 0)
                rc = rm_error_sys(err, "store blob %s", digest);
        if (rc == 0) {
                fsync(svc->blobs_fd);
                atomic_fetch_add(&svc->blob_bytes, (uint64_t)size);
                rm_crashpoint("pull.blob_written");
        }
        if (rc < 0 && fd >= 0)
                unlinkat(svc->tmp_fd, tmp, 0);
        rm__inflight_done(svc, key);
        return rc;
}

/* Fetch and unpack layer i into layers/<chain id>, unless it already is there. */
static int do_layer(struct pull *p, size_t i, struct rm_error **err)
{
        struct rm_image_service *svc = p->svc;
        const struct rm__desc *desc = &p->man.layers[i];
        const char *chain = p->chains[i];
        char what[64];
        snprintf(what, sizeof(what), "manifest.layers[%zu]", i);
        cleanup_free char *key = xasprintf("layer %s", chain);
        struct at here = {svc->layers_fd, chain + 7};
        if (!rm__inflight_claim(svc, key, exists_at, &here))
                return 0;
        char tmp[128];
        snprintf(tmp, sizeof(tmp), "layer-%.64s-%lx", chain + 7, (unsigned long)pthread_self());
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = fetch_blob(p, what, desc->digest, desc->size, err);
        bool made = false;
        if (rc == 0) {
                if (mkdirat(svc->tmp_fd, tmp, 0755) < 0)
                        rc = rm_error_sys(err, "create a temporary directory for layer %s", chain);
                made = rc == 0;
        }
        char got[72] = "";
        if (rc == 0) {
                cleanup_close int dfd =
                    openat(svc->tmp_fd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                cleanup_close int bfd =
                    openat(svc->blobs_fd, desc->digest + 7, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                struct rm__space space;
                rm__space_init(svc, &space);
                if (dfd < 0 || bfd < 0)
                        rc = rm_error_sys(err, "open layer %s", desc->digest);
                else if (rm__layer_unpack(bfd, dfd, desc->digest, &space, p->cancel, got, err) < 0)
                        rc = rm_error_wrap(err, "%s (%s)", what, desc->digest);
        }
        if (rc == 0 && strcmp(got, p->diff_ids[i]) != 0)
                rc = rm_error_set(err, RM_DATA_LOSS,
                                  "%s (%s) unpacks to diff ID %s, config.rootfs.diff_ids[%zu] says "
                                  "%s",
                                  what, desc->digest, got, i, p->diff_ids[i]);
        /* Rename makes the layer appear whole or not at all. */
        if (rc == 0 && renameat(svc->tmp_fd, tmp, svc->layers_fd, chain + 7) < 0 &&
            errno != ENOTEMPTY && errno != EEXIST)
                rc = rm_error_sys(err, "store layer %s", chain);
        if (rc == 0) {
                fsync(svc->layers_fd);
                atomic_fetch_add(&svc->layers_unpacked, 1);
                rm_crashpoint("pull.layer_unpacked");
        }
        if (made && rm__remove_at(svc->tmp_fd, tmp) < 0)
                rm_log_warn("removing the temporary layer %s: %s", tmp, strerror(errno));
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (rc == 0)
                rm_log_info("%s: layer %zu/%zu (%s, %lld bytes) unpacked in %.2f s", p->ref_name,
                            i + 1, p->n, desc->digest, (long long)desc->size,
                            (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
        rm__inflight_done(svc, key);
        return rc;
}

static void *layer_worker(void *arg)
{
        struct pull *p = arg;
        for (;;) {
                size_t i = atomic_fetch_add(&p->next, 1);
                if (i >= p->n)
                        return NULL;
                pthread_mutex_lock(&p->err_lock);
                bool failed = p->first_err != NULL;
                pthread_mutex_unlock(&p->err_lock);
                if (failed)
                        return NULL;
                struct rm_error *e = NULL;
                if (rm__cancel_check(p->cancel, &e) < 0 || do_layer(p, i, &e) < 0) {
                        pthread_mutex_lock(&p->err_lock);
                        if (p->first_err == NULL)
                                p->first_err = e;
                        else
                                rm_error_free(e);
                        pthread_mutex_unlock(&p->err_lock);
                }
        }
}

static int all_layers(struct pull *p, struct rm_error **err)
{
        size_t n = p->n < LAYER_THREADS ? p->n : LAYER_THREADS;
        pthread_t threads[LAYER_THREADS];
        size_t started = 0;
        for (; started < n; started++) {
                if (pthread_create(&threads[started], NULL, layer_worker, p) != 0)
                        break;
        }
        if (started == 0)
                layer_worker(p);
        for (size_t i = 0; i < started; i++)
                pthread_join(threads[i], NULL);
        if (p->first_err) {
                *err = p->first_err;
                p->first_err = NULL;
                return -1;
        }
        return 0;
}

/* ---- manifests ---- */

/* Read the config blob (at most its declared size, itself capped). */
static char *read_config_blob(struct pull *p, size_t *len, struct rm_error **err)
{
        const struct rm__desc *d = &p->man.config;
        cleanup_close int fd =
            openat(p->svc->blobs_fd, d->digest + 7, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                rm_error_sys(err, "open config blob %s", d->digest);
                return NULL;
        }
        size_t cap = (size_t)d->size;
        char *buf = xmalloc(cap + 1);
        size_t got = 0;
        while (got < cap) {
                ssize_t r = read(fd, buf + got, cap - got);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        break;
                got += (size_t)r;
        }
        buf[got] = '\0';
        *len = got;
        return buf;
}

static struct json_object *config_subset(struct json_object *config)
{
        struct json_object *c = NULL, *out = json_object_new_object();
        if (!json_object_object_get_ex(config, "config", &c))
                return out;
        static const char *const keys[] = {"Entrypoint", "Cmd",     "Env",        "WorkingDir",
                                           "User",       "Volumes", "StopSignal", "ExposedPorts",
                                           "Labels",     NULL};
        for (const char *const *k = keys; *k; k++) {
                struct json_object *v = NULL;
                if (json_object_object_get_ex(c, *k, &v) && v)
                        json_object_object_add(out, *k, json_object_get(v));
        }
        return out;
}

static int pull_from(struct pull *p, const struct rm_image_ref *ref, char **image_id,
                     struct rm_error **err)
{
        struct rm_image_service *svc = p->svc;
        const char *reference = ref->digest ? ref->digest : ref->tag;
        cleanup_free char *body = NULL, *mt = NULL, *digest = NULL;
        size_t len = 0;
        if (rm__registry_manifest(p->reg, reference, (size_t)svc->max_manifest, &body, &len, &mt,
                                  &digest, err) < 0)
                return -1;
        cleanup_free char *top_digest = xstrdup(digest);
        if (strcmp(mt, MT_OCI_INDEX) == 0 || strcmp(mt, MT_DOCKER_LIST) == 0) {
                struct rm__desc pick;
                if (rm__index_pick(body, len, host_arch(), &pick, err) < 0)
                        return -1;
                free(body);
                free(mt);
                free(digest);
                body = mt = digest = NULL;
                int rc = rm__registry_manifest(p->reg, pick.digest, (size_t)svc->max_manifest,
                                               &body, &len, &mt, &digest, err);
                rm__desc_release(&pick);
                if (rc < 0)
                        return -1;
        }
        if (strcmp(mt, MT_OCI_MANIFEST) != 0 && strcmp(mt, MT_DOCKER_MANIFEST) != 0)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "%s: manifest media type \"%.100s\" is not supported (OCI or "
                                    "Docker schema 2 only)",
                                    p->ref_name, mt);
        if (rm__manifest_parse(body, len, svc->max_config, &p->man, err) < 0)
                return -1;
        p->n = p->man.n_layers;

        /* The config: pinned before it lands, so a failure removes it again. */
        pull_pin(p, "blob", p->man.config.digest);
        if (fetch_blob(p, "manifest.config", p->man.config.digest, p->man.config.size, err) < 0)
                return -1;
        size_t clen = 0;
        cleanup_free char *text = read_config_blob(p, &clen, err);
        if (text == NULL)
                return -1;
        cleanup_json struct json_object *config = NULL;
        if (rm__config_parse(text, clen, p->n, &config, &p->diff_ids, err) < 0)
                return -1;
        p->chains = xzalloc(sizeof(*p->chains) * (p->n + 1));
        rm__chain_ids(p->diff_ids, p->n, p->chains);
        for (size_t i = 0; i < p->n; i++) {
                pull_pin(p, "blob", p->man.layers[i].digest);
                pull_pin(p, "layer", p->chains[i]);
        }
        if (all_layers(p, err) < 0)
                return -1;
        if (rm__cancel_check(p->cancel, err) < 0)
                return -1;

        int64_t size = 0;
        for (size_t i = 0; i < p->n; i++)
                size += p->man.layers[i].size;
        struct json_object *doc = json_object_new_object();
        json_object_object_add(doc, "id", json_object_new_string(p->man.config.digest));
        json_object_object_add(doc, "size", json_object_new_int64(size));
        struct json_object *chains = json_object_new_array();
        for (size_t i = 0; i < p->n; i++)
                json_object_array_add(chains, json_object_new_string(p->chains[i]));
        json_object_object_add(doc, "chain", chains);
        json_object_object_add(doc, "config", config_subset(config));
        cleanup_free char *tag = ref->tag ? xasprintf("%s:%s", p->repo, ref->tag) : NULL;
        cleanup_free char *repo_digest = xasprintf("%s@%s", p->repo, top_digest);
        rm_crashpoint("pull.record_before");
        if (rm__img_commit(svc, doc, tag, repo_digest, err) < 0)
                return -1;
        rm_crashpoint("pull.record_after");
        *image_id = xstrdup(p->man.config.digest);
        return 0;
}

/* ---- endpoints ---- */

static bool insecure(struct rm_image_service *svc, const char *host)
{
        return rm__host_plain_ok(svc->insecure, host);
}

/* Mirrors for the host in order, then the registry itself. */
static struct json_object *endpoints(struct rm_image_service *svc, const char *host)
{
        struct json_object *list = json_object_new_array();
        struct json_object *m = NULL;
        if (svc->mirrors && json_object_object_get_ex(svc->mirrors, host, &m)) {
                for (size_t i = 0; i < json_object_array_length(m); i++)
                        json_object_array_add(list,
                                              json_object_get(json_object_array_get_idx(m, i)));
        }
        const char *real = strcmp(host, "docker.io") == 0 ? "registry-1.docker.io" : host;
        char *upstream = xasprintf("%s://%s", insecure(svc, host) ? "http" : "https", real);
        json_object_array_add(list, json_object_new_string(upstream));
        free(upstream);
        return list;
}

int rm_image_pull(struct rm_image_service *svc, const char *name,
                  const Runtime__V1__AuthConfig *auth, const struct rm_cancel *cancel,
                  char **image_id, struct rm_error **err)
{
        struct rm_image_ref ref;
        if (rm_image_ref_parse(name, &ref, err) < 0)
                return -1;
        cleanup_free char *full = rm_image_ref_string(&ref);
        cleanup_free char *repo = rm_image_ref_repo(&ref);
        struct rm_registry_auth creds = {0};
        if (auth) {
                creds.username = auth->username;
                creds.password = auth->password;
                creds.auth = auth->auth;
                creds.identity_token = auth->identity_token;
                creds.registry_token = auth->registry_token;
        }
        cleanup_json struct json_object *eps = endpoints(svc, ref.domain);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = -1;
        for (size_t i = 0; i < json_object_array_length(eps) && rc < 0; i++) {
                const char *ep = json_object_get_string(json_object_array_get_idx(eps, i));
                struct pull p = {.svc = svc,
                                 .ref_name = full,
                                 .repo = repo,
                                 .cancel = cancel,
                                 .pins = json_object_new_array()};
                pthread_mutex_init(&p.err_lock, NULL);
                p.reg = rm__registry_new(ep, ref.path, &creds, svc->insecure, cancel);
                struct rm_error *e = NULL;
                rc = rm__cancel_check(cancel, &e);
                if (rc == 0)
                        rc = pull_from(&p, &ref, image_id, &e);
                pull_unpin_all(&p);
                rm__registry_free(p.reg);
                rm__manifest_release(&p.man);
                rm__strv_free(p.diff_ids);
                free(p.chains);
                pthread_mutex_destroy(&p.err_lock);
                if (rc < 0) {
                        /* Stopped by the client: no other endpoint is tried. */
                        bool last = i + 1 == json_object_array_length(eps) ||
                                    e->code == RM_CANCELLED || e->code == RM_DEADLINE_EXCEEDED;
                        if (!last)
                                rm_log_warn("pull %s from %s: %s; trying the next endpoint", full,
                                            ep, e->msg);
                        if (last) {
                                *err = e;
                                rm_error_wrap(err, "pull %s", full);
                                break;
                        }
                        rm_error_free(e);
                }
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (rc == 0)
                rm_log_info("pulled %s as %s in %.2f s", full, *image_id,
                            (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
        rm_image_ref_release(&ref);
        return rc;
}
