/* SHA-256 digests in the "sha256:<hex>" form registries and image configs use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image_internal.h"

void rm__sha256_init(struct rm_sha256 *h)
{
        h->ctx = EVP_MD_CTX_new();
        if (h->ctx == NULL || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1)
                abort(); /* only out of memory gets here */
}

void rm__sha256_update(struct rm_sha256 *h, const void *data, size_t len)
{
        EVP_DigestUpdate(h->ctx, data, len);
}

void rm__sha256_final(struct rm_sha256 *h, char out[72])
{
        unsigned char md[32];
        unsigned int n = 0;
        EVP_DigestFinal_ex(h->ctx, md, &n);
        EVP_MD_CTX_free(h->ctx);
        h->ctx = NULL;
        static const char hex[] = "0123456789abcdef";
        memcpy(out, "sha256:", 7);
        for (unsigned i = 0; i < 32; i++) {
                out[7 + 2 * i] = hex[md[i] >> 4];
                out[8 + 2 * i] = hex[md[i] & 15];
        }
        out[71] = '\0';
}

void rm__sha256_of(const void *data, size_t len, char out[72])
{
        struct rm_sha256 h;
        rm__sha256_init(&h);
        rm__sha256_update(&h, data, len);
        rm__sha256_final(&h, out);
}
