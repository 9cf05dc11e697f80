/* remorad: the Remora CRI daemon. */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>

#include "grpc_locks.h"
#include "remora/cleanup.h"
#include "remora/crashpoint.h"
#include "remora/log.h"
#include "remora/server.h"

int main(int argc, char **argv)
{
        struct rm_config cfg;
        rm_config_init(&cfg);
        switch (rm_cli_parse(&cfg, argc, argv)) {
        case RM_CLI_EXIT_OK:
                rm_config_release(&cfg);
                return 0;
        case RM_CLI_EXIT_USAGE:
                rm_config_release(&cfg);
                return 2;
        case RM_CLI_EXIT_FAIL:
                rm_config_release(&cfg);
                return 1;
        case RM_CLI_CHECK: {
                /* Only the check's own lines on stdout; warnings still reach stderr. */
                rm_log_set_level(RM_LOG_WARN);
                int fails = rm_check_host(&cfg, stdout);
                rm_config_release(&cfg);
                return fails ? 1 : 0;
        }
        case RM_CLI_RUN:
                break;
        }
        rm_log_set_level(cfg.log_level);
        rm_crashpoint_init(); /* tests only: REMORA_CRASH_AT */
        /* glibc gives each thread that contends for the heap an arena of its own, up to
         * 8 per core, and rarely returns their memory: with an elastic pool of call
         * threads that means tens of MB kept after a burst. Two arenas (plus per-thread
         * caches) serve a daemon whose threads mostly wait; MALLOC_ARENA_MAX overrides. */
        if (getenv("MALLOC_ARENA_MAX") == NULL)
                mallopt(M_ARENA_MAX, 2);

        /* Block the stop signals in every thread (gRPC's included, so block before
         * grpc_init) and take them synchronously here. */
        sigset_t stop;
        sigemptyset(&stop);
        sigaddset(&stop, SIGTERM);
        sigaddset(&stop, SIGINT);
        pthread_sigmask(SIG_BLOCK, &stop, NULL);
        signal(SIGPIPE, SIG_IGN);

        /* About 6 % less daemon CPU per call (two remorads interleaved, 10,000 calls). */
        rm_grpc_lock_graph_off();
        grpc_init();
        cleanup_error struct rm_error *err = NULL;
        struct rm_daemon *d = rm_daemon_start(&cfg, &err);
        if (d == NULL) {
                rm_log_error("cannot start: %s", err->msg);
                grpc_shutdown();
                rm_config_release(&cfg);
                return 1;
        }

        int sig = 0;
        sigwait(&stop, &sig);
        rm_log_info("received %s: no new calls, finishing calls in flight", strsignal(sig));
        rm_daemon_stop(d);
        /* No grpc_shutdown here: everything of ours is saved and freed, the socket is
         * gone, and gRPC's shutdown can wait up to 10 s for an executor thread polling
         * connections whose clients are still open. Exiting ends them all at once. */
        rm_log_info("remorad stopped");
        rm_config_release(&cfg);
        return 0;
}
