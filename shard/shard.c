/*
 * shard.c - one shard: the storage commands' semantics (memcached's
 * protocol.txt), expiry, flush, memory accounting and counters, on top of
 * the segment store (seg.h), the index (table.h) and the ghost (ghost.h).
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
 * Making room (retiring segments under S3-FIFO, compaction, expiry of
 * whole segments) is in evict.c; the integrity checker in check.c; the
 * state they share in core.h.
 *
 * Memory: the limit (cfg.mem_limit, this shard's share) charges the heap
 * bytes of every segment (open, sealed, free, spare), the index, the
 * segment id array, and the heap's fragmentation above
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
 * Cas: an item's cas is derived from its seq (unique across shards),
 * unless it was written with the meta protocol's E, whose value it keeps
 * in an optional field (item.h) until a write without E replaces it; the
 * seq still orders flushes either way.
 *
 * Thread rule: the creating thread owns the shard (shard.h). Errors are
 * negative errno values; protocol outcomes go in res->status.
 */
#include "shard/shard.h"

#include <errno.h>
#include <string.h>
#define XXH_INLINE_ALL /* shard_hash's short path: see there */
#include <xxhash.h>

#include "shard/core.h"

#define SWEEP_SLOTS_PER_UNIT 8u
#define MIGRATE_SLOTS_PER_UNIT 256u
#define COMPACT_ITEMS_PER_UNIT 1u
#define FRAG_STEP_MIN (256u << 10)
#define FRAG_SLACK_DIV 32u /* fragmentation up to limit/32 is not charged */

/* XXH3. A key of 9-16 bytes (most keys of a cache) goes to the header's own
   function for that length, inline: the library call and its length
   dispatch cost about 10 instructions a get, which hashes its key twice
   (the look-ahead, then the read). Checked against the library for every
   length (test_shard). */
uint64_t shard_hash(const char *key, size_t len)
{
	if (len - 9 <= 7)
		return XXH3_len_9to16_64b((const xxh_u8 *)key, len, XXH3_kSecret, 0);
	return XXH3_64bits(key, len);
}

/* ---- locations ---------------------------------------------------------- */


/* ---- memory ------------------------------------------------------------- */

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
void shard__frag_measure(struct shard *s)
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

/* Frees a queued segment that holds nothing live any more. */
void shard__seg_maybe_free(struct shard *s, struct seg *g)
{
	if (g->items || g->open || g->queue == SEG_NONE || g->id == s->pinned)
		return;
	seg_unlink(&s->seg, g);
	seg_give(&s->seg, g);
}

/* Takes a found item out of the index; its bytes become dead. */
__attribute__((cold, noinline)) void shard__drop(struct shard *s, struct found *f)
{
	table_remove(&s->table, f->slot);
	seg_live_sub(&s->seg, f->g, f->size);
	s->st.curr_items--;
	shard__seg_maybe_free(s, f->g);
}

/* ---- retirement and compaction ------------------------------------------ */

/* ---- placing items ------------------------------------------------------ */

/* The value of a new item, in up to two pieces (append, prepend). */
struct pieces {
	const char *a, *b;
	uint32_t alen, blen;
};

/* An item's bytes at p, offset off of segment g. */
static void write_item(const struct shard *s, struct seg *g, uint32_t off,
		       char *p, const struct item_hdr *h, const char *key,
		       const struct pieces *v)
{
	if (off == 0)
		g->born = (uint32_t)s->now;
	uint32_t o = item_encode(p, h);
	memcpy(p + o, key, h->klen);
	o += h->klen;
	if (v->alen)
		memcpy(p + o, v->a, v->alen);
	if (v->blen)
		memcpy(p + o + v->alen, v->b, v->blen);
}

/*
 * Writes an item (head h with its seq, and the bits FREQ, FETCHED, STALE,
 * WIN and HAS_CAS with its cas, set by the caller; key; value pieces)
 * into queue q and indexes it: in old's index slot when old is given
 * (old's bytes become dead), else as a new entry. The
 * pieces may point into old: its segment is pinned until the copy is
 * made. Returns 0, or -ENOMEM when there is no room (old is untouched).
 */
static int place(struct shard *s, enum seg_queue q, uint64_t hash,
		 const char *key, struct found *old, struct item_hdr *h,
		 const struct pieces *v)
{
	h->bits |= item_bits_for(h->flags, h->exptime);
	size_t n = item_size(h->bits, h->klen, h->vlen);
	if (n + fixed_bytes(s) + 2 * s->seg.seg_size > s->cfg.mem_limit &&
	    n > s->seg.large)
		return -ENOMEM; /* would not fit even in an empty shard */
	struct seg *g;
	uint32_t off;
	s->pinned = old ? old->g->id : 0;
	size_t edits = table_edits(&s->table);
	char *p = shard__alloc_item(s, q, n, &g, &off);
	s->pinned = 0;
	/* Evictions may have shifted index slots; old itself stayed put. */
	if (old && table_edits(&s->table) != edits)
		old->slot = table_find_loc(&s->table, hash,
					   table_loc(old->g->id, old->off));
	if (!p) {
		if (old)
			shard__seg_maybe_free(s, old->g);
		return -ENOMEM;
	}
	write_item(s, g, off, p, h, key, v);
	uint64_t loc = table_loc(g->id, off);
	if (old) {
		table_move(old->slot, loc);
		seg_live_sub(&s->seg, old->g, old->size);
		shard__seg_maybe_free(s, old->g);
	} else if (!shard__index_room(s, g) ||
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
		shard__frag_measure(s);
	s->pinned = g->id; /* the new item stays while room is made */
	shard__make_room(s);
	s->pinned = 0;
	shard__seg_maybe_free(s, g);
	return 0;
}

/* The queue an item's new version goes to: main if the old one is there
   or the key is a ghost, else small. */
static enum seg_queue queue_for(struct shard *s, const struct found *old,
				uint64_t hash)
{
	if (old)
		return queue_of(s, old->g) == SEG_MAIN ? SEG_MAIN : SEG_SMALL;
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
 * flushed item found on the way is dropped (left as it is with `keep`: a
 * lent read) and *dead says which (ITEM_LIVE if none was found).
 */
__attribute__((always_inline)) /* `keep` folds away in each caller */
static inline bool find_item(struct shard *s, const struct shard_req *req,
			     struct found *f, enum item_state *dead, bool keep)
{
	*dead = ITEM_LIVE;
	uint64_t *slot = table_find(&s->table, req->hash, match_at, req->key, req->klen);
	if (!slot)
		return false;
	found_at(s, slot, f);
	enum item_state st = state_of(s, &f->h);
	if (st == ITEM_LIVE)
		return true;
	*dead = st;
	if (keep)
		return false;
	count_dead(s, &f->h, st);
	shard__drop(s, f);
	return false;
}

static bool lookup(struct shard *s, const struct shard_req *req,
		   struct found *f, enum item_state *dead)
{
	return find_item(s, req, f, dead, false);
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
 * seq and explicit cas (touch does not change the cas). A time in the
 * past drops it, and so does a rewrite that finds no room.
 */
static void set_exptime(struct shard *s, const struct shard_req *req,
			struct found *f)
{
	int64_t e = abs_exptime(s, req->exptime);
	if (e < 0) {
		shard__drop(s, f);
		return;
	}
	if (f->h.bits & ITEM_HAS_EXP) {
		item_set_exptime(f->p, (uint32_t)e);
		seg_note_exptime(&s->seg, f->g, (uint32_t)e);
		return;
	}
	if (!e)
		return;
	struct item_hdr h = f->h;
	h.exptime = (uint32_t)e;
	h.bits &= ITEM_FREQ | ITEM_FETCHED | ITEM_STALE | ITEM_WIN |
		  ITEM_HAS_CAS;
	struct pieces v = { .a = found_value(f), .alen = f->h.vlen };
	/* no room for the longer copy: the item goes, as if evicted right
	   after the touch (keeping it past the new exptime would be wrong) */
	if (place(s, queue_for(s, f, req->hash), req->hash, req->key, f, &h,
		  &v) < 0)
		shard__drop(s, f);
}

/* get / gat. memcached counts a gat hit as a touch hit, not a get hit. */
__attribute__((always_inline)) /* so does `lent`: the owner's get is as
				   it was before lent reads */
static inline int do_read(struct shard *s, const struct shard_req *req,
			  struct shard_res *res, shard_sink_fn sink, void *ctx,
			  bool lent)
{
	bool gat = req->op == SHARD_OP_GAT;
	enum item_state dead;
	struct found f;
	if (!find_item(s, req, &f, &dead, lent)) {
		if (dead != ITEM_LIVE && lent)
			return -EAGAIN;
		count_read_miss(s, gat, dead);
		res->status = SHARD_NOT_FOUND;
		return 0;
	}
	uint64_t cas = cas_of(s, &f.h);
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
		return old ? SHARD_STORED : SHARD_NOT_STORED;
	case SHARD_OP_APPEND:
	case SHARD_OP_PREPEND:
		if (!old)
			return SHARD_NOT_STORED;
		/* ms MA/MP with C: memcached compares a non-zero cas only */
		if ((req->mflags & SHARD_MF_CAS) && req->cas &&
		    cas_of(s, &old->h) != req->cas)
			return SHARD_EXISTS;
		return SHARD_STORED;
	case SHARD_OP_CAS:
		if (!old) {
			s->st.cas_misses++;
			return SHARD_NOT_FOUND;
		}
		/* a cas of 0 matches nothing, not even an explicit cas 0
		   (memcached: 0 means "no cas given") */
		if (req->cas && cas_of(s, &old->h) == req->cas)
			return SHARD_STORED;
		/* ms I: an older (non-zero) cas stores a stale value */
		if ((req->mflags & SHARD_MF_STALE) && req->cas &&
		    req->cas < cas_of(s, &old->h))
			return SHARD_STORED;
		s->st.cas_badval++;
		return SHARD_EXISTS;
	default:
		return SHARD_STORED;
	}
}

/* A store of the item with head h succeeded: it takes the next seq. */
static void store_done(struct shard *s, const struct shard_req *req,
		       struct shard_res *res, const struct item_hdr *h)
{
	s->seq++;
	s->st.total_items++;
	if (req->op == SHARD_OP_CAS)
		s->st.cas_hits++;
	res->status = SHARD_STORED;
	res->cas = cas_of(s, h);
}

/* A set that fails drops the old item (memcached: no stale data). */
static void store_fail(struct shard *s, const struct shard_req *req,
		       struct shard_res *res, enum shard_status st)
{
	enum item_state dead;
	struct found old;
	if (req->op == SHARD_OP_SET && lookup(s, req, &old, &dead))
		shard__drop(s, &old);
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
	/* a stale store (ms I) keeps the item's exptime and win token */
	bool stale = req->op == SHARD_OP_CAS && cas_of(s, &old->h) != req->cas;
	int64_t exp = concat || stale ? old->h.exptime :
					abs_exptime(s, req->exptime);
	struct item_hdr h = {
		.klen = req->klen, .vlen = (uint32_t)vlen,
		.flags = concat ? old->h.flags : req->flags,
		.exptime = exp < 0 ? 0 : (uint32_t)exp, .seq = s->seq + 1,
		.bits = old ? (uint8_t)(old->h.bits & ITEM_FREQ) : 0,
	};
	take_cas(req, &h);
	if (exp < 0) { /* stored and expired at once: nothing to keep */
		if (old)
			shard__drop(s, old);
		store_done(s, req, res, &h);
		return 0;
	}
	if (stale)
		h.bits |= ITEM_STALE | (old->h.bits & ITEM_WIN);
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
	store_done(s, req, res, &h);
	return 0;
}

/* ---- meta commands ----------------------------------------------------- */

/* ttl, la and size of a live item into res. */
static void meta_fill(const struct shard *s, const struct found *f,
		      struct shard_res *res)
{
	res->ttl = f->h.exptime ? (int64_t)f->h.exptime - s->now : -1;
	res->la = s->now > (int64_t)f->g->born ?
			  (uint32_t)(s->now - (int64_t)f->g->born) : 0;
	res->size = (uint32_t)f->size;
}

/* The ttl an exptime (absolute, 0 never, <0 gone) leaves. */
static int64_t ttl_of(const struct shard *s, int64_t e)
{
	return e == 0 ? -1 : e < 0 ? 0 : e - s->now;
}

/*
 * Creates a missing item (mg N, ma N): value v, flags 0, exptime from the
 * raw `exp`, extra head bits `bits`, E's cas if given. res gets cas, ttl
 * and size. A time in the past creates nothing but answers as if it had
 * (memcached creates an item that is expired at once). Returns 0 or
 * -ENOMEM.
 */
static int vivify(struct shard *s, const struct shard_req *req,
		  const char *v, uint32_t vlen, int64_t exp, uint8_t bits,
		  struct shard_res *res)
{
	int64_t e = abs_exptime(s, exp);
	struct item_hdr h = {
		.klen = req->klen, .vlen = vlen, .seq = s->seq + 1,
		.exptime = e < 0 ? 0 : (uint32_t)e, .bits = bits,
	};
	take_cas(req, &h);
	struct pieces p = { .a = v, .alen = vlen };
	if (e >= 0 && place(s, queue_for(s, NULL, req->hash), req->hash,
			    req->key, NULL, &h, &p) < 0)
		return -ENOMEM;
	s->seq++;
	s->st.total_items++;
	res->cas = cas_of(s, &h);
	res->ttl = ttl_of(s, e);
	res->size = (uint32_t)item_size(h.bits, h.klen, h.vlen);
	res->mbits |= SHARD_MB_CREATED;
	return 0;
}

/* The W/X/Z answer of an mg hit, from the item's bits before the call. */
static uint8_t mget_bits(struct shard *s, const struct shard_req *req,
			 uint8_t b, int64_t exp)
{
	uint8_t mb = (b & ITEM_FETCHED) ? SHARD_MB_FETCHED : 0;
	if (b & ITEM_WIN)
		mb |= SHARD_MB_TOKEN;
	if (b & ITEM_STALE) {
		mb |= SHARD_MB_STALE;
		if (!(b & ITEM_WIN))
			mb |= SHARD_MB_WON;
	}
	if ((req->mflags & SHARD_MF_RECACHE) && !(b & ITEM_WIN) && exp) {
		int64_t r = abs_exptime(s, req->recache);
		if (r > 0 && exp < r)
			mb |= SHARD_MB_WON;
	}
	return mb;
}

/*
 * mg (and me): the item's metadata through the sink, its value too with
 * MF_VALUE. h and l report the state before this call. A win (W) marks the
 * item so that later readers see Z until a store or md I clears it.
 */
static int do_mget(struct shard *s, const struct shard_req *req,
		   struct shard_res *res, shard_sink_fn sink, void *ctx)
{
	uint32_t mf = req->mflags;
	bool touch = mf & SHARD_MF_TTL;
	enum item_state dead;
	struct found f;
	struct shard_view v = { .key = req->key, .klen = req->klen, .res = res };
	if (!lookup(s, req, &f, &dead)) {
		count_read_miss(s, touch, dead);
		if (!(mf & SHARD_MF_VIVIFY) ||
		    vivify(s, req, NULL, 0, req->vivify, ITEM_WIN, res) < 0)
			return 0;
		res->status = SHARD_HIT;
		res->mbits |= SHARD_MB_WON;
		v.cas = res->cas;
		return sink(ctx, &v) ? 0 : -ENOBUFS;
	}
	uint8_t b = f.h.bits;
	int64_t exp = touch ? abs_exptime(s, req->exptime) : f.h.exptime;
	meta_fill(s, &f, res);
	if (touch)
		res->ttl = ttl_of(s, exp);
	res->mbits = mget_bits(s, req, b, exp);
	res->status = SHARD_HIT;
	res->flags = f.h.flags;
	res->vlen = f.h.vlen;
	res->cas = cas_of(s, &f.h);
	v.key = found_key(&f);
	v.flags = f.h.flags;
	v.vlen = f.h.vlen;
	v.cas = res->cas;
	char *dst = sink(ctx, &v);
	if (!dst)
		return -ENOBUFS;
	if (mf & SHARD_MF_VALUE)
		memcpy(dst, found_value(&f), f.h.vlen);
	s->st.cmd_get++;
	if (touch) {
		s->st.cmd_touch++;
		s->st.touch_hits++;
	} else {
		s->st.get_hits++;
	}
	if (!(mf & SHARD_MF_NOBUMP))
		touch_freq(&f);
	if (res->mbits & SHARD_MB_WON) {
		f.h.bits |= ITEM_WIN;
		item_set_bits(f.p, f.h.bits);
	}
	if (touch)
		set_exptime(s, req, &f);
	return 0;
}

/*
 * md with I (mark stale: a new cas, the win token cleared, T applied) or
 * x (the value emptied; flags, exptime and cas kept), or C alone (a
 * compared delete); E gives the item that stays its cas. Answers
 * SHARD_DELETED ("HD") or SHARD_EXISTS. The item is changed in place when
 * its layout stays, else rewritten; a rewrite that finds no room drops it.
 */
static int meta_delete(struct shard *s, const struct shard_req *req,
		       struct shard_res *res, struct found *f)
{
	uint32_t mf = req->mflags;
	if ((mf & SHARD_MF_CAS) && cas_of(s, &f->h) != req->cas) {
		s->st.delete_misses++;
		res->status = SHARD_EXISTS;
		return 0;
	}
	res->status = SHARD_DELETED;
	if (!(mf & (SHARD_MF_STALE | SHARD_MF_EMPTY))) {
		shard__drop(s, f);
		s->st.delete_hits++;
		return 0;
	}
	struct item_hdr h = f->h;
	if (mf & SHARD_MF_STALE) { /* a new cas: the new seq's, or E's */
		h.bits = (uint8_t)((h.bits | ITEM_STALE) & ~ITEM_WIN);
		h.seq = ++s->seq;
		take_cas(req, &h);
	} else if (mf & SHARD_MF_SETCAS) { /* x keeps the cas, or takes E's */
		take_cas(req, &h);
	}
	res->cas = cas_of(s, &h);
	if (!(mf & SHARD_MF_EMPTY) &&
	    (h.bits & ITEM_HAS_CAS) == (f->h.bits & ITEM_HAS_CAS)) {
		item_set_bits(f->p, h.bits);
		item_set_seq(f->p, h.seq);
		if (h.bits & ITEM_HAS_CAS)
			item_set_cas(f->p, h.cas);
		f->h = h;
	} else {
		struct pieces p = { .a = found_value(f), .alen = f->h.vlen };
		if (mf & SHARD_MF_EMPTY)
			h.vlen = p.alen = 0;
		h.bits &= ITEM_FREQ | ITEM_FETCHED | ITEM_STALE | ITEM_WIN |
			  ITEM_HAS_CAS;
		if (place(s, queue_for(s, f, req->hash), req->hash, req->key,
			  f, &h, &p) < 0) {
			shard__drop(s, f);
			return 0;
		}
		if (!(mf & SHARD_MF_TTL) || !(mf & SHARD_MF_STALE) ||
		    !lookup(s, req, f, &(enum item_state){ ITEM_LIVE }))
			return 0;
	}
	if ((mf & SHARD_MF_TTL) && (mf & SHARD_MF_STALE))
		set_exptime(s, req, f);
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
	if (req->mflags)
		return meta_delete(s, req, res, &f);
	shard__drop(s, &f);
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
 * Writes the new number as the item's next version (a new seq; E's cas or
 * none): in place when its head keeps its layout and the number has as
 * many digits as the old value, else by rewriting it. Returns 0 with *cas
 * set, or -ENOMEM.
 */
static int store_number(struct shard *s, const struct shard_req *req,
			struct found *f, const char *digits, uint32_t n,
			uint64_t *cas)
{
	struct item_hdr h = f->h;
	h.seq = s->seq + 1;
	take_cas(req, &h);
	if (n == f->h.vlen &&
	    (h.bits & ITEM_HAS_CAS) == (f->h.bits & ITEM_HAS_CAS)) {
		memcpy(found_value(f), digits, n);
		item_set_seq(f->p, h.seq);
		if (h.bits & ITEM_HAS_CAS)
			item_set_cas(f->p, h.cas);
	} else {
		h.vlen = n;
		h.bits &= ITEM_FREQ | ITEM_FETCHED | ITEM_HAS_CAS;
		struct pieces v = { .a = digits, .alen = n };
		if (place(s, queue_for(s, f, req->hash), req->hash, req->key,
			  f, &h, &v) < 0)
			return -ENOMEM;
	}
	s->seq++;
	*cas = cas_of(s, &h);
	return 0;
}

/* ma N on a miss: the item is created holding J (initial). */
static int arith_vivify(struct shard *s, const struct shard_req *req,
			struct shard_res *res)
{
	char digits[20];
	uint32_t n = format_u64(digits, req->initial);
	if (vivify(s, req, digits, n, req->vivify, 0, res) < 0) {
		res->status = SHARD_NO_MEMORY;
		return 0;
	}
	res->status = SHARD_NUMBER;
	res->number = req->initial;
	return 0;
}

/* ma after a successful delta: T, then the ttl the reply reports. */
static void arith_meta(struct shard *s, const struct shard_req *req,
		       struct shard_res *res)
{
	enum item_state dead;
	struct found f;
	if (!lookup(s, req, &f, &dead))
		return;
	if (req->mflags & SHARD_MF_TTL) {
		res->ttl = ttl_of(s, abs_exptime(s, req->exptime));
		set_exptime(s, req, &f);
		return;
	}
	meta_fill(s, &f, res);
}

static int do_arith(struct shard *s, const struct shard_req *req,
		    struct shard_res *res)
{
	bool incr = req->op == SHARD_OP_INCR;
	enum item_state dead;
	struct found f;
	if (!lookup(s, req, &f, &dead)) {
		if (req->mflags & SHARD_MF_VIVIFY)
			return arith_vivify(s, req, res);
		incr ? s->st.incr_misses++ : s->st.decr_misses++;
		res->status = SHARD_NOT_FOUND;
		return 0;
	}
	if ((req->mflags & SHARD_MF_CAS) && req->cas &&
	    cas_of(s, &f.h) != req->cas) {
		res->status = SHARD_EXISTS;
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
	if (store_number(s, req, &f, digits, n, &res->cas) < 0) {
		res->status = SHARD_NO_MEMORY;
		return 0;
	}
	incr ? s->st.incr_hits++ : s->st.decr_hits++;
	res->status = SHARD_NUMBER;
	res->number = v;
	if (req->mflags)
		arith_meta(s, req, res);
	return 0;
}

/* A key of a valid length, and a value where one is announced. */
static bool req_ok(const struct shard_req *req)
{
	return req->key && req->klen && req->klen <= SHARD_KEY_MAX &&
	       (!req->vlen || req->value);
}

int shard_exec(struct shard *s, const struct shard_req *req,
	       struct shard_res *res, shard_sink_fn sink, void *ctx)
{
	if (!req_ok(req))
		return -EINVAL;
	*res = (struct shard_res){ .status = SHARD_NOT_FOUND };
	check_flush(s);
	switch (req->op) {
	case SHARD_OP_GET:
	case SHARD_OP_GAT:
		return sink ? do_read(s, req, res, sink, ctx, false) : -EINVAL;
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
	case SHARD_OP_MGET:
		return sink ? do_mget(s, req, res, sink, ctx) : -EINVAL;
	}
	return -EINVAL;
}

int shard_get(struct shard *s, const struct shard_req *req,
	      struct shard_res *res, shard_sink_fn sink, void *ctx)
{
	if (req->op != SHARD_OP_GET || !sink || !req_ok(req))
		return -EINVAL;
	*res = (struct shard_res){ .status = SHARD_NOT_FOUND };
	check_flush(s);
	return do_read(s, req, res, sink, ctx, false);
}

int shard_read_lent(struct shard *s, int64_t now, const struct shard_req *req,
		    struct shard_res *res, shard_sink_fn sink, void *ctx)
{
	if (req->op != SHARD_OP_GET || !sink || !req_ok(req))
		return -EINVAL;
	if (now > s->now)
		shard_set_time(s, now);
	*res = (struct shard_res){ .status = SHARD_NOT_FOUND };
	return do_read(s, req, res, sink, ctx, true);
}

/*
 * A lent set replaces a live item and nothing more: the new version goes
 * at the end of the open segment of the old one's queue, into the old
 * one's index slot, as place() would put it. A new key (an index entry, a
 * ghost), a full open segment, a large item, a shard over its limit, or an
 * old segment that this would leave empty (freed) is the owner's.
 */
int shard_store_lent(struct shard *s, int64_t now, const struct shard_req *req,
		     struct shard_res *res)
{
	if (req->op != SHARD_OP_SET || req->mflags || !req_ok(req))
		return -EINVAL;
	if (now > s->now)
		shard_set_time(s, now);
	enum item_state dead;
	struct found old;
	int64_t exp = abs_exptime(s, req->exptime);
	if (req->vlen > s->cfg.item_max || exp < 0 ||
	    shard_mem_used(s) > s->cfg.mem_limit ||
	    !find_item(s, req, &old, &dead, true) ||
	    (old.g->items < 2 && !old.g->open))
		return -EAGAIN;
	enum seg_queue q = queue_for(s, &old, req->hash);
	struct item_hdr h = {
		.klen = req->klen, .vlen = (uint32_t)req->vlen,
		.flags = req->flags, .exptime = (uint32_t)exp,
		.seq = s->seq + 1,
		.bits = (uint8_t)((old.h.bits & ITEM_FREQ) |
				  item_bits_for(req->flags, (uint32_t)exp)),
	};
	size_t n = item_size(h.bits, h.klen, h.vlen);
	struct seg *g = s->seg.q[q].open;
	uint32_t off;
	char *p = n > s->seg.large ? NULL : seg_bump(&s->seg, g, n, &off);
	if (!p)
		return -EAGAIN;
	struct pieces v = { .a = req->value, .alen = (uint32_t)req->vlen };
	write_item(s, g, off, p, &h, req->key, &v);
	table_move(old.slot, table_loc(g->id, off));
	seg_live_sub(&s->seg, old.g, old.size);
	seg_live_add(&s->seg, g, n, h.exptime);
	s->st.cmd_set++;
	store_done(s, req, res, &h);
	return 0;
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
	s->compacting = NULL; /* seg_deinit freed it too */
	shard__frag_measure(s);
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
 * One bounded step of the expiry sweep over the index: a pass drops
 * expired and flushed items. It starts at most once per clock second, and
 * only when an item may have expired (the clock has reached exp_min) or a
 * flush came since the last pass began: a pass reads every item's header,
 * a cache miss each, which at 3M items cost 8-18 % of the CPU per
 * request when it ran every second whatever the items' exptimes. The
 * store's exp_min is lowered by every write of an exptime
 * (seg_note_exptime) and recounted from the segments' own bounds when a
 * pass ends; not from the items the pass
 * saw, since a remove behind its cursor can shift an entry it has not
 * seen behind it. Returns true while a pass is unfinished.
 */
static bool sweep(struct shard *s, size_t slots)
{
	if (!s->sweep_active) {
		if (s->now == s->sweep_started ||
		    (s->now < (int64_t)s->seg.exp_min &&
		     s->flush_seq == s->swept_flush_seq))
			return false;
		s->sweep_active = true;
		s->sweep_cursor = 0;
		s->sweep_started = s->now;
		s->swept_flush_seq = s->flush_seq;
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
		shard__drop(s, &f);
	}
	s->sweep_active = s->sweep_cursor < table_slots(&s->table);
	if (!s->sweep_active)
		seg_recount_exp_min(&s->seg);
	return s->sweep_active;
}

bool shard_tick(struct shard *s, unsigned budget)
{
	check_flush(s);
	if (s->frag_due >= frag_step(s) / 4)
		shard__frag_measure(s);
	shard__expire_segments(s, budget);
	shard__compact(s, budget * COMPACT_ITEMS_PER_UNIT);
	if (table_migrating(&s->table)) {
		table_migrate(&s->table, (size_t)budget * MIGRATE_SLOTS_PER_UNIT);
		return true;
	}
	return sweep(s, (size_t)budget * SWEEP_SLOTS_PER_UNIT) || s->compacting;
}

bool shard_busy(const struct shard *s)
{
	return table_migrating(&s->table) || s->compacting;
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
	s->expire_started = INT64_MIN;
	uint32_t size = seg_size_for(cfg->mem_limit);
	seg_init(&s->seg, h, size, size / 8);
	if (table_init(&s->table, h, s) < 0)
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

void shard_prefetch_index(const struct shard *s, uint64_t hash)
{
	table_prefetch(&s->table, hash);
}

void shard_prefetch(const struct shard *s, uint64_t hash)
{
	uint64_t loc = table_peek(&s->table, hash);
	if (!loc)
		return;
	const char *p = s->seg.byid[table_loc_seg(loc)]->data + table_loc_off(loc);
	__builtin_prefetch(p);
	__builtin_prefetch(p + 64);
	__builtin_prefetch(p + 128);
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
	out->hash_is_expanding = table_migrating(&s->table);
	out->segments = s->seg.nsegs;
	out->segments_free = s->seg.nfree + (s->seg.spare ? 1 : 0);
	out->segment_bytes = s->seg.bytes;
	out->dead_bytes = seg_dead(&s->seg);
	out->ghost_bytes = s->ghost.bytes;
	out->segment_size = s->seg.seg_size;
}

void shard_stats_reset(struct shard *s)
{
	uint64_t curr = s->st.curr_items;
	memset(&s->st, 0, sizeof(s->st));
	s->st.curr_items = curr;
}

bool shard_peek(struct shard *s, const char *key, uint8_t klen)
{
	uint64_t *slot = table_find(&s->table, shard_hash(key, klen), match_at, key, klen);
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
	uint64_t *slot = table_find(&s->table, shard_hash(key, klen), match_at, key, klen);
	if (!slot)
		return -1;
	struct found f;
	found_at(s, slot, &f);
	*freq = f.h.bits & ITEM_FREQ;
	return queue_of(s, f.g) == SEG_MAIN ? 1 : 0;
}

int shard_set_limit(struct shard *s, size_t bytes)
{
	if (bytes < SHARD_LIMIT_MIN)
		return -EINVAL;
	s->cfg.mem_limit = bytes;
	ghost_set_limit(&s->ghost, bytes);
	/* The fragmentation charge is capped at half the limit and measured
	   every limit/64 bytes: measure again under the new limit. */
	shard__frag_measure(s);
	shard__make_room(s);
	shard__frag_measure(s);
	shard__make_room(s);
	return 0;
}

/* One table array's slots [from, to) for shard_dump; false once fn stops. */
static bool dump_slots(struct shard *s, const uint64_t *slot, size_t from,
		       size_t to, shard_dump_fn fn, void *ctx)
{
	for (size_t i = from; i < to; i++) {
		if (!table_is_entry(slot[i]))
			continue;
		struct found f;
		found_at(s, (uint64_t *)&slot[i], &f);
		if (state_of(s, &f.h) != ITEM_LIVE)
			continue;
		struct shard_item_info it = {
			.key = found_key(&f),
			.klen = f.h.klen,
			.queue = queue_of(s, f.g) == SEG_MAIN ? 1 : 0,
			.fetched = (f.h.bits & ITEM_FETCHED) != 0,
			.flags = f.h.flags,
			.vlen = f.h.vlen,
			.size = (uint32_t)f.size,
			.exptime = f.h.exptime,
			.cas = cas_of(s, &f.h),
		};
		if (!fn(ctx, &it))
			return false;
	}
	return true;
}

size_t shard_dump(struct shard *s, size_t *cursor, size_t max_slots,
		  shard_dump_fn fn, void *ctx)
{
	/* Slots are numbered over the old array (while the table migrates),
	   then the current one: migration moves entries from old to
	   current, so an entry not seen yet in old is seen in current. */
	const struct table *t = &s->table;
	size_t nold = t->old.slot ? t->old.n : 0, ncur = t->cur.n;
	size_t at = *cursor, end = nold + ncur;
	if (at >= end) {
		*cursor = SIZE_MAX;
		return 0;
	}
	size_t stop = end - at > max_slots ? at + max_slots : end;
	bool go = true;
	if (at < nold) {
		size_t to = stop < nold ? stop : nold;
		go = dump_slots(s, t->old.slot, at, to, fn, ctx);
	}
	if (go && stop > nold) {
		size_t from = at > nold ? at - nold : 0;
		go = dump_slots(s, t->cur.slot, from, stop - nold, fn, ctx);
	}
	*cursor = go && stop < end ? stop : SIZE_MAX;
	return stop - at;
}
