/*
 * evict.h - the shard's eviction policy: S3-FIFO.
 *
 * S3-FIFO is from Juncheng Yang, Yazhuo Zhang, Ziyue Qiu, Yao Yue and
 * Rashmi Vinayak, "FIFO queues are all you need for cache eviction",
 * SOSP 2023. Three FIFO queues:
 *   - small (S, ~10% of the item memory): every new item enters here;
 *   - main (M, the rest): items that proved themselves;
 *   - ghost (G): hashes of items recently evicted from S, no data.
 * Each item has a 2-bit access count, bumped on hits and capped at 3.
 * To evict: while S holds at least 10% of the item memory, take S's head:
 * if it was accessed at least once since it came in, move it to M's tail
 * with its count cleared, else evict it and remember its hash in G. Else
 * take M's head: if its count is non-zero, decrement it and reinsert it at
 * M's tail, else evict it. A new key found in G enters M directly.
 * (The paper's text says "accessed at least once" for the S->M move; its
 * pseudo-code tests freq > 1. We follow the text.) Every reinsertion or
 * move is paid for by an earlier hit or insert, so eviction is O(1)
 * amortized, with no thread and no sampling.
 *
 * Queue sizes are in bytes (heap_usable of the items) because items vary
 * in size and the limit is in bytes.
 *
 * The ghost is a fixed array of 64-bit entries (32-bit fingerprint, 32-bit
 * insertion sequence number) in 4-way buckets: an entry counts only while
 * fewer than `window` ghosts were added after it, window = the number of
 * items cached now (the paper sizes G like M, in objects). It starts at
 * 256 entries and doubles whenever the cached items outnumber twice its
 * entries, so it holds 1/2..1 entry per cached item, up to a cap set at
 * init from the shard's limit: one entry per 512 bytes of it (256..4M
 * entries), i.e. 1.6% of the limit. Its memory is charged against the
 * limit. A ghost of half the items at least, less than the paper's
 * |G| = |M|: a memory trade we chose, not the paper's. (It used to be
 * allocated at the cap at once: 16 MiB resident for an empty -m 1024.)
 *
 * Ownership: the queues link the shard's items through their qnext/qprev
 * fields and own nothing; the ghost array comes from the shard's heap.
 * struct evict lives in the shard (init/deinit). Owner thread only.
 */
#ifndef RINGCACHE_SHARD_EVICT_H
#define RINGCACHE_SHARD_EVICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shard/heap.h"
#include "shard/item.h"

struct evict_fifo {
	struct item *head; /* oldest */
	struct item *tail; /* newest */
	size_t bytes;      /* heap_usable() of its items */
	size_t count;
};

struct evict {
	heap_t *heap;
	struct evict_fifo small, main;
	uint64_t *ghost;   /* heap block of ghost_mask+1 entries; 0 = empty */
	size_t ghost_mask;
	size_t ghost_cap;  /* most entries it may grow to */
	size_t ghost_bytes;
	uint32_t ghost_seq;
};

/* Allocates the first, smallest ghost; its cap comes from the shard's
   limit. 0 or -ENOMEM. */
int evict_init(struct evict *e, heap_t *heap, size_t mem_limit);
void evict_deinit(struct evict *e);

/*
 * Queues a newly linked item (usable = heap_usable(it)): into M if its
 * hash is a ghost (the ghost entry is consumed), else into S.
 */
void evict_insert(struct evict *e, struct item *it, size_t usable,
		  uint64_t hash);
/* Takes an item out of its queue (delete, replace, expiry). */
void evict_remove(struct evict *e, struct item *it);

/* A hit: the access count, capped at 3. */
static inline void evict_touch(struct item *it)
{
	if ((it->bits & ITEM_FREQ) < ITEM_FREQ_MAX)
		it->bits++;
	it->bits |= ITEM_FETCHED;
}

/*
 * Picks the next item to evict under a byte budget for items (S's share is
 * 10% of it), takes it out of its queue and returns it; *from_small says
 * which queue it left (the caller adds its hash to the ghost if it was
 * really evicted from S). Never returns `protect` (the item being stored).
 * NULL if no other item is left.
 */
struct item *evict_victim(struct evict *e, size_t budget,
			  const struct item *protect, bool *from_small);
/* Remembers the hash of an item evicted from S. */
void evict_ghost_add(struct evict *e, uint64_t hash);

/* Any queued item, taken out of its queue (flush, destroy), or NULL. */
struct item *evict_pop(struct evict *e);

#endif
