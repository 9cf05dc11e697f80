#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "remora/ids.h"

void rm_id_new(char out[RM_ID_LEN + 1])
{
        unsigned char raw[RM_ID_LEN / 2];
        size_t got = 0;
        while (got < sizeof(raw)) {
                ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
                if (n > 0)
                        got += (size_t)n;
                else if (n < 0)
                        abort(); /* getrandom cannot fail once the pool is up */
        }
        static const char hex[] = "0123456789abcdef";
        for (size_t i = 0; i < sizeof(raw); i++) {
                out[2 * i] = hex[raw[i] >> 4];
                out[2 * i + 1] = hex[raw[i] & 15];
        }
        out[RM_ID_LEN] = '\0';
}

bool rm_id_valid(const char *s)
{
        return s && strlen(s) == RM_ID_LEN && strspn(s, "0123456789abcdef") == RM_ID_LEN;
}

long rm_id_match(const char *const *ids, size_t n, const char *prefix, const char *what,
                 struct rm_error **err)
{
        if (prefix == NULL || *prefix == '\0') {
                rm_error_set(err, RM_INVALID_ARGUMENT, "%s ID is empty", what);
                return -1;
        }
        size_t len = strlen(prefix);
        long found = -1;
        size_t matches = 0;
        for (size_t i = 0; i < n; i++) {
                if (strncmp(ids[i], prefix, len) != 0)
                        continue;
                if (ids[i][len] == '\0')
                        return (long)i; /* an exact match wins over longer ones */
                matches++;
                found = (long)i;
        }
        if (matches == 1)
                return found;
        if (matches == 0)
                rm_error_set(err, RM_NOT_FOUND, "%s %s not found", what, prefix);
        else
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "%s ID prefix %s is ambiguous: %zu %ss match; give more characters",
                             what, prefix, matches, what);
        return -1;
}
