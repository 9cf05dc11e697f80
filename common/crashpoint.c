#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "remora/crashpoint.h"
#include "remora/log.h"

/* Set once by rm_crashpoint_init before any thread starts; read-only afterwards. */
const char *rm__crash_at;
static size_t crash_name_len;
static long crash_nth = 1;
static atomic_long crash_hits;

void rm_crashpoint_init(void)
{
        const char *v = getenv("REMORA_CRASH_AT");
        if (v == NULL || *v == '\0')
                return;
        const char *colon = strchr(v, ':');
        crash_name_len = colon ? (size_t)(colon - v) : strlen(v);
        if (colon) {
                char *end = NULL;
                long n = strtol(colon + 1, &end, 10);
                crash_nth = (end && *end == '\0' && n > 0) ? n : 1;
        }
        rm__crash_at = v;
        rm_log_warn("crash point armed: %.*s (hit %ld); this remorad kills itself there",
                    (int)crash_name_len, v, crash_nth);
}

const char *rm_crashpoint_armed(void)
{
        return rm__crash_at;
}

void rm__crashpoint_hit(const char *name)
{
        if (strlen(name) != crash_name_len || strncmp(name, rm__crash_at, crash_name_len) != 0)
                return;
        if (atomic_fetch_add(&crash_hits, 1) + 1 != crash_nth)
                return;
        rm_log_warn("crash point %s reached: SIGKILL", name);
        kill(getpid(), SIGKILL);
        _exit(137); /* not reached */
}
