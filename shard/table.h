/*
 * table.h - the shard's hash table of items: key -> struct item *.
 *
 * Open addressing with linear probing. Each slot is an item pointer plus
 * the low 32 bits of the key's hash in a parallel array, 12 bytes a slot.
 * Why open addressing rather than chaining: a chain needs a next pointer
 * in every item, and that 8 bytes is what keeps the item header at 40
 * bytes (shard/item.h), which puts a 20+100-byte item in mimalloc's
 * 160-byte class instead of the 192-byte one. The hash array lets a probe
 * compare 32-bit hashes in one cache line and touch an item only when its
 * hash matches. The table grows at a load of 3/4, so slots cost 16..32
 * bytes per item (12 / load), and a miss probes a few slots.
 *
 * Indexing uses the LOW bits of the 64-bit hash (the high 32 bits route a
 * key to its shard, see shard_route()); storing the low 32 bits is enough
 * to index any table up to 2^32 slots and to move items without rehashing
 * their keys.
 *
 * Growth is incremental: when an insert would pass the load limit, a
 * twice-as-large array becomes the current one and the old array is kept;
 * every insert and remove then moves TABLE_MIGRATE_STEP old slots, and
 * table_migrate() moves more for the owner's idle ticks. Lookups and
 * removes look in the current array, then in the old one. A moved or
 * removed slot of the old array becomes a tombstone (never NULL) so that a
 * probe through the old array still reaches items displaced past it. The
 * current array never holds tombstones: a remove there shifts the rest of
 * the probe run back.
 *
 * Ownership: the table owns its arrays (allocated from the heap given to
 * table_init), never the items; the caller allocates and frees items. A
 * struct table lives in the caller's memory (init/deinit). Only the owning
 * shard's thread calls it. Errors are negative errno values.
 */
#ifndef RINGCACHE_SHARD_TABLE_H
#define RINGCACHE_SHARD_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shard/heap.h"
#include "shard/item.h"

#define TABLE_MIN_SLOTS    64u
#define TABLE_MIGRATE_STEP 16u /* old slots moved per insert or remove */

/* One array of slots: item pointers and their hashes' low 32 bits. */
struct table_array {
	struct item **slot; /* heap block: mask+1 pointers, then the hashes */
	uint32_t *hash;     /* inside the same block as slot */
	size_t mask;        /* slots - 1; slots is a power of two */
};

struct table {
	heap_t *heap;             /* the shard's heap: arrays come from it */
	struct table_array cur;   /* where inserts go */
	struct table_array old;   /* slot == NULL unless migrating */
	size_t cursor;            /* next old slot to move */
	size_t count;             /* items in both arrays */
	size_t bytes;             /* heap_usable() of both arrays */
};

/* Allocates the first array. Returns 0 or -ENOMEM. */
int table_init(struct table *t, heap_t *heap);
/* Frees the arrays (not the items). */
void table_deinit(struct table *t);
/* Forgets every item (the caller frees them) and shrinks back to the
   first size when it can. */
void table_clear(struct table *t);

/* The item with this key, or NULL. */
struct item *table_find(struct table *t, uint64_t hash, const char *key,
			uint8_t klen);
/*
 * Adds an item whose key is not in the table (the caller checked). May
 * start a growth. Returns 0, or -ENOMEM if the table is full and could not
 * grow.
 */
int table_insert(struct table *t, struct item *it, uint64_t hash);
/* Removes this item (by identity); it must be in the table. */
void table_remove(struct table *t, struct item *it, uint64_t hash);

/* Moves up to `slots` old slots. Returns true while still migrating. */
bool table_migrate(struct table *t, size_t slots);
static inline bool table_migrating(const struct table *t)
{
	return t->old.slot != NULL;
}

/* Bytes the next insert may allocate (a new array), for admission. */
size_t table_grow_bytes(const struct table *t);
static inline size_t table_bytes(const struct table *t) { return t->bytes; }
static inline size_t table_count(const struct table *t) { return t->count; }

/* Slots of the current array, and the item in slot i (NULL if empty), for
   a sweep over the table (only meaningful while not migrating). */
static inline size_t table_slots(const struct table *t)
{
	return t->cur.mask + 1;
}
static inline struct item *table_at(const struct table *t, size_t i)
{
	return i <= t->cur.mask ? t->cur.slot[i] : NULL;
}

#endif
