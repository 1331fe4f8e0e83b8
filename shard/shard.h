/*
 * shard.h - one shard of the cache: its items, hash table, eviction, expiry
 * and counters, executing decoded storage operations.
 *
 * A shard is an instance owned by exactly one thread: the thread that called
 * shard_create() (in the daemon, worker i creates and owns shard i). Every
 * shard_* call on a shard must come from that thread; nothing here locks.
 * Another thread's request reaches a shard as a message that its owner
 * executes (see net/xmsg.h), with two exceptions: shard_read_lent() and
 * shard_store_lent(), which another thread may call while the owner lends
 * it the shard - exclusively, handed over with release/acquire
 * (net/worker.h) - since they neither allocate nor free nor move anything
 * (a lent store writes into an open segment's room only).
 *
 * Ownership: the shard creates its own mimalloc heap (mi_heap_new) and every
 * byte it allocates - segments that items are appended to (seg.h), the
 * index (table.h), the eviction ghost (ghost.h) - comes from that heap.
 * shard_destroy() releases the heap in one step. A store copies the key and
 * value into a segment: after shard_exec() returns, the shard holds no
 * pointer into the caller's memory. A read copies the value out into memory
 * the caller's sink hands it: after shard_exec() returns, the caller holds
 * no pointer into the shard. Items move inside the shard (copy-forward,
 * compaction), so no item address is valid outside the call that found it.
 *
 * The shard knows nothing of sockets or protocol text: it takes decoded
 * operations and answers with a status (enum shard_status) that the protocol
 * layer turns into reply lines. Errors are negative errno values and are never
 * mixed with those protocol outcomes.
 *
 * Time is injected: the owner calls shard_set_time() with the Unix time in
 * seconds (the worker once per loop iteration, a test whenever it likes).
 */
#ifndef RINGCACHE_SHARD_H
#define RINGCACHE_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHARD_KEY_MAX 250u
/* Relative exptimes above this many seconds are absolute Unix times. */
#define SHARD_REL_TIME_MAX (60 * 60 * 24 * 30)

enum shard_op {
	SHARD_OP_GET,     /* read: copies the value out through the sink */
	SHARD_OP_GAT,     /* read and set a new exptime (gat/gats) */
	SHARD_OP_SET,
	SHARD_OP_ADD,
	SHARD_OP_REPLACE,
	SHARD_OP_APPEND,  /* keeps flags and exptime of the existing item */
	SHARD_OP_PREPEND,
	SHARD_OP_CAS,
	SHARD_OP_TOUCH,
	SHARD_OP_DELETE,
	SHARD_OP_INCR,
	SHARD_OP_DECR,
	SHARD_OP_MGET,    /* meta get: read, or only the metadata (mflags) */
};

/*
 * Modifiers of the meta commands (shard_req.mflags); 0 for the classic
 * ones. The item head keeps two meta bits: stale (set by md/ms with I) and
 * win (a W was handed out; cleared by any store and by md I), and an item
 * written with MF_SETCAS keeps its explicit cas (item.h).
 */
#define SHARD_MF_VALUE   0x01u /* MGET: copy the value out (v) */
#define SHARD_MF_NOBUMP  0x02u /* MGET: no access count, not marked fetched */
#define SHARD_MF_TTL     0x04u /* MGET, DELETE+STALE, INCR/DECR: set exptime */
#define SHARD_MF_VIVIFY  0x08u /* MGET, INCR/DECR: create on a miss (vivify) */
#define SHARD_MF_RECACHE 0x10u /* MGET: win if TTL left < recache */
#define SHARD_MF_CAS     0x20u /* DELETE, INCR/DECR, APPEND/PREPEND: compare */
#define SHARD_MF_STALE   0x40u /* DELETE: mark stale; CAS: a lower cas stores
				  the value as stale */
#define SHARD_MF_EMPTY   0x80u /* DELETE: keep the item with an empty value */
#define SHARD_MF_META    0x100u /* any meta command: fill res->ttl, la, size */
#define SHARD_MF_SETCAS  0x200u /* E: the item this call writes gets new_cas
				   as its cas (stores, MGET and INCR/DECR
				   vivify, INCR/DECR, DELETE+STALE/EMPTY) */

/* shard_res.mbits */
#define SHARD_MB_FETCHED 0x01u /* the item had been read before this call */
#define SHARD_MB_STALE   0x02u /* X */
#define SHARD_MB_WON     0x04u /* W: this call won the recache */
#define SHARD_MB_TOKEN   0x08u /* Z: a win had been handed out before */
#define SHARD_MB_CREATED 0x10u /* vivified by this call */

/* Protocol outcomes. Never an error code. */
enum shard_status {
	SHARD_STORED,
	SHARD_NOT_STORED,
	SHARD_EXISTS,      /* cas: the item changed since it was read */
	SHARD_NOT_FOUND,   /* also a read miss */
	SHARD_HIT,         /* read: value copied through the sink */
	SHARD_DELETED,
	SHARD_TOUCHED,
	SHARD_NUMBER,      /* incr/decr: res->number holds the new value */
	SHARD_NON_NUMERIC, /* incr/decr on a value that is not a decimal u64 */
	SHARD_TOO_LARGE,   /* value (or the result of append) over item_max */
	SHARD_NO_MEMORY,   /* no room under the limit and eviction not allowed
			      or impossible */
};

/*
 * One decoded operation. Every pointer is borrowed for the duration of the
 * shard_exec() call only.
 */
struct shard_req {
	enum shard_op op;
	const char *key;
	uint8_t klen;      /* 1..SHARD_KEY_MAX */
	uint64_t hash;     /* shard_hash(key, klen), computed once by the caller */
	uint32_t flags;    /* client flags, stored opaque */
	int64_t exptime;   /* raw protocol exptime: 0 never, <0 expired now,
			      <= 30 days relative, else absolute Unix time */
	uint64_t cas;      /* SHARD_OP_CAS: the value the client read */
	uint64_t delta;    /* SHARD_OP_INCR / SHARD_OP_DECR */
	const char *value; /* store ops */
	uint32_t vlen;
	/* meta commands only (zero otherwise) */
	uint32_t mflags;   /* SHARD_MF_* */
	int64_t vivify;    /* MF_VIVIFY: raw exptime of the created item */
	int64_t recache;   /* MF_RECACHE: raw exptime; win if the item expires
			      before it */
	uint64_t initial;  /* INCR/DECR with MF_VIVIFY: the created value */
	uint64_t new_cas;  /* MF_SETCAS: the cas the written item gets */
};

struct shard_res {
	enum shard_status status;
	uint32_t flags;  /* SHARD_HIT */
	uint32_t vlen;   /* SHARD_HIT */
	uint64_t cas;    /* SHARD_HIT: the item's cas; stores: the new cas */
	uint64_t number; /* SHARD_NUMBER */
	/* meta commands: the item after the call (SHARD_HIT, stores) */
	int64_t ttl;     /* seconds left, -1 for never */
	uint32_t la;     /* seconds since the item was written or copied
			    forward, at most (its segment's age) */
	uint32_t size;   /* bytes the item takes in its segment */
	uint8_t mbits;   /* SHARD_MB_* */
};

/* What a read hands its sink before copying the value out. */
struct shard_view {
	const char *key; /* the item's key: valid only during the sink call */
	uint8_t klen;
	uint32_t flags;
	uint32_t vlen;
	uint64_t cas;
	const struct shard_res *res; /* MGET: the meta answer, filled */
};

/*
 * A read calls the sink once on a hit. The sink returns memory of at least
 * v->vlen bytes that the caller owns (an arena, an output buffer) and the
 * shard copies the value there before shard_exec() returns; or it returns
 * NULL, and shard_exec() returns -ENOBUFS without changing the item.
 */
typedef char *(*shard_sink_fn)(void *ctx, const struct shard_view *v);

struct shard_config {
	uint32_t id;        /* this shard's index, 0..count-1 */
	uint32_t count;     /* number of shards in the process (<= 256) */
	size_t mem_limit;   /* bytes of item + table memory this shard may use */
	size_t item_max;    /* largest value length accepted (-I) */
	bool no_evict;      /* -M: SHARD_NO_MEMORY instead of evicting */
};

/*
 * Counters, owned by the shard's thread. shard_stats() copies them out;
 * the caller sums the copies of all shards.
 */
struct shard_stats {
	uint64_t cmd_get, get_hits, get_misses, get_expired, get_flushed;
	uint64_t cmd_set, cmd_touch, touch_hits, touch_misses;
	uint64_t delete_hits, delete_misses;
	uint64_t incr_hits, incr_misses, decr_hits, decr_misses;
	uint64_t cas_hits, cas_misses, cas_badval;
	uint64_t curr_items, total_items, bytes;
	uint64_t evictions, evicted_unfetched, expired_unfetched, reclaimed;
	uint64_t limit_maxbytes;
	uint64_t hash_bytes;  /* memory of the hash table itself */
	uint64_t hash_is_expanding; /* 1 while the index moves to a larger
				       array (summed: the shards doing so) */
	/* the segment store (seg.h) */
	uint64_t segments;          /* segments held, free ones included */
	uint64_t segments_free;     /* held but empty (free list + spare) */
	uint64_t segment_bytes;     /* heap bytes of all segments */
	uint64_t dead_bytes;        /* written, no longer live, not reclaimed */
	uint64_t segments_retired;  /* by eviction */
	uint64_t segments_expired;  /* all items expired, freed whole */
	uint64_t segments_compacted;/* rewritten to shed dead bytes */
	uint64_t items_moved;       /* copied forward or compacted */
	uint64_t ghost_bytes;       /* memory of the eviction ghost */
	uint64_t segment_size;      /* bytes of a regular segment (a gauge:
				       callers that sum shards ignore it) */
};

struct shard;

/*
 * Creates a shard and its heap in the calling thread, which becomes its
 * owner. Returns NULL if memory or the heap cannot be had.
 */
struct shard *shard_create(const struct shard_config *cfg);

/* Frees every item, the table and the heap. The pointer is invalid after. */
void shard_destroy(struct shard *s);

/* Sets the shard's clock (Unix seconds). Time never needs to be monotonic
   for correctness, but expiry follows it. */
void shard_set_time(struct shard *s, int64_t now);

/* A get (SHARD_OP_GET) by the owner: shard_exec's, without its dispatch
   on the op. */
int shard_get(struct shard *s, const struct shard_req *req,
	      struct shard_res *res, shard_sink_fn sink, void *ctx);

/*
 * A get (SHARD_OP_GET) by a thread the owner lent the shard to: as
 * shard_exec, but what would change the shard's structure (dropping a dead
 * item it finds) is left to the owner: -EAGAIN, with nothing read or
 * counted. Advances the shard's clock to `now` if that is later.
 */
int shard_read_lent(struct shard *s, int64_t now, const struct shard_req *req,
		    struct shard_res *res, shard_sink_fn sink, void *ctx);

/*
 * A set (SHARD_OP_SET, no meta flags) by a thread the owner lent the shard
 * to: as shard_exec, when it only replaces a live item with a version that
 * fits in an open segment; anything more (a new key, a new segment,
 * eviction) is left to the owner: -EAGAIN, with nothing changed or
 * counted. Advances the shard's clock to `now` if that is later.
 */
int shard_store_lent(struct shard *s, int64_t now, const struct shard_req *req,
		     struct shard_res *res);

/*
 * Executes one operation. Returns 0 with res->status set, or a negative errno:
 * -EINVAL for a malformed request (bad key length, unknown op), -ENOBUFS when
 * the sink refused memory. Counters follow memcached's (cmd_get counts keys).
 */
int shard_exec(struct shard *s, const struct shard_req *req,
	       struct shard_res *res, shard_sink_fn sink, void *ctx);

/*
 * flush_all: raw delay as an exptime (<= 0 now). Items stored before the
 * flush moment become invisible at that moment; a flush that takes effect
 * now also frees their memory at once.
 */
void shard_flush(struct shard *s, int64_t delay);

/*
 * Bounded background work for the owner's loop: incremental table growth,
 * compaction of dead bytes, freeing of expired segments, and an expiry sweep
 * that reclaims expired items nobody touches. Does at most `budget` units of
 * each; returns true if more work is pending.
 */
bool shard_tick(struct shard *s, unsigned budget);
/* Whether background work holds memory twice (the index's old array while
   it is rebuilt, a segment being compacted): the owner should tick again
   soon rather than sleep. */
bool shard_busy(const struct shard *s);

void shard_stats(const struct shard *s, struct shard_stats *out);
/*
 * Hints: a lookup of this hash comes soon. shard_prefetch_index() starts
 * loading the hash's index slot and returns at once. shard_prefetch() reads
 * the slot (it waits for it unless shard_prefetch_index() ran a while
 * before) and starts loading the first three cache lines of the item whose
 * tag matches, without waiting for them. Neither changes anything. Many
 * index prefetches, then the item prefetches of the same hashes, then
 * their lookups let the cache misses of both overlap instead of following
 * one another.
 */
void shard_prefetch_index(const struct shard *s, uint64_t hash);
void shard_prefetch(const struct shard *s, uint64_t hash);
/* stats reset: zeroes the counters that memcached's `stats reset` zeroes. */
void shard_stats_reset(struct shard *s);

/*
 * Test hooks (no side effects): the bytes charged against mem_limit now
 * (segments + table + the charged part of the heap's
 * fragmentation, see shard.c), and whether a key is cached and live,
 * without counting it as an access.
 */
size_t shard_mem_used(const struct shard *s);
bool shard_peek(struct shard *s, const char *key, uint8_t klen);

/*
 * The integrity checker: walks every segment and every index slot and
 * checks that each index entry names a real item whose key hashes to the
 * entry's tag, that no key is indexed twice, that every item's head has
 * item.h's layout (its optional fields, the explicit cas among them, and
 * the 32-bit length form only in dedicated segments), that every
 * segment's live bytes and items are exactly those of the items the index
 * points to, that the store's sums match, and that the item count and
 * live bytes match the counters. O(items). Returns 0, or -EIO after
 * printing the first broken rule to stderr.
 */
int shard_check(struct shard *s);

/* Test hooks: the segment size this shard uses; which queue holds a key
   (0 small, 1 main, -1 none) and its access count. */
size_t shard_seg_size(const struct shard *s);
int shard_where(struct shard *s, const char *key, uint8_t klen,
		unsigned *freq);

/* The key hash (XXH3-64). Its high 32 bits route, its low bits index. */
uint64_t shard_hash(const char *key, size_t len);

/* Which of `count` shards owns a key with this hash. */
static inline uint32_t shard_route(uint64_t hash, uint32_t count)
{
	return (uint32_t)(((hash >> 32) * (uint64_t)count) >> 32);
}

/*
 * Changes the shard's memory limit at run time (cache_memlimit): what is
 * sized from the limit follows (the eviction ghost's cap, the
 * fragmentation slack; the segment size chosen at creation stays, so
 * items never need re-layout), and a lower limit evicts at once, through
 * the same path as a store, until the shard is under it. Returns 0, or
 * -EINVAL for a limit below SHARD_LIMIT_MIN.
 */
#define SHARD_LIMIT_MIN ((size_t)64 << 10)
int shard_set_limit(struct shard *s, size_t bytes);

/* One live item, as a dump sees it. key points into the shard and is
   valid only during the callback: copy it out. */
struct shard_item_info {
	const char *key;
	uint8_t klen;
	uint8_t queue;      /* 0 small, 1 main */
	bool fetched;
	uint32_t flags;
	uint32_t vlen;
	uint32_t size;      /* head + key + value bytes */
	int64_t exptime;    /* absolute Unix time, 0 never */
	uint64_t cas;
};

/* Called per live item; returns false to stop the walk (output full). */
typedef bool (*shard_dump_fn)(void *ctx, const struct shard_item_info *it);

/*
 * Walks the index from *cursor (0 to start), looking at no more than
 * `max_slots` slots per call, and calls fn for each live item. Returns
 * the slots looked at; *cursor is where the next call goes on, and
 * SIZE_MAX once the walk is over (or fn stopped it). Between calls items
 * may be stored, moved, evicted and the index may grow, so a walk over
 * several calls may repeat or miss items that changed meanwhile, and when
 * the index finishes a growth between two calls the walk goes on in the
 * new array at the same slot number and may repeat or miss a stretch
 * (memcached's dumps are not consistent either). While nothing is stored
 * or deleted and no growth ends, a walk sees every item exactly once; one
 * call sees a consistent index.
 */
size_t shard_dump(struct shard *s, size_t *cursor, size_t max_slots,
		  shard_dump_fn fn, void *ctx);

#endif
