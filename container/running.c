/* Calls on a live container: ExecSync, UpdateContainerResources, ReopenContainerLog. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "manager_internal.h"
#include "remora/cancel.h"
#include "remora/cleanup.h"
#include "remora/log.h"
#include "remora/xalloc.h"
#include "spec_internal.h"

int rm_containers_exec_sync(struct rm_container_manager *mgr,
                            const Runtime__V1__ExecSyncRequest *req, const struct rm_cancel *cancel,
                            struct rm_ctr_exec_result *res, struct rm_error **err)
{
        if (req->n_cmd == 0 || req->cmd[0] == NULL || *req->cmd[0] == '\0')
                return rm_error_set(err, RM_INVALID_ARGUMENT, "cmd is empty");
        if (req->timeout < 0)
                return rm_error_set(err, RM_INVALID_ARGUMENT, "timeout must not be negative");
        if (rm_cancelled(cancel))
                return rm_error_set(err, RM_CANCELLED, "the call was cancelled before the exec");
        struct ctr *c = rm__ctr_get(mgr, req->container_id ? req->container_id : "", err);
        if (c == NULL)
                return -1;
        rm__ctr_refresh_exit(mgr, c);
        pthread_mutex_lock(&mgr->lock);
        bool running = c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
        pthread_mutex_unlock(&mgr->lock);
        int rc;
        if (!running) {
                rc =
                    rm_error_set(err, RM_FAILED_PRECONDITION, "container %s is not running", c->id);
        } else {
                cleanup_free char **argv = xzalloc(sizeof(char *) * (req->n_cmd + 1));
                memcpy(argv, req->cmd, sizeof(char *) * req->n_cmd);
                rc = mgr->ops.exec_sync(mgr->ops.ctx, c->id, argv, req->timeout, cancel, res, err);
        }
        rm__ctr_put(mgr, c);
        return rc;
}

/* Created or running, checked under the lock after noticing a pending exit. */
static bool live(struct rm_container_manager *mgr, struct ctr *c, bool *running)
{
        rm__ctr_refresh_exit(mgr, c);
        pthread_mutex_lock(&mgr->lock);
        *running = c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
        bool ok = *running || c->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED;
        pthread_mutex_unlock(&mgr->lock);
        return ok;
}

/* A container not started yet has only its bundle: the new resources go into its
 * config.json, and runc create applies them at start. */
static int update_bundle(struct rm_container_manager *mgr, const struct ctr *c,
                         struct json_object *res, struct rm_error **err)
{
        cleanup_free char *path = xasprintf("%s/%s/config.json", mgr->bundles, c->id);
        cleanup_json struct json_object *spec = json_object_from_file(path);
        struct json_object *linux = NULL;
        if (spec == NULL || !json_object_object_get_ex(spec, "linux", &linux))
                return rm_error_set(err, RM_INTERNAL, "read %s: %s", path,
                                    json_util_get_last_err());
        json_object_object_add(linux, "resources", json_object_get(res));
        cleanup_free char *tmp = xasprintf("%s.tmp", path);
        if (json_object_to_file_ext(tmp, spec, JSON_C_TO_STRING_PLAIN) < 0 ||
            rename(tmp, path) < 0) {
                unlink(tmp);
                return rm_error_set(err, RM_INTERNAL, "write %s: %s", path,
                                    json_util_get_last_err());
        }
        return 0;
}

int rm_containers_update(struct rm_container_manager *mgr,
                         const Runtime__V1__UpdateContainerResourcesRequest *req,
                         struct rm_error **err)
{
        if (req->linux == NULL)
                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                    "linux is missing: there are no resources to update");
        if (rm__ctr_resources_limits(req->linux, "linux", err) < 0)
                return -1;
        bool has_oom = false;
        int64_t oom = 0;
        cleanup_json struct json_object *res =
            rm__spec_resources(req->linux, &mgr->host, &has_oom, &oom, err);
        if (res == NULL)
                return rm_error_wrap(err, "linux");
        struct ctr *c = rm__ctr_get(mgr, req->container_id ? req->container_id : "", err);
        if (c == NULL)
                return -1;
        pthread_mutex_lock(&c->op);
        bool running;
        int rc = 0;
        if (!live(mgr, c, &running))
                rc = rm_error_set(err, RM_FAILED_PRECONDITION,
                                  "container %s has exited; its resources cannot change", c->id);
        pthread_mutex_lock(&mgr->lock);
        bool in_runtime = c->pid != 0;
        pthread_mutex_unlock(&mgr->lock);
        if (rc == 0 && !in_runtime)
                rc = update_bundle(mgr, c, res, err);
        else if (rc == 0 &&
                 mgr->ops.update(mgr->ops.ctx, c->id,
                                 json_object_to_json_string_ext(res, JSON_C_TO_STRING_PLAIN),
                                 err) < 0)
                rc = rm_error_wrap(err, "update container %s", c->id);
        if (rc == 0) {
                pthread_mutex_lock(&mgr->lock);
                json_object_put(c->resources);
                c->resources = rm__resources_to_json(req->linux);
                pthread_mutex_unlock(&mgr->lock);
                rc = rm__ctr_save(mgr, c, err);
                rm_log_info("updated the resources of container %s", c->id);
        }
        pthread_mutex_unlock(&c->op);
        rm__ctr_put(mgr, c);
        return rc;
}

int rm_containers_reopen_log(struct rm_container_manager *mgr, const char *id,
                             struct rm_error **err)
{
        struct ctr *c = rm__ctr_get(mgr, id, err);
        if (c == NULL)
                return -1;
        bool running;
        int rc = 0;
        live(mgr, c, &running);
        pthread_mutex_lock(&mgr->lock);
        bool has_log = *c->log_path != '\0';
        pthread_mutex_unlock(&mgr->lock);
        if (!running)
                rc =
                    rm_error_set(err, RM_FAILED_PRECONDITION, "container %s is not running", c->id);
        else if (!has_log)
                rc = rm_error_set(err, RM_FAILED_PRECONDITION,
                                  "container %s has no log file (its pod has no log_directory "
                                  "or it has no log_path)",
                                  c->id);
        if (rc == 0) {
                cleanup_free char *bundle = xasprintf("%s/%s", mgr->bundles, c->id);
                rc = mgr->ops.reopen_log(mgr->ops.ctx, c->id, bundle, err);
        }
        rm__ctr_put(mgr, c);
        return rc;
}
