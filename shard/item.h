/*
 * item.h - the byte layout of one cached item inside a segment, shared by
 * seg.c and shard.c. Nothing outside shard/ includes it.
 *
 * Items are packed back to back in a segment's data (seg.h) with no
 * alignment and no padding, so every field is read and written through
 * memcpy (one unaligned load on x86-64). An item is a fixed 11-byte head,
 * then two optional 4-byte fields, then the key, then the value as raw
 * bytes (no "\r\n"; the protocol layer adds it):
 *
 *   0     1     2           5                   11
 *   +-----+-----+-----------+-------------------+.........+.........+-----+-------+
 *   |klen |bits | vlen (24) | seq (48)          | flags?  | exptime?| key | value |
 *   +-----+-----+-----------+-------------------+.........+.........+-----+-------+
 *
 *   klen     1..250; 0 marks padding (a reservation that was abandoned):
 *            the walker skips `vlen` bytes after the head.
 *   bits     ITEM_FREQ (2-bit access count, capped at 3), ITEM_FETCHED
 *            (read at least once), ITEM_HAS_FLAGS and ITEM_HAS_EXP (the
 *            optional fields are present: a zero field is left out),
 *            ITEM_BIG (vlen is 32 bits, the head is 12 bytes: only items
 *            of dedicated segments, values of 16 MiB or more),
 *            ITEM_STALE and ITEM_WIN (the meta protocol's stale-while-
 *            revalidate state; kept by touch and copy-forward).
 *   seq      the shard's store sequence number; the cas a client sees is
 *            seq * shards + shard id + 1 (shard.c). 2^48 stores per shard.
 *   flags    the client's 32-bit flags, when not 0.
 *   exptime  absolute Unix seconds, when the item expires at all.
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
#define ITEM_BIG       0x20u
#define ITEM_STALE     0x40u /* meta: invalidated (md I), answers X */
#define ITEM_WIN       0x80u /* meta: a recache win (W) was handed out */
#define ITEM_FREQ_MAX  3u

#define ITEM_HEAD      11u
#define ITEM_VLEN24_MAX ((1u << 24) - 1)
#define ITEM_SEQ_MAX   ((UINT64_C(1) << 48) - 1)

/* An item's decoded head; `data` is where the key starts. */
struct item_hdr {
	uint8_t klen;
	uint8_t bits;
	uint32_t vlen;
	uint64_t seq;
	uint32_t flags;
	uint32_t exptime;   /* 0: never */
	uint32_t hlen;      /* bytes before the key */
};

static inline uint32_t item_head_len(uint8_t bits)
{
	return ITEM_HEAD + ((bits & ITEM_BIG) ? 1u : 0u) +
	       ((bits & ITEM_HAS_FLAGS) ? 4u : 0u) +
	       ((bits & ITEM_HAS_EXP) ? 4u : 0u);
}

/* Bits for an item with these fields (frequency and fetched clear). */
static inline uint8_t item_bits_for(uint32_t vlen, uint32_t flags,
				    uint32_t exptime)
{
	return (uint8_t)((vlen > ITEM_VLEN24_MAX ? ITEM_BIG : 0) |
			 (flags ? ITEM_HAS_FLAGS : 0) |
			 (exptime ? ITEM_HAS_EXP : 0));
}

/* Total bytes of an item. */
static inline size_t item_size(uint8_t bits, size_t klen, size_t vlen)
{
	return item_head_len(bits) + klen + vlen;
}

static inline void item_decode(const char *p, struct item_hdr *h)
{
	uint64_t w0, w1;
	memcpy(&w0, p, 8);  /* klen, bits, vlen (3 or 4), seq's first bytes */
	h->klen = (uint8_t)w0;
	h->bits = (uint8_t)(w0 >> 8);
	size_t o = (h->bits & ITEM_BIG) ? 6 : 5;
	h->vlen = (h->bits & ITEM_BIG) ? (uint32_t)(w0 >> 16) :
					 (uint32_t)(w0 >> 16) & 0xFFFFFFu;
	memcpy(&w1, p + o - 2, 8); /* ends with the head's last seq byte */
	h->seq = w1 >> 16;
	o += 6;
	h->flags = 0;
	h->exptime = 0;
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

/* Writes a head; h->bits must come from item_bits_for() (plus FREQ /
   FETCHED). Returns the head's length. */
static inline uint32_t item_encode(char *p, const struct item_hdr *h)
{
	p[0] = (char)h->klen;
	p[1] = (char)h->bits;
	size_t o = 2;
	memcpy(p + o, &h->vlen, (h->bits & ITEM_BIG) ? 4 : 3);
	o += (h->bits & ITEM_BIG) ? 4 : 3;
	memcpy(p + o, &h->seq, 6);
	o += 6;
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
	memcpy(p + 2 + ((item_bits(p) & ITEM_BIG) ? 4 : 3), &seq, 6);
}

/* Overwrites the exptime field in place; the item must have one. */
static inline void item_set_exptime(char *p, uint32_t e)
{
	uint8_t b = item_bits(p);
	size_t o = item_head_len(b) - 4;
	memcpy(p + o, &e, 4);
}

/* A padding record of exactly n >= ITEM_HEAD bytes. */
static inline void item_pad(char *p, size_t n)
{
	struct item_hdr h = { .klen = 0, .bits = 0,
			      .vlen = (uint32_t)(n - ITEM_HEAD) };
	item_encode(p, &h);
}

static inline bool item_is_pad(const char *p) { return p[0] == 0; }

#endif
