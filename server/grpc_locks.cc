/* The one C++ file of remorad: Abseil's switch has no C spelling. */
#include "grpc_locks.h"

#include <absl/synchronization/mutex.h>

void rm_grpc_lock_graph_off(void)
{
        absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}
