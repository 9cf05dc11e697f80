/* `remorad --check`: look at the host the way the daemon will use it, change nothing, and
 * print one line per check: OK, WARN (works, but not as on a typical node, or something
 * to know) or FAIL (remorad would not start, or pods would fail), each with what to do. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/mount.h>

#include "remora/cgroups.h"
#include "remora/cleanup.h"
#include "remora/container.h"
#include "remora/fsutil.h"
#include "remora/network.h"
#include "remora/server.h"
#include "remora/shim.h"
#include "remora/xalloc.h"

/* Free space below this on the root or state filesystem is worth a warning. */
#define LOW_SPACE_BYTES (1ULL << 30)

enum level { OK, WARN, FAIL };

struct report {
        FILE *out;
        int fails;
        int warns;
};

__attribute__((format(printf, 4, 5))) static void say(struct report *r, enum level l,
                                                      const char *what, const char *fmt, ...)
{
        static const char *const names[] = {"OK", "WARN", "FAIL"};
        fprintf(r->out, "%-5s %-20s ", names[l], what);
        va_list ap;
        va_start(ap, fmt);
        vfprintf(r->out, fmt, ap);
        va_end(ap);
        fputc('\n', r->out);
        if (l == FAIL)
                r->fails++;
        else if (l == WARN)
                r->warns++;
}

/* The first line a program prints (stdout), run without a shell; NULL when it fails. */
static char *first_line_of(const char *path, const char *arg)
{
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return NULL;
        pid_t pid = fork();
        if (pid < 0) {
                close(p[0]);
                close(p[1]);
                return NULL;
        }
        if (pid == 0) {
                dup2(p[1], STDOUT_FILENO);
                int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
                if (devnull >= 0)
                        dup2(devnull, STDERR_FILENO);
                execl(path, path, arg, (char *)NULL);
                _exit(127);
        }
        close(p[1]);
        char buf[512];
        size_t len = 0;
        ssize_t n;
        while (len < sizeof(buf) - 1 && (n = read(p[0], buf + len, sizeof(buf) - 1 - len)) > 0)
                len += (size_t)n;
        close(p[0]);
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        buf[len] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || buf[0] == '\0')
                return NULL;
        return xstrdup(buf);
}

/* Every runtime handler of the config's runtimes section (the default alone without
 * one): its binary must be there and answer --version. */
static void check_runtime(struct report *r, const struct rm_config *cfg)
{
        cleanup_error struct rm_error *cerr = NULL;
        struct rm_runtimes *rts = rm_runtimes_new(cfg->sections[RM_SECTION_RUNTIMES],
                                                  cfg->runtime_path, cfg->state, NULL, &cerr);
        if (rts == NULL) {
                say(r, FAIL, "runtime", "%s", cerr->msg);
                return;
        }
        for (size_t i = 0; i < rts->n; i++) {
                const struct rm_runtime *rt = rts->v[i];
                cleanup_error struct rm_error *err = NULL;
                if (!rm_runtime_usable(rt, &err)) {
                        say(r, FAIL, "runtime",
                            "handler %s: %s: install runc (apt-get install "
                            "runc) or set runtime_path / runtimes.handlers.%s.path",
                            rt->handler, err->msg, rt->handler);
                        continue;
                }
                cleanup_free char *v = first_line_of(rt->path, "--version");
                if (v)
                        say(r, OK, "runtime", "%s (%s, handler %s)", v, rt->path, rt->handler);
                else
                        say(r, FAIL, "runtime",
                            "handler %s: %s does not answer --version: check the binary",
                            rt->handler, rt->path);
        }
        rm_runtimes_free(rts);

        struct rm_helpers h;
        cleanup_error struct rm_error *herr = NULL;
        if (rm_helpers_locate(NULL, NULL, &h, &herr) < 0) {
                say(r, FAIL, "helpers", "%s: install remora-shim and remora-pause beside remorad",
                    herr->msg);
                return;
        }
        say(r, OK, "helpers", "%s, %s", h.shim, h.pause);
        rm_helpers_clear(&h);
}

/* The v2 controllers listed in <root>/cgroup.controllers that Remora needs. */
static void check_v2_controllers(struct report *r, const char *root)
{
        cleanup_free char *path = xasprintf("%s/cgroup.controllers", root);
        cleanup_free char *list = rm_read_file(path, 4096, NULL, NULL);
        const char *need[] = {"cpu", "memory", "pids"};
        char missing[64] = "";
        for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
                bool found = false;
                for (char *p = list; p && *p && !found;) {
                        size_t n = strcspn(p, " \n");
                        found = n == strlen(need[i]) && strncmp(p, need[i], n) == 0;
                        p += n;
                        p += strspn(p, " \n");
                }
                if (!found)
                        snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing),
                                 "%s%s", *missing ? "," : "", need[i]);
        }
        if (*missing)
                say(r, FAIL, "cgroup controllers",
                    "v2 at %s lacks %s: enable them in the parent's cgroup.subtree_control", root,
                    missing);
        else
                say(r, OK, "cgroup controllers", "cpu, memory, pids in %s", root);
}

static void check_cgroups(struct report *r)
{
        struct rm_cgroup_host cg;
        cleanup_error struct rm_error *err = NULL;
        if (rm_cgroup_detect(&cg, &err) < 0) {
                say(r, FAIL, "cgroups", "%s: mount cgroup2 at /sys/fs/cgroup", err->msg);
                return;
        }
        if (cg.mode == RM_CGROUP_V2) {
                say(r, OK, "cgroups", "v2 (unified) at %s", cg.root);
                check_v2_controllers(r, cg.root);
                return;
        }
        if (cg.root[0])
                say(r, WARN, "cgroups",
                    "hybrid: v1 controllers, with a v2 hierarchy at %s that Remora does not use; "
                    "works (containers and stats use v1), pure v2 is the layout to move to",
                    cg.root);
        else
                say(r, WARN, "cgroups",
                    "v1 only: works; pure v2 (cgroup_no_v1=all or systemd's unified hierarchy) "
                    "is the layout to move to");
        struct {
                const char *name, *mount;
                enum level missing;
        } ctl[] = {{"cpu", cg.cpu, FAIL},
                   {"cpuacct", cg.cpuacct, WARN},
                   {"memory", cg.memory, FAIL},
                   {"pids", cg.pids, WARN}};
        char missing[64] = "";
        enum level worst = OK;
        for (size_t i = 0; i < sizeof(ctl) / sizeof(ctl[0]); i++) {
                if (ctl[i].mount[0])
                        continue;
                snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing), "%s%s",
                         *missing ? "," : "", ctl[i].name);
                if (ctl[i].missing > worst)
                        worst = ctl[i].missing;
        }
        if (worst == OK)
                say(r, OK, "cgroup controllers", "v1 cpu %s, cpuacct %s, memory %s, pids %s",
                    cg.cpu, cg.cpuacct, cg.memory, cg.pids);
        else
                say(r, worst, "cgroup controllers",
                    "v1 hierarchy missing for %s: mount them under /sys/fs/cgroup", missing);
}

static bool file_lists(const char *path, const char *needle)
{
        cleanup_free char *text = rm_read_file(path, 1 << 16, NULL, NULL);
        return text && strstr(text, needle) != NULL;
}

static void check_overlay(struct report *r)
{
        if (file_lists("/proc/filesystems", "\toverlay\n"))
                say(r, OK, "overlayfs", "available");
        else if (access("/sys/module/overlay", F_OK) == 0)
                say(r, OK, "overlayfs", "module loaded");
        else
                say(r, WARN, "overlayfs",
                    "not loaded yet: the first pull loads it on demand; if images fail to "
                    "mount, run modprobe overlay");
}

/* The directory closest to path that exists (path itself, or an ancestor). */
static char *existing_ancestor(const char *path)
{
        char *p = xstrdup(path);
        while (access(p, F_OK) < 0) {
                char *slash = strrchr(p, '/');
                if (slash == NULL || slash == p) {
                        strcpy(p, "/");
                        break;
                }
                *slash = '\0';
        }
        return p;
}

/* Try an idmapped clone of dir in a throwaway user namespace; 0 or an errno. Nothing is
 * attached anywhere: the detached clone goes when its fd is closed. */
static int try_idmap(const char *dir)
{
        int sync[2];
        if (pipe2(sync, O_CLOEXEC) < 0)
                return errno;
        pid_t child = fork();
        if (child < 0) {
                int e = errno;
                close(sync[0]);
                close(sync[1]);
                return e;
        }
        if (child == 0) {
                close(sync[1]);
                if (unshare(CLONE_NEWUSER) < 0)
                        _exit(1);
                char c;
                /* Hold the namespace until the parent closes its end. */
                while (read(sync[0], &c, 1) < 0 && errno == EINTR)
                        ;
                _exit(0);
        }
        close(sync[0]);
        int rc = 0;
        /* Give the child time to unshare: wait until its user namespace differs. */
        cleanup_free char *ns = xasprintf("/proc/%d/ns/user", (int)child);
        struct stat self, other;
        stat("/proc/self/ns/user", &self);
        for (int i = 0; i < 1000; i++) {
                if (stat(ns, &other) == 0 && other.st_ino != self.st_ino)
                        break;
                usleep(1000);
        }
        static const char map[] = "0 4200000000 65536\n";
        const char *files[] = {"uid_map", "gid_map"};
        for (size_t i = 0; i < 2 && rc == 0; i++) {
                cleanup_free char *p = xasprintf("/proc/%d/%s", (int)child, files[i]);
                cleanup_close int fd = open(p, O_WRONLY | O_CLOEXEC);
                if (fd < 0 || write(fd, map, sizeof(map) - 1) != (ssize_t)(sizeof(map) - 1))
                        rc = errno ? errno : EIO;
        }
        cleanup_close int userns = rc ? -1 : open(ns, O_RDONLY | O_CLOEXEC);
        if (rc == 0 && userns < 0)
                rc = errno;
        if (rc == 0) {
                int tree = (int)syscall(SYS_open_tree, AT_FDCWD, dir,
                                        OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
                if (tree < 0) {
                        rc = errno;
                } else {
                        struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP,
                                                  .userns_fd = (uint64_t)userns};
                        if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr,
                                    sizeof(attr)) < 0)
                                rc = errno;
                        close(tree);
                }
        }
        close(sync[1]);
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
                ;
        return rc;
}

static void check_idmap(struct report *r, const struct rm_config *cfg)
{
        cleanup_free char *dir = existing_ancestor(cfg->root);
        int e = try_idmap(dir);
        if (e == 0)
                say(r, OK, "idmapped mounts", "supported on %s (user-namespaced pods possible)",
                    dir);
        else if (e == ENOSYS)
                say(r, WARN, "idmapped mounts",
                    "the kernel has no mount_setattr (needs 5.12 or later): pods with user "
                    "namespaces would be refused");
        else
                say(r, WARN, "idmapped mounts",
                    "the filesystem of %s refuses them (%s): pods with user namespaces would be "
                    "refused; ext4, xfs, btrfs and tmpfs support them",
                    dir, strerror(e));
}

static void check_network(struct report *r, const struct rm_config *cfg)
{
        struct json_object *section = cfg->sections[RM_SECTION_NETWORK];
        struct json_object *mode = NULL;
        const char *m = section && json_object_object_get_ex(section, "mode", &mode)
                            ? json_object_get_string(mode)
                            : "bridge";
        bool bridge_mode = strcmp(m, "bridge") == 0;
        cleanup_error struct rm_error *err = NULL;
        if (rm_network_nft_check(&err) < 0)
                say(r, bridge_mode ? FAIL : WARN, "nftables",
                    "%s: the built-in bridge needs nf_tables (modprobe nf_tables)", err->msg);
        else
                say(r, OK, "nftables", "libnftables answers");
        if (!bridge_mode) {
                say(r, OK, "bridge", "network.mode is %s: the built-in bridge is not used", m);
                return;
        }
        if (access("/sys/module/bridge", F_OK) == 0)
                say(r, OK, "bridge", "the bridge module is loaded");
        else
                say(r, WARN, "bridge",
                    "the bridge module is not loaded: remorad's first bridge loads it on demand; "
                    "if that fails, modprobe bridge");
        cleanup_free char *fwd = rm_read_file("/proc/sys/net/ipv4/ip_forward", 16, NULL, NULL);
        if (fwd && fwd[0] == '1')
                say(r, OK, "ip forwarding", "net.ipv4.ip_forward is 1");
        else
                say(r, WARN, "ip forwarding",
                    "net.ipv4.ip_forward is 0: remorad turns it on at start (set it in "
                    "/etc/sysctl.d to make that explicit)");
}

static void check_dir(struct report *r, const char *what, const char *path)
{
        cleanup_free char *dir = existing_ancestor(path);
        bool exists = strcmp(dir, path) == 0;
        struct stat st;
        if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
                say(r, FAIL, what, "%s is not a directory: choose another --%s", dir, what);
                return;
        }
        if (access(dir, W_OK) < 0) {
                say(r, FAIL, what, "%s is not writable (%s): run as root or choose another --%s",
                    dir, strerror(errno), what);
                return;
        }
        struct statvfs vfs;
        if (statvfs(dir, &vfs) < 0) {
                say(r, WARN, what, "%s: free space unknown (%s)", dir, strerror(errno));
                return;
        }
        unsigned long long free_bytes = (unsigned long long)vfs.f_bavail * vfs.f_frsize;
        const char *note = exists ? "" : " (created at start)";
        if (free_bytes < LOW_SPACE_BYTES)
                say(r, WARN, what, "%s%s: only %llu MiB free: free some space", path, note,
                    free_bytes >> 20);
        else
                say(r, OK, what, "%s%s writable, %llu MiB free", path, note, free_bytes >> 20);
}

/* Whether another remorad holds <state>/remorad.lock; the lock is only tested. */
static void check_lock(struct report *r, const struct rm_config *cfg)
{
        cleanup_free char *path = xasprintf("%s/remorad.lock", cfg->state);
        cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || flock(fd, LOCK_SH | LOCK_NB) == 0) {
                say(r, OK, "state lock", "no other remorad uses %s", cfg->state);
                return;
        }
        say(r, FAIL, "state lock",
            "another remorad holds %s: stop it, or check with that one's --state", path);
}

static void check_socket(struct report *r, const struct rm_config *cfg)
{
        cleanup_error struct rm_error *err = NULL;
        cleanup_free char *path = rm_config_socket_path(cfg->listen, &err);
        if (path == NULL) {
                say(r, FAIL, "socket", "%s", err->msg);
                return;
        }
        struct stat st;
        if (lstat(path, &st) < 0) {
                say(r, OK, "socket", "%s is free", path);
                return;
        }
        if (!S_ISSOCK(st.st_mode)) {
                say(r, FAIL, "socket",
                    "%s exists and is not a socket: remove it or change --listen", path);
                return;
        }
        cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                say(r, FAIL, "socket", "something already serves on %s: stop it or change --listen",
                    path);
        else
                say(r, OK, "socket", "%s is a stale socket; remorad replaces it at start", path);
}

static void check_oom(struct report *r)
{
        struct rm_cgroup_host cg = {0};
        struct rm_spec_host host;
        rm_spec_host_detect(&cg, &host);
        if (host.oom_score_adj_min <= -1000)
                say(r, OK, "oom_score_adj", "may be lowered for containers");
        else
                say(r, WARN, "oom_score_adj",
                    "this host refuses lowering it below remorad's own (%lld): containers asking "
                    "for less get %lld (as containerd's restrict_oom_score_adj); give remorad "
                    "CAP_SYS_RESOURCE or start it with a lower oom_score_adj",
                    (long long)host.oom_score_adj_min, (long long)host.oom_score_adj_min);
}

int rm_check_host(const struct rm_config *cfg, FILE *out)
{
        struct report r = {.out = out};
        /* The top-level keys were checked when the config was loaded; the network
         * section is checked here, the other sections when their module opens. */
        cleanup_error struct rm_error *err = NULL;
        if (rm_network_config_check(cfg->sections[RM_SECTION_NETWORK], &err) < 0)
                say(&r, FAIL, "config", "%s: fix the config file", err->msg);
        else
                say(&r, OK, "config", "%s",
                    cfg->config_path ? cfg->config_path : "built-in defaults");
        check_runtime(&r, cfg);
        check_cgroups(&r);
        check_overlay(&r);
        check_idmap(&r, cfg);
        check_network(&r, cfg);
        check_dir(&r, "root", cfg->root);
        check_dir(&r, "state", cfg->state);
        check_lock(&r, cfg);
        check_socket(&r, cfg);
        check_oom(&r);
        fprintf(out, "%d failed, %d warnings\n", r.fails, r.warns);
        return r.fails;
}
