/* The daemon's Prometheus endpoint (config section "metrics": {"address": ...}, off by
 * default) and the counters the server layer keeps for it. Each family is read from the
 * module that owns it at scrape time; nothing holds a lock across the whole scrape. */
#ifndef REMORA_SERVER_METRICS_H
#define REMORA_SERVER_METRICS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <json-c/json.h>

#include "remora/error.h"
#include "remora/metrics.h"

struct rm_daemon;

/* What the server layer counts itself (the call path's figures live in dispatch.c). */
struct rm_server_counters {
        atomic_uint_fast64_t pulls[17]; /* PullImage by gRPC status code */
        struct rm_histo pull_duration;
        struct rm_histo net_setup;
        struct rm_histo net_teardown;
        uint64_t startup_ns; /* from entering rm_daemon_start to serving */
};

struct rm_metrics_server;

/* Start serving /metrics if section names an address: "unix:///path", "HOST:PORT" or
 * "[V6]:PORT". NULL with *err untouched when off; NULL with *err on a bad address. */
struct rm_metrics_server *rm_metrics_server_open(struct json_object *section, struct rm_daemon *d,
                                                 struct rm_error **err);
void rm_metrics_server_close(struct rm_metrics_server *m);
/* The address it listens on ("" when off), e.g. 127.0.0.1:9100. */
const char *rm_metrics_server_address(const struct rm_metrics_server *m);

/* Every family, in the text exposition format. */
void rm_metrics_write(struct rm_daemon *d, FILE *out);

#endif
