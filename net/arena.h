/*
 * arena.h - a request-scoped bump allocator for one connection.
 *
 * A connection parses a batch of requests, composes their responses and
 * holds its cross-shard messages in its arena. Nothing in an arena is ever
 * freed piecemeal: when nothing of the batch is in flight any more (every
 * response sent, every cross-shard reply back), the connection calls
 * arena_reset() and all of it goes at once.
 *
 * Memory comes in chunks lent by the worker's connection memory given to
 * arena_init() (net/connmem.h), so only that worker's thread may use the
 * arena. A chunk is never moved, so a pointer handed out stays valid until
 * the next arena_reset() or arena_deinit(). Consecutive arena_bytes() calls
 * that fit in the current chunk are adjacent in memory, which lets the
 * sender merge them into one iovec.
 *
 * The arena is bounded: once `limit` bytes of chunks are held, allocation
 * returns NULL; it also returns NULL when the daemon's connection-memory
 * budget refuses a chunk. The first chunk of a batch is always granted
 * when it is a regular one (charged, but not refusable), so a connection
 * can answer a small request whatever the budget says, and the first larger
 * chunk of a batch is granted within the budget's reserve
 * (net/connmem.h). Reset gives every chunk back: an idle
 * connection's arena holds no memory (the worker's free list makes taking
 * a chunk again cheap).
 */
#ifndef RINGCACHE_ARENA_H
#define RINGCACHE_ARENA_H

#include <stddef.h>
#include "net/connmem.h"

struct arena_chunk;

struct arena {
	struct connmem *mem;        /* the owning worker's lender */
	struct arena_chunk *first;  /* NULL while nothing is held */
	struct arena_chunk *cur;    /* allocation happens here */
	char *pos, *end;            /* free space of cur */
	size_t held;                /* bytes of chunks held, headers included */
	size_t used;                /* bytes handed out since the last reset */
	size_t chunk_size;          /* size of a regular chunk, header
				       included (CONNMEM_BLOCK for a pooled
				       one) */
	size_t limit;               /* most bytes of chunks held at once */
};

/* Prepares an arena in caller memory; allocates nothing yet. */
void arena_init(struct arena *a, struct connmem *mem, size_t chunk_size,
		size_t limit);
/* Releases every chunk. */
void arena_deinit(struct arena *a);
/* Drops everything handed out and gives every chunk back. */
void arena_reset(struct arena *a);

/* n bytes aligned for any object; NULL when over the limit. */
void *arena_alloc(struct arena *a, size_t n);
/* n bytes with no alignment (response bytes); NULL when over the limit. */
char *arena_bytes(struct arena *a, size_t n);
/* Copies n bytes in; NULL when over the limit. */
char *arena_copy(struct arena *a, const void *src, size_t n);
/* Copies n bytes in past the budget (not past the limit): for bytes that
   move out of memory already charged, which is given back right after
   (a value leaving the read buffer for another shard). */
char *arena_copy_granted(struct arena *a, const void *src, size_t n);

/* Free bytes of the current chunk: an arena_bytes() of up to this many
   takes no new chunk. */
static inline size_t arena_room(const struct arena *a)
{
	return a->pos ? (size_t)(a->end - a->pos) : 0;
}

/* Gives back the last n bytes of the latest arena_bytes(), which took at
   least n: for a caller that took room for the most it might write. */
static inline void arena_trim(struct arena *a, size_t n)
{
	a->pos -= n;
	a->used -= n;
}

/* Bytes handed out since the last reset. */
static inline size_t arena_used(const struct arena *a)
{
	return a->used;
}

/* Bytes of chunks held, headers included. */
static inline size_t arena_held(const struct arena *a)
{
	return a->held;
}

#endif
