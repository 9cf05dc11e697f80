/* What `remorad --check` asks of pod networking without changing the host: the config
 * section parses, and nftables answers a read-only listing. */
#include <string.h>
#include <nftables/libnftables.h>

#include "internal.h"
#include "remora/network.h"

int rm_network_config_check(struct json_object *section, struct rm_error **err)
{
        struct rm__net_config cfg;
        return rm__net_config_parse(section, &cfg, err);
}

int rm_network_nft_check(struct rm_error **err)
{
        struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
        if (ctx == NULL)
                return rm_error_set(err, RM_INTERNAL, "nftables: cannot create a context");
        nft_ctx_buffer_output(ctx);
        nft_ctx_buffer_error(ctx);
        int rc = 0;
        if (nft_run_cmd_from_buffer(ctx, "list tables") != 0) {
                const char *e = nft_ctx_get_error_buffer(ctx);
                rc = rm_error_set(err, RM_FAILED_PRECONDITION, "nftables: %.*s",
                                  (int)(e ? strcspn(e, "\n") : 0), e ? e : "listing failed");
        }
        nft_ctx_free(ctx);
        return rc;
}
