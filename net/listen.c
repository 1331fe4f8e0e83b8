/*
 * listen.c - see listen.h.
 *
 * TCP sockets get SO_REUSEADDR (so a restart need not wait out TIME_WAIT) but
 * not SO_REUSEPORT: a second daemon started on the same port must fail to
 * bind, not silently share it. Every worker arms its own accept on the same
 * socket, so connections spread over the workers without a hand-off.
 */
#include "net/listen.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/log.h"

#define MAX_LISTENERS 16

static int open_tcp(const char *host, int port, int backlog,
		    struct listener *out, uint32_t *n)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res;
	char portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", port);
	int rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc != 0) {
		log_msg(LOG_ERR, "cannot resolve listen address %s: %s", host,
			gai_strerror(rc));
		return -EINVAL;
	}
	int err = 0;
	for (struct addrinfo *ai = res; ai && *n < MAX_LISTENERS; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
		int one = 1;
		if (fd < 0) {
			err = -errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
		    listen(fd, backlog) < 0) {
			err = -errno;
			log_msg(LOG_ERR, "cannot listen on %s:%d: %s", host, port,
				strerror(errno));
			close(fd);
			break;
		}
		out[(*n)++] = (struct listener){ .fd = fd, .is_unix = false };
	}
	freeaddrinfo(res);
	return err;
}

static int open_unix(const char *path, unsigned mask, int backlog,
		     struct listener *out, uint32_t *n)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path)) {
		log_msg(LOG_ERR, "unix socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* Like memcached: a stale socket file from an earlier run goes. */
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	mode_t old = umask((mode_t)(~mask & 0777));
	int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc < 0 || listen(fd, backlog) < 0) {
		rc = -errno;
		log_msg(LOG_ERR, "cannot listen on %s: %s", path, strerror(errno));
		close(fd);
		return rc;
	}
	out[(*n)++] = (struct listener){ .fd = fd, .is_unix = true };
	return 0;
}

int listen_open(const struct config *cfg, struct listener **out, uint32_t *n)
{
	struct listener *l = calloc(MAX_LISTENERS, sizeof(*l));
	if (!l)
		return -ENOMEM;
	*n = 0;
	int rc = 0;
	if (cfg->unix_path) {
		rc = open_unix(cfg->unix_path, cfg->unix_mask, cfg->backlog, l, n);
	} else if (cfg->port > 0) {
		char *list = strdup(cfg->listen ? cfg->listen : "127.0.0.1");
		char *save = NULL;
		for (char *h = strtok_r(list, ",", &save); h && rc == 0;
		     h = strtok_r(NULL, ",", &save))
			rc = open_tcp(h, cfg->port, cfg->backlog, l, n);
		free(list);
	}
	if (rc == 0 && *n == 0) {
		log_msg(LOG_ERR, "nothing to listen on");
		rc = -EINVAL;
	}
	if (rc < 0) {
		listen_close(cfg, l, *n);
		return rc;
	}
	*out = l;
	return 0;
}

void listen_shutdown(struct listener *l, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		shutdown(l[i].fd, SHUT_RDWR);
}

void listen_close(const struct config *cfg, struct listener *l, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		close(l[i].fd);
		if (l[i].is_unix && cfg->unix_path)
			unlink(cfg->unix_path);
	}
	free(l);
}
