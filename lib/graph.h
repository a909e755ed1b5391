/*
 * NAME
 *	graph 3h
 * SUMMARY
 *	Microsoft Graph requests: sendMail (MIME), users, error replies
 * SYNOPSIS
 *	#include "graph.h"
 * DESCRIPTION
 *	graph_url() builds conf->graph_url + "/v1.0/users/" +
 *	escaped(mailbox) + suffix.  graph_send_mime() posts a streamed,
 *	base64-encoded MIME message (Content-Type: text/plain) to
 *	/users/{mailbox}/sendMail.  graph_parse_error() extracts
 *	error.code / error.message / innerError.request-id from a reply.
 *	graph_folder_query() gives the suffix that looks up one element
 *	of a folder path (a well-known name, else by displayName).
 *	graph_item_url() is graph_url() with path + escaped(id) + suffix
 *	(e.g. "/messages/", a message id, "/$value").
 *
 *	The URL builders return NULL instead of a URL longer than
 *	STRBUF_MAX_SMALL (see strbuf.h): nothing cut short is requested;
 *	http_perform() refuses a NULL URL with a clear error (a transport
 *	error: delivery defers).
 *
 *	graph_classify_send() maps a sendMail outcome to a result:
 *	  2xx (also 202 + Retry-After: never resend)   2.0.0 sent
 *	  (also when the transfer broke after a 2xx status line)
 *	  400 ErrorInvalidRecipients                   5.1.1 EX_NOUSER
 *	  400 ErrorMimeContent..., invalid MIME        5.6.0 EX_DATAERR
 *	  400/413 size (ErrorMessageSizeExceeded,4MB)  5.3.4 EX_DATAERR
 *	  403 ErrorSendAsDenied, From: not mailbox     5.7.1 EX_NOPERM
 *	  401/403 other, 404 mailbox not REST-enabled  4.7.x EX_TEMPFAIL
 *	  429, 5xx, transport errors, other 4xx        4.x.x EX_TEMPFAIL
 *	(401 is retried once with a fresh token by deliver.c first.)
 *
 *	graph_classify_draft() maps the outcome of a request of the
 *	large-message path that comes before the send (create the draft,
 *	add an attachment, create an upload session, upload a chunk):
 *	nothing was sent yet, so no "may have been accepted"; a transport
 *	error, 429 and 5xx defer; 403 (not ErrorSendAsDenied) defers with
 *	4.7.1 and names the missing permission (Mail.ReadWrite, the
 *	application permission or the delegated scope perm); the rest as
 *	graph_classify_send().  step names the request in the text.
 *
 *	graph_send_ambiguous() tells whether a send that did not succeed
 *	may still have been accepted: the whole request went out and then
 *	the connection broke or timed out, or Graph answered 5xx
 *	(graph-facts.md design rule 3).  The send ledger then records it as
 *	ambiguous (ledger.h, resolve.h).
 *
 *	graph_note_retry_after() remembers a Retry-After of a 429, 503,
 *	504 or 202 reply for the mailbox (throttle.h).  graph_reply_str()
 *	is a string member of a JSON reply object (malloc()ed), or NULL.
 *
 *	graph_slot_take() enforces Outlook's limit of GRAPH_SLOTS
 *	concurrent requests per app and mailbox (graph-facts.md 3.1)
 *	across processes and threads: a delivery holds one of the
 *	GRAPH_SLOTS slot files state_dir/slots/HASH.N (HASH from client_id
 *	and mailbox, statefile_lock_any()) while it talks to the mailbox,
 *	so each holder has at most one request in flight.  It waits at
 *	most conf->concurrency_wait seconds, then gives up with 4.7.0
 *	"mailbox busy" (the MTA tries later; no 429 provoked).  The
 *	descriptor, or -1 with res filled; graph_slot_release() frees it.
 *
 *	graph_sent_find() looks in the Sent Items folder of mailbox for the
 *	copy of a message sent earlier: GET .../mailFolders/sentitems/
 *	messages?$filter=internetMessageId eq 'ID' (graph-facts.md 4), a
 *	copy created at or after not_before (0: any) whose To, Cc and Bcc
 *	name every one of the envelope recipients rcpts (a split delivery
 *	of the same message has its own copy).  The least privilege that
 *	lists messages with internetMessageId is Mail.ReadBasic (delegated;
 *	Mail.ReadBasic.Shared for another user's mailbox) or the
 *	application permission Mail.ReadBasic.All ("List messages",
 *	Microsoft Graph v1.0): GRAPH_FIND_DENIED says it is missing.
 */
#ifndef M365_GRAPH_H
#define M365_GRAPH_H

#include <stddef.h>
#include <time.h>

#include "conf.h"
#include "http.h"
#include "msg.h"
#include "status.h"

/* Outlook: 4 concurrent requests per app and mailbox (graph-facts.md 3.1). */
#define GRAPH_SLOTS	4

/* graph_sent_find() results. */
#define GRAPH_FIND_FOUND	1	/* the copy is in Sent Items */
#define GRAPH_FIND_NONE		0	/* not there (yet) */
#define GRAPH_FIND_ERROR	(-1)	/* the lookup failed: res says why */
#define GRAPH_FIND_DENIED	(-2)	/* no permission to read Sent Items */

struct graph_error {
    char    code[80];
    char    message[300];
    char    request_id[80];
};

extern char *graph_url(const struct conf *, const char *mailbox,
		               const char *suffix);
extern char *graph_item_url(const struct conf *, const char *mailbox,
			            const char *path, const char *id,
			            const char *suffix);
extern int graph_parse_error(const struct http_resp *, struct graph_error *);
extern int graph_send_mime(struct http *, const struct conf *,
			           const char *mailbox, const char *token,
			           struct msg_src *, struct http_resp *);
extern int graph_get(struct http *, const struct conf *, const char *mailbox,
		             const char *suffix, const char *token,
			             struct http_resp *);
extern int graph_folder_well_known(const char *name);
extern char *graph_folder_query(const char *parent, const char *name);
extern void graph_classify_send(const struct http_resp *, int transport_ok,
		                const char *from_addr, const char *mailbox,
				        struct m365_result *);
extern void graph_classify_draft(const struct http_resp *, int transport_ok,
				         const char *step, const char *mailbox,
				         const char *perm, struct m365_result *);
extern void graph_note_retry_after(const struct conf *, const char *mailbox,
				           const struct http_resp *);
extern char *graph_reply_str(const struct http_resp *, const char *name);
extern int graph_send_ambiguous(const struct http_resp *, int transport_ok);
extern int graph_slot_take(const struct conf *, const char *client_id,
			           const char *mailbox, struct m365_result *);
extern void graph_slot_release(int fd);
extern int graph_sent_find(struct http *, const struct conf *,
			           const char *mailbox, const char *token,
			           const char *message_id, char *const *rcpts,
			           size_t nrcpts, time_t not_before,
			           struct m365_result *);

#endif
