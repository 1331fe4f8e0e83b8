/*
 * process.c - requests to shard operations and outcomes to replies; see
 * process.h.
 *
 * Every key is hashed once here; its high bits pick the shard. A key of the
 * home shard runs inline and its answer is composed straight into the
 * connection's output arena, so a pipeline of local requests becomes one
 * contiguous run of bytes and one iovec. A key of another shard becomes an
 * xreq (with copies of key and value) plus a pending segment that keeps its
 * place in the reply order. Whole-cache commands (stats, stats reset,
 * flush_all) go to every shard, the home one included, and answer once the
 * last shard has.
 *
 * Direct lines: a classic request line (a single op, or a read line of any
 * number of keys) parsed whole on a connection with nothing queued and no
 * send in flight, whose remote keys all live on one other shard, is sent by
 * that shard's worker: after running the line's last xreq it sends the
 * whole reply - the home's bytes for its own keys and END, read from the
 * home's arena, interleaved with its answers - on the client's socket
 * without blocking, before the batch goes back. That takes the hand-back
 * off the client's wait (two wake-ups before the answer leaves, not three).
 * The home sends nothing of the connection until the batch is back (it
 * would be out of order), then queues what the socket did not take: both
 * sides compose the same bytes (xreq_reply).
 */
#include "net/process.h"
#include "net/metaproc.h"

#include "net/admin.h"
#include "net/observe.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static const char OOM_GET[] = "SERVER_ERROR out of memory writing get response\r\n";
static const char OOM_REQ[] = "SERVER_ERROR out of memory\r\n";

/* ---- home side: sinks, single ops, reads ------------------------------ */

/* Copies a hit's VALUE line, value and "\r\n" into the output arena, and
   the line's "END\r\n" too when `end` says the key is its last. */
struct out_sink {
	struct conn *c;
	bool with_cas;
	bool end;
	char *start;
	size_t len;
};

static char *out_sink(void *ctx, const struct shard_view *v)
{
	struct out_sink *s = ctx;
	struct arena *a = &s->c->out;
	size_t tail = s->end ? 7 : 2;
	size_t n, most = PROTO_VALUE_LINE_MAX + v->vlen + tail;
	char *p;
	if (arena_room(a) >= most) {
		/* The line is written in place: room for the longest one,
		   and what it did not use given back. */
		p = arena_bytes(a, most);
		n = proto_value_line(p, v, s->with_cas);
		arena_trim(a, PROTO_VALUE_LINE_MAX - n);
	} else {
		char line[PROTO_VALUE_LINE_MAX];
		n = proto_value_line(line, v, s->with_cas);
		p = arena_bytes(a, n + v->vlen + tail);
		if (!p)
			return NULL;
		memcpy(p, line, n);
	}
	if (s->end)
		memcpy(p + n + v->vlen, "\r\nEND\r\n", 7);
	else
		memcpy(p + n + v->vlen, "\r\n", 2);
	s->start = p;
	s->len = n + v->vlen + tail;
	return p + n;
}

static enum shard_op store_op(enum proto_cmd cmd)
{
	switch (cmd) {
	case PROTO_CMD_ADD: return SHARD_OP_ADD;
	case PROTO_CMD_REPLACE: return SHARD_OP_REPLACE;
	case PROTO_CMD_APPEND: return SHARD_OP_APPEND;
	case PROTO_CMD_PREPEND: return SHARD_OP_PREPEND;
	case PROTO_CMD_CAS: return SHARD_OP_CAS;
	case PROTO_CMD_TOUCH: return SHARD_OP_TOUCH;
	case PROTO_CMD_DELETE: return SHARD_OP_DELETE;
	case PROTO_CMD_INCR: return SHARD_OP_INCR;
	case PROTO_CMD_DECR: return SHARD_OP_DECR;
	default: return SHARD_OP_SET;
	}
}

/* The reply line for a finished single-key op, into the output arena (in
   place when the chunk has room for the longest, as out_sink writes). */
static void emit_status(struct conn *c, enum proto_cmd cmd, int rc,
			const struct shard_res *res)
{
	static_assert(sizeof(OOM_REQ) - 1 <= PROTO_STATUS_MAX, "a status line");
	struct arena *a = &c->out;
	char line[PROTO_STATUS_MAX];
	char *p = arena_room(a) >= PROTO_STATUS_MAX ?
		  arena_bytes(a, PROTO_STATUS_MAX) : line;
	size_t n;
	if (rc < 0) {
		memcpy(p, OOM_REQ, sizeof(OOM_REQ) - 1);
		n = sizeof(OOM_REQ) - 1;
	} else {
		n = proto_status_line(p, cmd, res);
	}
	if (p != line) {
		arena_trim(a, PROTO_STATUS_MAX - n);
		if (conn_emit(c, p, n) < 0)
			conn_close(c);
	} else if (conn_emit_copy(c, line, n) < 0) {
		conn_close(c);
	}
}

/*
 * An xreq for connection c in its object arena, with its own copies of the
 * key and (for stores) the value. Takes a reference on c.
 */
static struct xreq *xreq_new(struct conn *c, const struct shard_req *q,
			     enum proto_cmd cmd, enum xreq_kind kind)
{
	struct xreq *x = arena_alloc(&c->arena, sizeof(*x));
	if (!x)
		return NULL;
	memset(x, 0, sizeof(*x));
	x->conn = c;
	x->kind = (uint8_t)kind;
	x->cmd = (uint8_t)cmd;
	x->lat_fam = kind == XREQ_OP ? (uint8_t)lat_family(cmd) : LAT_NONE;
	if (x->lat_fam != LAT_NONE)
		x->lat_start = worker_lat_start(c->w);
	x->req = *q;
	if (q->klen && !(x->req.key = arena_copy(&c->arena, q->key, q->klen)))
		return NULL;
	/* The value leaves the read buffer, which is given back once parsed:
	   its copy is granted past the connection-memory budget. */
	if (q->vlen && !(x->req.value = arena_copy_granted(&c->arena, q->value, q->vlen)))
		return NULL;
	c->refs++;
	c->inflight++;
	return x;
}

/* Whether a request parsed now is the first thing c will send: nothing is
   queued, nor being sent. */
static bool line_idle(const struct conn *c)
{
	return !c->seg_head && !c->send_armed && !c->closing &&
	       !c->close_after_send && !c->direct_out;
}

/*
 * Makes the line just parsed, whose segments are all of c's queue and whose
 * xreqs are first..last, a direct line: last carries its pieces, and c
 * sends nothing until last's batch is back. No direct line when memory is
 * short or the line has too many pieces; it is then answered as usual.
 */
static void make_line(struct conn *c, uint32_t dst, struct xreq *first,
		      struct xreq *last)
{
	uint32_t n = 0;
	for (const struct conn_seg *s = c->seg_head; s; s = s->next)
		if (++n > XLINE_PIECES_MAX)
			return;
	struct xline *l = c->closing ? NULL :
		arena_alloc(&c->arena, sizeof(*l) + n * sizeof(l->piece[0]));
	if (!l)
		return;
	l->fd = c->fd;
	l->n = n;
	l->first = first;
	l->ready_sent = 0;
	n = 0;
	for (const struct conn_seg *s = c->seg_head; s; s = s->next, n++) {
		l->piece[n].ptr = s->pending ? NULL : s->ptr;
		l->piece[n].len = s->pending ? 0 : s->len;
	}
	last->line = l;
	c->direct_out = true;
	c->direct_tail = c->seg_tail;
	c->direct_tail_len = c->seg_tail->len;
	struct xbatch *b = c->w->out[dst].building;
	for (const struct xreq *x = first; x != last; x = x->next)
		b->direct++;
	b->direct++;
}

static struct xreq *send_remote(struct conn *c, uint32_t dst, const struct shard_req *q,
			enum proto_cmd cmd, bool noreply, bool with_cas)
{
	/* A noreply request keeps its place too, with an empty answer: a
	   later reply of the connection then leaves only once it has run,
	   as with memcached, which runs a connection's requests in order. */
	struct conn_seg *seg = conn_emit_pending(c);
	if (!seg)
		goto oom;
	struct xreq *x = xreq_new(c, q, cmd, XREQ_OP);
	if (!x) {
		conn_fill(c, seg, OOM_REQ, noreply ? 0 : sizeof(OOM_REQ) - 1);
		return NULL;
	}
	x->seg = seg;
	x->noreply = noreply;
	x->with_cas = with_cas;
	worker_send_xreq(c->w, dst, x);
	return x;
oom:
	conn_close(c);
	return NULL;
}

/* A set of shard dst's key, run here if its sleeping owner lends it the
   shard (worker.h) and the store needs nothing of the owner's. */
static bool store_lent(struct conn *c, const struct proto_req *r, uint32_t dst,
		       const struct shard_req *q)
{
	struct worker *w = c->w;
	struct shard *sh = worker_borrow(w, c, dst);
	if (!sh)
		return false;
	struct shard_res res;
	int rc = shard_store_lent(sh, w->now, q, &res);
	worker_give_back(w, dst);
	if (rc == -EAGAIN)
		return false;
	w->counters.borrowed++;
	if (!r->noreply)
		emit_status(c, r->cmd, rc, &res);
	worker_lat_local(w, LAT_SET);
	return true;
}

static void do_single(struct conn *c, const struct proto_req *r)
{
	struct worker *w = c->w;
	struct shard_req q = {
		.op = store_op(r->cmd),
		.key = r->keys[0].ptr,
		.klen = r->keys[0].len,
		.hash = shard_hash(r->keys[0].ptr, r->keys[0].len),
		.flags = r->flags,
		.exptime = r->exptime,
		.cas = r->cas,
		.delta = r->delta,
		.value = r->value,
		.vlen = r->vlen,
	};
	uint32_t dst = shard_route(q.hash, w->group->nworkers);
	if (detail_on(&w->group->detail))
		admin_detail_single(w, r);
	if (dst != w->id) {
		if (q.op == SHARD_OP_SET && store_lent(c, r, dst, &q))
			return;
		bool idle = line_idle(c);
		struct xreq *x = send_remote(c, dst, &q, r->cmd, r->noreply, false);
		if (idle && x && !r->noreply)
			make_line(c, dst, x, x);
		return;
	}
	struct shard_res res;
	int rc = shard_exec(w->shard, &q, &res, NULL, NULL);
	if (!r->noreply)
		emit_status(c, r->cmd, rc, &res);
	worker_lat_local(w, lat_family(r->cmd));
}

/* Queues a local read's answer (a hit's VALUE block, that out_sink wrote);
   -1 if the connection gave up on the line (out of memory: the error, as
   memcached answers). */
static inline int queue_read(struct conn *c, int rc,
			     const struct shard_res *res,
			     const struct out_sink *s)
{
	if (rc == -ENOBUFS) {
		if (conn_emit_copy(c, OOM_GET, sizeof(OOM_GET) - 1) < 0)
			conn_close(c);
		return -1;
	}
	if (rc == 0 && res->status == SHARD_HIT &&
	    conn_emit(c, s->start, s->len) < 0) {
		conn_close(c);
		return -1;
	}
	return 0;
}

/*
 * A whole get or gets line of one key of this shard, the commonest read,
 * without what process_read keeps for lines of many keys, streamed lines
 * and other shards' keys. It is flattened: shard_get (called from here
 * only), the index's probe, out_sink and the reply's composing are one
 * function, whose rare paths (a new arena chunk, a dead item, a close)
 * stay calls. With it a pipelined get took 836 instructions, not 1151
 * (callgrind, README "Benchmarks").
 */
static __attribute__((flatten)) int read_one_local(struct conn *c,
						  const struct proto_key *k,
						  uint64_t hash, bool with_cas)
{
	struct worker *w = c->w;
	struct shard_req q = {
		.op = SHARD_OP_GET,
		.key = k->ptr,
		.klen = k->len,
		.hash = hash,
	};
	struct out_sink s = { .c = c, .with_cas = with_cas, .end = true };
	struct shard_res res;
	int rc = shard_get(w->shard, &q, &res, out_sink, &s);
	worker_lat_local(w, LAT_GET);
	if (queue_read(c, rc, &res, &s) < 0)
		return -1;
	if ((rc != 0 || res.status != SHARD_HIT) &&
	    conn_emit_lit(c, "END\r\n") < 0)
		conn_close(c);
	return 1;
}

/*
 * The keys of one piece of a read line, in order; the line's END once its
 * last piece is done. Stops early (after at least one key) when the
 * connection must pause, and says how many keys ran; -1 when it gave up on
 * the line (answered with the out-of-memory error, as memcached does).
 * `next` is the first key's hash.
 */
static __attribute__((noinline)) /* its frame is not the one-key read's */
int read_keys(struct conn *c, const struct proto_req *r, uint64_t next)
{
	struct worker *w = c->w;
	bool gat = r->cmd == PROTO_CMD_GAT || r->cmd == PROTO_CMD_GATS;
	bool with_cas = r->cmd == PROTO_CMD_GETS || r->cmd == PROTO_CMD_GATS;
	uint32_t i = 0;
	/* A whole line on an idle connection whose remote keys all go to one
	   shard becomes a direct line. */
	bool direct = !c->rd_active && !r->more && line_idle(c);
	struct xreq *xfirst = NULL, *xlast = NULL;
	uint32_t xdst = 0;
	bool ended = false; /* the last hit carried the END */
	for (; i < r->nkeys; i++) {
		if (i && conn_paused(c))
			return (int)i;
		struct shard_req q = {
			.op = gat ? SHARD_OP_GAT : SHARD_OP_GET,
			.key = r->keys[i].ptr,
			.klen = r->keys[i].len,
			.hash = next,
			.exptime = r->exptime,
		};
		/* The next key's item starts loading while this one runs
		   (past the keys the look-ahead of dispatch_all covered). */
		if (i + 1 < r->nkeys) {
			next = shard_hash(r->keys[i + 1].ptr, r->keys[i + 1].len);
			if (shard_route(next, w->group->nworkers) == w->id)
				shard_prefetch(w->shard, next);
		}
		uint32_t dst = shard_route(q.hash, w->group->nworkers);
		bool detail = detail_on(&w->group->detail);
		struct out_sink s = { .c = c, .with_cas = with_cas,
				      .end = !r->more && i + 1 == r->nkeys };
		struct shard_res res;
		int rc = -EAGAIN;
		if (dst == w->id) {
			rc = shard_exec(w->shard, &q, &res, out_sink, &s);
		} else if (!gat) {
			/* A sleeping owner lends its shard (worker.h); a
			   busy worker hands a multi-get's keys over. */
			struct shard *sh = r->nkeys > 1 && w->lend_busy ?
				NULL : worker_borrow(w, c, dst);
			if (sh) {
				rc = shard_read_lent(sh, w->now, &q, &res,
						     out_sink, &s);
				worker_give_back(w, dst);
				w->counters.borrowed += rc != -EAGAIN;
			}
		}
		if (rc == -EAGAIN) {
			struct xreq *x = send_remote(c, dst, &q, r->cmd, false,
						     with_cas);
			if (!x || (xfirst && dst != xdst))
				direct = false;
			if (!xfirst)
				xfirst = x;
			xlast = x;
			xdst = dst;
			if (detail) {
				detail_count(&w->group->detail, q.key, q.klen,
					     DETAIL_GET, false);
				if (x)
					x->detail = true;
			}
			continue;
		}
		worker_lat_local(w, LAT_GET);
		if (detail)
			detail_count(&w->group->detail, q.key, q.klen, DETAIL_GET,
				     rc == 0 && res.status == SHARD_HIT);
		if (queue_read(c, rc, &res, &s) < 0)
			return -1;
		ended = rc == 0 && res.status == SHARD_HIT && s.end;
	}
	if (!r->more && !ended && conn_emit_lit(c, "END\r\n") < 0)
		conn_close(c);
	else if (direct && xlast)
		make_line(c, xdst, xfirst, xlast);
	return (int)i;
}

int process_read(struct conn *c, const struct proto_req *r)
{
	struct worker *w = c->w;
	uint64_t h = r->nkeys ? shard_hash(r->keys[0].ptr, r->keys[0].len) : 0;
	if (r->nkeys == 1 && !r->more &&
	    (r->cmd == PROTO_CMD_GET || r->cmd == PROTO_CMD_GETS) &&
	    shard_route(h, w->group->nworkers) == w->id &&
	    !detail_on(&w->group->detail))
		return read_one_local(c, &r->keys[0], h,
				      r->cmd == PROTO_CMD_GETS);
	return read_keys(c, r, h);
}

__attribute__((flatten))
void process_get1(struct conn *c, const struct proto_key *key, size_t consumed)
{
	struct worker *w = c->w;
	uint64_t h = shard_hash(key->ptr, key->len);
	if (shard_route(h, w->group->nworkers) == w->id &&
	    !detail_on(&w->group->detail)) {
		read_one_local(c, key, h, false);
		return;
	}
	struct proto_req r;
	memset(&r, 0, sizeof(r));
	r.cmd = PROTO_CMD_GET;
	r.keys = (struct proto_key *)key; /* read only */
	r.nkeys = 1;
	r.checked = true;
	r.consumed = consumed;
	read_keys(c, &r, h);
}

/* Stage one for a key: hashes it and, if it is w's, starts loading its
   index slot and keeps the hash in h[*n] for stage two. */
static void prefetch_key(struct worker *w, const char *k, size_t len,
			 uint64_t *h, unsigned *n)
{
	if (!len || len > SHARD_KEY_MAX)
		return;
	uint64_t x = shard_hash(k, len);
	if (shard_route(x, w->group->nworkers) != w->id)
		return;
	shard_prefetch_index(w->shard, x);
	h[(*n)++] = x;
}

unsigned process_prefetch(struct worker *w, const char *p, size_t n,
			  unsigned budget)
{
	const char *end = p + n;
	unsigned used = 0, nh = 0;
	uint64_t h[WORKER_PREFETCH_AHEAD];
	if (budget > WORKER_PREFETCH_AHEAD)
		budget = WORKER_PREFETCH_AHEAD;
	while (used < budget && p < end) {
		size_t left = (size_t)(end - p);
		/* A set looks its key (the first token) up too. */
		bool set = left > 4 && !memcmp(p, "set ", 4);
		size_t skip = set || (left > 4 && !memcmp(p, "get ", 4)) ? 4 :
			      left > 5 && !memcmp(p, "gets ", 5) ? 5 : 0;
		const char *k = p + skip;
		used++;
		/* Each key up to the byte that ends it; one cut by the end of
		   the bytes is left alone. */
		while (skip && used < budget) {
			size_t len = proto_key_span(k, end);
			if (k + len == end)
				goto done;
			prefetch_key(w, k, len, h, &nh);
			used++;
			k += len;
			if (set || *k != ' ')
				break;
			k++;
		}
		/* The next line: at once after a last key's "\r\n". */
		if (end - k >= 2 && k[0] == '\r' && k[1] == '\n') {
			p = k + 2;
			continue;
		}
		const char *nl = memchr(k, '\n', (size_t)(end - k));
		if (!nl)
			break;
		p = nl + 1;
	}
done:
	/* Stage two, once every slot is on its way: the items. */
	for (unsigned i = 0; i < nh; i++)
		shard_prefetch(w->shard, h[i]);
	return used;
}

/* ---- whole-cache commands --------------------------------------------- */

static size_t compose_stats(char *p, struct worker *w, const struct xstats *all)
{
	struct shard_stats t = { 0 };
	struct worker_counters k = { 0 };
	uint32_t n = w->group->nworkers;
	for (uint32_t i = 0; i < n; i++) {
		const uint64_t *src = (const uint64_t *)&all[i].shard;
		uint64_t *dst = (uint64_t *)&t;
		for (size_t j = 0; j < sizeof(t) / sizeof(uint64_t); j++)
			dst[j] += src[j];
		k.curr_connections += all[i].worker.curr_connections;
		k.total_connections += all[i].worker.total_connections;
		k.rejected_connections += all[i].worker.rejected_connections;
		k.listen_disabled += all[i].worker.listen_disabled;
		k.cmd_flush += all[i].worker.cmd_flush;
		k.conn_buffer_bytes += all[i].worker.conn_buffer_bytes;
		k.conn_buffer_refused += all[i].worker.conn_buffer_refused;
		k.conn_buffer_pooled += all[i].worker.conn_buffer_pooled;
		k.conn_slow_closed += all[i].worker.conn_slow_closed;
		k.bytes_read += all[i].worker.bytes_read;
		k.bytes_written += all[i].worker.bytes_written;
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	char rbuf[64];
	size_t o = 0;
	o += proto_stat_u64(p + o, "pid", (uint64_t)getpid());
	o += proto_stat_u64(p + o, "uptime", (uint64_t)(w->now - w->group->started));
	o += proto_stat_u64(p + o, "time", (uint64_t)w->now);
	o += proto_stat_str(p + o, 128, "version", CONFIG_VERSION);
	o += proto_stat_u64(p + o, "pointer_size", 8 * sizeof(void *));
	snprintf(rbuf, sizeof(rbuf), "%ld.%06ld", (long)ru.ru_utime.tv_sec,
		 (long)ru.ru_utime.tv_usec);
	o += proto_stat_str(p + o, 128, "rusage_user", rbuf);
	snprintf(rbuf, sizeof(rbuf), "%ld.%06ld", (long)ru.ru_stime.tv_sec,
		 (long)ru.ru_stime.tv_usec);
	o += proto_stat_str(p + o, 128, "rusage_system", rbuf);
	o += proto_stat_u64(p + o, "max_connections", w->group->cfg->max_conns);
	o += proto_stat_u64(p + o, "curr_connections", k.curr_connections);
	o += proto_stat_u64(p + o, "total_connections", k.total_connections);
	o += proto_stat_u64(p + o, "rejected_connections", k.rejected_connections);
	o += proto_stat_u64(p + o, "cmd_get", t.cmd_get);
	o += proto_stat_u64(p + o, "cmd_set", t.cmd_set);
	o += proto_stat_u64(p + o, "cmd_flush", k.cmd_flush);
	o += proto_stat_u64(p + o, "cmd_touch", t.cmd_touch);
	o += proto_stat_u64(p + o, "get_hits", t.get_hits);
	o += proto_stat_u64(p + o, "get_misses", t.get_misses);
	o += proto_stat_u64(p + o, "get_expired", t.get_expired);
	o += proto_stat_u64(p + o, "get_flushed", t.get_flushed);
	o += proto_stat_u64(p + o, "delete_misses", t.delete_misses);
	o += proto_stat_u64(p + o, "delete_hits", t.delete_hits);
	o += proto_stat_u64(p + o, "incr_misses", t.incr_misses);
	o += proto_stat_u64(p + o, "incr_hits", t.incr_hits);
	o += proto_stat_u64(p + o, "decr_misses", t.decr_misses);
	o += proto_stat_u64(p + o, "decr_hits", t.decr_hits);
	o += proto_stat_u64(p + o, "cas_misses", t.cas_misses);
	o += proto_stat_u64(p + o, "cas_hits", t.cas_hits);
	o += proto_stat_u64(p + o, "cas_badval", t.cas_badval);
	o += proto_stat_u64(p + o, "touch_hits", t.touch_hits);
	o += proto_stat_u64(p + o, "touch_misses", t.touch_misses);
	o += proto_stat_u64(p + o, "bytes_read", k.bytes_read);
	o += proto_stat_u64(p + o, "bytes_written", k.bytes_written);
	o += proto_stat_u64(p + o, "limit_maxbytes", atomic_load(&w->group->mem_limit));
	o += proto_stat_u64(p + o, "listen_disabled_num", k.listen_disabled);
	o += proto_stat_u64(p + o, "threads", n);
	o += proto_stat_u64(p + o, "hash_bytes", t.hash_bytes);
	o += proto_stat_u64(p + o, "hash_is_expanding", t.hash_is_expanding != 0);
	o += proto_stat_u64(p + o, "bytes", t.bytes);
	o += proto_stat_u64(p + o, "curr_items", t.curr_items);
	o += proto_stat_u64(p + o, "total_items", t.total_items);
	o += proto_stat_u64(p + o, "expired_unfetched", t.expired_unfetched);
	o += proto_stat_u64(p + o, "evicted_unfetched", t.evicted_unfetched);
	o += proto_stat_u64(p + o, "evictions", t.evictions);
	o += proto_stat_u64(p + o, "reclaimed", t.reclaimed);
	o += proto_stat_u64(p + o, "segments", t.segments);
	o += proto_stat_u64(p + o, "segments_free", t.segments_free);
	o += proto_stat_u64(p + o, "segment_bytes", t.segment_bytes);
	o += proto_stat_u64(p + o, "dead_bytes", t.dead_bytes);
	o += proto_stat_u64(p + o, "segments_retired", t.segments_retired);
	o += proto_stat_u64(p + o, "segments_expired", t.segments_expired);
	o += proto_stat_u64(p + o, "segments_compacted", t.segments_compacted);
	o += proto_stat_u64(p + o, "items_moved", t.items_moved);
	o += proto_stat_u64(p + o, "ghost_bytes", t.ghost_bytes);
	o += proto_stat_u64(p + o, "conn_buffer_bytes", k.conn_buffer_bytes);
	o += proto_stat_u64(p + o, "conn_buffer_refused", k.conn_buffer_refused);
	o += proto_stat_u64(p + o, "conn_buffer_pooled", k.conn_buffer_pooled);
	o += proto_stat_u64(p + o, "conn_slow_closed", k.conn_slow_closed);
	memcpy(p + o, "END\r\n", 5);
	return o + 5;
}

/* Room compose_stats needs: about 60 lines of at most 64 bytes. */
#define STATS_ROOM 4096

/* The last shard has answered a fan-out: compose its reply. */
static void gather_done(struct conn *c, struct xgather *g)
{
	if (!g->seg)
		return;
	if (g->cmd == PROTO_CMD_FLUSH_ALL || g->cmd == PROTO_CMD_CACHE_MEMLIMIT) {
		conn_fill(c, g->seg, "OK\r\n", 4);
	} else if (g->parts) {
		conn_fill(c, g->seg, "END\r\n", 5);
	} else if (g->lat) {
		observe_latency_done(c, g);
	} else if (g->stats && g->group == ADMIN_SHARDS) {
		observe_shards_done(c, g);
	} else if (g->stats && g->group) {
		admin_stats_group(c, g);
	} else if (g->stats) {
		char buf[STATS_ROOM];
		size_t n = compose_stats(buf, c->w, g->stats);
		conn_fill(c, g->seg, buf, n);
	} else {
		conn_fill(c, g->seg, "RESET\r\n", 7);
	}
}

/* Runs a fan-out request on worker w (any side); a listing goes into
   b's reply buffer. */
static void execute_fanout(struct worker *w, struct xreq *x, struct xbatch *b)
{
	switch (x->kind) {
	case XREQ_STATS:
		shard_stats(w->shard, &x->stats->shard);
		x->stats->worker = w->counters;
		x->stats->worker.conn_buffer_bytes = w->mem.held;
		x->stats->worker.conn_buffer_refused = w->mem.refused;
		x->stats->worker.conn_buffer_pooled = connmem_pooled(&w->mem);
		break;
	case XREQ_STATS_RESET:
		shard_stats_reset(w->shard);
		w->counters.total_connections = 0;
		w->counters.rejected_connections = 0;
		w->counters.listen_disabled = 0;
		w->counters.cmd_flush = 0;
		w->counters.conn_slow_closed = 0;
		w->counters.bytes_read = 0;
		w->counters.bytes_written = 0;
		w->mem.refused = 0;
		memset(&w->lat, 0, sizeof(w->lat));
		break;
	case XREQ_LATENCY: {
		char *p = xbatch_reserve(b, sizeof(w->lat));
		if (p) {
			memcpy(p, &w->lat, sizeof(w->lat));
			b->len += sizeof(w->lat);
		}
		break;
	}
	case XREQ_FLUSH:
		shard_flush(w->shard, x->req.exptime);
		break;
	case XREQ_MEMLIMIT:
		shard_set_limit(w->shard, (size_t)x->arg);
		break;
	case XREQ_TEXT:
		admin_text(w, x, b);
		break;
	case XREQ_OP:
		break;
	}
}

struct xgather *process_fanout(struct conn *c, const struct proto_req *r,
			       enum xreq_kind kind, const struct xreq *tmpl)
{
	struct worker *w = c->w;
	uint32_t n = w->group->nworkers;
	struct xgather *g = arena_alloc(&c->arena, sizeof(*g));
	if (!g)
		goto oom;
	memset(g, 0, sizeof(*g));
	g->cmd = r->cmd;
	g->remaining = n;
	if (kind == XREQ_TEXT) {
		if (!(g->parts = arena_alloc(&c->arena, n * sizeof(*g->parts))))
			goto oom;
		for (uint32_t i = 0; i < n; i++)
			if (!(g->parts[i] = conn_emit_pending(c)))
				goto oom;
	}
	if (!r->noreply && !(g->seg = conn_emit_pending(c)))
		goto oom;
	if (kind == XREQ_STATS &&
	    !(g->stats = arena_alloc(&c->arena, n * sizeof(*g->stats))))
		goto oom;
	if (kind == XREQ_STATS && tmpl)
		g->group = (uint8_t)tmpl->arg;
	if (kind == XREQ_LATENCY) {
		if (!(g->lat = arena_alloc(&c->arena, sizeof(*g->lat))))
			goto oom;
		memset(g->lat, 0, sizeof(*g->lat));
	}
	struct shard_req q = { .exptime = r->exptime };
	for (uint32_t i = 0; i < n; i++) {
		struct xreq *x = xreq_new(c, &q, r->cmd, kind);
		if (!x)
			goto oom;
		x->gather = g;
		x->stats = g->stats ? &g->stats[i] : NULL;
		x->part = i;
		if (tmpl) {
			x->text = tmpl->text;
			x->arg = tmpl->arg;
			x->arg2 = tmpl->arg2;
		}
		if (i != w->id) {
			worker_send_xreq(w, i, x);
			continue;
		}
		struct xbatch local = { .src = w->id, .dst = w->id };
		if (kind == XREQ_LATENCY)
			lat_set_merge(g->lat, &w->lat);
		else
			execute_fanout(w, x, &local);
		if (g->parts)
			conn_fill(c, g->parts[i], local.buf, local.len);
		heap_free(local.buf);
		c->inflight--;
		c->refs--;
		if (--g->remaining == 0)
			gather_done(c, g);
	}
	return g;
oom:
	/* Parts already sent still come back: g stays valid in the arena,
	   which lives until the last reference goes, and a closing connection
	   ignores their answers. */
	conn_close(c);
	return NULL;
}

struct xreq *process_send_text(struct conn *c, uint32_t dst,
				const struct xreq *tmpl)
{
	struct worker *w = c->w;
	struct conn_seg *seg = conn_emit_pending(c);
	struct shard_req q = { 0 };
	struct xreq *x = seg ? xreq_new(c, &q, PROTO_CMD_LRU_CRAWLER, XREQ_TEXT) : NULL;
	if (!x) {
		conn_close(c);
		return NULL;
	}
	x->seg = seg;
	x->text = tmpl->text;
	x->arg = tmpl->arg;
	x->arg2 = tmpl->arg2;
	if (dst != w->id) {
		worker_send_xreq(w, dst, x);
		return x;
	}
	struct xbatch local = { .src = w->id, .dst = w->id };
	execute_fanout(w, x, &local);
	c->inflight--;
	c->refs--;
	admin_round_done(c, x, local.buf, local.len);
	heap_free(local.buf);
	return x;
}

static void do_fanout(struct conn *c, const struct proto_req *r,
		      enum xreq_kind kind)
{
	process_fanout(c, r, kind, NULL);
}

static void do_settings(struct conn *c)
{
	const struct config *cfg = c->w->group->cfg;
	char buf[2048];
	size_t o = 0;
	o += proto_stat_u64(buf + o, "maxbytes", atomic_load(&c->w->group->mem_limit));
	o += proto_stat_u64(buf + o, "maxconns", cfg->max_conns);
	o += proto_stat_u64(buf + o, "tcpport", (uint64_t)cfg->port);
	o += proto_stat_u64(buf + o, "udpport", 0);
	o += proto_stat_str(buf + o, 300, "inter", cfg->listen ? cfg->listen : "NULL");
	o += proto_stat_u64(buf + o, "verbosity", (uint64_t)cfg->verbose);
	o += proto_stat_u64(buf + o, "num_threads", c->w->group->nworkers);
	o += proto_stat_str(buf + o, 64, "evictions", cfg->no_evict ? "off" : "on");
	o += proto_stat_str(buf + o, 64, "cas_enabled", cfg->no_cas ? "no" : "yes");
	o += proto_stat_u64(buf + o, "tcp_backlog", (uint64_t)cfg->backlog);
	o += proto_stat_str(buf + o, 64, "binding_protocol", "ascii");
	o += proto_stat_u64(buf + o, "item_size_max", cfg->item_max);
	o += proto_stat_u64(buf + o, "reqs_per_event", cfg->reqs_per_event);
	o += proto_stat_u64(buf + o, "line_max", cfg->line_max);
	o += proto_stat_u64(buf + o, "conn_buffer_max", cfg->conn_arena_max);
	o += proto_stat_u64(buf + o, "conn_mem_max", cfg->conn_mem_max);
	o += proto_stat_str(buf + o, 300, "domain_socket",
			    cfg->unix_path ? cfg->unix_path : "NULL");
	memcpy(buf + o, "END\r\n", 5);
	if (conn_emit_copy(c, buf, o + 5) < 0)
		conn_close(c);
}

static void do_stats(struct conn *c, const struct proto_req *r)
{
	if (!r->arg) {
		do_fanout(c, r, XREQ_STATS);
	} else if (r->arg_len == 5 && !memcmp(r->arg, "reset", 5)) {
		do_fanout(c, r, XREQ_STATS_RESET);
	} else if (r->arg_len == 8 && !memcmp(r->arg, "settings", 8)) {
		do_settings(c);
	} else if (r->arg_len == 7 && !memcmp(r->arg, "latency", 7)) {
		do_fanout(c, r, XREQ_LATENCY);
	} else if (r->arg_len == 6 && !memcmp(r->arg, "shards", 6)) {
		struct xreq t = { .arg = ADMIN_SHARDS };
		process_fanout(c, r, XREQ_STATS, &t);
	} else if (admin_stats(c, r)) {
		/* items, slabs, detail, cachedump, conns: net/admin.c */
	} else {
		/* memcached's other groups (items, slabs, ...) have no
		   meaning here; an empty listing keeps exporters working. */
		static const char *const empty[] = { "sizes", NULL };
		for (int i = 0; empty[i]; i++) {
			if (r->arg_len == strlen(empty[i]) &&
			    !memcmp(r->arg, empty[i], r->arg_len)) {
				conn_emit_lit(c, "END\r\n");
				return;
			}
		}
		conn_emit_lit(c, "ERROR\r\n");
	}
}

void process_request(struct conn *c, const struct proto_req *r)
{
	switch (r->cmd) {
	case PROTO_CMD_GET:
	case PROTO_CMD_GETS:
	case PROTO_CMD_GAT:
	case PROTO_CMD_GATS:
		if (process_read(c, r) >= 0 && r->more)
			c->skip_line = true; /* a caller that does not stream */
		break;
	case PROTO_CMD_FLUSH_ALL:
		c->w->counters.cmd_flush++;
		do_fanout(c, r, XREQ_FLUSH);
		break;
	case PROTO_CMD_STATS:
		do_stats(c, r);
		break;
	case PROTO_CMD_VERSION:
		conn_emit_lit(c, "VERSION " CONFIG_VERSION "\r\n");
		break;
	case PROTO_CMD_VERBOSITY:
		if (!r->noreply)
			conn_emit_lit(c, "OK\r\n");
		break;
	case PROTO_CMD_QUIT:
		c->close_after_send = true;
		break;
	case PROTO_CMD_SHUTDOWN:
	case PROTO_CMD_CACHE_MEMLIMIT:
	case PROTO_CMD_LRU_CRAWLER:
		admin_request(c, r);
		break;
	default:
		do_single(c, r);
		break;
	}
}

/* ---- destination side ------------------------------------------------- */

/* Writes a hit's VALUE line, value and "\r\n" into the batch buffer. */
struct batch_sink {
	struct xbatch *b;
	bool with_cas;
	size_t start;
};

static char *batch_sink(void *ctx, const struct shard_view *v)
{
	struct batch_sink *s = ctx;
	char *p = xbatch_reserve(s->b, PROTO_VALUE_LINE_MAX + v->vlen + 2);
	if (!p)
		return NULL;
	size_t n = proto_value_line(p, v, s->with_cas);
	memcpy(p + n + v->vlen, "\r\n", 2);
	s->start = s->b->len;
	s->b->len += n + v->vlen + 2;
	return p + n;
}

/*
 * The bytes an xreq of a single op answers with, as the home queues them
 * and a direct line sends them: a store's status line (composed in `line`)
 * or out-of-memory error; a read's VALUE block in the batch buffer, nothing
 * for a miss, or its out-of-memory error.
 */
static size_t xreq_reply(const struct xbatch *b, const struct xreq *x,
			 char line[64], const char **p)
{
	if (!proto_is_read((enum proto_cmd)x->cmd)) {
		if (x->rc < 0) {
			*p = OOM_REQ;
			return sizeof(OOM_REQ) - 1;
		}
		*p = line;
		return proto_status_line(line, (enum proto_cmd)x->cmd, &x->res);
	}
	if (x->rc == -ENOBUFS) {
		*p = OOM_GET;
		return sizeof(OOM_GET) - 1;
	}
	if (x->rc == 0 && x->res.status == SHARD_HIT) {
		*p = b->buf + x->out_off;
		return x->out_len;
	}
	*p = NULL;
	return 0;
}

/*
 * Owner side of a direct line, once its last xreq has run: sends the
 * line's pieces on the client's socket, without blocking, and notes how
 * much of each the socket took (xreq->sent, line->ready_sent).
 */
static bool send_line(struct worker *w, const struct xbatch *b,
		      struct xline *l)
{
	struct iovec iov[XLINE_PIECES_MAX];
	char line[64]; /* a line with a store has that one piece only */
	size_t total = 0;
	const struct xreq *q = l->first;
	for (uint32_t i = 0; i < l->n; i++) {
		const char *p = l->piece[i].ptr;
		size_t n = l->piece[i].len;
		if (!p) {
			n = xreq_reply(b, q, line, &p);
			q = q->next;
		}
		iov[i].iov_base = (void *)p;
		iov[i].iov_len = n;
		total += n;
	}
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = l->n };
	ssize_t k = sendmsg(l->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
	size_t left = k > 0 ? (size_t)k : 0;
	w->counters.bytes_written += left;
	w->counters.direct_replies++;
	if (left < total)
		w->counters.direct_partial++;
	struct xreq *x = l->first;
	bool all = left == total;
	/* the client's answer is complete now, not when the batch is back */
	uint64_t done = all ? lat_clock_us() : 0;
	for (uint32_t i = 0; i < l->n; i++) {
		size_t take = iov[i].iov_len < left ? iov[i].iov_len : left;
		left -= take;
		if (l->piece[i].ptr) {
			l->ready_sent += take;
		} else {
			x->sent = (uint32_t)take;
			x->done_us = done;
			x = x->next;
		}
	}
	return all;
}

bool process_execute(struct worker *w, struct xbatch *b)
{
	bool quiet = b->direct == b->count;
	/* The items of the batch's reads start loading together. */
	for (struct xreq *x = b->head; x; x = x->next)
		if (x->kind == XREQ_OP && proto_is_read((enum proto_cmd)x->cmd))
			shard_prefetch(w->shard, x->req.hash);
	for (struct xreq *x = b->head; x; x = x->next) {
		if (x->kind != XREQ_OP) {
			size_t start = b->len;
			execute_fanout(w, x, b);
			x->out_off = (uint32_t)start;
			x->out_len = (uint32_t)(b->len - start);
			continue;
		}
		if (x->meta) {
			metaproc_execute(w, b, x);
			continue;
		}
		struct batch_sink s = { .b = b, .with_cas = x->with_cas };
		bool read = proto_is_read((enum proto_cmd)x->cmd);
		x->rc = shard_exec(w->shard, &x->req, &x->res,
				   read ? batch_sink : NULL, &s);
		/* A remote get's hit is counted where it is known, before the
		   batch goes back, if counting was on when it was sent: a later
		   `stats detail dump` (a fan-out that follows it on this path)
		   sees it. */
		if (read && x->rc == 0 && x->res.status == SHARD_HIT &&
		    x->detail)
			detail_hit(&w->group->detail, x->req.key, x->req.klen);
		if (x->rc == 0 && x->res.status == SHARD_HIT) {
			x->out_off = (uint32_t)s.start;
			x->out_len = (uint32_t)(b->len - s.start);
		}
		if (x->line && !send_line(w, b, x->line))
			quiet = false;
	}
	return quiet;
}

/* ---- home side, when a batch returns ---------------------------------- */

/* A worker's histograms, copied into the batch's reply bytes (which need
   not be aligned), into the gather's merge. */
static void merge_latency(struct xgather *g, const struct xbatch *b,
			  const struct xreq *x)
{
	if (x->out_len == sizeof(struct lat_set))
		lat_set_merge_bytes(g->lat, b->buf + x->out_off);
}

static void complete_one(struct conn *c, struct xbatch *b, struct xreq *x)
{
	if (x->gather && x->kind == XREQ_LATENCY && !c->closing)
		merge_latency(x->gather, b, x);
	if (x->gather) {
		if (x->gather->parts && !c->closing)
			conn_fill(c, x->gather->parts[x->part],
				  b->buf + x->out_off, x->out_len);
		if (--x->gather->remaining == 0 && !c->closing)
			gather_done(c, x->gather);
		return;
	}
	if (x->meta) {
		metaproc_complete(c, b, x);
		return;
	}
	if (x->kind == XREQ_TEXT) {
		if (!c->closing)
			admin_round_done(c, x, b->buf + x->out_off, x->out_len);
		return;
	}
	if (!x->seg || c->closing)
		return;
	if (x->noreply) {
		conn_fill(c, x->seg, NULL, 0);
		return;
	}
	/* What a direct line sent of it is not queued again; if the rest
	   does not fit, the client has part of an answer: it is closed. */
	char line[64];
	const char *p;
	size_t n = xreq_reply(b, x, line, &p);
	if (conn_fill(c, x->seg, n ? p + x->sent : NULL, n - x->sent) < 0 &&
	    x->sent)
		conn_close(c);
}

void process_complete(struct worker *w, struct xbatch *b)
{
	struct xreq *x = b->head;
	uint64_t now = 0;
	while (x) {
		/* The xreq lives in c's arena, which conn_unref may free. */
		struct xreq *next = x->next;
		struct conn *c = x->conn;
		uint64_t done = x->done_us;
		worker_lat_remote(w, x->lat_fam, x->lat_start, done ? &done : &now);
		complete_one(c, b, x);
		if (x->line)
			conn_direct_done(c, x->line->ready_sent);
		c->inflight--;
		if (!c->closing)
			worker_mark_dirty(w, c);
		conn_unref(c);
		x = next;
	}
}

struct xreq *process_xreq_new(struct conn *c, const struct shard_req *q)
{
	return xreq_new(c, q, PROTO_CMD_GET, XREQ_OP);
}
