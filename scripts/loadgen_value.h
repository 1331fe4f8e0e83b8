/*
 * loadgen_value.h - key names, self-checking values and the expected-version
 * table of the load generator's verify mode.
 *
 * Keys are "<prefix><decimal number>", the number in [0, keys). In verify
 * mode every value starts with a header that names its key, the run and the
 * version that wrote it, and a checksum over everything else in the value:
 *
 *     <key>|<run: 8 hex>|<version: 16 hex>|<checksum: 16 hex>|<filler>
 *
 *     version  = sequence << 8 | writing thread
 *     flags    = low 32 bits of the checksum (memcached's client flags)
 *     checksum = XXH3-64(filler, seed = XXH3-64("<key>|<run>|<version>|",
 *                                                 seed = value length))
 *
 * The checksum covers the key, the run, the version, every filler byte and the
 * length. A hit is correct when the header names the requested key, parses,
 * and the checksum and the flags match: another key's value fails the key
 * test, and a torn, truncated, padded or bit-flipped value fails the
 * checksum (a random 64-bit match is the only escape). This holds however
 * many connections write the key at once.
 *
 * On top, the expected-version table says which versions a hit may carry
 * where that is unambiguous. In verify mode only thread (k % threads) writes
 * key k, and a thread's versions rise, so the thread that owns a key knows
 * every set to it. For each owned key it keeps `ceil`, the highest version
 * sent, and `floor`, a version the server's copy can no longer be older
 * than: when the oldest set of a run of overlapping sets is acknowledged
 * (STORED), every other set still in flight is newer, so nothing can bring
 * back an older value. A refused set keeps the floor where it is until the
 * overlap ends; a set lost with its connection freezes that key's floor for
 * good (the server may still apply it late). A get of an owned key
 * snapshots `floor` when it is sent; its hit must carry a version in
 * [snapshot, ceil] written by the owner in this run. A value from an
 * earlier run (another process wrote it) is accepted only while the floor
 * is still 0 (nothing of ours acknowledged). A miss is always allowed
 * (eviction). A hit of a key another thread owns gets the header, checksum
 * and writer tests only.
 *
 * The table is an array allocated by vtab_init (32 bytes per owned key) and
 * freed by vtab_deinit; only its owning thread touches it. Functions return
 * 0 or a negative errno; verdicts are their own enum.
 */
#ifndef LOADGEN_VALUE_H
#define LOADGEN_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEY_MAX 250
#define VALUE_HDR_FIXED (1 + 8 + 1 + 16 + 1 + 16 + 1)
#define VERSION_THREAD_BITS 8
#define VERSION_NONE UINT64_MAX /* get snapshot of a key we do not own */

struct value_fmt {
	const char *prefix;
	size_t prefix_len;
	uint32_t run;     /* random per process */
	unsigned threads; /* key k is written by thread k % threads */
};

/* Writes the name of key k to dst (KEY_MAX + 1 bytes); returns its length. */
size_t key_format(const struct value_fmt *f, char *dst, uint64_t k);
/* Parses a key name back into its number: 0, or -EINVAL if it is not ours. */
int key_parse(const struct value_fmt *f, const char *s, size_t len, uint64_t *k);

static inline size_t value_header_len(size_t klen)
{
	return klen + VALUE_HDR_FIXED;
}

/*
 * Writes the header of a value of `len` bytes (len >= value_header_len) for
 * key/version into hdr and returns the flags to store with it. The value is
 * the header followed by the first len - header bytes of `filler`.
 */
uint32_t value_make(const struct value_fmt *f, char *hdr, const char *key,
		    size_t klen, uint64_t version, size_t len,
		    const char *filler);

enum value_verdict {
	VALUE_OK = 0,
	VALUE_WRONG_KEY,     /* header names another key */
	VALUE_BAD_HEADER,    /* too short or does not parse */
	VALUE_BAD_CHECKSUM,  /* torn, truncated or corrupted */
	VALUE_BAD_FLAGS,     /* flags do not match the checksum */
	VALUE_WRONG_WRITER,  /* version not written by the key's owner */
	VALUE_STALE,         /* older than an acknowledged set */
	VALUE_FUTURE,        /* a version never sent for this key */
	VALUE_OLD_RUN,       /* another run's value after ours was stored */
};

struct value_info {
	uint32_t run;
	uint64_t version;
};

/* Checks the header, checksum and flags of a hit for the given key. */
enum value_verdict value_check(const char *key, size_t klen, const char *data,
			       size_t len, uint32_t flags,
			       struct value_info *out);
const char *value_verdict_str(enum value_verdict v);

struct vtab_ent {
	uint64_t floor;    /* server's copy is at least this version (0: unknown) */
	uint64_t ceil;     /* highest version sent */
	uint64_t busy_lo;  /* oldest set of the current run of overlapping sets */
	uint32_t inflight; /* sets sent, not yet answered */
	uint8_t failed;    /* a set of the current run was refused */
	uint8_t tainted;   /* a set was lost with its connection: it may still
			    * land at any time, so the floor never moves again */
};

struct vtab {
	struct vtab_ent *e; /* malloc'd, one per owned key */
	uint64_t keys;
	unsigned threads;
	unsigned owner;     /* this thread's number */
};

int vtab_init(struct vtab *t, uint64_t keys, unsigned threads, unsigned owner);
void vtab_deinit(struct vtab *t);

static inline bool vtab_owns(const struct vtab *t, uint64_t k)
{
	return t->e && k % t->threads == t->owner;
}

/* The floor a get of key k snapshots when sent (VERSION_NONE: not ours). */
static inline uint64_t vtab_floor(const struct vtab *t, uint64_t k)
{
	return vtab_owns(t, k) ? t->e[k / t->threads].floor : VERSION_NONE;
}

/*
 * A set of owned key k with this version was sent / was answered (stored or
 * refused) / was lost with its connection, unanswered.
 */
void vtab_set_sent(struct vtab *t, uint64_t k, uint64_t version);
void vtab_set_done(struct vtab *t, uint64_t k, uint64_t version, bool stored);
void vtab_set_lost(struct vtab *t, uint64_t k);

/*
 * Checks a well-formed hit of key k (value_check said VALUE_OK) against the
 * table, given the floor snapshot taken when the get was sent.
 */
enum value_verdict vtab_check(const struct vtab *t, const struct value_fmt *f,
			      uint64_t k, uint64_t floor_snap,
			      const struct value_info *vi);

#endif
