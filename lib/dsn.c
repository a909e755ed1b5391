/*
 * NAME
 *	dsn 3
 * SUMMARY
 *	build an RFC 3464 delivery status notification from an NDR
 * DESCRIPTION
 *	See dsn.h.  Everything is written into one strbuf whose limit the
 *	caller sets: a report is bounded by ndr.h (its text, its fields,
 *	the returned header section), so the DSN is too.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "dsn.h"
#include "ndr.h"
#include "strbuf.h"
#include "util.h"

#define DSN_FOLD	76		/* fold delivery-status fields here */
#define DSN_WORD_MAX	900		/* longer words are cut into pieces */

/* dsn_date - RFC 5322 date of t (local time) */

static void dsn_date(time_t t, char *buf, size_t len)
{
    struct tm tm;

    localtime_r(&t, &tm);
    strftime(buf, len, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

/*
 * dsn_ascii - a field value as printable US-ASCII: control characters
 * and foreign bytes become "?", line ends a space
 */
static void dsn_ascii(char *dst, size_t len, const char *src)
{
    size_t  o = 0;
    unsigned char c;

    for (; src && *src && o + 1 < len; src++) {
	c = (unsigned char) *src;
	if (c == '\r' || c == '\n' || c == '\t')
	    c = ' ';
	dst[o++] = (c < 0x20 || c > 0x7e) ? '?' : (char) c;
    }
    dst[o] = 0;
}

/*
 * dsn_field - "Name: value" CRLF, folded at white space before
 * DSN_FOLD columns (a long word stays whole)
 */
static void dsn_field(struct strbuf *sb, const char *name, const char *value)
{
    char    v[2048];
    const char *p, *sp;
    size_t  col, n;

    dsn_ascii(v, sizeof(v), value);
    strbuf_printf(sb, "%s:", name);
    col = strlen(name) + 1;
    for (p = v; *p == ' '; p++)
	 /* void */ ;
    while (*p) {
	/* A word longer than a line is cut (RFC 5322: 998 at most). */
	if ((n = strcspn(p, " ")) > DSN_WORD_MAX)
	    n = DSN_WORD_MAX;
	if (col + 1 + n > DSN_FOLD && col > strlen(name) + 1) {
	    strbuf_puts(sb, "\r\n ");
	    col = 1;
	} else {
	    strbuf_putc(sb, ' ');
	    col++;
	}
	strbuf_append(sb, p, n);
	col += n;
	for (sp = p + n; *sp == ' '; sp++)
	     /* void */ ;
	p = sp;
    }
    strbuf_puts(sb, "\r\n");
}

/*
 * dsn_qp_line - one line of text, quoted-printable (RFC 2045 section
 * 6.7): "=" and foreign bytes as =XX, white space at the end encoded,
 * soft line breaks before 76 columns
 */
static void dsn_qp_line(struct strbuf *sb, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t  i, col = 0, w;
    unsigned char c;
    char    enc[4];

    for (i = 0; i < n; i++) {
	c = (unsigned char) s[i];
	if ((c >= 33 && c <= 126 && c != '=')
	    || ((c == ' ' || c == '\t') && i + 1 < n)) {
	    enc[0] = (char) c;
	    w = 1;
	} else {
	    enc[0] = '=';
	    enc[1] = hex[c >> 4];
	    enc[2] = hex[c & 15];
	    w = 3;
	}
	if (col + w > 75) {
	    strbuf_puts(sb, "=\r\n");
	    col = 0;
	}
	strbuf_append(sb, enc, w);
	col += w;
    }
    strbuf_puts(sb, "\r\n");
}

/* dsn_text - text with LF or CRLF line ends, each line quoted-printable */

static void dsn_text(struct strbuf *sb, const char *prefix, const char *t,
		             size_t max_lines)
{
    struct strbuf line;
    const char *p = t, *e;
    size_t  n, lines = 0, blank = 0;

    strbuf_init(&line, STRBUF_MAX_LINE);
    while (p && *p && lines < max_lines) {
	e = p + strcspn(p, "\n");
	n = (size_t) (e - p);
	if (n > 0 && p[n - 1] == '\r')
	    n--;
	/* Runs of empty lines (HTML layout) shrink to one. */
	while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
	    n--;
	if (n == 0 && (blank++ > 0 || lines == 0)) {
	    p = *e ? e + 1 : e;
	    continue;
	}
	if (n > 0)
	    blank = 0;
	strbuf_reset(&line);
	strbuf_puts(&line, prefix);
	strbuf_append(&line, p, n);
	dsn_qp_line(sb, line.data, line.len);
	lines++;
	p = *e ? e + 1 : e;
    }
    if (p && *p)
	dsn_qp_line(sb, "> [...]", 7);
    strbuf_free(&line);
}

/* dsn_delayed - every recipient delayed: a delay notice */

int     dsn_delayed(const struct ndr *r)
{
    size_t  i;

    for (i = 0; i < r->nrcpts; i++)
	if (strcmp(ndr_action(r->rcpts + i), "delayed") != 0)
	    return (0);
    return (r->nrcpts > 0);
}

/* dsn_orig_rcpt - the ledger's envelope recipient that matches, or NULL */

static const char *dsn_orig_rcpt(const struct dsn_info *in,
				         const struct ndr_rcpt *rc)
{
    size_t  i;

    for (i = 0; i < in->nrcpts; i++)
	if ((rc->final_rcpt && strcasecmp(in->rcpts[i], rc->final_rcpt) == 0)
	    || (rc->orig_rcpt && strcasecmp(in->rcpts[i], rc->orig_rcpt) == 0))
	    return (in->rcpts[i]);
    return (NULL);
}

/* dsn_rcpt_fields - one per-recipient group of the delivery-status */

static void dsn_rcpt_fields(struct strbuf *sb, const struct ndr *r,
			            const struct ndr_rcpt *rc, const char *orig,
			            const char *final)
{
    char    v[1100];

    strbuf_puts(sb, "\r\n");
    if (orig) {
	snprintf(v, sizeof(v), "rfc822; %s", orig);
	dsn_field(sb, "Original-Recipient", v);
    }
    snprintf(v, sizeof(v), "rfc822; %s", final ? final : orig ? orig :
	     "unknown");
    dsn_field(sb, "Final-Recipient", v);
    dsn_field(sb, "Action", ndr_action(rc));
    dsn_field(sb, "Status", ndr_status(rc));
    if (rc->remote_mta || r->reporting_mta)
	dsn_field(sb, "Remote-MTA", rc->remote_mta ? rc->remote_mta :
		  r->reporting_mta);
    if (rc->diag) {
	/* "type; text" (RFC 3464 section 2.3.6); Exchange writes smtp;. */
	snprintf(v, sizeof(v), "%s%s", strchr(rc->diag, ';') ? "" : "smtp; ",
		 rc->diag);
	dsn_field(sb, "Diagnostic-Code", v);
    }
}

/* dsn_summary - the human-readable line of one recipient */

static void dsn_summary(struct strbuf *sb, const struct ndr_rcpt *rc,
			        const char *who)
{
    char    line[1400];

    snprintf(line, sizeof(line), "<%s>: %s %s%s%s", who, ndr_action(rc),
	     ndr_status(rc), rc->diag ? ", " : "", rc->diag ? rc->diag : "");
    dsn_qp_line(sb, line, strlen(line));
}

/* dsn_build - the DSN of a report; see dsn.h */

int     dsn_build(const struct ndr *r, const struct dsn_info *in,
		          struct strbuf *sb)
{
    char    date[64], arrival[64], boundary[80], to[600], mb[400];
    const struct ndr_rcpt *rc;
    const char *orig;
    size_t  i, j;
    int     delayed = dsn_delayed(r);

    dsn_date(in->now, date, sizeof(date));
    if (in->arrival > 0)
	dsn_date(in->arrival, arrival, sizeof(arrival));
    snprintf(boundary, sizeof(boundary), "%ld.m365-fetch.dsn/%s",
	     (long) in->now, in->host);
    dsn_ascii(to, sizeof(to), in->to);
    dsn_ascii(mb, sizeof(mb), in->mailbox ? in->mailbox : "(signed-in user)");

    strbuf_printf(sb, "From: Mail Delivery System <%s>\r\n", in->from);
    strbuf_printf(sb, "To: <%s>\r\n", to);
    strbuf_printf(sb, "Subject: %s\r\n", delayed ?
		  "Delayed Mail (still being retried)" :
		  "Undelivered Mail Returned to Sender");
    strbuf_printf(sb, "Date: %s\r\n", date);
    strbuf_printf(sb, "Message-ID: %s\r\n", in->message_id);
    if (r->orig_message_id)
	dsn_field(sb, "In-Reply-To", r->orig_message_id);
    strbuf_puts(sb, "Auto-Submitted: auto-replied\r\n"
		"MIME-Version: 1.0\r\n");
    strbuf_printf(sb, "Content-Type: multipart/report; "
		  "report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n",
		  boundary);
    strbuf_puts(sb, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    /* 1. The notification for people. */
    strbuf_printf(sb, "--%s\r\nContent-Description: Notification\r\n"
		  "Content-Type: text/plain; charset=utf-8\r\n"
		  "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
		  boundary);
    {
	char    line[1200];

	snprintf(line, sizeof(line), "This is the mail system at host %s "
		 "(m365-fetch).", in->host);
	dsn_qp_line(sb, line, strlen(line));
	strbuf_puts(sb, "\r\n");
	snprintf(line, sizeof(line), "Your message%s%s%s%s%s was handed to "
		 "Microsoft 365 (mailbox %s)%s%s and accepted, but %s.",
		 r->orig_message_id ? " " : "", r->orig_message_id ?
		 r->orig_message_id : "", in->queue_id ? " (queue id " : "",
		 in->queue_id ? in->queue_id : "", in->queue_id ? ")" : "", mb,
		 in->arrival > 0 ? " on " : "", in->arrival > 0 ? arrival : "",
		 delayed ? "its delivery to the recipients below is delayed; "
		 "Microsoft 365 keeps trying and reports again if it gives up"
		 : "it could not be delivered to the recipients below");
	dsn_text(sb, "", line, 20);
	strbuf_puts(sb, "\r\n");
	for (i = 0; i < r->nrcpts; i++) {
	    rc = r->rcpts + i;
	    if (rc->final_rcpt)
		dsn_summary(sb, rc, rc->final_rcpt);
	    else
		for (j = 0; j < in->nrcpts; j++)
		    dsn_summary(sb, rc, in->rcpts[j]);
	}
	if (r->human && *r->human) {
	    strbuf_puts(sb, "\r\n");
	    dsn_qp_line(sb, "Microsoft 365 explained:", 24);
	    strbuf_puts(sb, "\r\n");
	    dsn_text(sb, "> ", r->human, DSN_MAX_QUOTE);
	}
    }
    strbuf_puts(sb, "\r\n");

    /* 2. The delivery-status for programs. */
    strbuf_printf(sb, "--%s\r\nContent-Description: Delivery report\r\n"
		  "Content-Type: message/delivery-status\r\n\r\n", boundary);
    {
	char    v[400];

	snprintf(v, sizeof(v), "dns; %s", in->host);
	dsn_field(sb, "Reporting-MTA", v);
	if (in->queue_id)
	    dsn_field(sb, "X-M365Relay-Queue-ID", in->queue_id);
	if (in->arrival > 0)
	    dsn_field(sb, "Arrival-Date", arrival);
	else if (r->arrival_date)
	    dsn_field(sb, "Arrival-Date", r->arrival_date);
    }
    for (i = 0; i < r->nrcpts; i++) {
	rc = r->rcpts + i;
	if (rc->final_rcpt) {
	    orig = dsn_orig_rcpt(in, rc);
	    dsn_rcpt_fields(sb, r, rc, orig, rc->final_rcpt);
	} else if (in->nrcpts == 0) {
	    dsn_rcpt_fields(sb, r, rc, NULL, NULL);
	} else {
	    for (j = 0; j < in->nrcpts; j++)
		dsn_rcpt_fields(sb, r, rc, in->rcpts[j], in->rcpts[j]);
	}
    }
    strbuf_puts(sb, "\r\n");

    /* 3. The header of the message, as Exchange returned it. */
    if (r->orig_hdr.len > 0) {
	const char *p = r->orig_hdr.data, *e;
	char    line[1000];
	size_t  n, k;

	strbuf_printf(sb, "--%s\r\nContent-Description: Undelivered Message "
		      "Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n",
		      boundary);
	while (*p) {
	    e = p + strcspn(p, "\n");
	    n = (size_t) (e - p);
	    if (n > 0 && p[n - 1] == '\r')
		n--;
	    /* 7bit: foreign bytes and NULs become "?"; 998 at most. */
	    for (k = 0; k < n && k < sizeof(line) - 2; k++)
		line[k] = ((unsigned char) p[k] > 0x7e
			   || ((unsigned char) p[k] < 0x20 && p[k] != '\t'))
		    ? '?' : p[k];
	    strbuf_append(sb, line, k);
	    strbuf_puts(sb, "\r\n");
	    p = *e ? e + 1 : e;
	}
	strbuf_puts(sb, "\r\n");
    }
    strbuf_printf(sb, "--%s--\r\n", boundary);
    return (strbuf_failed(sb) ? -1 : 0);
}
