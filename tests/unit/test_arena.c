/*
 * test_arena.c - the request-scoped bump allocator (net/arena.c).
 *
 * Each test makes its own heap, connection memory (net/connmem.h) and arena
 * and ends with arena_deinit(), connmem_deinit() and heap_destroy(): in
 * sanitizer builds (RINGCACHE_LIBC_HEAP) heap_destroy() aborts if a chunk
 * was not freed, and ASan checks every byte written into an allocation is
 * inside it. Chunk sizes count the chunk's header; CH(n) is a chunk with at
 * least n bytes of room.
 */
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <string.h>

#include "net/arena.h"

#define ALIGN _Alignof(max_align_t)
/* More than a chunk header can be: bounds held-byte checks from above. */
#define HDR_SLACK 64
#define CH(n) ((n) + HDR_SLACK)

struct env {
	heap_t *heap;
	struct connmem_budget budget;
	struct connmem mem;
};

static struct env *env_or_fail(struct env *e, size_t budget)
{
	e->heap = heap_create();
	CU_ASSERT_FATAL(e->heap != NULL);
	connmem_budget_init(&e->budget, budget);
	connmem_init(&e->mem, e->heap, &e->budget, 1);
	return e;
}

static void finish(struct arena *a, struct env *e)
{
	arena_deinit(a);
	CU_ASSERT(a->held == 0 && a->used == 0 && a->first == NULL);
	CU_ASSERT(e->mem.held == 0);
	connmem_deinit(&e->mem);
	CU_ASSERT(atomic_load(&e->budget.leased) == 0);
	heap_destroy(e->heap);
}

/* arena_alloc is aligned for any object whatever came before it. */
static void test_alignment(void)
{
	struct env env, *h = env_or_fail(&env, 1 << 30);
	struct arena a;
	arena_init(&a, &h->mem, CH(256), 1 << 20);
	for (size_t i = 0; i < 500; i++) {
		char *b = arena_bytes(&a, i % 7 + 1);
		CU_ASSERT_FATAL(b != NULL);
		size_t n = 1 + i % 40;
		void *p = arena_alloc(&a, n);
		CU_ASSERT_FATAL(p != NULL);
		CU_ASSERT((uintptr_t)p % ALIGN == 0);
		CU_ASSERT((char *)p >= b + i % 7 + 1 || (char *)p < b);
		memset(p, 0xa5, n);
	}
	/* The very first allocation of a fresh arena too. */
	arena_reset(&a);
	void *p = arena_alloc(&a, 1);
	CU_ASSERT(p != NULL && (uintptr_t)p % ALIGN == 0);
	finish(&a, h);
}

/* Consecutive arena_bytes in one chunk are adjacent (one iovec). */
static void test_adjacent(void)
{
	struct env env, *h = env_or_fail(&env, 1 << 30);
	struct arena a;
	arena_init(&a, &h->mem, CH(1024), 1 << 20);
	char *p = arena_bytes(&a, 5);
	CU_ASSERT_FATAL(p != NULL);
	char *q = arena_bytes(&a, 7);
	CU_ASSERT(q == p + 5);
	char *r = arena_copy(&a, "abc", 3);
	CU_ASSERT(r == q + 7);
	char *z = arena_bytes(&a, 0);
	CU_ASSERT(z == r + 3);
	char *s = arena_bytes(&a, 100);
	CU_ASSERT(s == r + 3);
	CU_ASSERT(arena_used(&a) == 5 + 7 + 3 + 100);
	/* arena_alloc pads but stays in the chunk while it fits. */
	void *o = arena_alloc(&a, 16);
	CU_ASSERT((char *)o >= s + 100 && (char *)o < s + 100 + ALIGN);
	finish(&a, h);
}

/* Once `limit` bytes of chunks are held, allocation returns NULL; reset
   makes room again. */
static void test_limit(void)
{
	struct env env, *h = env_or_fail(&env, 1 << 30);
	struct arena a;
	/* Room for three chunks of 1024, not four. */
	arena_init(&a, &h->mem, CH(1024), 3 * CH(1024));
	int got = 0;
	while (arena_bytes(&a, 512))
		got++;
	CU_ASSERT(got == 6);
	CU_ASSERT(a.held <= a.limit);
	/* What is left of the last chunk is less than a header's slack. */
	char x[HDR_SLACK] = { 0 };
	CU_ASSERT(arena_bytes(&a, HDR_SLACK) == NULL);
	CU_ASSERT(arena_alloc(&a, HDR_SLACK) == NULL);
	CU_ASSERT(arena_copy(&a, x, HDR_SLACK) == NULL);
	CU_ASSERT(arena_bytes(&a, 5000) == NULL);
	CU_ASSERT(arena_used(&a) == 6 * 512);
	/* A single request larger than the limit fails on a fresh arena. */
	struct arena b;
	arena_init(&b, &h->mem, CH(1024), 4096);
	CU_ASSERT(arena_bytes(&b, 4096) == NULL);
	CU_ASSERT(arena_bytes(&b, SIZE_MAX) == NULL);
	CU_ASSERT(arena_alloc(&b, SIZE_MAX - 8) == NULL);
	CU_ASSERT(arena_bytes(&b, 100) != NULL);
	arena_deinit(&b);

	arena_reset(&a);
	CU_ASSERT(arena_bytes(&a, 512) != NULL);
	finish(&a, h);
}

/* Reset gives every chunk back: an idle arena holds nothing, and the
   worker's free list hands the same block out again. */
static void test_reset(void)
{
	struct env env, *h = env_or_fail(&env, 1 << 30);
	struct arena a;
	arena_init(&a, &h->mem, CONNMEM_BLOCK, 1 << 20);
	arena_reset(&a); /* on an empty arena: nothing to do */
	CU_ASSERT(a.held == 0);

	char *first = arena_bytes(&a, 100);
	CU_ASSERT_FATAL(first != NULL);
	CU_ASSERT(a.held == CONNMEM_BLOCK && h->mem.held == CONNMEM_BLOCK);
	for (int i = 0; i < 400; i++)
		CU_ASSERT(arena_bytes(&a, 100) != NULL);
	CU_ASSERT(a.held >= 2 * CONNMEM_BLOCK);
	CU_ASSERT(a.cur != a.first);
	CU_ASSERT(h->mem.held == a.held);

	arena_reset(&a);
	CU_ASSERT(a.held == 0 && a.first == NULL && h->mem.held == 0);
	CU_ASSERT(arena_used(&a) == 0);
	CU_ASSERT(h->mem.block.n >= 2);
	/* The last block given back is the first taken again. */
	char *again = arena_bytes(&a, 100);
	CU_ASSERT(again != NULL && h->mem.block.n >= 1);
	/* Twice in a row is harmless. */
	arena_reset(&a);
	arena_reset(&a);
	CU_ASSERT(a.held == 0);
	CU_ASSERT(arena_alloc(&a, 8) != NULL);
	finish(&a, h);
}

/* Beyond its first chunk, an arena gets memory only within the budget; the
   first chunk of a batch is granted whatever the budget says. */
static void test_budget(void)
{
	struct env env, *h = env_or_fail(&env, 3 * CONNMEM_BLOCK);
	struct arena a, b;
	arena_init(&a, &h->mem, CONNMEM_BLOCK, 1 << 20);
	arena_init(&b, &h->mem, CONNMEM_BLOCK, 1 << 20);
	/* a takes the whole budget: three blocks. */
	int got = 0;
	while (arena_bytes(&a, 8000))
		got++;
	CU_ASSERT(got == 6);
	CU_ASSERT(h->mem.refused == 1);
	CU_ASSERT(atomic_load(&h->budget.pressure) == 1);
	/* b's first chunk still comes, past the budget; then one larger
	   chunk from the reserve (twice the budget), but no more. */
	CU_ASSERT(arena_bytes(&b, 100) != NULL);
	CU_ASSERT(h->mem.held == 4 * CONNMEM_BLOCK);
	CU_ASSERT(arena_bytes(&b, CONNMEM_BLOCK) != NULL);
	CU_ASSERT(arena_bytes(&b, 100) == NULL);
	CU_ASSERT(h->mem.refused == 2);
	/* A fresh arena's larger chunk: within the reserve or not at all. */
	arena_reset(&b);
	CU_ASSERT(arena_bytes(&b, 50000) == NULL);
	CU_ASSERT(arena_bytes(&b, 40000) != NULL);
	arena_reset(&b);
	/* Once a gives its memory back there is room again. */
	arena_reset(&a);
	CU_ASSERT(arena_bytes(&b, 40000) != NULL);
	arena_deinit(&b);
	finish(&a, h);
}

/* A request over chunk_size gets a chunk of its own size, in one piece. */
static void test_large(void)
{
	struct env env, *h = env_or_fail(&env, 1 << 30);
	struct arena a;
	arena_init(&a, &h->mem, CH(256), 1 << 22);
	char *small = arena_bytes(&a, 10);
	CU_ASSERT_FATAL(small != NULL);
	char *big = arena_bytes(&a, 1 << 20);
	CU_ASSERT_FATAL(big != NULL);
	memset(big, 0x5a, 1 << 20);
	CU_ASSERT(big[0] == 0x5a && big[(1 << 20) - 1] == 0x5a);
	void *al = arena_alloc(&a, 5000);
	CU_ASSERT(al != NULL && (uintptr_t)al % ALIGN == 0);
	memset(al, 1, 5000);
	CU_ASSERT(arena_bytes(&a, 3) != NULL);
	CU_ASSERT(arena_used(&a) >= 10 + (1 << 20) + 5000 + 3);
	CU_ASSERT(h->mem.held == a.held);
	arena_reset(&a);
	CU_ASSERT(a.held == 0 && h->mem.held == 0);

	/* A large first allocation, then a small one after the reset. */
	struct arena b;
	arena_init(&b, &h->mem, CH(256), 1 << 22);
	char *huge = arena_bytes(&b, 1 << 20);
	CU_ASSERT_FATAL(huge != NULL);
	memset(huge, 0, 1 << 20);
	CU_ASSERT(b.held >= 1 << 20);
	arena_reset(&b);
	CU_ASSERT(b.held == 0);
	CU_ASSERT(arena_bytes(&b, 10) != NULL);
	CU_ASSERT(b.held == CH(256));
	arena_deinit(&b);
	finish(&a, h);
}

static void test_copy(void)
{
	struct env env, *h = env_or_fail(&env, 1 << 30);
	struct arena a;
	arena_init(&a, &h->mem, CH(64), 1 << 20);
	/* Zero bytes on a fresh arena is a success, not "over the limit". */
	char *e = arena_copy(&a, "", 0);
	CU_ASSERT(e != NULL);
	char *p = arena_copy(&a, "hello", 5);
	CU_ASSERT_FATAL(p != NULL);
	CU_ASSERT(memcmp(p, "hello", 5) == 0);
	char src[1000];
	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (char)(i * 7);
	char *q = arena_copy(&a, src, sizeof(src));
	CU_ASSERT_FATAL(q != NULL);
	CU_ASSERT(memcmp(q, src, sizeof(src)) == 0);
	CU_ASSERT(memcmp(p, "hello", 5) == 0);
	CU_ASSERT(arena_used(&a) == 5 + sizeof(src));
	finish(&a, h);
}

/* After deinit the arena is empty and usable again. */
static void test_deinit_reuse(void)
{
	struct env env, *h = env_or_fail(&env, 1 << 30);
	struct arena a;
	arena_init(&a, &h->mem, CH(128), 4096);
	CU_ASSERT(arena_bytes(&a, 1000) != NULL);
	arena_deinit(&a);
	arena_deinit(&a);
	CU_ASSERT(a.held == 0 && a.first == NULL && a.cur == NULL);
	char *p = arena_bytes(&a, 10);
	CU_ASSERT(p != NULL);
	CU_ASSERT(arena_used(&a) == 10);
	finish(&a, h);
}

int test_arena_register(void)
{
	CU_pSuite s = CU_add_suite("arena", NULL, NULL);
	if (!s)
		return -1;
	if (!CU_add_test(s, "alignment", test_alignment) ||
	    !CU_add_test(s, "adjacent bytes", test_adjacent) ||
	    !CU_add_test(s, "limit", test_limit) ||
	    !CU_add_test(s, "reset gives every chunk back", test_reset) ||
	    !CU_add_test(s, "budget", test_budget) ||
	    !CU_add_test(s, "large allocations", test_large) ||
	    !CU_add_test(s, "copy", test_copy) ||
	    !CU_add_test(s, "deinit, then reuse", test_deinit_reuse))
		return -1;
	return 0;
}
