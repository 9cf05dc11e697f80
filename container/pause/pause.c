/* remora-pause: the infra process of a PID-sharing pod. As PID 1 of the pod's PID
 * namespace it holds the namespace open, reaps every orphan that is reparented to it and
 * exits 0 on SIGTERM or SIGINT. Linked statically so it runs from a rootfs holding nothing
 * else. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
        if (argc > 1 && strcmp(argv[1], "-v") == 0) {
                static const char v[] = "remora-pause\n";
                return write(1, v, sizeof(v) - 1) == sizeof(v) - 1 ? 0 : 1;
        }
        /* Signals are blocked and taken with sigwait: no handler runs in the middle of
         * anything, and a SIGCHLD that arrives while reaping is not lost. */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGCHLD);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        sigprocmask(SIG_BLOCK, &set, NULL);
        if (getpid() != 1) {
                static const char w[] = "remora-pause: not PID 1; orphans are not reaped here\n";
                if (write(2, w, sizeof(w) - 1) < 0)
                        return 1;
        }
        for (;;) {
                int sig = 0;
                if (sigwait(&set, &sig) != 0)
                        continue;
                if (sig == SIGTERM || sig == SIGINT)
                        return 0;
                /* SIGCHLD: collect every exited child, not just one per signal */
                while (waitpid(-1, NULL, WNOHANG) > 0)
                        ;
        }
}
