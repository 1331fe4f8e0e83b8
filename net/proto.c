/*
 * proto.c - memcached's classic text protocol: the request parser and the
 * reply composers; see proto.h.
 *
 * The parser makes one pass over a request line. memchr() finds the "\n"
 * (bounded by the line limit), then a cursor walks the line once: the
 * command token is matched by length and bytes, and each command's own
 * function takes its arguments from the same cursor. Keys of a multi-get are
 * written straight into the caller's key array as they are scanned, and the
 * scan of a token also notes whether it holds a control character, so a key
 * is validated without a second look at its bytes. A "get" of one key,
 * the commonest request, has a shortcut that the connection's loop takes
 * before calling proto_parse (proto_get1, proto.h): the same outcome
 * without the newline's memchr, the command lookup or a request. Nothing is
 * copied and nothing is allocated; every pointer handed back points into
 * `buf`.
 *
 * memcached 1.6.18 is the reference for every reply. Where this parser is
 * deliberately stricter or safer, the choice is written next to the code:
 *  - numbers are plain decimal digits (an optional leading '-' for exptime);
 *    memcached's strtol() also takes "+5", " 5" and "5\t". Flags, levels and
 *    lengths that overflow 32 bits are refused; memcached truncates them.
 *    Exptimes are 64-bit (memcached truncates them to 32 bits).
 *  - keys with control characters (bytes <= 0x20 or 0x7f) are refused;
 *    memcached refuses only keys over 250 bytes.
 *  - a storage line refused for any reason but its length field still has
 *    its data block dropped when that length is readable, where memcached
 *    would execute the value's bytes as commands.
 *  - gat/gats without a key is ERROR (memcached answers a bare "END").
 *  - a read line streams: any number of keys, lim->keys_max per call (see
 *    proto.h); a bad key that arrives after earlier keys were answered
 *    gets its error after their answers (memcached answers the whole line
 *    with the error alone, as it holds the whole line).
 *  - a non-read line with no newline in its first line_max bytes closes
 *    the connection (memcached: 2048 bytes without a newline, counted over
 *    what it has read, so a longer line that arrives whole is still
 *    parsed there; here the rule does not depend on how bytes arrive).
 *
 * noreply: memcached sends nothing at all for a refused request whose last
 * token is "noreply" once it has accepted the token count (out_string() is
 * muted for the whole command). PROTO_BAD therefore sets req->noreply in
 * exactly those cases, next to the error line, so the caller can mute it
 * the same way; "ERROR" for a wrong token count is never muted.
 */
#include "net/proto.h"

#include <string.h>

/* memcached refuses a data length above INT_MAX - 2 without reading it. */
#define VLEN_MAX 2147483645u
/* Most argument tokens kept for a non-read command: cas has 5 and an
   optional noreply; one more lets an extra token be seen. */
#define ARGS_MAX 7

static const char E_ERROR[] = "ERROR\r\n";
static const char E_FORMAT[] = "CLIENT_ERROR bad command line format\r\n";
static const char E_DELETE[] = "CLIENT_ERROR bad command line format.  "
			       "Usage: delete <key> [noreply]\r\n";
static const char E_DELTA[] = "CLIENT_ERROR invalid numeric delta argument\r\n";
static const char E_EXPTIME[] = "CLIENT_ERROR invalid exptime argument\r\n";
static const char E_CHUNK[] = "CLIENT_ERROR bad data chunk\r\n";
static const char E_LARGE[] = "SERVER_ERROR object too large for cache\r\n";
/* No reply at all: the connection closes (memcached's way with a line
   too long and with an HTTP request). */
static const char E_CLOSE[] = "";

struct tok {
	const char *p;
	size_t len;
	bool ctl;   /* it holds a byte <= 0x20 (not ' ') or 0x7f */
};

/* The request line being parsed: [p, end) is what is left of it, without
   its "\r\n"; line_len counts the whole line, "\n" included. */
struct line {
	const char *p, *end;
	size_t line_len;
};

/* ---- scanning ---------------------------------------------------------- */

/*
 * Takes the next space-separated token of the line into *t. Returns false at
 * the end of the line. Only ' ' separates tokens, as in memcached; any other
 * byte <= 0x20 (or 0x7f) stays in the token and sets t->ctl (key_ok refuses
 * it in a key).
 */
__attribute__((always_inline)) /* a call costs as much as a short token */
static inline bool next_tok(struct line *l, struct tok *t)
{
	const char *p = l->p, *end = l->end;
	while (p < end && *p == ' ')
		p++;
	if (p == end) {
		l->p = p;
		return false;
	}
	const char *s = p;
	p += proto_key_span(p, end);
	t->ctl = p < end && *p != ' ';
	if (t->ctl) {
		const char *sp = memchr(p, ' ', (size_t)(end - p));
		p = sp ? sp : end;
	}
	t->p = s;
	t->len = (size_t)(p - s);
	l->p = p;
	return true;
}

/* Splits the rest of the line; keeps the first `max` tokens and returns how
   many there are in all. */
static size_t split(struct line *l, struct tok *t, size_t max)
{
	size_t n = 0;
	struct tok scratch;
	while (next_tok(l, n < max ? &t[n] : &scratch))
		n++;
	return n;
}

static bool tok_is(const struct tok *t, const char *s, size_t len)
{
	return t->len == len && memcmp(t->p, s, len) == 0;
}

static bool is_noreply(const struct tok *t)
{
	return tok_is(t, "noreply", 7);
}

static bool key_ok(const struct tok *t)
{
	return t->len >= 1 && t->len <= SHARD_KEY_MAX && !t->ctl;
}

/* Decimal digits only, no sign, no overflow. */
static bool parse_u64(const struct tok *t, uint64_t *out)
{
	uint64_t v = 0;
	if (t->len == 0)
		return false;
	for (size_t i = 0; i < t->len; i++) {
		unsigned d = (unsigned)((unsigned char)t->p[i] - '0');
		if (d > 9 || v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

static bool parse_u32(const struct tok *t, uint32_t *out)
{
	uint64_t v;
	if (!parse_u64(t, &v) || v > UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

/* An optional '-' then decimal digits, within int64_t. */
static bool parse_i64(const struct tok *t, int64_t *out)
{
	struct tok digits = *t;
	bool neg = t->len > 0 && t->p[0] == '-';
	uint64_t v;
	if (neg) {
		digits.p++;
		digits.len--;
	}
	if (!parse_u64(&digits, &v))
		return false;
	if (neg) {
		if (v > (uint64_t)INT64_MAX + 1)
			return false;
		*out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
	} else {
		if (v > (uint64_t)INT64_MAX)
			return false;
		*out = (int64_t)v;
	}
	return true;
}

/* ---- outcomes ---------------------------------------------------------- */

static enum proto_rc bad(struct proto_req *req, const char *error,
			 size_t consumed, size_t swallow)
{
	req->error = error;
	req->consumed = consumed;
	req->swallow = swallow;
	return PROTO_BAD;
}

static void set_key(struct proto_req *req, const struct tok *t)
{
	req->keys[0].ptr = t->p;
	req->keys[0].len = (uint8_t)t->len;
	req->nkeys = 1;
}

/* ---- commands ---------------------------------------------------------- */

/*
 * Takes the keys of a read line from l->p, at most lim->keys_max of them.
 * With `eol`, l->end is the end of the line (its newline is in the buffer);
 * without, it is the end of the buffer, and a last token that reaches it
 * may be cut. Unless the rest of the line is `checked` already, a complete
 * line is checked whole first, so that a bad key refuses it before any of
 * its keys runs. `before` is how many keys earlier calls returned.
 */
static enum proto_rc read_keys(struct line *l, const char *buf, bool eol,
			       bool checked, uint64_t before,
			       const struct proto_limits *lim,
			       struct proto_req *req)
{
	struct tok t;
	if (eol && !checked) {
		/* One pass over the keys that fit in this call (the common
		   short line); only a line with more keys than that has the
		   rest of it checked on its own. */
		uint32_t k = 0;
		struct line v = *l;
		while (k < lim->keys_max && next_tok(&v, &t)) {
			if (!key_ok(&t))
				return bad(req, E_FORMAT, l->line_len, 0);
			req->keys[k].ptr = t.p;
			req->keys[k].len = (uint8_t)t.len;
			k++;
		}
		if (k < lim->keys_max) {
			if (k == 0 && before == 0)
				return bad(req, E_ERROR, l->line_len, 0);
			req->checked = true;
			req->nkeys = k;
			req->consumed = l->line_len;
			return PROTO_REQ;
		}
		struct line rest = v;
		while (next_tok(&rest, &t))
			if (!key_ok(&t))
				return bad(req, E_FORMAT, l->line_len, 0);
		checked = true;
	}
	req->checked = checked;
	const char *stop = l->p;
	uint32_t n = 0;
	for (;;) {
		if (!next_tok(l, &t)) {
			if (eol) {
				req->nkeys = n;
				req->consumed = l->line_len;
				return PROTO_REQ;
			}
			stop = l->end; /* trailing spaces are taken */
			break;
		}
		if (n == lim->keys_max)
			break; /* more keys follow: the next call's */
		bool cut = !eol && t.p + t.len == l->end;
		if (cut && t.len <= SHARD_KEY_MAX)
			break; /* the rest of this key has yet to come */
		if (!key_ok(&t)) {
			/* Only a line whose end has not arrived gets here. */
			req->skip_line = true;
			return bad(req, E_FORMAT, (size_t)(l->end - buf), 0);
		}
		req->keys[n].ptr = t.p;
		req->keys[n].len = (uint8_t)t.len;
		n++;
		stop = t.p + t.len;
	}
	if (n == 0 && stop == buf)
		return PROTO_NEED_MORE;
	req->nkeys = n;
	req->more = true;
	req->consumed = (size_t)(stop - buf);
	return PROTO_REQ;
}

/* get/gets <key>+ ; gat/gats <exptime> <key>+ */
static enum proto_rc parse_read(struct line *l, const char *buf, bool eol,
				const struct proto_limits *lim,
				struct proto_req *req)
{
	struct tok t;
	if (req->cmd == PROTO_CMD_GAT || req->cmd == PROTO_CMD_GATS) {
		if (!next_tok(l, &t) || (!eol && t.p + t.len == l->end)) {
			/* A line too long to wait for, and no exptime. */
			req->close = !eol;
			return bad(req, eol ? E_ERROR : E_CLOSE,
				   eol ? l->line_len : (size_t)(l->end - buf), 0);
		}
		if (!parse_i64(&t, &req->exptime)) {
			req->skip_line = !eol;
			return bad(req, E_EXPTIME,
				   eol ? l->line_len : (size_t)(l->end - buf), 0);
		}
	}
	return read_keys(l, buf, eol, false, 0, lim, req);
}

enum proto_rc proto_parse_more(const char *buf, size_t len,
			       const struct proto_limits *lim,
			       struct proto_key *keys,
			       const struct proto_stream *st,
			       struct proto_req *req)
{
	memset(req, 0, sizeof(*req));
	req->keys = keys;
	req->cmd = st->cmd;
	req->exptime = st->exptime;
	const char *nl = len ? memchr(buf, '\n', len) : NULL;
	struct line l = {
		.p = buf,
		.end = !nl ? buf + len : nl > buf && nl[-1] == '\r' ? nl - 1 : nl,
		.line_len = nl ? (size_t)(nl - buf) + 1 : 0,
	};
	return read_keys(&l, buf, nl != NULL, st->checked, st->nkeys, lim, req);
}

/*
 * set/add/replace/append/prepend <key> <flags> <exptime> <bytes> [noreply]
 * cas <key> <flags> <exptime> <bytes> <cas> [noreply]
 *
 * Checks run in memcached's order (token count, key, numbers, cas, length
 * range, size). Every refusal but a bad length drops the data block too:
 * unlike memcached, which would then parse the value as commands.
 */
static enum proto_rc parse_store(struct line *l, const char *buf, size_t len,
				 const struct proto_limits *lim,
				 struct proto_req *req)
{
	struct tok t[ARGS_MAX];
	size_t want = req->cmd == PROTO_CMD_CAS ? 5 : 4;
	size_t n = split(l, t, ARGS_MAX);
	uint64_t blen = 0;
	bool len_ok = n > 3 && parse_u64(&t[3], &blen) && blen <= VLEN_MAX;
	size_t swallow = len_ok ? (size_t)blen + 2 : 0;

	/* A wrong token count is ERROR and, as in memcached (t/cas.t), the
	   next line is not taken for a data block. */
	if (n != want && n != want + 1)
		return bad(req, E_ERROR, l->line_len, 0);
	req->noreply = n == want + 1 && is_noreply(&t[want]);
	if (!key_ok(&t[0]))
		return bad(req, E_FORMAT, l->line_len, swallow);
	set_key(req, &t[0]);
	if (!parse_u32(&t[1], &req->flags) || !parse_i64(&t[2], &req->exptime) ||
	    !len_ok)
		return bad(req, E_FORMAT, l->line_len, swallow);
	if (want == 5 && !parse_u64(&t[4], &req->cas))
		return bad(req, E_FORMAT, l->line_len, swallow);
	if (blen > lim->item_max) {
		req->drop_key = req->cmd == PROTO_CMD_SET;
		return bad(req, E_LARGE, l->line_len, swallow);
	}

	size_t total = l->line_len + (size_t)blen + 2;
	if (len < total) {
		req->need = total;
		return PROTO_NEED_MORE;
	}
	if (buf[total - 2] != '\r' || buf[total - 1] != '\n')
		return bad(req, E_CHUNK, total, 0);
	req->value = buf + l->line_len;
	req->vlen = (uint32_t)blen;
	req->consumed = total;
	return PROTO_REQ;
}

/* touch <key> <exptime> [noreply]; incr/decr <key> <delta> [noreply].
   A third token that is not "noreply" is ignored, as memcached does. */
static enum proto_rc parse_key_num(struct line *l, struct proto_req *req)
{
	struct tok t[4];
	size_t n = split(l, t, 4);
	if (n != 2 && n != 3)
		return bad(req, E_ERROR, l->line_len, 0);
	req->noreply = n == 3 && is_noreply(&t[2]);
	if (!key_ok(&t[0]))
		return bad(req, E_FORMAT, l->line_len, 0);
	set_key(req, &t[0]);
	if (req->cmd == PROTO_CMD_TOUCH) {
		if (!parse_i64(&t[1], &req->exptime))
			return bad(req, E_EXPTIME, l->line_len, 0);
	} else if (!parse_u64(&t[1], &req->delta)) {
		return bad(req, E_DELTA, l->line_len, 0);
	}
	req->consumed = l->line_len;
	return PROTO_REQ;
}

/* delete <key> [0] [noreply]: the legacy hold time is accepted only as "0",
   and the extra tokens are checked before the key, as in memcached. */
static enum proto_rc parse_delete(struct line *l, struct proto_req *req)
{
	struct tok t[4];
	size_t n = split(l, t, 4);
	if (n < 1 || n > 3)
		return bad(req, E_ERROR, l->line_len, 0);
	if (n > 1) {
		bool hold0 = tok_is(&t[1], "0", 1);
		req->noreply = is_noreply(&t[n - 1]);
		bool valid = (n == 2 && (hold0 || req->noreply)) ||
			     (n == 3 && hold0 && req->noreply);
		if (!valid)
			return bad(req, E_DELETE, l->line_len, 0);
	}
	if (!key_ok(&t[0]))
		return bad(req, E_FORMAT, l->line_len, 0);
	set_key(req, &t[0]);
	req->consumed = l->line_len;
	return PROTO_REQ;
}

/* flush_all [delay] [noreply]: a lone "noreply" is not a delay; with two
   tokens the second is ignored unless it is "noreply". */
static enum proto_rc parse_flush(struct line *l, struct proto_req *req)
{
	struct tok t[3];
	size_t n = split(l, t, 3);
	if (n > 2)
		return bad(req, E_ERROR, l->line_len, 0);
	req->noreply = n > 0 && is_noreply(&t[n - 1]);
	if (n != (req->noreply ? 1u : 0u) && !parse_i64(&t[0], &req->exptime))
		return bad(req, E_EXPTIME, l->line_len, 0);
	req->consumed = l->line_len;
	return PROTO_REQ;
}

/* verbosity <level> [noreply] */
static enum proto_rc parse_verbosity(struct line *l, struct proto_req *req)
{
	struct tok t[3];
	size_t n = split(l, t, 3);
	if (n < 1 || n > 2)
		return bad(req, E_ERROR, l->line_len, 0);
	req->noreply = is_noreply(&t[n - 1]);
	if (!parse_u32(&t[0], &req->level))
		return bad(req, E_FORMAT, l->line_len, 0);
	req->consumed = l->line_len;
	return PROTO_REQ;
}

/* stats [group ...]: the first argument, if any, is the group; the rest is
   ignored ("stats reset now" resets, as in memcached). */
static enum proto_rc parse_stats(struct line *l, struct proto_req *req)
{
	struct tok t;
	if (next_tok(l, &t)) {
		req->arg = t.p;
		req->arg_len = (uint32_t)t.len;
	}
	if (req->arg && next_tok(l, &t)) {
		req->arg2 = t.p;
		req->arg2_len = (uint32_t)t.len;
	}
	if (req->arg2 && next_tok(l, &t)) {
		req->arg3 = t.p;
		req->arg3_len = (uint32_t)t.len;
	}
	req->consumed = l->line_len;
	return PROTO_REQ;
}

/* cache_memlimit <MiB> [noreply]: memcached answers ERROR for a missing or
   non-numeric size (and for more than two arguments); the range is the
   caller's (it knows the replies). */
static enum proto_rc parse_memlimit(struct line *l, struct proto_req *req)
{
	struct tok t[3];
	size_t n = split(l, t, 3);
	if (n < 1 || n > 2)
		return bad(req, E_ERROR, l->line_len, 0);
	req->noreply = is_noreply(&t[n - 1]);
	uint64_t v;
	if (!parse_u64(&t[0], &v))
		return bad(req, E_ERROR, l->line_len, 0);
	req->delta = v;
	req->consumed = l->line_len;
	return PROTO_REQ;
}

/*
 * An unknown command is ERROR. Like memcached, a line whose last token
 * starts with "HTTP/" is taken for a web request and the connection closes
 * without a reply rather than answer every header line with ERROR.
 */
static enum proto_rc unknown(struct line *l, struct proto_req *req)
{
	const char *s = l->end;
	while (s > l->p && s[-1] == ' ')
		s--;
	const char *e = s;
	while (s > l->p && s[-1] != ' ')
		s--;
	req->close = e - s >= 5 && memcmp(s, "HTTP/", 5) == 0;
	return bad(req, req->close ? E_CLOSE : E_ERROR, l->line_len, 0);
}

/* The command a token names, or -1. */
static int lookup(const char *p, size_t n)
{
#define IS(lit) (memcmp(p, lit, sizeof(lit) - 1) == 0)
	switch (n) {
	case 3:
		if (IS("get")) return PROTO_CMD_GET;
		if (IS("set")) return PROTO_CMD_SET;
		if (IS("gat")) return PROTO_CMD_GAT;
		if (IS("add")) return PROTO_CMD_ADD;
		if (IS("cas")) return PROTO_CMD_CAS;
		break;
	case 4:
		if (IS("gets")) return PROTO_CMD_GETS;
		if (IS("gats")) return PROTO_CMD_GATS;
		if (IS("incr")) return PROTO_CMD_INCR;
		if (IS("decr")) return PROTO_CMD_DECR;
		if (IS("quit")) return PROTO_CMD_QUIT;
		break;
	case 5:
		if (IS("touch")) return PROTO_CMD_TOUCH;
		if (IS("stats")) return PROTO_CMD_STATS;
		break;
	case 6:
		if (IS("delete")) return PROTO_CMD_DELETE;
		if (IS("append")) return PROTO_CMD_APPEND;
		break;
	case 7:
		if (IS("replace")) return PROTO_CMD_REPLACE;
		if (IS("prepend")) return PROTO_CMD_PREPEND;
		if (IS("version")) return PROTO_CMD_VERSION;
		break;
	case 8:
		if (IS("shutdown")) return PROTO_CMD_SHUTDOWN;
		break;
	case 9:
		if (IS("flush_all")) return PROTO_CMD_FLUSH_ALL;
		if (IS("verbosity")) return PROTO_CMD_VERBOSITY;
		break;
	case 11:
		if (IS("lru_crawler")) return PROTO_CMD_LRU_CRAWLER;
		break;
	case 14:
		if (IS("cache_memlimit")) return PROTO_CMD_CACHE_MEMLIMIT;
		break;
	}
	return -1;
#undef IS
}

/* The decimal digits from p on as a token; the byte after them. */
static const char *digits(const char *p, const char *end, struct tok *t)
{
	const char *s = p;
	while (p < end && (unsigned)(*p - '0') <= 9)
		p++;
	*t = (struct tok){ .p = s, .len = (size_t)(p - s) };
	return p;
}

/*
 * "set <key> <flags> <exptime> <bytes>\r\n" with single spaces, plain
 * numbers and its data block whole and good: the commonest store, read
 * without the general walk (the newline's memchr, the command lookup,
 * split), to the same outcome. Anything else (noreply, a sign, a length
 * over the limits, data not all here, a bad end of data) is left to the
 * walk: false.
 */
static bool parse_set1(const char *buf, size_t len,
		       const struct proto_limits *lim, struct proto_req *req)
{
	if (len < 14 || memcmp(buf, "set ", 4) != 0)
		return false;
	const char *end = buf + len, *k = buf + 4;
	size_t klen = proto_key_span(k, end);
	const char *p = k + klen;
	struct tok f, e, b;
	if (klen == 0 || klen > SHARD_KEY_MAX || p == end || *p != ' ' ||
	    (p = digits(p + 1, end, &f)) == end || *p != ' ' ||
	    (p = digits(p + 1, end, &e)) == end || *p != ' ' ||
	    end - (p = digits(p + 1, end, &b)) < 2 || p[0] != '\r' ||
	    p[1] != '\n')
		return false;
	uint32_t flags;
	int64_t exptime;
	uint64_t blen;
	size_t line = (size_t)(p + 2 - buf);
	if (!parse_u32(&f, &flags) || !parse_i64(&e, &exptime) ||
	    !parse_u64(&b, &blen) || blen > VLEN_MAX || blen > lim->item_max ||
	    line > lim->line_max + 1 || len - line < blen + 2 ||
	    buf[line + blen] != '\r' || buf[line + blen + 1] != '\n')
		return false;
	req->cmd = PROTO_CMD_SET;
	set_key(req, &(struct tok){ .p = k, .len = klen });
	req->flags = flags;
	req->exptime = exptime;
	req->value = buf + line;
	req->vlen = (uint32_t)blen;
	req->consumed = line + blen + 2;
	return true;
}

enum proto_rc proto_parse(const char *buf, size_t len,
			  const struct proto_limits *lim,
			  struct proto_key *keys, struct proto_req *req)
{
	memset(req, 0, sizeof(*req));
	req->keys = keys;
	if (parse_set1(buf, len, lim, req))
		return PROTO_REQ;

	/* A line may hold line_max bytes before its newline. */
	size_t scan = len <= lim->line_max ? len : lim->line_max + 1;
	const char *nl = scan ? memchr(buf, '\n', scan) : NULL;
	if (!nl) {
		if (len <= lim->line_max)
			return PROTO_NEED_MORE;
		/* Too long to wait for its end: a read streams, anything
		   else closes the connection without a reply (memcached). */
		struct line l = { .p = buf, .end = buf + len, .line_len = 0 };
		struct tok c;
		int cmd = next_tok(&l, &c) && c.p + c.len < l.end ?
				  lookup(c.p, c.len) : -1;
		if (cmd >= 0 && proto_is_read((enum proto_cmd)cmd)) {
			req->cmd = (enum proto_cmd)cmd;
			return parse_read(&l, buf, false, lim, req);
		}
		req->close = true;
		return bad(req, E_CLOSE, len, 0);
	}

	struct line l = {
		.p = buf,
		.end = nl > buf && nl[-1] == '\r' ? nl - 1 : nl,
		.line_len = (size_t)(nl - buf) + 1,
	};
	struct tok c;
	if (!next_tok(&l, &c))
		return bad(req, E_ERROR, l.line_len, 0);
	int cmd = lookup(c.p, c.len);
	if (cmd < 0) {
		l.p = c.p;
		return unknown(&l, req);
	}
	req->cmd = (enum proto_cmd)cmd;

	switch (req->cmd) {
	case PROTO_CMD_GET:
	case PROTO_CMD_GETS:
	case PROTO_CMD_GAT:
	case PROTO_CMD_GATS:
		return parse_read(&l, buf, true, lim, req);
	case PROTO_CMD_SET:
	case PROTO_CMD_ADD:
	case PROTO_CMD_REPLACE:
	case PROTO_CMD_APPEND:
	case PROTO_CMD_PREPEND:
	case PROTO_CMD_CAS:
		return parse_store(&l, buf, len, lim, req);
	case PROTO_CMD_TOUCH:
	case PROTO_CMD_INCR:
	case PROTO_CMD_DECR:
		return parse_key_num(&l, req);
	case PROTO_CMD_DELETE:
		return parse_delete(&l, req);
	case PROTO_CMD_FLUSH_ALL:
		return parse_flush(&l, req);
	case PROTO_CMD_VERBOSITY:
		return parse_verbosity(&l, req);
	case PROTO_CMD_STATS:
	case PROTO_CMD_LRU_CRAWLER:
	case PROTO_CMD_SHUTDOWN: /* arg: the mode ("graceful") */
		return parse_stats(&l, req);
	case PROTO_CMD_CACHE_MEMLIMIT:
		return parse_memlimit(&l, req);
	case PROTO_CMD_VERSION:
	case PROTO_CMD_QUIT:
		/* memcached ignores any arguments of these. */
		break;
	}
	req->consumed = l.line_len;
	return PROTO_REQ;
}

/* ---- composers --------------------------------------------------------- */

/* "00" to "99": two digits a step, so a reply's numbers cost half the
   divisions (they are a tenth of a get's instructions otherwise). */
static const char DIGITS2[201] =
	"00010203040506070809101112131415161718192021222324252627282930313233"
	"34353637383940414243444546474849505152535455565758596061626364656667"
	"6869707172737475767778798081828384858687888990919293949596979899";

/* Values of four digits or more. */
static size_t u64_long(char *dst, uint64_t v)
{
	size_t n = 2;
	for (uint64_t x = v; x >= 100; x /= 10)
		n++;
	char *p = dst + n;
	while (v >= 100) {
		p -= 2;
		memcpy(p, &DIGITS2[(v % 100) * 2], 2);
		v /= 100;
	}
	if (v >= 10) {
		p -= 2;
		memcpy(p, &DIGITS2[v * 2], 2);
	} else {
		*--p = (char)('0' + v);
	}
	return n;
}

/* Inline where a reply line is composed: most flags and value lengths
   have at most three digits. */
static inline size_t put_u64(char *dst, uint64_t v)
{
	if (v < 10) {
		dst[0] = (char)('0' + v);
		return 1;
	}
	if (v >= 1000)
		return u64_long(dst, v);
	uint32_t x = (uint32_t)v;
	size_t n = x < 100 ? 2 : 3;
	if (n == 3)
		dst[0] = (char)('0' + x / 100);
	memcpy(dst + n - 2, &DIGITS2[(x % 100) * 2], 2);
	return n;
}

size_t proto_u64(char *dst, uint64_t v)
{
	return put_u64(dst, v);
}

size_t proto_value_line(char *dst, const struct shard_view *v, bool with_cas)
{
	char *p = dst;
	memcpy(p, "VALUE ", 6);
	p += 6;
	if (v->klen >= 8 && v->klen <= 16) {
		/* Two words that overlap, not a call: most keys. */
		uint64_t a, b;
		memcpy(&a, v->key, 8);
		memcpy(&b, v->key + v->klen - 8, 8);
		memcpy(p, &a, 8);
		memcpy(p + v->klen - 8, &b, 8);
	} else {
		memcpy(p, v->key, v->klen);
	}
	p += v->klen;
	*p++ = ' ';
	p += put_u64(p, v->flags);
	*p++ = ' ';
	p += put_u64(p, v->vlen);
	if (with_cas) {
		*p++ = ' ';
		p += put_u64(p, v->cas);
	}
	*p++ = '\r';
	*p++ = '\n';
	return (size_t)(p - dst);
}

#define LIT(s) memcpy(dst, s, sizeof(s) - 1), sizeof(s) - 1

/*
 * An append or prepend whose result does not fit, or cannot be allocated,
 * is NOT_STORED in memcached (its store path fails the allocation of the
 * combined item and says so); a plain store over the size limit is the
 * SERVER_ERROR. incr/decr out of memory is memcached's shorter
 * "SERVER_ERROR out of memory". A status that has no reply line for a
 * non-read command (SHARD_HIT) gives a SERVER_ERROR rather than nothing, so
 * the client never waits forever.
 */
size_t proto_status_line(char *dst, enum proto_cmd cmd,
			 const struct shard_res *res)
{
	bool concat = cmd == PROTO_CMD_APPEND || cmd == PROTO_CMD_PREPEND;
	bool arith = cmd == PROTO_CMD_INCR || cmd == PROTO_CMD_DECR;
	switch (res->status) {
	case SHARD_STORED:
		return LIT("STORED\r\n");
	case SHARD_NOT_STORED:
		return LIT("NOT_STORED\r\n");
	case SHARD_EXISTS:
		return LIT("EXISTS\r\n");
	case SHARD_NOT_FOUND:
		return LIT("NOT_FOUND\r\n");
	case SHARD_DELETED:
		return LIT("DELETED\r\n");
	case SHARD_TOUCHED:
		return LIT("TOUCHED\r\n");
	case SHARD_NUMBER: {
		size_t n = proto_u64(dst, res->number);
		dst[n] = '\r';
		dst[n + 1] = '\n';
		return n + 2;
	}
	case SHARD_NON_NUMERIC:
		return LIT("CLIENT_ERROR cannot increment or decrement "
			   "non-numeric value\r\n");
	case SHARD_TOO_LARGE:
		if (concat)
			return LIT("NOT_STORED\r\n");
		return LIT("SERVER_ERROR object too large for cache\r\n");
	case SHARD_NO_MEMORY:
		if (concat)
			return LIT("NOT_STORED\r\n");
		if (arith)
			return LIT("SERVER_ERROR out of memory\r\n");
		return LIT("SERVER_ERROR out of memory storing object\r\n");
	case SHARD_HIT:
		break;
	}
	return LIT("SERVER_ERROR unhandled status\r\n");
}

#undef LIT

size_t proto_stat_u64(char *dst, const char *name, uint64_t value)
{
	size_t nl = strlen(name);
	char *p = dst;
	memcpy(p, "STAT ", 5);
	p += 5;
	memcpy(p, name, nl);
	p += nl;
	*p++ = ' ';
	p += proto_u64(p, value);
	*p++ = '\r';
	*p++ = '\n';
	return (size_t)(p - dst);
}

/*
 * Writes at most `room` bytes: a value too long for the room is cut short so
 * that the line still ends in "\r\n"; when not even "STAT <name> \r\n" fits,
 * nothing is written and 0 is returned.
 */
size_t proto_stat_str(char *dst, size_t room, const char *name,
		      const char *value)
{
	size_t nl = strlen(name), vl = strlen(value);
	size_t fixed = 5 + nl + 1 + 2;
	if (room < fixed)
		return 0;
	if (vl > room - fixed)
		vl = room - fixed;
	char *p = dst;
	memcpy(p, "STAT ", 5);
	p += 5;
	memcpy(p, name, nl);
	p += nl;
	*p++ = ' ';
	memcpy(p, value, vl);
	p += vl;
	*p++ = '\r';
	*p++ = '\n';
	return (size_t)(p - dst);
}
