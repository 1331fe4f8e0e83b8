/*
 * detail.h - `stats detail`: per key-prefix counts of gets, hits, sets and
 * deletes, as memcached keeps them (-D sets the delimiter, ':' by default;
 * a key without the delimiter is not counted).
 *
 * One table per daemon, shared by the workers: counting is off by default
 * and then costs one relaxed atomic load per request; `stats detail on`
 * turns it on and every counted request takes the table's mutex, as
 * memcached's own counting does under its stats lock. That was chosen over
 * per-worker tables because a dump must add up one prefix's counts from
 * every worker, and this is a debugging aid, not a hot path.
 *
 * Ownership: the table's entries are allocated with malloc by the thread
 * that counts first (under the mutex) and freed by detail_deinit().
 * Threads: any thread may call anything here. Errors: a prefix that
 * cannot be allocated is not counted; detail_dump returns -ENOBUFS when
 * the output does not fit its room.
 */
#ifndef RINGCACHE_DETAIL_H
#define RINGCACHE_DETAIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum detail_op { DETAIL_GET, DETAIL_SET, DETAIL_DEL };

struct detail_entry;

struct detail {
	atomic_bool on;
	char delim;
	pthread_mutex_t lock;
	struct detail_entry **bucket;  /* DETAIL_BUCKETS chains */
	size_t count;
};

#define DETAIL_BUCKETS 256
/* Most prefixes kept; more are not counted (memcached has no bound). */
#define DETAIL_MAX 100000

int detail_init(struct detail *d, char delim);
void detail_deinit(struct detail *d);

static inline bool detail_on(struct detail *d)
{
	return atomic_load_explicit(&d->on, memory_order_relaxed);
}
void detail_set(struct detail *d, bool on);

/* Counts one operation on a key (hit: a get that found it). */
void detail_count(struct detail *d, const char *key, size_t klen,
		  enum detail_op op, bool hit);
/* Counts a hit only (a get whose answer came from another worker). */
void detail_hit(struct detail *d, const char *key, size_t klen);

/* Writes the "PREFIX <p> get <n> hit <n> set <n> del <n>\r\n" lines and
   "END\r\n" into dst; the length, or -ENOBUFS if room is too small. */
long detail_dump(struct detail *d, char *dst, size_t room);
/* Bytes detail_dump needs now (an upper bound). */
size_t detail_dump_room(struct detail *d);

#endif
