/* PullImage: manifest (list) to platform manifest to config and layers, each verified,
 * layers fetched and unpacked in parallel, the record written last. */
#include <errno.h>
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
#include "remora/fsutil.h"
#include "remora/log.h"
#include "remora/xalloc.h"

#define MANIFEST_MAX  (4u << 20)
#define CONFIG_MAX    (8u << 20)
#define LAYER_THREADS 4

#define MT_OCI_INDEX       "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_LIST     "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_OCI_MANIFEST    "application/vnd.oci.image.manifest.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"

static const char *const layer_types[] = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    NULL,
};

static bool in_list(const char *const *list, const char *s)
{
        for (; *list; list++) {
                if (strcmp(*list, s) == 0)
                        return true;
        }
        return false;
}

static const char *jstr(struct json_object *o, const char *key)
{
        struct json_object *v = NULL;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

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
        const char *ref_name;       /* for messages */
        char *repo;                 /* domain/path, for repo digests */
        struct json_object *layers; /* the manifest's layer descriptors */
        struct json_object *diff_ids;
        char **chains;
        size_t n;
        atomic_size_t next;
        pthread_mutex_t err_lock;
        struct rm_error *first_err;
};

/* ---- blobs and layers ---- */

static bool file_exists(void *path)
{
        return access(path, F_OK) == 0;
}

static char *blob_path(struct rm_image_service *svc, const char *digest)
{
        return xasprintf("%s/%s", svc->blobs, digest + 7);
}

/* Make the blob present (downloading it at most once across concurrent pulls). */
static int fetch_blob(struct pull *p, const char *digest, int64_t size, struct rm_error **err)
{
        cleanup_free char *path = blob_path(p->svc, digest);
        /* Keys are kind-qualified: an uncompressed layer's digest is also its diff ID and
         * can be a chain ID, and one pull must not wait on itself. */
        cleanup_free char *key = xasprintf("blob %s", digest);
        if (!rm__inflight_claim(p->svc, key, file_exists, path))
                return 0;
        cleanup_free char *tmp = xasprintf("%s/blob-%s-%d-%lx", p->svc->tmp, digest + 7,
                                           (int)getpid(), (unsigned long)pthread_self());
        int rc = rm__registry_blob(p->reg, digest, size, tmp, err);
        if (rc == 0 && rename(tmp, path) < 0)
                rc = rm_error_sys(err, "store blob %s", digest);
        if (rc < 0)
                unlink(tmp);
        rm__inflight_done(p->svc, key);
        return rc;
}

static char *layer_path(struct rm_image_service *svc, const char *chain)
{
        return xasprintf("%s/%s", svc->layers, chain + 7);
}

/* Fetch and unpack layer i into layers/<chain id>, unless it already is there. */
static int do_layer(struct pull *p, size_t i, struct rm_error **err)
{
        struct json_object *desc = json_object_array_get_idx(p->layers, i);
        const char *digest = jstr(desc, "digest");
        const char *mt = jstr(desc, "mediaType");
        struct json_object *sz = NULL;
        int64_t size =
            json_object_object_get_ex(desc, "size", &sz) ? json_object_get_int64(sz) : -1;
        const char *want = json_object_get_string(json_object_array_get_idx(p->diff_ids, i));
        cleanup_free char *dir = layer_path(p->svc, p->chains[i]);
        cleanup_free char *key = xasprintf("layer %s", p->chains[i]);
        if (!rm__inflight_claim(p->svc, key, file_exists, dir))
                return 0;
        int rc = 0;
        cleanup_free char *blob = blob_path(p->svc, digest);
        cleanup_free char *tmp = xasprintf("%s/layer-%s-%lx", p->svc->tmp, p->chains[i] + 7,
                                           (unsigned long)pthread_self());
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (!in_list(layer_types, mt ? mt : ""))
                rc = rm_error_set(err, RM_INVALID_ARGUMENT,
                                  "layer %s has media type %s, which "
                                  "remora does not unpack",
                                  digest, mt ? mt : "(none)");
        if (rc == 0)
                rc = fetch_blob(p, digest, size, err);
        if (rc == 0 && (rm_mkdir_p(tmp, 0755, err) < 0))
                rc = -1;
        char got[72] = "";
        if (rc == 0 && rm__layer_unpack(blob, tmp, got, err) < 0)
                rc = rm_error_wrap(err, "layer %s", digest);
        if (rc == 0 && strcmp(got, want) != 0)
                rc = rm_error_set(err, RM_DATA_LOSS,
                                  "layer %s unpacks to diff ID %s, the image config says %s",
                                  digest, got, want);
        /* Rename makes the layer appear whole or not at all. */
        if (rc == 0 && rename(tmp, dir) < 0 && errno != ENOTEMPTY && errno != EEXIST)
                rc = rm_error_sys(err, "store layer %s", p->chains[i]);
        rm_remove_tree(tmp, NULL);
        unlink(blob); /* unpacked: the compressed copy is no longer needed */
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (rc == 0)
                rm_log_info("%s: layer %zu/%zu (%s, %lld bytes) unpacked in %.2f s", p->ref_name,
                            i + 1, p->n, digest, (long long)size,
                            (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
        rm__inflight_done(p->svc, key);
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
                if (do_layer(p, i, &e) < 0) {
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

/* From an index, the manifest for linux on this architecture. */
static char *pick_platform(const char *body, const char *name, struct rm_error **err)
{
        cleanup_json struct json_object *doc = json_tokener_parse(body);
        struct json_object *list = NULL;
        if (doc == NULL || !json_object_object_get_ex(doc, "manifests", &list) ||
            !json_object_is_type(list, json_type_array)) {
                rm_error_set(err, RM_INVALID_ARGUMENT, "%s: the manifest list is not valid JSON",
                             name);
                return NULL;
        }
        const char *arch = host_arch();
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                struct json_object *m = json_object_array_get_idx(list, i), *plat = NULL;
                if (!json_object_object_get_ex(m, "platform", &plat))
                        continue;
                const char *os = jstr(plat, "os"), *a = jstr(plat, "architecture");
                const char *d = jstr(m, "digest");
                if (os && a && d && strcmp(os, "linux") == 0 && strcmp(a, arch) == 0 &&
                    rm__digest_ok(d))
                        return xstrdup(d);
        }
        rm_error_set(err, RM_NOT_FOUND, "%s has no image for linux/%s", name, arch);
        return NULL;
}

static int read_config(struct pull *p, struct json_object *manifest, struct json_object **config,
                       char **config_digest, struct rm_error **err)
{
        struct json_object *cd = NULL, *sz = NULL;
        if (!json_object_object_get_ex(manifest, "config", &cd))
                return rm_error_set(err, RM_INVALID_ARGUMENT, "%s: the manifest has no config",
                                    p->ref_name);
        const char *digest = jstr(cd, "digest");
        int64_t size = json_object_object_get_ex(cd, "size", &sz) ? json_object_get_int64(sz) : -1;
        if (!rm__digest_ok(digest))
                return rm_error_set(err, RM_INVALID_ARGUMENT, "%s: the config digest is not valid",
                                    p->ref_name);
        if (size > (int64_t)CONFIG_MAX)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "%s: the image config is %lld bytes, over the %u limit",
                                    p->ref_name, (long long)size, CONFIG_MAX);
        if (fetch_blob(p, digest, size, err) < 0)
                return rm_error_wrap(err, "%s: config", p->ref_name);
        cleanup_free char *path = blob_path(p->svc, digest);
        cleanup_free char *text = rm_read_file(path, CONFIG_MAX, NULL, err);
        if (text == NULL)
                return -1;
        *config = json_tokener_parse(text);
        if (*config == NULL || !json_object_is_type(*config, json_type_object))
                return rm_error_set(err, RM_INVALID_ARGUMENT, "%s: the image config is not JSON",
                                    p->ref_name);
        *config_digest = xstrdup(digest);
        return 0;
}

/* Chain IDs from diff IDs: chain[0] = diff[0], chain[i] = sha256(chain[i-1] + " " + diff[i]). */
static int chain_ids(struct pull *p, struct rm_error **err)
{
        p->chains = xzalloc(sizeof(char *) * (p->n + 1));
        for (size_t i = 0; i < p->n; i++) {
                const char *d = json_object_get_string(json_object_array_get_idx(p->diff_ids, i));
                if (!rm__digest_ok(d))
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "%s: diff ID %zu is not a sha256 digest", p->ref_name,
                                            i);
                if (i == 0) {
                        p->chains[i] = xstrdup(d);
                } else {
                        cleanup_free char *s = xasprintf("%s %s", p->chains[i - 1], d);
                        p->chains[i] = xmalloc(72);
                        rm__sha256_of(s, strlen(s), p->chains[i]);
                }
        }
        return 0;
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
        const char *reference = ref->digest ? ref->digest : ref->tag;
        cleanup_free char *body = NULL, *mt = NULL, *digest = NULL;
        size_t len = 0;
        if (rm__registry_manifest(p->reg, reference, MANIFEST_MAX, &body, &len, &mt, &digest, err) <
            0)
                return -1;
        cleanup_free char *top_digest = xstrdup(digest);
        if (strcmp(mt, MT_OCI_INDEX) == 0 || strcmp(mt, MT_DOCKER_LIST) == 0) {
                cleanup_free char *pick = pick_platform(body, p->ref_name, err);
                if (pick == NULL)
                        return -1;
                free(body);
                free(mt);
                free(digest);
                body = mt = digest = NULL;
                if (rm__registry_manifest(p->reg, pick, MANIFEST_MAX, &body, &len, &mt, &digest,
                                          err) < 0)
                        return -1;
        }
        if (strcmp(mt, MT_OCI_MANIFEST) != 0 && strcmp(mt, MT_DOCKER_MANIFEST) != 0)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "%s: manifest media type \"%s\" is not supported (OCI or "
                                    "Docker schema 2 only)",
                                    p->ref_name, mt);
        cleanup_json struct json_object *manifest = json_tokener_parse(body);
        if (manifest == NULL || !json_object_object_get_ex(manifest, "layers", &p->layers) ||
            !json_object_is_type(p->layers, json_type_array))
                return rm_error_set(err, RM_INVALID_ARGUMENT, "%s: the manifest is not valid",
                                    p->ref_name);
        cleanup_json struct json_object *config = NULL;
        cleanup_free char *config_digest = NULL;
        if (read_config(p, manifest, &config, &config_digest, err) < 0)
                return -1;
        struct json_object *rootfs = NULL;
        if (!json_object_object_get_ex(config, "rootfs", &rootfs) ||
            !json_object_object_get_ex(rootfs, "diff_ids", &p->diff_ids) ||
            !json_object_is_type(p->diff_ids, json_type_array) ||
            json_object_array_length(p->diff_ids) != json_object_array_length(p->layers))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "%s: the config's rootfs.diff_ids do not match the manifest's "
                                    "layers",
                                    p->ref_name);
        p->n = json_object_array_length(p->layers);
        if (chain_ids(p, err) < 0 || all_layers(p, err) < 0)
                return -1;

        int64_t size = 0;
        for (size_t i = 0; i < p->n; i++) {
                struct json_object *sz = NULL;
                if (json_object_object_get_ex(json_object_array_get_idx(p->layers, i), "size", &sz))
                        size += json_object_get_int64(sz);
        }
        struct json_object *doc = json_object_new_object();
        json_object_object_add(doc, "id", json_object_new_string(config_digest));
        json_object_object_add(doc, "size", json_object_new_int64(size));
        struct json_object *chains = json_object_new_array();
        for (size_t i = 0; i < p->n; i++)
                json_object_array_add(chains, json_object_new_string(p->chains[i]));
        json_object_object_add(doc, "chain", chains);
        json_object_object_add(doc, "config", config_subset(config));
        cleanup_free char *tag = ref->tag ? xasprintf("%s:%s", p->repo, ref->tag) : NULL;
        cleanup_free char *repo_digest = xasprintf("%s@%s", p->repo, top_digest);
        if (rm__img_commit(p->svc, doc, tag, repo_digest, err) < 0)
                return -1;
        *image_id = xstrdup(config_digest);
        return 0;
}

/* ---- endpoints ---- */

static bool loopback(const char *host)
{
        return strncmp(host, "localhost", 9) == 0 || strncmp(host, "127.", 4) == 0 ||
               strncmp(host, "[::1]", 5) == 0;
}

static bool insecure(struct rm_image_service *svc, const char *host)
{
        if (loopback(host))
                return true;
        for (size_t i = 0; svc->insecure && i < json_object_array_length(svc->insecure); i++) {
                if (strcmp(json_object_get_string(json_object_array_get_idx(svc->insecure, i)),
                           host) == 0)
                        return true;
        }
        return false;
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
        (void)cancel; /* not honoured yet */
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
                struct pull p = {.svc = svc, .ref_name = full, .repo = repo};
                pthread_mutex_init(&p.err_lock, NULL);
                p.reg = rm__registry_new(ep, ref.path, &creds);
                struct rm_error *e = NULL;
                rc = pull_from(&p, &ref, image_id, &e);
                rm__registry_free(p.reg);
                for (size_t k = 0; p.chains && k < p.n; k++)
                        free(p.chains[k]);
                free(p.chains);
                pthread_mutex_destroy(&p.err_lock);
                if (rc < 0) {
                        bool last = i + 1 == json_object_array_length(eps);
                        if (!last)
                                rm_log_warn("pull %s from %s: %s; trying the next endpoint", full,
                                            ep, e->msg);
                        if (last) {
                                *err = e;
                                rm_error_wrap(err, "pull %s", full);
                        } else {
                                rm_error_free(e);
                        }
                }
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (rc == 0)
                rm_log_info("pulled %s as %s in %.2f s", full, *image_id,
                            (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
        rm_image_ref_release(&ref);
        return rc;
}
