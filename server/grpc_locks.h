/* gRPC's own locks (Abseil's Mutex) without Abseil's debug-only bookkeeping. */
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

/* Debian builds Abseil without NDEBUG, so each lock and unlock in gRPC also updates
 * Abseil's lock-order graph, a process-wide structure behind a lock of its own; the
 * Abseil of a release build never does. Call once, before grpc_init. */
void rm_grpc_lock_graph_off(void);

#ifdef __cplusplus
}
#endif
