/*
 * loadgen_proto.h - the load generator's side of memcached's text protocol:
 * composing `get` and `set` requests and classifying reply lines.
 *
 * Compose functions write into a buffer the caller has sized (see the
 * *_MAX macros) and return the bytes written. proto_classify reads one reply
 * line (without its "\r\n") and, for a VALUE line, points `key` into that
 * line: the pointer lives as long as the caller's read buffer is not
 * compacted. Pure functions, any thread.
 */
#ifndef LOADGEN_PROTO_H
#define LOADGEN_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* "set " key " " flags " 0 " bytes "\r\n" without the key */
#define PROTO_SET_LINE_FIXED (4 + 1 + 10 + 3 + 20 + 2)
/* Largest data block a VALUE line may announce before we call it garbage. */
#define PROTO_VALUE_MAX (64u << 20)
/* Longest reply line we wait for before declaring the stream broken. */
#define PROTO_LINE_MAX 2048

enum reply_kind {
	REPLY_STORED,     /* STORED */
	REPLY_REFUSED,    /* NOT_STORED, EXISTS, NOT_FOUND */
	REPLY_ERROR,      /* ERROR, CLIENT_ERROR ..., SERVER_ERROR ... */
	REPLY_VALUE,      /* VALUE <key> <flags> <bytes> [<cas>] */
	REPLY_END,        /* END */
	REPLY_UNKNOWN,    /* anything else, including a malformed VALUE line */
};

struct value_line {
	const char *key; /* into the line */
	size_t klen;
	uint32_t flags;
	size_t bytes;
};

enum reply_kind proto_classify(const char *line, size_t len,
			       struct value_line *vl);

/* Writes "set <key> <flags> 0 <bytes>\r\n". */
size_t proto_set_line(char *dst, const char *key, size_t klen, uint32_t flags,
		      size_t bytes);

#endif
