/* How an exec runs under remora-shim's exec reaper, shared by the daemon (which builds
 * the runc exec command line) and the shim (which is the reaper).
 *
 * runc execs `/proc/self/fd/3 --exec-reaper -- CMD...` with --preserve-fds 2: fd 3 is
 * remora-shim itself, opened by the daemon, so the reaper needs nothing in the
 * container's filesystem but /proc; fd 4 is the read end of a pipe whose write end only
 * the daemon holds. The reaper becomes the child subreaper of everything the command
 * starts, runs it, and exits with its status. When the pipe reads EOF (the daemon gave
 * up: timeout, cancellation, the client left, or the daemon died) or the reaper gets
 * SIGTERM, it SIGKILLs every descendant, reaps them all and exits 137: nothing of the
 * exec is left, not even a zombie for the container's init. */
#ifndef REMORA_EXEC_REAPER_H
#define REMORA_EXEC_REAPER_H

#define RM_EXEC_REAPER_FLAG    "--exec-reaper"
#define RM_EXEC_REAPER_SELF_FD 3
#define RM_EXEC_REAPER_CTL_FD  4
/* What runc is given as the program: the reaper's own fd, opened in the container. */
#define RM_EXEC_REAPER_PATH "/proc/self/fd/3"
/* Exit status of the reaper when the command could not be run (as a shell reports). */
#define RM_EXEC_REAPER_NOT_FOUND 127
#define RM_EXEC_REAPER_CANNOT    126

#endif
