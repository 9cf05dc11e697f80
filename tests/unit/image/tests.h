/* The groups of unit_image, run by main.c. */
#ifndef REMORA_TEST_IMAGE_H
#define REMORA_TEST_IMAGE_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

extern const struct CMUnitTest rm_test_parsing[];
extern const size_t rm_test_parsing_n;
extern const struct CMUnitTest rm_test_pull[];
extern const size_t rm_test_pull_n;

#endif
