/*
 * main.c - runs every CUnit suite of the unit tests and exits non-zero on
 * any failure. Each tests/unit/test_<module>.c exports one
 * test_<module>_register() that adds its suite; add new ones to the list.
 */
#include <CUnit/Basic.h>
#include <stdio.h>

int test_arena_register(void);
int test_connmem_register(void);
int test_proto_register(void);
int test_table_register(void);
int test_shard_register(void);
int test_seg_register(void);
int test_meta_register(void);
int test_latency_register(void);
int test_lend_register(void);

int main(void)
{
	int (*suites[])(void) = {
		test_arena_register,
		test_connmem_register,
		test_proto_register,
		test_table_register,
		test_shard_register,
		test_seg_register,
		test_meta_register,
		test_latency_register,
		test_lend_register,
	};
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
		if (suites[i]() != 0) {
			fprintf(stderr, "suite registration failed\n");
			CU_cleanup_registry();
			return 2;
		}
	}
	CU_basic_set_mode(CU_BRM_NORMAL);
	CU_basic_run_tests();
	unsigned failed = CU_get_number_of_failures() +
			  CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
