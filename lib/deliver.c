/*
 * NAME
 *	deliver 3
 * SUMMARY
 *	deliver one message through Graph sendMail (relay and milter)
 * DESCRIPTION
 *	See deliver.h.  The order of checks matters: everything that can
 *	be decided locally (account, recipient count, size, the send
 *	ledger, Retry-After, a request slot) is decided before a token is
 *	requested or Graph is contacted, so a message that cannot be sent
 *	(or was sent already) costs no request.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "alert.h"
#include "auth.h"
#include "deliver.h"
#include "draft.h"
#include "graph.h"
#include "ledger.h"
#include "log.h"
#include "metrics.h"
#include "rcpt.h"
#include "resolve.h"
#include "throttle.h"
#include "util.h"

/* Exchange Online: at most 500 recipients per message (To+Cc+Bcc). */
#define DELIVER_MAX_RCPT	500
#define DELIVER_LEDGER_WAIT	10.0	/* s: another attempt holds the record */

/*
 * deliver_no_rcpts - no envelope recipient at all: the MTA passed none,
 * which is a typo in master.cf or the mailer definition, never a fault
 * of the message; defer (4.3.5) so that the mail waits for the fix
 * instead of bouncing.  Returns 1 (and fills res) when d has none.
 */
static int deliver_no_rcpts(const struct delivery *d, struct m365_result *res)
{
    if (d->nrcpts > 0)
	return (0);
    result_set(res, M365_CONFIG, "4.3.5",
	       "no recipient given: the MTA passed no recipient address; "
	       "the Postfix pipe transport in master.cf must end with "
	       "\"-- ${recipient}\" (argv=... -f ${sender} -- ${recipient}), "
	       "the Sendmail mailer's A= field with \"-- $u\"");
    return (1);
}

/*
 * deliver_message_id - a stable Message-ID; see deliver.h.  SHA-256 of
 * qid NUL sender NUL date NUL digest, the first 16 bytes in hex.
 */
int     deliver_message_id(const struct conf *conf, const char *qid,
			           const char *sender, const char *date,
			           const unsigned char *digest, size_t dlen,
			           char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char    host[256];
    char    id[33];
    const char *domain = conf->milter.message_id_domain;
    EVP_MD_CTX *ctx;
    int     i, ok;

    qid = qid ? qid : "";
    sender = sender ? sender : "";
    date = date ? date : "";
    ok = (ctx = EVP_MD_CTX_new()) != NULL
	&& EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1
	&& EVP_DigestUpdate(ctx, qid, strlen(qid) + 1) == 1
	&& EVP_DigestUpdate(ctx, sender, strlen(sender) + 1) == 1
	&& EVP_DigestUpdate(ctx, date, strlen(date) + 1) == 1
	&& EVP_DigestUpdate(ctx, digest, dlen) == 1
	&& EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen >= 16;
    EVP_MD_CTX_free(ctx);
    if (ok) {
	for (i = 0; i < 16; i++) {
	    id[2 * i] = hex[md[i] >> 4];
	    id[2 * i + 1] = hex[md[i] & 15];
	}
	id[32] = 0;
    } else if (random_hex(id, 16) < 0) {	/* unique, if not stable */
	return (-1);
    }
    if (domain == NULL || *domain == 0) {
	if (gethostname(host, sizeof(host)) < 0 || host[0] == 0)
	    snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = 0;
	domain = host;
    }
    snprintf(out, outlen, "<%s@%s>", id, domain);
    return (0);
}

/* One delivery through deliver_with(). */
struct deliver_run {
    const struct conf *conf;
    struct http *http;
    const struct conf_account *acct;
    struct msg *m;
    const struct delivery *d;
    struct m365_result *res;
    struct strbuf hdr;			/* the rewritten header section */
    char   *message_id;			/* "<...>", or NULL */
    unsigned char digest[32];		/* ledger_digest() */
    char    digest_hex[65];		/* "" when the body cannot be read */
    char   *token;
    struct ledger_rec rec;
    int     unresolved;			/* the send may have gone through */
};

/*
 * deliver_add_message_id - a message without a Message-ID gets the
 * stable one of deliver_message_id() (queue id, sender, Date, body), so
 * that every retry of the MTA is the same message to the ledger and to
 * Sent Items.  0, or -1 (res).
 */
static int deliver_add_message_id(struct deliver_run *r)
{
    char    mid[400];
    char   *date;
    size_t  pos = 0;

    if ((r->message_id = ledger_message_id(r->hdr.data, r->hdr.len)) != NULL)
	return (0);
    if ((date = msg_hdr_find(r->hdr.data ? r->hdr.data : "", r->hdr.len,
			     "Message-ID", &pos)) != NULL) {
	/* One that is not "<...>": leave it; no look-up by it. */
	free(date);
	return (0);
    }
    pos = 0;
    date = msg_hdr_find(r->m->hdr.data ? r->m->hdr.data : "", r->m->hdr.len,
			"Date", &pos);
    if (deliver_message_id(r->conf, r->d->queue_id, r->d->sender, date,
			   r->digest, sizeof(r->digest), mid,
			   sizeof(mid)) < 0) {
	free(date);
	result_set(r->res, M365_SYSTEM, "4.3.0", "cannot make a Message-ID "
		   "for a message without one: neither SHA-256 nor the random "
		   "generator works");
	return (-1);
    }
    free(date);
    if (r->hdr.len > 0 && r->hdr.data[r->hdr.len - 1] != '\n')
	strbuf_puts(&r->hdr, "\r\n");
    strbuf_printf(&r->hdr, "Message-ID: %s\r\n", mid);
    if (strbuf_failed(&r->hdr)) {
	result_set(r->res, M365_PERM, "5.6.0", "the header section is too "
		   "large to add a Message-ID");
	return (-1);
    }
    r->message_id = xstrdup(mid);
    msg_info("%s: message-id=%s (added: the message had none)",
	     r->d->queue_id, mid);
    return (0);
}

/*
 * deliver_ledger_open - lock this delivery's record and read it (a
 * record of another message under a reused Message-ID reads as new):
 * 0 go on, -1 stop (res)
 */
static int deliver_ledger_open(struct deliver_run *r)
{
    if (ledger_open_delivery(r->conf, r->acct->mailbox, r->message_id,
			     r->m->hdr.data, r->m->hdr.len, r->d->rcpts,
			     r->d->nrcpts, r->digest_hex, DELIVER_LEDGER_WAIT,
			     r->d->queue_id, &r->rec, r->res) < 0)
	return (-1);
    r->unresolved = r->rec.state == LEDGER_SENDING
	|| r->rec.state == LEDGER_AMBIGUOUS;
    return (0);
}

/*
 * deliver_resolve - an earlier attempt may have been accepted (record
 * sending or ambiguous): 1 it was (res), 0 send, -1 defer (res)
 */
static int deliver_resolve(struct deliver_run *r)
{
    int     rc;

    if (r->rec.state != LEDGER_SENDING && r->rec.state != LEDGER_AMBIGUOUS)
	return (0);
    rc = resolve_ambiguous(r->conf, r->http, r->acct, &r->token, r->d->rcpts,
			   r->d->nrcpts, r->d->queue_id, &r->rec, r->res);
    r->unresolved = (rc == RESOLVE_DEFER);
    return (rc);
}

/* deliver_record - save the record in state st; 0 or -1 (err) */

static int deliver_record(struct deliver_run *r, enum ledger_state st,
			          const char *request_id, char *err,
			          size_t errlen)
{
    r->rec.state = st;
    if (request_id && *request_id)
	ledger_set(&r->rec.request_id, request_id);
    return (ledger_save(r->conf, &r->rec, err, errlen));
}

/*
 * deliver_sendmail - record the attempt, POST sendMail (once more with
 * a fresh token after a 401), record the outcome
 */
static void deliver_sendmail(struct deliver_run *r, struct msg_src *src)
{
    struct http_resp resp;
    char    err[512];
    char   *from = NULL;
    char   *refused;
    int     ok;

    /* Durable before the first byte: a crash from here on is ambiguous. */
    r->rec.path = LEDGER_PATH_SENDMAIL;
    ledger_set(&r->rec.mailbox, r->acct->mailbox);
    ledger_set(&r->rec.message_id, r->message_id);
    ledger_set(&r->rec.queue_id, r->d->queue_id);
    ledger_set(&r->rec.digest, r->digest_hex);
    ledger_set(&r->rec.request_id, NULL);
    ledger_set_envelope(&r->rec, r->d->sender, r->d->rcpts, r->d->nrcpts);
    r->rec.attempted = time(NULL);
    if (deliver_record(r, LEDGER_SENDING, NULL, err, sizeof(err)) < 0) {
	result_set(r->res, M365_SYSTEM, "4.3.0", "cannot record the send in "
		   "the send ledger (nothing sent): %s", err);
	return;
    }
    from = rcpt_header_from(r->hdr.data, r->hdr.len);
    http_resp_init(&resp);
    ok = graph_send_mime(r->http, r->conf, r->acct->mailbox, r->token, src,
			 &resp) == 0;
    /* A 401 status line is a refusal even when the transfer broke after it. */
    if (resp.status == 401) {
	/* The cached token was refused: refresh once, send once more. */
	msg_info("%s: Graph refused the access token of account %s (401); "
		 "renewing it", r->d->queue_id, r->acct->name);
	refused = r->token;
	r->token = NULL;
	http_resp_free(&resp);
	http_resp_init(&resp);
	ok = auth_token(r->http, r->conf, r->acct, 1, refused, &r->token,
			r->res);
	xfree_secret(refused);
	if (ok < 0)
	    goto not_sent;
	if (msg_src_rewind(src) < 0) {
	    result_set(r->res, M365_SYSTEM, "4.3.0",
		       "cannot re-read the spooled message");
	    goto not_sent;
	}
	ok = graph_send_mime(r->http, r->conf, r->acct->mailbox, r->token,
			     src, &resp) == 0;
    }
    /* The status line and headers arrived even if the body broke off. */
    graph_note_retry_after(r->conf, r->acct->mailbox, &resp);
    graph_classify_send(&resp, ok, from, r->acct->mailbox, r->res);
    if (r->res->status == M365_OK) {
	if (deliver_record(r, LEDGER_SENT, r->res->request_id, err,
			   sizeof(err)) < 0)
	    msg_warn("%s: sent, but the send ledger cannot record it (%s): "
		     "if the MTA tries again, it is looked for in Sent Items "
		     "first", r->d->queue_id, err);
	goto done;
    }
    if (graph_send_ambiguous(&resp, ok)) {
	r->unresolved = 1;
	if (deliver_record(r, LEDGER_AMBIGUOUS, r->res->request_id, err,
			   sizeof(err)) < 0)
	    msg_warn("%s: %s", r->d->queue_id, err);	/* "sending" stays */
	goto done;
    }

not_sent:
    /* Nothing was accepted: nothing to remember. */
    if (ledger_forget(r->conf, &r->rec, err, sizeof(err)) < 0)
	msg_warn("%s: %s", r->d->queue_id, err);
done:
    http_resp_free(&resp);
    free(from);
}

/* deliver_with - send with the given account */

int     deliver_with(const struct conf *conf, struct http *http,
		             const struct conf_account *acct, struct msg *m,
		             const struct delivery *d, struct m365_result *res)
{
    struct deliver_run r;
    struct rcpt_plan plan;
    struct msg_src *src = NULL;
    char    err[300];
    char    when[32];
    long long enc_len;
    time_t  until;
    struct tm tm;
    int     large, slot = -1;

    memset(&r, 0, sizeof(r));
    r.conf = conf;
    r.http = http;
    r.acct = acct;
    r.m = m;
    r.d = d;
    r.res = res;
    r.rec.lock_fd = -1;
    result_init(res);
    strbuf_init(&r.hdr, STRBUF_MAX_HEADERS + 64 * 1024);

    if (deliver_no_rcpts(d, res))
	goto done;
    if (d->nrcpts > DELIVER_MAX_RCPT) {
	result_set(res, M365_PERM, "5.5.3",
		   "too many recipients (%lu) for one Exchange Online message "
		   "(limit %d); set m365_destination_recipient_limit = %d in "
		   "Postfix main.cf", (unsigned long) d->nrcpts,
		   DELIVER_MAX_RCPT, DELIVER_MAX_RCPT);
	goto done;
    }

    /* Recipients: make the headers name exactly the envelope. */
    if (rcpt_rewrite(m->hdr.data ? m->hdr.data : "", m->hdr.len, d->rcpts,
		     d->nrcpts, &r.hdr, &plan, err, sizeof(err)) < 0) {
	result_set(res, M365_PERM, "5.6.0",
		   "cannot determine the message's recipients safely: %s",
		   err);
	goto done;
    }
    if (plan.removed > 0)
	msg_info("%s: removed %lu header recipient(s) that are not envelope "
		 "recipients of this delivery", d->queue_id,
		 (unsigned long) plan.removed);

    /* The account's limit (Exchange Online's MaxSendSize): no request. */
    if (acct->max_message_size > 0
	&& (long long) m->size > (long long) acct->max_message_size) {
	result_set(res, M365_PERM, "5.3.4",
		   "message size %lld exceeds max_message_size %ld of "
		   "account %s", (long long) m->size, acct->max_message_size,
		   acct->name);
	goto done;
    }

    /* The same message on every retry: body digest, Message-ID. */
    if (ledger_digest(m, r.digest, r.digest_hex) < 0) {
	result_set(res, M365_SYSTEM, "4.3.0", "cannot read the spooled "
		   "message body to hash it");
	goto done;
    }
    if (deliver_add_message_id(&r) < 0)
	goto done;

    /*
     * Size: Graph refuses request bodies over 4 MB (base64 MIME).  The
     * stream knows its exact length (the header/body separator may be 2
     * or 4 bytes), so ask it rather than estimate.  A larger message
     * goes through a draft (draft.h) unless the account says no.
     */
    src = msg_src_create(&r.hdr, m);
    enc_len = msg_src_length(src);
    large = enc_len > GRAPH_MAX_REQUEST;
    if (large && acct->large_messages == CONF_LARGE_NO) {
	result_set(res, M365_PERM, "5.3.4",
		   "message size %lld exceeds the %ld bytes that Graph "
		   "sendMail accepts (4 MB request, base64-encoded), and "
		   "account %s has large_messages = no (set it to yes or "
		   "auto to send such messages through a draft)",
		   enc_len / 4 * 3, (long) GRAPH_MAX_MIME, acct->name);
	goto done;
    }

    /* The ledger: is an earlier attempt unsettled (r.unresolved)? */
    if (deliver_ledger_open(&r) < 0)
	goto done;

    /* Retry-After from an earlier delivery to this mailbox. */
    if ((until = throttle_until(conf, acct->mailbox)) != 0) {
	localtime_r(&until, &tm);
	strftime(when, sizeof(when), "%H:%M:%S", &tm);
	result_set(res, M365_TEMP, "4.7.0",
		   "Microsoft 365 asked to wait (Retry-After) until %s for "
		   "mailbox %s; not contacting Graph before then", when,
		   acct->mailbox);
	goto done;
    }

    /* Sent already: no request. */
    if (r.rec.state == LEDGER_SENT) {
	ledger_sent_result(&r.rec, "(send ledger; not sent again)", res);
	goto done;
    }

    /*
     * The token first: its request goes to the login host, not to the
     * mailbox, so it holds no request slot (and when the token endpoint
     * hangs, every waiting delivery defers for that one reason).
     */
    if (!large && auth_token(http, conf, acct, 0, NULL, &r.token, res) < 0)
	goto done;

    /* At most GRAPH_SLOTS requests to this mailbox at once. */
    if ((slot = graph_slot_take(conf, acct->client_id, acct->mailbox,
				res)) < 0)
	goto done;

    if (large) {
	/* The draft path keeps the record itself (draft.h). */
	ledger_close(&r.rec);
	r.unresolved = draft_deliver(conf, http, acct, m, &r.hdr, d, res)
	    == DELIVER_UNRESOLVED;
	goto done;
    }

    if (deliver_resolve(&r) != 0)
	goto done;
    r.unresolved = 0;
    deliver_sendmail(&r, src);

done:
    graph_slot_release(slot);
    ledger_close(&r.rec);
    msg_src_free(src);
    free(r.message_id);
    xfree_secret(r.token);
    strbuf_free(&r.hdr);
    (void) ledger_expire(conf, 0);
    metrics_delivery(conf, acct, res);
    if (acct != NULL)
	alert_expiry_daily(conf, acct);		/* at most once a day */
    if (res->status == M365_OK)
	return (0);
    return (r.unresolved ? DELIVER_UNRESOLVED : -1);
}

/* deliver - pick the account by envelope sender, then deliver_with() */

int     deliver(const struct conf *conf, struct http *http, struct msg *m,
		        const struct delivery *d, struct m365_result *res,
		        const struct conf_account **acct_r)
{
    const struct conf_account *acct;

    result_init(res);
    /* Before the account: a master.cf typo must not bounce as 5.7.1. */
    if (deliver_no_rcpts(d, res)) {
	if (acct_r)
	    *acct_r = NULL;
	return (-1);
    }
    acct = conf_account_for_sender(conf, d->sender);
    if (acct_r)
	*acct_r = acct;
    if (acct == NULL) {
	result_set(res, M365_PERM, "5.7.1",
		   "no account in %s sends for <%s>: add the sender to an "
		   "account's \"senders\" or set \"default = yes\" on one "
		   "account", conf->path, d->sender);
	return (-1);
    }
    return (deliver_with(conf, http, acct, m, d, res));
}

/* deliver_relay_host - host[:port] of graph_url, for relay= */

static void deliver_relay_host(const struct conf *conf, char *buf, size_t len)
{
    const char *cp = strstr(conf->graph_url, "://");
    size_t  n;

    cp = cp ? cp + 3 : conf->graph_url;
    n = strcspn(cp, "/");
    snprintf(buf, len, "%.*s", (int) n, cp);
}

/* deliver_log - one Postfix-style line per recipient */

void    deliver_log(const struct delivery *d, const struct conf *conf,
		            const struct conf_account *acct,
		            const struct m365_result *res)
{
    char    host[128];
    char    rcpt[300];
    char    delay_text[32];
    double  delay = time_now() - d->start;
    size_t  i;

    deliver_relay_host(conf, host, sizeof(host));
    if (delay < 0)
	delay = 0;
    /* Like Postfix: two significant digits below 10 s, whole seconds above. */
    if (delay < 10)
	snprintf(delay_text, sizeof(delay_text), "%.2g", delay);
    else
	snprintf(delay_text, sizeof(delay_text), "%.0f", delay);
    for (i = 0; i < d->nrcpts || (i == 0 && d->nrcpts == 0); i++) {
	const char *r = d->nrcpts ? d->rcpts[i] : "";

	log_printable(rcpt, sizeof(rcpt), r, strlen(r));
	msg_info("%s: to=<%s>, relay=%s[%s], delay=%s, dsn=%s, status=%s (%s)",
		 d->queue_id, rcpt, acct ? host : "none",
		 acct ? acct->mailbox : "", delay_text, res->dsn,
		 result_disposition(res), res->text);
    }
}
