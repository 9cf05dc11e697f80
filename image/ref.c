/* Image references as Kubernetes and Docker normalise them:
 * busybox -> docker.io/library/busybox:latest, host:5000/a/b@sha256:... kept as given. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "image_internal.h"
#include "remora/cleanup.h"
#include "remora/xalloc.h"

void rm_image_ref_release(struct rm_image_ref *r)
{
        free(r->domain);
        free(r->path);
        free(r->tag);
        free(r->digest);
        memset(r, 0, sizeof(*r));
}

/* One path component: lower-case alphanumerics joined by '.', '_', "__" or dashes. */
static bool component_ok(const char *s, size_t n)
{
        if (n == 0 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
                return false;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];
                if (islower(c) || isdigit(c))
                        continue;
                if (c != '.' && c != '_' && c != '-')
                        return false;
                /* separators: ".", "_", "__" or any run of "-" */
                if (c == '.' && (s[i + 1] == '.' || s[i + 1] == '_' || s[i + 1] == '-'))
                        return false;
                if (c == '_' && s[i + 1] == '_' && (s[i + 2] == '_' || s[i + 2] == '.'))
                        return false;
        }
        return true;
}

static bool domain_ok(const char *s, size_t n)
{
        if (n == 0 || n > 255)
                return false;
        /* host[:port], the port 1-65535 */
        const char *colon = memchr(s, ':', n);
        if (colon && s[0] != '[') {
                size_t plen = n - (size_t)(colon - s) - 1;
                if (plen == 0 || plen > 5 || strspn(colon + 1, "0123456789") < plen ||
                    atoi(colon + 1) < 1 || atoi(colon + 1) > 65535)
                        return false;
                n = (size_t)(colon - s);
        }
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];
                if (!isalnum(c) && c != '.' && c != '-' && c != ':' && c != '[' && c != ']')
                        return false;
        }
        return true;
}

static int bad(const char *s, const char *why, struct rm_error **err)
{
        return rm_error_set(err, RM_INVALID_ARGUMENT, "image reference \"%s\" is invalid: %s", s,
                            why);
}

int rm_image_ref_parse(const char *s, struct rm_image_ref *out, struct rm_error **err)
{
        memset(out, 0, sizeof(*out));
        if (s == NULL || *s == '\0')
                return rm_error_set(err, RM_INVALID_ARGUMENT, "image reference is empty");
        if (strlen(s) > 512)
                return bad(s, "longer than 512 characters", err);
        cleanup_free char *copy = xstrdup(s);
        char *at = strchr(copy, '@');
        if (at) {
                *at = '\0';
                if (!rm__digest_ok(at + 1))
                        return bad(s, "the digest must be sha256: and 64 lower-case hex digits",
                                   err);
                out->digest = xstrdup(at + 1);
        }
        /* A tag follows the last ':' after the last '/' (a ':' before it is a port). */
        char *slash = strrchr(copy, '/');
        char *colon = strrchr(slash ? slash : copy, ':');
        if (colon) {
                *colon = '\0';
                const char *tag = colon + 1;
                size_t n = strlen(tag);
                if (n == 0 || n > 128 || !(isalnum((unsigned char)tag[0]) || tag[0] == '_') ||
                    strspn(tag,
                           "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
                        n) {
                        rm_image_ref_release(out);
                        return bad(s, "the tag may hold letters, digits, '_', '.' and '-'", err);
                }
                out->tag = xstrdup(tag);
        }
        /* The first component is a registry when it looks like a host. */
        char *first_end = strchr(copy, '/');
        const char *path = copy;
        if (first_end && (memchr(copy, '.', (size_t)(first_end - copy)) ||
                          memchr(copy, ':', (size_t)(first_end - copy)) ||
                          strncmp(copy, "localhost", (size_t)(first_end - copy)) == 0)) {
                if (!domain_ok(copy, (size_t)(first_end - copy))) {
                        rm_image_ref_release(out);
                        return bad(s, "the registry host is not a host name", err);
                }
                out->domain = strndup(copy, (size_t)(first_end - copy));
                path = first_end + 1;
        } else {
                out->domain = xstrdup("docker.io");
        }
        if (strcmp(out->domain, "index.docker.io") == 0) {
                free(out->domain);
                out->domain = xstrdup("docker.io");
        }
        if (*path == '\0') {
                rm_image_ref_release(out);
                return bad(s, "no repository name", err);
        }
        for (const char *p = path; *p;) {
                size_t n = strcspn(p, "/");
                if (!component_ok(p, n)) {
                        rm_image_ref_release(out);
                        return bad(s,
                                   "repository names are lower-case letters, digits and "
                                   "separators",
                                   err);
                }
                p += n + (p[n] == '/');
                if (p[-1] == '/' && *p == '\0') {
                        rm_image_ref_release(out);
                        return bad(s, "the repository name ends with '/'", err);
                }
        }
        if (strcmp(out->domain, "docker.io") == 0 && strchr(path, '/') == NULL)
                out->path = xasprintf("library/%s", path);
        else
                out->path = xstrdup(path);
        if (out->tag == NULL && out->digest == NULL)
                out->tag = xstrdup("latest");
        return 0;
}

char *rm_image_ref_repo(const struct rm_image_ref *r)
{
        return xasprintf("%s/%s", r->domain, r->path);
}

char *rm_image_ref_string(const struct rm_image_ref *r)
{
        if (r->digest && r->tag)
                return xasprintf("%s/%s:%s@%s", r->domain, r->path, r->tag, r->digest);
        if (r->digest)
                return xasprintf("%s/%s@%s", r->domain, r->path, r->digest);
        return xasprintf("%s/%s:%s", r->domain, r->path, r->tag);
}
