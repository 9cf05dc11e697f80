#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "remora/fsutil.h"
#include "remora/log.h"

/* The one process-wide setting outside struct rm_daemon: the log threshold is read by
 * every thread on every log call and written once at start-up. */
static _Atomic int threshold = RM_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void rm_log_set_level(enum rm_log_level level)
{
        atomic_store(&threshold, (int)level);
}

enum rm_log_level rm_log_get_level(void)
{
        return (enum rm_log_level)atomic_load(&threshold);
}

bool rm_log_parse_level(const char *name, enum rm_log_level *level)
{
        for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
                if (strcasecmp(name, level_names[i]) == 0) {
                        *level = (enum rm_log_level)i;
                        return true;
                }
        }
        return false;
}

const char *rm_log_level_name(enum rm_log_level level)
{
        if ((unsigned)level < sizeof(level_names) / sizeof(level_names[0]))
                return level_names[level];
        return "unknown";
}

void rm_log(enum rm_log_level level, const char *fmt, ...)
{
        if ((int)level > atomic_load(&threshold))
                return;

        char line[4096];
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        int n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03ldZ %-5s ", ts.tv_nsec / 1000000,
                      rm_log_level_name(level));

        char msg[3072];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

        /* Keep one event on one line: escape embedded newlines. */
        for (const char *p = msg; *p && (size_t)n < sizeof(line) - 3; p++) {
                if (*p == '\n') {
                        line[n++] = '\\';
                        line[n++] = 'n';
                } else {
                        line[n++] = *p;
                }
        }
        line[n++] = '\n';
        (void)rm_write_all(STDERR_FILENO, line, (size_t)n);
}
