/*
 * lend.c - giving a lent shard back and waiting for it (lend.h): the two
 * calls that may have to wake or wait for another thread.
 */
#include "net/lend.h"

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A spin-wait hint to the CPU. */
static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

static void futex(atomic_uint *l, int op, unsigned val)
{
	syscall(SYS_futex, (unsigned *)l, op, val, NULL, NULL, 0);
}

void lend_return(atomic_uint *l)
{
	if (atomic_exchange_explicit(l, LEND_FREE, memory_order_release) ==
	    LEND_WAITED)
		futex(l, FUTEX_WAKE_PRIVATE, 1);
}

bool lend_wait(atomic_uint *l, bool idle)
{
	if (!idle) {
		while (!lend_take(l))
			sched_yield();
		return false;
	}
	for (unsigned i = 0; i < LEND_SPINS; i++) {
		relax();
		if (lend_take(l))
			return false;
	}
	/* Out (or out again, to a second borrower after the first gave it
	   back): mark it waited, so that its give-back wakes this thread, and
	   sleep while it stays so. */
	for (;;) {
		unsigned seen = LEND_FREE;
		if (atomic_compare_exchange_strong_explicit(l, &seen, LEND_OWNER,
				memory_order_acquire, memory_order_relaxed))
			return true;
		if (seen == LEND_OUT &&
		    !atomic_compare_exchange_strong_explicit(l, &seen, LEND_WAITED,
				memory_order_relaxed, memory_order_relaxed))
			continue;
		futex(l, FUTEX_WAIT_PRIVATE, LEND_WAITED);
	}
}
