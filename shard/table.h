/*
 * table.h - the shard's index: key -> item location (segment id, offset).
 *
 * One 64-bit word per slot:
 *
 *   63          44 43                 20 19            0
 *   +-------------+---------------------+---------------+
 *   | tag (20)    | segment id (24)     | offset (20)   |
 *   +-------------+---------------------+---------------+
 *
 * The tag is bits 32..51 of the key's 64-bit hash (the top bits route the
 * key to its shard, the low 32 bits pick the slot), so a probe touches an
 * item only when 20 more bits of its hash match. 0 is an empty slot and 1
 * a tombstone (segment ids start at 1, so no entry is either).
 *
 * Open addressing with linear probing over a table of any size: the home
 * slot is (low 32 hash bits * slots) >> 32. A remove leaves a tombstone
 * (unless the next slot is empty, then it and the tombstones before it
 * become empty): moving entries back would need their hashes, which the
 * slots do not keep. When live entries plus tombstones pass 4/5 of the
 * slots (17/20), a new array sized for the live entries at a load of 8/15 takes
 * over (so the table grows by 1.5x, or shrinks, or just sheds its
 * tombstones), and the old one is emptied incrementally: every insert
 * moves TABLE_MIGRATE_STEP old slots and table_migrate() moves more for
 * the owner's idle ticks. Moving an entry needs its hash: the table asks
 * the shard to hash the key at that location (`rehash`). Lookups look in
 * the current array, then in the old one. That is 8/0.53..8/0.85 = 9.4..15
 * bytes of index per item.
 *
 * Ownership: the table owns its arrays (from the heap given to
 * table_init), never the items. A struct table lives in the caller's
 * memory (init/deinit). A slot pointer returned by a lookup is valid until
 * the next insert, remove, migrate or clear. Only the owning shard's
 * thread calls it. Errors are negative errno values.
 */
#ifndef RINGCACHE_SHARD_TABLE_H
#define RINGCACHE_SHARD_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shard/heap.h"

#define TABLE_MIN_SLOTS    64u
#define TABLE_MIGRATE_STEP 16u /* old slots moved per insert */
#define TABLE_EMPTY        0u
#define TABLE_TOMB         1u
#define TABLE_LOC_BITS     44u
#define TABLE_LOC_MASK     ((UINT64_C(1) << TABLE_LOC_BITS) - 1)

/* Whether the item at loc has this key. */
typedef bool (*table_match_fn)(void *ctx, uint64_t loc, const char *key,
			       uint8_t klen);
/* The 64-bit hash of the key of the item at loc. */
typedef uint64_t (*table_hash_fn)(void *ctx, uint64_t loc);

struct table_array {
	uint64_t *slot;  /* heap block of n entries */
	size_t n;
};

struct table {
	heap_t *heap;             /* the shard's heap: arrays come from it */
	void *ctx;                /* for match and rehash */
	table_match_fn match;
	table_hash_fn rehash;
	struct table_array cur;   /* where inserts go */
	struct table_array old;   /* slot == NULL unless migrating */
	size_t cursor;            /* next old slot to move */
	size_t count;             /* live entries in both arrays */
	size_t tombs;             /* tombstones in cur */
	size_t bytes;             /* heap_usable() of both arrays */
};

static inline uint64_t table_loc(uint32_t seg_id, uint32_t off)
{
	return (uint64_t)seg_id << 20 | off;
}
static inline uint32_t table_loc_seg(uint64_t loc) { return (uint32_t)(loc >> 20); }
static inline uint32_t table_loc_off(uint64_t loc) { return (uint32_t)(loc & 0xFFFFF); }
static inline uint64_t table_entry(uint64_t hash, uint64_t loc)
{
	return ((hash >> 32) & 0xFFFFF) << TABLE_LOC_BITS | loc;
}
static inline bool table_is_entry(uint64_t e) { return e > TABLE_TOMB; }

/* Allocates the first array. Returns 0 or -ENOMEM. */
int table_init(struct table *t, heap_t *heap, table_match_fn match,
	       table_hash_fn rehash, void *ctx);
/* Frees the arrays. */
void table_deinit(struct table *t);
/* Forgets every entry and goes back to the first size. */
void table_clear(struct table *t);

/* The slot of the entry with this key, or NULL. */
uint64_t *table_find(struct table *t, uint64_t hash, const char *key,
		     uint8_t klen);
/* The slot holding exactly this location for this hash, or NULL. */
uint64_t *table_find_loc(struct table *t, uint64_t hash, uint64_t loc);
/*
 * Adds an entry for a key that is not in the table (the caller checked).
 * May start a migration. Returns 0, or -ENOMEM if a new array was needed
 * and could not be had (the entry is not added).
 */
int table_insert(struct table *t, uint64_t hash, uint64_t loc);
/* Points a slot found by a lookup at a new location (the item moved). */
static inline void table_move(uint64_t *slot, uint64_t loc)
{
	*slot = (*slot & ~TABLE_LOC_MASK) | loc;
}
/* Removes the entry in a slot found by a lookup. */
void table_remove(struct table *t, uint64_t *slot);

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

/* The current array's slots, for a sweep (entries may be empty or
   tombstones: check table_is_entry). */
static inline size_t table_slots(const struct table *t) { return t->cur.n; }
static inline uint64_t *table_at(struct table *t, size_t i)
{
	return &t->cur.slot[i];
}

#endif
