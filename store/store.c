#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "remora/cleanup.h"
#include "remora/fsutil.h"
#include "remora/log.h"
#include "remora/store.h"
#include "remora/xalloc.h"

/* A record is a small JSON document; anything larger is damage, not data. */
#define RECORD_MAX_BYTES (16 * 1024 * 1024)
#define NAME_MAX_BYTES   128
#define RECORD_SUFFIX    ".json"
#define TEMP_MARKER      ".tmp-"

struct rm_store {
        char *root;
};

bool rm_store_valid_name(const char *s)
{
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > NAME_MAX_BYTES || s[0] == '.')
                return false;
        for (const char *p = s; *p; p++) {
                char c = *p;
                bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
                if (!ok)
                        return false;
        }
        return true;
}

/* what is "kind" or "ID", for the message. */
static int check_name(const char *what, const char *value, struct rm_error **err)
{
        if (rm_store_valid_name(value))
                return 0;
        return rm_error_set(err, RM_INVALID_ARGUMENT,
                            "invalid record %s \"%s\": use 1-%d of [A-Za-z0-9_.-], not starting "
                            "with '.'",
                            what, value ? value : "", NAME_MAX_BYTES);
}

static int check_names(const char *kind, const char *id, struct rm_error **err)
{
        return check_name("kind", kind, err) < 0 ? -1 : check_name("ID", id, err);
}

static int fsync_dir(const char *dir, struct rm_error **err)
{
        cleanup_close int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return rm_error_sys(err, "open directory %s", dir);
        if (fsync(fd) < 0)
                return rm_error_sys(err, "fsync directory %s", dir);
        return 0;
}

/* A temp file of an interrupted put: ".<id>.json.tmp-XXXXXX". */
static bool is_temp_name(const char *name)
{
        return name[0] == '.' && strstr(name, RECORD_SUFFIX TEMP_MARKER) != NULL;
}

/* The ID of a record file "<id>.json", or NULL for anything else in the directory. */
static char *record_id(const char *name)
{
        size_t n = strlen(name), s = strlen(RECORD_SUFFIX);
        if (n <= s || strcmp(name + n - s, RECORD_SUFFIX) != 0)
                return NULL;
        char *id = xstrdup(name);
        id[n - s] = '\0';
        if (!rm_store_valid_name(id)) {
                free(id);
                return NULL;
        }
        return id;
}

static void sweep_temp_files(const char *kind_dir)
{
        cleanup_dir DIR *dir = opendir(kind_dir);
        if (dir == NULL)
                return;
        int removed = 0;
        struct dirent *de;
        while ((de = readdir(dir)) != NULL) {
                if (!is_temp_name(de->d_name))
                        continue;
                if (unlinkat(dirfd(dir), de->d_name, 0) == 0)
                        removed++;
                else
                        rm_log_warn("store: cannot remove leftover %s/%s: %s", kind_dir, de->d_name,
                                    strerror(errno));
        }
        if (removed)
                rm_log_info("store: removed %d unfinished write(s) in %s", removed, kind_dir);
}

struct rm_store *rm_store_open(const char *root, struct rm_error **err)
{
        if (rm_mkdir_p(root, 0700, err) < 0) {
                rm_error_wrap(err, "open store");
                return NULL;
        }
        cleanup_dir DIR *dir = opendir(root);
        if (dir == NULL) {
                rm_error_sys(err, "open store %s", root);
                return NULL;
        }
        struct dirent *de;
        while ((de = readdir(dir)) != NULL) {
                if (!rm_store_valid_name(de->d_name))
                        continue;
                cleanup_free char *kind_dir = xasprintf("%s/%s", root, de->d_name);
                struct stat st;
                if (lstat(kind_dir, &st) == 0 && S_ISDIR(st.st_mode))
                        sweep_temp_files(kind_dir);
        }
        struct rm_store *store = xzalloc(sizeof(*store));
        store->root = xstrdup(root);
        return store;
}

void rm_store_close(struct rm_store *store)
{
        if (store == NULL)
                return;
        free(store->root);
        free(store);
}

const char *rm_store_root(const struct rm_store *store)
{
        return store->root;
}

/* Create <root>/<kind> on first use; the root is fsync'd so the new entry survives. */
static int ensure_kind_dir(const struct rm_store *store, const char *kind_dir,
                           struct rm_error **err)
{
        if (mkdir(kind_dir, 0700) == 0)
                return fsync_dir(store->root, err);
        if (errno != EEXIST)
                return rm_error_sys(err, "create store directory %s", kind_dir);
        return 0;
}

/* write, fsync, rename, fsync(dir): after each step a crash leaves the old record or
 * the new one; the temp file is never mistaken for a record. */
static int write_durably(const char *kind_dir, const char *id, const char *text,
                         struct rm_error **err)
{
        cleanup_free char *final = xasprintf("%s/%s" RECORD_SUFFIX, kind_dir, id);
        cleanup_free char *temp =
            xasprintf("%s/.%s" RECORD_SUFFIX TEMP_MARKER "XXXXXX", kind_dir, id);
        cleanup_close int fd = mkostemp(temp, O_CLOEXEC);
        if (fd < 0)
                return rm_error_sys(err, "create %s", temp);

        const char *step = NULL;
        if (rm_write_all(fd, text, strlen(text)) < 0)
                step = "write";
        else if (fsync(fd) < 0)
                step = "fsync";
        else if (rename(temp, final) < 0)
                step = "rename";
        if (step) {
                int saved = errno;
                unlink(temp);
                return rm_error_sys_errno(err, saved, "%s %s (record %s)", step, temp, final);
        }
        return fsync_dir(kind_dir, err);
}

int rm_store_put(struct rm_store *store, const char *kind, const char *id, struct json_object *doc,
                 struct rm_error **err)
{
        if (check_names(kind, id, err) < 0)
                return -1;
        if (!json_object_is_type(doc, json_type_object))
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "store %s/%s: a record must be a JSON object", kind, id);
        cleanup_free char *kind_dir = xasprintf("%s/%s", store->root, kind);
        if (ensure_kind_dir(store, kind_dir, err) < 0)
                return -1;
        const char *text = json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN |
                                                                   JSON_C_TO_STRING_NOSLASHESCAPE);
        return write_durably(kind_dir, id, text, err);
}

/* Parse one record file; DATA_LOSS naming the file when it is not a JSON object. */
static struct json_object *load(const char *path, struct rm_error **err)
{
        size_t len = 0;
        cleanup_free char *text = rm_read_file(path, RECORD_MAX_BYTES, &len, err);
        if (text == NULL)
                return NULL;
        struct json_tokener *tok = json_tokener_new();
        struct json_object *doc = json_tokener_parse_ex(tok, text, (int)len + 1);
        enum json_tokener_error jerr = json_tokener_get_error(tok);
        size_t end = json_tokener_get_parse_end(tok);
        json_tokener_free(tok);
        const char *why = NULL;
        if (doc == NULL || jerr != json_tokener_success)
                why = json_tokener_error_desc(jerr);
        else if (!json_object_is_type(doc, json_type_object))
                why = "not a JSON object";
        else if (text[end + strspn(text + end, " \t\r\n")] != '\0')
                why = "unexpected data after the record";
        if (why) {
                json_object_put(doc);
                rm_error_set(err, RM_DATA_LOSS, "corrupt record %s: %s", path, why);
                return NULL;
        }
        return doc;
}

struct json_object *rm_store_get(struct rm_store *store, const char *kind, const char *id,
                                 struct rm_error **err)
{
        if (check_names(kind, id, err) < 0)
                return NULL;
        cleanup_free char *path = xasprintf("%s/%s/%s" RECORD_SUFFIX, store->root, kind, id);
        return load(path, err);
}

int rm_store_delete(struct rm_store *store, const char *kind, const char *id, struct rm_error **err)
{
        if (check_names(kind, id, err) < 0)
                return -1;
        cleanup_free char *kind_dir = xasprintf("%s/%s", store->root, kind);
        cleanup_free char *path = xasprintf("%s/%s" RECORD_SUFFIX, kind_dir, id);
        if (unlink(path) < 0) {
                if (errno == ENOENT)
                        return 0;
                return rm_error_sys(err, "remove record %s", path);
        }
        return fsync_dir(kind_dir, err);
}

/* A damaged record is renamed to <id>.json.corrupt-<unix time>: kept for the operator,
 * no longer read as a record (only *.json is), so its object falls to the orphan rules
 * and is never mistaken for what it described. The new path goes into bad's message. */
static void set_aside(const char *path, struct rm_error *bad)
{
        cleanup_free char *aside = xasprintf("%s.corrupt-%lld", path, (long long)time(NULL));
        if (rename(path, aside) < 0) {
                rm_log_warn("store: %s; could not move it aside to %s: %s", bad->msg, aside,
                            strerror(errno));
                return;
        }
        cleanup_free char *dir = xstrdup(path);
        *strrchr(dir, '/') = '\0';
        fsync_dir(dir, NULL);
        rm_log_warn("store: %s; moved it aside to %s", bad->msg, aside);
        cleanup_free char *msg = xasprintf("%s (moved aside to %s)", bad->msg, aside);
        free(bad->msg);
        bad->msg = steal_pointer(&msg);
}

void rm_store_set_aside(struct rm_store *store, const char *kind, const char *id, const char *why)
{
        if (check_names(kind, id, NULL) < 0)
                return;
        cleanup_free char *path = xasprintf("%s/%s/%s" RECORD_SUFFIX, store->root, kind, id);
        struct rm_error bad = {.code = RM_DATA_LOSS, .msg = xasprintf("record %s: %s", path, why)};
        set_aside(path, &bad);
        free(bad.msg);
}

int rm_store_list(struct rm_store *store, const char *kind, rm_store_visit_fn visit, void *data,
                  struct rm_error **err)
{
        if (check_name("kind", kind, err) < 0)
                return -1;
        cleanup_free char *kind_dir = xasprintf("%s/%s", store->root, kind);
        cleanup_dir DIR *dir = opendir(kind_dir);
        if (dir == NULL) {
                if (errno == ENOENT)
                        return 0;
                rm_error_sys(err, "list store directory %s", kind_dir);
                return -1;
        }
        int visited = 0;
        struct dirent *de;
        while ((de = readdir(dir)) != NULL) {
                cleanup_free char *id = record_id(de->d_name);
                if (id == NULL)
                        continue;
                cleanup_free char *path = xasprintf("%s/%s", kind_dir, de->d_name);
                cleanup_error struct rm_error *bad = NULL;
                cleanup_json struct json_object *doc = load(path, &bad);
                if (doc == NULL && bad->code == RM_NOT_FOUND)
                        continue; /* deleted while we listed */
                if (doc == NULL)
                        set_aside(path, bad);
                visited++;
                if (visit(id, doc, bad, data, err) < 0)
                        return -1;
        }
        return visited;
}
