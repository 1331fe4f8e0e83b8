/*
 * table.c - the shard's index: open addressing over 64-bit slots with
 * tombstones and incremental rebuilds; see table.h for the layout and the
 * reasons.
 *
 * Invariants:
 *  - a key is in at most one slot of cur and old together;
 *  - every entry of cur is reachable from its home slot without crossing
 *    an empty slot (a remove leaves a tombstone unless the run ends right
 *    after it), and the same holds in old;
 *  - count = entries in cur + entries in old; tombs = tombstones in cur;
 *  - while migrating, old's slots below `cursor` are empty or tombstones.
 */
#include "shard/table.h"

#include <errno.h>
#include <string.h>

/* A rebuild starts when entries + tombstones pass LOAD_NUM/LOAD_DEN (0.85). */
#define LOAD_NUM 17u
#define LOAD_DEN 20u

static inline size_t home(uint64_t hash, size_t n)
{
	return (size_t)(((hash & 0xFFFFFFFFu) * (uint64_t)n) >> 32);
}

static inline uint64_t tag_of(uint64_t hash)
{
	return table_entry(hash, 0);
}

static int array_alloc(struct table *t, struct table_array *a, size_t n)
{
	a->slot = heap_zalloc(t->heap, n * sizeof(uint64_t));
	if (!a->slot)
		return -ENOMEM;
	a->n = n;
	t->bytes += heap_usable(a->slot);
	return 0;
}

static void array_free(struct table *t, struct table_array *a)
{
	if (!a->slot)
		return;
	t->bytes -= heap_usable(a->slot);
	heap_free(a->slot);
	a->slot = NULL;
	a->n = 0;
}

int table_init(struct table *t, heap_t *heap, table_match_fn match,
	       table_hash_fn rehash, void *ctx)
{
	*t = (struct table){ .heap = heap, .match = match, .rehash = rehash,
			     .ctx = ctx };
	return array_alloc(t, &t->cur, TABLE_MIN_SLOTS);
}

void table_deinit(struct table *t)
{
	array_free(t, &t->cur);
	array_free(t, &t->old);
}

void table_clear(struct table *t)
{
	array_free(t, &t->old);
	t->count = t->tombs = t->cursor = 0;
	if (t->cur.n > TABLE_MIN_SLOTS) {
		struct table_array a;
		if (array_alloc(t, &a, TABLE_MIN_SLOTS) == 0) {
			array_free(t, &t->cur);
			t->cur = a;
			return;
		}
	}
	memset(t->cur.slot, 0, t->cur.n * sizeof(uint64_t));
}

/* The slot of key in array a, or NULL. */
static uint64_t *find_in(struct table *t, struct table_array *a,
			 uint64_t hash, const char *key, uint8_t klen)
{
	uint64_t tag = tag_of(hash);
	size_t i = home(hash, a->n);
	for (;;) {
		uint64_t e = a->slot[i];
		if (e == TABLE_EMPTY)
			return NULL;
		if ((e & ~TABLE_LOC_MASK) == tag && e != TABLE_TOMB &&
		    t->match(t->ctx, e & TABLE_LOC_MASK, key, klen))
			return &a->slot[i];
		if (++i == a->n)
			i = 0;
	}
}

uint64_t *table_find(struct table *t, uint64_t hash, const char *key,
		     uint8_t klen)
{
	uint64_t *s = find_in(t, &t->cur, hash, key, klen);
	if (!s && t->old.slot)
		s = find_in(t, &t->old, hash, key, klen);
	return s;
}

static uint64_t *find_loc_in(struct table_array *a, uint64_t hash,
			     uint64_t want)
{
	size_t i = home(hash, a->n);
	for (;;) {
		uint64_t e = a->slot[i];
		if (e == TABLE_EMPTY)
			return NULL;
		if (e == want)
			return &a->slot[i];
		if (++i == a->n)
			i = 0;
	}
}

uint64_t *table_find_loc(struct table *t, uint64_t hash, uint64_t loc)
{
	uint64_t want = table_entry(hash, loc);
	uint64_t *s = find_loc_in(&t->cur, hash, want);
	if (!s && t->old.slot)
		s = find_loc_in(&t->old, hash, want);
	return s;
}

/* Puts an entry into cur (which has room): the first empty slot or
   tombstone of its probe run. */
static void put(struct table *t, uint64_t hash, uint64_t entry)
{
	size_t i = home(hash, t->cur.n);
	while (table_is_entry(t->cur.slot[i]))
		if (++i == t->cur.n)
			i = 0;
	if (t->cur.slot[i] == TABLE_TOMB)
		t->tombs--;
	t->cur.slot[i] = entry;
}

/* Empties a slot of array a, leaving a tombstone only where a later
   entry of the run may need it. Returns whether a tombstone was left. */
static bool clear_slot(struct table_array *a, uint64_t *slot)
{
	size_t i = (size_t)(slot - a->slot);
	size_t next = i + 1 == a->n ? 0 : i + 1;
	if (a->slot[next] != TABLE_EMPTY) {
		*slot = TABLE_TOMB;
		return true;
	}
	*slot = TABLE_EMPTY;
	return false;
}

/* Empties the tombstones just before an emptied slot i of cur. */
static void shed_tombs(struct table *t, size_t i)
{
	for (;;) {
		i = i == 0 ? t->cur.n - 1 : i - 1;
		if (t->cur.slot[i] != TABLE_TOMB)
			return;
		t->cur.slot[i] = TABLE_EMPTY;
		t->tombs--;
	}
}

void table_remove(struct table *t, uint64_t *slot)
{
	t->count--;
	if (slot >= t->cur.slot && slot < t->cur.slot + t->cur.n) {
		if (clear_slot(&t->cur, slot))
			t->tombs++;
		else
			shed_tombs(t, (size_t)(slot - t->cur.slot));
	} else {
		*slot = TABLE_TOMB; /* old's tombstones go with the array */
	}
}

bool table_migrate(struct table *t, size_t slots)
{
	if (!t->old.slot)
		return false;
	while (slots-- && t->cursor < t->old.n) {
		uint64_t e = t->old.slot[t->cursor++];
		if (!table_is_entry(e))
			continue; /* empty slots stay empty: probes end there */
		t->old.slot[t->cursor - 1] = TABLE_TOMB;
		uint64_t loc = e & TABLE_LOC_MASK;
		put(t, t->rehash(t->ctx, loc), e);
	}
	if (t->cursor < t->old.n)
		return true;
	array_free(t, &t->old);
	t->cursor = 0;
	return false;
}

static size_t rebuild_slots(size_t count)
{
	size_t n = count * 15 / 8 + 1;
	return n < TABLE_MIN_SLOTS ? TABLE_MIN_SLOTS : n;
}

size_t table_grow_bytes(const struct table *t)
{
	if ((t->count + t->tombs + 1) * LOAD_DEN <= t->cur.n * LOAD_NUM)
		return 0;
	return rebuild_slots(t->count + 1) * sizeof(uint64_t);
}

/* Starts a rebuild: cur becomes old, a new cur sized for the entries. */
static int rebuild(struct table *t)
{
	if (t->old.slot)
		table_migrate(t, t->old.n); /* finish the previous one */
	struct table_array a;
	if (array_alloc(t, &a, rebuild_slots(t->count + 1)) < 0)
		return -ENOMEM;
	t->old = t->cur;
	t->cur = a;
	t->cursor = 0;
	t->tombs = 0;
	return 0;
}

int table_insert(struct table *t, uint64_t hash, uint64_t loc)
{
	if ((t->count + t->tombs + 1) * LOAD_DEN > t->cur.n * LOAD_NUM &&
	    rebuild(t) < 0)
		return -ENOMEM;
	put(t, hash, table_entry(hash, loc));
	t->count++;
	table_migrate(t, TABLE_MIGRATE_STEP);
	return 0;
}
