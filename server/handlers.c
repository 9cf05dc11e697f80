/* The table of implemented CRI methods. Methods missing here answer UNIMPLEMENTED. */
#include "handlers.h"

#define RUNTIME "runtime.v1.RuntimeService"
#define IMAGE   "runtime.v1.ImageService"

const struct rm_handler_entry rm_handlers[] = {
    {RUNTIME, "Version", rm__handle_version},
    {RUNTIME, "Status", rm__handle_status},
    {RUNTIME, "UpdateRuntimeConfig", rm__handle_update_runtime_config},
    {RUNTIME, "RuntimeConfig", rm__handle_runtime_config},
    {NULL, NULL, NULL},
};
