/* Instruments for the Prometheus endpoint: lock-free counters and fixed-bucket
 * histograms that any module may keep in its own structs (recording costs a few atomic
 * adds, never a lock), and the text-format writer the server's /metrics uses to print
 * them. Names and labels are the server's business; modules only count. */
#ifndef REMORA_METRICS_H
#define REMORA_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Bucket upper bounds in seconds, 100 µs to 60 s (Prometheus adds +Inf). */
#define RM_HISTO_BUCKETS 18
extern const double rm_histo_bounds[RM_HISTO_BUCKETS];

struct rm_histo {
        atomic_uint_fast64_t bucket[RM_HISTO_BUCKETS + 1]; /* not cumulative; last: +Inf */
        atomic_uint_fast64_t sum_ns;
        atomic_uint_fast64_t count;
};

/* Record one observation of ns nanoseconds. */
void rm_histo_observe(struct rm_histo *h, uint64_t ns);

/* Now on CLOCK_MONOTONIC in nanoseconds, for timing what a histogram records. */
uint64_t rm_metrics_now_ns(void);

/* Text exposition. `labels` is either NULL or the inside of the braces, already
 * formatted and escaped (`method="Version"`). */
void rm_metrics_family(FILE *out, const char *name, const char *type, const char *help);
void rm_metrics_sample(FILE *out, const char *name, const char *labels, double value);
void rm_metrics_histo(FILE *out, const char *name, const char *labels, const struct rm_histo *h);
/* Escape a label value into buf (backslash, quote, newline), truncating to len. */
const char *rm_metrics_label_escape(const char *value, char *buf, size_t len);

#endif
