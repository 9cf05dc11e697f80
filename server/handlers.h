/* The CRI handlers remorad serves, one group per area. Each area keeps its handlers in
 * its own server/<area>_handlers.c and lists them in handlers.c's table; the handlers
 * are thin: decode fields, call the manager, build the response from the call's arena. */
#ifndef REMORA_HANDLERS_H
#define REMORA_HANDLERS_H

#include "dispatch.h"

#define RM_HANDLER(name)                                                                           \
        int rm__handle_##name(struct rm_call *call, const ProtobufCMessage *req,                   \
                              ProtobufCMessage **resp, struct rm_error **err)

/* runtime_info.c */
RM_HANDLER(version);
RM_HANDLER(status);
RM_HANDLER(update_runtime_config);
RM_HANDLER(runtime_config);

/* container_handlers.c */
RM_HANDLER(create_container);
RM_HANDLER(start_container);
RM_HANDLER(stop_container);
RM_HANDLER(remove_container);
RM_HANDLER(list_containers);
RM_HANDLER(container_status);
RM_HANDLER(exec_sync);

/* stats_handlers.c */
RM_HANDLER(container_stats);
RM_HANDLER(list_container_stats);
RM_HANDLER(pod_sandbox_stats);
RM_HANDLER(list_pod_sandbox_stats);
RM_HANDLER(update_container_resources);
RM_HANDLER(reopen_container_log);

/* metrics_handlers.c */
RM_HANDLER(list_metric_descriptors);
RM_HANDLER(list_pod_sandbox_metrics);

/* streaming_hooks.c */
RM_HANDLER(exec);
RM_HANDLER(attach);
RM_HANDLER(port_forward);

/* image_handlers.c */
RM_HANDLER(pull_image);
RM_HANDLER(list_images);
RM_HANDLER(image_status);
RM_HANDLER(remove_image);
RM_HANDLER(image_fs_info);

/* sandbox_handlers.c */
RM_HANDLER(run_pod_sandbox);
RM_HANDLER(stop_pod_sandbox);
RM_HANDLER(remove_pod_sandbox);
RM_HANDLER(pod_sandbox_status);
RM_HANDLER(list_pod_sandbox);
RM_HANDLER(update_pod_sandbox_resources);

#endif
