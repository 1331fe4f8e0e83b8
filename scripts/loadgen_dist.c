/*
 * loadgen_dist.c - xoshiro256** and rejection-inversion Zipf sampling.
 *
 * The Zipf sampler follows W. Hörmann, G. Derflinger, "Rejection-inversion to
 * generate variates from monotone discrete distributions" (1996), in the form
 * Apache Commons RNG uses: H is an antiderivative of the hat function
 * h(x) = x^-alpha, written with log1p/expm1 helpers so that alpha = 1 (where
 * H becomes log x) needs no special case and stays accurate near it.
 */
#include "scripts/loadgen_dist.h"

#include <errno.h>
#include <math.h>

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void rng_seed(struct rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

double rng_double(struct rng *r)
{
	return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* log1p(x)/x, continuous at 0. */
static double helper1(double x)
{
	if (fabs(x) > 1e-8)
		return log1p(x) / x;
	return 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
}

/* expm1(x)/x, continuous at 0. */
static double helper2(double x)
{
	if (fabs(x) > 1e-8)
		return expm1(x) / x;
	return 1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x));
}

static double h_integral(double alpha, double x)
{
	double lx = log(x);
	return helper2((1.0 - alpha) * lx) * lx;
}

static double h(double alpha, double x)
{
	return exp(-alpha * log(x));
}

static double h_integral_inverse(double alpha, double x)
{
	double t = x * (1.0 - alpha);
	if (t < -1.0)
		t = -1.0; /* rounding guard: t >= -1 mathematically */
	return exp(helper1(t) * x);
}

int dist_init(struct dist *d, enum dist_kind kind, uint64_t n, double alpha)
{
	if (n == 0)
		return -EINVAL;
	d->kind = kind;
	d->n = n;
	d->alpha = alpha;
	if (kind == DIST_UNIFORM)
		return 0;
	if (!(alpha > 0.0) || alpha > 100.0)
		return -EINVAL;
	d->h_x1 = h_integral(alpha, 1.5) - 1.0;
	d->h_n = h_integral(alpha, (double)n + 0.5);
	d->s = 2.0 - h_integral_inverse(alpha, h_integral(alpha, 2.5) - h(alpha, 2.0));
	return 0;
}

static uint64_t zipf_sample(const struct dist *d, struct rng *r)
{
	for (;;) {
		double u = d->h_n + rng_double(r) * (d->h_x1 - d->h_n);
		double x = h_integral_inverse(d->alpha, u);
		double kd = floor(x + 0.5);
		if (kd < 1.0)
			kd = 1.0;
		else if (kd > (double)d->n)
			kd = (double)d->n;
		if (kd - x <= d->s ||
		    u >= h_integral(d->alpha, kd + 0.5) - h(d->alpha, kd))
			return (uint64_t)kd - 1;
	}
}

uint64_t dist_sample(const struct dist *d, struct rng *r)
{
	if (d->kind == DIST_UNIFORM)
		return rng_below(r, d->n);
	return zipf_sample(d, r);
}
