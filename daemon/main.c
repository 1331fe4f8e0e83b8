/*
 * main.c - ringcached's start-up, signal handling, systemd notification and
 * shutdown.
 *
 * The main thread parses the flags, opens the listeners, starts one worker
 * per -t and then only waits: for SIGTERM/SIGINT (graceful stop) and, under a
 * systemd watchdog, for the moment to send WATCHDOG=1 - which it sends only
 * when every worker's loop has turned since the last check. Signals are
 * blocked in every thread and taken synchronously here with sigtimedwait, so
 * no handler ever runs inside a worker.
 *
 * Exit status: 0 after a clean stop, 64 for bad flags (EX_USAGE), 71
 * (EX_OSERR) when the daemon cannot start.
 */
#include <errno.h>
#include <netdb.h>
#include <sys/socket.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "daemon/config.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "daemon/notify.h"
#include "net/listen.h"
#include "net/worker.h"
#include "shard/heap.h"

#define EX_USAGE 64
#define EX_OSERR 71

static int drop_privileges(const char *user)
{
	if (getuid() != 0 && geteuid() != 0)
		return 0;
	if (!user) {
		log_msg(LOG_WARN, "running as root; use -u to drop privileges");
		return 0;
	}
	struct passwd *pw = getpwnam(user);
	if (!pw) {
		log_msg(LOG_ERR, "unknown user %s", user);
		return -EINVAL;
	}
	if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 ||
	    setuid(pw->pw_uid) < 0) {
		log_msg(LOG_ERR, "cannot switch to user %s: %s", user, strerror(errno));
		return -errno;
	}
	return 0;
}

static void write_pid_file(const char *path)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		log_msg(LOG_WARN, "cannot write pid file %s: %s", path, strerror(errno));
		return;
	}
	fprintf(f, "%ld\n", (long)getpid());
	fclose(f);
}

/* True when every worker's loop has turned since the last call. */
static bool workers_turning(struct worker_group *g, uint64_t *last)
{
	bool all = true;
	for (uint32_t i = 0; i < g->nworkers; i++) {
		uint64_t hb = atomic_load_explicit(&g->workers[i]->heartbeat,
						   memory_order_relaxed);
		if (hb == last[i])
			all = false;
		last[i] = hb;
	}
	return all;
}

/* Waits for SIGTERM or SIGINT, feeding the watchdog meanwhile. */
static void wait_for_stop(struct worker_group *g, const sigset_t *set,
			  uint64_t wd_usec)
{
	uint64_t *last = calloc(g->nworkers, sizeof(*last));
	uint64_t period_us = wd_usec ? wd_usec / 2 : 1000000;
	struct timespec ts = { .tv_sec = (time_t)(period_us / 1000000),
			       .tv_nsec = (long)(period_us % 1000000) * 1000 };
	for (;;) {
		int sig = sigtimedwait(set, NULL, &ts);
		if (sig == SIGTERM || sig == SIGINT) {
			log_msg(LOG_INFO, "signal %d: stopping", sig);
			break;
		}
		if (wd_usec && last && workers_turning(g, last))
			notify_watchdog();
	}
	free(last);
}

/* Like memcached: room for -c connections plus the daemon's own files. */
static void raise_fd_limit(uint32_t max_conns)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	rlim_t want = (rlim_t)max_conns + 64;
	if (rl.rlim_cur >= want)
		return;
	rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < want)
		log_msg(LOG_WARN, "open files limited to %lu; -c %u may not be reached",
			(unsigned long)rl.rlim_cur, max_conns);
}

/* -v: the settings and every listening socket, once, at start-up. */
static void log_settings(const struct config *cfg, const struct worker_group *g)
{
	if (!cfg->verbose)
		return;
	log_msg(LOG_INFO, "settings: -t %u -m %zu MiB -c %u -I %zu -b %d%s%s, "
		"line_max %zu, conn_buffer_max %zu, conn_mem_max %zu, "
		"metrics_port %d, verbosity %d", cfg->threads,
		cfg->mem_limit >> 20, cfg->max_conns, cfg->item_max, cfg->backlog,
		cfg->no_evict ? " -M" : "", cfg->shutdown_enabled ? " -A" : "",
		cfg->line_max, cfg->conn_arena_max, cfg->conn_mem_max,
		cfg->metrics_port, cfg->verbose);
	for (uint32_t i = 0; i < g->nlisteners; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?";
		if (g->listeners[i].is_unix) {
			log_msg(LOG_INFO, "listening on unix socket %s", cfg->unix_path);
			continue;
		}
		if (getsockname(g->listeners[i].fd, (struct sockaddr *)&ss, &len) == 0)
			getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), serv,
				    sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV);
		log_msg(LOG_INFO, "listening on %s port %s (fd %d)", host, serv,
			g->listeners[i].fd);
	}
}

static void finish_config(struct config *cfg)
{
	raise_fd_limit(cfg->max_conns);
	if (!cfg->conn_arena_max)
		cfg->conn_arena_max = 2 * cfg->item_max + (1u << 20);
	if (!cfg->conn_mem_max) {
		size_t quarter = cfg->mem_limit / 4;
		cfg->conn_mem_max = quarter > (16u << 20) ? quarter : (16u << 20);
	}
	log_set_level(cfg->verbose >= 2 ? LOG_DEBUG : LOG_INFO);
}

int main(int argc, char **argv)
{
	heap_configure(); /* allocator options, before any worker allocates */
	struct config cfg;
	config_init(&cfg);
	int rc = config_parse(&cfg, argc, argv, stdout, stderr);
	if (rc == CONFIG_EXIT_OK)
		return 0;
	if (rc < 0)
		return EX_USAGE;
	finish_config(&cfg);

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct worker_group g = { .cfg = &cfg, .nworkers = cfg.threads,
				  .started = time(NULL) };
	if (listen_open(&cfg, &g.listeners, &g.nlisteners) < 0)
		return EX_OSERR;
	log_settings(&cfg, &g);
	if (drop_privileges(cfg.user) < 0) {
		listen_close(&cfg, g.listeners, g.nlisteners);
		return EX_OSERR;
	}
	uint64_t wd_usec = 0;
	notify_watchdog_usec(&wd_usec);
	g.tick_ms = 1000;
	if (wd_usec && wd_usec / 4000 < g.tick_ms)
		g.tick_ms = wd_usec / 4000 ? (unsigned)(wd_usec / 4000) : 1;

	if (worker_start_all(&g) < 0) {
		listen_close(&cfg, g.listeners, g.nlisteners);
		return EX_OSERR;
	}
	struct metrics *metrics = NULL;
	if (metrics_start(&g, &metrics) < 0) {
		listen_shutdown(g.listeners, g.nlisteners);
		worker_stop_all(&g);
		listen_close(&cfg, g.listeners, g.nlisteners);
		return EX_OSERR;
	}
	if (cfg.pid_file)
		write_pid_file(cfg.pid_file);
	log_msg(LOG_INFO, "ready: %u threads, %zu MiB, %s port %d", cfg.threads,
		cfg.mem_limit >> 20, cfg.unix_path ? cfg.unix_path :
		cfg.listen, cfg.port);
	char status[128];
	snprintf(status, sizeof(status), "serving: %u threads, %zu MiB",
		 cfg.threads, cfg.mem_limit >> 20);
	notify_ready(status);

	wait_for_stop(&g, &set, wd_usec);

	notify_stopping();
	metrics_stop(metrics); /* it reads the workers: before they go */
	listen_shutdown(g.listeners, g.nlisteners);
	worker_stop_all(&g);
	listen_close(&cfg, g.listeners, g.nlisteners);
	if (cfg.pid_file)
		unlink(cfg.pid_file);
	log_msg(LOG_INFO, "stopped");
	return 0;
}
