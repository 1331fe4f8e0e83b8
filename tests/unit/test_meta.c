/*
 * test_meta.c - the meta protocol parser and composers (net/meta.c), and
 * the shard's meta operations they drive (shard/shard.c).
 *
 * Parser: a table of lines with the result each must give (the shard op
 * and fields, the reply recipe, or the exact error line with consumed and
 * swallow), run each alone from an exact-size heap copy (so a read past
 * `len` is an ASan error) and split at every byte (every proper prefix asks
 * for more; an ms whose line is complete says how much it needs). Every
 * flag, every error of memcached 1.6.18's order, the token limits, base64.
 * Composers: byte for byte. Shard: the stale-while-revalidate flow, vivify,
 * md x, compared deletes and increments, explicit cas (E), with
 * shard_check() after each.
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/meta.h"

#define NOW 1700000000

static const struct proto_limits LIM = {
	.line_max = 1024, .item_max = 64, .keys_max = 8,
};

struct parsed {
	enum proto_rc rc;
	struct proto_req req;
	struct meta_req m;
	struct proto_key keys[8];
	char *copy;
};

static void parse(struct parsed *p, const char *s, size_t n)
{
	p->copy = malloc(n ? n : 1);
	memcpy(p->copy, s, n);
	p->rc = meta_parse(p->copy, n, &LIM, p->keys, &p->req, &p->m);
}

static void done(struct parsed *p)
{
	free(p->copy);
}

/* An error case: the line, the error, consumed, swallow. */
struct bad_case {
	const char *in;
	const char *err;
	size_t swallow;
};

static const struct bad_case BAD[] = {
	{ "mg\r\n", "ERROR\r\n", 0 },
	{ "mx foo\r\n", "ERROR\r\n", 0 },
	{ "mg k Ex\r\n", "CLIENT_ERROR bad token in command line format\r\n", 0 },
	{ "mg k E\r\n", "CLIENT_ERROR bad token in command line format\r\n", 0 },
	{ "mg k E18446744073709551616\r\n",
	  "CLIENT_ERROR bad token in command line format\r\n", 0 },
	{ "mg k E1 E2\r\n", "CLIENT_ERROR duplicate flag\r\n", 0 },
	{ "md k E-1\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n", 0 },
	{ "ma k E\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n", 0 },
	{ "ms k 2 E5x\r\n", "CLIENT_ERROR bad token in command line format\r\n", 4 },
	{ "mg k x\r\n", "CLIENT_ERROR invalid flag\r\n", 0 },
	{ "mg k v v\r\n", "CLIENT_ERROR duplicate flag\r\n", 0 },
	{ "mg k \x80\r\n", "CLIENT_ERROR duplicate flag\r\n", 0 },
	{ "mg k T\r\n", "CLIENT_ERROR bad token in command line format\r\n", 0 },
	{ "mg k Tx\r\n", "CLIENT_ERROR bad token in command line format\r\n", 0 },
	{ "mg k N5 Rz\r\n", "CLIENT_ERROR bad token in command line format\r\n", 0 },
	{ "mg k T2147483648\r\n", "CLIENT_ERROR bad token in command line format\r\n", 0 },
	{ "mg k M\r\n", "CLIENT_ERROR incorrect length for M token\r\n", 0 },
	{ "mg k Fx\r\n", "CLIENT_ERROR bad command line format\r\n", 0 },
	{ "mg k F4294967296\r\n", "CLIENT_ERROR bad command line format\r\n", 0 },
	{ "mg k Cx\r\n", "CLIENT_ERROR bad token in command line format\r\n", 0 },
	{ "mg k Jx\r\n", "CLIENT_ERROR invalid numeric initial value\r\n", 0 },
	{ "mg k Dx\r\n", "CLIENT_ERROR invalid numeric delta value\r\n", 0 },
	{ "mg k Dx Jx\r\n", "CLIENT_ERROR invalid numeric initial value\r\n", 0 },
	{ "mg Zm9 b\r\n", "CLIENT_ERROR error decoding key\r\n", 0 },
	{ "mg k O123456789012345678901234567890123\r\n",
	  "CLIENT_ERROR opaque token too long\r\n", 0 },
	{ "mg k a b c d e f g h i j l m n o p r s t\r\n",
	  "CLIENT_ERROR options flags are too long\r\n", 0 },
	{ "mg k\tx v\r\n", "CLIENT_ERROR bad command line format\r\n", 0 },
	{ "md k Z\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n", 0 },
	{ "md k q q\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n", 0 },
	{ "md k a b c d e f g h i j l m n o p r s t\r\n",
	  "CLIENT_ERROR options flags too long\r\n", 0 },
	{ "ma k Z\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n", 0 },
	{ "ma k Mx\r\n", "CLIENT_ERROR invalid mode for ma M token\r\n", 0 },
	{ "ma k MI x\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n", 0 },
	{ "ms\r\n", "ERROR\r\n", 0 },
	{ "ms k\r\n", "CLIENT_ERROR bad command line format\r\n", 0 },
	{ "ms k x\r\n", "CLIENT_ERROR bad command line format\r\n", 0 },
	{ "ms k -1\r\n", "CLIENT_ERROR bad command line format\r\n", 0 },
	{ "ms k 2 Z\r\n", "CLIENT_ERROR invalid flag\r\n", 4 },
	{ "ms k 2 MX\r\n", "CLIENT_ERROR invalid mode for ms M token\r\n", 4 },
	{ "ms k 2 MX O123456789012345678901234567890123\r\n",
	  "CLIENT_ERROR invalid mode for ms M token\r\n", 4 },
	{ "ms k 2 O123456789012345678901234567890123\r\n",
	  "CLIENT_ERROR opaque token too long\r\n", 4 },
	{ "ms k 2 a b c d e f g h i j l m n o p r s\r\n",
	  "CLIENT_ERROR options flags too long\r\n", 4 },
	{ "ms k 65\r\n", "SERVER_ERROR object too large for cache\r\n", 67 },
	{ "ms k 2\r\nabcd", "CLIENT_ERROR bad data chunk\r\n", 0 },
	{ "me\r\n", "CLIENT_ERROR bad command line format\r\n", 0 },
	{ "me Zm9 b\r\n", "CLIENT_ERROR bad command line format\r\n", 0 },
};

static void test_errors(void)
{
	for (size_t i = 0; i < sizeof(BAD) / sizeof(BAD[0]); i++) {
		const struct bad_case *c = &BAD[i];
		struct parsed p;
		size_t n = strlen(c->in);
		parse(&p, c->in, n);
		CU_ASSERT_EQUAL(p.rc, PROTO_BAD);
		if (p.rc != PROTO_BAD || strcmp(p.req.error, c->err) != 0) {
			fprintf(stderr, "\ncase %zu %s: rc %d err %s", i, c->in,
				p.rc, p.rc == PROTO_BAD ? p.req.error : "-");
			CU_FAIL("wrong error");
		}
		CU_ASSERT_EQUAL(p.req.consumed, strchr(c->in, '\n') - c->in + 1 +
				(strstr(c->in, "abcd") ? 4 : 0));
		CU_ASSERT_EQUAL(p.req.swallow, c->swallow);
		CU_ASSERT(!p.req.noreply);
		done(&p);
	}
	/* a long key: bad format before anything else */
	char line[300] = "mg ";
	memset(line + 3, 'x', 251);
	strcpy(line + 254, " v\r\n");
	struct parsed p;
	parse(&p, line, strlen(line));
	CU_ASSERT(p.rc == PROTO_BAD &&
		  !strcmp(p.req.error, "CLIENT_ERROR bad command line format\r\n"));
	done(&p);
	/* the too-large ms drops the key's old value, as memcached */
	parse(&p, "ms k 65 MA\r\n", 12);
	CU_ASSERT(p.rc == PROTO_BAD && p.req.drop_key && p.req.nkeys == 1 &&
		  p.req.keys[0].len == 1 && p.req.cmd == PROTO_CMD_SET);
	done(&p);
}

static void test_mg_flags(void)
{
	struct parsed p;
	const char *s = "mg key v c f s t h l k O99 q u T30 N-1 R5\r\n";
	parse(&p, s, strlen(s));
	CU_ASSERT_EQUAL_FATAL(p.rc, PROTO_REQ);
	CU_ASSERT_EQUAL(p.req.consumed, strlen(s));
	const struct meta_req *m = &p.m;
	CU_ASSERT_EQUAL(m->spec.cmd, META_MG);
	CU_ASSERT(m->spec.value && m->spec.quiet && !m->spec.b64);
	CU_ASSERT_EQUAL(m->spec.nret, 14);
	CU_ASSERT(!memcmp(m->spec.ret, "vcfsthlkOquTNR", 14));
	CU_ASSERT(m->spec.olen == 3 && !memcmp(m->spec.opaque, "O99", 3));
	CU_ASSERT_EQUAL(m->q.op, SHARD_OP_MGET);
	CU_ASSERT(m->q.klen == 3 && !memcmp(m->q.key, "key", 3));
	CU_ASSERT_EQUAL(m->q.mflags, SHARD_MF_VALUE | SHARD_MF_NOBUMP |
			SHARD_MF_TTL | SHARD_MF_VIVIFY | SHARD_MF_RECACHE |
			SHARD_MF_META);
	CU_ASSERT(m->q.exptime == 30 && m->q.vivify == -1 && m->q.recache == 5);
	CU_ASSERT(p.req.nkeys == 1 && p.req.keys[0].ptr == m->q.key);
	done(&p);
	/* only the first byte names a flag */
	parse(&p, "mg key vxyz kk\n", 15);
	CU_ASSERT(p.rc == PROTO_REQ && p.m.spec.value && p.m.spec.nret == 2);
	done(&p);
}

static void test_ms_md_ma(void)
{
	struct parsed p;
	const char *s = "ms key 3 F7 T-5 C12 I q k c b O1\r\nabc\r\n";
	parse(&p, "ms a2V5 3 F7 T-5 C12 I q k c b O1\r\nabc\r\n",
	      strlen(s) + 1);
	CU_ASSERT_EQUAL_FATAL(p.rc, PROTO_REQ);
	struct shard_req *q = &p.m.q;
	CU_ASSERT_EQUAL(q->op, SHARD_OP_CAS);
	CU_ASSERT(q->klen == 3 && !memcmp(q->key, "key", 3) &&
		  q->key == p.m.kbuf && p.m.spec.b64);
	CU_ASSERT(q->flags == 7 && q->exptime == -5 && q->cas == 12);
	CU_ASSERT_EQUAL(q->mflags, SHARD_MF_CAS | SHARD_MF_STALE | SHARD_MF_META);
	CU_ASSERT(q->vlen == 3 && !memcmp(q->value, "abc", 3));
	CU_ASSERT_EQUAL(p.req.consumed, strlen(s) + 1);
	done(&p);
	static const struct { const char *mode; enum shard_op op; } MODES[] = {
		{ "", SHARD_OP_SET }, { " MS", SHARD_OP_SET },
		{ " ME", SHARD_OP_ADD }, { " MA", SHARD_OP_APPEND },
		{ " MP", SHARD_OP_PREPEND }, { " MR", SHARD_OP_REPLACE },
		{ " MR C1", SHARD_OP_CAS }, { " ME C1", SHARD_OP_ADD },
	};
	for (size_t i = 0; i < sizeof(MODES) / sizeof(MODES[0]); i++) {
		char line[64];
		int n = snprintf(line, sizeof(line), "ms k 1%s I\r\nx\r\n",
				 MODES[i].mode);
		parse(&p, line, (size_t)n);
		CU_ASSERT(p.rc == PROTO_REQ && p.m.q.op == MODES[i].op);
		/* I only stays with a compare-and-set */
		CU_ASSERT_EQUAL(!!(p.m.q.mflags & SHARD_MF_STALE),
				MODES[i].op == SHARD_OP_CAS);
		CU_ASSERT_EQUAL(p.m.spec.concat,
				MODES[i].op == SHARD_OP_APPEND ||
				MODES[i].op == SHARD_OP_PREPEND);
		done(&p);
	}
	parse(&p, "md k I T30 C5 x q\r\n", 19);
	CU_ASSERT(p.rc == PROTO_REQ && p.m.q.op == SHARD_OP_DELETE);
	CU_ASSERT_EQUAL(p.m.q.mflags, SHARD_MF_STALE | SHARD_MF_TTL |
			SHARD_MF_CAS | SHARD_MF_EMPTY | SHARD_MF_META);
	done(&p);
	/* E: the new cas, for every command; ms takes E0 as no E */
	static const struct { const char *in; uint64_t cas; bool set; } ES[] = {
		{ "ms k 1 E77 C5 MA\r\nx\r\n", 77, true },
		{ "ms k 1 E18446744073709551615\r\nx\r\n", UINT64_MAX, true },
		{ "ms k 1 E0\r\nx\r\n", 0, false },
		{ "md k I E9\r\n", 9, true },
		{ "md k E0 x\r\n", 0, true },
		{ "ma k E0 N0\r\n", 0, true },
		{ "mg k v N30 E12\r\n", 12, true },
	};
	for (size_t i = 0; i < sizeof(ES) / sizeof(ES[0]); i++) {
		parse(&p, ES[i].in, strlen(ES[i].in));
		CU_ASSERT(p.rc == PROTO_REQ && p.req.consumed == strlen(ES[i].in));
		CU_ASSERT_EQUAL(!!(p.m.q.mflags & SHARD_MF_SETCAS), ES[i].set);
		CU_ASSERT_EQUAL(p.m.q.new_cas, ES[i].cas);
		done(&p);
	}
	parse(&p, "ma k\r\n", 6);
	CU_ASSERT(p.rc == PROTO_REQ && p.m.q.op == SHARD_OP_INCR &&
		  p.m.q.delta == 1);
	done(&p);
	parse(&p, "ma k M- D0 N9 J4 v\r\n", 20);
	CU_ASSERT(p.rc == PROTO_REQ && p.m.q.op == SHARD_OP_DECR &&
		  p.m.q.delta == 0 && p.m.q.initial == 4 && p.m.q.vivify == 9);
	CU_ASSERT(p.m.q.mflags & SHARD_MF_VIVIFY);
	done(&p);
	parse(&p, "mn\r\n", 4);
	CU_ASSERT(p.rc == PROTO_REQ && p.m.spec.cmd == META_MN && p.req.consumed == 4);
	done(&p);
	parse(&p, "me Zm9v b\r\n", 11);
	CU_ASSERT(p.rc == PROTO_REQ && p.m.spec.cmd == META_ME &&
		  p.m.q.klen == 3 && !memcmp(p.m.q.key, "foo", 3));
	done(&p);
}

/* Every proper prefix asks for more; the whole parses the same. */
static void test_split_every_byte(void)
{
	static const char *const LINES[] = {
		"mg key v c f s t h l k O99 q\r\n",
		"ms key 5 T0 F1 c\r\nhello\r\n",
		"ms key 0\r\n\r\n",
		"md key I T5 q\r\n",
		"ma key N0 J5 D3 MD v\r\n",
		"ms key 2 E123 c\r\nhi\r\n",
		"mn\r\n",
		"me key\r\n",
		"mg Zm9v b k v\n",
	};
	for (size_t i = 0; i < sizeof(LINES) / sizeof(LINES[0]); i++) {
		size_t n = strlen(LINES[i]);
		const char *nl = strchr(LINES[i], '\n');
		struct parsed whole;
		parse(&whole, LINES[i], n);
		CU_ASSERT_EQUAL(whole.rc, PROTO_REQ);
		CU_ASSERT_EQUAL(whole.req.consumed, n);
		for (size_t cut = 0; cut < n; cut++) {
			struct parsed p;
			parse(&p, LINES[i], cut);
			CU_ASSERT_EQUAL(p.rc, PROTO_NEED_MORE);
			if (cut > (size_t)(nl - LINES[i]))
				CU_ASSERT_EQUAL(p.req.need, n);
			done(&p);
		}
		done(&whole);
	}
}

static void test_base64(void)
{
	char enc[META_B64_KEY_MAX + 4], dec[SHARD_KEY_MAX];
	unsigned char raw[250];
	for (size_t n = 1; n <= 187; n++) {
		for (size_t i = 0; i < n; i++)
			raw[i] = (unsigned char)(i * 37 + n);
		size_t e = meta_b64_encode(raw, n, enc);
		CU_ASSERT_EQUAL(e, (n + 2) / 3 * 4);
		CU_ASSERT_EQUAL(meta_b64_decode(enc, e, dec, sizeof(dec)), n);
		CU_ASSERT(!memcmp(dec, raw, n));
	}
	CU_ASSERT_EQUAL(meta_b64_decode("Zm9", 3, dec, sizeof(dec)), 0);
	CU_ASSERT_EQUAL(meta_b64_decode("====", 4, dec, sizeof(dec)), 0);
	CU_ASSERT_EQUAL(meta_b64_decode("Zm9v", 4, dec, 2), 0);
	/* memcached skips bytes outside the alphabet */
	CU_ASSERT_EQUAL(meta_b64_decode("Zm!9v", 5, dec, sizeof(dec)), 3);
}

static void test_compose(void)
{
	char out[META_LINE_MAX];
	struct parsed p;
	parse(&p, "mg key s v t c f h l k O7 b\r\n", 29);
	CU_ASSERT_EQUAL_FATAL(p.rc, PROTO_BAD); /* "key" is not base64 */
	done(&p);
	parse(&p, "mg a2V5 s v t c f h l k O7 b\r\n", 30);
	CU_ASSERT_EQUAL_FATAL(p.rc, PROTO_REQ);
	struct shard_res r = { .status = SHARD_HIT, .ttl = 5, .la = 2,
			       .mbits = SHARD_MB_FETCHED | SHARD_MB_STALE |
					SHARD_MB_WON | SHARD_MB_TOKEN };
	struct shard_view v = { .key = "key", .klen = 3, .flags = 9, .vlen = 4,
				.cas = 77, .res = &r };
	size_t n = meta_compose_hit(out, &p.m.spec, &v);
	const char *want = "VA 4 s4 t5 c77 f9 h1 l2 ka2V5 b O7 Z X W\r\n";
	CU_ASSERT(n == strlen(want) && !memcmp(out, want, n));
	r.status = SHARD_NOT_FOUND;
	n = meta_compose(out, &p.m.spec, "key", 3, 0, &r);
	want = "EN ka2V5 b O7\r\n";
	CU_ASSERT(n == strlen(want) && !memcmp(out, want, n));
	done(&p);

	parse(&p, "ma k v t c O1 k q\r\n", 19);
	r = (struct shard_res){ .status = SHARD_NUMBER, .number = 42,
				.cas = 5, .ttl = -1 };
	CU_ASSERT_EQUAL(meta_compose(out, &p.m.spec, "k", 1, 0, &r), 0);
	r.mbits = SHARD_MB_CREATED;
	n = meta_compose(out, &p.m.spec, "k", 1, 0, &r);
	want = "VA 2 t-1 c5 O1 kk\r\n42\r\n";
	CU_ASSERT(n == strlen(want) && !memcmp(out, want, n));
	done(&p);

	parse(&p, "ms k 1 c k O2 q\r\nx\r\n", 20);
	r = (struct shard_res){ .status = SHARD_STORED, .cas = 8 };
	CU_ASSERT_EQUAL(meta_compose(out, &p.m.spec, "k", 1, 0, &r), 0);
	r = (struct shard_res){ .status = SHARD_EXISTS };
	n = meta_compose(out, &p.m.spec, "k", 1, 0, &r);
	CU_ASSERT(n == 13 && !memcmp(out, "EX c0 kk O2\r\n", n));
	r.status = SHARD_NOT_STORED;
	n = meta_compose(out, &p.m.spec, "k", 1, 0, &r);
	CU_ASSERT(n == 13 && !memcmp(out, "NS c0 kk O2\r\n", n));
	done(&p);

	parse(&p, "me k\r\n", 6);
	r = (struct shard_res){ .status = SHARD_HIT, .ttl = 30, .la = 3,
				.cas = 9, .size = 17 };
	n = meta_compose(out, &p.m.spec, "k", 1, 0, &r);
	want = "ME k exp=-30 la=3 cas=9 fetch=no cls=1 size=17\r\n";
	CU_ASSERT(n == strlen(want) && !memcmp(out, want, n));
	done(&p);
}

/* ---- the shard's meta operations --------------------------------------- */

struct cap {
	char head[META_LINE_MAX];
	char val[64];
	struct shard_res res;
	struct shard_view v;
	int calls;
};

static char *cap_sink(void *ctx, const struct shard_view *v)
{
	struct cap *c = ctx;
	c->v = *v;
	c->res = *v->res;
	c->calls++;
	return c->val;
}

static struct shard *mk(void)
{
	struct shard_config c = { .id = 0, .count = 1, .mem_limit = 4 << 20,
				  .item_max = 1 << 20 };
	struct shard *s = shard_create(&c);
	CU_ASSERT_FATAL(s != NULL);
	shard_set_time(s, NOW);
	return s;
}

static int run(struct shard *s, struct shard_req q, struct shard_res *r,
	       struct cap *c)
{
	q.key = "key";
	q.klen = 3;
	q.hash = shard_hash("key", 3);
	q.mflags |= SHARD_MF_META;
	memset(c, 0, sizeof(*c));
	int rc = shard_exec(s, &q, r, q.op == SHARD_OP_MGET ? cap_sink : NULL, c);
	CU_ASSERT_EQUAL(shard_check(s), 0);
	return rc;
}

static void test_shard_stale_flow(void)
{
	struct shard *s = mk();
	struct shard_res r;
	struct cap c;
	run(s, (struct shard_req){ .op = SHARD_OP_SET, .value = "old", .vlen = 3,
				   .exptime = 100 }, &r, &c);
	uint64_t cas0 = r.cas;
	struct shard_req mg = { .op = SHARD_OP_MGET, .mflags = SHARD_MF_VALUE };
	run(s, mg, &r, &c);
	CU_ASSERT(r.status == SHARD_HIT && c.calls == 1 && c.res.mbits == 0);
	CU_ASSERT(c.res.ttl == 100 && !memcmp(c.val, "old", 3));
	/* md I T30: stale, new cas, ttl 30 */
	run(s, (struct shard_req){ .op = SHARD_OP_DELETE, .exptime = 30,
				   .mflags = SHARD_MF_STALE | SHARD_MF_TTL }, &r, &c);
	CU_ASSERT(r.status == SHARD_DELETED && r.cas > cas0);
	run(s, mg, &r, &c);
	CU_ASSERT_EQUAL(c.res.mbits, SHARD_MB_FETCHED | SHARD_MB_STALE | SHARD_MB_WON);
	CU_ASSERT(c.res.ttl == 30 && !memcmp(c.val, "old", 3));
	run(s, mg, &r, &c);
	CU_ASSERT_EQUAL(c.res.mbits, SHARD_MB_FETCHED | SHARD_MB_STALE | SHARD_MB_TOKEN);
	/* a stale cas store keeps stale and win */
	run(s, (struct shard_req){ .op = SHARD_OP_CAS, .cas = cas0, .value = "mid",
				   .vlen = 3, .mflags = SHARD_MF_STALE }, &r, &c);
	CU_ASSERT_EQUAL(r.status, SHARD_STORED);
	run(s, mg, &r, &c);
	CU_ASSERT(c.res.mbits & SHARD_MB_STALE && c.res.mbits & SHARD_MB_TOKEN);
	CU_ASSERT(c.res.ttl == 30 && !memcmp(c.val, "mid", 3));
	/* the winner's set clears both */
	run(s, (struct shard_req){ .op = SHARD_OP_SET, .value = "new", .vlen = 3 },
	    &r, &c);
	run(s, mg, &r, &c);
	CU_ASSERT(c.res.mbits == 0 && c.res.ttl == -1 && !memcmp(c.val, "new", 3));
	/* recache: win once when the ttl is under R */
	mg.mflags |= SHARD_MF_RECACHE | SHARD_MF_TTL;
	mg.exptime = 10;
	mg.recache = 20;
	run(s, mg, &r, &c);
	CU_ASSERT_EQUAL(c.res.mbits, SHARD_MB_FETCHED | SHARD_MB_WON);
	run(s, mg, &r, &c);
	CU_ASSERT_EQUAL(c.res.mbits, SHARD_MB_FETCHED | SHARD_MB_TOKEN);
	shard_destroy(s);
}

static void test_shard_vivify_and_x(void)
{
	struct shard *s = mk();
	struct shard_res r;
	struct cap c;
	struct shard_req mg = { .op = SHARD_OP_MGET, .vivify = 30,
				.mflags = SHARD_MF_VALUE | SHARD_MF_VIVIFY };
	run(s, mg, &r, &c);
	CU_ASSERT(r.status == SHARD_HIT && c.calls == 1);
	CU_ASSERT_EQUAL(c.res.mbits, SHARD_MB_WON | SHARD_MB_CREATED);
	CU_ASSERT(c.res.ttl == 30 && c.v.vlen == 0);
	run(s, mg, &r, &c);
	CU_ASSERT_EQUAL(c.res.mbits, SHARD_MB_TOKEN);
	/* ma N: created with J, then counts */
	struct shard_req ma = { .op = SHARD_OP_INCR, .delta = 1, .initial = 7,
				.vivify = 0, .mflags = SHARD_MF_VIVIFY };
	run(s, (struct shard_req){ .op = SHARD_OP_DELETE }, &r, &c);
	run(s, ma, &r, &c);
	CU_ASSERT(r.status == SHARD_NUMBER && r.number == 7 &&
		  (r.mbits & SHARD_MB_CREATED) && r.ttl == -1);
	run(s, ma, &r, &c);
	CU_ASSERT(r.status == SHARD_NUMBER && r.number == 8 && !r.mbits);
	/* ma C: a wrong non-zero cas is EXISTS; C0 compares nothing */
	uint64_t cas = r.cas;
	ma.mflags = SHARD_MF_CAS;
	ma.cas = cas + 1;
	run(s, ma, &r, &c);
	CU_ASSERT_EQUAL(r.status, SHARD_EXISTS);
	ma.cas = cas;
	ma.mflags |= SHARD_MF_TTL;
	ma.exptime = 50;
	run(s, ma, &r, &c);
	CU_ASSERT(r.status == SHARD_NUMBER && r.number == 9 && r.ttl == 50);
	/* md x: empty value, flags and exptime kept */
	run(s, (struct shard_req){ .op = SHARD_OP_SET, .value = "abc", .vlen = 3,
				   .flags = 4, .exptime = 60 }, &r, &c);
	run(s, (struct shard_req){ .op = SHARD_OP_DELETE,
				   .mflags = SHARD_MF_EMPTY }, &r, &c);
	CU_ASSERT_EQUAL(r.status, SHARD_DELETED);
	run(s, (struct shard_req){ .op = SHARD_OP_MGET }, &r, &c);
	CU_ASSERT(c.v.vlen == 0 && c.v.flags == 4 && c.res.ttl == 60);
	cas = c.v.cas;
	/* md C: compared delete */
	run(s, (struct shard_req){ .op = SHARD_OP_DELETE, .cas = 1,
				   .mflags = SHARD_MF_CAS }, &r, &c);
	CU_ASSERT_EQUAL(r.status, SHARD_EXISTS);
	run(s, (struct shard_req){ .op = SHARD_OP_DELETE, .cas = cas,
				   .mflags = SHARD_MF_CAS }, &r, &c);
	CU_ASSERT_EQUAL(r.status, SHARD_DELETED);
	CU_ASSERT(!shard_peek(s, "key", 3));
	/* append with C */
	run(s, (struct shard_req){ .op = SHARD_OP_SET, .value = "a", .vlen = 1 },
	    &r, &c);
	cas = r.cas;
	run(s, (struct shard_req){ .op = SHARD_OP_APPEND, .value = "b", .vlen = 1,
				   .cas = cas + 5, .mflags = SHARD_MF_CAS }, &r, &c);
	CU_ASSERT_EQUAL(r.status, SHARD_EXISTS);
	run(s, (struct shard_req){ .op = SHARD_OP_APPEND, .value = "b", .vlen = 1,
				   .cas = cas, .mflags = SHARD_MF_CAS }, &r, &c);
	CU_ASSERT_EQUAL(r.status, SHARD_STORED);
	/* u: no bump, h reports the state before */
	struct shard_req u = { .op = SHARD_OP_MGET, .mflags = SHARD_MF_NOBUMP };
	run(s, u, &r, &c);
	CU_ASSERT_EQUAL(c.res.mbits & SHARD_MB_FETCHED, 0);
	run(s, u, &r, &c);
	CU_ASSERT_EQUAL(c.res.mbits & SHARD_MB_FETCHED, 0);
	CU_ASSERT(c.res.size == 11 + 3 + 2 && c.res.la == 0);
	shard_set_time(s, NOW + 7);
	run(s, u, &r, &c);
	CU_ASSERT_EQUAL(c.res.la, 7);
	shard_destroy(s);
}

/* E on the meta operations: md I and md x, mg N and ma N vivify. */
static void test_shard_explicit_cas(void)
{
	struct shard *s = mk();
	struct shard_res r;
	struct cap c;
	const struct shard_req mg = { .op = SHARD_OP_MGET };
	run(s, (struct shard_req){ .op = SHARD_OP_SET, .value = "abc", .vlen = 3,
				   .new_cas = 9000, .mflags = SHARD_MF_SETCAS },
	    &r, &c);
	CU_ASSERT(r.status == SHARD_STORED && r.cas == 9000);
	run(s, mg, &r, &c);
	CU_ASSERT(c.v.cas == 9000 && c.res.size == 11 + 8 + 3 + 3);
	/* md x keeps the cas (memcached 1.6.27: the item keeps its cas) */
	run(s, (struct shard_req){ .op = SHARD_OP_DELETE,
				   .mflags = SHARD_MF_EMPTY }, &r, &c);
	run(s, mg, &r, &c);
	CU_ASSERT(c.v.cas == 9000 && c.v.vlen == 0);
	/* md I E: stale, E's cas in place; md C compares against it */
	run(s, (struct shard_req){ .op = SHARD_OP_DELETE, .cas = 9000,
				   .new_cas = 9100, .mflags = SHARD_MF_CAS |
				   SHARD_MF_STALE | SHARD_MF_SETCAS }, &r, &c);
	CU_ASSERT(r.status == SHARD_DELETED && r.cas == 9100);
	run(s, mg, &r, &c);
	CU_ASSERT(c.v.cas == 9100 && (c.res.mbits & SHARD_MB_STALE));
	/* md I without E: a new cas from the sequence, the field goes */
	run(s, (struct shard_req){ .op = SHARD_OP_DELETE, .exptime = 30,
				   .mflags = SHARD_MF_STALE | SHARD_MF_TTL },
	    &r, &c);
	run(s, mg, &r, &c);
	CU_ASSERT(c.v.cas == r.cas && c.v.cas != 9100 && c.res.ttl == 30);
	CU_ASSERT(c.res.size == 11 + 4 + 3);
	/* md x E: empty, E's cas */
	run(s, (struct shard_req){ .op = SHARD_OP_DELETE, .new_cas = 9200,
				   .mflags = SHARD_MF_EMPTY | SHARD_MF_SETCAS },
	    &r, &c);
	run(s, mg, &r, &c);
	CU_ASSERT(c.v.cas == 9200 && c.res.ttl == 30 &&
		  (c.res.mbits & SHARD_MB_STALE));
	/* mg N E: the created item has E's cas; E on a hit changes nothing */
	run(s, (struct shard_req){ .op = SHARD_OP_DELETE }, &r, &c);
	struct shard_req viv = { .op = SHARD_OP_MGET, .vivify = 30,
				 .new_cas = 9300,
				 .mflags = SHARD_MF_VIVIFY | SHARD_MF_SETCAS };
	run(s, viv, &r, &c);
	CU_ASSERT(c.v.cas == 9300 && (c.res.mbits & SHARD_MB_CREATED));
	viv.new_cas = 5;
	run(s, viv, &r, &c);
	CU_ASSERT(c.v.cas == 9300 && !(c.res.mbits & SHARD_MB_CREATED));
	/* ma N E: created with E's cas */
	run(s, (struct shard_req){ .op = SHARD_OP_DELETE }, &r, &c);
	run(s, (struct shard_req){ .op = SHARD_OP_INCR, .initial = 3,
				   .new_cas = 9400, .mflags = SHARD_MF_VIVIFY |
				   SHARD_MF_SETCAS }, &r, &c);
	CU_ASSERT(r.status == SHARD_NUMBER && r.number == 3 && r.cas == 9400);
	run(s, mg, &r, &c);
	CU_ASSERT(c.v.cas == 9400);
	shard_destroy(s);
}

int test_meta_register(void)
{
	CU_pSuite s = CU_add_suite("meta", NULL, NULL);
	if (!s)
		return -1;
	if (!CU_add_test(s, "errors in memcached's order", test_errors) ||
	    !CU_add_test(s, "mg flags", test_mg_flags) ||
	    !CU_add_test(s, "ms md ma mn me", test_ms_md_ma) ||
	    !CU_add_test(s, "split at every byte", test_split_every_byte) ||
	    !CU_add_test(s, "base64", test_base64) ||
	    !CU_add_test(s, "composers", test_compose) ||
	    !CU_add_test(s, "shard: stale-while-revalidate", test_shard_stale_flow) ||
	    !CU_add_test(s, "shard: vivify, md x, compares", test_shard_vivify_and_x) ||
	    !CU_add_test(s, "shard: explicit cas (E)", test_shard_explicit_cas))
		return -1;
	return 0;
}
