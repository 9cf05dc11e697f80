/* Capability sets. Names are checked against libcap's table before runc sees them, so a
 * typo is an INVALID_ARGUMENT naming it instead of a runc failure at start. */
#include <ctype.h>
#include <string.h>
#include <sys/capability.h>

#include "remora/cleanup.h"
#include "remora/spec.h"
#include "remora/xalloc.h"
#include "spec_internal.h"

/* What a container holds when the request adds and drops nothing: the set Docker,
 * containerd and CRI-O grant by default. */
static const cap_value_t default_caps[] = {
    CAP_CHOWN,   CAP_DAC_OVERRIDE, CAP_FSETID,           CAP_FOWNER,
    CAP_MKNOD,   CAP_NET_RAW,      CAP_SETGID,           CAP_SETUID,
    CAP_SETFCAP, CAP_SETPCAP,      CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT,
    CAP_KILL,    CAP_AUDIT_WRITE,
};

/* Capabilities are numbered below 64 on every kernel Remora supports. */
#define CAP_SLOTS 64

static int cap_count(void)
{
        int n = (int)cap_max_bits();
        return n > CAP_SLOTS ? CAP_SLOTS : n;
}

/* "NET_ADMIN", "CAP_NET_ADMIN" or "cap_net_admin" to its number; -1 when unknown. */
static int cap_by_name(const char *name)
{
        size_t len = strlen(name);
        cleanup_free char *lower = xmalloc(len + 5);
        const char *p = name;
        if (strncasecmp(name, "CAP_", 4) == 0)
                p += 4;
        strcpy(lower, "cap_");
        for (size_t i = 0; p[i]; i++)
                lower[4 + i] = (char)tolower((unsigned char)p[i]);
        lower[4 + strlen(p)] = '\0';
        if (strspn(lower, "abcdefghijklmnopqrstuvwxyz_") != strlen(lower))
                return -1;
        cap_value_t v;
        if (cap_from_name(lower, &v) < 0 || v < 0 || v >= cap_count())
                return -1;
        return v;
}

/* libcap's name for v in the upper case OCI specs use ("CAP_CHOWN"). */
static char *upper_name(int v)
{
        char *name = cap_to_name(v);
        char *upper = xstrdup(name);
        cap_free(name);
        for (char *p = upper; *p; p++)
                *p = (char)toupper((unsigned char)*p);
        return upper;
}

/* Whether remorad itself may hand v on: runc cannot give a container a capability outside
 * its own bounding set ("unable to apply caps"), and some hosts (VMs, nested containers)
 * withhold a few, CAP_SYS_RESOURCE being the usual one. */
static bool in_bounding_set(int v)
{
        return cap_get_bound((cap_value_t)v) == 1;
}

static bool is_all(const char *name)
{
        return strcasecmp(name, "ALL") == 0;
}

/* Apply one list (add or drop) to set; "ALL" was handled by the caller. */
static int apply(bool *set, char **names, size_t n, bool value, const char *field,
                 struct rm_error **err)
{
        for (size_t i = 0; i < n; i++) {
                if (is_all(names[i]))
                        continue;
                int v = cap_by_name(names[i]);
                if (v < 0)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "%s: unknown capability \"%s\"", field, names[i]);
                set[v] = value;
        }
        return 0;
}

static bool has_all(char **names, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                if (is_all(names[i]))
                        return true;
        }
        return false;
}

struct json_object *rm_spec_capabilities(const Runtime__V1__Capability *caps, bool privileged,
                                         struct rm_error **err)
{
        bool set[CAP_SLOTS] = {false};
        int max = cap_count();
        /* ALL (and privileged) is every capability remorad holds, as in containerd. */
        if (privileged) {
                for (int i = 0; i < max; i++)
                        set[i] = in_bounding_set(i);
        } else {
                for (size_t i = 0; i < sizeof(default_caps) / sizeof(default_caps[0]); i++)
                        set[default_caps[i]] = true;
        }
        if (caps && !privileged) {
                /* "ALL" first, so that ALL plus single names still means something:
                 * add ALL, drop X is everything but X; drop ALL, add X is only X. */
                if (has_all(caps->add_capabilities, caps->n_add_capabilities)) {
                        for (int i = 0; i < max; i++)
                                set[i] = in_bounding_set(i);
                }
                if (has_all(caps->drop_capabilities, caps->n_drop_capabilities))
                        memset(set, 0, sizeof(set));
                if (apply(set, caps->add_capabilities, caps->n_add_capabilities, true,
                          "capabilities.add_capabilities", err) < 0 ||
                    apply(set, caps->drop_capabilities, caps->n_drop_capabilities, false,
                          "capabilities.drop_capabilities", err) < 0)
                        return NULL;
        }
        struct json_object *list = json_object_new_array();
        for (int i = 0; i < max; i++) {
                if (!set[i])
                        continue;
                cleanup_free char *upper = upper_name(i);
                json_object_array_add(list, json_object_new_string(upper));
        }
        return list;
}

struct json_object *rm__spec_ambient(const Runtime__V1__Capability *caps, struct json_object *held,
                                     struct rm_error **err)
{
        struct json_object *list = json_object_new_array();
        for (size_t i = 0; caps && i < caps->n_add_ambient_capabilities; i++) {
                const char *name = caps->add_ambient_capabilities[i];
                int v = cap_by_name(name);
                if (v < 0) {
                        json_object_put(list);
                        rm_error_set(err, RM_INVALID_ARGUMENT,
                                     "capabilities.add_ambient_capabilities: unknown capability "
                                     "\"%s\"",
                                     name);
                        return NULL;
                }
                cleanup_free char *upper = upper_name(v);
                bool found = false;
                for (size_t j = 0; j < json_object_array_length(held) && !found; j++)
                        found = strcmp(json_object_get_string(json_object_array_get_idx(held, j)),
                                       upper) == 0;
                if (!found) {
                        json_object_put(list);
                        rm_error_set(err, RM_INVALID_ARGUMENT,
                                     "capabilities.add_ambient_capabilities: \"%s\" is not in the "
                                     "container's capability set",
                                     name);
                        return NULL;
                }
                json_object_array_add(list, json_object_new_string(upper));
        }
        return list;
}
