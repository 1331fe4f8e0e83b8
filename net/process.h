/*
 * process.h - the one step that joins the protocol to the shards: turning a
 * parsed request into shard operations (inline on the home shard, or as
 * cross-shard requests) and the outcomes into reply bytes.
 *
 * process_request() runs on the connection's home worker; it composes inline
 * answers into the connection's output arena at once and leaves a pending
 * segment for each cross-shard part. process_execute() runs on the
 * destination worker for a batch that arrived; process_complete() runs on the
 * home worker when the batch comes back and fills the pending segments.
 * Nothing here allocates except from a connection's arenas (home side) or a
 * batch's reply buffer (destination side).
 */
#ifndef RINGCACHE_PROCESS_H
#define RINGCACHE_PROCESS_H

#include "net/conn.h"
#include "net/proto.h"
#include "net/worker.h"
#include "net/xmsg.h"

/* Executes or dispatches one parsed request of connection c. */
void process_request(struct conn *c, const struct proto_req *r);

/*
 * Runs the keys of one piece of a read line (get, gets, gat, gats) and, when
 * it is the line's last (!r->more) and every key ran, its END. Stops
 * between keys once the connection must pause (conn_paused), having run at
 * least one. Returns how many keys ran, or -1 when the read gave up on the
 * rest of the line (its error is answered, or the connection closes).
 */
int process_read(struct conn *c, const struct proto_req *r);

/*
 * Sends a whole-cache request of `kind` to every worker (the home one runs
 * it inline) and answers once the last has: OK for flush_all and
 * cache_memlimit, the stats for XREQ_STATS, the workers' listings in
 * worker order then END for XREQ_TEXT. tmpl, if not NULL, gives each
 * xreq's text, arg and arg2. Returns the gather, or NULL when memory was
 * short (the connection is then closing).
 */
struct xgather *process_fanout(struct conn *c, const struct proto_req *r,
			       enum xreq_kind kind, const struct xreq *tmpl);

/*
 * One XREQ_TEXT request to worker dst (inline when it is the home one),
 * answered into a pending segment of its own; admin_round_done() gets the
 * text when it is back. Returns the xreq, or NULL when memory was short
 * (the connection is then closing).
 */
struct xreq *process_send_text(struct conn *c, uint32_t dst,
				const struct xreq *tmpl);

/*
 * A get line of one key that proto_get1 took (`consumed` bytes): answered
 * whole, as process_read answers the same line from proto_parse (a key of
 * this shard without building a request at all). The caller moves past
 * the line, whatever happened (the connection may be closing).
 */
void process_get1(struct conn *c, const struct proto_key *key, size_t consumed);

/*
 * A look ahead at bytes just received, before they are parsed: for the keys
 * of the get, gets and set lines among them that belong to w's shard, starts
 * loading their index slots, then their items (shard_prefetch_index, then
 * shard_prefetch), so that the cache misses of a pass's lookups overlap. Looks
 * at `budget` (at most WORKER_PREFETCH_AHEAD) lines and keys and returns
 * how many it looked at. Reads p only; a key cut by the end of the bytes
 * is left alone; anything else it does not recognise is skipped (the
 * parser, not this, decides what the bytes mean).
 */
unsigned process_prefetch(struct worker *w, const char *p, size_t n,
			  unsigned budget);

/* Destination side: runs every request of a batch against w's shard.
   True if the batch was only direct lines, each sent whole: no client
   waits for its hand-back. */
bool process_execute(struct worker *w, struct xbatch *b);

/* Home side: turns a returned batch's answers into reply bytes. */
void process_complete(struct worker *w, struct xbatch *b);

/* An XREQ_OP xreq for q in c's arena, with copies of key and value, c
   referenced (for net/metaproc.c). NULL if memory is short. */
struct xreq *process_xreq_new(struct conn *c, const struct shard_req *q);

#endif
