/*
 * worker.h - one worker thread: its io_uring loop, its shard, its
 * connections, and its mailboxes to the other workers.
 *
 * Worker i runs one loop on one ring and owns shard i: it creates the shard
 * (and so the shard's heap) on its own thread, and only it ever calls shard_*
 * on it. Connections accepted by worker i live on worker i (their home) for
 * their whole life. A request for a key of shard j != i is appended to the
 * batch this worker is building for j; after each pass over the completion
 * queue, every non-empty batch is handed to j's ring as one IORING_OP_MSG_RING
 * and j sends it back, answered, the same way (or parks it for i to take,
 * when no client waits for it: enum xback). At most one batch per
 * (source, destination) pair is in flight, so the requests one worker sends
 * another are executed in the order they were made. The one exception to
 * "only worker j touches shard j": while j sleeps it lends its shard, and
 * i may serve a get of j's, or a set that replaces one of j's items, from
 * it itself (enum lend); a busy i hands a multi-get's keys over (lend_worth).
 *
 * Ownership: struct worker and its connections' memory come from the
 * worker's own mimalloc heap (`heap`), created on the worker's thread;
 * everything is freed when the thread ends. The main thread may read only
 * `heartbeat` (atomically) and call worker_stop(); everything else belongs to
 * the worker's thread.
 *
 * Receives: where the kernel has provided-buffer rings, each worker registers
 * one (WORKER_RBUF_COUNT buffers of WORKER_RBUF_SIZE bytes, mmap'd by the
 * worker's set-up) and every connection keeps one multishot receive armed
 * on it, so a read costs no re-arm. A buffer belongs to the worker from its
 * completion until worker_rbuf_put() gives it back, which the connection
 * does in the same completion handler after copying the bytes out; so no
 * buffer is held across loop passes. Without such rings, receives are
 * single-shot into the connection's read buffer.
 *
 * Errors: negative errno.
 */
#ifndef RINGCACHE_WORKER_H
#define RINGCACHE_WORKER_H

#include <liburing.h>
#include "shard/heap.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "daemon/config.h"
#include "net/connmem.h"
#include "net/detail.h"
#include "net/latency.h"
#include "net/lend.h"
#include "net/proto.h"
#include "shard/shard.h"

struct conn;
struct xbatch;

/* A listening socket; shared by all workers, each arms its own accept. */
struct listener {
	int fd;
	bool is_unix;
};

/* Per-worker counters that are not the shard's; owned by the worker. */
struct worker_counters {
	uint64_t curr_connections;
	uint64_t total_connections;
	uint64_t rejected_connections;
	uint64_t listen_disabled;     /* accepts paused for a shortage of fds or
					memory (worker.c, rearm_accept) */
	uint64_t cmd_flush;
	uint64_t conn_slow_closed;   /* slow readers closed for the budget */
	uint64_t bytes_read;         /* received from clients */
	uint64_t bytes_written;      /* sent to clients */
	uint64_t sends;              /* sends to clients put on the ring
					(net/conn.c) */
	/* Filled from `mem` when stats asks. */
	uint64_t conn_buffer_bytes;  /* connection memory lent now */
	uint64_t conn_buffer_refused;/* allocations the budget refused */
	uint64_t conn_buffer_pooled; /* free blocks kept for reuse */
	/* stats shards */
	uint64_t xreq_sent;          /* requests handed to other shards */
	uint64_t xreq_recv;          /* requests executed for other workers */
	uint64_t direct_replies;     /* direct lines this worker sent on the
					client's socket (net/process.c) */
	uint64_t direct_partial;     /* ... that the socket took only in part
					(the home sent the rest) */
	uint64_t loop_turns;         /* passes of the loop */
	uint64_t poll_yields;        /* sched_yield calls while an awaited
					batch was out (worker.c) */
	uint64_t poll_hits;          /* yield polls that found a completion */
	uint64_t borrowed;           /* gets and sets it served from another
					worker's lent shard (worker_borrow) */
	uint64_t lend_waits;         /* wake-ups that found its shard lent out
					(net/lend.h) */
	uint64_t lend_wait_us;       /* time those wake-ups waited for it */
	uint64_t parked;             /* batches of direct lines it answered
					and parked for their home (enum xback)
					instead of waking it */
};

/* A shard's counters as its worker last published them, for the metrics
   thread (daemon/metrics.h), which must never call shard_* or wait on a
   worker. The worker copies its counters and latency histograms in at most
   every WORKER_PUB_MS, under pthread_mutex_trylock: if the reader holds
   the lock the worker skips this turn instead of waiting. The reader takes
   the lock (it may wait a copy's time). `valid` is false until the first
   copy. Lives inside struct worker, so it is valid from worker_start_all to
   worker_stop_all. */
#define WORKER_PUB_MS 100
struct worker_pub {
	pthread_mutex_t lock;
	bool valid;
	struct shard_stats shard;
	struct worker_counters worker;
	struct lat_set lat;
};

/* Shared by every worker of the process; written before they start. */
struct worker_group {
	const struct config *cfg;
	struct listener *listeners;
	uint32_t nlisteners;
	uint32_t nworkers;
	struct worker **workers;
	int64_t started;             /* Unix time the process started */
	atomic_uint ready;           /* workers whose loop has started */
	atomic_uint failed;          /* workers that could not start */
	atomic_uint conns;           /* open connections, for -c */
	atomic_uint next_home;       /* round robin of accepted connections */
	struct connmem_budget mem;   /* -o conn_mem_max over all workers */
	atomic_bool stopping;        /* set by worker_stop_all() */
	atomic_uint quiet;           /* workers with nothing left in flight */
	unsigned tick_ms;            /* longest wait of a loop pass */
	pthread_barrier_t barrier;   /* start-up and shutdown rendezvous */
	struct detail detail;        /* stats detail (net/detail.h) */
	atomic_size_t mem_limit;     /* -m now: cache_memlimit changes it */
};

/*
 * How the batch in flight comes back. A batch of direct lines that the
 * destination sent whole holds nothing a client waits for, only the home's
 * bookkeeping (references, arenas, latency records): the destination parks
 * it (XBACK_FLIGHT -> XBACK_PARKED) instead of waking the home, which takes
 * it at its next pass: a home with such a batch out waits at most
 * XBACK_TAKE_MS, so what the batch holds (connections' arena blocks) is
 * given back within that even if nothing else wakes it. A home that needs it
 * back (a request queued behind it, a connection blocked on a direct line)
 * marks it XBACK_WANTED before it sleeps; the destination then hands it back
 * by message, as every other batch. Written by both threads, with
 * compare-and-swap only; the park releases the batch, the home's load of
 * XBACK_PARKED acquires it.
 */
enum xback { XBACK_FLIGHT, XBACK_WANTED, XBACK_PARKED };
#define XBACK_TAKE_MS 10

/* One destination's mailbox in a source worker. */
struct worker_outbox {
	struct xbatch *building;     /* collecting requests this iteration */
	struct xbatch *spare;        /* the other batch, when not in flight */
	struct xbatch *own[2];       /* both batches, for freeing */
	struct xbatch *flying;       /* the one in flight, or NULL */
	bool awaited;                /* the one in flight holds answers that
					a reply waits for (not only direct
					lines' xreqs) */
	atomic_uint back;            /* enum xback, while in flight */
};

/* Completions taken from the ring at a time, and how many lines and keys
   of those ahead of the one being dispatched the look-ahead has been over
   (dispatch_all, worker.c): enough to overlap the cache misses of a few
   connections' pipelined gets, few enough that the first items are still
   in L1/L2 when they are read. A line and each of its keys count one, so
   a completion at pipeline 16 (16 one-key gets) takes 32: at 32 the
   look-ahead covered only the completion about to run, at 64 the next one
   too. At -t 1 get90 P16 over 100 000 keys the daemon's user CPU per
   request was 210 ns at 16, 109 at 32, 90-93 at 48, 64 and 96, 103-108 at
   128 and 255 (medians of 9-12 alternating 4 s runs); pipeline 1 and
   100-key gets at -t 2 did not move beyond the runs' spread. */
#define WORKER_CQE_BATCH 64u
/* The yield poll before a sleep (poll_awaited, worker.c). At -t 4 on two
   CPUs, 10-key gets: 2 and 4 yields gave the same, 8 less. */
#define WORKER_POLL_YIELDS 4u
#define WORKER_POLL_BACKOFF_MAX 64u
#define WORKER_PREFETCH_AHEAD 64u
#define WORKER_RBUF_GROUP 0
/* A power of two. The kernel takes buffers in ring order, so over time
   every one is touched: this is 256 KiB of RSS per worker (256 buffers
   were 1 MiB, half of a -t 8 -m 16 shard's item memory). A pass uses
   about one per connection that received; past that a receive ends with
   -ENOBUFS and is re-armed (measured at -t 1: a few hundred times in 12 s
   of 50-300 connections, 3 M requests). */
#define WORKER_RBUF_COUNT 64
#define WORKER_RBUF_SIZE 4096

struct worker {
	uint32_t id;
	struct worker_group *group;
	struct io_uring ring;
	bool ring_ready;
	struct io_uring_buf_ring *rbufs; /* provided receive buffers (mmap);
					    NULL: single-shot receives */
	char *rbuf_mem;              /* their bytes (mmap), COUNT x SIZE */
	int wake_fd;                 /* eventfd, written by worker_stop_all */
	uint64_t wake_buf;
	heap_t *heap;             /* connections, arenas, batches */
	struct connmem mem;          /* lends connection buffers from heap,
					within group->mem */
	struct shard *shard;         /* shard `id`, owned by this thread;
					lent while it sleeps (`lend`) */
	struct worker_outbox *out;   /* [nworkers], from heap */
	struct conn *conns;          /* every open connection (list) */
	struct conn *dirty;          /* connections with output to push */
	struct proto_key *keys;      /* parser scratch, [PROTO_KEYS_CHUNK] */
	struct worker_counters counters;
	bool want_back;              /* this pass: a connection waits for a
					direct line's batch (net/conn.c) */
	bool draining;               /* stop seen: finishing what is open */
	bool quiet;                  /* counted in group->quiet */
	int64_t now;                 /* Unix seconds, updated every pass */
	int64_t now_ms;              /* monotonic ms, updated every pass */
	unsigned pressure_seen;      /* group->mem.pressure at the last
					conn_reclaim */
	int64_t reclaim_ms;          /* when conn_reclaim last ran */
	int64_t mem_tick_ms;         /* when connmem_tick last ran */
	unsigned poll_backoff;       /* awaited waits to skip after a yield
					poll that found nothing, doubling */
	unsigned poll_skip;          /* of those, still to skip */
	struct conn *probe;          /* the next connection conn_probe() looks
					at (NULL: from the list's head) */
	atomic_uint_fast64_t heartbeat; /* loop passes; read by main */
	atomic_uint lend;            /* enum lend (net/lend.h): is the shard
					lent now */
	uint64_t now_us;             /* monotonic us (WORKER_CLOCK), read after
					the wait and at the end of every pass */
	/* Latency (net/latency.h), timed with the two readings of the clock
	   every pass makes anyway: a request's start is the reading after the
	   wait that ended with its bytes (pass_us). A request answered on
	   this shard is counted in lat_local and recorded at the end of the
	   pass, when its reply is queued, with the pass's elapsed time; a
	   request sent to another shard carries its start in its xreq and is
	   recorded when its reply comes back (one more clock read per
	   returning batch). */
	uint64_t pass_us;
	/* The last look at the completion queue found LEND_BUSY or more:
	   this worker borrows no shard for a multi-get until the next look
	   (lend_worth, net/process.c read_keys). */
	bool lend_busy;
	uint32_t lat_local[LAT_NFAM];
	uint32_t lat_fams;           /* bit f: lat_local[f] != 0 */
	struct lat_set lat;
	int64_t pub_ms;              /* when `pub` was last written */
	bool pub_due;                /* a pass since then: wake up to publish */
	struct worker_pub pub;       /* published copy for the metrics thread */
	bool stall;                  /* test builds: the watchdog stall */
	pthread_t thread;
};

/*
 * Starts n worker threads for the group; each creates its shard and ring and
 * arms accepts on every listener. Returns 0 when all are running, or a
 * negative errno after stopping the ones that started.
 */
int worker_start_all(struct worker_group *g);

/* Asks every worker to stop accepting, finish what is in flight, free
   everything and end; returns after all threads are joined. */
void worker_stop_all(struct worker_group *g);

/* Gets a submission queue entry, submitting first if the queue is full. */
struct io_uring_sqe *worker_sqe(struct worker *w);

/* The bytes of provided receive buffer `bid`, and giving it back to the
   kernel once they have been copied out. */
static inline const char *worker_rbuf(const struct worker *w, unsigned bid)
{
	return w->rbuf_mem + (size_t)bid * WORKER_RBUF_SIZE;
}
void worker_rbuf_put(struct worker *w, unsigned bid);

/* Marks a connection as having output to send after this pass. */
void worker_mark_dirty(struct worker *w, struct conn *c);

/*
 * Timing and recording of requests (see pass_us), all here: a build with
 * -DRINGCACHE_NO_LATENCY gets empty versions and the coarse clock (what the
 * loop used before there were histograms), so that the cost of the
 * histograms can be measured against a build without them
 * (scripts/latcost.py); its `stats latency` counts nothing.
 */
#ifndef RINGCACHE_NO_LATENCY
#define WORKER_CLOCK CLOCK_MONOTONIC
/* The start time (us) of a request parsed now. */
static inline uint64_t worker_lat_start(struct worker *w)
{
	return w->pass_us;
}

/* A request of family fam answered on this shard during this pass. */
static inline void worker_lat_local(struct worker *w, unsigned fam)
{
	if (fam >= LAT_NFAM)
		return;
	w->lat_local[fam]++;
	w->lat_fams |= 1u << fam;
}

/* At the end of a pass (now_us just read): records the requests answered
   on this shard in it. */
static inline void worker_lat_flush(struct worker *w)
{
	uint64_t d = w->now_us - w->pass_us;
	uint32_t fams = w->lat_fams; /* a copy the stores below cannot alias */
	w->lat_fams = 0;
	for (; fams; fams &= fams - 1) {
		unsigned f = (unsigned)__builtin_ctz(fams);
		lat_record_n(&w->lat.h[f], d, w->lat_local[f]);
		w->lat_local[f] = 0;
	}
}

/* A request of family fam that started at `start` answered by another
   shard; *now is the clock, read on the first call with *now == 0. */
static inline void worker_lat_remote(struct worker *w, unsigned fam,
				     uint64_t start, uint64_t *now)
{
	if (fam >= LAT_NFAM)
		return;
	if (!*now)
		*now = lat_clock_us();
	lat_record_n(&w->lat.h[fam], *now - start, 1);
}
#else
#define WORKER_CLOCK CLOCK_MONOTONIC_COARSE
static inline uint64_t worker_lat_start(struct worker *w)
{
	(void)w;
	return 0;
}
static inline void worker_lat_local(struct worker *w, unsigned fam)
{
	(void)w;
	(void)fam;
}
static inline void worker_lat_flush(struct worker *w)
{
	(void)w;
}
static inline void worker_lat_remote(struct worker *w, unsigned fam,
				     uint64_t start, uint64_t *now)
{
	(void)w;
	(void)fam;
	(void)start;
	(void)now;
}
#endif

/* Copies w's published counters into the caller's memory (any thread);
   false if the worker has published nothing yet. */
bool worker_pub_read(struct worker *w, struct worker_pub *out);

/* Appends a cross-shard request to the batch for its destination. */
struct xreq;
void worker_send_xreq(struct worker *w, uint32_t dst, struct xreq *x);

/*
 * Lending: the owner of a shard lends it while it sleeps, so that a get of
 * one of its keys, or a set that replaces an item, costs its home no
 * hand-over and the owner no wake-up. The owner opens its `lend` word just
 * before its wait and takes the shard back right after; a borrower holds it
 * for one shard_read_lent() or shard_store_lent() call and gives it back.
 * The owner, finding it out, yields until it is back (net/lend.h).
 */

/* Worker dst's shard for one get or set of connection c, or NULL: lending
   is off, dst is awake, another worker has it, or c has cross-shard
   requests out or queued, which run first (a request never overtakes its
   connection's earlier one). Other connections' requests to dst may still
   be out: their order against c's is not defined, as with memcached,
   whose worker threads serve connections concurrently.
   Give it back with worker_give_back() before anything else. */
struct shard *worker_borrow(struct worker *w, const struct conn *c,
			    uint32_t dst);
void worker_give_back(struct worker *w, uint32_t dst);

#endif
