/*
 * notify.h - systemd's service notification (sd_notify) for ringcached.
 *
 * Under systemd (Type=notify) the daemon tells the service manager when it is
 * ready (READY=1 once every listener is open and every worker loop runs, with
 * a STATUS= line), when it begins to stop (STOPPING=1), and feeds the
 * watchdog (WATCHDOG=1) while every worker's loop is turning. Without
 * NOTIFY_SOCKET in the environment every call does nothing. Only the main
 * thread calls these. Nothing is allocated; errors are ignored, because a
 * daemon must not stop serving because its supervisor went away.
 */
#ifndef RINGCACHE_NOTIFY_H
#define RINGCACHE_NOTIFY_H

#include <stdint.h>

/* READY=1 and STATUS=<status>. */
void notify_ready(const char *status);
/* STOPPING=1. */
void notify_stopping(void);
/* WATCHDOG=1. */
void notify_watchdog(void);
/* Sets *usec to the watchdog interval systemd asked for (WATCHDOG_USEC for
   this pid), or 0 when there is no watchdog. */
void notify_watchdog_usec(uint64_t *usec);

#endif
