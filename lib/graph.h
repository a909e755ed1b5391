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
 *	graph_note_retry_after() remembers a Retry-After of a 429, 503,
 *	504 or 202 reply for the mailbox (throttle.h).  graph_reply_str()
 *	is a string member of a JSON reply object (malloc()ed), or NULL.
 */
#ifndef M365_GRAPH_H
#define M365_GRAPH_H

#include "conf.h"
#include "http.h"
#include "msg.h"
#include "status.h"

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

#endif
