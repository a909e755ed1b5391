/*
 * NAME
 *	lmtp 3
 * SUMMARY
 *	m365-lmtpd: one LMTP session (RFC 2033) over the delivery core
 * DESCRIPTION
 *	See lmtp.h.  Input is read into a 64 KB buffer; a command is one
 *	line of it (longer lines are refused and skipped).  Replies go to
 *	an output buffer that is written before the session waits for
 *	input, so a pipelining client gets all replies of its batch in
 *	one write and a client that waits for each reply gets it at once.
 *
 *	DATA: at the start of each line a "." CRLF (or "." LF) ends the
 *	message and a leading "." is removed (RFC 5321 section 4.5.2);
 *	everything else goes unchanged to msg_stream_put(), which makes
 *	line ends CRLF and spools the body.  A message over the largest
 *	max_message_size is read to its end and then refused (5.3.4)
 *	for every recipient.
 *
 *	Nothing is answered for a message before deliver() returned: a
 *	session that breaks earlier (the client went away, the server
 *	stops) leaves the message in the client's queue, and the send
 *	ledger keeps a retry from sending it twice.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "addr.h"
#include "deliver.h"
#include "httppool.h"
#include "lmtp.h"
#include "log.h"
#include "mime.h"
#include "msg.h"
#include "util.h"

#define LMTP_RBUF	(64 * 1024)	/* input buffer; longest command */
#define LMTP_OUT_MAX	(1024 * 1024)	/* buffered replies (500 RCPTs) */
#define LMTP_TEXT_MAX	400		/* result text in a reply line */
#define LMTP_QID_MAX	40

 /*
  * The configuration: reference-counted, replaced on reload.
  */
static pthread_mutex_t lmtp_conf_lock = PTHREAD_MUTEX_INITIALIZER;
static struct lmtp_conf *lmtp_conf_cur;
static unsigned long lmtp_conf_gen;
static volatile int lmtp_stop_flag;

/* lmtp_conf_drop - one reference less; free at the last (lock held) */

static void lmtp_conf_drop(struct lmtp_conf *cf)
{
    if (cf != NULL && --cf->refs == 0) {
	conf_free(cf->conf);
	free(cf);
    }
}

/* lmtp_conf_install - conf becomes the current configuration */

void    lmtp_conf_install(struct conf *conf)
{
    struct lmtp_conf *cf = xcalloc(1, sizeof(*cf));

    cf->conf = conf;
    cf->refs = 1;
    pthread_mutex_lock(&lmtp_conf_lock);
    cf->gen = ++lmtp_conf_gen;
    lmtp_conf_drop(lmtp_conf_cur);
    lmtp_conf_cur = cf;
    pthread_mutex_unlock(&lmtp_conf_lock);
}

/* lmtp_conf_acquire - a reference to the current configuration, or NULL */

struct lmtp_conf *lmtp_conf_acquire(void)
{
    struct lmtp_conf *cf;

    pthread_mutex_lock(&lmtp_conf_lock);
    if ((cf = lmtp_conf_cur) != NULL)
	cf->refs++;
    pthread_mutex_unlock(&lmtp_conf_lock);
    return (cf);
}

/* lmtp_conf_release - drop a reference */

void    lmtp_conf_release(struct lmtp_conf *cf)
{
    pthread_mutex_lock(&lmtp_conf_lock);
    lmtp_conf_drop(cf);
    pthread_mutex_unlock(&lmtp_conf_lock);
}

/* lmtp_conf_shutdown - no current configuration any more */

void    lmtp_conf_shutdown(void)
{
    pthread_mutex_lock(&lmtp_conf_lock);
    lmtp_conf_drop(lmtp_conf_cur);
    lmtp_conf_cur = NULL;
    pthread_mutex_unlock(&lmtp_conf_lock);
}

/* lmtp_stop - every session ends at its next wait for input */

void    lmtp_stop(void)
{
    lmtp_stop_flag = 1;
}

/* lmtp_stopping - was lmtp_stop() called? */

int     lmtp_stopping(void)
{
    return (lmtp_stop_flag);
}

/* lmtp_reply_code - the LMTP reply code for a result */

int     lmtp_reply_code(const struct m365_result *res)
{
    switch (res->dsn[0]) {
    case '2':
	return (250);
    case '4':
	return (strcmp(res->dsn, "4.5.3") == 0 ? 452 : 451);
    case '5':
	if (strcmp(res->dsn, "5.3.4") == 0)
	    return (552);
	return (strncmp(res->dsn, "5.6.", 4) == 0 ? 554 : 550);
    default:
	return (451);
    }
}

/*
 * lmtp_rejected_rcpt - the recipient a Graph refusal names: Exchange
 * says "Recipient 'x' is not resolved" (also with double quotes); the
 * index in rcpts, or n
 */
size_t  lmtp_rejected_rcpt(const char *text, char **rcpts, size_t n)
{
    const char *cp, *end;
    char   *name;
    size_t  i;

    for (cp = text; (cp = strcasestr(cp, "Recipient ")) != NULL; cp++) {
	const char *q = cp + 10;

	if (*q != '\'' && *q != '"')
	    continue;
	if ((end = strchr(q + 1, *q)) == NULL)
	    break;
	name = xstrndup(q + 1, (size_t) (end - q - 1));
	for (i = 0; i < n; i++)
	    if (addr_same(name, rcpts[i]))
		break;
	free(name);
	if (i < n)
	    return (i);
    }
    return (n);
}

 /*
  * One session.
  */
struct lmtp_sess {
    int     fd;
    struct lmtp_worker *w;
    char   *rbuf;			/* LMTP_RBUF bytes */
    size_t  rpos;			/* next unread byte */
    size_t  rlen;			/* bytes in rbuf */
    struct strbuf out;			/* replies not yet written */
    int     dead;			/* I/O error, time-out or stop */
    int     lhlo;			/* LHLO seen */
    int     errors;			/* bad commands */
    char    xident[LMTP_QID_MAX];	/* XFORWARD IDENT, or "" */
    char   *sender;			/* MAIL FROM given: "" for <> */
    char  **rcpts;
    size_t  nrcpts;
    double  start;			/* time_now() at MAIL */
};

/* lmtp_reply - queue one reply line */

static void lmtp_reply(struct lmtp_sess *s, const char *fmt,...)
	__attribute__((format(printf, 2, 3)));

static void lmtp_reply(struct lmtp_sess *s, const char *fmt,...)
{
    va_list ap;

    va_start(ap, fmt);
    (void) strbuf_vprintf(&s->out, fmt, ap);
    va_end(ap);
    (void) strbuf_puts(&s->out, "\r\n");
}

/* lmtp_flush - write the queued replies; -1 when the client is gone */

static int lmtp_flush(struct lmtp_sess *s)
{
    size_t  off = 0;
    ssize_t n;

    while (off < s->out.len) {
	if ((n = write(s->fd, s->out.data + off, s->out.len - off)) < 0) {
	    if (errno == EINTR)
		continue;
	    s->dead = 1;
	    break;
	}
	off += (size_t) n;
    }
    strbuf_reset(&s->out);
    return (s->dead ? -1 : 0);
}

/*
 * lmtp_fill - more input: write the queued replies first (the client
 * may wait for them), then wait at most LMTP_IDLE seconds.  Returns the
 * bytes read, 0 at the end of input, -1 on error, time-out or stop
 * (the session is then dead).
 */
static ssize_t lmtp_fill(struct lmtp_sess *s)
{
    struct pollfd pfd;
    double  until = time_mono() + LMTP_IDLE;
    ssize_t n;

    if (s->rpos > 0) {
	memmove(s->rbuf, s->rbuf + s->rpos, s->rlen - s->rpos);
	s->rlen -= s->rpos;
	s->rpos = 0;
    }
    if (s->out.len > 0 && lmtp_flush(s) < 0)
	return (-1);
    pfd.fd = s->fd;
    pfd.events = POLLIN;
    for (;;) {
	if (lmtp_stopping() || time_mono() > until) {
	    s->dead = 1;
	    return (-1);
	}
	if ((n = poll(&pfd, 1, 1000)) < 0 && errno != EINTR) {
	    s->dead = 1;
	    return (-1);
	}
	if (n > 0)
	    break;
    }
    while ((n = read(s->fd, s->rbuf + s->rlen, LMTP_RBUF - s->rlen)) < 0
	   && errno == EINTR)
	 /* again */ ;
    if (n <= 0) {
	s->dead = 1;
	return (n < 0 ? -1 : 0);
    }
    s->rlen += (size_t) n;
    return (n);
}

/*
 * lmtp_getline - the next command line, NUL-terminated, without its line
 * end; NULL when the session ends.  A line longer than the buffer is
 * skipped and *too_long set.
 */
static char *lmtp_getline(struct lmtp_sess *s, int *too_long)
{
    char   *line, *lf;

    *too_long = 0;
    for (;;) {
	if ((lf = memchr(s->rbuf + s->rpos, '\n', s->rlen - s->rpos)) != NULL)
	    break;
	if (s->rpos == 0 && s->rlen == LMTP_RBUF) {
	    *too_long = 1;			/* drop it, keep looking */
	    s->rlen = 0;
	}
	if (lmtp_fill(s) <= 0)
	    return (NULL);
    }
    line = s->rbuf + s->rpos;
    s->rpos = (size_t) (lf - s->rbuf) + 1;
    *lf = 0;
    if (lf > line && lf[-1] == '\r')
	lf[-1] = 0;
    return (line);
}

/*
 * lmtp_reset - forget the transaction (MAIL, RCPT) and the XFORWARD
 * attributes (they hold for one transaction, as in Postfix's smtpd)
 */
static void lmtp_reset(struct lmtp_sess *s)
{
    size_t  i;

    s->xident[0] = 0;

    free(s->sender);
    s->sender = NULL;
    for (i = 0; i < s->nrcpts; i++)
	free(s->rcpts[i]);
    free(s->rcpts);
    s->rcpts = NULL;
    s->nrcpts = 0;
}

/*
 * lmtp_path - the address of "<addr> params" (a source route dropped);
 * *rest points after the ">".  NULL when malformed.  free() it.
 */
static char *lmtp_path(const char *arg, const char **rest)
{
    const char *cp, *start;
    int     quoted = 0;

    while (*arg == ' ')
	arg++;
    if (*arg != '<')
	return (NULL);
    start = ++arg;
    for (cp = arg; *cp; cp++) {
	if (*cp == '\\' && quoted && cp[1])
	    cp++;
	else if (*cp == '"')
	    quoted = !quoted;
	else if (*cp == '>' && !quoted)
	    break;
    }
    if (*cp != '>')
	return (NULL);
    *rest = cp + 1;
    /* "@a,@b:user@d" (RFC 5321 source route): the mailbox only. */
    if (*start == '@') {
	const char *colon = memchr(start, ':', (size_t) (cp - start));

	if (colon == NULL)
	    return (NULL);
	start = colon + 1;
    }
    return (xstrndup(start, (size_t) (cp - start)));
}

/* lmtp_param - does word (NAME or NAME=VALUE) name param? value in *v */

static int lmtp_param(const char *word, size_t len, const char *param,
		              const char **v)
{
    size_t  n = strlen(param);

    if (len < n || strncasecmp(word, param, n) != 0)
	return (0);
    if (len == n) {
	*v = NULL;
	return (1);
    }
    if (word[n] != '=')
	return (0);
    *v = word + n + 1;
    return (1);
}

/* lmtp_mail_params - SIZE=, BODY=, SMTPUTF8; 0, or -1 after a reply */

static int lmtp_mail_params(struct lmtp_sess *s, const char *p)
{
    struct lmtp_conf *cf;
    const char *v;
    size_t  len;
    long    max;
    char   *end;
    unsigned long long size;

    for (; *p; p += len) {
	while (*p == ' ')
	    p++;
	if ((len = strcspn(p, " ")) == 0)
	    break;
	if (lmtp_param(p, len, "SIZE", &v) && v != NULL) {
	    errno = 0;
	    size = strtoull(v, &end, 10);
	    if (end == v || (end != p + len) || errno) {
		lmtp_reply(s, "501 5.5.4 bad SIZE value");
		return (-1);
	    }
	    if ((cf = lmtp_conf_acquire()) == NULL)
		continue;
	    max = conf_max_message_size(cf->conf);
	    lmtp_conf_release(cf);
	    if (max > 0 && size > (unsigned long long) max) {
		lmtp_reply(s, "552 5.3.4 message size %llu exceeds the "
			   "largest max_message_size (%ld) of any account",
			   size, max);
		return (-1);
	    }
	} else if (lmtp_param(p, len, "BODY", &v) && v != NULL
		   && ((len == 9 && strncasecmp(v, "7BIT", 4) == 0)
		       || (len == 13 && strncasecmp(v, "8BITMIME", 8) == 0))) {
	     /* Graph takes either; the MIME is sent base64-encoded. */ ;
	} else if (lmtp_param(p, len, "SMTPUTF8", &v) && v == NULL) {
	     /* The relay passes such addresses on as they are. */ ;
	} else {
	    lmtp_reply(s, "555 5.5.4 unsupported MAIL parameter %.*s",
		       (int) (len < 40 ? len : 40), p);
	    return (-1);
	}
    }
    return (0);
}

/* lmtp_mail - MAIL FROM:<sender> [params] */

static void lmtp_mail(struct lmtp_sess *s, const char *arg)
{
    const char *rest;
    char   *addr;

    if (!s->lhlo) {
	lmtp_reply(s, "503 5.5.1 send LHLO first");
	s->errors++;
	return;
    }
    if (s->sender != NULL) {
	lmtp_reply(s, "503 5.5.1 nested MAIL command");
	s->errors++;
	return;
    }
    if (strncasecmp(arg, "FROM:", 5) != 0
	|| (addr = lmtp_path(arg + 5, &rest)) == NULL) {
	lmtp_reply(s, "501 5.5.4 syntax: MAIL FROM:<address>");
	s->errors++;
	return;
    }
    if (lmtp_mail_params(s, rest) < 0) {
	free(addr);
	return;
    }
    s->sender = addr;
    s->start = time_now();
    lmtp_reply(s, "250 2.1.0 Ok");
}

/* lmtp_rcpt - RCPT TO:<recipient> */

static void lmtp_rcpt(struct lmtp_sess *s, const char *arg)
{
    const char *rest;
    char   *addr;

    if (s->sender == NULL) {
	lmtp_reply(s, "503 5.5.1 need MAIL before RCPT");
	s->errors++;
	return;
    }
    if (strncasecmp(arg, "TO:", 3) != 0
	|| (addr = lmtp_path(arg + 3, &rest)) == NULL) {
	lmtp_reply(s, "501 5.5.4 syntax: RCPT TO:<address>");
	s->errors++;
	return;
    }
    while (*rest == ' ')
	rest++;
    if (*rest) {
	lmtp_reply(s, "555 5.5.4 unsupported RCPT parameter %.40s", rest);
	free(addr);
	return;
    }
    if (*addr == 0) {
	lmtp_reply(s, "501 5.1.3 empty recipient address");
	free(addr);
	return;
    }
    if (s->nrcpts >= LMTP_MAX_RCPT) {
	lmtp_reply(s, "452 4.5.3 too many recipients (Exchange Online takes "
		   "%d per message); send the rest in another transaction",
		   LMTP_MAX_RCPT);
	free(addr);
	return;
    }
    s->rcpts = xrealloc(s->rcpts, (s->nrcpts + 1) * sizeof(char *));
    s->rcpts[s->nrcpts++] = addr;
    lmtp_reply(s, "250 2.1.5 Ok");
}

/* lmtp_xtext - decode xtext (RFC 3461 "+XX") in place */

static void lmtp_xtext(char *s)
{
    char   *out = s;
    unsigned int ch;

    for (; *s; s++) {
	if (*s == '+' && sscanf(s + 1, "%2x", &ch) == 1) {
	    *out++ = (char) ch;
	    s += 2;
	} else {
	    *out++ = *s;
	}
    }
    *out = 0;
}

/* lmtp_xforward - XFORWARD NAME=... IDENT=...: keep IDENT */

static void lmtp_xforward(struct lmtp_sess *s, char *arg)
{
    char   *word, *save = NULL;

    if (s->sender != NULL) {
	lmtp_reply(s, "503 5.5.1 XFORWARD inside a transaction");
	s->errors++;
	return;
    }
    for (word = strtok_r(arg, " ", &save); word;
	 word = strtok_r(NULL, " ", &save)) {
	if (strncasecmp(word, "IDENT=", 6) != 0)
	    continue;
	lmtp_xtext(word + 6);
	/* A queue id; "[UNAVAILABLE]" and the like are not. */
	if (word[6] && strspn(word + 6, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		   "abcdefghijklmnopqrstuvwxyz._-") == strlen(word + 6))
	    snprintf(s->xident, sizeof(s->xident), "%s", word + 6);
    }
    lmtp_reply(s, "250 2.0.0 Ok");
}

/*
 * lmtp_received_id - the queue id in the first Received: field (Postfix:
 * "... with ESMTP id 4Qx1...; date"), or 0
 */
static int lmtp_received_id(const struct msg *m, char *qid, size_t len)
{
    size_t  pos = 0, n;
    char   *v, *cp;
    int     found = 0;

    v = msg_hdr_find(m->hdr.data ? m->hdr.data : "", m->hdr.len,
		     "Received", &pos);
    if (v == NULL)
	return (0);
    for (cp = v; (cp = strstr(cp, " id ")) != NULL; cp += 4) {
	/* Unfolded: the white space after a line end stays (a tab). */
	n = strspn(cp + 4, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		   "abcdefghijklmnopqrstuvwxyz");
	if (n > 0 && n < len && (cp[4 + n] == ';' || cp[4 + n] == ' '
				 || cp[4 + n] == '\t' || cp[4 + n] == 0)) {
	    snprintf(qid, len, "%.*s", (int) n, cp + 4);
	    found = 1;
	    break;
	}
    }
    free(v);
    return (found);
}

/*
 * lmtp_queue_id - XFORWARD IDENT, else the Received: id, else "L" and 10
 * hex digits of SHA-256 over sender and header section: the same message
 * gets the same id when the client sends it again, so the Message-ID that
 * deliver() adds to a message without one is the same on every retry
 * (the send ledger and Sent Items find it); random only when hashing
 * fails or the message could not be read
 */
static void lmtp_queue_id(const struct lmtp_sess *s, const struct msg *m,
			          int have_msg, char *qid, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = NULL;
    char    hex[11];
    int     i, ok;

    if (s->xident[0]) {
	snprintf(qid, len, "%s", s->xident);
	return;
    }
    if (have_msg && lmtp_received_id(m, qid, len))
	return;
    ok = have_msg && (ctx = EVP_MD_CTX_new()) != NULL
	&& EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1
	&& EVP_DigestUpdate(ctx, s->sender, strlen(s->sender) + 1) == 1
	&& EVP_DigestUpdate(ctx, m->hdr.data ? m->hdr.data : "",
			    m->hdr.len) == 1
	&& EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen >= 5;
    EVP_MD_CTX_free(ctx);
    if (ok) {
	for (i = 0; i < 5; i++)
	    snprintf(hex + 2 * i, 3, "%02x", md[i]);
    } else if (random_hex(hex, 5) < 0) {
	snprintf(hex, sizeof(hex), "%010lx", (unsigned long) time_now());
    }
    snprintf(qid, len, "L%s", hex);
}

/*
 * lmtp_read_data - the message after 354, dot-unstuffed, into m.  -1 when
 * the session ended before the final "."
 */
static int lmtp_read_data(struct lmtp_sess *s, struct msg_stream *ms)
{
    const char *p, *lf;
    size_t  n;
    int     at_start = 1;

    for (;;) {
	if (s->rpos == s->rlen && lmtp_fill(s) <= 0)
	    return (-1);
	p = s->rbuf + s->rpos;
	n = s->rlen - s->rpos;
	if (at_start && p[0] == '.') {
	    /* ". CRLF" ends the data; ".x" is "x" (dot-stuffing). */
	    if (n < 2 || (p[1] == '\r' && n < 3)) {
		if (lmtp_fill(s) <= 0)
		    return (-1);
		continue;
	    }
	    if (p[1] == '\n' || (p[1] == '\r' && p[2] == '\n')) {
		s->rpos += p[1] == '\n' ? 2 : 3;
		return (0);
	    }
	    s->rpos++;
	    p++;
	    n--;
	}
	if ((lf = memchr(p, '\n', n)) != NULL)
	    n = (size_t) (lf - p) + 1;
	msg_stream_put(ms, p, n);
	s->rpos += n;
	at_start = lf != NULL;
    }
}

/* lmtp_pool_set - the HTTPS clients of the server (httppool.h) */

static struct http_pool *lmtp_pool;

void    lmtp_pool_set(struct http_pool *pool)
{
    lmtp_pool = pool;
}

/* lmtp_http - a kept-alive HTTPS client for cf from the pool, or NULL */

static struct http *lmtp_http(struct lmtp_conf *cf, struct m365_result *res)
{
    struct http *http = NULL;
    char    err[300];

    if (lmtp_pool == NULL)
	snprintf(err, sizeof(err), "no HTTPS client pool");
    else
	http = http_pool_get(lmtp_pool, cf->conf, cf->gen, err, sizeof(err));
    if (http == NULL)
	result_set(res, M365_SYSTEM, "4.3.0", "%s", err);
    return (http);
}

/*
 * lmtp_send - deliver to the recipients in left[] (indexes into rcpts);
 * a recipient Graph refuses by name gets that answer and the message
 * goes to the others again.  Every result lands in results[].
 */
static void lmtp_send(struct lmtp_sess *s, struct lmtp_conf *cf,
		              struct msg *m, struct delivery *d,
		              struct m365_result *results)
{
    const struct conf_account *acct;
    struct m365_result res;
    struct delivery one;
    struct http *http;
    size_t *left = xmalloc(s->nrcpts * sizeof(size_t));
    size_t  nleft = s->nrcpts, i, k;

    for (i = 0; i < nleft; i++)
	left[i] = i;
    d->rcpts = xmalloc(s->nrcpts * sizeof(char *));
    for (;;) {
	for (i = 0; i < nleft; i++)
	    d->rcpts[i] = s->rcpts[left[i]];
	d->nrcpts = nleft;
	acct = NULL;
	result_init(&res);
	if ((http = lmtp_http(cf, &res)) != NULL) {
	    (void) deliver(cf->conf, http, m, d, &res, &acct);
	    http_pool_put(lmtp_pool, http);
	}
	if (res.status == M365_PERM && strcmp(res.dsn, "5.1.1") == 0
	    && nleft > 1
	    && (k = lmtp_rejected_rcpt(res.text, d->rcpts, nleft)) < nleft) {
	    /* Nothing was sent: refuse that one, send to the others. */
	    one = *d;
	    one.rcpts = d->rcpts + k;
	    one.nrcpts = 1;
	    deliver_log(&one, cf->conf, acct, &res);
	    results[left[k]] = res;
	    memmove(left + k, left + k + 1, (nleft - k - 1) * sizeof(size_t));
	    nleft--;
	    msg_info("%s: Microsoft 365 refused one recipient by name; "
		     "sending to the other %lu", d->queue_id,
		     (unsigned long) nleft);
	    continue;
	}
	deliver_log(d, cf->conf, acct, &res);
	for (i = 0; i < nleft; i++)
	    results[left[i]] = res;
	break;
    }
    free(d->rcpts);
    d->rcpts = NULL;
    free(left);
}

/* lmtp_data - DATA: read the message, deliver, one reply per recipient */

static void lmtp_data(struct lmtp_sess *s)
{
    struct lmtp_conf *cf;
    struct m365_result *results, res;
    struct msg_stream *ms;
    struct delivery d;
    struct msg m;
    char    qid[LMTP_QID_MAX + 1];
    size_t  i;
    int     rc;

    if (s->sender == NULL || s->nrcpts == 0) {
	lmtp_reply(s, "503 5.5.1 %s", s->sender ? "no valid recipients" :
		   "need MAIL and RCPT before DATA");
	s->errors++;
	return;
    }
    if ((cf = lmtp_conf_acquire()) == NULL) {
	lmtp_reply(s, "451 4.3.0 the server is stopping");
	return;
    }
    lmtp_reply(s, "354 end data with <CR><LF>.<CR><LF>");
    ms = msg_stream_create(&m, file_tmpdir(NULL), LMTP_MEM_LIMIT,
			   (off_t) conf_max_message_size(cf->conf));
    mime_watch(&m);				/* its structure, on the way */
    if (lmtp_read_data(s, ms) < 0) {
	/* Gone or stopping: no answer; the client keeps the message. */
	msg_stream_free(ms);
	msg_free(&m);
	lmtp_conf_release(cf);
	return;
    }
    result_init(&res);
    rc = msg_stream_finish(ms, &res);
    lmtp_queue_id(s, &m, rc == 0, qid, sizeof(qid));
    memset(&d, 0, sizeof(d));
    d.queue_id = qid;
    d.sender = s->sender;
    d.start = s->start;
    results = xcalloc(s->nrcpts, sizeof(*results));
    if (rc < 0) {
	d.rcpts = s->rcpts;
	d.nrcpts = s->nrcpts;
	deliver_log(&d, cf->conf, NULL, &res);
	for (i = 0; i < s->nrcpts; i++)
	    results[i] = res;
    } else {
	lmtp_send(s, cf, &m, &d, results);
    }
    for (i = 0; i < s->nrcpts; i++)
	lmtp_reply(s, "%d %s %.*s", lmtp_reply_code(results + i),
		   results[i].dsn, LMTP_TEXT_MAX, results[i].text);
    free(results);
    msg_free(&m);
    lmtp_conf_release(cf);
    lmtp_reset(s);
}

/* lmtp_lhlo - LHLO: the extensions */

static void lmtp_lhlo(struct lmtp_sess *s, const char *arg)
{
    struct lmtp_conf *cf;
    long    max = 0;

    if (*arg == 0) {
	lmtp_reply(s, "501 5.5.4 syntax: LHLO hostname");
	s->errors++;
	return;
    }
    if ((cf = lmtp_conf_acquire()) != NULL) {
	max = conf_max_message_size(cf->conf);
	lmtp_conf_release(cf);
    }
    lmtp_reset(s);
    s->lhlo = 1;
    lmtp_reply(s, "250-%s", s->w->hostname);
    lmtp_reply(s, "250-PIPELINING");
    lmtp_reply(s, "250-ENHANCEDSTATUSCODES");
    lmtp_reply(s, "250-8BITMIME");
    lmtp_reply(s, "250-SMTPUTF8");
    if (max > 0)
	lmtp_reply(s, "250-SIZE %ld", max);
    lmtp_reply(s, "250 XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT");
}

/* lmtp_command - one command line; 1 when the session is to end */

static int lmtp_command(struct lmtp_sess *s, char *line)
{
    size_t  vlen = strcspn(line, " ");
    char   *arg = line + vlen;

    while (*arg == ' ')
	arg++;
#define VERB(v) (vlen == sizeof(v) - 1 && strncasecmp(line, v, vlen) == 0)
    if (VERB("LHLO")) {
	lmtp_lhlo(s, arg);
    } else if (VERB("MAIL")) {
	lmtp_mail(s, arg);
    } else if (VERB("RCPT")) {
	lmtp_rcpt(s, arg);
    } else if (VERB("DATA")) {
	lmtp_data(s);
    } else if (VERB("RSET")) {
	lmtp_reset(s);
	lmtp_reply(s, "250 2.0.0 Ok");
    } else if (VERB("NOOP")) {
	lmtp_reply(s, "250 2.0.0 Ok");
    } else if (VERB("XFORWARD")) {
	lmtp_xforward(s, arg);
    } else if (VERB("QUIT")) {
	lmtp_reply(s, "221 2.0.0 Bye");
	return (1);
    } else if (VERB("HELO") || VERB("EHLO")) {
	lmtp_reply(s, "500 5.5.1 this is an LMTP server: use LHLO");
	s->errors++;
    } else if (VERB("VRFY") || VERB("EXPN") || VERB("BDAT")) {
	lmtp_reply(s, "502 5.5.1 command not implemented");
	s->errors++;
    } else {
	lmtp_reply(s, "500 5.5.2 unrecognized command");
	s->errors++;
    }
#undef VERB
    if (s->errors >= LMTP_MAX_ERRORS) {
	lmtp_reply(s, "421 4.7.0 too many errors; closing the connection");
	return (1);
    }
    return (0);
}

/* lmtp_session - talk LMTP on fd until QUIT, the end, or lmtp_stop() */

void    lmtp_session(int fd, struct lmtp_worker *w)
{
    struct lmtp_sess s;
    char   *line;
    int     too_long;

    memset(&s, 0, sizeof(s));
    s.fd = fd;
    s.w = w;
    s.rbuf = xmalloc(LMTP_RBUF);
    strbuf_init(&s.out, LMTP_OUT_MAX);
    lmtp_reply(&s, "220 %s LMTP m365-lmtpd", w->hostname);
    while ((line = lmtp_getline(&s, &too_long)) != NULL) {
	if (too_long) {
	    lmtp_reply(&s, "500 5.5.2 line too long");
	    if (++s.errors >= LMTP_MAX_ERRORS)
		break;
	    continue;
	}
	if (lmtp_command(&s, line))
	    break;
    }
    if (lmtp_stopping() && s.dead && s.sender == NULL)
	lmtp_reply(&s, "421 4.3.2 m365-lmtpd is stopping");
    if (s.out.len > 0)
	(void) lmtp_flush(&s);
    lmtp_reset(&s);
    strbuf_free(&s.out);
    free(s.rbuf);
}
