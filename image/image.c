#include <stdlib.h>

#include "remora/cleanup.h"
#include "remora/confsect.h"
#include "remora/fsutil.h"
#include "remora/image.h"
#include "remora/xalloc.h"

struct rm_image_service {
        char *dir;
        struct rm_store *store;
};

struct rm_image_service *rm_image_service_open(const char *root, struct json_object *section,
                                               struct rm_store *store, struct rm_error **err)
{
        static const char *const known[] = {NULL};
        if (rm_confsect_check_keys("image", section, known, err) < 0)
                return NULL;
        cleanup_free char *dir = xasprintf("%s/images", root);
        if (rm_mkdir_p(dir, 0700, err) < 0) {
                rm_error_wrap(err, "open image store");
                return NULL;
        }
        struct rm_image_service *svc = xzalloc(sizeof(*svc));
        svc->dir = steal_pointer(&dir);
        svc->store = store;
        return svc;
}

void rm_image_service_close(struct rm_image_service *svc)
{
        if (svc == NULL)
                return;
        free(svc->dir);
        free(svc);
}

const char *rm_image_service_dir(const struct rm_image_service *svc)
{
        return svc->dir;
}
