/* Reading a module's section of the config file ("image": {...}). Every getter names the
 * key as "<section>.<key>" in its error, and a missing key leaves *out unchanged, so a
 * module fills its defaults first and reads the section over them. */
#ifndef REMORA_CONFSECT_H
#define REMORA_CONFSECT_H

#include <stdbool.h>
#include <stdint.h>
#include <json-c/json.h>

#include "remora/error.h"

/* Refuse keys of obj that are not in known (a NULL-terminated list). obj may be NULL. */
int rm_confsect_check_keys(const char *section, struct json_object *obj, const char *const *known,
                           struct rm_error **err);

/* A non-empty string; *out points into obj. */
int rm_confsect_string(const char *section, struct json_object *obj, const char *key,
                       const char **out, struct rm_error **err);
int rm_confsect_bool(const char *section, struct json_object *obj, const char *key, bool *out,
                     struct rm_error **err);
/* An integer within [min, max]. */
int rm_confsect_int(const char *section, struct json_object *obj, const char *key, int64_t min,
                    int64_t max, int64_t *out, struct rm_error **err);
/* A list of non-empty strings; *out is the json array itself (borrowed from obj). */
int rm_confsect_strings(const char *section, struct json_object *obj, const char *key,
                        struct json_object **out, struct rm_error **err);

#endif
