/* Monitor processes by their bundle: a shim is the process named remora-shim whose working
 * directory is its container's bundle. */
#include <dirent.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/orphans.h"
#include "remora/xalloc.h"

/* Calls visit for each remora-shim in bundle; stops early when visit returns false. */
static int each_shim(const char *bundle, bool (*visit)(pid_t pid, void *data), void *data)
{
        int n = 0;
        char real[PATH_MAX];
        if (realpath(bundle, real) != NULL)
                bundle = real;
        size_t blen = strlen(bundle);
        cleanup_dir DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
                char *end = NULL;
                long pid = strtol(e->d_name, &end, 10);
                if (pid <= 1 || *end != '\0' || pid == getpid())
                        continue;
                char link[64], cwd[PATH_MAX];
                snprintf(link, sizeof(link), "/proc/%ld/cwd", pid);
                ssize_t len = readlink(link, cwd, sizeof(cwd) - 1);
                if (len <= 0)
                        continue;
                cwd[len] = '\0';
                /* a removed bundle reads "<path> (deleted)" */
                if (strncmp(cwd, bundle, blen) != 0 ||
                    (cwd[blen] != '\0' && strcmp(cwd + blen, " (deleted)") != 0))
                        continue;
                snprintf(link, sizeof(link), "/proc/%ld/comm", pid);
                cleanup_free char *comm = rm_read_file(link, 64, NULL, NULL);
                if (comm == NULL || strncmp(comm, "remora-shim", 11) != 0)
                        continue;
                n++;
                if (!visit((pid_t)pid, data))
                        break;
        }
        return n;
}

static bool kill_one(pid_t pid, void *data)
{
        (void)data;
        kill(pid, SIGKILL);
        return true;
}

static bool found(pid_t pid, void *data)
{
        (void)pid;
        (void)data;
        return false;
}

/* Whether a live process names bundle on its command line (runc create --bundle ...). */
static bool runtime_busy(const char *bundle)
{
        cleanup_dir DIR *d = opendir("/proc");
        struct dirent *e;
        size_t blen = strlen(bundle);
        while (d && (e = readdir(d))) {
                if (e->d_name[0] < '1' || e->d_name[0] > '9')
                        continue;
                char path[300];
                snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
                size_t len = 0;
                cleanup_free char *cmd = rm_read_file(path, 8192, &len, NULL);
                if (cmd == NULL || len < blen)
                        continue;
                for (size_t i = 0; i + blen <= len; i++) {
                        if (memcmp(cmd + i, bundle, blen) == 0 &&
                            (i + blen == len || cmd[i + blen] == '\0'))
                                return true;
                }
        }
        return false;
}

int rm_shims_kill(const char *bundle)
{
        int n = each_shim(bundle, kill_one, NULL);
        /* A runc create the killed monitor started goes on by itself: wait (a little) for
         * it to finish, so the runtime delete that follows finds what it made. */
        for (int i = 0; i < 100 && runtime_busy(bundle); i++)
                usleep(50000);
        return n;
}

bool rm_shim_alive(const char *bundle)
{
        return each_shim(bundle, found, NULL) > 0;
}

void rm_exit_file_remove(const char *path)
{
        unlink(path);
        cleanup_free char *tmp = xasprintf("%s.tmp", path);
        unlink(tmp);
}
