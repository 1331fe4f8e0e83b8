/*
 * config.c - the command line; see config.h.
 *
 * Flags are memcached's, spelled and defaulted as memcached 1.6 does, parsed
 * with getopt_long so that the long forms (--port=11211, --threads 4) work
 * too. Each flag's value is checked completely (a number must be all digits,
 * within its range); the first bad one ends parsing with a one-line message,
 * so main() exits before anything is opened or started.
 *
 * Where a memcached flag has no meaning here the choice is explicit: -U takes
 * only 0 (there is no UDP), -B takes ascii or auto (there is no binary
 * protocol), -C turns cas off in `stats settings` only... see flag_table.
 */
#include "daemon/config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

void config_init(struct config *c)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	*c = (struct config){
		.listen = "127.0.0.1",
		.port = 11211,
		.unix_mask = 0700,
		.max_conns = 1024,
		.threads = cpus > 0 ? (uint32_t)(cpus < 256 ? cpus : 256) : 1,
		.mem_limit = 64 * MIB,
		.item_max = MIB,
		.backlog = 1024,
		.reqs_per_event = 20,
		.line_max = 2048,
		.prefix_delim = ':',
	};
}

/*
 * The flag table: --help is printed from it, and getopt's tables are built
 * from it, so a flag cannot be parsed without being documented.
 */
struct flag {
	const char *lng;
	int shrt;
	int has_arg;
	const char *arg;
	const char *help;
};

static const struct flag flag_table[] = {
	{ "port", 'p', 1, "NUM", "TCP port to listen on (default 11211; 0 turns TCP off)" },
	{ "unix-socket", 's', 1, "FILE", "UNIX socket to listen on (turns TCP off)" },
	{ "unix-mask", 'a', 1, "MASK", "access mask of the UNIX socket, octal (default 0700)" },
	{ "listen", 'l', 1, "ADDR", "comma-separated addresses to listen on (default 127.0.0.1)" },
	{ "udp-port", 'U', 1, "NUM", "UDP port: only 0, UDP is not supported (default 0)" },
	{ "conn-limit", 'c', 1, "NUM", "most simultaneous connections (default 1024)" },
	{ "threads", 't', 1, "NUM", "worker threads, one shard each (default: online CPUs)" },
	{ "memory-limit", 'm', 1, "NUM", "item memory in megabytes (default 64; k/m/g suffixes)" },
	{ "disable-evictions", 'M', 0, NULL, "answer SERVER_ERROR when memory is full instead of evicting" },
	{ "max-item-size", 'I', 1, "SIZE", "largest value, k/m suffixes, 1k..1g (default 1m)" },
	{ "verbose", 'v', 0, NULL, "more logging; -vv logs each client error too" },
	{ "pidfile", 'P', 1, "FILE", "write the process id to FILE" },
	{ "user", 'u', 1, "USER", "switch to USER after opening the sockets (when root)" },
	{ "disable-cas", 'C', 0, NULL, "accepted for compatibility; cas values are always kept" },
	{ "protocol", 'B', 1, "PROTO", "ascii or auto (the binary protocol is not supported)" },
	{ "max-reqs-per-event", 'R', 1, "NUM", "accepted for compatibility (default 20)" },
	{ "listen-backlog", 'b', 1, "NUM", "listen backlog (default 1024)" },
	{ "extended", 'o', 1, "OPTS", "comma-separated: line_max=SIZE (bytes of a non-get line "
	  "before its newline, default 2048), conn_buffer_max=SIZE, conn_mem_max=SIZE (all "
	  "connections' buffers, default max(16m, -m/4)), keys_max=NUM (ignored: a get takes "
	  "any number of keys), hashpower=NUM (ignored: the table grows by itself), metrics_port=PORT (serve "
	  "Prometheus metrics at GET /metrics on the -l addresses; off by default), lend=0|1 "
	  "(a worker may serve a get from a sleeping worker's shard itself; default 1)" },
	{ "enable-shutdown", 'A', 0, NULL, "let the shutdown command stop the daemon" },
	{ "prefix-delimiter", 'D', 1, "CHAR", "key prefix delimiter of `stats detail` (default ':')" },
	{ "help", 'h', 0, NULL, "print this help and exit" },
	{ "version", 'V', 0, NULL, "print the version and exit" },
	{ NULL, 0, 0, NULL, NULL },
};

static void usage(FILE *out)
{
	fprintf(out, "ringcached %s - a memcached-compatible cache\n"
		"usage: ringcached [options]\n", CONFIG_VERSION);
	for (const struct flag *f = flag_table; f->lng; f++) {
		char left[64];
		snprintf(left, sizeof(left), "-%c, --%s%s%s", f->shrt, f->lng,
			 f->arg ? "=" : "", f->arg ? f->arg : "");
		fprintf(out, "  %-32s %s\n", left, f->help);
	}
}

/* Unsigned decimal, all digits, at most max. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	if (!*s)
		return -EINVAL;
	uint64_t v = 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		unsigned d = (unsigned)(*s - '0');
		if (v > (max - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/* A size: digits with an optional k, m or g suffix (any case); `unit`
   multiplies a number that has no suffix. */
static int parse_size(const char *s, size_t unit, size_t max, size_t *out)
{
	size_t n = strlen(s);
	size_t mul = unit;
	char buf[32];
	if (n == 0 || n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, n + 1);
	switch (buf[n - 1]) {
	case 'k': case 'K': mul = KIB; buf[--n] = 0; break;
	case 'm': case 'M': mul = MIB; buf[--n] = 0; break;
	case 'g': case 'G': mul = MIB * 1024; buf[--n] = 0; break;
	}
	uint64_t v;
	int rc = parse_u64(buf, max / mul, &v);
	if (rc < 0)
		return rc;
	*out = (size_t)v * mul;
	return 0;
}

static int bad(FILE *err, const char *flag, const char *value, const char *why)
{
	fprintf(err, "ringcached: %s%s%s: %s\n", flag, value ? " " : "",
		value ? value : "", why);
	return -EINVAL;
}

static int parse_u32(FILE *err, const char *flag, const char *s,
		     uint64_t min, uint64_t max, uint32_t *out)
{
	uint64_t v;
	if (parse_u64(s, max, &v) < 0 || v < min) {
		char why[64];
		snprintf(why, sizeof(why), "expected a number from %llu to %llu",
			 (unsigned long long)min, (unsigned long long)max);
		return bad(err, flag, s, why);
	}
	*out = (uint32_t)v;
	return 0;
}

/* One -o sub-option "name=value" (or a bare name). */
static int parse_ext_one(struct config *c, char *opt, FILE *err)
{
	char *val = strchr(opt, '=');
	if (val)
		*val++ = 0;
	uint32_t u;
	if (!strcmp(opt, "line_max") && val) {
		if (parse_size(val, 1, 16 * MIB, &c->line_max) < 0 || c->line_max < 1024)
			return bad(err, "-o line_max", val, "expected a size from 1k to 16m");
		return 0;
	}
	/* Accepted for compatibility: a get takes any number of keys. */
	if (!strcmp(opt, "keys_max") && val)
		return parse_u32(err, "-o keys_max", val, 1, 1u << 20, &u);
	if (!strcmp(opt, "conn_buffer_max") && val) {
		if (parse_size(val, 1, (size_t)4 << 30, &c->conn_arena_max) < 0 ||
		    c->conn_arena_max < 64 * KIB)
			return bad(err, "-o conn_buffer_max", val, "expected a size from 64k to 4g");
		return 0;
	}
	if (!strcmp(opt, "conn_mem_max") && val) {
		if (parse_size(val, 1, (size_t)1 << 40, &c->conn_mem_max) < 0 ||
		    c->conn_mem_max < MIB)
			return bad(err, "-o conn_mem_max", val, "expected a size from 1m to 1024g");
		return 0;
	}
	if (!strcmp(opt, "hashpower") && val)
		return parse_u32(err, "-o hashpower", val, 12, 64, &u);
	if (!strcmp(opt, "metrics_port") && val) {
		if (parse_u32(err, "-o metrics_port", val, 1, 65535, &u) < 0)
			return -EINVAL;
		c->metrics_port = (int)u;
		return 0;
	}
	if (!strcmp(opt, "lend") && val) {
		if (parse_u32(err, "-o lend", val, 0, 1, &u) < 0)
			return -EINVAL;
		c->no_lend = u == 0;
		return 0;
	}
#ifdef RINGCACHE_TEST_HOOKS
	if (!strcmp(opt, "watchdog_stall") && val)
		return parse_u32(err, "-o watchdog_stall", val, 1, 3600, &c->watchdog_stall);
#endif
	return bad(err, "-o", opt, "unknown or malformed option (known: line_max=, "
		   "keys_max=, conn_buffer_max=, conn_mem_max=, hashpower=, metrics_port=, lend=)");
}

static int parse_ext(struct config *c, const char *arg, FILE *err)
{
	char buf[512];
	if (strlen(arg) >= sizeof(buf))
		return bad(err, "-o", NULL, "option list too long");
	strcpy(buf, arg);
	char *save = NULL;
	for (char *o = strtok_r(buf, ",", &save); o; o = strtok_r(NULL, ",", &save))
		if (parse_ext_one(c, o, err) < 0)
			return -EINVAL;
	return 0;
}

/* Applies one flag. Returns 0, CONFIG_EXIT_OK, or -EINVAL. */
static int apply(struct config *c, int opt, const char *arg, FILE *out, FILE *err)
{
	uint32_t u;
	switch (opt) {
	case 'p':
		if (parse_u32(err, "-p", arg, 0, 65535, &u) < 0)
			return -EINVAL;
		c->port = (int)u;
		return 0;
	case 's': c->unix_path = arg; return 0;
	case 'a': {
		char *end;
		errno = 0;
		unsigned long m = strtoul(arg, &end, 8);
		if (!*arg || *end || errno || m > 0777)
			return bad(err, "-a", arg, "expected an octal mask up to 0777");
		c->unix_mask = (unsigned)m;
		return 0;
	}
	case 'l': c->listen = arg; return 0;
	case 'U':
		if (strcmp(arg, "0") != 0)
			return bad(err, "-U", arg, "UDP is not supported; only -U 0 is accepted");
		return 0;
	case 'c': return parse_u32(err, "-c", arg, 1, 1u << 20, &c->max_conns);
	case 't': return parse_u32(err, "-t", arg, 1, 256, &c->threads);
	case 'm':
		if (parse_size(arg, MIB, (size_t)1 << 46, &c->mem_limit) < 0 ||
		    c->mem_limit < MIB)
			return bad(err, "-m", arg, "expected megabytes, at least 1");
		return 0;
	case 'M': c->no_evict = true; return 0;
	case 'I':
		if (parse_size(arg, 1, (size_t)1 << 30, &c->item_max) < 0 ||
		    c->item_max < KIB)
			return bad(err, "-I", arg, "expected a size from 1k to 1g");
		return 0;
	case 'v': if (c->verbose < 2) c->verbose++; return 0;
	case 'P': c->pid_file = arg; return 0;
	case 'u': c->user = arg; return 0;
	case 'C': c->no_cas = true; return 0;
	case 'B':
		if (strcmp(arg, "ascii") && strcmp(arg, "auto"))
			return bad(err, "-B", arg, "only the ascii protocol is supported");
		return 0;
	case 'R': return parse_u32(err, "-R", arg, 1, 1u << 20, &c->reqs_per_event);
	case 'b':
		if (parse_u32(err, "-b", arg, 1, INT_MAX, &u) < 0)
			return -EINVAL;
		c->backlog = (int)u;
		return 0;
	case 'o': return parse_ext(c, arg, err);
	case 'A': c->shutdown_enabled = true; return 0;
	case 'D':
		/* memcached takes the first character of the argument. */
		if (!arg[0] || arg[1])
			return bad(err, "-D", arg, "expected one character");
		c->prefix_delim = arg[0];
		return 0;
	case 'h': usage(out); return CONFIG_EXIT_OK;
	case 'V': fprintf(out, "ringcached %s\n", CONFIG_VERSION); return CONFIG_EXIT_OK;
	default:
		return -EINVAL;
	}
}

int config_parse(struct config *c, int argc, char **argv, FILE *out, FILE *err)
{
	enum { N = sizeof(flag_table) / sizeof(flag_table[0]) };
	struct option longs[N];
	char shorts[2 * N + 2];
	size_t k = 0;
	shorts[k++] = ':'; /* report a missing argument as ':' */
	for (size_t i = 0; i < N; i++) {
		const struct flag *f = &flag_table[i];
		longs[i] = (struct option){ f->lng, f->has_arg, NULL, f->shrt };
		if (f->shrt) {
			shorts[k++] = (char)f->shrt;
			if (f->has_arg)
				shorts[k++] = ':';
		}
	}
	shorts[k] = 0;
	opterr = 0;
	optind = 1;
	int opt;
	while ((opt = getopt_long(argc, argv, shorts, longs, NULL)) != -1) {
		if (opt == '?' || opt == ':') {
			const char *what = argv[optind - 1];
			return bad(err, what, NULL, opt == '?' ? "unknown flag (see -h)"
							       : "needs a value");
		}
		int rc = apply(c, opt, optarg, out, err);
		if (rc != 0)
			return rc;
	}
	if (optind < argc)
		return bad(err, argv[optind], NULL, "unexpected argument (see -h)");
	if (c->item_max > c->mem_limit / c->threads)
		return bad(err, "-I", NULL, "larger than one shard's memory (-m / -t)");
	return CONFIG_RUN;
}
