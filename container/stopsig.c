/* Stop signals: the CRI Signal enum (ContainerConfig.stop_signal, ContainerStatus.
 * stop_signal), the image's STOPSIGNAL, and the signal numbers StopContainer sends. The
 * real-time signals follow the numbering Go runtimes use (RTMIN is 34, RTMAX 64), as the
 * other CRI runtimes do. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "manager_internal.h"

#define RT_MIN 34
#define RT_MAX 64

/* A signal name without "SIG" ("TERM", "RTMIN+3", "RTMAXMINUS2"): its number, or 0. */
static int signal_by_name(const char *name)
{
        static const struct {
                const char *alias, *name;
        } aliases[] = {{"CLD", "CHLD"}, {"POLL", "IO"}, {"IOT", "ABRT"}};
        for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++) {
                if (strcmp(name, aliases[i].alias) == 0)
                        name = aliases[i].name;
        }
        const char *rest = NULL;
        int base = 0, dir = 0;
        if (strncmp(name, "RTMIN", 5) == 0)
                base = RT_MIN, dir = 1, rest = name + 5;
        else if (strncmp(name, "RTMAX", 5) == 0)
                base = RT_MAX, dir = -1, rest = name + 5;
        if (rest) {
                if (*rest == '\0')
                        return base;
                const char *num = NULL;
                if (dir > 0 && (*rest == '+' || strncmp(rest, "PLUS", 4) == 0))
                        num = rest + (*rest == '+' ? 1 : 4);
                else if (dir < 0 && (*rest == '-' || strncmp(rest, "MINUS", 5) == 0))
                        num = rest + (*rest == '-' ? 1 : 5);
                if (num == NULL || *num == '\0' || strspn(num, "0123456789") != strlen(num))
                        return 0;
                int sig = base + dir * atoi(num);
                return sig >= RT_MIN && sig <= RT_MAX ? sig : 0;
        }
        for (int sig = 1; sig < 32; sig++) {
                const char *abbrev = sigabbrev_np(sig);
                if (abbrev && strcmp(abbrev, name) == 0)
                        return sig;
        }
        return 0;
}

int rm__stop_signal_from_cri(int value, int *sig, struct rm_error **err)
{
        *sig = 0;
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value(&runtime__v1__signal__descriptor, value);
        if (v && value == RUNTIME__V1__SIGNAL__RUNTIME_DEFAULT)
                return 0;
        int s = v ? signal_by_name(v->name + 3) : 0;
        if (s == 0)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.stop_signal %d is not a signal this runtime knows "
                                    "(see the CRI Signal enum)",
                                    value);
        *sig = s;
        return 0;
}

int rm__stop_signal_from_image(const char *s)
{
        if (s == NULL || *s == '\0')
                return 0;
        if (strspn(s, "0123456789") == strlen(s))
                return atoi(s) > 0 && atoi(s) <= RT_MAX ? atoi(s) : 0;
        return signal_by_name(strncmp(s, "SIG", 3) == 0 ? s + 3 : s);
}

int rm__stop_signal_to_cri(int sig)
{
        if (sig == 0)
                sig = SIGTERM;
        /* The enum lists a primary name before its aliases (ABRT before IOT). */
        const ProtobufCEnumDescriptor *d = &runtime__v1__signal__descriptor;
        for (unsigned i = 0; i < d->n_values; i++) {
                if (d->values[i].value != RUNTIME__V1__SIGNAL__RUNTIME_DEFAULT &&
                    signal_by_name(d->values[i].name + 3) == sig)
                        return d->values[i].value;
        }
        return RUNTIME__V1__SIGNAL__RUNTIME_DEFAULT;
}
