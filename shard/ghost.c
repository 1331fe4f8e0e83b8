/*
 * ghost.c - the S3-FIFO ghost; see ghost.h.
 */
#include "shard/ghost.h"

#include <errno.h>

#define GHOST_WAYS 4u
#define GHOST_MIN  256u
#define GHOST_MAX  (4u << 20)

static uint32_t ghost_fp(uint64_t hash)
{
	uint32_t fp = (uint32_t)(hash ^ (hash >> 32));
	return fp ? fp : 1;
}

static uint64_t *ghost_bucket(struct ghost *g, uint32_t fp)
{
	return g->slot + ((fp * (uint64_t)GHOST_WAYS) & g->mask);
}

/* How many ghosts were added after this entry. */
static uint32_t ghost_age(const struct ghost *g, uint64_t entry)
{
	return g->seq - (uint32_t)entry;
}

/* The way of bucket b to overwrite with fp: an empty one, fp's own, or
   the oldest. */
static uint64_t *ghost_pick(struct ghost *g, uint64_t *b, uint32_t fp)
{
	uint64_t *pick = &b[0];
	for (unsigned w = 0; w < GHOST_WAYS; w++) {
		if (!b[w] || (uint32_t)(b[w] >> 32) == fp)
			return &b[w];
		if (ghost_age(g, b[w]) > ghost_age(g, *pick))
			pick = &b[w];
	}
	return pick;
}

void ghost_add(struct ghost *g, uint64_t hash)
{
	uint32_t fp = ghost_fp(hash);
	uint64_t *pick = ghost_pick(g, ghost_bucket(g, fp), fp);
	g->seq++;
	*pick = (uint64_t)fp << 32 | g->seq;
}

bool ghost_take(struct ghost *g, uint64_t hash, size_t window)
{
	uint32_t fp = ghost_fp(hash);
	uint64_t *b = ghost_bucket(g, fp);
	for (unsigned w = 0; w < GHOST_WAYS; w++) {
		if (b[w] && (uint32_t)(b[w] >> 32) == fp) {
			bool live = ghost_age(g, b[w]) < window;
			b[w] = 0;
			return live;
		}
	}
	return false;
}

static size_t ghost_cap(size_t mem_limit)
{
	size_t cap = GHOST_MIN;
	while (cap < mem_limit / 1024 && cap < GHOST_MAX)
		cap *= 2;
	return cap;
}

void ghost_set_limit(struct ghost *g, size_t mem_limit)
{
	g->cap = ghost_cap(mem_limit);
}

int ghost_init(struct ghost *g, heap_t *heap, size_t mem_limit)
{
	size_t cap = ghost_cap(mem_limit);
	*g = (struct ghost){ .heap = heap, .cap = cap };
	g->slot = heap_zalloc(heap, GHOST_MIN * sizeof(uint64_t));
	if (!g->slot)
		return -ENOMEM;
	g->mask = GHOST_MIN - 1;
	g->bytes = heap_usable(g->slot);
	return 0;
}

/* Only a ghost that has been filled once grows: a shard that never
   evicts keeps the smallest one. The entries move with their sequence
   numbers, so their age is kept. */
void ghost_grow(struct ghost *g, size_t items)
{
	size_t n = g->mask + 1;
	if (items <= 2 * n || n >= g->cap || g->seq < n)
		return;
	uint64_t *old = g->slot;
	uint64_t *s = heap_zalloc(g->heap, 2 * n * sizeof(uint64_t));
	if (!s)
		return;
	g->slot = s;
	g->mask = 2 * n - 1;
	for (size_t i = 0; i < n; i++) {
		if (!old[i])
			continue;
		uint32_t fp = (uint32_t)(old[i] >> 32);
		uint64_t *pick = ghost_pick(g, ghost_bucket(g, fp), fp);
		if (!*pick || ghost_age(g, *pick) > ghost_age(g, old[i]))
			*pick = old[i];
	}
	heap_free(old);
	g->bytes = heap_usable(s);
}

void ghost_deinit(struct ghost *g)
{
	heap_free(g->slot);
	g->slot = NULL;
	g->bytes = 0;
}
