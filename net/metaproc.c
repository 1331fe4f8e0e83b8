/*
 * metaproc.c - meta requests to shard operations and replies; see
 * metaproc.h.
 *
 * An mg hit is composed by the shard's sink while the item is found: the
 * sink gets the item's metadata (shard_view with its meta answer), writes
 * the reply head and returns room for the value right after it, so the
 * value is copied once, into its final place. Every other outcome is one
 * line composed after shard_exec() returns.
 */
#include "net/metaproc.h"

#include <errno.h>
#include <string.h>

#include "net/process.h"

static const char OOM_GET[] = "SERVER_ERROR out of memory writing get response\r\n";
static const char OOM_REQ[] = "SERVER_ERROR out of memory\r\n";

/* Where an mg hit's reply goes: the output arena or a batch buffer. */
struct hit_sink {
	const struct meta_spec *sp;
	struct arena *out;     /* home side */
	struct xbatch *b;      /* destination side */
	char *start;           /* home: the reply's bytes */
	size_t off, len;       /* reply bytes (batch: offset in b->buf) */
};

static char *hit_sink(void *ctx, const struct shard_view *v)
{
	struct hit_sink *s = ctx;
	char line[META_LINE_MAX];
	size_t n = meta_compose_hit(line, s->sp, v);
	size_t tail = s->sp->value ? (size_t)v->vlen + 2 : 0;
	char *p;
	if (s->out) {
		if (!(p = arena_bytes(s->out, n + tail)))
			return NULL;
		s->start = p;
	} else {
		if (!(p = xbatch_reserve(s->b, n + tail)))
			return NULL;
		s->off = s->b->len;
		s->b->len += n + tail;
	}
	s->len = n + tail;
	memcpy(p, line, n);
	if (tail)
		memcpy(p + n + v->vlen, "\r\n", 2);
	return p + n;
}

/* me reads only metadata: the value is never copied (no MF_VALUE). */
static char *meta_only_sink(void *ctx, const struct shard_view *v)
{
	(void)v;
	return ctx;
}

static int exec(struct worker *w, struct shard_req *q,
		const struct meta_spec *sp, struct shard_res *res,
		struct hit_sink *hs)
{
	static char none;
	if (sp->cmd == META_MG)
		return shard_exec(w->shard, q, res, hit_sink, hs);
	if (sp->cmd == META_ME)
		return shard_exec(w->shard, q, res, meta_only_sink, &none);
	return shard_exec(w->shard, q, res, NULL, NULL);
}

static void send_remote(struct conn *c, uint32_t dst, struct meta_req *m)
{
	struct conn_seg *seg = conn_emit_pending(c);
	if (!seg) {
		conn_close(c);
		return;
	}
	struct meta_spec *sp = arena_alloc(&c->arena, sizeof(*sp));
	struct xreq *x = sp ? process_xreq_new(c, &m->q) : NULL;
	if (!x) {
		conn_fill(c, seg, OOM_REQ, sizeof(OOM_REQ) - 1);
		return;
	}
	*sp = m->spec;
	x->meta = sp;
	x->lat_fam = (uint8_t)lat_meta_family(sp->cmd);
	x->seg = seg;
	worker_send_xreq(c->w, dst, x);
}

void metaproc_request(struct conn *c, struct meta_req *m)
{
	struct worker *w = c->w;
	const struct meta_spec *sp = &m->spec;
	if (sp->cmd == META_MN) {
		if (conn_emit_lit(c, "MN\r\n") < 0)
			conn_close(c);
		return;
	}
	struct shard_req *q = &m->q;
	q->hash = shard_hash(q->key, q->klen);
	uint32_t dst = shard_route(q->hash, w->group->nworkers);
	if (dst != w->id) {
		send_remote(c, dst, m);
		return;
	}
	struct hit_sink hs = { .sp = sp, .out = &c->out };
	struct shard_res res;
	int rc = exec(w, q, sp, &res, &hs);
	worker_lat_local(w, lat_meta_family(sp->cmd));
	if (rc == 0 && res.status == SHARD_HIT && sp->cmd == META_MG) {
		if (conn_emit(c, hs.start, hs.len) < 0)
			conn_close(c);
		return;
	}
	char line[META_LINE_MAX];
	size_t n = meta_compose(line, sp, q->key, q->klen, rc, &res);
	if (n && conn_emit_copy(c, line, n) < 0)
		conn_close(c);
}

void metaproc_execute(struct worker *w, struct xbatch *b, struct xreq *x)
{
	const struct meta_spec *sp = x->meta;
	struct hit_sink hs = { .sp = sp, .b = b };
	x->rc = exec(w, &x->req, sp, &x->res, &hs);
	if (x->rc == 0 && x->res.status == SHARD_HIT && sp->cmd == META_MG) {
		x->out_off = (uint32_t)hs.off;
		x->out_len = (uint32_t)hs.len;
		return;
	}
	char *p = xbatch_reserve(b, META_LINE_MAX);
	if (!p) {
		x->rc = -ENOBUFS;
		x->out_len = 0;
		return;
	}
	size_t n = meta_compose(p, sp, x->req.key, x->req.klen, x->rc, &x->res);
	x->out_off = (uint32_t)b->len;
	x->out_len = (uint32_t)n;
	b->len += n;
}

void metaproc_complete(struct conn *c, struct xbatch *b, struct xreq *x)
{
	if (!x->seg || c->closing)
		return;
	if (x->rc == -ENOBUFS && !x->out_len)
		conn_fill(c, x->seg, OOM_GET, sizeof(OOM_GET) - 1);
	else
		conn_fill(c, x->seg, x->out_len ? b->buf + x->out_off : NULL,
			  x->out_len);
}
