/* Which hosts may be spoken to over plain HTTP: a host that *is* loopback (parsed, never
 * a prefix match: "localhost.example" is not) or one the operator listed in
 * image.insecure_registries. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "image_internal.h"
#include "remora/xalloc.h"

/* ":<1-65535>" or nothing. */
static bool port_ok(const char *p)
{
        if (*p == '\0')
                return true;
        if (*p != ':' || p[1] == '\0' || strlen(p + 1) > 5 ||
            strspn(p + 1, "0123456789") != strlen(p + 1))
                return false;
        long v = strtol(p + 1, NULL, 10);
        return v >= 1 && v <= 65535;
}

bool rm__host_is_loopback(const char *hostport)
{
        if (hostport == NULL)
                return false;
        if (hostport[0] == '[') {
                const char *end = strchr(hostport, ']');
                if (end == NULL || !port_ok(end + 1) || (size_t)(end - hostport - 1) >= 64)
                        return false;
                char addr[64];
                memcpy(addr, hostport + 1, (size_t)(end - hostport - 1));
                addr[end - hostport - 1] = '\0';
                struct in6_addr a6;
                return inet_pton(AF_INET6, addr, &a6) == 1 &&
                       memcmp(&a6, &in6addr_loopback, sizeof(a6)) == 0;
        }
        size_t n = strcspn(hostport, ":");
        if (!port_ok(hostport + n) || n == 0 || n >= 64)
                return false;
        char host[64];
        memcpy(host, hostport, n);
        host[n] = '\0';
        if (strcasecmp(host, "localhost") == 0)
                return true;
        struct in_addr a4;
        return inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

bool rm__host_plain_ok(struct json_object *insecure, const char *hostport)
{
        if (rm__host_is_loopback(hostport))
                return true;
        for (size_t i = 0; insecure && i < json_object_array_length(insecure); i++) {
                const char *h = json_object_get_string(json_object_array_get_idx(insecure, i));
                if (h && strcasecmp(h, hostport) == 0)
                        return true;
        }
        return false;
}

int rm__url_split(const char *url, bool *https, char **hostport)
{
        const char *rest;
        if (strncasecmp(url, "https://", 8) == 0) {
                *https = true;
                rest = url + 8;
        } else if (strncasecmp(url, "http://", 7) == 0) {
                *https = false;
                rest = url + 7;
        } else {
                return -1;
        }
        size_t n = strcspn(rest, "/?#");
        /* user:password@ has no place in a registry URL; keep what names the host. */
        const char *at = memchr(rest, '@', n);
        if (at) {
                n -= (size_t)(at + 1 - rest);
                rest = at + 1;
        }
        if (n == 0)
                return -1;
        *hostport = strndup(rest, n);
        if (*hostport == NULL)
                abort();
        for (char *p = *hostport; *p; p++)
                *p = (char)tolower((unsigned char)*p);
        return 0;
}
