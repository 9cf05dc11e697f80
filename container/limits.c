/* Bounds on what a CreateContainer or UpdateContainerResources request puts into the
 * container's record. The record is JSON, and JSON-escaping turns a control character into
 * six bytes ("\u0001"), so without bounds a client could write a record the store refuses
 * to read back (RECORD_MAX_BYTES, 16 MiB, in store/store.c) and the container would be
 * forgotten at the next start while its processes run on.
 *
 * The arithmetic, worst case for one record (every byte a control character):
 *   labels + annotations   128 KiB x 6                 =   768 KiB
 *   mount paths             64 KiB x 6                 =   384 KiB
 *   resources.unified       64 KiB x 6                 =   384 KiB
 *   log_path, image, cpusets 4 x 4 KiB x 6             =    96 KiB
 *   hugepage limits         64 x ~80 B                 =     5 KiB
 * about 1.6 MiB, a tenth of the store's read limit. The labels + annotations bound is the
 * pod's too (sandbox/podconfig.c), chosen for ListPodSandbox: see there. */
#include <string.h>

#include "manager_internal.h"
#include "remora/cleanup.h"
#include "remora/xalloc.h"

#define META_MAX_BYTES        (128 * 1024)
#define META_MAX_ENTRIES      1024
#define STRING_MAX_BYTES      4096
#define MOUNTS_MAX            256
#define MOUNT_PATHS_MAX_BYTES (64 * 1024)
#define UNIFIED_MAX_ENTRIES   256
#define UNIFIED_MAX_BYTES     (64 * 1024)
#define HUGEPAGES_MAX         64

static size_t len0(const char *s)
{
        return s ? strlen(s) : 0;
}

static int check_string(const char *s, const char *field, struct rm_error **err)
{
        size_t n = len0(s);
        if (n > STRING_MAX_BYTES)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "%s is %zu bytes long; at most %d",
                                    field, n, STRING_MAX_BYTES);
        return 0;
}

int rm__ctr_resources_limits(const Runtime__V1__LinuxContainerResources *r, const char *field,
                             struct rm_error **err)
{
        if (r == NULL)
                return 0;
        cleanup_free char *cpus = xasprintf("%s.cpuset_cpus", field);
        cleanup_free char *mems = xasprintf("%s.cpuset_mems", field);
        if (check_string(r->cpuset_cpus, cpus, err) < 0 ||
            check_string(r->cpuset_mems, mems, err) < 0)
                return -1;
        if (r->n_hugepage_limits > HUGEPAGES_MAX)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "%s.hugepage_limits has %zu entries; at most %d", field,
                                    r->n_hugepage_limits, HUGEPAGES_MAX);
        for (size_t i = 0; i < r->n_hugepage_limits; i++) {
                if (len0(r->hugepage_limits[i]->page_size) > 32)
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "%s.hugepage_limits[%zu].page_size is not a page size",
                                            field, i);
        }
        size_t bytes = 0;
        for (size_t i = 0; i < r->n_unified; i++)
                bytes += len0(r->unified[i]->key) + len0(r->unified[i]->value);
        if (r->n_unified > UNIFIED_MAX_ENTRIES || bytes > UNIFIED_MAX_BYTES)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "%s.unified has %zu entries of %zu bytes; at most %d entries "
                                    "of %d bytes",
                                    field, r->n_unified, bytes, UNIFIED_MAX_ENTRIES,
                                    UNIFIED_MAX_BYTES);
        return 0;
}

int rm__ctr_config_limits(const Runtime__V1__ContainerConfig *cfg, struct rm_error **err)
{
        size_t bytes = 0;
        for (size_t i = 0; i < cfg->n_labels; i++)
                bytes += len0(cfg->labels[i]->key) + len0(cfg->labels[i]->value);
        for (size_t i = 0; i < cfg->n_annotations; i++)
                bytes += len0(cfg->annotations[i]->key) + len0(cfg->annotations[i]->value);
        size_t entries = cfg->n_labels + cfg->n_annotations;
        if (bytes > META_MAX_BYTES || entries > META_MAX_ENTRIES)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.labels and config.annotations hold %zu entries of %zu "
                                    "bytes (keys and values); a container may have at most %d "
                                    "entries of %d bytes",
                                    entries, bytes, META_MAX_ENTRIES, META_MAX_BYTES);
        if (check_string(cfg->log_path, "config.log_path", err) < 0 ||
            check_string(cfg->image ? cfg->image->image : NULL, "config.image.image", err) < 0)
                return -1;
        bytes = 0;
        for (size_t i = 0; i < cfg->n_mounts; i++)
                bytes += len0(cfg->mounts[i]->container_path) + len0(cfg->mounts[i]->host_path);
        if (cfg->n_mounts > MOUNTS_MAX || bytes > MOUNT_PATHS_MAX_BYTES)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "config.mounts has %zu mounts with %zu bytes of paths; at most "
                                    "%d mounts with %d bytes",
                                    cfg->n_mounts, bytes, MOUNTS_MAX, MOUNT_PATHS_MAX_BYTES);
        return rm__ctr_resources_limits(cfg->linux ? cfg->linux->resources : NULL,
                                        "config.linux.resources", err);
}
