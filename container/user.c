/* Who a container runs as. Names come from the image's own /etc/passwd and /etc/group,
 * read inside its rootfs: the host's user database means nothing to an image. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "remora/cleanup.h"
#include "remora/spec.h"
#include "remora/xalloc.h"
#include "rootfs.h"

/* Kubernetes and the kernel's user namespaces agree on this range. */
#define MAX_ID 2147483647LL

/* The image's user database files are small; anything larger is not one. */
#define DB_MAX_LINE 4096

void rm_spec_user_release(struct rm_spec_user *u)
{
        free(u->groups);
        free(u->home);
        memset(u, 0, sizeof(*u));
}

static int check_id(int64_t id, const char *field, struct rm_error **err)
{
        if (id < 0 || id > MAX_ID)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "%s %lld is outside 0..2147483647",
                                    field, (long long)id);
        return 0;
}

/* A decimal ID, or -1 when s is not all digits. */
static int64_t parse_id(const char *s)
{
        if (*s == '\0' || strspn(s, "0123456789") != strlen(s) || strlen(s) > 10)
                return -1;
        return strtoll(s, NULL, 10);
}

/* Open one of the image's database files; NULL without error when the image has none. */
static FILE *open_db(const char *rootfs, const char *path, struct rm_error **err)
{
        struct rm_error *why = NULL;
        int fd = rm__rootfs_open(rootfs, path, O_RDONLY, &why);
        if (fd < 0) {
                if (why->errnum == ENOENT || why->errnum == ENOTDIR) {
                        rm_error_free(why);
                        return NULL;
                }
                *err = why;
                return NULL;
        }
        FILE *f = fdopen(fd, "r");
        if (f == NULL) {
                close(fd);
                rm_error_sys(err, "read %s in the container rootfs", path);
        }
        return f;
}

/* Split a colon-separated database line into at most n fields, in place. */
static size_t split_fields(char *line, char **fields, size_t n)
{
        line[strcspn(line, "\n")] = '\0';
        size_t i = 0;
        fields[i++] = line;
        for (char *p = line; *p && i < n; p++) {
                if (*p == ':') {
                        *p = '\0';
                        fields[i++] = p + 1;
                }
        }
        return i;
}

struct passwd_entry {
        bool found;
        char *name;
        int64_t uid;
        int64_t gid;
        char *home;
};

/* Find a user by name (when name is set) or by uid in the image's /etc/passwd. */
static int find_passwd(const char *rootfs, const char *name, int64_t uid, struct passwd_entry *out,
                       struct rm_error **err)
{
        struct rm_error *open_err = NULL;
        cleanup_file FILE *f = open_db(rootfs, "/etc/passwd", &open_err);
        if (f == NULL) {
                if (open_err) {
                        *err = open_err;
                        return -1;
                }
                return 0;
        }
        char line[DB_MAX_LINE];
        while (fgets(line, sizeof(line), f)) {
                char *fld[7];
                if (line[0] == '#' || split_fields(line, fld, 7) < 7)
                        continue;
                int64_t id = parse_id(fld[2]), gid = parse_id(fld[3]);
                if (id < 0 || gid < 0)
                        continue;
                if (name ? strcmp(fld[0], name) == 0 : id == uid) {
                        out->found = true;
                        out->name = xstrdup(fld[0]);
                        out->uid = id;
                        out->gid = gid;
                        out->home = xstrdup(fld[5]);
                        return 0;
                }
        }
        return 0;
}

/* A growing list of gids (capacity doubles: appends are amortized O(1)). */
struct gid_list {
        uint32_t *v;
        size_t n, cap;
};

static void gid_list_push(struct gid_list *l, uint32_t gid)
{
        if (l->n == l->cap) {
                l->cap = l->cap ? l->cap * 2 : 16;
                l->v = xrealloc(l->v, sizeof(*l->v) * l->cap);
        }
        l->v[l->n++] = gid;
}

/* Look a group up by name in the image's /etc/group; -1 when absent. With member set,
 * also collect the gids of every group listing member. */
static int scan_groups(const char *rootfs, const char *group_name, int64_t *gid_out,
                       const char *member, struct gid_list *groups, struct rm_error **err)
{
        struct rm_error *open_err = NULL;
        cleanup_file FILE *f = open_db(rootfs, "/etc/group", &open_err);
        if (f == NULL) {
                if (open_err) {
                        *err = open_err;
                        return -1;
                }
                return 0;
        }
        char line[DB_MAX_LINE];
        while (fgets(line, sizeof(line), f)) {
                char *fld[4];
                if (line[0] == '#' || split_fields(line, fld, 4) < 4)
                        continue;
                int64_t gid = parse_id(fld[2]);
                if (gid < 0)
                        continue;
                if (group_name && *gid_out < 0 && strcmp(fld[0], group_name) == 0)
                        *gid_out = gid;
                if (member == NULL)
                        continue;
                char *save = NULL;
                for (char *m = strtok_r(fld[3], ",", &save); m; m = strtok_r(NULL, ",", &save)) {
                        if (strcmp(m, member) == 0) {
                                gid_list_push(groups, (uint32_t)gid);
                                break;
                        }
                }
        }
        return 0;
}

struct gid_slot {
        uint32_t gid;
        size_t pos;
};

static int by_gid_then_pos(const void *a, const void *b)
{
        const struct gid_slot *x = a, *y = b;
        if (x->gid != y->gid)
                return x->gid < y->gid ? -1 : 1;
        return x->pos < y->pos ? -1 : (x->pos > y->pos);
}

/* Drop every repeat of a gid, keeping the first of each in place: a sort of (gid,
 * position) pairs finds them in O(n log n), so a client's long list costs no quadratic
 * scan. */
static void gid_list_dedupe(struct gid_list *l)
{
        if (l->n < 2)
                return;
        cleanup_free struct gid_slot *slots = xmalloc(sizeof(*slots) * l->n);
        for (size_t i = 0; i < l->n; i++)
                slots[i] = (struct gid_slot){l->v[i], i};
        qsort(slots, l->n, sizeof(*slots), by_gid_then_pos);
        cleanup_free bool *dup = xzalloc(sizeof(*dup) * l->n);
        for (size_t i = 1; i < l->n; i++)
                dup[slots[i].pos] = slots[i].gid == slots[i - 1].gid;
        size_t out = 0;
        for (size_t i = 0; i < l->n; i++) {
                if (!dup[i])
                        l->v[out++] = l->v[i];
        }
        l->n = out;
}

int rm_spec_resolve_user(const Runtime__V1__LinuxContainerSecurityContext *sc,
                         const char *image_user, const char *rootfs, struct rm_spec_user *out,
                         struct rm_error **err)
{
        memset(out, 0, sizeof(*out));
        cleanup_free char *user_part = NULL;
        cleanup_free char *group_part = NULL;
        const char *source = "the image's USER";
        int64_t uid = -1, gid = -1;

        if (sc && sc->run_as_user) {
                if (check_id(sc->run_as_user->value, "run_as_user", err) < 0)
                        return -1;
                uid = sc->run_as_user->value;
                source = "run_as_user";
        } else if (sc && sc->run_as_username && *sc->run_as_username) {
                user_part = xstrdup(sc->run_as_username);
                source = "run_as_username";
        } else if (image_user && *image_user) {
                user_part = xstrdup(image_user);
                char *colon = strchr(user_part, ':');
                if (colon) {
                        *colon = '\0';
                        group_part = xstrdup(colon + 1);
                }
                if (*user_part == '\0')
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "the image's USER \"%s\" names no user", image_user);
        }
        if (sc && sc->run_as_group) {
                if (check_id(sc->run_as_group->value, "run_as_group", err) < 0)
                        return -1;
                if (uid < 0 && user_part == NULL)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "run_as_group needs run_as_user or run_as_username");
                gid = sc->run_as_group->value;
        }

        /* A numeric user part is a uid, whether or not the image's passwd knows it. */
        if (user_part) {
                int64_t n = parse_id(user_part);
                if (n >= 0) {
                        if (check_id(n, source, err) < 0)
                                return -1;
                        uid = n;
                        free(steal_pointer(&user_part));
                }
        }

        if (uid < 0 && user_part == NULL)
                uid = 0; /* neither the request nor the image names a user: root */

        struct passwd_entry pw = {0};
        if (find_passwd(rootfs, user_part, uid, &pw, err) < 0)
                return -1;
        cleanup_free char *pw_name = pw.name;
        if (user_part && !pw.found) {
                free(pw.home);
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "%s \"%s\": no such user in the image's /etc/passwd", source,
                                    user_part);
        }
        if (pw.found) {
                uid = pw.uid;
                if (gid < 0)
                        gid = pw.gid;
                out->home = pw.home;
        }
        if (group_part) {
                int64_t n = parse_id(group_part);
                if (n < 0) {
                        if (scan_groups(rootfs, group_part, &n, NULL, NULL, err) < 0)
                                goto fail;
                        if (n < 0) {
                                rm_error_set(err, RM_INVALID_ARGUMENT,
                                             "the image's USER group \"%s\": no such group in "
                                             "the image's /etc/group",
                                             group_part);
                                goto fail;
                        }
                }
                if (check_id(n, "the image's USER group", err) < 0)
                        goto fail;
                if (!(sc && sc->run_as_group))
                        gid = n;
        }
        if (gid < 0)
                gid = 0;
        if (check_id(uid, "uid", err) < 0 || check_id(gid, "gid", err) < 0)
                goto fail;
        out->uid = (uint32_t)uid;
        out->gid = (uint32_t)gid;

        /* Supplementary groups, as containerd and CRI-O set them: the primary gid first
         * (getgroups() in the container lists it), then the user's memberships in the
         * image (policy Merge, the default; Strict leaves them out), then the request's,
         * each gid once. */
        if (sc &&
            sc->supplemental_groups_policy != RUNTIME__V1__SUPPLEMENTAL_GROUPS_POLICY__Merge &&
            sc->supplemental_groups_policy != RUNTIME__V1__SUPPLEMENTAL_GROUPS_POLICY__Strict) {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "supplemental_groups_policy %d is neither Merge (0) nor Strict (1)",
                             (int)sc->supplemental_groups_policy);
                goto fail;
        }
        size_t n_req = sc ? sc->n_supplemental_groups : 0;
        if (n_req > NGROUPS_MAX) {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "supplemental_groups has %zu groups; the kernel allows at most %d",
                             n_req, NGROUPS_MAX);
                goto fail;
        }
        struct gid_list groups = {0};
        gid_list_push(&groups, out->gid);
        bool strict =
            sc && sc->supplemental_groups_policy == RUNTIME__V1__SUPPLEMENTAL_GROUPS_POLICY__Strict;
        if (pw_name && !strict) {
                int64_t unused = -1;
                if (scan_groups(rootfs, NULL, &unused, pw_name, &groups, err) < 0) {
                        free(groups.v);
                        goto fail;
                }
        }
        for (size_t i = 0; i < n_req; i++) {
                if (check_id(sc->supplemental_groups[i], "supplemental_groups", err) < 0) {
                        free(groups.v);
                        goto fail;
                }
                gid_list_push(&groups, (uint32_t)sc->supplemental_groups[i]);
        }
        gid_list_dedupe(&groups);
        if (groups.n > NGROUPS_MAX) {
                rm_error_set(err, RM_INVALID_ARGUMENT,
                             "supplemental_groups: with the primary group and the image's groups "
                             "for the user the container would have %zu groups; the kernel "
                             "allows at most %d",
                             groups.n, NGROUPS_MAX);
                free(groups.v);
                goto fail;
        }
        out->groups = groups.v;
        out->n_groups = groups.n;
        return 0;

fail:
        rm_spec_user_release(out);
        return -1;
}
