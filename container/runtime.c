#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "remora/cleanup.h"
#include "remora/container.h"
#include "remora/xalloc.h"

static bool is_executable_file(const char *path)
{
        struct stat st;
        return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

static char *search_path(const char *name)
{
        const char *env = getenv("PATH");
        cleanup_free char *dirs = xstrdup(env && *env ? env
                                                      : "/usr/local/sbin:/usr/local/bin:"
                                                        "/usr/sbin:/usr/bin:/sbin:/bin");
        char *save = NULL;
        for (char *dir = strtok_r(dirs, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
                if (*dir != '/')
                        continue; /* a relative PATH entry would depend on our cwd */
                cleanup_free char *candidate = xasprintf("%s/%s", dir, name);
                if (is_executable_file(candidate))
                        return steal_pointer(&candidate);
        }
        return NULL;
}

struct rm_runtime *rm_runtime_new(const char *handler, const char *configured)
{
        struct rm_runtime *rt = xzalloc(sizeof(*rt));
        rt->handler = xstrdup(handler);
        rt->configured = xstrdup(configured);
        if (strchr(configured, '/'))
                rt->path = realpath(configured, NULL);
        else
                rt->path = search_path(configured);
        return rt;
}

void rm_runtime_free(struct rm_runtime *rt)
{
        if (rt == NULL)
                return;
        free(rt->handler);
        free(rt->configured);
        free(rt->path);
        free(rt);
}

bool rm_runtime_usable(const struct rm_runtime *rt, struct rm_error **err)
{
        if (rt->path == NULL) {
                rm_error_set(err, RM_FAILED_PRECONDITION,
                             "OCI runtime %s not found (set runtime_path in the config)",
                             rt->configured);
                return false;
        }
        if (!is_executable_file(rt->path)) {
                rm_error_set(err, RM_FAILED_PRECONDITION,
                             "OCI runtime %s is not an executable file", rt->path);
                return false;
        }
        return true;
}
