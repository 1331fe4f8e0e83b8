/*
 * test_connmem.c - lending connection memory within a daemon-wide budget
 * (net/connmem.c).
 *
 * Each test makes its own heap, budget and lenders (one per simulated
 * worker) and ends with connmem_deinit() and heap_destroy(), which in
 * sanitizer builds aborts if a block was not freed; the shared lease
 * counter must be back at 0.
 */
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <string.h>

#include "net/connmem.h"

#define MIB ((size_t)1 << 20)

static heap_t *heap_or_fail(void)
{
	heap_t *h = heap_create();
	CU_ASSERT_FATAL(h != NULL);
	return h;
}

static void finish(struct connmem *m, size_t n, struct connmem_budget *b,
		   heap_t *h)
{
	for (size_t i = 0; i < n; i++) {
		CU_ASSERT(m[i].held == 0);
		connmem_deinit(&m[i]);
	}
	CU_ASSERT(atomic_load(&b->leased) == 0);
	heap_destroy(h);
}

/* Two workers share one budget: what one holds the other cannot take, and
   it can once the first gives it back. */
static void test_shared_budget(void)
{
	heap_t *h = heap_or_fail();
	struct connmem_budget b;
	struct connmem m[2];
	connmem_budget_init(&b, 4 * MIB);
	connmem_init(&m[0], h, &b, 2);
	connmem_init(&m[1], h, &b, 2);
	void *big = connmem_get(&m[0], 3 * MIB, CONNMEM_BUDGET);
	CU_ASSERT_FATAL(big != NULL);
	memset(big, 1, 3 * MIB);
	CU_ASSERT(m[0].held == 3 * MIB && m[0].lease >= 3 * MIB);
	CU_ASSERT(connmem_get(&m[1], 2 * MIB, CONNMEM_BUDGET) == NULL);
	CU_ASSERT(m[1].refused == 1 && atomic_load(&b.pressure) == 1);
	/* The last bytes of the budget can be taken exactly. */
	size_t left = 4 * MIB - atomic_load(&b.leased);
	void *rest = connmem_get(&m[1], left, CONNMEM_BUDGET);
	CU_ASSERT(rest != NULL);
	CU_ASSERT(atomic_load(&b.leased) == 4 * MIB);
	CU_ASSERT(connmem_get(&m[1], 4096, CONNMEM_BUDGET) == NULL);
	/* A block that must be granted is, past the budget, and charged. */
	void *must = connmem_get(&m[1], CONNMEM_BLOCK, CONNMEM_MUST);
	CU_ASSERT(must != NULL);
	CU_ASSERT(atomic_load(&b.leased) > 4 * MIB);
	connmem_put(&m[1], must, CONNMEM_BLOCK);
	connmem_put(&m[1], rest, left);
	connmem_put(&m[0], big, 3 * MIB);
	/* Each lease is trimmed to at most two units above what it holds. */
	CU_ASSERT(m[0].lease <= 2 * m[0].unit && m[1].lease <= 2 * m[1].unit);
	void *again = connmem_get(&m[1], 3 * MIB, CONNMEM_BUDGET);
	CU_ASSERT(again != NULL);
	connmem_put(&m[1], again, 3 * MIB);
	finish(m, 2, &b, h);
}

/* The reserve: a second budget's worth, only for CONNMEM_RESERVE. */
static void test_reserve(void)
{
	heap_t *h = heap_or_fail();
	struct connmem_budget b;
	struct connmem m;
	connmem_budget_init(&b, 4 * MIB);
	connmem_init(&m, h, &b, 1);
	void *full = connmem_get(&m, 4 * MIB, CONNMEM_BUDGET);
	CU_ASSERT_FATAL(full != NULL);
	CU_ASSERT(connmem_get(&m, 4096, CONNMEM_BUDGET) == NULL);
	void *r1 = connmem_get(&m, 3 * MIB, CONNMEM_RESERVE);
	CU_ASSERT(r1 != NULL);
	CU_ASSERT(connmem_get(&m, 2 * MIB, CONNMEM_RESERVE) == NULL);
	CU_ASSERT(m.refused == 2);
	void *must = connmem_get(&m, 2 * MIB, CONNMEM_MUST);
	CU_ASSERT(must != NULL && atomic_load(&b.leased) >= 9 * MIB);
	connmem_put(&m, must, 2 * MIB);
	connmem_put(&m, r1, 3 * MIB);
	connmem_put(&m, full, 4 * MIB);
	finish(&m, 1, &b, h);
}

/* Small ups and downs stay inside the lease: the shared counter does not
   move once the lease covers them. */
static void test_lease_hysteresis(void)
{
	heap_t *h = heap_or_fail();
	struct connmem_budget b;
	struct connmem m;
	connmem_budget_init(&b, 64 * MIB);
	connmem_init(&m, h, &b, 4);
	CU_ASSERT(m.unit >= 4096 && m.unit <= 64 * 1024);
	void *p = connmem_get(&m, CONNMEM_BLOCK, CONNMEM_BUDGET);
	CU_ASSERT_FATAL(p != NULL);
	size_t leased = atomic_load(&b.leased);
	CU_ASSERT(leased == m.lease && leased >= CONNMEM_BLOCK);
	for (int i = 0; i < 1000; i++) {
		connmem_put(&m, p, CONNMEM_BLOCK);
		p = connmem_get(&m, CONNMEM_BLOCK, CONNMEM_BUDGET);
		CU_ASSERT_FATAL(p != NULL);
		CU_ASSERT(atomic_load(&b.leased) == leased);
	}
	connmem_put(&m, p, CONNMEM_BLOCK);
	finish(&m, 1, &b, h);
}

/* Blocks of the pooled sizes are reused, up to CONNMEM_POOL_MAX kept. */
static void test_pool(void)
{
	heap_t *h = heap_or_fail();
	struct connmem_budget b;
	struct connmem m;
	connmem_budget_init(&b, 64 * MIB);
	connmem_init(&m, h, &b, 1);
	void *blocks[CONNMEM_POOL_MAX + 8];
	for (size_t i = 0; i < CONNMEM_POOL_MAX + 8; i++) {
		blocks[i] = connmem_get(&m, CONNMEM_BLOCK, CONNMEM_BUDGET);
		CU_ASSERT_FATAL(blocks[i] != NULL);
		memset(blocks[i], (int)i, CONNMEM_BLOCK);
	}
	CU_ASSERT(m.held == (CONNMEM_POOL_MAX + 8) * (size_t)CONNMEM_BLOCK);
	for (size_t i = 0; i < CONNMEM_POOL_MAX + 8; i++)
		connmem_put(&m, blocks[i], CONNMEM_BLOCK);
	CU_ASSERT(m.block.n == CONNMEM_POOL_MAX && m.held == 0);
	void *last = blocks[CONNMEM_POOL_MAX - 1];
	void *small = connmem_get(&m, CONNMEM_SMALL, CONNMEM_MUST);
	void *p = connmem_get(&m, CONNMEM_BLOCK, CONNMEM_BUDGET);
	CU_ASSERT(p == last);
	CU_ASSERT(small != NULL && m.held == CONNMEM_BLOCK + CONNMEM_SMALL);
	connmem_put(&m, small, CONNMEM_SMALL);
	connmem_put(&m, p, CONNMEM_BLOCK);
	CU_ASSERT(m.small.n == 1);
	/* Workers share the bound: each keeps its part, not less than the
	   minimum. */
	struct connmem m4, m64;
	connmem_init(&m4, h, &b, 4);
	connmem_init(&m64, h, &b, 64);
	CU_ASSERT(m4.pool_max == CONNMEM_POOL_MAX / 4);
	CU_ASSERT(m64.pool_max == CONNMEM_POOL_MIN);
	connmem_deinit(&m4);
	connmem_deinit(&m64);
	/* A tick frees what stayed unused since the last one, down to the
	   floor; blocks taken meanwhile count as used. */
	connmem_tick(&m);
	CU_ASSERT(m.block.n == CONNMEM_POOL_MAX);
	for (int i = 0; i < 10; i++) {
		blocks[i] = connmem_get(&m, CONNMEM_BLOCK, CONNMEM_BUDGET);
		CU_ASSERT_FATAL(blocks[i] != NULL);
	}
	for (int i = 0; i < 10; i++)
		connmem_put(&m, blocks[i], CONNMEM_BLOCK);
	connmem_tick(&m);
	CU_ASSERT(m.block.n == 10 + CONNMEM_POOL_FLOOR);
	connmem_tick(&m);
	CU_ASSERT(m.block.n == CONNMEM_POOL_FLOOR);
	CU_ASSERT(m.small.n == 1);
	finish(&m, 1, &b, h);
}

int test_connmem_register(void)
{
	CU_pSuite s = CU_add_suite("connmem", NULL, NULL);
	if (!s)
		return -1;
	if (!CU_add_test(s, "shared budget", test_shared_budget) ||
	    !CU_add_test(s, "reserve", test_reserve) ||
	    !CU_add_test(s, "lease hysteresis", test_lease_hysteresis) ||
	    !CU_add_test(s, "pool", test_pool))
		return -1;
	return 0;
}
