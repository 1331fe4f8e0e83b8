/*
 * test_table.c - the shard's index (shard/table.c): lookups across
 * incremental rebuilds, removes during migration and tombstones, heavy
 * collisions, location moves, when slot pointers go stale and the memory
 * it reports.
 *
 * The "items" are just numbered keys: key i lives at a made-up location
 * (segment 1 + i / 2^20, offset i % 2^20), and the match callback
 * decodes i back from the location. Each test makes its own heap
 * and table and frees them before heap_destroy(), which in sanitizer
 * builds (RINGCACHE_LIBC_HEAP) aborts if a block was forgotten.
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shard/shard.h"
#include "shard/table.h"

struct fixture {
	heap_t *heap;
	struct table t;
	uint64_t *hash;
	bool *present;
	bool bad;        /* hashes collide on purpose */
	size_t n;
};

static uint64_t loc_of(size_t i)
{
	return table_loc((uint32_t)(1 + (i >> 20)), (uint32_t)(i & 0xFFFFF));
}

static size_t index_of(uint64_t loc)
{
	return (size_t)(table_loc_seg(loc) - 1) << 20 | table_loc_off(loc);
}

static int key_of(size_t i, char *key)
{
	return snprintf(key, 32, "key:%zu", i);
}

static bool match_cb(void *ctx, uint64_t loc, const char *key, uint8_t klen)
{
	(void)ctx;
	char k[32];
	int n = key_of(index_of(loc), k);
	return n == klen && memcmp(k, key, klen) == 0;
}

static void fx_init(struct fixture *f, size_t n, bool bad)
{
	f->heap = heap_create();
	CU_ASSERT_FATAL(f->heap != NULL);
	CU_ASSERT_FATAL(table_init(&f->t, f->heap, f) == 0);
	f->hash = calloc(n, sizeof(*f->hash));
	f->present = calloc(n, sizeof(*f->present));
	CU_ASSERT_FATAL(f->hash && f->present);
	f->n = n;
	f->bad = bad;
	for (size_t i = 0; i < n; i++) {
		char key[32];
		int klen = key_of(i, key);
		/* bad: seven tags (so seven homes), in long runs */
		f->hash[i] = bad ? (uint64_t)(i % 7) << 28 :
				   shard_hash(key, (size_t)klen);
	}
}

static int add(struct fixture *f, size_t i)
{
	int rc = table_insert(&f->t, f->hash[i], loc_of(i));
	if (rc == 0)
		f->present[i] = true;
	return rc;
}

static uint64_t *slot_of(struct fixture *f, size_t i)
{
	char key[32];
	int klen = key_of(i, key);
	return table_find(&f->t, f->hash[i], match_cb, key, (uint8_t)klen);
}

static bool found(struct fixture *f, size_t i)
{
	uint64_t *s = slot_of(f, i);
	return s && (*s & TABLE_LOC_MASK) == loc_of(i) &&
	       table_find_loc(&f->t, f->hash[i], loc_of(i)) == s;
}

static bool absent(struct fixture *f, size_t i)
{
	return slot_of(f, i) == NULL &&
	       table_find_loc(&f->t, f->hash[i], loc_of(i)) == NULL;
}

static bool right(struct fixture *f, size_t i)
{
	return f->present[i] ? found(f, i) : absent(f, i);
}

static void del(struct fixture *f, size_t i)
{
	uint64_t *s = slot_of(f, i);
	CU_ASSERT_FATAL(s != NULL);
	table_remove(&f->t, s);
	f->present[i] = false;
}

static void fx_deinit(struct fixture *f)
{
	table_deinit(&f->t);
	CU_ASSERT(table_bytes(&f->t) == 0);
	free(f->hash);
	free(f->present);
	heap_destroy(f->heap);
}

/* Every key findable after every insert while a growth is under way. */
static void test_grow_every_step(void)
{
	struct fixture f;
	fx_init(&f, 20000, false);
	size_t growths = 0, bad = 0;
	for (size_t i = 0; i < f.n; i++) {
		bool was = table_migrating(&f.t);
		CU_ASSERT_FATAL(add(&f, i) == 0);
		growths += !was && table_migrating(&f.t);
		if (!table_migrating(&f.t) && !was)
			continue;
		for (size_t j = 0; j <= i; j++)
			bad += !found(&f, j);
	}
	CU_ASSERT(bad == 0);
	CU_ASSERT(growths >= 8);
	CU_ASSERT(table_count(&f.t) == f.n);
	fx_deinit(&f);
}

/* 100k keys, several growths, checked after each growth and at the end. */
static void test_grow_100k(void)
{
	struct fixture f;
	fx_init(&f, 100000, false);
	size_t bad = 0, growths = 0;
	for (size_t i = 0; i < f.n; i++) {
		bool was = table_migrating(&f.t);
		CU_ASSERT_FATAL(add(&f, i) == 0);
		growths += !was && table_migrating(&f.t);
		bad += !found(&f, i) + !found(&f, i / 2);
	}
	for (size_t i = 0; i < f.n; i++)
		bad += !found(&f, i);
	CU_ASSERT(bad == 0);
	CU_ASSERT(growths >= 10);
	while (table_migrate(&f.t, 1000))
		;
	/* 8 bytes a slot, load between 7/10 and 17/20 */
	CU_ASSERT(table_bytes(&f.t) >= 8 * table_slots(&f.t));
	CU_ASSERT(table_slots(&f.t) >= f.n * 20 / 17 && table_slots(&f.t) <= f.n * 8 / 5);
	fx_deinit(&f);
}

/* Removes from both arrays while migrating; nothing else gets lost. */
static void test_delete_during_migration(void)
{
	struct fixture f;
	fx_init(&f, 30000, false);
	size_t bad = 0, i = 0, removed_while_moving = 0;
	for (; i < f.n; i++) {
		CU_ASSERT_FATAL(add(&f, i) == 0);
		if (!table_migrating(&f.t) || i % 3)
			continue;
		size_t d = i / 2; /* an older key, often in the old array */
		if (f.present[d] && found(&f, d)) {
			del(&f, d);
			removed_while_moving++;
			bad += !absent(&f, d);
		}
		for (size_t j = 0; j <= i; j += 7)
			bad += !right(&f, j);
	}
	for (size_t j = 0; j < f.n; j++)
		bad += !right(&f, j);
	CU_ASSERT(bad == 0);
	CU_ASSERT(removed_while_moving > 100);
	CU_ASSERT(table_count(&f.t) == f.n - removed_while_moving);
	fx_deinit(&f);
}

/* A slot pointer of a lookup still holds its key's entry for as long as
   table_edits() has not changed, through inserts, removes (which shift
   the long runs of colliding keys), moves and migrations; and the moves
   (which shift nothing) leave it unchanged. */
static void test_edits(void)
{
	struct fixture f;
	fx_init(&f, 3000, true);
	size_t stale = 0, kept = 0, changed = 0;
	uint64_t x = 88172645463325252u;
	for (size_t round = 0; round < 30000; round++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		size_t i = (size_t)(x % f.n), j = (size_t)((x >> 32) % f.n);
		uint64_t *sj = f.present[j] ? slot_of(&f, j) : NULL;
		size_t e = table_edits(&f.t);
		if (!f.present[i]) {
			CU_ASSERT_FATAL(add(&f, i) == 0);
		} else if (round % 3) {
			del(&f, i);
		} else {
			table_move(slot_of(&f, i), loc_of(i));
		}
		if (round % 5 == 0)
			table_migrate(&f.t, 16);
		if (!sj)
			continue;
		if (table_edits(&f.t) != e) {
			changed++;
			continue;
		}
		kept++;
		stale += !f.present[j] || (*sj & TABLE_LOC_MASK) != loc_of(j);
	}
	CU_ASSERT(stale == 0);
	CU_ASSERT(kept > 1000 && changed > 1000);
	fx_deinit(&f);
}

/* Long probe runs, wrap-around and backward-shift removes, checked
   after removes and through 20 rounds of re-adding and removing. */
static void test_collisions(void)
{
	struct fixture f;
	fx_init(&f, 3000, true);
	size_t bad = 0;
	for (size_t i = 0; i < f.n; i++)
		CU_ASSERT_FATAL(add(&f, i) == 0);
	for (size_t i = 0; i < f.n; i += 2) {
		del(&f, i);
		if (i % 64 == 0)
			for (size_t j = 0; j < f.n; j++)
				bad += !right(&f, j);
	}
	for (size_t j = 0; j < f.n; j++)
		bad += !right(&f, j);
	CU_ASSERT(bad == 0);
	CU_ASSERT(table_count(&f.t) == f.n / 2);
	for (int round = 0; round < 20; round++) {
		for (size_t i = 0; i < f.n; i += 2)
			CU_ASSERT_FATAL(add(&f, i) == 0);
		for (size_t i = 0; i < f.n; i += 2)
			del(&f, i);
	}
	for (size_t j = 0; j < f.n; j++)
		bad += !right(&f, j);
	CU_ASSERT(bad == 0);
	CU_ASSERT(table_count(&f.t) == f.n / 2);
	fx_deinit(&f);
}

/* A moved entry is found at its new location, not the old one. */
static void test_move(void)
{
	struct fixture f;
	fx_init(&f, 500, false);
	for (size_t i = 0; i < 250; i++)
		CU_ASSERT_FATAL(add(&f, i) == 0);
	/* key i now claims the location of key i + 250 (unused) */
	for (size_t i = 0; i < 250; i += 3) {
		uint64_t *s = slot_of(&f, i);
		CU_ASSERT_FATAL(s != NULL);
		table_move(s, loc_of(i + 250));
		CU_ASSERT(table_find_loc(&f.t, f.hash[i], loc_of(i)) == NULL);
		CU_ASSERT(table_find_loc(&f.t, f.hash[i], loc_of(i + 250)) == s);
	}
	CU_ASSERT(table_count(&f.t) == 250);
	fx_deinit(&f);
}

/* Bytes follow the arrays: both during migration, one after, min after
   a clear. */
static void test_memory(void)
{
	struct fixture f;
	fx_init(&f, 1000, false);
	size_t initial = table_bytes(&f.t);
	CU_ASSERT(initial >= 8 * TABLE_MIN_SLOTS);
	CU_ASSERT(table_grow_bytes(&f.t) == 0);
	/* grow past a few rebuilds first, so that the next one's old array
	   takes more than one insert's migration step */
	size_t i = 0;
	for (; i < 600; i++)
		CU_ASSERT_FATAL(add(&f, i) == 0);
	while (table_migrate(&f.t, 1))
		;
	size_t first = table_bytes(&f.t);
	CU_ASSERT(table_slots(&f.t) > 2 * TABLE_MIGRATE_STEP);
	while (table_grow_bytes(&f.t) == 0) {
		CU_ASSERT_FATAL(add(&f, i) == 0);
		i++;
	}
	size_t grow = table_grow_bytes(&f.t);
	CU_ASSERT(grow == 8 * ((i + 1) * 4 / 3 + 1));
	CU_ASSERT_FATAL(add(&f, i) == 0);
	i++;
	CU_ASSERT(table_migrating(&f.t));
	CU_ASSERT(table_bytes(&f.t) >= first + grow);
	while (table_migrate(&f.t, 1))
		;
	CU_ASSERT(table_bytes(&f.t) >= grow && table_bytes(&f.t) < first + grow);
	for (size_t j = 0; j < i; j++)
		CU_ASSERT(found(&f, j));
	table_clear(&f.t);
	CU_ASSERT(table_count(&f.t) == 0);
	CU_ASSERT(table_bytes(&f.t) == initial);
	CU_ASSERT(absent(&f, 0));
	fx_deinit(&f);
}

int test_table_register(void)
{
	CU_pSuite s = CU_add_suite("table", NULL, NULL);
	if (!s)
		return -1;
	if (!CU_add_test(s, "every key findable at every migration step",
			 test_grow_every_step) ||
	    !CU_add_test(s, "100k keys, several growths", test_grow_100k) ||
	    !CU_add_test(s, "deletes during migration",
			 test_delete_during_migration) ||
	    !CU_add_test(s, "collisions and backward shift", test_collisions) ||
	    !CU_add_test(s, "slot pointers while edits stand", test_edits) ||
	    !CU_add_test(s, "moves keep the key", test_move) ||
	    !CU_add_test(s, "memory reporting", test_memory))
		return -1;
	return 0;
}
