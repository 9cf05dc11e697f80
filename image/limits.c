/* Limits a pull is held to while it writes: the free-space reserve of the filesystem
 * holding the image store, and the caller's cancellation token. */
#include <errno.h>
#include <sys/statvfs.h>
#include <time.h>

#include "image_internal.h"

/* Free space is measured again after at most this many bytes, so concurrent writers
 * (other layers, other pulls) are noticed while one layer is still being written. */
#define SPACE_RECHECK (4u << 20)

uint64_t rm__space_default_reserve(int fd)
{
        struct statvfs st;
        if (fstatvfs(fd, &st) < 0)
                return RM__RESERVE_MAX;
        uint64_t five_percent = (uint64_t)st.f_blocks * st.f_frsize / 20;
        return five_percent < RM__RESERVE_MAX ? five_percent : RM__RESERVE_MAX;
}

int rm__space_take(struct rm__space *s, uint64_t n, struct rm_error **err)
{
        if (s == NULL)
                return 0;
        if (s->budget >= n) {
                s->budget -= n;
                return 0;
        }
        struct statvfs st;
        if (fstatvfs(s->fd, &st) < 0)
                return rm_error_sys(err, "measure the free space of the image store");
        uint64_t avail = (uint64_t)st.f_bavail * st.f_frsize;
        uint64_t headroom = avail > s->reserve ? avail - s->reserve : 0;
        if (headroom < n)
                return rm_error_set(err, RM_RESOURCE_EXHAUSTED,
                                    "stopped before the image store's filesystem fell below its "
                                    "free-space reserve (%llu bytes free, image.free_space_reserve "
                                    "is %llu)",
                                    (unsigned long long)avail, (unsigned long long)s->reserve);
        headroom -= n;
        /* Inodes run out first on a layer of many small files (every entry takes at least
         * 4 KiB of the budget, so the budget also ends before the inodes do); kubelet
         * evicts below 5 % free inodes. */
        if (s->reserve > 0 && st.f_files > 0) {
                uint64_t floor = st.f_files / 20;
                if (st.f_favail <= floor)
                        return rm_error_set(err, RM_RESOURCE_EXHAUSTED,
                                            "stopped before the image store's filesystem ran out "
                                            "of inodes (%llu of %llu free, the reserve is 5 %%)",
                                            (unsigned long long)st.f_favail,
                                            (unsigned long long)st.f_files);
                uint64_t room = (st.f_favail - floor) * 4096;
                headroom = headroom < room ? headroom : room;
        }
        s->budget = headroom < SPACE_RECHECK ? headroom : SPACE_RECHECK;
        return 0;
}

int rm__cancel_check(const struct rm_cancel *c, struct rm_error **err)
{
        if (!rm_cancelled(c))
                return 0;
        if (!atomic_load(&c->cancelled) && c->deadline_ns > 0)
                return rm_error_set(err, RM_DEADLINE_EXCEEDED,
                                    "the pull's deadline passed; it was stopped and cleaned up");
        return rm_error_set(err, RM_CANCELLED,
                            "the pull was cancelled by the client; it was stopped and cleaned up");
}
