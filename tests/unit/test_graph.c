/* test_graph - Graph URLs, error parsing and sendMail classification */
#include "config.h"

#include <stdlib.h>

#include "graph.h"
#include "http.h"
#include "msg.h"
#include "strbuf.h"
#include "status.h"
#include "util.h"
#include "t.h"

/* mkresp - a response as http_perform() would leave it */

static void mkresp(struct http_resp *r, long status, const char *body,
		           long retry_after)
{
    memset(r, 0, sizeof(*r));
    strbuf_init(&r->body, STRBUF_MAX_JSON);
    r->status = status;
    r->retry_after = retry_after;
    r->upload_done = 1;
    if (body)
	strbuf_puts(&r->body, body);
}

#define ERRBODY(code, msg) "{\"error\":{\"code\":\"" code "\",\"message\":\"" msg \
    "\",\"innerError\":{\"request-id\":\"rid-123\",\"date\":\"2026-11-28T10:00:00\"}}}"

struct classify_case {
    const char *name;
    long    status;
    const char *body;
    long    retry_after;
    const char *from;
    int     want_exit;
    const char *want_dsn;
    const char *want_text;
};

static const struct classify_case cases[] = {
    {"202", 202, "", -1, "bob@contoso.test", EX_OK, "2.0.0", "202 Accepted"},
    {"202 + Retry-After is success", 202, "", 30, "bob@contoso.test", EX_OK, "2.0.0", "Accepted"},
    {"200 (odd but 2xx)", 200, "", -1, NULL, EX_OK, "2.0.0", "200 OK"},
    {"invalid recipients", 400, ERRBODY("ErrorInvalidRecipients", "At least one recipient is not valid."), -1, NULL, EX_NOUSER, "5.1.1", "ErrorInvalidRecipients"},
    {"bad base64", 400, ERRBODY("ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."), -1, NULL, EX_DATAERR, "5.6.0", "ErrorMimeContentInvalidBase64String"},
    {"size exceeded", 400, ERRBODY("ErrorMessageSizeExceeded", "The message exceeds the maximum supported size."), -1, NULL, EX_DATAERR, "5.3.4", "too large"},
    {"4MB request", 400, ERRBODY("BadRequest", "The maximum request length supported is 4MB."), -1, NULL, EX_DATAERR, "5.3.4", "4MB"},
    {"413", 413, "", -1, NULL, EX_DATAERR, "5.3.4", "413"},
    {"send-as denied, other From", 403, ERRBODY("ErrorSendAsDenied", "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account."), -1, "ceo@contoso.test", EX_NOPERM, "5.7.1", "may not send as ceo@contoso.test"},
    {"send-as denied, own From", 403, ERRBODY("ErrorSendAsDenied", "no right"), -1, "BOB@contoso.test", EX_TEMPFAIL, "4.7.1", "Mail.Send.Shared"},
    {"access denied policy", 403, ERRBODY("ErrorAccessDenied", "Access to OData is disabled."), -1, NULL, EX_TEMPFAIL, "4.7.1", "RBAC"},
    {"401 after refresh", 401, ERRBODY("InvalidAuthenticationToken", "Access token has expired."), -1, NULL, EX_TEMPFAIL, "4.7.0", "m365ctl test"},
    {"mailbox not REST", 404, ERRBODY("MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, soft-deleted, or is hosted on-premise."), -1, NULL, EX_TEMPFAIL, "4.7.1", "licence"},
    {"429", 429, ERRBODY("ApplicationThrottled", "Application is over its MailboxConcurrency limit."), 5, NULL, EX_TEMPFAIL, "4.7.0", "Retry-After"},
    {"503", 503, ERRBODY("ErrorServerBusy", "busy"), -1, NULL, EX_TEMPFAIL, "4.4.2", "may have been accepted"},
    {"504 html", 504, "<html>Gateway Timeout</html>", -1, NULL, EX_TEMPFAIL, "4.4.2", "504 <html>"},
    {"500 empty", 500, "", -1, NULL, EX_TEMPFAIL, "4.4.2", "no error details"},
    {"unknown 4xx defers", 409, ERRBODY("ErrorSomethingNew", "?"), -1, NULL, EX_TEMPFAIL, "4.3.0", "ErrorSomethingNew"},
};

static void test_classify(void)
{
    struct http_resp r;
    struct m365_result res;
    size_t  i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
	const struct classify_case *c = cases + i;

	t_current = c->name;
	mkresp(&r, c->status, c->body, c->retry_after);
	result_init(&res);
	graph_classify_send(&r, 1, c->from, "bob@contoso.test", &res);
	T_EQ_INT(res.sysexit, c->want_exit);
	T_EQ_STR(res.dsn, c->want_dsn);
	T_CONTAINS(res.text, c->want_text);
	T_EQ_INT(res.http_status, c->status);
	if (c->body && strstr(c->body, "rid-123"))
	    T_EQ_STR(res.request_id, "rid-123");
	strbuf_free(&r.body);
    }
}

static void test_transport(void)
{
    struct http_resp r;
    struct m365_result res;

    mkresp(&r, 0, NULL, -1);
    snprintf(r.error, sizeof(r.error), "Connection reset by peer");
    r.curl_code = 56;
    graph_classify_send(&r, 0, NULL, "bob@contoso.test", &res);
    T_EQ_INT(res.sysexit, EX_TEMPFAIL);
    T_EQ_STR(res.dsn, "4.4.2");
    T_CONTAINS(res.text, "may have accepted it");

    r.upload_done = 0;
    r.curl_code = 7;
    snprintf(r.error, sizeof(r.error), "Failed to connect");
    graph_classify_send(&r, 0, NULL, "bob@contoso.test", &res);
    T_EQ_STR(res.dsn, "4.4.1");
    T_CONTAINS(res.text, "cannot reach Graph");

    r.curl_code = 28;
    graph_classify_send(&r, 0, NULL, "bob@contoso.test", &res);
    T_EQ_STR(res.dsn, "4.4.2");
    T_CONTAINS(res.text, "did not answer in time");
    strbuf_free(&r.body);
}

/*
 * The status line said 202 (or another 2xx), then the transfer broke
 * (body cut short, reset while reading it, response body over the cap):
 * Graph accepted the message, so deferring would make the MTA send it
 * again.  A refusal whose body was cut off is still not a success.
 */
static void test_status_then_transport_error(void)
{
    struct http_resp r;
    struct m365_result res;

    mkresp(&r, 202, NULL, -1);
    r.curl_code = 18;				/* CURLE_PARTIAL_FILE */
    snprintf(r.error, sizeof(r.error), "Transferred a partial file");
    snprintf(r.request_id, sizeof(r.request_id), "rid-202");
    result_init(&res);
    graph_classify_send(&r, 0, NULL, "bob@contoso.test", &res);
    T_EQ_INT(res.status, M365_OK);
    T_EQ_INT(res.sysexit, EX_OK);
    T_EQ_STR(res.dsn, "2.0.0");
    T_CONTAINS(res.text, "202 Accepted");
    T_EQ_STR(res.request_id, "rid-202");
    T_EQ_INT(res.http_status, 202);

    r.status = 200;
    r.curl_code = 23;				/* CURLE_WRITE_ERROR */
    graph_classify_send(&r, 0, NULL, "bob@contoso.test", &res);
    T_EQ_INT(res.sysexit, EX_OK);
    T_EQ_STR(res.dsn, "2.0.0");

    r.status = 400;
    r.curl_code = 18;
    result_init(&res);
    graph_classify_send(&r, 0, NULL, "bob@contoso.test", &res);
    T_EQ_INT(res.sysexit, EX_TEMPFAIL);
    T_EQ_STR(res.dsn, "4.3.0");
    strbuf_free(&r.body);
}

/*
 * Graph answered with a final error status, but its body could not be
 * read whole (over the 4 MB cap, or cut short): the status decides, and
 * the text says what happened - not "connection lost after the whole
 * message was sent", which would send the administrator after a network
 * problem.  A body that was not read whole is not parsed.
 */
struct cut_case {
    long    status;
    long    retry_after;
    const char *body;			/* what was read before the break */
    int     want_exit;
    const char *want_dsn;
    const char *want_text;
};

static const struct cut_case cut_cases[] = {
    {400, -1, "{\"error\":{\"code\":\"BadRequest\",\"message\":\"xxxx",
    EX_TEMPFAIL, "4.3.0", "unexpected reply from Graph (400 (no error "
    "details); the reply body was not read: Failed writing received data"},
    {413, -1, "", EX_DATAERR, "5.3.4", "message too large for Microsoft 365 "
    "(413 (no error details); the reply body was not read: "},
    {429, 5, "", EX_TEMPFAIL, "4.7.0", "throttled by Microsoft 365 (429"},
    /* Not parsed: a cut ErrorSendAsDenied is no evidence for a bounce. */
    {403, -1, "{\"error\":{\"code\":\"ErrorSendAsDenied\",\"message\":"
    "\"no", EX_TEMPFAIL, "4.7.1", "Graph denied access to mailbox"},
    {503, -1, "", EX_TEMPFAIL, "4.4.2", "Graph is temporarily unavailable"},
};

static void test_error_body_not_read(void)
{
    struct http_resp r;
    struct m365_result res;
    size_t  i;

    for (i = 0; i < sizeof(cut_cases) / sizeof(cut_cases[0]); i++) {
	const struct cut_case *c = cut_cases + i;

	mkresp(&r, c->status, c->body, c->retry_after);
	r.curl_code = 23;			/* CURLE_WRITE_ERROR */
	snprintf(r.error, sizeof(r.error), "Failed writing received data to "
		 "disk/application: the response body is larger than "
		 "4194304 bytes");
	result_init(&res);
	graph_classify_send(&r, 0, "ceo@contoso.test", "bob@contoso.test",
			    &res);
	T_EQ_INT(res.sysexit, c->want_exit);
	T_EQ_STR(res.dsn, c->want_dsn);
	T_CONTAINS(res.text, c->want_text);
	T_CHECK(strstr(res.text, "connection to Graph lost") == NULL,
		"status %ld: not \"connection lost\": %s", c->status,
		res.text);
	T_CONTAINS(res.text, "larger than 4194304 bytes");
	T_EQ_INT(res.http_status, c->status);
	strbuf_free(&r.body);
    }
}

static void test_url(void)
{
    struct conf conf;
    char   *u;

    memset(&conf, 0, sizeof(conf));
    conf.graph_url = "https://graph.microsoft.com";
    u = graph_url(&conf, "alice@contoso.com", "/sendMail");
    T_EQ_STR(u, "https://graph.microsoft.com/v1.0/users/alice@contoso.com/sendMail");
    free(u);
    u = graph_url(&conf, "o'brien/x y@contoso.com", NULL);
    T_EQ_STR(u, "https://graph.microsoft.com/v1.0/users/o%27brien%2Fx%20y@contoso.com");
    free(u);
    u = graph_url(&conf, NULL, "");
    T_EQ_STR(u, "https://graph.microsoft.com/v1.0/me");
    free(u);
}

/*
 * The URL builders past their cap (issue 8.6): NULL, never a URL cut
 * short, and a request without its URL is refused before anything is
 * sent (port 1: a request that went out would say "connect").
 */
static void test_url_past_cap(void)
{
    struct conf conf;
    struct http *http;
    struct http_resp resp;
    struct m365_result res;
    struct msg m;
    struct msg_src *src;
    char    err[200];
    char   *huge = xmalloc(20001), *quotes = xmalloc(6001), *u;

    memset(huge, 'a', 20000);
    huge[20000] = 0;
    memset(quotes, '\'', 6000);
    quotes[6000] = 0;
    memset(&conf, 0, sizeof(conf));
    conf.graph_url = "https://127.0.0.1:1";
    conf.timeout = 5;
    conf.connect_timeout = 2;
    T_OK((u = graph_url(&conf, huge, "/sendMail")) == NULL);
    free(u);
    T_OK((u = graph_url(&conf, "a@b", huge)) == NULL);
    free(u);
    u = graph_item_url(&conf, "a@b", "/messages/", "A=b/c", "/$value");
    T_EQ_STR(u, "https://127.0.0.1:1/v1.0/users/a@b/messages/A%3Db%2Fc/$value");
    free(u);
    T_OK((u = graph_item_url(&conf, "a@b", "/messages/", huge, NULL)) == NULL);
    free(u);
    T_OK((u = graph_item_url(&conf, huge, "/mailFolders/", "x", NULL)) == NULL);
    free(u);
    /* Past the cap while quoting, and (quotes double, then %27) after. */
    T_OK((u = graph_folder_query(NULL, huge)) == NULL);
    free(u);
    T_OK((u = graph_folder_query("parent", quotes)) == NULL);
    free(u);
    T_OK((u = graph_folder_query(NULL, "inbox")) != NULL);
    free(u);

    T_OK((http = http_create(&conf, err, sizeof(err))) != NULL);
    http_resp_init(&resp);
    T_EQ_INT(graph_get(http, &conf, huge, "", "token", &resp), -1);
    T_CONTAINS(resp.error, "no request sent");
    T_EQ_INT(resp.status, 0);
    http_resp_free(&resp);

    /* sendMail: the message defers (4.x.x), nothing was uploaded. */
    msg_init(&m, "/tmp", 1024, 0);
    T_EQ_INT(msg_add_header(&m, "Subject", "cap", &res), 0);
    T_EQ_INT(msg_finish(&m, &res), 0);
    src = msg_src_create(&m.hdr, &m);
    http_resp_init(&resp);
    T_EQ_INT(graph_send_mime(http, &conf, huge, "token", src, &resp), -1);
    T_CONTAINS(resp.error, "no request sent");
    T_EQ_INT(resp.upload_done, 0);
    graph_classify_send(&resp, 0, NULL, huge, &res);
    T_EQ_INT(res.status, M365_TEMP);
    T_EQ_INT(res.dsn[0], '4');
    T_CONTAINS(res.text, "longer than 16384 bytes");
    http_resp_free(&resp);
    msg_src_free(src);
    msg_free(&m);
    http_free(http);
    free(quotes);
    free(huge);
}

static void test_parse_error(void)
{
    struct http_resp r;
    struct graph_error ge;

    mkresp(&r, 403, ERRBODY("ErrorAccessDenied", "Access to OData is disabled."), -1);
    T_EQ_INT(graph_parse_error(&r, &ge), 0);
    T_EQ_STR(ge.code, "ErrorAccessDenied");
    T_EQ_STR(ge.message, "Access to OData is disabled.");
    T_EQ_STR(ge.request_id, "rid-123");
    strbuf_free(&r.body);
    mkresp(&r, 502, "not json", -1);
    snprintf(r.request_id, sizeof(r.request_id), "hdr-id");
    T_EQ_INT(graph_parse_error(&r, &ge), -1);
    T_EQ_STR(ge.request_id, "hdr-id");
    strbuf_free(&r.body);
}

/*
 * test_classify_draft - the requests of the large-message path before
 * the send: nothing was sent, so transient trouble never says "may have
 * been accepted"; 403 names the permission; the rest as for sendMail.
 */
static void test_classify_draft(void)
{
    static const struct {
	long    status;
	const char *body;
	int     transport_ok;
	const char *perm;
	const char *want_dsn;
	const char *want_text;
    } dcases[] = {
	{403, ERRBODY("ErrorAccessDenied", "Access is denied."), 1,
	"Mail.ReadWrite", "4.7.1", "delegated permission Mail.ReadWrite"},
	{403, ERRBODY("ErrorAccessDenied", "Access is denied."), 1, NULL,
	"4.7.1", "application permission Mail.ReadWrite"},
	{503, ERRBODY("ErrorServerBusy", "busy"), 1, NULL, "4.4.2",
	"nothing was sent"},
	{429, ERRBODY("ApplicationThrottled", "over"), 1, NULL, "4.7.0",
	"nothing was sent"},
	{0, NULL, 0, NULL, "4.4.1", "nothing was sent"},
	{413, "", 1, NULL, "5.3.4", "too large"},
	{400, ERRBODY("ErrorInvalidRecipients", "no"), 1, NULL, "5.1.1",
	"recipients"},
    };
    struct http_resp r;
    struct m365_result res;
    size_t  i;

    for (i = 0; i < sizeof(dcases) / sizeof(dcases[0]); i++) {
	mkresp(&r, dcases[i].status, dcases[i].body, -1);
	if (!dcases[i].transport_ok)
	    snprintf(r.error, sizeof(r.error), "Couldn't connect to server");
	result_init(&res);
	graph_classify_draft(&r, dcases[i].transport_ok, "create a draft",
			     "bob@contoso.test", dcases[i].perm, &res);
	T_EQ_STR(res.dsn, dcases[i].want_dsn);
	T_CONTAINS(res.text, dcases[i].want_text);
	T_OK(strstr(res.text, "may have been accepted") == NULL);
	strbuf_free(&r.body);
    }
}

int     main(void)
{
    T_RUN(test_classify);
    T_RUN(test_transport);
    T_RUN(test_status_then_transport_error);
    T_RUN(test_error_body_not_read);
    T_RUN(test_url);
    T_RUN(test_url_past_cap);
    T_RUN(test_parse_error);
    T_RUN(test_classify_draft);
    return (T_DONE());
}
