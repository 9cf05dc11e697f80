/* The groups of unit_shim, one per file; each returns its number of failures. */
#ifndef REMORA_SHIM_TESTS_H
#define REMORA_SHIM_TESTS_H
int rm_test_cri_log(void);
int rm_test_hub(void);
#endif
