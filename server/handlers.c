/* The table of unary CRI methods. Methods missing here answer UNIMPLEMENTED; the server
 * streaming ones are registered by the daemon (events.c, list_stream.c).
 * RM_CALL_QUICK handlers run on the threads that serve calls and must never block (they
 * read the managers' in-memory indexes); everything else runs on the elastic pool. */
#include "handlers.h"

#define RUNTIME "runtime.v1.RuntimeService"
#define IMAGE   "runtime.v1.ImageService"

const struct rm_handler_entry rm_handlers[] = {
    {RUNTIME, "Version", rm__handle_version, RM_CALL_QUICK},
    {RUNTIME, "Status", rm__handle_status, RM_CALL_QUICK},
    {RUNTIME, "UpdateRuntimeConfig", rm__handle_update_runtime_config, RM_CALL_QUICK},
    {RUNTIME, "RuntimeConfig", rm__handle_runtime_config, RM_CALL_QUICK},
    {RUNTIME, "RunPodSandbox", rm__handle_run_pod_sandbox, RM_CALL_POOL},
    {RUNTIME, "StopPodSandbox", rm__handle_stop_pod_sandbox, RM_CALL_PROMISE},
    {RUNTIME, "RemovePodSandbox", rm__handle_remove_pod_sandbox, RM_CALL_POOL},
    {RUNTIME, "PodSandboxStatus", rm__handle_pod_sandbox_status, RM_CALL_QUICK},
    {RUNTIME, "ListPodSandbox", rm__handle_list_pod_sandbox, RM_CALL_QUICK},
    {RUNTIME, "CreateContainer", rm__handle_create_container, RM_CALL_POOL},
    {RUNTIME, "StartContainer", rm__handle_start_container, RM_CALL_POOL},
    {RUNTIME, "StopContainer", rm__handle_stop_container, RM_CALL_PROMISE},
    {RUNTIME, "RemoveContainer", rm__handle_remove_container, RM_CALL_POOL},
    {RUNTIME, "ListContainers", rm__handle_list_containers, RM_CALL_QUICK},
    {RUNTIME, "ContainerStatus", rm__handle_container_status, RM_CALL_QUICK},
    {RUNTIME, "ExecSync", rm__handle_exec_sync, RM_CALL_POOL},
    {RUNTIME, "Exec", rm__handle_exec, RM_CALL_QUICK},
    {RUNTIME, "Attach", rm__handle_attach, RM_CALL_QUICK},
    {RUNTIME, "PortForward", rm__handle_port_forward, RM_CALL_QUICK},
    {RUNTIME, "ContainerStats", rm__handle_container_stats, RM_CALL_POOL},
    {RUNTIME, "ListContainerStats", rm__handle_list_container_stats, RM_CALL_POOL},
    {RUNTIME, "PodSandboxStats", rm__handle_pod_sandbox_stats, RM_CALL_POOL},
    {RUNTIME, "ListPodSandboxStats", rm__handle_list_pod_sandbox_stats, RM_CALL_POOL},
    {RUNTIME, "UpdateContainerResources", rm__handle_update_container_resources, RM_CALL_POOL},
    {RUNTIME, "ReopenContainerLog", rm__handle_reopen_container_log, RM_CALL_POOL},
    {RUNTIME, "UpdatePodSandboxResources", rm__handle_update_pod_sandbox_resources, RM_CALL_POOL},
    {RUNTIME, "ListMetricDescriptors", rm__handle_list_metric_descriptors, RM_CALL_QUICK},
    {RUNTIME, "ListPodSandboxMetrics", rm__handle_list_pod_sandbox_metrics, RM_CALL_POOL},
    {IMAGE, "PullImage", rm__handle_pull_image, RM_CALL_POOL},
    {IMAGE, "ListImages", rm__handle_list_images, RM_CALL_QUICK},
    {IMAGE, "ImageStatus", rm__handle_image_status, RM_CALL_QUICK},
    {IMAGE, "RemoveImage", rm__handle_remove_image, RM_CALL_POOL},
    {IMAGE, "ImageFsInfo", rm__handle_image_fs_info, RM_CALL_POOL},
    {NULL, NULL, NULL, RM_CALL_POOL},
};

const struct rm_unimplemented_entry rm_unimplemented[] = {
    /* CRIU (3.17 here) cannot dump a process on this kernel, so a checkpoint could never
     * be made, let alone restored: say so rather than fail half-way. */
    {RUNTIME, "CheckpointContainer",
     "checkpointing needs CRIU, and the CRIU of this distribution (3.17) cannot dump "
     "processes on this kernel (\"vdso: Unexpected rt vDSO area bounds\"); remora does not "
     "checkpoint containers"},
    {NULL, NULL, NULL},
};
