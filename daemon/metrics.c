/*
 * metrics.c - the Prometheus text exposition of every worker's published
 * counters, served by libmicrohttpd; see metrics.h.
 *
 * A scrape copies each worker's struct worker_pub (taking its lock for the
 * time of a copy; the worker only ever trylocks it, so the copy can delay a
 * publication, never a request), sums them, and prints the text into a
 * memory stream that becomes the response body.
 */
#include "daemon/metrics.h"

#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include "daemon/log.h"
#include "daemon/mhd.h"

#define METRICS_ADDR_MAX 8

struct metrics {
	struct worker_group *g;
	struct MHD_Daemon *d[METRICS_ADDR_MAX];
	unsigned n;
};

/* ---- the exposition text ---------------------------------------------- */

static void head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(FILE *f, const char *name, const char *type, const char *help,
		uint64_t v)
{
	head(f, name, type, help);
	fprintf(f, "%s %llu\n", name, (unsigned long long)v);
}

#define COUNTER(f, name, help, v) one(f, name, "counter", help, v)
#define GAUGE(f, name, help, v) one(f, name, "gauge", help, v)

static void commands(FILE *f, const struct shard_stats *t, uint64_t flush)
{
	static const char *const hm[] = { "hit", "miss" };
	const struct { const char *cmd; uint64_t hit, miss; } c[] = {
		{ "get", t->get_hits, t->get_misses },
		{ "delete", t->delete_hits, t->delete_misses },
		{ "incr", t->incr_hits, t->incr_misses },
		{ "decr", t->decr_hits, t->decr_misses },
		{ "touch", t->touch_hits, t->touch_misses },
		{ "cas", t->cas_hits, t->cas_misses },
	};
	head(f, "memcached_commands_total", "counter",
	     "Total number of all requests broken down by command (get, set, etc.) and status.");
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		uint64_t v[2] = { c[i].hit, c[i].miss };
		for (int j = 0; j < 2; j++)
			fprintf(f, "memcached_commands_total{command=\"%s\",status=\"%s\"} %llu\n",
				c[i].cmd, hm[j], (unsigned long long)v[j]);
	}
	fprintf(f, "memcached_commands_total{command=\"cas\",status=\"badval\"} %llu\n",
		(unsigned long long)t->cas_badval);
	/* cmd_set counts cas commands too (as memcached's does); the
	   exporter reports set as cmd_set less every cas outcome. */
	fprintf(f, "memcached_commands_total{command=\"set\",status=\"hit\"} %llu\n",
		(unsigned long long)(t->cmd_set - t->cas_hits - t->cas_misses - t->cas_badval));
	fprintf(f, "memcached_commands_total{command=\"flush\",status=\"hit\"} %llu\n",
		(unsigned long long)flush);
}

static void histograms(FILE *f, const struct lat_set *lat)
{
	const char *name = "ringcache_request_duration_seconds";
	head(f, name, "histogram",
	     "Time from a request's parse to its reply being queued, by command family.");
	for (unsigned fam = 0; fam < LAT_NFAM; fam++) {
		const struct lat_hist *h = &lat->h[fam];
		const char *fn = lat_family_name(fam);
		/* le = 2^k - 1 us: every power of two is a bucket boundary,
		   so these counts are exact. */
		for (unsigned k = 1; k <= 25; k++) {
			uint64_t lim = (uint64_t)1 << k;
			fprintf(f, "%s_bucket{family=\"%s\",le=\"%.6f\"} %llu\n", name, fn,
				(double)(lim - 1) / 1e6,
				(unsigned long long)lat_count_below(h, lim));
		}
		fprintf(f, "%s_bucket{family=\"%s\",le=\"+Inf\"} %llu\n", name, fn,
			(unsigned long long)h->count);
		fprintf(f, "%s_sum{family=\"%s\"} %.6f\n", name, fn,
			(double)h->sum_us / 1e6);
		fprintf(f, "%s_count{family=\"%s\"} %llu\n", name, fn,
			(unsigned long long)h->count);
	}
}

/* Per-shard series: ringcache's own with label shard (0-based, as in
   `stats shards`), and memcached_exporter's per-slab-class series that have
   a value here, with label slab = shard + 1: each shard is one class in
   `stats items` and `stats slabs`, so the exporter pointed at ringcached
   shows these same series. */
static void shards(FILE *f, const struct worker_pub *p, uint32_t n)
{
	static const struct { const char *name, *type, *help; bool slab; } s[] = {
		{ "ringcache_shard_items", "gauge", "Items stored in the shard.", false },
		{ "ringcache_shard_bytes", "gauge", "Bytes of the shard's items.", false },
		{ "ringcache_shard_evictions_total", "counter", "Items the shard evicted.", false },
		{ "ringcache_shard_hits_total", "counter", "Get hits on the shard.", false },
		{ "ringcache_shard_misses_total", "counter", "Get misses on the shard.", false },
		{ "ringcache_shard_xreq_sent_total", "counter",
		  "Requests the shard's worker handed to other shards.", false },
		{ "ringcache_shard_xreq_received_total", "counter",
		  "Requests the shard executed for other workers.", false },
		{ "ringcache_shard_loop_turns_total", "counter",
		  "Passes of the shard's worker loop.", false },
		{ "memcached_slab_current_items", "gauge",
		  "Number of items currently stored in this slab class.", true },
		{ "memcached_slab_items_evicted_total", "counter",
		  "Total number of times an item had to be evicted from the LRU before it expired.",
		  true },
		{ "memcached_slab_items_reclaimed_total", "counter",
		  "Total number of items reclaimed.", true },
		/* the exporter's help texts, word for word */
		{ "memcached_slab_items_expired_unfetched_total", "counter",
		  "Total number of valid items evicted from the LRU which were never touched after being set.",
		  true },
		{ "memcached_slab_items_evicted_unfetched_total", "counter",
		  "Total nmber of items evicted and never fetched.", true },
	};
	for (size_t j = 0; j < sizeof(s) / sizeof(s[0]); j++) {
		head(f, s[j].name, s[j].type, s[j].help);
		for (uint32_t i = 0; i < n; i++) {
			const struct shard_stats *t = &p[i].shard;
			const struct worker_counters *k = &p[i].worker;
			const uint64_t v[] = { t->curr_items, t->bytes, t->evictions,
					       t->get_hits, t->get_misses, k->xreq_sent,
					       k->xreq_recv, k->loop_turns, t->curr_items,
					       t->evictions, t->reclaimed, t->expired_unfetched,
					       t->evicted_unfetched };
			_Static_assert(sizeof(v) / sizeof(v[0]) == sizeof(s) / sizeof(s[0]),
				       "a value per series");
			fprintf(f, "%s{%s=\"%u\"} %llu\n", s[j].name,
				s[j].slab ? "slab" : "shard", s[j].slab ? i + 1 : i,
				(unsigned long long)v[j]);
		}
	}
}

static void sum(const struct worker_pub *p, uint32_t n, struct shard_stats *t,
		struct worker_counters *k, struct lat_set *lat)
{
	memset(t, 0, sizeof(*t));
	memset(k, 0, sizeof(*k));
	memset(lat, 0, sizeof(*lat));
	for (uint32_t i = 0; i < n; i++) {
		const uint64_t *src = (const uint64_t *)&p[i].shard;
		uint64_t *dst = (uint64_t *)t;
		for (size_t j = 0; j < sizeof(*t) / sizeof(uint64_t); j++)
			dst[j] += src[j];
		src = (const uint64_t *)&p[i].worker;
		dst = (uint64_t *)k;
		for (size_t j = 0; j < sizeof(*k) / sizeof(uint64_t); j++)
			dst[j] += src[j];
		lat_set_merge(lat, &p[i].lat);
	}
}

static void totals(FILE *f, struct worker_group *g, const struct shard_stats *t,
		   const struct worker_counters *k)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	time_t now = time(NULL);
	/* memcached_exporter's names, types and help texts (its
	   pkg/exporter/exporter.go) for every value `stats`, `stats settings`
	   and `stats slabs` give it from ringcached. */
	GAUGE(f, "memcached_up", "Could the memcached server be reached.", 1);
	/* The exporter's one type left out: it reports uptime as a counter,
	   which `promtool check metrics` refuses without a _total suffix. */
	GAUGE(f, "memcached_uptime_seconds", "Number of seconds since the server started.",
	      (uint64_t)(now - g->started));
	GAUGE(f, "memcached_time_seconds", "current UNIX time according to the server.",
	      (uint64_t)now);
	head(f, "memcached_version", "gauge", "The version of this memcached server.");
	fprintf(f, "memcached_version{version=\"%s\"} 1\n", CONFIG_VERSION);
	head(f, "memcached_process_user_cpu_seconds_total", "counter",
	     "Accumulated user time for this process.");
	fprintf(f, "memcached_process_user_cpu_seconds_total %ld.%06ld\n",
		(long)ru.ru_utime.tv_sec, (long)ru.ru_utime.tv_usec);
	head(f, "memcached_process_system_cpu_seconds_total", "counter",
	     "Accumulated system time for this process.");
	fprintf(f, "memcached_process_system_cpu_seconds_total %ld.%06ld\n",
		(long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec);
	COUNTER(f, "memcached_read_bytes_total",
		"Total number of bytes read by this server from network.", k->bytes_read);
	COUNTER(f, "memcached_written_bytes_total",
		"Total number of bytes sent by this server to network.", k->bytes_written);
	commands(f, t, k->cmd_flush);
	GAUGE(f, "memcached_current_bytes", "Current number of bytes used to store items.",
	      t->bytes);
	GAUGE(f, "memcached_limit_bytes",
	      "Number of bytes this server is allowed to use for storage.",
	      atomic_load(&g->mem_limit));
	GAUGE(f, "memcached_current_items", "Current number of items stored by this instance.",
	      t->curr_items);
	COUNTER(f, "memcached_items_total",
		"Total number of items stored during the life of this instance.", t->total_items);
	COUNTER(f, "memcached_items_evicted_total",
		"Total number of valid items removed from cache to free memory for new items.",
		t->evictions);
	COUNTER(f, "memcached_items_reclaimed_total",
		"Total number of times an entry was stored using memory from an expired entry.",
		t->reclaimed);
	GAUGE(f, "memcached_malloced_bytes", "Number of bytes of memory allocated to slab pages.",
	      t->segment_bytes);
	GAUGE(f, "memcached_current_connections", "Current number of open connections.",
	      k->curr_connections);
	COUNTER(f, "memcached_connections_total",
		"Total number of connections opened since the server started running.",
		k->total_connections);
	COUNTER(f, "memcached_connections_rejected_total",
		"Total number of connections rejected due to hitting the memcached's -c limit in maxconns_fast mode.",
		k->rejected_connections);
	COUNTER(f, "memcached_connections_listener_disabled_total",
		"Number of times that memcached has hit its connections limit and disabled its listener.",
		k->listen_disabled);
	GAUGE(f, "memcached_max_connections", "Maximum number of clients allowed.",
	      g->cfg->max_conns);
	GAUGE(f, "ringcache_threads", "Number of worker threads.", g->nworkers);
	COUNTER(f, "ringcache_get_expired_total", "Gets that found an expired item.",
		t->get_expired);
	COUNTER(f, "ringcache_get_flushed_total", "Gets that found a flushed item.",
		t->get_flushed);
	GAUGE(f, "ringcache_hash_bytes", "Memory of the hash tables.", t->hash_bytes);
	GAUGE(f, "ringcache_segments", "Segments held, free ones included.", t->segments);
	GAUGE(f, "ringcache_segments_free", "Segments held but empty.", t->segments_free);
	GAUGE(f, "ringcache_segment_bytes", "Heap bytes of all segments.", t->segment_bytes);
	GAUGE(f, "ringcache_dead_bytes", "Bytes written, no longer live, not yet reclaimed.",
	      t->dead_bytes);
	COUNTER(f, "ringcache_segments_retired_total", "Segments retired by eviction.",
		t->segments_retired);
	COUNTER(f, "ringcache_segments_expired_total", "Segments freed whole as all expired.",
		t->segments_expired);
	COUNTER(f, "ringcache_segments_compacted_total", "Segments rewritten to shed dead bytes.",
		t->segments_compacted);
	COUNTER(f, "ringcache_items_moved_total", "Items copied forward or compacted.",
		t->items_moved);
	GAUGE(f, "ringcache_ghost_bytes", "Memory of the eviction ghost.", t->ghost_bytes);
	GAUGE(f, "ringcache_conn_buffer_bytes", "Connection memory lent now.",
	      k->conn_buffer_bytes);
	COUNTER(f, "ringcache_conn_buffer_refused_total",
		"Connection-memory allocations the budget refused.", k->conn_buffer_refused);
	COUNTER(f, "ringcache_conn_slow_closed_total",
		"Slow readers closed for the connection-memory budget.", k->conn_slow_closed);
}

void metrics_write(struct worker_group *g, FILE *f)
{
	uint32_t n = g->nworkers;
	struct worker_pub *p = calloc(n, sizeof(*p));
	struct lat_set *lat = malloc(sizeof(*lat));
	if (!p || !lat) {
		free(p);
		free(lat);
		GAUGE(f, "memcached_up", "Could the memcached server be reached.", 0);
		return;
	}
	for (uint32_t i = 0; i < n; i++)
		worker_pub_read(g->workers[i], &p[i]);
	struct shard_stats t;
	struct worker_counters k;
	sum(p, n, &t, &k, lat);
	totals(f, g, &t, &k);
	histograms(f, lat);
	shards(f, p, n);
	free(p);
	free(lat);
}

/* ---- HTTP --------------------------------------------------------------- */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status,
			     const char *text)
{
	struct MHD_Response *r = mhd.create_response_from_buffer(
		strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
	if (!r)
		return MHD_NO;
	mhd.add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		mhd.add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	enum MHD_Result rc = mhd.queue_response(conn, status, r);
	mhd.destroy_response(r);
	return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
				  const char *url, const char *method,
				  const char *version, const char *upload,
				  size_t *upload_size, void **state)
{
	(void)version;
	(void)upload;
	(void)upload_size;
	(void)state;
	struct metrics *m = cls;
	if (strcmp(url, "/metrics") != 0)
		return reply(conn, MHD_HTTP_NOT_FOUND, "not found\n");
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
	    strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	metrics_write(m->g, f);
	if (fclose(f) != 0) {
		free(buf);
		return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	}
	struct MHD_Response *r = mhd.create_response_from_buffer(len, buf,
								 MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(buf);
		return MHD_NO;
	}
	mhd.add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
				"text/plain; version=0.0.4; charset=utf-8");
	enum MHD_Result rc = mhd.queue_response(conn, MHD_HTTP_OK, r);
	mhd.destroy_response(r);
	return rc;
}

static int start_one(struct metrics *m, const char *host, int port)
{
	char portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", port);
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE }, *res;
	int rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc != 0) {
		log_msg(LOG_ERR, "metrics: cannot resolve %s: %s", host, gai_strerror(rc));
		return -EINVAL;
	}
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;
	if (res->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	struct MHD_Daemon *d = mhd.start_daemon(
		flags, (uint16_t)port, NULL, NULL, on_request, m,
		MHD_OPTION_SOCK_ADDR, res->ai_addr,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_CONN_MAX,
		MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)METRICS_CONN_PER_IP,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)METRICS_CONN_MEM,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_TIMEOUT_S,
		MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
		MHD_OPTION_END);
	freeaddrinfo(res);
	if (!d) {
		log_msg(LOG_ERR, "metrics: cannot serve on %s port %d", host, port);
		return -EADDRINUSE;
	}
	m->d[m->n++] = d;
	log_msg(LOG_INFO, "metrics: serving GET /metrics on %s port %d", host, port);
	return 0;
}

int metrics_start(struct worker_group *g, struct metrics **out)
{
	*out = NULL;
	const struct config *cfg = g->cfg;
	if (!cfg->metrics_port)
		return 0;
	if (mhd_load() < 0)
		return -ENOENT;
	struct metrics *m = calloc(1, sizeof(*m));
	char *list = strdup(cfg->listen ? cfg->listen : "127.0.0.1");
	if (!m || !list) {
		free(m);
		free(list);
		return -ENOMEM;
	}
	m->g = g;
	int rc = 0;
	char *save = NULL;
	for (char *h = strtok_r(list, ",", &save); h && rc == 0;
	     h = strtok_r(NULL, ",", &save)) {
		if (m->n == METRICS_ADDR_MAX) {
			log_msg(LOG_WARN, "metrics: only the first %d -l addresses",
				METRICS_ADDR_MAX);
			break;
		}
		rc = start_one(m, h, cfg->metrics_port);
	}
	free(list);
	if (rc < 0) {
		metrics_stop(m);
		return rc;
	}
	*out = m;
	return 0;
}

void metrics_stop(struct metrics *m)
{
	if (!m)
		return;
	for (unsigned i = 0; i < m->n; i++)
		mhd.stop_daemon(m->d[i]);
	free(m);
}
