/*
 * lend.h - the word by which a sleeping worker lends its shard to the
 * others (worker.h, worker_borrow).
 *
 * One atomic word per worker. The owner opens it (lend_open) just before it
 * sleeps and takes the shard back (lend_take) right after it wakes; while
 * it is open, any other worker may take the shard (lend_try) for one lookup
 * or store and give it back (lend_return). An owner that wakes while a
 * borrower holds its shard waits for it (lend_wait) in one of two ways,
 * chosen by whether its own wait was long (`idle`: it slept at least
 * LEND_IDLE_US, so the CPUs have time to spare) or short (a busy machine):
 *
 *   idle: it spins up to LEND_SPINS pauses, which is longer than a borrow
 *         whose borrower runs takes (a probe and a copy), then sleeps on
 *         the word (futex) until the borrower gives the shard back and
 *         wakes it. Yielding instead was the pathology here: a borrower
 *         preempted on the other CPU waits for that CPU's time slice, and
 *         an owner that loops on sched_yield with nothing else queued on
 *         its own CPU keeps it busy doing nothing. -t 2 on two CPUs, open
 *         loop at half memcached's rate, 10 rounds: owners waited 277-557
 *         ms in all (5-10 ms at most at a time) yielding, 1-7 ms (at most
 *         0.04-2.4 ms) spinning and sleeping.
 *   busy: it yields until the shard is back, as it always did: the yield
 *         hands its CPU to the borrower or to other work. Spinning and
 *         sleeping here cost 9-16 % of the closed-loop 10-key gets' req/s
 *         at -t 2 (122 000-123 000 against 134 000-147 000), though the
 *         owners then waited 3-14 ms per 3 s round instead of 460-770.
 *
 * States: LEND_OWNER (the owner has it), LEND_FREE (open, no one has it),
 * LEND_OUT (a borrower has it), LEND_WAITED (a borrower has it and the
 * owner sleeps on the word). Every taking of the shard (compare-and-swap)
 * acquires it; lend_open and lend_return release it.
 *
 * Ownership: the word lives in the caller's memory; nothing is allocated.
 * Threads: lend_open, lend_take and lend_wait on the owner's thread only,
 * lend_try and lend_return on any other. No errors.
 */
#ifndef RINGCACHE_LEND_H
#define RINGCACHE_LEND_H

#include <stdatomic.h>
#include <stdbool.h>

enum lend { LEND_OWNER, LEND_FREE, LEND_OUT, LEND_WAITED };

#define LEND_SPINS 128u   /* a few microseconds of pauses */
#define LEND_IDLE_US 20u  /* an owner's wait at least this long was idle */

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

/* The owner, awake: takes its shard back if no borrower has it. */
static inline bool lend_take(atomic_uint *l)
{
	unsigned free = LEND_FREE;
	return atomic_compare_exchange_strong_explicit(l, &free, LEND_OWNER,
			memory_order_acquire, memory_order_relaxed);
}

/* The borrower gives the shard back, waking the owner if it sleeps on it. */
void lend_return(atomic_uint *l);

/* The owner, after lend_take failed: waits until it has its shard back,
   the idle way or the busy way (above). Returns true if it slept on the
   word. */
bool lend_wait(atomic_uint *l, bool idle);

#endif
