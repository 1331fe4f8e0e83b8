/*
 * xmsg.h - cross-shard requests and the batches that carry them between
 * workers.
 *
 * A request for a key that lives on another worker's shard becomes a struct
 * xreq, allocated in the requesting connection's arena together with copies
 * of its key and value, so that nothing in it points into the read buffer.
 * Xreqs for one destination are chained into that destination's struct
 * xbatch, which the source worker hands over once per loop pass. The
 * destination executes each xreq against its own shard and writes the
 * answers into the xreq (status) and into the batch's reply buffer (values),
 * then hands the batch back. The source copies the answers into each
 * connection's arena and the batch is reused. For a direct line (struct
 * xline) the destination has already sent what the client's socket took;
 * the source queues only the rest.
 *
 * Ownership travels with the message: between the hand-over and the hand-back
 * only the destination thread touches the batch and its xreqs; before and
 * after, only the source thread. The release/acquire pair on `handoff` makes
 * that ordering explicit (the kernel's ring already orders it; the atomic
 * makes it visible to ThreadSanitizer too). The reply buffer is grown by the
 * destination with heap_thread_realloc and freed by the source at the end
 * (mimalloc allows a free from any thread).
 */
#ifndef RINGCACHE_XMSG_H
#define RINGCACHE_XMSG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/proto.h"
#include "net/worker.h"
#include "shard/shard.h"

struct conn;
struct conn_seg;
struct meta_spec;

enum xreq_kind {
	XREQ_OP,          /* one shard_req */
	XREQ_STATS,       /* copy shard and worker counters into `stats` */
	XREQ_STATS_RESET, /* zero the counters */
	XREQ_FLUSH,       /* flush_all with req.exptime as the delay */
	XREQ_MEMLIMIT,    /* cache_memlimit: shard_set_limit(arg bytes) */
	XREQ_TEXT,        /* a listing (enum xtext) into the reply buffer */
	XREQ_LATENCY,     /* copy the worker's struct lat_set into the reply
			     buffer; the home merges it (stats latency) */
};

/* The listings a XREQ_TEXT fan-out asks each worker for (net/admin.c). */
enum xtext {
	XTEXT_CACHEDUMP,  /* ITEM lines of class arg2, at most arg of them */
	XTEXT_METADUMP,   /* key=... lines of the classes in mask arg */
	XTEXT_CONNS,      /* stats conns lines of the worker's connections */
};

/* Counters of one worker and its shard, as `stats` gathers them. */
struct xstats {
	struct shard_stats shard;
	struct worker_counters worker;
};

/* A fan-out (stats, flush_all) waiting for every shard's answer. */
struct xgather {
	uint32_t remaining;
	enum proto_cmd cmd;
	struct conn_seg *seg;        /* NULL for noreply */
	struct xstats *stats;        /* [nworkers] for stats, in the arena */
	struct conn_seg **parts;     /* XREQ_TEXT: one pending segment per
					worker, before `seg` (the END) */
	uint8_t group;               /* stats: 0 general, or enum
					admin_group (items, slabs) */
	struct lat_set *lat;         /* stats latency: the merge, in the
					arena */
};

struct xreq {
	struct xreq *next;
	struct conn *conn;           /* source side only */
	struct conn_seg *seg;        /* where the reply goes (empty for a
					noreply op); NULL: a noreply fan-out */
	struct xgather *gather;      /* fan-out only */
	uint8_t kind;                /* enum xreq_kind */
	uint8_t cmd;                 /* enum proto_cmd */
	bool with_cas;               /* gets/gats */
	bool noreply;                /* its segment stays empty */
	uint8_t lat_fam;             /* enum lat_family, LAT_NONE: unmeasured */
	uint64_t lat_start;          /* when it was parsed (us, home clock) */
	struct shard_req req;        /* key, value: copies in the arena */
	/* Written by the destination. */
	int rc;
	struct shard_res res;
	uint32_t out_off, out_len;   /* value reply bytes in the batch buffer */
	struct xstats *stats;        /* XREQ_STATS: where to copy */
	const struct meta_spec *meta;/* meta command: its reply recipe, in the
					arena; NULL for the classic ones */
	/* XREQ_MEMLIMIT, XREQ_TEXT: */
	uint8_t text;                /* enum xtext */
	uint32_t part;               /* which of gather->parts */
	uint64_t arg, arg2;
	bool detail;                 /* a get sent while stats detail was on:
					the owner counts its hit */
	/* Direct replies (see process.c). */
	struct xline *line;          /* set on the last xreq of a direct line */
	uint32_t sent;               /* bytes of this xreq's answer the owner
					sent (written by the destination) */
	uint64_t done_us;            /* when its direct line went out whole
					(latency clock), or 0 */
};

/*
 * A direct line: the reply of one request line, all of whose remote keys
 * went to one destination, as pieces in reply order - the home's own bytes
 * (ptr into its connection's output arena, which is not reset while the
 * line's xreqs are out) or, ptr NULL, the answer of the line's next xreq.
 * In the home connection's arena; the destination reads it and writes
 * ready_sent.
 */
#define XLINE_PIECES_MAX 130
struct xpiece {
	const char *ptr;
	uint32_t len;
};
struct xline {
	int fd;                      /* the client's socket */
	uint32_t n;
	struct xreq *first;          /* the line's first xreq; the others
					follow it in the same batch */
	size_t ready_sent;           /* bytes of the home's pieces sent */
	struct xpiece piece[];
};

struct xbatch {
	struct xreq *head, *tail;
	uint32_t count;
	uint32_t direct;             /* of count, the xreqs of direct lines:
					no reply waits for their hand-back */
	uint32_t src, dst;
	char *buf;                   /* reply bytes, grown by the destination */
	size_t len, cap;
	atomic_uint handoff;         /* bumped on every hand-over */
};

/* Allocates an empty batch from the source worker's heap. */
struct xbatch *xbatch_create(heap_t *heap, uint32_t src, uint32_t dst);
void xbatch_destroy(struct xbatch *b);

static inline void xbatch_append(struct xbatch *b, struct xreq *x)
{
	x->next = NULL;
	if (b->tail)
		b->tail->next = x;
	else
		b->head = x;
	b->tail = x;
	b->count++;
}

/* Empties a batch that has come back, keeping a buffer of ordinary size
   (one that a burst of large values grew is given back). */
static inline void xbatch_clear(struct xbatch *b)
{
	b->head = b->tail = NULL;
	b->count = 0;
	b->direct = 0;
	b->len = 0;
	if (b->cap > ((size_t)1 << 20)) {
		heap_free(b->buf);
		b->buf = NULL;
		b->cap = 0;
	}
}

/* Hand-over: the sender publishes, the receiver acquires. */
static inline void xbatch_publish(struct xbatch *b)
{
	atomic_fetch_add_explicit(&b->handoff, 1, memory_order_release);
}
static inline void xbatch_acquire(struct xbatch *b)
{
	(void)atomic_load_explicit(&b->handoff, memory_order_acquire);
}

/*
 * The most reply bytes one batch carries. A multi-get of many large values
 * could otherwise make a destination allocate without bound; past this the
 * keys that do not fit answer "SERVER_ERROR out of memory writing get
 * response".
 */
#define XBATCH_BUF_MAX ((size_t)64 << 20)

/* Destination side: room for n more reply bytes; NULL if memory is short
   or the batch is at XBATCH_BUF_MAX. */
char *xbatch_reserve(struct xbatch *b, size_t n);

#endif
