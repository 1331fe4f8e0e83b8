/*
 * detail.c - per-prefix counters for `stats detail`; see detail.h.
 *
 * A chained hash table of prefixes (memcached's shape, 256 chains); each
 * entry holds its prefix bytes after the counters.
 */
#include "net/detail.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct detail_entry {
	struct detail_entry *next;
	uint64_t get, hit, set, del;
	size_t len;
	char prefix[];
};

int detail_init(struct detail *d, char delim)
{
	memset(d, 0, sizeof(*d));
	atomic_init(&d->on, false);
	d->delim = delim;
	d->bucket = calloc(DETAIL_BUCKETS, sizeof(*d->bucket));
	if (!d->bucket)
		return -ENOMEM;
	pthread_mutex_init(&d->lock, NULL);
	return 0;
}

void detail_deinit(struct detail *d)
{
	if (!d->bucket)
		return;
	for (size_t i = 0; i < DETAIL_BUCKETS; i++) {
		for (struct detail_entry *e = d->bucket[i], *n; e; e = n) {
			n = e->next;
			free(e);
		}
	}
	free(d->bucket);
	d->bucket = NULL;
	pthread_mutex_destroy(&d->lock);
}

void detail_set(struct detail *d, bool on)
{
	atomic_store_explicit(&d->on, on, memory_order_relaxed);
}

static uint32_t hash_of(const char *p, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 16777619u;
	return h;
}

/* The entry of key's prefix (created if need be), or NULL. Locked. */
static struct detail_entry *find(struct detail *d, const char *key,
				 size_t klen)
{
	const char *end = memchr(key, d->delim, klen);
	if (!end)
		return NULL;
	size_t n = (size_t)(end - key);
	struct detail_entry **b = &d->bucket[hash_of(key, n) % DETAIL_BUCKETS];
	for (struct detail_entry *e = *b; e; e = e->next)
		if (e->len == n && memcmp(e->prefix, key, n) == 0)
			return e;
	if (d->count >= DETAIL_MAX)
		return NULL;
	struct detail_entry *e = calloc(1, sizeof(*e) + n);
	if (!e)
		return NULL;
	memcpy(e->prefix, key, n);
	e->len = n;
	e->next = *b;
	*b = e;
	d->count++;
	return e;
}

void detail_count(struct detail *d, const char *key, size_t klen,
		  enum detail_op op, bool hit)
{
	if (!memchr(key, d->delim, klen))
		return;
	pthread_mutex_lock(&d->lock);
	struct detail_entry *e = find(d, key, klen);
	if (e) {
		switch (op) {
		case DETAIL_GET:
			e->get++;
			e->hit += hit;
			break;
		case DETAIL_SET:
			e->set++;
			break;
		case DETAIL_DEL:
			e->del++;
			break;
		}
	}
	pthread_mutex_unlock(&d->lock);
}

void detail_hit(struct detail *d, const char *key, size_t klen)
{
	if (!memchr(key, d->delim, klen))
		return;
	pthread_mutex_lock(&d->lock);
	struct detail_entry *e = find(d, key, klen);
	if (e)
		e->hit++;
	pthread_mutex_unlock(&d->lock);
}

size_t detail_dump_room(struct detail *d)
{
	pthread_mutex_lock(&d->lock);
	size_t n = d->count;
	pthread_mutex_unlock(&d->lock);
	/* "PREFIX " + 250 + four " word <20 digits>" + "\r\n" */
	return n * (7 + 250 + 4 * 26 + 2) + 5;
}

long detail_dump(struct detail *d, char *dst, size_t room)
{
	size_t o = 0;
	long rc = 0;
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < DETAIL_BUCKETS && rc == 0; i++) {
		for (struct detail_entry *e = d->bucket[i]; e; e = e->next) {
			int n = snprintf(dst + o, room - o,
					 "PREFIX %.*s get %llu hit %llu set %llu del %llu\r\n",
					 (int)e->len, e->prefix,
					 (unsigned long long)e->get,
					 (unsigned long long)e->hit,
					 (unsigned long long)e->set,
					 (unsigned long long)e->del);
			if (n < 0 || (size_t)n >= room - o) {
				rc = -ENOBUFS;
				break;
			}
			o += (size_t)n;
		}
	}
	pthread_mutex_unlock(&d->lock);
	if (rc < 0 || room - o < 6)
		return -ENOBUFS;
	memcpy(dst + o, "END\r\n", 5);
	return (long)(o + 5);
}
