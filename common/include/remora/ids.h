/* Object IDs: 64 lower-case hex characters from the kernel's random pool, and lookup by
 * unique prefix as crictl users type them. */
#ifndef REMORA_IDS_H
#define REMORA_IDS_H

#include <stdbool.h>
#include <stddef.h>

#include "remora/error.h"

#define RM_ID_LEN 64

/* Fill out (RM_ID_LEN + 1 bytes) with a new random ID. */
void rm_id_new(char out[RM_ID_LEN + 1]);

/* True when s looks like a full ID. */
bool rm_id_valid(const char *s);

/* Find the one ID among ids[0..n) that equals or starts with prefix. Returns its index;
 * -1 with NOT_FOUND when none matches, INVALID_ARGUMENT when several do (what names
 * the kind of object, "container" or "pod sandbox"). */
long rm_id_match(const char *const *ids, size_t n, const char *prefix, const char *what,
                 struct rm_error **err);

#endif
