#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cmd.h"
#include "remora/cleanup.h"
#include "remora/container.h"
#include "remora/xalloc.h"

/* `runc features` answers in milliseconds; a wedged binary must not hold the start. */
#define FEATURES_TIMEOUT_MS 5000

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
        free(rt->root);
        rm_oci_free(rt->oci);
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

/* A RuntimeClass handler is a DNS label: lower-case letters, digits and '-', at most 63,
 * starting and ending with a letter or digit. */
static bool handler_name_valid(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
                return false;
        return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

void rm_runtimes_free(struct rm_runtimes *rts)
{
        if (rts == NULL)
                return;
        for (size_t i = 0; i < rts->n; i++)
                rm_runtime_free(rts->v[i]);
        free(rts->v);
        free(rts);
}

static int section_error(struct rm_error **err, const char *name, const char *key, const char *what)
{
        return rm_error_set(err, RM_INVALID_ARGUMENT, "config runtimes.handlers.%s.%s %s", name,
                            key, what);
}

/* runc --systemd-cgroup wants systemd cgroup paths (slice:prefix:name) and systemd as
 * init to place them; Remora writes cgroupfs paths and tells kubelet its driver is
 * cgroupfs, so the option would put containers where kubelet does not look. */
static int refuse_systemd_cgroup(const char *name, struct rm_error **err)
{
        struct stat st;
        bool systemd = stat("/run/systemd/system", &st) == 0 && S_ISDIR(st.st_mode);
        return rm_error_set(err, RM_FAILED_PRECONDITION,
                            "config runtimes.handlers.%s.systemd_cgroup: true is not supported: "
                            "remora manages cgroups with the cgroupfs driver (RuntimeConfig "
                            "reports cgroupfs) and writes cgroupfs paths, which runc "
                            "--systemd-cgroup rejects%s; set it to false",
                            name,
                            systemd ? ""
                                    : ", and this host does not run systemd as init "
                                      "(/run/systemd/system is missing)");
}

/* One handler's entry: {"path", "root", "systemd_cgroup"}, every key optional except a
 * non-default handler's path. */
static struct rm_runtime *handler_from_json(const char *name, struct json_object *o,
                                            bool is_default, const char *runtime_path,
                                            const char *state, struct rm_error **err)
{
        if (!handler_name_valid(name)) {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "config runtimes.handlers: \"%s\" is not a valid handler name (a "
                             "RuntimeClass handler is a DNS label: a-z, 0-9 and '-', at most "
                             "63)",
                             name);
                return NULL;
        }
        if (o && !json_object_is_type(o, json_type_object)) {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "config runtimes.handlers.%s must be an object", name);
                return NULL;
        }
        const char *path = is_default ? runtime_path : NULL;
        cleanup_free char *root =
            is_default ? xasprintf("%s/runc", state) : xasprintf("%s/runtimes/%s", state, name);
        bool systemd = false;
        if (o) {
                json_object_object_foreach(o, key, val)
                {
                        if (strcmp(key, "path") == 0 || strcmp(key, "root") == 0) {
                                if (!json_object_is_type(val, json_type_string) ||
                                    *json_object_get_string(val) == '\0') {
                                        section_error(err, name, key, "must be a non-empty string");
                                        return NULL;
                                }
                                const char *v = json_object_get_string(val);
                                if (*key == 'p') {
                                        path = v;
                                } else if (*v != '/') {
                                        section_error(err, name, key, "must be an absolute path");
                                        return NULL;
                                } else {
                                        free(root);
                                        root = xstrdup(v);
                                }
                        } else if (strcmp(key, "systemd_cgroup") == 0) {
                                if (!json_object_is_type(val, json_type_boolean)) {
                                        section_error(err, name, key, "must be true or false");
                                        return NULL;
                                }
                                systemd = json_object_get_boolean(val);
                        } else {
                                rm_error_set(err, RM_INVALID_ARGUMENT,
                                             "config runtimes.handlers.%s: unknown key \"%s\" "
                                             "(known: path, root, systemd_cgroup)",
                                             name, key);
                                return NULL;
                        }
                }
        }
        if (path == NULL) {
                section_error(err, name, "path", "is required (the OCI runtime binary)");
                return NULL;
        }
        if (systemd) {
                refuse_systemd_cgroup(name, err);
                return NULL;
        }
        struct rm_runtime *rt = rm_runtime_new(name, path);
        rt->root = steal_pointer(&root);
        rt->systemd_cgroup = systemd;
        return rt;
}

/* mount_setattr(2), which "rro" needs, came with Linux 5.12. */
static bool kernel_has_mount_setattr(void)
{
        struct utsname u;
        int major = 0, minor = 0;
        if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &major, &minor) != 2)
                return false;
        return major > 5 || (major == 5 && minor >= 12);
}

/* Whether `<binary> features` (runc 1.1 and later) lists the "rro" mount option. A
 * runtime without the command, or one that fails, has no such feature. */
static bool lists_rro(const struct rm_runtime *rt)
{
        if (rt->path == NULL)
                return false;
        const char *argv[] = {rt->path, "features", NULL};
        struct rm__cmd c = {.argv = argv, .timeout_ms = FEATURES_TIMEOUT_MS};
        struct rm__cmd_result r = {0};
        cleanup_error struct rm_error *err = NULL;
        bool found = false;
        if (rm__cmd_run(&c, &r, &err) == 0 && WIFEXITED(r.wstatus) && WEXITSTATUS(r.wstatus) == 0) {
                cleanup_json struct json_object *doc = json_tokener_parse(r.out ? r.out : "");
                struct json_object *opts = NULL;
                if (doc && json_object_object_get_ex(doc, "mountOptions", &opts) &&
                    json_object_is_type(opts, json_type_array)) {
                        for (size_t i = 0; i < json_object_array_length(opts) && !found; i++) {
                                const char *o =
                                    json_object_get_string(json_object_array_get_idx(opts, i));
                                found = o && strcmp(o, "rro") == 0;
                        }
                }
        }
        rm__cmd_result_clear(&r);
        return found;
}

static void add(struct rm_runtimes *rts, struct rm_runtime *rt)
{
        rts->v = xrealloc(rts->v, sizeof(*rts->v) * (rts->n + 1));
        rts->v[rts->n++] = rt;
}

struct rm_runtimes *rm_runtimes_new(struct json_object *section, const char *runtime_path,
                                    const char *state, const struct rm_runtime_ops *ops,
                                    struct rm_error **err)
{
        const char *def = RM_RUNTIME_DEFAULT_HANDLER;
        struct json_object *handlers = NULL;
        if (section) {
                json_object_object_foreach(section, key, val)
                {
                        if (strcmp(key, "default") == 0) {
                                if (!json_object_is_type(val, json_type_string)) {
                                        rm_error_set(err, RM_INVALID_ARGUMENT,
                                                     "config runtimes.default must be a string "
                                                     "(a handler name)");
                                        return NULL;
                                }
                                def = json_object_get_string(val);
                        } else if (strcmp(key, "handlers") == 0) {
                                if (!json_object_is_type(val, json_type_object)) {
                                        rm_error_set(err, RM_INVALID_ARGUMENT,
                                                     "config runtimes.handlers must be an object "
                                                     "of handler name to settings");
                                        return NULL;
                                }
                                handlers = val;
                        } else {
                                rm_error_set(err, RM_INVALID_ARGUMENT,
                                             "config runtimes: unknown key \"%s\" (known: "
                                             "default, handlers)",
                                             key);
                                return NULL;
                        }
                }
        }
        struct rm_runtimes *rts = xzalloc(sizeof(*rts));
        struct json_object *def_entry = NULL;
        if (handlers)
                json_object_object_get_ex(handlers, def, &def_entry);
        struct rm_runtime *rt = handler_from_json(def, def_entry, true, runtime_path, state, err);
        if (rt == NULL) {
                rm_runtimes_free(rts);
                return NULL;
        }
        add(rts, rt);
        rts->def = 0;
        if (handlers) {
                json_object_object_foreach(handlers, name, val)
                {
                        if (strcmp(name, def) == 0)
                                continue;
                        rt = handler_from_json(name, val, false, runtime_path, state, err);
                        if (rt == NULL) {
                                rm_runtimes_free(rts);
                                return NULL;
                        }
                        add(rts, rt);
                }
        }
        /* Two handlers sharing a root would see each other's containers. */
        for (size_t i = 0; i < rts->n; i++) {
                for (size_t j = i + 1; j < rts->n; j++) {
                        if (strcmp(rts->v[i]->root, rts->v[j]->root) == 0) {
                                rm_error_set(err, RM_INVALID_ARGUMENT,
                                             "config runtimes: handlers %s and %s share the "
                                             "root %s; give each its own",
                                             rts->v[i]->handler, rts->v[j]->handler,
                                             rts->v[i]->root);
                                rm_runtimes_free(rts);
                                return NULL;
                        }
                }
        }
        bool kernel_rro = kernel_has_mount_setattr();
        for (size_t i = 0; i < rts->n; i++) {
                struct rm_runtime *r = rts->v[i];
                r->oci = rm_oci_new(ops, r->path ? r->path : r->configured, r->root, 0);
                r->recursive_read_only = kernel_rro && lists_rro(r);
        }
        return rts;
}

struct rm_runtime *rm_runtimes_find(const struct rm_runtimes *rts, const char *name)
{
        if (name == NULL || *name == '\0')
                return rm_runtimes_default(rts);
        for (size_t i = 0; i < rts->n; i++) {
                if (strcmp(rts->v[i]->handler, name) == 0)
                        return rts->v[i];
        }
        return NULL;
}

struct rm_runtime *rm_runtimes_select(const struct rm_runtimes *rts, const char *name,
                                      struct rm_error **err)
{
        struct rm_runtime *rt = rm_runtimes_find(rts, name);
        if (rt)
                return rt;
        size_t len = 1;
        for (size_t i = 0; i < rts->n; i++)
                len += strlen(rts->v[i]->handler) + 4;
        cleanup_free char *names = xzalloc(len);
        for (size_t i = 0; i < rts->n; i++) {
                strcat(names, i ? ", " : "");
                strcat(names, rts->v[i]->handler);
        }
        rm_error_set(err, RM_INVALID_ARGUMENT,
                     "runtime_handler \"%s\" is not configured; the configured handlers are: %s "
                     "(\"\" selects the default, %s)",
                     name, names, rm_runtimes_default(rts)->handler);
        return NULL;
}

struct rm_runtime *rm_runtimes_owner(const struct rm_runtimes *rts, const char *id)
{
        if (*id == '\0' || strchr(id, '/') || strcmp(id, "..") == 0)
                return rm_runtimes_default(rts); /* never a container ID */
        for (size_t i = 0; i < rts->n; i++) {
                char path[4096];
                struct stat st;
                snprintf(path, sizeof(path), "%s/%s", rts->v[i]->root, id);
                if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
                        return rts->v[i];
        }
        return rm_runtimes_default(rts);
}

void rm_runtime_features(const struct rm_runtime *rt, bool user_namespaces_host,
                         struct rm_runtime_features *out)
{
        out->recursive_read_only_mounts = rt->recursive_read_only;
        out->user_namespaces = user_namespaces_host;
}
