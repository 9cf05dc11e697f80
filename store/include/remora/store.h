/* The meta store: one JSON document per object, kept under <root>/<kind>/<id>.json.
 *
 * Every put is atomic and durable before it returns: the document is written to a
 * temporary file in the same directory, fsync'd, renamed over the record and the
 * directory is fsync'd. A crash at any point leaves either the old record or the new
 * one, never a mix; stray temporary files are ignored and removed by the next open.
 *
 * Kinds and IDs are restricted to [A-Za-z0-9_.-], must not start with '.', and are at
 * most 128 bytes, so neither can escape the store's directory. The store is safe to use
 * from several threads at once (operations on one record are serialized by rename). */
#ifndef REMORA_STORE_H
#define REMORA_STORE_H

#include <stdbool.h>
#include <json-c/json.h>

#include "remora/error.h"

struct rm_store;

/* Open (creating if needed, mode 0700) the store rooted at root. Removes leftover
 * temporary files from an interrupted put and logs how many it removed. */
struct rm_store *rm_store_open(const char *root, struct rm_error **err);
void rm_store_close(struct rm_store *store);

/* The directory the store lives in. */
const char *rm_store_root(const struct rm_store *store);

/* Write (create or replace) the record kind/id. doc is not consumed. */
int rm_store_put(struct rm_store *store, const char *kind, const char *id, struct json_object *doc,
                 struct rm_error **err);

/* Read the record kind/id. NOT_FOUND when there is none, DATA_LOSS naming the file when
 * it does not parse as a JSON object. The caller owns the returned object. */
struct json_object *rm_store_get(struct rm_store *store, const char *kind, const char *id,
                                 struct rm_error **err);

/* Remove the record kind/id durably. Removing a record that is not there succeeds. */
int rm_store_delete(struct rm_store *store, const char *kind, const char *id,
                    struct rm_error **err);

/* Called once per record in kind, in no particular order. doc is borrowed (valid for the
 * call only) and is NULL when the record is corrupt; then bad describes why. Return 0 to
 * go on, negative (with *err set) to stop the listing with that error. */
typedef int (*rm_store_visit_fn)(const char *id, struct json_object *doc,
                                 const struct rm_error *bad, void *data, struct rm_error **err);

/* Visit every record of kind. A missing kind directory is an empty list. Corrupt
 * records are reported to the visitor (and logged), never fatal; each is moved aside to
 * <id>.json.corrupt-<unix time> first (named in bad's message), so it is kept for the
 * operator but no longer a record: the next listing does not see it. Returns the number of
 * records visited (good and corrupt) or -1. */
int rm_store_list(struct rm_store *store, const char *kind, rm_store_visit_fn visit, void *data,
                  struct rm_error **err);

/* Move a record that parses but makes no sense to its reader aside, as rm_store_list does
 * with one that does not parse (why goes into the log line). */
void rm_store_set_aside(struct rm_store *store, const char *kind, const char *id, const char *why);

/* True when s is usable as a kind or an ID. */
bool rm_store_valid_name(const char *s);

#endif
