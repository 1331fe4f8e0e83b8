/*
 * test_proto.c - the text protocol parser and reply composers (net/proto.c).
 *
 * Most parser tests are one table of requests with the result each must give
 * (fields of a request, or the exact error line, consumed, swallow, close,
 * noreply). The table is run three ways: each request alone; each request
 * split at every byte (every proper prefix must ask for more, with the right
 * `need`, and the whole must give the same result); and all of them back to
 * back in one buffer. Every parse reads from a heap copy of exactly the
 * bytes given, so a read past `len` is an AddressSanitizer error.
 *
 * Then: key lengths and control characters in every key position, the line
 * limit, the key-count limit, swallowing a refused data block, random
 * compose-then-parse round trips, and the composers byte for byte.
 */
#include <CUnit/CUnit.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/proto.h"

#define KEYS_CAP 64

/* The limits of the table: small item_max so that "too large" is cheap. */
static const struct proto_limits LIM = {
	.line_max = 1024,
	.item_max = 64,
	.keys_max = 8,
};

static const char E_ERROR[] = "ERROR\r\n";
static const char E_FORMAT[] = "CLIENT_ERROR bad command line format\r\n";
static const char E_DELETE[] = "CLIENT_ERROR bad command line format.  "
			       "Usage: delete <key> [noreply]\r\n";
static const char E_DELTA[] = "CLIENT_ERROR invalid numeric delta argument\r\n";
static const char E_EXPTIME[] = "CLIENT_ERROR invalid exptime argument\r\n";
static const char E_CHUNK[] = "CLIENT_ERROR bad data chunk\r\n";
static const char E_LARGE[] = "SERVER_ERROR object too large for cache\r\n";
static const char E_CLOSE[] = ""; /* no reply, the connection closes */

/* An assertion whose failure message says which case failed. */
#define CHECK(cond, ...)                                                    \
	do {                                                                \
		int ok_ = !!(cond);                                         \
		char m_[1400] = "";                                          \
		if (!ok_)                                                   \
			snprintf(m_, sizeof(m_), __VA_ARGS__);              \
		CU_assertImplementation(ok_ ? CU_TRUE : CU_FALSE, __LINE__, \
					ok_ ? #cond : m_, __FILE__, "",     \
					CU_FALSE);                          \
	} while (0)

/* The error line of a refused request, NULL-safe. */
#define ASSERT_ERROR(got, want) \
	CU_ASSERT((got) != NULL && strcmp((got), (want)) == 0)

/* A printable rendering of input bytes for failure messages. */
static const char *esc(const char *s, size_t n, char *out, size_t room)
{
	size_t o = 0;
	for (size_t i = 0; i < n && o + 5 < room; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, room - o, "\\x%02x", c);
	}
	out[o < room ? o : room - 1] = 0;
	return out;
}

/* One parse from an exact-size heap copy of s[0..n). */
struct parse {
	char *buf;
	size_t len;
	enum proto_rc rc;
	struct proto_req req;
	struct proto_key keys[KEYS_CAP];
};

static void parse_run(struct parse *p, const char *s, size_t n,
		      const struct proto_limits *lim)
{
	p->buf = malloc(n ? n : 1);
	CU_ASSERT_FATAL(p->buf != NULL);
	memcpy(p->buf, s, n);
	p->len = n;
	p->rc = proto_parse(p->buf, n, lim, p->keys, &p->req);
}

static void parse_free(struct parse *p)
{
	free(p->buf);
	p->buf = NULL;
}

static bool inside(const char *ptr, size_t n, const char *buf, size_t len)
{
	return ptr >= buf && n <= len && (size_t)(ptr - buf) <= len - n;
}

/*
 * The same result, pointers compared as offsets from each buffer. NEED_MORE
 * compares only `need`.
 */
static void check_same(const struct parse *a, const struct parse *b,
		       const char *what)
{
	const struct proto_req *x = &a->req, *y = &b->req;
	CHECK(a->rc == b->rc, "%s: rc %d vs %d", what, a->rc, b->rc);
	if (a->rc != b->rc)
		return;
	if (a->rc == PROTO_NEED_MORE) {
		CHECK(x->need == y->need, "%s: need %zu vs %zu", what, x->need,
		      y->need);
		return;
	}
	CHECK(x->consumed == y->consumed, "%s: consumed %zu vs %zu", what,
	      x->consumed, y->consumed);
	if (a->rc == PROTO_BAD) {
		CHECK(x->error == y->error, "%s: error %s vs %s", what, x->error,
		      y->error);
		CHECK(x->swallow == y->swallow, "%s: swallow", what);
		CHECK(x->close == y->close, "%s: close", what);
		CHECK(x->noreply == y->noreply, "%s: noreply", what);
		return;
	}
	CHECK(x->cmd == y->cmd && x->noreply == y->noreply &&
		      x->flags == y->flags && x->exptime == y->exptime &&
		      x->cas == y->cas && x->delta == y->delta &&
		      x->level == y->level && x->vlen == y->vlen &&
		      x->nkeys == y->nkeys && x->arg_len == y->arg_len,
	      "%s: fields differ", what);
	CHECK((x->value == NULL) == (y->value == NULL) &&
		      (!x->value || x->value - a->buf == y->value - b->buf),
	      "%s: value", what);
	CHECK((x->arg == NULL) == (y->arg == NULL) &&
		      (!x->arg || x->arg - a->buf == y->arg - b->buf),
	      "%s: arg", what);
	for (uint32_t i = 0; i < x->nkeys && i < y->nkeys; i++)
		CHECK(x->keys[i].len == y->keys[i].len &&
			      x->keys[i].ptr - a->buf == y->keys[i].ptr - b->buf,
		      "%s: key %u", what, i);
}

/* What one request of the table must give. */
struct want {
	const char *in;
	size_t in_len;
	enum proto_rc rc;
	enum proto_cmd cmd;
	bool noreply;
	uint32_t flags;
	int64_t exptime;
	uint64_t cas;
	uint64_t delta;
	uint32_t level;
	const char *value;     /* NULL: no value */
	size_t vlen;
	const char *arg;       /* stats */
	const char *keys[10];  /* NULL-terminated */
	size_t consumed;       /* 0: all of `in` */
	const char *error;
	size_t swallow;
	bool close;
};

#define IN(s) .in = (s), .in_len = sizeof(s) - 1
#define REQ(c) .rc = PROTO_REQ, .cmd = (c)
#define BAD(e) .rc = PROTO_BAD, .error = (e)
#define VAL(s) .value = (s), .vlen = sizeof(s) - 1
#define K(...) .keys = { __VA_ARGS__ }

#define V64 "0123456789012345678901234567890123456789012345678901234567890123"

static const struct want TABLE[] = {
	/* reads */
	{ IN("get a\r\n"), REQ(PROTO_CMD_GET), K("a") },
	{ IN("get a bb ccc\r\n"), REQ(PROTO_CMD_GET), K("a", "bb", "ccc") },
	{ IN("gets a b\r\n"), REQ(PROTO_CMD_GETS), K("a", "b") },
	{ IN("get  a   b  \r\n"), REQ(PROTO_CMD_GET), K("a", "b") },
	{ IN("get a\n"), REQ(PROTO_CMD_GET), K("a") },
	{ IN("  get a\r\n"), REQ(PROTO_CMD_GET), K("a") },
	{ IN("get \x80\xff~!\r\n"), REQ(PROTO_CMD_GET), K("\x80\xff~!") },
	{ IN("get 1 2 3 4 5 6 7 8\r\n"), REQ(PROTO_CMD_GET),
	  K("1", "2", "3", "4", "5", "6", "7", "8") },
	{ IN("gat 100 k1 k2\r\n"), REQ(PROTO_CMD_GAT), .exptime = 100,
	  K("k1", "k2") },
	{ IN("gats -1 k\r\n"), REQ(PROTO_CMD_GATS), .exptime = -1, K("k") },
	{ IN("gat 0 k\r\n"), REQ(PROTO_CMD_GAT), K("k") },
	/* storage */
	{ IN("set k 5 100 3\r\nabc\r\n"), REQ(PROTO_CMD_SET), .flags = 5,
	  .exptime = 100, VAL("abc"), K("k") },
	{ IN("set k 4294967295 -1 0\r\n\r\n"), REQ(PROTO_CMD_SET),
	  .flags = 4294967295u, .exptime = -1, VAL(""), K("k") },
	{ IN("add k 1 2 3 noreply\r\nxyz\r\n"), REQ(PROTO_CMD_ADD),
	  .noreply = true, .flags = 1, .exptime = 2, VAL("xyz"), K("k") },
	{ IN("replace k 0 0 2\r\n\r\n\r\n"), REQ(PROTO_CMD_REPLACE),
	  VAL("\r\n"), K("k") },
	{ IN("append k 0 0 1\r\nz\r\n"), REQ(PROTO_CMD_APPEND), VAL("z"),
	  K("k") },
	{ IN("prepend k 0 0 1 noreply\r\nz\r\n"), REQ(PROTO_CMD_PREPEND),
	  .noreply = true, VAL("z"), K("k") },
	{ IN("cas k 7 8 2 18446744073709551615\r\nhi\r\n"), REQ(PROTO_CMD_CAS),
	  .flags = 7, .exptime = 8, .cas = UINT64_MAX, VAL("hi"), K("k") },
	{ IN("cas k 7 8 2 99 noreply\r\nhi\r\n"), REQ(PROTO_CMD_CAS),
	  .noreply = true, .flags = 7, .exptime = 8, .cas = 99, VAL("hi"),
	  K("k") },
	/* memcached ignores a last token that is not "noreply" */
	{ IN("set k 0 0 1 junk\r\nx\r\n"), REQ(PROTO_CMD_SET), VAL("x"),
	  K("k") },
	{ IN("set k 0 0 01\r\nx\r\n"), REQ(PROTO_CMD_SET), VAL("x"), K("k") },
	{ IN("set k 0 0 3\nabc\r\n"), REQ(PROTO_CMD_SET), VAL("abc"), K("k") },
	{ IN("set  k  1  2  3 \r\nabc\r\n"), REQ(PROTO_CMD_SET), .flags = 1,
	  .exptime = 2, VAL("abc"), K("k") },
	{ IN("set k 0 0 0 noreply\r\n\r\n"), REQ(PROTO_CMD_SET),
	  .noreply = true, VAL(""), K("k") },
	{ IN("set k 0 0 64\r\n" V64 "\r\n"), REQ(PROTO_CMD_SET), VAL(V64),
	  K("k") },
	{ IN("set k 0 0 5\r\na\nb\0c\r\n"), REQ(PROTO_CMD_SET),
	  VAL("a\nb\0c"), K("k") },
	{ IN("set k 0 -9223372036854775808 1\r\nx\r\n"), REQ(PROTO_CMD_SET),
	  .exptime = INT64_MIN, VAL("x"), K("k") },
	{ IN("set k 0 9223372036854775807 1\r\nx\r\n"), REQ(PROTO_CMD_SET),
	  .exptime = INT64_MAX, VAL("x"), K("k") },
	/* touch, delete, incr/decr */
	{ IN("touch k 10\r\n"), REQ(PROTO_CMD_TOUCH), .exptime = 10, K("k") },
	{ IN("touch k -5 noreply\r\n"), REQ(PROTO_CMD_TOUCH), .noreply = true,
	  .exptime = -5, K("k") },
	{ IN("touch k 10 junk\r\n"), REQ(PROTO_CMD_TOUCH), .exptime = 10,
	  K("k") },
	{ IN("delete k\r\n"), REQ(PROTO_CMD_DELETE), K("k") },
	{ IN("delete k 0\r\n"), REQ(PROTO_CMD_DELETE), K("k") },
	{ IN("delete k noreply\r\n"), REQ(PROTO_CMD_DELETE), .noreply = true,
	  K("k") },
	{ IN("delete k 0 noreply\r\n"), REQ(PROTO_CMD_DELETE), .noreply = true,
	  K("k") },
	{ IN("incr k 1\r\n"), REQ(PROTO_CMD_INCR), .delta = 1, K("k") },
	{ IN("decr k 18446744073709551615 noreply\r\n"), REQ(PROTO_CMD_DECR),
	  .noreply = true, .delta = UINT64_MAX, K("k") },
	{ IN("incr k 5 junk\r\n"), REQ(PROTO_CMD_INCR), .delta = 5, K("k") },
	{ IN("incr k 0\r\n"), REQ(PROTO_CMD_INCR), K("k") },
	/* whole-cache and connection commands */
	{ IN("flush_all\r\n"), REQ(PROTO_CMD_FLUSH_ALL) },
	{ IN("flush_all 10\r\n"), REQ(PROTO_CMD_FLUSH_ALL), .exptime = 10 },
	{ IN("flush_all noreply\r\n"), REQ(PROTO_CMD_FLUSH_ALL),
	  .noreply = true },
	{ IN("flush_all 10 noreply\r\n"), REQ(PROTO_CMD_FLUSH_ALL),
	  .noreply = true, .exptime = 10 },
	{ IN("flush_all -1\r\n"), REQ(PROTO_CMD_FLUSH_ALL), .exptime = -1 },
	{ IN("flush_all 7 0\r\n"), REQ(PROTO_CMD_FLUSH_ALL), .exptime = 7 },
	{ IN("version\r\n"), REQ(PROTO_CMD_VERSION) },
	{ IN("version extra\r\n"), REQ(PROTO_CMD_VERSION) },
	{ IN("quit\r\n"), REQ(PROTO_CMD_QUIT) },
	{ IN("quit now\n"), REQ(PROTO_CMD_QUIT) },
	{ IN("shutdown\r\n"), REQ(PROTO_CMD_SHUTDOWN) },
	{ IN("shutdown graceful\r\n"), REQ(PROTO_CMD_SHUTDOWN), .arg = "graceful" },
	{ IN("cache_memlimit 100\r\n"), REQ(PROTO_CMD_CACHE_MEMLIMIT), .delta = 100 },
	{ IN("cache_memlimit 8 noreply\r\n"), REQ(PROTO_CMD_CACHE_MEMLIMIT), .delta = 8,
	  .noreply = true },
	{ IN("cache_memlimit\r\n"), BAD(E_ERROR) },
	{ IN("cache_memlimit x\r\n"), BAD(E_ERROR) },
	{ IN("cache_memlimit -1\r\n"), BAD(E_ERROR) },
	{ IN("cache_memlimit 1 2 3\r\n"), BAD(E_ERROR) },
	{ IN("lru_crawler metadump all\r\n"), REQ(PROTO_CMD_LRU_CRAWLER), .arg = "metadump" },
	{ IN("verbosity 1\r\n"), REQ(PROTO_CMD_VERBOSITY), .level = 1 },
	{ IN("verbosity 2 noreply\r\n"), REQ(PROTO_CMD_VERBOSITY),
	  .noreply = true, .level = 2 },
	{ IN("verbosity 4294967295\r\n"), REQ(PROTO_CMD_VERBOSITY),
	  .level = UINT32_MAX },
	{ IN("stats\r\n"), REQ(PROTO_CMD_STATS) },
	{ IN("stats settings\r\n"), REQ(PROTO_CMD_STATS), .arg = "settings" },
	{ IN("stats reset now\r\n"), REQ(PROTO_CMD_STATS), .arg = "reset" },
	{ IN("stats  items \r\n"), REQ(PROTO_CMD_STATS), .arg = "items" },

	/* empty and unknown */
	{ IN("\r\n"), BAD(E_ERROR) },
	{ IN("\n"), BAD(E_ERROR) },
	{ IN("   \r\n"), BAD(E_ERROR) },
	{ IN("x\r\n"), BAD(E_ERROR) },
	{ IN("GET a\r\n"), BAD(E_ERROR) },
	{ IN("gett a\r\n"), BAD(E_ERROR) },
	{ IN("get\ta\r\n"), BAD(E_ERROR) },
	{ IN("GET / HTTP/1.1\r\n"), BAD(E_CLOSE), .close = true },
	{ IN("POST /x HTTP/1.0  \r\n"), BAD(E_CLOSE), .close = true },
	{ IN("foo HTTP\r\n"), BAD(E_ERROR) },
	{ IN("x HTTP/\r\n"), BAD(E_CLOSE), .close = true },
	{ IN("HTTP/1.0\r\n"), BAD(E_CLOSE), .close = true },
	/* reads */
	{ IN("get\r\n"), BAD(E_ERROR) },
	{ IN("get \r\n"), BAD(E_ERROR) },
	{ IN("gets\r\n"), BAD(E_ERROR) },
	{ IN("gat\r\n"), BAD(E_ERROR) },
	{ IN("gat 10\r\n"), BAD(E_ERROR) },
	{ IN("gat x k\r\n"), BAD(E_EXPTIME) },
	{ IN("gats 1x k\r\n"), BAD(E_EXPTIME) },
	{ IN("get a\tb\r\n"), BAD(E_FORMAT) },
	{ IN("get a\0b\r\n"), BAD(E_FORMAT) },
	{ IN("get a\x7f\r\n"), BAD(E_FORMAT) },
	{ IN("get a\r\r\n"), BAD(E_FORMAT) },
	/* storage: token count: ERROR, and the next line is not taken for
	   a data block (memcached's t/cas.t) */
	{ IN("set\r\n"), BAD(E_ERROR) },
	{ IN("set k 0 0\r\n"), BAD(E_ERROR) },
	{ IN("set k 0 0 1 noreply extra\r\n"), BAD(E_ERROR) },
	{ IN("cas k 0 0 1\r\n"), BAD(E_ERROR) },
	{ IN("cas k 0 0 1 2 noreply x\r\n"), BAD(E_ERROR) },
	/* storage: bad fields with a readable length */
	{ IN("set k -1 0 1\r\n"), BAD(E_FORMAT), .swallow = 3 },
	{ IN("set k 4294967296 0 1\r\n"), BAD(E_FORMAT), .swallow = 3 },
	{ IN("set k +5 0 1\r\n"), BAD(E_FORMAT), .swallow = 3 },
	{ IN("set k 1x 0 1\r\n"), BAD(E_FORMAT), .swallow = 3 },
	{ IN("set k 0 x 1\r\n"), BAD(E_FORMAT), .swallow = 3 },
	{ IN("set k 0 9223372036854775808 1\r\n"), BAD(E_FORMAT), .swallow = 3 },
	{ IN("set k 0 -9223372036854775809 1\r\n"), BAD(E_FORMAT),
	  .swallow = 3 },
	{ IN("set k 0 - 1\r\n"), BAD(E_FORMAT), .swallow = 3 },
	{ IN("set k\x01 0 0 1\r\n"), BAD(E_FORMAT), .swallow = 3 },
	{ IN("set k x 0 1 noreply\r\n"), BAD(E_FORMAT), .noreply = true,
	  .swallow = 3 },
	{ IN("cas k 0 0 1 x\r\n"), BAD(E_FORMAT), .swallow = 3 },
	{ IN("cas k 0 0 1 -1\r\n"), BAD(E_FORMAT), .swallow = 3 },
	{ IN("cas k 0 0 1 18446744073709551616\r\n"), BAD(E_FORMAT),
	  .swallow = 3 },
	/* storage: bad length, nothing to drop */
	{ IN("set k 0 0 -1\r\n"), BAD(E_FORMAT) },
	{ IN("set k 0 0 abc\r\n"), BAD(E_FORMAT) },
	{ IN("set k 0 0 \x31\x0d\x78\r\n"), BAD(E_FORMAT) },
	{ IN("set k 0 0 2147483646\r\n"), BAD(E_FORMAT) },
	{ IN("set k 0 0 4294967297\r\n"), BAD(E_FORMAT) },
	{ IN("set k 0 0 -1 noreply\r\n"), BAD(E_FORMAT), .noreply = true },
	/* storage: too large (the block is dropped even before it comes) */
	{ IN("set k 0 0 65\r\n"), BAD(E_LARGE), .swallow = 67 },
	{ IN("set k 0 0 65 noreply\r\n"), BAD(E_LARGE), .noreply = true,
	  .swallow = 67 },
	{ IN("append k 0 0 2147483645\r\n"), BAD(E_LARGE),
	  .swallow = 2147483647u },
	/* storage: bad data chunk (the whole block is consumed) */
	{ IN("set k 0 0 2\r\nxyz\r"), BAD(E_CHUNK) },
	{ IN("set k 0 0 2\r\nxy\n\n"), BAD(E_CHUNK) },
	{ IN("set k 0 0 2\r\nxy\r\r"), BAD(E_CHUNK) },
	{ IN("set k 0 0 0\r\nab"), BAD(E_CHUNK) },
	{ IN("cas k 0 0 1 5 noreply\r\nxxx"), BAD(E_CHUNK), .noreply = true },
	/* touch */
	{ IN("touch k\r\n"), BAD(E_ERROR) },
	{ IN("touch k 1 2 3\r\n"), BAD(E_ERROR) },
	{ IN("touch k x\r\n"), BAD(E_EXPTIME) },
	{ IN("touch k x noreply\r\n"), BAD(E_EXPTIME), .noreply = true },
	{ IN("touch k\x02 1\r\n"), BAD(E_FORMAT) },
	/* incr/decr */
	{ IN("incr k\r\n"), BAD(E_ERROR) },
	{ IN("incr k 1 2 3\r\n"), BAD(E_ERROR) },
	{ IN("incr k x\r\n"), BAD(E_DELTA) },
	{ IN("incr k -1\r\n"), BAD(E_DELTA) },
	{ IN("incr k 18446744073709551616\r\n"), BAD(E_DELTA) },
	{ IN("decr k x noreply\r\n"), BAD(E_DELTA), .noreply = true },
	{ IN("decr k\x1f 1\r\n"), BAD(E_FORMAT) },
	/* delete */
	{ IN("delete\r\n"), BAD(E_ERROR) },
	{ IN("delete k 1\r\n"), BAD(E_DELETE) },
	{ IN("delete k x y\r\n"), BAD(E_DELETE) },
	{ IN("delete k noreply 0\r\n"), BAD(E_DELETE) },
	{ IN("delete k x noreply\r\n"), BAD(E_DELETE), .noreply = true },
	{ IN("delete k 0 noreply x\r\n"), BAD(E_ERROR) },
	{ IN("delete k 0 x\r\n"), BAD(E_DELETE) },
	{ IN("delete k 0 0\r\n"), BAD(E_DELETE) },
	{ IN("delete k noreply noreply\r\n"), BAD(E_DELETE), .noreply = true },
	{ IN("delete k\x7f\r\n"), BAD(E_FORMAT) },
	/* flush_all, verbosity */
	{ IN("flush_all x\r\n"), BAD(E_EXPTIME) },
	{ IN("flush_all x noreply\r\n"), BAD(E_EXPTIME), .noreply = true },
	{ IN("flush_all noreply 5\r\n"), BAD(E_EXPTIME) },
	{ IN("flush_all 1 2 3\r\n"), BAD(E_ERROR) },
	{ IN("verbosity\r\n"), BAD(E_ERROR) },
	{ IN("verbosity x\r\n"), BAD(E_FORMAT) },
	{ IN("verbosity -1\r\n"), BAD(E_FORMAT) },
	{ IN("verbosity 4294967296\r\n"), BAD(E_FORMAT) },
	{ IN("verbosity noreply\r\n"), BAD(E_FORMAT), .noreply = true },
	{ IN("verbosity 1 2 3\r\n"), BAD(E_ERROR) },
};

#define NTABLE (sizeof(TABLE) / sizeof(TABLE[0]))

static bool is_store(enum proto_cmd c)
{
	return c >= PROTO_CMD_SET && c <= PROTO_CMD_CAS;
}

/* Checks one parse against its table entry; base is where the entry's
   bytes start in p->buf. */
static void check_want(const struct want *w, const struct parse *p,
		       size_t base)
{
	char e[256];
	const char *in = esc(w->in, w->in_len, e, sizeof(e));
	const struct proto_req *r = &p->req;
	size_t consumed = w->consumed ? w->consumed : w->in_len;
	const char *start = p->buf + base;

	CHECK(p->rc == w->rc, "[%s] rc %d, want %d (error %s)", in, p->rc,
	      w->rc, r->error ? r->error : "-");
	if (p->rc != w->rc)
		return;
	CHECK(r->consumed == consumed, "[%s] consumed %zu, want %zu", in,
	      r->consumed, consumed);
	CHECK(r->noreply == w->noreply, "[%s] noreply", in);
	if (w->rc == PROTO_BAD) {
		CHECK(r->error == NULL ? false : strcmp(r->error, w->error) == 0,
		      "[%s] error '%s', want '%s'", in, r->error, w->error);
		CHECK(r->swallow == w->swallow, "[%s] swallow %zu, want %zu",
		      in, r->swallow, w->swallow);
		CHECK(r->close == w->close, "[%s] close", in);
		return;
	}
	CHECK(r->cmd == w->cmd, "[%s] cmd %d, want %d", in, r->cmd, w->cmd);
	CHECK(r->flags == w->flags, "[%s] flags %u", in, r->flags);
	CHECK(r->exptime == w->exptime, "[%s] exptime %" PRId64, in,
	      r->exptime);
	CHECK(r->cas == w->cas, "[%s] cas %" PRIu64, in, r->cas);
	CHECK(r->delta == w->delta, "[%s] delta %" PRIu64, in, r->delta);
	CHECK(r->level == w->level, "[%s] level %u", in, r->level);
	CHECK(r->keys == p->keys, "[%s] keys array", in);
	if (w->value) {
		const char *nl = memchr(start, '\n', w->in_len);
		CHECK(r->value == nl + 1, "[%s] value right after the line",
		      in);
		CHECK(r->vlen == w->vlen &&
			      memcmp(r->value, w->value, w->vlen) == 0,
		      "[%s] value", in);
	} else {
		CHECK(r->value == NULL && r->vlen == 0, "[%s] no value", in);
	}
	if (w->arg) {
		CHECK(r->arg && r->arg_len == strlen(w->arg) &&
			      memcmp(r->arg, w->arg, r->arg_len) == 0 &&
			      inside(r->arg, r->arg_len, start, w->in_len),
		      "[%s] arg", in);
	} else {
		CHECK(r->arg == NULL, "[%s] no arg", in);
	}
	uint32_t nk = 0;
	while (nk < 10 && w->keys[nk])
		nk++;
	CHECK(r->nkeys == nk, "[%s] nkeys %u, want %u", in, r->nkeys, nk);
	for (uint32_t i = 0; i < nk && i < r->nkeys; i++) {
		const struct proto_key *k = &r->keys[i];
		CHECK(k->len == strlen(w->keys[i]) &&
			      memcmp(k->ptr, w->keys[i], k->len) == 0 &&
			      inside(k->ptr, k->len, start, w->in_len),
		      "[%s] key %u", in, i);
	}
}

static void test_table(void)
{
	for (size_t i = 0; i < NTABLE; i++) {
		struct parse p;
		parse_run(&p, TABLE[i].in, TABLE[i].in_len, &LIM);
		check_want(&TABLE[i], &p, 0);
		parse_free(&p);
	}
}

/*
 * Every proper prefix must ask for more: `need` is the whole request once
 * a storage line is complete, else 0. The whole gives the table's result.
 */
static void test_split_every_byte(void)
{
	for (size_t i = 0; i < NTABLE; i++) {
		const struct want *w = &TABLE[i];
		char e[256];
		const char *in = esc(w->in, w->in_len, e, sizeof(e));
		struct parse full;
		parse_run(&full, w->in, w->in_len, &LIM);
		check_want(w, &full, 0);
		const char *nl = memchr(w->in, '\n', w->in_len);
		size_t line_len = nl ? (size_t)(nl - w->in) + 1 : w->in_len;
		for (size_t k = 0; k < w->in_len; k++) {
			struct parse p;
			parse_run(&p, w->in, k, &LIM);
			if (k < full.req.consumed) {
				size_t need = 0;
				if (k >= line_len && full.req.consumed > line_len)
					need = full.req.consumed;
				CHECK(p.rc == PROTO_NEED_MORE,
				      "[%s] prefix %zu: rc %d", in, k, p.rc);
				CHECK(p.req.need == need,
				      "[%s] prefix %zu: need %zu, want %zu", in,
				      k, p.req.need, need);
			} else {
				check_same(&full, &p, in);
			}
			parse_free(&p);
		}
		parse_free(&full);
	}
}

/*
 * All table entries back to back; a refused block that is swallowed is
 * followed by that many filler bytes, which must be dropped unseen.
 */
static void test_pipeline(void)
{
	size_t cap = 0;
	for (size_t i = 0; i < NTABLE; i++) {
		if (TABLE[i].swallow > 1000)
			continue;
		cap += TABLE[i].in_len + TABLE[i].swallow;
	}
	char *buf = malloc(cap);
	CU_ASSERT_FATAL(buf != NULL);
	size_t o = 0;
	for (size_t i = 0; i < NTABLE; i++) {
		const struct want *w = &TABLE[i];
		/* A swallow too big to fill is tested on its own. */
		if (w->swallow > 1000)
			continue;
		memcpy(buf + o, w->in, w->in_len);
		o += w->in_len;
		memset(buf + o, 'Z', w->swallow);
		o += w->swallow;
	}
	CU_ASSERT_FATAL(o == cap);

	struct parse p = { .buf = buf, .len = cap };
	size_t at = 0;
	for (size_t i = 0; i < NTABLE; i++) {
		const struct want *w = &TABLE[i];
		if (w->swallow > 1000)
			continue;
		p.rc = proto_parse(buf + at, cap - at, &LIM, p.keys, &p.req);
		check_want(w, &p, at);
		if (p.rc == PROTO_NEED_MORE)
			break;
		at += p.req.consumed + p.req.swallow;
	}
	CU_ASSERT(at == cap);
	free(buf);
}

/* After a bad data chunk the bytes that follow are parsed as requests, as
   in memcached ("CLIENT_ERROR bad data chunk", then "ERROR" for "\n"). */
static void test_bad_chunk_followup(void)
{
	static const char in[] = "set a 0 0 2\r\nxyz\r\nget a\r\n";
	struct parse p;
	parse_run(&p, in, sizeof(in) - 1, &LIM);
	CU_ASSERT(p.rc == PROTO_BAD);
	ASSERT_ERROR(p.req.error, E_CHUNK);
	CU_ASSERT(p.req.consumed == 13 + 2 + 2);
	CU_ASSERT(p.req.swallow == 0);
	CU_ASSERT(!p.req.close);
	size_t at = p.req.consumed;
	enum proto_rc rc = proto_parse(p.buf + at, p.len - at, &LIM, p.keys,
				       &p.req);
	CU_ASSERT(rc == PROTO_BAD);
	ASSERT_ERROR(p.req.error, E_ERROR);
	CU_ASSERT(p.req.consumed == 1);
	at += p.req.consumed;
	rc = proto_parse(p.buf + at, p.len - at, &LIM, p.keys, &p.req);
	CU_ASSERT(rc == PROTO_REQ);
	CU_ASSERT(p.req.cmd == PROTO_CMD_GET && p.req.nkeys == 1);
	CU_ASSERT(at + p.req.consumed == p.len);
	parse_free(&p);
}

/* A value over item_max: refused as soon as the line is in, its block
   swallowed whether it has arrived or not, the connection usable after. */
static void test_too_large_swallow(void)
{
	const struct proto_limits lim = { .line_max = 1024,
					  .item_max = 1 << 20,
					  .keys_max = 4 };
	size_t vlen = (1 << 20) + 1;
	static const char line[] = "set big 1 2 1048577\r\n";
	size_t n = sizeof(line) - 1 + vlen + 2 + 7;
	char *buf = malloc(n);
	CU_ASSERT_FATAL(buf != NULL);
	memcpy(buf, line, sizeof(line) - 1);
	memset(buf + sizeof(line) - 1, 'v', vlen);
	memcpy(buf + sizeof(line) - 1 + vlen, "\r\nget a\r\n", 9);

	/* Only the line has arrived: still refused, nothing waited for. */
	struct parse p;
	parse_run(&p, buf, sizeof(line) - 1, &lim);
	CU_ASSERT(p.rc == PROTO_BAD);
	ASSERT_ERROR(p.req.error, E_LARGE);
	CU_ASSERT(p.req.consumed == sizeof(line) - 1);
	CU_ASSERT(p.req.swallow == vlen + 2);
	CU_ASSERT(!p.req.close && !p.req.noreply);
	parse_free(&p);

	/* Everything has arrived: the caller drops consumed + swallow and
	   the next request parses. */
	parse_run(&p, buf, n, &lim);
	CU_ASSERT(p.rc == PROTO_BAD);
	size_t at = p.req.consumed + p.req.swallow;
	CU_ASSERT(at == n - 7);
	enum proto_rc rc = proto_parse(p.buf + at, n - at, &lim, p.keys,
				       &p.req);
	CU_ASSERT(rc == PROTO_REQ && p.req.cmd == PROTO_CMD_GET);
	CU_ASSERT(p.req.consumed == 7);
	parse_free(&p);

	/* Exactly item_max is accepted, and NEED_MORE says how much. */
	static const char ok[] = "set big 1 2 1048576\r\n";
	memcpy(buf, ok, sizeof(ok) - 1);
	memcpy(buf + sizeof(ok) - 1 + (1 << 20), "\r\n", 2);
	size_t total = sizeof(ok) - 1 + (1 << 20) + 2;
	parse_run(&p, buf, sizeof(ok) - 1 + 100, &lim);
	CU_ASSERT(p.rc == PROTO_NEED_MORE);
	CU_ASSERT(p.req.need == total);
	parse_free(&p);
	parse_run(&p, buf, total, &lim);
	CU_ASSERT(p.rc == PROTO_REQ);
	CU_ASSERT(p.req.vlen == 1 << 20);
	CU_ASSERT(p.req.value == p.buf + sizeof(ok) - 1);
	CU_ASSERT(p.req.consumed == total);
	parse_free(&p);
	free(buf);
}

static void test_line_too_long(void)
{
	const struct proto_limits lim = { .line_max = 32, .item_max = 1024,
					  .keys_max = 16 };
	char buf[80];
	memset(buf, 'a', sizeof(buf));
	struct parse p;

	/* No "\n" yet, up to the limit: wait. */
	parse_run(&p, buf, 32, &lim);
	CU_ASSERT(p.rc == PROTO_NEED_MORE && p.req.need == 0);
	parse_free(&p);
	/* No "\n" in line_max bytes: close without a reply (memcached). */
	for (size_t n = 33; n <= sizeof(buf); n += 16) {
		parse_run(&p, buf, n, &lim);
		CU_ASSERT(p.rc == PROTO_BAD);
		ASSERT_ERROR(p.req.error, E_CLOSE);
		CU_ASSERT(p.req.close);
		CU_ASSERT(p.req.consumed > 0 && p.req.consumed <= n);
		parse_free(&p);
	}
	/* line_max bytes then the "\n" is fine. */
	memcpy(buf, "get ", 4);
	memcpy(buf + 31, "\r\n", 2);
	parse_run(&p, buf, 33, &lim);
	CU_ASSERT(p.rc == PROTO_REQ);
	CU_ASSERT(p.req.nkeys == 1 && p.req.keys[0].len == 27);
	CU_ASSERT(p.req.consumed == 33 && !p.req.more);
	parse_free(&p);
	/* One more byte is not, for a line that is not a read. */
	memset(buf, 'a', sizeof(buf));
	memcpy(buf, "set ", 4);
	memcpy(buf + 32, "\r\n", 2);
	parse_run(&p, buf, 34, &lim);
	CU_ASSERT(p.rc == PROTO_BAD && p.req.close);
	ASSERT_ERROR(p.req.error, E_CLOSE);
	parse_free(&p);
	/* A read streams instead: its complete keys come out. */
	memcpy(buf, "get a bb ", 9);
	parse_run(&p, buf, 40, &lim);
	CU_ASSERT(p.rc == PROTO_REQ && p.req.more && p.req.nkeys == 2);
	CU_ASSERT(p.req.consumed == 8 && !p.req.checked);
	parse_free(&p);
	/* ... unless the cut token is already too long for a key. */
	memset(buf, 'a', sizeof(buf));
	memcpy(buf, "get ", 4);
	struct proto_limits big = lim;
	big.line_max = 1024;
	char *kb = malloc(2000);
	CU_ASSERT_FATAL(kb != NULL);
	memset(kb, 'k', 2000);
	memcpy(kb, "get ", 4);
	parse_run(&p, kb, 1100, &big);
	CU_ASSERT(p.rc == PROTO_BAD && p.req.skip_line && !p.req.close);
	ASSERT_ERROR(p.req.error, E_FORMAT);
	CU_ASSERT(p.req.consumed == 1100);
	parse_free(&p);
	free(kb);
	/* The limit is on the line: a data block may be longer. */
	static const char set[] = "set k 0 0 100\r\n";
	char blk[sizeof(set) - 1 + 102];
	memcpy(blk, set, sizeof(set) - 1);
	memset(blk + sizeof(set) - 1, '\n', 100);
	memcpy(blk + sizeof(blk) - 2, "\r\n", 2);
	parse_run(&p, blk, sizeof(blk), &lim);
	CU_ASSERT(p.rc == PROTO_REQ && p.req.vlen == 100);
	parse_free(&p);
	/* Nothing at all. */
	parse_run(&p, buf, 0, &lim);
	CU_ASSERT(p.rc == PROTO_NEED_MORE && p.req.need == 0);
	parse_free(&p);
}

/* A complete read line with more keys than fit comes in pieces. */
static void test_max_keys(void)
{
	const struct proto_limits lim = { .line_max = 1024, .item_max = 1024,
					  .keys_max = 3 };
	static const char *const ok[] = { "get a b c\r\n", "gets a b c\r\n",
					  "gat 1 a b c\r\n", "gats 1 a b c\r\n" };
	static const char *const over[] = { "get a b c d\r\n",
					     "gets a b c d\r\n",
					     "gat 1 a b c d\r\n",
					     "gats 1 a b c d e f\r\n" };
	for (size_t i = 0; i < 4; i++) {
		struct parse p;
		parse_run(&p, ok[i], strlen(ok[i]), &lim);
		CHECK(p.rc == PROTO_REQ && p.req.nkeys == 3 && !p.req.more &&
			      p.req.consumed == strlen(ok[i]),
		      "%s", ok[i]);
		parse_free(&p);
		parse_run(&p, over[i], strlen(over[i]), &lim);
		CHECK(p.rc == PROTO_REQ && p.req.nkeys == 3 && p.req.more &&
			      p.req.checked &&
			      p.req.keys[2].ptr + 1 == p.buf + p.req.consumed,
		      "%s", over[i]);
		struct proto_stream st = { .cmd = p.req.cmd,
					   .exptime = p.req.exptime,
					   .nkeys = 3, .checked = true };
		struct proto_req r2;
		struct proto_key k2[3];
		size_t at = p.req.consumed;
		enum proto_rc rc = proto_parse_more(p.buf + at, p.len - at, &lim,
						    k2, &st, &r2);
		CHECK(rc == PROTO_REQ && !r2.more && r2.nkeys >= 1 &&
			      at + r2.consumed == p.len && r2.cmd == p.req.cmd &&
			      r2.exptime == p.req.exptime && k2[0].ptr[0] == 'd',
		      "%s: rest", over[i]);
		parse_free(&p);
	}
	/* keys_max of 1: a single-key get still works. */
	const struct proto_limits one = { .line_max = 64, .item_max = 64,
					  .keys_max = 1 };
	struct parse p;
	parse_run(&p, "get a\r\n", 7, &one);
	CU_ASSERT(p.rc == PROTO_REQ && p.req.nkeys == 1 && !p.req.more);
	parse_free(&p);
}

/*
 * A connection's loop in miniature: input arrives in pieces of `piece`
 * bytes (0: all at once) into a buffer; every complete request is parsed,
 * a read line streams through proto_parse_more. What comes out is written
 * as text: "K<key> " per key, "E " per end of a read, "!<error>" per
 * refusal, "C" for a close.
 */
static void drive(const char *in, size_t len, size_t piece,
		  const struct proto_limits *lim, char *out, size_t room)
{
	char *buf = malloc(len + 1);
	CU_ASSERT_FATAL(buf != NULL);
	size_t have = 0, at = 0, o = 0;
	bool active = false, skip = false;
	struct proto_stream st = { 0 };
	struct proto_key keys[KEYS_CAP];
	out[0] = 0;
	while (have < len) {
		size_t n = piece && len - have > piece ? piece : len - have;
		memcpy(buf + have, in + have, n);
		have += n;
		for (;;) {
			if (skip) {
				const char *nl = memchr(buf + at, '\n', have - at);
				if (!nl) {
					at = have;
					break;
				}
				at = (size_t)(nl - buf) + 1;
				skip = false;
			}
			if (at == have)
				break;
			struct proto_req r;
			enum proto_rc rc = active ?
				proto_parse_more(buf + at, have - at, lim, keys, &st, &r) :
				proto_parse(buf + at, have - at, lim, keys, &r);
			if (rc == PROTO_NEED_MORE)
				break;
			if (rc == PROTO_BAD) {
				o += (size_t)snprintf(out + o, room - o, "!%s%s",
						      r.error, r.close ? "C" : "");
				active = false;
				skip = r.skip_line;
				at += r.consumed + r.swallow;
				if (r.close) {
					free(buf);
					return;
				}
				continue;
			}
			CU_ASSERT(r.consumed > 0 || r.nkeys > 0);
			for (uint32_t i = 0; i < r.nkeys; i++)
				o += (size_t)snprintf(out + o, room - o, "K%.*s ",
						      r.keys[i].len, r.keys[i].ptr);
			at += r.consumed;
			if (!proto_is_read(r.cmd))
				continue;
			if (!r.more) {
				o += (size_t)snprintf(out + o, room - o, "E ");
				active = false;
				continue;
			}
			if (!active)
				st = (struct proto_stream){ .cmd = r.cmd,
							    .exptime = r.exptime };
			active = true;
			st.nkeys += r.nkeys;
			st.checked = r.checked;
		}
	}
	free(buf);
}

/* Long read lines stream, whatever the split, to the same keys. */
static void test_stream_split(void)
{
	const struct proto_limits lim = { .line_max = 40, .item_max = 1024,
					  .keys_max = 4 };
	static const char *const lines[] = {
		"get k0 k1 k2 k3 k4 k5 k6 k7 k8 k9 k10 k11 k12 k13 k14 k15 k16\r\n",
		"gets   a  bb   ccc dddd eeeee ffffff ggggggg hhhhhhhh iiiiiiiii    \r\nget z\r\n",
		"gat 5 k0 k1 k2 k3 k4 k5 k6 k7 k8 k9 k10 k11 k12 k13 k14 k15 k16\nversion\r\n",
		"get a b\r\nget c d e f g h i j k l m n o p q r s t u v w x y z\r\nget q\r\n",
	};
	char ref[400], got[400];
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		size_t len = strlen(lines[i]);
		drive(lines[i], len, 0, &lim, ref, sizeof(ref));
		CHECK(strstr(ref, "!") == NULL, "%s: %s", lines[i], ref);
		for (size_t piece = 1; piece <= len; piece++) {
			drive(lines[i], len, piece, &lim, got, sizeof(got));
			CHECK(strcmp(ref, got) == 0, "%s / %zu: %s vs %s",
			      lines[i], piece, got, ref);
		}
	}
	drive(lines[0], strlen(lines[0]), 0, &lim, ref, sizeof(ref));
	CU_ASSERT(strcmp(ref, "Kk0 Kk1 Kk2 Kk3 Kk4 Kk5 Kk6 Kk7 Kk8 Kk9 Kk10 "
			      "Kk11 Kk12 Kk13 Kk14 Kk15 Kk16 E ") == 0);
	/* A bad key in a line that is whole refuses all of it. */
	static const char bad[] = "get a b c d e f g h i j k l m n o\x01 p\r\nget z\r\n";
	drive(bad, sizeof(bad) - 1, 0, &lim, ref, sizeof(ref));
	CU_ASSERT(strcmp(ref, "!CLIENT_ERROR bad command line format\r\nKz E ") == 0);
	/* Streamed before its end came: the keys before it ran, then the
	   error, and the rest of the line is dropped. */
	for (size_t piece = 1; piece < 40; piece++) {
		drive(bad, sizeof(bad) - 1, piece, &lim, got, sizeof(got));
		CHECK(strstr(got, "!CLIENT_ERROR bad command line format\r\nKz E ") != NULL &&
			      strstr(got, "Kp") == NULL && strstr(got, "E Kz") == NULL,
		      "piece %zu: %s", piece, got);
	}
	/* Only spaces after "get": ERROR once the line ends. */
	char sp[100];
	memset(sp, ' ', sizeof(sp));
	memcpy(sp, "get", 3);
	memcpy(sp + sizeof(sp) - 2, "\r\n", 2);
	for (size_t piece = 1; piece <= sizeof(sp); piece += 7) {
		drive(sp, sizeof(sp), piece, &lim, got, sizeof(got));
		CHECK(strcmp(got, "!ERROR\r\n") == 0, "spaces / %zu: %s", piece, got);
	}
	/* A long non-read line closes without a word, however it comes. */
	memset(sp, 'x', sizeof(sp));
	for (size_t piece = 1; piece <= sizeof(sp); piece += 5) {
		drive(sp, sizeof(sp), piece, &lim, got, sizeof(got));
		CHECK(strcmp(got, "!C") == 0, "long / %zu: %s", piece, got);
	}
}

/*
 * Request lines with a key in each position: fmt has one %s for the key;
 * `swallow` is what a refused key drops (storage commands).
 */
struct key_cmd {
	const char *fmt;
	const char *data;
	size_t swallow;
};

static const struct key_cmd KEY_CMDS[] = {
	{ "get %s\r\n", "", 0 },
	{ "get a %s b\r\n", "", 0 },
	{ "gets %s\r\n", "", 0 },
	{ "gat 5 %s\r\n", "", 0 },
	{ "gats 5 x %s\r\n", "", 0 },
	{ "set %s 1 2 3\r\n", "abc\r\n", 5 },
	{ "add %s 1 2 3 noreply\r\n", "abc\r\n", 5 },
	{ "replace %s 1 2 3\r\n", "abc\r\n", 5 },
	{ "append %s 1 2 3\r\n", "abc\r\n", 5 },
	{ "prepend %s 1 2 3\r\n", "abc\r\n", 5 },
	{ "cas %s 1 2 3 4\r\n", "abc\r\n", 5 },
	{ "touch %s 5\r\n", "", 0 },
	{ "delete %s\r\n", "", 0 },
	{ "delete %s 0 noreply\r\n", "", 0 },
	{ "incr %s 1\r\n", "", 0 },
	{ "decr %s 1\r\n", "", 0 },
};

/* Builds fmt with key into an exact-size buffer and parses it. */
static void parse_key_cmd(struct parse *p, const struct key_cmd *c,
			  const char *key, size_t klen,
			  const struct proto_limits *lim)
{
	char tmp[2048];
	const char *pct = strstr(c->fmt, "%s");
	size_t a = (size_t)(pct - c->fmt), b = strlen(pct + 2);
	size_t dl = strlen(c->data);
	memcpy(tmp, c->fmt, a);
	memcpy(tmp + a, key, klen);
	memcpy(tmp + a + klen, pct + 2, b);
	memcpy(tmp + a + klen + b, c->data, dl);
	parse_run(p, tmp, a + klen + b + dl, lim);
}

static const struct proto_key *find_key(const struct proto_req *r,
					size_t klen)
{
	for (uint32_t i = 0; i < r->nkeys; i++)
		if (r->keys[i].len == klen)
			return &r->keys[i];
	return NULL;
}

static void test_key_length(void)
{
	char key[260];
	memset(key, 'k', sizeof(key));
	for (size_t i = 0; i < sizeof(KEY_CMDS) / sizeof(KEY_CMDS[0]); i++) {
		const struct key_cmd *c = &KEY_CMDS[i];
		struct parse p;
		parse_key_cmd(&p, c, key, 250, &LIM);
		CHECK(p.rc == PROTO_REQ, "%s 250: rc %d", c->fmt, p.rc);
		const struct proto_key *k = find_key(&p.req, 250);
		CHECK(k && inside(k->ptr, 250, p.buf, p.len), "%s 250: key",
		      c->fmt);
		CHECK(p.req.consumed == p.len, "%s 250: consumed", c->fmt);
		parse_free(&p);

		parse_key_cmd(&p, c, key, 251, &LIM);
		CHECK(p.rc == PROTO_BAD && strcmp(p.req.error, E_FORMAT) == 0,
		      "%s 251: rc %d", c->fmt, p.rc);
		CHECK(p.req.swallow == c->swallow, "%s 251: swallow %zu",
		      c->fmt, p.req.swallow);
		CHECK(p.req.consumed + p.req.swallow == p.len,
		      "%s 251: consumed", c->fmt);
		parse_free(&p);
	}
}

/*
 * "get <key>\r\n" has a shortcut past the general walk (proto_get1, which
 * the connection's loop takes before proto_parse). A line it takes must
 * be the walk's one-key get, the same line with a space before its end
 * (which the shortcut leaves) must read the same (consumed one byte
 * apart), for every key length around the limits and the eight-byte
 * words, every line end, a control byte in the key, and a request after
 * it; and under a short line limit it must leave a line the walk streams.
 */
static void check_get1(const struct parse *pa, const struct parse *pb,
		       const struct proto_limits *lim, const char *m)
{
	struct proto_key k = { 0 };
	size_t n = proto_get1(pa->buf, pa->len, lim, &k);
	if (!n)
		return;
	CHECK(pb->rc == PROTO_REQ && pb->req.cmd == PROTO_CMD_GET &&
	      pb->req.nkeys == 1 && !pb->req.more &&
	      pb->req.consumed == n + 1, "%s: proto_get1 took %zu bytes, the "
	      "walk rc %d, %u keys, consumed %zu", m, n, pb->rc,
	      pb->req.nkeys, pb->req.consumed);
	if (pb->rc == PROTO_REQ && pb->req.nkeys == 1)
		CHECK(k.ptr - pa->buf == pb->keys[0].ptr - pb->buf &&
		      k.len == pb->keys[0].len, "%s: proto_get1's key", m);
}

static void test_get_shortcut(void)
{

	static const char *const ends[] = { "\r\n", "\n", "\r", "", "\r\r\n",
					    "\r\nget x\r\n", "\nset" };
	static const int ctl[] = { -1, '\t', '\r', 0x7f, 0 };
	char key[300], a[400], b[400];
	for (size_t kl = 0; kl <= 253; kl++)
	for (size_t e = 0; e < sizeof(ends) / sizeof(ends[0]); e++)
	for (size_t c = 0; c < sizeof(ctl) / sizeof(ctl[0]); c++) {
		if (ctl[c] >= 0 && kl == 0)
			continue;
		/* A key's last '\r' before a "\n" is the line's end, which
		   the space would make a key byte: not the same request. */
		if (ctl[c] == '\r' && ends[e][0] == '\n' && kl / 2 == kl - 1)
			continue;
		memset(key, 'k', kl);
		if (ctl[c] >= 0)
			key[kl / 2] = (char)ctl[c];
		size_t el = strlen(ends[e]);
		size_t na = 0, nb = 0;
		memcpy(a, "get ", 4), na = 4;
		memcpy(a + na, key, kl), na += kl;
		memcpy(b, a, na), nb = na;
		b[nb++] = ' ';
		memcpy(a + na, ends[e], el), na += el;
		memcpy(b + nb, ends[e], el), nb += el;
		struct parse pa, pb;
		parse_run(&pa, a, na, &LIM);
		parse_run(&pb, b, nb, &LIM);
		char m[900];
		esc(a, na, m, sizeof(m));
		CHECK(pa.rc == pb.rc, "%s: rc %d, with a space %d", m, pa.rc, pb.rc);
		check_get1(&pa, &pb, &LIM, m);
		if (pa.rc == pb.rc && pa.rc != PROTO_NEED_MORE) {
			CHECK(pa.req.consumed + 1 == pb.req.consumed,
			      "%s: consumed %zu, with a space %zu", m,
			      pa.req.consumed, pb.req.consumed);
			CHECK(pa.req.error == pb.req.error, "%s: error", m);
			CHECK(pa.req.cmd == pb.req.cmd &&
			      pa.req.nkeys == pb.req.nkeys &&
			      pa.req.checked == pb.req.checked &&
			      pa.req.more == pb.req.more &&
			      pa.req.noreply == pb.req.noreply &&
			      pa.req.skip_line == pb.req.skip_line &&
			      pa.req.close == pb.req.close, "%s: fields", m);
			if (pa.rc == PROTO_REQ && pa.req.nkeys == 1 &&
			    pb.req.nkeys == 1)
				CHECK(pa.keys[0].ptr - pa.buf == pb.keys[0].ptr - pb.buf &&
				      pa.keys[0].len == pb.keys[0].len, "%s: key", m);
		}
		parse_free(&pa);
		parse_free(&pb);
	}

	/* Under a line limit shorter than the line (the fuzzer's limits;
	   the daemon's is at least 1k) the walk streams the line: the
	   shortcut must not take it whole. */
	static const struct proto_limits short_lim = {
		.line_max = 16, .item_max = 64, .keys_max = 1,
	};
	for (size_t kl = 1; kl <= 20; kl++) {
		memset(key, 'k', kl);
		size_t na = (size_t)snprintf(a, sizeof(a), "get %.*s\r\n", (int)kl, key);
		struct parse pa;
		parse_run(&pa, a, na, &short_lim);
		struct proto_key k;
		CHECK((proto_get1(pa.buf, na, &short_lim, &k) != 0) ==
		      (na <= short_lim.line_max + 1),
		      "key of %zu under line_max 16: proto_get1", kl);
		if (na <= short_lim.line_max + 1)
			CHECK(pa.rc == PROTO_REQ && !pa.req.more &&
			      pa.req.consumed == na && pa.req.nkeys == 1,
			      "key of %zu under line_max 16: whole", kl);
		else
			CHECK(pa.rc == PROTO_REQ && pa.req.more &&
			      pa.req.nkeys == 0 && pa.req.consumed == 3,
			      "key of %zu under line_max 16: streamed (rc %d, "
			      "more %d, %u keys, consumed %zu)", kl, pa.rc,
			      pa.req.more, pa.req.nkeys, pa.req.consumed);
		parse_free(&pa);
	}
}

/*
 * "set <key> <flags> <exptime> <bytes>\r\n<data>\r\n" has a shortcut past
 * the general walk (parse_set1); two spaces after the key take the walk
 * instead. Both must give the same outcome (consumed, need and the data one
 * byte apart) for keys around the limits, numbers at and past theirs, signs,
 * noreply, every line end, data short, long, whole and badly ended, and
 * limits that the line or the data pass.
 */
static void test_set_shortcut(void)
{
	static const size_t klens[] = { 0, 1, 8, 15, 16, 17, 250, 251 };
	static const char *const nums[] = {
		"0 0 5", "4294967295 0 5", "4294967296 0 5", "00 -1 5",
		"1 2592000 5", "1 999999999999999999 5",
		"1 9999999999999999999 5", "1 0 0", "1 0 64", "1 0 65",
		"1 0 5 noreply", "1 0 +5", "1 0 5x", "1 0",
	};
	static const char *const tails[] = { "\r\nhello\r\n", "\nhello\r\n",
					     "\r\nhell", "\r\nhelloXY",
					     "\r\nhello\r\nget a\r\n", "\r\n", "" };
	static const struct proto_limits lims[] = {
		{ .line_max = 1024, .item_max = 64, .keys_max = 8 },
		{ .line_max = 16, .item_max = 4, .keys_max = 1 },
	};
	char key[300], a[512], b[512];
	for (size_t l = 0; l < sizeof(lims) / sizeof(lims[0]); l++)
	for (size_t kl = 0; kl < sizeof(klens) / sizeof(klens[0]); kl++)
	for (size_t n = 0; n < sizeof(nums) / sizeof(nums[0]); n++)
	for (size_t t = 0; t < sizeof(tails) / sizeof(tails[0]); t++) {
		memset(key, 'k', klens[kl]);
		int na = snprintf(a, sizeof(a), "set %.*s %s%s", (int)klens[kl],
				  key, nums[n], tails[t]);
		int nb = snprintf(b, sizeof(b), "set %.*s  %s%s", (int)klens[kl],
				  key, nums[n], tails[t]);
		/* Not where only the longer line passes the line limit. */
		const char *nl = memchr(a, '\n', (size_t)na);
		size_t line = nl ? (size_t)(nl - a) + 1 : (size_t)na;
		if (line == lims[l].line_max + 1 || (!nl && line == lims[l].line_max))
			continue;
		struct parse pa, pb;
		parse_run(&pa, a, (size_t)na, &lims[l]);
		parse_run(&pb, b, (size_t)nb, &lims[l]);
		char m[900];
		esc(a, (size_t)na, m, sizeof(m));
		CHECK(pa.rc == pb.rc, "%s: rc %d, with a space %d", m, pa.rc,
		      pb.rc);
		if (pa.rc == pb.rc && pa.rc == PROTO_NEED_MORE)
			CHECK(pa.req.need + !!pa.req.need == pb.req.need,
			      "%s: need %zu, with a space %zu", m, pa.req.need,
			      pb.req.need);
		if (pa.rc == pb.rc && pa.rc != PROTO_NEED_MORE) {
			CHECK(pa.req.consumed + 1 == pb.req.consumed,
			      "%s: consumed %zu, with a space %zu", m,
			      pa.req.consumed, pb.req.consumed);
			CHECK(pa.req.error == pb.req.error &&
			      pa.req.swallow == pb.req.swallow &&
			      pa.req.drop_key == pb.req.drop_key &&
			      pa.req.close == pb.req.close, "%s: error", m);
			CHECK(pa.req.cmd == pb.req.cmd &&
			      pa.req.nkeys == pb.req.nkeys &&
			      pa.req.noreply == pb.req.noreply &&
			      pa.req.flags == pb.req.flags &&
			      pa.req.exptime == pb.req.exptime &&
			      pa.req.vlen == pb.req.vlen, "%s: fields", m);
			if (pa.rc == PROTO_REQ)
				CHECK(pa.req.value - pa.buf + 1 == pb.req.value - pb.buf &&
				      pa.keys[0].ptr - pa.buf == pb.keys[0].ptr - pb.buf &&
				      pa.keys[0].len == pb.keys[0].len, "%s: key, data", m);
		}
		parse_free(&pa);
		parse_free(&pb);
	}
}

/* Every control byte anywhere in a key refuses the request; bytes >= 0x80
   and printable punctuation are fine. Keys of 3, 9 and 24 bytes put the
   byte before, inside and across the parser's eight-byte words. */
static void test_key_control_chars(void)
{
	/* Lengths that end in each of the key scan's steps: sixteen bytes
	   at a time, eight, one. */
	static const size_t lens[] = { 3, 9, 16, 24, 33 };
	for (size_t i = 0; i < sizeof(KEY_CMDS) / sizeof(KEY_CMDS[0]); i++) {
		const struct key_cmd *c = &KEY_CMDS[i];
		for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++)
		for (size_t at = 0; at < lens[l]; at++)
		for (int b = 0; b < 256; b++) {
			/* '\n' ends the line and ' ' splits tokens. */
			if (b == '\n' || b == ' ')
				continue;
			size_t n = lens[l];
			char key[33];
			memset(key, 'x', n);
			key[at] = (char)b;
			bool bad = b < 0x20 || b == 0x7f;
			struct parse p;
			parse_key_cmd(&p, c, key, n, &LIM);
			if (bad) {
				CHECK(p.rc == PROTO_BAD &&
					      strcmp(p.req.error, E_FORMAT) == 0 &&
					      p.req.swallow == c->swallow,
				      "%s %zu bytes, 0x%02x at %zu: rc %d", c->fmt,
				      n, b, at, p.rc);
			} else {
				const struct proto_key *k = find_key(&p.req, n);
				CHECK(p.rc == PROTO_REQ && k &&
					      memcmp(k->ptr, key, n) == 0,
				      "%s %zu bytes, 0x%02x at %zu: rc %d", c->fmt,
				      n, b, at, p.rc);
			}
			parse_free(&p);
		}
	}
}

/* ---- round trips ------------------------------------------------------- */

static uint64_t rnd(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static uint64_t rnd_num(uint64_t *s)
{
	switch (rnd(s) % 4) {
	case 0: return rnd(s) % 10;
	case 1: return rnd(s) % 100000;
	case 2: return UINT64_MAX - rnd(s) % 3;
	default: return rnd(s);
	}
}

static size_t rnd_key(uint64_t *s, char *k)
{
	/* One call per statement: the order of calls must not be left to
	   the compiler, or the sequence would differ between builds. */
	size_t max = rnd(s) % 4 == 0 ? SHARD_KEY_MAX : 16;
	size_t n = 1 + rnd(s) % max;
	for (size_t i = 0; i < n; i++) {
		unsigned c;
		do
			c = (unsigned)(rnd(s) % 256);
		while (c <= 0x20 || c == 0x7f);
		k[i] = (char)c;
	}
	return n;
}

struct rt {
	enum proto_cmd cmd;
	bool noreply;
	uint32_t flags, level;
	int64_t exptime;
	uint64_t cas, delta;
	char keys[8][SHARD_KEY_MAX];
	size_t klen[8];
	uint32_t nkeys;
	char value[300];
	size_t vlen;
};

static const char *const NAMES[] = {
	[PROTO_CMD_GET] = "get", [PROTO_CMD_GETS] = "gets",
	[PROTO_CMD_GAT] = "gat", [PROTO_CMD_GATS] = "gats",
	[PROTO_CMD_SET] = "set", [PROTO_CMD_ADD] = "add",
	[PROTO_CMD_REPLACE] = "replace", [PROTO_CMD_APPEND] = "append",
	[PROTO_CMD_PREPEND] = "prepend", [PROTO_CMD_CAS] = "cas",
	[PROTO_CMD_TOUCH] = "touch", [PROTO_CMD_DELETE] = "delete",
	[PROTO_CMD_INCR] = "incr", [PROTO_CMD_DECR] = "decr",
	[PROTO_CMD_FLUSH_ALL] = "flush_all", [PROTO_CMD_VERSION] = "version",
	[PROTO_CMD_VERBOSITY] = "verbosity", [PROTO_CMD_QUIT] = "quit",
	[PROTO_CMD_STATS] = "stats", [PROTO_CMD_SHUTDOWN] = "shutdown",
};

/* Composes a random valid request into out; returns its length. */
static size_t rt_compose(uint64_t *s, struct rt *r, char *out)
{
	memset(r, 0, sizeof(*r));
	r->cmd = (enum proto_cmd)(rnd(s) % (PROTO_CMD_SHUTDOWN + 1));
	if (r->cmd == PROTO_CMD_STATS)
		r->cmd = PROTO_CMD_VERSION;
	size_t o = (size_t)sprintf(out, "%s", NAMES[r->cmd]);
	bool nr_ok = !proto_is_read(r->cmd) && r->cmd != PROTO_CMD_VERSION &&
		     r->cmd != PROTO_CMD_QUIT && r->cmd != PROTO_CMD_SHUTDOWN;
	r->noreply = nr_ok && rnd(s) % 3 == 0;
	int64_t exp = (int64_t)rnd_num(s);
	r->nkeys = proto_is_read(r->cmd) ? 1 + (uint32_t)(rnd(s) % 8) :
		   r->cmd <= PROTO_CMD_DECR ? 1 : 0;
	for (uint32_t i = 0; i < r->nkeys; i++)
		r->klen[i] = rnd_key(s, r->keys[i]);

	switch (r->cmd) {
	case PROTO_CMD_GAT:
	case PROTO_CMD_GATS:
		r->exptime = exp;
		o += (size_t)sprintf(out + o, " %" PRId64, exp);
		break;
	default:
		break;
	}
	for (uint32_t i = 0; i < r->nkeys; i++) {
		out[o++] = ' ';
		memcpy(out + o, r->keys[i], r->klen[i]);
		o += r->klen[i];
	}
	switch (r->cmd) {
	case PROTO_CMD_SET: case PROTO_CMD_ADD: case PROTO_CMD_REPLACE:
	case PROTO_CMD_APPEND: case PROTO_CMD_PREPEND: case PROTO_CMD_CAS:
		r->flags = (uint32_t)rnd_num(s);
		r->exptime = exp;
		r->vlen = rnd(s) % 3 == 0 ? rnd(s) % 300 : rnd(s) % 8;
		for (size_t i = 0; i < r->vlen; i++)
			r->value[i] = (char)rnd(s);
		o += (size_t)sprintf(out + o, " %u %" PRId64 " %zu", r->flags,
				     exp, r->vlen);
		if (r->cmd == PROTO_CMD_CAS) {
			r->cas = rnd_num(s);
			o += (size_t)sprintf(out + o, " %" PRIu64, r->cas);
		}
		break;
	case PROTO_CMD_TOUCH:
		r->exptime = exp;
		o += (size_t)sprintf(out + o, " %" PRId64, exp);
		break;
	case PROTO_CMD_INCR: case PROTO_CMD_DECR:
		r->delta = rnd_num(s);
		o += (size_t)sprintf(out + o, " %" PRIu64, r->delta);
		break;
	case PROTO_CMD_DELETE:
		if (rnd(s) % 2)
			o += (size_t)sprintf(out + o, " 0");
		break;
	case PROTO_CMD_FLUSH_ALL:
		if (rnd(s) % 2) {
			r->exptime = exp;
			o += (size_t)sprintf(out + o, " %" PRId64, exp);
		}
		break;
	case PROTO_CMD_VERBOSITY:
		r->level = (uint32_t)rnd_num(s);
		o += (size_t)sprintf(out + o, " %u", r->level);
		break;
	default:
		break;
	}
	if (r->noreply)
		o += (size_t)sprintf(out + o, " noreply");
	o += (size_t)sprintf(out + o, rnd(s) % 4 ? "\r\n" : "\n");
	if (r->vlen || is_store(r->cmd)) {
		memcpy(out + o, r->value, r->vlen);
		o += r->vlen;
		memcpy(out + o, "\r\n", 2);
		o += 2;
	}
	return o;
}

static void rt_check(const struct rt *r, const struct proto_req *q,
		     enum proto_rc rc, size_t len, int iter)
{
	CHECK(rc == PROTO_REQ, "iter %d: rc %d (%s)", iter, rc,
	      q->error ? q->error : "-");
	if (rc != PROTO_REQ)
		return;
	CHECK(q->consumed == len, "iter %d: consumed %zu of %zu", iter,
	      q->consumed, len);
	CHECK(q->cmd == r->cmd && q->noreply == r->noreply &&
		      q->flags == r->flags && q->exptime == r->exptime &&
		      q->cas == r->cas && q->delta == r->delta &&
		      q->level == r->level && q->nkeys == r->nkeys,
	      "iter %d: fields of %s", iter, NAMES[r->cmd]);
	CHECK(q->vlen == r->vlen &&
		      (r->vlen == 0 || memcmp(q->value, r->value, r->vlen) == 0),
	      "iter %d: value", iter);
	for (uint32_t i = 0; i < r->nkeys && i < q->nkeys; i++)
		CHECK(q->keys[i].len == r->klen[i] &&
			      memcmp(q->keys[i].ptr, r->keys[i], r->klen[i]) == 0,
		      "iter %d: key %u", iter, i);
}

static void test_roundtrip_requests(void)
{
	const struct proto_limits lim = { .line_max = 4096, .item_max = 1024,
					  .keys_max = 8 };
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	static char buf[4096];
	for (int iter = 0; iter < 3000; iter++) {
		struct rt r;
		size_t n = rt_compose(&seed, &r, buf);
		struct parse p;
		parse_run(&p, buf, n, &lim);
		rt_check(&r, &p.req, p.rc, n, iter);
		parse_free(&p);
		/* One random cut: the prefix waits, the whole parses. */
		size_t cut = (size_t)(rnd(&seed) % n);
		parse_run(&p, buf, cut, &lim);
		CHECK(p.rc == PROTO_NEED_MORE, "iter %d: cut %zu", iter, cut);
		parse_free(&p);
	}
}

/* Many random requests in one buffer, parsed one after another. */
static void test_roundtrip_pipeline(void)
{
	const struct proto_limits lim = { .line_max = 4096, .item_max = 1024,
					  .keys_max = 8 };
	enum { N = 200 };
	uint64_t seed = 12345;
	static struct rt rts[N];
	static size_t lens[N];
	char *buf = malloc(N * 4096);
	CU_ASSERT_FATAL(buf != NULL);
	size_t o = 0;
	for (int i = 0; i < N; i++) {
		lens[i] = rt_compose(&seed, &rts[i], buf + o);
		o += lens[i];
	}
	struct parse p = { .buf = buf, .len = o };
	size_t at = 0;
	for (int i = 0; i < N; i++) {
		p.rc = proto_parse(buf + at, o - at, &lim, p.keys, &p.req);
		rt_check(&rts[i], &p.req, p.rc, lens[i], i);
		if (p.rc != PROTO_REQ)
			break;
		at += p.req.consumed;
	}
	CU_ASSERT(at == o);
	free(buf);
}

/* ---- composers --------------------------------------------------------- */

static void test_u64(void)
{
	static const uint64_t vals[] = { 0, 1, 9, 10, 99, 100, 4294967295u,
					 4294967296u, 10000000000000000000u,
					 UINT64_MAX };
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		char got[24], want[24];
		memset(got, '#', sizeof(got));
		size_t n = proto_u64(got, vals[i]);
		int wn = snprintf(want, sizeof(want), "%" PRIu64, vals[i]);
		CHECK(n == (size_t)wn && memcmp(got, want, n) == 0,
		      "u64 %" PRIu64, vals[i]);
		CHECK(got[n] == '#', "u64 %" PRIu64 " wrote past", vals[i]);
	}
	CU_ASSERT(proto_u64((char[20]){ 0 }, UINT64_MAX) == 20);
	/* Every digit count, at both of its ends (odd and even lengths take
	   different last steps). */
	for (uint64_t p10 = 10; p10 <= UINT64_C(10000000000000000000); p10 *= 10) {
		for (uint64_t v = p10 - 1; v <= p10 + 1; v++) {
			char got[24], want[24];
			size_t n = proto_u64(got, v);
			int wn = snprintf(want, sizeof(want), "%" PRIu64, v);
			CHECK(n == (size_t)wn && memcmp(got, want, n) == 0,
			      "u64 %" PRIu64, v);
		}
		if (p10 > UINT64_MAX / 10)
			break;
	}
}

static void test_value_line(void)
{
	char key[SHARD_KEY_MAX];
	memset(key, 'q', sizeof(key));
	struct shard_view v = { .key = "foo", .klen = 3, .flags = 5,
				.vlen = 10, .cas = 77 };
	char out[PROTO_VALUE_LINE_MAX + 8];
	size_t n = proto_value_line(out, &v, false);
	CU_ASSERT(n == 16 && memcmp(out, "VALUE foo 5 10\r\n", 16) == 0);
	n = proto_value_line(out, &v, true);
	CU_ASSERT(n == 19 && memcmp(out, "VALUE foo 5 10 77\r\n", 19) == 0);
	v = (struct shard_view){ .key = "k", .klen = 1 };
	n = proto_value_line(out, &v, true);
	CU_ASSERT(n == 15 && memcmp(out, "VALUE k 0 0 0\r\n", 15) == 0);

	/* The widest line fits PROTO_VALUE_LINE_MAX exactly. */
	v = (struct shard_view){ .key = key, .klen = SHARD_KEY_MAX,
				 .flags = UINT32_MAX, .vlen = UINT32_MAX,
				 .cas = UINT64_MAX };
	memset(out, '#', sizeof(out));
	n = proto_value_line(out, &v, true);
	CU_ASSERT(n == PROTO_VALUE_LINE_MAX);
	CU_ASSERT(out[n] == '#');
	char want[PROTO_VALUE_LINE_MAX + 1];
	snprintf(want, sizeof(want), "VALUE %.*s %u %u %" PRIu64 "\r\n",
		 (int)SHARD_KEY_MAX, key, UINT32_MAX, UINT32_MAX, UINT64_MAX);
	CU_ASSERT(memcmp(out, want, n) == 0);

	/* Every key length (short keys are copied as two words), with
	   distinct bytes so that a misplaced byte shows. */
	for (size_t kl = 1; kl <= SHARD_KEY_MAX; kl++) {
		for (size_t j = 0; j < kl; j++)
			key[j] = (char)('a' + j % 26);
		v = (struct shard_view){ .key = key, .klen = (uint8_t)kl,
					 .flags = 7, .vlen = 100 };
		char w[PROTO_VALUE_LINE_MAX + 1];
		int wn = snprintf(w, sizeof(w), "VALUE %.*s 7 100\r\n", (int)kl, key);
		memset(out, '#', sizeof(out));
		n = proto_value_line(out, &v, false);
		CHECK(n == (size_t)wn && memcmp(out, w, n) == 0 && out[n] == '#',
		      "value line, key of %zu", kl);
	}

	/* Random views against snprintf. */
	uint64_t seed = 99;
	for (int i = 0; i < 2000; i++) {
		char k[SHARD_KEY_MAX];
		size_t kl = rnd_key(&seed, k);
		v = (struct shard_view){ .key = k, .klen = (uint8_t)kl };
		v.flags = (uint32_t)rnd_num(&seed);
		v.vlen = (uint32_t)rnd_num(&seed);
		v.cas = rnd_num(&seed);
		bool with_cas = rnd(&seed) % 2;
		char w[PROTO_VALUE_LINE_MAX + 1];
		int wn = with_cas ?
			snprintf(w, sizeof(w), "VALUE %.*s %u %u %" PRIu64 "\r\n",
				 (int)kl, k, v.flags, v.vlen, v.cas) :
			snprintf(w, sizeof(w), "VALUE %.*s %u %u\r\n", (int)kl,
				 k, v.flags, v.vlen);
		n = proto_value_line(out, &v, with_cas);
		CHECK(n == (size_t)wn && memcmp(out, w, n) == 0,
		      "value line %d", i);
	}
}

static void test_status_line(void)
{
	static const struct {
		enum proto_cmd cmd;
		enum shard_status st;
		uint64_t number;
		const char *want;
	} cases[] = {
		{ PROTO_CMD_SET, SHARD_STORED, 0, "STORED\r\n" },
		{ PROTO_CMD_ADD, SHARD_NOT_STORED, 0, "NOT_STORED\r\n" },
		{ PROTO_CMD_CAS, SHARD_EXISTS, 0, "EXISTS\r\n" },
		{ PROTO_CMD_CAS, SHARD_NOT_FOUND, 0, "NOT_FOUND\r\n" },
		{ PROTO_CMD_DELETE, SHARD_DELETED, 0, "DELETED\r\n" },
		{ PROTO_CMD_DELETE, SHARD_NOT_FOUND, 0, "NOT_FOUND\r\n" },
		{ PROTO_CMD_TOUCH, SHARD_TOUCHED, 0, "TOUCHED\r\n" },
		{ PROTO_CMD_TOUCH, SHARD_NOT_FOUND, 0, "NOT_FOUND\r\n" },
		{ PROTO_CMD_INCR, SHARD_NUMBER, 0, "0\r\n" },
		{ PROTO_CMD_INCR, SHARD_NUMBER, 15, "15\r\n" },
		{ PROTO_CMD_DECR, SHARD_NUMBER, UINT64_MAX,
		  "18446744073709551615\r\n" },
		{ PROTO_CMD_INCR, SHARD_NOT_FOUND, 0, "NOT_FOUND\r\n" },
		{ PROTO_CMD_INCR, SHARD_NON_NUMERIC, 0,
		  "CLIENT_ERROR cannot increment or decrement non-numeric "
		  "value\r\n" },
		{ PROTO_CMD_SET, SHARD_TOO_LARGE, 0,
		  "SERVER_ERROR object too large for cache\r\n" },
		{ PROTO_CMD_CAS, SHARD_TOO_LARGE, 0,
		  "SERVER_ERROR object too large for cache\r\n" },
		/* memcached: an append/prepend that cannot be built is
		   NOT_STORED */
		{ PROTO_CMD_APPEND, SHARD_TOO_LARGE, 0, "NOT_STORED\r\n" },
		{ PROTO_CMD_PREPEND, SHARD_NO_MEMORY, 0, "NOT_STORED\r\n" },
		{ PROTO_CMD_SET, SHARD_NO_MEMORY, 0,
		  "SERVER_ERROR out of memory storing object\r\n" },
		{ PROTO_CMD_DECR, SHARD_NO_MEMORY, 0,
		  "SERVER_ERROR out of memory\r\n" },
		{ PROTO_CMD_SET, SHARD_HIT, 0,
		  "SERVER_ERROR unhandled status\r\n" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[72];
		memset(out, '#', sizeof(out));
		struct shard_res res = { .status = cases[i].st,
					 .number = cases[i].number };
		size_t n = proto_status_line(out, cases[i].cmd, &res);
		CHECK(n == strlen(cases[i].want) && n <= 64 &&
			      memcmp(out, cases[i].want, n) == 0 && out[n] == '#',
		      "status case %zu: want %s", i, cases[i].want);
	}
}

static void test_stat_lines(void)
{
	char out[128];
	memset(out, '#', sizeof(out));
	size_t n = proto_stat_u64(out, "curr_items", 42);
	CU_ASSERT(n == 20 && memcmp(out, "STAT curr_items 42\r\n", n) == 0);
	CU_ASSERT(out[n] == '#');
	n = proto_stat_u64(out, "x", UINT64_MAX);
	CU_ASSERT(n == strlen("x") + 28);
	CU_ASSERT(memcmp(out, "STAT x 18446744073709551615\r\n", n) == 0);

	n = proto_stat_str(out, sizeof(out), "version", "1.6.18");
	CU_ASSERT(n == 21 && memcmp(out, "STAT version 1.6.18\r\n", n) == 0);
	n = proto_stat_str(out, sizeof(out), "inter", "");
	CU_ASSERT(n == 13 && memcmp(out, "STAT inter \r\n", n) == 0);
	/* Cut to the room, still a whole line. */
	memset(out, '#', sizeof(out));
	n = proto_stat_str(out, 16, "version", "1.6.18");
	CU_ASSERT(n == 16 && memcmp(out, "STAT version 1\r\n", 16) == 0);
	CU_ASSERT(out[16] == '#');
	n = proto_stat_str(out, 15, "version", "1.6.18");
	CU_ASSERT(n == 15 && memcmp(out, "STAT version \r\n", 15) == 0);
	memset(out, '#', sizeof(out));
	n = proto_stat_str(out, 14, "version", "1.6.18");
	CU_ASSERT(n == 0 && out[0] == '#');
}

int test_proto_register(void)
{
	CU_pSuite s = CU_add_suite("proto", NULL, NULL);
	if (!s)
		return -1;
	struct {
		const char *name;
		void (*fn)(void);
	} tests[] = {
		{ "table", test_table },
		{ "split at every byte", test_split_every_byte },
		{ "pipeline", test_pipeline },
		{ "bad data chunk, then what follows", test_bad_chunk_followup },
		{ "too large: refused and swallowed", test_too_large_swallow },
		{ "line too long", test_line_too_long },
		{ "max keys", test_max_keys },
		{ "stream split", test_stream_split },
		{ "key length 250/251", test_key_length },
		{ "get shortcut: as the general walk", test_get_shortcut },
		{ "set shortcut: as the general walk", test_set_shortcut },
		{ "control characters in keys", test_key_control_chars },
		{ "round trip: requests", test_roundtrip_requests },
		{ "round trip: pipeline", test_roundtrip_pipeline },
		{ "u64", test_u64 },
		{ "value line", test_value_line },
		{ "status line", test_status_line },
		{ "stat lines", test_stat_lines },
	};
	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
		if (!CU_add_test(s, tests[i].name, tests[i].fn))
			return -1;
	return 0;
}
