/* Which answers of RunPodSandbox and CreateContainer never reached their client. An
 * identical request retried after the client gave up (its deadline passed, or it cancelled,
 * while remorad was still working) gets the object the first call made; one retried by a
 * client that did get its answer is a client bug, answered ALREADY_EXISTS as containerd and
 * CRI-O do. The managers record here, by object ID, what the gRPC front end reports after
 * each send. Only answers of this process are known: an ID with no entry counts as
 * delivered, so after a restart every existing object does. */
#ifndef REMORA_ANSWERS_H
#define REMORA_ANSWERS_H

#include <stdbool.h>
#include <stdint.h>

#include "remora/cancel.h"

struct rm_answers;

struct rm_answers *rm_answers_new(void);
void rm_answers_free(struct rm_answers *a);

/* An answer naming id is on its way: the create that reserved id is working, or a retry
 * is about to return it. */
void rm_answers_begin(struct rm_answers *a, const char *id);
/* That answer was sent; delivered says whether its client got it. Once one answer naming
 * id was delivered, id counts as delivered for good. */
void rm_answers_end(struct rm_answers *a, const char *id, bool delivered);
/* id is gone (its create failed, or it was removed). */
void rm_answers_forget(struct rm_answers *a, const char *id);

enum rm_answer {
        RM_ANSWER_DELIVERED, /* a client got id (or it predates this process) */
        RM_ANSWER_LOST,      /* no client got it: the caller now answers id (begun for it) */
        RM_ANSWER_PENDING,   /* still on its way when cancel fired or timeout_ms passed */
};

/* For a retry of the request that made id: wait while an answer naming id is on its way
 * (at most timeout_ms, and never past cancel, which may be NULL), then say what became of
 * it. On RM_ANSWER_LOST a new answer is begun for the caller, who must end it. */
enum rm_answer rm_answers_claim(struct rm_answers *a, const char *id,
                                const struct rm_cancel *cancel, int64_t timeout_ms);

#endif
