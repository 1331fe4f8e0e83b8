/*
 * config.h - ringcached's settings and the memcached-compatible command line
 * that fills them.
 *
 * One struct config holds every setting; config_parse() fills it from argv
 * (short flags as memcached spells them, plus long forms) on top of the
 * defaults of config_init(). Strings in it point into argv or are static;
 * nothing here allocates. Only the main thread calls these, before any worker
 * starts; workers read the struct afterwards and never write it.
 */
#ifndef RINGCACHE_CONFIG_H
#define RINGCACHE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_VERSION "1.6.21-ringcache-0.1.0"

struct config {
	const char *listen;     /* -l: comma-separated addresses, "127.0.0.1" */
	int port;               /* -p: TCP port, 11211; 0 turns TCP off */
	const char *unix_path;  /* -s: unix socket path, NULL for none */
	unsigned unix_mask;     /* -a: permissions of the socket, 0700 */
	uint32_t max_conns;     /* -c: 1024 */
	uint32_t threads;       /* -t: online CPUs */
	size_t mem_limit;       /* -m: bytes, 64 MiB */
	bool no_evict;          /* -M */
	size_t item_max;        /* -I: bytes, 1 MiB; accepts k/m suffixes */
	int verbose;            /* -v: 0..2 */
	const char *pid_file;   /* -P */
	const char *user;       /* -u */
	bool no_cas;            /* -C */
	int backlog;            /* -b: 1024 */
	uint32_t reqs_per_event;/* -R: 20 */
	/* Limits ringcache adds (set with -o). */
	size_t line_max;        /* -o line_max=: most bytes of a request line
				   before its newline, 2048 (get lines
				   stream, any length) */
	size_t conn_arena_max;  /* -o conn_buffer_max=: per-connection arena */
	size_t conn_mem_max;    /* -o conn_mem_max=: all connections' buffers;
				   0 until main() sets max(16m, -m / 4) */
	int metrics_port;       /* -o metrics_port=: Prometheus /metrics on
				   the -l addresses; 0 (default): off */
	bool no_lend;           /* -o lend=0: a get or set of another
				   shard's key always goes to its owner
				   (worker.h) */
	unsigned watchdog_stall;/* test builds only: stall worker 0 after N s */
	bool shutdown_enabled;  /* -A: the shutdown command stops the daemon */
	char prefix_delim;      /* -D: stats detail's prefix delimiter, ':' */
};

enum config_rc {
	CONFIG_RUN = 0,      /* start the daemon */
	CONFIG_EXIT_OK = 1,  /* -h or -V printed; exit 0 */
};

/* Fills the defaults. */
void config_init(struct config *c);

/*
 * Parses argv. Returns CONFIG_RUN or CONFIG_EXIT_OK, or -EINVAL after
 * writing a one-line message naming the bad flag to `err`.
 */
int config_parse(struct config *c, int argc, char **argv, FILE *out,
		 FILE *err);

#endif
