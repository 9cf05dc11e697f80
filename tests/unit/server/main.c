#include "remora/log.h"
#include "tests.h"

int main(void)
{
        rm_log_set_level(RM_LOG_ERROR);
        int failed = 0;
        failed += run_config_tests();
        failed += run_dispatch_tests();
        failed += run_pool_tests();
        failed += run_frontend_tests();
        return failed ? 1 : 0;
}
