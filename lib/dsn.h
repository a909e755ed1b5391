/*
 * NAME
 *	dsn 3h
 * SUMMARY
 *	build an RFC 3464 delivery status notification from an NDR
 * SYNOPSIS
 *	#include "dsn.h"
 * DESCRIPTION
 *	dsn_build() writes the DSN that m365-fetch's bounce mode (issue
 *	12) injects for a report of Exchange Online (ndr.h) to the
 *	original envelope sender: a multipart/report;
 *	report-type=delivery-status (RFC 6522) of
 *
 *	  text/plain (UTF-8, quoted-printable): what happened, per
 *	  recipient its Status and Diagnostic-Code, and Exchange's own
 *	  explanation quoted ("> ", at most DSN_MAX_QUOTE lines);
 *
 *	  message/delivery-status (RFC 3464): Reporting-MTA: dns; HOST,
 *	  X-M365Relay-Queue-ID and Arrival-Date (from the send ledger),
 *	  then per recipient Original-Recipient (the envelope recipient
 *	  of the ledger that matches, when one does), Final-Recipient,
 *	  Action (failed, delayed ...), Status, Remote-MTA (the
 *	  Reporting-MTA of Exchange's report) and Diagnostic-Code; a
 *	  report without recipient addresses (the text-only fallback)
 *	  gives one entry per envelope recipient of the ledger;
 *
 *	  text/rfc822-headers: the header section Exchange returned.
 *
 *	The header: From: MAILER-DAEMON address (info->from), To: the
 *	sender, Subject by the actions (failed, or delayed only),
 *	Auto-Submitted: auto-replied, the given Message-ID, In-Reply-To
 *	the original Message-ID.  The message is 7bit: text outside the
 *	delivery-status fields is quoted-printable, foreign bytes in
 *	the fields and the returned header become "?", and long fields
 *	are folded.  Line ends are CRLF.
 *
 *	dsn_delayed() is 1 when every recipient of the report is delayed
 *	(a delay notice), else 0.
 * DIAGNOSTICS
 *	dsn_build() returns 0, or -1 when the DSN would be longer than
 *	out's limit (out->max; the caller's choice).
 */
#ifndef M365_DSN_H
#define M365_DSN_H

#include <stddef.h>
#include <time.h>

#include "ndr.h"
#include "strbuf.h"

#define DSN_MAX_QUOTE	200		/* lines of Exchange's text quoted */

struct dsn_info {
    const char *host;			/* Reporting-MTA: dns; host */
    const char *from;			/* MAILER-DAEMON@domain */
    const char *to;			/* the original envelope sender */
    const char *mailbox;		/* the sending mailbox */
    const char *queue_id;		/* of the send, or NULL */
    time_t  arrival;			/* when the MTA handed it over, or 0 */
    char  **rcpts;			/* envelope recipients (ledger) */
    size_t  nrcpts;
    const char *message_id;		/* "<...>" of the DSN */
    time_t  now;
};

extern int dsn_build(const struct ndr *, const struct dsn_info *,
		             struct strbuf *out);
extern int dsn_delayed(const struct ndr *);

#endif
