/*
 * connmem.h - the memory a worker lends its connections while they have
 * requests in flight, and the daemon-wide budget over it
 * (-o conn_mem_max).
 *
 * An idle connection holds no buffer: its read buffer, its arena chunks and
 * the iovec array of a send are lent by the worker (connmem_get) when a
 * request needs them and given back (connmem_put) as soon as the request's
 * bytes are parsed or its answer is sent. Blocks of the two common sizes
 * (CONNMEM_BLOCK for read buffers and arena chunks, CONNMEM_SMALL for a
 * send's iovec array) go to a bounded free list of the worker, so a steady
 * connection allocates nothing and freed pages are not given back to the
 * OS and faulted in again on every request (the heaps return empty pages at
 * once, see shard/heap.c; with too short a list that cost a third more CPU
 * per request); past the bound they go back to the heap. connmem_tick(),
 * once a second, frees the blocks that stayed unused on the list for the
 * whole second (above a floor), so the list follows the worker's
 * concurrency and an idle worker keeps only a few.
 *
 * The budget. Every lent byte is charged to the worker's `held`, which is
 * what `stats` reports as conn_buffer_bytes. The daemon-wide budget is one
 * atomic counter of bytes *leased* to the workers; a worker takes budget
 * from it in units of `unit` bytes and gives back what it holds beyond two
 * units. So the atomic is touched only when a worker's lease must grow or
 * shrink by a unit (64 KiB at most), never per request: a steady load
 * moves `held` inside the lease with plain integer arithmetic on the
 * worker's own counters. This was chosen over a fixed budget / t per
 * worker because a single 1 MiB set (its read buffer, and a copy of the
 * value when the key lives on another shard) must work under the default
 * 16 MiB budget at any -t, and because one worker's clients may need the
 * whole budget while the others are idle. What the leases can waste is at
 * most two units per worker, bounded by conn_mem_max / 8 in all.
 *
 * Refusal comes in three levels (enum connmem_level):
 *  - CONNMEM_BUDGET: refused when the charge would take the leases past the
 *    budget. A large read buffer (a value waiting for the rest of its
 *    bytes), an arena chunk beyond a batch's first (more answers queued
 *    for a reader that is not taking them).
 *  - CONNMEM_RESERVE: refused past twice the budget. The first chunk of a
 *    batch larger than a block: one large answer for a connection that
 *    holds nothing else but a block of short replies. The reserve (a second budget's
 *    worth) is what lets ordinary clients fetch large values while partial
 *    values and slow readers have taken the budget, and many clients at
 *    once each fetch one.
 *  - CONNMEM_MUST: granted whatever the totals are (and still charged):
 *    the first block of each kind a connection needs to make progress at
 *    all, and bytes that only move from one charged buffer to another.
 *    They are bounded by connections with a request in flight times a few
 *    CONNMEM_BLOCKs.
 * Each refusal bumps the shared `pressure` counter, which every worker
 * looks at once per loop pass to close its slow readers (conn_reclaim).
 * So connection memory stays under 2 x conn_mem_max plus the MUST blocks.
 *
 * Threads: struct connmem belongs to one worker thread, like its heap;
 * struct connmem_budget is shared and touched only through atomics.
 * Errors: NULL for a refused or failed allocation.
 */
#ifndef RINGCACHE_CONNMEM_H
#define RINGCACHE_CONNMEM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shard/heap.h"

/* A read buffer or an arena chunk of the ordinary size, header included. */
#define CONNMEM_BLOCK 16384
/* A send's msghdr and iovec array (see conn.c). */
#define CONNMEM_SMALL 1088
/* Blocks this large or larger are mapped, not taken from the heap. */
#define CONNMEM_MAP_MIN ((size_t)CONNMEM_BLOCK + 1)
/* Most free blocks the workers keep of each size, together (each keeps its
   share, at least CONNMEM_POOL_MIN: connections are dealt evenly, so is
   their concurrency), and how many one keeps however long they stay
   unused. */
#define CONNMEM_POOL_MAX 256
#define CONNMEM_POOL_MIN 32
#define CONNMEM_POOL_FLOOR 8

enum connmem_level {
	CONNMEM_BUDGET,   /* within conn_mem_max */
	CONNMEM_RESERVE,  /* within 2 x conn_mem_max */
	CONNMEM_MUST,     /* always (still charged) */
};

/* One per daemon, shared by its workers. */
struct connmem_budget {
	size_t max;                /* cfg->conn_mem_max */
	atomic_size_t leased;      /* bytes of budget the workers hold */
	atomic_uint pressure;      /* bumped on every refusal */
};

struct connmem_pool {
	void *head;                /* free blocks, linked through their
				      first word */
	uint32_t n;
	uint32_t low;              /* least n since the last tick */
};

struct connmem {
	heap_t *heap;              /* the worker's */
	struct connmem_budget *budget;
	size_t unit;               /* lease granularity */
	size_t lease;              /* budget bytes this worker holds */
	size_t held;               /* bytes lent to connections now */
	uint64_t refused;          /* allocations refused for the budget */
	uint32_t pool_max;         /* free blocks kept per size, at most */
	struct connmem_pool block, small;
};

void connmem_budget_init(struct connmem_budget *b, size_t max);

/* Prepares a worker's lender over `heap` (caller memory); nworkers sizes
   the lease unit and the free lists. */
void connmem_init(struct connmem *m, heap_t *heap, struct connmem_budget *b,
		  uint32_t nworkers);
/* Frees the free lists and gives the lease back. Every lent block must
   have been put back. */
void connmem_deinit(struct connmem *m);

/*
 * Lends `size` bytes and charges them. Returns NULL when the level's limit
 * would be passed (counted in `refused`, `pressure` bumped), or when the
 * heap is out of memory. The block stays valid until connmem_put with the
 * same size.
 */
void *connmem_get(struct connmem *m, size_t size, enum connmem_level level);
/* Gives back a block lent by connmem_get(m, size, ...). */
void connmem_put(struct connmem *m, void *p, size_t size);

/* Bytes on the free lists. */
static inline size_t connmem_pooled(const struct connmem *m)
{
	return (size_t)m->block.n * CONNMEM_BLOCK + (size_t)m->small.n * CONNMEM_SMALL;
}

/* Frees free-list blocks that were not used since the last call (keeping
   CONNMEM_POOL_FLOOR); the worker calls it about once a second. */
void connmem_tick(struct connmem *m);

#endif
