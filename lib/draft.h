/*
 * NAME
 *	draft 3h
 * SUMMARY
 *	large messages: a Graph draft, its attachments, then send
 * SYNOPSIS
 *	#include "draft.h"
 * DESCRIPTION
 *	draft_deliver() sends a message that does not fit one sendMail
 *	request (base64 MIME over 4 MB) the way Microsoft documents for
 *	large attachments: it creates a draft in the sending mailbox,
 *	attaches the parts, and sends the draft.  deliver.c calls it after
 *	every local check (recipients, max_message_size, Retry-After)
 *	passed and the recipient headers were rewritten (hdr).
 *
 *	The draft is JSON, not MIME: Exchange sends a draft made from MIME
 *	as that MIME and does not put attachments added later into it
 *	(Microsoft's create-message page documents adding attachments for
 *	the JSON form only).  So the message is rebuilt by Exchange from:
 *	  subject         Subject (RFC 2047 decoded);
 *	  body            the message text: the text/html alternative,
 *	                  else text/plain (the first text part of a
 *	                  multipart/mixed, the root of multipart/related),
 *	                  decoded and converted to UTF-8; the other
 *	                  alternatives of it are dropped (Exchange makes
 *	                  its own plain text alternative);
 *	  from, toRecipients, ccRecipients, bccRecipients, replyTo
 *	                  From, To, Cc, Bcc (as rewritten: exactly the
 *	                  envelope recipients), Reply-To, with display
 *	                  names;
 *	  importance      Importance, X-Priority or Priority;
 *	  isReadReceiptRequested   Disposition-Notification-To present;
 *	  Message-ID      as the extended property PidTagInternetMessageId
 *	                  (String 0x1035), so replies and the ledger keep
 *	                  referring to the same message;
 *	  internetMessageHeaders   the first DRAFTMSG_MAX_XHEADERS X- fields
 *	                  (Graph takes only X- names, at most five; X-MS-
 *	                  Exchange- fields are Exchange's own and left out);
 *	  attachments     every other leaf part: a fileAttachment with its
 *	                  decoded bytes, name (RFC 2231/2047 decoded; a name
 *	                  from the type when there is none, from the inner
 *	                  Subject and ending in .eml for message/rfc822),
 *	                  contentType (with the charset of a text part), and
 *	                  contentId, isInline for a part with a Content-ID
 *	                  that the HTML body refers to (cid:) or that sits in
 *	                  a multipart/related.
 *	Everything else in the header section (Date, References,
 *	In-Reply-To, List-*, Auto-Submitted, Sender, Keywords, other
 *	fields, the MIME layout, DKIM signatures) does not survive:
 *	Exchange writes a new header section when it sends the draft.
 *
 *	Requests: attachments go into the draft's own request while the
 *	request stays within 4 MB (in message order, until the first one
 *	that does not fit); each later attachment under GRAPH_UPLOAD_MIN
 *	bytes is one POST .../attachments, each larger one an upload
 *	session (createUploadSession, then PUTs of DRAFT_CHUNK bytes, a
 *	multiple of 320 KiB under 4 MiB, with Content-Range, in order,
 *	without Authorization, only to an https host of upload_hosts).
 *	Transfer encodings are decoded while the bytes stream from the
 *	spooled message.  Every request body is first booked with the
 *	mailbox's upload budget (pace.h).  Then POST .../send; 202 is
 *	sent.  Every request carries Prefer: IdType="ImmutableId", so the
 *	draft's id stays valid when Exchange moves it to Sent Items.
 *
 *	Exactly once, crash or not (ledger.h): the delivery's ledger record
 *	is locked for the whole attempt and saved (fsync) before the draft
 *	is made ("drafting"), with the draft id as soon as Graph names it,
 *	and as "sending" before the send.  An earlier attempt's record is
 *	resolved first: "sent" exits 0 without a request; "drafting"
 *	deletes its draft; "sending" (or "ambiguous") asks Graph whether
 *	the draft is still a draft (then it is deleted and the message
 *	sent again) or not (it was sent: exit 0); a draft that is gone
 *	(the Sent Items copy can take time to appear) is looked for in
 *	Sent Items (resolve.h) before anything is sent again.  The records
 *	of attempts of other messages from this mailbox whose process died
 *	are cleaned up the same way (one whose draft is gone is left to
 *	its own delivery's retry).
 *	Any failure before the send deletes the draft (best effort).
 *
 *	draft_large() is the decision behind large_messages: no (never),
 *	yes and auto (drafts, unless a delegated sign-in is known to lack
 *	the permission: DRAFT_LARGE_UNGRANTED for yes, DRAFT_LARGE_AUTO_OFF
 *	for auto; both defer with 4.7.1 and the remedy).  An app-only
 *	access token is not read (tokens are opaque): the draft is tried
 *	and a 403 defers with the remedy.
 *	*perm_r is the delegated scope the path needs (Mail.ReadWrite or
 *	Mail.ReadWrite.Shared; NULL for app-only); why says why not.
 *	draft_probe() creates an empty draft and deletes it (m365ctl test):
 *	0, or -1 with res as for a failed draft request.
 * DIAGNOSTICS
 *	0 when sent; -1 with res filled: 5.3.4 for a message that cannot be
 *	split (multipart/signed, multipart/encrypted, application/pkcs7-
 *	mime or x-pkcs7-mime: a rebuilt message loses its signature or
 *	cannot be read; more than MIME_MAX_PARTS parts; an attachment over
 *	150 MB), 4.7.1 for a missing permission, 4.x.x for everything
 *	transient; the classification of graph.h otherwise.
 *	DELIVER_UNRESOLVED (4.x.x) when the send may have gone through and
 *	that is not settled yet (see deliver.h).
 */
#ifndef M365_DRAFT_H
#define M365_DRAFT_H

#include "conf.h"
#include "deliver.h"
#include "draftmsg.h"
#include "http.h"
#include "msg.h"
#include "status.h"
#include "strbuf.h"

#define DRAFT_CHUNK		(12L * 320 * 1024)	/* 3.75 MiB */

/* Whether an account sends large messages through drafts. */
enum draft_large {
    DRAFT_LARGE_NO = 0,			/* large_messages = no */
    DRAFT_LARGE_ON = 1,			/* yes or auto; not known to lack it */
    DRAFT_LARGE_AUTO_OFF = 2,		/* auto, the sign-in lacks the scope */
    DRAFT_LARGE_UNGRANTED = 3,		/* yes, the sign-in lacks the scope */
};

extern enum draft_large draft_large(const struct conf *,
				            const struct conf_account *,
				            const char **perm_r, char *why,
				            size_t len);
extern int draft_probe(const struct conf *, struct http *,
		               const struct conf_account *, int *deleted,
		               struct m365_result *);
extern int draft_deliver(const struct conf *, struct http *,
			         const struct conf_account *, struct msg *,
			         const struct strbuf *hdr,
			         const struct delivery *, struct m365_result *);

#endif
