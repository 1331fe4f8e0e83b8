/*
 * metrics.h - the Prometheus endpoint: GET /metrics on -o metrics_port,
 * served by libmicrohttpd on a thread of its own (one per -l address;
 * usually one).
 *
 * The endpoint never touches a shard and never waits on a worker: it reads
 * the copies of their counters and latency histograms that workers publish
 * at most every WORKER_PUB_MS (struct worker_pub, net/worker.h), so what it
 * shows is at most that old. Names follow memcached_exporter's
 * (memcached_commands_total{command,status}, memcached_current_items, ...),
 * so dashboards made for it work; what memcached has no counter for is
 * under ringcache_*, the latency histograms are
 * ringcache_request_duration_seconds{family}, and each shard's series carry
 * a `shard` label.
 *
 * Other paths answer 404 and other methods 405. Hostile HTTP stays bounded
 * by libmicrohttpd's limits: METRICS_CONN_MAX connections
 * (METRICS_CONN_PER_IP per address), METRICS_CONN_MEM bytes of memory per
 * connection (a longer request head is refused), and connections idle for
 * METRICS_TIMEOUT_S seconds are closed.
 *
 * Ownership: metrics_start() allocates the struct (malloc) and
 * metrics_stop() frees it; each response body is malloc'd and freed by
 * libmicrohttpd. Main thread only; the group's workers must outlive it
 * (stop it before worker_stop_all()). Errors: negative errno.
 */
#ifndef RINGCACHE_METRICS_H
#define RINGCACHE_METRICS_H

#include <stdio.h>

#include "net/worker.h"

#define METRICS_CONN_MAX 16
#define METRICS_CONN_PER_IP 8
#define METRICS_CONN_MEM (32 * 1024)
#define METRICS_TIMEOUT_S 10

struct metrics;

/* Starts serving when cfg->metrics_port is set: *out is the endpoint, or
   NULL when it is off. 0, or a negative errno when an address cannot be
   resolved or bound (nothing is left running then). */
int metrics_start(struct worker_group *g, struct metrics **out);

/* Stops the threads and frees everything; NULL is fine. */
void metrics_stop(struct metrics *m);

/* The exposition text of g's published counters into f (for tests and
   the handler). */
void metrics_write(struct worker_group *g, FILE *f);

#endif
