/*
 * latency.c - histogram bounds, merge and percentiles; see latency.h.
 */
#include "net/latency.h"

#include "net/meta.h"

#include <stddef.h>
#include <string.h>

static const char *const names[LAT_NFAM] = {
	[LAT_GET] = "get",       [LAT_SET] = "set",
	[LAT_DELETE] = "delete", [LAT_INCR_DECR] = "incr_decr",
	[LAT_TOUCH] = "touch",   [LAT_MG] = "mg",
	[LAT_MS] = "ms",         [LAT_MD] = "md",
	[LAT_MA] = "ma",
};

const char *lat_family_name(unsigned fam)
{
	return fam < LAT_NFAM ? names[fam] : "none";
}

unsigned lat_family(enum proto_cmd cmd)
{
	switch (cmd) {
	case PROTO_CMD_GET:
	case PROTO_CMD_GETS:
	case PROTO_CMD_GAT:
	case PROTO_CMD_GATS:
		return LAT_GET;
	case PROTO_CMD_SET:
	case PROTO_CMD_ADD:
	case PROTO_CMD_REPLACE:
	case PROTO_CMD_APPEND:
	case PROTO_CMD_PREPEND:
	case PROTO_CMD_CAS:
		return LAT_SET;
	case PROTO_CMD_DELETE:
		return LAT_DELETE;
	case PROTO_CMD_INCR:
	case PROTO_CMD_DECR:
		return LAT_INCR_DECR;
	case PROTO_CMD_TOUCH:
		return LAT_TOUCH;
	default:
		return LAT_NONE;
	}
}

unsigned lat_meta_family(unsigned meta_cmd)
{
	switch (meta_cmd) {
	case META_MG: return LAT_MG;
	case META_MS: return LAT_MS;
	case META_MD: return LAT_MD;
	case META_MA: return LAT_MA;
	default: return LAT_NONE;
	}
}

uint64_t lat_bucket_low(unsigned i)
{
	if (i < 2 * LAT_SUB)
		return i;
	unsigned shift = i / LAT_SUB - 1;
	return (uint64_t)(LAT_SUB + i % LAT_SUB) << shift;
}

uint64_t lat_bucket_high(unsigned i)
{
	if (i < 2 * LAT_SUB)
		return i;
	unsigned shift = i / LAT_SUB - 1;
	return ((uint64_t)(LAT_SUB + i % LAT_SUB + 1) << shift) - 1;
}

void lat_merge(struct lat_hist *dst, const struct lat_hist *src)
{
	for (unsigned i = 0; i < LAT_BUCKETS; i++)
		dst->b[i] += src->b[i];
	dst->count += src->count;
	dst->sum_us += src->sum_us;
	if (src->max_us > dst->max_us)
		dst->max_us = src->max_us;
}

void lat_set_merge(struct lat_set *dst, const struct lat_set *src)
{
	for (unsigned f = 0; f < LAT_NFAM; f++)
		lat_merge(&dst->h[f], &src->h[f]);
}

void lat_set_merge_bytes(struct lat_set *dst, const void *src)
{
	const char *p = src;
	for (unsigned f = 0; f < LAT_NFAM; f++) {
		struct lat_hist *d = &dst->h[f];
		const char *h = p + f * sizeof(struct lat_hist);
		uint64_t v;
		memcpy(&v, h + offsetof(struct lat_hist, count), 8);
		d->count += v;
		memcpy(&v, h + offsetof(struct lat_hist, sum_us), 8);
		d->sum_us += v;
		memcpy(&v, h + offsetof(struct lat_hist, max_us), 8);
		if (v > d->max_us)
			d->max_us = v;
		for (unsigned i = 0; i < LAT_BUCKETS; i++) {
			memcpy(&v, h + offsetof(struct lat_hist, b) + i * 8u, 8);
			d->b[i] += v;
		}
	}
}

uint64_t lat_percentile(const struct lat_hist *h, double q)
{
	if (!h->count)
		return 0;
	double r = q * (double)h->count;
	uint64_t rank = (uint64_t)r;
	if ((double)rank < r)
		rank++;
	if (rank < 1)
		rank = 1;
	if (rank > h->count)
		rank = h->count;
	uint64_t seen = 0;
	for (unsigned i = 0; i < LAT_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank) {
			uint64_t v = lat_bucket_high(i);
			return v < h->max_us ? v : h->max_us;
		}
	}
	return h->max_us;
}

uint64_t lat_count_below(const struct lat_hist *h, uint64_t limit)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < LAT_BUCKETS && lat_bucket_high(i) < limit; i++)
		n += h->b[i];
	return n;
}
