/* A pod's namespaces, made by a short-lived child and pinned by bind mounts, the way
 * CRI-O's pinns does: the child unshares, sets the hostname, brings lo up and writes the
 * pod's sysctls from inside; the parent bind-mounts /proc/<child>/ns/<type> to the pin
 * paths; then the child exits. No process stays behind.
 *
 * The daemon is multi-threaded, so the child only makes system calls: every string it
 * needs is prepared before fork, and it reports failure as (step, errno) on a pipe. */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pinns.h"
#include "remora/cleanup.h"
#include "remora/xalloc.h"

enum step {
        STEP_OK,
        STEP_UNSHARE,
        STEP_HOSTNAME,
        STEP_LOOPBACK,
        STEP_SYSCTL,
        STEP_USERNS,
        STEP_MAP
};

struct report {
        int step;
        int err;
        int index; /* which sysctl, for STEP_SYSCTL */
};

static void child_fail(int fd, enum step step, int index)
{
        struct report r = {step, errno, index};
        if (write(fd, &r, sizeof(r)) < 0) {
                /* nothing more a dying child can do */
        }
        _exit(1);
}

/* lo up, with ioctls: no netlink library in the child. */
static int loopback_up(void)
{
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (s < 0)
                return -1;
        struct ifreq ifr;
        memset(&ifr, 0, sizeof(ifr));
        memcpy(ifr.ifr_name, "lo", 3);
        int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
        if (rc == 0) {
                ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
                rc = ioctl(s, SIOCSIFFLAGS, &ifr);
        }
        close(s);
        return rc;
}

static void child_main(const struct rm_pinns_request *req, char *const *sysctl_paths, int report,
                       int release)
{
        if (req->user) {
                /* The user namespace first; the parent writes its mappings (it holds the
                 * capabilities over the host IDs) and then lets this child go on. */
                if (unshare(CLONE_NEWUSER) < 0)
                        child_fail(report, STEP_USERNS, 0);
                struct report want = {STEP_MAP, 0, 0};
                if (write(report, &want, sizeof(want)) != sizeof(want))
                        _exit(1);
                char go;
                ssize_t n;
                while ((n = read(release, &go, 1)) < 0 && errno == EINTR)
                        ;
                if (n != 1)
                        _exit(1);
        }
        int flags = 0;
        if (req->net)
                flags |= CLONE_NEWNET;
        if (req->ipc)
                flags |= CLONE_NEWIPC;
        if (req->uts)
                flags |= CLONE_NEWUTS;
        if (flags && unshare(flags) < 0)
                child_fail(report, STEP_UNSHARE, 0);
        if (req->uts && req->hostname && sethostname(req->hostname, strlen(req->hostname)) < 0)
                child_fail(report, STEP_HOSTNAME, 0);
        if (req->net && loopback_up() < 0)
                child_fail(report, STEP_LOOPBACK, 0);
        for (size_t i = 0; i < req->n_sysctls; i++) {
                int fd = open(sysctl_paths[i], O_WRONLY | O_CLOEXEC);
                const char *v = req->sysctls[i].value;
                if (fd < 0 || write(fd, v, strlen(v)) != (ssize_t)strlen(v))
                        child_fail(report, STEP_SYSCTL, (int)i);
                close(fd);
        }
        struct report ok = {STEP_OK, 0, 0};
        if (write(report, &ok, sizeof(ok)) != sizeof(ok))
                _exit(1);
        /* Stay until the parent has pinned the namespaces (it closes its end). */
        char b;
        while (read(release, &b, 1) < 0 && errno == EINTR)
                ;
        _exit(0);
}

static const char *step_name(int step)
{
        switch (step) {
        case STEP_UNSHARE:
                return "create the namespaces";
        case STEP_HOSTNAME:
                return "set the hostname";
        case STEP_LOOPBACK:
                return "bring up lo";
        case STEP_USERNS:
                return "create the user namespace";
        default:
                return "write a sysctl";
        }
}

/* Bind /proc/<pid>/ns/<type> onto pin (an empty file created here). */
static int pin(pid_t pid, const char *type, const char *pin_path, struct rm_error **err)
{
        cleanup_close int fd = open(pin_path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
        if (fd < 0)
                return rm_error_sys(err, "create pin file %s", pin_path);
        char src[64];
        snprintf(src, sizeof(src), "/proc/%d/ns/%s", (int)pid, type);
        if (mount(src, pin_path, NULL, MS_BIND, NULL) < 0) {
                int e = errno;
                unlink(pin_path);
                return rm_error_sys_errno(err, e, "pin the %s namespace at %s", type, pin_path);
        }
        return 0;
}

static int write_map(pid_t pid, const char *file, const struct rm_idrange *r, struct rm_error **err)
{
        char path[64], line[64];
        snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
        snprintf(line, sizeof(line), "0 %u %u\n", r->host, r->len);
        cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, line, strlen(line)) != (ssize_t)strlen(line))
                return rm_error_sys(err, "write the pod's user namespace mapping %s", path);
        return 0;
}

/* The child asked for its mappings: write them and let it go on. */
static int map_user(pid_t pid, const struct rm_pinns_request *req, int report, int release,
                    struct rm_error **err)
{
        struct report r = {STEP_USERNS, EPIPE, 0};
        ssize_t n;
        while ((n = read(report, &r, sizeof(r))) < 0 && errno == EINTR)
                ;
        if (n != sizeof(r) || r.step != STEP_MAP)
                return rm_error_sys_errno(err, r.err, "namespace helper: %s", step_name(r.step));
        if (write_map(pid, "uid_map", &req->uids, err) < 0 ||
            write_map(pid, "gid_map", &req->gids, err) < 0)
                return -1;
        char go = 1;
        if (write(release, &go, 1) != 1)
                return rm_error_sys(err, "namespace helper: release after mapping");
        return 0;
}

void rm_pinns_unpin(const char *path)
{
        if (path == NULL)
                return;
        /* MNT_DETACH: a process still inside (a container exiting) must not block this. */
        if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT) {
                /* left for the start-up consistency pass */
        }
        unlink(path);
}

int rm_pinns_create(const struct rm_pinns_request *req, struct rm_error **err)
{
        cleanup_free char **paths = xzalloc(sizeof(char *) * (req->n_sysctls + 1));
        for (size_t i = 0; i < req->n_sysctls; i++) {
                paths[i] = xasprintf("/proc/sys/%s", req->sysctls[i].key);
                for (char *p = paths[i] + 10; *p; p++)
                        *p = *p == '.' ? '/' : *p;
        }
        int report[2] = {-1, -1}, release[2] = {-1, -1};
        if (pipe2(report, O_CLOEXEC) < 0 || pipe2(release, O_CLOEXEC) < 0) {
                rm_error_sys(err, "create pipes for the namespace helper");
                for (int i = 0; i < 2; i++) {
                        if (report[i] >= 0)
                                close(report[i]);
                }
                for (size_t i = 0; i < req->n_sysctls; i++)
                        free(paths[i]);
                return -1;
        }
        pid_t pid = fork();
        if (pid == 0) {
                /* O_CLOEXEC does nothing here (the child never execs): without this, a
                 * child would hold the pipes of helpers other threads start meanwhile, and
                 * two helpers could each keep the other's release pipe open forever. */
                int lo = report[1] < release[0] ? report[1] : release[0];
                int hi = report[1] < release[0] ? release[0] : report[1];
                close_range(3, (unsigned)lo - 1, 0);
                close_range((unsigned)lo + 1, (unsigned)hi - 1, 0);
                close_range((unsigned)hi + 1, ~0U, 0);
                child_main(req, paths, report[1], release[0]);
        }
        int saved = errno;
        close(report[1]);
        close(release[0]);
        for (size_t i = 0; i < req->n_sysctls; i++)
                free(paths[i]);
        int rc = 0;
        if (pid < 0) {
                rc = rm_error_sys_errno(err, saved, "start the namespace helper");
        } else {
                struct report r = {STEP_UNSHARE, EPIPE, 0};
                ssize_t n = 0;
                if (req->user && map_user(pid, req, report[0], release[1], err) < 0)
                        rc = -1;
                while (rc == 0 && (n = read(report[0], &r, sizeof(r))) < 0 && errno == EINTR)
                        ;
                if (rc < 0) {
                        /* reported by map_user */
                } else if (n != sizeof(r) || r.step != STEP_OK) {
                        if (r.step == STEP_SYSCTL && r.err == ENOENT)
                                rc = rm_error_set(err, RM_INVALID_ARGUMENT,
                                                  "sysctl \"%s\" does not exist on this kernel",
                                                  req->sysctls[r.index].key);
                        else if (r.step == STEP_SYSCTL)
                                rc = rm_error_sys_errno(err, r.err, "sysctl %s=%s",
                                                        req->sysctls[r.index].key,
                                                        req->sysctls[r.index].value);
                        else
                                rc = rm_error_sys_errno(err, r.err, "namespace helper: %s",
                                                        step_name(r.step));
                } else {
                        const struct {
                                bool want;
                                const char *type;
                                const char *path;
                        } pins[] = {{req->user, "user", req->user_path},
                                    {req->net, "net", req->net_path},
                                    {req->ipc, "ipc", req->ipc_path},
                                    {req->uts, "uts", req->uts_path}};
                        size_t done = 0;
                        for (; done < 4 && rc == 0; done++) {
                                if (pins[done].want)
                                        rc = pin(pid, pins[done].type, pins[done].path, err);
                        }
                        if (rc < 0) {
                                for (size_t i = 0; i + 1 < done; i++) {
                                        if (pins[i].want)
                                                rm_pinns_unpin(pins[i].path);
                                }
                        }
                }
                close(release[1]);
                release[1] = -1;
                int status;
                while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                        ;
        }
        close(report[0]);
        if (release[1] >= 0)
                close(release[1]);
        return rc;
}
