/*
 * NAME
 *	fuzz_graph - libFuzzer target for Graph error replies
 * SUMMARY
 *	graph_parse_error() and graph_classify_send() on a fake http_resp
 * DESCRIPTION
 *	Input layout: byte 0 picks the HTTP status (a table of the ones
 *	Graph sends, or a raw value), byte 1 holds flags (transport ok,
 *	upload_done, a request-id header, the From:/mailbox pair, the
 *	transport error code), the rest is the response body.  No network
 *	is used: the struct http_resp is filled in by hand, as http.c
 *	would.
 *
 *	Invariants (abort() on violation), from graph.h and the design
 *	rules in graph-facts.md:
 *	- graph_parse_error() leaves code, message and request_id
 *	  terminated and printable, and returns 0 exactly when it found a
 *	  code;
 *	- the result's DSN is "[245].d.d" and its class agrees with the
 *	  sysexit (2 -> EX_OK, 4 -> EX_TEMPFAIL, 5 -> neither) and the
 *	  status (M365_OK exactly for 2.x.x);
 *	- only a 2xx reply counts as sent, and every 2xx reply does
 *	  (202 + Retry-After is never resent);
 *	- a transport failure, 429 and every 5xx defer (4.x.x), never
 *	  bounce: the message may have been accepted (rule 3, rule 11);
 *	- a final status line followed by a broken transfer (flag 0x80:
 *	  body over the cap, cut short) is classified by that status: a
 *	  2xx is sent, anything else is never "connection lost" and keeps
 *	  its http_status (issue 7.10);
 *	- the result text is printable.
 * DIAGNOSTICS
 *	A failed invariant prints one line to stderr, then abort().
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "fuzz.h"
#include "graph.h"
#include "http.h"
#include "log.h"
#include "status.h"
#include "strbuf.h"
#include "util.h"

static const long fuzz_status[] = {
    200, 202, 204, 400, 401, 403, 404, 405, 409, 413, 415, 429,
    500, 502, 503, 504,
};

#define FUZZ_NSTATUS	(sizeof(fuzz_status) / sizeof(fuzz_status[0]))

/* byte 1 */
#define FUZZ_F_TRANSPORT_OK	0x01
#define FUZZ_F_UPLOAD_DONE	0x02
#define FUZZ_F_REQUEST_ID	0x04
#define FUZZ_F_TIMEOUT		0x08	/* curl_code 28, else 7 */
#define FUZZ_F_RETRY_AFTER	0x10
#define FUZZ_F_ADDRS		0x60	/* From:/mailbox pair, 0..3 */
#define FUZZ_F_STATUS_KEPT	0x80	/* not ok: the status line arrived */

/* fuzz_fail - report a broken invariant and crash */

static void fuzz_fail(const char *what, const struct http_resp *resp,
		              const struct m365_result *res)
{
    fprintf(stderr, "fuzz_graph: invariant violated: %s (HTTP %ld)\n",
	    what, resp->status);
    if (res)
	fprintf(stderr, "fuzz_graph: result %s %s\n", res->dsn, res->text);
    abort();
}

/* fuzz_check_error - graph_parse_error() on its own */

static void fuzz_check_error(const struct http_resp *resp)
{
    struct graph_error ge;
    int     rc;

    rc = graph_parse_error(resp, &ge);
    if (!fuzz_printable(ge.code, sizeof(ge.code))
	|| !fuzz_printable(ge.message, sizeof(ge.message))
	|| !fuzz_printable(ge.request_id, sizeof(ge.request_id)))
	fuzz_fail("graph_error fields are not printable text", resp, NULL);
    if ((rc == 0) != (ge.code[0] != 0))
	fuzz_fail("graph_parse_error() result and code disagree", resp, NULL);
}

/* fuzz_check_result - graph_classify_send() invariants */

static void fuzz_check_result(const struct http_resp *resp, int ok,
			              const struct m365_result *res)
{
    const char *d = res->dsn;
    long    st = resp->status;
    int     answered = ok || st >= 200;	/* a final status line came */
    int     sent = answered && st >= 200 && st < 300;

    if (!(d[0] == '2' || d[0] == '4' || d[0] == '5') || d[1] != '.'
	|| d[2] < '0' || d[2] > '9' || strchr(d + 3, '.') == NULL)
	fuzz_fail("the DSN is not class.subject.detail", resp, res);
    if ((d[0] == '2') != (res->status == M365_OK))
	fuzz_fail("a 2.x.x DSN and M365_OK disagree", resp, res);
    if ((d[0] == '2') != (res->sysexit == EX_OK))
	fuzz_fail("a 2.x.x DSN and EX_OK disagree", resp, res);
    if (d[0] == '4' && res->sysexit != EX_TEMPFAIL)
	fuzz_fail("a 4.x.x DSN without EX_TEMPFAIL", resp, res);
    if (d[0] == '5' && res->sysexit == EX_TEMPFAIL)
	fuzz_fail("a 5.x.x DSN with EX_TEMPFAIL", resp, res);
    if (sent != (d[0] == '2'))
	fuzz_fail("sent is not exactly a 2xx reply", resp, res);
    if ((!answered || st == 429 || st >= 500) && d[0] != '4')
	fuzz_fail("a transport error, 429 or 5xx does not defer", resp, res);
    if (!ok && answered && !sent
	&& (strstr(res->text, "connection to Graph lost") != NULL
	    || res->http_status != st))
	fuzz_fail("a status line then a broken body is taken for a lost "
		  "connection", resp, res);
    if (!fuzz_printable(res->text, sizeof(res->text))
	|| !fuzz_printable(res->request_id, sizeof(res->request_id)))
	fuzz_fail("the result text is not printable", resp, res);
}

/* LLVMFuzzerInitialize - quiet logging, crash on out of memory */

int     LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return (fuzz_init("fuzz_graph", argc, argv));
}

/* LLVMFuzzerTestOneInput - status byte, flag byte, body */

int     LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const from[] = {
	"alice@example.com", "<Alice@Example.COM>", "bob@example.com", 0,
    };
    struct http_resp resp;
    struct m365_result res;
    unsigned flags;
    int     ok, pair;

    if (size < 2)
	return (0);
    http_resp_init(&resp);
    resp.status = data[0] < FUZZ_NSTATUS ? fuzz_status[data[0]] :
	(long) data[0] + 100;
    flags = data[1];
    ok = (flags & FUZZ_F_TRANSPORT_OK) != 0;
    resp.upload_done = (flags & FUZZ_F_UPLOAD_DONE) != 0;
    if (flags & FUZZ_F_REQUEST_ID)
	snprintf(resp.request_id, sizeof(resp.request_id),
		 "0a1b2c3d-4e5f-6789-abcd-ef0123456789");
    resp.retry_after = (flags & FUZZ_F_RETRY_AFTER) ? 30 : -1;
    if (!ok && (flags & FUZZ_F_STATUS_KEPT)) {
	resp.curl_code = 23;			/* CURLE_WRITE_ERROR */
	snprintf(resp.error, sizeof(resp.error), "Failed writing received "
		 "data to disk/application: the response body is larger "
		 "than %lu bytes", (unsigned long) STRBUF_MAX_JSON);
    } else if (!ok) {
	resp.status = 0;
	resp.curl_code = (flags & FUZZ_F_TIMEOUT) ? 28 : 7;
	snprintf(resp.error, sizeof(resp.error), "%s",
		 resp.curl_code == 28 ? "Operation timed out" :
		 "Could not connect to server");
    }
    if (strbuf_append(&resp.body, data + 2, size - 2) < 0) {
	http_resp_free(&resp);
	return (0);
    }
    fuzz_check_error(&resp);
    pair = (int) ((flags & FUZZ_F_ADDRS) >> 5);
    result_init(&res);
    graph_classify_send(&resp, ok, from[pair], "alice@example.com", &res);
    fuzz_check_result(&resp, ok, &res);
    http_resp_free(&resp);
    return (0);
}
