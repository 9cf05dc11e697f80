#include <string.h>

#include "remora/confsect.h"

static const char *type_name(struct json_object *v)
{
        return json_type_to_name(json_object_get_type(v));
}

int rm_confsect_check_keys(const char *section, struct json_object *obj, const char *const *known,
                           struct rm_error **err)
{
        if (obj == NULL)
                return 0;
        json_object_object_foreach(obj, key, val)
        {
                (void)val;
                bool found = false;
                for (const char *const *k = known; *k && !found; k++)
                        found = strcmp(*k, key) == 0;
                if (!found)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "unknown config key \"%s.%s\"", section, key);
        }
        return 0;
}

/* The value of key, or NULL when obj or the key is absent. */
static struct json_object *lookup(struct json_object *obj, const char *key)
{
        struct json_object *v = NULL;
        if (obj == NULL || !json_object_object_get_ex(obj, key, &v))
                return NULL;
        return v;
}

static int wrong_type(const char *section, const char *key, const char *want, struct json_object *v,
                      struct rm_error **err)
{
        return rm_error_set(err, RM_INVALID_ARGUMENT, "config key \"%s.%s\" must be %s, got %s",
                            section, key, want, type_name(v));
}

int rm_confsect_string(const char *section, struct json_object *obj, const char *key,
                       const char **out, struct rm_error **err)
{
        struct json_object *v = lookup(obj, key);
        if (v == NULL)
                return 0;
        if (!json_object_is_type(v, json_type_string))
                return wrong_type(section, key, "a string", v, err);
        if (json_object_get_string_len(v) == 0)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "config key \"%s.%s\" is empty",
                                    section, key);
        *out = json_object_get_string(v);
        return 0;
}

int rm_confsect_bool(const char *section, struct json_object *obj, const char *key, bool *out,
                     struct rm_error **err)
{
        struct json_object *v = lookup(obj, key);
        if (v == NULL)
                return 0;
        if (!json_object_is_type(v, json_type_boolean))
                return wrong_type(section, key, "true or false", v, err);
        *out = json_object_get_boolean(v);
        return 0;
}

int rm_confsect_int(const char *section, struct json_object *obj, const char *key, int64_t min,
                    int64_t max, int64_t *out, struct rm_error **err)
{
        struct json_object *v = lookup(obj, key);
        if (v == NULL)
                return 0;
        if (!json_object_is_type(v, json_type_int))
                return wrong_type(section, key, "an integer", v, err);
        int64_t n = json_object_get_int64(v);
        if (n < min || n > max)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config key \"%s.%s\" must be between %lld and %lld, got %lld",
                                    section, key, (long long)min, (long long)max, (long long)n);
        *out = n;
        return 0;
}

int rm_confsect_strings(const char *section, struct json_object *obj, const char *key,
                        struct json_object **out, struct rm_error **err)
{
        struct json_object *v = lookup(obj, key);
        if (v == NULL)
                return 0;
        if (!json_object_is_type(v, json_type_array))
                return wrong_type(section, key, "a list of strings", v, err);
        size_t n = json_object_array_length(v);
        for (size_t i = 0; i < n; i++) {
                struct json_object *item = json_object_array_get_idx(v, i);
                if (!json_object_is_type(item, json_type_string) ||
                    json_object_get_string_len(item) == 0)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "config key \"%s.%s\" item %zu must be a non-empty "
                                            "string",
                                            section, key, i);
        }
        *out = v;
        return 0;
}
