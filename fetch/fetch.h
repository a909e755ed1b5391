/*
 * NAME
 *	fetch 3h
 * SUMMARY
 *	one round of the inbound poller for one [source]: Graph -> MTA
 * SYNOPSIS
 *	#include "fetch.h"
 * DESCRIPTION
 *	fetch_round() runs one round for a source, under the source's lock
 *	(a second process gets FETCH_BUSY):
 *
 *	1. state: state_dir/sources/NAME.json (fetchstate.h); a Retry-After
 *	   from an earlier round that has not expired defers at once;
 *	2. token: auth_token() (an offline account costs no request);
 *	3. folder: resolved once by source_resolve() (source.h, which
 *	   m365ctl test uses too: well-known name, else displayName via
 *	   $filter, "A/B" walks child folders) and cached with the setting
 *	   it came from; a changed setting or a 404 resolves again;
 *	4. recovery: every message still pending from an interrupted
 *	   round is finished first (fetchstate_recovery());
 *	5. delta: mailFolders/{id}/messages/delta with $select=id,
 *	   internetMessageId,isRead,from,subject and Prefer:
 *	   odata.maxpagesize=page_size, following @odata.nextLink (only to
 *	   graph_url) to @odata.deltaLink; 410 Gone or SyncStateNotFound /
 *	   resyncRequired starts a full resync once per round; a saved
 *	   deltaLink that is not under graph_url (graph_url changed) is
 *	   dropped with a warning (a full resync) - http.c refuses to send
 *	   the token outside graph_url anyway;
 *	6. per unread message that is not pending and not in the done
 *	   list: $value streamed to an unlinked temporary file (at most
 *	   the source's max_message_size: a larger one is parked like a
 *	   refused one; a download slower than 1 KB/s for [global]
 *	   timeout seconds, or longer than timeout + max_message_size /
 *	   128 KB seconds, defers the round), loop guard, injection
 *	   (state "data_sent", with fsync, just before the end of the
 *	   data), state "injected" (no fsync), the after-action (read:
 *	   PATCH isRead; move:FOLDER; delete), then "done" (with the next
 *	   write); fetchstate.c says which write is needed and why;
 *	   a permanent MTA refusal (5xx) records "rejected", moves the
 *	   message to reject_folder (or marks it read and flagged), logs
 *	   the reason and never retries it;
 *	7. the deltaLink is saved only when every message of the round
 *	   was handed to the MTA and processed; the state is written with
 *	   fsync once at the end of every round.
 *
 *	Injected messages carry two trace header fields:
 *	  Received: from HOST (Microsoft Graph mailbox MB folder F) by
 *	      THISHOST (m365-fetch) with HTTPS; DATE
 *	  X-M365Relay-Source: NAME; mailbox=MB; id=GRAPHID
 *	Loop guard: a message whose header already carries an
 *	X-M365Relay-Source field naming this mailbox (mailbox=, whatever
 *	the source name), or - an old field without mailbox= - naming
 *	this source, was injected by us before and came back (a forward,
 *	an alias, a bounce that quotes the header): it is not injected
 *	again but handled like a rejected message and logged with
 *	status=skipped.  The header ends at the first blank line, LF or
 *	CRLF.  A header whose first line starts with white space
 *	(malformed: it continues nothing) is injected from its first
 *	field: white-space-only lines before it are left out, and so is
 *	the indent of a first line "  Name: value"; otherwise that line
 *	would continue the trace fields put before it.
 *
 *	deliver_to = sendmail: a message that a killed run left in state
 *	data_sent is looked up in the record of that run's sendmail helper
 *	(inject.h) first: sendmail exited 0 - only the after-action is
 *	left; another exit status - injected afresh; no record - injected
 *	again with the duplicate warning.
 *
 *	A $value error of one message (not 404, 401, 403, 429, 503, 504,
 *	nor an unusable mailbox; e.g. 400 or 500 for a corrupt item) is
 *	logged with status=deferred and skips that message for this
 *	round: it stays unread, the other messages go on, and the
 *	deltaLink is not saved, so the next round tries it again.
 *
 *	Problems an administrator must fix (sign-in required, consent or
 *	permission missing, mailbox or folder unknown, recipients refused
 *	by the MTA) put the source offline: logged once with the remedy,
 *	recorded in the state for m365ctl status, and - when the source
 *	has notify - reported once per offline period by mail through
 *	the source's deliver_to (null sender, Auto-Submitted).  The next
 *	round that works brings it back online by itself.
 *
 *	stop is polled between messages: a round that is asked to stop
 *	finishes the message in hand (injection, after-action, state) and
 *	returns FETCH_DEFERRED ("stopped by a signal"); a clean stop is
 *	not recorded as last_error in the state.
 * DIAGNOSTICS
 *	One log line per message in the house format:
 *	"NAME: id=..., message-id=<...>, size=N, to=<rcpt>, relay=...,
 *	dsn=X.Y.Z, status=sent|deferred|bounced|skipped (reply)".
 *	fetch_round() returns the outcome; why says what went wrong.
 */
#ifndef M365_FETCH_H
#define M365_FETCH_H

#include <signal.h>

#include "conf.h"
#include "http.h"

enum fetch_status {
    FETCH_DONE = 0,			/* round complete */
    FETCH_DEFERRED = 1,			/* something waits for the next round */
    FETCH_OFFLINE = 2,			/* an administrator must act */
    FETCH_BUSY = 3,			/* another process has the source */
};

struct fetch_result {
    enum fetch_status status;
    long    retry_after;		/* > 0: Graph asked to wait (seconds) */
    long    injected;			/* messages accepted by the MTA */
    long    rejected;			/* refused permanently or loop-skipped */
    long    deferred;			/* left for the next round */
    char    why[700];			/* for FETCH_DEFERRED/OFFLINE/BUSY */
};

extern int fetch_round(const struct conf *, struct http *,
		               const struct conf_source *,
		               volatile sig_atomic_t *stop, struct fetch_result *);
extern const char *fetch_status_name(enum fetch_status);

#endif
