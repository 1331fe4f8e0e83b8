/*
 * arena.c - chunked bump allocation; see arena.h.
 *
 * A chunk is a header followed by its bytes; a regular chunk is chunk_size
 * bytes in all, header included, so that a chunk of CONNMEM_BLOCK comes
 * from the worker's free list. Allocation bumps `pos` in the current chunk;
 * when the request does not fit, a new chunk is taken that is at least as
 * large as the request, so a 1 MiB value lands in one piece. Only the first
 * chunk of a batch may be taken past the budget: a regular one always (it
 * is what lets any connection answer a small request), and one larger
 * chunk after at most a regular one within the reserve (one large answer,
 * maybe after a few short replies such as the END of a get whose value
 * comes from another shard); see connmem.h. Reset gives every chunk back.
 */
#include "net/arena.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

struct arena_chunk {
	struct arena_chunk *next;
	size_t total;         /* bytes of the chunk, header included */
	max_align_t data[];
};

void arena_init(struct arena *a, struct connmem *mem, size_t chunk_size,
		size_t limit)
{
	memset(a, 0, sizeof(*a));
	a->mem = mem;
	a->chunk_size = chunk_size;
	a->limit = limit;
}

void arena_deinit(struct arena *a)
{
	struct arena_chunk *c = a->first;
	while (c) {
		struct arena_chunk *next = c->next;
		connmem_put(a->mem, c, c->total);
		c = next;
	}
	a->first = a->cur = NULL;
	a->pos = a->end = NULL;
	a->held = a->used = 0;
}

void arena_reset(struct arena *a)
{
	arena_deinit(a);
}

/* Makes room for n bytes in a new chunk; false when over the limit or (not
   `granted`) the budget. */
static __attribute__((noinline)) /* a new chunk is a call away (read_one_local) */
int grow_chunk(struct arena *a, size_t n, bool granted)
{
	const size_t hdr = sizeof(struct arena_chunk);
	size_t total = a->chunk_size;
	if (n > total - hdr) {
		total = hdr + n;
		if (total < n)
			return 0;
	}
	if (a->held > a->limit || total > a->limit - a->held)
		return 0;
	enum connmem_level level = CONNMEM_BUDGET;
	if (granted || (!a->first && total == a->chunk_size))
		level = CONNMEM_MUST;
	else if (a->held <= a->chunk_size)
		level = CONNMEM_RESERVE;
	struct arena_chunk *c = connmem_get(a->mem, total, level);
	if (!c)
		return 0;
	c->next = NULL;
	c->total = total;
	if (a->cur)
		a->cur->next = c;
	else
		a->first = c;
	a->cur = c;
	a->pos = (char *)c->data;
	a->end = (char *)c + total;
	a->held += total;
	return 1;
}

static int grow(struct arena *a, size_t n)
{
	return grow_chunk(a, n, false);
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

char *arena_copy_granted(struct arena *a, const void *src, size_t n)
{
	if (a->pos && (size_t)(a->end - a->pos) >= n)
		return arena_copy(a, src, n);
	if (!grow_chunk(a, n, true))
		return NULL;
	return arena_copy(a, src, n);
}

char *arena_copy(struct arena *a, const void *src, size_t n)
{
	char *p = arena_bytes(a, n);
	if (p && n)
		memcpy(p, src, n);
	return p;
}
