/*
 * NAME
 *	httppool 3h
 * SUMMARY
 *	bounded pool of kept-alive HTTPS clients for resident programs
 * SYNOPSIS
 *	#include "httppool.h"
 * DESCRIPTION
 *	A resident program (m365-milter deliver mode, an LMTP service)
 *	delivers many messages, in several threads; a new TLS connection
 *	per message costs a handshake each time.  The pool keeps up to
 *	max idle struct http (http.h) between deliveries, so that the
 *	next delivery reuses their connections to Graph and to the token
 *	endpoint:
 *
 *	  h = http_pool_get(pool, conf, gen, err, errlen);
 *	  ... deliver_with(conf, h, ...) ...
 *	  http_pool_put(pool, h);
 *
 *	http_pool_get() hands out an idle client made from the same
 *	configuration generation gen (a number the caller bumps on every
 *	reload: a client of an older generation is freed instead, since
 *	ca_file, graph_url or timeouts may have changed), the most
 *	recently used first (its connection is the least likely to have
 *	been closed by the server), or a new one; it never waits.  One
 *	client is used by one thread at a time.  http_pool_put() gives it
 *	back; when max clients are already idle it is freed (its
 *	connections closed), so at most max clients, and so at most max
 *	connections per host, stay open while nothing is delivered, and
 *	at most one connection per host per concurrent delivery while
 *	messages flow.
 *
 *	Idle connections: a thread of the pool (started by
 *	http_pool_create()) closes the connections of every idle client
 *	whose last request is idle_timeout (conf->idle_timeout of the
 *	configuration it was made from) ago, also when no message comes;
 *	the client stays in the pool and connects again when next used.
 *	http_pool_idle_close() does the same at once for a caller without
 *	the timer (now < 0: every idle client, e.g. before a fork).
 *	http_pool_stats() reports clients in use and idle.
 *
 *	http_pool_free() stops the thread and frees the idle clients;
 *	every client must have been put back first.
 *
 *	The pool never resends anything: a connection that died is
 *	handled by http_perform() (see "Kept-alive connections" in
 *	http.h).
 * DIAGNOSTICS
 *	http_pool_create() returns NULL (err set) when the thread cannot
 *	be started; http_pool_get() returns NULL (err set) when libcurl
 *	cannot make a client.
 */
#ifndef M365_HTTPPOOL_H
#define M365_HTTPPOOL_H

#include <stddef.h>

#include "conf.h"
#include "http.h"

struct http_pool;

extern struct http_pool *http_pool_create(int max, char *err, size_t errlen);
extern struct http *http_pool_get(struct http_pool *, const struct conf *,
				          unsigned long gen, char *err,
				          size_t errlen);
extern void http_pool_put(struct http_pool *, struct http *);
extern int http_pool_idle_close(struct http_pool *, double now);
extern void http_pool_stats(struct http_pool *, int *in_use, int *idle);
extern void http_pool_free(struct http_pool *);

#endif
