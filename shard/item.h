/*
 * item.h - the byte layout of one cached item inside a segment, shared by
 * seg.c and shard.c. Nothing outside shard/ includes it.
 *
 * Items are packed back to back in a segment's data (seg.h) with no
 * alignment and no padding, so every field is read and written through
 * memcpy (one unaligned load on x86-64). An item is a fixed 11-byte head,
 * then up to four optional fields, then the key, then the value as raw
 * bytes (no "\r\n"; the protocol layer adds it):
 *
 *   0     1     2           5                   11
 *   +-----+-----+-----------+-------------------+........+......+.......+.......+-----+-------+
 *   |klen |bits | vlen (24) | seq (48)          | vlen32?| cas? | flags?| exp?  | key | value |
 *   +-----+-----+-----------+-------------------+........+......+.......+.......+-----+-------+
 *                                                   4        8      4       4
 *
 *   klen     1..250; 0 marks padding (a reservation that was abandoned):
 *            the walker skips `vlen` bytes after the head.
 *   bits     ITEM_FREQ (2-bit access count, capped at 3), ITEM_FETCHED
 *            (read at least once), ITEM_HAS_CAS, ITEM_HAS_FLAGS and
 *            ITEM_HAS_EXP (the optional fields are present),
 *            ITEM_STALE and ITEM_WIN (the meta protocol's stale-while-
 *            revalidate state; kept by touch and copy-forward).
 *   vlen     the value's length; ITEM_VLEN_ESC (0xFFFFFF) means the real
 *            length is the 32-bit vlen32 field after the head. Lengths of
 *            0xFFFFFF and up take that form: only values of 16 MiB or
 *            more, which live in dedicated segments.
 *   seq      the shard's store sequence number: it orders stores for
 *            flush_all, and the cas a client sees is seq * shards +
 *            shard id + 1 (shard.c), unless the item has a cas field.
 *            2^48 stores per shard.
 *   cas      the meta protocol's explicit cas (E<token>), present only on
 *            items stored with E: gets, mg c and every compare (cas,
 *            ms/md/ma C) see it instead of the derived one. Kept by touch,
 *            copy-forward, compaction and md x; any other store (set,
 *            append, incr, md I) without E leaves it out.
 *   flags    the client's 32-bit flags, when not 0.
 *   exptime  absolute Unix seconds, when the item expires at all (always
 *            the last field: item_set_exptime() finds it from the key).
 *
 * A 20-byte key and a 100-byte value with flags 0 and no exptime take 131
 * bytes (memcached: 48-byte header + 8-byte cas + key + value + "\r\n",
 * rounded up to its slab class of 192). There is no queue link, no hash
 * and no chain pointer: the index (table.h) keeps the item's location and
 * a 20-bit tag of its hash, and the segment is the unit of eviction.
 *
 * Lifetime: an item's address is valid only inside the shard call that
 * found it; retiring or compacting a segment moves or drops its items and
 * reuses the memory (seg.h). Owner thread only.
 */
#ifndef RINGCACHE_SHARD_ITEM_H
#define RINGCACHE_SHARD_ITEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ITEM_FREQ      0x03u
#define ITEM_FETCHED   0x04u
#define ITEM_HAS_FLAGS 0x08u
#define ITEM_HAS_EXP   0x10u
#define ITEM_HAS_CAS   0x20u
#define ITEM_STALE     0x40u /* meta: invalidated (md I), answers X */
#define ITEM_WIN       0x80u /* meta: a recache win (W) was handed out */
#define ITEM_FREQ_MAX  3u

#define ITEM_HEAD      11u
#define ITEM_VLEN_ESC  0xFFFFFFu /* vlen24: a 32-bit vlen follows */
#define ITEM_SEQ_MAX   ((UINT64_C(1) << 48) - 1)

/* An item's decoded head; `data` is where the key starts. */
struct item_hdr {
	uint8_t klen;
	uint8_t bits;
	uint32_t vlen;
	uint64_t seq;
	uint64_t cas;       /* the explicit cas, if bits has ITEM_HAS_CAS */
	uint32_t flags;
	uint32_t exptime;   /* 0: never */
	uint32_t hlen;      /* bytes before the key */
};

_Static_assert(ITEM_HAS_FLAGS == 0x08 && ITEM_HAS_EXP == 0x10 &&
	       ITEM_HAS_CAS == 0x20, "item_head_len shifts these bits");

/* Bytes of the head: the fixed part, the 32-bit vlen when `big`, and the
   fields that `bits` says are present (each field's length is its bit
   shifted down: this runs for every key compared). */
static inline uint32_t item_head_len(uint8_t bits, bool big)
{
	return ITEM_HEAD + (big ? 4u : 0u) + ((bits >> 1) & 4u) +
	       ((bits >> 2) & 12u);
}

/* Where the key of the item at p starts. */
static inline uint32_t item_key_off(const char *p)
{
	uint32_t w;
	memcpy(&w, p + 1, 4); /* bits, vlen24 */
	return item_head_len((uint8_t)w, (w >> 8) == ITEM_VLEN_ESC);
}

/* The flags and exptime bits for an item with these fields. */
static inline uint8_t item_bits_for(uint32_t flags, uint32_t exptime)
{
	return (uint8_t)((flags ? ITEM_HAS_FLAGS : 0) |
			 (exptime ? ITEM_HAS_EXP : 0));
}

/* Total bytes of an item. */
static inline size_t item_size(uint8_t bits, size_t klen, size_t vlen)
{
	return item_head_len(bits, vlen >= ITEM_VLEN_ESC) + klen + vlen;
}

static inline void item_decode(const char *p, struct item_hdr *h)
{
	uint64_t w0, w1;
	memcpy(&w0, p, 8);     /* klen, bits, vlen24, seq's first bytes */
	memcpy(&w1, p + 3, 8); /* vlen24's last two bytes, seq */
	h->klen = (uint8_t)w0;
	h->bits = (uint8_t)(w0 >> 8);
	h->vlen = (uint32_t)(w0 >> 16) & ITEM_VLEN_ESC;
	h->seq = w1 >> 16;
	size_t o = ITEM_HEAD;
	if (h->vlen == ITEM_VLEN_ESC) {
		memcpy(&h->vlen, p + o, 4);
		o += 4;
	}
	h->cas = 0;
	h->flags = 0;
	h->exptime = 0;
	if (h->bits & ITEM_HAS_CAS) {
		memcpy(&h->cas, p + o, 8);
		o += 8;
	}
	if (h->bits & ITEM_HAS_FLAGS) {
		memcpy(&h->flags, p + o, 4);
		o += 4;
	}
	if (h->bits & ITEM_HAS_EXP) {
		memcpy(&h->exptime, p + o, 4);
		o += 4;
	}
	h->hlen = (uint32_t)o;
}

/* Writes a head; the HAS_FLAGS and HAS_EXP bits of h->bits must be
   item_bits_for()'s. Returns the head's length. */
static inline uint32_t item_encode(char *p, const struct item_hdr *h)
{
	uint32_t v24 = h->vlen < ITEM_VLEN_ESC ? h->vlen : ITEM_VLEN_ESC;
	p[0] = (char)h->klen;
	p[1] = (char)h->bits;
	memcpy(p + 2, &v24, 3);
	memcpy(p + 5, &h->seq, 6);
	size_t o = ITEM_HEAD;
	if (v24 == ITEM_VLEN_ESC) {
		memcpy(p + o, &h->vlen, 4);
		o += 4;
	}
	if (h->bits & ITEM_HAS_CAS) {
		memcpy(p + o, &h->cas, 8);
		o += 8;
	}
	if (h->bits & ITEM_HAS_FLAGS) {
		memcpy(p + o, &h->flags, 4);
		o += 4;
	}
	if (h->bits & ITEM_HAS_EXP) {
		memcpy(p + o, &h->exptime, 4);
		o += 4;
	}
	return (uint32_t)o;
}

static inline uint8_t item_bits(const char *p) { return (uint8_t)p[1]; }
static inline void item_set_bits(char *p, uint8_t bits) { p[1] = (char)bits; }

/* Overwrites the seq field in place. */
static inline void item_set_seq(char *p, uint64_t seq)
{
	memcpy(p + 5, &seq, 6);
}

/* Overwrites the explicit cas in place; the item must have one. */
static inline void item_set_cas(char *p, uint64_t cas)
{
	uint32_t w;
	memcpy(&w, p + 1, 4);
	memcpy(p + ITEM_HEAD + ((w >> 8) == ITEM_VLEN_ESC ? 4 : 0), &cas, 8);
}

/* Overwrites the exptime field in place; the item must have one. */
static inline void item_set_exptime(char *p, uint32_t e)
{
	memcpy(p + item_key_off(p) - 4, &e, 4);
}

/* A padding record of exactly n >= ITEM_HEAD bytes (the 32-bit vlen
   form when n - ITEM_HEAD does not fit in 24 bits). */
static inline void item_pad(char *p, size_t n)
{
	uint32_t v = (uint32_t)(n - ITEM_HEAD);
	memset(p, 0, ITEM_HEAD);
	if (v < ITEM_VLEN_ESC) {
		memcpy(p + 2, &v, 3);
		return;
	}
	v -= 4;
	memcpy(p + 2, &(uint32_t){ ITEM_VLEN_ESC }, 3);
	memcpy(p + ITEM_HEAD, &v, 4);
}

static inline bool item_is_pad(const char *p) { return p[0] == 0; }

#endif
