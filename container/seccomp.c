/* Seccomp profiles: the built-in RuntimeDefault, Unconfined, and Localhost files checked
 * with libseccomp so an unknown syscall, action or architecture is refused by name at
 * CreateContainer instead of failing inside runc. */
#include <errno.h>
#include <seccomp.h>
#include <string.h>

#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/spec.h"
#include "remora/xalloc.h"

/* A profile file is a few hundred KiB at most (Docker's default is ~20 KiB). */
#define PROFILE_MAX_BYTES (4 * 1024 * 1024)

/* The default profile allows everything except what a container has no business doing
 * to the shared kernel. Where a capability legitimately needs a call (mount with
 * CAP_SYS_ADMIN, ptrace with CAP_SYS_PTRACE...), holding it lifts the block, as in
 * Docker's default; cap NULL means blocked for everyone. */
static const struct {
        const char *syscall;
        const char *cap;
} default_blocks[] = {
    {"acct", "CAP_SYS_PACCT"},
    {"add_key", NULL},
    {"bpf", "CAP_SYS_ADMIN"},
    {"clock_adjtime", "CAP_SYS_TIME"},
    {"clock_settime", "CAP_SYS_TIME"},
    {"create_module", NULL},
    {"delete_module", "CAP_SYS_MODULE"},
    {"finit_module", "CAP_SYS_MODULE"},
    {"fsconfig", "CAP_SYS_ADMIN"},
    {"fsmount", "CAP_SYS_ADMIN"},
    {"fsopen", "CAP_SYS_ADMIN"},
    {"fspick", "CAP_SYS_ADMIN"},
    {"get_kernel_syms", NULL},
    {"init_module", "CAP_SYS_MODULE"},
    {"ioperm", "CAP_SYS_RAWIO"},
    {"iopl", "CAP_SYS_RAWIO"},
    {"kcmp", "CAP_SYS_PTRACE"},
    {"kexec_file_load", "CAP_SYS_BOOT"},
    {"kexec_load", "CAP_SYS_BOOT"},
    {"keyctl", NULL},
    {"lookup_dcookie", "CAP_SYS_ADMIN"},
    {"mount", "CAP_SYS_ADMIN"},
    {"mount_setattr", "CAP_SYS_ADMIN"},
    {"move_mount", "CAP_SYS_ADMIN"},
    {"name_to_handle_at", "CAP_SYS_ADMIN"},
    {"nfsservctl", NULL},
    {"open_by_handle_at", "CAP_DAC_READ_SEARCH"},
    {"open_tree", "CAP_SYS_ADMIN"},
    {"perf_event_open", "CAP_SYS_ADMIN"},
    {"pivot_root", "CAP_SYS_ADMIN"},
    {"process_vm_readv", "CAP_SYS_PTRACE"},
    {"process_vm_writev", "CAP_SYS_PTRACE"},
    {"ptrace", "CAP_SYS_PTRACE"},
    {"query_module", NULL},
    {"quotactl", "CAP_SYS_ADMIN"},
    {"reboot", "CAP_SYS_BOOT"},
    {"request_key", NULL},
    {"setns", "CAP_SYS_ADMIN"},
    {"settimeofday", "CAP_SYS_TIME"},
    {"stime", "CAP_SYS_TIME"},
    {"swapoff", "CAP_SYS_ADMIN"},
    {"swapon", "CAP_SYS_ADMIN"},
    {"sysfs", NULL},
    {"_sysctl", NULL},
    {"umount", "CAP_SYS_ADMIN"},
    {"umount2", "CAP_SYS_ADMIN"},
    {"unshare", "CAP_SYS_ADMIN"},
    {"uselib", NULL},
    {"userfaultfd", "CAP_SYS_PTRACE"},
    {"ustat", NULL},
    {"vm86", NULL},
    {"vm86old", NULL},
};

static bool holds(struct json_object *caps, const char *cap)
{
        for (size_t i = 0; caps && i < json_object_array_length(caps); i++) {
                if (strcmp(json_object_get_string(json_object_array_get_idx(caps, i)), cap) == 0)
                        return true;
        }
        return false;
}

/* The architectures a profile for this host covers: the native one and the 32-bit ABIs
 * its kernel also runs. */
static struct json_object *native_arches(void)
{
        struct json_object *a = json_object_new_array();
        switch (seccomp_arch_native()) {
        case SCMP_ARCH_X86_64:
                json_object_array_add(a, json_object_new_string("SCMP_ARCH_X86_64"));
                json_object_array_add(a, json_object_new_string("SCMP_ARCH_X86"));
                json_object_array_add(a, json_object_new_string("SCMP_ARCH_X32"));
                break;
        case SCMP_ARCH_AARCH64:
                json_object_array_add(a, json_object_new_string("SCMP_ARCH_AARCH64"));
                json_object_array_add(a, json_object_new_string("SCMP_ARCH_ARM"));
                break;
        default:
                break; /* runc then uses the native architecture only */
        }
        return a;
}

static struct json_object *default_profile(struct json_object *caps)
{
        struct json_object *names = json_object_new_array();
        for (size_t i = 0; i < sizeof(default_blocks) / sizeof(default_blocks[0]); i++) {
                if (default_blocks[i].cap && holds(caps, default_blocks[i].cap))
                        continue;
                /* Names this host's libseccomp does not know (old or other-arch calls) are
                 * left out: runc would refuse the whole profile for one of them. */
                if (seccomp_syscall_resolve_name(default_blocks[i].syscall) == __NR_SCMP_ERROR)
                        continue;
                json_object_array_add(names, json_object_new_string(default_blocks[i].syscall));
        }
        struct json_object *rule = json_object_new_object();
        json_object_object_add(rule, "names", names);
        json_object_object_add(rule, "action", json_object_new_string("SCMP_ACT_ERRNO"));
        json_object_object_add(rule, "errnoRet", json_object_new_int(EPERM));
        struct json_object *syscalls = json_object_new_array();
        json_object_array_add(syscalls, rule);

        struct json_object *p = json_object_new_object();
        json_object_object_add(p, "defaultAction", json_object_new_string("SCMP_ACT_ALLOW"));
        json_object_object_add(p, "architectures", native_arches());
        json_object_object_add(p, "syscalls", syscalls);
        return p;
}

static const char *const actions[] = {
    "SCMP_ACT_KILL",        "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",       "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",       "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",      NULL,
};

static const char *const operators[] = {
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE",        "SCMP_CMP_EQ",
    "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ", NULL,
};

static bool in_list(const char *const *list, const char *s)
{
        for (; *list; list++) {
                if (strcmp(*list, s) == 0)
                        return true;
        }
        return false;
}

/* Everything about one profile file that an error message needs. */
struct profile_ctx {
        const char *path;
        struct rm_error **err;
        uint32_t arches[16];
        size_t n_arches;
};

static int bad(struct profile_ctx *c, const char *fmt, const char *what)
{
        cleanup_free char *detail = xasprintf(fmt, what);
        return rm_error_set(c->err, RM_INVALID_ARGUMENT, "seccomp profile %s: %s", c->path, detail);
}

static const char *str_of(struct json_object *o, const char *key)
{
        struct json_object *v = NULL;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

/* "SCMP_ARCH_X86_64" to libseccomp's token; 0 when unknown. */
static uint32_t arch_token(const char *name)
{
        if (strncmp(name, "SCMP_ARCH_", 10) != 0)
                return 0;
        cleanup_free char *lower = xstrdup(name + 10);
        for (char *p = lower; *p; p++)
                *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
        return seccomp_arch_resolve_name(lower);
}

static int add_arch(struct profile_ctx *c, struct json_object *out_arches, const char *name)
{
        uint32_t tok = arch_token(name);
        if (tok == 0)
                return bad(c, "unknown architecture \"%s\"", name);
        if (c->n_arches < sizeof(c->arches) / sizeof(c->arches[0]))
                c->arches[c->n_arches++] = tok;
        json_object_array_add(out_arches, json_object_new_string(name));
        return 0;
}

/* Architectures from "architectures" (OCI) or "archMap" (Docker's format). */
static int read_arches(struct profile_ctx *c, struct json_object *doc, struct json_object *out)
{
        struct json_object *arches = json_object_new_array();
        json_object_object_add(out, "architectures", arches);
        struct json_object *v = NULL;
        if (json_object_object_get_ex(doc, "architectures", &v)) {
                if (!json_object_is_type(v, json_type_array))
                        return bad(c, "%s must be a list", "architectures");
                for (size_t i = 0; i < json_object_array_length(v); i++) {
                        struct json_object *a = json_object_array_get_idx(v, i);
                        if (!json_object_is_type(a, json_type_string))
                                return bad(c, "%s must hold strings", "architectures");
                        if (add_arch(c, arches, json_object_get_string(a)) < 0)
                                return -1;
                }
        }
        if (json_object_object_get_ex(doc, "archMap", &v) &&
            json_object_is_type(v, json_type_array)) {
                uint32_t native = seccomp_arch_native();
                for (size_t i = 0; i < json_object_array_length(v); i++) {
                        struct json_object *m = json_object_array_get_idx(v, i);
                        const char *main_arch = str_of(m, "architecture");
                        if (main_arch == NULL)
                                return bad(c, "%s entries need an architecture", "archMap");
                        /* Only the host's own entry matters; its sub-architectures too. */
                        if (arch_token(main_arch) != native)
                                continue;
                        if (add_arch(c, arches, main_arch) < 0)
                                return -1;
                        struct json_object *subs = NULL;
                        if (!json_object_object_get_ex(m, "subArchitectures", &subs))
                                continue;
                        for (size_t j = 0; j < json_object_array_length(subs); j++) {
                                const char *s =
                                    json_object_get_string(json_object_array_get_idx(subs, j));
                                if (s == NULL || add_arch(c, arches, s) < 0)
                                        return s ? -1 : bad(c, "%s", "bad subArchitectures");
                        }
                }
        }
        return 0;
}

/* A syscall name is valid when libseccomp knows it on the profile's architectures (the
 * native one when the profile lists none). */
static bool syscall_known(const struct profile_ctx *c, const char *name)
{
        if (c->n_arches == 0)
                return seccomp_syscall_resolve_name(name) != __NR_SCMP_ERROR;
        for (size_t i = 0; i < c->n_arches; i++) {
                if (seccomp_syscall_resolve_name_arch(c->arches[i], name) != __NR_SCMP_ERROR)
                        return true;
        }
        return false;
}

/* Docker's conditional entries: "includes"/"excludes" by capability. */
static bool entry_applies(struct json_object *rule, struct json_object *caps)
{
        struct json_object *cond = NULL, *list = NULL;
        if (json_object_object_get_ex(rule, "includes", &cond) &&
            json_object_object_get_ex(cond, "caps", &list)) {
                for (size_t i = 0; i < json_object_array_length(list); i++) {
                        const char *cap =
                            json_object_get_string(json_object_array_get_idx(list, i));
                        if (cap == NULL || !holds(caps, cap))
                                return false;
                }
        }
        if (json_object_object_get_ex(rule, "excludes", &cond) &&
            json_object_object_get_ex(cond, "caps", &list)) {
                for (size_t i = 0; i < json_object_array_length(list); i++) {
                        const char *cap =
                            json_object_get_string(json_object_array_get_idx(list, i));
                        if (cap && holds(caps, cap))
                                return false;
                }
        }
        return true;
}

static int copy_rule(struct profile_ctx *c, struct json_object *rule, struct json_object *caps,
                     struct json_object *out_syscalls)
{
        if (!json_object_is_type(rule, json_type_object))
                return bad(c, "%s entries must be objects", "syscalls");
        struct json_object *names = NULL;
        const char *single = str_of(rule, "name");
        if (!json_object_object_get_ex(rule, "names", &names) && single == NULL)
                return bad(c, "a %s entry has no names", "syscalls");
        const char *action = str_of(rule, "action");
        if (action == NULL || !in_list(actions, action))
                return bad(c, "unknown seccomp action \"%s\"", action ? action : "(none)");

        struct json_object *out_names = json_object_new_array();
        struct json_object *out = json_object_new_object();
        json_object_object_add(out, "names", out_names);
        json_object_object_add(out, "action", json_object_new_string(action));
        size_t n = names ? json_object_array_length(names) : 0;
        for (size_t i = 0; i <= n; i++) {
                const char *name =
                    i < n ? json_object_get_string(json_object_array_get_idx(names, i)) : single;
                if (name == NULL)
                        continue;
                if (!syscall_known(c, name)) {
                        json_object_put(out);
                        return bad(c, "unknown syscall \"%s\"", name);
                }
                json_object_array_add(out_names, json_object_new_string(name));
        }
        struct json_object *v = NULL;
        if (json_object_object_get_ex(rule, "errnoRet", &v))
                json_object_object_add(out, "errnoRet", json_object_get(v));
        if (json_object_object_get_ex(rule, "args", &v) &&
            json_object_is_type(v, json_type_array)) {
                for (size_t i = 0; i < json_object_array_length(v); i++) {
                        const char *op = str_of(json_object_array_get_idx(v, i), "op");
                        if (op == NULL || !in_list(operators, op)) {
                                json_object_put(out);
                                return bad(c, "unknown argument operator \"%s\"",
                                           op ? op : "(none)");
                        }
                }
                json_object_object_add(out, "args", json_object_get(v));
        }
        if (entry_applies(rule, caps) && json_object_array_length(out_names) > 0)
                json_object_array_add(out_syscalls, out);
        else
                json_object_put(out);
        return 0;
}

static struct json_object *localhost_profile(const char *path, struct json_object *caps,
                                             struct rm_error **err)
{
        if (path == NULL || path[0] != '/') {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "seccomp.localhost_ref must be an absolute path to a profile, got "
                             "\"%s\"",
                             path ? path : "");
                return NULL;
        }
        struct rm_error *read_err = NULL;
        cleanup_free char *text = rm_read_file(path, PROFILE_MAX_BYTES, NULL, &read_err);
        if (text == NULL) {
                rm_error_set(err, read_err->errnum == ENOENT ? RM_INVALID_ARGUMENT : read_err->code,
                             "seccomp.localhost_ref: %s", read_err->msg);
                rm_error_free(read_err);
                return NULL;
        }
        cleanup_json struct json_object *doc = json_tokener_parse(text);
        if (doc == NULL || !json_object_is_type(doc, json_type_object)) {
                rm_error_set(err, RM_INVALID_ARGUMENT, "seccomp profile %s is not a JSON object",
                             path);
                return NULL;
        }
        struct profile_ctx c = {.path = path, .err = err};
        static const char *const known[] = {"defaultAction", "defaultErrnoRet",  "architectures",
                                            "archMap",       "syscalls",         "flags",
                                            "listenerPath",  "listenerMetadata", NULL};
        json_object_object_foreach(doc, key, val)
        {
                (void)val;
                if (!in_list(known, key)) {
                        bad(&c, "unknown key \"%s\"", key);
                        return NULL;
                }
        }
        cleanup_json struct json_object *out = json_object_new_object();
        const char *def = str_of(doc, "defaultAction");
        if (def == NULL || !in_list(actions, def)) {
                bad(&c, "defaultAction \"%s\" is not a seccomp action", def ? def : "(none)");
                return NULL;
        }
        json_object_object_add(out, "defaultAction", json_object_new_string(def));
        struct json_object *v = NULL;
        if (json_object_object_get_ex(doc, "defaultErrnoRet", &v))
                json_object_object_add(out, "defaultErrnoRet", json_object_get(v));
        if (json_object_object_get_ex(doc, "flags", &v))
                json_object_object_add(out, "flags", json_object_get(v));
        if (json_object_object_get_ex(doc, "listenerPath", &v))
                json_object_object_add(out, "listenerPath", json_object_get(v));
        if (read_arches(&c, doc, out) < 0)
                return NULL;
        struct json_object *syscalls = json_object_new_array();
        json_object_object_add(out, "syscalls", syscalls);
        if (json_object_object_get_ex(doc, "syscalls", &v)) {
                if (!json_object_is_type(v, json_type_array)) {
                        bad(&c, "%s must be a list", "syscalls");
                        return NULL;
                }
                for (size_t i = 0; i < json_object_array_length(v); i++) {
                        if (copy_rule(&c, json_object_array_get_idx(v, i), caps, syscalls) < 0)
                                return NULL;
                }
        }
        return steal_pointer(&out);
}

struct json_object *rm_spec_seccomp(const Runtime__V1__SecurityProfile *profile, bool privileged,
                                    struct json_object *caps, bool *out_none, struct rm_error **err)
{
        *out_none = false;
        /* No profile at all means unconfined, as the CRI defines (kubelet sends
         * RuntimeDefault explicitly when it wants it). */
        if (profile == NULL) {
                *out_none = true;
                return NULL;
        }
        Runtime__V1__SecurityProfile__ProfileType type = profile->profile_type;
        /* A privileged container is trusted with the whole kernel interface, whatever
         * profile it names (containerd and CRI-O skip seccomp for it too). */
        if (privileged) {
                *out_none = true;
                return NULL;
        }
        if (type == RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__Localhost)
                return localhost_profile(profile->localhost_ref, caps, err);
        if (type == RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__Unconfined) {
                *out_none = true;
                return NULL;
        }
        if (type != RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__RuntimeDefault) {
                rm_error_set(err, RM_INVALID_ARGUMENT, "seccomp.profile_type %d is not known",
                             (int)type);
                return NULL;
        }
        return default_profile(caps);
}
