/*
 * fuzz_shard.c - libFuzzer target for the shard engine (shard/).
 *
 * The input is decoded into a sequence of operations on one small shard:
 * every storage command, reads, touch, delete, md I and md x, incr/decr,
 * flush and clock steps, over a key space of eight keys; stores, incr/decr
 * and md I/x may carry the meta protocol's E (an explicit cas: 0, the
 * key's own cas, one the sequence is about to hand out, or any value).
 * Some sets and gets go first to the lent paths another worker takes
 * (shard_store_lent, shard_read_lent), and to shard_exec only when those
 * leave them to the owner (-EAGAIN); the model sees the same set or get. A reference model - a plain array
 * that follows protocol.txt with no cleverness at all - executes the same
 * sequence, and every answer of the shard is checked against it:
 *  - with a roomy memory limit (no eviction possible) every status, value,
 *    flags and incr/decr result must equal the model's exactly;
 *  - with a tiny limit (first byte odd) the shard may have evicted a key
 *    the model still has, so a miss is allowed there, but anything the shard
 *    does return must be exactly the model's latest value for that key;
 *  - the shard's `bytes` never exceeds its limit; every cas it hands out is
 *    new, except an explicit one, which is exactly E's; reads return the
 *    key's latest cas and cas compares use it; after every operation the integrity checker (shard_check) walks
 *    every segment and index slot, so an index entry left pointing at
 *    moved or reused segment memory is caught at once (and ASan catches a
 *    read of freed memory); at the end, destroying the shard frees every
 *    block (the libc heap of sanitizer builds aborts on a leaked block).
 *
 * Build and run: `make fuzz` (clang, -fsanitize=fuzzer,address,undefined).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shard/shard.h"

#define NKEYS 8
#define VMAX 192
#define ITEM_MAX 160
#define T0 1700000000

struct model_item {
	bool live;
	uint32_t flags;
	int64_t exp;     /* absolute; 0 never */
	uint64_t cas;
	uint32_t vlen;
	char v[VMAX * 2];
};

struct input {
	const uint8_t *p;
	size_t n;
};

static uint8_t take(struct input *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

#define CHECK(cond)                                                          \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "fuzz_shard: %s:%d: %s\n", __FILE__, \
				__LINE__, #cond);                            \
			abort();                                             \
		}                                                            \
	} while (0)

static int64_t abs_exp(int64_t raw, int64_t now)
{
	if (raw == 0)
		return 0;
	if (raw < 0)
		return now - 1;
	if (raw <= SHARD_REL_TIME_MAX)
		return now + raw;
	return raw;
}

static bool visible(const struct model_item *m, int64_t now)
{
	return m->live && (m->exp == 0 || m->exp > now);
}

struct read_buf {
	char data[VMAX * 2];
	struct shard_view view;
	char key[256];  /* view.key is valid only during the sink call */
	int calls;
};

static char *sink(void *ctx, const struct shard_view *v)
{
	struct read_buf *b = ctx;
	b->calls++;
	b->view = *v;
	memcpy(b->key, v->key, v->klen);
	b->view.key = b->key;
	CHECK(v->vlen <= sizeof(b->data));
	return b->data;
}

/* Whether this operation carries E, and its value in *e. */
static bool pick_e(struct input *in, const struct model_item *m,
		   uint64_t last_cas, uint64_t *e)
{
	uint8_t b = take(in);
	switch (b % 8) {
	case 0: *e = 0; return true;
	case 1: *e = m->cas; return true;
	case 2: *e = last_cas + 3; return true; /* the next seq's, 3 shards */
	case 3: *e = (uint64_t)take(in) << 56 | b; return true;
	default: return false;
	}
}

/* The cas a successful write must answer: E's, or a new one. */
static void check_cas(const struct shard_req *q, const struct shard_res *r,
		      uint64_t *last_cas)
{
	if (q->mflags & SHARD_MF_SETCAS) {
		CHECK(r->cas == q->new_cas);
		return;
	}
	CHECK(r->cas > *last_cas);
	*last_cas = r->cas;
}

/* Parses a model value as incr/decr does: all digits, fits in u64. */
static bool model_number(const struct model_item *m, uint64_t *out)
{
	if (m->vlen == 0 || m->vlen > 20)
		return false;
	uint64_t v = 0;
	for (uint32_t i = 0; i < m->vlen; i++) {
		char c = m->v[i];
		if (c < '0' || c > '9')
			return false;
		unsigned d = (unsigned)(c - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	uint8_t mode = take(&in);
	bool tiny = mode & 1;
	/* Tiny limits hold the table, the eviction history and a few 1 KiB
	   segments, so stores retire segments all the time: copy-forward,
	   compaction (ticks) and dedicated segments (values over 128 B) all
	   run. */
	struct shard_config cfg = {
		.id = 1, .count = 3,
		.mem_limit = tiny ? (6u << 10) + (size_t)((mode >> 1) & 3) * 2048 : (8u << 20),
		.item_max = ITEM_MAX,
	};
	struct shard *s = shard_create(&cfg);
	CHECK(s);
	int64_t now = T0;
	shard_set_time(s, now);
	static struct model_item model[NKEYS];
	memset(model, 0, sizeof(model));
	static const char *const keys[NKEYS] = { "a", "bb", "key3", "k:4",
						 "five5", "6", "seven", "x8" };
	uint64_t last_cas = 0;
	char value[VMAX];

	while (in.n) {
		uint8_t op = take(&in) % 14;
		unsigned k = take(&in) % NKEYS;
		struct model_item *m = &model[k];
		struct shard_req q = {
			.key = keys[k], .klen = (uint8_t)strlen(keys[k]),
			.hash = shard_hash(keys[k], strlen(keys[k])),
		};
		struct shard_res r;
		struct read_buf rb = { .calls = 0 };
		bool vis = visible(m, now);

		if (op == 12) { /* clock step */
			now += take(&in) % 8;
			shard_set_time(s, now);
			continue;
		}
		if (op == 13) { /* flush now, or a bounded tick */
			if (take(&in) & 1) {
				shard_flush(s, 0);
				for (unsigned i = 0; i < NKEYS; i++)
					model[i].live = false;
			} else {
				shard_tick(s, take(&in));
			}
			CHECK(shard_check(s) == 0);
			continue;
		}
		if (op <= 5 || op == 8) { /* set add replace append prepend cas */
			static const enum shard_op ops[] = {
				SHARD_OP_SET, SHARD_OP_ADD, SHARD_OP_REPLACE,
				SHARD_OP_APPEND, SHARD_OP_PREPEND, SHARD_OP_SET,
				0, 0, SHARD_OP_CAS };
			q.op = ops[op];
			q.vlen = take(&in) % (VMAX - 20);
			uint8_t fill = take(&in);
			for (uint32_t i = 0; i < q.vlen; i++)
				value[i] = (fill & 0x80) ? (char)('0' + (fill + i) % 10)
							 : (char)(fill + i);
			q.value = value;
			q.flags = (uint32_t)take(&in) << 24 | take(&in);
			uint8_t e = take(&in);
			q.exptime = e < 200 ? 0 : e < 250 ? (int64_t)(e - 200) / 5 : -1;
			if (q.op == SHARD_OP_CAS)
				q.cas = (take(&in) & 3) ? m->cas : m->cas + 1;
			if (pick_e(&in, m, last_cas, &q.new_cas))
				q.mflags |= SHARD_MF_SETCAS;
		} else if (op == 6 || op == 7) {
			q.op = op == 6 ? SHARD_OP_GET : SHARD_OP_GAT;
			q.exptime = take(&in) % 6;
		} else if (op == 9) {
			q.op = SHARD_OP_TOUCH;
			q.exptime = take(&in) % 6;
		} else if (op == 10) {
			q.op = SHARD_OP_DELETE;
			/* md I (stale, a new cas) or md x (empty, cas kept) */
			static const uint32_t md[] = { 0, 0, SHARD_MF_STALE,
						       SHARD_MF_EMPTY };
			q.mflags = md[take(&in) % 4];
			if (q.mflags && pick_e(&in, m, last_cas, &q.new_cas))
				q.mflags |= SHARD_MF_SETCAS;
		} else {
			q.op = (take(&in) & 1) ? SHARD_OP_INCR : SHARD_OP_DECR;
			q.delta = take(&in) ? take(&in) : UINT64_MAX - take(&in);
			if (pick_e(&in, m, last_cas, &q.new_cas))
				q.mflags |= SHARD_MF_SETCAS;
		}

		int rc = -EAGAIN;
		if (op == 5 && !q.mflags) /* set: a borrower's, else the owner's */
			rc = shard_store_lent(s, now, &q, &r);
		else if (op == 6 && (q.exptime & 1))
			rc = shard_read_lent(s, now, &q, &r, sink, &rb);
		if (rc == -EAGAIN)
			rc = shard_exec(s, &q, &r, sink, &rb);
		CHECK(rc == 0);
		CHECK(shard_check(s) == 0);
		struct shard_stats st;
		shard_stats(s, &st);
		CHECK(st.bytes <= cfg.mem_limit);
		/* In tiny mode a key the model has may be gone (evicted). */
		bool may_miss = tiny && vis;
		bool miss = r.status == SHARD_NOT_FOUND ||
			    (r.status == SHARD_NOT_STORED &&
			     (q.op == SHARD_OP_REPLACE || q.op == SHARD_OP_APPEND ||
			      q.op == SHARD_OP_PREPEND)) ||
			    (r.status == SHARD_STORED && q.op == SHARD_OP_ADD);
		if (may_miss && miss) {
			/* Evicted: the model forgets it too. A failed store on a
			   missing key changes nothing more. */
			m->live = false;
			vis = false;
		}

		switch (q.op) {
		case SHARD_OP_GET:
		case SHARD_OP_GAT:
			if (!vis) {
				CHECK(r.status == SHARD_NOT_FOUND && rb.calls == 0);
				break;
			}
			CHECK(r.status == SHARD_HIT && rb.calls == 1);
			CHECK(rb.view.vlen == m->vlen && r.vlen == m->vlen);
			CHECK(!memcmp(rb.data, m->v, m->vlen));
			CHECK(rb.view.flags == m->flags && r.flags == m->flags);
			CHECK(rb.view.cas == m->cas && r.cas == m->cas);
			CHECK(rb.view.klen == q.klen && !memcmp(rb.view.key, q.key, q.klen));
			if (q.op == SHARD_OP_GAT)
				m->exp = abs_exp(q.exptime, now);
			break;
		case SHARD_OP_TOUCH:
			CHECK(r.status == (vis ? SHARD_TOUCHED : SHARD_NOT_FOUND));
			if (vis)
				m->exp = abs_exp(q.exptime, now);
			break;
		case SHARD_OP_DELETE:
			CHECK(r.status == (vis ? SHARD_DELETED : SHARD_NOT_FOUND));
			if (!vis || !q.mflags) {
				m->live = false;
				break;
			}
			if (q.mflags & SHARD_MF_EMPTY)
				m->vlen = 0;
			if (q.mflags & (SHARD_MF_STALE | SHARD_MF_SETCAS)) {
				check_cas(&q, &r, &last_cas);
				m->cas = r.cas;
			}
			break;
		case SHARD_OP_INCR:
		case SHARD_OP_DECR: {
			if (!vis) {
				CHECK(r.status == SHARD_NOT_FOUND);
				break;
			}
			uint64_t n;
			if (!model_number(m, &n)) {
				CHECK(r.status == SHARD_NON_NUMERIC);
				break;
			}
			if (q.op == SHARD_OP_INCR)
				n += q.delta;
			else
				n = n < q.delta ? 0 : n - q.delta;
			if (tiny && r.status == SHARD_NO_MEMORY)
				break; /* no room for the new number: old kept */
			CHECK(r.status == SHARD_NUMBER && r.number == n);
			m->vlen = (uint32_t)snprintf(m->v, sizeof(m->v), "%" PRIu64, n);
			check_cas(&q, &r, &last_cas);
			m->cas = r.cas;
			break;
		}
		default: { /* stores */
			bool exists = vis;
			enum shard_status want = SHARD_STORED;
			uint32_t nlen = q.vlen;
			if (q.vlen > ITEM_MAX)
				want = SHARD_TOO_LARGE; /* refused before anything else */
			else if (q.op == SHARD_OP_ADD && exists)
				want = SHARD_NOT_STORED;
			else if ((q.op == SHARD_OP_REPLACE || q.op == SHARD_OP_APPEND ||
				  q.op == SHARD_OP_PREPEND) && !exists)
				want = SHARD_NOT_STORED;
			else if (q.op == SHARD_OP_CAS && !exists)
				want = SHARD_NOT_FOUND;
			else if (q.op == SHARD_OP_CAS &&
				 (q.cas == 0 || q.cas != m->cas))
				want = SHARD_EXISTS; /* a cas of 0 matches none */
			if (want == SHARD_STORED && (q.op == SHARD_OP_APPEND ||
						     q.op == SHARD_OP_PREPEND))
				nlen = m->vlen + q.vlen;
			if (want == SHARD_STORED && nlen > ITEM_MAX)
				want = SHARD_TOO_LARGE;
			if (tiny && r.status == SHARD_NO_MEMORY &&
			    (want == SHARD_STORED ||
			     (q.op == SHARD_OP_ADD && want == SHARD_NOT_STORED))) {
				/* no room: a set drops the old value; an add
				   found the key evicted; the others keep it */
				if (q.op == SHARD_OP_SET || q.op == SHARD_OP_ADD)
					m->live = false;
				break;
			}
			if (r.status != want)
				fprintf(stderr, "op %d key %u tiny %d: status %d, model %d (vlen %u exists %d)\n",
					(int)q.op, k, tiny, (int)r.status, (int)want, q.vlen, exists);
			CHECK(r.status == want);
			if (want == SHARD_TOO_LARGE && q.op == SHARD_OP_SET &&
			    q.vlen > ITEM_MAX)
				m->live = false; /* memcached drops the old value */
			if (want != SHARD_STORED)
				break;
			check_cas(&q, &r, &last_cas);
			if (q.op == SHARD_OP_APPEND) {
				memcpy(m->v + m->vlen, q.value, q.vlen);
			} else if (q.op == SHARD_OP_PREPEND) {
				memmove(m->v + q.vlen, m->v, m->vlen);
				memcpy(m->v, q.value, q.vlen);
			} else {
				memcpy(m->v, q.value, q.vlen);
				m->flags = q.flags;
				m->exp = abs_exp(q.exptime, now);
			}
			m->vlen = nlen;
			m->cas = r.cas;
			m->live = true;
			break;
		}
		}
	}
	shard_destroy(s);
	return 0;
}
