/* CRI operations remora-bench performs, with sandbox bookkeeping so everything it creates
 * can be removed at the end. */
#ifndef REMORA_BENCH_OPS_H
#define REMORA_BENCH_OPS_H

#include "api.pb-c.h"
#include "bench.h"

#define RT  "/runtime.v1.RuntimeService/"
#define IMG "/runtime.v1.ImageService/"

/* A sandbox remora-bench made: its unique name and, once running, its id. */
struct pod {
        char name[96];
        char *id;
};

/* The full sandbox config of a pod, built in place (the message points into itself). */
struct pod_cfg {
        Runtime__V1__PodSandboxMetadata meta;
        Runtime__V1__LinuxPodSandboxConfig linux;
        Runtime__V1__LinuxSandboxSecurityContext sc;
        Runtime__V1__NamespaceOption ns;
        Runtime__V1__PodSandboxConfig cfg;
        char name[96];
};

int op_call(struct bench *b, struct endpoint *ep, const char *method, const ProtobufCMessage *req,
            const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp,
            struct cri_result *res);
void op_pod_cfg(struct pod_cfg *pc, const char *name, bool shared_pid, bool host_network);
/* A new unique name "rb-<run>-<what>-<seq>". */
void op_name(struct bench *b, const char *what, char *buf, size_t len);

/* Each returns the gRPC status; res gets the timing and message. */
int op_run_pod(struct bench *b, struct endpoint *ep, struct pod *p, struct cri_result *res);
int op_pod_status(struct bench *b, struct endpoint *ep, const char *id, struct cri_result *res);
/* PodSandboxStatus(verbose): *out is the number under KEY in the "info" JSON, -1 when the
 * runtime reports none. */
int op_pod_info_number(struct bench *b, struct endpoint *ep, const char *id, const char *key,
                       double *out, struct cri_result *res);
int op_stop_pod(struct bench *b, struct endpoint *ep, const char *id, struct cri_result *res);
/* On success the id leaves the cleanup list. */
int op_remove_pod(struct bench *b, struct endpoint *ep, const char *id, struct cri_result *res);
int op_create_ctr(struct bench *b, struct endpoint *ep, const struct pod *p, char **cid,
                  struct cri_result *res);
/* The same with a command instead of the image's (command NULL: the image's). */
int op_create_ctr_cmd(struct bench *b, struct endpoint *ep, const struct pod *p, char **command,
                      size_t n_command, char **cid, struct cri_result *res);
int op_ctr(struct bench *b, struct endpoint *ep, const char *method, const char *cid,
           struct cri_result *res);
/* Pulls REF unless the endpoint already has it. */
int op_ensure_image(struct bench *b, struct endpoint *ep, const char *ref, struct cri_result *res);
/* The container image (b->image) pulled, or names marked failed ("pull image"); false
 * then. */
bool op_require_image(struct bench *b, struct endpoint *ep, const char *const *names);
/* Stop + remove, untimed; returns 0 or the failing status. */
int op_teardown_pod(struct bench *b, struct endpoint *ep, struct pod *p);

/* Marks NAMES failed or, when RES says UNIMPLEMENTED, unsupported, noting METHOD. */
void op_fail(struct endpoint *ep, const char *const *names, const char *method,
             const struct cri_result *res);

#endif
