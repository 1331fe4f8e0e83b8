/*
 * loadgen_value.c - key names, the verify header and the expected-version
 * table (see loadgen_value.h for the format and the reasoning).
 *
 * Numbers are written as fixed-width lowercase hex so the header has a fixed
 * length for a given key and parses without strtoul's leniency (a sign, a
 * space or an upper-case digit in a stored header is corruption).
 */
#include "scripts/loadgen_value.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static const char hexdig[16] = "0123456789abcdef";

static char *put_hex(char *p, uint64_t v, int digits)
{
	for (int i = digits - 1; i >= 0; i--) {
		p[i] = hexdig[v & 15];
		v >>= 4;
	}
	return p + digits;
}

static int get_hex(const char *p, int digits, uint64_t *out)
{
	uint64_t v = 0;
	for (int i = 0; i < digits; i++) {
		char c = p[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return -EINVAL;
		v = v << 4 | d;
	}
	*out = v;
	return 0;
}

size_t key_format(const struct value_fmt *f, char *dst, uint64_t k)
{
	char tmp[20];
	int n = 0;
	memcpy(dst, f->prefix, f->prefix_len);
	do {
		tmp[n++] = (char)('0' + k % 10);
		k /= 10;
	} while (k);
	char *p = dst + f->prefix_len;
	while (n)
		*p++ = tmp[--n];
	return (size_t)(p - dst);
}

int key_parse(const struct value_fmt *f, const char *s, size_t len, uint64_t *k)
{
	if (len <= f->prefix_len || len - f->prefix_len > 19 ||
	    memcmp(s, f->prefix, f->prefix_len) != 0)
		return -EINVAL;
	uint64_t v = 0;
	for (size_t i = f->prefix_len; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	/* key_format never writes leading zeros: "lg:07" is not key 7. */
	if (s[f->prefix_len] == '0' && len - f->prefix_len > 1)
		return -EINVAL;
	*k = v;
	return 0;
}

/* Length of "key|run|version|", the part the inner hash covers. */
static size_t signed_len(size_t klen)
{
	return klen + 1 + 8 + 1 + 16 + 1;
}

static uint64_t value_sum(const char *hdr, size_t klen, const char *tail,
			  size_t tail_len, size_t len)
{
	uint64_t inner = XXH3_64bits_withSeed(hdr, signed_len(klen), len);
	return XXH3_64bits_withSeed(tail, tail_len, inner);
}

uint32_t value_make(const struct value_fmt *f, char *hdr, const char *key,
		    size_t klen, uint64_t version, size_t len,
		    const char *filler)
{
	char *p = hdr;
	memcpy(p, key, klen);
	p += klen;
	*p++ = '|';
	p = put_hex(p, f->run, 8);
	*p++ = '|';
	p = put_hex(p, version, 16);
	*p++ = '|';
	size_t hlen = value_header_len(klen);
	uint64_t sum = value_sum(hdr, klen, filler, len - hlen, len);
	p = put_hex(p, sum, 16);
	*p = '|';
	return (uint32_t)sum;
}

enum value_verdict value_check(const char *key, size_t klen, const char *data,
			       size_t len, uint32_t flags,
			       struct value_info *out)
{
	size_t hlen = value_header_len(klen);
	/* The key test first: another key's value is the likelier mix-up. */
	if (len < klen + 1 || memcmp(data, key, klen) != 0 || data[klen] != '|')
		return len >= klen + 1 ? VALUE_WRONG_KEY : VALUE_BAD_HEADER;
	if (len < hlen)
		return VALUE_BAD_HEADER;
	const char *p = data + klen + 1;
	uint64_t run, version, sum;
	if (get_hex(p, 8, &run) || p[8] != '|' ||
	    get_hex(p + 9, 16, &version) || p[25] != '|' ||
	    get_hex(p + 26, 16, &sum) || p[42] != '|')
		return VALUE_BAD_HEADER;
	if (value_sum(data, klen, data + hlen, len - hlen, len) != sum)
		return VALUE_BAD_CHECKSUM;
	if ((uint32_t)sum != flags)
		return VALUE_BAD_FLAGS;
	out->run = (uint32_t)run;
	out->version = version;
	return VALUE_OK;
}

const char *value_verdict_str(enum value_verdict v)
{
	switch (v) {
	case VALUE_OK: return "ok";
	case VALUE_WRONG_KEY: return "value of another key";
	case VALUE_BAD_HEADER: return "header missing or malformed";
	case VALUE_BAD_CHECKSUM: return "checksum mismatch (torn or corrupted)";
	case VALUE_BAD_FLAGS: return "flags do not match the value";
	case VALUE_WRONG_WRITER: return "version from a thread that never writes this key";
	case VALUE_STALE: return "older than an acknowledged set";
	case VALUE_FUTURE: return "version never sent for this key";
	case VALUE_OLD_RUN: return "another run's value after ours was stored";
	}
	return "?";
}

int vtab_init(struct vtab *t, uint64_t keys, unsigned threads, unsigned owner)
{
	uint64_t n = keys / threads + 1;
	t->e = calloc(n, sizeof(*t->e));
	if (!t->e)
		return -ENOMEM;
	t->keys = keys;
	t->threads = threads;
	t->owner = owner;
	return 0;
}

void vtab_deinit(struct vtab *t)
{
	free(t->e);
	t->e = NULL;
}

void vtab_set_sent(struct vtab *t, uint64_t k, uint64_t version)
{
	struct vtab_ent *e = &t->e[k / t->threads];
	if (e->inflight == 0) {
		e->busy_lo = version;
		e->failed = 0;
	}
	e->inflight++;
	e->ceil = version;
}

void vtab_set_done(struct vtab *t, uint64_t k, uint64_t version, bool stored)
{
	struct vtab_ent *e = &t->e[k / t->threads];
	e->inflight--;
	if (!stored) {
		e->failed = 1;
		return;
	}
	/*
	 * The oldest set of this busy run is in place: every set that could
	 * still land after it is newer. A refused set in the run means the old
	 * value may have been dropped or kept, so the floor does not move.
	 */
	if (!e->failed && !e->tainted && version == e->busy_lo && version > e->floor)
		e->floor = version;
}

void vtab_set_lost(struct vtab *t, uint64_t k)
{
	struct vtab_ent *e = &t->e[k / t->threads];
	e->inflight--;
	e->tainted = 1;
}

enum value_verdict vtab_check(const struct vtab *t, const struct value_fmt *f,
			      uint64_t k, uint64_t floor_snap,
			      const struct value_info *vi)
{
	if (vi->run != f->run)
		return floor_snap == 0 || floor_snap == VERSION_NONE ?
			       VALUE_OK : VALUE_OLD_RUN;
	unsigned writer = (unsigned)(vi->version & ((1u << VERSION_THREAD_BITS) - 1));
	if (writer != k % f->threads)
		return VALUE_WRONG_WRITER;
	if (floor_snap == VERSION_NONE)
		return VALUE_OK;
	if (vi->version < floor_snap)
		return VALUE_STALE;
	if (vi->version > t->e[k / t->threads].ceil)
		return VALUE_FUTURE;
	return VALUE_OK;
}
