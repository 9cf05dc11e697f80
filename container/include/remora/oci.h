/* The OCI runtime seam: every runc call goes through struct rm_runtime_ops, so unit tests
 * can swap a fake and a RuntimeClass handler can pick another binary. */
#ifndef REMORA_OCI_H
#define REMORA_OCI_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "remora/error.h"

struct rm_runtime_ops;
struct rm_cancel;

/* One runtime as the driver sees it: the binary, its state root (--root) and how long a
 * single call may take before it is killed and reported as DEADLINE_EXCEEDED. */
struct rm_oci {
        const struct rm_runtime_ops *ops;
        char *binary;   /* absolute path of runc (or a compatible runtime) */
        char *root;     /* --root, normally <state>/runc */
        int timeout_ms; /* per call; <= 0 means RM_OCI_DEFAULT_TIMEOUT_MS */
};

#define RM_OCI_DEFAULT_TIMEOUT_MS 30000

/* A new runtime handle using ops (rm_runc_ops for the real runc). Copies the strings. */
struct rm_oci *rm_oci_new(const struct rm_runtime_ops *ops, const char *binary, const char *root,
                          int timeout_ms);
void rm_oci_free(struct rm_oci *oci);

enum rm_oci_status {
        RM_OCI_UNKNOWN = 0,
        RM_OCI_CREATING,
        RM_OCI_CREATED,
        RM_OCI_RUNNING,
        RM_OCI_PAUSED,
        RM_OCI_STOPPED,
};

struct rm_oci_state {
        enum rm_oci_status status;
        pid_t pid; /* 0 when the runtime reports none */
};

/* Options for create. stdio[i] < 0 means /dev/null. The fds are inherited by the
 * container's init; the caller keeps ownership. */
struct rm_oci_create_opts {
        const char *pid_file; /* required: runc writes the init pid there */
        int stdio[3];
};

/* Output of an exec: both streams captured (capped), the exit code, or the signal. */
struct rm_oci_exec_result {
        char *out;
        size_t out_len;
        char *errout;
        size_t err_len;
        bool out_truncated, err_truncated; /* the stream went past the cap */
        int exit_code; /* 128+signal when killed by a signal, as shells report it */
};
void rm_oci_exec_result_clear(struct rm_oci_exec_result *res);

/* Output of one exec stream is cut at this many bytes, counted as it is read (the rest
 * is read and dropped). Both streams at the cap still fit one 16 MiB gRPC message. */
#define RM_OCI_EXEC_OUTPUT_MAX (4u << 20)

/* One exec. The scratch directory (the pid file) is made under scratch_root and removed
 * before exec returns, on every path. With a reaper (remora-shim), the command runs under
 * its exec reaper (remora/exec_reaper.h): on the timeout or the token's cancellation
 * every process the exec started is killed and reaped before exec returns. */
struct rm_oci_exec_opts {
        const char *const *argv;        /* run inside the container */
        int timeout_ms;                 /* <= 0: the handle's */
        const struct rm_cancel *cancel; /* NULL: never cancelled */
        const char *scratch_root;       /* an existing directory, e.g. <state>/exec */
        const char *reaper;             /* remora-shim; NULL: the command is runc's child */
        size_t out_max;                 /* per stream; 0: RM_OCI_EXEC_OUTPUT_MAX */
};

/* How long an exec's processes get to be killed and reaped after the timeout or the
 * cancellation before runc itself is SIGKILLed. */
#define RM_OCI_EXEC_STOP_GRACE_MS 5000

/* Every function returns 0 or -1 with *err set. A runtime failure carries the runtime's
 * own message (stderr or its log); an unknown container is NOT_FOUND; a call that outlives
 * the timeout is killed and reported as DEADLINE_EXCEEDED. */
struct rm_runtime_ops {
        int (*create)(const struct rm_oci *oci, const char *id, const char *bundle,
                      const struct rm_oci_create_opts *opts, struct rm_error **err);
        int (*start)(const struct rm_oci *oci, const char *id, struct rm_error **err);
        /* all: signal every process of the container (runc kill --all) */
        int (*kill)(const struct rm_oci *oci, const char *id, int sig, bool all,
                    struct rm_error **err);
        /* force: kill a running container first; a missing container is not an error */
        int (*delete)(const struct rm_oci *oci, const char *id, bool force, struct rm_error **err);
        int (*state)(const struct rm_oci *oci, const char *id, struct rm_oci_state *st,
                     struct rm_error **err);
        /* A non-zero exit of the command is not an error: it is in res->exit_code. The
         * timeout is DEADLINE_EXCEEDED, the token's cancellation CANCELLED. */
        int (*exec)(const struct rm_oci *oci, const char *id, const struct rm_oci_exec_opts *o,
                    struct rm_oci_exec_result *res, struct rm_error **err);
        /* resources_json: an OCI LinuxResources object */
        int (*update)(const struct rm_oci *oci, const char *id, const char *resources_json,
                      struct rm_error **err);
};

/* The runc driver: runc run as an external binary, `--root <oci->root>`. */
extern const struct rm_runtime_ops rm_runc_ops;

const char *rm_oci_status_name(enum rm_oci_status status);

#endif
