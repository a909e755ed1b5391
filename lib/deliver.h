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
 *	(draft.h), unless the account has large_messages = no (5.3.4).  deliver_with() does the same with a given
 *	account (m365ctl test --send).  deliver_log() writes the one Postfix-style
 *	line per recipient:
 *	QUEUEID: to=<r>, relay=graph.microsoft.com[mailbox], delay=0.31,
 *	dsn=2.0.0, status=sent (202 Accepted, request-id=...)
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

#endif
