#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "remora/cancel.h"
#include "remora/clock.h"

void rm_cancel_init(struct rm_cancel *c, int64_t deadline_ns)
{
        atomic_init(&c->cancelled, false);
        c->deadline_ns = deadline_ns;
        c->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

void rm_cancel_set(struct rm_cancel *c)
{
        if (atomic_exchange(&c->cancelled, true))
                return;
        uint64_t one = 1;
        if (c->fd >= 0 && write(c->fd, &one, sizeof(one)) < 0) {
                /* the counter cannot overflow from a single write; nothing to do */
        }
}

void rm_cancel_release(struct rm_cancel *c)
{
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
}

bool rm_cancelled(const struct rm_cancel *c)
{
        if (c == NULL)
                return false;
        if (atomic_load(&c->cancelled))
                return true;
        if (c->deadline_ns == 0)
                return false;
        return rm_mono_ns() >= c->deadline_ns;
}
