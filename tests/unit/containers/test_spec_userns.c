/* The spec of a container in its pod's user namespace: the namespace joined by path
 * with its mappings beside it (runc 1.1 needs both), and what such a container may not
 * be. */
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

static char *rootfs;

static int setup(void **state)
{
        (void)state;
        char tmpl[] = "/tmp/remora-unit-userns-XXXXXX";
        assert_non_null(mkdtemp(tmpl));
        rootfs = xstrdup(tmpl);
        cleanup_free char *etc = xasprintf("%s/etc", rootfs);
        assert_int_equal(rm_mkdir_p(etc, 0755, NULL), 0);
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        cleanup_free char *cmd = xasprintf("rm -rf '%s'", rootfs);
        assert_int_equal(system(cmd), 0);
        free(rootfs);
        return 0;
}

struct fixture {
        Runtime__V1__ContainerConfig cfg;
        Runtime__V1__ContainerMetadata meta;
        Runtime__V1__LinuxContainerConfig lc;
        Runtime__V1__LinuxContainerSecurityContext sc;
        struct rm_spec_image img;
        struct rm_spec_userns userns;
        struct rm_spec_pod pod;
        struct rm_spec_host host;
        char *cmd[1];
};

static void fixture_init(struct fixture *f)
{
        memset(f, 0, sizeof(*f));
        runtime__v1__container_config__init(&f->cfg);
        runtime__v1__container_metadata__init(&f->meta);
        runtime__v1__linux_container_config__init(&f->lc);
        runtime__v1__linux_container_security_context__init(&f->sc);
        f->meta.name = "c";
        f->cfg.metadata = &f->meta;
        f->cmd[0] = "/bin/true";
        f->cfg.command = f->cmd;
        f->cfg.n_command = 1;
        f->lc.security_context = &f->sc;
        f->cfg.linux = &f->lc;
        f->userns = (struct rm_spec_userns){"/run/remora/userns/p", 196608, 65536, 262144, 65536};
        f->pod.pod_id = "p";
        f->pod.netns_path = "/run/remora/netns/p";
        f->pod.userns = &f->userns;
        f->pod.pid_mode = RUNTIME__V1__NAMESPACE_MODE__CONTAINER;
        f->host.cgroup_v2 = true;
}

static struct json_object *get(struct json_object *o, const char *key)
{
        struct json_object *v = NULL;
        return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static void test_joins_the_pod_namespace_with_its_mappings(void **state)
{
        (void)state;
        struct fixture f;
        fixture_init(&f);
        struct rm_error *err = NULL;
        cleanup_json struct json_object *spec =
            rm_spec_build("c1", &f.cfg, &f.img, &f.pod, &f.host, rootfs, &err);
        if (spec == NULL)
                fail_msg("%s", err->msg);
        struct json_object *linux = get(spec, "linux");
        struct json_object *first = json_object_array_get_idx(get(linux, "namespaces"), 0);
        assert_string_equal(json_object_get_string(get(first, "type")), "user");
        assert_string_equal(json_object_get_string(get(first, "path")), "/run/remora/userns/p");
        struct json_object *u = json_object_array_get_idx(get(linux, "uidMappings"), 0);
        struct json_object *g = json_object_array_get_idx(get(linux, "gidMappings"), 0);
        assert_int_equal(json_object_get_int64(get(u, "containerID")), 0);
        assert_int_equal(json_object_get_int64(get(u, "hostID")), 196608);
        assert_int_equal(json_object_get_int64(get(u, "size")), 65536);
        assert_int_equal(json_object_get_int64(get(g, "hostID")), 262144);

        /* Without one, nothing of the kind. */
        f.pod.userns = NULL;
        cleanup_json struct json_object *host =
            rm_spec_build("c2", &f.cfg, &f.img, &f.pod, &f.host, rootfs, &err);
        assert_non_null(host);
        assert_null(get(get(host, "linux"), "uidMappings"));
}

static void test_refused_combinations(void **state)
{
        (void)state;
        struct fixture f;
        fixture_init(&f);
        f.pod.privileged = true;
        f.sc.privileged = true;
        struct rm_error *err = NULL;
        assert_null(rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, rootfs, &err));
        assert_int_equal(err->code, RM_INVALID_ARGUMENT);
        assert_non_null(strstr(err->msg, "security_context.privileged"));
        rm_error_free(err);
        err = NULL;
        fixture_init(&f);
        f.pod.pid_mode = RUNTIME__V1__NAMESPACE_MODE__NODE;
        assert_null(rm_spec_build("c", &f.cfg, &f.img, &f.pod, &f.host, rootfs, &err));
        assert_int_equal(err->code, RM_INVALID_ARGUMENT);
        assert_non_null(strstr(err->msg, "namespace_options.pid NODE"));
        rm_error_free(err);
}

/* A rootfs whose root belongs to a user namespace's root: directories made in it go to
 * that root too; a host root-owned rootfs is left as it was. */
static void test_mkdir_gives_new_dirs_to_the_rootfs_owner(void **state)
{
        (void)state;
        cleanup_free char *mapped = xasprintf("%s/mapped", rootfs);
        assert_int_equal(mkdir(mapped, 0755), 0);
        assert_int_equal(chown(mapped, 196608, 196609), 0);
        assert_int_equal(rm_rootfs_mkdir(mapped, "/work/dir", 0755, NULL), 0);
        cleanup_free char *made = xasprintf("%s/work/dir", mapped);
        struct stat st;
        assert_int_equal(stat(made, &st), 0);
        assert_int_equal(st.st_uid, 196608);
        assert_int_equal(st.st_gid, 196609);
        assert_int_equal(rm_rootfs_mkdir(rootfs, "/plain/dir", 0755, NULL), 0);
        cleanup_free char *plain = xasprintf("%s/plain/dir", rootfs);
        assert_int_equal(stat(plain, &st), 0);
        assert_int_equal(st.st_uid, getuid());
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_joins_the_pod_namespace_with_its_mappings),
            cmocka_unit_test(test_refused_combinations),
            cmocka_unit_test(test_mkdir_gives_new_dirs_to_the_rootfs_owner),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
