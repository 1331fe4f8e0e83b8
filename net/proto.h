/*
 * proto.h - memcached's classic text protocol: parsing request lines and
 * data blocks, and composing reply lines.
 *
 * The parser is a pure function of the bytes it is given: it keeps no state
 * between calls, allocates nothing, and never reads past `len`. A request is
 * returned only when it is complete (its line and, for storage commands, its
 * data block and trailing "\r\n"), so a caller that receives bytes in pieces
 * simply calls again with more. Pointers in a parsed request (keys, value,
 * argument strings) point into the caller's buffer and are valid as long as
 * those bytes stay where they are.
 *
 * Bad input yields the reply memcached gives (ERROR, CLIENT_ERROR ...,
 * SERVER_ERROR ...) and tells the caller how many bytes to drop, including a
 * data block that is yet to arrive (`swallow`), so the connection stays
 * usable; only a line that exceeds the line limit asks the caller to close.
 *
 * The composers write into memory the caller provides and return the number
 * of bytes written; each documents the room it needs. Any thread may call
 * anything here.
 */
#ifndef RINGCACHE_PROTO_H
#define RINGCACHE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "shard/shard.h"

enum proto_cmd {
	PROTO_CMD_GET,
	PROTO_CMD_GETS,
	PROTO_CMD_GAT,
	PROTO_CMD_GATS,
	PROTO_CMD_SET,
	PROTO_CMD_ADD,
	PROTO_CMD_REPLACE,
	PROTO_CMD_APPEND,
	PROTO_CMD_PREPEND,
	PROTO_CMD_CAS,
	PROTO_CMD_TOUCH,
	PROTO_CMD_DELETE,
	PROTO_CMD_INCR,
	PROTO_CMD_DECR,
	PROTO_CMD_FLUSH_ALL,
	PROTO_CMD_VERSION,
	PROTO_CMD_VERBOSITY,
	PROTO_CMD_QUIT,
	PROTO_CMD_STATS,   /* arg holds the optional sub-command ("settings") */
	PROTO_CMD_SHUTDOWN,
	PROTO_CMD_CACHE_MEMLIMIT, /* level holds the MiB */
	PROTO_CMD_LRU_CRAWLER,    /* arg: the sub-command ("metadump") */
};

/* Keys a read returns per call at most: a longer line streams (below). */
#define PROTO_KEYS_CHUNK 32

struct proto_key {
	const char *ptr;   /* into the caller's buffer */
	uint8_t len;       /* 1..SHARD_KEY_MAX */
};

struct proto_limits {
	size_t line_max;   /* longest request line accepted, "\r\n" included */
	size_t item_max;   /* -I: longest value accepted */
	uint32_t keys_max; /* room of the key array: most keys returned by one
			      call for a get/gets/gat/gats line, which
			      streams (see proto_parse_more) */
};

/* The high bit of every byte of x that is <= 0x20 or 0x7f, exact for the
   lowest such byte (a borrow may mark a byte above it too). */
static inline uint64_t proto__stop_bytes(uint64_t x)
{
	const uint64_t ones = UINT64_C(0x0101010101010101);
	const uint64_t highs = ones << 7;
	uint64_t del = x ^ (ones * 0x7f);
	return (((x - ones * 0x21) & ~x) | ((del - ones) & ~del)) & highs;
}

/* How many bytes from p on come before the first byte <= 0x20 or 0x7f
   (what ends a key: ' ', '\r', '\n', a control byte), end - p if none
   does; sixteen bytes at a time (SSE2) while sixteen are left, then eight.
   Inline: it is the parser's inner loop. */
static inline size_t proto_key_span(const char *p, const char *end)
{
	const char *s = p;
#ifdef __SSE2__
	const __m128i low = _mm_set1_epi8(0x21), del = _mm_set1_epi8(0x7f);
	while (end - p >= 16) {
		__m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
		/* a byte stops unless it is >= 0x21 (unsigned) and not 0x7f */
		__m128i ok = _mm_cmpeq_epi8(_mm_max_epu8(x, low), x);
		unsigned m = (unsigned)_mm_movemask_epi8(
			_mm_andnot_si128(_mm_cmpeq_epi8(x, del), ok)) ^ 0xFFFFu;
		if (m)
			return (size_t)(p - s) + (size_t)__builtin_ctz(m);
		p += 16;
	}
#endif
	uint64_t m = 0;
	while (!m && end - p >= 8) {
		uint64_t x;
		memcpy(&x, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
		x = __builtin_bswap64(x); /* p[0] in the low byte */
#endif
		m = proto__stop_bytes(x);
		p += m ? __builtin_ctzll(m) / 8 : 8;
	}
	/* The last bytes, fewer than eight (stops at once after a find). */
	while (p < end && (unsigned char)*p > 0x20 && *p != 0x7f)
		p++;
	return (size_t)(p - s);
}

enum proto_rc {
	PROTO_REQ,       /* a complete request in *req */
	PROTO_NEED_MORE, /* incomplete: call again with more bytes */
	PROTO_BAD,       /* bad input: reply req->error, drop bytes as told */
};

struct proto_req {
	enum proto_cmd cmd;
	bool noreply;
	uint32_t flags;
	int64_t exptime;   /* set/add/...: raw; touch/gat: raw; flush_all: delay */
	uint64_t cas;      /* cas: the compare value */
	uint64_t delta;    /* incr/decr */
	uint32_t level;    /* verbosity */
	const char *value; /* storage commands: vlen bytes, into the buffer */
	uint32_t vlen;
	const char *arg;   /* stats: sub-command, NULL if none */
	uint32_t arg_len;
	uint32_t nkeys;    /* keys[0..nkeys) (one for single-key commands) */
	struct proto_key *keys; /* the array the caller passed in */

	/* Filled for every rc but PROTO_NEED_MORE. */
	size_t consumed;   /* bytes of the buffer this request (or junk) used */
	/* Filled for PROTO_BAD only. */
	const char *error; /* full reply line, "\r\n" included, static */
	size_t swallow;    /* further bytes to drop after `consumed`, that may
			      not have arrived yet (a refused data block) */
	bool close;        /* close the connection after sending `error` */
	bool drop_key;     /* a too-large set: memcached drops the key's old
			      value, so the caller deletes keys[0] */
	/* Filled for PROTO_NEED_MORE only: total bytes the request needs if
	   known (a storage command whose line is complete), else 0. */
	size_t need;

	/* Reads (get/gets/gat/gats), which stream: */
	bool more;         /* the line goes on past `consumed`: continue with
			      proto_parse_more() */
	bool checked;      /* the rest of the line is known to hold only good
			      keys (its newline has been seen) */
	bool skip_line;    /* PROTO_BAD: drop input up to and including the
			      next "\n" (a bad key of a line whose end has
			      not arrived yet) */
	const char *arg2;  /* the second argument (stats cachedump, stats
			      detail), NULL if none */
	uint32_t arg2_len;
	const char *arg3;  /* the third argument (stats cachedump <id> <n>) */
	uint32_t arg3_len;
};

/*
 * What a caller keeps between the pieces of a read line that streams: the
 * command, its exptime (gat/gats), how many keys came before, and whether
 * the rest of the line has been checked.
 */
struct proto_stream {
	enum proto_cmd cmd;
	int64_t exptime;
	uint64_t nkeys;
	bool checked;
};

/*
 * Parses the first request in buf[0..len). `keys` has room for
 * lim->keys_max entries. Returns PROTO_REQ, PROTO_NEED_MORE or PROTO_BAD as
 * described above. When no "\n" occurs within lim->line_max bytes the result
 * is PROTO_BAD with an empty error and close set (memcached closes such a
 * connection without a word), except for a read line (get, gets, gat,
 * gats), whose keys stream:
 *
 * Reads. A read line returns at most lim->keys_max keys per call; when the
 * line goes on past them (more keys, or bytes that have not arrived), the
 * result is PROTO_REQ with `more` set and `consumed` up to the end of the
 * last key returned, and the caller continues with proto_parse_more(). A
 * line is streamed before its newline arrives only once it is longer than
 * lim->line_max (shorter lines are parsed whole, as memcached does). When
 * the newline is in the buffer the whole rest of the line is checked before
 * any key is returned, so a bad key refuses the line with
 * "CLIENT_ERROR bad command line format" and no key of it runs (memcached's
 * answer); a bad key that arrives after earlier keys were returned gets the
 * same error after their answers, with skip_line set.
 */
enum proto_rc proto_parse(const char *buf, size_t len,
			  const struct proto_limits *lim,
			  struct proto_key *keys, struct proto_req *req);

/*
 * "get <key>\r\n" (or "\n") with one good key, the commonest request,
 * without the general walk (the newline's memchr, the command lookup, the
 * key loop): its key into *key and the bytes the line takes, or 0 for any
 * other line, which proto_parse then reads. A line it takes is one that
 * proto_parse reads as a get of that one key and length, checked, not
 * `more` (test_proto and the parser's fuzzer hold it to that).
 */
static inline size_t proto_get1(const char *buf, size_t len,
				const struct proto_limits *lim,
				struct proto_key *key)
{
	if (len < 7 || memcmp(buf, "get ", 4) != 0)
		return 0;
	const char *k = buf + 4, *p = k;
	/* A good key and its "\r\n" are all within this bound. */
	const char *end = len - 4 < SHARD_KEY_MAX + 2 ? buf + len :
			  k + SHARD_KEY_MAX + 2;
	p += proto_key_span(p, end);
	size_t klen = (size_t)(p - k);
	size_t eol = end - p >= 2 && p[0] == '\r' && p[1] == '\n' ? 2 :
		     p < end && p[0] == '\n' ? 1 : 0;
	/* The walk streams a line whose newline is past line_max. */
	if (!eol || klen == 0 || klen > SHARD_KEY_MAX ||
	    4 + klen + eol > lim->line_max + 1)
		return 0;
	key->ptr = k;
	key->len = (uint8_t)klen;
	return 4 + klen + eol;
}

/*
 * Continues a read line after a PROTO_REQ with `more`: buf starts where the
 * previous call's `consumed` (or the caller's partial use of its keys)
 * ended. Returns PROTO_REQ with the next keys (possibly none, when only
 * spaces were taken), `more` while the line goes on, or PROTO_NEED_MORE
 * when the buffer ends in the middle of a key, or PROTO_BAD (a bad key:
 * "CLIENT_ERROR bad command line format"; with skip_line when the line's
 * newline is not in the buffer; "ERROR" when the line turns out to have no
 * key at all).
 */
enum proto_rc proto_parse_more(const char *buf, size_t len,
			       const struct proto_limits *lim,
			       struct proto_key *keys,
			       const struct proto_stream *st,
			       struct proto_req *req);

/* Room a VALUE line can need: "VALUE " key " " u32 " " u32 " " u64 "\r\n". */
#define PROTO_VALUE_LINE_MAX (6 + SHARD_KEY_MAX + 1 + 10 + 1 + 10 + 1 + 20 + 2)

/* "VALUE <key> <flags> <bytes>[ <cas>]\r\n"; with_cas for gets/gats. */
size_t proto_value_line(char *dst, const struct shard_view *v, bool with_cas);

/*
 * The reply line for a non-read outcome ("STORED\r\n", "NOT_FOUND\r\n", ...),
 * for the command that produced it. For SHARD_NUMBER it writes the number.
 * Needs at most PROTO_STATUS_MAX bytes. Returns the length written.
 */
#define PROTO_STATUS_MAX 64
size_t proto_status_line(char *dst, enum proto_cmd cmd,
			 const struct shard_res *res);

/* "STAT <name> <value>\r\n". Needs strlen(name) + 30 bytes. */
size_t proto_stat_u64(char *dst, const char *name, uint64_t value);
size_t proto_stat_str(char *dst, size_t room, const char *name,
		      const char *value);

/* Unsigned decimal; needs 20 bytes, writes no terminator. */
size_t proto_u64(char *dst, uint64_t v);

/* True for commands that read (get, gets, gat, gats). */
static inline bool proto_is_read(enum proto_cmd cmd)
{
	return cmd <= PROTO_CMD_GATS;
}

#endif
