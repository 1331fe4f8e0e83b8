/*
 * conn.c - a connection's buffers, parsing loop and socket I/O; see conn.h.
 *
 * At most one receive and one send are in flight per connection. The
 * receive is multishot over the worker's provided buffers where the kernel
 * has them (else single-shot into the read buffer): each completion's bytes
 * are parsed where they are when the connection holds no earlier partial
 * request, else appended to the read buffer (a block lent by the worker,
 * taken when a partial request must wait for more bytes and given back once
 * all are parsed), and the provided buffer goes back at once; every
 * complete request is parsed and processed at once; what is left (a partial
 * request) moves to the front of the read buffer. Bytes of a refused data block are dropped straight from the
 * provided buffer, never copied. A connection that must stop reading
 * (paused, quitting) cancels its multishot receive.
 * A get/gets/gat/gats line streams (net/proto.h): its keys run a piece at
 * a time as they are parsed, `rd` keeps the line's state between pieces,
 * and the read stops between two keys when the connection must pause, so
 * a line of any length waits in neither the read buffer nor the arenas; a
 * refused streamed line drops the rest of its bytes (skip_line).
 * Output is a queue of segments over the output arena. After each loop pass
 * the worker calls conn_push() on every connection that produced output,
 * which sends the ready prefix with one send (a sendmsg when it is more
 * than one piece); a prefix that is the start of one reply whose
 * cross-shard answer follows waits for it while it is under CONN_HOLD_MAX
 * bytes and CONN_IOV_MAX pieces. When the queue is empty and no
 * cross-shard request is out, both arenas are reset in one step.
 */
#include "net/conn.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/log.h"
#include "net/admin.h"
#include "net/metaproc.h"
#include "net/process.h"
#include "net/proto.h"
#include "net/udata.h"
#include "net/worker.h"

_Static_assert(sizeof(struct conn_sendv) <= CONNMEM_SMALL,
	       "a send's iovecs fit a small block");

static const char OOM_STORE[] = "SERVER_ERROR out of memory storing object\r\n";
static const char OOM_READ[] = "SERVER_ERROR out of memory reading request\r\n";

static void parse_input(struct conn *c);

/* Half of conn_arena_max: the object arena's limit (conn_init). */
static size_t arena_soft_limit(const struct conn *c)
{
	return c->arena.limit / 2;
}

/*
 * A connection stops parsing (and reading) while its arenas are past half
 * their bound, or while CONN_INFLIGHT_MAX cross-shard requests are out: the
 * size of a remote value is not known until its answer is back, so the
 * answers in flight are bounded by count, and the output arena keeps
 * headroom for that many values of -I bytes (see conn_create).
 */
static bool paused(const struct conn *c)
{
	return c->inflight >= CONN_INFLIGHT_MAX ||
	       arena_used(&c->arena) + arena_used(&c->out) > arena_soft_limit(c);
}

bool conn_paused(const struct conn *c)
{
	return paused(c);
}

struct conn *conn_create(struct worker *w, int fd)
{
	const struct config *cfg = w->group->cfg;
	struct conn *c = heap_zalloc(w->heap, sizeof(*c));
	if (!c) {
		close(fd);
		return NULL;
	}
	c->w = w;
	c->fd = fd;
	c->last_cmd = w->now;
	arena_init(&c->arena, &w->mem, CONNMEM_BLOCK, cfg->conn_arena_max);
	/* Headroom for the answers of the cross-shard reads in flight; it
	   is only allocated when such answers are large. */
	size_t room = CONN_INFLIGHT_MAX * (cfg->item_max + PROTO_VALUE_LINE_MAX + 2);
	arena_init(&c->out, &w->mem, CONNMEM_BLOCK, cfg->conn_arena_max + room);
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->counters.curr_connections++;
	w->counters.total_connections++;
	conn_push(c);
	return c;
}

void conn_destroy(struct conn *c)
{
	struct worker *w = c->w;
	if (w->probe == c)
		w->probe = c->next;
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	close(c->fd);
	arena_deinit(&c->arena);
	arena_deinit(&c->out);
	connmem_put(&w->mem, c->rbuf, c->rcap);
	connmem_put(&w->mem, c->sendv, CONNMEM_SMALL);
	heap_free(c);
}

size_t conn_held(const struct conn *c)
{
	return c->rcap + arena_held(&c->arena) + arena_held(&c->out) +
	       (c->sendv ? CONNMEM_SMALL : 0);
}

unsigned conn_reclaim(struct worker *w)
{
	struct worker_group *g = w->group;
	unsigned open = atomic_load_explicit(&g->conns, memory_order_relaxed);
	size_t fair = g->mem.max / (open ? open : 1);
	unsigned closed = 0;
	for (struct conn *c = w->conns, *next; c; c = next) {
		next = c->next;
		if (c->closing || !c->send_armed ||
		    w->now_ms - c->send_ms < CONN_SLOW_MS || conn_held(c) <= fair)
			continue;
		log_msg(LOG_DEBUG, "closing a slow reader holding %zu bytes "
			"(fair share %zu)", conn_held(c), fair);
		conn_close(c);
		closed++;
	}
	w->counters.conn_slow_closed += closed;
	return closed;
}

/* Frees a closing connection once nothing refers to it any more. */
static void maybe_free(struct conn *c)
{
	if (c->closing && c->refs == 0 && !c->dirty)
		conn_destroy(c);
}

__attribute__((cold, noinline)) void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	c->w->counters.curr_connections--;
	atomic_fetch_sub_explicit(&c->w->group->conns, 1, memory_order_relaxed);
	/* Makes an outstanding receive or send complete now. */
	shutdown(c->fd, SHUT_RDWR);
	maybe_free(c);
}

/*
 * A receive stays armed on a connection whose peer has gone: seen under
 * load (tests/integration/test_hostile.py, connect/send/reset cycles) as a
 * multishot receive still in the ring's poll list of a socket that was
 * reset, with no completion ever posted. A non-blocking peek finds such a
 * peer: an error closes the connection, an EOF is handled as a receive of
 * 0 would be (what was read is still answered).
 */
void conn_probe(struct conn *c)
{
	if (c->closing || c->peer_eof || !c->recv_armed)
		return;
	char b;
	ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)))
		return;
	if (n < 0) {
		conn_close(c);
		return;
	}
	c->peer_eof = true;
	worker_mark_dirty(c->w, c);
}

void conn_unref(struct conn *c)
{
	c->refs--;
	maybe_free(c);
}

/* Whether the connection wants more input now. */
static bool wants_input(const struct conn *c)
{
	return !c->closing && !c->close_after_send && !c->peer_eof &&
	       !c->dump_active && !paused(c);
}

static int rbuf_reserve(struct conn *c, size_t need, bool exact);

static void arm_recv(struct conn *c)
{
	struct worker *w = c->w;
	if (c->recv_armed || !wants_input(c))
		return;
	/* Single-shot receives need the read buffer while they are armed. */
	if (!w->rbufs && (rbuf_reserve(c, 1, false) < 0 || c->rend == c->rcap))
		return;
	struct io_uring_sqe *sqe = worker_sqe(w);
	if (w->rbufs) {
		io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = WORKER_RBUF_GROUP;
	} else {
		io_uring_prep_recv(sqe, c->fd, c->rbuf + c->rend,
				   c->rcap - c->rend, 0);
	}
	io_uring_sqe_set_data64(sqe, ud_pack(c, UD_RECV));
	c->recv_armed = true;
	c->recv_cancelled = false;
	c->refs++;
}

/* Stops a multishot receive of a connection that wants no more input, so
   that a client that does not read cannot make it buffer without bound. */
static void stop_recv(struct conn *c)
{
	if (!c->recv_armed || c->recv_cancelled || !c->w->rbufs ||
	    wants_input(c))
		return;
	struct io_uring_sqe *sqe = worker_sqe(c->w);
	io_uring_prep_cancel64(sqe, ud_pack(c, UD_RECV), 0);
	io_uring_sqe_set_data64(sqe, ud_pack(NULL, UD_IGNORE));
	c->recv_cancelled = true;
}

/*
 * Makes the read buffer hold at least `need` bytes from rstart (moving them
 * to the front). A buffer of CONNMEM_BLOCK is always granted; a larger one
 * only within the budget. With `exact` (a storage command's known size) it
 * is `need` rounded to a page, else it at least doubles (a long line
 * arriving in pieces). 0 or -ENOMEM.
 */
static int rbuf_reserve(struct conn *c, size_t need, bool exact)
{
	struct connmem *m = &c->w->mem;
	if (c->rstart) {
		memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
		c->rend -= c->rstart;
		c->rstart = 0;
	}
	/* A provided buffer is never kept: it goes back after this pass. */
	if (need <= c->rcap && !c->rbuf_ext)
		return 0;
	size_t cap = CONNMEM_BLOCK;
	if (need > cap) {
		cap = (need + 4095) & ~(size_t)4095;
		if (!exact && cap < 2 * c->rcap)
			cap = 2 * c->rcap;
	}
	char *p = connmem_get(m, cap, cap == CONNMEM_BLOCK ? CONNMEM_MUST :
					      CONNMEM_BUDGET);
	if (!p)
		return -ENOMEM;
	if (c->rend)
		memcpy(p, c->rbuf, c->rend);
	if (!c->rbuf_ext)
		connmem_put(m, c->rbuf, c->rcap);
	c->rbuf_ext = false;
	c->rbuf = p;
	c->rcap = cap;
	return 0;
}

/* After parsing: keep the partial request at the front, and give the
   buffer back once it is empty (unless a single-shot receive is writing
   into it). */
static void compact(struct conn *c)
{
	if (c->rbuf_ext) {
		/* What is left of a provided buffer moves into a lent one. */
		size_t left = c->rend - c->rstart;
		if (c->closing || c->close_after_send)
			left = 0; /* nothing more will be parsed */
		if (left && rbuf_reserve(c, left, false) < 0) {
			conn_close(c);
			left = 0;
		}
		if (!left) {
			c->rbuf = NULL;
			c->rbuf_ext = false;
			c->rcap = c->rstart = c->rend = 0;
		}
		return;
	}
	if (c->rstart == c->rend) {
		c->rstart = c->rend = 0;
		if (c->rbuf && (c->w->rbufs || !c->recv_armed)) {
			connmem_put(&c->w->mem, c->rbuf, c->rcap);
			c->rbuf = NULL;
			c->rcap = 0;
		}
	} else if (c->rend == c->rcap && c->rstart) {
		rbuf_reserve(c, 0, true);
	}
}

/*
 * A storage command whose value the budget cannot hold: answered as
 * memcached answers a failed item allocation, its bytes so far dropped and
 * the rest swallowed as they come; a set also drops the key's old value
 * (memcached does, so that a stale value does not survive a failed set).
 */
static void refuse_store(struct conn *c, struct proto_req *req)
{
	size_t have = c->rend - c->rstart;
	if (!req->noreply && conn_emit_copy(c, OOM_STORE, sizeof(OOM_STORE) - 1) < 0) {
		conn_close(c);
		return;
	}
	if (req->cmd == PROTO_CMD_SET) {
		req->cmd = PROTO_CMD_DELETE;
		req->noreply = true;
		process_request(c, req);
	}
	c->rstart = c->rend;
	c->swallow = req->need - have;
}

/* Drops input through the next "\n"; true once it has been found. */
static bool skip_line(struct conn *c)
{
	const char *p = c->rbuf + c->rstart;
	const char *nl = memchr(p, '\n', c->rend - c->rstart);
	if (!nl) {
		c->rstart = c->rend;
		return false;
	}
	c->rstart += (size_t)(nl - p) + 1;
	c->skip_line = false;
	return true;
}

/*
 * Runs the keys of a read line (or of one piece of it) and moves past what
 * ran. The read may stop between keys when the connection must pause (its
 * answers wait to be sent); the line then goes on from the first key that
 * did not run, once the answers are out and the arenas reset.
 */
static void take_read(struct conn *c, struct proto_req *req)
{
	int done = process_read(c, req);
	bool more = req->more;
	if (done < 0) {
		/* Given up (out of memory, answered): the rest of the line
		   is dropped. */
		c->rd_active = false;
		c->rstart += req->consumed;
		c->skip_line = more;
		return;
	}
	if ((uint32_t)done < req->nkeys) {
		const struct proto_key *k = &req->keys[done - 1];
		c->rstart = (size_t)(k->ptr + k->len - c->rbuf);
		more = true;
	} else {
		c->rstart += req->consumed;
	}
	if (!more) {
		c->rd_active = false;
		return;
	}
	if (!c->rd_active) {
		c->rd.cmd = req->cmd;
		c->rd.exptime = req->exptime;
		c->rd.nkeys = 0;
		c->rd_active = true;
	}
	c->rd.nkeys += (uint32_t)done;
	c->rd.checked = req->checked;
}

static void parse_input(struct conn *c)
{
	const struct config *cfg = c->w->group->cfg;
	const struct proto_limits lim = {
		.line_max = cfg->line_max,
		.item_max = cfg->item_max,
		.keys_max = PROTO_KEYS_CHUNK,
	};
	while (!c->closing && !c->close_after_send) {
		if (c->swallow) {
			size_t n = c->rend - c->rstart;
			n = n < c->swallow ? n : c->swallow;
			c->rstart += n;
			c->swallow -= n;
			if (c->swallow)
				break;
		}
		if (c->skip_line && !skip_line(c))
			break;
		if (c->dump_active) {
			/* The next round once the last one is out (its
			   answer sent, the arenas reset): memory stays at
			   one round. */
			if (!c->inflight && !c->seg_head)
				admin_dump_next(c);
			if (c->dump_active)
				break;
			continue;
		}
		if (c->rstart == c->rend || paused(c))
			break;
		/* What is queued so far ends a reply (start_send). */
		if (!c->rd_active && c->seg_tail)
			c->seg_tail->eor = true;
		const char *in = c->rbuf + c->rstart;
		size_t avail = c->rend - c->rstart;
		/* The commonest line, a get of one key, skips the request. */
		struct proto_key key;
		size_t n;
		if (!c->rd_active && (n = proto_get1(in, avail, &lim, &key))) {
			c->last_cmd = c->w->now;
			process_get1(c, &key, n);
			c->rstart += n;
			continue;
		}
		struct proto_req req;
		struct meta_req meta;
		bool is_meta = !c->rd_active && meta_is_cmd(in, avail);
		enum proto_rc rc;
		if (is_meta)
			rc = meta_parse(in, avail, &lim, c->w->keys, &req, &meta);
		else if (c->rd_active)
			rc = proto_parse_more(in, avail, &lim, c->w->keys,
					      &c->rd, &req);
		else
			rc = proto_parse(in, avail, &lim, c->w->keys, &req);
		if (rc == PROTO_NEED_MORE) {
			if (req.need) {
				if (rbuf_reserve(c, req.need, true) == 0)
					break;
				refuse_store(c, &req);
				continue;
			}
			if (rbuf_reserve(c, c->rend - c->rstart + 1, false) < 0) {
				/* A line longer than a block, and no budget
				   for it: memcached's answer, then close. */
				conn_emit_copy(c, OOM_READ, sizeof(OOM_READ) - 1);
				c->close_after_send = true;
			}
			break;
		}
		if (rc == PROTO_BAD) {
			c->rd_active = false;
			c->skip_line = req.skip_line;
			if (*req.error) /* -vv: a client's bad input */
				log_msg(LOG_DEBUG, "client fd %d: %.*s", c->fd,
					(int)strcspn(req.error, "\r\n"), req.error);
			/* memcached mutes the error of a noreply request. */
			if (!req.noreply && *req.error &&
			    conn_emit_copy(c, req.error, strlen(req.error)) < 0) {
				conn_close(c);
				break;
			}
			if (req.drop_key) {
				/* The old value must not outlive a refused set. */
				req.cmd = PROTO_CMD_DELETE;
				req.noreply = true;
				process_request(c, &req);
			}
			c->rstart += req.consumed;
			c->swallow = req.swallow;
			if (req.close)
				c->close_after_send = true;
			continue;
		}
		c->last_cmd = c->w->now;
		if (is_meta) {
			metaproc_request(c, &meta);
		} else if (proto_is_read(req.cmd)) {
			take_read(c, &req);
			continue;
		} else {
			process_request(c, &req);
		}
		c->rstart += req.consumed;
	}
	compact(c);
}

/*
 * Takes n bytes of a provided buffer: drops what is being swallowed
 * without copying it, appends the rest to the read buffer and parses as it
 * goes, so that the buffer grows only for a request that needs it to.
 * Bytes that come after the connection stopped taking requests (quit, a
 * fatal error) are dropped. 0, or -ENOMEM when a connection that is not
 * parsing (paused) has no budget left for what the kernel still delivered.
 */
static int take_input(struct conn *c, const char *p, size_t n)
{
	while (n && !c->closing && !c->close_after_send) {
		if (c->swallow && c->rstart == c->rend) {
			size_t k = n < c->swallow ? n : c->swallow;
			c->swallow -= k;
			p += k;
			n -= k;
			continue;
		}
		if (!c->rbuf) {
			/* Nothing held: parse the bytes where they are;
			   compact() keeps what is left in a lent buffer. */
			c->rbuf = (char *)p;
			c->rbuf_ext = true;
			c->rstart = 0;
			c->rcap = c->rend = n;
			parse_input(c);
			return 0;
		}
		if (c->rend == c->rcap) {
			size_t want = c->rend - c->rstart;
			want += want ? n : (n < CONNMEM_BLOCK ? n : CONNMEM_BLOCK);
			if (rbuf_reserve(c, want, false) < 0)
				return -ENOMEM;
		}
		size_t k = c->rcap - c->rend;
		k = k < n ? k : n;
		memcpy(c->rbuf + c->rend, p, k);
		c->rend += k;
		p += k;
		n -= k;
		parse_input(c);
	}
	return 0;
}

void conn_on_recv(struct conn *c, const struct io_uring_cqe *cqe)
{
	int res = cqe->res;
	int rc = 0;
	if (res > 0)
		c->w->counters.bytes_read += (uint64_t)res;
	if (!(cqe->flags & IORING_CQE_F_MORE)) {
		c->recv_armed = false;
		c->refs--;
	}
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		/* The provided buffer goes back before anything else. */
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		if (res > 0 && !c->closing)
			rc = take_input(c, worker_rbuf(c->w, bid), (size_t)res);
		worker_rbuf_put(c->w, bid);
	} else if (res > 0 && !c->closing) {
		c->rend += (size_t)res;
		parse_input(c);
	}
	if (c->closing) {
		maybe_free(c);
		return;
	}
	if (rc < 0) {
		/* A paused connection the kernel kept feeding, with no budget
		   left to hold it: a client that holds too much (the refusal
		   is counted by connmem). */
		conn_close(c);
		return;
	}
	if (res <= 0) {
		if (res < 0 && res != -ENOBUFS && res != -EINTR &&
		    res != -EAGAIN && res != -ECANCELED) {
			conn_close(c);
			return;
		}
		if (res == 0) {
			/* The client is done sending; answer what it sent
			   (conn_push closes once that is out). */
			c->peer_eof = true;
		}
		worker_mark_dirty(c->w, c);
		return;
	}
	if (c->closing)
		return;
	worker_mark_dirty(c->w, c);
	/* Read on while the answers go out: both leave in one submit. */
	arm_recv(c);
	stop_recv(c);
}

/* Drops segments that are fully sent (and empty ready ones). */
static void pop_sent(struct conn *c)
{
	struct conn_seg *s;
	while ((s = c->seg_head) && !s->pending && c->seg_sent >= s->len) {
		c->seg_sent -= s->len;
		c->seg_head = s->next;
		if (!c->seg_head)
			c->seg_tail = NULL;
	}
}

void conn_direct_done(struct conn *c, size_t sent)
{
	c->direct_out = false;
	if (c->closing)
		return;
	c->seg_sent += sent;
	pop_sent(c);
}

/* Sends the ready prefix; true if a send is now in flight. */
static bool start_send(struct conn *c)
{
	/* The ready prefix: its first piece, and whether there are more. */
	size_t skip = c->seg_sent;
	struct conn_seg *s = c->seg_head;
	for (; s && !s->pending && s->len <= skip; s = s->next)
		skip = 0;
	if (!s || s->pending)
		return false;
	/* A short ready prefix that is the start of one reply, with a
	   cross-shard answer of it behind, waits for that answer, so that a
	   multi-key reply leaves in one send rather than a piece per shard:
	   each piece costs a send here and a wake-up and a receive in the
	   client. A prefix that ends a reply goes at once: a pipelined
	   reply never waits for a later request's answer. */
	size_t run = s->len - skip;
	unsigned pieces = 1;
	bool whole = s->eor;
	const struct conn_seg *t = s->next;
	for (; t && !t->pending && !whole && run < CONN_HOLD_MAX && pieces < CONN_IOV_MAX;
	     t = t->next) {
		run += t->len;
		pieces++;
		whole = t->eor;
	}
	if (t && t->pending && !whole && run < CONN_HOLD_MAX && pieces < CONN_IOV_MAX)
		return false;
	struct conn_seg *more = s->next;
	while (more && !more->pending && !more->len)
		more = more->next;
	struct io_uring_sqe *sqe;
	struct conn_sendv *v = NULL;
	if (more && !more->pending)
		v = connmem_get(&c->w->mem, CONNMEM_SMALL, CONNMEM_MUST);
	if (!v) {
		/* The common case (or no memory for iovecs): a plain send
		   of the first piece skips copying in a msghdr. */
		sqe = worker_sqe(c->w);
		io_uring_prep_send(sqe, c->fd, s->ptr + skip, s->len - skip,
				   MSG_NOSIGNAL);
	} else {
		int n = 0;
		for (; s && !s->pending && n < CONN_IOV_MAX; s = s->next) {
			if (s->len > skip) {
				v->iov[n].iov_base = (void *)(s->ptr + skip);
				v->iov[n].iov_len = s->len - skip;
				n++;
			}
			skip = 0;
		}
		memset(&v->msg, 0, sizeof(v->msg));
		v->msg.msg_iov = v->iov;
		v->msg.msg_iovlen = (size_t)n;
		c->sendv = v;
		sqe = worker_sqe(c->w);
		io_uring_prep_sendmsg(sqe, c->fd, &v->msg, MSG_NOSIGNAL);
	}
	io_uring_sqe_set_data64(sqe, ud_pack(c, UD_SEND));
	c->w->counters.sends++;
	c->send_armed = true;
	c->send_ms = c->w->now_ms;
	c->refs++;
	return true;
}

/* Whether c, waiting for a direct line's batch, needs only that: the line
   is all it has queued, no input waits, and its receive is armed. Else its
   worker wants the batch back before it sleeps (enum xback). */
static bool direct_alone(const struct conn *c)
{
	return c->seg_tail == c->direct_tail &&
	       c->seg_tail->len == c->direct_tail_len && c->rstart == c->rend &&
	       c->recv_armed && !c->recv_cancelled && !c->peer_eof;
}

void conn_push(struct conn *c)
{
	/* Closed while it was on the dirty list: maybe_free() skipped it
	   then, and nothing else would free it before shutdown. */
	if (c->closing) {
		maybe_free(c);
		return;
	}
	while (!c->closing && !c->send_armed && !c->direct_out) {
		pop_sent(c);
		if (start_send(c))
			return;
		if (c->seg_head || c->inflight)
			return; /* waiting for a cross-shard answer */
		arena_reset(&c->arena);
		arena_reset(&c->out);
		if (c->close_after_send) {
			conn_close(c);
			return;
		}
		if (c->rstart != c->rend || c->dump_active) {
			/* Requests read while paused, or a partial one, or
			   the next round of a metadump. */
			parse_input(c);
			if (c->seg_head || c->inflight)
				continue;
		}
		/* No more input will come (the client's EOF, or the daemon
		   is stopping) and every request read has been answered. */
		if (c->peer_eof) {
			conn_close(c);
			return;
		}
		arm_recv(c);
		return;
	}
	if (c->direct_out && !c->closing && !direct_alone(c))
		c->w->want_back = true;
}

void conn_on_send(struct conn *c, int res)
{
	c->send_armed = false;
	c->refs--;
	connmem_put(&c->w->mem, c->sendv, CONNMEM_SMALL);
	c->sendv = NULL;
	if (c->closing) {
		maybe_free(c);
		return;
	}
	if (res < 0) {
		conn_close(c);
		return;
	}
	c->w->counters.bytes_written += (uint64_t)res;
	c->seg_sent += (size_t)res;
	pop_sent(c);
	conn_push(c);
}

/* ---- segments --------------------------------------------------------- */

/* A new segment at the queue's end. The first of an empty queue is seg0:
   nothing points at a segment once it has left the queue (a pending one
   never leaves before it is filled), so seg0 is free whenever the queue is
   empty, and a request answered alone lends no arena chunk for it. */
static struct conn_seg *seg_append(struct conn *c)
{
	struct conn_seg *s = c->seg_head ? arena_alloc(&c->arena, sizeof(*s))
					 : &c->seg0;
	if (!s)
		return NULL;
	memset(s, 0, sizeof(*s));
	if (c->seg_tail)
		c->seg_tail->next = s;
	else
		c->seg_head = s;
	c->seg_tail = s;
	return s;
}

int conn_emit(struct conn *c, const char *p, size_t len)
{
	struct conn_seg *t = c->seg_tail;
	if (t && !t->pending && t->ptr + t->len == p &&
	    (uint64_t)t->len + len <= UINT32_MAX) {
		t->len += (uint32_t)len;
		return 0;
	}
	struct conn_seg *s = seg_append(c);
	if (!s)
		return -ENOMEM;
	s->ptr = p;
	s->len = (uint32_t)len;
	return 0;
}

int conn_emit_copy(struct conn *c, const char *s, size_t len)
{
	char *p = arena_copy(&c->out, s, len);
	return p ? conn_emit(c, p, len) : -ENOMEM;
}

struct conn_seg *conn_emit_pending(struct conn *c)
{
	struct conn_seg *s = seg_append(c);
	if (s)
		s->pending = true;
	return s;
}

int conn_fill(struct conn *c, struct conn_seg *seg, const char *p, size_t len)
{
	static const char oom[] = "SERVER_ERROR out of memory writing get response\r\n";
	seg->pending = false;
	seg->ptr = len ? arena_copy(&c->out, p, len) : NULL;
	seg->len = seg->ptr ? (uint32_t)len : 0;
	if (len && !seg->ptr) {
		/* The arena is full: the bound on a client's memory holds. */
		seg->ptr = oom;
		seg->len = sizeof(oom) - 1;
		return -ENOMEM;
	}
	return 0;
}
