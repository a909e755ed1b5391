/*
 * NAME
 *	http 3
 * SUMMARY
 *	HTTPS client for the identity platform and Graph (libcurl)
 * DESCRIPTION
 *	See http.h.  One easy handle per struct http; every request starts
 *	with curl_easy_reset(), which drops the options of the previous
 *	request but keeps the connection cache, the TLS session cache and
 *	the DNS cache, so a process that talks to the token endpoint and
 *	then to Graph reuses both connections.  Kept-alive connections:
 *	CURLOPT_MAXAGE_CONN (idle_timeout) keeps libcurl from reusing one
 *	that idled too long, http_idle_close() closes idle ones without a
 *	request, and http_prereq_cb() refuses libcurl's second attempt of
 *	a request whose unrewindable body had started to go out.
 *
 *	Security (style.md rule 18): https only (plain http only to
 *	127.0.0.1, [::1] and localhost), peer and host verification on,
 *	TLS >= 1.2, redirects never followed, CURLOPT_VERBOSE never set
 *	(it would print the Authorization header).  Header values are
 *	checked for CR/LF so that foreign text cannot inject headers.  The
 *	copies of the Authorization header in the header list are wiped
 *	before they are freed.  The bearer-token check sits here, in the
 *	one function every request passes, so that no caller (a nextLink,
 *	a deltaLink read back from a state file written under another
 *	graph_url) can forget it.
 * DIAGNOSTICS
 *	http_perform() returns 0 when an HTTP response arrived, -1 on a
 *	transport error with resp->error and resp->curl_code set.  When
 *	the transfer broke after the status line arrived, resp->status
 *	still holds that status; callers decide on the return value.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <dirent.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "http.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "util.h"

#ifdef PACKAGE_VERSION
#define HTTP_USER_AGENT	"m365relay/" PACKAGE_VERSION
#else
#define HTTP_USER_AGENT	"m365relay"
#endif

/*
 * A kept-alive connection is closed after this many seconds even when in
 * use, so that a resident program follows DNS changes of the service.
 */
#define HTTP_MAX_LIFETIME	900


struct http {
    CURL   *curl;
    char   *ca_file;			/* or NULL */
    char   *graph_url;			/* bearer tokens go only under it */
    struct proxy *proxy;		/* proxy, ca_extra_file (proxy.h) */
    long    timeout;
    long    connect_timeout;
    char    errbuf[CURL_ERROR_SIZE];
    void    (*progress_cb) (void *);	/* or NULL: no progress calls */
    void   *progress_arg;
    double  progress_interval;		/* seconds */
    double  progress_last;		/* time_mono() of the last call */
    long    idle_timeout;		/* seconds a connection may idle */
    int     ca_dir_missed;		/* the system CA was in the bundle only */
    double  last_used;			/* time_mono() after the last request;
					 * 0: no connection open */
};

/* Per-request state shared with the libcurl callbacks. */
struct http_xfer {
    const struct http_req *req;
    struct http_resp *resp;
    long long sent;			/* streamed bytes handed to curl */
    int     eof;			/* read_cb returned 0 */
    int     body_too_big;
    int     fd_too_big;			/* to_fd body passed req->max_bytes */
    int     fd_errno;			/* write to out_fd failed */
    int     fd_mode;			/* -1 undecided, 0 memory, 1 out_fd */
    CURL   *curl;
    char    req_id[80];			/* response "request-id" */
    char    client_req_id[80];		/* response "client-request-id" */
    int     attempts;			/* connections tried (prereq calls) */
    int     resend_refused;		/* a retry after body bytes: stopped */
};

static pthread_once_t http_global_once = PTHREAD_ONCE_INIT;
static CURLcode http_global_rc;
static char *http_ca_dir;		/* hashed system CA directory */
static char *http_ca_bundle;		/* libcurl's default CA bundle */

/*
 * http_ca_dir_hashed - does dir hold OpenSSL hash links (HHHHHHHH.N)?
 * Then a TLS handshake loads only the CA it needs from it, by hash,
 * instead of parsing every certificate of libcurl's default bundle
 * (~140 on Debian: about 60 % of the CPU of a one-message m365-relay).
 * A CA that is in the bundle only (added by hand) is still found: a
 * failed verification is tried again with the bundle (http_perform()).
 */
static int http_ca_dir_hashed(const char *dir)
{
    DIR    *dp;
    struct dirent *de;
    int     found = 0;

    if ((dp = opendir(dir)) == NULL)
	return (0);
    while (!found && (de = readdir(dp)) != NULL)
	found = (strlen(de->d_name) == 10
		 && strspn(de->d_name, "0123456789abcdef") == 8
		 && de->d_name[8] == '.' && isdigit((unsigned char) de->d_name[9]));
    closedir(dp);
    return (found);
}

/* http_global_init - curl_global_init() once per process, thread-safe */

static void http_global_init(void)
{
    const char *dir = X509_get_default_cert_dir();
    char   *p;
    CURL   *c;

    if ((http_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT)) != CURLE_OK)
	return;
#if LIBCURL_VERSION_NUM >= 0x075400
    /* libcurl's own defaults: its CA directory first, and its bundle. */
    if ((c = curl_easy_init()) != NULL) {
	if (curl_easy_getinfo(c, CURLINFO_CAPATH, &p) == CURLE_OK && p && *p)
	    dir = p;
	if (dir != NULL && http_ca_dir_hashed(dir))
	    http_ca_dir = xstrdup(dir);
	if (curl_easy_getinfo(c, CURLINFO_CAINFO, &p) == CURLE_OK && p && *p)
	    http_ca_bundle = xstrdup(p);
	curl_easy_cleanup(c);
    }
#else
    (void) c;
    (void) p;
    (void) dir;
#endif
}

/* http_create - one reusable client for the whole process */

struct http *http_create(const struct conf *conf, char *err, size_t errlen)
{
    struct http *h;
    CURLcode rc;

    (void) pthread_once(&http_global_once, http_global_init);
    if ((rc = http_global_rc) != CURLE_OK) {
	snprintf(err, errlen, "cannot initialize libcurl: %s",
		 curl_easy_strerror(rc));
	return (NULL);
    }
    h = xcalloc(1, sizeof(*h));
    if ((h->curl = curl_easy_init()) == NULL) {
	snprintf(err, errlen, "cannot create a libcurl handle "
		 "(out of memory?)");
	free(h);
	return (NULL);
    }
    if (conf != NULL) {
	h->ca_file = (conf->ca_file && *conf->ca_file) ?
	    xstrdup(conf->ca_file) : NULL;
	h->graph_url = (conf->graph_url && *conf->graph_url) ?
	    xstrdup(conf->graph_url) : NULL;
	h->timeout = conf->timeout;
	h->connect_timeout = conf->connect_timeout;
	h->idle_timeout = conf->idle_timeout;
    }
    /* No configuration (or one made by hand): the table's defaults. */
    if (h->timeout <= 0)
	h->timeout = CONF_DEF_TIMEOUT;
    if (h->connect_timeout <= 0)
	h->connect_timeout = CONF_DEF_CONNECT_TIMEOUT;
    if (h->idle_timeout <= 0)
	h->idle_timeout = CONF_DEF_IDLE_TIMEOUT;
    if ((h->proxy = proxy_create(conf, err, errlen)) == NULL) {
	http_free(h);
	return (NULL);
    }
    return (h);
}

/*
 * http_idle_deadline - time_mono() at which the connections of h are due
 * to be closed (last request + idle_timeout); 0 when none is open.
 */
double  http_idle_deadline(const struct http *h)
{
    return (h->last_used > 0 ? h->last_used + (double) h->idle_timeout : 0);
}

/*
 * http_idle_close - close the connections of h when they have been idle
 * for idle_timeout at time now (time_mono()), or at once when now < 0.
 * A new easy handle replaces the old one (libcurl has no call that only
 * closes its connection cache); settings live in struct http, so the
 * next request is the same.  Returns 1 when connections were closed.
 * h must not be in use by another thread.
 */
int     http_idle_close(struct http *h, double now)
{
    CURL   *fresh;

    if (h->last_used <= 0 || (now >= 0 && now < http_idle_deadline(h)))
	return (0);
    if ((fresh = curl_easy_init()) == NULL)
	return (0);			/* keep the old one; try again later */
    curl_easy_cleanup(h->curl);
    h->curl = fresh;
    h->last_used = 0;
    return (1);
}

/* http_free - close connections, release the handle; NULL is ok */

void    http_free(struct http *h)
{
    if (h == NULL)
	return;
    curl_easy_cleanup(h->curl);
    proxy_free(h->proxy);
    free(h->ca_file);
    free(h->graph_url);
    free(h);
}

/* http_resp_init - empty response, body capped at STRBUF_MAX_JSON */

void    http_resp_init(struct http_resp *resp)
{
    memset(resp, 0, sizeof(*resp));
    strbuf_init(&resp->body, STRBUF_MAX_JSON);
    resp->retry_after = -1;
}

/* http_resp_free - wipe and release the body (it may hold tokens) */

void    http_resp_free(struct http_resp *resp)
{
    strbuf_cleanse(&resp->body);
}

/*
 * http_resp_timed_out - did the transport fail because a time limit ran
 * out (timeout, connect_timeout, low-speed limit)?  Callers ask here
 * instead of knowing libcurl's error numbers.
 */
int     http_resp_timed_out(const struct http_resp *resp)
{
    return (resp->curl_code == (int) CURLE_OPERATION_TIMEDOUT);
}

/* http_set_progress - call cb(arg) every interval s during requests */

void    http_set_progress(struct http *h, void (*cb) (void *), void *arg,
			          int interval)
{
    h->progress_cb = cb;
    h->progress_arg = cb ? arg : NULL;
    h->progress_interval = interval < 1 ? 1 : interval;
    h->progress_last = time_mono();
}

/* http_set_account - later requests take this account's proxy */

void    http_set_account(struct http *h, const struct conf *conf,
			         const struct conf_account *acct)
{
    proxy_set_account(h->proxy, conf, acct);
}

/* http_form_add - append name=value, percent-encoded, '&'-separated */

int     http_form_add(struct strbuf *form, const char *name, const char *value)
{
    char   *n, *v;
    int     ret;

    n = url_escape(name);
    v = url_escape(value ? value : "");
    ret = strbuf_printf(form, "%s%s=%s", form->len ? "&" : "", n, v);
    free(n);
    xfree_secret(v);			/* values may be secrets */
    return (ret);
}

/*
 * http_url_under - does url lie under base (scheme, host and port as in
 * base, then "/")?  Trailing slashes of base do not count; an empty or
 * missing base contains nothing.
 */
int     http_url_under(const char *base, const char *url)
{
    size_t  n;

    if (base == NULL || url == NULL)
	return (0);
    n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
	n--;
    return (n > 0 && strncasecmp(url, base, n) == 0 && url[n] == '/');
}

/* http_url_origin - "scheme://host[:port]" of a URL, printable */

static void http_url_origin(char *buf, size_t len, const char *url)
{
    const char *p = strstr(url, "://");
    size_t  n;

    n = p ? (size_t) (p + 3 - url) + strcspn(p + 3, "/?#") : strlen(url);
    log_printable(buf, len, url, n);
}

/* http_url_allowed - https, or http to a loopback host only */

static int http_url_allowed(const char *url, int *plain_http)
{
    static const char *const loopback[] = {
	"http://127.0.0.1", "http://[::1]", "http://localhost", 0,
    };
    const char *const *lp;
    size_t  n;

    *plain_http = 0;
    if (strncasecmp(url, "https://", 8) == 0)
	return (1);
    for (lp = loopback; *lp; lp++) {
	n = strlen(*lp);
	if (strncasecmp(url, *lp, n) == 0
	    && (url[n] == 0 || url[n] == ':' || url[n] == '/'
		|| url[n] == '?')) {
	    *plain_http = 1;
	    return (1);
	}
    }
    return (0);
}

/* http_has_crlf - refuse header text that would start a new header */

static int http_has_crlf(const char *s)
{
    return (s != NULL && strpbrk(s, "\r\n") != NULL);
}

/* http_trim_copy - copy a header value without blanks, printable */

static void http_trim_copy(char *dst, size_t dstlen, const char *val,
			           size_t len)
{
    while (len > 0 && (*val == ' ' || *val == '\t')) {
	val++;
	len--;
    }
    while (len > 0 && isspace((unsigned char) val[len - 1]))
	len--;
    log_printable(dst, dstlen, val, len);
}

/* http_retry_after - seconds from a Retry-After value; -1 if invalid */

static long http_retry_after(const char *val)
{
    long    secs;
    time_t  when;

    if (parse_long(val, 0, 100000000L, &secs) == 0)
	return (secs);
    /* Delta-seconds beyond any sane wait: still a wait (callers cap it). */
    if (*val != 0 && strspn(val, "0123456789") == strlen(val))
	return (100000000L);
    if ((when = curl_getdate(val, NULL)) == (time_t) -1)
	return (-1);
    secs = (long) (when - time(NULL));
    return (secs < 0 ? 0 : secs);
}

/* http_header_cb - capture request-id, Retry-After, Content-Type */

static size_t http_header_cb(char *buf, size_t size, size_t nmemb, void *ctx)
{
    struct http_xfer *x = ctx;
    size_t  len = size * nmemb;
    const char *colon;
    const char *vp;
    size_t  nlen, vlen;
    char    val[100];

    /* A new status line: forget the headers of an interim response. */
    if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
	x->req_id[0] = x->client_req_id[0] = 0;
	x->resp->content_type[0] = 0;
	x->resp->retry_after = -1;
	return (len);
    }
    if ((colon = memchr(buf, ':', len)) == NULL)
	return (len);
    nlen = (size_t) (colon - buf);
    vp = colon + 1;
    vlen = len - nlen - 1;

#define HTTP_IS(name) (nlen == sizeof(name) - 1 \
	&& strncasecmp(buf, (name), nlen) == 0)

    if (HTTP_IS("request-id")) {
	http_trim_copy(x->req_id, sizeof(x->req_id), vp, vlen);
    } else if (HTTP_IS("client-request-id")) {
	http_trim_copy(x->client_req_id, sizeof(x->client_req_id), vp, vlen);
    } else if (HTTP_IS("retry-after")) {
	http_trim_copy(val, sizeof(val), vp, vlen);
	x->resp->retry_after = http_retry_after(val);
    } else if (HTTP_IS("content-type")) {
	http_trim_copy(x->resp->content_type,
		       sizeof(x->resp->content_type), vp, vlen);
    }
#undef HTTP_IS
    return (len);
}

/* http_write_cb - collect the body, refuse it past its cap */

static size_t http_write_cb(char *buf, size_t size, size_t nmemb, void *ctx)
{
    struct http_xfer *x = ctx;
    size_t  len = size * nmemb;
    long    status = 0;

    /* Streamed download: decide once, on the first body bytes. */
    if (x->fd_mode < 0) {
	curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &status);
	x->fd_mode = (x->req->to_fd && status >= 200 && status < 300);
    }
    if (x->fd_mode > 0) {
	if (x->req->max_bytes > 0
	    && x->resp->fd_bytes + (long long) len > x->req->max_bytes) {
	    x->fd_too_big = 1;
	    x->resp->too_big = 1;
	    return (0);				/* CURLE_WRITE_ERROR */
	}
	if (file_write_all(x->req->out_fd, buf, len) < 0) {
	    x->fd_errno = errno ? errno : EIO;
	    return (0);				/* CURLE_WRITE_ERROR */
	}
	x->resp->fd_bytes += (long long) len;
	return (len);
    }
    if (strbuf_append(&x->resp->body, buf, len) < 0) {
	x->body_too_big = 1;
	return (0);				/* CURLE_WRITE_ERROR */
    }
    return (len);
}

/* http_read_cb - stream the request body, counting what was sent */

static size_t http_read_cb(char *buf, size_t size, size_t nmemb, void *ctx)
{
    struct http_xfer *x = ctx;
    size_t  n;

    n = x->req->read_cb(buf, size, nmemb, x->req->read_arg);
    if (n == CURL_READFUNC_ABORT || n == CURL_READFUNC_PAUSE)
	return (n);
    if (n == 0)
	x->eof = 1;
    x->sent += (long long) n;
    return (n);
}

/* http_seek_cb - rewind the streamed body for a resend */

static int http_seek_cb(void *ctx, curl_off_t offset, int origin)
{
    struct http_xfer *x = ctx;

    if (offset != 0 || origin != SEEK_SET || x->req->rewind_cb == NULL)
	return (CURL_SEEKFUNC_CANTSEEK);
    if (x->req->rewind_cb(x->req->read_arg) != 0)
	return (CURL_SEEKFUNC_FAIL);
    x->sent = 0;
    x->eof = 0;
    return (CURL_SEEKFUNC_OK);
}

#if LIBCURL_VERSION_NUM >= 0x075000

/*
 * http_prereq_cb - called before each attempt to send the request, on a
 * connection that is up.  libcurl makes a second attempt on a new
 * connection when a reused one turns out dead before any response byte
 * arrived; for a streamed body that cannot be rewound (sendMail) that
 * is refused once any body byte left, whatever libcurl's rewind logic
 * would do: the message is sent at most once per http_perform().
 */
static int http_prereq_cb(void *ctx, char *conn_primary_ip,
			          char *conn_local_ip, int conn_primary_port,
			          int conn_local_port)
{
    struct http_xfer *x = ctx;

    (void) conn_primary_ip;
    (void) conn_local_ip;
    (void) conn_primary_port;
    (void) conn_local_port;
    if (x->attempts++ > 0 && x->sent > 0) {
	x->resend_refused = 1;
	return (CURL_PREREQFUNC_ABORT);
    }
    return (CURL_PREREQFUNC_OK);
}

#endif

/*
 * http_xferinfo_cb - libcurl calls this about once a second (more often
 * while data flows), also while it connects or waits for the response;
 * pass it on at most once per interval.  Never aborts the transfer.
 */
static int http_xferinfo_cb(void *ctx, curl_off_t dltotal, curl_off_t dlnow,
			            curl_off_t ultotal, curl_off_t ulnow)
{
    struct http *h = ctx;
    double  now = time_mono();

    (void) dltotal;
    (void) dlnow;
    (void) ultotal;
    (void) ulnow;
    if (h->progress_cb != NULL
	&& now - h->progress_last >= h->progress_interval) {
	h->progress_last = now;
	h->progress_cb(h->progress_arg);
    }
    return (0);
}

/* http_slist_free - wipe every header (one is Authorization), free */

static void http_slist_free(struct curl_slist *list)
{
    struct curl_slist *p;

    for (p = list; p; p = p->next)
	OPENSSL_cleanse(p->data, strlen(p->data));
    curl_slist_free_all(list);
}

/* http_slist_add - append one header; 0 on success */

static int http_slist_add(struct curl_slist **list, const char *line)
{
    struct curl_slist *n;

    if ((n = curl_slist_append(*list, line)) == NULL)
	return (-1);
    *list = n;
    return (0);
}

/* http_build_headers - the request headers, or -1 with resp->error */

static int http_build_headers(const struct http_req *req,
			              struct http_resp *resp,
			              struct curl_slist **list,
			              char *client_id, size_t idlen)
{
    struct strbuf line;
    const char *const *hp;
    int     bad = 0;

    *list = NULL;
    if (http_has_crlf(req->bearer) || http_has_crlf(req->content_type)) {
	snprintf(resp->error, sizeof(resp->error),
		 "refusing a request header that contains CR or LF");
	return (-1);
    }
    for (hp = req->headers; hp && *hp; hp++) {
	if (http_has_crlf(*hp) || strchr(*hp, ':') == NULL) {
	    snprintf(resp->error, sizeof(resp->error),
		     "refusing a malformed extra request header");
	    return (-1);
	}
    }
    if (random_uuid(client_id, idlen) < 0) {
	snprintf(resp->error, sizeof(resp->error), "no request sent: no "
		 "random bytes for its client-request-id (OpenSSL's random "
		 "generator and /dev/urandom both failed)");
	return (-1);
    }
    strbuf_init(&line, STRBUF_MAX_JSON);
    if (req->bearer) {
	bad |= strbuf_printf(&line, "Authorization: Bearer %s", req->bearer);
	bad |= http_slist_add(list, strbuf_str(&line));
	strbuf_cleanse(&line);
    }
    if (req->content_type) {
	strbuf_init(&line, STRBUF_MAX_SMALL);
	bad |= strbuf_printf(&line, "Content-Type: %s", req->content_type);
	bad |= http_slist_add(list, strbuf_str(&line));
	strbuf_free(&line);
    } else if (req->body || req->read_cb
	       || (req->method && strcmp(req->method, "POST") == 0)) {
	/* No made-up application/x-www-form-urlencoded from libcurl. */
	bad |= http_slist_add(list, "Content-Type:");
    }
    strbuf_init(&line, STRBUF_MAX_SMALL);
    bad |= strbuf_printf(&line, "client-request-id: %s", client_id);
    bad |= http_slist_add(list, strbuf_str(&line));
    strbuf_free(&line);
    /* Save the 100-continue round trip (curl waits up to 1 s for it). */
    bad |= http_slist_add(list, "Expect:");
    for (hp = req->headers; hp && *hp; hp++)
	bad |= http_slist_add(list, *hp);
    if (bad) {
	http_slist_free(*list);
	*list = NULL;
	snprintf(resp->error, sizeof(resp->error),
		 "cannot build the request headers (header too long or "
		 "out of memory)");
	return (-1);
    }
    return (0);
}

/*
 * http_set_method - method and body options.  Every method with a body
 * goes through libcurl's POST machinery (CUSTOMREQUEST renames it), so
 * in-memory and streamed bodies work the same for POST, PATCH and PUT.
 */
static void http_set_method(CURL *c, const struct http_req *req,
			            struct http_xfer *x)
{
    const char *method = req->method ? req->method : "GET";
    int     streamed = (req->read_cb != NULL);
    int     has_body = streamed || req->body != NULL;

    if (!has_body && strcmp(method, "POST") != 0) {
	curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	if (strcmp(method, "GET") != 0)
	    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	return;
    }
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    if (streamed) {
	curl_easy_setopt(c, CURLOPT_READFUNCTION, http_read_cb);
	curl_easy_setopt(c, CURLOPT_READDATA, x);
	curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, http_seek_cb);
	curl_easy_setopt(c, CURLOPT_SEEKDATA, x);
	/* A negative length means "unknown": chunked encoding. */
	if (req->read_len >= 0)
	    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
			     (curl_off_t) req->read_len);
    } else {
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
			 (curl_off_t) (req->body ? req->body_len : 0));
	curl_easy_setopt(c, CURLOPT_POSTFIELDS,
			 req->body ? (const char *) req->body : "");
    }
    if (strcmp(method, "POST") != 0)
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
}

/* http_perform - one request; 0 = got a response, -1 = transport error */

int     http_perform(struct http *h, const struct http_req *req,
		             struct http_resp *resp)
{
    struct http_xfer x;
    struct curl_slist *hdrs = NULL;
    char    client_id[40];
    const char *method = req->method ? req->method : "GET";
    CURL   *c = h->curl;
    CURLcode rc;
    curl_off_t up = 0;
    double  t0 = time_mono();
    int     by_ca_dir = (h->ca_file == NULL && http_ca_dir != NULL
			 && !h->ca_dir_missed);
    int     plain_http;
    long    status = 0;

    /* Forget the outcome of an earlier request with this resp. */
    strbuf_cleanse(&resp->body);
    resp->status = 0;
    resp->request_id[0] = resp->content_type[0] = resp->error[0] = 0;
    resp->retry_after = -1;
    resp->upload_done = 0;
    resp->curl_code = 0;
    resp->fd_bytes = 0;
    resp->too_big = 0;

    if (req->url == NULL) {
	/* A URL builder returns NULL rather than a URL cut short. */
	snprintf(resp->error, sizeof(resp->error), "no request sent: its URL "
		 "would be longer than %lu bytes (a name in the configuration "
		 "or in a reply from Microsoft is far too long)",
		 (unsigned long) STRBUF_MAX_SMALL);
	resp->curl_code = CURLE_URL_MALFORMAT;
	return (-1);
    }
    if (!http_url_allowed(req->url, &plain_http)) {
	char    shown[120];

	log_printable(shown, sizeof(shown), req->url, strlen(req->url));
	snprintf(resp->error, sizeof(resp->error), "refusing URL %s: only "
		 "https (or http to 127.0.0.1, [::1], localhost) is allowed",
		 shown);
	resp->curl_code = CURLE_UNSUPPORTED_PROTOCOL;
	return (-1);
    }
    if (req->bearer != NULL && !http_url_under(h->graph_url, req->url)) {
	char    shown[120];

	http_url_origin(shown, sizeof(shown), req->url);
	snprintf(resp->error, sizeof(resp->error), "refusing to send the "
		 "access token to %s: it is not under graph_url %.100s",
		 shown, h->graph_url ? h->graph_url : "(not set)");
	resp->curl_code = CURLE_BAD_FUNCTION_ARGUMENT;
	return (-1);
    }
    if (http_build_headers(req, resp, &hdrs, client_id,
			   sizeof(client_id)) < 0) {
	resp->curl_code = CURLE_BAD_FUNCTION_ARGUMENT;
	return (-1);
    }
    memset(&x, 0, sizeof(x));
    x.req = req;
    x.resp = resp;
    x.curl = c;
    x.fd_mode = -1;

    curl_easy_reset(c);
    h->errbuf[0] = 0;
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(c, CURLOPT_URL, req->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, plain_http ? "http,https" :
		     "https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, plain_http ?
		     (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS) :
		     (long) CURLPROTO_HTTPS);
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, (long) CURLPROTO_HTTPS);
#endif
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);
    if (h->ca_file) {
	curl_easy_setopt(c, CURLOPT_CAINFO, h->ca_file);
	/* Instead of the system store: not its hashed directory either. */
	curl_easy_setopt(c, CURLOPT_CAPATH, (char *) 0);
    } else if (by_ca_dir) {
	/* The system store, by hash: not the whole bundle (see above). */
	curl_easy_setopt(c, CURLOPT_CAINFO, (char *) 0);
	curl_easy_setopt(c, CURLOPT_CAPATH, http_ca_dir);
    }
    if (proxy_apply(h->proxy, c, req->url, resp->error,
		    sizeof(resp->error)) < 0) {
	http_slist_free(hdrs);
	resp->curl_code = CURLE_LOGIN_DENIED;
	return (-1);
    }
    curl_easy_setopt(c, CURLOPT_TIMEOUT, req->timeout > 0 ? req->timeout :
		     h->timeout);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, h->connect_timeout);
    /* Never reuse a connection that idled longer than idle_timeout. */
    curl_easy_setopt(c, CURLOPT_MAXAGE_CONN, h->idle_timeout);
#if LIBCURL_VERSION_NUM >= 0x075000
    curl_easy_setopt(c, CURLOPT_MAXLIFETIME_CONN, (long) HTTP_MAX_LIFETIME);
    if (req->read_cb != NULL && req->rewind_cb == NULL) {
	curl_easy_setopt(c, CURLOPT_PREREQFUNCTION, http_prereq_cb);
	curl_easy_setopt(c, CURLOPT_PREREQDATA, &x);
    }
#endif
    if (req->low_speed_time > 0) {
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, req->low_speed_limit > 0 ?
			 req->low_speed_limit : 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, req->low_speed_time);
    }
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, HTTP_USER_AGENT);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, http_header_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
    http_set_method(c, req, &x);
    if (h->progress_cb != NULL) {
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, http_xferinfo_cb);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, h);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    }

    rc = curl_easy_perform(c);
    if (rc == CURLE_PEER_FAILED_VERIFICATION && by_ca_dir && x.sent == 0
	&& http_ca_bundle != NULL) {
	/* Nothing was sent: the handshake failed.  Perhaps the bundle only. */
	h->ca_dir_missed = 1;
	h->errbuf[0] = 0;
	curl_easy_setopt(c, CURLOPT_CAINFO, http_ca_bundle);
	rc = curl_easy_perform(c);
    }
    h->last_used = time_mono();

    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(c, CURLINFO_SIZE_UPLOAD_T, &up);
    resp->status = status;
    resp->curl_code = (int) rc;
    metrics_http(req->bearer != NULL, status);
    snprintf(resp->request_id, sizeof(resp->request_id), "%s",
	     x.req_id[0] ? x.req_id : x.client_req_id);
    if (req->read_cb)
	resp->upload_done = req->read_len >= 0 ?
	    (x.sent == req->read_len) : x.eof;
    else if (req->body)
	resp->upload_done = (up >= (curl_off_t) req->body_len
			     && (status != 0 || rc == CURLE_OK));
    else
	resp->upload_done = (status != 0);

    /* Libcurl keeps only a pointer to the list: detach before freeing. */
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, (struct curl_slist *) 0);
    http_slist_free(hdrs);

    if (rc != CURLE_OK) {
	char    detail[CURL_ERROR_SIZE];
	const char *what = curl_easy_strerror(rc);

	if (x.body_too_big)
	    snprintf(detail, sizeof(detail), "the response body is larger "
		     "than %lu bytes", (unsigned long) resp->body.max);
	else if (x.fd_too_big)
	    snprintf(detail, sizeof(detail), "the response body is larger "
		     "than %lld bytes", req->max_bytes);
	else if (x.fd_errno)
	    snprintf(detail, sizeof(detail), "cannot write the response "
		     "body to its spool file: %s", strerror(x.fd_errno));
	else if (x.resend_refused)
	    snprintf(detail, sizeof(detail), "the kept-alive connection "
		     "closed while the request body was being sent; not "
		     "sending it again on a new connection");
	else
	    log_printable(detail, sizeof(detail), h->errbuf,
			  strlen(h->errbuf));
	snprintf(resp->error, sizeof(resp->error), "%s%s%s", what,
		 detail[0] ? ": " : "", detail);
	proxy_explain(h->proxy, c, (int) rc, &resp->status, resp->error,
		      sizeof(resp->error));
	if (log_verbose() >= 2)
	    msg_debug("http: %s %s: %s (client-request-id=%s, %.3fs)",
		      method, req->url, resp->error, client_id,
		      time_mono() - t0);
	return (-1);
    }
    if (log_verbose() >= 2)
	msg_debug("http: %s %s -> %ld request-id=%s client-request-id=%s "
		  "(%.3fs)", method, req->url, status,
		  resp->request_id[0] ? resp->request_id : "-", client_id,
		  time_mono() - t0);
    return (0);
}
