/* Creating and pinning a pod's namespaces. */
#ifndef REMORA_SANDBOX_PINNS_H
#define REMORA_SANDBOX_PINNS_H

#include <stdbool.h>
#include <stddef.h>

#include "remora/error.h"

struct rm_sysctl {
        const char *key; /* "net.ipv4.ip_forward" (validated by the caller) */
        const char *value;
};

struct rm_pinns_request {
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
