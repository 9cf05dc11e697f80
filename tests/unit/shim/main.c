#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "shim_tests.h"

int main(void)
{
        /* The hub's tests close the container's end of a pipe under it, as a container
         * closing its stdin does; remora-shim ignores SIGPIPE the same way. */
        signal(SIGPIPE, SIG_IGN);
        int failed = rm_test_cri_log();
        failed += rm_test_hub();
        return failed;
}
