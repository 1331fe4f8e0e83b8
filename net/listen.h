/*
 * listen.h - the listening sockets: TCP on each -l address and -p port, and
 * a unix socket at -s with mode from -a.
 *
 * The main thread opens them before the workers start and closes them after
 * the workers are gone; the workers only arm accepts on them. The array is
 * malloc'd here and freed by listen_close(). Errors are negative errno, with
 * a one-line reason logged.
 */
#ifndef RINGCACHE_LISTEN_H
#define RINGCACHE_LISTEN_H

#include <stdint.h>

#include "daemon/config.h"
#include "net/worker.h"

int listen_open(const struct config *cfg, struct listener **out, uint32_t *n);
/* Stops new connections (pending accepts fail) without closing yet. */
void listen_shutdown(struct listener *l, uint32_t n);
void listen_close(const struct config *cfg, struct listener *l, uint32_t n);

#endif
