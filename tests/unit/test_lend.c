/*
 * test_lend.c - the lend word (net/lend.h): its states one call at a time,
 * an owner that waits until a borrower gives its shard back, and an owner
 * and a borrower taking turns at a shared counter many times (under TSan,
 * `make tsan`'s unit tests, any overlap of the two is a reported race; in
 * every build a lost increment fails the count).
 */
#include <CUnit/CUnit.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include "net/lend.h"

static unsigned word(atomic_uint *l)
{
	return atomic_load(l);
}

static void test_states(void)
{
	atomic_uint l;
	lend_init(&l);
	CU_ASSERT(!lend_try(&l)); /* the owner has it */
	lend_open(&l);
	CU_ASSERT_EQUAL(word(&l), LEND_FREE);
	CU_ASSERT(lend_try(&l));
	CU_ASSERT_EQUAL(word(&l), LEND_OUT);
	CU_ASSERT(!lend_try(&l)); /* one borrower at a time */
	CU_ASSERT(!lend_take(&l)); /* the owner must wait */
	CU_ASSERT_EQUAL(word(&l), LEND_OUT);
	lend_return(&l);
	CU_ASSERT_EQUAL(word(&l), LEND_FREE);
	CU_ASSERT(lend_take(&l));
	CU_ASSERT_EQUAL(word(&l), LEND_OWNER);
	CU_ASSERT(!lend_try(&l));
}

/* A worker borrows while fewer than LEND_BUSY completions wait at once. */
static void test_worth(void)
{
	CU_ASSERT(lend_worth(0));
	CU_ASSERT(lend_worth(1));
	CU_ASSERT(lend_worth(LEND_BUSY - 1));
	CU_ASSERT(!lend_worth(LEND_BUSY));
	CU_ASSERT(!lend_worth(64));
}

/* What the owner does on waking (worker.c, take_shard_back). */
static void take_back(atomic_uint *l)
{
	if (!lend_take(l))
		lend_wait(l);
}

struct owner {
	atomic_uint *l;
	atomic_bool started, back;
};

static void *take_it_back(void *arg)
{
	struct owner *o = arg;
	atomic_store(&o->started, true);
	take_back(o->l);
	atomic_store(&o->back, true);
	return NULL;
}

/* Starts an owner thread that wakes to find its shard out (the caller
   holds it). */
static pthread_t start_owner(struct owner *o, atomic_uint *l)
{
	*o = (struct owner){ .l = l };
	atomic_init(&o->started, false);
	atomic_init(&o->back, false);
	pthread_t t;
	CU_ASSERT_FATAL(pthread_create(&t, NULL, take_it_back, o) == 0);
	return t;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* An owner that wakes while the shard is out has it only once the borrower
   gives it back. */
static void test_owner_waits(void)
{
	atomic_uint l;
	lend_init(&l);
	lend_open(&l);
	CU_ASSERT_FATAL(lend_try(&l));
	struct owner o;
	pthread_t t = start_owner(&o, &l);
	double deadline = now_s() + 10;
	while (!atomic_load(&o.started) && now_s() < deadline)
		sched_yield();
	for (unsigned i = 0; i < 1000; i++)
		sched_yield(); /* let it go round its loop */
	CU_ASSERT_EQUAL(word(&l), LEND_OUT);
	CU_ASSERT(!atomic_load(&o.back));
	lend_return(&l);
	pthread_join(t, NULL);
	CU_ASSERT(atomic_load(&o.back));
	CU_ASSERT_EQUAL(word(&l), LEND_OWNER);
}

#define TURNS 20000
#define BORROWS 1000

struct shared {
	atomic_uint l;
	atomic_bool done;
	unsigned long count;     /* touched only by whoever has the shard */
	atomic_ulong borrows;    /* the borrower's, read by the owner */
};

static void *borrower(void *arg)
{
	struct shared *s = arg;
	while (!atomic_load(&s->done)) {
		if (!lend_try(&s->l))
			continue;
		s->count++;
		atomic_fetch_add(&s->borrows, 1);
		lend_return(&s->l);
	}
	return NULL;
}

/* The owner opens and takes back its word at least TURNS times and until the
   borrower has borrowed BORROWS times (10 s at most), counting once each
   time it has the shard, while the borrower counts once per borrow: no
   increment may be lost. */
static void test_turns(void)
{
	struct shared s = { .count = 0 };
	lend_init(&s.l);
	atomic_init(&s.done, false);
	atomic_init(&s.borrows, 0);
	pthread_t t;
	CU_ASSERT_FATAL(pthread_create(&t, NULL, borrower, &s) == 0);
	double deadline = now_s() + 10;
	unsigned long turns = 0;
	while (turns < TURNS ||
	       (atomic_load(&s.borrows) < BORROWS && now_s() < deadline)) {
		lend_open(&s.l);
		if (turns % 64 == 0)
			sched_yield(); /* a longer wait, so borrows happen */
		take_back(&s.l);
		s.count++;
		turns++;
	}
	atomic_store(&s.done, true);
	pthread_join(t, NULL);
	CU_ASSERT_EQUAL(s.count, turns + atomic_load(&s.borrows));
	CU_ASSERT(atomic_load(&s.borrows) >= BORROWS);
	CU_ASSERT_EQUAL(word(&s.l), LEND_OWNER);
}

int test_lend_register(void)
{
	CU_pSuite s = CU_add_suite("lend", NULL, NULL);
	if (!s ||
	    !CU_add_test(s, "states", test_states) ||
	    !CU_add_test(s, "worth", test_worth) ||
	    !CU_add_test(s, "owner waits", test_owner_waits) ||
	    !CU_add_test(s, "turns", test_turns))
		return -1;
	return 0;
}
