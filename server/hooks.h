/* Adapters the daemon hands to managers so they reach each other only through it. */
#ifndef REMORA_HOOKS_H
#define REMORA_HOOKS_H

#include "remora/containers.h"
#include "remora/sandbox.h"
#include "remora/streaming.h"

struct rm_daemon;

/* The sandbox manager's hooks: networking (and the infra process once it exists). */
void rm__sandbox_hooks(struct rm_daemon *d, struct rm_sandbox_hooks *h);

/* The infra process hooks (pods sharing one PID namespace). */
void rm__infra_hooks(struct rm_daemon *d, struct rm_sandbox_hooks *h);
/* Start-up: remove infra containers (monitor, runc state, bundle, cgroup) of pods no
 * record owns. After the sandbox manager is open. */
void rm__infra_reconcile(struct rm_daemon *d);

/* The container manager's pod lookup and event reporting (images and the runtime are
 * filled in by the caller). */
void rm__container_ops_common(struct rm_daemon *d, struct rm_container_ops *ops);

/* All of the container manager's ops: the above, images, runc and remora-shim. */
void rm__container_ops(struct rm_daemon *d, struct rm_container_ops *ops);

/* The image service's question (rm_image_in_use_fn, ctx: the daemon): whether any
 * container, in whatever state, was made from image_id. */
bool rm__image_in_use(void *ctx, const char *image_id);

/* The streaming server's backend (ctx: the daemon); see streaming_hooks.c. */
extern const struct rm_stream_backend_ops rm__stream_backend;

#endif
