/*
 * item.h - the layout of one cached item, shared by the files of the shard
 * (table.c, evict.c, shard.c). Nothing outside shard/ includes it.
 *
 * An item is ONE block of its shard's heap: a 40-byte header, then the key,
 * then the value as raw bytes (no trailing "\r\n"; the protocol layer adds
 * it when composing). The block is owned by the shard from its allocation
 * in shard.c until heap_free() on delete, replace, expiry, eviction or
 * flush; only the shard's thread reads or writes it.
 *
 *   0               8               16              24
 *   +---------------+---------------+---------------+
 *   | qnext         | qprev         | cas           |
 *   +-------+-------+-------+---+---+---------------+...
 *   |exptime| flags | vlen  |kl |bit|sp | key ... | value ...
 *   +-------+-------+-------+---+---+---+
 *   24      28      32      36  37  38  40
 *
 *   qnext, qprev  the S3-FIFO queue (small or main) the item is in;
 *                 qprev points toward the head (older), qnext toward the
 *                 tail (newer). Doubly linked so that a delete is O(1).
 *   cas           unique across the process (see shard.c); its order is
 *                 also the order of stores, which delayed flushes use.
 *   exptime       absolute Unix seconds (fits until 2106); 0 = never.
 *   flags         the client's 32-bit flags, opaque.
 *   vlen, klen    value and key length.
 *   bits          ITEM_FREQ (2-bit access count, capped at 3), ITEM_MAIN
 *                 (which queue), ITEM_FETCHED (read at least once).
 *   sp            spare.
 *
 * There is no hash-chain pointer and no stored hash: the table is open
 * addressing and keeps the low 32 hash bits beside each slot (table.h).
 * A 20-byte key and 100-byte value make a 160-byte block, one of
 * mimalloc's size classes exactly.
 */
#ifndef RINGCACHE_SHARD_ITEM_H
#define RINGCACHE_SHARD_ITEM_H

#include <stdint.h>
#include <string.h>
#include <xxhash.h>

struct item {
	struct item *qnext;
	struct item *qprev;
	uint64_t cas;
	uint32_t exptime;
	uint32_t flags;
	uint32_t vlen;
	uint8_t klen;
	uint8_t bits;
	uint16_t spare;
	char data[];
};

_Static_assert(sizeof(struct item) == 40, "item header must stay 40 bytes");

#define ITEM_FREQ     0x03u
#define ITEM_MAIN     0x04u
#define ITEM_FETCHED  0x08u
#define ITEM_FREQ_MAX 3u

static inline char *item_key(struct item *it) { return it->data; }
static inline char *item_value(struct item *it) { return it->data + it->klen; }

static inline size_t item_size(size_t klen, size_t vlen)
{
	return sizeof(struct item) + klen + vlen;
}

static inline uint64_t item_hash(const struct item *it)
{
	return XXH3_64bits(it->data, it->klen);
}

static inline int item_match(const struct item *it, const char *key,
			     uint8_t klen)
{
	return it->klen == klen && memcmp(it->data, key, klen) == 0;
}

#endif
