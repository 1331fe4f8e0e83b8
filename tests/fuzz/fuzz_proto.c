/*
 * fuzz_proto.c - libFuzzer target for the text protocol parser
 * (net/proto.c).
 *
 * The input is a byte stream as a connection would receive it. It is parsed
 * the way a connection does: parse, drop `consumed` (and `swallow`) bytes,
 * parse the rest, until the parser asks for more or for a close. Every
 * result is checked against the contract of proto.h:
 *  - consumed <= bytes given; consumed > 0 unless NEED_MORE;
 *  - keys, value and argument point inside the request's bytes; keys are
 *    1..250 bytes without control characters, at most keys_max of them;
 *  - a storage request's value ends right before the final "\r\n";
 *  - the request is complete exactly at `consumed`: parsing only those
 *    bytes (an exact-size copy, so ASan sees any read past the end) gives
 *    the same result, and one byte less asks for more;
 *  - NEED_MORE's `need`, when set, is more than what was given;
 *  - a refused request has a static "...\r\n" error line, or an empty one
 *    when it closes the connection;
 *  - a read line that goes on (`more`) is continued with
 *    proto_parse_more() as a connection does, its keys under the same
 *    rules; a refusal with skip_line drops input through the next "\n".
 *  - a line the connection's get shortcut (proto_get1) takes is a get of
 *    the same one key and length by proto_parse.
 * The composers are run on what was parsed, against their stated room.
 *
 * A first byte below 0x08 selects tighter limits (and is not part of the
 * stream), so the fuzzer explores the limits' edges too; plain-text seeds
 * get the defaults.
 *
 * Build (from the project root):
 *   clang-14 -std=c11 -g -O1 -D_GNU_SOURCE -I. \
 *     -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
 *     tests/fuzz/fuzz_proto.c net/proto.c -o build/fuzz_proto
 *   build/fuzz_proto -max_total_time=60 tests/fuzz/corpus/proto
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/proto.h"

#define REQUIRE(cond)                                                       \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "invariant failed: %s (line %d)\n", \
				#cond, __LINE__);                           \
			abort();                                            \
		}                                                           \
	} while (0)

static const struct proto_limits PROFILES[8] = {
	{ .line_max = 2048, .item_max = 1024, .keys_max = 24 },
	{ .line_max = 16, .item_max = 8, .keys_max = 1 },
	{ .line_max = 64, .item_max = 0, .keys_max = 2 },
	{ .line_max = 300, .item_max = 300, .keys_max = 4 },
	{ .line_max = 1, .item_max = 0, .keys_max = 1 },
	{ .line_max = 270, .item_max = 65535, .keys_max = 250 },
	{ .line_max = 2, .item_max = 1, .keys_max = 1 },
	{ .line_max = 4096, .item_max = 1 << 20, .keys_max = 1000 },
};

static bool inside(const char *p, size_t n, const char *buf, size_t len)
{
	return p >= buf && n <= len && (size_t)(p - buf) <= len - n;
}

static bool is_store(enum proto_cmd c)
{
	return c >= PROTO_CMD_SET && c <= PROTO_CMD_CAS;
}

static void check_error(const struct proto_req *r)
{
	REQUIRE(r->error != NULL);
	size_t n = strlen(r->error);
	if (n == 0 && r->close)
		return;
	REQUIRE(n >= 7 && r->error[n - 2] == '\r' && r->error[n - 1] == '\n');
	REQUIRE(memchr(r->error, '\n', n - 1) == NULL);
}

static void check_req(const struct proto_req *r, const char *buf, size_t len,
		      const struct proto_limits *lim,
		      const struct proto_key *keys)
{
	REQUIRE(r->consumed > 0 && r->consumed <= len);
	REQUIRE(r->keys == keys);
	REQUIRE(r->nkeys <= lim->keys_max);
	REQUIRE(r->cmd <= PROTO_CMD_LRU_CRAWLER);
	if (proto_is_read(r->cmd) && !r->more)
		REQUIRE(r->nkeys >= 1 || r->checked);
	if (r->cmd >= PROTO_CMD_SET && r->cmd <= PROTO_CMD_DECR)
		REQUIRE(r->nkeys == 1);
	for (uint32_t i = 0; i < r->nkeys; i++) {
		const struct proto_key *k = &keys[i];
		REQUIRE(k->len >= 1 && k->len <= SHARD_KEY_MAX);
		REQUIRE(inside(k->ptr, k->len, buf, r->consumed));
		for (uint8_t j = 0; j < k->len; j++) {
			unsigned char c = (unsigned char)k->ptr[j];
			REQUIRE(c > 0x20 && c != 0x7f);
		}
	}
	if (is_store(r->cmd)) {
		REQUIRE(r->value != NULL);
		REQUIRE(r->vlen <= lim->item_max);
		REQUIRE(inside(r->value, r->vlen, buf, r->consumed));
		REQUIRE(r->value + r->vlen + 2 == buf + r->consumed);
		REQUIRE(buf[r->consumed - 2] == '\r' &&
			buf[r->consumed - 1] == '\n');
	} else {
		REQUIRE(r->value == NULL && r->vlen == 0);
		REQUIRE(r->more || buf[r->consumed - 1] == '\n');
	}
	if (r->arg)
		REQUIRE(inside(r->arg, r->arg_len, buf, r->consumed));
}

static bool same(const struct proto_req *a, const char *abuf,
		 const struct proto_req *b, const char *bbuf)
{
	if (a->consumed != b->consumed || a->cmd != b->cmd ||
	    a->noreply != b->noreply || a->flags != b->flags ||
	    a->exptime != b->exptime || a->cas != b->cas ||
	    a->delta != b->delta || a->level != b->level ||
	    a->vlen != b->vlen || a->nkeys != b->nkeys ||
	    a->arg_len != b->arg_len || a->error != b->error ||
	    a->swallow != b->swallow || a->close != b->close)
		return false;
	if ((a->value == NULL) != (b->value == NULL) ||
	    (a->value && a->value - abuf != b->value - bbuf))
		return false;
	if ((a->arg == NULL) != (b->arg == NULL) ||
	    (a->arg && a->arg - abuf != b->arg - bbuf))
		return false;
	for (uint32_t i = 0; i < a->nkeys; i++)
		if (a->keys[i].len != b->keys[i].len ||
		    a->keys[i].ptr - abuf != b->keys[i].ptr - bbuf)
			return false;
	return true;
}

/* The request ends exactly at `consumed`: the same from an exact copy of
   those bytes, NEED_MORE from one byte less. */
static void check_exact(const struct proto_req *r, const char *buf,
			const struct proto_limits *lim, struct proto_key *keys2)
{
	char *copy = malloc(r->consumed);
	REQUIRE(copy != NULL);
	memcpy(copy, buf, r->consumed);
	struct proto_req r2;
	enum proto_rc rc = proto_parse(copy, r->consumed, lim, keys2, &r2);
	REQUIRE(rc != PROTO_NEED_MORE);
	REQUIRE(same(r, buf, &r2, copy));
	rc = proto_parse(copy, r->consumed - 1, lim, keys2, &r2);
	REQUIRE(rc == PROTO_NEED_MORE);
	if (r2.need)
		REQUIRE(r2.need == r->consumed);
	free(copy);
}

static void check_composers(const struct proto_req *r)
{
	char out[PROTO_VALUE_LINE_MAX + 64];
	for (uint32_t i = 0; i < r->nkeys && i < 4; i++) {
		struct shard_view v = { .key = r->keys[i].ptr,
					.klen = r->keys[i].len,
					.flags = r->flags,
					.vlen = r->vlen,
					.cas = r->cas };
		size_t n = proto_value_line(out, &v, true);
		REQUIRE(n <= PROTO_VALUE_LINE_MAX);
		REQUIRE(memcmp(out, "VALUE ", 6) == 0);
		REQUIRE(out[n - 2] == '\r' && out[n - 1] == '\n');
	}
	struct shard_res res = { .status = (enum shard_status)(r->flags % 11),
				 .number = r->delta };
	size_t n = proto_status_line(out, r->cmd, &res);
	REQUIRE(n >= 3 && n <= 64 && out[n - 1] == '\n');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct proto_limits *lim = &PROFILES[0];
	if (size > 0 && data[0] < 8) {
		lim = &PROFILES[data[0]];
		data++;
		size--;
	}
	/* An exact-size copy: libFuzzer's buffer is, but be explicit. */
	char *buf = malloc(size ? size : 1);
	struct proto_key *keys = malloc(lim->keys_max * sizeof(*keys));
	struct proto_key *keys2 = malloc(lim->keys_max * sizeof(*keys2));
	REQUIRE(buf && keys && keys2);
	memcpy(buf, data, size);

	size_t at = 0;
	bool active = false;
	struct proto_stream st = { 0 };
	while (at < size) {
		const char *p = buf + at;
		size_t len = size - at;
		struct proto_req r;
		if (active) {
			enum proto_rc rc = proto_parse_more(p, len, lim, keys, &st, &r);
			if (rc == PROTO_NEED_MORE)
				break;
			if (rc == PROTO_BAD) {
				check_error(&r);
				REQUIRE(r.consumed <= len);
				active = false;
				if (r.skip_line) {
					REQUIRE(r.consumed == len);
					break;
				}
				at += r.consumed;
				continue;
			}
			REQUIRE(r.cmd == st.cmd && r.nkeys <= lim->keys_max);
			REQUIRE(r.consumed > 0 || r.nkeys > 0);
			check_req(&r, p, len, lim, keys);
			at += r.consumed;
			active = r.more;
			st.nkeys += r.nkeys;
			st.checked = r.checked;
			continue;
		}
		struct proto_key k1;
		size_t n1 = proto_get1(p, len, lim, &k1);
		enum proto_rc rc = proto_parse(p, len, lim, keys, &r);
		/* The connection's shortcut takes only what the walk reads as
		   a whole get of the same one key. */
		if (n1)
			REQUIRE(rc == PROTO_REQ && r.cmd == PROTO_CMD_GET &&
				r.nkeys == 1 && !r.more && r.consumed == n1 &&
				keys[0].ptr == k1.ptr && keys[0].len == k1.len);
		if (rc == PROTO_NEED_MORE) {
			REQUIRE(r.need == 0 || r.need > len);
			/* Without a "\n" in reach it can only be waiting for a
			   line under the limit. */
			if (!memchr(p, '\n', len <= lim->line_max ? len :
								    lim->line_max + 1))
				REQUIRE(len <= lim->line_max || proto_is_read(r.cmd));
			break;
		}
		REQUIRE(r.consumed > 0 && r.consumed <= len);
		if (rc == PROTO_BAD) {
			check_error(&r);
			if (r.close || r.skip_line)
				break;
			REQUIRE(r.swallow == 0 || r.consumed <= lim->line_max + 1);
			check_exact(&r, p, lim, keys2);
			size_t skip = r.consumed + r.swallow;
			at += skip < len ? skip : len;
			continue;
		}
		REQUIRE(rc == PROTO_REQ);
		check_req(&r, p, len, lim, keys);
		if (!r.more)
			check_exact(&r, p, lim, keys2);
		check_composers(&r);
		at += r.consumed;
		if (r.more) {
			active = true;
			st = (struct proto_stream){ .cmd = r.cmd, .exptime = r.exptime,
						    .nkeys = r.nkeys, .checked = r.checked };
		}
	}
	free(keys2);
	free(keys);
	free(buf);
	return 0;
}
