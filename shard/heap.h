/*
 * heap.h - the one allocator interface of ringcache: a heap per owner
 * thread, backed by mimalloc's first-class heaps.
 *
 * A heap is created by the thread that will allocate from it (a shard, a
 * worker) and only that thread allocates from it; any thread may free a
 * block (mimalloc supports that). heap_usable() is the real size of a block,
 * which is what memory accounting charges.
 *
 * heap_footprint() says how much memory the heap really holds: the bytes of
 * its pages that mimalloc has handed out at least once (`committed`) and
 * the bytes of its live blocks (`used`). The difference is fragmentation:
 * free blocks of one size class that a block of another class cannot use.
 * It walks the heap's pages (not its blocks), so it costs O(pages); only
 * the heap's owner may call it. heap_configure() sets the process-wide
 * allocator options once at start-up, before any thread allocates: freed
 * pages go back to the OS at once instead of after a delay.
 *
 * Sanitizer builds define RINGCACHE_LIBC_HEAP: every call then goes to the
 * C library's malloc, which ASan and LeakSanitizer can see into (they cannot
 * see inside mimalloc's pages), and each heap counts its live blocks so that
 * heap_destroy() reports any block its owner forgot to free. Code must
 * therefore free every block explicitly before heap_destroy(), even though
 * mimalloc would release them in one step: that is what lets the sanitizers
 * prove there is no leak and no use after free.
 */
#ifndef RINGCACHE_HEAP_H
#define RINGCACHE_HEAP_H

#include <stddef.h>

struct heap_footprint {
	size_t committed; /* bytes of the heap's pages in use by size classes */
	size_t used;      /* bytes of its live blocks (heap_usable of each) */
};

#ifndef RINGCACHE_LIBC_HEAP

#include <mimalloc.h>

typedef mi_heap_t heap_t;

static inline heap_t *heap_create(void) { return mi_heap_new(); }
/* Releases the heap; every block must have been freed (see above). */
static inline void heap_destroy(heap_t *h) { mi_heap_delete(h); }
static inline void *heap_alloc(heap_t *h, size_t n) { return mi_heap_malloc(h, n); }
static inline void *heap_zalloc(heap_t *h, size_t n) { return mi_heap_zalloc(h, n); }
static inline void *heap_realloc(heap_t *h, void *p, size_t n) { return mi_heap_realloc(h, p, n); }
static inline void heap_free(void *p) { mi_free(p); }
static inline size_t heap_usable(const void *p) { return mi_usable_size(p); }
/* Allocation from whichever thread calls it (cross-thread reply buffers). */
static inline void *heap_thread_realloc(void *p, size_t n) { return mi_realloc(p, n); }

void heap_footprint(heap_t *h, struct heap_footprint *out);
void heap_configure(void);

#else

typedef struct heap heap_t;

heap_t *heap_create(void);
void heap_destroy(heap_t *h);
void *heap_alloc(heap_t *h, size_t n);
void *heap_zalloc(heap_t *h, size_t n);
void *heap_realloc(heap_t *h, void *p, size_t n);
void heap_free(void *p);
size_t heap_usable(const void *p);
void *heap_thread_realloc(void *p, size_t n);
/* The C library hides its pages: committed = used = 0 (no fragmentation
   is ever charged in sanitizer builds). */
void heap_footprint(heap_t *h, struct heap_footprint *out);
void heap_configure(void);

#endif
#endif
