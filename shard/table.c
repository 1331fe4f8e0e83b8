/*
 * table.c - the shard's index: linear probing over 64-bit slots whose tag
 * gives the home slot, backward-shift removes, incremental rebuilds; see
 * table.h for the layout and the reasons.
 *
 * Invariants:
 *  - a key is in at most one slot of cur and old together;
 *  - every entry of cur is reachable from its home slot without crossing
 *    an empty slot (a remove shifts later entries of the run back), and cur
 *    holds no tombstone; old may hold tombstones, never moves an entry,
 *    and every entry of old is reachable from its home in old;
 *  - count = entries in cur + entries in old;
 *  - while migrating, old's slots below `cursor` hold no entry.
 */
#include "shard/table.h"

#include <errno.h>
#include <string.h>

/* A rebuild starts when the entries pass LOAD_NUM/LOAD_DEN (0.85). */
#define LOAD_NUM 17u
#define LOAD_DEN 20u

#define tag_of table__tag
#define home table__home
#define next table__next

/* An array of at least n slots; it takes every slot of the block the heap
   gives (large blocks are rounded up to the allocator's size classes, by
   up to ~15 %, and the limit is charged for the whole block anyway). */
static int array_alloc(struct table *t, struct table_array *a, size_t n)
{
	a->slot = heap_zalloc(t->heap, n * sizeof(uint64_t));
	if (!a->slot)
		return -ENOMEM;
	size_t usable = heap_usable(a->slot);
	a->n = usable / sizeof(uint64_t);
	memset(a->slot + n, 0, (a->n - n) * sizeof(uint64_t));
	t->bytes += usable;
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

int table_init(struct table *t, heap_t *heap, void *ctx)
{
	*t = (struct table){ .heap = heap, .ctx = ctx };
	return array_alloc(t, &t->cur, TABLE_MIN_SLOTS);
}

void table_deinit(struct table *t)
{
	array_free(t, &t->cur);
	array_free(t, &t->old);
}

void table_clear(struct table *t)
{
	t->edits++;
	array_free(t, &t->old);
	t->count = t->cursor = 0;
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

static uint64_t *find_loc_in(struct table_array *a, uint64_t want)
{
	for (size_t i = home(tag_of(want), a->n);; i = next(i, a->n)) {
		uint64_t e = a->slot[i];
		if (e == TABLE_EMPTY)
			return NULL;
		if (e == want)
			return &a->slot[i];
	}
}

uint64_t *table_find_loc(struct table *t, uint64_t hash, uint64_t loc)
{
	uint64_t want = table_entry(hash, loc);
	uint64_t *s = find_loc_in(&t->cur, want);
	if (!s && t->old.slot)
		s = find_loc_in(&t->old, want);
	return s;
}

/* Puts an entry into cur (which has room): the first empty slot of its
   probe run. */
static void put(struct table *t, uint64_t e)
{
	size_t i = home(tag_of(e), t->cur.n);
	while (t->cur.slot[i] != TABLE_EMPTY)
		i = next(i, t->cur.n);
	t->cur.slot[i] = e;
}

/* Whether slot i lies cyclically in (a, b]. */
static inline bool between(size_t a, size_t i, size_t b)
{
	return a <= b ? (a < i && i <= b) : (a < i || i <= b);
}

/*
 * Empties slot i of cur and shifts back the later entries of its run that
 * may move (those whose home is not in (i, j]), so every entry stays
 * reachable from its home (Knuth's Algorithm R).
 */
static void shift_remove(struct table_array *a, size_t i)
{
	size_t j = i;
	for (;;) {
		j = next(j, a->n);
		uint64_t e = a->slot[j];
		if (e == TABLE_EMPTY)
			break;
		if (between(i, home(tag_of(e), a->n), j))
			continue; /* its home is past the hole: it stays */
		a->slot[i] = e;
		i = j;
	}
	a->slot[i] = TABLE_EMPTY;
}

void table_remove(struct table *t, uint64_t *slot)
{
	t->edits++;
	t->count--;
	if (slot >= t->cur.slot && slot < t->cur.slot + t->cur.n)
		shift_remove(&t->cur, (size_t)(slot - t->cur.slot));
	else
		*slot = TABLE_TOMB; /* old's tombstones go with the array */
}

bool table_migrate(struct table *t, size_t slots)
{
	if (!t->old.slot)
		return false;
	t->edits++;
	while (slots-- && t->cursor < t->old.n) {
		uint64_t e = t->old.slot[t->cursor++];
		if (!table_is_entry(e))
			continue; /* empty slots stay empty: probes end there */
		t->old.slot[t->cursor - 1] = TABLE_TOMB;
		put(t, e);
	}
	if (t->cursor < t->old.n)
		return true;
	array_free(t, &t->old);
	t->cursor = 0;
	return false;
}

/* Slots asked for a new array: a load of 3/4 before the allocator's
   rounding (a migration moves entries without touching items, so growing
   by 1.15-1.3x at a time is cheap). */
static size_t rebuild_slots(size_t count)
{
	size_t n = count * 4 / 3 + 1;
	return n < TABLE_MIN_SLOTS ? TABLE_MIN_SLOTS : n;
}

size_t table_grow_bytes(const struct table *t)
{
	if ((t->count + 1) * LOAD_DEN <= t->cur.n * LOAD_NUM)
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
	return 0;
}

int table_insert(struct table *t, uint64_t hash, uint64_t loc)
{
	t->edits++;
	if ((t->count + 1) * LOAD_DEN > t->cur.n * LOAD_NUM && rebuild(t) < 0)
		return -ENOMEM;
	put(t, table_entry(hash, loc));
	t->count++;
	table_migrate(t, TABLE_MIGRATE_STEP);
	return 0;
}
