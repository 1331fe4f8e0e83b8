/*
 * conn.c - a connection's buffers, parsing loop and socket I/O; see conn.h.
 *
 * At most one receive and one send are in flight per connection. The
 * receive is multishot over the worker's provided buffers where the kernel
 * has them (else single-shot into the read buffer): each completion's bytes
 * are appended to the read buffer and the provided buffer goes back at once;
 * every complete request in the read buffer is parsed and processed at once;
 * what is left (a partial request) moves to the front. A connection that
 * must stop reading (paused, quitting) cancels its multishot receive.
 * Output is a queue of segments over the output arena. After each loop pass
 * the worker calls conn_push() on every connection that produced output,
 * which sends the ready prefix with one send (a sendmsg when it is more
 * than one piece). When the queue is empty and no cross-shard request is
 * out, both arenas are reset in one step.
 */
#include "net/conn.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/process.h"
#include "net/proto.h"
#include "net/udata.h"
#include "net/worker.h"

#define RBUF_INIT 8192
#define ARENA_CHUNK 4096
#define OUT_CHUNK 16384

static void parse_input(struct conn *c);

static size_t arena_soft_limit(const struct conn *c)
{
	return c->w->group->cfg->conn_arena_max / 2;
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

struct conn *conn_create(struct worker *w, int fd)
{
	const struct config *cfg = w->group->cfg;
	struct conn *c = heap_zalloc(w->heap, sizeof(*c));
	char *rbuf = heap_alloc(w->heap, RBUF_INIT);
	if (!c || !rbuf) {
		heap_free(c);
		heap_free(rbuf);
		close(fd);
		return NULL;
	}
	c->w = w;
	c->fd = fd;
	c->rbuf = rbuf;
	c->rcap = RBUF_INIT;
	arena_init(&c->arena, w->heap, ARENA_CHUNK, cfg->conn_arena_max);
	/* Headroom for the answers of the cross-shard reads in flight; it
	   is only allocated when such answers are large. */
	size_t room = CONN_INFLIGHT_MAX * (cfg->item_max + PROTO_VALUE_LINE_MAX + 2);
	arena_init(&c->out, w->heap, OUT_CHUNK, cfg->conn_arena_max + room);
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
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	close(c->fd);
	arena_deinit(&c->arena);
	arena_deinit(&c->out);
	heap_free(c->rbuf);
	heap_free(c);
}

/* Frees a closing connection once nothing refers to it any more. */
static void maybe_free(struct conn *c)
{
	if (c->closing && c->refs == 0 && !c->dirty)
		conn_destroy(c);
}

void conn_close(struct conn *c)
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

void conn_unref(struct conn *c)
{
	c->refs--;
	maybe_free(c);
}

/* Whether the connection wants more input now. */
static bool wants_input(const struct conn *c)
{
	return !c->closing && !c->close_after_send && !c->peer_eof &&
	       !paused(c);
}

static void arm_recv(struct conn *c)
{
	struct worker *w = c->w;
	if (c->recv_armed || !wants_input(c) ||
	    (!w->rbufs && c->rend == c->rcap))
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

/* Grows the read buffer to hold at least `need` bytes from rstart. */
static int ensure_room(struct conn *c, size_t need)
{
	if (c->rstart) {
		memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
		c->rend -= c->rstart;
		c->rstart = 0;
	}
	if (need <= c->rcap)
		return 0;
	size_t cap = c->rcap;
	while (cap < need)
		cap *= 2;
	char *p = heap_realloc(c->w->heap, c->rbuf, cap);
	if (!p)
		return -ENOMEM;
	c->rbuf = p;
	c->rcap = cap;
	return 0;
}

/* After parsing: keep the partial request at the front, and give a large
   buffer back once it is empty. */
static void compact(struct conn *c)
{
	if (c->rstart == c->rend) {
		c->rstart = c->rend = 0;
		if (c->rcap > RBUF_INIT) {
			char *p = heap_alloc(c->w->heap, RBUF_INIT);
			if (p) {
				heap_free(c->rbuf);
				c->rbuf = p;
				c->rcap = RBUF_INIT;
			}
		}
	} else if (c->rend == c->rcap && c->rstart) {
		ensure_room(c, 0);
	}
}

static void parse_input(struct conn *c)
{
	const struct config *cfg = c->w->group->cfg;
	const struct proto_limits lim = {
		.line_max = cfg->line_max,
		.item_max = cfg->item_max,
		.keys_max = cfg->keys_max,
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
		if (c->rstart == c->rend || paused(c))
			break;
		struct proto_req req;
		enum proto_rc rc = proto_parse(c->rbuf + c->rstart,
					       c->rend - c->rstart, &lim,
					       c->w->keys, &req);
		if (rc == PROTO_NEED_MORE) {
			size_t need = req.need ? req.need : c->rend - c->rstart + 1;
			if (ensure_room(c, need) < 0)
				conn_close(c);
			break;
		}
		if (rc == PROTO_BAD) {
			/* memcached mutes the error of a noreply request. */
			if (!req.noreply &&
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
		process_request(c, &req);
		c->rstart += req.consumed;
	}
	compact(c);
}

/* Appends n received bytes to the read buffer. 0 or -ENOMEM. */
static int append_input(struct conn *c, const char *p, size_t n)
{
	if (c->rcap - c->rend < n &&
	    ensure_room(c, c->rend - c->rstart + n) < 0)
		return -ENOMEM;
	memcpy(c->rbuf + c->rend, p, n);
	c->rend += n;
	return 0;
}

void conn_on_recv(struct conn *c, const struct io_uring_cqe *cqe)
{
	int res = cqe->res;
	int rc = 0;
	if (!(cqe->flags & IORING_CQE_F_MORE)) {
		c->recv_armed = false;
		c->refs--;
	}
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		/* The provided buffer goes back before anything else. */
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		if (res > 0 && !c->closing)
			rc = append_input(c, worker_rbuf(c->w, bid), (size_t)res);
		worker_rbuf_put(c->w, bid);
	} else if (res > 0) {
		c->rend += (size_t)res;
	}
	if (c->closing) {
		maybe_free(c);
		return;
	}
	if (rc < 0) {
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
	parse_input(c);
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

/* Sends the ready prefix; true if a send is now in flight. */
static bool start_send(struct conn *c)
{
	int n = 0;
	size_t skip = c->seg_sent;
	for (struct conn_seg *s = c->seg_head; s && !s->pending && n < CONN_IOV_MAX;
	     s = s->next) {
		if (s->len > skip) {
			c->iov[n].iov_base = (void *)(s->ptr + skip);
			c->iov[n].iov_len = s->len - skip;
			n++;
		}
		skip = 0;
	}
	if (!n)
		return false;
	struct io_uring_sqe *sqe = worker_sqe(c->w);
	if (n == 1) {
		/* The common case; a plain send skips copying in a msghdr. */
		io_uring_prep_send(sqe, c->fd, c->iov[0].iov_base,
				   c->iov[0].iov_len, MSG_NOSIGNAL);
	} else {
		memset(&c->msg, 0, sizeof(c->msg));
		c->msg.msg_iov = c->iov;
		c->msg.msg_iovlen = (size_t)n;
		io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
	}
	io_uring_sqe_set_data64(sqe, ud_pack(c, UD_SEND));
	c->send_armed = true;
	c->refs++;
	return true;
}

void conn_push(struct conn *c)
{
	/* Closed while it was on the dirty list: maybe_free() skipped it
	   then, and nothing else would free it before shutdown. */
	if (c->closing) {
		maybe_free(c);
		return;
	}
	while (!c->closing && !c->send_armed) {
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
		if (c->rstart != c->rend) {
			/* Requests read while paused, or a partial one. */
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
}

void conn_on_send(struct conn *c, int res)
{
	c->send_armed = false;
	c->refs--;
	if (c->closing) {
		maybe_free(c);
		return;
	}
	if (res < 0) {
		conn_close(c);
		return;
	}
	c->seg_sent += (size_t)res;
	pop_sent(c);
	conn_push(c);
}

/* ---- segments --------------------------------------------------------- */

static struct conn_seg *seg_append(struct conn *c)
{
	struct conn_seg *s = arena_alloc(&c->arena, sizeof(*s));
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
