/* The generated spec run by the real runc: what the container's processes see is what
 * the CRI asked for (user, groups, env, cwd, capabilities, seccomp, read-only root,
 * masked paths). Needs root, runc and Debian's busybox-static. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/spec.h"
#include "remora/xalloc.h"

#define BUSYBOX "/bin/busybox"

static char *tmpdir;
static int counter;

static void write_file(const char *path, const char *text)
{
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        cleanup_free char *cmd = NULL;
        assert_true(vasprintf(&cmd, fmt, ap) >= 0);
        va_end(ap);
        if (system(cmd) != 0)
                fail_msg("command failed: %s", cmd);
}

/* A busybox root filesystem with the users the tests expect. */
static char *make_rootfs(void)
{
        char *root = xasprintf("%s/rootfs-%d", tmpdir, ++counter);
        sh("mkdir -p %s/bin %s/etc %s/proc %s/dev %s/sys %s/tmp %s/mnt && cp " BUSYBOX
           " %s/bin/busybox",
           root, root, root, root, root, root, root, root);
        static const char *const applets[] = {"sh", "id",    "grep",  "echo", "pwd", "cat",
                                              "wc", "touch", "mkdir", "env",  NULL};
        for (const char *const *a = applets; *a; a++) {
                cleanup_free char *link = xasprintf("%s/bin/%s", root, *a);
                assert_int_equal(symlink("busybox", link), 0);
        }
        cleanup_free char *passwd = xasprintf("%s/etc/passwd", root);
        cleanup_free char *group = xasprintf("%s/etc/group", root);
        write_file(passwd, "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n");
        write_file(group, "root:x:0:\napp:x:1000:\nstaff:x:50:app\n");
        return root;
}

static int setup(void **state)
{
        (void)state;
        if (geteuid() != 0 || access(BUSYBOX, X_OK) < 0 || system("runc --version >/dev/null") != 0)
                fail_msg("needs root, runc and busybox-static");
        char tmpl[] = "/tmp/remora-runc-spec-XXXXXX";
        assert_non_null(mkdtemp(tmpl));
        tmpdir = xstrdup(tmpl);
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        sh("rm -rf '%s'", tmpdir);
        free(tmpdir);
        return 0;
}

/* Build the spec, run it to completion with runc and return its stdout+stderr. */
static char *run(Runtime__V1__ContainerConfig *cfg, struct rm_spec_image *img,
                 struct rm_spec_pod *pod)
{
        cleanup_free char *rootfs = make_rootfs();
        cleanup_free char *id = xasprintf("remora-spec-test-%d-%d", (int)getpid(), counter);
        struct rm_spec_host host = {.cgroup_v2 =
                                        access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0};
        cleanup_free char *oom = rm_read_file("/proc/self/oom_score_adj", 64, NULL, NULL);
        host.oom_score_adj_min = oom ? atoi(oom) : 0;
        struct rm_error *err = NULL;
        cleanup_json struct json_object *spec =
            rm_spec_build(id, cfg, img, pod, &host, rootfs, &err);
        if (spec == NULL)
                fail_msg("rm_spec_build: %s", err->msg);
        cleanup_free char *bundle = xasprintf("%s/bundle-%d", tmpdir, counter);
        cleanup_free char *config = xasprintf("%s/config.json", bundle);
        assert_int_equal(rm_mkdir_p(bundle, 0700, NULL), 0);
        assert_int_equal(json_object_to_file_ext(config, spec, JSON_C_TO_STRING_PRETTY), 0);

        cleanup_free char *out = xasprintf("%s/out-%d", tmpdir, counter);
        cleanup_free char *cmd = xasprintf("runc --root %s/runc run --bundle %s %s > %s 2>&1 "
                                           "</dev/null",
                                           tmpdir, bundle, id, out);
        int rc = system(cmd);
        char *text = rm_read_file(out, 1 << 20, NULL, NULL);
        assert_non_null(text);
        if (rc != 0)
                fail_msg("runc run failed (%d):\n%s", rc, text);
        return text;
}

static void expect_line(const char *out, const char *line)
{
        cleanup_free char *needle = xasprintf("\n%s\n", line);
        cleanup_free char *padded = xasprintf("\n%s", out);
        if (strstr(padded, needle) == NULL)
                fail_msg("line \"%s\" not in output:\n%s", line, out);
}

struct base {
        Runtime__V1__ContainerConfig cfg;
        Runtime__V1__LinuxContainerConfig linux;
        Runtime__V1__LinuxContainerSecurityContext sc;
        Runtime__V1__SecurityProfile seccomp;
        struct rm_spec_image img;
        struct rm_spec_pod pod;
        char *cmd[4];
};

static void base_init(struct base *b, const char *script)
{
        memset(b, 0, sizeof(*b));
        runtime__v1__container_config__init(&b->cfg);
        runtime__v1__linux_container_config__init(&b->linux);
        runtime__v1__linux_container_security_context__init(&b->sc);
        runtime__v1__security_profile__init(&b->seccomp);
        b->cfg.linux = &b->linux;
        b->linux.security_context = &b->sc;
        b->sc.seccomp = &b->seccomp; /* RuntimeDefault */
        b->cmd[0] = "/bin/sh";
        b->cmd[1] = "-c";
        b->cmd[2] = (char *)script;
        b->cfg.command = b->cmd;
        b->cfg.n_command = 3;
        b->pod.pid_mode = RUNTIME__V1__NAMESPACE_MODE__CONTAINER;
        b->pod.hostname = "spec-test";
}

static void test_user_env_cwd_caps_seccomp(void **state)
{
        (void)state;
        struct base b;
        base_init(&b, "id -u; id -G; echo MODE=$MODE; echo HOME=$HOME; pwd; "
                      "grep -E '^(Seccomp|NoNewPrivs|CapBnd):' /proc/self/status");
        static char *env[] = {"MODE=image", "PATH=/bin"};
        b.img.env = env;
        b.img.n_env = 2;
        b.img.user = "app";
        b.img.working_dir = "/srv/app";
        Runtime__V1__KeyValue kv = RUNTIME__V1__KEY_VALUE__INIT;
        Runtime__V1__KeyValue *kvs[] = {&kv};
        kv.key = "MODE";
        kv.value.data = (uint8_t *)"request";
        kv.value.len = 7;
        b.cfg.envs = kvs;
        b.cfg.n_envs = 1;
        b.sc.no_new_privs = true;

        cleanup_free char *out = run(&b.cfg, &b.img, &b.pod);
        expect_line(out, "1000");
        expect_line(out, "1000 50");
        expect_line(out, "MODE=request");
        expect_line(out, "HOME=/home/app");
        expect_line(out, "/srv/app");
        expect_line(out, "Seccomp:\t2");
        expect_line(out, "NoNewPrivs:\t1");
        /* The default set: Docker's well-known bounding mask. */
        expect_line(out, "CapBnd:\t00000000a80425fb");
}

static void test_localhost_profile_is_enforced(void **state)
{
        (void)state;
        struct base b;
        base_init(&b, "mkdir /tmp/made 2>&1; echo rc=$?; touch /tmp/file && echo touched");
        cleanup_free char *profile = xasprintf("%s/deny-mkdir.json", tmpdir);
        write_file(profile, "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": "
                            "[\"mkdir\", \"mkdirat\"], \"action\": \"SCMP_ACT_ERRNO\", "
                            "\"errnoRet\": 1}]}");
        b.seccomp.profile_type = RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__Localhost;
        b.seccomp.localhost_ref = profile;
        cleanup_free char *out = run(&b.cfg, &b.img, &b.pod);
        if (strstr(out, "Operation not permitted") == NULL)
                fail_msg("mkdir was not refused:\n%s", out);
        expect_line(out, "rc=1");
        expect_line(out, "touched");
}

static void test_readonly_root(void **state)
{
        (void)state;
        struct base b;
        base_init(&b, "touch /newfile 2>&1; echo rc=$?");
        b.sc.readonly_rootfs = true;
        cleanup_free char *out = run(&b.cfg, &b.img, &b.pod);
        if (strstr(out, "Read-only file system") == NULL)
                fail_msg("the root was writable:\n%s", out);
        expect_line(out, "rc=1");
}

static void test_masked_and_readonly_paths(void **state)
{
        (void)state;
        struct base b;
        base_init(&b, "wc -c < /proc/cpuinfo; touch /mnt/x 2>&1; echo rc=$?; touch /tmp/y && "
                      "echo writable");
        static char *masked[] = {"/proc/cpuinfo"};
        static char *ro[] = {"/mnt"};
        b.sc.masked_paths = masked;
        b.sc.n_masked_paths = 1;
        b.sc.readonly_paths = ro;
        b.sc.n_readonly_paths = 1;
        cleanup_free char *out = run(&b.cfg, &b.img, &b.pod);
        expect_line(out, "0"); /* masked by an empty bind */
        if (strstr(out, "Read-only file system") == NULL)
                fail_msg("/mnt was writable:\n%s", out);
        expect_line(out, "rc=1");
        expect_line(out, "writable");
}

static void test_added_capability_is_held(void **state)
{
        (void)state;
        struct base b;
        base_init(&b, "grep '^CapEff:' /proc/self/status");
        Runtime__V1__Capability caps = RUNTIME__V1__CAPABILITY__INIT;
        static char *all[] = {"ALL"};
        static char *add[] = {"NET_ADMIN", "KILL"};
        caps.drop_capabilities = all;
        caps.n_drop_capabilities = 1;
        caps.add_capabilities = add;
        caps.n_add_capabilities = 2;
        b.sc.capabilities = &caps;
        cleanup_free char *out = run(&b.cfg, &b.img, &b.pod);
        /* KILL is bit 5, NET_ADMIN bit 12. */
        expect_line(out, "CapEff:\t0000000000001020");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_user_env_cwd_caps_seccomp),
            cmocka_unit_test(test_localhost_profile_is_enforced),
            cmocka_unit_test(test_readonly_root),
            cmocka_unit_test(test_masked_and_readonly_paths),
            cmocka_unit_test(test_added_capability_is_held),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
