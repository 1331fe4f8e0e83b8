/*
 * log.h - leveled logging to stderr (the journal, under systemd).
 *
 * Levels have fixed meanings: LOG_INFO start-up and shutdown; LOG_DEBUG a
 * client's bad input (shown with -vv); LOG_WARN a failed request; LOG_ERR a
 * failed module. Messages above the configured level are dropped before any
 * formatting. One fprintf per message, which stdio keeps whole; nothing is
 * logged per request at the default level. Any thread; the level is set once
 * at start-up before workers start.
 */
#ifndef RINGCACHE_LOG_H
#define RINGCACHE_LOG_H

enum log_level { LOG_ERR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* -v gives LOG_INFO... the default prints errors, warnings and start-up. */
void log_set_level(enum log_level level);

__attribute__((format(printf, 2, 3)))
void log_msg(enum log_level level, const char *fmt, ...);

#endif
