/*
 * connmem.c - lending connection memory within the daemon's budget; see
 * connmem.h.
 *
 * The lease: `held` may move freely inside `lease`; growing past it takes
 * the missing bytes rounded up to a unit from the shared counter (or just
 * the missing bytes when only those are left), and a lease more than two
 * units above `held` is trimmed to one unit above it. The hysteresis keeps
 * a worker that lends and takes back a few blocks per request off the
 * shared cache line.
 */
#include "net/connmem.h"

#include <stdint.h>
#include <sys/mman.h>

#define UNIT_MIN ((size_t)4096)
#define UNIT_MAX ((size_t)64 << 10)

void connmem_budget_init(struct connmem_budget *b, size_t max)
{
	b->max = max;
	atomic_init(&b->leased, 0);
	atomic_init(&b->pressure, 0);
}

void connmem_init(struct connmem *m, heap_t *heap, struct connmem_budget *b,
		  uint32_t nworkers)
{
	*m = (struct connmem){ .heap = heap, .budget = b };
	size_t unit = b->max / 16 / (nworkers ? nworkers : 1);
	m->unit = unit < UNIT_MIN ? UNIT_MIN : unit > UNIT_MAX ? UNIT_MAX : unit;
	uint32_t share = CONNMEM_POOL_MAX / (nworkers ? nworkers : 1);
	m->pool_max = share < CONNMEM_POOL_MIN ? CONNMEM_POOL_MIN : share;
}

static void pool_trim(struct connmem_pool *p)
{
	uint32_t excess = p->low > CONNMEM_POOL_FLOOR ? p->low - CONNMEM_POOL_FLOOR : 0;
	for (; excess && p->head; excess--) {
		void *next = *(void **)p->head;
		heap_free(p->head);
		p->head = next;
		p->n--;
	}
	p->low = p->n;
}

void connmem_tick(struct connmem *m)
{
	pool_trim(&m->block);
	pool_trim(&m->small);
}

static void pool_drain(struct connmem_pool *p)
{
	while (p->head) {
		void *next = *(void **)p->head;
		heap_free(p->head);
		p->head = next;
	}
	p->n = 0;
}

void connmem_deinit(struct connmem *m)
{
	pool_drain(&m->block);
	pool_drain(&m->small);
	if (m->lease)
		atomic_fetch_sub_explicit(&m->budget->leased, m->lease,
					  memory_order_relaxed);
	m->lease = 0;
}

/* Takes at least `need` more bytes of budget into the lease. */
static bool lease_grow(struct connmem *m, size_t need,
		       enum connmem_level level)
{
	struct connmem_budget *b = m->budget;
	size_t max = level == CONNMEM_BUDGET ? b->max :
		     level == CONNMEM_RESERVE ? 2 * b->max : SIZE_MAX;
	size_t want = (need + m->unit - 1) / m->unit * m->unit;
	size_t cur = atomic_load_explicit(&b->leased, memory_order_relaxed);
	for (;;) {
		size_t take = want;
		if (cur > b->max || b->max - cur < take) {
			/* The last bytes of the budget (or past it): just
			   what is needed. */
			take = need;
			if (cur > max || max - cur < take)
				return false;
		}
		if (atomic_compare_exchange_weak_explicit(
			    &b->leased, &cur, cur + take, memory_order_relaxed,
			    memory_order_relaxed)) {
			m->lease += take;
			return true;
		}
	}
}

static void lease_trim(struct connmem *m)
{
	if (m->lease - m->held <= 2 * m->unit)
		return;
	size_t give = m->lease - m->held - m->unit;
	m->lease -= give;
	atomic_fetch_sub_explicit(&m->budget->leased, give, memory_order_relaxed);
}

/*
 * Blocks larger than CONNMEM_BLOCK (a large value's read buffer or copy, an
 * arena chunk for a large answer) are mapped and unmapped: in the workers'
 * heaps, freed ones left their pages partly used and resident, a few MiB
 * per worker under mixed sets of up to 100 KB (test_memory's 1 GB through
 * 4 connections, -t 4, -m 64: peak RSS 88.8 MiB once the connections were
 * dealt over the workers, 85.6 with blocks of 64 KiB and more mapped, 80.0
 * with all of them, as when one worker had all the connections). Sanitizer
 * builds keep the heap, which they see into.
 */
static void *block_alloc(struct connmem *m, size_t size)
{
#ifndef RINGCACHE_LIBC_HEAP
	if (size >= CONNMEM_MAP_MIN) {
		void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		return p == MAP_FAILED ? NULL : p;
	}
#endif
	return heap_alloc(m->heap, size);
}

static void block_free(void *p, size_t size)
{
#ifndef RINGCACHE_LIBC_HEAP
	if (size >= CONNMEM_MAP_MIN) {
		munmap(p, size);
		return;
	}
#endif
	(void)size;
	heap_free(p);
}

static struct connmem_pool *pool_of(struct connmem *m, size_t size)
{
	if (size == CONNMEM_BLOCK)
		return &m->block;
	if (size == CONNMEM_SMALL)
		return &m->small;
	return NULL;
}

void *connmem_get(struct connmem *m, size_t size, enum connmem_level level)
{
	if (m->held + size > m->lease &&
	    !lease_grow(m, m->held + size - m->lease, level)) {
		m->refused++;
		atomic_fetch_add_explicit(&m->budget->pressure, 1,
					  memory_order_relaxed);
		return NULL;
	}
	struct connmem_pool *pool = pool_of(m, size);
	void *p;
	if (pool && pool->head) {
		p = pool->head;
		pool->head = *(void **)p;
		if (--pool->n < pool->low)
			pool->low = pool->n;
	} else {
		p = block_alloc(m, size);
		if (!p) {
			lease_trim(m);
			return NULL;
		}
	}
	m->held += size;
	return p;
}

void connmem_put(struct connmem *m, void *p, size_t size)
{
	if (!p)
		return;
	m->held -= size;
	struct connmem_pool *pool = pool_of(m, size);
	if (pool && pool->n < m->pool_max) {
		*(void **)p = pool->head;
		pool->head = p;
		pool->n++;
	} else {
		block_free(p, size);
	}
	lease_trim(m);
}
