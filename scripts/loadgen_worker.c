/*
 * loadgen_worker.c - one generator thread: its connections, its epoll loop,
 * issuing requests and matching replies.
 *
 * A thread owns a few connections outright. Each connection has a write
 * buffer of requests not yet sent, a read buffer of replies not yet parsed,
 * and a ring of outstanding requests (at most `depth`, the pipelining depth)
 * in send order: memcached answers a connection's requests in order, so a
 * reply always belongs to the ring's head. The loop is level-triggered
 * epoll: a readable connection is read until the kernel has no more, its
 * replies are parsed and completed, then it is topped up and flushed with
 * one send(). EPOLLOUT is asked for only while a send was short.
 *
 * Closed loop keeps every connection `depth` requests deep. Open loop gives
 * each connection an equal share of the rate and a schedule of intended send
 * times; a request whose time has come is sent if the connection has room,
 * and its latency is measured from its intended time, not from when it
 * could finally be sent, so a stalled server shows up as latency instead of
 * silently lowering the rate (no coordinated omission). Requests that fell
 * due before the end are still sent during the drain; those that never
 * found room by its deadline are counted as `unsent`, an error.
 *
 * A run is three bounded steps: the optional prefill (every key this thread
 * owns, once, pipelined 16 deep, bounded by a fixed 300 s), the measured
 * phase (until the duration or this thread's share of the request count),
 * and a drain of the replies still out, bounded by --timeout; what is still
 * unanswered then counts as timeouts. A lost connection is counted and
 * dropped, its outstanding requests with it; a thread whose connections are
 * all lost ends early.
 */
#include "scripts/loadgen.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "scripts/loadgen_proto.h"

#define PREFILL_DEPTH 16
#define PREFILL_LIMIT_NS (300 * 1000000000ll)
#define CONNECT_TIMEOUT_MS 5000
#define READ_CHUNK 65536
#define MAX_EVENTS 256
#define REPORT_MAX 5 /* wrong values and lost connections printed */

enum op { OP_GET, OP_SET };

struct req {
	int64_t t0;        /* intended (open loop) or actual send time, ns */
	uint64_t key;      /* set: the key */
	uint64_t version;  /* set, verify mode: the version written */
	uint8_t op;
	uint16_t nkeys;    /* get: keys asked */
	uint16_t kpos;     /* get: first key a VALUE may still answer */
	uint16_t hits;
};

struct conn {
	int fd;
	bool dead;
	bool want_out;      /* EPOLLOUT registered */
	char *rbuf;         /* malloc'd; grows to fit one VALUE block */
	size_t rcap, roff, rlen;
	size_t need;        /* bytes from roff the parser waits for, 0: a line */
	char *wbuf;         /* malloc'd; depth largest requests */
	size_t wcap, woff, wlen;
	struct req *q;      /* ring of outstanding requests, qcap slots */
	unsigned qcap, qhead, qlen;
	uint64_t *qkeys;    /* qcap * multiget key numbers */
	uint64_t *qfloor;   /* verify: their floor snapshots */
	int64_t next_send;  /* open loop: intended time of the next request */
};

struct phase {
	bool prefill;
	unsigned depth;
	int64_t issue_end;  /* no request is issued at or after this time */
	uint64_t quota;     /* requests this thread may issue */
	uint64_t issued;
	uint64_t next_key;  /* prefill: next key to set */
	int64_t interval;   /* open loop: ns between a connection's requests */
	struct lg_stats *st;
};

struct worker {
	unsigned id;
	struct lg_shared *sh;
	const struct lg_opts *o;
	pthread_t thread;
	int epfd;
	struct conn *conns;
	unsigned nconns, alive;
	unsigned first_conn;  /* global number of conns[0], for staggering */
	uint64_t outstanding; /* requests sent, not answered, on live conns */
	struct rng rng;
	char *filler;         /* malloc'd random printable bytes */
	uint64_t seq;         /* verify: version sequence */
	struct vtab vt;
	struct lg_stats run, pre;
	int64_t last_reply_ns;
	struct lg_live live;  /* published with relaxed atomic stores */
};

/* ---- connections ---------------------------------------------------- */

static size_t key_len_max(const struct lg_opts *o)
{
	return strlen(o->key_prefix) + 20;
}

static size_t request_max(const struct lg_opts *o)
{
	size_t set = PROTO_SET_LINE_FIXED + key_len_max(o) + o->vmax + 2;
	size_t get = 3 + o->multiget * (1 + key_len_max(o)) + 2;
	return set > get ? set : get;
}

/* Connects with a bounded wait; returns the non-blocking fd or -errno. */
static int dial(const struct lg_opts *o)
{
	int fd = socket(o->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	int rc = connect(fd, (const struct sockaddr *)&o->addr, o->addrlen);
	if (rc < 0 && errno != EINPROGRESS && errno != EAGAIN) {
		rc = -errno;
		goto fail;
	}
	if (rc < 0) {
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		rc = poll(&p, 1, CONNECT_TIMEOUT_MS);
		if (rc == 0) {
			rc = -ETIMEDOUT;
			goto fail;
		}
		int err = 0;
		socklen_t len = sizeof(err);
		if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
			rc = -errno;
			goto fail;
		}
		if (err) {
			rc = -err;
			goto fail;
		}
	}
	if (o->addr.ss_family != AF_UNIX) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	return fd;
fail:
	close(fd);
	return rc;
}

static int conn_init(struct worker *w, struct conn *c, unsigned depth)
{
	const struct lg_opts *o = w->o;
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->rcap = READ_CHUNK * 2;
	c->wcap = depth * request_max(o);
	c->qcap = depth;
	c->rbuf = malloc(c->rcap);
	c->wbuf = malloc(c->wcap);
	c->q = calloc(depth, sizeof(*c->q));
	c->qkeys = calloc((size_t)depth * o->multiget, sizeof(*c->qkeys));
	c->qfloor = calloc((size_t)depth * o->multiget, sizeof(*c->qfloor));
	if (!c->rbuf || !c->wbuf || !c->q || !c->qkeys || !c->qfloor)
		return -ENOMEM;
	int fd = dial(o);
	if (fd < 0)
		return fd;
	c->fd = fd;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	return 0;
}

static void conn_deinit(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->rbuf);
	free(c->wbuf);
	free(c->q);
	free(c->qkeys);
	free(c->qfloor);
}

static void report(struct worker *w, const char *fmt, const char *a,
		   const char *b)
{
	if (atomic_fetch_add_explicit((_Atomic unsigned *)&w->sh->reported, 1,
				      memory_order_relaxed) < REPORT_MAX)
		fprintf(stderr, fmt, LG_NAME, a, b);
}

/* Closes a connection and writes off what it had outstanding. */
static void conn_drop(struct worker *w, struct conn *c)
{
	if (c->dead)
		return;
	for (unsigned i = 0; i < c->qlen; i++) {
		struct req *r = &c->q[(c->qhead + i) % c->qcap];
		if (r->op == OP_SET && vtab_owns(&w->vt, r->key))
			vtab_set_lost(&w->vt, r->key);
	}
	w->outstanding -= c->qlen;
	c->qlen = 0;
	epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	c->dead = true;
	w->alive--;
}

/* A connection broke in the middle of the run: count, say why, drop it. */
static void conn_fail(struct worker *w, struct phase *ph, struct conn *c,
		      const char *why)
{
	if (c->dead)
		return;
	report(w, "%s: connection lost: %s%s\n", why, "");
	ph->st->conn_errors++;
	conn_drop(w, c);
}

static void conn_flush(struct worker *w, struct phase *ph, struct conn *c)
{
	while (c->woff < c->wlen) {
		ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff,
				 MSG_NOSIGNAL);
		if (n > 0) {
			c->woff += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (!c->want_out) {
				struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
				epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
				c->want_out = true;
			}
			return;
		}
		conn_fail(w, ph, c, strerror(n < 0 ? errno : EPIPE));
		return;
	}
	c->woff = c->wlen = 0;
	if (c->want_out) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
		epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
		c->want_out = false;
	}
}

/* ---- issuing -------------------------------------------------------- */

/* Room for one more request at the end of the write buffer. */
static char *wbuf_tail(struct conn *c)
{
	if (c->woff > 0) {
		memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
		c->wlen -= c->woff;
		c->woff = 0;
	}
	return c->wbuf + c->wlen;
}

static struct req *q_push(struct worker *w, struct conn *c, unsigned *slot)
{
	*slot = (c->qhead + c->qlen) % c->qcap;
	c->qlen++;
	w->outstanding++;
	return &c->q[*slot];
}

static uint32_t value_size(struct worker *w)
{
	const struct lg_opts *o = w->o;
	if (o->vmin == o->vmax)
		return o->vmin;
	return o->vmin + (uint32_t)rng_below(&w->rng, (uint64_t)o->vmax - o->vmin + 1);
}

static void issue_set(struct worker *w, struct conn *c, uint64_t k, int64_t t0)
{
	const struct lg_shared *sh = w->sh;
	char key[KEY_MAX + 1], hdr[KEY_MAX + VALUE_HDR_FIXED + 1];
	size_t klen = key_format(&sh->fmt, key, k);
	size_t len = value_size(w);
	unsigned slot;
	struct req *r = q_push(w, c, &slot);
	r->op = OP_SET;
	r->t0 = t0;
	r->key = k;
	char *p = wbuf_tail(c);
	if (w->o->verify) {
		uint64_t ver = ++w->seq << VERSION_THREAD_BITS | w->id;
		/* The filler's start moves with the version, so two versions
		 * of a key differ beyond their headers. */
		const char *fill = w->filler + (ver >> VERSION_THREAD_BITS) % 61;
		uint32_t flags = value_make(&sh->fmt, hdr, key, klen, ver, len, fill);
		size_t hlen = value_header_len(klen);
		p += proto_set_line(p, key, klen, flags, len);
		memcpy(p, hdr, hlen);
		memcpy(p + hlen, fill, len - hlen);
		r->version = ver;
		if (vtab_owns(&w->vt, k))
			vtab_set_sent(&w->vt, k, ver);
	} else {
		p += proto_set_line(p, key, klen, 0, len);
		memcpy(p, w->filler, len);
	}
	p += len;
	*p++ = '\r';
	*p++ = '\n';
	c->wlen = (size_t)(p - c->wbuf);
}

static void issue_get(struct worker *w, struct conn *c, int64_t t0)
{
	const struct lg_opts *o = w->o;
	unsigned slot;
	struct req *r = q_push(w, c, &slot);
	r->op = OP_GET;
	r->t0 = t0;
	r->nkeys = (uint16_t)o->multiget;
	r->kpos = 0;
	r->hits = 0;
	uint64_t *keys = c->qkeys + (size_t)slot * o->multiget;
	uint64_t *floors = c->qfloor + (size_t)slot * o->multiget;
	char *p = wbuf_tail(c);
	memcpy(p, "get", 3);
	p += 3;
	for (unsigned i = 0; i < o->multiget; i++) {
		uint64_t k = dist_sample(&w->sh->dist, &w->rng);
		keys[i] = k;
		floors[i] = vtab_floor(&w->vt, k);
		*p++ = ' ';
		p += key_format(&w->sh->fmt, p, k);
	}
	*p++ = '\r';
	*p++ = '\n';
	c->wlen = (size_t)(p - c->wbuf);
}

/* In verify mode only key k's owner thread sets it: move k to a key we own. */
static uint64_t own_key(const struct worker *w, uint64_t k)
{
	unsigned t = w->o->threads;
	if (!w->o->verify || t == 1)
		return k;
	uint64_t m = k - k % t + w->id;
	return m < w->o->keys ? m : m - t;
}

/*
 * Whether a request due at time t may still be issued. In open loop t is
 * the request's intended time, so a request that fell due before the end
 * but could not be sent then (its connection was full) is still sent, late,
 * during the drain: dropping it would leave out exactly the latencies of a
 * stalled server (coordinated omission at the tail of the run).
 */
static bool may_issue(const struct worker *w, const struct phase *ph,
		      int64_t t)
{
	if (ph->prefill)
		return ph->next_key < w->o->keys && t < ph->issue_end;
	return ph->issued < ph->quota && t < ph->issue_end;
}

static void issue(struct worker *w, struct phase *ph, struct conn *c,
		  int64_t t0)
{
	ph->issued++;
	if (ph->prefill) {
		issue_set(w, c, ph->next_key, t0);
		ph->next_key += w->o->threads;
		return;
	}
	const struct lg_opts *o = w->o;
	uint64_t pick = rng_below(&w->rng, (uint64_t)o->get_weight + o->set_weight);
	if (pick < o->get_weight)
		issue_get(w, c, t0);
	else
		issue_set(w, c, own_key(w, dist_sample(&w->sh->dist, &w->rng)), t0);
}

/* Tops a connection up: to `depth` (closed loop) or to its schedule. */
static void conn_top_up(struct worker *w, struct phase *ph, struct conn *c,
			int64_t now)
{
	if (w->o->rate > 0 && !ph->prefill) {
		while (c->qlen < ph->depth && c->next_send <= now &&
		       may_issue(w, ph, c->next_send)) {
			issue(w, ph, c, c->next_send);
			c->next_send += ph->interval;
		}
	} else {
		while (c->qlen < ph->depth && may_issue(w, ph, now))
			issue(w, ph, c, now);
	}
}

/* ---- replies -------------------------------------------------------- */

static void complete(struct worker *w, struct phase *ph, struct conn *c,
		     int64_t now)
{
	struct req *r = &c->q[c->qhead];
	struct lg_stats *st = ph->st;
	uint64_t lat = now > r->t0 ? (uint64_t)(now - r->t0) : 0;
	st->requests++;
	if (r->op == OP_GET) {
		st->gets++;
		st->get_keys += r->nkeys;
		st->misses += (uint64_t)(r->nkeys - r->hits);
		hist_record(&st->get_lat, lat);
	} else {
		st->sets++;
		hist_record(&st->set_lat, lat);
	}
	c->qhead = (c->qhead + 1) % c->qcap;
	c->qlen--;
	w->outstanding--;
	w->last_reply_ns = now;
}

static void on_set_reply(struct worker *w, struct phase *ph, struct conn *c,
			 bool stored)
{
	struct req *r = &c->q[c->qhead];
	if (!stored)
		ph->st->server_errors++;
	if (w->o->verify && vtab_owns(&w->vt, r->key))
		vtab_set_done(&w->vt, r->key, r->version, stored);
}

static void wrong_value(struct worker *w, struct phase *ph, const char *key,
			size_t klen, enum value_verdict v)
{
	char name[KEY_MAX + 1];
	size_t n = klen < KEY_MAX ? klen : KEY_MAX;
	memcpy(name, key, n);
	name[n] = '\0';
	ph->st->wrong_values++;
	report(w, "%s: wrong value for key %s: %s\n", name, value_verdict_str(v));
}

/* A VALUE block of the head get: match it to a key asked for and check it. */
static void on_hit(struct worker *w, struct phase *ph, struct conn *c,
		   const struct value_line *vl, const char *data)
{
	const struct lg_opts *o = w->o;
	struct req *r = &c->q[c->qhead];
	uint64_t *keys = c->qkeys + (size_t)c->qhead * o->multiget;
	uint64_t k;
	unsigned j = r->kpos;
	if (key_parse(&w->sh->fmt, vl->key, vl->klen, &k) == 0)
		while (j < r->nkeys && keys[j] != k)
			j++;
	else
		j = r->nkeys;
	if (j == r->nkeys) { /* a key not asked for, or out of order */
		char name[KEY_MAX + 1];
		size_t n = vl->klen < KEY_MAX ? vl->klen : KEY_MAX;
		memcpy(name, vl->key, n);
		name[n] = '\0';
		ph->st->proto_errors++;
		report(w, "%s: VALUE for a key not asked for: %s%s\n", name, "");
		return;
	}
	r->kpos = (uint16_t)(j + 1);
	r->hits++;
	ph->st->hits++;
	if (!o->verify)
		return;
	struct value_info vi;
	enum value_verdict v = value_check(vl->key, vl->klen, data, vl->bytes,
					   vl->flags, &vi);
	if (v == VALUE_OK)
		v = vtab_check(&w->vt, &w->sh->fmt, k,
			       c->qfloor[(size_t)c->qhead * o->multiget + j], &vi);
	if (v != VALUE_OK)
		wrong_value(w, ph, vl->key, vl->klen, v);
}

/*
 * Consumes every complete reply in the read buffer. Returns 0, or -EPROTO
 * after failing the connection when the stream cannot be followed any more.
 */
static int conn_parse(struct worker *w, struct phase *ph, struct conn *c,
		      int64_t now)
{
	c->need = 0;
	while (c->roff < c->rlen) {
		char *line = c->rbuf + c->roff;
		size_t avail = c->rlen - c->roff;
		char *nl = memchr(line, '\n', avail < PROTO_LINE_MAX ? avail : PROTO_LINE_MAX);
		if (!nl) {
			if (avail < PROTO_LINE_MAX)
				return 0;
			goto broken;
		}
		if (c->qlen == 0 || nl == line || nl[-1] != '\r')
			goto broken;
		size_t llen = (size_t)(nl - line) + 1;
		struct value_line vl;
		enum reply_kind kind = proto_classify(line, llen - 2, &vl);
		struct req *r = &c->q[c->qhead];
		if (r->op == OP_SET) {
			if (kind != REPLY_STORED && kind != REPLY_REFUSED && kind != REPLY_ERROR)
				goto broken;
			on_set_reply(w, ph, c, kind == REPLY_STORED);
			complete(w, ph, c, now);
			c->roff += llen;
			continue;
		}
		if (kind == REPLY_VALUE) {
			size_t need = llen + vl.bytes + 2;
			if (avail < need) {
				c->need = need;
				return 0;
			}
			char *data = line + llen;
			if (data[vl.bytes] != '\r' || data[vl.bytes + 1] != '\n')
				goto broken;
			on_hit(w, ph, c, &vl, data);
			c->roff += need;
			continue;
		}
		if (kind == REPLY_ERROR)
			ph->st->server_errors++;
		else if (kind != REPLY_END)
			goto broken;
		complete(w, ph, c, now);
		c->roff += llen;
	}
	return 0;
broken:
	ph->st->proto_errors++;
	conn_fail(w, ph, c, "reply does not follow the protocol");
	return -EPROTO;
}

/* Makes room to read: compacts, and grows to fit the VALUE block awaited. */
static int rbuf_room(struct conn *c)
{
	if (c->roff == c->rlen) {
		c->roff = c->rlen = 0;
	} else if (c->rcap - c->rlen < READ_CHUNK / 4 || c->roff + c->need > c->rcap) {
		memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
		c->rlen -= c->roff;
		c->roff = 0;
	}
	if (c->need + READ_CHUNK / 4 > c->rcap) {
		size_t cap = c->need + READ_CHUNK;
		char *nb = realloc(c->rbuf, cap);
		if (!nb)
			return -ENOMEM;
		c->rbuf = nb;
		c->rcap = cap;
	}
	return 0;
}

static void conn_on_readable(struct worker *w, struct phase *ph, struct conn *c)
{
	for (;;) {
		if (rbuf_room(c) < 0) {
			conn_fail(w, ph, c, "out of memory");
			return;
		}
		size_t room = c->rcap - c->rlen;
		ssize_t n = recv(c->fd, c->rbuf + c->rlen, room, 0);
		if (n == 0) {
			conn_fail(w, ph, c, "closed by the server");
			return;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_fail(w, ph, c, strerror(errno));
			return;
		}
		c->rlen += (size_t)n;
		if (conn_parse(w, ph, c, lg_now_ns()) < 0)
			return;
		if ((size_t)n < room)
			break; /* the kernel had no more; skip the EAGAIN call */
	}
	conn_top_up(w, ph, c, lg_now_ns());
	conn_flush(w, ph, c);
}

/* ---- the loop ------------------------------------------------------- */

static void publish(struct worker *w, const struct lg_stats *st)
{
	__atomic_store_n(&w->live.requests, st->requests, __ATOMIC_RELAXED);
	__atomic_store_n(&w->live.get_keys, st->get_keys, __ATOMIC_RELAXED);
	__atomic_store_n(&w->live.hits, st->hits, __ATOMIC_RELAXED);
	__atomic_store_n(&w->live.errors, stats_errors(st) + st->wrong_values,
			 __ATOMIC_RELAXED);
}

static int64_t next_wakeup(struct worker *w, struct phase *ph, int64_t now,
			   int64_t drain_deadline)
{
	if (drain_deadline)
		return drain_deadline;
	int64_t t = ph->issue_end;
	if (w->o->rate > 0 && !ph->prefill) {
		for (unsigned i = 0; i < w->nconns; i++) {
			struct conn *c = &w->conns[i];
			if (!c->dead && c->qlen < ph->depth && c->next_send < t)
				t = c->next_send;
		}
	}
	return t > now ? t : now;
}

/*
 * Open loop, at the end of the drain: the requests that fell due before the
 * end on live connections but were never sent, because the server did not
 * answer fast enough to make room for them. They count as errors: the run
 * did not offer the rate it was asked for.
 */
static uint64_t unsent(const struct worker *w, const struct phase *ph)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < w->nconns; i++) {
		const struct conn *c = &w->conns[i];
		if (!c->dead && c->next_send < ph->issue_end)
			n += (uint64_t)((ph->issue_end - c->next_send - 1) / ph->interval) + 1;
	}
	uint64_t left = ph->quota - ph->issued;
	return n < left ? n : left;
}

static void run_phase(struct worker *w, struct phase *ph, int64_t start)
{
	struct epoll_event ev[MAX_EVENTS];
	int64_t now = lg_now_ns();
	int64_t drain_deadline = 0;
	bool open_loop = w->o->rate > 0 && !ph->prefill;
	for (unsigned i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];
		/* Stagger the schedules so connections do not fire together. */
		if (open_loop)
			c->next_send = start + (int64_t)((w->first_conn + i) * 1e9 / w->o->rate);
		if (!c->dead) {
			conn_top_up(w, ph, c, now);
			conn_flush(w, ph, c);
		}
	}
	for (;;) {
		bool issuing = w->alive > 0 && may_issue(w, ph, now);
		if (!issuing && w->outstanding == 0)
			break;
		if (!issuing && !drain_deadline)
			drain_deadline = now + (int64_t)(w->o->timeout * 1e9);
		if (drain_deadline && now >= drain_deadline) {
			ph->st->timeouts += w->outstanding;
			break;
		}
		int64_t wait = next_wakeup(w, ph, now, drain_deadline) - now;
		struct timespec ts = { .tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000 };
		int n = epoll_pwait2(w->epfd, ev, MAX_EVENTS, &ts, NULL);
		if (n < 0 && errno != EINTR) {
			perror(LG_NAME ": epoll_pwait2");
			ph->st->timeouts += w->outstanding;
			break;
		}
		for (int i = 0; i < n; i++) {
			struct conn *c = ev[i].data.ptr;
			if (c->dead)
				continue;
			if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				conn_on_readable(w, ph, c);
			if (!c->dead && (ev[i].events & EPOLLOUT))
				conn_flush(w, ph, c);
		}
		now = lg_now_ns();
		if (open_loop) {
			for (unsigned i = 0; i < w->nconns; i++) {
				struct conn *c = &w->conns[i];
				if (!c->dead && c->next_send <= now && c->qlen < ph->depth) {
					conn_top_up(w, ph, c, now);
					conn_flush(w, ph, c);
				}
			}
		}
		publish(w, ph->st);
	}
	if (open_loop)
		ph->st->unsent += unsent(w, ph);
	/* Replies still missing were counted as timeouts; a connection that
	 * still owes some is out of step, so it is not used again. */
	for (unsigned i = 0; i < w->nconns; i++)
		if (w->conns[i].qlen)
			conn_drop(w, &w->conns[i]);
	publish(w, ph->st);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct lg_shared *sh = w->sh;
	const struct lg_opts *o = w->o;
	if (o->prefill) {
		struct phase pre = {
			.prefill = true,
			.depth = w->conns[0].qcap,
			.issue_end = lg_now_ns() + PREFILL_LIMIT_NS,
			.quota = UINT64_MAX,
			.next_key = w->id,
			.st = &w->pre,
		};
		run_phase(w, &pre, lg_now_ns());
		if (pre.next_key < o->keys) {
			fprintf(stderr, "%s: thread %u stopped its prefill at key %llu of %llu "
				"(connections lost, or over %lld s)\n", LG_NAME, w->id,
				(unsigned long long)pre.next_key, (unsigned long long)o->keys,
				PREFILL_LIMIT_NS / 1000000000ll);
			w->pre.timeouts++;
		}
	}
	pthread_barrier_wait(&sh->barrier);
	pthread_barrier_wait(&sh->barrier);
	uint64_t quota = UINT64_MAX;
	if (o->requests != UINT64_MAX)
		quota = o->requests / o->threads + (w->id < o->requests % o->threads);
	struct phase run = {
		.depth = o->pipeline,
		.issue_end = sh->start_ns + (int64_t)(o->duration * 1e9),
		.quota = quota,
		.interval = o->rate > 0 ? (int64_t)(o->conns * 1e9 / o->rate) : 0,
		.st = &w->run,
	};
	w->last_reply_ns = sh->start_ns;
	run_phase(w, &run, sh->start_ns);
	atomic_fetch_add_explicit((_Atomic unsigned *)&sh->finished, 1,
				  memory_order_release);
	return NULL;
}

/* ---- set-up --------------------------------------------------------- */

int worker_create(struct worker **out, unsigned id, struct lg_shared *sh)
{
	const struct lg_opts *o = sh->o;
	int rc = -ENOMEM;
	struct worker *w = calloc(1, sizeof(*w));
	if (!w)
		goto oom;
	w->id = id;
	w->sh = sh;
	w->o = o;
	w->epfd = -1;
	stats_init(&w->run);
	stats_init(&w->pre);
	rng_seed(&w->rng, o->seed * 0x9e3779b97f4a7c15ull + id);
	/* Filler: printable, so a value is readable in a packet dump. */
	w->filler = malloc((size_t)o->vmax + 64);
	if (!w->filler)
		goto oom;
	for (size_t i = 0; i < (size_t)o->vmax + 64; i++)
		w->filler[i] = (char)('a' + rng_below(&w->rng, 26));
	if (o->verify && (rc = vtab_init(&w->vt, o->keys, o->threads, id)) < 0)
		goto oom;
	w->nconns = o->conns / o->threads + (id < o->conns % o->threads);
	w->first_conn = id * (o->conns / o->threads) +
			(id < o->conns % o->threads ? id : o->conns % o->threads);
	w->conns = calloc(w->nconns, sizeof(*w->conns));
	if (!w->conns)
		goto oom;
	for (unsigned i = 0; i < w->nconns; i++)
		w->conns[i].fd = -1;
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd < 0) {
		rc = -errno;
		goto fail;
	}
	unsigned depth = o->pipeline;
	if (o->prefill && depth < PREFILL_DEPTH)
		depth = PREFILL_DEPTH;
	for (unsigned i = 0; i < w->nconns; i++) {
		rc = conn_init(w, &w->conns[i], depth);
		if (rc < 0) {
			fprintf(stderr, "%s: cannot connect to %s: %s\n", LG_NAME,
				o->server, strerror(-rc));
			goto fail;
		}
		w->alive++;
	}
	*out = w;
	return 0;
oom:
	fprintf(stderr, "%s: out of memory\n", LG_NAME);
fail:
	worker_destroy(w);
	return rc;
}

int worker_start(struct worker *w)
{
	int rc = pthread_create(&w->thread, NULL, worker_main, w);
	return -rc;
}

void worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
}

void worker_destroy(struct worker *w)
{
	if (!w)
		return;
	if (w->conns)
		for (unsigned i = 0; i < w->nconns; i++)
			conn_deinit(&w->conns[i]);
	free(w->conns);
	if (w->epfd >= 0)
		close(w->epfd);
	vtab_deinit(&w->vt);
	free(w->filler);
	free(w);
}

const struct lg_stats *worker_run_stats(const struct worker *w)
{
	return &w->run;
}

const struct lg_stats *worker_prefill_stats(const struct worker *w)
{
	return &w->pre;
}

int64_t worker_last_reply_ns(const struct worker *w)
{
	return w->last_reply_ns;
}

void worker_live(const struct worker *w, struct lg_live *out)
{
	out->requests = __atomic_load_n(&w->live.requests, __ATOMIC_RELAXED);
	out->get_keys = __atomic_load_n(&w->live.get_keys, __ATOMIC_RELAXED);
	out->hits = __atomic_load_n(&w->live.hits, __ATOMIC_RELAXED);
	out->errors = __atomic_load_n(&w->live.errors, __ATOMIC_RELAXED);
}
