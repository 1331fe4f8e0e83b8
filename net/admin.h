/*
 * admin.h - the introspection and administration commands memcached's
 * tools use: cache_memlimit, shutdown (with -A), stats items / slabs /
 * detail / cachedump / conns, lru_crawler metadump.
 *
 * Classes. memcached reports its memory by slab class; ringcached has no
 * slab classes, so a "class" here is a shard: class i + 1 is shard i
 * (worker i). Its pages are the shard's segments (chunk_size is the
 * segment size, one chunk per page), its items are the shard's items, and
 * its counters (hits, sets, evictions ...) are the shard's. That keeps
 * every number exact, gives memcached-tool and memcstat one line per
 * shard, and lets `stats cachedump <class>` name one shard.
 *
 * Listings (cachedump, conns) fan out to the workers as XREQ_TEXT
 * requests (net/process.h); each worker writes its lines into the reply
 * buffer of the batch (net/xmsg.h) and the home worker copies them into
 * the connection's pending segments, in worker order. A worker walks its
 * shard's index with shard_dump(); cachedump holds at most ADMIN_DUMP_MAX
 * bytes (memcached's 2 MiB cap). metadump has no cap: it runs in rounds,
 * one at a time, each at most ADMIN_ROUND_MAX bytes of lines from
 * ADMIN_ROUND_SLOTS index slots of one shard; the connection asks for the
 * next round once the last one is sent and its arenas reset (conn.c), and
 * reads no further requests meanwhile, so a dump of any size holds one
 * round of memory.
 *
 * Threads: admin_request/admin_stats/admin_stats_group run on the
 * connection's home worker; admin_text on the worker that owns the shard.
 * Errors are protocol replies; memory shortage closes the connection as
 * everywhere in process.c.
 */
#ifndef RINGCACHE_ADMIN_H
#define RINGCACHE_ADMIN_H

#include <stdbool.h>

#include "net/conn.h"
#include "net/proto.h"
#include "net/worker.h"
#include "net/xmsg.h"

#define ADMIN_DUMP_MAX ((size_t)2 << 20)
#define ADMIN_ROUND_MAX ((size_t)64 << 10)
#define ADMIN_ROUND_SLOTS ((size_t)1 << 16)

enum admin_group { ADMIN_ITEMS = 1, ADMIN_SLABS = 2, ADMIN_DETAIL = 3,
		   ADMIN_SHARDS = 4 /* net/observe.h */ };

/* shutdown, cache_memlimit, lru_crawler. */
void admin_request(struct conn *c, const struct proto_req *r);
/* A `stats <group>` this module answers; false if it is not one. */
bool admin_stats(struct conn *c, const struct proto_req *r);
/* Composes stats items / slabs once every shard's counters are in. */
void admin_stats_group(struct conn *c, struct xgather *g);
/* Destination side of an XREQ_TEXT: the worker's lines into b. */
void admin_text(struct worker *w, struct xreq *x, struct xbatch *b);
/* The next round of a metadump in progress (c->dump_active): one shard's
   next lines, or END after the last shard. */
void admin_dump_next(struct conn *c);
/* A round's lines are back: into its segment, and the cursor moves on. */
void admin_round_done(struct conn *c, struct xreq *x, const char *text,
		      size_t len);

/* stats detail counting of a single-key command (set family, delete). */
void admin_detail_single(struct worker *w, const struct proto_req *r);

#endif
