/*
 * NAME
 *	httppool 3
 * SUMMARY
 *	bounded pool of kept-alive HTTPS clients for resident programs
 * DESCRIPTION
 *	See httppool.h.  A list of entries (client, generation, busy) under
 *	one mutex; the timer thread sleeps on a condition variable (clock
 *	CLOCK_MONOTONIC, like time_mono()) until the earliest idle
 *	deadline of an idle client, or until a client is put back or the
 *	pool is freed.  Closing connections (curl_easy_cleanup(): a TLS
 *	close_notify and a FIN per connection) happens outside the mutex
 *	on a client marked busy, so get/put never wait for it.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "httppool.h"
#include "log.h"
#include "util.h"
#include "xalloc.h"

struct http_pool_ent {
    struct http *http;
    unsigned long gen;			/* configuration it was made from */
    int     busy;			/* handed out, or being closed */
    double  put_at;			/* time_mono() of the last put */
    struct http_pool_ent *next;
};

struct http_pool {
    pthread_mutex_t lock;
    pthread_cond_t wake;		/* timer thread: something changed */
    pthread_t timer;
    int     stop;
    int     max;			/* idle clients kept */
    unsigned long gen;			/* newest generation seen */
    struct http_pool_ent *ents;		/* newest put first */
};

/* http_pool_unlink - take one entry off the list; the caller frees it */

static void http_pool_unlink(struct http_pool *p, struct http_pool_ent *e)
{
    struct http_pool_ent **pp;

    for (pp = &p->ents; *pp; pp = &(*pp)->next) {
	if (*pp == e) {
	    *pp = e->next;
	    return;
	}
    }
}

/* http_pool_count - idle and busy entries */

static void http_pool_count(struct http_pool *p, int *busy, int *idle)
{
    struct http_pool_ent *e;

    *busy = *idle = 0;
    for (e = p->ents; e; e = e->next)
	(*(e->busy ? busy : idle))++;
}

/*
 * http_pool_close_due - close the connections of idle clients whose
 * deadline is at or before now (now < 0: all); returns how many.  Called
 * with the lock held; drops it around each close.
 */
static int http_pool_close_due(struct http_pool *p, double now)
{
    struct http_pool_ent *e;
    double  dl;
    int     closed = 0, again = 1;

    while (again) {
	again = 0;
	for (e = p->ents; e; e = e->next) {
	    if (e->busy || (dl = http_idle_deadline(e->http)) <= 0
		|| (now >= 0 && dl > now))
		continue;
	    e->busy = 1;
	    pthread_mutex_unlock(&p->lock);
	    closed += http_idle_close(e->http, now);
	    pthread_mutex_lock(&p->lock);
	    e->busy = 0;
	    again = 1;			/* the list may have changed */
	    break;
	}
    }
    return (closed);
}

/* http_pool_timer - thread: close idle connections when they are due */

static void *http_pool_timer(void *arg)
{
    struct http_pool *p = arg;
    struct http_pool_ent *e;
    struct timespec ts;
    double  next, dl, now;

    pthread_mutex_lock(&p->lock);
    while (!p->stop) {
	now = time_mono();
	(void) http_pool_close_due(p, now);
	next = 0;
	for (e = p->ents; e; e = e->next)
	    if (!e->busy && (dl = http_idle_deadline(e->http)) > 0
		&& (next == 0 || dl < next))
		next = dl;
	if (p->stop)
	    break;
	if (next == 0) {
	    pthread_cond_wait(&p->wake, &p->lock);
	} else {
	    /* A little late rather than early: one wake-up per close. */
	    next += 0.01;
	    ts.tv_sec = (time_t) next;
	    ts.tv_nsec = (long) ((next - (double) ts.tv_sec) * 1e9);
	    (void) pthread_cond_timedwait(&p->wake, &p->lock, &ts);
	}
    }
    pthread_mutex_unlock(&p->lock);
    return (NULL);
}

/* http_pool_create - empty pool keeping up to max idle clients */

struct http_pool *http_pool_create(int max, char *err, size_t errlen)
{
    struct http_pool *p = xcalloc(1, sizeof(*p));
    pthread_condattr_t ca;
    int     rc;

    p->max = max < 1 ? 1 : max;
    pthread_mutex_init(&p->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->wake, &ca);
    pthread_condattr_destroy(&ca);
    if ((rc = pthread_create(&p->timer, NULL, http_pool_timer, p)) != 0) {
	snprintf(err, errlen, "cannot start the thread that closes idle "
		 "connections: %s", strerror(rc));
	pthread_cond_destroy(&p->wake);
	pthread_mutex_destroy(&p->lock);
	free(p);
	return (NULL);
    }
    return (p);
}

/* http_pool_get - an idle client of generation gen, or a new one */

struct http *http_pool_get(struct http_pool *p, const struct conf *conf,
			           unsigned long gen, char *err, size_t errlen)
{
    struct http_pool_ent *e, *stale = NULL, *next;
    struct http *h = NULL;
    int     tried = 0;

    pthread_mutex_lock(&p->lock);
    if (gen > p->gen)
	p->gen = gen;
    for (e = p->ents; e; e = next) {
	next = e->next;
	if (e->busy)
	    continue;
	if (e->gen != p->gen) {
	    /* Made from an older configuration: free it below. */
	    http_pool_unlink(p, e);
	    e->next = stale;
	    stale = e;
	} else if (h == NULL && e->gen == gen) {
	    e->busy = 1;
	    h = e->http;
	}
    }
    if (h == NULL && gen == p->gen) {
	pthread_mutex_unlock(&p->lock);
	tried = 1;
	if ((h = http_create(conf, err, errlen)) != NULL) {
	    e = xcalloc(1, sizeof(*e));
	    e->http = h;
	    e->gen = gen;
	    e->busy = 1;
	    pthread_mutex_lock(&p->lock);
	    e->next = p->ents;
	    p->ents = e;
	    pthread_mutex_unlock(&p->lock);
	}
    } else {
	pthread_mutex_unlock(&p->lock);
    }
    /* A message of an older configuration still in flight: its own. */
    if (h == NULL && !tried)
	h = http_create(conf, err, errlen);
    for (e = stale; e; e = next) {
	next = e->next;
	http_free(e->http);
	free(e);
    }
    return (h);
}

/* http_pool_put - give a client back; free it past max idle */

void    http_pool_put(struct http_pool *p, struct http *h)
{
    struct http_pool_ent *e;
    int     busy, idle;

    if (h == NULL)
	return;
    pthread_mutex_lock(&p->lock);
    for (e = p->ents; e; e = e->next)
	if (e->http == h)
	    break;
    http_pool_count(p, &busy, &idle);
    if (e != NULL && e->gen == p->gen && idle < p->max) {
	e->busy = 0;
	e->put_at = time_mono();
	/* Most recently used first: the next get takes it. */
	http_pool_unlink(p, e);
	e->next = p->ents;
	p->ents = e;
	pthread_cond_signal(&p->wake);
	pthread_mutex_unlock(&p->lock);
	return;
    }
    if (e != NULL)
	http_pool_unlink(p, e);
    pthread_mutex_unlock(&p->lock);
    http_free(h);
    free(e);
}

/* http_pool_idle_close - close due idle connections now; how many */

int     http_pool_idle_close(struct http_pool *p, double now)
{
    int     n;

    pthread_mutex_lock(&p->lock);
    n = http_pool_close_due(p, now);
    pthread_mutex_unlock(&p->lock);
    return (n);
}

/* http_pool_stats - clients handed out and clients kept idle */

void    http_pool_stats(struct http_pool *p, int *in_use, int *idle)
{
    pthread_mutex_lock(&p->lock);
    http_pool_count(p, in_use, idle);
    pthread_mutex_unlock(&p->lock);
}

/* http_pool_free - stop the timer, free the idle clients; NULL is ok */

void    http_pool_free(struct http_pool *p)
{
    struct http_pool_ent *e, *next;

    if (p == NULL)
	return;
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
    (void) pthread_join(p->timer, NULL);
    for (e = p->ents; e; e = next) {
	next = e->next;
	if (e->busy)
	    msg_warn("http pool freed with a client in use (leaked)");
	else
	    http_free(e->http);
	free(e);
    }
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
