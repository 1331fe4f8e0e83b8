/*
 * conn.h - one client connection: its read buffer, its request-scoped arena,
 * its ordered queue of response segments, and its socket I/O through the
 * home worker's ring.
 *
 * Responses leave in request order. Every reply (or every key's part of a
 * multi-get) is a segment in the connection's queue; a segment is either
 * ready (bytes in the arena) or pending (a cross-shard reply not yet back).
 * The sender sends the ready prefix of the queue with one send; bytes
 * composed back to back in the arena merge into one iovec.
 *
 * Lifetimes: the struct comes from the worker's heap and lives as long as
 * the connection; it is all an idle connection holds (sizeof(struct conn),
 * about 300 bytes). Everything else is lent by the worker's connection
 * memory (net/connmem.h) while a request is in flight and given back when
 * it is done: the read buffer while it holds bytes not yet parsed (a
 * partial request, or requests read while paused), the arenas until they
 * are reset, and the iovec array of a send while that send is in flight.
 * Everything in the arena - segments, response bytes, cross-shard requests
 * with their copies of keys and values - lives until the arena is reset,
 * which happens only when every segment has been sent and no cross-shard
 * request is out (`inflight` == 0). A closed connection is freed only once
 * no submission and no cross-shard request refers to it any more (`refs`).
 * Only the home worker's thread touches a connection. The one exception
 * is its socket: the owner of remote keys may send a direct line on fd
 * (net/process.c) while the line's xreqs hold references, so the fd stays
 * open; it reads the line's bytes in the output arena (not reset while
 * xreqs are out) and never this struct.
 *
 * Bounds: the read buffer grows to fit one request at most (line_max +
 * item_max + 2), plus, with multishot receives, what the kernel delivers
 * between a pause and the cancel of the receive taking effect; the arenas
 * hold at most cfg->conn_arena_max bytes plus, for the output, room for
 * CONN_INFLIGHT_MAX values whose cross-shard answers are in flight. Past
 * half of conn_arena_max, or with CONN_INFLIGHT_MAX cross-shard requests
 * out, the connection stops parsing (and so reading)
 * until its output drains, which bounds the memory of a client that never
 * reads: a multishot receive is cancelled then, and armed again when the
 * output is out. Beyond a read buffer and a chunk of each arena, memory is
 * granted only within the daemon's budget (-o conn_mem_max): a storage
 * command whose value does not fit gets "SERVER_ERROR out of memory storing
 * object" and its data is swallowed unbuffered; a read whose answer does
 * not fit gets "SERVER_ERROR out of memory writing get response". Once the
 * budget is exhausted, conn_reclaim() closes the slow readers: connections
 * whose send has made no progress for CONN_SLOW_MS and that hold more than
 * their fair share (budget / open connections).
 */
#ifndef RINGCACHE_CONN_H
#define RINGCACHE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "net/arena.h"
#include "net/proto.h"

struct worker;
struct io_uring_cqe;

struct conn_seg {
	struct conn_seg *next;
	const char *ptr;   /* into the arena; NULL while pending */
	uint32_t len;
	bool pending;
	bool eor;          /* a reply ends in it (set when the next request is
			      parsed) */
};

#define CONN_IOV_MAX 64
/* A ready prefix that holds no whole reply and that a cross-shard answer
   follows waits for it while it is shorter than this and fewer than
   CONN_IOV_MAX pieces (see conn.c). */
#define CONN_HOLD_MAX (16 * 1024)
/* A send stuck this long makes its connection a slow reader. */
#define CONN_SLOW_MS 1000
/* Most cross-shard requests one connection has out before it stops
   parsing; bounds the memory their answers can take (see conn.c). */
#define CONN_INFLIGHT_MAX 64

struct conn {
	struct conn *next, *prev;   /* worker's list of connections */
	struct conn *dirty_next;    /* worker's dirty list */
	struct worker *w;           /* home worker */
	int fd;
	uint32_t refs;              /* submissions + cross-shard requests out */
	uint32_t inflight;          /* cross-shard requests out */
	bool recv_armed, send_armed, dirty;
	bool recv_cancelled;        /* a cancel of the multishot receive is
				       on its way */
	bool closing;               /* no more reads; free when refs == 0 */
	bool close_after_send;      /* quit, or a fatal protocol error */
	bool direct_out;            /* the owner of a remote key sends the
				       next bytes (a direct line, see
				       net/process.c): nothing is sent here
				       until its batch is back */
	struct conn_seg *direct_tail;/* the line's last segment, and its */
	uint32_t direct_tail_len;    /* length (conn_emit may extend it) */
	bool peer_eof;              /* no more input will be read: the client
				       shut down its side, or the daemon is
				       draining; close once all is answered */

	char *rbuf;                 /* lent (connmem) while it holds bytes;
				       NULL when idle; during one parse, may
				       be a provided receive buffer */
	size_t rcap, rstart, rend;
	bool rbuf_ext;              /* rbuf is a provided buffer, not ours */
	size_t swallow;             /* bytes still to drop (refused data) */

	struct arena arena;         /* segments, xreqs, key/value copies */
	struct arena out;           /* response bytes, back to back */
	struct conn_seg *seg_head, *seg_tail;
	size_t seg_sent;            /* bytes of seg_head already sent */
	struct conn_seg seg0;       /* the segment an empty queue starts with:
				       a lone reply takes no chunk of `arena` */

	struct conn_sendv *sendv;   /* lent while a sendmsg is in flight */
	int64_t send_ms;            /* when the send in flight started
				       (worker's now_ms) */

	/* A read line being streamed (its keys run as they are parsed). */
	bool rd_active;             /* rd continues at rstart */
	bool skip_line;             /* drop input through the next "\n" */
	struct proto_stream rd;
	int64_t last_cmd;           /* worker's now (s) at the last request */

	/* A metadump in progress: one round out at a time (net/admin.c). */
	bool dump_active;
	uint32_t dump_shard;        /* the shard the next round walks */
	uint64_t dump_cursor;       /* where in its index (shard_dump) */
	uint64_t dump_mask;         /* the shards (classes) asked for */
};

/* A multi-piece send's msghdr and iovecs, lent for the send's duration. */
struct conn_sendv {
	struct msghdr msg;
	struct iovec iov[CONN_IOV_MAX];
};

/* Creates a connection on worker w for an accepted fd and arms its first
   receive. Returns NULL (and closes fd) if memory is short. */
struct conn *conn_create(struct worker *w, int fd);

/* Completion handlers, called by the worker's dispatcher. */
void conn_on_recv(struct conn *c, const struct io_uring_cqe *cqe);
void conn_on_send(struct conn *c, int res);
/* Closes (or ends the input of) a connection whose peer is gone though
   its receive never completed; see conn.c. Worker thread only. */
void conn_probe(struct conn *c);

/* Starts a send of the ready prefix if none is in flight; resets the arena
   and resumes reading when everything is out. */
void conn_push(struct conn *c);

/* Starts closing: shuts the socket so outstanding operations complete;
   the connection is freed when the last reference goes. */
void conn_close(struct conn *c);

/* Frees a connection at once, whatever refers to it: only for shutdown,
   after no other thread can touch it. */
void conn_destroy(struct conn *c);

/* Bytes of connection memory c holds now. */
size_t conn_held(const struct conn *c);

/* After a refusal of the budget: closes w's slow readers that hold more
   than their fair share (see above). Returns how many it closed. */
unsigned conn_reclaim(struct worker *w);

/* Drops one reference taken for a cross-shard request. */
void conn_unref(struct conn *c);

/* Appends a ready segment of `len` bytes at `p`, which must come from
   c->out (merged with the last segment when adjacent). 0 or -ENOMEM. */
int conn_emit(struct conn *c, const char *p, size_t len);
/* Copies bytes into c->out and emits them. 0 or -ENOMEM. */
int conn_emit_copy(struct conn *c, const char *s, size_t len);
/* Appends a pending segment; NULL if memory is short. */
struct conn_seg *conn_emit_pending(struct conn *c);
/* Fills a pending segment with a copy of len bytes. 0 or -ENOMEM (the
   segment then carries a SERVER_ERROR line instead, or nothing). */
int conn_fill(struct conn *c, struct conn_seg *seg, const char *p,
	      size_t len);

/* A direct line of c is back: its owner sent `sent` bytes of the queue's
   head, and c sends again. */
void conn_direct_done(struct conn *c, size_t sent);

/* Whether c stops parsing for now (its arenas past half their bound, or
   too many cross-shard requests out); a streamed read stops between keys. */
bool conn_paused(const struct conn *c);

/* Emits a literal string. */
#define conn_emit_lit(c, s) conn_emit_copy((c), (s), sizeof(s) - 1)

#endif
