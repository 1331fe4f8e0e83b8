/*
 * xmsg.c - cross-shard batches; see xmsg.h.
 */
#include "net/xmsg.h"

#include "shard/heap.h"
#include <string.h>

struct xbatch *xbatch_create(heap_t *heap, uint32_t src, uint32_t dst)
{
	struct xbatch *b = heap_zalloc(heap, sizeof(*b));
	if (!b)
		return NULL;
	b->src = src;
	b->dst = dst;
	atomic_init(&b->handoff, 0);
	return b;
}

void xbatch_destroy(struct xbatch *b)
{
	if (!b)
		return;
	heap_free(b->buf);
	heap_free(b);
}

char *xbatch_reserve(struct xbatch *b, size_t n)
{
	if (b->cap - b->len < n) {
		if (b->len + n > XBATCH_BUF_MAX)
			return NULL;
		size_t cap = b->cap ? b->cap : 4096;
		while (cap - b->len < n)
			cap *= 2;
		/* From the destination thread's own heap; see xmsg.h. */
		char *p = heap_thread_realloc(b->buf, cap);
		if (!p)
			return NULL;
		b->buf = p;
		b->cap = cap;
	}
	return b->buf + b->len;
}
