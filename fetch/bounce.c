/*
 * NAME
 *	bounce 3
 * SUMMARY
 *	m365-fetch bounce mode: an Exchange NDR becomes a DSN (issue 12)
 * DESCRIPTION
 *	See bounce.h.  The report is read from the spool file of its
 *	download (msg.h), taken apart by ndr.h, matched in the send ledger
 *	(ledger_find()), and the DSN is written by dsn.h into a new
 *	unlinked temporary file that fetch.c injects like any message:
 *	the durable states of fetchstate.h make it exactly once.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "bounce.h"
#include "dsn.h"
#include "inject.h"
#include "ledger.h"
#include "log.h"
#include "msg.h"
#include "ndr.h"
#include "strbuf.h"
#include "util.h"

#define BOUNCE_MAX_REPORT	(160L * 1024 * 1024)	/* Exchange's 150 MB */
#define BOUNCE_MAX_DSN		(16L * 1024 * 1024)	/* ndr.h: 200 recipients
						 * of 2 KB fields; a text-only
						 * report once per envelope
						 * recipient */

/* bounce_action_name - for logs */

const char *bounce_action_name(enum bounce_action a)
{
    switch (a) {
    case BOUNCE_DSN:
	return ("dsn");
    case BOUNCE_FORWARD:
	return ("forward");
    case BOUNCE_KEEP:
	return ("keep");
    case BOUNCE_NO_DSN:
	return ("no-dsn");
    case BOUNCE_NOT_REPORT:
    default:
	return ("not-a-report");
    }
}

/* bounce_count - a handled report in the state's counters */

void    bounce_count(struct fetchstate *st, const struct bounce_plan *p)
{
    if (p->action == BOUNCE_NOT_REPORT)
	return;
    st->bounce_reports++;
    if (p->action == BOUNCE_DSN)
	st->bounce_dsns++;
    if (p->unmatched)
	st->bounce_unmatched++;
}

/* bounce_plan_free - release a plan; twice is fine */

void    bounce_plan_free(struct bounce_plan *p)
{
    if (p->fd >= 0)
	close(p->fd);
    p->fd = -1;
    free(p->rcpt[0]);
    free(p->orig_mid);
    p->rcpt[0] = p->orig_mid = NULL;
}

/*
 * bounce_message_id - the DSN's Message-ID: SHA-256 of the report's
 * Message-ID (else its Graph id), so that the same report always gives
 * the same one
 */
static void bounce_message_id(const char *key, const char *host, char *out,
			              size_t len)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0, i;
    char    h[41];

    if (EVP_Digest(key, strlen(key), md, &mdlen, EVP_sha256(), NULL) != 1
	|| mdlen < 20) {
	if (random_hex(h, 20) < 0)
	    snprintf(h, sizeof(h), "%lx%lx", (long) time(NULL), (long) getpid());
    } else {
	for (i = 0; i < 20; i++) {
	    h[2 * i] = hex[md[i] >> 4];
	    h[2 * i + 1] = hex[md[i] & 15];
	}
	h[40] = 0;
    }
    snprintf(out, len, "<%s.dsn@%s>", h, host);
}

/* bounce_write_dsn - the DSN into a new temporary file; 0 or -1 (err) */

static int bounce_write_dsn(const struct bounce_ctx *bc, const struct ndr *r,
			            const struct ledger_rec *rec,
			            const char *graph_id, struct bounce_plan *p,
			            char *err, size_t errlen)
{
    struct dsn_info in;
    struct strbuf sb;
    char    from[400], mid[400];
    int     rc = -1;

    snprintf(from, sizeof(from), "%s%s", bc->src->bounce_from ?
	     bc->src->bounce_from : "MAILER-DAEMON@", bc->src->bounce_from ?
	     "" : bc->host);
    bounce_message_id(r->report_message_id ? r->report_message_id : graph_id,
		      bc->host, mid, sizeof(mid));
    memset(&in, 0, sizeof(in));
    in.host = bc->host;
    in.from = from;
    in.to = rec->sender;
    in.mailbox = bc->mailbox;
    in.queue_id = rec->queue_id;
    in.arrival = rec->attempted ? rec->attempted : rec->created;
    in.rcpts = rec->rcpts;
    in.nrcpts = (size_t) rec->nrcpts;
    in.message_id = mid;
    in.now = time(NULL);
    strbuf_init(&sb, BOUNCE_MAX_DSN);
    if (dsn_build(r, &in, &sb) < 0) {
	snprintf(err, errlen, "the DSN would be longer than %ld bytes",
		 (long) BOUNCE_MAX_DSN);
    } else if ((p->fd = inject_tmpfile(bc->tmpdir)) < 0) {
	snprintf(err, errlen, "cannot create a temporary file in %s: %s (set "
		 "TMPDIR to a writable directory)", bc->tmpdir,
		 strerror(errno));
    } else if (write(p->fd, sb.data, sb.len) != (ssize_t) sb.len
	       || lseek(p->fd, 0, SEEK_SET) != 0) {
	snprintf(err, errlen, "cannot write the DSN to a temporary file in "
		 "%s: %s", bc->tmpdir, strerror(errno));
    } else {
	rc = 0;
    }
    strbuf_free(&sb);
    return (rc);
}

/* bounce_decide - match the report in the ledger and pick the action */

static int bounce_decide(const struct bounce_ctx *bc, const struct ndr *r,
			         const char *graph_id, struct bounce_plan *p,
			         char *err, size_t errlen)
{
    struct ledger_rec rec;
    char    lerr[512], mid[300], who[300];
    int     found;

    log_printable(mid, sizeof(mid), r->orig_message_id ? r->orig_message_id :
		  "(none)", r->orig_message_id ? strlen(r->orig_message_id) : 6);
    found = ledger_find(bc->conf, bc->mailbox, r->orig_message_id,
			r->nrcpts > 0 ? r->rcpts[0].final_rcpt : NULL, &rec,
			lerr, sizeof(lerr));
    if (found < 0) {
	/* The ledger is unreadable: try again, never guess. */
	snprintf(err, errlen, "cannot search the send ledger: %s", lerr);
	return (-1);
    }
    if (found == 0) {
	p->unmatched = 1;
	if (bc->src->unmatched_to) {
	    p->action = BOUNCE_FORWARD;
	    p->rcpt[0] = xstrdup(bc->src->unmatched_to);
	    snprintf(p->why, sizeof(p->why), "report of message-id %s, which "
		     "is not in the send ledger (not sent through m365relay, "
		     "or older than ledger_lifetime); forwarded to the "
		     "postmaster", mid);
	} else {
	    p->action = BOUNCE_KEEP;
	    snprintf(p->why, sizeof(p->why), "report of message-id %s, which "
		     "is not in the send ledger (not sent through m365relay, "
		     "or older than ledger_lifetime); left in the mailbox "
		     "(unmatched = keep)", mid);
	}
	return (0);
    }
    log_printable(who, sizeof(who), rec.sender, strlen(rec.sender));
    if (*rec.sender == 0) {
	p->action = BOUNCE_NO_DSN;
	snprintf(p->why, sizeof(p->why), "report of message-id %s (queue id "
		 "%s): its envelope sender was null, and a bounce is never "
		 "bounced; no DSN", mid, rec.queue_id ? rec.queue_id : "?");
	ledger_close(&rec);
	return (0);
    }
    if (bounce_write_dsn(bc, r, &rec, graph_id, p, err, errlen) < 0) {
	ledger_close(&rec);
	return (-1);
    }
    p->action = BOUNCE_DSN;
    p->rcpt[0] = xstrdup(rec.sender);
    snprintf(p->why, sizeof(p->why), "%s report of message-id %s (queue id "
	     "%s): DSN to <%s>", p->delayed ? "delay" : "non-delivery", mid,
	     rec.queue_id ? rec.queue_id : "?", who);
    ledger_close(&rec);
    return (0);
}

/* bounce_plan - what to inject for one downloaded message; see bounce.h */

int     bounce_plan(const struct bounce_ctx *bc, const char *graph_id,
		            int fd, off_t start, struct bounce_plan *p,
		            char *err, size_t errlen)
{
    struct m365_result res;
    struct msg m;
    struct ndr r;
    int     rc;

    memset(p, 0, sizeof(*p));
    p->fd = -1;
    if (lseek(fd, start, SEEK_SET) < 0) {
	snprintf(err, errlen, "cannot read the spooled report: %s",
		 strerror(errno));
	return (-1);
    }
    memset(&m, 0, sizeof(m));
    result_init(&res);
    if (msg_read(&m, fd, bc->tmpdir, BOUNCE_MAX_REPORT, &res) < 0
	&& res.dsn[0] == '4') {
	snprintf(err, errlen, "cannot read the spooled report: %s", res.text);
	msg_free(&m);
	return (-1);
    }
    if (ndr_parse(&m, &r, err, errlen) < 0) {
	msg_free(&m);
	ndr_free(&r);
	return (-1);
    }
    msg_free(&m);
    if (r.kind == NDR_NONE) {
	p->action = BOUNCE_NOT_REPORT;
	snprintf(p->why, sizeof(p->why), "not a delivery report (no "
		 "multipart/report, message/delivery-status or "
		 "X-MS-Exchange-Message-Is-Ndr); left alone");
	ndr_free(&r);
	return (p->action);
    }
    p->delayed = dsn_delayed(&r);
    if (r.nrcpts > 0)
	snprintf(p->status, sizeof(p->status), "%s", ndr_status(r.rcpts));
    if (r.orig_message_id)
	p->orig_mid = xstrdup(r.orig_message_id);
    if (r.kind == NDR_HUMAN)
	msg_info("%s: id=%s: the report has no machine-readable part "
		 "(message/delivery-status); its text says %s", bc->src->name,
		 graph_id, p->status[0] ? p->status : "no status code");
    rc = bounce_decide(bc, &r, graph_id, p, err, errlen);
    ndr_free(&r);
    if (rc < 0) {
	bounce_plan_free(p);
	return (-1);
    }
    return (p->action);
}
