/*
 * test_shard.c - one shard (shard/shard.c): every command's semantics and
 * status as in memcached's protocol.txt, time through the injected clock,
 * CAS uniqueness, limits, flush, the expiry sweep and the counters. The
 * segment store, eviction and the memory bound are in test_seg.c.
 *
 * Every test creates its own shard(s) in the test thread and destroys them
 * at the end; shard_destroy() frees every item and in sanitizer builds
 * heap_destroy() aborts if one was missed. Nothing is shared between tests.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "shard/shard.h"

#define NOW 1700000000 /* an absolute Unix time for the clock */

/* A read's destination: remembers the view and the copied value. */
struct sink {
	bool refuse;
	int calls;
	struct shard_view v;
	char key[256];
	char buf[8192];
};

static char *sink_fn(void *ctx, const struct shard_view *v)
{
	struct sink *k = ctx;
	k->calls++;
	k->v = *v;
	memcpy(k->key, v->key, v->klen);
	if (k->refuse || v->vlen >= sizeof(k->buf))
		return NULL;
	memset(k->buf, 0, sizeof(k->buf));
	return k->buf;
}

static struct shard *mk(size_t limit, size_t item_max, bool no_evict)
{
	struct shard_config c = { .id = 0, .count = 1, .mem_limit = limit,
				  .item_max = item_max, .no_evict = no_evict };
	struct shard *s = shard_create(&c);
	CU_ASSERT_FATAL(s != NULL);
	shard_set_time(s, NOW);
	return s;
}

/* Runs one op; returns res.status, or the negative errno. */
static int run(struct shard *s, struct shard_req q, struct shard_res *res,
	       struct sink *k)
{
	struct shard_res tmp;
	q.klen = (uint8_t)strlen(q.key);
	q.hash = shard_hash(q.key, q.klen);
	if (q.value && !q.vlen)
		q.vlen = (uint32_t)strlen(q.value);
	int rc = shard_exec(s, &q, res ? res : &tmp, k ? sink_fn : NULL, k);
	return rc < 0 ? rc : (int)(res ? res : &tmp)->status;
}

static int store(struct shard *s, enum shard_op op, const char *key,
		 const char *val, uint32_t flags, int64_t exp)
{
	return run(s, (struct shard_req){ .op = op, .key = key, .value = val,
					  .flags = flags, .exptime = exp },
		   NULL, NULL);
}

static int set(struct shard *s, const char *key, const char *val)
{
	return store(s, SHARD_OP_SET, key, val, 0, 0);
}

static int simple(struct shard *s, enum shard_op op, const char *key,
		  int64_t exp)
{
	return run(s, (struct shard_req){ .op = op, .key = key, .exptime = exp },
		   NULL, NULL);
}

/* A get: SHARD_HIT with the value in k->buf, or SHARD_NOT_FOUND. */
static int get(struct shard *s, const char *key, struct sink *k,
	       struct shard_res *res)
{
	return run(s, (struct shard_req){ .op = SHARD_OP_GET, .key = key },
		   res, k);
}

/* True if key holds exactly val. */
static bool holds(struct shard *s, const char *key, const char *val)
{
	struct sink k = { 0 };
	struct shard_res r;
	return get(s, key, &k, &r) == SHARD_HIT && r.vlen == strlen(val) &&
	       memcmp(k.buf, val, r.vlen) == 0;
}

static int arith(struct shard *s, enum shard_op op, const char *key,
		 uint64_t delta, struct shard_res *res)
{
	return run(s, (struct shard_req){ .op = op, .key = key, .delta = delta },
		   res, NULL);
}

static struct shard_stats stats(struct shard *s)
{
	struct shard_stats st;
	shard_stats(s, &st);
	return st;
}

/* ---- commands ----------------------------------------------------------- */

static void test_set_get(void)
{
	struct shard *s = mk(1 << 20, 1024, false);
	struct sink k = { 0 };
	struct shard_res r;
	CU_ASSERT(store(s, SHARD_OP_SET, "a", "hello", 0xffffffffu, 0) ==
		  SHARD_STORED);
	CU_ASSERT(get(s, "a", &k, &r) == SHARD_HIT);
	CU_ASSERT(r.flags == 0xffffffffu && k.v.flags == 0xffffffffu);
	CU_ASSERT(r.vlen == 5 && memcmp(k.buf, "hello", 5) == 0);
	CU_ASSERT(k.v.klen == 1 && k.key[0] == 'a' && k.v.cas == r.cas);
	CU_ASSERT(r.cas != 0);
	CU_ASSERT(get(s, "b", &k, &r) == SHARD_NOT_FOUND);
	/* an empty value */
	CU_ASSERT(store(s, SHARD_OP_SET, "e", "", 7, 0) == SHARD_STORED);
	CU_ASSERT(get(s, "e", &k, &r) == SHARD_HIT && r.vlen == 0 && r.flags == 7);
	/* replace changes value, flags and cas */
	uint64_t old = r.cas;
	CU_ASSERT(store(s, SHARD_OP_SET, "e", "x", 0x80000001u, 0) == SHARD_STORED);
	CU_ASSERT(get(s, "e", &k, &r) == SHARD_HIT && r.flags == 0x80000001u);
	CU_ASSERT(r.cas != old && holds(s, "e", "x"));
	struct shard_stats st = stats(s);
	CU_ASSERT(st.curr_items == 2 && st.total_items == 3 && st.cmd_set == 3);
	shard_destroy(s);
}

/* shard_get is shard_exec's get: the same hit, miss and refusals. */
static void test_get_entry(void)
{
	struct shard *s = mk(1 << 20, 1024, false);
	CU_ASSERT(store(s, SHARD_OP_SET, "a", "hello", 5, 0) == SHARD_STORED);
	struct shard_req q = { .op = SHARD_OP_GET, .key = "a", .klen = 1,
			       .hash = shard_hash("a", 1) };
	struct sink k = { 0 }, e = { 0 };
	struct shard_res r, x;
	CU_ASSERT(shard_get(s, &q, &r, sink_fn, &k) == 0 &&
		  r.status == SHARD_HIT && r.flags == 5 && r.vlen == 5 &&
		  memcmp(k.buf, "hello", 5) == 0);
	CU_ASSERT(shard_exec(s, &q, &x, sink_fn, &e) == 0 &&
		  x.status == SHARD_HIT && x.cas == r.cas && e.v.cas == k.v.cas);
	q.key = "b";
	q.hash = shard_hash("b", 1);
	CU_ASSERT(shard_get(s, &q, &r, sink_fn, &k) == 0 &&
		  r.status == SHARD_NOT_FOUND);
	k.refuse = true;
	q.key = "a";
	q.hash = shard_hash("a", 1);
	CU_ASSERT(shard_get(s, &q, &r, sink_fn, &k) == -ENOBUFS);
	CU_ASSERT(shard_get(s, &q, &r, NULL, NULL) == -EINVAL);
	q.op = SHARD_OP_GAT;
	CU_ASSERT(shard_get(s, &q, &r, sink_fn, &e) == -EINVAL);
	q.op = SHARD_OP_GET;
	q.klen = 0;
	CU_ASSERT(shard_get(s, &q, &r, sink_fn, &e) == -EINVAL);
	struct shard_stats st = stats(s);
	CU_ASSERT(st.get_hits == 2 && st.get_misses == 1 && st.cmd_get == 3);
	shard_destroy(s);
}

/* shard_hash takes keys of 9-16 bytes through XXH3's own short-input
   function directly: every length and byte pattern must hash as the
   library's XXH3_64bits does (the index, the routing and the integrity
   checker all rely on one hash). */
static void test_hash_is_xxh3(void)
{
	char k[SHARD_KEY_MAX + 8];
	uint64_t x = 0x9E3779B97F4A7C15u;
	for (int round = 0; round < 64; round++) {
		for (size_t i = 0; i < sizeof(k); i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			k[i] = (char)(round < 2 ? 'a' + round : (int)(x & 0xff));
		}
		for (size_t len = 0; len <= SHARD_KEY_MAX; len++)
			CU_ASSERT_EQUAL(shard_hash(k + round % 8, len),
					XXH3_64bits(k + round % 8, len));
	}
}

/* Keys that share a hash are told apart by their bytes: for every length
   up to 20 (the index compares 8 to 16 bytes a word at a time), a key with
   any one byte changed finds nothing, and the key itself its value. */
static void test_key_compare(void)
{
	struct shard *s = mk(1 << 20, 1024, false);
	struct shard_res r;
	char a[21], b[21];
	for (uint8_t n = 1; n <= 20; n++) {
		for (uint8_t i = 0; i < n; i++)
			a[i] = (char)('a' + (i * 7 + n) % 26);
		struct shard_req q = { .op = SHARD_OP_SET, .key = a, .klen = n,
				       .hash = 42, .value = (char *)&n, .vlen = 1 };
		CU_ASSERT(shard_exec(s, &q, &r, NULL, NULL) == 0 &&
			  r.status == SHARD_STORED);
		for (uint8_t at = 0; at < n; at++) {
			memcpy(b, a, n);
			b[at] ^= 1;
			struct sink k = { 0 };
			struct shard_req g = { .op = SHARD_OP_GET, .key = b,
					       .klen = n, .hash = 42 };
			CU_ASSERT(shard_exec(s, &g, &r, sink_fn, &k) == 0 &&
				  r.status == SHARD_NOT_FOUND && k.calls == 0);
		}
		struct sink k = { 0 };
		struct shard_req g = { .op = SHARD_OP_GET, .key = a, .klen = n,
				       .hash = 42 };
		CU_ASSERT(shard_exec(s, &g, &r, sink_fn, &k) == 0 &&
			  r.status == SHARD_HIT && k.buf[0] == (char)n);
	}
	shard_destroy(s);
}

static void test_add_replace(void)
{
	struct shard *s = mk(1 << 20, 1024, false);
	CU_ASSERT(store(s, SHARD_OP_REPLACE, "k", "1", 0, 0) == SHARD_NOT_STORED);
	CU_ASSERT(!shard_peek(s, "k", 1));
	CU_ASSERT(store(s, SHARD_OP_ADD, "k", "1", 0, 0) == SHARD_STORED);
	CU_ASSERT(store(s, SHARD_OP_ADD, "k", "2", 0, 0) == SHARD_NOT_STORED);
	CU_ASSERT(holds(s, "k", "1"));
	CU_ASSERT(store(s, SHARD_OP_REPLACE, "k", "3", 0, 0) == SHARD_STORED);
	CU_ASSERT(holds(s, "k", "3"));
	/* add succeeds over an expired item */
	CU_ASSERT(store(s, SHARD_OP_SET, "t", "old", 0, 10) == SHARD_STORED);
	shard_set_time(s, NOW + 10);
	CU_ASSERT(store(s, SHARD_OP_ADD, "t", "new", 0, 0) == SHARD_STORED);
	CU_ASSERT(holds(s, "t", "new"));
	CU_ASSERT(stats(s).cmd_set == 6 && stats(s).total_items == 4);
	shard_destroy(s);
}

static void test_append_prepend(void)
{
	struct shard *s = mk(1 << 20, 1024, false);
	struct sink k = { 0 };
	struct shard_res r;
	CU_ASSERT(store(s, SHARD_OP_APPEND, "k", "x", 0, 0) == SHARD_NOT_STORED);
	CU_ASSERT(store(s, SHARD_OP_PREPEND, "k", "x", 0, 0) == SHARD_NOT_STORED);
	CU_ASSERT(!shard_peek(s, "k", 1));
	CU_ASSERT(store(s, SHARD_OP_SET, "k", "mid", 42, 100) == SHARD_STORED);
	get(s, "k", &k, &r);
	uint64_t c0 = r.cas;
	/* flags and exptime of the request are ignored */
	CU_ASSERT(store(s, SHARD_OP_APPEND, "k", "-end", 7, 0) == SHARD_STORED);
	CU_ASSERT(store(s, SHARD_OP_PREPEND, "k", "start-", 9, 0) == SHARD_STORED);
	CU_ASSERT(get(s, "k", &k, &r) == SHARD_HIT);
	CU_ASSERT(r.vlen == 13 && memcmp(k.buf, "start-mid-end", 13) == 0);
	CU_ASSERT(r.flags == 42 && r.cas != c0);
	shard_set_time(s, NOW + 99);
	CU_ASSERT(shard_peek(s, "k", 1));
	shard_set_time(s, NOW + 100); /* the original exptime still holds */
	CU_ASSERT(!shard_peek(s, "k", 1));
	shard_destroy(s);
}

static void test_cas(void)
{
	struct shard *s = mk(1 << 20, 1024, false);
	struct sink k = { 0 };
	struct shard_res r, w;
	struct shard_req q = { .op = SHARD_OP_CAS, .key = "k", .value = "v2",
			       .cas = 1 };
	CU_ASSERT(run(s, q, &w, NULL) == SHARD_NOT_FOUND);
	CU_ASSERT(set(s, "k", "v1") == SHARD_STORED);
	get(s, "k", &k, &r);
	q.cas = r.cas + 1;
	CU_ASSERT(run(s, q, &w, NULL) == SHARD_EXISTS);
	CU_ASSERT(holds(s, "k", "v1"));
	q.cas = r.cas;
	CU_ASSERT(run(s, q, &w, NULL) == SHARD_STORED);
	uint64_t stored = w.cas;
	CU_ASSERT(stored != r.cas && stored != 0);
	CU_ASSERT(get(s, "k", &k, &r) == SHARD_HIT && r.cas == stored);
	CU_ASSERT(holds(s, "k", "v2"));
	CU_ASSERT(run(s, q, &w, NULL) == SHARD_EXISTS); /* stale now */
	/* touch keeps the cas; every modification changes it */
	CU_ASSERT(simple(s, SHARD_OP_TOUCH, "k", 100) == SHARD_TOUCHED);
	CU_ASSERT(get(s, "k", &k, &r) == SHARD_HIT && r.cas == stored);
	struct shard_stats st = stats(s);
	CU_ASSERT(st.cas_misses == 1 && st.cas_badval == 2 && st.cas_hits == 1);
	CU_ASSERT(st.cmd_set == 5);
	shard_destroy(s);
}

/* The cas a get of key sees (0 on a miss). */
static uint64_t cas_seen(struct shard *s, const char *key)
{
	struct sink k = { 0 };
	struct shard_res r;
	return get(s, key, &k, &r) == SHARD_HIT ? r.cas : 0;
}

/* A store with E (meta's explicit cas): returns the status, *cas the
   item's new cas. */
static int store_e(struct shard *s, enum shard_op op, const char *key,
		   const char *val, uint64_t e, uint64_t cmp, uint64_t *cas)
{
	struct shard_res r;
	int rc = run(s, (struct shard_req){ .op = op, .key = key, .value = val,
					    .cas = cmp, .new_cas = e,
					    .mflags = SHARD_MF_SETCAS },
		     &r, NULL);
	*cas = r.cas;
	return rc;
}

/*
 * E: a store's explicit cas is what every read and compare sees; touch,
 * gat, copy-forward and md x keep it; a store, append, incr or md I
 * without E give a cas from the sequence again (and the item loses its 8
 * bytes); E0 is a cas of 0, which no cas compare matches.
 */
static void test_explicit_cas(void)
{
	struct shard *s = mk(1 << 20, 1024, false);
	uint64_t c;
	/* "k" + "v1": 14 bytes, 22 with the cas field */
	CU_ASSERT(store_e(s, SHARD_OP_SET, "k", "v1", 1000, 0, &c) == SHARD_STORED);
	CU_ASSERT(c == 1000 && cas_seen(s, "k") == 1000);
	CU_ASSERT(stats(s).bytes == 22 && shard_check(s) == 0);
	/* classic cas compares against the explicit value */
	struct shard_res r;
	struct shard_req q = { .op = SHARD_OP_CAS, .key = "k", .value = "v2",
			       .cas = 999 };
	CU_ASSERT(run(s, q, &r, NULL) == SHARD_EXISTS);
	q.cas = 1000;
	CU_ASSERT(run(s, q, &r, NULL) == SHARD_STORED);
	CU_ASSERT(r.cas != 1000 && cas_seen(s, "k") == r.cas);
	CU_ASSERT(stats(s).bytes == 14 && holds(s, "k", "v2"));
	/* a cas with E sets a new explicit one */
	CU_ASSERT(store_e(s, SHARD_OP_CAS, "k", "v3", 5000, r.cas, &c) == SHARD_STORED);
	CU_ASSERT(c == 5000 && cas_seen(s, "k") == 5000 && holds(s, "k", "v3"));
	/* touch in place, touch that adds an exptime field, gat: kept */
	CU_ASSERT(simple(s, SHARD_OP_TOUCH, "k", 0) == SHARD_TOUCHED);
	CU_ASSERT(simple(s, SHARD_OP_TOUCH, "k", 100) == SHARD_TOUCHED);
	CU_ASSERT(stats(s).bytes == 26 && cas_seen(s, "k") == 5000);
	struct sink k = { 0 };
	CU_ASSERT(run(s, (struct shard_req){ .op = SHARD_OP_GAT, .key = "k",
					     .exptime = 200 }, &r, &k) == SHARD_HIT);
	CU_ASSERT(r.cas == 5000 && cas_seen(s, "k") == 5000 && shard_check(s) == 0);
	/* append without E: a new cas; with E: E's */
	CU_ASSERT(store(s, SHARD_OP_APPEND, "k", "a", 0, 0) == SHARD_STORED);
	c = cas_seen(s, "k");
	CU_ASSERT(c != 5000 && c != 0 && holds(s, "k", "v3a"));
	CU_ASSERT(store_e(s, SHARD_OP_PREPEND, "k", "p", 7000, 0, &c) == SHARD_STORED);
	CU_ASSERT(c == 7000 && cas_seen(s, "k") == 7000 && holds(s, "k", "pv3a"));
	/* a plain set drops the field */
	CU_ASSERT(set(s, "k", "v1") == SHARD_STORED);
	CU_ASSERT(cas_seen(s, "k") != 7000 && stats(s).bytes == 14);
	/* incr: E's cas in place, a new one without E (the field goes) */
	CU_ASSERT(store_e(s, SHARD_OP_SET, "n", "10", 4000, 0, &c) == SHARD_STORED);
	struct shard_req a = { .op = SHARD_OP_INCR, .key = "n", .delta = 1,
			       .new_cas = 4100, .mflags = SHARD_MF_SETCAS };
	CU_ASSERT(run(s, a, &r, NULL) == SHARD_NUMBER);
	CU_ASSERT(r.number == 11 && r.cas == 4100 && cas_seen(s, "n") == 4100);
	a.mflags = 0;
	CU_ASSERT(run(s, a, &r, NULL) == SHARD_NUMBER);
	CU_ASSERT(r.number == 12 && r.cas != 4100 && cas_seen(s, "n") == r.cas);
	a.mflags = SHARD_MF_SETCAS;
	a.delta = 100;
	CU_ASSERT(run(s, a, &r, NULL) == SHARD_NUMBER); /* 112: rewritten */
	CU_ASSERT(r.cas == 4100 && cas_seen(s, "n") == 4100 && holds(s, "n", "112"));
	/* ma C compares against the explicit cas */
	a.mflags = SHARD_MF_CAS;
	a.cas = 4000;
	CU_ASSERT(run(s, a, &r, NULL) == SHARD_EXISTS);
	a.cas = 4100;
	CU_ASSERT(run(s, a, &r, NULL) == SHARD_NUMBER);
	CU_ASSERT(shard_check(s) == 0);
	/* E0: a cas of 0 that no cas command matches (memcached) */
	CU_ASSERT(store_e(s, SHARD_OP_SET, "z", "v", 0, 0, &c) == SHARD_STORED);
	CU_ASSERT(c == 0);
	CU_ASSERT(get(s, "z", &k, &r) == SHARD_HIT && r.cas == 0);
	q = (struct shard_req){ .op = SHARD_OP_CAS, .key = "z", .value = "w",
				.cas = 0 };
	CU_ASSERT(run(s, q, &r, NULL) == SHARD_EXISTS && holds(s, "z", "v"));
	CU_ASSERT(shard_check(s) == 0);
	shard_destroy(s);
}

static void test_touch_gat(void)
{
	struct shard *s = mk(1 << 20, 1024, false);
	struct sink k = { 0 };
	struct shard_res r;
	CU_ASSERT(simple(s, SHARD_OP_TOUCH, "k", 10) == SHARD_NOT_FOUND);
	CU_ASSERT(store(s, SHARD_OP_SET, "k", "v", 5, 10) == SHARD_STORED);
	CU_ASSERT(simple(s, SHARD_OP_TOUCH, "k", 100) == SHARD_TOUCHED);
	shard_set_time(s, NOW + 50);
	CU_ASSERT(shard_peek(s, "k", 1));
	struct shard_req g = { .op = SHARD_OP_GAT, .key = "k", .exptime = 20 };
	CU_ASSERT(run(s, g, &r, &k) == SHARD_HIT);
	CU_ASSERT(r.vlen == 1 && k.buf[0] == 'v' && r.flags == 5);
	shard_set_time(s, NOW + 69);
	CU_ASSERT(shard_peek(s, "k", 1));
	shard_set_time(s, NOW + 70);
	CU_ASSERT(!shard_peek(s, "k", 1));
	CU_ASSERT(run(s, g, &r, &k) == SHARD_NOT_FOUND);
	/* gat with a negative exptime returns the item and expires it */
	CU_ASSERT(set(s, "n", "v") == SHARD_STORED);
	g.key = "n";
	g.exptime = -1;
	CU_ASSERT(run(s, g, &r, &k) == SHARD_HIT);
	CU_ASSERT(!shard_peek(s, "n", 1));
	/* touch with a negative exptime too */
	CU_ASSERT(set(s, "m", "v") == SHARD_STORED);
	CU_ASSERT(simple(s, SHARD_OP_TOUCH, "m", -1) == SHARD_TOUCHED);
	CU_ASSERT(!shard_peek(s, "m", 1));
	struct shard_stats st = stats(s);
	CU_ASSERT(st.cmd_touch == 6 && st.touch_hits == 4 && st.touch_misses == 2);
	CU_ASSERT(st.cmd_get == 3 && st.get_hits == 0 && st.get_misses == 0);
	CU_ASSERT(st.get_expired == 1);
	shard_destroy(s);
}

static void test_delete(void)
{
	struct shard *s = mk(1 << 20, 1024, false);
	CU_ASSERT(simple(s, SHARD_OP_DELETE, "k", 0) == SHARD_NOT_FOUND);
	CU_ASSERT(set(s, "k", "v") == SHARD_STORED);
	CU_ASSERT(simple(s, SHARD_OP_DELETE, "k", 0) == SHARD_DELETED);
	CU_ASSERT(simple(s, SHARD_OP_DELETE, "k", 0) == SHARD_NOT_FOUND);
	struct shard_stats st = stats(s);
	CU_ASSERT(st.delete_hits == 1 && st.delete_misses == 2);
	CU_ASSERT(st.curr_items == 0 && st.bytes == 0);
	shard_destroy(s);
}

static void test_incr_decr(void)
{
	struct shard *s = mk(1 << 20, 1024, false);
	struct sink k = { 0 };
	struct shard_res r, g;
	CU_ASSERT(arith(s, SHARD_OP_INCR, "n", 1, &r) == SHARD_NOT_FOUND);
	CU_ASSERT(arith(s, SHARD_OP_DECR, "n", 1, &r) == SHARD_NOT_FOUND);
	CU_ASSERT(store(s, SHARD_OP_SET, "n", "99", 77, 0) == SHARD_STORED);
	get(s, "n", &k, &g);
	CU_ASSERT(arith(s, SHARD_OP_INCR, "n", 1, &r) == SHARD_NUMBER);
	CU_ASSERT(r.number == 100 && r.cas != g.cas);
	CU_ASSERT(get(s, "n", &k, &g) == SHARD_HIT && g.flags == 77);
	CU_ASSERT(g.vlen == 3 && memcmp(k.buf, "100", 3) == 0 && g.cas == r.cas);
	CU_ASSERT(arith(s, SHARD_OP_DECR, "n", 1, &r) == SHARD_NUMBER);
	CU_ASSERT(r.number == 99 && holds(s, "n", "99")); /* no padding */
	CU_ASSERT(arith(s, SHARD_OP_DECR, "n", 1000, &r) == SHARD_NUMBER);
	CU_ASSERT(r.number == 0 && holds(s, "n", "0"));
	/* the largest value and the wrap at 2^64 */
	CU_ASSERT(set(s, "m", "18446744073709551615") == SHARD_STORED);
	CU_ASSERT(arith(s, SHARD_OP_DECR, "m", 0, &r) == SHARD_NUMBER);
	CU_ASSERT(r.number == UINT64_MAX);
	CU_ASSERT(arith(s, SHARD_OP_INCR, "m", 2, &r) == SHARD_NUMBER);
	CU_ASSERT(r.number == 1 && holds(s, "m", "1"));
	CU_ASSERT(set(s, "m", "00000000000000000001") == SHARD_STORED);
	CU_ASSERT(arith(s, SHARD_OP_INCR, "m", 1, &r) == SHARD_NUMBER);
	CU_ASSERT(r.number == 2 && holds(s, "m", "2"));
	CU_ASSERT(set(s, "m", "1") == SHARD_STORED);
	CU_ASSERT(arith(s, SHARD_OP_INCR, "m", UINT64_MAX, &r) == SHARD_NUMBER);
	CU_ASSERT(r.number == 0);
	CU_ASSERT(set(s, "g", "9999999999999999999") == SHARD_STORED);
	CU_ASSERT(arith(s, SHARD_OP_INCR, "g", 1, &r) == SHARD_NUMBER);
	CU_ASSERT(holds(s, "g", "10000000000000000000"));
	/* not a decimal u64 */
	const char *bad[] = { "abc", "", "12a", " 12", "-1", "1.5",
			      "18446744073709551616", "000000000000000000001",
			      "99999999999999999999" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CU_ASSERT(set(s, "x", bad[i]) == SHARD_STORED);
		CU_ASSERT(arith(s, SHARD_OP_INCR, "x", 1, &r) == SHARD_NON_NUMERIC);
		CU_ASSERT(arith(s, SHARD_OP_DECR, "x", 1, &r) == SHARD_NON_NUMERIC);
		CU_ASSERT(holds(s, "x", bad[i]));
	}
	struct shard_stats st = stats(s);
	CU_ASSERT(st.incr_misses == 1 && st.decr_misses == 1);
	CU_ASSERT(st.incr_hits == 5 && st.decr_hits == 3);
	shard_destroy(s);
}

/* ---- time -------------------------------------------------------------- */

static void test_exptime(void)
{
	struct shard *s = mk(1 << 20, 1024, false);
	struct sink k = { 0 };
	CU_ASSERT(store(s, SHARD_OP_SET, "rel", "v", 0, 10) == SHARD_STORED);
	CU_ASSERT(store(s, SHARD_OP_SET, "abs", "v", 0, NOW + 100) == SHARD_STORED);
	CU_ASSERT(store(s, SHARD_OP_SET, "never", "v", 0, 0) == SHARD_STORED);
	CU_ASSERT(store(s, SHARD_OP_SET, "max", "v", 0, SHARD_REL_TIME_MAX) ==
		  SHARD_STORED);
	/* over 30 days is an absolute time, here long past */
	CU_ASSERT(store(s, SHARD_OP_SET, "past", "v", 0, SHARD_REL_TIME_MAX + 1) ==
		  SHARD_STORED);
	CU_ASSERT(!shard_peek(s, "past", 4));
	CU_ASSERT(store(s, SHARD_OP_SET, "nowabs", "v", 0, NOW) == SHARD_STORED);
	CU_ASSERT(!shard_peek(s, "nowabs", 6));
	/* negative: stored, invisible, and the old value is gone */
	CU_ASSERT(set(s, "neg", "old") == SHARD_STORED);
	CU_ASSERT(store(s, SHARD_OP_SET, "neg", "v", 0, -1) == SHARD_STORED);
	CU_ASSERT(get(s, "neg", &k, NULL) == SHARD_NOT_FOUND);
	shard_set_time(s, NOW + 9);
	CU_ASSERT(holds(s, "rel", "v"));
	shard_set_time(s, NOW + 10);
	CU_ASSERT(get(s, "rel", &k, NULL) == SHARD_NOT_FOUND);
	CU_ASSERT(stats(s).get_expired == 1);
	shard_set_time(s, NOW + 99);
	CU_ASSERT(shard_peek(s, "abs", 3));
	shard_set_time(s, NOW + 100);
	CU_ASSERT(!shard_peek(s, "abs", 3));
	shard_set_time(s, NOW + SHARD_REL_TIME_MAX - 1);
	CU_ASSERT(shard_peek(s, "max", 3) && shard_peek(s, "never", 5));
	shard_set_time(s, NOW + SHARD_REL_TIME_MAX);
	CU_ASSERT(!shard_peek(s, "max", 3) && shard_peek(s, "never", 5));
	shard_destroy(s);
}

/* A lent read (another thread's get): reads and counts like a get, but
   leaves a dead item to the owner (-EAGAIN, nothing counted, the item
   still there for the owner's get to drop), and advances the clock. */
static int lent(struct shard *s, int64_t now, const char *key, struct sink *k,
		struct shard_res *res)
{
	struct shard_req q = { .op = SHARD_OP_GET, .key = key,
			       .klen = (uint8_t)strlen(key) };
	q.hash = shard_hash(key, q.klen);
	int rc = shard_read_lent(s, now, &q, res, sink_fn, k);
	return rc < 0 ? rc : (int)res->status;
}

static void test_read_lent(void)
{
	struct shard *s = mk(1 << 20, 1024, false);
	struct sink k = { 0 };
	struct shard_res res;
	CU_ASSERT(store(s, SHARD_OP_SET, "live", "val", 7, 0) == SHARD_STORED);
	CU_ASSERT(store(s, SHARD_OP_SET, "old", "v", 0, 10) == SHARD_STORED);
	CU_ASSERT(lent(s, NOW, "live", &k, &res) == SHARD_HIT);
	CU_ASSERT(res.flags == 7 && res.vlen == 3 && !memcmp(k.buf, "val", 3));
	CU_ASSERT(lent(s, NOW, "none", &k, &res) == SHARD_NOT_FOUND);
	struct shard_stats st = stats(s);
	CU_ASSERT(st.get_hits == 1 && st.get_misses == 1 && st.cmd_get == 2);
	/* an earlier clock is not taken; a later one is */
	CU_ASSERT(lent(s, NOW - 100, "old", &k, &res) == SHARD_HIT);
	CU_ASSERT(lent(s, NOW + 10, "old", &k, &res) == -EAGAIN);
	st = stats(s);
	CU_ASSERT(st.cmd_get == 3 && st.get_expired == 0 && st.curr_items == 2);
	CU_ASSERT(get(s, "old", &k, NULL) == SHARD_NOT_FOUND);
	st = stats(s);
	CU_ASSERT(st.get_expired == 1 && st.curr_items == 1);
	CU_ASSERT(lent(s, NOW + 10, "old", &k, &res) == SHARD_NOT_FOUND);
	/* only gets */
	struct shard_req q = { .op = SHARD_OP_GAT, .key = "live", .klen = 4 };
	q.hash = shard_hash("live", 4);
	CU_ASSERT(shard_read_lent(s, NOW, &q, &res, sink_fn, &k) == -EINVAL);
	shard_destroy(s);
}

/* A lent set (another thread's): returns the status, or the negative errno. */
static int lent_set(struct shard *s, int64_t now, const char *key,
		    const char *val, uint32_t flags, int64_t exp)
{
	struct shard_req q = { .op = SHARD_OP_SET, .key = key,
			       .klen = (uint8_t)strlen(key), .value = val,
			       .vlen = strlen(val), .flags = flags,
			       .exptime = exp };
	q.hash = shard_hash(key, q.klen);
	struct shard_res res;
	int rc = shard_store_lent(s, now, &q, &res);
	return rc < 0 ? rc : (int)res.status;
}

static uint64_t segs_in_use(struct shard *s)
{
	struct shard_stats st = stats(s);
	return st.segments - st.segments_free;
}

/* A lent set replaces a live item in place of the owner's set; anything
   that would allocate, free or drop is left to the owner (-EAGAIN) with
   nothing changed. */
static void test_store_lent(void)
{
	struct shard *s = mk(1 << 20, 4096, false);
	struct sink k = { 0 };
	struct shard_res r;
	CU_ASSERT(set(s, "k", "old") == SHARD_STORED);
	CU_ASSERT(get(s, "k", &k, &r) == SHARD_HIT);
	uint64_t cas0 = r.cas;
	struct shard_stats st0 = stats(s);
	CU_ASSERT(lent_set(s, NOW, "k", "newer", 9, 0) == SHARD_STORED);
	CU_ASSERT(get(s, "k", &k, &r) == SHARD_HIT);
	CU_ASSERT(r.flags == 9 && r.vlen == 5 && !memcmp(k.buf, "newer", 5));
	CU_ASSERT(r.cas != cas0);
	struct shard_stats st = stats(s);
	CU_ASSERT(st.cmd_set == st0.cmd_set + 1);
	CU_ASSERT(st.total_items == st0.total_items + 1);
	CU_ASSERT(st.curr_items == st0.curr_items);
	CU_ASSERT(st.dead_bytes > st0.dead_bytes);
	CU_ASSERT(shard_check(s) == 0);
	/* a new key, a store that expires at once, an expired item, a large
	   item: the owner's, and nothing counted */
	st0 = stats(s);
	CU_ASSERT(lent_set(s, NOW, "new", "v", 0, 0) == -EAGAIN);
	CU_ASSERT(lent_set(s, NOW, "k", "x", 0, -1) == -EAGAIN);
	CU_ASSERT(store(s, SHARD_OP_SET, "e", "v", 0, 10) == SHARD_STORED);
	CU_ASSERT(lent_set(s, NOW + 10, "e", "w", 0, 0) == -EAGAIN);
	char big[2001]; /* over an eighth of the 8 KiB segments */
	memset(big, 'b', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	CU_ASSERT(lent_set(s, NOW + 10, "k", big, 0, 0) == -EAGAIN);
	st = stats(s);
	CU_ASSERT(st.cmd_set == st0.cmd_set + 1 && st.curr_items == 2);
	CU_ASSERT(holds(s, "k", "newer") && get(s, "new", &k, NULL) == SHARD_NOT_FOUND);
	/* the lent set took the later clock; the owner's get drops "e" */
	CU_ASSERT(get(s, "e", &k, NULL) == SHARD_NOT_FOUND);
	CU_ASSERT(stats(s).curr_items == 1);
	/* only plain sets */
	struct shard_req q = { .op = SHARD_OP_ADD, .key = "k", .klen = 1,
			       .value = "a", .vlen = 1 };
	q.hash = shard_hash("k", 1);
	CU_ASSERT(shard_store_lent(s, NOW, &q, &r) == -EINVAL);
	q.op = SHARD_OP_SET;
	q.mflags = SHARD_MF_SETCAS;
	CU_ASSERT(shard_store_lent(s, NOW, &q, &r) == -EINVAL);
	shard_destroy(s);

	/* The last live item of a sealed segment: replacing it frees the
	   segment, which is the owner's. */
	s = mk(1 << 20, 1024, false);
	CU_ASSERT(set(s, "solo", "v") == SHARD_STORED);
	int n = 0;
	char key[16];
	while (segs_in_use(s) < 3) {
		snprintf(key, sizeof(key), "f%d", n++);
		CU_ASSERT_FATAL(set(s, key, "0123456789abcdef0123456789") == SHARD_STORED);
	}
	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "f%d", i);
		CU_ASSERT(set(s, key, "0123456789abcdef0123456789") == SHARD_STORED);
	}
	st0 = stats(s);
	CU_ASSERT(lent_set(s, NOW, "solo", "w", 0, 0) == -EAGAIN);
	CU_ASSERT(holds(s, "solo", "v") && stats(s).cmd_set == st0.cmd_set);
	CU_ASSERT(set(s, "solo", "w") == SHARD_STORED);
	CU_ASSERT(stats(s).dead_bytes < st0.dead_bytes); /* its segment went */
	CU_ASSERT(holds(s, "solo", "w") && shard_check(s) == 0);
	shard_destroy(s);
}

static void test_cas_unique(void)
{
	struct shard_config c = { .id = 0, .count = 2, .mem_limit = 1 << 22,
				  .item_max = 1024 };
	struct shard *a = shard_create(&c);
	c.id = 1;
	struct shard *b = shard_create(&c);
	CU_ASSERT_FATAL(a && b);
	enum { N = 2000 };
	uint64_t *seen = calloc(2 * N, sizeof(uint64_t));
	CU_ASSERT_FATAL(seen != NULL);
	for (int i = 0; i < N; i++) {
		char key[16];
		snprintf(key, sizeof(key), "k%d", i % 50);
		struct shard_req q = { .op = SHARD_OP_SET, .key = key, .value = "v" };
		struct shard_res r;
		CU_ASSERT(run(a, q, &r, NULL) == SHARD_STORED);
		seen[2 * i] = r.cas;
		CU_ASSERT(run(b, q, &r, NULL) == SHARD_STORED);
		seen[2 * i + 1] = r.cas;
	}
	size_t dup = 0, zero = 0;
	for (int i = 0; i < 2 * N; i++) {
		zero += seen[i] == 0;
		for (int j = i + 1; j < 2 * N; j++)
			dup += seen[i] == seen[j];
	}
	CU_ASSERT(dup == 0 && zero == 0);
	free(seen);
	shard_destroy(a);
	shard_destroy(b);
}

/* ---- limits -------------------------------------------------------------- */

static void test_too_large(void)
{
	struct shard *s = mk(1 << 20, 1000, false);
	char big[1002];
	memset(big, 'x', sizeof(big));
	struct shard_req q = { .op = SHARD_OP_SET, .key = "k", .value = big,
			       .vlen = 1000 };
	CU_ASSERT(run(s, q, NULL, NULL) == SHARD_STORED);
	q.vlen = 1001;
	CU_ASSERT(run(s, q, NULL, NULL) == SHARD_TOO_LARGE);
	CU_ASSERT(!shard_peek(s, "k", 1)); /* a failed set drops the old item */
	q.op = SHARD_OP_ADD;
	CU_ASSERT(run(s, q, NULL, NULL) == SHARD_TOO_LARGE);
	/* append over the limit: refused, the old item stays */
	CU_ASSERT(set(s, "a", "0123456789") == SHARD_STORED);
	q = (struct shard_req){ .op = SHARD_OP_APPEND, .key = "a", .value = big,
				.vlen = 990 };
	CU_ASSERT(run(s, q, NULL, NULL) == SHARD_STORED);
	q.vlen = 1;
	CU_ASSERT(run(s, q, NULL, NULL) == SHARD_TOO_LARGE);
	q.op = SHARD_OP_PREPEND;
	CU_ASSERT(run(s, q, NULL, NULL) == SHARD_TOO_LARGE);
	struct sink k = { 0 };
	struct shard_res r;
	CU_ASSERT(get(s, "a", &k, &r) == SHARD_HIT && r.vlen == 1000);
	CU_ASSERT(stats(s).curr_items == 1);
	shard_destroy(s);
}

static void test_sink_refuses(void)
{
	struct shard *s = mk(1 << 20, 1024, false);
	struct sink k = { .refuse = true };
	struct shard_res r;
	CU_ASSERT(store(s, SHARD_OP_SET, "k", "v", 0, 10) == SHARD_STORED);
	struct shard_stats before = stats(s);
	CU_ASSERT(get(s, "k", &k, &r) == -ENOBUFS);
	struct shard_req g = { .op = SHARD_OP_GAT, .key = "k", .exptime = 0 };
	CU_ASSERT(run(s, g, &r, &k) == -ENOBUFS);
	CU_ASSERT(k.calls == 2);
	struct shard_stats after = stats(s);
	CU_ASSERT(memcmp(&before, &after, sizeof(before)) == 0);
	shard_set_time(s, NOW + 10); /* the gat did not change the exptime */
	CU_ASSERT(!shard_peek(s, "k", 1));
	/* bad requests */
	struct shard_req q = { .op = SHARD_OP_GET, .key = "k", .klen = 0 };
	CU_ASSERT(shard_exec(s, &q, &r, sink_fn, &k) == -EINVAL);
	q.op = (enum shard_op)99;
	q.klen = 1;
	CU_ASSERT(shard_exec(s, &q, &r, NULL, NULL) == -EINVAL);
	q.op = SHARD_OP_GET;
	CU_ASSERT(shard_exec(s, &q, &r, NULL, NULL) == -EINVAL);
	shard_destroy(s);
}

/* ---- flush --------------------------------------------------------------- */

static void test_flush_now(void)
{
	struct shard *s = mk(1 << 22, 1024, false);
	char key[16];
	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		CU_ASSERT(set(s, key, "some value") == SHARD_STORED);
	}
	struct shard_stats st = stats(s);
	CU_ASSERT(st.curr_items == 5000 && st.bytes > 0);
	size_t table = st.hash_bytes;
	shard_flush(s, 0);
	st = stats(s);
	CU_ASSERT(st.curr_items == 0 && st.bytes == 0);
	CU_ASSERT(st.hash_bytes < table); /* the table shrank back too */
	CU_ASSERT(!shard_peek(s, "k1", 2));
	CU_ASSERT(set(s, "k1", "again") == SHARD_STORED);
	CU_ASSERT(holds(s, "k1", "again"));
	shard_flush(s, -1);
	CU_ASSERT(stats(s).curr_items == 0);
	shard_destroy(s);
}

static void test_flush_delayed(void)
{
	struct shard *s = mk(1 << 20, 1024, false);
	struct sink k = { 0 };
	CU_ASSERT(set(s, "a", "1") == SHARD_STORED);
	shard_flush(s, 10);
	shard_set_time(s, NOW + 5);
	CU_ASSERT(set(s, "b", "2") == SHARD_STORED);
	shard_set_time(s, NOW + 9);
	CU_ASSERT(set(s, "c", "3") == SHARD_STORED);
	CU_ASSERT(holds(s, "a", "1") && holds(s, "b", "2") && holds(s, "c", "3"));
	shard_set_time(s, NOW + 10);
	CU_ASSERT(set(s, "d", "4") == SHARD_STORED);
	CU_ASSERT(get(s, "a", &k, NULL) == SHARD_NOT_FOUND);
	CU_ASSERT(!shard_peek(s, "b", 1) && !shard_peek(s, "c", 1));
	CU_ASSERT(holds(s, "d", "4"));
	CU_ASSERT(stats(s).get_flushed == 1);
	/* an absolute flush time; the sweep frees flushed items */
	shard_flush(s, NOW + 20);
	shard_set_time(s, NOW + 20);
	while (shard_tick(s, 64))
		;
	CU_ASSERT(stats(s).curr_items == 0 && stats(s).bytes == 0);
	shard_destroy(s);
}

/* ---- sweep, stats, footprint -------------------------------------------- */

static void test_sweep(void)
{
	struct shard *s = mk(1 << 22, 1024, false);
	char key[16];
	for (int i = 0; i < 3000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		CU_ASSERT(store(s, SHARD_OP_SET, key, "v", 0, i % 2 ? 5 : 0) ==
			  SHARD_STORED);
	}
	int guard = 0;
	while (shard_tick(s, 64) && guard++ < 10000)
		;
	CU_ASSERT(stats(s).curr_items == 3000);
	shard_set_time(s, NOW + 5);
	guard = 0;
	while (shard_tick(s, 4) && guard++ < 100000)
		;
	struct shard_stats st = stats(s);
	CU_ASSERT(st.curr_items == 1500);
	CU_ASSERT(st.reclaimed == 1500 && st.expired_unfetched == 1500);
	CU_ASSERT(st.get_expired == 0 && st.cmd_get == 0);
	CU_ASSERT(!shard_tick(s, 64)); /* nothing more this second */
	for (int i = 0; i < 3000; i += 2) {
		snprintf(key, sizeof(key), "k%d", i);
		CU_ASSERT(shard_peek(s, key, (uint8_t)strlen(key)));
	}
	shard_destroy(s);
}

/* Ticks until the sweep's pass ends (bounded); false if none was running. */
static bool sweep_pass(struct shard *s)
{
	if (!shard_tick(s, 4))
		return false;
	int guard = 0;
	while (shard_tick(s, 4) && guard++ < 100000)
		;
	return true;
}

/* The sweep passes only when an item may have expired (a segment's
   bound, exp_min, has come) or after a flush; every way an exptime comes
   (a store, a touch in place, a lent set) lowers the bound. */
static struct shard *no_exptimes(void)
{
	struct shard *s = mk(1 << 22, 1024, false);
	char key[16];
	for (int i = 0; i < 3000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		CU_ASSERT(set(s, key, "v") == SHARD_STORED);
	}
	shard_set_time(s, NOW + 1);
	CU_ASSERT(!shard_tick(s, 4)); /* nothing can expire: no pass */
	return s;
}

/* hash_is_expanding: 1 from the insert that starts a larger index until
   the ticks have moved every entry, and every key is found throughout. */
static void test_hash_expanding(void)
{
	struct shard *s = mk(1 << 24, 1024, false);
	char key[16];
	int n = 0;
	CU_ASSERT(stats(s).hash_is_expanding == 0);
	while (!stats(s).hash_is_expanding && n < 1000000) {
		snprintf(key, sizeof(key), "k%d", n++);
		CU_ASSERT(set(s, key, "v") == SHARD_STORED);
	}
	CU_ASSERT_FATAL(stats(s).hash_is_expanding == 1);
	CU_ASSERT(shard_busy(s));
	int guard = 0;
	while (shard_busy(s) && guard++ < 100000) {
		CU_ASSERT(stats(s).hash_is_expanding == 1);
		shard_tick(s, 1);
	}
	CU_ASSERT(stats(s).hash_is_expanding == 0);
	struct shard_stats st = stats(s);
	CU_ASSERT(st.curr_items == (uint64_t)n);
	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		CU_ASSERT(holds(s, key, "v"));
	}
	shard_destroy(s);
}

static void test_sweep_gated(void)
{
	/* a touch that lowers an exptime in place */
	struct shard *s = no_exptimes();
	CU_ASSERT(store(s, SHARD_OP_SET, "t", "v", 0, 100) == SHARD_STORED);
	CU_ASSERT(simple(s, SHARD_OP_TOUCH, "t", 3) == SHARD_TOUCHED);
	shard_set_time(s, NOW + 3);
	CU_ASSERT(!shard_tick(s, 4));
	shard_set_time(s, NOW + 4);
	CU_ASSERT(sweep_pass(s));
	CU_ASSERT(stats(s).reclaimed == 1 && stats(s).curr_items == 3000);
	CU_ASSERT(shard_check(s) == 0);
	shard_destroy(s);
	/* a lent set of an existing key */
	s = no_exptimes();
	CU_ASSERT(lent_set(s, NOW + 1, "k7", "w", 0, 2) == SHARD_STORED);
	shard_set_time(s, NOW + 2);
	CU_ASSERT(!shard_tick(s, 4));
	shard_set_time(s, NOW + 3);
	CU_ASSERT(sweep_pass(s));
	CU_ASSERT(stats(s).reclaimed == 1 && stats(s).curr_items == 2999);
	CU_ASSERT(shard_check(s) == 0);
	shard_destroy(s);
	/* a delayed flush; then nothing is left that can expire */
	s = no_exptimes();
	shard_flush(s, 1);
	CU_ASSERT(!shard_tick(s, 4));
	shard_set_time(s, NOW + 2);
	CU_ASSERT(sweep_pass(s));
	CU_ASSERT(stats(s).curr_items == 0);
	shard_set_time(s, NOW + 3);
	CU_ASSERT(!shard_tick(s, 4));
	shard_destroy(s);
}

/* cache_memlimit: a lower limit evicts down to it at once. */
static void test_set_limit(void)
{
	struct shard *s = mk(4 << 20, 1024, false);
	char key[32], val[200];
	memset(val, 'v', sizeof(val) - 1);
	val[sizeof(val) - 1] = 0;
	for (int i = 0; i < 15000; i++) {
		snprintf(key, sizeof(key), "key%d", i);
		CU_ASSERT(set(s, key, val) == SHARD_STORED);
	}
	size_t before = shard_mem_used(s);
	CU_ASSERT(before > (2u << 20));
	CU_ASSERT(shard_set_limit(s, 1000) == -EINVAL);
	CU_ASSERT(shard_set_limit(s, 1 << 20) == 0);
	CU_ASSERT(shard_mem_used(s) <= (1u << 20));
	struct shard_stats st = stats(s);
	CU_ASSERT(st.evictions > 0);
	CU_ASSERT(st.limit_maxbytes == (1u << 20));
	CU_ASSERT(shard_check(s) == 0);
	/* Stores go on under the new limit, and a larger one is used. */
	for (int i = 0; i < 20000; i++) {
		snprintf(key, sizeof(key), "new%d", i);
		CU_ASSERT(set(s, key, val) == SHARD_STORED);
	}
	CU_ASSERT(shard_mem_used(s) <= (1u << 20));
	CU_ASSERT(shard_set_limit(s, 8 << 20) == 0);
	for (int i = 0; i < 20000; i++) {
		snprintf(key, sizeof(key), "big%d", i);
		CU_ASSERT(set(s, key, val) == SHARD_STORED);
	}
	CU_ASSERT(shard_mem_used(s) > (2u << 20));
	CU_ASSERT(shard_mem_used(s) <= (8u << 20));
	CU_ASSERT(shard_check(s) == 0);
	shard_destroy(s);
}

struct dump_ctx {
	unsigned seen, stop_at;
	unsigned found[64];
	bool bad;
};

static bool dump_cb(void *ctx, const struct shard_item_info *it)
{
	struct dump_ctx *d = ctx;
	char key[256];
	memcpy(key, it->key, it->klen);
	key[it->klen] = 0;
	unsigned i;
	if (sscanf(key, "d%u", &i) != 1 || i >= 64 || it->vlen != 3 ||
	    it->flags != i || it->cas == 0)
		d->bad = true;
	else
		d->found[i]++;
	d->seen++;
	return d->seen != d->stop_at;
}

/* The dump walk sees every live item once, in bounded steps. */
static void test_dump(void)
{
	struct shard *s = mk(4 << 20, 1024, false);
	char key[32];
	for (unsigned i = 0; i < 64; i++) {
		snprintf(key, sizeof(key), "d%u", i);
		CU_ASSERT(store(s, SHARD_OP_SET, key, "abc", i, i == 5 ? -1 : 0) ==
			  SHARD_STORED);
	}
	CU_ASSERT(simple(s, SHARD_OP_DELETE, "d7", 0) == SHARD_DELETED);
	struct dump_ctx d = { 0 };
	size_t cursor = 0, steps = 0;
	while (cursor != SIZE_MAX) {
		size_t n = shard_dump(s, &cursor, 10, dump_cb, &d);
		CU_ASSERT(n <= 10);
		steps++;
	}
	CU_ASSERT(steps > 2);
	CU_ASSERT(!d.bad);
	CU_ASSERT(d.seen == 62);
	for (unsigned i = 0; i < 64; i++)
		CU_ASSERT(d.found[i] == (i == 5 || i == 7 ? 0u : 1u));
	/* The callback stops the walk. */
	struct dump_ctx e = { .stop_at = 3 };
	cursor = 0;
	shard_dump(s, &cursor, SIZE_MAX, dump_cb, &e);
	CU_ASSERT(e.seen == 3 && cursor == SIZE_MAX);
	shard_destroy(s);
}

static void test_stats(void)
{
	struct shard *s = mk(1 << 20, 1024, false);
	struct sink k = { 0 };
	set(s, "a", "1");
	set(s, "b", "2");
	get(s, "a", &k, NULL);
	get(s, "zz", &k, NULL);
	simple(s, SHARD_OP_TOUCH, "a", 0);
	simple(s, SHARD_OP_DELETE, "b", 0);
	arith(s, SHARD_OP_INCR, "a", 1, NULL);
	struct shard_stats st = stats(s);
	CU_ASSERT(st.cmd_get == 2 && st.get_hits == 1 && st.get_misses == 1);
	CU_ASSERT(st.cmd_set == 2 && st.total_items == 2);
	CU_ASSERT(st.cmd_touch == 1 && st.touch_hits == 1);
	CU_ASSERT(st.delete_hits == 1 && st.incr_hits == 1);
	CU_ASSERT(st.curr_items == 1 && st.bytes > 0);
	CU_ASSERT(st.limit_maxbytes == 1 << 20 && st.hash_bytes > 0);
	shard_stats_reset(s);
	struct shard_stats z = stats(s);
	CU_ASSERT(z.cmd_get == 0 && z.get_hits == 0 && z.cmd_set == 0);
	CU_ASSERT(z.total_items == 0 && z.delete_hits == 0 && z.incr_hits == 0);
	CU_ASSERT(z.curr_items == 1 && z.bytes == st.bytes);
	CU_ASSERT(z.limit_maxbytes == st.limit_maxbytes);
	CU_ASSERT(z.hash_bytes == st.hash_bytes);
	shard_destroy(s);
}

int test_shard_register(void)
{
	CU_pSuite s = CU_add_suite("shard", NULL, NULL);
	if (!s)
		return -1;
	struct {
		const char *name;
		void (*fn)(void);
	} t[] = {
		{ "set/get, flags", test_set_get },
		{ "shard_hash is XXH3", test_hash_is_xxh3 },
		{ "keys that share a hash", test_key_compare },
		{ "shard_get", test_get_entry },
		{ "add/replace", test_add_replace },
		{ "append/prepend", test_append_prepend },
		{ "cas", test_cas },
		{ "explicit cas (E)", test_explicit_cas },
		{ "touch/gat", test_touch_gat },
		{ "delete", test_delete },
		{ "incr/decr", test_incr_decr },
		{ "exptime", test_exptime },
		{ "lent read", test_read_lent },
		{ "lent store", test_store_lent },
		{ "cas unique across shards", test_cas_unique },
		{ "too large", test_too_large },
		{ "sink refuses, bad requests", test_sink_refuses },
		{ "flush now", test_flush_now },
		{ "flush delayed", test_flush_delayed },
		{ "expiry sweep", test_sweep },
		{ "expiry sweep only when due", test_sweep_gated },
		{ "hash_is_expanding", test_hash_expanding },
		{ "stats and reset", test_stats },
		{ "set limit at run time", test_set_limit },
		{ "dump walk", test_dump },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (!CU_add_test(s, t[i].name, t[i].fn))
			return -1;
	return 0;
}
