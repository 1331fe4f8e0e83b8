/*
 * latency.h - log-bucketed latency histograms (HDR-style), one per command
 * family, in constant memory and without locks.
 *
 * A value (microseconds) below LAT_SUB is its own bucket; above, each power
 * of two [2^k, 2^(k+1)) is split into LAT_SUB equal sub-buckets, so a
 * bucket's width is at most 1/LAT_SUB (6.25 %) of its lower bound: every
 * percentile is reported as its bucket's highest value (capped at the
 * largest value seen), at most 6.25 % above the true one. Values from
 * 2^LAT_MAX_BITS us (about 18 minutes) up land in the last bucket; `max`
 * keeps the true largest. Every power of two is a bucket boundary, which is
 * what the Prometheus exposition uses for its `le` bounds.
 *
 * Why this shape: recording is an index computation (one clz) and an
 * increment, and merging is adding arrays, so each worker keeps its own set
 * (struct lat_set, inside struct worker, written only by that worker's
 * thread) and readers merge copies (`stats latency` gathers one copy per
 * worker through the fan-out; the metrics thread reads the copies workers
 * publish, net/worker.h).
 *
 * Nothing here allocates; every function works on caller memory and may be
 * called from any thread on memory that thread owns. No errors.
 */
#ifndef RINGCACHE_LATENCY_H
#define RINGCACHE_LATENCY_H

#include <stdint.h>
#include <time.h>

#include "net/proto.h"

#define LAT_SUB_BITS 4
#define LAT_SUB (1u << LAT_SUB_BITS)
#define LAT_MAX_BITS 30
#define LAT_BUCKETS ((LAT_MAX_BITS - LAT_SUB_BITS + 1) * LAT_SUB)

/* Command families with a histogram each. */
enum lat_family {
	LAT_GET,       /* get gets gat gats: one sample per key, as cmd_get */
	LAT_SET,       /* set add replace append prepend cas */
	LAT_DELETE,
	LAT_INCR_DECR,
	LAT_TOUCH,
	LAT_MG,
	LAT_MS,
	LAT_MD,
	LAT_MA,
	LAT_NFAM,
	LAT_NONE = 0xff, /* not measured (stats, mn, me, ...) */
};

struct lat_hist {
	uint64_t count;
	uint64_t sum_us;
	uint64_t max_us;
	uint64_t b[LAT_BUCKETS];
};

struct lat_set {
	struct lat_hist h[LAT_NFAM];
};

/* The family's name as `stats latency` and the metrics label spell it. */
const char *lat_family_name(unsigned fam);
/* The family of a classic command, or LAT_NONE. */
unsigned lat_family(enum proto_cmd cmd);
/* The family of a meta command (enum meta_cmd), or LAT_NONE. */
unsigned lat_meta_family(unsigned meta_cmd);

/* The bucket of a value, and the values a bucket holds. */
static inline unsigned lat_bucket(uint64_t us)
{
	if (us >= ((uint64_t)1 << LAT_MAX_BITS))
		us = ((uint64_t)1 << LAT_MAX_BITS) - 1;
	if (us < LAT_SUB)
		return (unsigned)us;
	unsigned msb = 63u - (unsigned)__builtin_clzll(us);
	unsigned shift = msb - LAT_SUB_BITS;
	return (shift + 1) * LAT_SUB + (unsigned)((us >> shift) - LAT_SUB);
}
uint64_t lat_bucket_low(unsigned i);
uint64_t lat_bucket_high(unsigned i);

/* Records n samples of `us` microseconds. */
static inline void lat_record_n(struct lat_hist *h, uint64_t us, uint64_t n)
{
	h->b[lat_bucket(us)] += n;
	h->count += n;
	h->sum_us += us * n;
	if (us > h->max_us)
		h->max_us = us;
}

/* Adds src's samples to dst. */
void lat_merge(struct lat_hist *dst, const struct lat_hist *src);
void lat_set_merge(struct lat_set *dst, const struct lat_set *src);
/* The same from a byte copy of a struct lat_set at any alignment. */
void lat_set_merge_bytes(struct lat_set *dst, const void *src);

/* The q-quantile (0 < q <= 1): the highest value of the bucket holding the
   ceil(q * count)-th sample, at most max_us; 0 for an empty histogram. */
uint64_t lat_percentile(const struct lat_hist *h, double q);

/* Samples below `limit` us; exact when limit is a power of two. */
uint64_t lat_count_below(const struct lat_hist *h, uint64_t limit);

/* CLOCK_MONOTONIC in microseconds (vDSO, no system call). */
static inline uint64_t lat_clock_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

#endif
