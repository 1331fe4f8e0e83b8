/*
 * metaproc.h - the meta commands (mg ms md ma mn me) from a parsed meta
 * request to shard operations and reply bytes: process.h's counterpart for
 * net/meta.h.
 *
 * metaproc_request() runs on the connection's home worker. A key of the
 * home shard is executed inline and its reply composed straight into the
 * connection's output arena (an mg hit: head, value and "\r\n" in one
 * run). A key of another shard becomes a cross-shard request (net/xmsg.h)
 * whose xreq carries a copy of the reply recipe (struct meta_spec, in the
 * connection's arena) and a pending segment that keeps its place in the
 * reply order; metaproc_execute() runs it on the destination worker and
 * composes the whole reply into the batch's reply buffer, and
 * metaproc_complete() copies it into the pending segment back home. So
 * meta and classic commands, local and remote, are answered in request
 * order. Quiet mode (q) fills a segment with nothing.
 *
 * Nothing here allocates except from a connection's arenas (home side) or
 * the batch's reply buffer (destination side). A failed allocation of a
 * reply gives memcached's SERVER_ERROR line, or closes the connection when
 * not even that fits, as process.c does.
 */
#ifndef RINGCACHE_METAPROC_H
#define RINGCACHE_METAPROC_H

#include "net/conn.h"
#include "net/meta.h"
#include "net/worker.h"
#include "net/xmsg.h"

/* Home side: executes or dispatches one parsed meta request of c. The
   request's key may point into m (base64): m must stay put meanwhile. */
void metaproc_request(struct conn *c, struct meta_req *m);

/* Destination side: runs a meta xreq (x->meta set) against w's shard. */
void metaproc_execute(struct worker *w, struct xbatch *b, struct xreq *x);

/* Home side: the returned answer of a meta xreq into its segment. */
void metaproc_complete(struct conn *c, struct xbatch *b, struct xreq *x);

#endif
