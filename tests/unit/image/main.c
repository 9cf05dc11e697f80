#include "tests.h"

int main(void)
{
        int failed =
            _cmocka_run_group_tests("parsing", rm_test_parsing, rm_test_parsing_n, NULL, NULL);
        failed += _cmocka_run_group_tests("pull", rm_test_pull, rm_test_pull_n, NULL, NULL);
        return failed;
}
