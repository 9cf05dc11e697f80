#include <stdlib.h>

#include "remora/cleanup.h"
#include "remora/confsect.h"
#include "remora/fsutil.h"
#include "remora/sandbox.h"
#include "remora/xalloc.h"

struct rm_sandbox_manager {
        char *pods_dir;
        char *netns_dir;
        struct rm_store *store;
};

struct rm_sandbox_manager *rm_sandbox_manager_open(const char *root, const char *state,
                                                   struct json_object *section,
                                                   struct rm_store *store, struct rm_error **err)
{
        static const char *const known[] = {NULL};
        if (rm_confsect_check_keys("sandbox", section, known, err) < 0)
                return NULL;
        cleanup_free char *pods = xasprintf("%s/sandboxes", root);
        cleanup_free char *netns = xasprintf("%s/netns", state);
        if (rm_mkdir_p(pods, 0700, err) < 0 || rm_mkdir_p(netns, 0700, err) < 0) {
                rm_error_wrap(err, "open sandbox manager");
                return NULL;
        }
        struct rm_sandbox_manager *mgr = xzalloc(sizeof(*mgr));
        mgr->pods_dir = steal_pointer(&pods);
        mgr->netns_dir = steal_pointer(&netns);
        mgr->store = store;
        return mgr;
}

void rm_sandbox_manager_close(struct rm_sandbox_manager *mgr)
{
        if (mgr == NULL)
                return;
        free(mgr->pods_dir);
        free(mgr->netns_dir);
        free(mgr);
}
