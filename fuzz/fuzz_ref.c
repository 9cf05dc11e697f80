/* Image references as a client (or a pod spec) sends them: parsing must not crash, and
 * what it accepts must print back to a reference that parses to the same thing, with a
 * valid digest and no path component a URL could climb with. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *s = strndup((const char *)data, size);
        struct rm_image_ref r;
        struct rm_error *e = NULL;
        if (rm_image_ref_parse(s, &r, &e) == 0) {
                if (r.digest && !rm__digest_ok(r.digest))
                        abort();
                if (strstr(r.path, "..") || r.path[0] == '/' || strchr(r.domain, '/'))
                        abort();
                char *again = rm_image_ref_string(&r);
                struct rm_image_ref r2;
                /* Normalizing adds "docker.io/library/": past the 512-character limit the
                 * printed form is refused, as any reference that long is. */
                if (rm_image_ref_parse(again, &r2, NULL) < 0) {
                        if (strlen(again) <= 512)
                                abort();
                        free(again);
                        rm_image_ref_release(&r);
                        rm_error_free(e);
                        free(s);
                        return 0;
                }
                char *twice = rm_image_ref_string(&r2);
                if (strcmp(again, twice) != 0)
                        abort();
                free(twice);
                free(again);
                rm_image_ref_release(&r2);
                rm_image_ref_release(&r);
        }
        rm_error_free(e);
        free(s);
        return 0;
}
