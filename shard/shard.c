/*
 * shard.c - one shard: the storage commands' semantics (memcached's
 * protocol.txt), expiry, flush, memory accounting and counters, on top of
 * the table (table.h) and the S3-FIFO queues (evict.h).
 *
 * Every item is one block of the shard's heap (layout in item.h). A store
 * allocates the new item, copies key and value into it and only then
 * replaces the old one, so a failed store leaves the old item as it was
 * (except a set, which memcached makes drop the old item on failure).
 *
 * Memory: the limit (cfg.mem_limit, this shard's share) charges
 * heap_usable() of every item plus the table's arrays plus the ghost plus
 * the heap's fragmentation above limit/32 (measured every limit/64 bytes
 * of stores by walking the heap's pages; see frag_measure). The
 * `bytes` stat is the items' part (memcached's meaning); `hash_bytes` the
 * table's. A store first checks the item could fit at all, links it, then
 * evicts other items until the shard is back under its limit.
 *
 * Time and flush: exptimes are stored as absolute Unix seconds. CAS values
 * grow with every store of this shard, so "stored before the flush moment"
 * is "cas <= the last cas handed out when the moment came": a delayed
 * flush just records that cas when the clock reaches it, and items at or
 * below it are dropped lazily (on access, by the sweep or by eviction).
 *
 * Thread rule: the creating thread owns the shard (shard.h). Errors are
 * negative errno values; protocol outcomes go in res->status.
 */
#include "shard/shard.h"

#include <errno.h>
#include <string.h>
#include <xxhash.h>

#include "shard/evict.h"
#include "shard/heap.h"
#include "shard/item.h"
#include "shard/table.h"

#define SWEEP_SLOTS_PER_UNIT 8u
#define MIGRATE_SLOTS_PER_UNIT 16u
#define FRAG_STEP_MIN (256u << 10)
#define FRAG_SLACK_DIV 32u /* fragmentation up to limit/32 is not charged */

struct shard {
	struct shard_config cfg;
	heap_t *heap;
	struct table table;
	struct evict ev;
	int64_t now;
	uint64_t cas_ctr;      /* stores so far; cas = ctr * count + id + 1 */
	uint64_t last_cas;
	uint64_t flush_cas;    /* items with cas <= this were flushed */
	int64_t flush_at;      /* a delayed flush's moment, 0 if none */
	size_t item_bytes;     /* heap_usable() of all items */
	size_t frag_bytes;     /* heap pages' bytes in no live block (charged) */
	size_t frag_due;       /* bytes allocated since frag_bytes was measured */
	size_t sweep_cursor;
	bool sweep_active;
	int64_t sweep_started; /* clock of the last sweep pass's start */
	struct shard_stats st; /* counters; the gauges are filled on read */
};

enum item_state { ITEM_LIVE, ITEM_EXPIRED, ITEM_FLUSHED };

uint64_t shard_hash(const char *key, size_t len)
{
	return XXH3_64bits(key, len);
}

/* ---- memory and item lifetime ---------------------------------------- */

static size_t fixed_bytes(const struct shard *s)
{
	return table_bytes(&s->table) + s->ev.ghost_bytes + s->frag_bytes;
}

/* Allocation volume between two fragmentation measurements. */
static size_t frag_step(const struct shard *s)
{
	size_t step = s->cfg.mem_limit / 64;
	return step < FRAG_STEP_MIN ? FRAG_STEP_MIN : step;
}

/*
 * Measures the heap's fragmentation: its pages' bytes that hold no live
 * block (free blocks of size classes nobody is allocating now, unused
 * tails of pages). That memory is resident as surely as the items, so the
 * part of it above limit/32 is charged against the limit and make_room()
 * evicts for it. Why the slack: evicting rarely empties a page (FIFO
 * order scatters the freed blocks over many pages), so an eviction paid
 * for fragmentation mostly turns an item into one more free block; a
 * charge from the first byte feeds on itself (seen: a Zipf workload of
 * 100-500 B values lost 16% of its items, its fragmentation climbing from
 * 3% to 16%, with no RSS gained). Below the slack nothing is charged and
 * that loop never starts; with values of 1 B..100 KB (a few blocks per
 * 512 KiB page per class) fragmentation is 35-40% of a 16 MiB shard and
 * the charge is what bounds RSS. The charge is capped at half the limit,
 * so that a shard whose free blocks cannot be reused (a sudden change of
 * value sizes) still caches something.
 */
static void frag_measure(struct shard *s)
{
	struct heap_footprint f;
	heap_footprint(s->heap, &f);
	size_t frag = f.committed > f.used ? f.committed - f.used : 0;
	size_t slack = s->cfg.mem_limit / FRAG_SLACK_DIV;
	frag = frag > slack ? frag - slack : 0;
	size_t cap = s->cfg.mem_limit / 2;
	s->frag_bytes = frag < cap ? frag : cap;
	s->frag_due = 0;
}

size_t shard_mem_used(const struct shard *s)
{
	return s->item_bytes + fixed_bytes(s);
}

static enum item_state state_of(const struct shard *s, const struct item *it)
{
	if (it->cas <= s->flush_cas)
		return ITEM_FLUSHED;
	if (it->exptime && (int64_t)it->exptime <= s->now)
		return ITEM_EXPIRED;
	return ITEM_LIVE;
}

/* Unlinks an item from the table (its queue already left) and frees it. */
static void drop(struct shard *s, struct item *it, uint64_t hash)
{
	table_remove(&s->table, it, hash);
	s->item_bytes -= heap_usable(it);
	s->st.curr_items--;
	heap_free(it);
}

static void unlink_free(struct shard *s, struct item *it, uint64_t hash)
{
	evict_remove(&s->ev, it);
	drop(s, it, hash);
}

/* Counts an item that leaves because it expired (memcached's reclaimed). */
static void count_dead(struct shard *s, const struct item *it,
		       enum item_state st)
{
	if (st != ITEM_EXPIRED)
		return;
	s->st.reclaimed++;
	if (!(it->bits & ITEM_FETCHED))
		s->st.expired_unfetched++;
}

/* Evicts until the shard is under its limit, never `protect`. */
static void make_room(struct shard *s, const struct item *protect)
{
	while (shard_mem_used(s) > s->cfg.mem_limit) {
		bool from_small;
		size_t budget = s->cfg.mem_limit > fixed_bytes(s) ?
				s->cfg.mem_limit - fixed_bytes(s) : 0;
		struct item *it = evict_victim(&s->ev, budget, protect,
					       &from_small);
		if (!it)
			return;
		uint64_t hash = item_hash(it);
		enum item_state st = state_of(s, it);
		if (st == ITEM_LIVE) {
			s->st.evictions++;
			if (!(it->bits & ITEM_FETCHED))
				s->st.evicted_unfetched++;
			if (from_small)
				evict_ghost_add(&s->ev, hash);
		}
		count_dead(s, it, st);
		drop(s, it, hash);
	}
}

static uint64_t next_cas(struct shard *s)
{
	s->last_cas = s->cas_ctr++ * s->cfg.count + s->cfg.id + 1;
	return s->last_cas;
}

static struct item *item_new(struct shard *s, const struct shard_req *req,
			     uint32_t vlen)
{
	struct item *it = heap_alloc(s->heap, item_size(req->klen, vlen));
	if (!it)
		return NULL;
	memset(it, 0, sizeof(*it));
	it->klen = req->klen;
	it->vlen = vlen;
	memcpy(item_key(it), req->key, req->klen);
	return it;
}

/*
 * Puts `it` in place of `old` (NULL if none), giving it a new cas.
 * Returns 0, or -ENOMEM after freeing `it` (and leaving `old` alone) when
 * it cannot fit: not even in an empty shard, or, under no_evict, not
 * without evicting.
 */
static int link_item(struct shard *s, struct item *it, struct item *old,
		     uint64_t hash)
{
	size_t u = heap_usable(it);
	/* would fit in an emptied shard, whose fragmentation goes with it */
	size_t fixed = fixed_bytes(s) - s->frag_bytes +
		       table_grow_bytes(&s->table);
	size_t olds = old ? heap_usable(old) : 0;
	bool fits = u + fixed <= s->cfg.mem_limit;
	if (s->cfg.no_evict)
		fits = s->item_bytes - olds + u + fixed <= s->cfg.mem_limit;
	if (!fits || table_insert(&s->table, it, hash) < 0)
		goto fail;
	if (old) /* after the insert, so that a failed insert keeps it */
		unlink_free(s, old, hash);
	evict_insert(&s->ev, it, u, hash);
	s->item_bytes += u;
	s->st.curr_items++;
	it->cas = next_cas(s);
	s->frag_due += u;
	if (s->frag_due >= frag_step(s))
		frag_measure(s);
	if (!s->cfg.no_evict)
		make_room(s, it);
	return 0;
fail:
	heap_free(it);
	return -ENOMEM;
}

/* ---- time ------------------------------------------------------------- */

/* Raw protocol exptime -> absolute seconds; 0 never; -1 already expired. */
static int64_t abs_exptime(const struct shard *s, int64_t e)
{
	if (e == 0)
		return 0;
	if (e < 0)
		return -1;
	int64_t t = e <= SHARD_REL_TIME_MAX ? s->now + e : e;
	if (t <= s->now)
		return -1;
	return t > UINT32_MAX ? UINT32_MAX : t;
}

/* A delayed flush whose moment came: everything stored so far goes. */
static void check_flush(struct shard *s)
{
	if (s->flush_at && s->now >= s->flush_at) {
		s->flush_cas = s->last_cas;
		s->flush_at = 0;
	}
}

void shard_set_time(struct shard *s, int64_t now)
{
	s->now = now;
	check_flush(s);
}

/* ---- lookups ----------------------------------------------------------- */

/*
 * The live item with req's key, or NULL. An expired or flushed item found
 * on the way is freed and *dead says which (ITEM_LIVE if none was found).
 */
static struct item *lookup(struct shard *s, const struct shard_req *req,
			   enum item_state *dead)
{
	*dead = ITEM_LIVE;
	struct item *it = table_find(&s->table, req->hash, req->key, req->klen);
	if (!it)
		return NULL;
	enum item_state st = state_of(s, it);
	if (st == ITEM_LIVE)
		return it;
	*dead = st;
	count_dead(s, it, st);
	unlink_free(s, it, req->hash);
	return NULL;
}

static void count_read_miss(struct shard *s, bool gat, enum item_state dead)
{
	s->st.cmd_get++;
	if (gat) {
		s->st.cmd_touch++;
		s->st.touch_misses++;
	} else {
		s->st.get_misses++;
	}
	if (dead == ITEM_EXPIRED)
		s->st.get_expired++;
	else if (dead == ITEM_FLUSHED)
		s->st.get_flushed++;
}

/* get / gat. memcached counts a gat hit as a touch hit, not a get hit. */
static int do_read(struct shard *s, const struct shard_req *req,
		   struct shard_res *res, shard_sink_fn sink, void *ctx)
{
	bool gat = req->op == SHARD_OP_GAT;
	enum item_state dead;
	struct item *it = lookup(s, req, &dead);
	if (!it) {
		count_read_miss(s, gat, dead);
		res->status = SHARD_NOT_FOUND;
		return 0;
	}
	struct shard_view v = {
		.key = item_key(it), .klen = it->klen, .flags = it->flags,
		.vlen = it->vlen, .cas = it->cas,
	};
	char *dst = sink(ctx, &v);
	if (!dst)
		return -ENOBUFS;
	memcpy(dst, item_value(it), it->vlen);
	*res = (struct shard_res){ .status = SHARD_HIT, .flags = it->flags,
				   .vlen = it->vlen, .cas = it->cas };
	s->st.cmd_get++;
	evict_touch(it);
	if (!gat) {
		s->st.get_hits++;
		return 0;
	}
	s->st.cmd_touch++;
	s->st.touch_hits++;
	int64_t e = abs_exptime(s, req->exptime);
	if (e < 0)
		unlink_free(s, it, req->hash);
	else
		it->exptime = (uint32_t)e;
	return 0;
}

/* ---- storage commands -------------------------------------------------- */

/* Whether the op may store given the current item; STORED if it may. */
static enum shard_status store_allowed(struct shard *s,
				       const struct shard_req *req,
				       const struct item *old)
{
	switch (req->op) {
	case SHARD_OP_ADD:
		return old ? SHARD_NOT_STORED : SHARD_STORED;
	case SHARD_OP_REPLACE:
	case SHARD_OP_APPEND:
	case SHARD_OP_PREPEND:
		return old ? SHARD_STORED : SHARD_NOT_STORED;
	case SHARD_OP_CAS:
		if (!old) {
			s->st.cas_misses++;
			return SHARD_NOT_FOUND;
		}
		if (old->cas != req->cas) {
			s->st.cas_badval++;
			return SHARD_EXISTS;
		}
		return SHARD_STORED;
	default:
		return SHARD_STORED;
	}
}

/* A new item for req: its value, or old's value with req's around it. */
static struct item *build_item(struct shard *s, const struct shard_req *req,
			       struct item *old, uint32_t vlen, int64_t exp)
{
	struct item *it = item_new(s, req, vlen);
	if (!it)
		return NULL;
	char *v = item_value(it);
	if (req->op == SHARD_OP_APPEND) {
		memcpy(v, item_value(old), old->vlen);
		memcpy(v + old->vlen, req->value, req->vlen);
	} else if (req->op == SHARD_OP_PREPEND) {
		memcpy(v, req->value, req->vlen);
		memcpy(v + req->vlen, item_value(old), old->vlen);
	} else if (req->vlen) {
		memcpy(v, req->value, req->vlen);
	}
	bool concat = req->op == SHARD_OP_APPEND || req->op == SHARD_OP_PREPEND;
	it->flags = concat ? old->flags : req->flags;
	it->exptime = (uint32_t)exp;
	return it;
}

static void store_done(struct shard *s, const struct shard_req *req,
		       struct shard_res *res, uint64_t cas)
{
	s->st.total_items++;
	if (req->op == SHARD_OP_CAS)
		s->st.cas_hits++;
	res->status = SHARD_STORED;
	res->cas = cas;
}

/* A set that fails drops the old item (memcached: no stale data). */
static void store_fail(struct shard *s, const struct shard_req *req,
		       struct shard_res *res, enum shard_status st)
{
	enum item_state dead;
	struct item *old;
	if (req->op == SHARD_OP_SET && (old = lookup(s, req, &dead)))
		unlink_free(s, old, req->hash);
	res->status = st;
}

/* set, add, replace, append, prepend, cas. */
static int do_store(struct shard *s, const struct shard_req *req,
		    struct shard_res *res)
{
	s->st.cmd_set++;
	if (req->vlen > s->cfg.item_max) {
		store_fail(s, req, res, SHARD_TOO_LARGE);
		return 0;
	}
	enum item_state dead;
	struct item *old = lookup(s, req, &dead);
	enum shard_status st = store_allowed(s, req, old);
	if (st != SHARD_STORED) {
		res->status = st;
		return 0;
	}
	bool concat = req->op == SHARD_OP_APPEND || req->op == SHARD_OP_PREPEND;
	uint64_t vlen = req->vlen + (concat ? (uint64_t)old->vlen : 0);
	if (vlen > s->cfg.item_max) {
		res->status = SHARD_TOO_LARGE;
		return 0;
	}
	int64_t exp = concat ? old->exptime : abs_exptime(s, req->exptime);
	if (exp < 0) { /* stored and expired at once: nothing to keep */
		if (old)
			unlink_free(s, old, req->hash);
		store_done(s, req, res, next_cas(s));
		return 0;
	}
	struct item *it = build_item(s, req, old, (uint32_t)vlen, exp);
	if (!it || link_item(s, it, old, req->hash) < 0) {
		store_fail(s, req, res, SHARD_NO_MEMORY);
		return 0;
	}
	store_done(s, req, res, it->cas);
	return 0;
}

/* ---- touch, delete, incr/decr ------------------------------------------ */

static int do_touch(struct shard *s, const struct shard_req *req,
		    struct shard_res *res)
{
	enum item_state dead;
	s->st.cmd_touch++;
	struct item *it = lookup(s, req, &dead);
	if (!it) {
		s->st.touch_misses++;
		res->status = SHARD_NOT_FOUND;
		return 0;
	}
	s->st.touch_hits++;
	evict_touch(it);
	int64_t e = abs_exptime(s, req->exptime);
	if (e < 0)
		unlink_free(s, it, req->hash);
	else
		it->exptime = (uint32_t)e;
	res->status = SHARD_TOUCHED;
	return 0;
}

static int do_delete(struct shard *s, const struct shard_req *req,
		     struct shard_res *res)
{
	enum item_state dead;
	struct item *it = lookup(s, req, &dead);
	if (!it) {
		s->st.delete_misses++;
		res->status = SHARD_NOT_FOUND;
		return 0;
	}
	unlink_free(s, it, req->hash);
	s->st.delete_hits++;
	res->status = SHARD_DELETED;
	return 0;
}

/* A value incr/decr accepts: 1..20 decimal digits, at most 2^64 - 1. */
static bool parse_u64(const char *p, uint32_t n, uint64_t *out)
{
	if (n == 0 || n > 20)
		return false;
	uint64_t v = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		unsigned d = (unsigned)(p[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

/* Decimal digits of v into buf (at least 20 bytes); returns the length. */
static uint32_t format_u64(char *buf, uint64_t v)
{
	char tmp[20];
	uint32_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (uint32_t i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	return n;
}

/*
 * Writes the new number into the item: in place when the block has room
 * (its memory charge does not change), else as a new item that replaces
 * it. Returns 0 with *cas set, or -ENOMEM.
 */
static int store_number(struct shard *s, const struct shard_req *req,
			struct item *it, const char *digits, uint32_t n,
			uint64_t *cas)
{
	if (item_size(it->klen, n) <= heap_usable(it)) {
		memcpy(item_value(it), digits, n);
		it->vlen = n;
		it->cas = *cas = next_cas(s);
		return 0;
	}
	struct item *nit = item_new(s, req, n);
	if (!nit)
		return -ENOMEM;
	memcpy(item_value(nit), digits, n);
	nit->flags = it->flags;
	nit->exptime = it->exptime;
	if (link_item(s, nit, it, req->hash) < 0)
		return -ENOMEM;
	*cas = nit->cas;
	return 0;
}

static int do_arith(struct shard *s, const struct shard_req *req,
		    struct shard_res *res)
{
	bool incr = req->op == SHARD_OP_INCR;
	enum item_state dead;
	struct item *it = lookup(s, req, &dead);
	if (!it) {
		incr ? s->st.incr_misses++ : s->st.decr_misses++;
		res->status = SHARD_NOT_FOUND;
		return 0;
	}
	uint64_t v;
	if (!parse_u64(item_value(it), it->vlen, &v)) {
		res->status = SHARD_NON_NUMERIC;
		return 0;
	}
	if (incr)
		v += req->delta; /* wraps at 2^64, as memcached */
	else
		v = v < req->delta ? 0 : v - req->delta;
	char digits[20];
	uint32_t n = format_u64(digits, v);
	evict_touch(it);
	uint64_t cas;
	if (store_number(s, req, it, digits, n, &cas) < 0) {
		res->status = SHARD_NO_MEMORY;
		return 0;
	}
	incr ? s->st.incr_hits++ : s->st.decr_hits++;
	res->status = SHARD_NUMBER;
	res->number = v;
	res->cas = cas;
	return 0;
}

int shard_exec(struct shard *s, const struct shard_req *req,
	       struct shard_res *res, shard_sink_fn sink, void *ctx)
{
	if (!req->key || req->klen == 0 || req->klen > SHARD_KEY_MAX ||
	    (req->vlen && !req->value))
		return -EINVAL;
	*res = (struct shard_res){ .status = SHARD_NOT_FOUND };
	check_flush(s);
	switch (req->op) {
	case SHARD_OP_GET:
	case SHARD_OP_GAT:
		return sink ? do_read(s, req, res, sink, ctx) : -EINVAL;
	case SHARD_OP_SET:
	case SHARD_OP_ADD:
	case SHARD_OP_REPLACE:
	case SHARD_OP_APPEND:
	case SHARD_OP_PREPEND:
	case SHARD_OP_CAS:
		return do_store(s, req, res);
	case SHARD_OP_TOUCH:
		return do_touch(s, req, res);
	case SHARD_OP_DELETE:
		return do_delete(s, req, res);
	case SHARD_OP_INCR:
	case SHARD_OP_DECR:
		return do_arith(s, req, res);
	}
	return -EINVAL;
}

/* ---- flush, background work -------------------------------------------- */

/* Frees every item now and shrinks the table back to its first size. */
static void free_all(struct shard *s)
{
	struct item *it;
	while ((it = evict_pop(&s->ev))) {
		s->item_bytes -= heap_usable(it);
		heap_free(it);
	}
	s->st.curr_items = 0;
	table_clear(&s->table);
	s->sweep_active = false;
	frag_measure(s);
}

void shard_flush(struct shard *s, int64_t delay)
{
	int64_t t = delay <= SHARD_REL_TIME_MAX ? s->now + delay : delay;
	if (delay > 0 && t > s->now) {
		s->flush_at = t;
		return;
	}
	free_all(s);
	s->flush_at = 0;
	s->flush_cas = s->last_cas;
}

/*
 * One bounded step of the expiry sweep: a pass over the table's slots
 * starts at most once per clock second and frees expired and flushed
 * items. Returns true while a pass is unfinished.
 */
static bool sweep(struct shard *s, size_t slots)
{
	if (!s->sweep_active) {
		if (s->now == s->sweep_started)
			return false;
		s->sweep_active = true;
		s->sweep_cursor = 0;
		s->sweep_started = s->now;
	}
	while (slots-- && s->sweep_cursor < table_slots(&s->table)) {
		struct item *it = table_at(&s->table, s->sweep_cursor);
		enum item_state st = it ? state_of(s, it) : ITEM_LIVE;
		if (st == ITEM_LIVE) {
			s->sweep_cursor++;
			continue;
		}
		/* the removal shifts a later item into this slot: look again */
		count_dead(s, it, st);
		unlink_free(s, it, item_hash(it));
	}
	s->sweep_active = s->sweep_cursor < table_slots(&s->table);
	return s->sweep_active;
}

bool shard_tick(struct shard *s, unsigned budget)
{
	check_flush(s);
	if (s->frag_due >= frag_step(s) / 4)
		frag_measure(s);
	if (table_migrating(&s->table)) {
		table_migrate(&s->table, (size_t)budget * MIGRATE_SLOTS_PER_UNIT);
		return true;
	}
	return sweep(s, (size_t)budget * SWEEP_SLOTS_PER_UNIT);
}

/* ---- lifecycle, stats, test hooks --------------------------------------- */

struct shard *shard_create(const struct shard_config *cfg)
{
	if (!cfg || cfg->count == 0 || cfg->id >= cfg->count)
		return NULL;
	heap_t *h = heap_create();
	if (!h)
		return NULL;
	struct shard *s = heap_zalloc(h, sizeof(*s));
	if (!s)
		goto fail_heap;
	s->cfg = *cfg;
	s->heap = h;
	s->sweep_started = INT64_MIN;
	if (table_init(&s->table, h) < 0)
		goto fail_shard;
	if (evict_init(&s->ev, h, cfg->mem_limit) < 0)
		goto fail_table;
	return s;
fail_table:
	table_deinit(&s->table);
fail_shard:
	heap_free(s);
fail_heap:
	heap_destroy(h);
	return NULL;
}

void shard_destroy(struct shard *s)
{
	if (!s)
		return;
	heap_t *h = s->heap;
	free_all(s);
	table_deinit(&s->table);
	evict_deinit(&s->ev);
	heap_free(s);
	heap_destroy(h);
}

void shard_stats(const struct shard *s, struct shard_stats *out)
{
	*out = s->st;
	out->bytes = s->item_bytes;
	out->limit_maxbytes = s->cfg.mem_limit;
	out->hash_bytes = table_bytes(&s->table);
}

void shard_stats_reset(struct shard *s)
{
	uint64_t curr = s->st.curr_items;
	memset(&s->st, 0, sizeof(s->st));
	s->st.curr_items = curr;
}

bool shard_peek(struct shard *s, const char *key, uint8_t klen)
{
	struct item *it = table_find(&s->table, shard_hash(key, klen), key, klen);
	return it && state_of(s, it) == ITEM_LIVE;
}
