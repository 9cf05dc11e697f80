#include <string.h>
#include <time.h>

#include "remora/metrics.h"
#include "remora/clock.h"

const double rm_histo_bounds[RM_HISTO_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                  0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                                  1,      2.5,     5,      10,    30,     60};

void rm_histo_observe(struct rm_histo *h, uint64_t ns)
{
        double s = (double)ns / 1e9;
        size_t i = 0;
        while (i < RM_HISTO_BUCKETS && s > rm_histo_bounds[i])
                i++;
        atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
        atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

uint64_t rm_metrics_now_ns(void)
{
        return (uint64_t)rm_mono_ns();
}

void rm_metrics_family(FILE *out, const char *name, const char *type, const char *help)
{
        fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void rm_metrics_sample(FILE *out, const char *name, const char *labels, double value)
{
        if (labels && *labels)
                fprintf(out, "%s{%s} %.17g\n", name, labels, value);
        else
                fprintf(out, "%s %.17g\n", name, value);
}

void rm_metrics_histo(FILE *out, const char *name, const char *labels, const struct rm_histo *h)
{
        /* Read the count last: a scrape racing an observation may see the bucket before
         * the count, never a count larger than the buckets' total, which Prometheus
         * would take for a reset. */
        const char *sep = labels && *labels ? "," : "";
        const char *l = labels ? labels : "";
        uint64_t cum = 0;
        for (size_t i = 0; i <= RM_HISTO_BUCKETS; i++) {
                cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
                if (i < RM_HISTO_BUCKETS)
                        fprintf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, l, sep,
                                rm_histo_bounds[i], (unsigned long long)cum);
                else
                        fprintf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, l, sep,
                                (unsigned long long)cum);
        }
        double sum = (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9;
        if (*l) {
                fprintf(out, "%s_sum{%s} %.9g\n", name, l, sum);
                fprintf(out, "%s_count{%s} %llu\n", name, l, (unsigned long long)cum);
        } else {
                fprintf(out, "%s_sum %.9g\n", name, sum);
                fprintf(out, "%s_count %llu\n", name, (unsigned long long)cum);
        }
}

const char *rm_metrics_label_escape(const char *value, char *buf, size_t len)
{
        size_t o = 0;
        for (const char *p = value ? value : ""; *p && o + 3 < len; p++) {
                if (*p == '\\' || *p == '"') {
                        buf[o++] = '\\';
                        buf[o++] = *p;
                } else if (*p == '\n') {
                        buf[o++] = '\\';
                        buf[o++] = 'n';
                } else {
                        buf[o++] = *p;
                }
        }
        buf[o] = '\0';
        return buf;
}
