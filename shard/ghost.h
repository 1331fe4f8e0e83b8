/*
 * ghost.h - S3-FIFO's ghost queue: fingerprints of keys recently evicted
 * from the small queue, no data.
 *
 * S3-FIFO is from Juncheng Yang, Yazhuo Zhang, Ziyue Qiu, Yao Yue and
 * Rashmi Vinayak, "FIFO queues are all you need for cache eviction",
 * SOSP 2023: a new key found in the ghost skips the small queue and enters
 * the main one (shard.c has the policy, at segment granularity).
 *
 * The ghost is a fixed array of 64-bit entries (32-bit fingerprint, 32-bit
 * insertion sequence number) in 4-way buckets: an entry counts only while
 * fewer than `window` ghosts were added after it, window = the number of
 * items cached now (the paper sizes G like M, in objects). It starts at
 * 256 entries and doubles whenever the cached items outnumber twice its
 * entries and it has had as many additions as entries (a shard that does
 * not evict keeps the smallest ghost: 2 KiB instead of 4 bytes an item),
 * so it holds 1/2..1 entry per cached item, up to a cap set at
 * init from the shard's limit: one entry per 1 KiB of it (256..4M
 * entries), i.e. 0.8% of the limit (measured: at 1 entry per 512 B, a
 * -m 16 shard of 100 B values held 3% fewer items, miss ratio 0.1419 vs
 * 0.1413 with the smaller cap). Its memory is a table outside the
 * limit, as memcached's hash table is outside its -m: at most limit/128
 * (measured: charging it cost a -t 8 -m 16 shard of 100-1000 B values
 * 0.8% of its items, which put it below memcached's).
 *
 * Ownership: the array comes from the shard's heap; struct ghost lives in
 * the shard (init/deinit). Owner thread only. Errors: -ENOMEM.
 */
#ifndef RINGCACHE_SHARD_GHOST_H
#define RINGCACHE_SHARD_GHOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shard/heap.h"

struct ghost {
	heap_t *heap;
	uint64_t *slot;    /* heap block of mask+1 entries; 0 = empty */
	size_t mask;
	size_t cap;        /* most entries it may grow to */
	size_t bytes;      /* heap_usable(slot) */
	uint32_t seq;
};

/* Allocates the first, smallest array; its cap comes from the shard's
   limit. 0 or -ENOMEM. */
int ghost_init(struct ghost *g, heap_t *heap, size_t mem_limit);
void ghost_deinit(struct ghost *g);

/* Remembers the hash of a key evicted from the small queue. */
void ghost_add(struct ghost *g, uint64_t hash);
/* True (and the entry is dropped) if the hash is a ghost fewer than
   `window` additions old. */
bool ghost_take(struct ghost *g, uint64_t hash, size_t window);
/* Doubles the array when `items` outnumber twice its entries and it has
   been filled once (a failed allocation keeps the old one: the ghost is a
   hint). */
void ghost_grow(struct ghost *g, size_t items);

/* The shard's limit changed: the cap follows it (a larger array than the
   new cap is kept until the shard is recreated; it is only a hint). */
void ghost_set_limit(struct ghost *g, size_t mem_limit);

#endif
