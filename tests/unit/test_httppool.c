/*
 * NAME
 *	test_httppool 1
 * SUMMARY
 *	unit tests for httppool.c and the kept-alive connections of http.c
 * DESCRIPTION
 *	A plain-HTTP server on 127.0.0.1 (a thread of this test; http.c
 *	allows http only to loopback) answers every request with 200 on
 *	kept-alive connections and counts the connections it accepted and
 *	the ones the client closed.  The pool must hand the same client
 *	(and so the same connection) to the next delivery, keep at most
 *	max idle clients, drop the clients of an older configuration, and
 *	close idle connections after idle_timeout from its own thread,
 *	with no request; http_idle_close() closes on demand.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conf.h"
#include "http.h"
#include "httppool.h"
#include "t.h"
#include "util.h"

static int srv_fd;
static int srv_port;
static pthread_mutex_t srv_lock = PTHREAD_MUTEX_INITIALIZER;
static int srv_accepted;
static int srv_closed;

/* srv_conn - one connection: answer each request until the client closes */

static void *srv_conn(void *arg)
{
    static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
	"Content-Type: text/plain\r\n\r\nok";
    int     fd = (int) (long) arg;
    char    buf[4096];
    size_t  have = 0;
    ssize_t n;
    char   *end;

    for (;;) {
	if ((n = read(fd, buf + have, sizeof(buf) - 1 - have)) <= 0)
	    break;
	have += (size_t) n;
	buf[have] = 0;
	/* GET requests only: a request ends with an empty line. */
	while ((end = strstr(buf, "\r\n\r\n")) != NULL) {
	    if (write(fd, reply, sizeof(reply) - 1) < 0)
		break;
	    have -= (size_t) (end + 4 - buf);
	    memmove(buf, end + 4, have + 1);
	}
    }
    close(fd);
    pthread_mutex_lock(&srv_lock);
    srv_closed++;
    pthread_mutex_unlock(&srv_lock);
    return (NULL);
}

/* srv_main - accept loop */

static void *srv_main(void *arg)
{
    pthread_t t;
    int     fd;

    (void) arg;
    while ((fd = accept(srv_fd, NULL, NULL)) >= 0) {
	pthread_mutex_lock(&srv_lock);
	srv_accepted++;
	pthread_mutex_unlock(&srv_lock);
	if (pthread_create(&t, NULL, srv_conn, (void *) (long) fd) == 0)
	    pthread_detach(t);
	else
	    close(fd);
    }
    return (NULL);
}

static void srv_start(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    pthread_t t;

    srv_fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (srv_fd < 0 || bind(srv_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0
	|| listen(srv_fd, 16) < 0
	|| getsockname(srv_fd, (struct sockaddr *) &sa, &len) < 0) {
	perror("test server");
	_exit(1);
    }
    srv_port = ntohs(sa.sin_port);
    pthread_create(&t, NULL, srv_main, NULL);
    pthread_detach(t);
}

static void srv_counts(int *accepted, int *closed)
{
    pthread_mutex_lock(&srv_lock);
    *accepted = srv_accepted;
    *closed = srv_closed;
    pthread_mutex_unlock(&srv_lock);
}

/* get - one GET on h; the HTTP status (0: transport error) */

static long get(struct http *h)
{
    struct http_req req;
    struct http_resp resp;
    char    url[80];
    long    st;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", srv_port);
    memset(&req, 0, sizeof(req));
    req.method = "GET";
    req.url = url;
    http_resp_init(&resp);
    st = http_perform(h, &req, &resp) == 0 ? resp.status : 0;
    http_resp_free(&resp);
    return (st);
}

/*
 * srv_quiet - up to 5 s until the server saw every connection closed
 * (the earlier tests freed their pools, but the server's threads may
 * count those closes late under load); 1 when it did
 */
static int srv_quiet(void)
{
    int     a, c, i;

    for (i = 0; i < 500; i++) {
	srv_counts(&a, &c);
	if (a == c)
	    return (1);
	usleep(10000);
    }
    return (0);
}

/* wait_closed - up to 5 s for the server to see n closes */

static int wait_closed(int n)
{
    int     a, c, i;

    for (i = 0; i < 500; i++) {
	srv_counts(&a, &c);
	if (c >= n)
	    return (c);
	usleep(10000);
    }
    return (c);
}

static struct conf conf;

static void conf_setup(void)
{
    memset(&conf, 0, sizeof(conf));
    conf.timeout = 10;
    conf.connect_timeout = 5;
    conf.idle_timeout = 1;
}

/* test_reuse - the next delivery gets the same client and connection */

static void test_reuse(void)
{
    struct http_pool *p;
    struct http *h1, *h2;
    char    err[200] = "";
    int     a0, c0, a, c, busy, idle, i;

    p = http_pool_create(2, err, sizeof(err));
    T_OK(p != NULL);
    if (p == NULL)
	return;
    T_OK(srv_quiet());
    srv_counts(&a0, &c0);
    for (i = 0; i < 5; i++) {
	h1 = http_pool_get(p, &conf, 1, err, sizeof(err));
	T_OK(h1 != NULL);
	T_EQ_INT(get(h1), 200);
	http_pool_put(p, h1);
    }
    srv_counts(&a, &c);
    T_EQ_INT(a - a0, 1);			/* five requests, one connection */

    /* Two at once: two clients, two connections; max 2 idle kept. */
    h1 = http_pool_get(p, &conf, 1, err, sizeof(err));
    h2 = http_pool_get(p, &conf, 1, err, sizeof(err));
    T_OK(h1 != NULL && h2 != NULL && h1 != h2);
    T_EQ_INT(get(h1), 200);
    T_EQ_INT(get(h2), 200);
    http_pool_stats(p, &busy, &idle);
    T_EQ_INT(busy, 2);
    T_EQ_INT(idle, 0);
    http_pool_put(p, h1);
    http_pool_put(p, h2);
    http_pool_stats(p, &busy, &idle);
    T_EQ_INT(busy, 0);
    T_EQ_INT(idle, 2);
    /* The most recently put first. */
    T_OK(http_pool_get(p, &conf, 1, err, sizeof(err)) == h2);
    http_pool_put(p, h2);
    http_pool_free(p);
    /* Freeing the pool closed both connections. */
    srv_counts(&a, &c);
    T_EQ_INT(wait_closed(c0 + 2) - c0, 2);
}

/* test_bound - at most max idle clients; the others are freed */

static void test_bound(void)
{
    struct http_pool *p;
    struct http *h[3];
    char    err[200] = "";
    int     busy, idle, i, a0, c0;

    T_OK(srv_quiet());
    srv_counts(&a0, &c0);
    p = http_pool_create(1, err, sizeof(err));
    T_OK(p != NULL);
    if (p == NULL)
	return;
    for (i = 0; i < 3; i++) {
	h[i] = http_pool_get(p, &conf, 1, err, sizeof(err));
	T_EQ_INT(get(h[i]), 200);
    }
    for (i = 0; i < 3; i++)
	http_pool_put(p, h[i]);
    http_pool_stats(p, &busy, &idle);
    T_EQ_INT(busy, 0);
    T_EQ_INT(idle, 1);
    /* Two freed: their connections closed at once. */
    T_EQ_INT(wait_closed(c0 + 2) - c0, 2);
    http_pool_free(p);
}

/* test_generation - a reload's clients replace the older ones */

static void test_generation(void)
{
    struct http_pool *p;
    struct http *old, *h;
    char    err[200] = "";
    int     busy, idle;

    p = http_pool_create(4, err, sizeof(err));
    T_OK(p != NULL);
    if (p == NULL)
	return;
    old = http_pool_get(p, &conf, 1, err, sizeof(err));
    http_pool_put(p, old);
    h = http_pool_get(p, &conf, 2, err, sizeof(err));
    T_OK(h != NULL);
    http_pool_stats(p, &busy, &idle);
    T_EQ_INT(busy, 1);
    T_EQ_INT(idle, 0);				/* generation 1 freed */
    http_pool_put(p, h);
    /* A message of generation 1 still in flight gets a client of its own. */
    old = http_pool_get(p, &conf, 1, err, sizeof(err));
    T_OK(old != NULL && old != h);
    http_pool_put(p, old);			/* not kept */
    http_pool_stats(p, &busy, &idle);
    T_EQ_INT(busy, 0);
    T_EQ_INT(idle, 1);
    http_pool_free(p);
}

/* test_idle - closed after idle_timeout without a request; reopened */

static void test_idle(void)
{
    struct http_pool *p;
    struct http *h;
    char    err[200] = "";
    int     a0, c0, a, c, i, busy = -1, idle;
    double  put_at;

    p = http_pool_create(2, err, sizeof(err));
    T_OK(p != NULL);
    if (p == NULL)
	return;
    T_OK(srv_quiet());
    srv_counts(&a0, &c0);
    h = http_pool_get(p, &conf, 1, err, sizeof(err));
    T_EQ_INT(get(h), 200);
    T_OK(http_idle_deadline(h) > time_mono());
    put_at = time_mono();
    http_pool_put(p, h);
    /* idle_timeout = 1: the pool's thread closes it, nothing else runs. */
    usleep(300000);
    srv_counts(&a, &c);
    if (time_mono() < put_at + 0.8)		/* not slept past it (load) */
	T_EQ_INT(c - c0, 0);			/* not yet */
    T_EQ_INT(wait_closed(c0 + 1) - c0, 1);
    /*
     * The server sees the close while the pool's thread still holds the
     * client (it is busy until http_idle_close() returned): wait for the
     * pool to have it back, under its lock, before looking at it.
     */
    for (i = 0; i < 500; i++) {
	http_pool_stats(p, &busy, &idle);
	if (busy == 0)
	    break;
	usleep(10000);
    }
    T_EQ_INT(busy, 0);
    T_EQ_INT(http_idle_deadline(h), 0);
    h = http_pool_get(p, &conf, 1, err, sizeof(err));
    T_EQ_INT(get(h), 200);
    srv_counts(&a, &c);
    T_EQ_INT(a - a0, 2);			/* a new connection */
    /* On demand: closed at once; nothing open: nothing to close. */
    T_EQ_INT(http_idle_close(h, -1), 1);
    T_EQ_INT(http_idle_close(h, -1), 0);
    T_EQ_INT(wait_closed(c0 + 2) - c0, 2);
    http_pool_put(p, h);
    T_EQ_INT(http_pool_idle_close(p, -1), 0);
    http_pool_free(p);
}

int     main(void)
{
    srv_start();
    conf_setup();
    T_RUN(test_reuse);
    T_RUN(test_bound);
    T_RUN(test_generation);
    T_RUN(test_idle);
    return (T_DONE());
}
