/* Running an external program (runc) with captured output and a deadline. */
#ifndef REMORA_CONTAINER_CMD_H
#define REMORA_CONTAINER_CMD_H

#include <stddef.h>
#include <sys/types.h>

#include "remora/error.h"

struct rm__cmd {
        const char *const *argv; /* argv[0] is an absolute path */
        const char *input;       /* written to stdin, then closed; NULL: /dev/null */
        size_t input_len;
        /* When set, given to the program as fds 0..2 (< 0: /dev/null) and nothing is
         * captured; when NULL, stdout and stderr are captured. */
        const int *stdio;
        int timeout_ms;
        size_t out_max; /* per stream; 0: 1 MiB */
        /* Called with the child's pid when the deadline passes, before it is SIGKILLed,
         * so a caller can also kill what the program started. */
        void (*on_timeout)(pid_t pid, void *data);
        void *data;
};

struct rm__cmd_result {
        char *out, *errout; /* NUL-terminated, possibly truncated to out_max */
        size_t out_len, err_len;
        int wstatus;
};

void rm__cmd_result_clear(struct rm__cmd_result *r);

/* Run the program to completion. Returns 0 when it ran (whatever its exit status: see
 * r->wstatus), -1 when it could not be started or hit the deadline (DEADLINE_EXCEEDED,
 * the program is killed and reaped). */
int rm__cmd_run(const struct rm__cmd *c, struct rm__cmd_result *r, struct rm_error **err);

/* The program's last error line, for messages: stderr trimmed, else stdout, else the
 * exit status in words. Points into r or a static string. */
const char *rm__cmd_reason(const struct rm__cmd_result *r, char *buf, size_t len);

#endif
