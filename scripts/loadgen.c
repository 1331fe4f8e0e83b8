/*
 * loadgen.c - rc-loadgen's main: start the threads, show progress, report.
 *
 * The threads are created only after every connection is up, then meet the
 * main thread at a barrier twice: once when their prefill is done, and once
 * more after main has noted the start time and its CPU usage, so that the
 * measured phase, its clock and its CPU figure begin together. While they
 * run, main wakes every 100 ms to see whether they are done and, once a
 * second, prints a progress line if stdout is a terminal. At the end it
 * merges the threads' counters and histograms and prints them as text or
 * as one JSON object.
 *
 * The CPU figure is this process's user + system time over the measured
 * phase (getrusage), so the generator's cost per request can be compared
 * with the server's; the benchmark reads the server's from /proc.
 */
#include "scripts/loadgen.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

struct result {
	struct lg_stats run, pre;
	double seconds;      /* measured phase: start to last reply */
	double pre_seconds;
	double cpu_user, cpu_sys;
};

int64_t lg_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

void stats_init(struct lg_stats *s)
{
	memset(s, 0, sizeof(*s));
	hist_init(&s->get_lat);
	hist_init(&s->set_lat);
}

void stats_merge(struct lg_stats *d, const struct lg_stats *s)
{
	d->requests += s->requests;
	d->gets += s->gets;
	d->sets += s->sets;
	d->get_keys += s->get_keys;
	d->hits += s->hits;
	d->misses += s->misses;
	d->proto_errors += s->proto_errors;
	d->server_errors += s->server_errors;
	d->conn_errors += s->conn_errors;
	d->timeouts += s->timeouts;
	d->unsent += s->unsent;
	d->wrong_values += s->wrong_values;
	hist_merge(&d->get_lat, &s->get_lat);
	hist_merge(&d->set_lat, &s->set_lat);
}

uint64_t stats_errors(const struct lg_stats *s)
{
	return s->proto_errors + s->server_errors + s->conn_errors + s->timeouts +
	       s->unsent;
}

static double cpu_now(double *user, double *sys)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	*user = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
	*sys = (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	return *user + *sys;
}

/*
 * Every connection is a descriptor: lift the soft limit to the hard one so
 * that -c in the thousands works without a ulimit first. A failure is left
 * to show up as "cannot connect: Too many open files".
 */
static void raise_nofile(unsigned need)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)need + 64 &&
	    rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

static void progress(struct worker **w, unsigned n, int64_t start,
		     uint64_t *last_req)
{
	struct lg_live sum = { 0 }, l;
	for (unsigned i = 0; i < n; i++) {
		worker_live(w[i], &l);
		sum.requests += l.requests;
		sum.get_keys += l.get_keys;
		sum.hits += l.hits;
		sum.errors += l.errors;
	}
	double t = (double)(lg_now_ns() - start) / 1e9;
	printf("\r[%5.0f s] %10llu req/s  hits %5.1f%%  errors %llu\033[K", t,
	       (unsigned long long)(sum.requests - *last_req),
	       sum.get_keys ? 100.0 * (double)sum.hits / (double)sum.get_keys : 0.0,
	       (unsigned long long)sum.errors);
	fflush(stdout);
	*last_req = sum.requests;
}

/* Runs the threads to the end; returns 0, or 1 if they could not start. */
static int run(const struct lg_opts *o, struct result *res)
{
	struct lg_shared sh = { .o = o };
	sh.fmt = (struct value_fmt){
		.prefix = o->key_prefix,
		.prefix_len = strlen(o->key_prefix),
		.run = (uint32_t)(o->seed ^ (o->seed >> 32) ^ (uint64_t)getpid()),
		.threads = o->threads,
	};
	dist_init(&sh.dist, o->dist, o->keys, o->alpha);
	struct worker **w = calloc(o->threads, sizeof(*w));
	if (!w)
		return 1;
	int rc = 1;
	unsigned created = 0, started = 0;
	for (; created < o->threads; created++)
		if (worker_create(&w[created], created, &sh) < 0)
			goto out;
	pthread_barrier_init(&sh.barrier, NULL, o->threads + 1);
	for (; started < o->threads; started++) {
		if (worker_start(w[started]) < 0) {
			/* Cannot happen in practice; the barrier would hang. */
			fprintf(stderr, "%s: cannot start a thread\n", LG_NAME);
			exit(1);
		}
	}
	int64_t t0 = lg_now_ns();
	pthread_barrier_wait(&sh.barrier); /* prefill done */
	res->pre_seconds = (double)(lg_now_ns() - t0) / 1e9;
	double u0, s0, u1, s1;
	cpu_now(&u0, &s0);
	sh.start_ns = lg_now_ns();
	pthread_barrier_wait(&sh.barrier); /* go */

	bool live = !o->json && !o->quiet && isatty(STDOUT_FILENO);
	uint64_t last_req = 0;
	int64_t next = sh.start_ns + 1000000000ll;
	while (atomic_load_explicit((_Atomic unsigned *)&sh.finished,
				    memory_order_acquire) < o->threads) {
		sleep_ms(100);
		if (live && lg_now_ns() >= next) {
			progress(w, o->threads, sh.start_ns, &last_req);
			next += 1000000000ll;
		}
	}
	if (live)
		printf("\r\033[K");
	int64_t end = sh.start_ns;
	for (unsigned i = 0; i < o->threads; i++) {
		worker_join(w[i]);
		stats_merge(&res->run, worker_run_stats(w[i]));
		stats_merge(&res->pre, worker_prefill_stats(w[i]));
		if (worker_last_reply_ns(w[i]) > end)
			end = worker_last_reply_ns(w[i]);
	}
	cpu_now(&u1, &s1);
	res->cpu_user = u1 - u0;
	res->cpu_sys = s1 - s0;
	res->seconds = (double)(end - sh.start_ns) / 1e9;
	pthread_barrier_destroy(&sh.barrier);
	rc = 0;
out:
	for (unsigned i = 0; i < created; i++)
		worker_destroy(w[i]);
	free(w);
	return rc;
}

static double us(uint64_t ns)
{
	return (double)ns / 1000.0;
}

static double ratio(uint64_t a, uint64_t b)
{
	return b ? (double)a / (double)b : 0.0;
}

static void json_hist(const char *name, const struct hist *h, bool comma)
{
	printf("\"%s\":{\"count\":%llu,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
	       "\"p999\":%.1f,\"max\":%.1f,\"mean\":%.1f}%s",
	       name, (unsigned long long)h->count, us(hist_percentile(h, 0.50)),
	       us(hist_percentile(h, 0.90)), us(hist_percentile(h, 0.99)),
	       us(hist_percentile(h, 0.999)), us(h->max), hist_mean(h) / 1000.0,
	       comma ? "," : "");
}

static void print_json(const struct lg_opts *o, const struct result *r,
		       const struct hist *all)
{
	const struct lg_stats *s = &r->run;
	double cpu = r->cpu_user + r->cpu_sys;
	printf("{\"server\":\"");
	for (const char *p = o->server; *p; p++) { /* a path may hold anything */
		if (*p == '"' || *p == '\\')
			putchar('\\');
		putchar((unsigned char)*p < 0x20 ? '?' : *p);
	}
	printf("\",\"conns\":%u,\"threads\":%u,\"pipeline\":%u,\"ratio\":\"%u:%u\","
	       "\"multiget\":%u,\"keys\":%llu,\"dist\":\"%s\",\"alpha\":%g,"
	       "\"value_min\":%u,\"value_max\":%u,\"mode\":\"%s\",\"rate_target\":%.0f,"
	       "\"verify\":%s,",
	       o->conns, o->threads, o->pipeline, o->get_weight, o->set_weight,
	       o->multiget, (unsigned long long)o->keys,
	       o->dist == DIST_ZIPF ? "zipf" : "uniform", o->dist == DIST_ZIPF ? o->alpha : 0.0,
	       o->vmin, o->vmax, o->rate > 0 ? "open" : "closed", o->rate,
	       o->verify ? "true" : "false");
	printf("\"prefill\":{\"done\":%s,\"sets\":%llu,\"seconds\":%.3f,\"errors\":%llu,"
	       "\"wrong_values\":%llu},",
	       o->prefill ? "true" : "false", (unsigned long long)r->pre.sets,
	       r->pre_seconds, (unsigned long long)stats_errors(&r->pre),
	       (unsigned long long)r->pre.wrong_values);
	printf("\"seconds\":%.3f,\"requests\":%llu,\"rps\":%.1f,\"gets\":%llu,\"sets\":%llu,"
	       "\"get_keys\":%llu,\"hits\":%llu,\"misses\":%llu,\"hit_ratio\":%.6f,",
	       r->seconds, (unsigned long long)s->requests,
	       r->seconds > 0 ? (double)s->requests / r->seconds : 0.0,
	       (unsigned long long)s->gets, (unsigned long long)s->sets,
	       (unsigned long long)s->get_keys, (unsigned long long)s->hits,
	       (unsigned long long)s->misses, ratio(s->hits, s->get_keys));
	printf("\"errors\":%llu,\"protocol_errors\":%llu,\"server_errors\":%llu,"
	       "\"conn_errors\":%llu,\"timeouts\":%llu,\"unsent\":%llu,"
	       "\"wrong_values\":%llu,",
	       (unsigned long long)stats_errors(s), (unsigned long long)s->proto_errors,
	       (unsigned long long)s->server_errors, (unsigned long long)s->conn_errors,
	       (unsigned long long)s->timeouts, (unsigned long long)s->unsent,
	       (unsigned long long)s->wrong_values);
	printf("\"latency_us\":{");
	json_hist("all", all, true);
	json_hist("get", &s->get_lat, true);
	json_hist("set", &s->set_lat, false);
	printf("},\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,\"cpu_us_per_request\":%.3f}\n",
	       r->cpu_user, r->cpu_sys, s->requests ? cpu * 1e6 / (double)s->requests : 0.0);
}

static void print_text(const struct lg_opts *o, const struct result *r,
		       const struct hist *all)
{
	const struct lg_stats *s = &r->run;
	double cpu = r->cpu_user + r->cpu_sys;
	printf("%s: %s, %u conns, %u threads, pipeline %u, get:set %u:%u, multiget %u\n",
	       LG_NAME, o->server, o->conns, o->threads, o->pipeline, o->get_weight,
	       o->set_weight, o->multiget);
	printf("  keys %llu %s", (unsigned long long)o->keys,
	       o->dist == DIST_ZIPF ? "zipf" : "uniform");
	if (o->dist == DIST_ZIPF)
		printf(" %.3g", o->alpha);
	if (o->vmin == o->vmax)
		printf(", values %u B", o->vmin);
	else
		printf(", values %u-%u B", o->vmin, o->vmax);
	if (o->rate > 0)
		printf(", open loop at %.0f req/s", o->rate);
	else
		printf(", closed loop");
	printf("%s\n", o->verify ? ", verify" : "");
	if (o->prefill)
		printf("prefill   %llu sets in %.2f s, %llu errors\n",
		       (unsigned long long)r->pre.sets, r->pre_seconds,
		       (unsigned long long)stats_errors(&r->pre));
	printf("requests  %llu in %.2f s = %.0f req/s (gets %llu, sets %llu)\n",
	       (unsigned long long)s->requests, r->seconds,
	       r->seconds > 0 ? (double)s->requests / r->seconds : 0.0,
	       (unsigned long long)s->gets, (unsigned long long)s->sets);
	printf("hits      %llu of %llu keys asked = %.2f%%\n",
	       (unsigned long long)s->hits, (unsigned long long)s->get_keys,
	       100.0 * ratio(s->hits, s->get_keys));
	printf("errors    %llu (protocol %llu, server %llu, connection %llu, timeout %llu",
	       (unsigned long long)stats_errors(s), (unsigned long long)s->proto_errors,
	       (unsigned long long)s->server_errors, (unsigned long long)s->conn_errors,
	       (unsigned long long)s->timeouts);
	if (o->rate > 0)
		printf(", unsent %llu", (unsigned long long)s->unsent);
	printf(")\n");
	if (o->verify)
		printf("wrong     %llu values\n", (unsigned long long)s->wrong_values);
	printf("latency   p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f us\n",
	       us(hist_percentile(all, 0.50)), us(hist_percentile(all, 0.90)),
	       us(hist_percentile(all, 0.99)), us(hist_percentile(all, 0.999)),
	       us(all->max), hist_mean(all) / 1000.0);
	printf("cpu       %.2f s (user %.2f, sys %.2f) = %.2f us per request\n", cpu,
	       r->cpu_user, r->cpu_sys,
	       s->requests ? cpu * 1e6 / (double)s->requests : 0.0);
}

int main(int argc, char **argv)
{
	static struct lg_opts o;
	static struct result res;
	static struct hist all;
	opts_parse(&o, argc, argv);
	raise_nofile(o.conns + o.threads);
	stats_init(&res.run);
	stats_init(&res.pre);
	if (run(&o, &res) != 0)
		return 1;
	hist_init(&all);
	hist_merge(&all, &res.run.get_lat);
	hist_merge(&all, &res.run.set_lat);
	if (o.json)
		print_json(&o, &res, &all);
	else
		print_text(&o, &res, &all);
	uint64_t bad = stats_errors(&res.run) + stats_errors(&res.pre) +
		       res.run.wrong_values + res.pre.wrong_values;
	return bad ? 1 : 0;
}
