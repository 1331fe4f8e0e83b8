/*
 * lend.c - the owner's wait for its lent shard (lend.h), the one call that
 * gives up the CPU.
 */
#include "net/lend.h"

#include <sched.h>

void lend_wait(atomic_uint *l)
{
	while (!lend_take(l))
		sched_yield();
}
