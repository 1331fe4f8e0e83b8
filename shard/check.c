/*
 * check.c - the shard's integrity checker (shard_check in shard.h): walks
 * every segment and every index slot and checks the rules the segment
 * store lives by, so that an index entry left pointing at memory that was
 * moved or reused (the bug class segments could bring back) is caught by
 * the unit tests and the fuzzer at the operation that caused it.
 * Owner thread only; O(items + slots).
 */
#include <errno.h>
#include <stdio.h>
#include <xxhash.h>

#include "shard/core.h"

#define CHECK(cond, ...)                                              \
	do {                                                          \
		if (!(cond)) {                                        \
			fprintf(stderr, "shard_check: " __VA_ARGS__); \
			fputc('\n', stderr);                          \
			return -EIO;                                  \
		}                                                     \
	} while (0)

static uint64_t hash_at(void *ctx, uint64_t loc)
{
	const char *p = item_at(ctx, loc);
	return XXH3_64bits(p + item_key_off(p), (uint8_t)p[0]);
}

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
			/* the layout item.h writes: the 32-bit length only
			   from 0xFFFFFF on, and then in a dedicated segment;
			   every field the bits name (the explicit cas too) */
			CHECK(item_size(h.bits, h.klen, h.vlen) == size &&
			      h.hlen == item_key_off(g->data + off),
			      "seg %u off %u: head of %u bytes for bits %#x vlen %u",
			      g->id, off, h.hlen, h.bits, h.vlen);
			CHECK(h.vlen < ITEM_VLEN_ESC || g->dedicated,
			      "seg %u off %u: a 32-bit length in a regular segment",
			      g->id, off);
			const char *key = g->data + off + h.hlen;
			uint64_t hash = XXH3_64bits(key, h.klen);
			uint64_t *slot = table_find_loc(&s->table, hash,
							table_loc(g->id, off));
			if (slot) {
				CHECK(table_find(&s->table, hash, match_at, key, h.klen) == slot,
				      "seg %u off %u: key indexed elsewhere too",
				      g->id, off);
				CHECK(h.seq <= s->seq, "seg %u off %u: seq from the future",
				      g->id, off);
				live += (uint32_t)size;
				n++;
				if (h.exptime) {
					CHECK(g->exp_max >= h.exptime,
					      "seg %u: exp_max %u < item's %u",
					      g->id, g->exp_max, h.exptime);
					CHECK(g->exp_min <= h.exptime &&
					      s->seg.exp_min <= h.exptime,
					      "seg %u off %u: exptime %u before the bounds %u (segment), %u (shard)",
					      g->id, off, h.exptime, g->exp_min, s->seg.exp_min);
				} else {
					CHECK(g->exp_max == UINT32_MAX,
					      "seg %u: an item never expires, exp_max %u",
					      g->id, g->exp_max);
				}
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
	struct seg *x = s->compacting;
	if (x) {
		CHECK(x->queue == SEG_NONE && !x->open && !x->dedicated &&
		      seg_by_id(&s->seg, x->id) == x && s->compact_off <= x->used,
		      "seg %u: being compacted, but queued, open or past its end",
		      x->id);
		if (check_seg(s, x, &items, &bytes) < 0)
			return -EIO;
		used += x->used;
		segs++;
	}
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
			CHECK(g && (g->queue != SEG_NONE || g == x) &&
			      table_loc_off(loc) < g->used,
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
