/*
 * heap.c - the parts of heap.h that are not inline: the footprint walk and
 * the allocator options of normal builds, and the C-library heap of
 * sanitizer builds.
 *
 * Sanitizer builds:
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

void heap_footprint(heap_t *h, struct heap_footprint *out)
{
	(void)h;
	*out = (struct heap_footprint){ 0, 0 };
}

void heap_configure(void)
{
}

#else

#include <stdlib.h>

static bool add_area(const mi_heap_t *h, const mi_heap_area_t *a,
		     void *block, size_t block_size, void *arg)
{
	(void)h;
	(void)block;
	(void)block_size;
	struct heap_footprint *f = arg;
	f->committed += a->committed;
	f->used += a->used * a->block_size; /* used counts blocks (mimalloc #553) */
	return true;
}

void heap_footprint(heap_t *h, struct heap_footprint *out)
{
	*out = (struct heap_footprint){ 0, 0 };
	mi_heap_visit_blocks(h, false, add_area, out);
}

/*
 * mimalloc 2.0.9 keeps a freed page's memory committed for
 * decommit_delay ms (25 by default) and a freed segment span for
 * segment_decommit_delay ms (500) in case it is wanted again. A cache
 * under eviction frees and allocates all the time, in ever different size
 * classes, so those delays only mean RSS above what the shards hold: give
 * the memory back at once (MADV_DONTNEED/decommit is cheap next to copying
 * the values). mi_option_set, not set_default: the latter is ignored once
 * mimalloc has read the option; so MIMALLOC_* in the environment is
 * honoured by hand.
 */
void heap_configure(void)
{
	if (!getenv("MIMALLOC_DECOMMIT_DELAY"))
		mi_option_set(mi_option_decommit_delay, 0);
	if (!getenv("MIMALLOC_SEGMENT_DECOMMIT_DELAY"))
		mi_option_set(mi_option_segment_decommit_delay, 0);
}

#endif
