/*
 * log.c - see log.h. The level is a constant after start-up, so the check
 * on the hot path is one load and one compare.
 */
#include "daemon/log.h"

#include <stdarg.h>
#include <stdio.h>

static enum log_level current = LOG_INFO;

void log_set_level(enum log_level level)
{
	current = level;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	if (level > current)
		return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "ringcached: %s: %s\n", names[level], line);
}
