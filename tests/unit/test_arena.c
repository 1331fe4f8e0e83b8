/*
 * test_arena.c - the request-scoped bump allocator (net/arena.c).
 *
 * Each test makes its own heap and arena and ends with arena_deinit() and
 * heap_destroy(): in sanitizer builds (RINGCACHE_LIBC_HEAP) heap_destroy()
 * aborts if a chunk was not freed, and ASan checks every byte written into
 * an allocation is inside it.
 */
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <string.h>

#include "net/arena.h"

#define ALIGN _Alignof(max_align_t)
/* More than a chunk header can be: bounds held-byte checks from above. */
#define HDR_SLACK 64

static heap_t *heap_or_fail(void)
{
	heap_t *h = heap_create();
	CU_ASSERT_FATAL(h != NULL);
	return h;
}

static void finish(struct arena *a, heap_t *h)
{
	arena_deinit(a);
	CU_ASSERT(a->held == 0 && a->used == 0 && a->first == NULL);
	heap_destroy(h);
}

/* arena_alloc is aligned for any object whatever came before it. */
static void test_alignment(void)
{
	heap_t *h = heap_or_fail();
	struct arena a;
	arena_init(&a, h, 256, 1 << 20);
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
	heap_t *h = heap_or_fail();
	struct arena a;
	arena_init(&a, h, 1024, 1 << 20);
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
	heap_t *h = heap_or_fail();
	struct arena a;
	/* Room for three chunks of 1024, not four. */
	arena_init(&a, h, 1024, 3 * 1024 + 3 * HDR_SLACK);
	int got = 0;
	while (arena_bytes(&a, 512))
		got++;
	CU_ASSERT(got == 6);
	CU_ASSERT(a.held <= a.limit);
	CU_ASSERT(arena_bytes(&a, 1) == NULL);
	CU_ASSERT(arena_alloc(&a, 8) == NULL);
	CU_ASSERT(arena_copy(&a, "x", 1) == NULL);
	CU_ASSERT(arena_bytes(&a, 5000) == NULL);
	CU_ASSERT(arena_used(&a) == 6 * 512);
	/* A single request larger than the limit fails on a fresh arena. */
	struct arena b;
	arena_init(&b, h, 1024, 4096);
	CU_ASSERT(arena_bytes(&b, 4096) == NULL);
	CU_ASSERT(arena_bytes(&b, SIZE_MAX) == NULL);
	CU_ASSERT(arena_alloc(&b, SIZE_MAX - 8) == NULL);
	CU_ASSERT(arena_bytes(&b, 100) != NULL);
	arena_deinit(&b);

	arena_reset(&a);
	CU_ASSERT(arena_bytes(&a, 512) != NULL);
	finish(&a, h);
}

/* Reset keeps the first chunk (the next allocation reuses its memory) and
   frees the rest. */
static void test_reset(void)
{
	heap_t *h = heap_or_fail();
	struct arena a;
	arena_init(&a, h, 256, 1 << 20);
	arena_reset(&a); /* on an empty arena: nothing to do */
	CU_ASSERT(a.held == 0);

	char *first = arena_bytes(&a, 100);
	CU_ASSERT_FATAL(first != NULL);
	size_t one = a.held;
	CU_ASSERT(one >= 256 && one < 256 + HDR_SLACK);
	for (int i = 0; i < 40; i++)
		CU_ASSERT(arena_bytes(&a, 100) != NULL);
	CU_ASSERT(a.held >= 10 * 256);
	CU_ASSERT(a.cur != a.first);

	arena_reset(&a);
	CU_ASSERT(a.held == one);
	CU_ASSERT(a.cur == a.first);
	CU_ASSERT(arena_used(&a) == 0);
	CU_ASSERT(arena_bytes(&a, 100) == first);
	/* Twice in a row is harmless. */
	arena_reset(&a);
	arena_reset(&a);
	CU_ASSERT(a.held == one);
	CU_ASSERT(arena_alloc(&a, 8) == (void *)first);
	finish(&a, h);
}

/* A request over chunk_size gets a chunk of its own size, in one piece. */
static void test_large(void)
{
	heap_t *h = heap_or_fail();
	struct arena a;
	arena_init(&a, h, 256, 1 << 22);
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
	size_t one_regular = 0;
	arena_reset(&a);
	one_regular = a.held;
	CU_ASSERT(one_regular >= 256 && one_regular < 256 + HDR_SLACK);
	CU_ASSERT(arena_bytes(&a, 10) == small);

	/* A large first allocation: the oversized first chunk is not kept
	   across a reset, so an idle connection does not pin it. */
	struct arena b;
	arena_init(&b, h, 256, 1 << 22);
	char *huge = arena_bytes(&b, 1 << 20);
	CU_ASSERT_FATAL(huge != NULL);
	memset(huge, 0, 1 << 20);
	CU_ASSERT(b.held >= 1 << 20);
	arena_reset(&b);
	CU_ASSERT(b.held == 0);
	CU_ASSERT(arena_bytes(&b, 10) != NULL);
	CU_ASSERT(b.held >= 256 && b.held < 256 + HDR_SLACK);
	arena_deinit(&b);
	finish(&a, h);
}

static void test_copy(void)
{
	heap_t *h = heap_or_fail();
	struct arena a;
	arena_init(&a, h, 64, 1 << 20);
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
	heap_t *h = heap_or_fail();
	struct arena a;
	arena_init(&a, h, 128, 4096);
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
	    !CU_add_test(s, "reset keeps the first chunk", test_reset) ||
	    !CU_add_test(s, "large allocations", test_large) ||
	    !CU_add_test(s, "copy", test_copy) ||
	    !CU_add_test(s, "deinit, then reuse", test_deinit_reuse))
		return -1;
	return 0;
}
