/*
 * NAME
 *	deliver 3h
 * SUMMARY
 *	deliver one message through Graph sendMail (relay and milter)
 * SYNOPSIS
 *	#include "deliver.h"
 * DESCRIPTION
 *	deliver() picks the account for the envelope sender, checks the
 *	size (the account's max_message_size: 5.3.4 before any request)
 *	and the mailbox's Retry-After state, rewrites the recipient
 *	headers to exactly the envelope recipients (rcpt.h), gets a token
 *	(auth.h), sends with sendMail in MIME form, retries once with a
 *	fresh token after a 401, records Retry-After, and classifies the
 *	outcome (graph.h).  A message whose base64 MIME is over the 4 MB
 *	of one request goes through a draft and its attachments instead
 *	(draft.h), unless the account has large_messages = no (5.3.4).
 *	deliver_with() does the same with a given account (m365ctl test
 *	--send, the milter's deliver mode).
 *
 *	Exactly once: a message without a Message-ID gets one before the
 *	first attempt, the same on every retry of the MTA
 *	(deliver_message_id() of queue id, sender, Date and the body).
 *	Every send is recorded in the send ledger (ledger.h) before its
 *	first byte goes out, and its outcome after: sent, ambiguous (the
 *	request went out whole, then the connection broke or Graph
 *	answered 5xx: it may have been accepted), or nothing sent (the
 *	record is removed).  A delivery the ledger shows as sent is not
 *	sent again ("already sent at ..."); one left sending (its process
 *	died) or ambiguous is resolved first (resolve.h).  While it holds
 *	the mailbox's Graph requests, a delivery owns one of its
 *	GRAPH_SLOTS request slots (graph_slot_take()).
 *
 *	deliver_message_id() writes "<HEX@DOMAIN>": HEX from SHA-256 of
 *	qid, sender, date and digest (a hash of the content), DOMAIN the
 *	[milter] message_id_domain, else the host name; a random HEX when
 *	hashing fails.  -1 when that fails too.  The milter's filter mode
 *	uses it too.
 *
 *	deliver_log() writes the one Postfix-style line per recipient:
 *	QUEUEID: to=<r>, relay=graph.microsoft.com[mailbox], delay=0.31,
 *	dsn=2.0.0, status=sent (202 Accepted, request-id=...)
 * DIAGNOSTICS
 *	deliver() and deliver_with() return 0 when sent, -1 with res
 *	filled, and DELIVER_UNRESOLVED (-2, res is 4.x.x) when the message
 *	may have been accepted and that is not settled yet: the caller
 *	must defer it and never hand it to another route (the milter
 *	answers 4xx whatever its on_graph_error says).
 */
#ifndef M365_DELIVER_H
#define M365_DELIVER_H

#include <stddef.h>

#include "conf.h"
#include "http.h"
#include "msg.h"
#include "status.h"

/* Graph refuses request bodies over 4 MB; MIME is sent base64-encoded. */
#define GRAPH_MAX_REQUEST	(4L * 1024 * 1024)
#define GRAPH_MAX_MIME		(GRAPH_MAX_REQUEST / 4 * 3)

#define DELIVER_UNRESOLVED	(-2)	/* may have been sent: defer */

struct delivery {
    const char *queue_id;		/* or "NOQUEUE" */
    const char *sender;			/* envelope sender, "" for <> */
    char  **rcpts;			/* envelope recipients */
    size_t  nrcpts;
    double  start;			/* time_now() at arrival */
};

extern int deliver(const struct conf *, struct http *, struct msg *,
		           const struct delivery *, struct m365_result *,
			           const struct conf_account **acct_r);
extern int deliver_with(const struct conf *, struct http *,
		                const struct conf_account *, struct msg *,
			            const struct delivery *, struct m365_result *);
extern void deliver_log(const struct delivery *, const struct conf *,
		                const struct conf_account *,
			                const struct m365_result *);
extern int deliver_message_id(const struct conf *, const char *qid,
			              const char *sender, const char *date,
			              const unsigned char *digest, size_t dlen,
			              char *out, size_t outlen);

#endif
