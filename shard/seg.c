/*
 * seg.c - segment blocks, ids and queues; see seg.h for the layout and
 * the reasons. The policy that decides which segment to retire and what
 * survives is in shard.c.
 */
#include "shard/seg.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ID_MIN_CAP 64u

void seg_init(struct segstore *st, heap_t *heap, uint32_t seg_size,
	      uint32_t large)
{
	*st = (struct segstore){ .heap = heap, .seg_size = seg_size,
				 .large = large, .id_next = 1,
				 .exp_min = UINT32_MAX };
}

void seg_recount_exp_min(struct segstore *st)
{
	uint32_t m = UINT32_MAX;
	for (uint32_t id = 1; id < st->id_next; id++) {
		const struct seg *g = seg_by_id(st, id);
		if (g && g->items && g->exp_min < m)
			m = g->exp_min;
	}
	st->exp_min = m;
}

void seg_trim(struct segstore *st, uint32_t keep)
{
	while (st->nfree > keep) {
		struct seg *g = st->free;
		st->free = g->next;
		st->nfree--;
		st->bytes -= heap_usable(g);
		st->nsegs--;
		st->byid[g->id] = NULL;
		st->free_ids[st->nfree_ids++] = g->id;
		heap_free(g);
	}
}

void seg_deinit(struct segstore *st)
{
	for (uint32_t id = 1; id < st->id_next; id++)
		if (st->byid[id])
			heap_free(st->byid[id]);
	heap_free(st->byid);
	heap_free(st->free_ids);
	seg_init(st, st->heap, st->seg_size, st->large);
}

uint32_t seg_size_for(size_t mem_limit)
{
	uint32_t s = SEG_SIZE_MIN;
	while (s < SEG_SIZE_MAX && (size_t)s * 2 * 128 <= mem_limit)
		s *= 2;
	return s;
}

size_t seg_cost(const struct segstore *st, size_t data_len)
{
	if (!data_len)
		return st->seg_size;
	return sizeof(struct seg) + data_len;
}

/* A fresh id, growing the arrays when needed; 0 if none is left. */
static uint32_t id_take(struct segstore *st)
{
	if (st->nfree_ids)
		return st->free_ids[--st->nfree_ids];
	if (st->id_next > SEG_ID_MAX)
		return 0;
	if (st->id_next >= st->id_cap) {
		uint32_t cap = st->id_cap ? st->id_cap * 2 : ID_MIN_CAP;
		struct seg **b = heap_realloc(st->heap, st->byid,
					      cap * sizeof(*b));
		if (!b)
			return 0;
		st->byid = b;
		uint32_t *f = heap_realloc(st->heap, st->free_ids,
					   cap * sizeof(*f));
		if (!f)
			return 0;
		st->free_ids = f;
		memset(b + st->id_cap, 0, (cap - st->id_cap) * sizeof(*b));
		st->id_cap = cap;
		st->ids_bytes = heap_usable(b) + heap_usable(f);
	}
	return st->id_next++;
}

static void seg_reset(struct seg *g)
{
	g->next = g->prev = NULL;
	g->used = g->live = g->items = g->exp_max = 0;
	g->exp_min = UINT32_MAX;
	g->queue = SEG_NONE;
	g->open = false;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

/*
 * Faults in the pages of a new regular segment at once, so that no append
 * to it takes a page fault. An append may be a borrower's (net/worker.h,
 * lending), made while it holds the owner's shard, and the return from a
 * fault is where the kernel switches a thread out: at -t 2, get90 with 4 KiB
 * values at half memcached's rate, every set took a fault, half of them
 * while lent, and owners waited up to 3.6 ms for their shard. One madvise
 * per segment also costs less than a fault per page. The memory is the
 * segment's, counted against the limit either way. A kernel without
 * MADV_POPULATE_WRITE leaves the faults to the first writes, as before.
 */
static void populate(void *p, size_t n)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1);
	uintptr_t e = ((uintptr_t)p + n) & ~(page - 1);
	if (e > a)
		(void)madvise((void *)a, e - a, MADV_POPULATE_WRITE);
}

struct seg *seg_take(struct segstore *st, size_t data_len)
{
	if (!data_len && st->free) {
		struct seg *g = st->free;
		st->free = g->next;
		st->nfree--;
		seg_reset(g);
		return g;
	}
	uint32_t id = id_take(st);
	if (!id)
		return NULL;
	size_t n = data_len ? sizeof(struct seg) + data_len : st->seg_size;
	struct seg *g = heap_alloc(st->heap, n);
	if (!g) {
		st->free_ids[st->nfree_ids++] = id;
		return NULL;
	}
	size_t u = heap_usable(g);
	if (!data_len)
		populate(g, u);
	size_t cap = u - sizeof(struct seg);
	if (!data_len && cap > SEG_OFF_MAX)
		cap = SEG_OFF_MAX; /* offsets are 20 bits */
	g->id = id;
	g->cap = (uint32_t)cap;
	g->dedicated = data_len != 0;
	seg_reset(g);
	st->byid[id] = g;
	st->bytes += u;
	st->nsegs++;
	return g;
}

void seg_give(struct segstore *st, struct seg *g)
{
	st->used -= g->used;
	st->live -= g->live;
	if (g->dedicated) {
		st->bytes -= heap_usable(g);
		st->nsegs--;
		st->byid[g->id] = NULL;
		st->free_ids[st->nfree_ids++] = g->id;
		heap_free(g);
		return;
	}
	seg_reset(g);
	g->next = st->free;
	st->free = g;
	st->nfree++;
	seg_trim(st, SEG_FREE_KEEP);
}

void seg_push(struct segstore *st, enum seg_queue q, struct seg *g)
{
	struct seg_q *Q = &st->q[q];
	g->queue = (uint8_t)q;
	g->open = false;
	g->next = NULL;
	g->prev = Q->tail;
	if (Q->tail)
		Q->tail->next = g;
	else
		Q->head = g;
	Q->tail = g;
	Q->nsealed++;
	Q->bytes += heap_usable(g);
}

void seg_set_open(struct segstore *st, enum seg_queue q, struct seg *g)
{
	struct seg_q *Q = &st->q[q];
	if (Q->open) {
		Q->bytes -= heap_usable(Q->open);
		seg_push(st, q, Q->open);
	}
	Q->open = g;
	g->queue = (uint8_t)q;
	g->open = true;
	g->next = g->prev = NULL;
	Q->bytes += heap_usable(g);
}

void seg_unlink(struct segstore *st, struct seg *g)
{
	if (g->queue == SEG_NONE)
		return;
	struct seg_q *Q = &st->q[g->queue];
	Q->bytes -= heap_usable(g);
	if (g->open) {
		Q->open = NULL;
	} else {
		if (g->prev)
			g->prev->next = g->next;
		else
			Q->head = g->next;
		if (g->next)
			g->next->prev = g->prev;
		else
			Q->tail = g->prev;
		Q->nsealed--;
	}
	g->next = g->prev = NULL;
	g->queue = SEG_NONE;
	g->open = false;
}
