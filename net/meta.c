/*
 * meta.c - the meta protocol's parser and reply composers; see meta.h.
 *
 * memcached 1.6.18 (proto_text.c: _meta_flag_preparse, process_m*_command)
 * is followed check by check, so that the same bad line gets the same error
 * line: the token count, the key length, "options flags too long", then one
 * pass over the flags in which a repeated or unknown flag stops at once and
 * a bad number is remembered (the last one wins), then per-command checks
 * (ms: mode, opaque length; ma: mode). Flags are single letters and only
 * the first byte of a token names one ("vxyz" is v), as in memcached.
 *
 * Deliberate differences, each also in the README:
 *  - numbers are plain decimal (T N R may have a leading '-'); memcached's
 *    strtol also takes "+5" and " 5";
 *  - a key (not base64) with a control character is refused with "CLIENT_ERROR
 *    bad command line format", as for the classic commands;
 *  - an opaque over 32 bytes is refused before anything is executed
 *    (memcached's mg and ma run the command first, then send the error);
 *  - an ms whose line is refused has its data block dropped whenever its
 *    length is readable (memcached drops it only after the flags parsed);
 *  - E (explicit cas, memcached 1.6.27) is accepted by mg (for N), ms, md
 *    and ma; 1.6.18 answers "CLIENT_ERROR invalid flag";
 *  - md x (newer protocol.txt: empty the value, keep the item) is accepted;
 *    1.6.18 answers "CLIENT_ERROR invalid or duplicate flag";
 *  - k returns the key base64 encoded when the request had b; memcached
 *    remembers per item whether its key was stored binary.
 */
#include "net/meta.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define TOKENS_MAX 24  /* memcached's MAX_TOKENS */
#define NTOKENS_MAX 20 /* memcached's MFLAG_MAX_OPT_LENGTH (with the
			  terminal token memcached counts) */

static const char E_ERROR[] = "ERROR\r\n";
static const char E_FORMAT[] = "CLIENT_ERROR bad command line format\r\n";
static const char E_LINE[] = "CLIENT_ERROR line too long\r\n";
static const char E_CHUNK[] = "CLIENT_ERROR bad data chunk\r\n";
static const char E_LARGE[] = "SERVER_ERROR object too large for cache\r\n";
static const char E_DUP[] = "CLIENT_ERROR duplicate flag\r\n";
static const char E_FLAG[] = "CLIENT_ERROR invalid flag\r\n";
static const char E_BADFLAG[] = "CLIENT_ERROR invalid or duplicate flag\r\n";
static const char E_DECODE[] = "CLIENT_ERROR error decoding key\r\n";
static const char E_TOKEN[] = "CLIENT_ERROR bad token in command line format\r\n";
static const char E_MLEN[] = "CLIENT_ERROR incorrect length for M token\r\n";
static const char E_INITIAL[] = "CLIENT_ERROR invalid numeric initial value\r\n";
static const char E_DELTA[] = "CLIENT_ERROR invalid numeric delta value\r\n";
static const char E_OPAQUE[] = "CLIENT_ERROR opaque token too long\r\n";
static const char E_MGLONG[] = "CLIENT_ERROR options flags are too long\r\n";
static const char E_LONG[] = "CLIENT_ERROR options flags too long\r\n";
static const char E_MSMODE[] = "CLIENT_ERROR invalid mode for ms M token\r\n";
static const char E_MAMODE[] = "CLIENT_ERROR invalid mode for ma M token\r\n";

/* memcached refuses a data length above INT_MAX - 2. */
#define VLEN_MAX 2147483645u

struct tok {
	const char *p;
	size_t len;
};

/* ---- numbers and base64 ------------------------------------------------ */

static bool dec_u64(const char *p, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned d = (unsigned)((unsigned char)p[i] - '0');
		if (d > 9 || v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

/* An int32 with an optional '-' (memcached's safe_strtol). */
static bool dec_i32(const char *p, size_t n, int64_t *out)
{
	bool neg = n > 0 && p[0] == '-';
	uint64_t v;
	if (!dec_u64(p + neg, n - neg, &v) || v > (neg ? 2147483648u : 2147483647u))
		return false;
	*out = neg ? -(int64_t)v : (int64_t)v;
	return true;
}

static const char B64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* A base64 digit's value, '=' as 0 (it counts, as in memcached); -1 for
   any other byte, which is skipped. */
static int b64_val(unsigned char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	if (ch == '=')
		return 0;
	return -1;
}

/* memcached's base64_decode(), byte for byte in what it accepts. */
size_t meta_b64_decode(const char *src, size_t n, char *dst, size_t room)
{
	size_t count = 0;
	for (size_t i = 0; i < n; i++)
		count += b64_val((unsigned char)src[i]) >= 0;
	if (count == 0 || count % 4 || count / 4 * 3 > room)
		return 0;
	unsigned char block[4];
	size_t o = 0, k = 0;
	int pad = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b64_val((unsigned char)src[i]);
		if (v < 0)
			continue;
		pad += src[i] == '=';
		block[k++] = (unsigned char)v;
		if (k < 4)
			continue;
		dst[o++] = (char)((block[0] << 2) | (block[1] >> 4));
		dst[o++] = (char)((block[1] << 4) | (block[2] >> 2));
		dst[o++] = (char)((block[2] << 6) | block[3]);
		k = 0;
		if (pad) {
			if (pad > 2)
				return 0;
			o -= (size_t)pad;
			break;
		}
	}
	return o;
}

size_t meta_b64_encode(const unsigned char *src, size_t n, char *dst)
{
	size_t o = 0, i = 0;
	for (; n - i >= 3; i += 3) {
		dst[o++] = B64[src[i] >> 2];
		dst[o++] = B64[((src[i] & 3) << 4) | (src[i + 1] >> 4)];
		dst[o++] = B64[((src[i + 1] & 15) << 2) | (src[i + 2] >> 6)];
		dst[o++] = B64[src[i + 2] & 63];
	}
	if (i < n) {
		dst[o++] = B64[src[i] >> 2];
		if (n - i == 1) {
			dst[o++] = B64[(src[i] & 3) << 4];
			dst[o++] = '=';
		} else {
			dst[o++] = B64[((src[i] & 3) << 4) | (src[i + 1] >> 4)];
			dst[o++] = B64[(src[i + 1] & 15) << 2];
		}
		dst[o++] = '=';
	}
	return o;
}

/* ---- parsing ----------------------------------------------------------- */

static enum proto_rc bad(struct proto_req *req, const char *error,
			 size_t consumed, size_t swallow)
{
	req->error = error;
	req->consumed = consumed;
	req->swallow = swallow;
	return PROTO_BAD;
}

static bool has_ctl(const struct tok *t)
{
	for (size_t i = 0; i < t->len; i++) {
		unsigned char ch = (unsigned char)t->p[i];
		if (ch <= 0x20 || ch == 0x7f)
			return true;
	}
	return false;
}

/*
 * One pass over the flag tokens t[0..n) (memcached's _meta_flag_preparse):
 * returns NULL, or the error line. A repeated or unknown flag stops at
 * once; a bad value is remembered and the pass goes on.
 */
static const char *flags_pass(const struct tok *t, size_t n, struct meta_req *m,
			      const struct tok *key, char *mode, bool *dflt)
{
	struct shard_req *q = &m->q;
	struct meta_spec *sp = &m->spec;
	uint64_t seen[2] = { 0, 0 }; /* one bit per ASCII letter */
	const char *err = NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char o = (unsigned char)t[i].p[0];
		const char *v = t[i].p + 1;
		size_t vl = t[i].len - 1;
		uint64_t u;
		if (o >= 127 || (seen[o >> 6] >> (o & 63) & 1))
			return E_DUP;
		seen[o >> 6] |= UINT64_C(1) << (o & 63);
		if (sp->nret < META_RET_MAX)
			sp->ret[sp->nret++] = (char)o;
		switch (o) {
		case 'b': {
			size_t kl = meta_b64_decode(key->p, key->len, m->kbuf,
						    sizeof(m->kbuf));
			if (!kl)
				err = E_DECODE;
			q->key = m->kbuf;
			q->klen = (uint8_t)kl;
			sp->b64 = true;
			break;
		}
		case 'N':
			q->mflags |= SHARD_MF_VIVIFY;
			if (!dec_i32(v, vl, &q->vivify))
				err = E_TOKEN;
			break;
		case 'T':
			q->mflags |= SHARD_MF_TTL;
			if (!dec_i32(v, vl, &q->exptime))
				err = E_TOKEN;
			break;
		case 'R':
			q->mflags |= SHARD_MF_RECACHE;
			if (!dec_i32(v, vl, &q->recache))
				err = E_TOKEN;
			break;
		case 'O':
			if (t[i].len <= META_OPAQUE_MAX) {
				memcpy(sp->opaque, t[i].p, t[i].len);
				sp->olen = (uint8_t)t[i].len;
			}
			break;
		case 'l': case 'P': case 'L': case 'k': case 's': case 't':
		case 'c': case 'f': case 'h':
			break;
		case 'v':
			sp->value = true;
			q->mflags |= SHARD_MF_VALUE;
			break;
		case 'u':
			q->mflags |= SHARD_MF_NOBUMP;
			break;
		case 'q':
			sp->quiet = true;
			break;
		case 'F':
			if (!dec_u64(v, vl, &u) || u > UINT32_MAX)
				err = E_FORMAT;
			else
				q->flags = (uint32_t)u;
			break;
		case 'C':
			q->mflags |= SHARD_MF_CAS;
			if (!dec_u64(v, vl, &q->cas))
				err = E_TOKEN;
			break;
		case 'E':
			q->mflags |= SHARD_MF_SETCAS;
			if (!dec_u64(v, vl, &q->new_cas))
				err = E_TOKEN;
			break;
		case 'M':
			if (t[i].len != 2)
				err = E_MLEN;
			else
				*mode = t[i].p[1];
			break;
		case 'J':
			if (!dec_u64(v, vl, &q->initial))
				err = E_INITIAL;
			break;
		case 'D':
			*dflt = false;
			if (!dec_u64(v, vl, &q->delta))
				err = E_DELTA;
			break;
		case 'I':
			q->mflags |= SHARD_MF_STALE;
			break;
		case 'x':
			if (sp->cmd != META_MD)
				return E_FLAG;
			q->mflags |= SHARD_MF_EMPTY;
			break;
		default:
			return E_FLAG;
		}
	}
	return err;
}

/* Whether an O token is over memcached's limit. */
static bool opaque_long(const struct tok *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (t[i].p[0] == 'O' && t[i].len > META_OPAQUE_MAX)
			return true;
	return false;
}

/* ms: mode letter and C/I to a shard op. NULL or the error line. */
static const char *ms_mode(struct meta_req *m, char mode)
{
	struct shard_req *q = &m->q;
	bool cas = q->mflags & SHARD_MF_CAS;
	switch (mode) {
	case 0: case 'S': q->op = cas ? SHARD_OP_CAS : SHARD_OP_SET; break;
	case 'E': q->op = SHARD_OP_ADD; break;
	case 'A': q->op = SHARD_OP_APPEND; break;
	case 'P': q->op = SHARD_OP_PREPEND; break;
	case 'R': q->op = cas ? SHARD_OP_CAS : SHARD_OP_REPLACE; break;
	default: return E_MSMODE;
	}
	/* I is only meaningful for a compare-and-set */
	if (q->op != SHARD_OP_CAS)
		q->mflags &= ~SHARD_MF_STALE;
	/* memcached's ms takes E0 as no E (its text path reads a cas of 0
	   as "none given"); md, ma and mg N do store a cas of 0 */
	if (!q->new_cas)
		q->mflags &= ~SHARD_MF_SETCAS;
	/* T is the exptime of the new item; the other letters mean nothing
	   to a store */
	q->mflags &= SHARD_MF_CAS | SHARD_MF_STALE | SHARD_MF_SETCAS;
	return NULL;
}

/* ms <key> <datalen> <flags>*\r\n<data>\r\n, the line already split. */
static enum proto_rc parse_ms(const char *buf, size_t len, size_t line_len,
			      const struct proto_limits *lim, struct tok *t,
			      size_t n, struct proto_req *req,
			      struct meta_req *m, const struct tok *key)
{
	uint64_t blen = 0;
	bool len_ok = n > 2 && dec_u64(t[2].p, t[2].len, &blen) &&
		      blen <= VLEN_MAX;
	size_t swallow = len_ok ? (size_t)blen + 2 : 0;
	if (n == 2 || !len_ok)
		return bad(req, E_FORMAT, line_len, swallow);
	if (n + 1 > NTOKENS_MAX)
		return bad(req, E_LONG, line_len, swallow);
	char mode = 0;
	bool dflt = true; /* unused by ms */
	const char *err = flags_pass(t + 3, n - 3, m, key, &mode, &dflt);
	if (!err)
		err = ms_mode(m, mode);
	if (!err && opaque_long(t + 3, n - 3))
		err = E_OPAQUE;
	if (err)
		return bad(req, err, line_len, swallow);
	req->keys[0].ptr = m->q.key;
	req->keys[0].len = m->q.klen;
	req->nkeys = 1;
	if (blen > lim->item_max) {
		req->drop_key = true;
		return bad(req, E_LARGE, line_len, swallow);
	}
	size_t total = line_len + (size_t)blen + 2;
	if (len < total) {
		req->need = total;
		return PROTO_NEED_MORE;
	}
	if (buf[total - 2] != '\r' || buf[total - 1] != '\n')
		return bad(req, E_CHUNK, total, 0);
	m->q.value = buf + line_len;
	m->q.vlen = (uint32_t)blen;
	req->consumed = total;
	return PROTO_REQ;
}

/* mg, md, ma: flags from t[2]; per-command checks after. */
static const char *parse_flags(struct tok *t, size_t n, struct meta_req *m,
			       const struct tok *key)
{
	struct shard_req *q = &m->q;
	char mode = 0;
	bool dflt = true;
	const char *err = flags_pass(t + 2, n - 2, m, key, &mode, &dflt);
	uint8_t cmd = m->spec.cmd;
	if (err)
		return cmd == META_MG ? err : E_BADFLAG;
	if (cmd == META_MA) {
		if (dflt)
			q->delta = 1;
		switch (mode) {
		case 0: case 'I': case '+': q->op = SHARD_OP_INCR; break;
		case 'D': case '-': q->op = SHARD_OP_DECR; break;
		default: return E_MAMODE;
		}
		q->mflags &= SHARD_MF_TTL | SHARD_MF_VIVIFY | SHARD_MF_CAS |
			     SHARD_MF_SETCAS;
	} else if (cmd == META_MD) {
		q->op = SHARD_OP_DELETE;
		q->mflags &= SHARD_MF_TTL | SHARD_MF_CAS | SHARD_MF_STALE |
			     SHARD_MF_EMPTY | SHARD_MF_SETCAS;
	} else {
		q->op = SHARD_OP_MGET;
		q->mflags &= SHARD_MF_VALUE | SHARD_MF_NOBUMP | SHARD_MF_TTL |
			     SHARD_MF_VIVIFY | SHARD_MF_RECACHE | SHARD_MF_SETCAS;
	}
	if (opaque_long(t + 2, n - 2))
		return E_OPAQUE;
	return NULL;
}

/* me <key> [b]: memcached looks only at a third token that is "b". */
static enum proto_rc parse_me(struct tok *t, size_t n, size_t line_len,
			      struct proto_req *req, struct meta_req *m)
{
	if (n < 2 || t[1].len > SHARD_KEY_MAX)
		return bad(req, E_FORMAT, line_len, 0);
	m->q.key = t[1].p;
	m->q.klen = (uint8_t)t[1].len;
	if (n >= 3 && t[2].len == 1 && t[2].p[0] == 'b') {
		size_t kl = meta_b64_decode(t[1].p, t[1].len, m->kbuf,
					    sizeof(m->kbuf));
		if (!kl)
			return bad(req, E_FORMAT, line_len, 0);
		m->q.key = m->kbuf;
		m->q.klen = (uint8_t)kl;
		m->spec.b64 = true;
	} else if (has_ctl(&t[1])) {
		return bad(req, E_FORMAT, line_len, 0);
	}
	m->q.op = SHARD_OP_MGET;
	m->q.mflags = SHARD_MF_NOBUMP;
	return PROTO_REQ;
}

static int cmd_of(char c)
{
	switch (c) {
	case 'g': return META_MG;
	case 's': return META_MS;
	case 'd': return META_MD;
	case 'a': return META_MA;
	case 'n': return META_MN;
	case 'e': return META_ME;
	}
	return -1;
}

/* Every field, one store each (see meta_parse). A field added at the end
   of either struct must be added here: the asserts say so at build time. */
_Static_assert((offsetof(struct proto_req, arg3_len) + sizeof(uint32_t) +
		_Alignof(struct proto_req) - 1) / _Alignof(struct proto_req) *
	       _Alignof(struct proto_req) == sizeof(struct proto_req),
	       "init_req: set the new proto_req field");
_Static_assert(offsetof(struct shard_req, new_cas) + sizeof(uint64_t) ==
	       sizeof(struct shard_req), "init_q: set the new shard_req field");

static void init_req(struct proto_req *r, struct proto_key *keys)
{
	r->cmd = PROTO_CMD_GET;
	r->noreply = false;
	r->flags = 0;
	r->exptime = 0;
	r->cas = 0;
	r->delta = 0;
	r->level = 0;
	r->value = NULL;
	r->vlen = 0;
	r->arg = NULL;
	r->arg_len = 0;
	r->nkeys = 0;
	r->keys = keys;
	r->consumed = 0;
	r->error = NULL;
	r->swallow = 0;
	r->close = false;
	r->drop_key = false;
	r->need = 0;
	r->more = false;
	r->checked = false;
	r->skip_line = false;
	r->arg2 = NULL;
	r->arg2_len = 0;
	r->arg3 = NULL;
	r->arg3_len = 0;
}

static void init_q(struct shard_req *q)
{
	q->op = SHARD_OP_GET;
	q->key = NULL;
	q->klen = 0;
	q->hash = 0;
	q->flags = 0;
	q->exptime = 0;
	q->cas = 0;
	q->delta = 0;
	q->value = NULL;
	q->vlen = 0;
	q->mflags = 0;
	q->vivify = 0;
	q->recache = 0;
	q->initial = 0;
	q->new_cas = 0;
}

enum proto_rc meta_parse(const char *buf, size_t len,
			 const struct proto_limits *lim, struct proto_key *keys,
			 struct proto_req *req, struct meta_req *m)
{
	/* Field by field: a memset of these ~300 bytes (rep stos) was 40 %
	   of the parse. The arrays (ret, opaque, kbuf) are written before
	   they are read. */
	init_req(req, keys);
	struct meta_spec *sp = &m->spec;
	sp->cmd = 0;
	sp->quiet = sp->b64 = sp->value = sp->concat = false;
	sp->nret = sp->olen = 0;
	init_q(&m->q);

	size_t scan = len < lim->line_max ? len : lim->line_max;
	const char *nl = scan ? memchr(buf, '\n', scan) : NULL;
	if (!nl) {
		if (len < lim->line_max || len == 0)
			return PROTO_NEED_MORE;
		req->close = true;
		return bad(req, E_LINE, len, 0);
	}
	size_t line_len = (size_t)(nl - buf) + 1;
	const char *end = nl > buf && nl[-1] == '\r' ? nl - 1 : nl;

	/* split on ' ' like memcached; keep TOKENS_MAX, count them all */
	struct tok t[TOKENS_MAX];
	size_t n = 0;
	for (const char *p = buf; p < end;) {
		while (p < end && *p == ' ')
			p++;
		if (p == end)
			break;
		const char *s = p;
		while (p < end && *p != ' ')
			p++;
		if (n < TOKENS_MAX)
			t[n] = (struct tok){ s, (size_t)(p - s) };
		n++;
	}
	int cmd = n && t[0].len == 2 && t[0].p[0] == 'm' ? cmd_of(t[0].p[1]) : -1;
	if (cmd < 0)
		return bad(req, E_ERROR, line_len, 0);
	m->spec.cmd = (uint8_t)cmd;
	if (cmd == META_MS)
		req->cmd = PROTO_CMD_SET;
	if (cmd == META_MN) {
		req->consumed = line_len;
		return PROTO_REQ;
	}
	if (n > TOKENS_MAX)
		n = TOKENS_MAX;
	enum proto_rc rc;
	if (cmd == META_ME) {
		rc = parse_me(t, n, line_len, req, m);
		goto key;
	}
	if (n < 2)
		return bad(req, E_ERROR, line_len, 0);
	if (t[1].len > SHARD_KEY_MAX)
		return bad(req, E_FORMAT, line_len, 0);
	m->q.key = t[1].p;
	m->q.klen = (uint8_t)t[1].len;
	if (cmd == META_MS) {
		rc = parse_ms(buf, len, line_len, lim, t, n, req, m, &t[1]);
	} else {
		if (n + 1 > NTOKENS_MAX)
			return bad(req, cmd == META_MG ? E_MGLONG : E_LONG,
				   line_len, 0);
		const char *err = parse_flags(t, n, m, &t[1]);
		rc = err ? bad(req, err, line_len, 0) : PROTO_REQ;
		req->consumed = line_len;
	}
key:
	/* consumed covers an ms data block too: nothing to swallow */
	if (rc == PROTO_REQ && !m->spec.b64 && has_ctl(&t[1]))
		return bad(req, E_FORMAT, req->consumed, 0);
	if (rc == PROTO_REQ) {
		m->q.mflags |= SHARD_MF_META;
		m->spec.concat = m->q.op == SHARD_OP_APPEND ||
				 m->q.op == SHARD_OP_PREPEND;
		if (cmd == META_ME)
			req->consumed = line_len;
		req->keys[0].ptr = m->q.key;
		req->keys[0].len = m->q.klen;
		req->nkeys = 1;
	}
	return rc;
}

/* ---- composing --------------------------------------------------------- */

static char *put(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}

static char *put_flag_u64(char *p, char c, uint64_t v)
{
	*p++ = ' ';
	*p++ = c;
	return p + proto_u64(p, v);
}

static char *put_ttl(char *p, int64_t ttl)
{
	*p++ = ' ';
	*p++ = 't';
	if (ttl < 0)
		return put(p, "-1", 2);
	return p + proto_u64(p, (uint64_t)ttl);
}

static char *put_key(char *p, const struct meta_spec *sp, const char *key,
		     uint8_t klen)
{
	*p++ = ' ';
	*p++ = 'k';
	if (!sp->b64)
		return put(p, key, klen);
	p += meta_b64_encode((const unsigned char *)key, klen, p);
	return put(p, " b", 2);
}

static char *put_opaque(char *p, const struct meta_spec *sp)
{
	*p++ = ' ';
	return put(p, sp->opaque, sp->olen);
}

/* The O and k flags, in request order: what every code but a hit has. */
static char *put_ok(char *p, const struct meta_spec *sp, const char *key,
		    uint8_t klen, bool with_cas, uint64_t cas)
{
	for (uint8_t i = 0; i < sp->nret; i++) {
		switch (sp->ret[i]) {
		case 'O': p = put_opaque(p, sp); break;
		case 'k': p = put_key(p, sp, key, klen); break;
		case 'c':
			if (with_cas)
				p = put_flag_u64(p, 'c', cas);
			break;
		}
	}
	return p;
}

size_t meta_compose_hit(char *dst, const struct meta_spec *sp,
			const struct shard_view *v)
{
	const struct shard_res *r = v->res;
	char *p = dst;
	if (sp->value) {
		p = put(p, "VA ", 3);
		p += proto_u64(p, v->vlen);
	} else {
		p = put(p, "HD", 2);
	}
	for (uint8_t i = 0; i < sp->nret; i++) {
		switch (sp->ret[i]) {
		case 's': p = put_flag_u64(p, 's', v->vlen); break;
		case 't': p = put_ttl(p, r->ttl); break;
		case 'c': p = put_flag_u64(p, 'c', v->cas); break;
		case 'f': p = put_flag_u64(p, 'f', v->flags); break;
		case 'l': p = put_flag_u64(p, 'l', r->la); break;
		case 'h':
			p = put(p, r->mbits & SHARD_MB_FETCHED ? " h1" : " h0", 3);
			break;
		case 'O': p = put_opaque(p, sp); break;
		case 'k': p = put_key(p, sp, v->key, v->klen); break;
		}
	}
	if (r->mbits & SHARD_MB_TOKEN)
		p = put(p, " Z", 2);
	if (r->mbits & SHARD_MB_STALE)
		p = put(p, " X", 2);
	if (r->mbits & SHARD_MB_WON)
		p = put(p, " W", 2);
	return (size_t)(put(p, "\r\n", 2) - dst);
}

#define LIT(s) (memcpy(dst, s, sizeof(s) - 1), sizeof(s) - 1)

/* ma's answer: "HD"/"VA <n>" with c t O k, then the number with v. */
static size_t compose_number(char *dst, const struct meta_spec *sp,
			     const char *key, uint8_t klen,
			     const struct shard_res *r)
{
	char num[20];
	size_t nl = proto_u64(num, r->number);
	char *p = dst;
	if (sp->value) {
		p = put(p, "VA ", 3);
		p += proto_u64(p, nl);
	} else {
		p = put(p, "HD", 2);
	}
	for (uint8_t i = 0; i < sp->nret; i++) {
		switch (sp->ret[i]) {
		case 'c': p = put_flag_u64(p, 'c', r->cas); break;
		case 't': p = put_ttl(p, r->ttl); break;
		case 'O': p = put_opaque(p, sp); break;
		case 'k': p = put_key(p, sp, key, klen); break;
		}
	}
	p = put(p, "\r\n", 2);
	if (sp->value) {
		p = put(p, num, nl);
		p = put(p, "\r\n", 2);
	}
	return (size_t)(p - dst);
}

/* me: memcached prints exp as now - exptime (minus the ttl), -1 for
   none; la is the segment age here; cls has no meaning (always 1); size
   is the item's bytes in its segment. */
static size_t compose_debug(char *dst, const struct meta_spec *sp,
			    const char *key, uint8_t klen,
			    const struct shard_res *r)
{
	char *p = put(dst, "ME ", 3);
	if (sp->b64)
		p += meta_b64_encode((const unsigned char *)key, klen, p);
	else
		p = put(p, key, klen);
	p += sprintf(p, " exp=%lld la=%u cas=%llu fetch=%s cls=1 size=%u\r\n",
		     (long long)(r->ttl < 0 ? -1 : -r->ttl), r->la,
		     (unsigned long long)r->cas,
		     r->mbits & SHARD_MB_FETCHED ? "yes" : "no", r->size);
	return (size_t)(p - dst);
}

size_t meta_compose(char *dst, const struct meta_spec *sp, const char *key,
		    uint8_t klen, int rc, const struct shard_res *r)
{
	uint8_t cmd = sp->cmd;
	if (cmd == META_MN)
		return LIT("MN\r\n");
	if (rc < 0)
		return cmd == META_MG || cmd == META_ME ?
			LIT("SERVER_ERROR out of memory writing get response\r\n") :
			LIT("SERVER_ERROR out of memory\r\n");
	if (cmd == META_ME)
		return r->status == SHARD_HIT ?
			compose_debug(dst, sp, key, klen, r) : LIT("EN\r\n");
	const char *code;
	bool with_cas = false;
	switch (r->status) {
	case SHARD_NOT_FOUND:
		if (cmd == META_MG && sp->quiet)
			return 0;
		code = cmd == META_MG ? "EN" : "NF";
		with_cas = cmd == META_MS;
		break;
	case SHARD_STORED:
	case SHARD_DELETED:
		if (sp->quiet)
			return 0;
		code = "HD";
		with_cas = cmd == META_MS;
		break;
	case SHARD_NOT_STORED:
		code = "NS";
		with_cas = cmd == META_MS;
		break;
	case SHARD_EXISTS:
		code = "EX";
		with_cas = cmd == META_MS;
		break;
	case SHARD_NUMBER:
		if (sp->quiet && !(r->mbits & SHARD_MB_CREATED))
			return 0;
		return compose_number(dst, sp, key, klen, r);
	case SHARD_NON_NUMERIC:
		return LIT("CLIENT_ERROR cannot increment or decrement "
			   "non-numeric value\r\n");
	case SHARD_TOO_LARGE:
	case SHARD_NO_MEMORY:
		/* as the classic commands: a too-large or unallocatable
		   append/prepend result is not stored */
		if (sp->concat)
			return LIT("NS\r\n");
		if (cmd == META_MS && r->status == SHARD_TOO_LARGE)
			return LIT("SERVER_ERROR object too large for cache\r\n");
		if (cmd == META_MS)
			return LIT("SERVER_ERROR out of memory storing object\r\n");
		return LIT("SERVER_ERROR out of memory\r\n");
	default:
		return LIT("SERVER_ERROR unhandled status\r\n");
	}
	char *p = put(dst, code, 2);
	p = put_ok(p, sp, key, klen, with_cas, r->cas);
	return (size_t)(put(p, "\r\n", 2) - dst);
}

#undef LIT
