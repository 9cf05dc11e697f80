/* Starting remora-shim, the per-container monitor, and reading what it leaves behind. */
#ifndef REMORA_SHIM_H
#define REMORA_SHIM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "remora/error.h"
#include "remora/oci.h"

/* Where the helper executables are. */
struct rm_helpers {
        char *shim;  /* remora-shim */
        char *pause; /* remora-pause */
};

/* Find remora-shim and remora-pause: a configured path (non-NULL, non-empty) is used as
 * is, otherwise the file of that name next to the running executable (/proc/self/exe).
 * Fails with FAILED_PRECONDITION naming the path that is missing or not executable. */
int rm_helpers_locate(const char *shim_path, const char *pause_path, struct rm_helpers *out,
                      struct rm_error **err);
void rm_helpers_clear(struct rm_helpers *h);

struct rm_shim_request {
        const char *shim;         /* remora-shim binary */
        const struct rm_oci *oci; /* runtime binary and --root */
        const char *id;           /* container ID */
        const char *bundle;       /* OCI bundle directory (config.json, rootfs) */
        const char *pid_file;     /* where runc writes the init pid */
        const char *exit_file;    /* written atomically by the shim when the init exits */
        const char *log_path;     /* CRI log file; NULL: the container's output is discarded */
        const char *shim_log;     /* the shim's own diagnostics; NULL: discarded */
        int timeout_ms;           /* for runc create; <= 0: the oci handle's timeout */
        bool tty;                 /* a terminal (runc hands its master to the shim) */
        bool stdin;               /* keep the container's stdin open for attach */
        bool stdin_once;          /* close it when the first attach session ends */
};

struct rm_shim_result {
        pid_t shim_pid;
        pid_t container_pid; /* the container's init, created but not started */
};

/* Start a detached shim (double fork + setsid: the calling process is not its parent) and
 * wait until it has run `runc create`. On success the container is CREATED; start it with
 * oci->ops->start. On failure *err carries runc's message; the shim has exited (or been
 * killed on timeout, DEADLINE_EXCEEDED) and the caller should `delete --force` the ID. */
int rm_shim_spawn(const struct rm_shim_request *req, struct rm_shim_result *res,
                  struct rm_error **err);

/* Send a command to the running shim of the container whose bundle this is, over
 * <bundle>/ctl.sock, and wait (up to timeout_ms) for its answer. "reopen-log" is the one
 * command: close and reopen the CRI log file. FAILED_PRECONDITION when no shim listens
 * (the container has exited); the shim's own error message otherwise. */
int rm_shim_command(const char *bundle, const char *command, int timeout_ms, struct rm_error **err);

/* Connect to the shim's attach socket in bundle (frames as in container/shim/attach.h).
 * FAILED_PRECONDITION when no shim listens there. */
int rm_shim_attach(const char *bundle, struct rm_error **err);

/* What the exit file says. */
struct rm_exit_status {
        pid_t pid;
        int exit_code;       /* 128 + signal when killed by a signal */
        int signal;          /* 0 when the init exited by itself */
        int64_t finished_ns; /* CLOCK_REALTIME, ns since the epoch */
};

/* Read an exit file. Returns 1 when it exists and was parsed, 0 when there is none (the
 * container has not exited, or its shim died before recording it), -1 on a damaged file. */
int rm_exit_file_read(const char *path, struct rm_exit_status *st, struct rm_error **err);

#endif
