/*
 * NAME
 *	bounce 3h
 * SUMMARY
 *	m365-fetch bounce mode: an Exchange NDR becomes a DSN (issue 12)
 * SYNOPSIS
 *	#include "bounce.h"
 * DESCRIPTION
 *	A [source] with mode = bounces reads the sending mailbox (its
 *	Inbox, or folder) for the non-delivery reports and delay notices
 *	that Exchange Online returns there instead of to the envelope
 *	sender.  fetch.c runs the round as for any source (token, folder,
 *	delta, recovery, the durable state of each message, the
 *	after-action); for each downloaded message it asks bounce_plan()
 *	what to inject, to whom:
 *
 *	  BOUNCE_DSN        a report of a delivery in the send ledger
 *	                    (ledger_find() by the original Message-ID in
 *	                    this mailbox) whose envelope sender was not
 *	                    null: the DSN (dsn.h) in plan->fd, injected
 *	                    with the null sender to that sender; then the
 *	                    after-action;
 *	  BOUNCE_FORWARD    a report of no ledger record (sent by someone
 *	                    else, or expired) with unmatched =
 *	                    postmaster:ADDR: the report itself, injected
 *	                    with the null sender to ADDR; then the
 *	                    after-action;
 *	  BOUNCE_KEEP       a report of no ledger record, unmatched =
 *	                    keep: nothing injected, the report stays in
 *	                    the mailbox as it is (not read again);
 *	  BOUNCE_NO_DSN     the original envelope sender was null (a
 *	                    bounce is never bounced, RFC 5321 section
 *	                    4.5.5): nothing injected, the after-action;
 *	  BOUNCE_NOT_REPORT not a delivery report (ndr.h): left alone.
 *
 *	plan->why says why, for the log line; plan->status is the first
 *	recipient's Status.  bounce_count() adds a handled report to the
 *	counters of the state (reports, DSNs, unmatched) that m365ctl
 *	status shows; fetch.c calls it once, where the outcome is
 *	recorded.
 *
 *	The DSN's Message-ID is made from the report (its Message-ID,
 *	else the Graph id), so a DSN injected again after a crash in the
 *	one ambiguous window (fetchstate.h) carries the same Message-ID.
 * DIAGNOSTICS
 *	bounce_plan() returns the action, or -1 with err set (no
 *	temporary file, the report cannot be read): the message waits
 *	for the next round.
 */
#ifndef M365_BOUNCE_H
#define M365_BOUNCE_H

#include <sys/types.h>

#include "conf.h"
#include "fetchstate.h"

enum bounce_action {
    BOUNCE_DSN = 0,
    BOUNCE_FORWARD = 1,
    BOUNCE_KEEP = 2,
    BOUNCE_NO_DSN = 3,
    BOUNCE_NOT_REPORT = 4,
};

struct bounce_plan {
    enum bounce_action action;
    int     fd;				/* BOUNCE_DSN: the DSN; else -1 */
    char   *rcpt[2];			/* whom it goes to; NULL-terminated */
    char   *orig_mid;			/* the original Message-ID, or NULL */
    char    status[32];			/* "5.1.10", or "" */
    int     delayed;			/* a delay notice */
    int     unmatched;			/* no ledger record */
    char    why[1000];
};

struct bounce_ctx {
    const struct conf *conf;
    const struct conf_source *src;
    const char *mailbox;		/* the sending mailbox */
    const char *host;			/* this host, for Reporting-MTA */
    const char *tmpdir;
};

extern int bounce_plan(const struct bounce_ctx *, const char *graph_id,
		               int fd, off_t start, struct bounce_plan *,
		               char *err, size_t errlen);
extern void bounce_plan_free(struct bounce_plan *);
extern void bounce_count(struct fetchstate *, const struct bounce_plan *);
extern const char *bounce_action_name(enum bounce_action);

#endif
