/*
 * observe.h - the observability listings of the text protocol: `stats
 * latency` (per command family p50/p90/p99/p99.9/max, microseconds, from
 * every worker's histograms merged) and `stats shards` (each shard's
 * items, bytes, evictions, hits, misses, cross-shard requests and loop
 * turns).
 *
 * Both are fan-outs (net/process.h): every worker copies its counters or
 * its struct lat_set into the gather; these functions compose the reply on
 * the connection's home worker once the last worker has answered. The
 * reply's bytes go into the connection's output arena and the gather's
 * segment points at them; when the arena refuses, the connection closes,
 * as everywhere in process.c. Home worker's thread only; no errors.
 */
#ifndef RINGCACHE_OBSERVE_H
#define RINGCACHE_OBSERVE_H

#include "net/conn.h"
#include "net/xmsg.h"

/* stats latency, from g->lat. */
void observe_latency_done(struct conn *c, struct xgather *g);
/* stats shards, from g->stats[nworkers]. */
void observe_shards_done(struct conn *c, struct xgather *g);

#endif
