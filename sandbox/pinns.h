/* Creating and pinning a pod's namespaces. */
#ifndef REMORA_SANDBOX_PINNS_H
#define REMORA_SANDBOX_PINNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "remora/error.h"

struct rm_sysctl {
        const char *key; /* "net.ipv4.ip_forward" (validated by the caller) */
        const char *value;
};

/* One ID mapping of a pod's user namespace: container IDs 0..len-1 are host IDs
 * host..host+len-1. */
struct rm_idrange {
        uint32_t host;
        uint32_t len;
};

struct rm_pinns_request {
        /* A user namespace, made first with these mappings; the other namespaces are then
         * made inside it, so that it owns them. */
        bool user;
        struct rm_idrange uids, gids;
        const char *user_path;
        bool net, ipc, uts;   /* which new namespaces to make */
        const char *net_path; /* pin paths for those made */
        const char *ipc_path;
        const char *uts_path;
        const char *hostname; /* set in the new UTS namespace */
        const struct rm_sysctl *sysctls;
        size_t n_sysctls;
};

/* Make the namespaces, configure them from inside and pin them. Nothing is left pinned
 * on failure; the error names the step (or the sysctl) that failed. */
int rm_pinns_create(const struct rm_pinns_request *req, struct rm_error **err);

/* Unmount and remove one pin; a pin that is not there is fine. */
void rm_pinns_unpin(const char *path);

#endif
