/* Indexes, manifests and image configs from a registry. The first byte picks the parser
 * (and, for configs, how many layers the manifest had); the rest is the document. What
 * a parser accepts must hold only valid digests. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const char *digest)
{
        if (!rm__digest_ok(digest))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 1)
                return 0;
        unsigned sel = data[0];
        const char *body = (const char *)data + 1;
        size_t len = size - 1;
        struct rm_error *e = NULL;
        switch (sel % 3) {
        case 0: {
                struct rm__desc d;
                if (rm__index_pick(body, len, (sel & 4) ? "arm64" : "amd64", &d, &e) == 0) {
                        check(d.digest);
                        rm__desc_release(&d);
                }
                break;
        }
        case 1: {
                struct rm__manifest m;
                if (rm__manifest_parse(body, len, 8 << 20, &m, &e) == 0) {
                        check(m.config.digest);
                        if (m.config.size > (8 << 20) || m.n_layers > RM__MAX_LAYERS)
                                abort();
                        for (size_t i = 0; i < m.n_layers; i++)
                                check(m.layers[i].digest);
                        rm__manifest_release(&m);
                }
                break;
        }
        default: {
                size_t n = (sel >> 2) % 4;
                struct json_object *doc = NULL;
                char **ids = NULL;
                if (rm__config_parse(body, len, n, &doc, &ids, &e) == 0) {
                        char chains[4][72];
                        for (size_t i = 0; i < n; i++)
                                check(ids[i]);
                        if (ids[n] != NULL)
                                abort();
                        rm__chain_ids(ids, n, chains);
                        for (size_t i = 0; i < n; i++)
                                check(chains[i]);
                        rm__strv_free(ids);
                        json_object_put(doc);
                }
                break;
        }
        }
        rm_error_free(e);
        return 0;
}
