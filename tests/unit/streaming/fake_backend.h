/* A backend without containers: exec runs argv as a host process, attach echoes stdin,
 * port forward connects to 127.0.0.1:<port>. For tests only. */
#ifndef REMORA_FAKE_STREAM_BACKEND_H
#define REMORA_FAKE_STREAM_BACKEND_H
#include "remora/streaming.h"
extern const struct rm_stream_backend_ops rm_fake_stream_ops;
#endif
