/*
 * NAME
 *	resolve 3h
 * SUMMARY
 *	was an interrupted send accepted?  Ask Sent Items before a resend
 * SYNOPSIS
 *	#include "resolve.h"
 * DESCRIPTION
 *	Graph has no idempotency key (graph-facts.md 4): a send whose
 *	request went out whole and then broke off (a reset, a time-out,
 *	5xx), or whose process died in the middle, may have been accepted.
 *	The send ledger (ledger.h) keeps such a delivery in state sending
 *	or ambiguous; before the MTA's next try sends it again,
 *	resolve_ambiguous() (with the account's access token, renewed
 *	once in place when Graph refuses it, the delivery's envelope
 *	recipients, its queue id for the log) decides:
 *
 *	  RESOLVE_SENT   its copy is in Sent Items of the sending mailbox
 *	                 (graph_sent_find(): the same internetMessageId,
 *	                 every envelope recipient, created after the
 *	                 attempt less RESOLVE_SKEW seconds of clock skew):
 *	                 it was accepted.  The record is saved as sent,
 *	                 res is 2.0.0 "already sent at ..., request-id ...
 *	                 (confirmed in Sent Items)";
 *	  RESOLVE_DEFER  no copy yet, but the copy can take minutes to
 *	                 appear (Microsoft: "The copy of the message is not
 *	                 created until the message successfully sends,
 *	                 which may take time"): until sent_items_wait
 *	                 seconds after the attempt, res is 4.4.2 and the
 *	                 MTA asks again later; also when the look-up itself
 *	                 failed;
 *	  RESOLVE_SEND   no copy sent_items_wait seconds after the attempt:
 *	                 it was not accepted, send again (logged).  Also
 *	                 when the account may not read Sent Items (no
 *	                 Mail.ReadBasic) or the message has no Message-ID
 *	                 to look for: then it cannot be told, and the
 *	                 message is sent again with a warning that names
 *	                 the possible duplicate and the permission that
 *	                 prevents it (at-least-once, as before).
 *
 *	resolve_perm() is the least permission that lets the account look
 *	(Mail.ReadBasic.All for app-only sign-in, Mail.ReadBasic, or
 *	Mail.ReadBasic.Shared for a delegated account that sends from
 *	another user's mailbox); resolve_remedy() the sentence that says
 *	how to grant it.  resolve_readable() tells from what is known
 *	without a request (the granted scopes of a delegated sign-in, the
 *	roles claim of an app-only JWT access token) whether the account
 *	has it: 1 yes, 0 no, -1 unknown; why says which.  resolve_probe()
 *	asks Graph (one GET of Sent Items, m365ctl test): 0 readable, -1
 *	with res filled (GRAPH_FIND_DENIED in *denied when the answer was
 *	403).
 */
#ifndef M365_RESOLVE_H
#define M365_RESOLVE_H

#include <stddef.h>

#include "conf.h"
#include "http.h"
#include "ledger.h"
#include "status.h"

#define RESOLVE_SKEW	600		/* seconds of clock skew allowed */

/* resolve_ambiguous() results */
#define RESOLVE_SENT	1		/* accepted: not again */
#define RESOLVE_SEND	0		/* (presumably) not accepted: send */
#define RESOLVE_DEFER	(-1)		/* ask again later (res) */

extern int resolve_ambiguous(const struct conf *, struct http *,
			             const struct conf_account *,
			             char **token, char *const *rcpts,
			             size_t nrcpts, const char *queue_id,
			             struct ledger_rec *, struct m365_result *);
extern const char *resolve_perm(const struct conf_account *);
extern void resolve_remedy(const struct conf *, const struct conf_account *,
			           char *buf, size_t len);
extern int resolve_readable(const struct conf *, const struct conf_account *,
			            const char *token, char *why, size_t len);
extern int resolve_probe(const struct conf *, struct http *,
			         const struct conf_account *, const char *token,
			         int *denied, struct m365_result *);

#endif
