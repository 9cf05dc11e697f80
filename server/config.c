#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/server.h"
#include "remora/xalloc.h"

/* A config file larger than this is a mistake, not a config. */
#define CONFIG_MAX_BYTES (1024 * 1024)

void rm_config_init(struct rm_config *cfg)
{
        memset(cfg, 0, sizeof(*cfg));
        cfg->root = xstrdup(RM_DEFAULT_ROOT);
        cfg->state = xstrdup(RM_DEFAULT_STATE);
        cfg->log_level = RM_LOG_INFO;
        cfg->workers = RM_DEFAULT_WORKERS;
        cfg->poll_spin_us = RM_DEFAULT_POLL_SPIN_US;
        cfg->runtime_path = xstrdup(RM_DEFAULT_RUNTIME);
}

static const char *const section_names[RM_CONFIG_SECTIONS] = {
    [RM_SECTION_IMAGE] = "image",     [RM_SECTION_SANDBOX] = "sandbox",
    [RM_SECTION_NETWORK] = "network", [RM_SECTION_STREAMING] = "streaming",
    [RM_SECTION_METRICS] = "metrics", [RM_SECTION_RUNTIMES] = "runtimes",
};

const char *rm_config_section_name(enum rm_config_section s)
{
        return section_names[s];
}

static int section_index(const char *key)
{
        for (int i = 0; i < RM_CONFIG_SECTIONS; i++) {
                if (strcmp(key, section_names[i]) == 0)
                        return i;
        }
        return -1;
}

void rm_config_release(struct rm_config *cfg)
{
        for (int i = 0; i < RM_CONFIG_SECTIONS; i++)
                json_object_put(cfg->sections[i]);
        free(cfg->listen);
        free(cfg->root);
        free(cfg->state);
        free(cfg->runtime_path);
        free(cfg->config_path);
        memset(cfg, 0, sizeof(*cfg));
}

static void replace(char **slot, const char *value)
{
        free(*slot);
        *slot = value ? xstrdup(value) : NULL;
}

static int want_string(struct json_object *v, const char *key, const char **out,
                       struct rm_error **err)
{
        if (!json_object_is_type(v, json_type_string))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config key \"%s\" must be a string, got %s", key,
                                    json_type_to_name(json_object_get_type(v)));
        *out = json_object_get_string(v);
        if (**out == '\0')
                return rm_error_set(err, RM_INVALID_ARGUMENT, "config key \"%s\" is empty", key);
        return 0;
}

static int want_int(struct json_object *v, const char *key, int min, int max, int *out,
                    struct rm_error **err)
{
        if (!json_object_is_type(v, json_type_int))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config key \"%s\" must be an integer, got %s", key,
                                    json_type_to_name(json_object_get_type(v)));
        int64_t n = json_object_get_int64(v);
        if (n < min || n > max)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config key \"%s\" must be between %d and %d, got %lld", key,
                                    min, max, (long long)n);
        *out = (int)n;
        return 0;
}

static int want_abs_path(struct json_object *v, const char *key, const char **out,
                         struct rm_error **err)
{
        if (want_string(v, key, out, err) < 0)
                return -1;
        if (**out != '/')
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config key \"%s\" must be an absolute path, got \"%s\"", key,
                                    *out);
        return 0;
}

int rm_config_apply_json(struct rm_config *cfg, struct json_object *doc, struct rm_error **err)
{
        if (!json_object_is_type(doc, json_type_object))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "the config must be a JSON object, got %s",
                                    json_type_to_name(json_object_get_type(doc)));

        /* Validate everything first so a bad file leaves cfg untouched. */
        const char *listen = NULL, *root = NULL, *state = NULL, *level = NULL, *runtime = NULL;
        int workers = -1, spin = -1;
        enum rm_log_level lvl = cfg->log_level;
        struct json_object *sections[RM_CONFIG_SECTIONS] = {NULL};
        json_object_object_foreach(doc, key, val)
        {
                int section = section_index(key);
                if (section >= 0) {
                        if (!json_object_is_type(val, json_type_object))
                                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                                    "config key \"%s\" must be an object, got %s",
                                                    key,
                                                    json_type_to_name(json_object_get_type(val)));
                        sections[section] = val;
                } else if (strcmp(key, "listen") == 0) {
                        if (want_string(val, key, &listen, err) < 0)
                                return -1;
                        cleanup_free char *path = rm_config_socket_path(listen, err);
                        if (path == NULL)
                                return rm_error_wrap(err, "config key \"listen\"");
                } else if (strcmp(key, "root") == 0) {
                        if (want_abs_path(val, key, &root, err) < 0)
                                return -1;
                } else if (strcmp(key, "state") == 0) {
                        if (want_abs_path(val, key, &state, err) < 0)
                                return -1;
                } else if (strcmp(key, "log_level") == 0) {
                        if (want_string(val, key, &level, err) < 0)
                                return -1;
                        if (!rm_log_parse_level(level, &lvl))
                                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                                    "config key \"log_level\" must be one of "
                                                    "error, warn, info, debug; got \"%s\"",
                                                    level);
                } else if (strcmp(key, "workers") == 0) {
                        if (want_int(val, key, 1, RM_MAX_WORKERS, &workers, err) < 0)
                                return -1;
                } else if (strcmp(key, "poll_spin_us") == 0) {
                        if (want_int(val, key, 0, RM_MAX_POLL_SPIN_US, &spin, err) < 0)
                                return -1;
                } else if (strcmp(key, "runtime_path") == 0) {
                        if (want_string(val, key, &runtime, err) < 0)
                                return -1;
                } else {
                        return rm_error_set(
                            err, RM_INVALID_ARGUMENT,
                            "unknown config key \"%s\" (known keys: listen, root, "
                            "state, log_level, workers, poll_spin_us, runtime_path, image, "
                            "sandbox, network, streaming, metrics, runtimes)",
                            key);
                }
        }

        if (listen)
                replace(&cfg->listen, listen);
        if (root)
                replace(&cfg->root, root);
        if (state)
                replace(&cfg->state, state);
        if (level)
                cfg->log_level = lvl;
        if (workers > 0)
                cfg->workers = workers;
        if (spin >= 0)
                cfg->poll_spin_us = spin;
        if (runtime)
                replace(&cfg->runtime_path, runtime);
        for (int i = 0; i < RM_CONFIG_SECTIONS; i++) {
                if (sections[i] == NULL)
                        continue;
                json_object_put(cfg->sections[i]);
                cfg->sections[i] = json_object_get(sections[i]);
        }
        return 0;
}

int rm_config_load_file(struct rm_config *cfg, const char *path, bool required,
                        struct rm_error **err)
{
        struct rm_error *read_err = NULL;
        cleanup_free char *text = rm_read_file(path, CONFIG_MAX_BYTES, NULL, &read_err);
        if (text == NULL) {
                if (!required && read_err->errnum == ENOENT) {
                        rm_error_free(read_err);
                        return 0;
                }
                rm_error_set(err, read_err->code, "config file %s: %s", path, read_err->msg);
                rm_error_free(read_err);
                return -1;
        }

        cleanup_json struct json_object *doc = NULL;
        struct json_tokener *tok = json_tokener_new();
        size_t len = strlen(text);
        doc = json_tokener_parse_ex(tok, text, (int)len + 1); /* the NUL ends input */
        enum json_tokener_error jerr = json_tokener_get_error(tok);
        size_t end = json_tokener_get_parse_end(tok);
        json_tokener_free(tok);
        if (doc == NULL || jerr != json_tokener_success)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config file %s is not valid JSON: %s", path,
                                    json_tokener_error_desc(jerr));
        /* One document only: anything but white space after it is a mistake. */
        if (text[end + strspn(text + end, " \t\r\n")] != '\0')
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config file %s is not valid JSON: unexpected text after "
                                    "the object at byte %zu",
                                    path, end);

        if (rm_config_apply_json(cfg, doc, err) < 0)
                return rm_error_wrap(err, "config file %s", path);
        replace(&cfg->config_path, path);
        return 0;
}

char *rm_config_socket_path(const char *listen, struct rm_error **err)
{
        const char *path = NULL;
        if (strncmp(listen, "unix://", 7) == 0)
                path = listen + 7;
        else if (strncmp(listen, "unix:", 5) == 0)
                path = listen + 5;
        else {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "listen address \"%s\" is not supported: use unix:///absolute/path",
                             listen);
                return NULL;
        }
        if (*path != '/') {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "listen address \"%s\" must name an absolute socket path", listen);
                return NULL;
        }
        /* sun_path holds 108 bytes including the NUL. */
        if (strlen(path) > 107) {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "socket path %s is longer than the 107 bytes a unix socket allows",
                             path);
                return NULL;
        }
        return xstrdup(path);
}

int rm_config_finish(struct rm_config *cfg, struct rm_error **err)
{
        if (cfg->listen == NULL)
                cfg->listen = xasprintf("unix://%s/remora.sock", cfg->state);
        cleanup_free char *path = rm_config_socket_path(cfg->listen, err);
        if (path == NULL)
                return -1;
        if (cfg->root[0] != '/' || cfg->state[0] != '/')
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "root (%s) and state (%s) must be absolute paths", cfg->root,
                                    cfg->state);
        if (strcmp(cfg->root, cfg->state) == 0)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "root and state must be different directories (both are %s)",
                                    cfg->root);
        return 0;
}

struct json_object *rm_config_to_json(const struct rm_config *cfg)
{
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "listen", json_object_new_string(cfg->listen ? cfg->listen : ""));
        json_object_object_add(o, "root", json_object_new_string(cfg->root));
        json_object_object_add(o, "state", json_object_new_string(cfg->state));
        json_object_object_add(o, "log_level",
                               json_object_new_string(rm_log_level_name(cfg->log_level)));
        json_object_object_add(o, "workers", json_object_new_int(cfg->workers));
        json_object_object_add(o, "poll_spin_us", json_object_new_int(cfg->poll_spin_us));
        json_object_object_add(o, "runtime_path", json_object_new_string(cfg->runtime_path));
        for (int i = 0; i < RM_CONFIG_SECTIONS; i++) {
                if (cfg->sections[i])
                        json_object_object_add(o, section_names[i],
                                               json_object_get(cfg->sections[i]));
        }
        return o;
}
