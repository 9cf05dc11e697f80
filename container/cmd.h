/* Running an external program (runc) with captured output and a deadline. */
#ifndef REMORA_CONTAINER_CMD_H
#define REMORA_CONTAINER_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "remora/cancel.h"
#include "remora/error.h"

struct rm__cmd {
        const char *const *argv; /* argv[0] is an absolute path */
        const char *input;       /* written to stdin, then closed; NULL: /dev/null */
        size_t input_len;
        /* When set, given to the program as fds 0..2 (< 0: /dev/null) and nothing is
         * captured; when NULL, stdout and stderr are captured. */
        const int *stdio;
        /* Given to the program as fds 3, 4, ... (the caller keeps its own). */
        const int *extra_fds;
        int n_extra;
        int timeout_ms;
        /* The call's token: once cancelled (or past its deadline) the program is stopped
         * as on a timeout and the run fails with CANCELLED. NULL: never. */
        const struct rm_cancel *cancel;
        size_t out_max; /* per stream, counted while reading; 0: 1 MiB */
        /* Called with the child's pid once it runs (crash points). */
        void (*on_start)(pid_t pid, void *data);
        /* Called with the child's pid when the deadline passes or the call is cancelled:
         * it asks the program to stop (and what the program started); the program then
         * has stop_grace_ms to exit before it is SIGKILLed. Without it: SIGKILL at once. */
        void (*on_timeout)(pid_t pid, void *data);
        int stop_grace_ms;
        void *data;
};

struct rm__cmd_result {
        char *out, *errout; /* NUL-terminated, possibly truncated to out_max */
        size_t out_len, err_len;
        bool out_truncated, err_truncated;
        int wstatus;
};

void rm__cmd_result_clear(struct rm__cmd_result *r);

/* Run the program to completion. Returns 0 when it ran (whatever its exit status: see
 * r->wstatus), -1 when it could not be started, hit the deadline (DEADLINE_EXCEEDED) or
 * was cancelled (CANCELLED); then the program is stopped and reaped. */
int rm__cmd_run(const struct rm__cmd *c, struct rm__cmd_result *r, struct rm_error **err);

/* The program's last error line, for messages: stderr trimmed, else stdout, else the
 * exit status in words. Points into r or a static string. */
const char *rm__cmd_reason(const struct rm__cmd_result *r, char *buf, size_t len);

#endif
