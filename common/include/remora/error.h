/* Errors that carry an errno, a gRPC status code and a message with context. */
#ifndef REMORA_ERROR_H
#define REMORA_ERROR_H

#include <stdarg.h>

/* Status codes; the numbers are gRPC's, so the server maps them one to one. */
enum rm_code {
        RM_OK = 0,
        RM_CANCELLED = 1,
        RM_UNKNOWN = 2,
        RM_INVALID_ARGUMENT = 3,
        RM_DEADLINE_EXCEEDED = 4,
        RM_NOT_FOUND = 5,
        RM_ALREADY_EXISTS = 6,
        RM_PERMISSION_DENIED = 7,
        RM_RESOURCE_EXHAUSTED = 8,
        RM_FAILED_PRECONDITION = 9,
        RM_ABORTED = 10,
        RM_OUT_OF_RANGE = 11,
        RM_UNIMPLEMENTED = 12,
        RM_INTERNAL = 13,
        RM_UNAVAILABLE = 14,
        RM_DATA_LOSS = 15,
        RM_UNAUTHENTICATED = 16,
};

struct rm_error {
        int errnum;        /* errno behind the failure, 0 when there is none */
        enum rm_code code; /* what the client is told */
        char *msg;         /* "outer context: inner context: cause" */
};

/* Record a failure in *err (err may be NULL to discard it). Replaces an error already
 * there. Always returns -1 so a caller can write `return rm_error_set(...)`. */
int rm_error_set(struct rm_error **err, enum rm_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like rm_error_set, for a failed system call: appends strerror(errno) to the message,
 * keeps errno in the error and derives the code from it (ENOENT is NOT_FOUND, EACCES is
 * PERMISSION_DENIED, ...). errno is preserved. */
int rm_error_sys(struct rm_error **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Same with an explicit errno value, for APIs that return it instead of setting errno. */
int rm_error_sys_errno(struct rm_error **err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix the message of an error already in *err with context ("context: message").
 * Does nothing when err or *err is NULL. Returns -1. */
int rm_error_wrap(struct rm_error **err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The gRPC code an errno maps to. */
enum rm_code rm_code_from_errno(int errnum);

/* Canonical upper-case name of a code ("INVALID_ARGUMENT"). */
const char *rm_code_name(enum rm_code code);

void rm_error_free(struct rm_error *err);

#endif
