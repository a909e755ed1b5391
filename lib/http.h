/*
 * NAME
 *	http 3h
 * SUMMARY
 *	HTTPS client for the identity platform and Graph (libcurl)
 * SYNOPSIS
 *	#include "http.h"
 * DESCRIPTION
 *	One struct http wraps one libcurl easy handle and is reused for
 *	every request of a process, so connections (TLS sessions) are
 *	reused.  Only https is allowed, except http to 127.0.0.1/::1/
 *	localhost (the loopback redirect listener); peer and host
 *	verification stay on; redirects are not followed; TLS >= 1.2.
 *	conf->ca_file (when set) becomes CURLOPT_CAINFO: libcurl ignores
 *	SSL_CERT_FILE.  Unset, the system store is read by hash from
 *	libcurl's CA directory (CURLOPT_CAPATH, no bundle) when that has
 *	hash links, and a handshake that it cannot verify is made again
 *	with libcurl's bundle.  Proxy, no_proxy and ca_extra_file: proxy.h;
 *	http_set_account() chooses the account whose proxy the following
 *	requests take (auth_token() and the token requests call it).
 *	Timeouts come from conf (timeout, connect_timeout)
 *	unless the request sets its own.
 *
 *	A request body is either in memory (body, body_len) or streamed
 *	(read_cb/read_arg/read_len, with rewind_cb for a resend).  The
 *	bearer token goes into an Authorization header and is never
 *	logged; debug logging (-v -v) shows method, URL, status and
 *	request-id only.
 *
 *	The response keeps status, body (capped at STRBUF_MAX_JSON),
 *	request-id (or client-request-id), Retry-After in seconds (-1 when
 *	absent; HTTP-date form converted), and whether the whole request
 *	body was sent (upload_done) - so a caller can tell "failed before
 *	Graph saw the message" from "failed after".
 *
 *	Streamed download: with to_fd set, the body of a 2xx response is
 *	written to out_fd as it arrives (resp->fd_bytes counts it; memory
 *	does not grow with its size) instead of resp->body; the body of
 *	any other status still goes to resp->body, so error replies can be
 *	parsed.  A write error to out_fd fails the transfer (-1, error
 *	names the cause).  The struct is zeroed by every caller, so the
 *	default (to_fd 0) keeps the in-memory behaviour.  max_bytes > 0
 *	caps such a body: the transfer stops as soon as more arrived
 *	(-1, resp->too_big set, error names the cap), so an endless
 *	stream cannot fill the disk.  low_speed_limit/low_speed_time
 *	(both > 0) end a transfer that moves fewer than low_speed_limit
 *	bytes per second for low_speed_time seconds (a server that went
 *	silent), on top of the overall timeout.
 *
 *	Bearer tokens stay on Graph: a request with a bearer token is
 *	refused (-1, nothing sent) unless its URL lies under the
 *	configured graph_url (same scheme, host and port, then "/"),
 *	whatever the URL came from (built, sent by Graph as a nextLink,
 *	or read back from a state file).  http_url_under() is that test.
 *
 *	Progress: http_set_progress() makes http_perform() call cb(arg)
 *	at most once every interval seconds (at least 1) while a request
 *	is in flight, e.g. for a milter to tell its MTA "still working".
 *	The callback cannot abort the transfer and must not call back
 *	into this struct http.  The interval counts from the
 *	http_set_progress() call across requests.  A NULL cb (the
 *	default of http_create()) turns it off.
 *
 *	Kept-alive connections: a struct http keeps its connections open
 *	between requests (libcurl's connection cache: at most one per
 *	host it talked to).  A resident program that keeps one across
 *	messages gets connection reuse for Graph and the token endpoint
 *	alike.  conf->idle_timeout bounds it: a connection unused for that
 *	long is never reused (CURLOPT_MAXAGE_CONN), and
 *	http_idle_close(h, time_mono()) closes the connections of h once
 *	that time has passed since its last request (http_idle_close(h,
 *	-1) at once); http_idle_deadline(h) tells when that will be (0:
 *	nothing open).  Neither may run while another thread uses h.  A
 *	connection is also closed after 15 minutes in use (DNS changes).
 *	A connection the server closed while idle is noticed by libcurl
 *	before the request is sent, and the request goes on a new one.
 *	When a reused connection dies after the request went out but
 *	before any response byte, libcurl tries once more on a new
 *	connection; a streamed body without rewind_cb (sendMail) is then
 *	never sent again once any byte of it left: http_perform() fails
 *	(-1, resp->upload_done as far as the body was read), and the
 *	caller treats it as "may have been accepted".  An in-memory body
 *	(token requests, JSON) may be sent again that way.
 *
 *	For several threads, a bounded pool of struct http (httppool.h)
 *	hands one to each delivery and closes idle ones on a timer.
 * DIAGNOSTICS
 *	http_perform() returns 0 when an HTTP response arrived (any
 *	status), -1 on a transport error (resp->error names it: DNS,
 *	connect, TLS verification, timeout, reset).
 *	http_resp_timed_out() tells whether that error was a time limit
 *	(libcurl's CURLE_OPERATION_TIMEDOUT), so callers need no libcurl.
 */
#ifndef M365_HTTP_H
#define M365_HTTP_H

#include <stddef.h>

#include "conf.h"
#include "strbuf.h"

struct http;

struct http_req {
    const char *method;			/* GET, POST, PATCH, DELETE */
    const char *url;
    const char *bearer;			/* access token or NULL */
    const char *content_type;		/* or NULL */
    const void *body;			/* in-memory body, or NULL */
    size_t  body_len;
    size_t  (*read_cb) (char *, size_t, size_t, void *);	/* streamed body */
    int     (*rewind_cb) (void *);
    void   *read_arg;
    long long read_len;
    const char *const *headers;		/* extra "Name: value", NULL-ended */
    long    timeout;			/* seconds; 0: conf default */
    int     to_fd;			/* 1: a 2xx body goes to out_fd */
    int     out_fd;			/* used only when to_fd is set */
    long long max_bytes;		/* to_fd: cap on that body; 0: none */
    long    low_speed_limit;		/* bytes/s, with low_speed_time */
    long    low_speed_time;		/* seconds; 0: no low-speed limit */
};

struct http_resp {
    long    status;			/* 0: no HTTP response */
    struct strbuf body;
    char    request_id[80];
    char    content_type[100];
    long    retry_after;		/* seconds, -1 when absent */
    int     upload_done;		/* request body sent completely */
    int     curl_code;			/* CURLcode, 0 when ok */
    char    error[300];			/* transport error text */
    long long fd_bytes;			/* to_fd: body bytes written to out_fd */
    int     too_big;			/* to_fd: stopped past max_bytes */
};

extern struct http *http_create(const struct conf *, char *err, size_t errlen);
extern void http_free(struct http *);
extern void http_resp_init(struct http_resp *);
extern void http_resp_free(struct http_resp *);
extern int http_resp_timed_out(const struct http_resp *);
extern int http_perform(struct http *, const struct http_req *,
			        struct http_resp *);
extern void http_set_progress(struct http *, void (*cb) (void *),
			              void *arg, int interval);
extern int http_form_add(struct strbuf *form, const char *name,
			         const char *value);	/* x-www-form-urlencoded */
extern int http_url_under(const char *base, const char *url);
extern void http_set_account(struct http *, const struct conf *,
			             const struct conf_account *);
extern int http_idle_close(struct http *, double now);
extern double http_idle_deadline(const struct http *);

#endif
