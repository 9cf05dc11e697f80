#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.pb-c.h"
#include "dispatch.h"
#include "remora/cleanup.h"
#include "remora/log.h"
#include "remora/metrics.h"
#include "remora/xalloc.h"

/* gRPC status codes run 0 (OK) to 16 (UNAUTHENTICATED). */
#define N_CODES 17

struct method {
        char *path;       /* "/runtime.v1.RuntimeService/Version" */
        const char *name; /* "Version", inside path */
        const ProtobufCMessageDescriptor *input;
        const ProtobufCMessageDescriptor *output;
        rm_handler_fn fn;
        atomic_uint_fast64_t calls[N_CODES]; /* answered, by status code */
        atomic_int in_flight;
        struct rm_histo latency;

        const char *why; /* why it is not implemented, when it deliberately is not */
        bool streamed;   /* served by the stream front end */
        enum rm_call_kind kind;
};

struct rm_dispatch {
        struct method *methods; /* sorted by path */
        size_t n;
        struct rm_daemon *daemon;
        atomic_int in_flight;
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
                        d->methods[d->n].name = strrchr(d->methods[d->n].path, '/') + 1;
                        d->methods[d->n].input = md->input;
                        d->methods[d->n].output = md->output;
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

int rm_dispatch_explain(struct rm_dispatch *d, const struct rm_unimplemented_entry *list,
                        struct rm_error **err)
{
        for (const struct rm_unimplemented_entry *u = list; u->method; u++) {
                cleanup_free char *path = xasprintf("/%s/%s", u->service, u->method);
                struct method *m = find(d, path);
                if (m == NULL)
                        return rm_error_set(err, RM_INTERNAL,
                                            "reason for %s, which CRI v1 does not have", path);
                m->why = u->why;
        }
        return 0;
}

int rm_dispatch_mark_streamed(struct rm_dispatch *d, const char *path, struct rm_error **err)
{
        struct method *m = find(d, path);
        if (m == NULL)
                return rm_error_set(err, RM_INTERNAL,
                                    "stream method %s, which CRI v1 does not have", path);
        m->streamed = true;
        return 0;
}

rm_handler_fn rm_dispatch_handler(const struct rm_dispatch *d, const char *path,
                                  const ProtobufCMessageDescriptor **input,
                                  const ProtobufCMessageDescriptor **output)
{
        struct method *m = find(d, path);
        if (m == NULL || m->fn == NULL)
                return NULL;
        *input = m->input;
        *output = m->output;
        return m->fn;
}

const ProtobufCMessageDescriptor *rm_dispatch_output(const struct rm_dispatch *d, const char *path,
                                                     const ProtobufCMessageDescriptor **input)
{
        struct method *m = find(d, path);
        if (m == NULL)
                return NULL;
        *input = m->input;
        return m->output;
}

size_t rm_dispatch_count(const struct rm_dispatch *d, size_t *implemented)
{
        size_t n = 0;
        for (size_t i = 0; i < d->n; i++)
                n += d->methods[i].fn != NULL || d->methods[i].streamed;
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
        if (rc == 0 && resp == NULL && call->raw == NULL)
                rc =
                    rm_error_set(err, RM_INTERNAL, "%s: the handler produced no response", m->path);
        if (rc == 0 && resp != NULL) {
                *out_len = protobuf_c_message_get_packed_size(resp);
                *out = xmalloc(*out_len ? *out_len : 1);
                protobuf_c_message_pack(resp, *out);
        } else if (rc == 0) {
                *out = call->raw;
                *out_len = call->raw_len;
                call->raw = NULL;
        }
        free(call->raw);
        call->raw = NULL;
        rm_arena_free(call->arena);
        call->arena = NULL;
        return rc;
}

static void record(struct method *m, int code, uint64_t ns)
{
        rm_histo_observe(&m->latency, ns);
        atomic_fetch_add_explicit(&m->calls[code >= 0 && code < N_CODES ? code : RM_UNKNOWN], 1,
                                  memory_order_relaxed);
}

void rm_dispatch_record(struct rm_dispatch *d, const char *path, int code, uint64_t ns)
{
        struct method *m = find(d, path);
        if (m)
                record(m, code, ns);
}

int rm_dispatch_call(void *ctx, struct rm_call *call, const char *method, const uint8_t *in,
                     size_t in_len, uint8_t **out, size_t *out_len, struct rm_error **err)
{
        struct rm_dispatch *d = ctx;
        struct method *m = find(d, method);
        int rc;
        if (m == NULL)
                rc = rm_error_set(err, RM_UNIMPLEMENTED, "unknown method %s", method);
        else if (m->fn == NULL && m->why)
                rc = rm_error_set(err, RM_UNIMPLEMENTED, "%s is not implemented: %s", method,
                                  m->why);
        else if (m->fn == NULL)
                rc = rm_error_set(err, RM_UNIMPLEMENTED,
                                  "%s is not implemented by this version of remora", method);
        else {
                atomic_fetch_add(&d->in_flight, 1);
                atomic_fetch_add(&m->in_flight, 1);
                uint64_t t0 = rm_metrics_now_ns();
                rc = call_handler(d, call, m, in, in_len, out, out_len, err);
                record(m, rc == 0 ? 0 : (err && *err ? (int)(*err)->code : RM_UNKNOWN),
                       rm_metrics_now_ns() - t0);
                atomic_fetch_sub(&m->in_flight, 1);
                atomic_fetch_sub(&d->in_flight, 1);
        }
        if (rc < 0 && err && *err)
                log_failure(method, *err);
        return rc;
}

void rm_dispatch_metrics_write(struct rm_dispatch *d, FILE *out)
{
        rm_metrics_family(out, "remora_cri_calls_total", "counter",
                          "CRI calls answered, by method and gRPC status code.");
        for (size_t i = 0; i < d->n; i++) {
                for (int c = 0; c < N_CODES; c++) {
                        uint64_t v =
                            atomic_load_explicit(&d->methods[i].calls[c], memory_order_relaxed);
                        if (v == 0)
                                continue;
                        char labels[160];
                        snprintf(labels, sizeof(labels), "method=\"%s\",code=\"%s\"",
                                 d->methods[i].name, rm_code_name((enum rm_code)c));
                        rm_metrics_sample(out, "remora_cri_calls_total", labels, (double)v);
                }
        }
        rm_metrics_family(out, "remora_cri_call_duration_seconds", "histogram",
                          "Time from decoding a CRI request to its response, by method.");
        for (size_t i = 0; i < d->n; i++) {
                if (atomic_load_explicit(&d->methods[i].latency.count, memory_order_relaxed) == 0)
                        continue;
                char labels[96];
                snprintf(labels, sizeof(labels), "method=\"%s\"", d->methods[i].name);
                rm_metrics_histo(out, "remora_cri_call_duration_seconds", labels,
                                 &d->methods[i].latency);
        }
        rm_metrics_family(out, "remora_cri_calls_in_flight", "gauge",
                          "CRI calls being handled now.");
        rm_metrics_sample(out, "remora_cri_calls_in_flight", NULL,
                          (double)atomic_load(&d->in_flight));
}

int rm_dispatch_in_flight(struct rm_dispatch *d, const char *method)
{
        struct method *m = find(d, method);
        return m ? atomic_load(&m->in_flight) : 0;
}
