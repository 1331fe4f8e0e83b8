/*
 * fuzz_meta.c - libFuzzer target for the meta protocol parser and
 * composers (net/meta.c).
 *
 * The input is a byte stream as a connection receives it; lines that start
 * like a meta command go to meta_parse(), the rest to proto_parse(), as
 * net/conn.c does, and `consumed` (and `swallow`) bytes are dropped before
 * the next parse. Checked against meta.h's contract:
 *  - consumed in (0, len]; a refused request has a static "...\r\n" line;
 *  - a request's key is 1..250 bytes inside the buffer or inside the
 *    meta_req's own kbuf (base64), and is req->keys[0];
 *  - an ms value lies inside the request and ends right before "\r\n";
 *  - the request ends exactly at `consumed`: an exact-size copy gives the
 *    same result, one byte less asks for more;
 *  - every composer, fed the parsed recipe with extreme answers (largest
 *    numbers, every meta bit), stays within META_LINE_MAX (an exact-size
 *    heap buffer, so ASan catches one byte more).
 *
 * Build: make fuzz (or build/fuzz/fuzz_meta); run from the corpus in
 * tests/fuzz/corpus/meta.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/meta.h"

#define REQUIRE(cond)                                                       \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "invariant failed: %s (line %d)\n", \
				#cond, __LINE__);                           \
			abort();                                            \
		}                                                           \
	} while (0)

static const struct proto_limits LIM = {
	.line_max = 2048, .item_max = 1024, .keys_max = 24,
};

static bool inside(const char *p, size_t n, const char *buf, size_t len)
{
	return p >= buf && n <= len && (size_t)(p - buf) <= len - n;
}

static void compose_all(const struct meta_req *m)
{
	char *out = malloc(META_LINE_MAX);
	struct shard_res r = {
		.flags = UINT32_MAX, .vlen = UINT32_MAX, .cas = UINT64_MAX,
		.number = UINT64_MAX, .ttl = INT64_MAX, .la = UINT32_MAX,
		.size = UINT32_MAX, .mbits = 0xff,
	};
	struct shard_view v = { .key = m->q.key, .klen = m->q.klen,
				.flags = UINT32_MAX, .vlen = UINT32_MAX,
				.cas = UINT64_MAX, .res = &r };
	REQUIRE(meta_compose_hit(out, &m->spec, &v) <= META_LINE_MAX);
	for (int st = SHARD_STORED; st <= SHARD_NO_MEMORY; st++) {
		r.status = (enum shard_status)st;
		REQUIRE(meta_compose(out, &m->spec, m->q.key, m->q.klen, 0, &r) <=
			META_LINE_MAX);
	}
	REQUIRE(meta_compose(out, &m->spec, m->q.key, m->q.klen, -12, &r) <=
		META_LINE_MAX);
	free(out);
}

static void check(const char *buf, size_t len, enum proto_rc rc,
		  const struct proto_req *req, const struct meta_req *m,
		  const struct proto_key *keys)
{
	REQUIRE(req->consumed > 0 && req->consumed <= len);
	if (rc == PROTO_BAD) {
		size_t n = strlen(req->error);
		REQUIRE(n >= 4 && req->error[n - 2] == '\r' &&
			req->error[n - 1] == '\n');
		return;
	}
	if (m->spec.cmd == META_MN)
		return;
	REQUIRE(req->nkeys == 1 && keys[0].ptr == m->q.key &&
		keys[0].len == m->q.klen);
	REQUIRE(m->q.klen >= 1 && m->q.klen <= SHARD_KEY_MAX);
	REQUIRE(inside(m->q.key, m->q.klen, buf, req->consumed) ||
		inside(m->q.key, m->q.klen, m->kbuf, sizeof(m->kbuf)));
	REQUIRE(m->spec.olen <= META_OPAQUE_MAX);
	if (m->spec.cmd == META_MS) {
		REQUIRE(m->q.vlen <= LIM.item_max);
		REQUIRE(m->q.value + m->q.vlen + 2 == buf + req->consumed);
	} else {
		REQUIRE(m->q.vlen == 0);
	}
	compose_all(m);
}

static void check_exact(const char *buf, const struct proto_req *req,
			enum proto_rc rc)
{
	struct proto_key keys[24];
	struct proto_req r2;
	struct meta_req m2;
	char *copy = malloc(req->consumed);
	memcpy(copy, buf, req->consumed);
	enum proto_rc rc2 = meta_parse(copy, req->consumed, &LIM, keys, &r2, &m2);
	REQUIRE(rc2 == rc && r2.consumed == req->consumed &&
		r2.error == req->error && r2.swallow == req->swallow);
	if (rc == PROTO_REQ) {
		rc2 = meta_parse(copy, req->consumed - 1, &LIM, keys, &r2, &m2);
		REQUIRE(rc2 == PROTO_NEED_MORE);
	}
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size ? size : 1);
	memcpy(buf, data, size);
	struct proto_key keys[24];
	size_t off = 0;
	while (off < size) {
		const char *p = buf + off;
		size_t n = size - off;
		struct proto_req req;
		struct meta_req m;
		enum proto_rc rc;
		if (meta_is_cmd(p, n)) {
			rc = meta_parse(p, n, &LIM, keys, &req, &m);
			if (rc == PROTO_NEED_MORE)
				break;
			check(p, n, rc, &req, &m, keys);
			check_exact(p, &req, rc);
		} else {
			rc = proto_parse(p, n, &LIM, keys, &req);
			if (rc == PROTO_NEED_MORE)
				break;
		}
		if (req.close)
			break;
		off += req.consumed;
		off += req.swallow < size - off ? req.swallow : size - off;
	}
	free(buf);
	return 0;
}
