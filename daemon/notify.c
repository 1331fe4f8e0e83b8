/*
 * notify.c - see notify.h. A thin layer over libsystemd's sd_notify() and
 * sd_watchdog_enabled(), which already handle NOTIFY_SOCKET's abstract and
 * path forms; keeping the calls here keeps libsystemd out of the rest.
 */
#include "daemon/notify.h"

#include <stdio.h>
#include <systemd/sd-daemon.h>

void notify_ready(const char *status)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "READY=1\nSTATUS=%s", status);
	(void)sd_notify(0, buf);
}

void notify_stopping(void)
{
	(void)sd_notify(0, "STOPPING=1\nSTATUS=stopping");
}

void notify_watchdog(void)
{
	(void)sd_notify(0, "WATCHDOG=1");
}

void notify_watchdog_usec(uint64_t *usec)
{
	uint64_t u = 0;
	if (sd_watchdog_enabled(0, &u) <= 0)
		u = 0;
	*usec = u;
}
