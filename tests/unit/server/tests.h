#ifndef REMORA_UNIT_SERVER_TESTS_H
#define REMORA_UNIT_SERVER_TESTS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

int run_config_tests(void);
int run_dispatch_tests(void);
int run_pool_tests(void);
int run_frontend_tests(void);

#endif
