#include <stdlib.h>

#include "remora/confsect.h"
#include "remora/network.h"
#include "remora/xalloc.h"

struct rm_network {
        bool ready;
};

struct rm_network *rm_network_open(struct json_object *section, const char *root, const char *state,
                                   struct rm_store *store, struct rm_error **err)
{
        (void)root;
        (void)state;
        (void)store;
        static const char *const known[] = {NULL};
        if (rm_confsect_check_keys("network", section, known, err) < 0)
                return NULL;
        struct rm_network *net = xzalloc(sizeof(*net));
        /* Neither the built-in bridge nor CNI mode exists in this build. */
        net->ready = false;
        return net;
}

void rm_network_close(struct rm_network *net)
{
        free(net);
}

bool rm_network_ready(const struct rm_network *net, const char **reason, const char **message)
{
        if (net->ready)
                return true;
        *reason = "NetworkPluginNotReady";
        *message = "pod networking is not available in this build of remora "
                   "(neither the built-in bridge nor CNI mode is implemented yet)";
        return false;
}

void rm_pod_network_result_release(struct rm_pod_network_result *res)
{
        for (size_t i = 0; i < res->n_ips; i++)
                free(res->ips[i]);
        res->n_ips = 0;
}

int rm_network_pod_setup(struct rm_network *net, const struct rm_pod_network_request *req,
                         struct rm_pod_network_result *res, struct rm_error **err)
{
        (void)net;
        (void)req;
        (void)err;
        res->n_ips = 0; /* loopback only: the sandbox layer brings lo up */
        return 0;
}

int rm_network_pod_teardown(struct rm_network *net, const char *pod_id, const char *netns_path,
                            struct rm_error **err)
{
        (void)net;
        (void)pod_id;
        (void)netns_path;
        (void)err;
        return 0;
}
