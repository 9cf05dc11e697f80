/* remora-bench: shared state of one run. Figures are named series of samples kept per
 * endpoint; scenarios fill them, report.c prints them. */
#ifndef REMORA_BENCH_H
#define REMORA_BENCH_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "cri.h"

struct json_object;

#define BENCH_MAX_ENDPOINTS 2

enum fig_state { FIG_OK, FIG_UNSUPPORTED, FIG_FAILED };

/* A latency figure holds samples (ms); a value figure holds one number. */
struct figure {
        char *name;
        const char *unit;
        bool value;
        enum fig_state state;
        char *note;
        const char *scenario; /* the scenario that made it (static string), NULL if unknown */
        double *v;
        size_t n, cap;
};

struct endpoint {
        const char *label; /* "A", "B" */
        struct cri_conn *conn;
        pid_t pid; /* the daemon, -1 when unknown */
        char *runtime;
        struct figure *figs;
        size_t nfigs;
        pthread_mutex_t lock; /* figs and pods, for the parallel scenario */
        char **pods;          /* sandboxes created and not yet removed */
        size_t npods;
        double rss_idle_kib;
        const char *scenario; /* the one running now; figures made meanwhile belong to it */
};

struct bench {
        struct endpoint ep[BENCH_MAX_ENDPOINTS];
        size_t nep;
        int n, warmup, parallel, pods_k;
        bool shared_pid;   /* pods share one PID namespace (an infra process where needed) */
        bool host_network; /* pods use the node's network: no network setup to measure */
        const char *image, *pull_image, *json, *html;
        size_t list_sizes[8];
        size_t nlist;
        double timeout_s;
        const char *helpers[8];
        const char *only; /* comma list of scenario names, NULL for all but soak and node */
        int soak_pods, soak_execs, soak_pulls;    /* soak: lifecycles, ExecSyncs, pulls */
        int node_pods;                            /* node: pods of 2 containers each */
        int load_execs, load_stops, load_pulls;   /* load: slow calls held in flight */
        int load_seconds;                         /* load: how long they last */
        const char *restart[BENCH_MAX_ENDPOINTS]; /* node: command that starts the daemon */
        char run_id[32];
        unsigned long seq; /* name counter, under seq_lock */
        pthread_mutex_t seq_lock;
};

/* Set by SIGINT/SIGTERM; loops stop, cleanup still runs. */
extern volatile sig_atomic_t bench_interrupted;

/* figures (report.c) */
struct figure *fig_get(struct endpoint *ep, const char *name, const char *unit, bool value);
void fig_add(struct endpoint *ep, const char *name, const char *unit, double v);
void fig_set_value(struct endpoint *ep, const char *name, const char *unit, double v);
/* Marks NAMES (NULL-terminated) as STATE with a note, e.g. "RunPodSandbox: UNIMPLEMENTED". */
void fig_mark(struct endpoint *ep, const char *const *names, const char *unit, enum fig_state state,
              const char *note);
void report_table(const struct bench *b);
int report_json(const struct bench *b, const char *path);
/* The --json document of a run (the caller puts it). */
struct json_object *report_doc(const struct bench *b);
/* A self-contained HTML page (inline SVG charts) from a --json document (html.c). */
int report_html_doc(struct json_object *doc, const char *path);

/* scenarios (scenarios.c, resources.c) */
void scenario_rpc(struct bench *b);
void scenario_pod(struct bench *b);
void scenario_network(struct bench *b);
void scenario_container(struct bench *b);
void scenario_parallel(struct bench *b);
void scenario_lists(struct bench *b);
void scenario_image(struct bench *b);
void scenario_memory(struct bench *b);
/* longrun.c: run only when named in --only */
void scenario_soak(struct bench *b);
void scenario_node(struct bench *b);
/* load.c: run only when named in --only */
void scenario_load(struct bench *b);
/* Stops and removes every sandbox still recorded; returns how many failed. */
int bench_cleanup(struct bench *b);

#endif
