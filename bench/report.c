/* Figures and the two outputs: a table on stdout and JSON. */
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench.h"
#include "remora/cleanup.h"
#include "remora/xalloc.h"

static struct figure *find(const struct endpoint *ep, const char *name)
{
        for (size_t i = 0; i < ep->nfigs; i++)
                if (strcmp(ep->figs[i].name, name) == 0)
                        return &ep->figs[i];
        return NULL;
}

struct figure *fig_get(struct endpoint *ep, const char *name, const char *unit, bool value)
{
        struct figure *f = find(ep, name);
        if (f)
                return f;
        ep->figs = xrealloc(ep->figs, (ep->nfigs + 1) * sizeof(*ep->figs));
        f = &ep->figs[ep->nfigs++];
        memset(f, 0, sizeof(*f));
        f->name = xstrdup(name);
        f->unit = unit;
        f->value = value;
        f->scenario = ep->scenario;
        return f;
}

void fig_add(struct endpoint *ep, const char *name, const char *unit, double v)
{
        pthread_mutex_lock(&ep->lock);
        struct figure *f = fig_get(ep, name, unit, false);
        if (f->n == f->cap) {
                f->cap = f->cap ? f->cap * 2 : 16;
                f->v = xrealloc(f->v, f->cap * sizeof(double));
        }
        f->v[f->n++] = v;
        pthread_mutex_unlock(&ep->lock);
}

void fig_set_value(struct endpoint *ep, const char *name, const char *unit, double v)
{
        pthread_mutex_lock(&ep->lock);
        struct figure *f = fig_get(ep, name, unit, true);
        f->value = true;
        f->unit = unit;
        if (!f->v)
                f->v = xmalloc(sizeof(double));
        f->v[0] = v;
        f->n = 1;
        pthread_mutex_unlock(&ep->lock);
}

void fig_mark(struct endpoint *ep, const char *const *names, const char *unit, enum fig_state state,
              const char *note)
{
        pthread_mutex_lock(&ep->lock);
        for (const char *const *n = names; *n; n++) {
                struct figure *f = fig_get(ep, *n, unit, false);
                if (f->state != FIG_OK)
                        continue; /* the first reason wins */
                f->state = state;
                f->note = xstrdup(note);
        }
        pthread_mutex_unlock(&ep->lock);
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

struct summary {
        bool ok;
        double p50, p95, p99, max;
};

/* Nearest-rank percentiles. */
static struct summary summarize(const struct figure *f)
{
        struct summary s = {0};
        if (!f || f->state != FIG_OK || f->n == 0)
                return s;
        s.ok = true;
        if (f->value) {
                s.p50 = s.p95 = s.p99 = s.max = f->v[0];
                return s;
        }
        double *v = xmalloc(f->n * sizeof(double));
        memcpy(v, f->v, f->n * sizeof(double));
        qsort(v, f->n, sizeof(double), cmp_double);
        size_t i50 = (size_t)ceil(0.50 * f->n), i95 = (size_t)ceil(0.95 * f->n),
               i99 = (size_t)ceil(0.99 * f->n);
        s.p50 = v[i50 ? i50 - 1 : 0];
        s.p95 = v[i95 ? i95 - 1 : 0];
        s.p99 = v[i99 ? i99 - 1 : 0];
        s.max = v[f->n - 1];
        free(v);
        return s;
}

static const char *state_word(const struct figure *f)
{
        if (!f)
                return "not run";
        switch (f->state) {
        case FIG_UNSUPPORTED:
                return "unsupported";
        case FIG_FAILED:
                return "failed";
        default:
                return f->n ? "ok" : "not run";
        }
}

/* Figure names in first-seen order across endpoints. */
static size_t all_names(const struct bench *b, const char ***out)
{
        const char **names = NULL;
        size_t n = 0;
        for (size_t e = 0; e < b->nep; e++)
                for (size_t i = 0; i < b->ep[e].nfigs; i++) {
                        const char *nm = b->ep[e].figs[i].name;
                        bool seen = false;
                        for (size_t j = 0; j < n && !seen; j++)
                                seen = strcmp(names[j], nm) == 0;
                        if (!seen) {
                                names = xrealloc(names, (n + 1) * sizeof(*names));
                                names[n++] = nm;
                        }
                }
        *out = names;
        return n;
}

static const char *unit_of(const struct bench *b, const char *name)
{
        for (size_t e = 0; e < b->nep; e++) {
                const struct figure *f = find(&b->ep[e], name);
                if (f && f->unit)
                        return f->unit;
        }
        return "";
}

static const char *scenario_of(const struct bench *b, const char *name)
{
        for (size_t e = 0; e < b->nep; e++) {
                const struct figure *f = find(&b->ep[e], name);
                if (f && f->scenario)
                        return f->scenario;
        }
        return NULL;
}

static void cell(char *buf, size_t len, const struct figure *f)
{
        struct summary s = summarize(f);
        if (!s.ok)
                snprintf(buf, len, "%s", state_word(f));
        else if (f->value)
                snprintf(buf, len, "%.2f", s.p50);
        else
                snprintf(buf, len, "%.2f / %.2f / %.2f", s.p50, s.p95, s.max);
}

void report_table(const struct bench *b)
{
        const char **names;
        size_t n = all_names(b, &names);
        printf("\n");
        for (size_t e = 0; e < b->nep; e++)
                printf("%s = %s (%s, pid %d)\n", b->ep[e].label, b->ep[e].conn->target,
                       b->ep[e].runtime ? b->ep[e].runtime : "?", (int)b->ep[e].pid);
        printf("latencies: p50 / p95 / max over n=%d (after %d warm-up)\n\n", b->n, b->warmup);
        printf("%-40s %-7s", "figure", "unit");
        for (size_t e = 0; e < b->nep; e++)
                printf(" %-28s", b->ep[e].label);
        if (b->nep == 2)
                printf(" %s", "A/B p50");
        printf("\n");
        for (size_t i = 0; i < n; i++) {
                printf("%-40s %-7s", names[i], unit_of(b, names[i]));
                struct summary s[BENCH_MAX_ENDPOINTS];
                for (size_t e = 0; e < b->nep; e++) {
                        const struct figure *f = find(&b->ep[e], names[i]);
                        char c[64];
                        cell(c, sizeof(c), f);
                        printf(" %-28s", c);
                        s[e] = summarize(f);
                }
                if (b->nep == 2 && s[0].ok && s[1].ok && s[1].p50 > 0)
                        printf(" %.2f", s[0].p50 / s[1].p50);
                printf("\n");
        }
        /* Why a figure is missing, once per endpoint and reason. */
        for (size_t e = 0; e < b->nep; e++)
                for (size_t i = 0; i < b->ep[e].nfigs; i++) {
                        const struct figure *f = &b->ep[e].figs[i];
                        if (f->state == FIG_OK || !f->note)
                                continue;
                        bool dup = false;
                        for (size_t j = 0; j < i && !dup; j++)
                                dup = b->ep[e].figs[j].state != FIG_OK && b->ep[e].figs[j].note &&
                                      strcmp(b->ep[e].figs[j].note, f->note) == 0;
                        if (!dup)
                                printf("%s: %s: %s\n", b->ep[e].label, state_word(f), f->note);
                }
        free(names);
}

static struct json_object *jdouble(double v)
{
        return json_object_new_double(round(v * 1000.0) / 1000.0);
}

static struct json_object *machine(void)
{
        struct json_object *m = json_object_new_object();
        struct utsname u;
        if (uname(&u) == 0) {
                json_object_object_add(m, "kernel", json_object_new_string(u.release));
                json_object_object_add(m, "arch", json_object_new_string(u.machine));
        }
        json_object_object_add(m, "nproc", json_object_new_int((int)sysconf(_SC_NPROCESSORS_ONLN)));
        cleanup_file FILE *f = fopen("/etc/os-release", "re");
        char line[256];
        while (f && fgets(line, sizeof(line), f)) {
                if (strncmp(line, "PRETTY_NAME=", 12) == 0) {
                        line[strcspn(line, "\n")] = '\0';
                        char *v = line + 12;
                        if (*v == '"') {
                                v++;
                                v[strcspn(v, "\"")] = '\0';
                        }
                        json_object_object_add(m, "os", json_object_new_string(v));
                }
        }
        return m;
}

struct json_object *report_doc(const struct bench *b)
{
        struct json_object *root = json_object_new_object();
        json_object_object_add(root, "tool", json_object_new_string("remora-bench"));
        json_object_object_add(root, "run_id", json_object_new_string(b->run_id));
        json_object_object_add(root, "machine", machine());
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "n", json_object_new_int(b->n));
        json_object_object_add(o, "warmup", json_object_new_int(b->warmup));
        json_object_object_add(o, "parallel", json_object_new_int(b->parallel));
        json_object_object_add(o, "pods", json_object_new_int(b->pods_k));
        json_object_object_add(o, "image", json_object_new_string(b->image));
        json_object_object_add(o, "pull_image", json_object_new_string(b->pull_image));
        json_object_object_add(root, "options", o);
        struct json_object *eps = json_object_new_array();
        for (size_t e = 0; e < b->nep; e++) {
                struct json_object *j = json_object_new_object();
                json_object_object_add(j, "label", json_object_new_string(b->ep[e].label));
                json_object_object_add(j, "endpoint",
                                       json_object_new_string(b->ep[e].conn->target));
                json_object_object_add(j, "runtime",
                                       b->ep[e].runtime ? json_object_new_string(b->ep[e].runtime)
                                                        : NULL);
                json_object_object_add(j, "pid", json_object_new_int(b->ep[e].pid));
                json_object_array_add(eps, j);
        }
        json_object_object_add(root, "endpoints", eps);

        const char **names;
        size_t n = all_names(b, &names);
        struct json_object *figs = json_object_new_array();
        for (size_t i = 0; i < n; i++) {
                struct json_object *jf = json_object_new_object();
                json_object_object_add(jf, "name", json_object_new_string(names[i]));
                json_object_object_add(jf, "unit", json_object_new_string(unit_of(b, names[i])));
                const char *scenario = scenario_of(b, names[i]);
                if (scenario)
                        json_object_object_add(jf, "scenario", json_object_new_string(scenario));
                struct json_object *res = json_object_new_array();
                struct summary s[BENCH_MAX_ENDPOINTS];
                for (size_t e = 0; e < b->nep; e++) {
                        const struct figure *f = find(&b->ep[e], names[i]);
                        struct json_object *r = json_object_new_object();
                        json_object_object_add(r, "endpoint",
                                               json_object_new_string(b->ep[e].label));
                        json_object_object_add(r, "state", json_object_new_string(state_word(f)));
                        if (f && f->note)
                                json_object_object_add(r, "note", json_object_new_string(f->note));
                        s[e] = summarize(f);
                        if (s[e].ok && f->value) {
                                json_object_object_add(r, "value", jdouble(s[e].p50));
                        } else if (s[e].ok) {
                                json_object_object_add(r, "n", json_object_new_int((int)f->n));
                                json_object_object_add(r, "p50", jdouble(s[e].p50));
                                json_object_object_add(r, "p95", jdouble(s[e].p95));
                                json_object_object_add(r, "p99", jdouble(s[e].p99));
                                json_object_object_add(r, "max", jdouble(s[e].max));
                        }
                        json_object_array_add(res, r);
                }
                json_object_object_add(jf, "results", res);
                if (b->nep == 2 && s[0].ok && s[1].ok && s[1].p50 > 0)
                        json_object_object_add(jf, "ratio_p50", jdouble(s[0].p50 / s[1].p50));
                json_object_array_add(figs, jf);
        }
        free(names);
        json_object_object_add(root, "figures", figs);
        return root;
}

int report_json(const struct bench *b, const char *path)
{
        cleanup_json struct json_object *root = report_doc(b);
        if (json_object_to_file_ext(path, root, JSON_C_TO_STRING_PRETTY) < 0) {
                fprintf(stderr, "remora-bench: cannot write %s: %s\n", path,
                        json_util_get_last_err());
                return -1;
        }
        return 0;
}
