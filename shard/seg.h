/*
 * seg.h - the segment store of one shard: fixed-size blocks that items are
 * appended to, two FIFO queues of them, and the memory they take.
 *
 * Why segments: when every item is its own heap block, eviction order
 * scatters free holes over many allocator pages, and a small shard ends up
 * holding half of its limit in holes (measured: -t 2 -m 16 held 7.1 MiB of
 * items). Here items are appended back to back into the open segment of a
 * queue and memory is released only by whole segments, so the only waste
 * is dead bytes (deleted or overwritten items not yet reclaimed, counted
 * exactly) and the unused tail of each sealed segment (less than one
 * item). The design follows Segcache (Yang et al., NSDI 2021) at the
 * granularity of S3-FIFO's queues (shard.c has the policy).
 *
 *   queue (small or main):  head (oldest, retired first) ... tail | open
 *     sealed segments, FIFO order                                 appends go here
 *
 * Every segment has an id (1..2^20-1; 0 is never used) that the index
 * stores with an item's offset, so a location is 40 bits (table.h). A
 * regular segment is `seg_size` bytes of heap (a power of two, 1 KiB ..
 * 1 MiB, chosen by the shard from its limit); an item larger than `large`
 * bytes gets a dedicated segment sized for it alone, which is queued like
 * any sealed segment and retired the same way (moved, not copied).
 *
 * Free regular segments are kept on a free list for reuse (at most
 * SEG_FREE_KEEP of them; more go back to the heap so RSS follows a cache
 * that empties). A segment new from the heap comes with its pages faulted
 * in (seg.c, populate), so that appends take no page faults. One `spare`
 * is kept at all times once the shard holds a segment: retiring a segment
 * copies its surviving items forward, which may need one new segment
 * before the retired one is free; the spare is that segment, so a
 * retirement never has to evict to complete.
 *
 * Ownership: the store owns every segment block, the id array and the
 * struct seg headers inside the blocks, all from the shard's heap. Item
 * addresses inside a segment are valid until the segment is released; the
 * shard releases a segment only in its own calls, so no address it hands
 * out survives a shard call. Owner thread only. Errors: NULL on no memory.
 */
#ifndef RINGCACHE_SHARD_SEG_H
#define RINGCACHE_SHARD_SEG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shard/heap.h"

enum seg_queue { SEG_SMALL, SEG_MAIN, SEG_NQ, SEG_NONE = SEG_NQ };

#define SEG_ID_MAX    ((1u << 20) - 1)
#define SEG_OFF_MAX   ((1u << 20) - 1)
#define SEG_SIZE_MIN  (1u << 10)
#define SEG_SIZE_MAX  (1u << 20)
#define SEG_FREE_KEEP 4u

struct seg {
	struct seg *next, *prev; /* queue links (head = oldest) or free list */
	uint32_t id;
	uint32_t cap;            /* bytes of data[] */
	uint32_t used;           /* write offset: items are in [0, used) */
	uint32_t live;           /* bytes of the items the index points to */
	uint32_t items;          /* how many of them */
	uint32_t exp_max;        /* latest exptime of its items; UINT32_MAX if
				    one never expires; 0 if empty */
	uint32_t exp_min;        /* no item written to it expires before
				    this; UINT32_MAX if none has an exptime */
	uint8_t queue;           /* enum seg_queue; SEG_NONE if unlinked */
	bool open;               /* the open segment of its queue */
	bool dedicated;          /* one large item, sized for it */
	uint32_t born;           /* shard clock when its first item was
				    written (meta's "l": an item's age is
				    at most now - born) */
	char data[];
};

struct seg_q {
	struct seg *head, *tail; /* sealed segments */
	struct seg *open;        /* appends go here; NULL before the first */
	size_t bytes;            /* heap bytes of its sealed + open segments */
	size_t nsealed;
};

struct segstore {
	heap_t *heap;
	uint32_t seg_size;       /* heap bytes of a regular segment */
	uint32_t large;          /* items over this size are dedicated */
	struct seg **byid;       /* id -> segment; heap block */
	uint32_t *free_ids;      /* ids to reuse; heap block, id_cap entries */
	uint32_t nfree_ids, id_cap, id_next;
	struct seg_q q[SEG_NQ];
	struct seg *free;        /* free regular segments */
	uint32_t nfree;
	struct seg *spare;
	size_t bytes;            /* heap bytes of every segment held */
	size_t nsegs;            /* segments held, free and spare included */
	size_t used;             /* sum of `used` of segments in queues */
	size_t live;             /* sum of `live` of segments in queues */
	size_t ids_bytes;        /* heap bytes of byid + free_ids */
	uint32_t exp_min;        /* no live item expires before this:
				    lowered with every segment's, recounted
				    by seg_recount_exp_min; UINT32_MAX if
				    none has an exptime */
};

/* Prepares an empty store; allocates nothing yet. */
void seg_init(struct segstore *st, heap_t *heap, uint32_t seg_size,
	      uint32_t large);
/* Frees every segment and the id arrays. */
void seg_deinit(struct segstore *st);

/* The segment size the shard uses for a limit: 128 to 256 segments per
   shard (so the open segments and the spare cost 1-2% of it), a power of
   two in [SEG_SIZE_MIN, SEG_SIZE_MAX]. */
uint32_t seg_size_for(size_t mem_limit);

/* Heap bytes a new segment would take: regular (data_len 0) or dedicated
   for data_len bytes. An estimate made before allocating. */
size_t seg_cost(const struct segstore *st, size_t data_len);

/*
 * A segment to write into: regular ones come from the free list, then
 * from the heap; a dedicated one (data_len > 0) from the heap. The caller
 * has checked the limit. NULL if the heap or the ids are exhausted.
 */
struct seg *seg_take(struct segstore *st, size_t data_len);
/* Gives a segment back (it must be unlinked and hold nothing live). */
void seg_give(struct segstore *st, struct seg *g);

/* Gives free-list segments back to the heap until `keep` are left. */
void seg_trim(struct segstore *st, uint32_t keep);

/* Appends a sealed segment at q's tail. */
void seg_push(struct segstore *st, enum seg_queue q, struct seg *g);
/* Makes g q's open segment; the previous open one is sealed (pushed). */
void seg_set_open(struct segstore *st, enum seg_queue q, struct seg *g);
/* Takes g out of its queue (sealed or open). */
void seg_unlink(struct segstore *st, struct seg *g);

static inline struct seg *seg_by_id(const struct segstore *st, uint32_t id)
{
	return st->byid[id];
}

/* n bytes at the end of an open segment, or NULL if they do not fit. */
static inline char *seg_bump(struct segstore *st, struct seg *g, size_t n,
			     uint32_t *off)
{
	if (!g || n > (size_t)g->cap - g->used)
		return NULL;
	*off = g->used;
	g->used += (uint32_t)n;
	st->used += n;
	return g->data + *off;
}

/* An item in g now expires at exptime (0 never): widens g's bounds and
   lowers the store's. */
static inline void seg_note_exptime(struct segstore *st, struct seg *g,
				    uint32_t exptime)
{
	uint32_t e = exptime ? exptime : UINT32_MAX;
	if (e > g->exp_max)
		g->exp_max = e;
	if (e < g->exp_min)
		g->exp_min = e;
	if (e < st->exp_min)
		st->exp_min = e;
}

/* Sets the store's exp_min to the least of its segments' that hold items
   (O(segments)). */
void seg_recount_exp_min(struct segstore *st);

/* An item of n bytes that expires at exptime (0 never) became live in g,
   or stopped being live. */
static inline void seg_live_add(struct segstore *st, struct seg *g,
				size_t n, uint32_t exptime)
{
	g->live += (uint32_t)n;
	g->items++;
	st->live += n;
	seg_note_exptime(st, g, exptime);
}

static inline void seg_live_sub(struct segstore *st, struct seg *g, size_t n)
{
	g->live -= (uint32_t)n;
	g->items--;
	st->live -= n;
}

/* Dead bytes of the segments in queues (written but no longer indexed). */
static inline size_t seg_dead(const struct segstore *st)
{
	return st->used - st->live;
}

#endif
