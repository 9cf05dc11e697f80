#include "remora/network.h"
#include <stdlib.h>

#include "remora/confsect.h"
#include "remora/xalloc.h"

struct rm_network {
        bool ready;
};

struct rm_network *rm_network_open(struct json_object *section, struct rm_error **err)
{
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
