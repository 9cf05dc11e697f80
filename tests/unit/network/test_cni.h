/* The CNI group of the network unit tests (test_cni.c), run from test_network.c's main. */
#ifndef REMORA_TEST_CNI_H
#define REMORA_TEST_CNI_H

int rm_test_cni_run(void);

#endif
