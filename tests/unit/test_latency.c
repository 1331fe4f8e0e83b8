/*
 * test_latency.c - the latency histogram (net/latency.h): bucket bounds,
 * percentiles against an exact sort, merge, counts below a bound.
 */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

#include "net/latency.h"

/* Every value maps to a bucket whose bounds hold it, buckets are in order
   and contiguous, and a bucket is at most 1/LAT_SUB of its low bound wide. */
static void test_bounds(void)
{
	CU_ASSERT_EQUAL(lat_bucket(0), 0);
	CU_ASSERT_EQUAL(lat_bucket(15), 15);
	CU_ASSERT_EQUAL(lat_bucket(16), 16);
	CU_ASSERT_EQUAL(lat_bucket(31), 31);
	CU_ASSERT_EQUAL(lat_bucket(32), 32);
	CU_ASSERT_EQUAL(lat_bucket(33), 32);
	CU_ASSERT_EQUAL(lat_bucket(~0ull), LAT_BUCKETS - 1);
	for (unsigned i = 0; i + 1 < LAT_BUCKETS; i++) {
		CU_ASSERT_EQUAL(lat_bucket_high(i) + 1, lat_bucket_low(i + 1));
		uint64_t lo = lat_bucket_low(i), hi = lat_bucket_high(i);
		CU_ASSERT(lo <= hi);
		if (i < 2 * LAT_SUB) {
			CU_ASSERT_EQUAL(hi, lo);
		} else {
			CU_ASSERT((hi - lo + 1) * LAT_SUB <= lo);
		}
		CU_ASSERT_EQUAL(lat_bucket(lo), i);
		CU_ASSERT_EQUAL(lat_bucket(hi), i);
	}
	for (uint64_t v = 1; v < ((uint64_t)1 << LAT_MAX_BITS); v = v * 3 + 1) {
		unsigned b = lat_bucket(v);
		CU_ASSERT(lat_bucket_low(b) <= v && v <= lat_bucket_high(b));
		if (v >= LAT_SUB) {
			CU_ASSERT((lat_bucket_high(b) - v) * LAT_SUB <= v);
		}
	}
	/* powers of two start a bucket (the Prometheus le bounds) */
	for (unsigned k = 0; k < LAT_MAX_BITS; k++)
		CU_ASSERT_EQUAL(lat_bucket_low(lat_bucket((uint64_t)1 << k)),
				(uint64_t)1 << k);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Percentiles agree with an exact sort within the bucket width. */
static void test_percentiles(void)
{
	enum { N = 10000 };
	static uint64_t v[N];
	struct lat_hist *h = calloc(1, sizeof(*h));
	CU_ASSERT_PTR_NOT_NULL_FATAL(h);
	CU_ASSERT_EQUAL(lat_percentile(h, 0.5), 0);
	srand(7);
	uint64_t sum = 0;
	for (int i = 0; i < N; i++) {
		/* a long tail: mostly tens of us, some ms */
		v[i] = (uint64_t)(rand() % 100) + (rand() % 100 == 0 ? (uint64_t)(rand() % 100000) : 0);
		lat_record_n(h, v[i], 1);
		sum += v[i];
	}
	qsort(v, N, sizeof(v[0]), cmp_u64);
	CU_ASSERT_EQUAL(h->count, N);
	CU_ASSERT_EQUAL(h->sum_us, sum);
	CU_ASSERT_EQUAL(h->max_us, v[N - 1]);
	const double qs[] = { 0.5, 0.9, 0.99, 0.999, 1.0 };
	for (unsigned i = 0; i < 5; i++) {
		uint64_t exact = v[(size_t)(qs[i] * N + 0.999999) - 1];
		uint64_t got = lat_percentile(h, qs[i]);
		CU_ASSERT(got >= exact);
		CU_ASSERT(got <= exact + exact / LAT_SUB + 1);
	}
	CU_ASSERT_EQUAL(lat_percentile(h, 1.0), v[N - 1]);
	/* one sample: every percentile is it */
	struct lat_hist *one = calloc(1, sizeof(*one));
	lat_record_n(one, 1234, 1);
	CU_ASSERT_EQUAL(lat_percentile(one, 0.5), 1234);
	CU_ASSERT_EQUAL(lat_percentile(one, 0.999), 1234);
	/* past the last bucket: counted, max exact */
	lat_record_n(one, (uint64_t)1 << 40, 1);
	CU_ASSERT_EQUAL(one->count, 2);
	CU_ASSERT_EQUAL(one->b[LAT_BUCKETS - 1], 1);
	CU_ASSERT_EQUAL(lat_percentile(one, 1.0), (uint64_t)1 << 40 > lat_bucket_high(LAT_BUCKETS - 1) ?
			lat_bucket_high(LAT_BUCKETS - 1) : (uint64_t)1 << 40);
	free(one);
	free(h);
}

/* Merging equals recording everything into one. */
static void test_merge(void)
{
	struct lat_set *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b)),
		       *all = calloc(1, sizeof(*all));
	CU_ASSERT_PTR_NOT_NULL_FATAL(a && b && all);
	for (uint64_t i = 0; i < 5000; i++) {
		unsigned f = (unsigned)(i % LAT_NFAM);
		lat_record_n(&(i & 1 ? a : b)->h[f], i * 7, 1);
		lat_record_n(&all->h[f], i * 7, 1);
	}
	lat_record_n(&a->h[LAT_MG], 3, 10);
	lat_record_n(&all->h[LAT_MG], 3, 10);
	/* from an unaligned byte copy, as stats latency merges */
	char *raw = malloc(sizeof(*b) + 1);
	memcpy(raw + 1, b, sizeof(*b));
	struct lat_set *a2 = malloc(sizeof(*a2));
	memcpy(a2, a, sizeof(*a2));
	lat_set_merge_bytes(a2, raw + 1);
	lat_set_merge(a, b);
	CU_ASSERT_EQUAL(memcmp(a, all, sizeof(*a)), 0);
	CU_ASSERT_EQUAL(memcmp(a2, all, sizeof(*a)), 0);
	free(raw);
	free(a2);
	CU_ASSERT_EQUAL(a->h[LAT_MG].count, 5000 / LAT_NFAM + 10 +
			(5000 % LAT_NFAM > LAT_MG));
	free(a);
	free(b);
	free(all);
}

static void test_count_below(void)
{
	struct lat_hist *h = calloc(1, sizeof(*h));
	for (uint64_t v = 0; v < 5000; v++)
		lat_record_n(h, v, 1);
	for (unsigned k = 0; k < 13; k++)
		CU_ASSERT_EQUAL(lat_count_below(h, (uint64_t)1 << k), (uint64_t)1 << k);
	CU_ASSERT_EQUAL(lat_count_below(h, (uint64_t)1 << 20), 5000);
	free(h);
}

static void test_families(void)
{
	CU_ASSERT_EQUAL(lat_family(PROTO_CMD_GETS), LAT_GET);
	CU_ASSERT_EQUAL(lat_family(PROTO_CMD_CAS), LAT_SET);
	CU_ASSERT_EQUAL(lat_family(PROTO_CMD_DECR), LAT_INCR_DECR);
	CU_ASSERT_EQUAL(lat_family(PROTO_CMD_STATS), LAT_NONE);
	CU_ASSERT_STRING_EQUAL(lat_family_name(LAT_INCR_DECR), "incr_decr");
	CU_ASSERT_STRING_EQUAL(lat_family_name(LAT_MA), "ma");
}

int test_latency_register(void)
{
	CU_pSuite s = CU_add_suite("latency", NULL, NULL);
	if (!s)
		return -1;
	if (!CU_add_test(s, "bucket bounds", test_bounds) ||
	    !CU_add_test(s, "percentiles", test_percentiles) ||
	    !CU_add_test(s, "merge", test_merge) ||
	    !CU_add_test(s, "count below a power of two", test_count_below) ||
	    !CU_add_test(s, "families", test_families))
		return -1;
	return 0;
}
