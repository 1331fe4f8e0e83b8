/*
 * test_table.c - the shard's hash table (shard/table.c): lookups across
 * incremental growth, removes during migration, heavy collisions and the
 * memory it reports.
 *
 * Each test makes its own heap, table and items and frees all of them
 * before heap_destroy(), which in sanitizer builds (RINGCACHE_LIBC_HEAP)
 * aborts if a block was forgotten.
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
	struct item **items;
	uint64_t *hash;
	size_t n;
};

static void fx_init(struct fixture *f, size_t n)
{
	f->heap = heap_create();
	CU_ASSERT_FATAL(f->heap != NULL);
	CU_ASSERT_FATAL(table_init(&f->t, f->heap) == 0);
	f->items = calloc(n, sizeof(*f->items));
	f->hash = calloc(n, sizeof(*f->hash));
	CU_ASSERT_FATAL(f->items && f->hash);
	f->n = n;
}

/* Item i with key "key:<i>"; hash is shard_hash unless `bad` forces
   collisions in the low bits. */
static struct item *mk_item(struct fixture *f, size_t i, bool bad)
{
	char key[32];
	int klen = snprintf(key, sizeof(key), "key:%zu", i);
	struct item *it = heap_zalloc(f->heap, item_size((size_t)klen, 0));
	CU_ASSERT_FATAL(it != NULL);
	it->klen = (uint8_t)klen;
	memcpy(item_key(it), key, (size_t)klen);
	f->items[i] = it;
	f->hash[i] = bad ? (uint64_t)(i % 5) << 40 | (i % 3) * 64
			 : shard_hash(key, (size_t)klen);
	return it;
}

static int add(struct fixture *f, size_t i, bool bad)
{
	struct item *it = mk_item(f, i, bad);
	return table_insert(&f->t, it, f->hash[i]);
}

static bool found(struct fixture *f, size_t i)
{
	struct item *it = f->items[i];
	return table_find(&f->t, f->hash[i], item_key(it), it->klen) == it;
}

static bool absent(struct fixture *f, size_t i)
{
	char key[32];
	int klen = snprintf(key, sizeof(key), "key:%zu", i);
	return table_find(&f->t, f->hash[i], key, (uint8_t)klen) == NULL;
}

static void fx_deinit(struct fixture *f)
{
	for (size_t i = 0; i < f->n; i++)
		heap_free(f->items[i]);
	table_deinit(&f->t);
	CU_ASSERT(table_bytes(&f->t) == 0);
	free(f->items);
	free(f->hash);
	heap_destroy(f->heap);
}

/* Every key findable after every insert while a growth is under way. */
static void test_grow_every_step(void)
{
	struct fixture f;
	fx_init(&f, 20000);
	size_t growths = 0, bad = 0;
	for (size_t i = 0; i < f.n; i++) {
		bool was = table_migrating(&f.t);
		CU_ASSERT_FATAL(add(&f, i, false) == 0);
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
	fx_init(&f, 100000);
	size_t bad = 0, growths = 0;
	for (size_t i = 0; i < f.n; i++) {
		bool was = table_migrating(&f.t);
		CU_ASSERT_FATAL(add(&f, i, false) == 0);
		growths += !was && table_migrating(&f.t);
		bad += !found(&f, i) + !found(&f, i / 2);
	}
	for (size_t i = 0; i < f.n; i++)
		bad += !found(&f, i);
	CU_ASSERT(bad == 0);
	CU_ASSERT(growths >= 10);
	while (table_migrate(&f.t, 1000))
		;
	/* 12 bytes a slot, load between 3/8 and 3/4 */
	CU_ASSERT(table_bytes(&f.t) >= 12 * table_slots(&f.t));
	CU_ASSERT(table_slots(&f.t) >= f.n * 4 / 3 && table_slots(&f.t) <= f.n * 8 / 3);
	fx_deinit(&f);
}

/* Removes from both arrays while migrating; nothing else gets lost. */
static void test_delete_during_migration(void)
{
	struct fixture f;
	fx_init(&f, 30000);
	size_t bad = 0, i = 0, removed_while_moving = 0;
	for (; i < f.n; i++) {
		CU_ASSERT_FATAL(add(&f, i, false) == 0);
		if (!table_migrating(&f.t) || i % 3)
			continue;
		size_t d = i / 2; /* an older key, often in the old array */
		if (f.items[d] && found(&f, d)) {
			table_remove(&f.t, f.items[d], f.hash[d]);
			heap_free(f.items[d]);
			f.items[d] = NULL;
			removed_while_moving++;
			bad += !absent(&f, d);
		}
		for (size_t j = 0; j <= i; j += 7)
			bad += f.items[j] ? !found(&f, j) : !absent(&f, j);
	}
	for (size_t j = 0; j < f.n; j++)
		bad += f.items[j] ? !found(&f, j) : !absent(&f, j);
	CU_ASSERT(bad == 0);
	CU_ASSERT(removed_while_moving > 100);
	CU_ASSERT(table_count(&f.t) == f.n - removed_while_moving);
	fx_deinit(&f);
}

/* Long probe runs, wrap-around and backward-shift deletion. */
static void test_collisions(void)
{
	struct fixture f;
	fx_init(&f, 3000);
	size_t bad = 0;
	for (size_t i = 0; i < f.n; i++)
		CU_ASSERT_FATAL(add(&f, i, true) == 0);
	for (size_t i = 0; i < f.n; i += 2) {
		table_remove(&f.t, f.items[i], f.hash[i]);
		heap_free(f.items[i]);
		f.items[i] = NULL;
		if (i % 64 == 0)
			for (size_t j = 0; j < f.n; j++)
				bad += f.items[j] ? !found(&f, j) : !absent(&f, j);
	}
	for (size_t j = 0; j < f.n; j++)
		bad += f.items[j] ? !found(&f, j) : !absent(&f, j);
	CU_ASSERT(bad == 0);
	CU_ASSERT(table_count(&f.t) == f.n / 2);
	fx_deinit(&f);
}

/* Bytes follow the arrays: both during migration, one after, min after
   a clear. */
static void test_memory(void)
{
	struct fixture f;
	fx_init(&f, 1000);
	size_t first = table_bytes(&f.t);
	CU_ASSERT(first >= 12 * TABLE_MIN_SLOTS);
	CU_ASSERT(table_grow_bytes(&f.t) == 0);
	size_t i = 0;
	while (table_grow_bytes(&f.t) == 0) {
		CU_ASSERT_FATAL(add(&f, i, false) == 0);
		i++;
	}
	size_t grow = table_grow_bytes(&f.t);
	CU_ASSERT(grow == 12 * 2 * TABLE_MIN_SLOTS);
	CU_ASSERT_FATAL(add(&f, i, false) == 0);
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
	CU_ASSERT(table_bytes(&f.t) == first);
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
	    !CU_add_test(s, "memory reporting", test_memory))
		return -1;
	return 0;
}
