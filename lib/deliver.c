/*
 * NAME
 *	deliver 3
 * SUMMARY
 *	deliver one message through Graph sendMail (relay and milter)
 * DESCRIPTION
 *	See deliver.h.  The order of checks matters: everything that can
 *	be decided locally (account, recipient count, size, Retry-After)
 *	is decided before a token is requested or Graph is contacted, so
 *	a message that cannot be sent costs no request.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "deliver.h"
#include "draft.h"
#include "graph.h"
#include "log.h"
#include "rcpt.h"
#include "throttle.h"
#include "util.h"

/* Exchange Online: at most 500 recipients per message (To+Cc+Bcc). */
#define DELIVER_MAX_RCPT	500

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

/* deliver_with - send with the given account */

int     deliver_with(const struct conf *conf, struct http *http,
		             const struct conf_account *acct, struct msg *m,
		             const struct delivery *d, struct m365_result *res)
{
    struct strbuf hdr;
    struct rcpt_plan plan;
    struct http_resp resp;
    struct msg_src *src = NULL;
    char    err[300];
    char    when[32];
    char   *token = NULL;
    char   *from = NULL;
    long long enc_len;
    time_t  until;
    struct tm tm;
    int     ok, large;

    result_init(res);
    strbuf_init(&hdr, STRBUF_MAX_HEADERS + 64 * 1024);

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
		     d->nrcpts, &hdr, &plan, err, sizeof(err)) < 0) {
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

    /*
     * Size: Graph refuses request bodies over 4 MB (base64 MIME).  The
     * stream knows its exact length (the header/body separator may be 2
     * or 4 bytes), so ask it rather than estimate.  A larger message
     * goes through a draft (draft.h) unless the account says no.
     */
    src = msg_src_create(&hdr, m);
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

    if (large) {
	(void) draft_deliver(conf, http, acct, m, &hdr, d, res);
	goto done;
    }

    if (auth_token(http, conf, acct, 0, NULL, &token, res) < 0)
	goto done;

    from = rcpt_header_from(hdr.data, hdr.len);
    http_resp_init(&resp);
    ok = graph_send_mime(http, conf, acct->mailbox, token, src, &resp) == 0;
    /* A 401 status line is a refusal even when the transfer broke after it. */
    if (resp.status == 401) {
	/* The cached token was refused: refresh once, send once more. */
	msg_info("%s: Graph refused the access token of account %s (401); "
		 "renewing it", d->queue_id, acct->name);
	char   *refused = token;

	token = NULL;
	http_resp_free(&resp);
	http_resp_init(&resp);
	ok = auth_token(http, conf, acct, 1, refused, &token, res);
	xfree_secret(refused);
	if (ok < 0)
	    goto done_resp;
	if (msg_src_rewind(src) < 0) {
	    result_set(res, M365_SYSTEM, "4.3.0",
		       "cannot re-read the spooled message");
	    goto done_resp;
	}
	ok = graph_send_mime(http, conf, acct->mailbox, token, src, &resp) == 0;
    }
    /* The status line and headers arrived even if the body broke off. */
    graph_note_retry_after(conf, acct->mailbox, &resp);
    graph_classify_send(&resp, ok, from, acct->mailbox, res);

done_resp:
    http_resp_free(&resp);
done:
    msg_src_free(src);
    free(from);
    xfree_secret(token);
    strbuf_free(&hdr);
    return (res->status == M365_OK ? 0 : -1);
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
