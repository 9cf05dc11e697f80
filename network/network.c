#include "remora/network.h"
#include <stdlib.h>

#include "remora/xalloc.h"

struct rm_network {
        bool ready;
};

struct rm_network *rm_network_open(struct rm_error **err)
{
        (void)err;
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
