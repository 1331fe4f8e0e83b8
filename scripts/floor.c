/*
 * floor.c - rc-floor, the network floor that ringcached is measured against.
 *
 * rc-floor is a single-threaded io_uring responder that speaks just enough of
 * memcached's text protocol to be driven by the same load as ringcached
 * (build/rc-loadgen, scripts/bench.sh) - and stores nothing. Every get/gets
 * is a hit of a fixed value (--value-size, 100 bytes by default; --miss
 * answers END only), every storage command is swallowed by its declared
 * length and answered STORED, delete is DELETED. Its CPU time per request is
 * what the kernel's TCP costs per message plus the least userspace work, so
 * ringcached's CPU per request divided by the floor's says how much of
 * ringcached's cost is its own.
 *
 * It batches the way ringcached's worker does (net/worker.c, net/conn.c), so
 * that the comparison is of the work done per message and not of the
 * syscall pattern: one ring (SINGLE_ISSUER and DEFER_TASKRUN where the kernel
 * has them), a multishot accept, a multishot receive per connection over a
 * provided-buffer ring (single-shot receives into the connection's buffer on
 * kernels without one), requests parsed straight out of the received
 * buffer, and one send per connection per loop pass with everything that is
 * ready: a pass dispatches every completion first, then sends.
 *
 * Ownership and lifetimes: everything is owned by the one thread. A struct
 * conn is malloc'd on accept and freed once it is closing and has no
 * operation in flight (`refs`); its two output buffers (one in flight, one
 * filling) and its carry buffer (the unparsed tail of a request split across
 * reads) are malloc'd and freed with it. Memory per connection is bounded:
 * a request line is at most REQ_LINE_MAX bytes (longer: an error, then close),
 * and parsing pauses (and the receive is cancelled) while OUT_HIGH bytes of
 * answers wait for the client to read them; a get is answered key by key, so
 * the filling buffer holds at most OUT_HIGH plus one VALUE block. The carry
 * holds at most CARRY_MAX (what arrives between a pause and the end of the
 * receive: one buffer ring); a client that sends more than that without
 * reading is closed. Provided buffers go back to the ring as
 * soon as their bytes are parsed or carried. Errors are negative errnos.
 *
 * --store makes it the floor of a store: sets keep their data and gets answer
 * from what is kept, through what a plain hash table store does (an XXH3
 * hash, a linear probe, a key compare, a copy out) and the two-stage
 * prefetch of ringcached's look-ahead (net/worker.c): every get key of a
 * provided buffer starts loading its slot, then its item. Only set stores
 * (add, replace, append, prepend and cas are swallowed as without --store,
 * delete answers DELETED and removes nothing); nothing is evicted or
 * expires. An item is malloc'd once its set line is read and freed when a
 * set replaces it or at exit; a connection owns the item its data is being
 * read into (`filling`) until the data is complete. The table doubles at a
 * load of 3/4. So its CPU per request over the network floor's is what a
 * plain store's own work costs.
 *
 * Flags as ringcached's where they overlap: -p PORT, -l ADDR; -t -m -U -c -u
 * take a value and are ignored, so that bench.sh starts it like the others.
 * SIGTERM or SIGINT closes everything and exits 0.
 */
#include <errno.h>
#include <getopt.h>
#include <liburing.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define RING_ENTRIES 1024
#define CQ_ENTRIES 4096
#define RBUF_GROUP 0
#define RBUF_COUNT 256  /* a power of two; as ringcached's worker */
#define RBUF_SIZE 4096
#define REQ_LINE_MAX 2048   /* memcached's: a longer line is an error */
/* A multishot receive may deliver a whole buffer ring in one pass before
   its cancellation (a paused connection) takes effect: the carry holds it. */
#define CARRY_MAX (RBUF_COUNT * RBUF_SIZE + REQ_LINE_MAX)
#define OUT_HIGH (256 * 1024)
#define VALUE_MAX (1024 * 1024)
#define KEY_MAX 250
#define STORE_SLOTS0 (1u << 16)
#define PREFETCH_MAX 64 /* keys of one received buffer */

/* user_data: a pointer with a tag in its three low bits (as net/udata.h). */
enum tag { T_IGNORE, T_ACCEPT, T_RECV, T_SEND, T_SIGNAL };

static uint64_t ud(const void *p, enum tag t)
{
	return (uint64_t)(uintptr_t)p | (uint64_t)t;
}

struct buf {
	char *p;
	size_t len, cap;
};

struct conn {
	struct floor *f;
	int fd;
	unsigned refs;          /* operations in flight: receive, send */
	bool recv_armed, recv_cancelled;
	bool closing;           /* no more input is taken; freed at refs 0 */
	bool close_after_send;  /* quit, EOF or a fatal request: send, close */
	bool dirty;             /* on f->dirty: has output or must close */
	struct conn *dirty_next;
	struct conn *prev, *next; /* f->conns */
	size_t swallow;         /* bytes of a storage command's data to skip */
	bool swallow_reply;     /* answer STORED once they are skipped */
	size_t get_pos;         /* a get answered in part: next key's offset */
	struct item *filling;   /* --store: the set whose data is being read */
	size_t filled;          /* of its value and "\r\n" */
	struct buf carry;       /* unparsed input (malloc, <= CARRY_MAX) */
	struct buf fill;        /* answers being added (malloc) */
	struct buf sending;     /* answers in flight (malloc) */
	size_t sent;            /* of `sending` */
};

/* --store: the key, " <flags> <bytes>" (slen bytes), the value and "\r\n". */
struct item {
	uint64_t hash;
	uint32_t vlen;
	uint8_t klen, slen;
	char data[];
};

struct slot {
	uint64_t hash;
	struct item *it; /* NULL: empty */
};

struct floor {
	struct io_uring ring;
	struct io_uring_buf_ring *rbufs; /* NULL: single-shot receives */
	char *rbuf_mem;                  /* RBUF_COUNT x RBUF_SIZE, mmap */
	int lfd, sfd;
	struct signalfd_siginfo sig;
	bool stop;
	struct conn *conns, *dirty;
	uint64_t curr_conns, total_conns;
	time_t started;
	bool miss;
	size_t vsize;
	char vsuffix[32];   /* " 0 <n>" of a VALUE line */
	size_t vsuffix_len;
	char *value;        /* vsize bytes and "\r\n" */
	bool store;
	struct slot *slots; /* --store: mask + 1 of them */
	size_t mask, count;
};

static struct io_uring_sqe *sqe_get(struct floor *f)
{
	struct io_uring_sqe *sqe;
	while (!(sqe = io_uring_get_sqe(&f->ring)))
		io_uring_submit(&f->ring);
	return sqe;
}

static void rbuf_put(struct floor *f, unsigned bid)
{
	io_uring_buf_ring_add(f->rbufs, f->rbuf_mem + (size_t)bid * RBUF_SIZE,
			      RBUF_SIZE, (unsigned short)bid,
			      io_uring_buf_ring_mask(RBUF_COUNT), 0);
	io_uring_buf_ring_advance(f->rbufs, 1);
}

/* Makes room for n more bytes; 0 or -ENOMEM. */
static int buf_reserve(struct buf *b, size_t n)
{
	if (b->cap - b->len >= n)
		return 0;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap - b->len < n)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

static void mark_dirty(struct conn *c)
{
	if (c->dirty)
		return;
	c->dirty = true;
	c->dirty_next = c->f->dirty;
	c->f->dirty = c;
}

/* ---- answers ---------------------------------------------------------- */

static void out(struct conn *c, const char *s, size_t n)
{
	if (buf_reserve(&c->fill, n) < 0) {
		c->close_after_send = true;
		return;
	}
	memcpy(c->fill.p + c->fill.len, s, n);
	c->fill.len += n;
}

#define OUT(c, lit) out(c, lit, sizeof(lit) - 1)

static bool paused(const struct conn *c)
{
	return c->fill.len >= OUT_HIGH;
}

static void stats(struct conn *c)
{
	struct floor *f = c->f;
	char s[256];
	int n = snprintf(s, sizeof(s),
			 "STAT pid %ld\r\nSTAT uptime %ld\r\n"
			 "STAT version rc-floor\r\nSTAT curr_connections %llu\r\n"
			 "STAT total_connections %llu\r\nEND\r\n",
			 (long)getpid(), (long)(time(NULL) - f->started),
			 (unsigned long long)f->curr_conns,
			 (unsigned long long)f->total_conns);
	out(c, s, (size_t)n);
}

/* ---- requests --------------------------------------------------------- */

static bool is(const char *w, size_t n, const char *lit)
{
	return strlen(lit) == n && memcmp(w, lit, n) == 0;
}

/* The next space-separated token at or after *pos in line[0..end). */
static bool token(const char *line, size_t end, size_t *pos,
		  const char **tok, size_t *len)
{
	size_t i = *pos;
	while (i < end && line[i] == ' ')
		i++;
	if (i == end)
		return false;
	size_t j = i;
	while (j < end && line[j] != ' ')
		j++;
	*tok = line + i;
	*len = j - i;
	*pos = j;
	return true;
}

/* ---- --store ---------------------------------------------------------- */

static uint64_t key_hash(const char *k, size_t klen)
{
	return XXH3_64bits(k, klen);
}

/* The slot of the key, or the empty slot that ends its probe. */
static struct slot *store_probe(struct floor *f, const char *k, size_t klen,
				uint64_t h)
{
	for (size_t i = h & f->mask;; i = (i + 1) & f->mask) {
		struct slot *s = &f->slots[i];
		if (!s->it || (s->hash == h && s->it->klen == klen &&
			       memcmp(s->it->data, k, klen) == 0))
			return s;
	}
}

static int store_init(struct floor *f, size_t n)
{
	struct slot *s = calloc(n, sizeof(*s));
	if (!s)
		return -ENOMEM;
	struct slot *old = f->slots;
	size_t old_n = old ? f->mask + 1 : 0;
	f->slots = s;
	f->mask = n - 1;
	for (size_t i = 0; i < old_n; i++) {
		if (!old[i].it)
			continue;
		size_t j = old[i].hash & f->mask;
		while (s[j].it)
			j = (j + 1) & f->mask;
		s[j] = old[i];
	}
	free(old);
	return 0;
}

/* Keeps a complete item, in place of the key's old one. */
static void store_put(struct floor *f, struct item *it)
{
	if ((f->count + 1) * 4 > (f->mask + 1) * 3 &&
	    store_init(f, (f->mask + 1) * 2) < 0) {
		free(it); /* no room: as if evicted at once */
		return;
	}
	struct slot *s = store_probe(f, it->data, it->klen, it->hash);
	if (s->it)
		free(s->it);
	else
		f->count++;
	s->hash = it->hash;
	s->it = it;
}

/* A set line read: its item, to be filled by the data that follows. */
static struct item *store_item(const char *k, size_t klen, const char *flags,
			       size_t flen, size_t bytes)
{
	char digits[20]; /* bytes in decimal, at the end */
	size_t nd = 0;
	for (size_t v = bytes; !nd || v; v /= 10)
		digits[sizeof(digits) - ++nd] = (char)('0' + v % 10);
	size_t slen = 1 + flen + 1 + nd;
	struct item *it = malloc(sizeof(*it) + klen + slen + bytes + 2);
	if (!it)
		return NULL;
	it->hash = key_hash(k, klen);
	it->vlen = (uint32_t)bytes;
	it->klen = (uint8_t)klen;
	it->slen = (uint8_t)slen;
	char *p = it->data;
	memcpy(p, k, klen);
	p += klen;
	*p++ = ' ';
	memcpy(p, flags, flen);
	p += flen;
	*p++ = ' ';
	memcpy(p, digits + sizeof(digits) - nd, nd);
	return it;
}

/*
 * The keys of the get lines in p[0..n) start loading: every one's home
 * slot first, then, once they are on their way, the items of the slots
 * whose hash is the key's (the first three lines: head, key, suffix and a
 * small value).
 */
static void store_prefetch(struct floor *f, const char *p, size_t n)
{
	uint64_t h[PREFETCH_MAX];
	unsigned nh = 0;
	const char *e = p + n, *nl;
	while (nh < PREFETCH_MAX && (nl = memchr(p, '\n', (size_t)(e - p)))) {
		const char *k = nl - p > 4 && !memcmp(p, "get ", 4) ? p + 4 :
				nl - p > 5 && !memcmp(p, "gets ", 5) ? p + 5 : nl;
		/* a get line has k > p, so nl[-1] is in the buffer */
		const char *end = k < nl && nl[-1] == '\r' ? nl - 1 : nl;
		while (k < end && nh < PREFETCH_MAX) {
			const char *sp = memchr(k, ' ', (size_t)(end - k));
			if (!sp)
				sp = end;
			if (sp > k) {
				h[nh] = key_hash(k, (size_t)(sp - k));
				__builtin_prefetch(&f->slots[h[nh] & f->mask]);
				nh++;
			}
			k = sp + 1;
		}
		p = nl + 1;
	}
	for (unsigned i = 0; i < nh; i++) {
		for (size_t j = h[i] & f->mask; f->slots[j].it; j = (j + 1) & f->mask) {
			if (f->slots[j].hash == h[i]) {
				const char *it = (const char *)f->slots[j].it;
				__builtin_prefetch(it);
				__builtin_prefetch(it + 64);
				__builtin_prefetch(it + 128);
				break;
			}
		}
	}
}

/* "VALUE <key> <flags> <n>[ 1]\r\n<n bytes>\r\n" of a kept item. */
static void item_block(struct conn *c, const struct item *it, bool cas)
{
	size_t body = it->klen + it->slen;
	size_t n = 6 + body + (cas ? 2 : 0) + 2 + it->vlen + 2;
	if (buf_reserve(&c->fill, n) < 0) {
		c->close_after_send = true;
		return;
	}
	char *p = c->fill.p + c->fill.len;
	memcpy(p, "VALUE ", 6);
	memcpy(p + 6, it->data, body);
	p += 6 + body;
	if (cas) {
		memcpy(p, " 1", 2);
		p += 2;
	}
	memcpy(p, "\r\n", 2);
	memcpy(p + 2, it->data + body, it->vlen + 2);
	c->fill.len += n;
}

/* "VALUE <key> 0 <n>[ 1]\r\n<n bytes>\r\n", with one reservation. */
static void value_block(struct conn *c, const char *k, size_t klen, bool cas)
{
	struct floor *f = c->f;
	size_t n = 6 + klen + f->vsuffix_len + (cas ? 2 : 0) + 2 + f->vsize + 2;
	if (buf_reserve(&c->fill, n) < 0) {
		c->close_after_send = true;
		return;
	}
	char *p = c->fill.p + c->fill.len;
	memcpy(p, "VALUE ", 6);
	p += 6;
	memcpy(p, k, klen);
	p += klen;
	memcpy(p, f->vsuffix, f->vsuffix_len);
	p += f->vsuffix_len;
	if (cas) {
		memcpy(p, " 1", 2);
		p += 2;
	}
	memcpy(p, "\r\n", 2);
	p += 2;
	memcpy(p, f->value, f->vsize + 2);
	c->fill.len += n;
}

/*
 * Answers a get from the key at c->get_pos (or the first) on; false when it
 * stopped half way because the answers reached OUT_HIGH (c->get_pos says
 * where to go on).
 */
static bool get(struct conn *c, const char *line, size_t end, size_t pos,
		bool cas)
{
	struct floor *f = c->f;
	const char *k;
	size_t klen;
	size_t first = pos;
	if (c->get_pos) {
		pos = c->get_pos;
	} else if (!token(line, end, &first, &k, &klen)) {
		OUT(c, "ERROR\r\n"); /* no key, as memcached */
		return true;
	}
	c->get_pos = 0;
	while (token(line, end, &pos, &k, &klen)) {
		if (f->miss)
			continue;
		if (paused(c)) {
			c->get_pos = pos - klen;
			return false;
		}
		if (f->store) {
			struct slot *s = klen <= KEY_MAX ?
				store_probe(f, k, klen, key_hash(k, klen)) : NULL;
			if (s && s->it)
				item_block(c, s->it, cas);
		} else {
			value_block(c, k, klen, cas);
		}
	}
	OUT(c, "END\r\n");
	return true;
}

/* set/add/replace/append/prepend KEY FLAGS EXPTIME BYTES [noreply], and cas
   with its unique before noreply: skip BYTES + 2, then STORED; with --store
   a set keeps them (`keep`). */
static void storage(struct conn *c, const char *line, size_t end, size_t pos,
		    bool cas, bool keep)
{
	const char *t[6];
	size_t l[6];
	int n = 0;
	while (n < 6 && token(line, end, &pos, &t[n], &l[n]))
		n++;
	int need = cas ? 5 : 4;
	char *e;
	char num[24];
	if (n < need || n > need + 1 || l[3] >= sizeof(num)) {
		OUT(c, "ERROR\r\n");
		return;
	}
	memcpy(num, t[3], l[3]);
	num[l[3]] = '\0';
	unsigned long long bytes = strtoull(num, &e, 10);
	if (*e || num[0] < '0' || num[0] > '9' || bytes > (1ULL << 30)) {
		OUT(c, "CLIENT_ERROR bad command line format\r\n");
		return;
	}
	c->swallow = (size_t)bytes + 2;
	c->swallow_reply = !(n == need + 1 && is(t[need], l[need], "noreply"));
	if (keep && l[0] <= KEY_MAX && l[1] <= 10 && bytes <= VALUE_MAX) {
		c->filling = store_item(t[0], l[0], t[1], l[1], (size_t)bytes);
		c->filled = 0;
	}
}

/* Has a trailing "noreply" token. */
static bool noreply(const char *line, size_t end)
{
	return end >= 8 && memcmp(line + end - 8, " noreply", 8) == 0;
}

/*
 * One request line, without its "\r\n" (end is its length). False if it is
 * a get that stopped half way (see get()).
 */
static bool request(struct conn *c, const char *line, size_t end)
{
	const char *cmd;
	size_t n, pos = 0;
	if (!token(line, end, &pos, &cmd, &n)) {
		OUT(c, "ERROR\r\n");
		return true;
	}
	if (is(cmd, n, "get"))
		return get(c, line, end, pos, false);
	if (is(cmd, n, "gets"))
		return get(c, line, end, pos, true);
	if (is(cmd, n, "set"))
		storage(c, line, end, pos, false, c->f->store);
	else if (is(cmd, n, "add") || is(cmd, n, "replace") ||
		 is(cmd, n, "append") || is(cmd, n, "prepend"))
		storage(c, line, end, pos, false, false);
	else if (is(cmd, n, "cas"))
		storage(c, line, end, pos, true, false);
	else if (is(cmd, n, "delete")) {
		if (!noreply(line, end))
			OUT(c, "DELETED\r\n");
	} else if (is(cmd, n, "version"))
		OUT(c, "VERSION rc-floor\r\n");
	else if (is(cmd, n, "stats"))
		stats(c);
	else if (is(cmd, n, "quit"))
		c->close_after_send = true;
	else
		OUT(c, "ERROR\r\n");
	return true;
}

/*
 * Parses and answers what it can of p[0..n); returns the bytes consumed.
 * The rest is an incomplete line, or input left while paused.
 */
static size_t parse(struct conn *c, const char *p, size_t n)
{
	size_t off = 0;
	while (off < n && !c->close_after_send) {
		if (c->swallow) {
			size_t k = n - off < c->swallow ? n - off : c->swallow;
			if (c->filling) {
				struct item *it = c->filling;
				memcpy(it->data + it->klen + it->slen + c->filled,
				       p + off, k);
				c->filled += k;
			}
			off += k;
			c->swallow -= k;
			if (!c->swallow && c->filling) {
				struct item *it = c->filling;
				const char *t = it->data + it->klen + it->slen + it->vlen;
				if (memcmp(t, "\r\n", 2) == 0)
					store_put(c->f, it);
				else
					free(it); /* a bad data chunk is not kept */
				c->filling = NULL;
			}
			if (!c->swallow && c->swallow_reply)
				OUT(c, "STORED\r\n");
			continue;
		}
		if (paused(c))
			break;
		size_t avail = n - off < REQ_LINE_MAX ? n - off : REQ_LINE_MAX;
		const char *nl = memchr(p + off, '\n', avail);
		if (!nl) {
			if (avail == REQ_LINE_MAX) {
				OUT(c, "CLIENT_ERROR line too long\r\n");
				c->close_after_send = true;
			}
			break;
		}
		size_t len = (size_t)(nl - (p + off));
		size_t end = len && nl[-1] == '\r' ? len - 1 : len;
		if (!request(c, p + off, end))
			break;
		off += len + 1;
	}
	return off;
}

/* New input: parsed in place unless a carried tail must come first. */
static void take_input(struct conn *c, const char *p, size_t n)
{
	if (c->f->store)
		store_prefetch(c->f, p, n);
	if (!c->carry.len) {
		size_t k = parse(c, p, n);
		p += k;
		n -= k;
		if (!n || c->close_after_send)
			return;
	}
	if (c->carry.len + n > CARRY_MAX || buf_reserve(&c->carry, n) < 0) {
		/* a client that sends on while not reading its answers */
		c->close_after_send = true;
		return;
	}
	memcpy(c->carry.p + c->carry.len, p, n);
	c->carry.len += n;
	if (c->carry.len == n && !paused(c))
		return; /* just an incomplete line, already tried */
	size_t k = parse(c, c->carry.p, c->carry.len);
	memmove(c->carry.p, c->carry.p + k, c->carry.len - k);
	c->carry.len -= k;
}

/* ---- connections ------------------------------------------------------ */

static void arm_recv(struct conn *c)
{
	struct floor *f = c->f;
	if (c->recv_armed || c->closing || c->close_after_send || paused(c))
		return;
	struct io_uring_sqe *sqe;
	if (f->rbufs) {
		sqe = sqe_get(f);
		io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = RBUF_GROUP;
	} else {
		/* single-shot receives read into the carry buffer */
		if (buf_reserve(&c->carry, RBUF_SIZE) < 0)
			return;
		sqe = sqe_get(f);
		io_uring_prep_recv(sqe, c->fd, c->carry.p + c->carry.len,
				   c->carry.cap - c->carry.len, 0);
	}
	io_uring_sqe_set_data64(sqe, ud(c, T_RECV));
	c->recv_armed = true;
	c->recv_cancelled = false;
	c->refs++;
}

/* Stops the receive of a connection that takes no more input. */
static void stop_recv(struct conn *c)
{
	if (!c->recv_armed || c->recv_cancelled)
		return;
	struct io_uring_sqe *sqe = sqe_get(c->f);
	io_uring_prep_cancel64(sqe, ud(c, T_RECV), 0);
	io_uring_sqe_set_data64(sqe, ud(NULL, T_IGNORE));
	c->recv_cancelled = true;
}

static void conn_free(struct conn *c)
{
	struct floor *f = c->f;
	if (c->prev)
		c->prev->next = c->next;
	else
		f->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	close(c->fd);
	free(c->carry.p);
	free(c->fill.p);
	free(c->sending.p);
	free(c->filling);
	free(c);
	f->curr_conns--;
}

static void conn_close(struct conn *c)
{
	if (!c->closing) {
		c->closing = true;
		stop_recv(c);
	}
	if (!c->refs && !c->dirty)
		conn_free(c);
}

static void on_accept(struct floor *f, const struct io_uring_cqe *cqe)
{
	if (!(cqe->flags & IORING_CQE_F_MORE) && !f->stop) {
		struct io_uring_sqe *sqe = sqe_get(f);
		io_uring_prep_multishot_accept(sqe, f->lfd, NULL, NULL, SOCK_CLOEXEC);
		io_uring_sqe_set_data64(sqe, ud(f, T_ACCEPT));
	}
	if (cqe->res < 0)
		return;
	int one = 1;
	setsockopt(cqe->res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(cqe->res);
		return;
	}
	c->f = f;
	c->fd = cqe->res;
	c->next = f->conns;
	if (f->conns)
		f->conns->prev = c;
	f->conns = c;
	f->curr_conns++;
	f->total_conns++;
	arm_recv(c);
}

static void on_recv(struct conn *c, const struct io_uring_cqe *cqe)
{
	struct floor *f = c->f;
	int res = cqe->res;
	if (!(cqe->flags & IORING_CQE_F_MORE)) {
		c->recv_armed = false;
		c->refs--;
	}
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		if (res > 0 && !c->closing && !c->close_after_send)
			take_input(c, f->rbuf_mem + (size_t)bid * RBUF_SIZE,
				   (size_t)res);
		rbuf_put(f, bid);
	} else if (res > 0 && !c->closing) {
		/* single shot: the bytes landed at the end of the carry */
		c->carry.len += (size_t)res;
		size_t k = parse(c, c->carry.p, c->carry.len);
		memmove(c->carry.p, c->carry.p + k, c->carry.len - k);
		c->carry.len -= k;
	}
	if (c->closing) {
		conn_close(c);
		return;
	}
	if (res == 0 || (res < 0 && res != -ENOBUFS && res != -ECANCELED &&
			 res != -EINTR && res != -EAGAIN))
		c->close_after_send = true; /* EOF or error: answer, then go */
	mark_dirty(c);
	if (paused(c) || c->close_after_send)
		stop_recv(c);
	else
		arm_recv(c);
}

/* Sends the filled buffer if no send is in flight; true if one is. */
static bool start_send(struct conn *c)
{
	if (c->sending.len)
		return true;
	if (!c->fill.len)
		return false;
	struct buf t = c->sending;
	c->sending = c->fill;
	c->fill = t;
	c->fill.len = 0;
	c->sent = 0;
	struct io_uring_sqe *sqe = sqe_get(c->f);
	io_uring_prep_send(sqe, c->fd, c->sending.p, c->sending.len, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, ud(c, T_SEND));
	c->refs++;
	return true;
}

static void on_send(struct conn *c, const struct io_uring_cqe *cqe)
{
	c->refs--;
	if (c->closing) {
		conn_close(c);
		return;
	}
	if (cqe->res <= 0) { /* the client is gone */
		c->sending.len = 0;
		conn_close(c);
		return;
	}
	c->sent += (size_t)cqe->res;
	if (c->sent < c->sending.len) {
		/* short send: the rest before anything else */
		struct io_uring_sqe *sqe = sqe_get(c->f);
		io_uring_prep_send(sqe, c->fd, c->sending.p + c->sent,
				   c->sending.len - c->sent, MSG_NOSIGNAL);
		io_uring_sqe_set_data64(sqe, ud(c, T_SEND));
		c->refs++;
		return;
	}
	c->sending.len = 0;
	if (c->sending.cap > OUT_HIGH) { /* a burst: give its memory back */
		free(c->sending.p);
		c->sending = (struct buf){ 0 };
	}
	/* Room again: answer what waited in the carry, read on (a single-shot
	   receive in flight writes to the carry: then it has nothing to do). */
	if (c->carry.len && !paused(c) && !c->close_after_send &&
	    !(c->recv_armed && !c->f->rbufs)) {
		size_t k = parse(c, c->carry.p, c->carry.len);
		memmove(c->carry.p, c->carry.p + k, c->carry.len - k);
		c->carry.len -= k;
	}
	arm_recv(c);
	mark_dirty(c);
}

/* After the completions of a pass: one send per connection with output. */
static void flush_dirty(struct floor *f)
{
	struct conn *c;
	while ((c = f->dirty)) {
		f->dirty = c->dirty_next;
		c->dirty = false;
		if (c->closing) {
			conn_close(c);
			continue;
		}
		if (!start_send(c) && c->close_after_send)
			conn_close(c);
	}
}

/* ---- the loop --------------------------------------------------------- */

static void dispatch(struct floor *f, const struct io_uring_cqe *cqe)
{
	void *p = (void *)(uintptr_t)(cqe->user_data & ~(uint64_t)7);
	switch ((enum tag)(cqe->user_data & 7)) {
	case T_ACCEPT:
		on_accept(f, cqe);
		break;
	case T_RECV:
		on_recv(p, cqe);
		break;
	case T_SEND:
		on_send(p, cqe);
		break;
	case T_SIGNAL:
		f->stop = true;
		break;
	case T_IGNORE:
		break;
	}
}

static void run(struct floor *f)
{
	while (!f->stop) {
		struct io_uring_cqe *cqe;
		int rc = io_uring_submit_and_wait(&f->ring, 1);
		if (rc < 0 && rc != -EINTR && rc != -ETIME)
			break;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&f->ring, head, cqe) {
			dispatch(f, cqe);
			n++;
		}
		io_uring_cq_advance(&f->ring, n);
		flush_dirty(f);
	}
}

/* ---- set-up ----------------------------------------------------------- */

static int ring_init(struct floor *f, bool single)
{
	static const unsigned flag_sets[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	int rc = -EINVAL;
	for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
		struct io_uring_params p = { 0 };
		p.flags = flag_sets[i] | IORING_SETUP_CQSIZE;
		p.cq_entries = CQ_ENTRIES;
		if ((rc = io_uring_queue_init_params(RING_ENTRIES, &f->ring, &p)) == 0)
			break;
	}
	if (rc < 0 || single)
		return rc;
	/* The provided-buffer ring; without it, single-shot receives. */
	size_t ring_bytes = RBUF_COUNT * sizeof(struct io_uring_buf);
	void *ring = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void *mem = mmap(NULL, (size_t)RBUF_COUNT * RBUF_SIZE,
			 PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct io_uring_buf_reg reg = {
		.ring_addr = (uint64_t)(uintptr_t)ring,
		.ring_entries = RBUF_COUNT,
		.bgid = RBUF_GROUP,
	};
	if (ring == MAP_FAILED || mem == MAP_FAILED ||
	    io_uring_register_buf_ring(&f->ring, &reg, 0) < 0) {
		if (ring != MAP_FAILED)
			munmap(ring, ring_bytes);
		if (mem != MAP_FAILED)
			munmap(mem, (size_t)RBUF_COUNT * RBUF_SIZE);
		return 0;
	}
	f->rbufs = ring;
	f->rbuf_mem = mem;
	io_uring_buf_ring_init(f->rbufs);
	for (unsigned i = 0; i < RBUF_COUNT; i++)
		rbuf_put(f, i);
	return 0;
}

/* The listening socket on host:port; the fd or a negative errno. */
static int listen_on(const char *host, const char *port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE };
	struct addrinfo *ai;
	int rc = getaddrinfo(host, port, &hints, &ai);
	if (rc)
		return -EINVAL;
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
	    listen(fd, 1024) < 0) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
		fd = rc;
	}
	freeaddrinfo(ai);
	return fd;
}

static void usage(FILE *to)
{
	fprintf(to,
		"usage: rc-floor [-p PORT] [-l ADDR] [--value-size N] [--miss]\n"
		"  -p, --port PORT       TCP port [11211]\n"
		"  -l, --listen ADDR     address [127.0.0.1]\n"
		"  -V, --value-size N    bytes of every hit, at most %d [100]\n"
		"      --miss            answer every get with END only\n"
		"      --store           keep what sets store, answer gets from it\n"
		"      --single-shot     no provided-buffer ring (as on old kernels)\n"
		"  -t -m -U -c -u VALUE  ringcached's flags: accepted, ignored\n",
		VALUE_MAX);
}

static int setup(struct floor *f, const char *host, const char *port,
		 bool single)
{
	f->value = malloc(f->vsize + 2);
	if (!f->value)
		return -ENOMEM;
	memset(f->value, 'x', f->vsize);
	memcpy(f->value + f->vsize, "\r\n", 2);
	f->vsuffix_len = (size_t)snprintf(f->vsuffix, sizeof(f->vsuffix), " 0 %zu",
					  f->vsize);
	f->started = time(NULL);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	f->sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (f->sfd < 0)
		return -errno;
	f->lfd = listen_on(host, port);
	if (f->lfd < 0)
		return f->lfd;
	int rc = ring_init(f, single);
	if (rc < 0)
		return rc;
	struct io_uring_sqe *sqe = sqe_get(f);
	io_uring_prep_multishot_accept(sqe, f->lfd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud(f, T_ACCEPT));
	sqe = sqe_get(f);
	io_uring_prep_read(sqe, f->sfd, &f->sig, sizeof(f->sig), 0);
	io_uring_sqe_set_data64(sqe, ud(f, T_SIGNAL));
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longs[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "listen", required_argument, NULL, 'l' },
		{ "value-size", required_argument, NULL, 'V' },
		{ "miss", no_argument, NULL, 'M' },
		{ "store", no_argument, NULL, 'K' },
		{ "single-shot", no_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static struct floor fl = { .vsize = 100 };
	struct floor *f = &fl;
	bool single = false;
	const char *host = "127.0.0.1", *port = "11211";
	int o;
	while ((o = getopt_long(argc, argv, "p:l:V:t:m:U:c:u:h", longs, NULL)) != -1) {
		char *e;
		switch (o) {
		case 'p': port = optarg; break;
		case 'l': host = optarg; break;
		case 'M': f->miss = true; break;
		case 'K': f->store = true; break;
		case 'S': single = true; break;
		case 'V':
			f->vsize = strtoul(optarg, &e, 10);
			if (*e || !*optarg || f->vsize > VALUE_MAX) {
				fprintf(stderr, "rc-floor: bad --value-size '%s'\n", optarg);
				return 2;
			}
			break;
		case 't': case 'm': case 'U': case 'c': case 'u': break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (f->store && store_init(f, STORE_SLOTS0) < 0) {
		fprintf(stderr, "rc-floor: out of memory\n");
		return 1;
	}
	int rc = setup(f, host, port, single);
	if (rc < 0) {
		fprintf(stderr, "rc-floor: cannot start on %s:%s: %s\n", host, port,
			strerror(-rc));
		return 1;
	}
	run(f);
	while (f->conns)
		conn_free(f->conns);
	io_uring_queue_exit(&f->ring);
	close(f->lfd);
	close(f->sfd);
	free(f->value);
	for (size_t i = 0; f->slots && i <= f->mask; i++)
		free(f->slots[i].it);
	free(f->slots);
	return 0;
}
