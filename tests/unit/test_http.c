/*
 * NAME
 *	test_http 1
 * SUMMARY
 *	unit tests for http.c: bearer tokens stay under graph_url
 * DESCRIPTION
 *	http_url_under() decides whether a URL lies under graph_url;
 *	http_perform() refuses, before any connection, a request that
 *	would carry a bearer token to another origin (a nextLink or a
 *	deltaLink saved under an earlier graph_url).  The refused requests
 *	name 127.0.0.1 port 1, where nothing listens: a request that got
 *	through would fail with a connection error instead.
 */
#include "config.h"

#include <string.h>

#include "conf.h"
#include "http.h"
#include "t.h"

/* test_url_under - prefix, boundary, case and trailing-slash rules */

static void test_url_under(void)
{
    static const struct {
	const char *base, *url;
	int     want;
    }       cases[] = {
	{"https://graph.microsoft.com", "https://graph.microsoft.com/v1.0/me", 1},
	{"https://graph.microsoft.com/", "https://graph.microsoft.com/v1.0/me", 1},
	{"https://graph.microsoft.com//", "https://graph.microsoft.com/x", 1},
	{"https://graph.microsoft.com", "HTTPS://Graph.Microsoft.com/v1.0", 1},
	{"https://graph.microsoft.com", "https://graph.microsoft.com", 0},
	{"https://graph.microsoft.com", "https://graph.microsoft.com.evil.example/v1.0", 0},
	{"https://graph.microsoft.com", "https://graph.microsoft.com@evil.example/v1.0", 0},
	{"https://graph.microsoft.com", "https://graph.microsoft.com:8443/v1.0", 0},
	{"https://graph.microsoft.com", "http://graph.microsoft.com/v1.0", 0},
	{"https://graph.microsoft.com", "https://graph.microsoft.us/v1.0", 0},
	{"https://127.0.0.1:4443", "https://127.0.0.1:4443/v1.0/users/x/messages/delta", 1},
	{"https://127.0.0.1:4443", "https://127.0.0.1:44431/v1.0", 0},
	{"", "https://graph.microsoft.com/v1.0", 0},
	{"/", "/v1.0", 0},
	{NULL, "https://graph.microsoft.com/v1.0", 0},
	{"https://graph.microsoft.com", NULL, 0},
    };
    size_t  i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	T_CHECK(http_url_under(cases[i].base, cases[i].url) == cases[i].want,
		"http_url_under(\"%s\", \"%s\") != %d", cases[i].base ?
		cases[i].base : "(null)", cases[i].url ? cases[i].url :
		"(null)", cases[i].want);
}

/* t_get - one GET of url (with bearer unless NULL) through h */

static int t_get(struct http *h, const char *url, const char *bearer,
		         struct http_resp *resp)
{
    struct http_req req;

    memset(&req, 0, sizeof(req));
    req.method = "GET";
    req.url = url;
    req.bearer = bearer;
    req.timeout = 5;
    http_resp_init(resp);
    return (http_perform(h, &req, resp));
}

/* test_bearer_refused - no token to another origin, nothing sent */

static void test_bearer_refused(void)
{
    struct conf conf;
    struct http_resp resp;
    struct http *h;
    char    err[300];

    memset(&conf, 0, sizeof(conf));
    conf.graph_url = (char *) "https://graph.microsoft.com";
    conf.timeout = 5;
    conf.connect_timeout = 2;
    h = http_create(&conf, err, sizeof(err));
    T_OK(h != NULL);
    if (h == NULL)
	return;

    /* A saved deltaLink of another host: refused before connecting. */
    T_EQ_INT(t_get(h, "https://127.0.0.1:1/v1.0/users/x/messages/delta"
		   "?$deltatoken=abc", "TOKEN", &resp), -1);
    T_CONTAINS(resp.error, "refusing to send the access token to "
	       "https://127.0.0.1:1: it is not under graph_url "
	       "https://graph.microsoft.com");
    T_OK(strstr(resp.error, "deltatoken") == NULL);
    T_EQ_INT(resp.status, 0);
    http_resp_free(&resp);

    /* A look-alike host. */
    T_EQ_INT(t_get(h, "https://graph.microsoft.com.localhost:1/v1.0",
		   "TOKEN", &resp), -1);
    T_CONTAINS(resp.error, "refusing to send the access token");
    http_resp_free(&resp);

    /* The same URL without a token is attempted (and fails to connect). */
    T_EQ_INT(t_get(h, "https://127.0.0.1:1/v1.0", NULL, &resp), -1);
    T_OK(strstr(resp.error, "access token") == NULL);
    http_resp_free(&resp);
    http_free(h);

    /* No graph_url at all (a client made without a configuration). */
    h = http_create(NULL, err, sizeof(err));
    T_OK(h != NULL);
    if (h == NULL)
	return;
    T_EQ_INT(t_get(h, "https://127.0.0.1:1/v1.0/me", "TOKEN", &resp),
	     -1);
    T_CONTAINS(resp.error, "not under graph_url (not set)");
    http_resp_free(&resp);
    http_free(h);
}

int     main(void)
{
    T_RUN(test_url_under);
    T_RUN(test_bearer_refused);
    return (T_DONE());
}
