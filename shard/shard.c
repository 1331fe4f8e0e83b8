/*
 * shard.c - one shard: the storage commands' semantics (memcached's
 * protocol.txt), the eviction policy over segments, expiry, flush, memory
 * accounting and counters, on top of the segment store (seg.h), the index
 * (table.h) and the ghost (ghost.h).
 *
 * Storing: an item (layout in item.h) is appended to the open segment of
 * the small queue (or of the main queue when its key is a ghost, or when
 * it overwrites an item that is in main); the index entry then moves to
 * it and the old copy becomes dead bytes of its segment. A failed store
 * leaves the old item as it was (except a set, which memcached makes drop
 * the old item on failure). While a store copies from the old item
 * (append, prepend, touch that adds an exptime), the old item's segment
 * is pinned: no retirement picks it, so the old bytes stay in place until
 * the copy is made.
 *
 * Eviction is S3-FIFO (ghost.h) at segment granularity. When a new
 * segment is needed and the limit is reached, the head (oldest sealed
 * segment) of the small queue is retired while small holds 10% or more of
 * the segments' bytes, else the head of main. Retiring walks the
 * segment's items: an item the index no longer points to is dead and
 * goes; an expired or flushed one goes; a live one read since it was
 * written (frequency > 0) is copied forward to main's open segment with
 * its frequency decremented; the others are evicted (from small: their
 * hash goes to the ghost). Then the whole segment is free. Copies may need
 * one new segment before the retired one is free: that is the store's
 * spare (seg.h), and the retired segment becomes the next spare. A large
 * item's dedicated segment is retired the same way, but a surviving item
 * is not copied: its segment moves to main's tail.
 *
 * Dead bytes (deleted, overwritten, expired items not yet walked over)
 * count against the limit, exactly. They are bounded three ways: a sealed
 * segment whose last live item goes is freed at once; shard_tick()
 * compacts the sealed segment with the most dead bytes (copies its live
 * items to its queue's open segment, keeping their frequency) while dead
 * bytes exceed a quarter of the segments; and under -M, where nothing may
 * be evicted, making room compacts instead of retiring. Expiry: each
 * segment knows the latest exptime of its items, and shard_tick() frees a
 * segment whose items have all expired without waiting for its turn; an
 * expired item is also dropped when a read finds it and by an incremental
 * sweep of the index.
 *
 * Memory: the limit (cfg.mem_limit, this shard's share) charges the heap
 * bytes of every segment (open, sealed, free, spare), the index, the
 * ghost, the segment id array, and the heap's fragmentation above
 * limit/32 (measured every limit/64 bytes of stores by walking the heap's
 * pages; only dedicated segments of large items can fragment it, since
 * regular segments all have one size). `bytes` is the live items' bytes.
 *
 * Time and flush: exptimes are stored as absolute Unix seconds. Store
 * sequence numbers grow with every store of this shard, so "stored before
 * the flush moment" is "seq <= the last seq handed out when the moment
 * came": a delayed flush just records that seq when the clock reaches
 * it, and items at or below it are dropped lazily.
 *
 * Thread rule: the creating thread owns the shard (shard.h). Errors are
 * negative errno values; protocol outcomes go in res->status.
 */
#include "shard/shard.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "shard/ghost.h"
#include "shard/heap.h"
#include "shard/item.h"
#include "shard/seg.h"
#include "shard/table.h"

#define SWEEP_SLOTS_PER_UNIT 8u
#define MIGRATE_SLOTS_PER_UNIT 16u
#define EXPIRE_SEGS_PER_UNIT 4u
#define FRAG_STEP_MIN (256u << 10)
#define FRAG_SLACK_DIV 32u /* fragmentation up to limit/32 is not charged */
#define DEAD_MAX_DIV 4u    /* compact while dead bytes > segments' bytes/4 */

struct shard {
	struct shard_config cfg;
	heap_t *heap;
	struct table table;
	struct segstore seg;
	struct ghost ghost;
	int64_t now;
	uint64_t seq;          /* the last store sequence number handed out */
	uint64_t flush_seq;    /* items with seq <= this were flushed */
	int64_t flush_at;      /* a delayed flush's moment, 0 if none */
	uint32_t pinned;       /* a segment id retirement must skip, or 0 */
	size_t frag_bytes;     /* heap pages' bytes in no live block (charged) */
	size_t frag_due;       /* bytes allocated since frag_bytes was measured */
	size_t sweep_cursor;
	bool sweep_active;
	int64_t sweep_started; /* clock of the last sweep pass's start */
	uint32_t expire_cursor;/* next segment id the expiry scan looks at */
	int64_t compact_checked; /* clock of the last fruitless compaction search */
	struct shard_stats st; /* counters; the gauges are filled on read */
};

enum item_state { ITEM_LIVE, ITEM_EXPIRED, ITEM_FLUSHED };

/* How a retirement treats the live items it walks over. */
enum retire_mode {
	RETIRE_EVICT,   /* S3-FIFO: copy forward the ones read, evict the rest */
	RETIRE_COMPACT, /* keep every live item, in the segment's own queue */
};

/* An item found through the index, valid only inside the current call. */
struct found {
	uint64_t *slot;
	struct seg *g;
	uint32_t off;
	char *p;
	struct item_hdr h;
	size_t size;
};

uint64_t shard_hash(const char *key, size_t len)
{
	return XXH3_64bits(key, len);
}

static inline uint64_t cas_of(const struct shard *s, uint64_t seq)
{
	return seq * s->cfg.count + s->cfg.id + 1;
}

/* ---- locations ---------------------------------------------------------- */

static inline char *item_at(const struct shard *s, uint64_t loc)
{
	struct seg *g = seg_by_id(&s->seg, table_loc_seg(loc));
	return g->data + table_loc_off(loc);
}

static bool match_at(void *ctx, uint64_t loc, const char *key, uint8_t klen)
{
	const char *p = item_at(ctx, loc);
	return (uint8_t)p[0] == klen &&
	       memcmp(p + item_head_len(item_bits(p)), key, klen) == 0;
}

static uint64_t hash_at(void *ctx, uint64_t loc)
{
	const char *p = item_at(ctx, loc);
	return XXH3_64bits(p + item_head_len(item_bits(p)), (uint8_t)p[0]);
}

static void found_at(struct shard *s, uint64_t *slot, struct found *f)
{
	uint64_t loc = *slot & TABLE_LOC_MASK;
	f->slot = slot;
	f->g = seg_by_id(&s->seg, table_loc_seg(loc));
	f->off = table_loc_off(loc);
	f->p = f->g->data + f->off;
	item_decode(f->p, &f->h);
	f->size = f->h.hlen + f->h.klen + f->h.vlen;
}

static inline const char *found_key(const struct found *f)
{
	return f->p + f->h.hlen;
}

static inline char *found_value(const struct found *f)
{
	return f->p + f->h.hlen + f->h.klen;
}

/* ---- memory ------------------------------------------------------------- */

static size_t fixed_bytes(const struct shard *s)
{
	return table_bytes(&s->table) + s->ghost.bytes + s->seg.ids_bytes +
	       s->frag_bytes;
}

size_t shard_mem_used(const struct shard *s)
{
	return s->seg.bytes + fixed_bytes(s);
}

/* Allocation volume between two fragmentation measurements. */
static size_t frag_step(const struct shard *s)
{
	size_t step = s->cfg.mem_limit / 64;
	return step < FRAG_STEP_MIN ? FRAG_STEP_MIN : step;
}

/*
 * Measures the heap's fragmentation: its pages' bytes that hold no live
 * block. Regular segments are all one size, so this is the holes left by
 * dedicated segments of large items in mimalloc's size classes. The part
 * above limit/32 is charged against the limit (capped at half of it, so a
 * shard whose holes cannot be reused still caches something).
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

static enum item_state state_of(const struct shard *s,
				const struct item_hdr *h)
{
	if (h->seq <= s->flush_seq)
		return ITEM_FLUSHED;
	if (h->exptime && (int64_t)h->exptime <= s->now)
		return ITEM_EXPIRED;
	return ITEM_LIVE;
}

/* Counts an item that leaves because it expired (memcached's reclaimed). */
static void count_dead(struct shard *s, const struct item_hdr *h,
		       enum item_state st)
{
	if (st != ITEM_EXPIRED)
		return;
	s->st.reclaimed++;
	if (!(h->bits & ITEM_FETCHED))
		s->st.expired_unfetched++;
}

/* Frees a queued segment that holds nothing live any more. */
static void seg_maybe_free(struct shard *s, struct seg *g)
{
	if (g->items || g->open || g->queue == SEG_NONE || g->id == s->pinned)
		return;
	seg_unlink(&s->seg, g);
	seg_give(&s->seg, g);
}

/* Takes a found item out of the index; its bytes become dead. */
static void drop(struct shard *s, struct found *f)
{
	table_remove(&s->table, f->slot);
	seg_live_sub(&s->seg, f->g, f->size);
	s->st.curr_items--;
	seg_maybe_free(s, f->g);
}

/* ---- retirement and compaction ------------------------------------------ */

/*
 * Copies a live item to q's open segment (taking the spare when the open
 * one is full) and points its index slot there. false if there is no
 * room: the caller evicts it instead.
 */
static bool move_item(struct shard *s, struct found *f, enum seg_queue q,
		      uint8_t bits)
{
	struct seg *g = s->seg.q[q].open;
	uint32_t off;
	char *d = seg_bump(&s->seg, g, f->size, &off);
	if (!d) {
		if (!s->seg.spare)
			return false;
		g = s->seg.spare;
		s->seg.spare = NULL;
		seg_set_open(&s->seg, q, g);
		if (!(d = seg_bump(&s->seg, g, f->size, &off)))
			return false;
	}
	memcpy(d, f->p, f->size);
	item_set_bits(d, bits);
	seg_live_add(&s->seg, g, f->size, f->h.exptime);
	seg_live_sub(&s->seg, f->g, f->size);
	table_move(f->slot, table_loc(g->id, off));
	s->st.items_moved++;
	return true;
}

static void evict_item(struct shard *s, struct found *f, bool from_small,
		       uint64_t hash)
{
	s->st.evictions++;
	if (!(f->h.bits & ITEM_FETCHED))
		s->st.evicted_unfetched++;
	if (from_small)
		ghost_add(&s->ghost, hash);
	drop(s, f);
}

/* One live item of a segment being retired from queue q. */
static void retire_item(struct shard *s, struct found *f, enum seg_queue q,
			enum retire_mode mode, uint64_t hash)
{
	unsigned freq = f->h.bits & ITEM_FREQ;
	if (mode == RETIRE_COMPACT) {
		if (!move_item(s, f, q, f->h.bits))
			evict_item(s, f, q == SEG_SMALL, hash);
		return;
	}
	if (!freq || !move_item(s, f, SEG_MAIN, (uint8_t)(f->h.bits - 1)))
		evict_item(s, f, q == SEG_SMALL, hash);
}

/* A dedicated segment's item survives by moving its segment to main. */
static bool retire_dedicated(struct shard *s, struct seg *x, struct found *f,
			     enum retire_mode mode, enum seg_queue q)
{
	unsigned freq = f->h.bits & ITEM_FREQ;
	if (mode == RETIRE_EVICT && !freq)
		return false;
	if (mode == RETIRE_EVICT) {
		item_set_bits(f->p, (uint8_t)(f->h.bits - 1));
		q = SEG_MAIN;
	}
	seg_push(&s->seg, q, x);
	s->st.items_moved++;
	return true;
}

/*
 * Retires a sealed segment: walks its items, keeps the live ones the mode
 * keeps (copied forward), drops the rest, then frees it (it becomes the
 * spare if a copy took the spare).
 */
static void retire(struct shard *s, struct seg *x, enum retire_mode mode)
{
	enum seg_queue q = (enum seg_queue)x->queue;
	seg_unlink(&s->seg, x);
	uint32_t off = 0;
	while (off < x->used) {
		struct found f = { .g = x, .off = off, .p = x->data + off };
		item_decode(f.p, &f.h);
		f.size = f.h.hlen + f.h.klen + f.h.vlen;
		off += (uint32_t)f.size;
		if (item_is_pad(f.p))
			continue;
		uint64_t hash = XXH3_64bits(found_key(&f), f.h.klen);
		f.slot = table_find_loc(&s->table, hash,
					table_loc(x->id, f.off));
		if (!f.slot)
			continue; /* dead: deleted or overwritten */
		enum item_state st = state_of(s, &f.h);
		if (st != ITEM_LIVE) {
			count_dead(s, &f.h, st);
			drop(s, &f);
		} else if (x->dedicated) {
			if (retire_dedicated(s, x, &f, mode, q))
				return;
			evict_item(s, &f, q == SEG_SMALL, hash);
		} else {
			retire_item(s, &f, q, mode, hash);
		}
	}
	bool regular = !x->dedicated;
	seg_give(&s->seg, x);
	if (!s->seg.spare && regular)
		s->seg.spare = seg_take(&s->seg, 0); /* x, from the free list */
}

/* The oldest sealed segment of q that is not pinned, or NULL. */
static struct seg *queue_head(struct shard *s, enum seg_queue q)
{
	struct seg *g = s->seg.q[q].head;
	while (g && g->id == s->pinned)
		g = g->next;
	return g;
}

/* The sealed regular segment with the most dead bytes (at least one). */
static struct seg *most_dead(struct shard *s)
{
	struct seg *best = NULL;
	uint32_t dead = 0;
	for (int q = 0; q < SEG_NQ; q++)
		for (struct seg *g = s->seg.q[q].head; g; g = g->next)
			if (!g->dedicated && g->id != s->pinned &&
			    g->used - g->live > dead) {
				best = g;
				dead = g->used - g->live;
			}
	return best;
}

/*
 * Frees memory by retiring one segment (S3-FIFO's choice of queue), or,
 * under -M, by compacting the segment with the most dead bytes. false if
 * there is nothing to retire.
 */
static bool evict_one(struct shard *s)
{
	if (s->cfg.no_evict) {
		struct seg *x = most_dead(s);
		if (!x)
			return false;
		s->st.segments_compacted++;
		retire(s, x, RETIRE_COMPACT);
		return true;
	}
	const struct seg_q *small = &s->seg.q[SEG_SMALL];
	const struct seg_q *main = &s->seg.q[SEG_MAIN];
	bool small_first = small->bytes * 10 >= small->bytes + main->bytes;
	struct seg *x = queue_head(s, small_first ? SEG_SMALL : SEG_MAIN);
	if (!x)
		x = queue_head(s, small_first ? SEG_MAIN : SEG_SMALL);
	if (!x)
		return false;
	s->st.segments_retired++;
	retire(s, x, RETIRE_EVICT);
	return true;
}

/* Gives the free list back to the heap (memory is short); false if it
   was empty. */
static bool release_free(struct shard *s)
{
	if (!s->seg.nfree)
		return false;
	seg_trim(&s->seg, 0);
	return true;
}

/* Evicts until the shard is under its limit (after the index grew). */
static void make_room(struct shard *s)
{
	while (shard_mem_used(s) > s->cfg.mem_limit)
		if (!release_free(s) && !evict_one(s))
			return;
}

/* A regular segment to write into, evicting to stay under the limit. */
static struct seg *new_regular(struct shard *s)
{
	size_t need = s->seg.seg_size * (s->seg.spare ? 1u : 2u);
	for (;;) {
		if (s->seg.free || shard_mem_used(s) + need <= s->cfg.mem_limit)
			break;
		if (!evict_one(s))
			return NULL;
	}
	if (!s->seg.spare && !(s->seg.spare = seg_take(&s->seg, 0)))
		return NULL;
	return seg_take(&s->seg, 0);
}

/* A dedicated segment for an n-byte item, evicting to make room. */
static struct seg *new_dedicated(struct shard *s, size_t n)
{
	size_t cost = seg_cost(&s->seg, n);
	while (shard_mem_used(s) + cost > s->cfg.mem_limit)
		if (!release_free(s) && !evict_one(s))
			return NULL;
	return seg_take(&s->seg, n);
}

/*
 * Space for an n-byte item in queue q: *gp and *off say where. NULL when
 * there is no room (nothing left to evict, -M, or no heap memory).
 */
static char *alloc_item(struct shard *s, enum seg_queue q, size_t n,
			struct seg **gp, uint32_t *off)
{
	struct seg *g;
	char *p;
	if (n > s->seg.large) {
		if (!(g = new_dedicated(s, n)))
			return NULL;
		seg_push(&s->seg, q, g);
	} else if (!(p = seg_bump(&s->seg, s->seg.q[q].open, n, off))) {
		if (!(g = new_regular(s)))
			return NULL;
		/* making room may have copied items into a new open segment
		   of q: fill that one before opening another */
		if ((p = seg_bump(&s->seg, s->seg.q[q].open, n, off))) {
			seg_give(&s->seg, g);
			*gp = s->seg.q[q].open;
			return p;
		}
		seg_set_open(&s->seg, q, g);
	} else {
		*gp = s->seg.q[q].open;
		return p;
	}
	*gp = g;
	return seg_bump(&s->seg, g, n, off);
}

/* ---- placing items ------------------------------------------------------ */

/*
 * Makes room under the limit for the array the index's next insert may
 * allocate (a rebuild keeps the old array until it is emptied), never
 * retiring g, the segment of the item about to be indexed. false if no
 * room can be had.
 */
static bool index_room(struct shard *s, struct seg *g)
{
	size_t grow = table_grow_bytes(&s->table);
	if (!grow)
		return true;
	s->pinned = g->id;
	while (shard_mem_used(s) + grow > s->cfg.mem_limit)
		if (!release_free(s) && !evict_one(s))
			break;
	s->pinned = 0;
	return shard_mem_used(s) + grow <= s->cfg.mem_limit;
}

/* The value of a new item, in up to two pieces (append, prepend). */
struct pieces {
	const char *a, *b;
	uint32_t alen, blen;
};

/*
 * Writes an item (head h with its seq and extra bits set by the caller,
 * key, value pieces) into queue q and indexes it: in old's index slot when
 * old is given (old's bytes become dead), else as a new entry. The
 * pieces may point into old: its segment is pinned until the copy is
 * made. Returns 0, or -ENOMEM when there is no room (old is untouched).
 */
static int place(struct shard *s, enum seg_queue q, uint64_t hash,
		 const char *key, struct found *old, struct item_hdr *h,
		 const struct pieces *v)
{
	h->bits |= item_bits_for(h->vlen, h->flags, h->exptime);
	size_t n = item_size(h->bits, h->klen, h->vlen);
	if (n + fixed_bytes(s) + 2 * s->seg.seg_size > s->cfg.mem_limit &&
	    n > s->seg.large)
		return -ENOMEM; /* would not fit even in an empty shard */
	struct seg *g;
	uint32_t off;
	s->pinned = old ? old->g->id : 0;
	char *p = alloc_item(s, q, n, &g, &off);
	s->pinned = 0;
	if (old) /* evictions shifted index slots; old itself stayed put */
		old->slot = table_find_loc(&s->table, hash,
					   table_loc(old->g->id, old->off));
	if (!p) {
		if (old)
			seg_maybe_free(s, old->g);
		return -ENOMEM;
	}
	uint32_t o = item_encode(p, h);
	memcpy(p + o, key, h->klen);
	o += h->klen;
	if (v->alen)
		memcpy(p + o, v->a, v->alen);
	if (v->blen)
		memcpy(p + o + v->alen, v->b, v->blen);
	uint64_t loc = table_loc(g->id, off);
	if (old) {
		table_move(old->slot, loc);
		seg_live_sub(&s->seg, old->g, old->size);
		seg_maybe_free(s, old->g);
	} else if (!index_room(s, g) ||
		   table_insert(&s->table, hash, loc) < 0) {
		item_pad(p, n);
		return -ENOMEM;
	} else {
		s->st.curr_items++;
		ghost_grow(&s->ghost, s->st.curr_items);
	}
	seg_live_add(&s->seg, g, n, h->exptime);
	s->frag_due += n > s->seg.large ? n : 0;
	if (s->frag_due >= frag_step(s))
		frag_measure(s);
	s->pinned = g->id; /* the new item stays while room is made */
	make_room(s);
	s->pinned = 0;
	seg_maybe_free(s, g);
	return 0;
}

/* The queue an item's new version goes to: main if the old one is there
   or the key is a ghost, else small. */
static enum seg_queue queue_for(struct shard *s, const struct found *old,
				uint64_t hash)
{
	if (old)
		return old->g->queue == SEG_MAIN ? SEG_MAIN : SEG_SMALL;
	return ghost_take(&s->ghost, hash, s->st.curr_items) ? SEG_MAIN :
							       SEG_SMALL;
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
		s->flush_seq = s->seq;
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
 * The live item with req's key into *f; false if none. An expired or
 * flushed item found on the way is dropped and *dead says which
 * (ITEM_LIVE if none was found).
 */
static bool lookup(struct shard *s, const struct shard_req *req,
		   struct found *f, enum item_state *dead)
{
	*dead = ITEM_LIVE;
	uint64_t *slot = table_find(&s->table, req->hash, req->key, req->klen);
	if (!slot)
		return false;
	found_at(s, slot, f);
	enum item_state st = state_of(s, &f->h);
	if (st == ITEM_LIVE)
		return true;
	*dead = st;
	count_dead(s, &f->h, st);
	drop(s, f);
	return false;
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

/* A hit: the access count, capped at 3, in place. */
static void touch_freq(struct found *f)
{
	uint8_t b = item_bits(f->p);
	if ((b & ITEM_FREQ) < ITEM_FREQ_MAX)
		b++;
	f->h.bits = b | ITEM_FETCHED;
	item_set_bits(f->p, f->h.bits);
}

/*
 * Sets a live item's exptime (raw protocol value): in place when the item
 * has an exptime field or needs none, else by rewriting it with the same
 * seq (touch does not change the cas). A time in the past drops it, and
 * so does a rewrite that finds no room.
 */
static void set_exptime(struct shard *s, const struct shard_req *req,
			struct found *f)
{
	int64_t e = abs_exptime(s, req->exptime);
	if (e < 0) {
		drop(s, f);
		return;
	}
	if (f->h.bits & ITEM_HAS_EXP) {
		item_set_exptime(f->p, (uint32_t)e);
		uint32_t m = e ? (uint32_t)e : UINT32_MAX;
		if (m > f->g->exp_max)
			f->g->exp_max = m;
		return;
	}
	if (!e)
		return;
	struct item_hdr h = f->h;
	h.exptime = (uint32_t)e;
	h.bits &= ITEM_FREQ | ITEM_FETCHED;
	struct pieces v = { .a = found_value(f), .alen = f->h.vlen };
	/* no room for the longer copy: the item goes, as if evicted right
	   after the touch (keeping it past the new exptime would be wrong) */
	if (place(s, queue_for(s, f, req->hash), req->hash, req->key, f, &h,
		  &v) < 0)
		drop(s, f);
}

/* get / gat. memcached counts a gat hit as a touch hit, not a get hit. */
static int do_read(struct shard *s, const struct shard_req *req,
		   struct shard_res *res, shard_sink_fn sink, void *ctx)
{
	bool gat = req->op == SHARD_OP_GAT;
	enum item_state dead;
	struct found f;
	if (!lookup(s, req, &f, &dead)) {
		count_read_miss(s, gat, dead);
		res->status = SHARD_NOT_FOUND;
		return 0;
	}
	uint64_t cas = cas_of(s, f.h.seq);
	struct shard_view v = {
		.key = found_key(&f), .klen = f.h.klen, .flags = f.h.flags,
		.vlen = f.h.vlen, .cas = cas,
	};
	char *dst = sink(ctx, &v);
	if (!dst)
		return -ENOBUFS;
	memcpy(dst, found_value(&f), f.h.vlen);
	*res = (struct shard_res){ .status = SHARD_HIT, .flags = f.h.flags,
				   .vlen = f.h.vlen, .cas = cas };
	s->st.cmd_get++;
	touch_freq(&f);
	if (!gat) {
		s->st.get_hits++;
		return 0;
	}
	s->st.cmd_touch++;
	s->st.touch_hits++;
	set_exptime(s, req, &f);
	return 0;
}

/* ---- storage commands -------------------------------------------------- */

/* Whether the op may store given the current item; STORED if it may. */
static enum shard_status store_allowed(struct shard *s,
				       const struct shard_req *req,
				       const struct found *old)
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
		if (cas_of(s, old->h.seq) != req->cas) {
			s->st.cas_badval++;
			return SHARD_EXISTS;
		}
		return SHARD_STORED;
	default:
		return SHARD_STORED;
	}
}

static void store_done(struct shard *s, const struct shard_req *req,
		       struct shard_res *res, uint64_t seq)
{
	s->st.total_items++;
	if (req->op == SHARD_OP_CAS)
		s->st.cas_hits++;
	res->status = SHARD_STORED;
	res->cas = cas_of(s, seq);
}

/* A set that fails drops the old item (memcached: no stale data). */
static void store_fail(struct shard *s, const struct shard_req *req,
		       struct shard_res *res, enum shard_status st)
{
	enum item_state dead;
	struct found old;
	if (req->op == SHARD_OP_SET && lookup(s, req, &old, &dead))
		drop(s, &old);
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
	struct found of, *old = lookup(s, req, &of, &dead) ? &of : NULL;
	enum shard_status st = store_allowed(s, req, old);
	if (st != SHARD_STORED) {
		res->status = st;
		return 0;
	}
	bool concat = req->op == SHARD_OP_APPEND || req->op == SHARD_OP_PREPEND;
	uint64_t vlen = req->vlen + (concat ? (uint64_t)old->h.vlen : 0);
	if (vlen > s->cfg.item_max) {
		res->status = SHARD_TOO_LARGE;
		return 0;
	}
	int64_t exp = concat ? old->h.exptime : abs_exptime(s, req->exptime);
	if (exp < 0) { /* stored and expired at once: nothing to keep */
		if (old)
			drop(s, old);
		store_done(s, req, res, ++s->seq);
		return 0;
	}
	struct item_hdr h = {
		.klen = req->klen, .vlen = (uint32_t)vlen,
		.flags = concat ? old->h.flags : req->flags,
		.exptime = (uint32_t)exp, .seq = s->seq + 1,
		.bits = old ? (uint8_t)(old->h.bits & ITEM_FREQ) : 0,
	};
	struct pieces v = { .a = req->value, .alen = req->vlen };
	if (req->op == SHARD_OP_APPEND)
		v = (struct pieces){ .a = found_value(old), .alen = old->h.vlen,
				     .b = req->value, .blen = req->vlen };
	else if (req->op == SHARD_OP_PREPEND)
		v.b = found_value(old), v.blen = old->h.vlen;
	if (place(s, queue_for(s, old, req->hash), req->hash, req->key, old,
		  &h, &v) < 0) {
		store_fail(s, req, res, SHARD_NO_MEMORY);
		return 0;
	}
	store_done(s, req, res, ++s->seq);
	return 0;
}

/* ---- touch, delete, incr/decr ------------------------------------------ */

static int do_touch(struct shard *s, const struct shard_req *req,
		    struct shard_res *res)
{
	enum item_state dead;
	struct found f;
	s->st.cmd_touch++;
	if (!lookup(s, req, &f, &dead)) {
		s->st.touch_misses++;
		res->status = SHARD_NOT_FOUND;
		return 0;
	}
	s->st.touch_hits++;
	touch_freq(&f);
	set_exptime(s, req, &f);
	res->status = SHARD_TOUCHED;
	return 0;
}

static int do_delete(struct shard *s, const struct shard_req *req,
		     struct shard_res *res)
{
	enum item_state dead;
	struct found f;
	if (!lookup(s, req, &f, &dead)) {
		s->st.delete_misses++;
		res->status = SHARD_NOT_FOUND;
		return 0;
	}
	drop(s, &f);
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
 * Writes the new number: in place when it has as many digits as the old
 * value, else as a new version of the item. Returns 0 with *seq set, or
 * -ENOMEM.
 */
static int store_number(struct shard *s, const struct shard_req *req,
			struct found *f, const char *digits, uint32_t n,
			uint64_t *seq)
{
	if (n == f->h.vlen) {
		memcpy(found_value(f), digits, n);
		item_set_seq(f->p, *seq = ++s->seq);
		return 0;
	}
	struct item_hdr h = f->h;
	h.vlen = n;
	h.seq = s->seq + 1;
	h.bits &= ITEM_FREQ | ITEM_FETCHED;
	struct pieces v = { .a = digits, .alen = n };
	if (place(s, queue_for(s, f, req->hash), req->hash, req->key, f, &h,
		  &v) < 0)
		return -ENOMEM;
	*seq = ++s->seq;
	return 0;
}

static int do_arith(struct shard *s, const struct shard_req *req,
		    struct shard_res *res)
{
	bool incr = req->op == SHARD_OP_INCR;
	enum item_state dead;
	struct found f;
	if (!lookup(s, req, &f, &dead)) {
		incr ? s->st.incr_misses++ : s->st.decr_misses++;
		res->status = SHARD_NOT_FOUND;
		return 0;
	}
	uint64_t v;
	if (!parse_u64(found_value(&f), f.h.vlen, &v)) {
		res->status = SHARD_NON_NUMERIC;
		return 0;
	}
	if (incr)
		v += req->delta; /* wraps at 2^64, as memcached */
	else
		v = v < req->delta ? 0 : v - req->delta;
	char digits[20];
	uint32_t n = format_u64(digits, v);
	touch_freq(&f);
	uint64_t seq;
	if (store_number(s, req, &f, digits, n, &seq) < 0) {
		res->status = SHARD_NO_MEMORY;
		return 0;
	}
	incr ? s->st.incr_hits++ : s->st.decr_hits++;
	res->status = SHARD_NUMBER;
	res->number = v;
	res->cas = cas_of(s, seq);
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

/* Frees every segment now and shrinks the index back to its first size. */
static void free_all(struct shard *s)
{
	seg_deinit(&s->seg);
	s->st.curr_items = 0;
	table_clear(&s->table);
	s->sweep_active = false;
	s->expire_cursor = 0;
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
	s->flush_seq = s->seq;
}

/*
 * One bounded step of the expiry sweep over the index: a pass starts at
 * most once per clock second and drops expired and flushed items.
 * Returns true while a pass is unfinished.
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
		uint64_t *slot = table_at(&s->table, s->sweep_cursor);
		struct found f;
		enum item_state st = ITEM_LIVE;
		if (table_is_entry(*slot)) {
			found_at(s, slot, &f);
			st = state_of(s, &f.h);
		}
		if (st == ITEM_LIVE) {
			s->sweep_cursor++;
			continue;
		}
		/* the remove shifts a later entry into this slot: look again */
		count_dead(s, &f.h, st);
		drop(s, &f);
	}
	s->sweep_active = s->sweep_cursor < table_slots(&s->table);
	return s->sweep_active;
}

/* Frees sealed segments whose items have all expired (a few per call). */
static void expire_segments(struct shard *s, unsigned n)
{
	while (n--) {
		if (++s->expire_cursor >= s->seg.id_next)
			s->expire_cursor = 1;
		if (s->expire_cursor >= s->seg.id_next)
			return;
		struct seg *g = seg_by_id(&s->seg, s->expire_cursor);
		if (!g || g->queue == SEG_NONE || g->open || !g->exp_max ||
		    g->exp_max == UINT32_MAX || (int64_t)g->exp_max > s->now)
			continue;
		s->st.segments_expired++;
		retire(s, g, RETIRE_COMPACT); /* every item in it is dead */
	}
}

/*
 * Compacts the segment with the most dead bytes while dead bytes are more
 * than a quarter of the segments. The search is O(segments), so after a
 * search that finds no segment at least half dead, the next waits for the
 * clock's next second.
 */
static void compact(struct shard *s)
{
	size_t held = s->seg.q[SEG_SMALL].bytes + s->seg.q[SEG_MAIN].bytes;
	if (seg_dead(&s->seg) * DEAD_MAX_DIV <= held ||
	    s->compact_checked == s->now)
		return;
	struct seg *x = most_dead(s);
	if (!x || (x->used - x->live) * 2 < x->used) {
		s->compact_checked = s->now;
		return; /* no segment is half dead: FIFO order reclaims them */
	}
	s->st.segments_compacted++;
	retire(s, x, RETIRE_COMPACT);
}

bool shard_tick(struct shard *s, unsigned budget)
{
	check_flush(s);
	if (s->frag_due >= frag_step(s) / 4)
		frag_measure(s);
	expire_segments(s, budget * EXPIRE_SEGS_PER_UNIT);
	compact(s);
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
	s->compact_checked = INT64_MIN;
	uint32_t size = seg_size_for(cfg->mem_limit);
	seg_init(&s->seg, h, size, size / 8);
	if (table_init(&s->table, h, match_at, s) < 0)
		goto fail_shard;
	if (ghost_init(&s->ghost, h, cfg->mem_limit) < 0)
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
	seg_deinit(&s->seg);
	table_deinit(&s->table);
	ghost_deinit(&s->ghost);
	heap_free(s);
	heap_destroy(h);
}

void shard_stats(const struct shard *s, struct shard_stats *out)
{
	*out = s->st;
	out->bytes = s->seg.live;
	out->limit_maxbytes = s->cfg.mem_limit;
	out->hash_bytes = table_bytes(&s->table);
	out->segments = s->seg.nsegs;
	out->segments_free = s->seg.nfree + (s->seg.spare ? 1 : 0);
	out->segment_bytes = s->seg.bytes;
	out->dead_bytes = seg_dead(&s->seg);
	out->ghost_bytes = s->ghost.bytes;
}

void shard_stats_reset(struct shard *s)
{
	uint64_t curr = s->st.curr_items;
	memset(&s->st, 0, sizeof(s->st));
	s->st.curr_items = curr;
}

bool shard_peek(struct shard *s, const char *key, uint8_t klen)
{
	uint64_t *slot = table_find(&s->table, shard_hash(key, klen), key, klen);
	if (!slot)
		return false;
	struct found f;
	found_at(s, slot, &f);
	return state_of(s, &f.h) == ITEM_LIVE;
}

size_t shard_seg_size(const struct shard *s)
{
	return s->seg.seg_size;
}

int shard_where(struct shard *s, const char *key, uint8_t klen,
		unsigned *freq)
{
	uint64_t *slot = table_find(&s->table, shard_hash(key, klen), key, klen);
	if (!slot)
		return -1;
	struct found f;
	found_at(s, slot, &f);
	*freq = f.h.bits & ITEM_FREQ;
	return f.g->queue == SEG_MAIN ? 1 : 0;
}

/* ---- the integrity checker ---------------------------------------------- */

#define CHECK(cond, ...)                                              \
	do {                                                          \
		if (!(cond)) {                                        \
			fprintf(stderr, "shard_check: " __VA_ARGS__); \
			fputc('\n', stderr);                          \
			return -EIO;                                  \
		}                                                     \
	} while (0)

/* Every item of one segment: parseable up to `used`, and its live count
   and bytes those of the items the index points to. */
static int check_seg(struct shard *s, struct seg *g, size_t *items,
		     size_t *bytes)
{
	uint32_t off = 0, live = 0, n = 0;
	while (off < g->used) {
		struct item_hdr h;
		item_decode(g->data + off, &h);
		size_t size = h.hlen + h.klen + h.vlen;
		CHECK(off + size <= g->used, "seg %u: item at %u runs past %u",
		      g->id, off, g->used);
		if (!item_is_pad(g->data + off)) {
			const char *key = g->data + off + h.hlen;
			uint64_t hash = XXH3_64bits(key, h.klen);
			uint64_t *slot = table_find_loc(&s->table, hash,
							table_loc(g->id, off));
			if (slot) {
				CHECK(table_find(&s->table, hash, key, h.klen) == slot,
				      "seg %u off %u: key indexed elsewhere too",
				      g->id, off);
				CHECK(h.seq <= s->seq, "seg %u off %u: seq from the future",
				      g->id, off);
				live += (uint32_t)size;
				n++;
				if (h.exptime)
					CHECK(g->exp_max >= h.exptime,
					      "seg %u: exp_max %u < item's %u",
					      g->id, g->exp_max, h.exptime);
				else
					CHECK(g->exp_max == UINT32_MAX,
					      "seg %u: an item never expires, exp_max %u",
					      g->id, g->exp_max);
			}
		}
		off += (uint32_t)size;
	}
	CHECK(g->live == live && g->items == n,
	      "seg %u: counts live %u items %u, walk finds %u and %u",
	      g->id, g->live, g->items, live, n);
	CHECK(g->used <= g->cap, "seg %u: used %u > cap %u", g->id, g->used,
	      g->cap);
	*items += n;
	*bytes += live;
	return 0;
}

static int check_queue(struct shard *s, enum seg_queue q, size_t *items,
		       size_t *bytes, size_t *used, size_t *segs)
{
	const struct seg_q *Q = &s->seg.q[q];
	size_t held = 0, sealed = 0;
	struct seg *prev = NULL;
	for (struct seg *g = Q->head; g; prev = g, g = g->next) {
		CHECK(g->prev == prev && g->queue == q && !g->open,
		      "queue %d: bad links at seg %u", q, g->id);
		CHECK(seg_by_id(&s->seg, g->id) == g, "seg %u: not in byid", g->id);
		if (check_seg(s, g, items, bytes) < 0)
			return -EIO;
		held += heap_usable(g);
		*used += g->used;
		sealed++;
	}
	CHECK(Q->tail == prev && Q->nsealed == sealed,
	      "queue %d: tail or count wrong", q);
	if (Q->open) {
		CHECK(Q->open->open && Q->open->queue == q, "queue %d: open seg flags", q);
		if (check_seg(s, Q->open, items, bytes) < 0)
			return -EIO;
		held += heap_usable(Q->open);
		*used += Q->open->used;
		sealed++;
	}
	CHECK(Q->bytes == held, "queue %d: bytes %zu, segments hold %zu", q,
	      Q->bytes, held);
	*segs += sealed;
	return 0;
}

int shard_check(struct shard *s)
{
	size_t items = 0, bytes = 0, used = 0, segs = 0;
	for (int q = 0; q < SEG_NQ; q++)
		if (check_queue(s, (enum seg_queue)q, &items, &bytes, &used,
				&segs) < 0)
			return -EIO;
	CHECK(items == table_count(&s->table),
	      "segments hold %zu indexed items, the index counts %zu", items,
	      table_count(&s->table));
	CHECK(items == s->st.curr_items, "curr_items %llu, found %zu",
	      (unsigned long long)s->st.curr_items, items);
	CHECK(bytes == s->seg.live && used == s->seg.used,
	      "store sums live %zu used %zu, walk finds %zu and %zu",
	      s->seg.live, s->seg.used, bytes, used);
	size_t nfree = 0;
	for (struct seg *g = s->seg.free; g; g = g->next)
		nfree++;
	CHECK(nfree == s->seg.nfree, "free list %zu, counted %u", nfree,
	      s->seg.nfree);
	CHECK(segs + nfree + (s->seg.spare ? 1 : 0) == s->seg.nsegs,
	      "%zu segments in queues + %zu free + spare != %zu held", segs,
	      nfree, s->seg.nsegs);
	/* every index entry names an item whose key has the entry's tag */
	size_t entries = 0;
	struct table_array *arr[2] = { &s->table.cur, &s->table.old };
	for (int a = 0; a < 2; a++) {
		for (size_t i = 0; arr[a]->slot && i < arr[a]->n; i++) {
			uint64_t e = arr[a]->slot[i];
			if (!table_is_entry(e))
				continue;
			uint64_t loc = e & TABLE_LOC_MASK;
			struct seg *g = table_loc_seg(loc) < s->seg.id_next ?
					seg_by_id(&s->seg, table_loc_seg(loc)) : NULL;
			CHECK(g && g->queue != SEG_NONE && table_loc_off(loc) < g->used,
			      "entry %llx: no such segment or offset",
			      (unsigned long long)e);
			CHECK(table_entry(hash_at(s, loc), loc) == e,
			      "entry %llx: tag is not its key's",
			      (unsigned long long)e);
			entries++;
		}
	}
	CHECK(entries == table_count(&s->table), "index holds %zu entries, counts %zu",
	      entries, table_count(&s->table));
	return 0;
}
