/*
 * loadgen_dist.h - random numbers and the key distribution of the load
 * generator.
 *
 * struct rng is xoshiro256** (small, fast, good enough for load shapes, not
 * for secrets), seeded through splitmix64 so that nearby seeds give unrelated
 * streams. struct dist draws key numbers in [0, n) either uniformly or from a
 * Zipf law with exponent alpha (P(rank k) ~ 1/k^alpha, rank 1 = key 0, the
 * hottest). Zipf uses Hörmann and Derflinger's rejection-inversion method:
 * O(1) memory and time whatever n is (no CDF table), about one try per sample.
 *
 * Both are plain structs in the caller's memory; a generator thread owns one
 * rng and may share a read-only dist. dist_init returns 0 or -EINVAL.
 */
#ifndef LOADGEN_DIST_H
#define LOADGEN_DIST_H

#include <stdint.h>

struct rng {
	uint64_t s[4];
};

void rng_seed(struct rng *r, uint64_t seed);
uint64_t rng_next(struct rng *r);
/* Uniform in [0, 1). */
double rng_double(struct rng *r);
/* Uniform in [0, n), n > 0 (Lemire's multiply-shift; bias below 2^-64 * n). */
static inline uint64_t rng_below(struct rng *r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

enum dist_kind { DIST_UNIFORM, DIST_ZIPF };

struct dist {
	enum dist_kind kind;
	uint64_t n;
	double alpha;
	/* Rejection-inversion constants (Zipf only). */
	double h_x1, h_n, s;
};

int dist_init(struct dist *d, enum dist_kind kind, uint64_t n, double alpha);
/* A key number in [0, n). */
uint64_t dist_sample(const struct dist *d, struct rng *r);

#endif
