/*
 * lend.h - the word by which a sleeping worker lends its shard to the
 * others (worker.h, worker_borrow).
 *
 * One atomic word per worker. The owner opens it (lend_open) just before it
 * sleeps and takes the shard back (lend_take) right after it wakes; while
 * it is open, any other worker may take the shard (lend_try) for one lookup
 * or store and give it back (lend_return). An owner that wakes while a
 * borrower holds its shard yields until it is back (lend_wait): the yield
 * hands its CPU to the borrower, when the owner's wake-up preempted it
 * there, or to other work.
 *
 * Measured alternatives (-t 2 on two CPUs, README "Lent reads and
 * stores"): spinning up to 128 pauses and then sleeping on the word (futex)
 * cut the owners' waits in the open loop at half memcached's rate from
 * 277-557 ms to 1-7 ms a run, but cost 9-16 % of the closed-loop 10-key
 * gets' req/s; doing so only after a wait of 20 us or more (an idle
 * machine) still cost 5-12 % in two of three closed-loop runs, and its
 * open-loop tails did not beat yielding's beyond the rounds' spread.
 *
 * States: LEND_OWNER (the owner has it), LEND_FREE (open, no one has it),
 * LEND_OUT (a borrower has it). Every taking of the shard
 * (compare-and-swap) acquires it; lend_open and lend_return release it.
 *
 * Ownership: the word lives in the caller's memory; nothing is allocated.
 * Threads: lend_open, lend_take and lend_wait on the owner's thread only,
 * lend_try and lend_return on any other. No errors.
 */
#ifndef RINGCACHE_LEND_H
#define RINGCACHE_LEND_H

#include <stdatomic.h>
#include <stdbool.h>

enum lend { LEND_OWNER, LEND_FREE, LEND_OUT };

static inline void lend_init(atomic_uint *l)
{
	atomic_init(l, LEND_OWNER);
}

/* The owner, about to sleep: the shard may be borrowed from now on. */
static inline void lend_open(atomic_uint *l)
{
	atomic_store_explicit(l, LEND_FREE, memory_order_release);
}

/* Another worker: takes the shard if it is open and free, for one call. */
static inline bool lend_try(atomic_uint *l)
{
	unsigned free = LEND_FREE;
	return atomic_load_explicit(l, memory_order_relaxed) == LEND_FREE &&
	       atomic_compare_exchange_strong_explicit(l, &free, LEND_OUT,
			memory_order_acquire, memory_order_relaxed);
}

/* The borrower gives the shard back. */
static inline void lend_return(atomic_uint *l)
{
	atomic_store_explicit(l, LEND_FREE, memory_order_release);
}

/* The owner, awake: takes its shard back if no borrower has it. */
static inline bool lend_take(atomic_uint *l)
{
	unsigned free = LEND_FREE;
	return atomic_compare_exchange_strong_explicit(l, &free, LEND_OWNER,
			memory_order_acquire, memory_order_relaxed);
}

/*
 * Whether a worker that found `ready` completions at one look at its queue
 * should borrow for the multi-gets it dispatches of them: only below
 * LEND_BUSY. A busy worker hands a multi-get's remote keys to their owner
 * instead, which keeps both awake and their work even; borrowing then left
 * one worker serving both shards and the other asleep, woken late on a
 * shared CPU, and doubled the closed-loop 10-key gets' p99 at -t 2. One-key
 * gets and sets still borrow: for them the rule lengthened get90's open-loop
 * tail (README, "Lent reads and stores").
 */
#define LEND_BUSY 4u

static inline bool lend_worth(unsigned ready)
{
	return ready < LEND_BUSY;
}

/* The owner, after lend_take failed: yields until it has its shard back. */
void lend_wait(atomic_uint *l);

#endif
