/*
 * admin.c - introspection and administration commands; see admin.h.
 *
 * Replies follow memcached 1.6.18 byte for byte where it has the command
 * (checked by tests/integration/test_edges.py against the real one):
 * cache_memlimit's MEMLIMIT_* errors, `stats detail`'s usage line,
 * cachedump's "CLIENT_ERROR bad command line" / "Illegal slab id",
 * metadump's "BADCLASS invalid class id", shutdown's three answers.
 */
#include "net/admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "net/process.h"

/* memcached's class ids end at 63 (MAX_NUMBER_OF_SLAB_CLASSES - 1). */
#define CLASS_MAX 63u

static bool arg_is(const char *p, uint32_t n, const char *lit)
{
	return p && n == strlen(lit) && memcmp(p, lit, n) == 0;
}

/* Decimal digits only, within a u64. */
static bool arg_u64(const char *p, uint32_t n, uint64_t *out)
{
	uint64_t v = 0;
	if (!p || n == 0)
		return false;
	for (uint32_t i = 0; i < n; i++) {
		unsigned d = (unsigned)((unsigned char)p[i] - '0');
		if (d > 9 || v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

static void emit(struct conn *c, const char *s, size_t n)
{
	if (conn_emit_copy(c, s, n) < 0)
		conn_close(c);
}

#define EMIT_LIT(c, s) emit((c), (s), sizeof(s) - 1)

/* ---- shutdown, cache_memlimit, lru_crawler ------------------------------ */

/*
 * shutdown [graceful]: without -A memcached refuses; with it, a bare or
 * graceful shutdown closes the connection without a reply and stops the
 * daemon (SIGTERM to ourselves: main's signal wait does the clean stop);
 * any other mode is refused.
 */
static void do_shutdown(struct conn *c, const struct proto_req *r)
{
	if (!c->w->group->cfg->shutdown_enabled) {
		EMIT_LIT(c, "ERROR: shutdown not enabled\r\n");
		return;
	}
	if (r->arg && !arg_is(r->arg, r->arg_len, "graceful")) {
		EMIT_LIT(c, "CLIENT_ERROR invalid shutdown mode\r\n");
		return;
	}
	c->close_after_send = true;
	kill(getpid(), SIGTERM);
}

/* cache_memlimit <MiB> [noreply]: memcached's bounds and replies; the new
   limit is split evenly over the shards like -m. */
static void do_memlimit(struct conn *c, const struct proto_req *r)
{
	uint64_t mib = r->delta;
	const char *err = NULL;
	if (mib < 8)
		err = "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n";
	else if (mib > 1000000000)
		err = "MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n";
	uint32_t n = c->w->group->nworkers;
	if (!err && (mib << 20) / n < SHARD_LIMIT_MIN)
		err = "MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n";
	if (err) {
		if (!r->noreply)
			emit(c, err, strlen(err));
		return;
	}
	atomic_store(&c->w->group->mem_limit, (size_t)mib << 20);
	struct xreq t = { .arg = (mib << 20) / n };
	process_fanout(c, r, XREQ_MEMLIMIT, &t);
}

/* The class list of a metadump ("all" or "1,2,5") as a mask of shards;
   false for a bad list. */
static bool class_mask(const char *p, uint32_t n, uint32_t nshards,
		       uint64_t *mask)
{
	if (arg_is(p, n, "all")) {
		*mask = UINT64_MAX;
		return true;
	}
	*mask = 0;
	uint32_t i = 0;
	while (i < n) {
		uint32_t j = i;
		while (j < n && p[j] != ',')
			j++;
		uint64_t id;
		if (!arg_u64(p + i, j - i, &id) || id == 0 || id > CLASS_MAX)
			return false;
		if (id <= nshards)
			*mask |= UINT64_C(1) << (id - 1);
		i = j + 1;
	}
	return true;
}

/* lru_crawler metadump <all|ids>: the only lru_crawler sub-command here
   (the crawler's settings have no meaning: expiry is per segment). */
static void do_crawler(struct conn *c, const struct proto_req *r)
{
	if (!arg_is(r->arg, r->arg_len, "metadump") || !r->arg2) {
		EMIT_LIT(c, "ERROR\r\n");
		return;
	}
	uint64_t mask;
	if (!class_mask(r->arg2, r->arg2_len, c->w->group->nworkers, &mask)) {
		EMIT_LIT(c, "BADCLASS invalid class id\r\n");
		return;
	}
	c->dump_active = true;
	c->dump_shard = 0;
	c->dump_cursor = 0;
	c->dump_mask = mask;
}

static bool in_mask(uint64_t mask, uint32_t shard)
{
	return shard >= 64 ? mask == UINT64_MAX : (mask >> shard & 1) != 0;
}

void admin_dump_next(struct conn *c)
{
	uint32_t n = c->w->group->nworkers;
	while (c->dump_shard < n && !in_mask(c->dump_mask, c->dump_shard))
		c->dump_shard++;
	if (c->dump_shard >= n) {
		c->dump_active = false;
		EMIT_LIT(c, "END\r\n");
		return;
	}
	struct xreq t = { .text = XTEXT_METADUMP, .arg2 = c->dump_cursor };
	process_send_text(c, c->dump_shard, &t);
}

void admin_round_done(struct conn *c, struct xreq *x, const char *text,
		      size_t len)
{
	conn_fill(c, x->seg, text, len);
	if (x->text != XTEXT_METADUMP || !c->dump_active)
		return;
	c->dump_cursor = x->arg2;
	if (c->dump_cursor == SIZE_MAX) {
		c->dump_shard++;
		c->dump_cursor = 0;
	}
}

void admin_request(struct conn *c, const struct proto_req *r)
{
	switch (r->cmd) {
	case PROTO_CMD_SHUTDOWN:
		do_shutdown(c, r);
		break;
	case PROTO_CMD_CACHE_MEMLIMIT:
		do_memlimit(c, r);
		break;
	case PROTO_CMD_LRU_CRAWLER:
		do_crawler(c, r);
		break;
	default:
		EMIT_LIT(c, "ERROR\r\n");
		break;
	}
}

/* ---- stats groups --------------------------------------------------------- */

static void do_detail(struct conn *c, const struct proto_req *r)
{
	struct detail *d = &c->w->group->detail;
	if (arg_is(r->arg2, r->arg2_len, "on")) {
		detail_set(d, true);
		EMIT_LIT(c, "OK\r\n");
	} else if (arg_is(r->arg2, r->arg2_len, "off")) {
		detail_set(d, false);
		EMIT_LIT(c, "OK\r\n");
	} else if (arg_is(r->arg2, r->arg2_len, "dump")) {
		/* Through every worker first, so that the counts of this
		   connection's earlier requests (remote hits are counted by
		   the owner) are in; composed in admin_stats_group. */
		struct xreq t = { .arg = ADMIN_DETAIL };
		process_fanout(c, r, XREQ_STATS, &t);
	} else {
		EMIT_LIT(c, "CLIENT_ERROR usage: stats detail on|off|dump\r\n");
	}
}

/* stats cachedump <class> <limit>: ITEM lines of one shard. */
static void do_cachedump(struct conn *c, const struct proto_req *r)
{
	uint64_t id, limit;
	if (!r->arg2 || !r->arg3) {
		EMIT_LIT(c, "CLIENT_ERROR bad command line\r\n");
		return;
	}
	if (!arg_u64(r->arg2, r->arg2_len, &id) ||
	    !arg_u64(r->arg3, r->arg3_len, &limit)) {
		EMIT_LIT(c, "CLIENT_ERROR bad command line format\r\n");
		return;
	}
	uint32_t n = c->w->group->nworkers;
	if (id > (n > CLASS_MAX ? n : CLASS_MAX)) {
		EMIT_LIT(c, "CLIENT_ERROR Illegal slab id\r\n");
		return;
	}
	struct xreq t = { .text = XTEXT_CACHEDUMP, .arg = limit, .arg2 = id };
	process_fanout(c, r, XREQ_TEXT, &t);
}

bool admin_stats(struct conn *c, const struct proto_req *r)
{
	if (arg_is(r->arg, r->arg_len, "items")) {
		struct xreq t = { .arg = ADMIN_ITEMS };
		process_fanout(c, r, XREQ_STATS, &t);
	} else if (arg_is(r->arg, r->arg_len, "slabs")) {
		struct xreq t = { .arg = ADMIN_SLABS };
		process_fanout(c, r, XREQ_STATS, &t);
	} else if (arg_is(r->arg, r->arg_len, "detail")) {
		do_detail(c, r);
	} else if (arg_is(r->arg, r->arg_len, "cachedump")) {
		do_cachedump(c, r);
	} else if (arg_is(r->arg, r->arg_len, "conns")) {
		struct xreq t = { .text = XTEXT_CONNS };
		process_fanout(c, r, XREQ_TEXT, &t);
	} else {
		return false;
	}
	return true;
}

/* One "STAT <prefix><id>:<name> <value>\r\n" line. */
static size_t stat_line(char *p, const char *prefix, uint32_t id,
			const char *name, uint64_t v)
{
	return (size_t)sprintf(p, "STAT %s%u:%s %llu\r\n", prefix, id, name,
			       (unsigned long long)v);
}

static void detail_done(struct conn *c, struct xgather *g)
{
	struct detail *d = &c->w->group->detail;
	size_t room = detail_dump_room(d) + 4096;
	char *p = arena_bytes(&c->out, room);
	long n = p ? detail_dump(d, p, room) : -ENOBUFS;
	if (n < 0) {
		static const char oom[] = "SERVER_ERROR out of memory writing stats\r\n";
		conn_fill(c, g->seg, oom, sizeof(oom) - 1);
		return;
	}
	g->seg->pending = false;
	g->seg->ptr = p;
	g->seg->len = (uint32_t)n;
}

void admin_stats_group(struct conn *c, struct xgather *g)
{
	if (g->group == ADMIN_DETAIL) {
		detail_done(c, g);
		return;
	}
	uint32_t n = c->w->group->nworkers;
	size_t room = (size_t)n * 24 * 80 + 128;
	char *p = arena_bytes(&c->out, room);
	if (!p) {
		conn_fill(c, g->seg, NULL, 0);
		conn_close(c);
		return;
	}
	size_t o = 0;
	uint64_t malloced = 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct shard_stats *s = &g->stats[i].shard;
		uint32_t id = i + 1;
		if (g->group == ADMIN_ITEMS) {
			const char *x = "items:";
			o += stat_line(p + o, x, id, "number", s->curr_items);
			o += stat_line(p + o, x, id, "number_hot", 0);
			o += stat_line(p + o, x, id, "number_warm", 0);
			o += stat_line(p + o, x, id, "number_cold", s->curr_items);
			o += stat_line(p + o, x, id, "age_hot", 0);
			o += stat_line(p + o, x, id, "age_warm", 0);
			o += stat_line(p + o, x, id, "age", 0);
			o += stat_line(p + o, x, id, "mem_requested", s->bytes);
			o += stat_line(p + o, x, id, "evicted", s->evictions);
			o += stat_line(p + o, x, id, "evicted_nonzero", 0);
			o += stat_line(p + o, x, id, "evicted_time", 0);
			o += stat_line(p + o, x, id, "outofmemory", 0);
			o += stat_line(p + o, x, id, "tailrepairs", 0);
			o += stat_line(p + o, x, id, "reclaimed", s->reclaimed);
			o += stat_line(p + o, x, id, "expired_unfetched",
				       s->expired_unfetched);
			o += stat_line(p + o, x, id, "evicted_unfetched",
				       s->evicted_unfetched);
			o += stat_line(p + o, x, id, "evicted_active", 0);
			o += stat_line(p + o, x, id, "crawler_reclaimed", 0);
		} else {
			uint64_t pages = s->segments;
			uint64_t free = s->segments_free;
			o += stat_line(p + o, "", id, "chunk_size", s->segment_size);
			o += stat_line(p + o, "", id, "chunks_per_page", 1);
			o += stat_line(p + o, "", id, "total_pages", pages);
			o += stat_line(p + o, "", id, "total_chunks", pages);
			o += stat_line(p + o, "", id, "used_chunks", pages - free);
			o += stat_line(p + o, "", id, "free_chunks", free);
			o += stat_line(p + o, "", id, "free_chunks_end", 0);
			o += stat_line(p + o, "", id, "get_hits", s->get_hits);
			o += stat_line(p + o, "", id, "cmd_set", s->cmd_set);
			o += stat_line(p + o, "", id, "delete_hits", s->delete_hits);
			o += stat_line(p + o, "", id, "incr_hits", s->incr_hits);
			o += stat_line(p + o, "", id, "decr_hits", s->decr_hits);
			o += stat_line(p + o, "", id, "cas_hits", s->cas_hits);
			o += stat_line(p + o, "", id, "cas_badval", s->cas_badval);
			o += stat_line(p + o, "", id, "touch_hits", s->touch_hits);
			malloced += s->segment_bytes;
		}
	}
	if (g->group == ADMIN_SLABS) {
		o += (size_t)sprintf(p + o, "STAT active_slabs %u\r\n", n);
		o += (size_t)sprintf(p + o, "STAT total_malloced %llu\r\n",
				     (unsigned long long)malloced);
	}
	memcpy(p + o, "END\r\n", 5);
	o += 5;
	/* The lines are in c->out already: the segment points at them. */
	g->seg->pending = false;
	g->seg->ptr = p;
	g->seg->len = (uint32_t)o;
}

/* ---- listings (destination side) ----------------------------------------- */

struct dump_out {
	struct xbatch *b;
	const struct worker *w;
	uint8_t text;
	uint32_t cls;
	uint64_t left;      /* cachedump: items still to list (0: no bound) */
	bool bounded;
	size_t max;         /* bytes of b this listing may add */
	size_t start;
};

/* memcached's metadump key encoding: URL-style %XX for anything but
   unreserved characters. */
static size_t url_encode(char *dst, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' ||
		    ch == '_' || ch == '~') {
			dst[o++] = (char)ch;
		} else {
			dst[o++] = '%';
			dst[o++] = hex[ch >> 4];
			dst[o++] = hex[ch & 15];
		}
	}
	return o;
}

static bool dump_item(void *ctx, const struct shard_item_info *it)
{
	struct dump_out *d = ctx;
	/* A key of 250 bytes encodes to 750; the rest is under 200. */
	char line[1024];
	size_t n;
	if (d->text == XTEXT_CACHEDUMP) {
		n = (size_t)snprintf(line, sizeof(line), "ITEM %.*s [%u b; %lld s]\r\n",
				     (int)it->klen, it->key, it->vlen,
				     (long long)it->exptime);
	} else {
		memcpy(line, "key=", 4);
		n = 4 + url_encode(line + 4, it->key, it->klen);
		n += (size_t)snprintf(line + n, sizeof(line) - n,
				      " exp=%lld la=%lld cas=%llu fetch=%s cls=%u size=%u\n",
				      it->exptime ? (long long)it->exptime : -1LL,
				      (long long)d->w->now,
				      (unsigned long long)it->cas,
				      it->fetched ? "yes" : "no", d->cls,
				      it->size);
	}
	if (d->max != SIZE_MAX && d->b->len - d->start + n > d->max)
		return false;
	char *p = xbatch_reserve(d->b, n);
	if (!p)
		return false;
	memcpy(p, line, n);
	d->b->len += n;
	if (d->bounded && --d->left == 0)
		return false;
	return true;
}

/* "STAT <fd>:<name> <value>\r\n" lines of one connection. */
static void conn_lines(struct worker *w, struct conn *c, bool self,
		       struct xbatch *b)
{
	struct sockaddr_storage peer, local;
	socklen_t pl = sizeof(peer), ll = sizeof(local);
	char addr[160], laddr[160], line[512];
	addr[0] = laddr[0] = 0;
	if (getpeername(c->fd, (struct sockaddr *)&peer, &pl) == 0 &&
	    getsockname(c->fd, (struct sockaddr *)&local, &ll) == 0) {
		struct sockaddr_storage *ss[2] = { &peer, &local };
		char *out[2] = { addr, laddr };
		for (int k = 0; k < 2; k++) {
			char ip[INET6_ADDRSTRLEN] = "";
			if (ss[k]->ss_family == AF_INET) {
				struct sockaddr_in *a = (struct sockaddr_in *)ss[k];
				inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
				snprintf(out[k], 160, "tcp:%s:%u", ip, ntohs(a->sin_port));
			} else if (ss[k]->ss_family == AF_INET6) {
				struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss[k];
				inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
				snprintf(out[k], 160, "tcp6:[%s]:%u", ip, ntohs(a->sin6_port));
			} else {
				snprintf(out[k], 160, "unix:%s",
					 w->group->cfg->unix_path ? w->group->cfg->unix_path : "");
			}
		}
	}
	const char *state = self ? "conn_parse_cmd" :
			    c->send_armed ? "conn_mwrite" :
			    c->rstart != c->rend ? "conn_nread" : "conn_waiting";
	int64_t idle = w->now - c->last_cmd;
	int n = snprintf(line, sizeof(line),
			 "STAT %d:addr %s\r\nSTAT %d:listen_addr %s\r\n"
			 "STAT %d:state %s\r\nSTAT %d:secs_since_last_cmd %lld\r\n",
			 c->fd, addr, c->fd, laddr, c->fd, state, c->fd,
			 (long long)(idle > 0 ? idle : 0));
	if (n <= 0 || (size_t)n >= sizeof(line))
		return;
	char *p = xbatch_reserve(b, (size_t)n);
	if (!p)
		return;
	memcpy(p, line, (size_t)n);
	b->len += (size_t)n;
}

void admin_text(struct worker *w, struct xreq *x, struct xbatch *b)
{
	if (x->text == XTEXT_CONNS) {
		for (struct conn *c = w->conns; c; c = c->next)
			if (!c->closing)
				conn_lines(w, c, c == x->conn, b);
		return;
	}
	struct dump_out d = {
		.b = b, .w = w, .text = x->text, .cls = w->id + 1,
		.left = x->arg, .bounded = x->text == XTEXT_CACHEDUMP && x->arg,
		.max = ADMIN_DUMP_MAX, .start = b->len,
	};
	if (x->text == XTEXT_METADUMP) {
		/* One round: from the cursor, 64 slots at a time (at most
		   64 lines, under 64 KiB), until the round's bytes or slots
		   are used; the cursor goes back in arg2. The callback is
		   never refused for size, so no line is cut or repeated. */
		size_t cursor = (size_t)x->arg2, slots = 0;
		d.max = SIZE_MAX;
		while (cursor != SIZE_MAX && slots < ADMIN_ROUND_SLOTS &&
		       b->len - d.start < ADMIN_ROUND_MAX)
			slots += shard_dump(w->shard, &cursor, 64, dump_item, &d);
		x->arg2 = cursor;
		return;
	}
	if (x->arg2 != w->id + 1)
		return;
	size_t cursor = 0;
	while (cursor != SIZE_MAX)
		shard_dump(w->shard, &cursor, 4096, dump_item, &d);
}

/* ---- stats detail ------------------------------------------------------- */

void admin_detail_single(struct worker *w, const struct proto_req *r)
{
	enum detail_op op;
	switch (r->cmd) {
	case PROTO_CMD_SET:
	case PROTO_CMD_ADD:
	case PROTO_CMD_REPLACE:
	case PROTO_CMD_APPEND:
	case PROTO_CMD_PREPEND:
	case PROTO_CMD_CAS:
		op = DETAIL_SET;
		break;
	case PROTO_CMD_DELETE:
		op = DETAIL_DEL;
		break;
	default:
		return;
	}
	detail_count(&w->group->detail, r->keys[0].ptr, r->keys[0].len, op,
		     false);
}
