/*
 * arena.c - chunked bump allocation; see arena.h.
 *
 * A chunk is a header followed by its bytes. Allocation bumps `pos` in the
 * current chunk; when the request does not fit, a new chunk is taken that is
 * at least as large as the request, so a 1 MiB value lands in one piece.
 * Reset frees every chunk but the first, and the first too when it is an
 * oversized one (so an idle connection does not pin a 1 MiB block because
 * its first batch held a large value). Chunks come from the worker's heap
 * with heap_alloc (shard/heap.h).
 */
#include "net/arena.h"

#include <stdint.h>
#include <string.h>

struct arena_chunk {
	struct arena_chunk *next;
	size_t size;          /* bytes after the header */
	max_align_t data[];
};

void arena_init(struct arena *a, heap_t *heap, size_t chunk_size,
		size_t limit)
{
	memset(a, 0, sizeof(*a));
	a->heap = heap;
	a->chunk_size = chunk_size;
	a->limit = limit;
}

static void free_chain(struct arena_chunk *c)
{
	while (c) {
		struct arena_chunk *next = c->next;
		heap_free(c);
		c = next;
	}
}

void arena_deinit(struct arena *a)
{
	free_chain(a->first);
	a->first = a->cur = NULL;
	a->pos = a->end = NULL;
	a->held = a->used = 0;
}

void arena_reset(struct arena *a)
{
	if (!a->first)
		return;
	if (a->first->size > a->chunk_size) {
		/* An oversized first chunk (the batch began with a large value)
		   is not kept: an idle connection would pin it for good. */
		arena_deinit(a);
		return;
	}
	free_chain(a->first->next);
	a->first->next = NULL;
	a->cur = a->first;
	a->pos = (char *)a->first->data;
	a->end = a->pos + a->first->size;
	a->held = sizeof(struct arena_chunk) + a->first->size;
	a->used = 0;
}

/* Makes room for n bytes in a new chunk; false when over the limit. */
static int grow(struct arena *a, size_t n)
{
	size_t size = n > a->chunk_size ? n : a->chunk_size;
	size_t total = sizeof(struct arena_chunk) + size;
	if (total < size || a->held > a->limit || total > a->limit - a->held)
		return 0;
	struct arena_chunk *c = heap_alloc(a->heap, total);
	if (!c)
		return 0;
	c->next = NULL;
	c->size = size;
	if (a->cur)
		a->cur->next = c;
	else
		a->first = c;
	a->cur = c;
	a->pos = (char *)c->data;
	a->end = a->pos + size;
	a->held += total;
	return 1;
}

char *arena_bytes(struct arena *a, size_t n)
{
	/* A fresh arena has no chunk: even 0 bytes take one, so that NULL
	   keeps meaning "over the limit". */
	if ((!a->pos || (size_t)(a->end - a->pos) < n) && !grow(a, n))
		return NULL;
	char *p = a->pos;
	a->pos += n;
	a->used += n;
	return p;
}

void *arena_alloc(struct arena *a, size_t n)
{
	const size_t align = _Alignof(max_align_t);
	size_t pad = a->pos ? (size_t)(-(uintptr_t)a->pos) & (align - 1) : 0;
	if (!a->pos || (size_t)(a->end - a->pos) < pad ||
	    (size_t)(a->end - a->pos) - pad < n) {
		/* A fresh chunk's data is aligned, so it needs no padding. */
		if (!grow(a, n))
			return NULL;
		pad = 0;
	}
	a->pos += pad;
	a->used += pad;
	return arena_bytes(a, n);
}

char *arena_copy(struct arena *a, const void *src, size_t n)
{
	char *p = arena_bytes(a, n);
	if (p && n)
		memcpy(p, src, n);
	return p;
}
