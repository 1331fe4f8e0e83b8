/*
 * table.c - the shard's open-addressing hash table with incremental
 * growth; see table.h for the layout and the reasons.
 *
 * Invariants:
 *   - cur holds items and NULLs only, at most 3/4 full (or one slot short
 *     of full if a growth allocation failed), so every probe ends at a NULL.
 *   - old (while migrating) holds items, NULLs and TOMB; no insert goes
 *     there, so its NULLs are those it had when it stopped being current,
 *     and every probe in it ends too.
 *   - an item is in exactly one of the two arrays.
 */
#include "shard/table.h"

#include <errno.h>
#include <string.h>

/* Marks a moved or removed slot of the old array; never dereferenced. */
static char tomb_mark;
#define TOMB ((struct item *)(void *)&tomb_mark)

static size_t array_size(size_t slots)
{
	return slots * (sizeof(struct item *) + sizeof(uint32_t));
}

static int array_alloc(struct table *t, struct table_array *a, size_t slots)
{
	void *p = heap_zalloc(t->heap, array_size(slots));
	if (!p)
		return -ENOMEM;
	a->slot = p;
	a->hash = (uint32_t *)(a->slot + slots);
	a->mask = slots - 1;
	t->bytes += heap_usable(p);
	return 0;
}

static void array_free(struct table *t, struct table_array *a)
{
	if (!a->slot)
		return;
	t->bytes -= heap_usable(a->slot);
	heap_free(a->slot);
	a->slot = NULL;
	a->hash = NULL;
	a->mask = 0;
}

int table_init(struct table *t, heap_t *heap)
{
	*t = (struct table){ .heap = heap };
	return array_alloc(t, &t->cur, TABLE_MIN_SLOTS);
}

void table_deinit(struct table *t)
{
	array_free(t, &t->old);
	array_free(t, &t->cur);
	t->count = 0;
}

void table_clear(struct table *t)
{
	array_free(t, &t->old);
	t->cursor = 0;
	t->count = 0;
	struct table_array small;
	if (t->cur.mask + 1 > TABLE_MIN_SLOTS &&
	    array_alloc(t, &small, TABLE_MIN_SLOTS) == 0) {
		array_free(t, &t->cur);
		t->cur = small;
		return;
	}
	memset(t->cur.slot, 0, array_size(t->cur.mask + 1));
}

/* Index of the slot holding the key in a, or SIZE_MAX. */
static size_t probe_key(const struct table_array *a, uint32_t h,
			const char *key, uint8_t klen)
{
	for (size_t i = h & a->mask;; i = (i + 1) & a->mask) {
		struct item *it = a->slot[i];
		if (!it)
			return SIZE_MAX;
		if (it != TOMB && a->hash[i] == h && item_match(it, key, klen))
			return i;
	}
}

/* Index of the slot holding this very item in a, or SIZE_MAX. */
static size_t probe_item(const struct table_array *a, uint32_t h,
			 const struct item *want)
{
	for (size_t i = h & a->mask;; i = (i + 1) & a->mask) {
		struct item *it = a->slot[i];
		if (!it)
			return SIZE_MAX;
		if (it == want)
			return i;
	}
}

static void array_put(struct table_array *a, struct item *it, uint32_t h)
{
	size_t i = h & a->mask;
	while (a->slot[i])
		i = (i + 1) & a->mask;
	a->slot[i] = it;
	a->hash[i] = h;
}

/*
 * Empties slot i of the current array by shifting later members of its
 * probe run back (no tombstones): an entry at j may move to the hole at i
 * when its home is not in the cyclic range (i, j].
 */
static void array_delete(struct table_array *a, size_t i)
{
	size_t j = i;
	for (;;) {
		j = (j + 1) & a->mask;
		if (!a->slot[j])
			break;
		size_t home = a->hash[j] & a->mask;
		if (((j - home) & a->mask) >= ((j - i) & a->mask)) {
			a->slot[i] = a->slot[j];
			a->hash[i] = a->hash[j];
			i = j;
		}
	}
	a->slot[i] = NULL;
}

bool table_migrate(struct table *t, size_t slots)
{
	if (!t->old.slot)
		return false;
	size_t n = t->old.mask + 1;
	while (slots-- && t->cursor < n) {
		struct item *it = t->old.slot[t->cursor];
		if (it && it != TOMB) {
			array_put(&t->cur, it, t->old.hash[t->cursor]);
			t->old.slot[t->cursor] = TOMB;
		}
		t->cursor++;
	}
	if (t->cursor < n)
		return true;
	array_free(t, &t->old);
	t->cursor = 0;
	return false;
}

struct item *table_find(struct table *t, uint64_t hash, const char *key,
			uint8_t klen)
{
	uint32_t h = (uint32_t)hash;
	size_t i = probe_key(&t->cur, h, key, klen);
	if (i != SIZE_MAX)
		return t->cur.slot[i];
	if (t->old.slot) {
		i = probe_key(&t->old, h, key, klen);
		if (i != SIZE_MAX)
			return t->old.slot[i];
	}
	return NULL;
}

static bool over_load(const struct table *t, size_t count)
{
	return count > (t->cur.mask + 1) / 4 * 3;
}

size_t table_grow_bytes(const struct table *t)
{
	if (t->old.slot || !over_load(t, t->count + 1))
		return 0;
	return array_size(2 * (t->cur.mask + 1));
}

/* Makes a twice-as-large array current; the old one drains by migration. */
static void start_growth(struct table *t)
{
	if (t->old.slot) /* cannot happen at 16 slots a step; stay safe */
		table_migrate(t, SIZE_MAX);
	struct table_array next;
	if (array_alloc(t, &next, 2 * (t->cur.mask + 1)) < 0)
		return; /* keep filling cur up to its last slot */
	t->old = t->cur;
	t->cur = next;
	t->cursor = 0;
}

int table_insert(struct table *t, struct item *it, uint64_t hash)
{
	if (over_load(t, t->count + 1))
		start_growth(t);
	if (t->count + 1 >= t->cur.mask + 1)
		return -ENOMEM;
	array_put(&t->cur, it, (uint32_t)hash);
	t->count++;
	table_migrate(t, TABLE_MIGRATE_STEP);
	return 0;
}

void table_remove(struct table *t, struct item *it, uint64_t hash)
{
	uint32_t h = (uint32_t)hash;
	size_t i = probe_item(&t->cur, h, it);
	if (i != SIZE_MAX) {
		array_delete(&t->cur, i);
		t->count--;
	} else if (t->old.slot &&
		   (i = probe_item(&t->old, h, it)) != SIZE_MAX) {
		t->old.slot[i] = TOMB;
		t->count--;
	}
	table_migrate(t, TABLE_MIGRATE_STEP);
}
