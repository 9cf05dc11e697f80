/* The OCI spec builder: Kubernetes' command rules, users from the image's rootfs,
 * capabilities, seccomp, resources, mounts and the assembled config.json. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "remora/cgroups.h"
#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/pbcanon.h"
#include "remora/spec.h"
#include "remora/xalloc.h"
#include "files.h"

static char *tmpdir;

/* A rootfs whose user database differs from any host's. */
static char *make_rootfs(const char *name)
{
        char *root = xasprintf("%s/%s", tmpdir, name);
        write_file(root, "etc/passwd",
                   "root:x:0:0:root:/root:/bin/sh\n"
                   "# a comment line\n"
                   "app:x:1000:1000:App:/home/app:/bin/sh\n"
                   "svc:x:1001:1001::/srv:/bin/false\n"
                   "broken line without fields\n");
        write_file(root, "etc/group",
                   "root:x:0:\n"
                   "app:x:1000:\n"
                   "staff:x:50:app,svc\n"
                   "video:x:44:app\n"
                   "svc:x:1001:\n");
        return root;
}

static int setup(void **state)
{
        (void)state;
        char tmpl[] = "/tmp/remora-unit-spec-XXXXXX";
        assert_non_null(mkdtemp(tmpl));
        tmpdir = xstrdup(tmpl);
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        cleanup_free char *cmd = xasprintf("rm -rf '%s'", tmpdir);
        assert_int_equal(system(cmd), 0);
        free(tmpdir);
        return 0;
}

static void expect_invalid(struct rm_error **err, const char *needle)
{
        assert_non_null(*err);
        if (strstr((*err)->msg, needle) == NULL)
                fail_msg("\"%s\" not in \"%s\"", needle, (*err)->msg);
        assert_int_equal((*err)->code, RM_INVALID_ARGUMENT);
        rm_error_free(*err);
        *err = NULL;
}

/* ---- process arguments ---- */

static char *join(char **argv)
{
        size_t len = 1;
        for (char **p = argv; *p; p++)
                len += strlen(*p) + 1;
        char *s = xzalloc(len);
        for (char **p = argv; *p; p++) {
                if (p != argv)
                        strcat(s, " ");
                strcat(s, *p);
        }
        return s;
}

static void check_args(char **cmd, size_t ncmd, char **args, size_t nargs, const char *want)
{
        char *ep[] = {"/entry", "-e"};
        char *ic[] = {"imgcmd"};
        struct rm_spec_image img = {.entrypoint = ep, .n_entrypoint = 2, .cmd = ic, .n_cmd = 1};
        Runtime__V1__ContainerConfig cfg = RUNTIME__V1__CONTAINER_CONFIG__INIT;
        cfg.command = cmd;
        cfg.n_command = ncmd;
        cfg.args = args;
        cfg.n_args = nargs;
        struct rm_error *err = NULL;
        char **argv = rm_spec_process_args(&cfg, &img, &err);
        assert_non_null(argv);
        cleanup_free char *got = join(argv);
        assert_string_equal(got, want);
        rm_strv_free(argv);
}

static void test_process_args(void **state)
{
        (void)state;
        char *cmd[] = {"/bin/sh", "-c"};
        char *args[] = {"echo hi"};
        check_args(NULL, 0, NULL, 0, "/entry -e imgcmd");
        check_args(NULL, 0, args, 1, "/entry -e echo hi");
        check_args(cmd, 2, NULL, 0, "/bin/sh -c");
        check_args(cmd, 2, args, 1, "/bin/sh -c echo hi");

        struct rm_spec_image empty = {0};
        Runtime__V1__ContainerConfig cfg = RUNTIME__V1__CONTAINER_CONFIG__INIT;
        struct rm_error *err = NULL;
        assert_null(rm_spec_process_args(&cfg, &empty, &err));
        expect_invalid(&err, "nothing to run");
}

/* ---- users ---- */

static void resolve(const Runtime__V1__LinuxContainerSecurityContext *sc, const char *image_user,
                    const char *rootfs, struct rm_spec_user *u)
{
        struct rm_error *err = NULL;
        int rc = rm_spec_resolve_user(sc, image_user, rootfs, u, &err);
        if (rc < 0)
                fail_msg("resolve %s: %s", image_user ? image_user : "(request)", err->msg);
}

static bool has_group(const struct rm_spec_user *u, uint32_t gid)
{
        for (size_t i = 0; i < u->n_groups; i++) {
                if (u->groups[i] == gid)
                        return true;
        }
        return false;
}

static void test_user_from_image(void **state)
{
        (void)state;
        cleanup_free char *root = make_rootfs("users");
        struct rm_spec_user u;

        resolve(NULL, NULL, root, &u);
        assert_int_equal(u.uid, 0);
        assert_int_equal(u.gid, 0);
        assert_string_equal(u.home, "/root");
        rm_spec_user_release(&u);

        resolve(NULL, "app", root, &u);
        assert_int_equal(u.uid, 1000);
        assert_int_equal(u.gid, 1000);
        assert_string_equal(u.home, "/home/app");
        assert_true(has_group(&u, 50) && has_group(&u, 44));
        assert_int_equal(u.n_groups, 3); /* the primary gid first, then the image's */
        assert_int_equal(u.groups[0], 1000);
        rm_spec_user_release(&u);

        resolve(NULL, "app:staff", root, &u);
        assert_int_equal(u.uid, 1000);
        assert_int_equal(u.gid, 50);
        rm_spec_user_release(&u);

        resolve(NULL, "4242:77", root, &u); /* unknown numeric ids are fine */
        assert_int_equal(u.uid, 4242);
        assert_int_equal(u.gid, 77);
        assert_null(u.home);
        rm_spec_user_release(&u);

        resolve(NULL, "1001", root, &u); /* a known uid takes its passwd gid */
        assert_int_equal(u.gid, 1001);
        assert_string_equal(u.home, "/srv");
        assert_true(has_group(&u, 50));
        rm_spec_user_release(&u);

        struct rm_error *err = NULL;
        assert_int_equal(rm_spec_resolve_user(NULL, "nobody-here", root, &u, &err), -1);
        expect_invalid(&err, "\"nobody-here\": no such user");
        assert_int_equal(rm_spec_resolve_user(NULL, "app:nogroup", root, &u, &err), -1);
        expect_invalid(&err, "\"nogroup\": no such group");
        assert_int_equal(rm_spec_resolve_user(NULL, "2147483648", root, &u, &err), -1);
        expect_invalid(&err, "outside 0..2147483647");
}

static void test_user_from_request(void **state)
{
        (void)state;
        cleanup_free char *root = make_rootfs("req");
        Runtime__V1__LinuxContainerSecurityContext sc =
            RUNTIME__V1__LINUX_CONTAINER_SECURITY_CONTEXT__INIT;
        Runtime__V1__Int64Value uid = RUNTIME__V1__INT64_VALUE__INIT;
        Runtime__V1__Int64Value gid = RUNTIME__V1__INT64_VALUE__INIT;
        int64_t extra[] = {9, 50};
        struct rm_spec_user u;

        uid.value = 1000;
        sc.run_as_user = &uid;
        sc.supplemental_groups = extra;
        sc.n_supplemental_groups = 2;
        resolve(&sc, "svc", root, &u); /* the request beats the image */
        assert_int_equal(u.uid, 1000);
        assert_int_equal(u.gid, 1000);
        assert_true(has_group(&u, 9) && has_group(&u, 50) && has_group(&u, 44));
        assert_int_equal(u.n_groups, 4); /* 1000, 50, 44, 9: 50 only once */
        assert_int_equal(u.groups[0], 1000);
        assert_int_equal(u.groups[3], 9);
        rm_spec_user_release(&u);

        gid.value = 3000;
        sc.run_as_group = &gid;
        resolve(&sc, NULL, root, &u);
        assert_int_equal(u.gid, 3000);
        rm_spec_user_release(&u);

        sc.run_as_user = NULL;
        sc.run_as_username = "svc";
        resolve(&sc, NULL, root, &u);
        assert_int_equal(u.uid, 1001);
        assert_int_equal(u.gid, 3000);
        rm_spec_user_release(&u);

        struct rm_error *err = NULL;
        sc.run_as_username = "";
        assert_int_equal(rm_spec_resolve_user(&sc, NULL, root, &u, &err), -1);
        expect_invalid(&err, "run_as_group needs run_as_user");

        uid.value = -1;
        sc.run_as_user = &uid;
        assert_int_equal(rm_spec_resolve_user(&sc, NULL, root, &u, &err), -1);
        expect_invalid(&err, "run_as_user -1");
        uid.value = 5;
        extra[0] = 1LL << 31;
        assert_int_equal(rm_spec_resolve_user(&sc, NULL, root, &u, &err), -1);
        expect_invalid(&err, "supplemental_groups 2147483648");
}

/* An image whose /etc is a symlink climbing out of the rootfs must still be read from
 * inside it: the host's users never leak in. */
static void test_user_db_symlink_stays_inside(void **state)
{
        (void)state;
        /* The image's /etc is an absolute link to a host directory with its own users. */
        cleanup_free char *hostetc = xasprintf("%s/hostetc", tmpdir);
        write_file(hostetc, "passwd", "hostuser:x:5:5::/h:/bin/sh\n");
        cleanup_free char *root = xasprintf("%s/escape", tmpdir);
        assert_int_equal(rm_mkdir_p(root, 0755, NULL), 0);
        cleanup_free char *etc = xasprintf("%s/etc", root);
        assert_int_equal(symlink(hostetc, etc), 0);

        struct rm_spec_user u;
        struct rm_error *err = NULL;
        assert_int_equal(rm_spec_resolve_user(NULL, "hostuser", root, &u, &err), -1);
        expect_invalid(&err, "\"hostuser\": no such user");

        /* The same link followed inside the rootfs finds the image's own file. */
        cleanup_free char *inner = xasprintf("%s%s", root, hostetc);
        write_file(inner, "passwd", "inside:x:77:77::/in:/bin/sh\n");
        resolve(NULL, "inside", root, &u);
        assert_int_equal(u.uid, 77);
        rm_spec_user_release(&u);
        assert_int_equal(rm_spec_resolve_user(NULL, "hostuser", root, &u, &err), -1);
        expect_invalid(&err, "no such user");
}

static void test_rootfs_mkdir(void **state)
{
        (void)state;
        cleanup_free char *root = xasprintf("%s/mk", tmpdir);
        cleanup_free char *outside = xasprintf("%s/outside", tmpdir);
        assert_int_equal(rm_mkdir_p(root, 0755, NULL), 0);
        assert_int_equal(rm_mkdir_p(outside, 0755, NULL), 0);
        cleanup_free char *link = xasprintf("%s/link", root);
        assert_int_equal(symlink(outside, link), 0);

        struct rm_error *err = NULL;
        assert_int_equal(rm_rootfs_mkdir(root, "/a/b//c/", 0755, &err), 0);
        cleanup_free char *made = xasprintf("%s/a/b/c", root);
        struct stat st;
        assert_int_equal(stat(made, &st), 0);
        assert_true(S_ISDIR(st.st_mode));

        /* The absolute link resolves to <root><outside>, never to the host's dir. */
        rm_rootfs_mkdir(root, "/link/sub", 0755, &err);
        rm_error_free(err);
        err = NULL;
        cleanup_free char *leak = xasprintf("%s/sub", outside);
        assert_int_equal(stat(leak, &st), -1);
        assert_int_equal(rm_rootfs_mkdir(root, "/../../x", 0755, &err), 0);
        cleanup_free char *clamped = xasprintf("%s/x", root);
        assert_int_equal(stat(clamped, &st), 0);

        assert_int_equal(rm_rootfs_mkdir(root, "relative", 0755, &err), -1);
        expect_invalid(&err, "not an absolute path");
        write_file(root, "file", "x");
        assert_int_equal(rm_rootfs_mkdir(root, "/file/below", 0755, &err), -1);
        expect_invalid(&err, "is not a directory");
}

/* ---- capabilities ---- */

static bool json_has(struct json_object *list, const char *s)
{
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                if (strcmp(json_object_get_string(json_object_array_get_idx(list, i)), s) == 0)
                        return true;
        }
        return false;
}

static void test_capabilities(void **state)
{
        (void)state;
        struct rm_error *err = NULL;
        cleanup_json struct json_object *def = rm_spec_capabilities(NULL, false, &err);
        assert_int_equal(json_object_array_length(def), 14);
        assert_true(json_has(def, "CAP_CHOWN") && json_has(def, "CAP_NET_BIND_SERVICE"));
        assert_false(json_has(def, "CAP_SYS_ADMIN"));

        Runtime__V1__Capability c = RUNTIME__V1__CAPABILITY__INIT;
        char *add[] = {"NET_ADMIN", "cap_sys_time"};
        char *drop[] = {"CAP_CHOWN"};
        c.add_capabilities = add;
        c.n_add_capabilities = 2;
        c.drop_capabilities = drop;
        c.n_drop_capabilities = 1;
        cleanup_json struct json_object *mod = rm_spec_capabilities(&c, false, &err);
        assert_int_equal(json_object_array_length(mod), 15);
        assert_true(json_has(mod, "CAP_NET_ADMIN") && json_has(mod, "CAP_SYS_TIME"));
        assert_false(json_has(mod, "CAP_CHOWN"));

        char *all[] = {"ALL"};
        char *chown[] = {"CHOWN"};
        c.drop_capabilities = all;
        c.add_capabilities = chown;
        c.n_add_capabilities = 1;
        cleanup_json struct json_object *only = rm_spec_capabilities(&c, false, &err);
        assert_int_equal(json_object_array_length(only), 1);
        assert_true(json_has(only, "CAP_CHOWN"));

        cleanup_json struct json_object *every = rm_spec_capabilities(NULL, true, &err);
        c.add_capabilities = all;
        c.drop_capabilities = chown;
        cleanup_json struct json_object *most = rm_spec_capabilities(&c, false, &err);
        assert_int_equal(json_object_array_length(most), json_object_array_length(every) - 1);
        assert_true(json_has(every, "CAP_SYS_ADMIN") && !json_has(most, "CAP_CHOWN"));
        /* ALL is what this process may hand on (its bounding set), not libcap's whole list */
        int bound = 0;
        for (int i = 0; i < (int)cap_max_bits() && i < 64; i++)
                bound += cap_get_bound((cap_value_t)i) == 1;
        assert_int_equal(json_object_array_length(every), bound);

        char *bogus[] = {"NET_ADMIN", "CAP_FLY"};
        c.add_capabilities = bogus;
        c.n_add_capabilities = 2;
        assert_null(rm_spec_capabilities(&c, false, &err));
        expect_invalid(&err, "add_capabilities: unknown capability \"CAP_FLY\"");
        char *evil[] = {"chown/../x"};
        c.add_capabilities = evil;
        c.n_add_capabilities = 1;
        assert_null(rm_spec_capabilities(&c, false, &err));
        expect_invalid(&err, "chown/../x");
}

/* ---- seccomp ---- */

static bool profile_blocks(struct json_object *p, const char *name)
{
        struct json_object *rules = NULL;
        assert_true(json_object_object_get_ex(p, "syscalls", &rules));
        for (size_t i = 0; i < json_object_array_length(rules); i++) {
                struct json_object *r = json_object_array_get_idx(rules, i), *names = NULL;
                struct json_object *action = NULL;
                json_object_object_get_ex(r, "action", &action);
                if (strcmp(json_object_get_string(action), "SCMP_ACT_ALLOW") == 0)
                        continue;
                if (json_object_object_get_ex(r, "names", &names) && json_has(names, name))
                        return true;
        }
        return false;
}

static void test_seccomp_default_and_unconfined(void **state)
{
        (void)state;
        struct rm_error *err = NULL;
        bool none = false;
        Runtime__V1__SecurityProfile prof = RUNTIME__V1__SECURITY_PROFILE__INIT;
        cleanup_json struct json_object *caps = rm_spec_capabilities(NULL, false, &err);
        cleanup_json struct json_object *p = rm_spec_seccomp(&prof, false, caps, &none, &err);
        assert_non_null(p);
        assert_false(none);
        assert_true(profile_blocks(p, "mount") && profile_blocks(p, "kexec_load") &&
                    profile_blocks(p, "keyctl"));
        assert_false(profile_blocks(p, "read"));

        /* CAP_SYS_ADMIN lifts the mount block, not the keyring one. */
        json_object_array_add(caps, json_object_new_string("CAP_SYS_ADMIN"));
        cleanup_json struct json_object *admin = rm_spec_seccomp(&prof, false, caps, &none, &err);
        assert_false(profile_blocks(admin, "mount"));
        assert_true(profile_blocks(admin, "keyctl"));

        assert_null(rm_spec_seccomp(NULL, false, caps, &none, &err));
        assert_true(none);
        prof.profile_type = RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__Unconfined;
        assert_null(rm_spec_seccomp(&prof, false, caps, &none, &err));
        assert_true(none && err == NULL);
        prof.profile_type = RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__RuntimeDefault;
        assert_null(rm_spec_seccomp(&prof, true, caps, &none, &err));
        assert_true(none);
}

static void test_seccomp_localhost(void **state)
{
        (void)state;
        write_file(tmpdir, "profiles/ok.json",
                   "{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"defaultErrnoRet\": 1,"
                   " \"architectures\": [\"SCMP_ARCH_X86_64\", \"SCMP_ARCH_X86\"],"
                   " \"syscalls\": [{\"names\": [\"read\", \"write\", \"exit_group\"],"
                   "  \"action\": \"SCMP_ACT_ALLOW\"},"
                   " {\"names\": [\"personality\"], \"action\": \"SCMP_ACT_ALLOW\","
                   "  \"args\": [{\"index\": 0, \"value\": 0, \"op\": \"SCMP_CMP_EQ\"}]},"
                   " {\"names\": [\"mount\"], \"action\": \"SCMP_ACT_ALLOW\","
                   "  \"includes\": {\"caps\": [\"CAP_SYS_ADMIN\"]}}]}");
        write_file(tmpdir, "profiles/typo.json",
                   "{\"defaultAction\": \"SCMP_ACT_ERRNO\","
                   " \"syscalls\": [{\"names\": [\"read\", \"raed\"], \"action\": "
                   "\"SCMP_ACT_ALLOW\"}]}");
        write_file(tmpdir, "profiles/action.json", "{\"defaultAction\": \"SCMP_ACT_MAYBE\"}");
        write_file(tmpdir, "profiles/arch.json",
                   "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"architectures\": "
                   "[\"SCMP_ARCH_VAX\"]}");
        write_file(tmpdir, "profiles/key.json",
                   "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscall\": []}");

        struct rm_error *err = NULL;
        bool none = false;
        Runtime__V1__SecurityProfile prof = RUNTIME__V1__SECURITY_PROFILE__INIT;
        prof.profile_type = RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__Localhost;
        cleanup_json struct json_object *caps = rm_spec_capabilities(NULL, false, &err);

        cleanup_free char *ok = xasprintf("%s/profiles/ok.json", tmpdir);
        prof.localhost_ref = ok;
        cleanup_json struct json_object *p = rm_spec_seccomp(&prof, false, caps, &none, &err);
        if (p == NULL)
                fail_msg("%s", err->msg);
        struct json_object *rules = NULL;
        json_object_object_get_ex(p, "syscalls", &rules);
        /* The mount rule needs CAP_SYS_ADMIN, which the default set lacks. */
        assert_int_equal(json_object_array_length(rules), 2);

        const struct {
                const char *file;
                const char *needle;
        } bad[] = {
            {"typo.json", "unknown syscall \"raed\""},
            {"action.json", "\"SCMP_ACT_MAYBE\" is not a seccomp action"},
            {"arch.json", "unknown architecture \"SCMP_ARCH_VAX\""},
            {"key.json", "unknown key \"syscall\""},
            {"absent.json", "absent.json"},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                cleanup_free char *path = xasprintf("%s/profiles/%s", tmpdir, bad[i].file);
                prof.localhost_ref = path;
                assert_null(rm_spec_seccomp(&prof, false, caps, &none, &err));
                expect_invalid(&err, bad[i].needle);
        }
        prof.localhost_ref = "relative.json";
        assert_null(rm_spec_seccomp(&prof, false, caps, &none, &err));
        expect_invalid(&err, "must be an absolute path");

        /* privileged: no seccomp at all, even with a localhost profile named */
        prof.localhost_ref = ok;
        none = false;
        assert_null(rm_spec_seccomp(&prof, true, caps, &none, &err));
        assert_true(none);
        assert_null(err);
}

/* ---- the whole spec ---- */

struct fixture {
        Runtime__V1__ContainerConfig cfg;
        Runtime__V1__ContainerMetadata meta;
        Runtime__V1__LinuxContainerConfig linux;
        Runtime__V1__LinuxContainerSecurityContext sc;
        Runtime__V1__LinuxContainerResources res;
        struct rm_spec_image img;
        struct rm_spec_pod pod;
        struct rm_spec_host host;
        char *rootfs;
};

static char *img_env[] = {"PATH=/img/bin", "LANG=C", "MODE=image"};
static char *img_cmd[] = {"/bin/server", "--port=80"};

static void fixture_init(struct fixture *f, const char *name)
{
        memset(f, 0, sizeof(*f));
        runtime__v1__container_config__init(&f->cfg);
        runtime__v1__container_metadata__init(&f->meta);
        runtime__v1__linux_container_config__init(&f->linux);
        runtime__v1__linux_container_security_context__init(&f->sc);
        runtime__v1__linux_container_resources__init(&f->res);
        f->meta.name = "web";
        f->cfg.metadata = &f->meta;
        f->cfg.linux = &f->linux;
        f->linux.security_context = &f->sc;
        f->linux.resources = &f->res;
        f->img.env = img_env;
        f->img.n_env = 3;
        f->img.cmd = img_cmd;
        f->img.n_cmd = 2;
        f->img.user = "app";
        f->img.working_dir = "/work/dir";
        f->pod.pod_id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        f->pod.hostname = "pod-host";
        f->pod.netns_path = "/run/remora/netns/p";
        f->pod.ipcns_path = "/run/remora/ipcns/p";
        f->pod.utsns_path = "/run/remora/utsns/p";
        f->pod.pid_mode = RUNTIME__V1__NAMESPACE_MODE__CONTAINER;
        f->pod.hosts_file = "/etc/hosts";
        f->pod.cgroup_parent = "/kubepods/pod1";
        f->host.oom_score_adj_min = -1000;
        f->rootfs = make_rootfs(name);
}

static struct json_object *get(struct json_object *o, const char *path)
{
        cleanup_free char *copy = xstrdup(path);
        char *save = NULL;
        for (char *k = strtok_r(copy, ".", &save); k && o; k = strtok_r(NULL, ".", &save)) {
                struct json_object *next = NULL;
                if (!json_object_object_get_ex(o, k, &next))
                        return NULL;
                o = next;
        }
        return o;
}

static struct json_object *find_ns(struct json_object *spec, const char *type)
{
        struct json_object *list = get(spec, "linux.namespaces");
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                struct json_object *ns = json_object_array_get_idx(list, i);
                if (strcmp(json_object_get_string(get(ns, "type")), type) == 0)
                        return ns;
        }
        return NULL;
}

static struct json_object *find_mount(struct json_object *spec, const char *dest, size_t *index)
{
        struct json_object *list = get(spec, "mounts");
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                struct json_object *m = json_object_array_get_idx(list, i);
                if (strcmp(json_object_get_string(get(m, "destination")), dest) == 0) {
                        if (index)
                                *index = i;
                        return m;
                }
        }
        return NULL;
}

static void test_build_typical(void **state)
{
        (void)state;
        struct fixture f;
        fixture_init(&f, "typical");
        Runtime__V1__KeyValue e1 = RUNTIME__V1__KEY_VALUE__INIT, e2 = RUNTIME__V1__KEY_VALUE__INIT;
        Runtime__V1__KeyValue *envs[] = {&e1, &e2};
        e1.key = "MODE";
        e1.value.data = (uint8_t *)"request";
        e1.value.len = 7;
        e2.key = "EMPTY";
        f.cfg.envs = envs;
        f.cfg.n_envs = 2;
        f.cfg.tty = true;
        f.res.cpu_shares = 512;
        f.res.cpu_quota = 50000;
        f.res.cpu_period = 100000;
        f.res.memory_limit_in_bytes = 64 << 20;
        f.res.oom_score_adj = -500;
        f.host.oom_score_adj_min = -100;
        Runtime__V1__SecurityProfile prof = RUNTIME__V1__SECURITY_PROFILE__INIT;
        f.sc.seccomp = &prof;
        f.sc.no_new_privs = true;
        char *masked[] = {"/proc/kcore"};
        f.sc.masked_paths = masked;
        f.sc.n_masked_paths = 1;

        struct rm_error *err = NULL;
        cleanup_json struct json_object *spec =
            rm_spec_build(f.pod.pod_id, &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err);
        if (spec == NULL)
                fail_msg("%s", err->msg);

        assert_string_equal(json_object_get_string(get(spec, "process.args")),
                            "[ \"\\/bin\\/server\", \"--port=80\" ]");
        struct json_object *env = get(spec, "process.env");
        assert_true(json_has(env, "PATH=/img/bin") && json_has(env, "LANG=C"));
        assert_true(json_has(env, "MODE=request") && !json_has(env, "MODE=image"));
        assert_true(json_has(env, "EMPTY=") && json_has(env, "HOME=/home/app"));
        assert_true(json_has(env, "HOSTNAME=pod-host"));
        assert_int_equal(json_object_get_int(get(spec, "process.user.uid")), 1000);
        assert_true(json_object_get_boolean(get(spec, "process.terminal")));
        assert_true(json_object_get_boolean(get(spec, "process.noNewPrivileges")));
        assert_int_equal(json_object_get_int(get(spec, "process.oomScoreAdj")), -100);
        assert_string_equal(json_object_get_string(get(spec, "process.cwd")), "/work/dir");
        cleanup_free char *cwd = xasprintf("%s/work/dir", f.rootfs);
        struct stat st;
        assert_int_equal(stat(cwd, &st), 0); /* created inside the rootfs */

        assert_string_equal(json_object_get_string(get(find_ns(spec, "network"), "path")),
                            "/run/remora/netns/p");
        assert_null(get(find_ns(spec, "pid"), "path"));
        assert_non_null(find_ns(spec, "mount"));
        assert_string_equal(json_object_get_string(get(spec, "linux.cgroupsPath")),
                            "/kubepods/pod1/0123456789abcdef0123456789abcdef0123456789abcdef"
                            "0123456789abcdef");
        assert_int_equal(json_object_get_int(get(spec, "linux.resources.cpu.shares")), 512);
        assert_int_equal(json_object_get_int64(get(spec, "linux.resources.memory.limit")),
                         64 << 20);
        assert_non_null(get(spec, "linux.seccomp"));
        /* The request's list replaces the default one; the list it left out gets the
         * defaults. */
        assert_int_equal(json_object_array_length(get(spec, "linux.maskedPaths")), 1);
        assert_true(json_has(get(spec, "linux.maskedPaths"), "/proc/kcore"));
        assert_true(json_has(get(spec, "linux.readonlyPaths"), "/proc/sys"));
        assert_true(json_has(get(spec, "linux.readonlyPaths"), "/proc/sysrq-trigger"));
        assert_int_equal(json_object_array_length(get(spec, "linux.readonlyPaths")), 5);
        assert_non_null(find_mount(spec, "/etc/hosts", NULL));
        assert_null(find_mount(spec, "/etc/resolv.conf", NULL)); /* the pod gave none */
        assert_string_equal(json_object_get_string(get(find_mount(spec, "/dev/shm", NULL), "type")),
                            "tmpfs");
        free(f.rootfs);
}

static void test_build_mounts(void **state)
{
        (void)state;
        struct fixture f;
        fixture_init(&f, "mounts");
        cleanup_free char *data = xasprintf("%s/hostdata", tmpdir);
        cleanup_free char *inner = xasprintf("%s/hostdata/inner", tmpdir);
        cleanup_free char *alias = xasprintf("%s/alias", tmpdir);
        assert_int_equal(rm_mkdir_p(inner, 0755, NULL), 0);
        assert_int_equal(symlink(data, alias), 0);
        Runtime__V1__Mount a = RUNTIME__V1__MOUNT__INIT, b = RUNTIME__V1__MOUNT__INIT;
        Runtime__V1__Mount *mounts[] = {&a, &b};
        a.container_path = "/data/inner"; /* listed first, mounted after its parent */
        a.host_path = inner;
        a.readonly = true;
        b.container_path = "/data";
        b.host_path = alias;
        f.cfg.mounts = mounts;
        f.cfg.n_mounts = 2;

        struct rm_error *err = NULL;
        cleanup_json struct json_object *spec =
            rm_spec_build("c1", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err);
        if (spec == NULL)
                fail_msg("%s", err->msg);
        size_t ia = 0, ib = 0;
        struct json_object *ma = find_mount(spec, "/data/inner", &ia);
        struct json_object *mb = find_mount(spec, "/data", &ib);
        assert_true(ma && mb && ib < ia);
        assert_string_equal(json_object_get_string(get(mb, "source")), data); /* resolved */
        assert_true(json_has(get(ma, "options"), "ro"));
        assert_true(json_has(get(mb, "options"), "rprivate"));
        assert_string_equal(json_object_get_string(get(spec, "linux.cgroupsPath")),
                            "/kubepods/pod1/c1");
        const struct {
                const char *parent;
                const char *want;
        } parents[] = {{"/", "/c1"}, {"kubepods/", "/kubepods/c1"}, {"", "/remora/c1"}};
        for (size_t i = 0; i < 3; i++) {
                f.pod.cgroup_parent = parents[i].parent;
                cleanup_json struct json_object *s =
                    rm_spec_build("c1", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err);
                assert_string_equal(json_object_get_string(get(s, "linux.cgroupsPath")),
                                    parents[i].want);
        }

        cleanup_free char *missing = xasprintf("%s/no-such-dir", tmpdir);
        b.host_path = missing;
        assert_null(rm_spec_build("c1", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err));
        expect_invalid(&err, "no-such-dir does not exist");
        b.host_path = data;
        b.container_path = "data";
        assert_null(rm_spec_build("c1", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err));
        expect_invalid(&err, "container_path \"data\" must be an absolute path");
        b.container_path = "/data";
        b.propagation = RUNTIME__V1__MOUNT_PROPAGATION__PROPAGATION_BIDIRECTIONAL;
        assert_null(rm_spec_build("c1", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err));
        expect_invalid(&err, "bidirectional propagation needs a privileged container");
        free(f.rootfs);
}

static void test_build_rejects_bad_fields(void **state)
{
        (void)state;
        struct fixture f;
        fixture_init(&f, "bad");
        struct rm_error *err = NULL;

        f.sc.privileged = true;
        assert_null(rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err));
        expect_invalid(&err, "the pod is not privileged");
        f.pod.privileged = true;
        cleanup_json struct json_object *priv =
            rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err);
        assert_non_null(priv);
        assert_null(get(priv, "linux.seccomp"));
        assert_null(get(priv, "linux.maskedPaths"));
        assert_null(get(priv, "linux.readonlyPaths"));
        f.sc.privileged = false;
        /* A client that sends no lists gets containerd's. */
        cleanup_json struct json_object *dflt =
            rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err);
        assert_non_null(dflt);
        assert_int_equal(json_object_array_length(get(dflt, "linux.maskedPaths")), 11);
        assert_true(json_has(get(dflt, "linux.maskedPaths"), "/proc/kcore"));
        assert_true(json_has(get(dflt, "linux.maskedPaths"), "/sys/firmware"));
        assert_int_equal(json_object_array_length(get(dflt, "linux.readonlyPaths")), 5);
        assert_true(json_has(get(dflt, "linux.readonlyPaths"), "/proc/sys"));

        f.res.cpu_shares = 1;
        assert_null(rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err));
        expect_invalid(&err, "resources.cpu_shares must be between 2 and 262144");
        f.res.cpu_shares = 0;
        f.res.cpuset_cpus = "0-";
        assert_null(rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err));
        expect_invalid(&err, "cpuset_cpus \"0-\"");
        f.res.cpuset_cpus = "0-1,3";
        f.res.memory_limit_in_bytes = -5;
        assert_null(rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err));
        expect_invalid(&err, "memory_limit_in_bytes must not be negative");
        f.res.memory_limit_in_bytes = 0;
        f.res.oom_score_adj = 1001;
        assert_null(rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err));
        expect_invalid(&err, "oom_score_adj must be between -1000 and 1000");
        f.res.oom_score_adj = 0;

        Runtime__V1__LinuxContainerResources__UnifiedEntry u =
            RUNTIME__V1__LINUX_CONTAINER_RESOURCES__UNIFIED_ENTRY__INIT;
        Runtime__V1__LinuxContainerResources__UnifiedEntry *us[] = {&u};
        u.key = "memory.high";
        u.value = "1000000";
        f.res.unified = us;
        f.res.n_unified = 1;
        f.host.cgroup_v2 = false;
        assert_null(rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err));
        expect_invalid(&err, "resources.unified needs cgroup v2");
        f.host.cgroup_v2 = true;
        u.key = "../memory.high";
        assert_null(rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err));
        expect_invalid(&err, "unified key \"../memory.high\"");
        u.key = "memory.high";
        cleanup_json struct json_object *v2 =
            rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err);
        struct json_object *high = NULL;
        assert_true(
            json_object_object_get_ex(get(v2, "linux.resources.unified"), "memory.high", &high));
        assert_string_equal(json_object_get_string(high), "1000000");
        f.res.n_unified = 0;
        f.host.cgroup_v2 = false;

        f.cfg.working_dir = "relative/dir";
        assert_null(rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err));
        expect_invalid(&err, "working_dir \"relative/dir\" must be an absolute path");
        f.cfg.working_dir = NULL;

        Runtime__V1__KeyValue bad = RUNTIME__V1__KEY_VALUE__INIT;
        Runtime__V1__KeyValue *envs[] = {&bad};
        bad.key = "A=B";
        f.cfg.envs = envs;
        f.cfg.n_envs = 1;
        assert_null(rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err));
        expect_invalid(&err, "envs[0].key \"A=B\"");
        f.cfg.n_envs = 0;

        Runtime__V1__Device dev = RUNTIME__V1__DEVICE__INIT;
        Runtime__V1__Device *devs[] = {&dev};
        dev.container_path = "/dev/mynull";
        dev.host_path = "/dev/null";
        dev.permissions = "rwx";
        f.cfg.devices = devs;
        f.cfg.n_devices = 1;
        assert_null(rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err));
        expect_invalid(&err, "devices[0].permissions \"rwx\"");
        dev.permissions = "rw";
        dev.host_path = "/etc/hostname";
        assert_null(rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err));
        expect_invalid(&err, "is not a device node");
        dev.host_path = "/dev/null";
        cleanup_json struct json_object *spec =
            rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err);
        assert_non_null(spec);
        struct json_object *d0 = json_object_array_get_idx(get(spec, "linux.devices"), 0);
        assert_string_equal(json_object_get_string(get(d0, "path")), "/dev/mynull");
        assert_int_equal(json_object_get_int(get(d0, "major")), 1);
        assert_int_equal(json_object_get_int(get(d0, "minor")), 3);
        f.cfg.n_devices = 0;

        f.pod.pid_mode = RUNTIME__V1__NAMESPACE_MODE__POD;
        assert_null(rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err));
        assert_int_equal(err->code, RM_FAILED_PRECONDITION);
        rm_error_free(err);
        err = NULL;
        f.pod.pidns_path = "/proc/1/ns/pid";
        cleanup_json struct json_object *shared =
            rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, f.rootfs, &err);
        assert_string_equal(json_object_get_string(get(find_ns(shared, "pid"), "path")),
                            "/proc/1/ns/pid");
        free(f.rootfs);
}

/* ---- request fingerprints ---- */

static void test_canonical_hash_ignores_map_order(void **state)
{
        (void)state;
        Runtime__V1__ContainerConfig a = RUNTIME__V1__CONTAINER_CONFIG__INIT;
        Runtime__V1__ContainerConfig b = RUNTIME__V1__CONTAINER_CONFIG__INIT;
        Runtime__V1__ContainerConfig__LabelsEntry l1 =
            RUNTIME__V1__CONTAINER_CONFIG__LABELS_ENTRY__INIT;
        Runtime__V1__ContainerConfig__LabelsEntry l2 =
            RUNTIME__V1__CONTAINER_CONFIG__LABELS_ENTRY__INIT;
        l1.key = "app";
        l1.value = "web";
        l2.key = "tier";
        l2.value = "front";
        Runtime__V1__ContainerConfig__LabelsEntry *ab[] = {&l1, &l2};
        Runtime__V1__ContainerConfig__LabelsEntry *ba[] = {&l2, &l1};
        a.labels = ab;
        a.n_labels = 2;
        b.labels = ba;
        b.n_labels = 2;
        uint64_t ha = rm_pb_canonical_hash(&a.base), hb = rm_pb_canonical_hash(&b.base);
        assert_true(ha == hb);
        l2.value = "back";
        assert_true(rm_pb_canonical_hash(&a.base) != ha);
}

/* ---- cgroups ---- */

static void test_cgroup_stats_v2_layout(void **state)
{
        (void)state;
        cleanup_free char *root = xasprintf("%s/cg2", tmpdir);
        cleanup_free char *dir = xasprintf("%s/pod/c1", root);
        write_file(dir, "cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n");
        write_file(dir, "memory.current", "1000\n");
        write_file(dir, "memory.stat",
                   "anon 600\nfile 400\ninactive_file 300\npgfault 5\n"
                   "pgmajfault 1\n");
        write_file(dir, "memory.max", "max\n");
        write_file(dir, "pids.current", "3\n");
        struct rm_cgroup_host h = {.mode = RM_CGROUP_V2};
        snprintf(h.root, sizeof(h.root), "%s", root);
        struct rm_cgroup_stats s;
        struct rm_error *err = NULL;
        assert_int_equal(rm_cgroup_stats(&h, "/pod/c1", &s, &err), 0);
        assert_true(s.has_cpu && s.has_memory);
        assert_int_equal(s.cpu_usage_ns, 1500000);
        assert_int_equal(s.memory_usage, 1000);
        assert_int_equal(s.memory_working_set, 700);
        assert_int_equal(s.memory_rss, 600);
        assert_int_equal(s.page_faults, 5);
        assert_int_equal(s.major_page_faults, 1);
        assert_int_equal(s.memory_limit, 0);
        assert_int_equal(s.pids, 3);
        assert_int_equal(rm_cgroup_stats(&h, "/pod/../../etc", &s, &err), -1);
        expect_invalid(&err, "is not valid");
        assert_int_equal(rm_cgroup_stats(&h, "/pod/none", &s, &err), -1);
        assert_int_equal(err->code, RM_NOT_FOUND);
        rm_error_free(err);
}

static void test_cgroup_stats_v1_layout(void **state)
{
        (void)state;
        cleanup_free char *cpu = xasprintf("%s/cg1/cpuacct", tmpdir);
        cleanup_free char *mem = xasprintf("%s/cg1/memory", tmpdir);
        cleanup_free char *cdir = xasprintf("%s/k/c", cpu);
        cleanup_free char *mdir = xasprintf("%s/k/c", mem);
        write_file(cdir, "cpuacct.usage", "123456789\n");
        write_file(mdir, "memory.usage_in_bytes", "5000\n");
        write_file(mdir, "memory.stat",
                   "rss 10\ninactive_file 1\ntotal_rss 4000\n"
                   "total_inactive_file 1000\ntotal_pgfault 9\n"
                   "total_pgmajfault 2\n");
        write_file(mdir, "memory.limit_in_bytes", "9223372036854771712\n");
        struct rm_cgroup_host h = {.mode = RM_CGROUP_V1};
        snprintf(h.cpuacct, sizeof(h.cpuacct), "%s", cpu);
        snprintf(h.memory, sizeof(h.memory), "%s", mem);
        struct rm_cgroup_stats s;
        struct rm_error *err = NULL;
        assert_int_equal(rm_cgroup_stats(&h, "/k/c", &s, &err), 0);
        assert_int_equal(s.cpu_usage_ns, 123456789);
        assert_int_equal(s.memory_working_set, 4000);
        assert_int_equal(s.memory_rss, 4000);
        assert_int_equal(s.page_faults, 9);
        assert_int_equal(s.memory_limit, 0); /* the kernel's "unlimited" */
        write_file(mdir, "memory.limit_in_bytes", "67108864\n");
        assert_int_equal(rm_cgroup_stats(&h, "/k/c", &s, &err), 0);
        assert_int_equal(s.memory_limit, 67108864);
}

/* On the machine running the tests: the detected layout agrees with the filesystem. */
static void test_cgroup_detect_this_host(void **state)
{
        (void)state;
        struct rm_cgroup_host h;
        struct rm_error *err = NULL;
        assert_int_equal(rm_cgroup_detect(&h, &err), 0);
        bool pure_v2 = access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0;
        assert_int_equal(h.mode, pure_v2 ? RM_CGROUP_V2 : RM_CGROUP_V1);
        if (!pure_v2) {
                assert_true(h.memory[0] != '\0');
                cleanup_free char *usage = xasprintf("%s/memory.usage_in_bytes", h.memory);
                assert_int_equal(access(usage, F_OK), 0);
        }
        cleanup_free char *before = rm_read_file("/proc/self/oom_score_adj", 64, NULL, NULL);
        struct rm_spec_host sh;
        rm_spec_host_detect(&h, &sh);
        assert_int_equal(sh.cgroup_v2, pure_v2);
        cleanup_free char *after = rm_read_file("/proc/self/oom_score_adj", 64, NULL, NULL);
        assert_string_equal(before, after); /* the probe puts the value back */
        assert_true(sh.oom_score_adj_min == -1000 || sh.oom_score_adj_min == atoi(before));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_process_args),
            cmocka_unit_test(test_user_from_image),
            cmocka_unit_test(test_user_from_request),
            cmocka_unit_test(test_user_db_symlink_stays_inside),
            cmocka_unit_test(test_rootfs_mkdir),
            cmocka_unit_test(test_capabilities),
            cmocka_unit_test(test_seccomp_default_and_unconfined),
            cmocka_unit_test(test_seccomp_localhost),
            cmocka_unit_test(test_build_typical),
            cmocka_unit_test(test_build_mounts),
            cmocka_unit_test(test_build_rejects_bad_fields),
            cmocka_unit_test(test_canonical_hash_ignores_map_order),
            cmocka_unit_test(test_cgroup_stats_v2_layout),
            cmocka_unit_test(test_cgroup_stats_v1_layout),
            cmocka_unit_test(test_cgroup_detect_this_host),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
