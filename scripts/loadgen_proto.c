/*
 * loadgen_proto.c - reply classification and request lines.
 *
 * Replies are matched by their first bytes, cheapest first: STORED and VALUE
 * are nearly all of the traffic. A VALUE line is parsed strictly (single
 * spaces, decimal numbers that fit) because a loose parse would hide exactly
 * the framing bugs the generator exists to find.
 */
#include "scripts/loadgen_proto.h"

#include <string.h>

static int starts(const char *s, size_t len, const char *lit, size_t llen)
{
	return len >= llen && memcmp(s, lit, llen) == 0;
}

#define STARTS(s, len, lit) starts(s, len, lit, sizeof(lit) - 1)
#define IS(s, len, lit) ((len) == sizeof(lit) - 1 && memcmp(s, lit, len) == 0)

/* Parses a decimal field ending at a space or at `end`; 0 or -1. */
static int parse_u64(const char **pp, const char *end, uint64_t max,
		     uint64_t *out)
{
	const char *p = *pp;
	uint64_t v = 0;
	if (p == end || *p < '0' || *p > '9')
		return -1;
	while (p < end && *p >= '0' && *p <= '9') {
		uint64_t d = (uint64_t)(*p - '0');
		if (v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
		p++;
	}
	if (p < end && *p != ' ')
		return -1;
	*pp = p;
	*out = v;
	return 0;
}

static enum reply_kind parse_value(const char *line, size_t len,
				   struct value_line *vl)
{
	const char *p = line + 6, *end = line + len;
	const char *sp = memchr(p, ' ', (size_t)(end - p));
	if (!sp || sp == p)
		return REPLY_UNKNOWN;
	vl->key = p;
	vl->klen = (size_t)(sp - p);
	p = sp + 1;
	uint64_t flags, bytes, cas;
	if (parse_u64(&p, end, UINT32_MAX, &flags) || p == end)
		return REPLY_UNKNOWN;
	p++;
	if (parse_u64(&p, end, PROTO_VALUE_MAX, &bytes))
		return REPLY_UNKNOWN;
	if (p < end) { /* gets: a cas unique follows */
		p++;
		if (parse_u64(&p, end, UINT64_MAX, &cas) || p != end)
			return REPLY_UNKNOWN;
	}
	vl->flags = (uint32_t)flags;
	vl->bytes = (size_t)bytes;
	return REPLY_VALUE;
}

enum reply_kind proto_classify(const char *line, size_t len,
			       struct value_line *vl)
{
	if (IS(line, len, "STORED"))
		return REPLY_STORED;
	if (STARTS(line, len, "VALUE "))
		return parse_value(line, len, vl);
	if (IS(line, len, "END"))
		return REPLY_END;
	if (IS(line, len, "NOT_STORED") || IS(line, len, "EXISTS") ||
	    IS(line, len, "NOT_FOUND"))
		return REPLY_REFUSED;
	if (IS(line, len, "ERROR") || STARTS(line, len, "ERROR ") ||
	    STARTS(line, len, "CLIENT_ERROR") || STARTS(line, len, "SERVER_ERROR"))
		return REPLY_ERROR;
	return REPLY_UNKNOWN;
}

static char *put_dec(char *p, uint64_t v)
{
	char tmp[20];
	int n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = tmp[--n];
	return p;
}

size_t proto_set_line(char *dst, const char *key, size_t klen, uint32_t flags,
		      size_t bytes)
{
	char *p = dst;
	memcpy(p, "set ", 4);
	p += 4;
	memcpy(p, key, klen);
	p += klen;
	*p++ = ' ';
	p = put_dec(p, flags);
	memcpy(p, " 0 ", 3);
	p += 3;
	p = put_dec(p, bytes);
	*p++ = '\r';
	*p++ = '\n';
	return (size_t)(p - dst);
}
