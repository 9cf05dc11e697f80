#include <stdlib.h>
#include <string.h>

#include "api.pb-c.h"
#include "dispatch.h"
#include "remora/cleanup.h"
#include "remora/log.h"
#include "remora/xalloc.h"

struct method {
        char *path; /* "/runtime.v1.RuntimeService/Version" */
        const ProtobufCMessageDescriptor *input;
        rm_handler_fn fn;
        enum rm_call_kind kind;
};

struct rm_dispatch {
        struct method *methods; /* sorted by path */
        size_t n;
        struct rm_daemon *daemon;
};

static const ProtobufCServiceDescriptor *const services[] = {
    &runtime__v1__runtime_service__descriptor,
    &runtime__v1__image_service__descriptor,
};

static int by_path(const void *a, const void *b)
{
        return strcmp(((const struct method *)a)->path, ((const struct method *)b)->path);
}

static struct method *find(const struct rm_dispatch *d, const char *path)
{
        struct method key = {.path = (char *)path};
        return bsearch(&key, d->methods, d->n, sizeof(*d->methods), by_path);
}

void rm_dispatch_free(struct rm_dispatch *d)
{
        if (d == NULL)
                return;
        for (size_t i = 0; i < d->n; i++)
                free(d->methods[i].path);
        free(d->methods);
        free(d);
}

struct rm_dispatch *rm_dispatch_new(const struct rm_handler_entry *handlers,
                                    struct rm_daemon *daemon, struct rm_error **err)
{
        struct rm_dispatch *d = xzalloc(sizeof(*d));
        d->daemon = daemon;
        size_t total = 0;
        for (size_t s = 0; s < sizeof(services) / sizeof(services[0]); s++)
                total += services[s]->n_methods;
        d->methods = xzalloc(sizeof(struct method) * total);
        for (size_t s = 0; s < sizeof(services) / sizeof(services[0]); s++) {
                for (unsigned m = 0; m < services[s]->n_methods; m++) {
                        const ProtobufCMethodDescriptor *md = &services[s]->methods[m];
                        d->methods[d->n].path = xasprintf("/%s/%s", services[s]->name, md->name);
                        d->methods[d->n].input = md->input;
                        d->n++;
                }
        }
        qsort(d->methods, d->n, sizeof(*d->methods), by_path);

        for (const struct rm_handler_entry *h = handlers; h->fn; h++) {
                cleanup_free char *path = xasprintf("/%s/%s", h->service, h->method);
                struct method *m = find(d, path);
                if (m == NULL) {
                        rm_error_set(err, RM_INTERNAL, "handler for %s, which CRI v1 does not have",
                                     path);
                        rm_dispatch_free(d);
                        return NULL;
                }
                m->fn = h->fn;
                m->kind = h->kind;
        }
        return d;
}

size_t rm_dispatch_count(const struct rm_dispatch *d, size_t *implemented)
{
        size_t n = 0;
        for (size_t i = 0; i < d->n; i++)
                n += d->methods[i].fn != NULL;
        if (implemented)
                *implemented = n;
        return d->n;
}

const char *rm_dispatch_method(const struct rm_dispatch *d, size_t i, enum rm_call_kind *kind)
{
        if (kind)
                *kind = d->methods[i].fn ? d->methods[i].kind : RM_CALL_QUICK;
        return d->methods[i].path;
}

/* One line per failed call: expected outcomes (a method this build lacks, an object that
 * is gone) at debug so polling clients do not flood the log. */
static void log_failure(const char *method, const struct rm_error *e)
{
        enum rm_log_level lvl = RM_LOG_WARN;
        if (e->code == RM_UNIMPLEMENTED || e->code == RM_NOT_FOUND)
                lvl = RM_LOG_DEBUG;
        else if (e->code == RM_INVALID_ARGUMENT || e->code == RM_ALREADY_EXISTS ||
                 e->code == RM_FAILED_PRECONDITION)
                lvl = RM_LOG_INFO;
        rm_log(lvl, "%s failed: %s: %s", method, rm_code_name(e->code), e->msg);
}

static int call_handler(struct rm_dispatch *d, struct rm_call *call, struct method *m,
                        const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len,
                        struct rm_error **err)
{
        ProtobufCMessage *req = protobuf_c_message_unpack(m->input, NULL, in_len, in);
        if (req == NULL)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "%s: the request (%zu bytes) does not decode as %s", m->path,
                                    in_len, m->input->name);

        call->daemon = d->daemon;
        call->arena = rm_arena_new();
        call->method = m->path;
        if (m->kind == RM_CALL_PROMISE)
                call->cancel = NULL; /* a stop finishes what it started */
        ProtobufCMessage *resp = NULL;
        int rc = m->fn(call, req, &resp, err);
        protobuf_c_message_free_unpacked(req, NULL);
        if (rc == 0 && resp == NULL)
                rc =
                    rm_error_set(err, RM_INTERNAL, "%s: the handler produced no response", m->path);
        if (rc == 0) {
                *out_len = protobuf_c_message_get_packed_size(resp);
                *out = xmalloc(*out_len ? *out_len : 1);
                protobuf_c_message_pack(resp, *out);
        }
        rm_arena_free(call->arena);
        call->arena = NULL;
        return rc;
}

int rm_dispatch_call(void *ctx, struct rm_call *call, const char *method, const uint8_t *in,
                     size_t in_len, uint8_t **out, size_t *out_len, struct rm_error **err)
{
        struct rm_dispatch *d = ctx;
        struct method *m = find(d, method);
        int rc;
        if (m == NULL)
                rc = rm_error_set(err, RM_UNIMPLEMENTED, "unknown method %s", method);
        else if (m->fn == NULL)
                rc = rm_error_set(err, RM_UNIMPLEMENTED,
                                  "%s is not implemented by this version of remora", method);
        else
                rc = call_handler(d, call, m, in, in_len, out, out_len, err);
        if (rc < 0 && err && *err)
                log_failure(method, *err);
        return rc;
}
