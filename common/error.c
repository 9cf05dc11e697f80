#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "remora/error.h"
#include "remora/xalloc.h"

static char *vformat(const char *fmt, va_list ap)
{
        char *s = NULL;
        if (vasprintf(&s, fmt, ap) < 0)
                abort();
        return s;
}

static void store(struct rm_error **err, enum rm_code code, int errnum, char *msg)
{
        if (err == NULL) {
                free(msg);
                return;
        }
        rm_error_free(*err);
        struct rm_error *e = xmalloc(sizeof(*e));
        e->errnum = errnum;
        e->code = code;
        e->msg = msg;
        *err = e;
}

int rm_error_set(struct rm_error **err, enum rm_code code, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        char *msg = vformat(fmt, ap);
        va_end(ap);
        store(err, code, 0, msg);
        return -1;
}

static void set_sys(struct rm_error **err, int errnum, const char *fmt, va_list ap)
{
        char *what = vformat(fmt, ap);
        char *msg = xasprintf("%s: %s", what, strerror(errnum));
        free(what);
        store(err, rm_code_from_errno(errnum), errnum, msg);
}

int rm_error_sys(struct rm_error **err, const char *fmt, ...)
{
        int saved = errno;
        va_list ap;
        va_start(ap, fmt);
        set_sys(err, saved, fmt, ap);
        va_end(ap);
        errno = saved;
        return -1;
}

int rm_error_sys_errno(struct rm_error **err, int errnum, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        set_sys(err, errnum, fmt, ap);
        va_end(ap);
        return -1;
}

int rm_error_wrap(struct rm_error **err, const char *fmt, ...)
{
        if (err == NULL || *err == NULL)
                return -1;
        va_list ap;
        va_start(ap, fmt);
        char *ctx = vformat(fmt, ap);
        va_end(ap);
        char *msg = xasprintf("%s: %s", ctx, (*err)->msg);
        free(ctx);
        free((*err)->msg);
        (*err)->msg = msg;
        return -1;
}

enum rm_code rm_code_from_errno(int errnum)
{
        switch (errnum) {
        case ENOENT:
        case ESRCH:
                return RM_NOT_FOUND;
        case EEXIST:
                return RM_ALREADY_EXISTS;
        case EPERM:
        case EACCES:
        case EROFS:
                return RM_PERMISSION_DENIED;
        case EINVAL:
        case ENAMETOOLONG:
        case ENOTDIR:
        case EISDIR:
        case ELOOP:
                return RM_INVALID_ARGUMENT;
        case ENOSPC:
        case EDQUOT:
        case EMFILE:
        case ENFILE:
        case ENOMEM:
                return RM_RESOURCE_EXHAUSTED;
        case EBUSY:
        case EAGAIN:
                return RM_UNAVAILABLE;
        case ETIMEDOUT:
                return RM_DEADLINE_EXCEEDED;
        case ECANCELED:
                return RM_CANCELLED;
        case ENOSYS:
        case EOPNOTSUPP:
                return RM_UNIMPLEMENTED;
        default:
                return RM_INTERNAL;
        }
}

const char *rm_code_name(enum rm_code code)
{
        static const char *const names[] = {
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        };
        if ((unsigned)code < sizeof(names) / sizeof(names[0]))
                return names[code];
        return "UNKNOWN";
}

void rm_error_free(struct rm_error *err)
{
        if (err == NULL)
                return;
        free(err->msg);
        free(err);
}
