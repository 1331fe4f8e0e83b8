/*
 * loadgen_hist.h - an HDR-style latency histogram with log-linear buckets.
 *
 * Values (nanoseconds) below 2^HIST_SUB_BITS have a bucket each; above that
 * every power of two is split into 2^(HIST_SUB_BITS-1) equal buckets, so a
 * recorded value is known to within 1/64 (1.6%) of itself at any magnitude,
 * from one nanosecond up to the cap of 2^41 ns (36 minutes; larger values are
 * counted in the last bucket and still set `max` exactly). Recording is a
 * count-leading-zeros, a shift and an increment: cheap enough for every
 * request. A histogram is one flat struct (about 18 KiB) in the caller's
 * memory: each generator thread owns its own and the main thread merges them
 * after the threads have been joined, so nothing here is shared or locked.
 * No function fails.
 */
#ifndef LOADGEN_HIST_H
#define LOADGEN_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 7
#define HIST_MAX_SHIFT 34 /* values below 2^(HIST_MAX_SHIFT + HIST_SUB_BITS) */
#define HIST_BUCKETS ((HIST_MAX_SHIFT + 2) << (HIST_SUB_BITS - 1))

struct hist {
	uint64_t count;
	uint64_t sum;   /* for the mean */
	uint64_t min;   /* UINT64_MAX while empty */
	uint64_t max;
	uint64_t bucket[HIST_BUCKETS];
};

void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t v);
/* Adds every count of src into dst. */
void hist_merge(struct hist *dst, const struct hist *src);
/*
 * The value below which a fraction p (0..1) of the recorded values lie,
 * reported as the highest value of its bucket and never above `max`, as
 * HdrHistogram does. 0 for an empty histogram.
 */
uint64_t hist_percentile(const struct hist *h, double p);
double hist_mean(const struct hist *h);

#endif
