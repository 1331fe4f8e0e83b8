/*
 * udata.h - the one place where io_uring user_data is packed and unpacked.
 *
 * Every submission carries a pointer to the object its completion concerns
 * (a listener, a connection, a cross-shard batch) with a tag in the low three
 * bits, which are free because every such object is at least 8-byte aligned
 * (UD_CONN carries a file descriptor there instead).
 * user_data 0 marks a completion nobody needs to see (a close, say).
 * Header-only; any thread.
 */
#ifndef RINGCACHE_UDATA_H
#define RINGCACHE_UDATA_H

#include <stdint.h>

enum ud_tag {
	UD_IGNORE = 0,   /* nothing to do */
	UD_ACCEPT = 1,   /* struct listener *: a new connection (multishot),
			    or -ETIME: the timer that arms it again after a
			    shortage (worker.c, rearm_accept) */
	UD_RECV = 2,     /* struct conn *: bytes received */
	UD_SEND = 3,     /* struct conn *: bytes sent */
	UD_MSG = 4,      /* struct xbatch *: arrived from another worker */
	UD_MSG_SENT = 5, /* struct xbatch *: our MSG_RING went out (or not) */
	UD_WAKE = 6,     /* struct worker *: its eventfd was written */
	UD_CONN = 7,     /* no pointer: an accepted fd in the upper bits, handed
			    to this worker (res >= 0) or whose hand-off failed
			    (res < 0, seen by the worker that accepted it) */
};

static inline uint64_t ud_pack(const void *p, enum ud_tag tag)
{
	return (uint64_t)(uintptr_t)p | (uint64_t)tag;
}

static inline void *ud_ptr(uint64_t ud)
{
	return (void *)(uintptr_t)(ud & ~(uint64_t)7);
}

static inline enum ud_tag ud_tag(uint64_t ud)
{
	return (enum ud_tag)(ud & 7);
}

#endif
