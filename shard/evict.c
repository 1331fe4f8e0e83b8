/*
 * evict.c - making room in a shard: which segment to retire, what of it
 * survives, compaction of dead bytes and expiry of whole segments.
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
 * items to its queue's open segment, keeping their frequency, a few items
 * a call) while dead bytes exceed a quarter of the segments; and under
 * -M, where nothing may be evicted, making room compacts (at once)
 * instead of retiring. Expiry: each
 * segment knows the latest exptime of its items, and shard_tick() frees a
 * segment whose items have all expired without waiting for its turn; an
 * expired item is also dropped when a read finds it and by an incremental
 * sweep of the index.
 *
 *
 * Everything here runs inside a shard call on the owner's thread (core.h);
 * nothing keeps an item address past the walk that found it. Only the
 * segment being compacted is kept from one call to the next
 * (s->compacting): out of its queue, so that nothing else retires or frees
 * it, until its walk is done.
 */
#include <string.h>
#include <xxhash.h>

#include "shard/core.h"

#define EXPIRE_SEGS_PER_UNIT 4u
#define DEAD_MAX_DIV 4u    /* compact while dead bytes > segments' bytes/4 */

/* How a retirement treats the live items it walks over. */
enum retire_mode {
	RETIRE_EVICT,   /* S3-FIFO: copy forward the ones read, evict the rest */
	RETIRE_COMPACT, /* keep every live item, in the segment's own queue */
};

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
	if (off == 0)
		g->born = (uint32_t)s->now;
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
	shard__drop(s, f);
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
 * The item at *off of x, a segment being retired from queue q (out of its
 * queue): kept (copied forward) or dropped as the mode says; *off moves
 * past it. false if x itself was kept instead (a dedicated segment whose
 * item survives).
 */
static bool retire_next(struct shard *s, struct seg *x, enum seg_queue q,
			enum retire_mode mode, uint32_t *off)
{
	struct found f = { .g = x, .off = *off, .p = x->data + *off };
	item_decode(f.p, &f.h);
	f.size = f.h.hlen + f.h.klen + f.h.vlen;
	*off += (uint32_t)f.size;
	if (item_is_pad(f.p))
		return true;
	uint64_t hash = XXH3_64bits(found_key(&f), f.h.klen);
	f.slot = table_find_loc(&s->table, hash, table_loc(x->id, f.off));
	if (!f.slot)
		return true; /* dead: deleted or overwritten */
	enum item_state st = state_of(s, &f.h);
	if (st != ITEM_LIVE) {
		count_dead(s, &f.h, st);
		shard__drop(s, &f);
	} else if (x->dedicated) {
		if (retire_dedicated(s, x, &f, mode, q))
			return false;
		evict_item(s, &f, q == SEG_SMALL, hash);
	} else {
		retire_item(s, &f, q, mode, hash);
	}
	return true;
}

/* Frees a retired segment (it becomes the spare if a copy took it). */
static void retire_done(struct shard *s, struct seg *x)
{
	bool regular = !x->dedicated;
	seg_give(&s->seg, x);
	if (!s->seg.spare && regular)
		s->seg.spare = seg_take(&s->seg, 0); /* x, from the free list */
}

/*
 * Retires a sealed segment at once: walks its items, keeps the live ones
 * the mode keeps (copied forward), drops the rest, then frees it.
 */
static void retire(struct shard *s, struct seg *x, enum retire_mode mode)
{
	enum seg_queue q = (enum seg_queue)x->queue;
	seg_unlink(&s->seg, x);
	uint32_t off = 0;
	while (off < x->used)
		if (!retire_next(s, x, q, mode, &off))
			return;
	retire_done(s, x);
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
void shard__make_room(struct shard *s)
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
char *shard__alloc_item(struct shard *s, enum seg_queue q, size_t n,
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

/*
 * Makes room under the limit for the array the index's next insert may
 * allocate (a rebuild keeps the old array until it is emptied), never
 * retiring g, the segment of the item about to be indexed. false if no
 * room can be had.
 */
bool shard__index_room(struct shard *s, struct seg *g)
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

/* Frees sealed segments whose items have all expired (a few per call). */
void shard__expire_segments(struct shard *s, unsigned budget)
{
	if (!s->expire_cursor) {
		if (s->now == s->expire_started)
			return; /* one pass over the segments a second */
		s->expire_started = s->now;
		s->expire_cursor = 1;
	}
	for (unsigned n = budget * EXPIRE_SEGS_PER_UNIT; n; n--) {
		if (s->expire_cursor >= s->seg.id_next) {
			s->expire_cursor = 0;
			return;
		}
		struct seg *g = seg_by_id(&s->seg, s->expire_cursor++);
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
 * clock's next second. A compaction walks `items` items per call, so that
 * no one call (a worker's pass) copies a whole segment: until it is done,
 * the segment is out of its queue (SEG_NONE: neither evicted, expired nor
 * freed by anyone else) and its items stay where they are, readable,
 * replaceable and deletable.
 */
void shard__compact(struct shard *s, unsigned items)
{
	struct seg *x = s->compacting;
	if (!x) {
		size_t held = s->seg.q[SEG_SMALL].bytes +
			      s->seg.q[SEG_MAIN].bytes;
		if (seg_dead(&s->seg) * DEAD_MAX_DIV <= held ||
		    s->compact_checked == s->now)
			return;
		x = most_dead(s);
		if (!x || (x->used - x->live) * 2 < x->used) {
			s->compact_checked = s->now;
			return; /* none is half dead: FIFO order reclaims them */
		}
		s->st.segments_compacted++;
		s->compact_q = x->queue;
		s->compact_off = 0;
		seg_unlink(&s->seg, x);
		s->compacting = x;
	}
	while (items-- && s->compact_off < x->used)
		retire_next(s, x, (enum seg_queue)s->compact_q, RETIRE_COMPACT,
			    &s->compact_off);
	if (s->compact_off >= x->used) {
		s->compacting = NULL;
		retire_done(s, x);
	}
}
