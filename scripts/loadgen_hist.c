/*
 * loadgen_hist.c - log-linear bucket arithmetic of the latency histogram.
 *
 * With S = HIST_SUB_BITS and H = 2^(S-1): a value v < 2^S is its own index.
 * A larger value whose top bit is bit m is shifted right by s = m - S + 1,
 * which leaves a sub-bucket number in [H, 2H); its index is s * H + sub.
 * Consecutive powers of two therefore occupy consecutive runs of H indexes
 * and the mapping is monotonic, so a percentile is a walk from the bottom.
 */
#include "scripts/loadgen_hist.h"

#include <string.h>

#define HALF (1u << (HIST_SUB_BITS - 1))

static unsigned bucket_of(uint64_t v)
{
	if (v < (1u << HIST_SUB_BITS))
		return (unsigned)v;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v);
	unsigned shift = msb - HIST_SUB_BITS + 1;
	if (shift > HIST_MAX_SHIFT)
		return HIST_BUCKETS - 1;
	return shift * HALF + (unsigned)(v >> shift);
}

/* The highest value that lands in bucket i. */
static uint64_t bucket_top(unsigned i)
{
	if (i < (1u << HIST_SUB_BITS))
		return i;
	unsigned shift = i / HALF - 1;
	uint64_t sub = i - (uint64_t)shift * HALF;
	return ((sub + 1) << shift) - 1;
}

void hist_init(struct hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

void hist_record(struct hist *h, uint64_t v)
{
	h->bucket[bucket_of(v)]++;
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
	if (v < h->min)
		h->min = v;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		dst->bucket[i] += src->bucket[i];
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->max > dst->max)
		dst->max = src->max;
	if (src->min < dst->min)
		dst->min = src->min;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
	if (h->count == 0)
		return 0;
	if (p >= 1.0)
		return h->max;
	/* The rank of the wanted value, 1-based, rounded up. */
	uint64_t rank = (uint64_t)(p * (double)h->count);
	if ((double)rank < p * (double)h->count || rank == 0)
		rank++;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= rank) {
			/* The last bucket also holds everything above the cap. */
			if (i == HIST_BUCKETS - 1)
				return h->max;
			uint64_t top = bucket_top(i);
			return top < h->max ? top : h->max;
		}
	}
	return h->max;
}

double hist_mean(const struct hist *h)
{
	return h->count ? (double)h->sum / (double)h->count : 0.0;
}
