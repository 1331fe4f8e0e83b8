/*
 * arena.h - a request-scoped bump allocator for one connection.
 *
 * A connection parses a batch of requests, composes their responses and
 * holds its cross-shard messages in its arena. Nothing in an arena is ever
 * freed piecemeal: when nothing of the batch is in flight any more (every
 * response sent, every cross-shard reply back), the connection calls
 * arena_reset() and all of it goes at once.
 *
 * Memory comes in chunks from the heap given to arena_init() (the
 * worker's heap), so only that heap's thread may use the arena. A chunk is
 * never moved, so a pointer handed out stays valid until the next
 * arena_reset() or arena_deinit(). Consecutive arena_bytes() calls that fit
 * in the current chunk are adjacent in memory, which lets the sender merge
 * them into one iovec.
 *
 * The arena is bounded: once `limit` bytes of chunks are held, allocation
 * returns NULL. The first chunk is kept across resets so a steady connection
 * allocates nothing.
 */
#ifndef RINGCACHE_ARENA_H
#define RINGCACHE_ARENA_H

#include <stddef.h>
#include "shard/heap.h"

struct arena_chunk;

struct arena {
	heap_t *heap;            /* the owning worker's heap */
	struct arena_chunk *first;  /* kept across resets */
	struct arena_chunk *cur;    /* allocation happens here */
	char *pos, *end;            /* free space of cur */
	size_t held;                /* bytes of chunks held, headers included */
	size_t used;                /* bytes handed out since the last reset */
	size_t chunk_size;          /* size of a regular chunk */
	size_t limit;               /* most bytes of chunks held at once */
};

/* Prepares an arena in caller memory; allocates nothing yet. */
void arena_init(struct arena *a, heap_t *heap, size_t chunk_size,
		size_t limit);
/* Releases every chunk. */
void arena_deinit(struct arena *a);
/* Drops everything handed out; keeps the first chunk. */
void arena_reset(struct arena *a);

/* n bytes aligned for any object; NULL when over the limit. */
void *arena_alloc(struct arena *a, size_t n);
/* n bytes with no alignment (response bytes); NULL when over the limit. */
char *arena_bytes(struct arena *a, size_t n);
/* Copies n bytes in; NULL when over the limit. */
char *arena_copy(struct arena *a, const void *src, size_t n);

/* Bytes handed out since the last reset. */
static inline size_t arena_used(const struct arena *a)
{
	return a->used;
}

#endif
