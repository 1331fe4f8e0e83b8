/*
 * worker.c - a worker thread's life and its io_uring loop; see worker.h.
 *
 * A loop pass: submit what is queued and wait (at most tick_ms) for one
 * completion; dispatch every completion there is; then the work that is
 * batched per pass - set the shard's clock, push the output of every
 * connection that produced some, hand each non-empty cross-shard batch to its
 * destination, and give the shard a bounded slice of background work.
 * Pushing output before handing over batches matters: a push can reset an
 * arena and parse buffered requests, which can add to the batches.
 *
 * The ring is set up with SINGLE_ISSUER and DEFER_TASKRUN where the kernel
 * has them: completions are then only produced while this thread waits in
 * io_uring_enter, which is when it wants them. MSG_RING submissions skip
 * their own completion unless they fail.
 *
 * Start-up and shutdown meet at one barrier each, so that no worker sends to
 * a ring that does not exist yet, and none frees memory another may still
 * write to (a cross-shard request lives in its home connection's arena).
 */
#include "net/worker.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "daemon/log.h"
#include "net/conn.h"
#include "net/process.h"
#include "net/udata.h"
#include "net/xmsg.h"

#define RING_ENTRIES 256
#define CQ_ENTRIES 4096 /* 64 KiB of ring per worker; overflow is kept by the kernel (NODROP) */
#define TICK_BUDGET 64
#define PROBE_PER_S 64
#define DRAIN_MS 800
#define RECLAIM_MS 100
#define ACCEPT_RETRY_MS 10 /* memcached's wait at its open-files limit */

struct io_uring_sqe *worker_sqe(struct worker *w)
{
	struct io_uring_sqe *sqe;
	while (!(sqe = io_uring_get_sqe(&w->ring)))
		io_uring_submit(&w->ring);
	return sqe;
}

void worker_rbuf_put(struct worker *w, unsigned bid)
{
	io_uring_buf_ring_add(w->rbufs, (void *)worker_rbuf(w, bid),
			      WORKER_RBUF_SIZE, (unsigned short)bid,
			      io_uring_buf_ring_mask(WORKER_RBUF_COUNT), 0);
	io_uring_buf_ring_advance(w->rbufs, 1);
}

void worker_mark_dirty(struct worker *w, struct conn *c)
{
	if (c->dirty || c->closing)
		return;
	c->dirty = true;
	c->dirty_next = w->dirty;
	w->dirty = c;
}

void worker_send_xreq(struct worker *w, uint32_t dst, struct xreq *x)
{
	xbatch_append(w->out[dst].building, x);
	w->counters.xreq_sent++;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t clock_us(void)
{
	struct timespec ts;
	clock_gettime(WORKER_CLOCK, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void set_clock(struct worker *w)
{
	struct timespec ts;
	w->now_us = clock_us();
	w->now_ms = (int64_t)(w->now_us / 1000);
	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	if (ts.tv_sec != w->now) {
		w->now = ts.tv_sec;
		shard_set_time(w->shard, w->now);
	}
}

/* ---- submissions ------------------------------------------------------ */

static void arm_accept(struct worker *w, struct listener *l)
{
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud_pack(l, UD_ACCEPT));
}

static void arm_wake(struct worker *w)
{
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_read(sqe, w->wake_fd, &w->wake_buf, sizeof(w->wake_buf), 0);
	io_uring_sqe_set_data64(sqe, ud_pack(w, UD_WAKE));
}

/*
 * After an accept ended with `res`: again at once, unless the process or the
 * machine is out of something a connection needs (file descriptors, memory),
 * when an accept fails as soon as it is armed. Then it is armed again
 * ACCEPT_RETRY_MS later, by a timeout whose completion comes back as
 * UD_ACCEPT with -ETIME, and counted as listen_disabled_num, as memcached
 * stops accepting for a while at its open-files limit (measured: armed again
 * at once, both workers of -t 2 spun at 100 % CPU until a client closed a
 * connection). A listener that is shut down is not armed again.
 */
static void rearm_accept(struct worker *w, struct listener *l, int res)
{
	static struct __kernel_timespec retry = { /* read only, by the kernel */
		.tv_nsec = ACCEPT_RETRY_MS * 1000000ll,
	};
	switch (-res) {
	case EMFILE:
	case ENFILE:
	case ENOBUFS:
	case ENOMEM: {
		struct io_uring_sqe *sqe = worker_sqe(w);
		io_uring_prep_timeout(sqe, &retry, 0, 0);
		io_uring_sqe_set_data64(sqe, ud_pack(l, UD_ACCEPT));
		w->counters.listen_disabled++;
		return;
	}
	case EINVAL:
	case EBADF:
		return;
	default:
		arm_accept(w, l);
	}
}

/* Hands batch b to worker `to`; its completion is seen only on failure. */
static void send_batch(struct worker *w, struct xbatch *b, uint32_t to)
{
	xbatch_publish(b);
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_msg_ring(sqe, w->group->workers[to]->ring.ring_fd, 0,
			       ud_pack(b, UD_MSG), 0);
	io_uring_sqe_set_data64(sqe, ud_pack(b, UD_MSG_SENT));
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

static void flush_outboxes(struct worker *w)
{
	for (uint32_t d = 0; d < w->group->nworkers; d++) {
		struct worker_outbox *ob = &w->out[d];
		if (d == w->id || ob->flying || !ob->building->count)
			continue;
		struct xbatch *b = ob->building;
		ob->building = ob->spare;
		ob->spare = NULL;
		ob->flying = b;
		ob->awaited = b->count > b->direct;
		atomic_store_explicit(&ob->back, XBACK_FLIGHT, memory_order_relaxed);
		send_batch(w, b, d);
	}
}

/* ---- lending (net/lend.h) --------------------------------------------- */

struct shard *worker_borrow(struct worker *w, const struct conn *c,
			    uint32_t dst)
{
	struct worker *o = w->group->workers[dst];
	if (c->inflight || !lend_try(&o->lend))
		return NULL;
	return o->shard;
}

void worker_give_back(struct worker *w, uint32_t dst)
{
	lend_return(&w->group->workers[dst]->lend);
}

/* Right after the wait: the shard back, waiting for a borrower that has it
   (net/lend.h), timed only then. */
static void take_shard_back(struct worker *w)
{
	if (lend_take(&w->lend))
		return;
	uint64_t t0 = clock_us();
	lend_wait(&w->lend);
	w->counters.lend_waits++;
	w->counters.lend_wait_us += clock_us() - t0;
}

/* ---- completions ------------------------------------------------------ */

/* A connection's fd becomes a connection of this worker, or is closed when
   it is draining or out of memory. */
static void adopt(struct worker *w, int fd)
{
	struct worker_group *g = w->group;
	if (w->draining) {
		close(fd);
		atomic_fetch_sub_explicit(&g->conns, 1, memory_order_relaxed);
		return;
	}
	if (!conn_create(w, fd)) {
		atomic_fetch_sub_explicit(&g->conns, 1, memory_order_relaxed);
		log_msg(LOG_WARN, "out of memory accepting a connection");
	}
}

/* Hands an accepted fd to worker `to` (fds are the process's, not the
   thread's); if the message cannot be delivered, UD_CONN comes back with
   res < 0 and this worker keeps the connection. */
static void hand_over(struct worker *w, int fd, uint32_t to)
{
	uint64_t ud = ((uint64_t)(unsigned)fd << 3) | UD_CONN;
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_msg_ring(sqe, w->group->workers[to]->ring.ring_fd,
			       (unsigned)fd, ud, 0);
	io_uring_sqe_set_data64(sqe, ud);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

/*
 * Connections go round robin over the workers, as memcached's dispatcher
 * deals them: whichever worker's accept the kernel completes gets a whole
 * burst of connects (measured: all 50 of rc-loadgen's on one worker at
 * -t 2, the other only answering cross-shard requests).
 */
static void on_accept(struct worker *w, struct listener *l,
		      const struct io_uring_cqe *cqe)
{
	struct worker_group *g = w->group;
	if (!(cqe->flags & IORING_CQE_F_MORE) && !w->draining)
		rearm_accept(w, l, cqe->res);
	if (cqe->res < 0) {
		if (!w->draining && cqe->res != -ETIME)
			log_msg(LOG_DEBUG, "accept: %s", strerror(-cqe->res));
		return;
	}
	int fd = cqe->res;
	if (w->draining) {
		close(fd);
		return;
	}
	if (atomic_fetch_add_explicit(&g->conns, 1, memory_order_relaxed) >=
	    g->cfg->max_conns) {
		static const char msg[] = "ERROR Too many open connections\r\n";
		atomic_fetch_sub_explicit(&g->conns, 1, memory_order_relaxed);
		w->counters.rejected_connections++;
		(void)!send(fd, msg, sizeof(msg) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
		close(fd);
		return;
	}
	if (!l->is_unix) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	uint32_t home = atomic_fetch_add_explicit(&g->next_home, 1,
						  memory_order_relaxed) % g->nworkers;
	if (home == w->id)
		adopt(w, fd);
	else
		hand_over(w, fd, home);
}

/* Home side: batch b is back, answered. */
static void batch_back(struct worker *w, struct xbatch *b)
{
	process_complete(w, b);
	xbatch_clear(b);
	struct worker_outbox *ob = &w->out[b->dst];
	ob->spare = b;
	ob->flying = NULL;
}

/* Destination side: parks a batch that no client waits for, unless its
   home wants it back (enum xback); false: hand it back by message. */
static bool park(struct worker *w, struct xbatch *b)
{
	struct worker_outbox *ob = &w->group->workers[b->src]->out[w->id];
	unsigned flight = XBACK_FLIGHT;
	if (!atomic_compare_exchange_strong_explicit(&ob->back, &flight,
			XBACK_PARKED, memory_order_release, memory_order_relaxed))
		return false;
	w->counters.parked++;
	return true;
}

static void on_msg(struct worker *w, struct xbatch *b)
{
	xbatch_acquire(b);
	if (b->dst == w->id) {
		w->counters.xreq_recv += b->count;
		if (!process_execute(w, b) || !park(w, b))
			send_batch(w, b, b->src);
		return;
	}
	batch_back(w, b);
}

/* Takes back the batches their destinations parked. */
static void take_parked(struct worker *w)
{
	for (uint32_t d = 0; d < w->group->nworkers; d++) {
		struct worker_outbox *ob = &w->out[d];
		if (ob->flying &&
		    atomic_load_explicit(&ob->back, memory_order_acquire) == XBACK_PARKED)
			batch_back(w, ob->flying);
	}
}

/* Whether a batch in flight may come back parked: then the wait ends
   within XBACK_TAKE_MS, so that what it holds is not held longer. */
static bool may_park(const struct worker *w)
{
	for (uint32_t d = 0; d < w->group->nworkers; d++) {
		const struct worker_outbox *ob = &w->out[d];
		if (ob->flying && !ob->awaited)
			return true;
	}
	return false;
}

/*
 * Before the loop sleeps: marks wanted every batch in flight that this
 * worker needs back to go on - one whose destination has requests queued
 * behind it, or any, when a connection waits on a direct line's batch or
 * the worker is draining. True if one of them was parked meanwhile: the
 * next pass takes it, with no sleep.
 */
static bool want_back(struct worker *w)
{
	bool any = w->want_back || w->draining, parked = false;
	w->want_back = false;
	for (uint32_t d = 0; d < w->group->nworkers; d++) {
		struct worker_outbox *ob = &w->out[d];
		if (!ob->flying || (!any && !ob->building->count))
			continue;
		unsigned flight = XBACK_FLIGHT;
		if (!atomic_compare_exchange_strong_explicit(&ob->back, &flight,
				XBACK_WANTED, memory_order_relaxed, memory_order_relaxed))
			parked |= flight == XBACK_PARKED;
	}
	return parked;
}

static void begin_drain(struct worker *w)
{
	w->draining = true;
	for (struct conn *c = w->conns; c; c = c->next) {
		if (c->closing)
			continue;
		/* Finish what was asked, read nothing more: like the
		   client's EOF, so that requests already read but not yet
		   parsed (a connection paused by its bound) are answered
		   too; close_after_send would drop them. */
		shutdown(c->fd, SHUT_RD);
		c->peer_eof = true;
		worker_mark_dirty(w, c);
	}
}

static void dispatch(struct worker *w, const struct io_uring_cqe *cqe)
{
	void *p = ud_ptr(cqe->user_data);
	switch (ud_tag(cqe->user_data)) {
	case UD_ACCEPT:
		on_accept(w, p, cqe);
		break;
	case UD_RECV:
		conn_on_recv(p, cqe);
		break;
	case UD_SEND:
		conn_on_send(p, cqe->res);
		break;
	case UD_MSG:
		on_msg(w, p);
		break;
	case UD_MSG_SENT: {
		/* A hand-over failed (the target's ring was full): again. */
		struct xbatch *b = p;
		log_msg(LOG_WARN, "msg_ring: %s; retrying", strerror(-cqe->res));
		send_batch(w, b, b->src == w->id ? b->dst : b->src);
		break;
	}
	case UD_CONN:
		if (cqe->res < 0)
			log_msg(LOG_DEBUG, "connection hand-off: %s; kept",
				strerror(-cqe->res));
		adopt(w, (int)(cqe->user_data >> 3));
		break;
	case UD_WAKE:
		if (atomic_load(&w->group->stopping)) {
			if (!w->draining)
				begin_drain(w);
		} else {
			arm_wake(w);
		}
		break;
	case UD_IGNORE:
		break;
	}
}

/* ---- the loop --------------------------------------------------------- */

/* Keys that the gets and sets of a receive completion name whose items start
   loading (process_prefetch), `budget` at most. */
static unsigned prefetch_cqe(struct worker *w, const struct io_uring_cqe *cqe,
			     unsigned budget)
{
	if (ud_tag(cqe->user_data) != UD_RECV || cqe->res <= 0)
		return 0;
	const struct conn *c = ud_ptr(cqe->user_data);
	if (c->closing)
		return 0;
	const char *p = cqe->flags & IORING_CQE_F_BUFFER ?
		worker_rbuf(w, cqe->flags >> IORING_CQE_BUFFER_SHIFT) :
		c->rbuf + c->rend;
	return process_prefetch(w, p, (size_t)cqe->res, budget);
}

static_assert(WORKER_PREFETCH_AHEAD <= UCHAR_MAX, "dispatch_all counts in bytes");

/*
 * Dispatches every completion there is. The gets and sets in the
 * completions ahead start loading their items while the current one runs,
 * about WORKER_PREFETCH_AHEAD keys ahead, so that the cache misses of a pass
 * overlap instead of following one another; a completion's prefetches are
 * counted off when it is dispatched. What a completion points at stays
 * valid until it is dispatched: a receive holds a reference on its
 * connection, and its provided buffer goes back in its dispatch.
 */
static void dispatch_all(struct worker *w)
{
	struct io_uring_cqe *cqe[WORKER_CQE_BATCH];
	unsigned char keys[WORKER_CQE_BATCH];
	unsigned n;
	while ((n = io_uring_peek_batch_cqe(&w->ring, cqe, WORKER_CQE_BATCH))) {
		unsigned ahead = 0, pf = 0;
		w->lend_busy = !lend_worth(n);
		for (unsigned i = 0; i < n; i++) {
			for (; pf < n && ahead < WORKER_PREFETCH_AHEAD; pf++) {
				keys[pf] = (unsigned char)prefetch_cqe(w, cqe[pf],
					WORKER_PREFETCH_AHEAD);
				ahead += keys[pf];
			}
			ahead -= keys[i];
			dispatch(w, cqe[i]);
		}
		io_uring_cq_advance(&w->ring, n);
	}
}

static void push_dirty(struct worker *w)
{
	struct conn *c;
	while ((c = w->dirty)) {
		w->dirty = c->dirty_next;
		c->dirty = false;
		conn_push(c);
	}
}

/*
 * Some worker's allocation was refused since the last look: the budget is
 * exhausted, so close this worker's slow readers that hold more than their
 * share. At most every RECLAIM_MS, as it walks every connection.
 */
static void maybe_reclaim(struct worker *w)
{
	unsigned p = atomic_load_explicit(&w->group->mem.pressure,
					  memory_order_relaxed);
	if (p == w->pressure_seen || w->now_ms - w->reclaim_ms < RECLAIM_MS)
		return;
	w->pressure_seen = p;
	w->reclaim_ms = w->now_ms;
	conn_reclaim(w);
}

/* Copies the counters for the metrics thread, unless it is reading them
   (then next pass): a worker never waits for it. */
static void publish(struct worker *w)
{
	w->pub_due = true;
	if (w->now_ms - w->pub_ms < WORKER_PUB_MS)
		return;
	struct worker_pub *p = &w->pub;
	if (pthread_mutex_trylock(&p->lock) != 0)
		return;
	w->pub_ms = w->now_ms;
	w->pub_due = false;
	shard_stats(w->shard, &p->shard);
	p->worker = w->counters;
	p->worker.conn_buffer_bytes = w->mem.held;
	p->worker.conn_buffer_refused = w->mem.refused;
	p->worker.conn_buffer_pooled = connmem_pooled(&w->mem);
	p->lat = w->lat;
	p->valid = true;
	pthread_mutex_unlock(&p->lock);
}

bool worker_pub_read(struct worker *w, struct worker_pub *out)
{
	struct worker_pub *p = &w->pub;
	pthread_mutex_lock(&p->lock);
	bool valid = p->valid;
	if (valid) {
		out->shard = p->shard;
		out->worker = p->worker;
		out->lat = p->lat;
	}
	pthread_mutex_unlock(&p->lock);
	out->valid = valid;
	return valid;
}

/* Once a second: up to PROBE_PER_S connections quiet for a second or more
   are checked for a peer that is gone (conn_probe), round robin over the
   list, so a dead peer is found within conns / PROBE_PER_S seconds. */
static void probe_idle(struct worker *w)
{
	uint64_t n = w->counters.curr_connections;
	for (uint64_t i = 0; i < n && i < PROBE_PER_S && w->conns; i++) {
		struct conn *c = w->probe ? w->probe : w->conns;
		w->probe = c->next;
		if (w->now - c->last_cmd >= 1)
			conn_probe(c);
	}
}

static void after_pass(struct worker *w)
{
	take_parked(w);
	maybe_reclaim(w);
	if (w->now_ms - w->mem_tick_ms >= 1000) {
		w->mem_tick_ms = w->now_ms;
		connmem_tick(&w->mem);
		probe_idle(w);
	}
	push_dirty(w);
	set_clock(w); /* the end of the pass: its replies are queued */
	worker_lat_flush(w);
	w->counters.loop_turns++;
	publish(w);
	flush_outboxes(w);
	shard_tick(w->shard, TICK_BUDGET);
	atomic_fetch_add_explicit(&w->heartbeat, 1, memory_order_relaxed);
#ifdef RINGCACHE_TEST_HOOKS
	/* Test builds: -o watchdog_stall=N stalls worker 0 after N seconds so
	   that the watchdog test can see WATCHDOG=1 stop. */
	unsigned stall = w->group->cfg->watchdog_stall;
	if (stall && w->id == 0 && w->now - w->group->started >= stall)
		while (!atomic_load(&w->group->stopping))
			usleep(10000);
#endif
}

/*
 * Before this worker sleeps while a reply waits on a batch in flight: it
 * gives up its CPU up to WORKER_POLL_YIELDS times, looking for completions
 * after each, and sleeps only if none came. With more workers than CPUs the
 * thread the kernel runs instead is often the destination, whose hand-back
 * then needs no wake-up of a sleeping thread (on a VM, an idle vCPU's halt
 * and the IPI that ends it); with a CPU to spare sched_yield returns at
 * once, so the poll is a few system calls. A poll that finds nothing makes
 * the worker skip the next 1, 2, 4 ... WORKER_POLL_BACKOFF_MAX awaited
 * waits, so it stops polling where it does not pay and comes back to it.
 * Direct lines are not waited for: their owner sends the reply.
 */
static void poll_awaited(struct worker *w)
{
	bool awaited = false;
	for (uint32_t d = 0; d < w->group->nworkers && !awaited; d++)
		awaited = w->out[d].flying && w->out[d].awaited;
	if (!awaited)
		return;
	if (w->poll_skip) {
		w->poll_skip--;
		return;
	}
	io_uring_submit_and_get_events(&w->ring);
	for (unsigned y = 0; !io_uring_cq_ready(&w->ring); y++) {
		if (y == WORKER_POLL_YIELDS) {
			w->poll_backoff = w->poll_backoff ?
				2 * w->poll_backoff : 1;
			if (w->poll_backoff > WORKER_POLL_BACKOFF_MAX)
				w->poll_backoff = WORKER_POLL_BACKOFF_MAX;
			w->poll_skip = w->poll_backoff;
			return;
		}
		sched_yield();
		w->counters.poll_yields++;
		io_uring_get_events(&w->ring);
	}
	w->counters.poll_hits++;
	w->poll_backoff = 0;
}

static void run_loop(struct worker *w)
{
	struct worker_group *g = w->group;
	int64_t deadline = 0;
	for (;;) {
		/* a rebuilding index holds two arrays, a compaction a segment
		   out of its queue: finish them while idle */
		unsigned ms = w->draining ? 10 :
			      shard_busy(w->shard) ? 1 : g->tick_ms;
		/* what this pass changed is published within WORKER_PUB_MS */
		if (w->pub_due && ms > WORKER_PUB_MS)
			ms = WORKER_PUB_MS;
		if (ms > XBACK_TAKE_MS && may_park(w))
			ms = XBACK_TAKE_MS;
		struct __kernel_timespec ts = {
			.tv_sec = ms / 1000,
			.tv_nsec = (long long)(ms % 1000) * 1000000,
		};
		poll_awaited(w);
		struct io_uring_cqe *cqe;
		bool lend = !g->cfg->no_lend && !w->draining;
		if (want_back(w) || io_uring_cq_ready(&w->ring)) {
			io_uring_submit(&w->ring);
		} else {
			if (lend)
				lend_open(&w->lend);
			io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
			if (lend)
				take_shard_back(w);
		}
		set_clock(w); /* the wait may have lasted a tick: requests see
				 this moment, not the last pass's */
		w->pass_us = w->now_us;
		take_parked(w); /* a connection's next line may go direct */
		dispatch_all(w);
		after_pass(w);
		if (!w->draining)
			continue;
		if (!deadline)
			deadline = now_ms() + DRAIN_MS;
		if (!w->quiet && !w->conns) {
			w->quiet = true;
			atomic_fetch_add(&g->quiet, 1);
		}
		if (atomic_load(&g->quiet) == g->nworkers || now_ms() > deadline)
			break;
	}
}

/* ---- set-up and tear-down --------------------------------------------- */

static int ring_init(struct worker *w)
{
	static const unsigned flag_sets[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	int rc = -EINVAL;
	for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
		struct io_uring_params p = { 0 };
		p.flags = flag_sets[i] | IORING_SETUP_CQSIZE;
		p.cq_entries = CQ_ENTRIES;
		rc = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &p);
		if (rc == 0)
			return 0;
	}
	return rc;
}

/*
 * Registers the provided-buffer ring for multishot receives. Failure is not
 * an error: an older kernel gets single-shot receives (w->rbufs stays NULL).
 */
static void rbufs_init(struct worker *w)
{
	size_t ring_bytes = WORKER_RBUF_COUNT * sizeof(struct io_uring_buf);
	size_t mem_bytes = (size_t)WORKER_RBUF_COUNT * WORKER_RBUF_SIZE;
	void *ring = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void *mem = mmap(NULL, mem_bytes, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct io_uring_buf_reg reg = {
		.ring_addr = (uint64_t)(uintptr_t)ring,
		.ring_entries = WORKER_RBUF_COUNT,
		.bgid = WORKER_RBUF_GROUP,
	};
	if (ring == MAP_FAILED || mem == MAP_FAILED ||
	    io_uring_register_buf_ring(&w->ring, &reg, 0) < 0) {
		if (ring != MAP_FAILED)
			munmap(ring, ring_bytes);
		if (mem != MAP_FAILED)
			munmap(mem, mem_bytes);
		log_msg(LOG_INFO, "worker %u: no provided-buffer ring; "
			"single-shot receives", w->id);
		return;
	}
	w->rbufs = ring;
	w->rbuf_mem = mem;
	io_uring_buf_ring_init(w->rbufs);
	for (unsigned i = 0; i < WORKER_RBUF_COUNT; i++)
		worker_rbuf_put(w, i);
}

static void rbufs_deinit(struct worker *w)
{
	if (!w->rbufs)
		return;
	munmap(w->rbufs, WORKER_RBUF_COUNT * sizeof(struct io_uring_buf));
	munmap(w->rbuf_mem, (size_t)WORKER_RBUF_COUNT * WORKER_RBUF_SIZE);
	w->rbufs = NULL;
}

static int worker_init(struct worker *w)
{
	struct worker_group *g = w->group;
	const struct config *cfg = g->cfg;
	w->heap = heap_create();
	if (!w->heap)
		return -ENOMEM;
	connmem_init(&w->mem, w->heap, &g->mem, g->nworkers);
	struct shard_config sc = {
		.id = w->id,
		.count = g->nworkers,
		.mem_limit = cfg->mem_limit / g->nworkers,
		.item_max = cfg->item_max,
		.no_evict = cfg->no_evict,
	};
	w->shard = shard_create(&sc);
	w->keys = heap_zalloc(w->heap, PROTO_KEYS_CHUNK * sizeof(*w->keys));
	w->out = heap_zalloc(w->heap, (g->nworkers) * sizeof(*w->out));
	if (!w->shard || !w->keys || !w->out)
		return -ENOMEM;
	for (uint32_t d = 0; d < g->nworkers; d++) {
		if (d == w->id)
			continue;
		struct worker_outbox *ob = &w->out[d];
		ob->own[0] = ob->building = xbatch_create(w->heap, w->id, d);
		ob->own[1] = ob->spare = xbatch_create(w->heap, w->id, d);
		if (!ob->building || !ob->spare)
			return -ENOMEM;
	}
	w->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (w->wake_fd < 0)
		return -errno;
	int rc = ring_init(w);
	if (rc < 0)
		return rc;
	w->ring_ready = true;
	rbufs_init(w);
	set_clock(w);
	for (uint32_t i = 0; i < g->nlisteners; i++)
		arm_accept(w, &g->listeners[i]);
	arm_wake(w);
	return 0;
}

static void worker_deinit(struct worker *w)
{
	if (w->ring_ready)
		io_uring_queue_exit(&w->ring);
	rbufs_deinit(w);
	/* Whatever is still open after the drain deadline goes now; no other
	   thread refers to it any more (see the second barrier). */
	while (w->conns)
		conn_destroy(w->conns);
	connmem_deinit(&w->mem);
	if (w->out) {
		for (uint32_t d = 0; d < w->group->nworkers; d++) {
			xbatch_destroy(w->out[d].own[0]);
			xbatch_destroy(w->out[d].own[1]);
		}
		heap_free(w->out);
	}
	heap_free(w->keys);
	if (w->shard)
		shard_destroy(w->shard);
	if (w->heap)
		heap_destroy(w->heap);
	if (w->wake_fd >= 0)
		close(w->wake_fd);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct worker_group *g = w->group;
	int rc = worker_init(w);
	if (rc < 0) {
		log_msg(LOG_ERR, "worker %u: %s", w->id, strerror(-rc));
		atomic_fetch_add(&g->failed, 1);
	} else {
		atomic_fetch_add(&g->ready, 1);
	}
	pthread_barrier_wait(&g->barrier);
	if (atomic_load(&g->failed) == 0)
		run_loop(w);
	/* After this barrier no thread touches another's memory again. */
	pthread_barrier_wait(&g->barrier);
	worker_deinit(w);
	return NULL;
}

int worker_start_all(struct worker_group *g)
{
	uint32_t n = g->nworkers;
	g->workers = calloc(n, sizeof(*g->workers));
	if (!g->workers)
		return -ENOMEM;
	pthread_barrier_init(&g->barrier, NULL, n + 1);
	connmem_budget_init(&g->mem, g->cfg->conn_mem_max);
	if (detail_init(&g->detail, g->cfg->prefix_delim) < 0)
		return -ENOMEM;
	atomic_init(&g->mem_limit, g->cfg->mem_limit);
	for (uint32_t i = 0; i < n; i++) {
		struct worker *w = calloc(1, sizeof(*w));
		if (w) {
			w->id = i;
			w->group = g;
			w->wake_fd = -1;
			atomic_init(&w->heartbeat, 0);
			lend_init(&w->lend);
			pthread_mutex_init(&w->pub.lock, NULL);
			g->workers[i] = w;
		}
		if (!w || pthread_create(&w->thread, NULL, worker_main, w) != 0) {
			/* The started threads wait at a barrier for all n; there is
			   no clean way back from here. */
			log_msg(LOG_ERR, "cannot start worker thread %u", i);
			exit(71);
		}
	}
	pthread_barrier_wait(&g->barrier);
	if (atomic_load(&g->failed) == 0)
		return 0;
	worker_stop_all(g);
	return -ENOMEM;
}

void worker_stop_all(struct worker_group *g)
{
	atomic_store(&g->stopping, true);
	uint64_t one = 1;
	for (uint32_t i = 0; i < g->nworkers; i++)
		if (g->workers[i] && g->workers[i]->wake_fd >= 0)
			(void)!write(g->workers[i]->wake_fd, &one, sizeof(one));
	pthread_barrier_wait(&g->barrier);
	for (uint32_t i = 0; i < g->nworkers; i++) {
		if (!g->workers[i])
			continue;
		pthread_join(g->workers[i]->thread, NULL);
		pthread_mutex_destroy(&g->workers[i]->pub.lock);
		free(g->workers[i]);
	}
	free(g->workers);
	g->workers = NULL;
	pthread_barrier_destroy(&g->barrier);
	detail_deinit(&g->detail);
}
