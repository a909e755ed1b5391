/*
 * NAME
 *	mlfi 3
 * SUMMARY
 *	m365-milter: libmilter callbacks (filter mode and deliver mode)
 * DESCRIPTION
 *	See mlfi.h.  Callbacks stay short: the per-message decisions are
 *	in mlfi_eom_filter() and mlfi_eom_deliver(), the failure answers
 *	in policy.c, the mail logic in the relay core.
 *
 *	Threads: libmilter runs each SMTP connection in its own thread.
 *	Everything a callback touches is in the connection's context
 *	(struct mlfi_ctx) or read-only (the configuration handle); the
 *	relay core's shared state (token store, throttle files) is
 *	protected by file locks.
 *
 *	Connections: deliver mode takes an HTTPS client from one pool per
 *	process (httppool.h) for each message and gives it back after,
 *	so Graph and token connections stay open across messages and SMTP
 *	connections (at most MLFI_HTTP_IDLE kept while idle, closed after
 *	idle_timeout); a client made from an older configuration is not
 *	reused after a reload.  The pool and its timer thread start with
 *	the first message to deliver (after the signal mask is set).
 *
 *	Progress: while deliver mode waits for Graph, the struct http
 *	calls mlfi_progress() every MLFI_PROGRESS_INTERVAL seconds, which
 *	sends SMFIR_PROGRESS so that the MTA restarts its milter timeout
 *	and does not tempfail (and later resend) a message Graph is
 *	about to accept.  The environment variable
 *	M365_MILTER_PROGRESS_INTERVAL (seconds, read once at start) is
 *	for the test suite only; it is not a configuration setting.
 */
#include "config.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "addr.h"
#include "deliver.h"
#include "http.h"
#include "httppool.h"
#include "log.h"
#include "mime.h"
#include "mlfi.h"
#include "msg.h"
#include "policy.h"
#include "status.h"
#include "strbuf.h"
#include "util.h"

#define MLFI_NAME		"m365-milter"
#define MLFI_NOQUEUE		"NOQUEUE"
#define MLFI_QID_MAX		64
#define MLFI_HASH_MAX		(64 * 1024)	/* content bytes in Message-ID */
#define MLFI_PROGRESS_INTERVAL	10		/* seconds between progress */
#define MLFI_PROGRESS_ENV	"M365_MILTER_PROGRESS_INTERVAL"	/* tests */
#define MLFI_HTTP_IDLE		16		/* idle clients kept */

static int mlfi_progress_interval = MLFI_PROGRESS_INTERVAL;

/* Deliver mode: kept-alive HTTPS clients of this process. */
static pthread_once_t mlfi_pool_once = PTHREAD_ONCE_INIT;
static struct http_pool *mlfi_pool;
static char mlfi_pool_err[200];

struct mlfi_rcpt {
    char   *raw;			/* as the MTA gave it (for delrcpt) */
    char   *addr;			/* internal form */
    int     graph;			/* deliver mode: sent through Graph */
};

struct mlfi_ctx {
    /* Per message; cf == NULL: no message in progress. */
    struct mlt_conf *cf;
    const struct conf_account *acct;
    char    qid[MLFI_QID_MAX];
    char   *sender;			/* internal form, "" for <> */
    struct mlfi_rcpt *rcpts;
    size_t  nrcpts;
    size_t  rcpt_cap;
    double  start;
    long long size;			/* header + CRLF + body, CRLF form */

    /* Filter mode: what end of message needs, never the body. */
    EVP_MD_CTX *sha;			/* first MLFI_HASH_MAX content bytes */
    size_t  hashed;
    char   *from;			/* first From: value */
    char   *date;			/* Date: value */
    int     has_message_id;
    int     has_reply_to;

    /* Deliver mode: the message itself. */
    struct msg msg;
    int     msg_active;
    struct m365_result msg_err;		/* first msg_add_*() failure */
};

/* Deliver mode: what mlfi_progress() needs while Graph works. */
struct mlfi_progress {
    SMFICTX *ctx;
    const char *qid;
    double  start;			/* time_mono() before deliver_with() */
    int     failed;			/* smfi_progress() failed once */
};

/* mlfi_printable - foreign text made safe for a log line */

static const char *mlfi_printable(char *buf, size_t len, const char *text)
{
    return (log_printable(buf, len, text ? text : "", text ? strlen(text) : 0));
}

/* mlfi_qid - (re-)read the MTA queue id, macro "i" */

static void mlfi_qid(SMFICTX *ctx, struct mlfi_ctx *c)
{
    const char *q = smfi_getsymval(ctx, "i");

    if (q == NULL || *q == 0)
	q = MLFI_NOQUEUE;
    mlfi_printable(c->qid, sizeof(c->qid), q);
}

/* mlfi_msg_reset - forget the message in progress */

static void mlfi_msg_reset(struct mlfi_ctx *c)
{
    size_t  i;

    for (i = 0; i < c->nrcpts; i++) {
	free(c->rcpts[i].raw);
	free(c->rcpts[i].addr);
    }
    free(c->rcpts);
    c->rcpts = NULL;
    c->nrcpts = c->rcpt_cap = 0;
    free(c->sender);
    c->sender = NULL;
    free(c->from);
    c->from = NULL;
    free(c->date);
    c->date = NULL;
    if (c->sha) {
	EVP_MD_CTX_free(c->sha);
	c->sha = NULL;
    }
    c->hashed = 0;
    c->has_message_id = c->has_reply_to = 0;
    if (c->msg_active) {
	msg_free(&c->msg);
	c->msg_active = 0;
    }
    result_init(&c->msg_err);
    c->size = 0;
    c->acct = NULL;
    mlt_conf_release(c->cf);
    c->cf = NULL;
    snprintf(c->qid, sizeof(c->qid), "%s", MLFI_NOQUEUE);
}

/* mlfi_get - the connection's context, created on first use */

static struct mlfi_ctx *mlfi_get(SMFICTX *ctx)
{
    struct mlfi_ctx *c = smfi_getpriv(ctx);

    if (c == NULL) {
	c = xcalloc(1, sizeof(*c));
	result_init(&c->msg_err);
	snprintf(c->qid, sizeof(c->qid), "%s", MLFI_NOQUEUE);
	if (smfi_setpriv(ctx, c) != MI_SUCCESS) {
	    free(c);
	    return (NULL);
	}
    }
    return (c);
}

/* mlfi_hash - feed the Message-ID hash, up to MLFI_HASH_MAX bytes */

static void mlfi_hash(struct mlfi_ctx *c, const void *data, size_t len)
{
    if (c->sha == NULL || c->hashed >= MLFI_HASH_MAX)
	return;
    if (len > MLFI_HASH_MAX - c->hashed)
	len = MLFI_HASH_MAX - c->hashed;
    (void) EVP_DigestUpdate(c->sha, data, len);
    c->hashed += len;
}

/* mlfi_canon_len - bytes of a header value with every line end as CRLF */

static long long mlfi_canon_len(const char *s)
{
    long long n = 0;

    for (; *s; s++, n++)
	if (*s == '\n' && (n == 0 || s[-1] != '\r'))
	    n++;
    return (n);
}

/* mlfi_size_arg - the SIZE= value; too many digits for a long is huge */

static int mlfi_size_arg(const char *s, long *size)
{
    const char *cp;

    /* RFC 1870: size-value ::= 1*20DIGIT.  Other text: the MTA's business. */
    for (cp = s; *cp >= '0' && *cp <= '9'; cp++)
	 /* void */ ;
    if (cp == s || *cp != 0)
	return (-1);
    if (parse_long(s, 0, LONG_MAX, size) < 0)
	*size = LONG_MAX;			/* overflow: larger than any limit */
    return (0);
}

/* mlfi_negotiate - ask only for the steps and macros this milter uses */

static sfsistat mlfi_negotiate(SMFICTX *ctx, unsigned long f0,
			               unsigned long f1, unsigned long f2,
			               unsigned long f3, unsigned long *pf0,
			               unsigned long *pf1, unsigned long *pf2,
			               unsigned long *pf3)
{
    struct mlt_conf *cf = mlt_conf_acquire();
    unsigned long need = 0;
    const struct conf_milter *mc;

    (void) f2;
    (void) f3;
    if (cf == NULL)
	return (SMFIS_TEMPFAIL);
    mc = &cf->conf->milter;
    if (mc->mode == CONF_MILTER_DELIVER) {
	need = SMFIF_DELRCPT;
    } else {
	if (mc->add_message_id || (mc->rewrite_from && mc->add_reply_to))
	    need |= SMFIF_ADDHDRS;
	if (mc->rewrite_from)
	    need |= SMFIF_CHGHDRS;
	if (mc->rewrite_sender)
	    need |= SMFIF_CHGFROM;
    }
    mlt_conf_release(cf);
    if ((f0 & need) != need) {
	msg_error("the MTA does not offer the milter actions this "
		  "configuration needs (offered 0x%lx, needed 0x%lx: %s%s%s%s); "
		  "upgrade the MTA or turn the rewriting options off",
		  f0, need, (need & ~f0 & SMFIF_ADDHDRS) ? "add header " : "",
		  (need & ~f0 & SMFIF_CHGHDRS) ? "change header " : "",
		  (need & ~f0 & SMFIF_CHGFROM) ? "change sender " : "",
		  (need & ~f0 & SMFIF_DELRCPT) ? "delete recipient" : "");
	return (SMFIS_REJECT);
    }

    /*
     * Ask for every action this milter can use whatever the mode: a
     * reload may switch modes under a connection that is already open.
     */
    *pf0 = f0 & (SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGFROM
		 | SMFIF_DELRCPT | SMFIF_SETSYMLIST);
    *pf1 = f1 & (SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOUNKNOWN
		 | SMFIP_NODATA | SMFIP_NOEOH);
    *pf2 = 0;
    *pf3 = 0;
    if (f0 & SMFIF_SETSYMLIST) {
	(void) smfi_setsymlist(ctx, SMFIM_ENVFROM, "i");
	(void) smfi_setsymlist(ctx, SMFIM_ENVRCPT, "i");
	(void) smfi_setsymlist(ctx, SMFIM_EOM, "i");
    }
    return (SMFIS_CONTINUE);
}

/* mlfi_envfrom - account, unknown-sender policy, SIZE= */

static sfsistat mlfi_envfrom(SMFICTX *ctx, char **argv)
{
    struct mlfi_ctx *c = mlfi_get(ctx);
    const struct conf *conf;
    const struct conf_milter *mc;
    char    who[300];
    char    text[M365_TEXT_MAX];
    long    size;
    int     i;

    if (c == NULL)
	return (SMFIS_TEMPFAIL);
    mlfi_msg_reset(c);
    if ((c->cf = mlt_conf_acquire()) == NULL)
	return (SMFIS_TEMPFAIL);
    conf = c->cf->conf;
    mc = &conf->milter;
    mlfi_qid(ctx, c);
    c->start = time_now();
    c->size = 2;			/* the empty line after the header */

    /* Postfix's non_smtpd_milters pass the sender without <>. */
    c->sender = addr_internal(argv[0] ? argv[0] : "");
    mlfi_printable(who, sizeof(who), c->sender);
    c->acct = conf_account_for_sender(conf, c->sender);
    if (c->acct == NULL) {
	if (mc->unknown_sender_reject) {
	    snprintf(text, sizeof(text), "no Microsoft 365 account of this "
		     "relay sends for <%s>", who);
	    msg_info("%s: milter-reject: MAIL FROM <%s>: 550 5.7.1 %s "
		     "(unknown_sender = reject)", c->qid, who, text);
	    (void) mlt_setreply(ctx, "550", "5.7.1", text);
	    mlfi_msg_reset(c);
	    return (SMFIS_REJECT);
	}
	msg_info("%s: from=<%s>: no account for this sender; passed on "
		 "untouched (unknown_sender = accept)", c->qid, who);
	mlfi_msg_reset(c);
	return (SMFIS_ACCEPT);
    }

    /* SIZE=: say "too large" now, not in a bounce later. */
    for (i = 1; argv[i] != NULL; i++) {
	if (strncasecmp(argv[i], "SIZE=", 5) != 0
	    || mlfi_size_arg(argv[i] + 5, &size) < 0)
	    continue;
	if (c->acct->max_message_size > 0 && size > c->acct->max_message_size) {
	    snprintf(text, sizeof(text), "message size %.30s exceeds the limit "
		     "of %ld bytes for <%s>", argv[i] + 5,
		     c->acct->max_message_size, who);
	    msg_info("%s: milter-reject: MAIL FROM <%s>: 552 5.3.4 %s",
		     c->qid, who, text);
	    (void) mlt_setreply(ctx, "552", "5.3.4", text);
	    mlfi_msg_reset(c);
	    return (SMFIS_REJECT);
	}
    }

    if (mc->mode == CONF_MILTER_DELIVER) {
	msg_init(&c->msg, mc->tmp_dir, (size_t) mc->memory_limit,
		 (off_t) c->acct->max_message_size);
	mime_watch(&c->msg);			/* its structure, on the way */
	c->msg_active = 1;
    } else if ((c->sha = EVP_MD_CTX_new()) == NULL
	       || EVP_DigestInit_ex(c->sha, EVP_sha256(), NULL) != 1) {
	sfsistat st = mlt_fail(ctx, conf, MLT_FAIL_INTERNAL, c->qid, NULL,
			       "cannot initialize SHA-256 (out of memory?)");

	mlfi_msg_reset(c);
	return (st);
    }
    return (SMFIS_CONTINUE);
}

/* mlfi_envrcpt - remember the recipient; deliver mode: Graph or MTA */

static sfsistat mlfi_envrcpt(SMFICTX *ctx, char **argv)
{
    struct mlfi_ctx *c = smfi_getpriv(ctx);
    struct mlfi_rcpt *r;
    size_t  len;

    if (c == NULL || c->cf == NULL || argv[0] == NULL)
	return (SMFIS_CONTINUE);
    if (c->nrcpts == c->rcpt_cap) {
	c->rcpt_cap = c->rcpt_cap ? 2 * c->rcpt_cap : 8;
	c->rcpts = xrealloc(c->rcpts, c->rcpt_cap * sizeof(*c->rcpts));
    }
    r = c->rcpts + c->nrcpts++;
    r->raw = xstrdup(argv[0]);
    r->addr = addr_internal(argv[0]);
    r->graph = c->cf->conf->milter.mode == CONF_MILTER_DELIVER
	&& conf_milter_delivers(c->cf->conf, r->addr);
    /* "a@example.com." is a@example.com (as Postfix rewrites it). */
    if (r->graph && (len = strlen(r->addr)) > 0 && r->addr[len - 1] == '.')
	r->addr[len - 1] = 0;
    return (SMFIS_CONTINUE);
}

/* mlfi_header - count, hash or store one header field */

static sfsistat mlfi_header(SMFICTX *ctx, char *name, char *value)
{
    struct mlfi_ctx *c = smfi_getpriv(ctx);
    struct m365_result res;

    if (c == NULL || c->cf == NULL)
	return (SMFIS_CONTINUE);
    c->size += (long long) strlen(name) + 2 + mlfi_canon_len(value) + 2;
    if (c->msg_active) {
	if (msg_add_header(&c->msg, name, value, &res) < 0
	    && c->msg_err.status == M365_OK)
	    c->msg_err = res;
	return (SMFIS_CONTINUE);
    }
    mlfi_hash(c, name, strlen(name));
    mlfi_hash(c, ":", 1);
    mlfi_hash(c, value, strlen(value));
    mlfi_hash(c, "\n", 1);
    if (strcasecmp(name, "From") == 0) {
	if (c->from == NULL)
	    c->from = xstrdup(value);
    } else if (strcasecmp(name, "Date") == 0) {
	if (c->date == NULL)
	    c->date = xstrdup(value);
    } else if (strcasecmp(name, "Message-ID") == 0) {
	c->has_message_id = 1;
    } else if (strcasecmp(name, "Reply-To") == 0) {
	c->has_reply_to = 1;
    }
    return (SMFIS_CONTINUE);
}

/* mlfi_body - count, hash or store one body chunk */

static sfsistat mlfi_body(SMFICTX *ctx, unsigned char *data, size_t len)
{
    struct mlfi_ctx *c = smfi_getpriv(ctx);
    struct m365_result res;

    if (c == NULL || c->cf == NULL)
	return (SMFIS_CONTINUE);
    c->size += (long long) len;
    if (c->msg_active) {
	if (msg_add_body(&c->msg, data, len, &res) < 0
	    && c->msg_err.status == M365_OK)
	    c->msg_err = res;
	return (SMFIS_CONTINUE);
    }
    mlfi_hash(c, data, len);
    return (SMFIS_CONTINUE);
}

/* mlfi_span_text - value[b..e), trimmed, without line ends; free() it */

static char *mlfi_span_text(const char *value, size_t b, size_t e)
{
    char   *out;
    size_t  o = 0;

    for (; b < e && strchr(" \t\r\n", value[b]); b++)
	 /* void */ ;
    for (; e > b && strchr(" \t\r\n", value[e - 1]); e--)
	 /* void */ ;
    out = xmalloc(e - b + 1);
    for (; b < e; b++)
	if (value[b] != '\r' && value[b] != '\n')
	    out[o++] = value[b];
    out[o] = 0;
    return (out);
}

/* mlfi_from_parts - display name and mailbox text of the first From: */

static int mlfi_from_parts(const char *value, char **display_r,
			           char **comments_r, char **mailbox_r,
			           char **addr_r)
{
    struct addr_list list;
    const struct addr_item *it;
    int     angle;

    memset(&list, 0, sizeof(list));
    if (addr_parse(value, strlen(value), &list) < 0 || list.n == 0
	|| list.items[0].bad) {
	addr_list_free(&list);
	return (-1);
    }
    it = list.items;
    angle = it->lt < it->end;

    /*
     * "addr (Name)" is the old way of writing a display name: without
     * an angle address the comments are kept.  The display name is the
     * text before "<" (none for a bare addr-spec); the mailbox as
     * written goes to Reply-To:.
     */
    *comments_r = angle ? xstrdup("") : addr_comments(value, it);
    *display_r = mlfi_span_text(value, it->start, angle ? it->lt : it->start);
    *mailbox_r = mlfi_span_text(value, it->start, it->end);
    *addr_r = xstrdup(it->addr);
    addr_list_free(&list);
    /* Longer parts are not written into a header (see the warning). */
    return (strlen(*comments_r) > STRBUF_MAX_LINE
	    || strlen(*display_r) > STRBUF_MAX_LINE
	    || strlen(*mailbox_r) > STRBUF_MAX_LINE ? -1 : 0);
}

/*
 * mlfi_message_id - stable Message-ID from queue id, sender, date and
 * content (deliver_message_id(), the relay's too); a random one when
 * hashing fails; -1 when that fails too.
 */
static int mlfi_message_id(struct mlfi_ctx *c, const struct conf *conf,
			           char *out, size_t outlen)
{
    unsigned char content[EVP_MAX_MD_SIZE];
    unsigned int clen = 0;

    /*
     * The content digest was streamed: a buffer with a cap would give
     * all messages with an overlong Date: or sender the same id.
     */
    if (EVP_DigestFinal_ex(c->sha, content, &clen) != 1)
	clen = 0;
    return (deliver_message_id(conf, c->qid, c->sender, c->date, content,
			       clen, out, outlen));
}

/*
 * mlfi_rewrite_check - rewrite_sender: can the relay send the message
 * with its new sender?  The Postfix transport (m365-relay) picks the
 * account for the new sender, the account's mailbox: this account, or
 * the first with the same mailbox, whose limits then apply.  The client
 * must not get 250 for a message the relay would bounce: that bounce
 * goes to the rewritten sender, and the original sender never hears of
 * it.  Returns 0, or -1 with *st set (reply already set).
 */
static int mlfi_rewrite_check(SMFICTX *ctx, struct mlfi_ctx *c,
			              const char *who, sfsistat *st)
{
    const struct conf *conf = c->cf->conf;
    const struct conf_account *acct = c->acct;
    const struct conf_account *relay;
    char    text[M365_TEXT_MAX];

    /* Never NULL today (an account sends for its mailbox); be sure. */
    if ((relay = conf_account_for_sender(conf, acct->mailbox)) == NULL) {
	snprintf(text, sizeof(text), "configuration error: no account sends "
		 "for <%s>, the sender that rewrite_sender gives the mail of "
		 "account %s (see m365-relay -n)", acct->mailbox, acct->name);
	msg_error("%s: milter-tempfail: END-OF-MESSAGE from <%s>: 451 4.3.5 "
		  "%s", c->qid, who, text);
	(void) mlt_setreply(ctx, "451", "4.3.5", text);
	*st = SMFIS_TEMPFAIL;
	return (-1);
    }
    if (relay->max_message_size > 0 && c->size > relay->max_message_size) {
	snprintf(text, sizeof(text), "message size %lld exceeds the limit of "
		 "%ld bytes for <%s> (account %s, which sends for the "
		 "rewritten sender <%s>)", c->size, relay->max_message_size,
		 who, relay->name, acct->mailbox);
	msg_info("%s: milter-reject: END-OF-MESSAGE from <%s>: 552 5.3.4 %s",
		 c->qid, who, text);
	(void) mlt_setreply(ctx, "552", "5.3.4", text);
	*st = SMFIS_REJECT;
	return (-1);
    }
    return (0);
}

/* mlfi_eom_filter - size by byte count, then the configured rewrites */

static sfsistat mlfi_eom_filter(SMFICTX *ctx, struct mlfi_ctx *c)
{
    const struct conf *conf = c->cf->conf;
    const struct conf_milter *mc = &conf->milter;
    const struct conf_account *acct = c->acct;
    char    who[300];
    char    text[M365_TEXT_MAX];
    char    mid[400];
    struct strbuf actions;
    char   *display = NULL, *comments = NULL, *mailbox = NULL;
    char   *addr = NULL, *value = NULL;
    sfsistat st = SMFIS_CONTINUE;

    mlfi_printable(who, sizeof(who), c->sender);
    if (acct->max_message_size > 0 && c->size > acct->max_message_size) {
	snprintf(text, sizeof(text), "message size %lld exceeds the limit of "
		 "%ld bytes for <%s>", c->size, acct->max_message_size, who);
	msg_info("%s: milter-reject: END-OF-MESSAGE from <%s>: 552 5.3.4 %s",
		 c->qid, who, text);
	(void) mlt_setreply(ctx, "552", "5.3.4", text);
	return (SMFIS_REJECT);
    }
    if (mc->rewrite_sender && !addr_same(c->sender, acct->mailbox)
	&& mlfi_rewrite_check(ctx, c, who, &st) < 0)
	return (st);

    strbuf_init(&actions, STRBUF_MAX_SMALL);
    if (mc->rewrite_sender && !addr_same(c->sender, acct->mailbox)) {
	value = xmalloc(strlen(acct->mailbox) + 3);
	snprintf(value, strlen(acct->mailbox) + 3, "<%s>", acct->mailbox);
	if (smfi_chgfrom(ctx, value, NULL) != MI_SUCCESS) {
	    st = mlt_fail(ctx, conf, MLT_FAIL_INTERNAL, c->qid, NULL,
			  "cannot change the envelope sender (smfi_chgfrom)");
	    goto done;
	}
	(void) strbuf_printf(&actions, " sender=<%s>", acct->mailbox);
	free(value);
	value = NULL;
    }
    if (mc->rewrite_from && c->from != NULL
	&& mlfi_from_parts(c->from, &display, &comments, &mailbox,
			   &addr) < 0) {
	mlfi_printable(text, sizeof(text), c->from);
	msg_warn("%s: From: header \"%.200s\" is not a mailbox this milter "
		 "can rewrite (unbalanced quotes or brackets, no address, or "
		 "longer than %lu bytes); left unchanged", c->qid, text,
		 (unsigned long) STRBUF_MAX_LINE);
    } else if (mc->rewrite_from && c->from != NULL
	       && !addr_same(addr, acct->mailbox)) {
	size_t  len = strlen(display) + strlen(comments)
	    + strlen(acct->mailbox) + 4;

	value = xmalloc(len);
	if (*display)
	    snprintf(value, len, "%s <%s>", display, acct->mailbox);
	else if (*comments)
	    snprintf(value, len, "%s %s", acct->mailbox, comments);
	else
	    snprintf(value, len, "%s", acct->mailbox);
	if (smfi_chgheader(ctx, "From", 1, value) != MI_SUCCESS) {
	    st = mlt_fail(ctx, conf, MLT_FAIL_INTERNAL, c->qid, NULL,
			  "cannot change the From: header (smfi_chgheader)");
	    goto done;
	}
	(void) strbuf_printf(&actions, " from=<%s>", acct->mailbox);

	/* A Reply-To: without a domain would send replies astray. */
	if (mc->add_reply_to && !c->has_reply_to
	    && strchr(addr, '@') != NULL) {
	    if (smfi_addheader(ctx, "Reply-To", mailbox) != MI_SUCCESS) {
		st = mlt_fail(ctx, conf, MLT_FAIL_INTERNAL, c->qid, NULL,
			      "cannot add a Reply-To: header "
			      "(smfi_addheader)");
		goto done;
	    }
	    (void) strbuf_printf(&actions, " reply-to=<%s>",
				 mlfi_printable(text, sizeof(text), addr));
	}
    }
    if (mc->add_message_id && !c->has_message_id) {
	if (mlfi_message_id(c, conf, mid, sizeof(mid)) < 0) {
	    st = mlt_fail(ctx, conf, MLT_FAIL_INTERNAL, c->qid, NULL,
			  "cannot make a Message-ID: neither SHA-256 nor the "
			  "random generator works");
	    goto done;
	}
	if (smfi_addheader(ctx, "Message-ID", mid) != MI_SUCCESS) {
	    st = mlt_fail(ctx, conf, MLT_FAIL_INTERNAL, c->qid, NULL,
			  "cannot add a Message-ID: header (smfi_addheader)");
	    goto done;
	}
	(void) strbuf_printf(&actions, " message-id=%s", mid);
    }
    msg_info("%s: milter: from=<%s>, account=%s, size=%lld, nrcpt=%lu, "
	     "changed=%s", c->qid, who, acct->name, c->size,
	     (unsigned long) c->nrcpts, strbuf_failed(&actions) ?
	     STRBUF_NOT_SHOWN : actions.len ? strbuf_str(&actions) + 1 :
	     "none");

done:
    free(value);
    free(display);
    free(comments);
    free(mailbox);
    free(addr);
    strbuf_free(&actions);
    return (st);
}

/* mlfi_perm_rcode - SMTP code for a permanent DSN */

static const char *mlfi_perm_rcode(const char *dsn)
{
    if (strcmp(dsn, "5.3.4") == 0 || strncmp(dsn, "5.2.", 4) == 0)
	return ("552");
    if (strncmp(dsn, "5.1.", 4) == 0 || strncmp(dsn, "5.7.", 4) == 0)
	return ("550");
    return ("554");
}

/* mlfi_progress - tell the MTA the milter still works on the message */

static void mlfi_progress(void *arg)
{
    struct mlfi_progress *p = arg;

    if (smfi_progress(p->ctx) == MI_SUCCESS) {
	msg_info("%s: milter: progress sent to the MTA (waiting for "
		 "Microsoft 365 for %.0fs)", p->qid, time_mono() - p->start);
    } else if (!p->failed) {
	p->failed = 1;
	msg_warn("%s: milter: cannot send a progress reply to the MTA "
		 "(smfi_progress); the MTA may time out while Microsoft 365 "
		 "is still busy", p->qid);
    }
}

/* mlfi_pool_init - the pool of HTTPS clients, once per process */

static void mlfi_pool_init(void)
{
    mlfi_pool = http_pool_create(MLFI_HTTP_IDLE, mlfi_pool_err,
				 sizeof(mlfi_pool_err));
}

/* mlfi_eom_deliver - send through Graph, then drop those recipients */

static sfsistat mlfi_eom_deliver(SMFICTX *ctx, struct mlfi_ctx *c)
{
    const struct conf *conf = c->cf->conf;
    struct m365_result res;
    struct mlfi_progress prog;
    struct delivery d;
    struct http *http;
    char  **rcpts;
    char    err[300];
    size_t  i, n = 0, failed = 0;
    int     rc;

    /* The message: size limit, header trouble, spool I/O. */
    if (msg_finish(&c->msg, &res) < 0 || c->msg_err.status != M365_OK) {
	if (res.dsn[0] != '4' && res.dsn[0] != '5')
	    res = c->msg_err;
	if (res.dsn[0] == '5') {
	    msg_info("%s: milter-reject: END-OF-MESSAGE: %s %s %s", c->qid,
		     mlfi_perm_rcode(res.dsn), res.dsn, res.text);
	    (void) mlt_setreply(ctx, mlfi_perm_rcode(res.dsn), res.dsn,
				res.text);
	    return (SMFIS_REJECT);
	}
	return (mlt_fail(ctx, conf, MLT_FAIL_INTERNAL, c->qid, res.dsn,
			 res.text));
    }

    rcpts = xcalloc(c->nrcpts + 1, sizeof(*rcpts));
    for (i = 0; i < c->nrcpts; i++)
	if (c->rcpts[i].graph)
	    rcpts[n++] = c->rcpts[i].addr;
    if (n == 0) {
	msg_info("%s: milter: no recipient for Microsoft 365 (deliver_domains);"
		 " the MTA delivers the message", c->qid);
	free(rcpts);
	return (SMFIS_CONTINUE);
    }

    /* A kept-alive client of this configuration, or a new one. */
    (void) pthread_once(&mlfi_pool_once, mlfi_pool_init);
    if (mlfi_pool == NULL)
	snprintf(err, sizeof(err), "%s", mlfi_pool_err);
    if (mlfi_pool == NULL || (http = http_pool_get(mlfi_pool, conf,
					 c->cf->gen, err, sizeof(err))) == NULL) {
	free(rcpts);
	return (mlt_fail(ctx, conf, MLT_FAIL_INTERNAL, c->qid, "4.3.0", err));
    }

    d.queue_id = c->qid;
    d.sender = c->sender;
    d.rcpts = rcpts;
    d.nrcpts = n;
    d.start = c->start;
    /* Keep the MTA's milter timeout from expiring while Graph works. */
    prog.ctx = ctx;
    prog.qid = c->qid;
    prog.start = time_mono();
    prog.failed = 0;
    http_set_progress(http, mlfi_progress, &prog, mlfi_progress_interval);
    rc = deliver_with(conf, http, c->acct, &c->msg, &d, &res);
    http_set_progress(http, NULL, NULL, 0);
    http_pool_put(mlfi_pool, http);
    deliver_log(&d, conf, c->acct, &res);
    free(rcpts);

    /*
     * Microsoft 365 may have accepted it, and that is not settled: the
     * client must try again (the send ledger settles it then), whatever
     * on_graph_error says; passing it on or rejecting it could deliver
     * it twice or bounce a message that went out.
     */
    if (rc == DELIVER_UNRESOLVED
	&& mlt_action(conf, mlt_failure_of(&res)) != CONF_ACTION_TEMPFAIL) {
	msg_info("%s: milter-tempfail: 451 %s %s (may have been accepted and "
		 "not settled yet: tempfail whatever %s says)", c->qid,
		 res.dsn, res.text, res.status == M365_TEMP ? "on_graph_error"
		 : "the failure policy");
	(void) mlt_setreply(ctx, "451", res.dsn, res.text);
	return (SMFIS_TEMPFAIL);
    }
    if (res.status != M365_OK) {
	if (res.status == M365_PERM) {
	    msg_info("%s: milter-reject: END-OF-MESSAGE: %s %s %s", c->qid,
		     mlfi_perm_rcode(res.dsn), res.dsn, res.text);
	    (void) mlt_setreply(ctx, mlfi_perm_rcode(res.dsn), res.dsn,
				res.text);
	    return (SMFIS_REJECT);
	}
	return (mlt_fail(ctx, conf, mlt_failure_of(&res), c->qid, res.dsn,
			 res.text));
    }

    /* Sent: the MTA must not deliver these recipients again. */
    for (i = 0; i < c->nrcpts; i++) {
	if (c->rcpts[i].graph && smfi_delrcpt(ctx, c->rcpts[i].raw) != MI_SUCCESS) {
	    msg_error("%s: cannot remove recipient %s after delivery through "
		      "Microsoft 365; the MTA may deliver it a second time",
		      c->qid, c->rcpts[i].addr);
	    failed++;
	}
    }
    if (n == c->nrcpts && failed == 0) {
	msg_info("%s: milter: all %lu recipient(s) delivered by Microsoft 365;"
		 " message discarded from the MTA", c->qid, (unsigned long) n);
	return (SMFIS_DISCARD);
    }
    msg_info("%s: milter: %lu recipient(s) delivered by Microsoft 365 and "
	     "removed; %lu left for the MTA", c->qid, (unsigned long) n,
	     (unsigned long) (c->nrcpts - n));
    return (SMFIS_CONTINUE);
}

/* mlfi_eom - end of message: re-read the queue id, then decide */

static sfsistat mlfi_eom(SMFICTX *ctx)
{
    struct mlfi_ctx *c = smfi_getpriv(ctx);
    sfsistat st;

    if (c == NULL || c->cf == NULL)
	return (SMFIS_CONTINUE);
    /* Postfix assigns the queue id after MAIL FROM. */
    mlfi_qid(ctx, c);
    if (c->cf->conf->milter.mode == CONF_MILTER_DELIVER)
	st = mlfi_eom_deliver(ctx, c);
    else
	st = mlfi_eom_filter(ctx, c);
    mlfi_msg_reset(c);
    return (st);
}

/* mlfi_abort - the message ended early (RSET, QUIT, rejection) */

static sfsistat mlfi_abort(SMFICTX *ctx)
{
    struct mlfi_ctx *c = smfi_getpriv(ctx);

    if (c != NULL)
	mlfi_msg_reset(c);
    return (SMFIS_CONTINUE);
}

/* mlfi_close - the connection ended: free its context */

static sfsistat mlfi_close(SMFICTX *ctx)
{
    struct mlfi_ctx *c = smfi_getpriv(ctx);

    if (c != NULL) {
	mlfi_msg_reset(c);
	free(c);
	(void) smfi_setpriv(ctx, NULL);
    }
    return (SMFIS_CONTINUE);
}

/* mlfi_shutdown - close the kept-alive connections (end of process) */

void    mlfi_shutdown(void)
{
    /* Not freed: a message still in flight may give its client back. */
    if (mlfi_pool != NULL)
	(void) http_pool_idle_close(mlfi_pool, -1);
}

/* mlfi_register - hand the callbacks to libmilter */

int     mlfi_register(void)
{
    struct smfiDesc desc;
    const char *val;
    char    shown[40];
    long    secs;

    /* Test suite only: a short progress interval (not a setting). */
    if ((val = getenv(MLFI_PROGRESS_ENV)) != NULL && *val != 0) {
	if (parse_long(val, 1, 3600, &secs) == 0)
	    mlfi_progress_interval = (int) secs;
	else
	    msg_warn("ignoring %s=\"%s\": not a number of seconds from "
		     "1 to 3600; using %d", MLFI_PROGRESS_ENV,
		     mlfi_printable(shown, sizeof(shown), val),
		     MLFI_PROGRESS_INTERVAL);
    }

    memset(&desc, 0, sizeof(desc));
    desc.xxfi_name = (char *) MLFI_NAME;
    desc.xxfi_version = SMFI_VERSION;
    desc.xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGFROM
	| SMFIF_DELRCPT | SMFIF_SETSYMLIST;
    desc.xxfi_envfrom = mlfi_envfrom;
    desc.xxfi_envrcpt = mlfi_envrcpt;
    desc.xxfi_header = mlfi_header;
    desc.xxfi_body = mlfi_body;
    desc.xxfi_eom = mlfi_eom;
    desc.xxfi_abort = mlfi_abort;
    desc.xxfi_close = mlfi_close;
    desc.xxfi_negotiate = mlfi_negotiate;
    return (smfi_register(desc));
}
