/* Logging: one line per event on stderr, "time level message". */
#ifndef REMORA_LOG_H
#define REMORA_LOG_H

#include <stdbool.h>

enum rm_log_level {
        RM_LOG_ERROR = 0,
        RM_LOG_WARN = 1,
        RM_LOG_INFO = 2,
        RM_LOG_DEBUG = 3,
};

/* The threshold is process-wide (set once at start-up, read atomically). */
void rm_log_set_level(enum rm_log_level level);
enum rm_log_level rm_log_get_level(void);

/* Parse "error", "warn", "info" or "debug". Returns false on anything else. */
bool rm_log_parse_level(const char *name, enum rm_log_level *level);
const char *rm_log_level_name(enum rm_log_level level);

/* Writes the whole line with one write(2) so lines from threads never interleave;
 * newlines inside the message are escaped to keep one event per line. */
void rm_log(enum rm_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define rm_log_error(...) rm_log(RM_LOG_ERROR, __VA_ARGS__)
#define rm_log_warn(...)  rm_log(RM_LOG_WARN, __VA_ARGS__)
#define rm_log_info(...)  rm_log(RM_LOG_INFO, __VA_ARGS__)
#define rm_log_debug(...) rm_log(RM_LOG_DEBUG, __VA_ARGS__)

#endif
