/*
 * loadgen.h - what the parts of rc-loadgen share: the parsed options, the
 * counters of a run, and the generator threads.
 *
 * rc-loadgen is ringcache's load generator. It speaks memcached's text
 * protocol to any compatible server over TCP or a unix socket. Each thread
 * runs its own epoll loop over its own non-blocking connections; nothing on
 * the request path is shared between threads. The main thread parses the
 * options (loadgen_opts.c), connects every socket before any thread starts
 * (so a refused connection is an error before load begins), starts the
 * threads (loadgen_worker.c), prints a progress line each second when
 * stdout is a terminal, then merges the threads' counters and histograms
 * and reports (loadgen.c).
 *
 * Ownership: struct lg_opts is filled once by opts_parse and read-only
 * afterwards; its strings point into argv. struct worker is allocated by
 * worker_create and freed by worker_destroy after its thread was joined;
 * its counters are written only by its thread, except `live`, which the
 * thread publishes with relaxed atomic stores for the progress line.
 * Errors are negative errnos; opts_parse exits with status 2 itself.
 */
#ifndef LOADGEN_H
#define LOADGEN_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "scripts/loadgen_dist.h"
#include "scripts/loadgen_hist.h"
#include "scripts/loadgen_value.h"

#define LG_NAME "rc-loadgen"
#define LG_MAX_THREADS 256 /* the thread number is 8 bits of a version */

struct lg_opts {
	const char *server;         /* as given */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	unsigned conns;             /* in total, spread over the threads */
	unsigned threads;
	unsigned pipeline;          /* requests in flight per connection */
	unsigned get_weight, set_weight;
	unsigned multiget;          /* keys per get */
	uint64_t keys;
	const char *key_prefix;
	enum dist_kind dist;
	double alpha;
	uint32_t vmin, vmax;        /* value size range, bytes */
	double rate;                /* open loop: requests/s in total; 0 = closed */
	double duration;            /* seconds */
	uint64_t requests;          /* UINT64_MAX: bounded by duration only */
	double timeout;             /* seconds to wait for replies at the end */
	bool prefill;
	bool verify;
	bool json;
	bool quiet;
	uint64_t seed;
};

/* Parses argv into o; on a bad option prints why and exits with status 2. */
void opts_parse(struct lg_opts *o, int argc, char **argv);

struct lg_stats {
	uint64_t requests;      /* answered commands (a multi-get is one) */
	uint64_t gets, sets;
	uint64_t get_keys;      /* keys asked for by gets */
	uint64_t hits, misses;
	uint64_t proto_errors;  /* replies that break the protocol */
	uint64_t server_errors; /* ERROR / CLIENT_ERROR / SERVER_ERROR / refusals */
	uint64_t conn_errors;   /* connections lost */
	uint64_t timeouts;      /* requests unanswered when the run ended */
	uint64_t unsent;        /* open loop: fell due, never sent (no room) */
	uint64_t wrong_values;  /* verify mode: hits that fail a check */
	struct hist get_lat, set_lat; /* nanoseconds */
};

void stats_init(struct lg_stats *s);
void stats_merge(struct lg_stats *dst, const struct lg_stats *src);
uint64_t stats_errors(const struct lg_stats *s); /* all but wrong values */

/* Counters a thread publishes for the progress line (relaxed atomics). */
struct lg_live {
	uint64_t requests, get_keys, hits, errors;
};

/* Read-only state every thread sees, plus the start handshake. */
struct lg_shared {
	const struct lg_opts *o;
	struct value_fmt fmt;
	struct dist dist;
	pthread_barrier_t barrier; /* threads + main: prefill done, then go */
	int64_t start_ns;          /* written by main before the second wait */
	unsigned finished;         /* threads done (atomic) */
	unsigned reported;         /* wrong values printed so far (atomic) */
};

struct worker;

/*
 * Allocates thread `id`'s state and connects its share of the connections.
 * Returns 0 or a negative errno after printing why to stderr.
 */
int worker_create(struct worker **out, unsigned id, struct lg_shared *sh);
int worker_start(struct worker *w);
void worker_join(struct worker *w);
void worker_destroy(struct worker *w);

/* Results, valid after worker_join. */
const struct lg_stats *worker_run_stats(const struct worker *w);
const struct lg_stats *worker_prefill_stats(const struct worker *w);
int64_t worker_last_reply_ns(const struct worker *w);
/* Live counters, any time, from any thread. */
void worker_live(const struct worker *w, struct lg_live *out);

int64_t lg_now_ns(void);

#endif
