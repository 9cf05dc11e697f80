/* The OCI distribution (Docker Registry HTTP API v2) client over libcurl: manifests and
 * blobs, with anonymous, Bearer-token and Basic authentication. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "image_internal.h"
#include "remora/cleanup.h"
#include "remora/crashpoint.h"
#include "remora/fsutil.h"
#include "remora/log.h"
#include "remora/xalloc.h"

#define TOKEN_MAX_BYTES (1 << 20)

static const char *const manifest_types =
    "Accept: application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json";

struct rm_registry {
        char *endpoint;
        char *repo;
        char *username;
        char *password;
        char *token; /* the Bearer token once obtained (or given as registry_token) */
        bool basic;  /* the registry asked for Basic */
        struct json_object *insecure;
        const struct rm_cancel *cancel;
};

struct rm_registry *rm__registry_new(const char *endpoint, const char *repo,
                                     const struct rm_registry_auth *auth,
                                     struct json_object *insecure, const struct rm_cancel *cancel)
{
        struct rm_registry *r = xzalloc(sizeof(*r));
        r->insecure = insecure;
        r->cancel = cancel;
        r->endpoint = xstrdup(endpoint);
        r->repo = xstrdup(repo);
        if (auth && auth->username && *auth->username) {
                r->username = xstrdup(auth->username);
                r->password = xstrdup(auth->password ? auth->password : "");
        } else if (auth && auth->auth && *auth->auth) {
                /* "auth" is base64(user:password), as in a docker config.json. */
                size_t n = strlen(auth->auth);
                cleanup_free unsigned char *dec = xzalloc(n + 4);
                int len = EVP_DecodeBlock(dec, (const unsigned char *)auth->auth, (int)n);
                while (len > 0 && dec[len - 1] == '\0')
                        len--;
                char *colon = len > 0 ? memchr(dec, ':', (size_t)len) : NULL;
                if (colon) {
                        r->username = strndup((char *)dec, (size_t)(colon - (char *)dec));
                        r->password = strndup(colon + 1, (size_t)(len - (colon + 1 - (char *)dec)));
                }
        }
        if (auth && auth->registry_token && *auth->registry_token)
                r->token = xstrdup(auth->registry_token);
        else if (auth && auth->identity_token && *auth->identity_token && r->username == NULL) {
                /* An identity token is a refresh token for the token endpoint; without a
                 * token server exchange, registries also accept it as a password. */
                r->username = xstrdup("<token>");
                r->password = xstrdup(auth->identity_token);
        }
        return r;
}

void rm__registry_free(struct rm_registry *r)
{
        if (r == NULL)
                return;
        free(r->endpoint);
        free(r->repo);
        free(r->username);
        free(r->password);
        free(r->token);
        free(r);
}

/* ---- one HTTP exchange ---- */

struct response {
        long status; /* of the response being received */
        char *content_type;
        char *challenge; /* WWW-Authenticate */
        /* A 200's body goes into memory or into fd (with a running digest); at most max
         * bytes (0: no limit). Other responses' bodies are dropped. */
        char *mem;
        size_t len;
        size_t max;
        bool too_big;
        int fd;
        struct rm_sha256 *hash;
        struct rm__space *space;
        struct rm_error *write_err; /* why a write was refused */
        bool cancelled;
        const struct rm_cancel *cancel;
};

static void response_release(struct response *rsp)
{
        free(rsp->content_type);
        free(rsp->challenge);
        free(rsp->mem);
        rm_error_free(rsp->write_err);
        memset(rsp, 0, sizeof(*rsp));
}

static char *header_value(const char *line, size_t n, const char *name)
{
        size_t k = strlen(name);
        if (n <= k + 1 || strncasecmp(line, name, k) != 0 || line[k] != ':')
                return NULL;
        const char *v = line + k + 1;
        const char *end = line + n;
        while (v < end && (*v == ' ' || *v == '\t'))
                v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
                end--;
        return strndup(v, (size_t)(end - v));
}

static size_t on_header(char *line, size_t size, size_t n, void *data)
{
        struct response *rsp = data;
        size_t len = size * n;
        /* A new status line starts a new response (after a 100 or a redirect). */
        if (len >= 12 && strncmp(line, "HTTP/", 5) == 0) {
                free(rsp->content_type);
                free(rsp->challenge);
                rsp->content_type = rsp->challenge = NULL;
                const char *sp = memchr(line, ' ', len);
                rsp->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        }
        char *v = header_value(line, len, "Content-Type");
        if (v) {
                free(rsp->content_type);
                rsp->content_type = v;
        }
        v = header_value(line, len, "WWW-Authenticate");
        if (v) {
                free(rsp->challenge);
                rsp->challenge = v;
        }
        return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
        struct response *rsp = arg;
        size_t len = size * n;
        if (rsp->status != 200)
                return len; /* an error page or a redirect's body: nobody reads it */
        if (rsp->max && (rsp->len + len > rsp->max || rsp->len + len < rsp->len)) {
                rsp->too_big = true;
                return 0; /* ends the transfer */
        }
        if (rsp->fd >= 0) {
                if (rm__space_take(rsp->space, len, &rsp->write_err) < 0)
                        return 0;
                if (rm_write_all(rsp->fd, data, len) < 0) {
                        rm_error_sys(&rsp->write_err, "write the download");
                        return 0;
                }
                if (rsp->len == 0)
                        rm_crashpoint("pull.blob_partial");
                rm__sha256_update(rsp->hash, data, len);
                rsp->len += len;
                return len;
        }
        rsp->mem = xrealloc(rsp->mem, rsp->len + len + 1);
        memcpy(rsp->mem + rsp->len, data, len);
        rsp->len += len;
        rsp->mem[rsp->len] = '\0';
        return len;
}

/* libcurl before 8.17 opens its sockets without close-on-exec; a socket of a pull in
 * flight must not reach a shim or runc started meanwhile. */
static curl_socket_t open_cloexec_socket(void *clientp, curlsocktype purpose,
                                         struct curl_sockaddr *addr)
{
        (void)clientp;
        (void)purpose;
        return socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
}

/* Called by curl at least once a second: stop on cancellation, and stop a body that
 * announces more than it may have before any of it arrives. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
        (void)dlnow, (void)ultotal, (void)ulnow;
        struct response *rsp = arg;
        if (rm_cancelled(rsp->cancel)) {
                rsp->cancelled = true;
                return 1;
        }
        if (rsp->status == 200 && rsp->max && dltotal > 0 && (uint64_t)dltotal > rsp->max) {
                rsp->too_big = true;
                return 1;
        }
        return 0;
}

/* One request, no redirect followed. with_auth: send the registry's credentials. */
static int http_once(struct rm_registry *r, const char *url, const char *accept, bool with_auth,
                     struct response *rsp, char **location, struct rm_error **err)
{
        CURL *c = curl_easy_init();
        if (c == NULL)
                return rm_error_set(err, RM_INTERNAL, "curl_easy_init failed");
        struct curl_slist *hdrs = NULL;
        if (accept)
                hdrs = curl_slist_append(hdrs, accept);
        cleanup_free char *bearer = NULL;
        if (with_auth && r->token) {
                bearer = xasprintf("Authorization: Bearer %s", r->token);
                hdrs = curl_slist_append(hdrs, bearer);
        } else if (with_auth && r->basic && r->username) {
                curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
                curl_easy_setopt(c, CURLOPT_USERNAME, r->username);
                curl_easy_setopt(c, CURLOPT_PASSWORD, r->password);
        }
        char errbuf[CURL_ERROR_SIZE] = "";
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_cloexec_socket);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 15L);
        /* A stalled transfer (under 1 KiB/s for a minute) is given up. */
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, rsp);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, rsp);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, rsp);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(c, CURLOPT_USERAGENT,
                         "remora/"
                         "0.1");
        rsp->cancel = r->cancel;
        CURLcode rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &rsp->status);
        char *loc = NULL;
        if (rc == CURLE_OK && rsp->status >= 300 && rsp->status < 400 &&
            curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &loc) == CURLE_OK && loc)
                *location = xstrdup(loc);
        curl_easy_cleanup(c);
        curl_slist_free_all(hdrs);
        if (rsp->cancelled)
                return rm__cancel_check(r->cancel, err);
        if (rc == CURLE_OK)
                return 0;
        if (rsp->write_err) {
                if (err) {
                        rm_error_free(*err);
                        *err = steal_pointer(&rsp->write_err);
                }
                return -1;
        }
        if (rsp->too_big)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "%s: larger than %zu bytes", url,
                                    rsp->max);
        return rm_error_set(err, RM_UNAVAILABLE, "%s: %s", url,
                            *errbuf ? errbuf : curl_easy_strerror(rc));
}

/* GET url, following up to five redirects by hand so that each hop is checked: plain
 * HTTP only to hosts allowed it, credentials only to the host first asked and never in
 * the clear to a host not allowed plain HTTP. */
static int http_get(struct rm_registry *r, const char *url, const char *accept, bool use_auth,
                    struct response *rsp, struct rm_error **err)
{
        bool https0;
        cleanup_free char *host0 = NULL;
        if (rm__url_split(url, &https0, &host0) < 0)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "%s is not an http(s) URL", url);
        cleanup_free char *cur = xstrdup(url);
        for (int hop = 0;; hop++) {
                bool https;
                cleanup_free char *host = NULL;
                if (rm__url_split(cur, &https, &host) < 0)
                        return rm_error_set(err, RM_UNAVAILABLE,
                                            "%s: redirected to %.200s, not an http(s) URL", url,
                                            cur);
                bool plain_ok = rm__host_plain_ok(r->insecure, host);
                if (hop > 0 && !https && !plain_ok)
                        return rm_error_set(err, RM_UNAVAILABLE,
                                            "%s: redirected to plain HTTP at %s, which is neither "
                                            "loopback nor in image.insecure_registries",
                                            url, host);
                bool same = strcmp(host, host0) == 0 && https == https0;
                bool auth = use_auth && same && (https || plain_ok);
                cleanup_free char *next = NULL;
                free(rsp->mem);
                rsp->mem = NULL;
                rsp->len = 0;
                if (http_once(r, cur, accept, auth, rsp, &next, err) < 0)
                        return -1;
                if (next == NULL)
                        return 0;
                if (hop == 5)
                        return rm_error_set(err, RM_UNAVAILABLE, "%s: more than 5 redirects", url);
                free(cur);
                cur = steal_pointer(&next);
        }
}

/* One parameter of a WWW-Authenticate challenge: realm="..." -> value. */
static char *challenge_param(const char *ch, const char *key)
{
        size_t k = strlen(key);
        for (const char *p = ch; (p = strstr(p, key));) {
                bool start = p == ch || p[-1] == ' ' || p[-1] == ',';
                if (start && p[k] == '=' && p[k + 1] == '"') {
                        const char *v = p + k + 2;
                        const char *end = strchr(v, '"');
                        return end ? strndup(v, (size_t)(end - v)) : NULL;
                }
                p += k;
        }
        return NULL;
}

/* Answer a 401: fetch a Bearer token from the realm, or switch to Basic. */
static int authenticate(struct rm_registry *r, const char *challenge, struct rm_error **err)
{
        if (challenge && strncasecmp(challenge, "Basic", 5) == 0) {
                if (r->username == NULL || r->basic)
                        return rm_error_set(err, RM_UNAUTHENTICATED,
                                            "%s asks for credentials (Basic); give them in the "
                                            "request's auth config",
                                            r->endpoint);
                r->basic = true;
                return 0;
        }
        if (challenge == NULL || strncasecmp(challenge, "Bearer", 6) != 0)
                return rm_error_set(err, RM_UNAUTHENTICATED,
                                    "%s refused access with no usable challenge", r->endpoint);
        cleanup_free char *realm = challenge_param(challenge, "realm");
        cleanup_free char *service = challenge_param(challenge, "service");
        cleanup_free char *scope = challenge_param(challenge, "scope");
        if (realm == NULL)
                return rm_error_set(err, RM_UNAUTHENTICATED, "%s: Bearer challenge without realm",
                                    r->endpoint);
        if (scope == NULL)
                scope = xasprintf("repository:%s:pull", r->repo);
        CURL *esc = curl_easy_init();
        char *s_esc = curl_easy_escape(esc, service ? service : "", 0);
        char *sc_esc = curl_easy_escape(esc, scope, 0);
        cleanup_free char *url = xasprintf("%s%sservice=%s&scope=%s", realm,
                                           strchr(realm, '?') ? "&" : "?", s_esc, sc_esc);
        curl_free(s_esc);
        curl_free(sc_esc);
        curl_easy_cleanup(esc);

        struct response rsp = {.fd = -1, .max = TOKEN_MAX_BYTES};
        free(r->token);
        r->token = NULL;
        r->basic = r->username != NULL; /* the token server takes the user's credentials */
        int rc = http_get(r, url, NULL, true, &rsp, err);
        r->basic = false;
        if (rc == 0 && rsp.status != 200)
                rc = rm_error_set(err, rsp.status == 401 ? RM_UNAUTHENTICATED : RM_UNAVAILABLE,
                                  "token server %s answered HTTP %ld", realm, rsp.status);
        if (rc == 0) {
                cleanup_json struct json_object *doc = json_tokener_parse(rsp.mem ? rsp.mem : "");
                struct json_object *tok = NULL;
                if (doc &&
                    (json_object_object_get_ex(doc, "token", &tok) ||
                     json_object_object_get_ex(doc, "access_token", &tok)) &&
                    json_object_is_type(tok, json_type_string))
                        r->token = xstrdup(json_object_get_string(tok));
                else
                        rc = rm_error_set(err, RM_UNAVAILABLE, "token server %s sent no token",
                                          realm);
        }
        response_release(&rsp);
        return rc;
}

/* GET with one round of authentication on 401. */
static int get_authed(struct rm_registry *r, const char *url, const char *accept,
                      struct response *rsp, struct rm_error **err)
{
        for (int attempt = 0; attempt < 2; attempt++) {
                if (rsp->fd >= 0) {
                        if (ftruncate(rsp->fd, 0) < 0 || lseek(rsp->fd, 0, SEEK_SET) < 0)
                                return rm_error_sys(err, "rewind a download");
                        rm__sha256_final(rsp->hash, (char[72]){0});
                        rm__sha256_init(rsp->hash);
                        rsp->len = 0;
                }
                if (http_get(r, url, accept, true, rsp, err) < 0)
                        return -1;
                if (rsp->status != 401 || attempt == 1)
                        break;
                cleanup_free char *challenge = rsp->challenge ? xstrdup(rsp->challenge) : NULL;
                free(rsp->mem);
                rsp->mem = NULL;
                rsp->len = 0;
                if (authenticate(r, challenge, err) < 0)
                        return -1;
        }
        if (rsp->status == 401)
                return rm_error_set(err, RM_UNAUTHENTICATED, "%s: access denied (HTTP 401)", url);
        if (rsp->status == 404)
                return rm_error_set(err, RM_NOT_FOUND, "%s: not found (HTTP 404)", url);
        if (rsp->status != 200)
                return rm_error_set(err, RM_UNAVAILABLE, "%s: HTTP %ld", url, rsp->status);
        return 0;
}

int rm__registry_manifest(struct rm_registry *r, const char *reference, size_t max, char **body,
                          size_t *len, char **media_type, char **digest, struct rm_error **err)
{
        /* A tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}) or a digest: nothing that can change
         * the URL's path. */
        size_t n = strlen(reference);
        bool tag = n > 0 && n <= 128 && reference[0] != '.' && reference[0] != '-' &&
                   strspn(reference, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "0123456789_.-") == n;
        if (!tag && !rm__digest_ok(reference))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "manifest reference \"%.80s\" is neither a tag nor a digest",
                                    reference);
        cleanup_free char *url =
            xasprintf("%s/v2/%s/manifests/%s", r->endpoint, r->repo, reference);
        struct response rsp = {.fd = -1, .max = max};
        if (get_authed(r, url, manifest_types, &rsp, err) < 0) {
                response_release(&rsp);
                return -1;
        }
        char d[72];
        rm__sha256_of(rsp.mem ? rsp.mem : "", rsp.len, d);
        if (!tag && strcmp(reference, d) != 0) {
                response_release(&rsp);
                return rm_error_set(err, RM_DATA_LOSS,
                                    "manifest %s@%s: the registry sent content with digest %s",
                                    r->repo, reference, d);
        }
        *body = rsp.mem ? rsp.mem : xstrdup("");
        rsp.mem = NULL;
        *len = rsp.len;
        *media_type = xstrdup(rsp.content_type ? rsp.content_type : "");
        (*media_type)[strcspn(*media_type, "; ")] = '\0';
        *digest = xstrdup(d);
        response_release(&rsp);
        return 0;
}

int rm__registry_blob(struct rm_registry *r, const char *what, const char *digest, int64_t size,
                      int fd, struct rm__space *space, struct rm_error **err)
{
        if (rm__digest_check(digest, what, err) < 0)
                return -1;
        if (size < 0)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "%s has no size", what);
        cleanup_free char *url = xasprintf("%s/v2/%s/blobs/%s", r->endpoint, r->repo, digest);
        struct rm_sha256 h;
        rm__sha256_init(&h);
        /* One byte over the declared size is enough to know it lies. */
        struct response rsp = {.fd = fd, .hash = &h, .space = space, .max = (size_t)size + 1};
        int rc = get_authed(r, url, NULL, &rsp, err);
        char got[72];
        rm__sha256_final(&h, got);
        if (rc < 0 && rsp.too_big)
                rc = rm_error_set(err, RM_DATA_LOSS,
                                  "%s: the registry sent more than the %lld bytes %s.size "
                                  "declares; the download was cut off",
                                  digest, (long long)size, what);
        if (rc == 0 && (int64_t)rsp.len != size)
                rc = rm_error_set(err, RM_DATA_LOSS,
                                  "%s: the registry sent %zu bytes, %s.size declares %lld", digest,
                                  rsp.len, what, (long long)size);
        if (rc == 0 && strcmp(got, digest) != 0)
                rc = rm_error_set(err, RM_DATA_LOSS, "%s: the registry sent content with digest %s",
                                  digest, got);
        if (rc == 0 && fsync(fd) < 0)
                rc = rm_error_sys(err, "fsync blob %s", digest);
        response_release(&rsp);
        return rc;
}
