/*
 * NAME
 *	ndr 3h
 * SUMMARY
 *	read a non-delivery report (NDR) or delay notice by its structure
 * SYNOPSIS
 *	#include "ndr.h"
 * DESCRIPTION
 *	Exchange Online returns every non-delivery report and delay notice
 *	of a message sent through Graph to the sending mailbox (issue 12).
 *	ndr_parse() reads one such report from a message read by msg.h,
 *	by its MIME structure only, never by its Subject (which Exchange
 *	writes in the sender's language):
 *
 *	  a message/delivery-status (or message/global-delivery-status)
 *	  part, in a multipart/report; report-type=delivery-status, or in
 *	  a message that carries X-MS-Exchange-Message-Is-Ndr or an
 *	  Auto-Submitted field other than "no": NDR_MACHINE, the fields
 *	  of each recipient come from that part (Final-Recipient,
 *	  Original-Recipient, Action, Status, Diagnostic-Code,
 *	  Remote-MTA; per message Reporting-MTA and Arrival-Date);
 *
 *	  no such part, but multipart/report; report-type=delivery-status
 *	  or X-MS-Exchange-Message-Is-Ndr, and Auto-Submitted other than
 *	  "no": NDR_HUMAN, the fallback: one recipient entry without an
 *	  address, its Status the first enhanced status code (RFC 3463,
 *	  class 4 or 5) of the human-readable text, its Diagnostic-Code
 *	  the line around it, Action "failed" (class 5) or "delayed";
 *	  without any code the entry has Action "failed" only (5.0.0);
 *
 *	  anything else: NDR_NONE (not a report; left alone).
 *
 *	The original message is named by the Message-ID of the returned
 *	message/rfc822 (message/global) or text/rfc822-headers part,
 *	else by the report's In-Reply-To, else by the last message id of
 *	its References.  The returned header section is kept (at most
 *	NDR_MAX_HEADERS bytes, cut at a line end) for the DSN, and so is
 *	the human-readable text (the first text/plain part, else the
 *	first text/html part with its tags removed; converted to UTF-8,
 *	at most NDR_MAX_TEXT bytes).
 *
 *	ndr_action() is the Action of a recipient as RFC 3464 spells it
 *	("failed", "delayed", "delivered", "relayed", "expanded"), or,
 *	when the report's is missing or unknown, "failed" for a class 5
 *	Status and "delayed" otherwise.  ndr_status() is its Status when
 *	that is a well-formed code, else 5.0.0 or 4.0.0 by the action.
 * DIAGNOSTICS
 *	ndr_parse() returns 0 (out->kind says what was found), or -1 with
 *	err set when the message cannot be read.  Call ndr_free() after
 *	either.  Limits: NDR_MAX_RCPTS recipients, NDR_MAX_STATUS bytes
 *	of the delivery-status part.
 */
#ifndef M365_NDR_H
#define M365_NDR_H

#include <stddef.h>

#include "msg.h"
#include "strbuf.h"

#define NDR_MAX_RCPTS	200
#define NDR_MAX_STATUS	(256 * 1024)	/* message/delivery-status bytes */
#define NDR_MAX_HEADERS	(64 * 1024)	/* returned header section */
#define NDR_MAX_TEXT	(16 * 1024)	/* human-readable text */

enum ndr_kind {
    NDR_NONE = 0,			/* not a delivery report */
    NDR_MACHINE = 1,			/* message/delivery-status part */
    NDR_HUMAN = 2,			/* report without one: the text */
};

struct ndr_rcpt {
    char   *final_rcpt;			/* address, no "rfc822;", or NULL */
    char   *orig_rcpt;			/* Original-Recipient, or NULL */
    char   *action;			/* lower case, or NULL */
    char   *status;			/* "5.1.10", or NULL */
    char   *diag;			/* "smtp; 550 5.1.10 ...", or NULL */
    char   *remote_mta;			/* "dns; host", or NULL */
};

struct ndr {
    enum ndr_kind kind;
    int     exchange;			/* X-MS-Exchange-Message-Is-Ndr */
    char   *reporting_mta;		/* "dns; host", or NULL */
    char   *arrival_date;		/* as written, or NULL */
    char   *orig_message_id;		/* "<...>", or NULL */
    const char *orig_from;		/* where it came from: "rfc822",
					 * "in-reply-to", "references" */
    char   *report_message_id;		/* the report's own, or NULL */
    struct ndr_rcpt *rcpts;
    size_t  nrcpts;
    char   *human;			/* UTF-8 text, or NULL */
    struct strbuf orig_hdr;		/* returned header section, CRLF */
};

extern int ndr_parse(const struct msg *, struct ndr *, char *err,
		             size_t errlen);
extern void ndr_free(struct ndr *);
extern const char *ndr_action(const struct ndr_rcpt *);
extern const char *ndr_status(const struct ndr_rcpt *);
extern const char *ndr_kind_name(enum ndr_kind);

#endif
