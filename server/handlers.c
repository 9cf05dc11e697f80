/* The table of unary CRI methods. Methods missing here answer UNIMPLEMENTED; the server
 * streaming ones are registered by the daemon (events.c, list_stream.c). */
#include "handlers.h"

#define RUNTIME "runtime.v1.RuntimeService"
#define IMAGE   "runtime.v1.ImageService"

const struct rm_handler_entry rm_handlers[] = {
    {RUNTIME, "Version", rm__handle_version},
    {RUNTIME, "Status", rm__handle_status},
    {RUNTIME, "UpdateRuntimeConfig", rm__handle_update_runtime_config},
    {RUNTIME, "RuntimeConfig", rm__handle_runtime_config},
    {RUNTIME, "RunPodSandbox", rm__handle_run_pod_sandbox},
    {RUNTIME, "StopPodSandbox", rm__handle_stop_pod_sandbox},
    {RUNTIME, "RemovePodSandbox", rm__handle_remove_pod_sandbox},
    {RUNTIME, "PodSandboxStatus", rm__handle_pod_sandbox_status},
    {RUNTIME, "ListPodSandbox", rm__handle_list_pod_sandbox},
    {RUNTIME, "CreateContainer", rm__handle_create_container},
    {RUNTIME, "StartContainer", rm__handle_start_container},
    {RUNTIME, "StopContainer", rm__handle_stop_container},
    {RUNTIME, "RemoveContainer", rm__handle_remove_container},
    {RUNTIME, "ListContainers", rm__handle_list_containers},
    {RUNTIME, "ContainerStatus", rm__handle_container_status},
    {RUNTIME, "ExecSync", rm__handle_exec_sync},
    {RUNTIME, "Exec", rm__handle_exec},
    {RUNTIME, "Attach", rm__handle_attach},
    {RUNTIME, "PortForward", rm__handle_port_forward},
    {RUNTIME, "ContainerStats", rm__handle_container_stats},
    {RUNTIME, "ListContainerStats", rm__handle_list_container_stats},
    {RUNTIME, "PodSandboxStats", rm__handle_pod_sandbox_stats},
    {RUNTIME, "ListPodSandboxStats", rm__handle_list_pod_sandbox_stats},
    {RUNTIME, "UpdateContainerResources", rm__handle_update_container_resources},
    {RUNTIME, "ReopenContainerLog", rm__handle_reopen_container_log},
    {RUNTIME, "UpdatePodSandboxResources", rm__handle_update_pod_sandbox_resources},
    {RUNTIME, "ListMetricDescriptors", rm__handle_list_metric_descriptors},
    {RUNTIME, "ListPodSandboxMetrics", rm__handle_list_pod_sandbox_metrics},
    {IMAGE, "PullImage", rm__handle_pull_image},
    {IMAGE, "ListImages", rm__handle_list_images},
    {IMAGE, "ImageStatus", rm__handle_image_status},
    {IMAGE, "RemoveImage", rm__handle_remove_image},
    {IMAGE, "ImageFsInfo", rm__handle_image_fs_info},
    {NULL, NULL, NULL},
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
