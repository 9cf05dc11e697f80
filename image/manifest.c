/* Parsing what a registry sends about an image: indexes (manifest lists), manifests and
 * image configs. Nothing here trusts the input: every descriptor must carry a mediaType,
 * a valid digest and a size, and an error names the field ("manifest.layers[2].digest")
 * so an operator can see which part of which document was refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image_internal.h"
#include "remora/cleanup.h"
#include "remora/xalloc.h"

static const char *const layer_types[] = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    NULL,
};

bool rm__digest_ok(const char *d)
{
        return d && strncmp(d, "sha256:", 7) == 0 && strlen(d) == 71 &&
               strspn(d + 7, "0123456789abcdef") == 64;
}

int rm__digest_check(const char *d, const char *field, struct rm_error **err)
{
        if (d == NULL)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "%s is missing", field);
        if (rm__digest_ok(d))
                return 0;
        return rm_error_set(err, RM_INVALID_ARGUMENT,
                            "%s is not a digest remora accepts (\"sha256:\" and 64 lower-case "
                            "hex digits): \"%.80s\"",
                            field, d);
}

/* Parse exactly len bytes as one JSON object (no trailing garbage, no NUL inside). */
static struct json_object *parse_object(const char *body, size_t len, const char *what,
                                        struct rm_error **err)
{
        if (len > INT32_MAX || memchr(body, '\0', len)) {
                rm_error_set(err, RM_INVALID_ARGUMENT, "the %s is not valid JSON", what);
                return NULL;
        }
        struct json_tokener *tok = json_tokener_new();
        struct json_object *doc = json_tokener_parse_ex(tok, body, (int)len);
        enum json_tokener_error jerr = json_tokener_get_error(tok);
        size_t used = json_tokener_get_parse_end(tok);
        json_tokener_free(tok);
        if (doc && jerr == json_tokener_success) {
                /* only white space may follow */
                while (used < len && strchr(" \t\r\n", body[used]))
                        used++;
        }
        if (doc == NULL || jerr != json_tokener_success || used != len ||
            !json_object_is_type(doc, json_type_object)) {
                json_object_put(doc);
                rm_error_set(err, RM_INVALID_ARGUMENT, "the %s is not a valid JSON object", what);
                return NULL;
        }
        return doc;
}

static struct json_object *get(struct json_object *o, const char *key)
{
        struct json_object *v = NULL;
        return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

void rm__desc_release(struct rm__desc *d)
{
        free(d->media_type);
        free(d->digest);
        memset(d, 0, sizeof(*d));
}

/* A descriptor at field: mediaType (a string), digest (valid), size (an integer >= 0). */
static int read_desc(struct json_object *o, const char *field, struct rm__desc *out,
                     struct rm_error **err)
{
        memset(out, 0, sizeof(*out));
        if (o == NULL || !json_object_is_type(o, json_type_object))
                return rm_error_set(err, RM_INVALID_ARGUMENT, "%s is not a descriptor object",
                                    field);
        struct json_object *mt = get(o, "mediaType"), *d = get(o, "digest"), *sz = get(o, "size");
        if (mt == NULL || !json_object_is_type(mt, json_type_string) ||
            json_object_get_string_len(mt) == 0)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "%s.mediaType is missing", field);
        if (d == NULL || !json_object_is_type(d, json_type_string))
                return rm_error_set(err, RM_INVALID_ARGUMENT, "%s.digest is missing", field);
        cleanup_free char *dfield = xasprintf("%s.digest", field);
        if (rm__digest_check(json_object_get_string(d), dfield, err) < 0)
                return -1;
        if (sz == NULL || !json_object_is_type(sz, json_type_int))
                return rm_error_set(err, RM_INVALID_ARGUMENT, "%s.size is missing", field);
        int64_t size = json_object_get_int64(sz);
        if (size < 0 || size == INT64_MAX)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "%s.size is out of range", field);
        out->media_type = xstrdup(json_object_get_string(mt));
        out->digest = xstrdup(json_object_get_string(d));
        out->size = size;
        return 0;
}

int rm__index_pick(const char *body, size_t len, const char *arch, struct rm__desc *out,
                   struct rm_error **err)
{
        memset(out, 0, sizeof(*out));
        cleanup_json struct json_object *doc = parse_object(body, len, "manifest list", err);
        if (doc == NULL)
                return -1;
        struct json_object *list = get(doc, "manifests");
        if (list == NULL || !json_object_is_type(list, json_type_array))
                return rm_error_set(err, RM_INVALID_ARGUMENT, "index.manifests is missing");
        size_t n = json_object_array_length(list);
        if (n > RM__MAX_INDEX_ENTRIES)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "index.manifests has %zu entries, over the limit of %d", n,
                                    RM__MAX_INDEX_ENTRIES);
        /* Every entry is checked, not only the one picked: a list with a bad entry is not
         * something a well-behaved registry serves. */
        for (size_t i = 0; i < n; i++) {
                struct json_object *m = json_object_array_get_idx(list, i);
                char field[64];
                snprintf(field, sizeof(field), "index.manifests[%zu]", i);
                struct rm__desc d;
                if (read_desc(m, field, &d, err) < 0) {
                        rm__desc_release(&d);
                        rm__desc_release(out);
                        return -1;
                }
                struct json_object *plat = get(m, "platform");
                struct json_object *os = plat ? get(plat, "os") : NULL;
                struct json_object *a = plat ? get(plat, "architecture") : NULL;
                if (out->digest == NULL && os && a && json_object_is_type(os, json_type_string) &&
                    json_object_is_type(a, json_type_string) &&
                    strcmp(json_object_get_string(os), "linux") == 0 &&
                    strcmp(json_object_get_string(a), arch) == 0)
                        *out = d;
                else
                        rm__desc_release(&d);
        }
        if (out->digest == NULL)
                return rm_error_set(err, RM_NOT_FOUND,
                                    "the manifest list has no image for linux/%s", arch);
        return 0;
}

void rm__manifest_release(struct rm__manifest *m)
{
        rm__desc_release(&m->config);
        for (size_t i = 0; i < m->n_layers; i++)
                rm__desc_release(&m->layers[i]);
        free(m->layers);
        memset(m, 0, sizeof(*m));
}

int rm__manifest_parse(const char *body, size_t len, int64_t max_config, struct rm__manifest *out,
                       struct rm_error **err)
{
        memset(out, 0, sizeof(*out));
        cleanup_json struct json_object *doc = parse_object(body, len, "manifest", err);
        if (doc == NULL)
                return -1;
        if (read_desc(get(doc, "config"), "manifest.config", &out->config, err) < 0)
                return -1;
        if (out->config.size > max_config) {
                rm__manifest_release(out);
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "manifest.config.size is %lld bytes, over the limit "
                                    "image.max_config_bytes of %lld",
                                    (long long)out->config.size, (long long)max_config);
        }
        struct json_object *layers = get(doc, "layers");
        if (layers == NULL || !json_object_is_type(layers, json_type_array)) {
                rm__manifest_release(out);
                return rm_error_set(err, RM_INVALID_ARGUMENT, "manifest.layers is missing");
        }
        size_t n = json_object_array_length(layers);
        if (n > RM__MAX_LAYERS) {
                rm__manifest_release(out);
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "manifest.layers has %zu entries, over the limit of %d", n,
                                    RM__MAX_LAYERS);
        }
        out->layers = xzalloc(sizeof(*out->layers) * (n + 1));
        for (size_t i = 0; i < n; i++) {
                char field[64];
                snprintf(field, sizeof(field), "manifest.layers[%zu]", i);
                int rc =
                    read_desc(json_object_array_get_idx(layers, i), field, &out->layers[i], err);
                out->n_layers = i + 1;
                if (rc == 0) {
                        bool known = false;
                        for (const char *const *t = layer_types; *t && !known; t++)
                                known = strcmp(*t, out->layers[i].media_type) == 0;
                        if (!known)
                                rc = rm_error_set(err, RM_INVALID_ARGUMENT,
                                                  "%s.mediaType \"%.100s\" is not a layer type "
                                                  "remora unpacks (OCI tar, tar+gzip, tar+zstd "
                                                  "or Docker tar.gzip)",
                                                  field, out->layers[i].media_type);
                }
                if (rc < 0) {
                        rm__manifest_release(out);
                        return -1;
                }
        }
        return 0;
}

int rm__config_parse(const char *body, size_t len, size_t n_layers, struct json_object **config,
                     char ***diff_ids, struct rm_error **err)
{
        *config = NULL;
        *diff_ids = NULL;
        cleanup_json struct json_object *doc = parse_object(body, len, "image config", err);
        if (doc == NULL)
                return -1;
        struct json_object *rootfs = get(doc, "rootfs");
        struct json_object *ids = rootfs ? get(rootfs, "diff_ids") : NULL;
        if (ids == NULL || !json_object_is_type(ids, json_type_array))
                return rm_error_set(err, RM_INVALID_ARGUMENT, "config.rootfs.diff_ids is missing");
        if (json_object_array_length(ids) != n_layers)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.rootfs.diff_ids has %zu entries, the manifest %zu "
                                    "layers",
                                    json_object_array_length(ids), n_layers);
        char **out = xzalloc(sizeof(char *) * (n_layers + 1));
        for (size_t i = 0; i < n_layers; i++) {
                struct json_object *d = json_object_array_get_idx(ids, i);
                char field[64];
                snprintf(field, sizeof(field), "config.rootfs.diff_ids[%zu]", i);
                if (rm__digest_check(
                        json_object_is_type(d, json_type_string) ? json_object_get_string(d) : NULL,
                        field, err) < 0) {
                        rm__strv_free(out);
                        return -1;
                }
                out[i] = xstrdup(json_object_get_string(d));
        }
        struct json_object *c = get(doc, "config");
        if (c && !json_object_is_type(c, json_type_object) &&
            !json_object_is_type(c, json_type_null)) {
                rm__strv_free(out);
                return rm_error_set(err, RM_INVALID_ARGUMENT, "config.config is not an object");
        }
        *config = steal_pointer(&doc);
        *diff_ids = out;
        return 0;
}

void rm__strv_free(char **v)
{
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

void rm__chain_ids(char *const *diff_ids, size_t n, char (*out)[72])
{
        for (size_t i = 0; i < n; i++) {
                if (i == 0) {
                        snprintf(out[0], 72, "%s", diff_ids[0]);
                        continue;
                }
                char s[72 + 1 + 72];
                int len = snprintf(s, sizeof(s), "%s %s", out[i - 1], diff_ids[i]);
                rm__sha256_of(s, (size_t)len, out[i]);
        }
}
