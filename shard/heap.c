/*
 * heap.c - the C-library heap of sanitizer builds; see heap.h. In normal
 * builds heap.h is all inline mimalloc and this file is empty.
 *
 * Each block carries a 16-byte prefix naming its heap, so heap_free() can
 * decrement the right count from any thread; the count is atomic because a
 * block may be freed by another thread than its heap's owner.
 */
#include "shard/heap.h"

#ifdef RINGCACHE_LIBC_HEAP

#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct heap {
	atomic_long live;
};

struct prefix {
	struct heap *heap;
	size_t pad;
};

heap_t *heap_create(void)
{
	heap_t *h = malloc(sizeof(*h));
	if (h)
		atomic_init(&h->live, 0);
	return h;
}

void heap_destroy(heap_t *h)
{
	long live = atomic_load(&h->live);
	if (live) {
		fprintf(stderr, "heap_destroy: %ld blocks still allocated\n", live);
		abort();
	}
	free(h);
}

static void *finish(heap_t *h, struct prefix *p)
{
	if (!p)
		return NULL;
	p->heap = h;
	if (h)
		atomic_fetch_add(&h->live, 1);
	return p + 1;
}

void *heap_alloc(heap_t *h, size_t n)
{
	return finish(h, malloc(sizeof(struct prefix) + n));
}

void *heap_zalloc(heap_t *h, size_t n)
{
	return finish(h, calloc(1, sizeof(struct prefix) + n));
}

void heap_free(void *p)
{
	if (!p)
		return;
	struct prefix *x = (struct prefix *)p - 1;
	if (x->heap)
		atomic_fetch_sub(&x->heap->live, 1);
	free(x);
}

void *heap_realloc(heap_t *h, void *p, size_t n)
{
	if (!p)
		return heap_alloc(h, n);
	struct prefix *x = (struct prefix *)p - 1;
	struct heap *owner = x->heap;
	x = realloc(x, sizeof(*x) + n);
	if (!x)
		return NULL;
	if (owner != h) {
		if (owner)
			atomic_fetch_sub(&owner->live, 1);
		if (h)
			atomic_fetch_add(&h->live, 1);
		x->heap = h;
	}
	return x + 1;
}

void *heap_thread_realloc(void *p, size_t n)
{
	return heap_realloc(NULL, p, n);
}

size_t heap_usable(const void *p)
{
	const struct prefix *x = (const struct prefix *)p - 1;
	return malloc_usable_size((void *)x) - sizeof(*x);
}

#else
typedef int heap_c_is_empty_in_normal_builds;
#endif
