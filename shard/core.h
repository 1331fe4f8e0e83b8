/*
 * core.h - the inside of a shard, shared by the files that implement it:
 * shard.c (the commands, time, flush, lifecycle, stats), evict.c (making
 * room: retiring, copying forward and compacting segments, whole-segment
 * expiry) and check.c (the integrity checker). Nothing outside shard/
 * includes it; shard.h is the interface.
 *
 * struct shard is owned by the thread that created it (shard.h). A
 * struct found names an item through the index; its pointers are valid
 * only inside the shard call that made it, until the next call that may
 * allocate, retire or remove (see place() in shard.c for how a store keeps
 * an old item in place while it allocates). Cross-file functions are
 * named shard__*.
 */
#ifndef RINGCACHE_SHARD_CORE_H
#define RINGCACHE_SHARD_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shard/ghost.h"
#include "shard/heap.h"
#include "shard/item.h"
#include "shard/seg.h"
#include "shard/shard.h"
#include "shard/table.h"

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
	uint64_t swept_flush_seq; /* flush_seq when the last pass began */
	uint32_t expire_cursor;/* next segment id the expiry pass looks at;
				  0 between passes */
	int64_t expire_started;/* clock of the last expiry pass's start */
	int64_t compact_checked; /* clock of the last fruitless compaction search */
	struct seg *compacting;/* the segment being compacted, out of its
				  queue (SEG_NONE), or NULL */
	uint32_t compact_off;  /* its next item */
	uint8_t compact_q;     /* the queue its items go back to */
	struct shard_stats st; /* counters; the gauges are filled on read */
};

enum item_state { ITEM_LIVE, ITEM_EXPIRED, ITEM_FLUSHED };

/* The queue g's items belong to: its own, or for the segment being
   compacted (out of its queue), the one it came from. */
static inline unsigned queue_of(const struct shard *s, const struct seg *g)
{
	return g == s->compacting ? s->compact_q : g->queue;
}

/* An item found through the index, valid only inside the current call. */
struct found {
	uint64_t *slot;
	struct seg *g;
	uint32_t off;
	char *p;
	struct item_hdr h;
	size_t size;
};

/* The cas a client sees for an item: its explicit one (stored with E), or
   the one derived from its seq, unique across shards. */
static inline uint64_t cas_of(const struct shard *s, const struct item_hdr *h)
{
	if (h->bits & ITEM_HAS_CAS)
		return h->cas;
	return h->seq * s->cfg.count + s->cfg.id + 1;
}

/* Gives a new version of an item the explicit cas of req's E, if any
   (without E it has none: its cas comes from its new seq). */
static inline void take_cas(const struct shard_req *req, struct item_hdr *h)
{
	h->bits &= (uint8_t)~ITEM_HAS_CAS;
	if (req->mflags & SHARD_MF_SETCAS) {
		h->bits |= ITEM_HAS_CAS;
		h->cas = req->new_cas;
	}
}

static inline char *item_at(const struct shard *s, uint64_t loc)
{
	struct seg *g = seg_by_id(&s->seg, table_loc_seg(loc));
	return g->data + table_loc_off(loc);
}

/* Whether the item at loc has this key (the index's match function). */
static inline bool match_at(void *ctx, uint64_t loc, const char *key, uint8_t klen)
{
	const char *p = item_at(ctx, loc);
	if ((uint8_t)p[0] != klen)
		return false;
	const char *k = p + item_key_off(p);
	if (klen < 8 || klen > 16)
		return memcmp(k, key, klen) == 0;
	/* Two words that overlap, not a call: most keys. */
	uint64_t a, b, x, y;
	memcpy(&a, k, 8);
	memcpy(&b, k + klen - 8, 8);
	memcpy(&x, key, 8);
	memcpy(&y, key + klen - 8, 8);
	return ((a ^ x) | (b ^ y)) == 0;
}

static inline void found_at(struct shard *s, uint64_t *slot, struct found *f)
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

static inline size_t fixed_bytes(const struct shard *s)
{
	return table_bytes(&s->table) + s->seg.ids_bytes +
	       s->frag_bytes;
}

static inline enum item_state state_of(const struct shard *s,
				const struct item_hdr *h)
{
	if (h->seq <= s->flush_seq)
		return ITEM_FLUSHED;
	if (h->exptime && (int64_t)h->exptime <= s->now)
		return ITEM_EXPIRED;
	return ITEM_LIVE;
}

/* Counts an item that leaves because it expired (memcached's reclaimed). */
static inline void count_dead(struct shard *s, const struct item_hdr *h,
		       enum item_state st)
{
	if (st != ITEM_EXPIRED)
		return;
	s->st.reclaimed++;
	if (!(h->bits & ITEM_FETCHED))
		s->st.expired_unfetched++;
}

/* ---- shard.c ------------------------------------------------------------ */

/* Takes a found item out of the index; its bytes become dead. */
void shard__drop(struct shard *s, struct found *f);
/* Frees a queued segment that holds nothing live any more. */
void shard__seg_maybe_free(struct shard *s, struct seg *g);
/* Measures the heap's fragmentation and charges it (shard.c). */
void shard__frag_measure(struct shard *s);

/* ---- evict.c ------------------------------------------------------------ */

/* Space for an n-byte item in queue q, evicting to make room: *gp and
   *off say where. NULL when there is no room. */
char *shard__alloc_item(struct shard *s, enum seg_queue q, size_t n,
			struct seg **gp, uint32_t *off);
/* Room under the limit for the index's next rebuild, never retiring g. */
bool shard__index_room(struct shard *s, struct seg *g);
/* Evicts until the shard is under its limit. */
void shard__make_room(struct shard *s);
/* Frees sealed segments whose items have all expired: a pass over the
   segment ids starts at most once per clock second and looks at a few ids
   per budget unit of shard_tick(). */
void shard__expire_segments(struct shard *s, unsigned budget);
/* Compacts the segment with the most dead bytes, when they are too many,
   `items` of its items per call (s->compacting between calls). */
void shard__compact(struct shard *s, unsigned items);

#endif
