/*
 * observe.c - stats latency and stats shards; see observe.h.
 */
#include "net/observe.h"

#include <stdio.h>
#include <string.h>

/* Fills g's segment with the n bytes at p (in c->out) plus END. */
static void finish(struct xgather *g, char *p, size_t o)
{
	memcpy(p + o, "END\r\n", 5);
	g->seg->pending = false;
	g->seg->ptr = p;
	g->seg->len = (uint32_t)(o + 5);
}

static char *room(struct conn *c, struct xgather *g, size_t n)
{
	char *p = arena_bytes(&c->out, n);
	if (!p) {
		conn_fill(c, g->seg, NULL, 0);
		conn_close(c);
	}
	return p;
}

void observe_latency_done(struct conn *c, struct xgather *g)
{
	static const struct { const char *name; double q; } pcts[] = {
		{ "p50", 0.5 }, { "p90", 0.9 }, { "p99", 0.99 },
		{ "p999", 0.999 },
	};
	char *p = room(c, g, LAT_NFAM * 7 * 64 + 8);
	if (!p)
		return;
	size_t o = 0;
	for (unsigned f = 0; f < LAT_NFAM; f++) {
		const struct lat_hist *h = &g->lat->h[f];
		const char *fam = lat_family_name(f);
		o += (size_t)sprintf(p + o, "STAT %s_count %llu\r\n", fam,
				     (unsigned long long)h->count);
		for (unsigned i = 0; i < 4; i++)
			o += (size_t)sprintf(p + o, "STAT %s_%s_us %llu\r\n", fam,
					     pcts[i].name,
					     (unsigned long long)lat_percentile(h, pcts[i].q));
		o += (size_t)sprintf(p + o, "STAT %s_max_us %llu\r\n", fam,
				     (unsigned long long)h->max_us);
		o += (size_t)sprintf(p + o, "STAT %s_sum_us %llu\r\n", fam,
				     (unsigned long long)h->sum_us);
	}
	finish(g, p, o);
}

void observe_shards_done(struct conn *c, struct xgather *g)
{
	uint32_t n = c->w->group->nworkers;
	/* 64 bytes hold the longest line: a 10-digit shard, a 20-digit count */
	enum { LINES = 18, LINE_BYTES = 64 };
	char *p = room(c, g, (size_t)n * LINES * LINE_BYTES + 8);
	if (!p)
		return;
	size_t o = 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct shard_stats *s = &g->stats[i].shard;
		const struct worker_counters *k = &g->stats[i].worker;
		const struct { const char *name; uint64_t v; } v[] = {
			{ "items", s->curr_items },
			{ "bytes", s->bytes },
			{ "evictions", s->evictions },
			{ "hits", s->get_hits },
			{ "misses", s->get_misses },
			{ "xreq_sent", k->xreq_sent },
			{ "xreq_received", k->xreq_recv },
			{ "direct_replies", k->direct_replies },
			{ "direct_partial", k->direct_partial },
			{ "loop_turns", k->loop_turns },
			{ "sends", k->sends },
			{ "poll_yields", k->poll_yields },
			{ "poll_hits", k->poll_hits },
			{ "parked", k->parked },
			{ "borrowed", k->borrowed },
			{ "lend_waits", k->lend_waits },
			{ "lend_wait_us", k->lend_wait_us },
			{ "connections", k->curr_connections },
		};
		_Static_assert(sizeof(v) / sizeof(v[0]) <= LINES, "room for the lines");
		for (size_t j = 0; j < sizeof(v) / sizeof(v[0]); j++)
			o += (size_t)sprintf(p + o, "STAT shard%u_%s %llu\r\n", i,
					     v[j].name, (unsigned long long)v[j].v);
	}
	finish(g, p, o);
}
