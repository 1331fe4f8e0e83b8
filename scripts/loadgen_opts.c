/*
 * loadgen_opts.c - rc-loadgen's command line.
 *
 * The options are one table: getopt_long's array and the --help text are
 * both generated from it, so they cannot drift apart. Every value is checked
 * strictly (the whole argument must parse, and be in range) and every
 * combination that cannot work is refused up front, because a load run that
 * silently does something else than asked wastes a benchmark. A bad command
 * line prints one line naming the option and exits with status 2.
 */
#include "scripts/loadgen.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

enum opt_id {
	OPT_SERVER = 's', OPT_CONNS = 'c', OPT_THREADS = 't', OPT_PIPELINE = 'P',
	OPT_RATIO = 'r', OPT_MULTIGET = 'm', OPT_KEYS = 'k', OPT_DIST = 'd',
	OPT_VALUE = 'v', OPT_RATE = 'R', OPT_DURATION = 'D', OPT_REQUESTS = 'n',
	OPT_QUIET = 'q', OPT_HELP = 'h',
	OPT_PREFIX = 256, OPT_TIMEOUT, OPT_PREFILL, OPT_VERIFY, OPT_JSON, OPT_SEED,
};

struct optdef {
	const char *name;
	int id;
	const char *arg;  /* NULL: a switch */
	const char *help;
};

static const struct optdef optdefs[] = {
	{ "server", OPT_SERVER, "ADDR", "host:port, [ipv6]:port, or a unix socket path\n"
					 "(anything with a '/') [127.0.0.1:11211]" },
	{ "conns", OPT_CONNS, "N", "connections in total, spread over the threads [50]" },
	{ "threads", OPT_THREADS, "N", "generator threads, one epoll loop each [1]" },
	{ "pipeline", OPT_PIPELINE, "N", "requests in flight per connection [1]" },
	{ "ratio", OPT_RATIO, "G:S", "gets to sets: 9:1, 1:1, 0:1 (sets only)... [9:1]" },
	{ "multiget", OPT_MULTIGET, "N", "keys per get request [1]" },
	{ "keys", OPT_KEYS, "N", "key space size [100000]" },
	{ "key-prefix", OPT_PREFIX, "STR", "keys are STR<number> [lg:, with --verify lgv:]" },
	{ "dist", OPT_DIST, "D", "key distribution: uniform, or zipf[:ALPHA]\n"
				 "(ALPHA > 0, default 0.99) [uniform]" },
	{ "value-size", OPT_VALUE, "N|MIN-MAX", "value bytes, fixed or uniform in a range [100]" },
	{ "rate", OPT_RATE, "N", "open loop: N requests/s in total, latency measured\n"
				 "from each request's intended send time; -P bounds\n"
				 "what is in flight per connection [closed loop]" },
	{ "duration", OPT_DURATION, "SEC", "run this long [5; 600 when -n is given]" },
	{ "requests", OPT_REQUESTS, "N", "stop after N requests in total\n"
					 "(0 with --prefill: prefill only)" },
	{ "timeout", OPT_TIMEOUT, "SEC", "at the end, wait this long for missing replies,\n"
					 "then count them as timeouts [2]" },
	{ "prefill", OPT_PREFILL, NULL, "set every key once before the run (not measured)" },
	{ "verify", OPT_VERIFY, NULL, "values carry their key, a version and a checksum;\n"
				      "every hit is checked, wrong values are counted\n"
				      "(each key is then set by one thread only)" },
	{ "json", OPT_JSON, NULL, "print the results as one JSON object" },
	{ "quiet", OPT_QUIET, NULL, "no progress line (shown only on a terminal)" },
	{ "seed", OPT_SEED, "N", "random seed [from the clock]" },
	{ "help", OPT_HELP, NULL, "this text" },
};

#define NOPTS (sizeof(optdefs) / sizeof(optdefs[0]))

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: " LG_NAME " [options]\n"
		"Load generator for memcached's text protocol (ringcached, memcached, ...).\n"
		"Reports requests/s, hit ratio, errors, wrong values (--verify) and latency\n"
		"percentiles; exits 0 when there were no errors and no wrong values, 1 when\n"
		"there were (or the server could not be reached), 2 on a bad command line.\n\n");
	for (size_t i = 0; i < NOPTS; i++) {
		const struct optdef *d = &optdefs[i];
		char head[64];
		if (d->id < 256)
			snprintf(head, sizeof(head), "  -%c, --%s%s%s", d->id, d->name,
				 d->arg ? " " : "", d->arg ? d->arg : "");
		else
			snprintf(head, sizeof(head), "      --%s%s%s", d->name,
				 d->arg ? " " : "", d->arg ? d->arg : "");
		if (strlen(head) < 27)
			fprintf(f, "%-28s", head);
		else
			fprintf(f, "%s\n%-28s", head, "");
		/* Continuation lines of the help are indented under the first. */
		for (const char *p = d->help; *p; p++) {
			fputc(*p, f);
			if (*p == '\n')
				fprintf(f, "%-28s", "");
		}
		fputc('\n', f);
	}
}

__attribute__((format(printf, 1, 2), noreturn))
static void bad(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", LG_NAME);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help'.\n", LG_NAME);
	exit(2);
}

static uint64_t num(const char *opt, const char *s, uint64_t min, uint64_t max)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (s[0] < '0' || s[0] > '9' || *end || errno || v < min || v > max)
		bad("--%s: expected an integer in %llu..%llu, got '%s'", opt,
		    (unsigned long long)min, (unsigned long long)max, s);
	return v;
}

static double real(const char *opt, const char *s, double min, double max)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || *end || errno || !isfinite(v) || v < min || v > max)
		bad("--%s: expected a number in %g..%g, got '%s'", opt, min, max, s);
	return v;
}

static void parse_ratio(struct lg_opts *o, const char *s)
{
	char buf[64];
	const char *colon = strchr(s, ':');
	if (!colon || colon - s >= (long)sizeof(buf))
		bad("--ratio: expected G:S, e.g. 9:1, got '%s'", s);
	memcpy(buf, s, (size_t)(colon - s));
	buf[colon - s] = '\0';
	o->get_weight = (unsigned)num("ratio", buf, 0, 1000000);
	o->set_weight = (unsigned)num("ratio", colon + 1, 0, 1000000);
	if (o->get_weight + o->set_weight == 0)
		bad("--ratio: gets and sets cannot both be 0");
}

static void parse_dist(struct lg_opts *o, const char *s)
{
	if (strcmp(s, "uniform") == 0) {
		o->dist = DIST_UNIFORM;
	} else if (strcmp(s, "zipf") == 0) {
		o->dist = DIST_ZIPF;
	} else if (strncmp(s, "zipf:", 5) == 0) {
		o->dist = DIST_ZIPF;
		o->alpha = real("dist", s + 5, 1e-6, 100.0);
	} else {
		bad("--dist: expected uniform or zipf[:ALPHA], got '%s'", s);
	}
}

static void parse_value_size(struct lg_opts *o, const char *s)
{
	const char *dash = strchr(s, '-');
	uint64_t max = 64u << 20;
	if (!dash) {
		o->vmin = o->vmax = (uint32_t)num("value-size", s, 0, max);
		return;
	}
	char buf[32];
	if (dash - s >= (long)sizeof(buf))
		bad("--value-size: expected N or MIN-MAX, got '%s'", s);
	memcpy(buf, s, (size_t)(dash - s));
	buf[dash - s] = '\0';
	o->vmin = (uint32_t)num("value-size", buf, 0, max);
	o->vmax = (uint32_t)num("value-size", dash + 1, 0, max);
	if (o->vmin > o->vmax)
		bad("--value-size: MIN %u is above MAX %u", o->vmin, o->vmax);
}

static void parse_server(struct lg_opts *o, const char *s)
{
	o->server = s;
	memset(&o->addr, 0, sizeof(o->addr));
	if (strchr(s, '/')) {
		struct sockaddr_un *un = (struct sockaddr_un *)&o->addr;
		if (strlen(s) >= sizeof(un->sun_path))
			bad("--server: unix socket path too long: '%s'", s);
		un->sun_family = AF_UNIX;
		strcpy(un->sun_path, s);
		o->addrlen = sizeof(*un);
		return;
	}
	char host[256];
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s || colon[1] == '\0' || colon - s >= (long)sizeof(host))
		bad("--server: expected host:port or a unix socket path, got '%s'", s);
	const char *h = s;
	size_t hlen = (size_t)(colon - s);
	if (h[0] == '[' && hlen >= 2 && h[hlen - 1] == ']') {
		h++;
		hlen -= 2;
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	num("server", colon + 1, 1, 65535);
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res;
	int rc = getaddrinfo(host, colon + 1, &hints, &res);
	if (rc != 0)
		bad("--server: cannot resolve '%s': %s", s, gai_strerror(rc));
	memcpy(&o->addr, res->ai_addr, res->ai_addrlen);
	o->addrlen = res->ai_addrlen;
	freeaddrinfo(res);
}

static void defaults(struct lg_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->conns = 50;
	o->threads = 1;
	o->pipeline = 1;
	o->get_weight = 9;
	o->set_weight = 1;
	o->multiget = 1;
	o->keys = 100000;
	o->dist = DIST_UNIFORM;
	o->alpha = 0.99;
	o->vmin = o->vmax = 100;
	o->requests = UINT64_MAX;
	o->timeout = 2.0;
	o->seed = (uint64_t)lg_now_ns();
}

/* Combinations that cannot work, found before anything connects. */
static void check(struct lg_opts *o, bool duration_set)
{
	if (o->threads > o->conns)
		bad("--threads %u is more than --conns %u: each thread needs a connection",
		    o->threads, o->conns);
	if (!duration_set)
		o->duration = o->requests == UINT64_MAX ? 5.0 : 600.0;
	if (o->requests == 0 && !o->prefill)
		bad("--requests 0 makes sense only with --prefill");
	/* Verify mode's keys are apart by default: a plain run's values there
	 * would (rightly) count as wrong. */
	if (!o->key_prefix)
		o->key_prefix = o->verify ? "lgv:" : "lg:";
	size_t plen = strlen(o->key_prefix);
	if (strpbrk(o->key_prefix, " \t\r\n|") || plen > KEY_MAX - 20)
		bad("--key-prefix: at most %d characters, no spaces, control characters or '|'",
		    KEY_MAX - 20);
	for (const char *p = o->key_prefix; *p; p++)
		if ((unsigned char)*p < 0x21 || (unsigned char)*p == 0x7f)
			bad("--key-prefix: no spaces or control characters");
	if (o->verify) {
		char name[KEY_MAX + 1];
		struct value_fmt f = { .prefix = o->key_prefix, .prefix_len = plen };
		size_t need = value_header_len(key_format(&f, name, o->keys - 1));
		if (o->vmin < need)
			bad("--verify: values must be at least %zu bytes for these keys "
			    "(key, run, version and checksum), --value-size gives %u",
			    need, o->vmin);
		if (o->keys < o->threads)
			bad("--verify: --keys must be at least --threads");
	}
}

void opts_parse(struct lg_opts *o, int argc, char **argv)
{
	struct option longopts[NOPTS + 1];
	char shortopts[2 * NOPTS + 2];
	size_t n = 0;
	shortopts[n++] = ':';
	for (size_t i = 0; i < NOPTS; i++) {
		longopts[i] = (struct option){ optdefs[i].name,
			optdefs[i].arg ? required_argument : no_argument, NULL, optdefs[i].id };
		if (optdefs[i].id < 256) {
			shortopts[n++] = (char)optdefs[i].id;
			if (optdefs[i].arg)
				shortopts[n++] = ':';
		}
	}
	shortopts[n] = '\0';
	longopts[NOPTS] = (struct option){ 0 };

	defaults(o);
	parse_server(o, "127.0.0.1:11211");
	bool duration_set = false;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		switch (c) {
		case OPT_SERVER: parse_server(o, optarg); break;
		case OPT_CONNS: o->conns = (unsigned)num("conns", optarg, 1, 100000); break;
		case OPT_THREADS: o->threads = (unsigned)num("threads", optarg, 1, LG_MAX_THREADS); break;
		case OPT_PIPELINE: o->pipeline = (unsigned)num("pipeline", optarg, 1, 4096); break;
		case OPT_RATIO: parse_ratio(o, optarg); break;
		case OPT_MULTIGET: o->multiget = (unsigned)num("multiget", optarg, 1, 1024); break;
		case OPT_KEYS: o->keys = num("keys", optarg, 1, 1000000000000ull); break;
		case OPT_PREFIX: o->key_prefix = optarg; break;
		case OPT_DIST: parse_dist(o, optarg); break;
		case OPT_VALUE: parse_value_size(o, optarg); break;
		case OPT_RATE: o->rate = real("rate", optarg, 1.0, 1e9); break;
		case OPT_DURATION:
			o->duration = real("duration", optarg, 0.001, 86400.0);
			duration_set = true;
			break;
		case OPT_REQUESTS: o->requests = num("requests", optarg, 0, UINT64_MAX - 1); break;
		case OPT_TIMEOUT: o->timeout = real("timeout", optarg, 0.0, 3600.0); break;
		case OPT_PREFILL: o->prefill = true; break;
		case OPT_VERIFY: o->verify = true; break;
		case OPT_JSON: o->json = true; break;
		case OPT_QUIET: o->quiet = true; break;
		case OPT_SEED: o->seed = num("seed", optarg, 0, UINT64_MAX); break;
		case OPT_HELP: usage(stdout); exit(0);
		case ':': bad("option '%s' needs a value", argv[optind - 1]);
		default:
			if (optopt && optopt < 256)
				bad("unknown option '-%c'", optopt);
			bad("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		bad("unexpected argument '%s'", argv[optind]);
	check(o, duration_set);
}
