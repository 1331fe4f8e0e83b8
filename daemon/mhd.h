/*
 * mhd.h - libmicrohttpd, loaded only when the metrics endpoint is on.
 *
 * Why not link it: Debian's libmicrohttpd pulls in GnuTLS and seven more
 * libraries, 2.4 MiB of RSS in every daemon (measured: 27.1 -> 24.7 MiB at
 * -t 8 -m 16, 12 % of memcached's 21.7 there), for an endpoint that is off
 * by default. mhd_load() dlopen()s it the first time -o metrics_port asks
 * and fills `mhd` with the few entry points daemon/metrics.c calls; their
 * types come from <microhttpd.h>, so calls are checked as usual.
 *
 * Ownership: the library stays loaded until exit. Main thread only.
 * Errors: mhd_load() returns -ENOENT (logged) when the library or one of
 * its symbols is missing.
 */
#ifndef RINGCACHE_MHD_H
#define RINGCACHE_MHD_H

#include <microhttpd.h>

#define MHD_SONAME "libmicrohttpd.so.12"

struct mhd_api {
	__typeof__(MHD_start_daemon) *start_daemon;
	__typeof__(MHD_stop_daemon) *stop_daemon;
	__typeof__(MHD_create_response_from_buffer) *create_response_from_buffer;
	__typeof__(MHD_add_response_header) *add_response_header;
	__typeof__(MHD_queue_response) *queue_response;
	__typeof__(MHD_destroy_response) *destroy_response;
};

extern struct mhd_api mhd;

int mhd_load(void);

#endif
