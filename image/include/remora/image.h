/* The image service: registry client, content store, unpacked layers, image records. */
#ifndef REMORA_IMAGE_H
#define REMORA_IMAGE_H

#include <json-c/json.h>

#include "remora/error.h"
#include "remora/store.h"

struct rm_image_service;

/* Open the image store under <root>/images (created 0700 if missing). section is the
 * config file's "image" object (NULL when absent); unknown keys are INVALID_ARGUMENT. */
struct rm_image_service *rm_image_service_open(const char *root, struct json_object *section,
                                               struct rm_store *store, struct rm_error **err);
void rm_image_service_close(struct rm_image_service *svc);

/* The directory holding blobs, layers and image records. */
const char *rm_image_service_dir(const struct rm_image_service *svc);

#endif
