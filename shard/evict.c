/*
 * evict.c - S3-FIFO queues and the ghost; see evict.h for the policy and
 * the paper. Pure bookkeeping: this file never frees an item, the shard
 * does, after evict_victim() hands it one.
 */
#include "shard/evict.h"

#include <errno.h>

#define GHOST_WAYS 4u
#define GHOST_MIN  256u
#define GHOST_MAX  (4u << 20)

/* ---- FIFO queues ---------------------------------------------------- */

static void fifo_push(struct evict_fifo *q, struct item *it, size_t usable)
{
	it->qnext = NULL;
	it->qprev = q->tail;
	if (q->tail)
		q->tail->qnext = it;
	else
		q->head = it;
	q->tail = it;
	q->bytes += usable;
	q->count++;
}

static void fifo_unlink(struct evict_fifo *q, struct item *it, size_t usable)
{
	if (it->qprev)
		it->qprev->qnext = it->qnext;
	else
		q->head = it->qnext;
	if (it->qnext)
		it->qnext->qprev = it->qprev;
	else
		q->tail = it->qprev;
	it->qnext = it->qprev = NULL;
	q->bytes -= usable;
	q->count--;
}

static struct evict_fifo *queue_of(struct evict *e, const struct item *it)
{
	return (it->bits & ITEM_MAIN) ? &e->main : &e->small;
}

/* ---- ghost ----------------------------------------------------------- */

static uint32_t ghost_fp(uint64_t hash)
{
	uint32_t fp = (uint32_t)(hash ^ (hash >> 32));
	return fp ? fp : 1;
}

static uint64_t *ghost_bucket(struct evict *e, uint32_t fp)
{
	return e->ghost + ((fp * (uint64_t)GHOST_WAYS) & e->ghost_mask);
}

/* How many ghosts were added after this entry. */
static uint32_t ghost_age(const struct evict *e, uint64_t entry)
{
	return e->ghost_seq - (uint32_t)entry;
}

static size_t ghost_window(const struct evict *e)
{
	return e->small.count + e->main.count;
}

void evict_ghost_add(struct evict *e, uint64_t hash)
{
	uint32_t fp = ghost_fp(hash);
	uint64_t *b = ghost_bucket(e, fp);
	uint64_t *pick = &b[0];
	for (unsigned w = 0; w < GHOST_WAYS; w++) {
		if (!b[w] || (uint32_t)(b[w] >> 32) == fp) {
			pick = &b[w];
			break;
		}
		if (ghost_age(e, b[w]) > ghost_age(e, *pick))
			pick = &b[w];
	}
	e->ghost_seq++;
	*pick = (uint64_t)fp << 32 | e->ghost_seq;
}

/* True (and the entry is dropped) if the hash is a live ghost. */
static bool ghost_take(struct evict *e, uint64_t hash)
{
	uint32_t fp = ghost_fp(hash);
	uint64_t *b = ghost_bucket(e, fp);
	for (unsigned w = 0; w < GHOST_WAYS; w++) {
		if (b[w] && (uint32_t)(b[w] >> 32) == fp) {
			bool live = ghost_age(e, b[w]) < ghost_window(e);
			b[w] = 0;
			return live;
		}
	}
	return false;
}

/* ---- interface ------------------------------------------------------- */

int evict_init(struct evict *e, heap_t *heap, size_t mem_limit)
{
	size_t cap = GHOST_MIN;
	while (cap < mem_limit / 512 && cap < GHOST_MAX)
		cap *= 2;
	*e = (struct evict){ .heap = heap, .ghost_cap = cap };
	e->ghost = heap_zalloc(heap, GHOST_MIN * sizeof(uint64_t));
	if (!e->ghost)
		return -ENOMEM;
	e->ghost_mask = GHOST_MIN - 1;
	e->ghost_bytes = heap_usable(e->ghost);
	return 0;
}

/*
 * Doubles the ghost once the cached items outnumber twice its entries (so
 * it keeps 1/2..1 entry per item), up to ghost_cap. The entries move with
 * their sequence numbers, so their age is kept. A failed allocation keeps
 * the old array: the ghost is a hint, never needed for correctness.
 */
static void ghost_grow(struct evict *e)
{
	size_t n = e->ghost_mask + 1;
	if (ghost_window(e) <= 2 * n || n >= e->ghost_cap)
		return;
	uint64_t *old = e->ghost;
	uint64_t *g = heap_zalloc(e->heap, 2 * n * sizeof(uint64_t));
	if (!g)
		return;
	e->ghost = g;
	e->ghost_mask = 2 * n - 1;
	for (size_t i = 0; i < n; i++) {
		if (!old[i])
			continue;
		uint64_t *b = ghost_bucket(e, (uint32_t)(old[i] >> 32));
		uint64_t *pick = &b[0];
		for (unsigned w = 0; w < GHOST_WAYS; w++) {
			if (!b[w]) {
				pick = &b[w];
				break;
			}
			if (ghost_age(e, b[w]) > ghost_age(e, *pick))
				pick = &b[w];
		}
		if (!*pick || ghost_age(e, *pick) > ghost_age(e, old[i]))
			*pick = old[i];
	}
	heap_free(old);
	e->ghost_bytes = heap_usable(g);
}

void evict_deinit(struct evict *e)
{
	heap_free(e->ghost);
	e->ghost = NULL;
	e->ghost_bytes = 0;
}

void evict_insert(struct evict *e, struct item *it, size_t usable,
		  uint64_t hash)
{
	it->bits &= (uint8_t)~(ITEM_FREQ | ITEM_MAIN);
	if (ghost_take(e, hash))
		it->bits |= ITEM_MAIN;
	fifo_push(queue_of(e, it), it, usable);
	ghost_grow(e);
}

void evict_remove(struct evict *e, struct item *it)
{
	fifo_unlink(queue_of(e, it), it, heap_usable(it));
}

struct item *evict_pop(struct evict *e)
{
	struct item *it = e->small.head ? e->small.head : e->main.head;
	if (it)
		evict_remove(e, it);
	return it;
}

/* S's head: evicted if never hit since it came in, else promoted to M. */
static struct item *evict_small(struct evict *e, const struct item *protect)
{
	struct item *it;
	while ((it = e->small.head) && it != protect) {
		size_t u = heap_usable(it);
		fifo_unlink(&e->small, it, u);
		if (!(it->bits & ITEM_FREQ))
			return it;
		it->bits = (uint8_t)((it->bits & ~ITEM_FREQ) | ITEM_MAIN);
		fifo_push(&e->main, it, u);
	}
	return NULL;
}

/* M's head: evicted if its count is 0, else reinserted with count - 1. */
static struct item *evict_main(struct evict *e, const struct item *protect)
{
	struct item *it;
	while ((it = e->main.head)) {
		if (it == protect && e->main.count == 1)
			return NULL;
		size_t u = heap_usable(it);
		fifo_unlink(&e->main, it, u);
		if (it != protect && !(it->bits & ITEM_FREQ))
			return it;
		if (it != protect)
			it->bits--;
		fifo_push(&e->main, it, u);
	}
	return NULL;
}

struct item *evict_victim(struct evict *e, size_t budget,
			  const struct item *protect, bool *from_small)
{
	struct item *it;
	bool small_first = e->small.bytes >= budget / 10 || !e->main.head;
	if (small_first && (it = evict_small(e, protect)))
		goto small;
	if ((it = evict_main(e, protect)))
		goto main;
	if ((it = evict_small(e, protect)))
		goto small;
	if ((it = evict_main(e, protect)))
		goto main;
	return NULL;
small:
	*from_small = true;
	return it;
main:
	*from_small = false;
	return it;
}
