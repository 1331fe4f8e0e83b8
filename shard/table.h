/*
 * table.h - the shard's index: key -> item location (segment id, offset).
 *
 * One 64-bit word per slot:
 *
 *   63               40 39             20 19            0
 *   +------------------+-----------------+---------------+
 *   | tag (24)         | segment id (20) | offset (20)   |
 *   +------------------+-----------------+---------------+
 *
 * The tag is bits 8..31 of the key's 64-bit hash (the high 32 bits route
 * the key to its shard, shard.h), and it also places the entry: the home
 * slot of a table of n slots is (tag * n) >> 24. So a probe touches an
 * item only when 24 bits of its hash match, and an entry's home is known
 * from the entry alone, which lets a remove shift the rest of its probe
 * run back (no tombstones) and a rebuild move entries without rehashing
 * their keys. Up to 2^24 slots every slot can be a home; beyond that
 * (over ~9M items in one shard) homes are 2^-24 of the table apart and a
 * probe compares a few more keys. 0 is an empty slot (segment ids start at
 * 1, so no entry is 0).
 *
 * Open addressing with linear probing over a table of any size. When the
 * entries pass 17/20 of the slots, a new array sized for them at a load of
 * 3/4 (plus whatever the allocator rounds the block up to) takes over and
 * the old one is emptied
 * incrementally: every insert moves TABLE_MIGRATE_STEP old slots and
 * table_migrate() moves more for the owner's idle ticks; a remove from the
 * old array leaves a tombstone (1) there, so the cursor's walk stays
 * simple. Lookups look in the current array, then in the old one. That is
 * about 8/0.65..8/0.85 = 9.4..12.3 bytes of index per item.
 *
 * Ownership: the table owns its arrays (from the heap given to
 * table_init), never the items. A struct table lives in the caller's
 * memory (init/deinit). A slot pointer returned by a lookup is valid until
 * the next insert, remove, migrate or clear (a remove shifts entries):
 * while table_edits() has not changed.
 * Only the owning shard's thread calls it. Errors are negative errno
 * values.
 */
#ifndef RINGCACHE_SHARD_TABLE_H
#define RINGCACHE_SHARD_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shard/heap.h"

#define TABLE_MIN_SLOTS    64u
#define TABLE_MIGRATE_STEP 64u /* old slots moved per insert: a migration ends
				   before the entries grow by 2% */
#define TABLE_EMPTY        0u
#define TABLE_TOMB         1u
#define TABLE_LOC_BITS     40u
#define TABLE_LOC_MASK     ((UINT64_C(1) << TABLE_LOC_BITS) - 1)
#define TABLE_SEG_MAX      ((1u << 20) - 1)

/* Whether the item at loc has this key. */
typedef bool (*table_match_fn)(void *ctx, uint64_t loc, const char *key,
			       uint8_t klen);

struct table_array {
	uint64_t *slot;  /* heap block of n entries */
	size_t n;
};

struct table {
	heap_t *heap;             /* the shard's heap: arrays come from it */
	void *ctx;                /* for the match functions of lookups */
	struct table_array cur;   /* where inserts go */
	struct table_array old;   /* slot == NULL unless migrating */
	size_t cursor;            /* next old slot to move */
	size_t count;             /* live entries in both arrays */
	size_t bytes;             /* heap_usable() of both arrays */
	size_t edits;             /* inserts, removes, migrations, clears */
};

static inline uint64_t table_loc(uint32_t seg_id, uint32_t off)
{
	return (uint64_t)seg_id << 20 | off;
}
static inline uint32_t table_loc_seg(uint64_t loc) { return (uint32_t)(loc >> 20); }
static inline uint32_t table_loc_off(uint64_t loc) { return (uint32_t)(loc & 0xFFFFF); }
static inline uint64_t table_entry(uint64_t hash, uint64_t loc)
{
	return ((hash >> 8) & 0xFFFFFF) << TABLE_LOC_BITS | loc;
}
static inline bool table_is_entry(uint64_t e) { return e > TABLE_TOMB; }

/* Allocates the first array. Returns 0 or -ENOMEM. */
int table_init(struct table *t, heap_t *heap, void *ctx);
/* Frees the arrays. */
void table_deinit(struct table *t);
/* Forgets every entry and goes back to the first size. */
void table_clear(struct table *t);

static inline uint64_t table__tag(uint64_t e) { return e >> TABLE_LOC_BITS; }

static inline size_t table__home(uint64_t tag, size_t n)
{
	return (size_t)((tag * (uint64_t)n) >> 24);
}

static inline size_t table__next(size_t i, size_t n)
{
	return i + 1 == n ? 0 : i + 1;
}

/* The slot of key in array a, or NULL. Inline, so that a constant match
   function is inlined into the probe loop. */
static inline uint64_t *table__find_in(struct table_array *a, uint64_t tag,
				       table_match_fn match, void *ctx,
				       const char *key, uint8_t klen)
{
	for (size_t i = table__home(tag, a->n);; i = table__next(i, a->n)) {
		uint64_t e = a->slot[i];
		if (e == TABLE_EMPTY)
			return NULL;
		if (table__tag(e) == tag && e != TABLE_TOMB &&
		    match(ctx, e & TABLE_LOC_MASK, key, klen))
			return &a->slot[i];
	}
}

/* A match that takes any entry of the tag (table_peek's guess). */
static inline bool table__any(void *ctx, uint64_t loc, const char *key,
			      uint8_t klen)
{
	(void)ctx, (void)loc, (void)key, (void)klen;
	return true;
}

/* The slot of the entry with this key, or NULL. `match` should be the
   function given to table_init (it is passed again so that the compiler
   can inline it). */
static inline uint64_t *table_find(struct table *t, uint64_t hash,
				   table_match_fn match, const char *key,
				   uint8_t klen)
{
	uint64_t tag = table__tag(table_entry(hash, 0));
	uint64_t *s = table__find_in(&t->cur, tag, match, t->ctx, key, klen);
	if (!s && t->old.slot)
		s = table__find_in(&t->old, tag, match, t->ctx, key, klen);
	return s;
}
/* The slot holding exactly this location for this hash, or NULL. */
uint64_t *table_find_loc(struct table *t, uint64_t hash, uint64_t loc);
/*
 * Adds an entry for a key that is not in the table (the caller checked).
 * May start a migration. Returns 0, or -ENOMEM if a new array was needed
 * and could not be had (the entry is not added).
 */
int table_insert(struct table *t, uint64_t hash, uint64_t loc);
/* The location of the first entry of the current array whose tag is
   hash's (its key unchecked), or 0: a guess for a prefetch. */
static inline uint64_t table_peek(const struct table *t, uint64_t hash)
{
	uint64_t tag = table__tag(table_entry(hash, 0));
	/* the probe only reads the array */
	uint64_t *s = table__find_in((struct table_array *)&t->cur, tag,
				     table__any, NULL, NULL, 0);
	return s ? *s & TABLE_LOC_MASK : 0;
}

/* Starts loading the cache line of hash's home slot in the current array,
   without waiting for it: the first stage of a prefetch (table_peek, once
   the line is there, is the second). */
static inline void table_prefetch(const struct table *t, uint64_t hash)
{
	uint64_t tag = table__tag(table_entry(hash, 0));
	__builtin_prefetch(&t->cur.slot[table__home(tag, t->cur.n)]);
}

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
/* Changes whenever a slot pointer of a lookup may have gone stale. */
static inline size_t table_edits(const struct table *t) { return t->edits; }
static inline size_t table_count(const struct table *t) { return t->count; }

/* The current array's slots, for a sweep (slots may be empty: check
   table_is_entry; a remove shifts a later entry into the removed slot). */
static inline size_t table_slots(const struct table *t) { return t->cur.n; }
static inline uint64_t *table_at(struct table *t, size_t i)
{
	return &t->cur.slot[i];
}

#endif
