/*
 * meta.h - memcached's meta protocol (mg, ms, md, ma, mn, me): parsing a
 * meta request line (and an ms data block) into a decoded request, and
 * composing meta reply lines from a shard's answer.
 *
 * The parser follows proto.h's contract: a pure function of the bytes it is
 * given, no state between calls, nothing allocated, never a read past
 * `len`, a request returned only when complete. It fills the connection's
 * struct proto_req with what the connection loop needs whatever the command
 * (consumed, error, swallow, need, close, drop_key, keys[0]) and a struct
 * meta_req with the rest. Pointers in a meta_req (key, value) point into
 * the caller's buffer or, for a base64 key, into the meta_req itself
 * (kbuf): it must not be copied while they are used. The reply recipe
 * (struct meta_spec) holds no pointer at all, so it can be copied into an
 * arena and read by another worker.
 *
 * memcached 1.6.18 is the reference for every byte of every reply; where
 * ringcached differs, the difference is written next to the code in meta.c
 * and in the README. Bad input yields memcached's error line; meta errors
 * are never muted by `q`.
 *
 * The composers write into memory the caller provides (META_LINE_MAX bytes
 * for a reply line) and return the number of bytes written; 0 means the
 * reply is suppressed (quiet mode). Any thread may call anything here.
 */
#ifndef RINGCACHE_META_H
#define RINGCACHE_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/proto.h"
#include "shard/shard.h"

enum meta_cmd {
	META_MG, /* meta get */
	META_MS, /* meta set */
	META_MD, /* meta delete */
	META_MA, /* meta arithmetic */
	META_MN, /* no-op: "MN\r\n", the end marker of a quiet pipeline */
	META_ME, /* debug: "ME <key> exp=.. la=.. cas=.. fetch=.. cls=.. size=.." */
};

#define META_OPAQUE_MAX 32  /* longest O token, 'O' included (memcached) */
#define META_RET_MAX 20     /* flag letters kept: memcached takes <= 17 */
/* Room for any reply line (head of a VA reply included, not its value):
   code and size, a base64 key (336) with " b", every return flag with a
   20-digit number, an opaque, Z X W, "\r\n"; and an ma value line. */
#define META_LINE_MAX 1024
/* Base64 of SHARD_KEY_MAX bytes. */
#define META_B64_KEY_MAX 336

/* How to answer a request: plain data, no pointers. */
struct meta_spec {
	uint8_t cmd;              /* enum meta_cmd */
	bool quiet;               /* q */
	bool b64;                 /* b: the key is returned base64 + " b" */
	bool value;               /* v */
	bool concat;              /* ms append/prepend: failures are NS */
	uint8_t nret;
	char ret[META_RET_MAX];   /* the flag letters, in request order */
	uint8_t olen;
	char opaque[META_OPAQUE_MAX]; /* the O token as sent, 'O' included */
};

struct meta_req {
	struct meta_spec spec;
	struct shard_req q;       /* op, key, flags, exptime, cas, delta,
				     value, mflags, vivify, recache, initial,
				     new_cas (hash is left for the caller) */
	char kbuf[SHARD_KEY_MAX]; /* a base64 key, decoded */
};

/* Whether buf starts like a meta command ("m" + letter + separator): the
   connection then parses it with meta_parse() instead of proto_parse(). */
static inline bool meta_is_cmd(const char *buf, size_t len)
{
	return len >= 3 && buf[0] == 'm' &&
	       (buf[2] == ' ' || buf[2] == '\r' || buf[2] == '\n');
}

/*
 * Parses the meta request at the start of buf[0..len). Same results as
 * proto_parse(): PROTO_REQ (req->consumed, req->keys[0] and *m filled),
 * PROTO_NEED_MORE (req->need set for an ms whose line is complete), or
 * PROTO_BAD (req->error, consumed, swallow, close, drop_key). req->cmd is
 * PROTO_CMD_SET for ms (so that a refused value drops the key's old value,
 * as memcached does in every ms mode) and PROTO_CMD_GET otherwise.
 * An unknown two-letter "m?" command is "ERROR".
 */
enum proto_rc meta_parse(const char *buf, size_t len,
			 const struct proto_limits *lim, struct proto_key *keys,
			 struct proto_req *req, struct meta_req *m);

/*
 * The head of an mg hit (or autovivified miss): "VA <size> <flags>*\r\n"
 * with v, else "HD <flags>*\r\n". v->res holds the meta answer.
 */
size_t meta_compose_hit(char *dst, const struct meta_spec *sp,
			const struct shard_view *v);

/*
 * The whole reply of any other outcome: an mg miss (EN), ms/md/ma codes
 * (HD NS EX NF, an ma value "VA <n> ..\r\n<number>\r\n"), errors from the
 * shard, mn, and me (from a hit's res, or EN). key/klen: the decoded key.
 * rc < 0 is a shard error. Returns 0 when quiet mode suppresses it.
 */
size_t meta_compose(char *dst, const struct meta_spec *sp, const char *key,
		    uint8_t klen, int rc, const struct shard_res *res);

/* Base64 (RFC 4648, padded), as memcached's. decode returns the bytes
   written (0: bad input or over `room`); encode needs 4 * ceil(n / 3). */
size_t meta_b64_decode(const char *src, size_t n, char *dst, size_t room);
size_t meta_b64_encode(const unsigned char *src, size_t n, char *dst);

#endif
