/*
 * NAME
 *	source 3h
 * SUMMARY
 *	an inbound [source]: its mailbox, its folder, folder path to id
 * SYNOPSIS
 *	#include "source.h"
 * DESCRIPTION
 *	What m365-fetch and m365ctl both need to know about a [source],
 *	decided in one place so that "m365ctl test SOURCE" judges the
 *	source exactly as the poller will use it.
 *
 *	source_mailbox() is the mailbox a source reads: its own mailbox
 *	key, else its account's mailbox; NULL means the signed-in user's
 *	(/me).  source_shared() (source_shared_by() for a given account)
 *	tells whether that is another mailbox
 *	than the account's own (a delegated account then needs
 *	Mail.ReadWrite.Shared and Full Access; the rule of oauth_scope()).
 *	source_folder() is the folder path it reads ("inbox" when unset).
 *
 *	source_mailbox_missing() tells whether a Graph error reply says
 *	that the mailbox itself is unusable (MailboxNotEnabledForRESTAPI,
 *	ErrorInvalidUser, ErrorNonExistentMailbox): no licence, an
 *	on-premises or deleted mailbox, a wrong address.
 *
 *	source_resolve() turns a folder path into a folder id: "A/B/C"
 *	walks child folders; the first element is a well-known name
 *	(inbox, sentitems ...; GET mailFolders/NAME) or else a display
 *	name (mailFolders?$filter=displayName eq 'NAME'), every later
 *	element a display name under the one before; empty elements
 *	("A//B", a trailing "/") are skipped; of several folders with one
 *	display name the first is used (walk->ambiguous is told).  Each
 *	request, GET url (graph_url(): /users/{mailbox}/mailFolders...,
 *	/me/... when mailbox is NULL), goes through walk->get(walk->ctx,
 *	url, resp), which sends it with the caller's token (and its own
 *	renewal on 401): 0 when a reply stands in resp, whatever its
 *	status, < 0 when there is none for a reason the caller keeps
 *	(returned in get_rc).  url is NULL when it would be too long (a
 *	huge folder name): get hands it to http_perform() all the same,
 *	which refuses it and says why.  The outcome, in out->status:
 *
 *	  SOURCE_FOLDER_OK        found: out->id, and of the last element
 *	                          its displayName, totalItemCount and
 *	                          unreadItemCount (-1 when not sent);
 *	  SOURCE_FOLDER_NONE      no folder of that name (an empty list,
 *	                          or a reply without an id);
 *	  SOURCE_FOLDER_MISSING   404 that is not about the mailbox: the
 *	                          folder does not exist;
 *	  SOURCE_FOLDER_EMPTY     the path names no folder ("", "/");
 *	  SOURCE_FOLDER_GRAPH     any other non-2xx reply (out->resp; the
 *	                          mailbox unusable: source_mailbox_missing);
 *	  SOURCE_FOLDER_FAILED    walk->get() returned get_rc < 0;
 *	  SOURCE_FOLDER_BAD_REPLY a 2xx reply that is not a JSON object.
 *
 *	out->elem and out->depth (0: the top level) name the element of
 *	the last request; out->resp is the last reply (every outcome but
 *	SOURCE_FOLDER_OK).  source_resolve_free() releases id, elem and
 *	resp.
 */
#ifndef M365_SOURCE_H
#define M365_SOURCE_H

#include "conf.h"
#include "http.h"

enum source_folder_status {
    SOURCE_FOLDER_OK = 0,
    SOURCE_FOLDER_NONE = 1,
    SOURCE_FOLDER_MISSING = 2,
    SOURCE_FOLDER_EMPTY = 3,
    SOURCE_FOLDER_GRAPH = 4,
    SOURCE_FOLDER_FAILED = 5,
    SOURCE_FOLDER_BAD_REPLY = 6,
};

/* How source_resolve() reaches Graph, and whom it tells. */
struct source_walk {
    int     (*get) (void *ctx, const char *url, struct http_resp *);
    void    (*ambiguous) (void *ctx, const char *name);	/* or NULL */
    void   *ctx;
};

struct source_folder {
    enum source_folder_status status;
    char   *id;				/* SOURCE_FOLDER_OK: the folder id */
    char   *elem;			/* element of the last request */
    int     depth;			/* elem's level: 0 the top */
    char    name[200];			/* OK: displayName (printable) */
    long    total;			/* OK: totalItemCount, or -1 */
    long    unread;			/* OK: unreadItemCount, or -1 */
    int     get_rc;			/* FAILED: what walk->get() returned */
    struct http_resp resp;		/* the last reply (not for OK) */
};

extern const char *source_mailbox(const struct conf_source *);
extern int source_shared(const struct conf_source *);
extern int source_shared_by(const struct conf_source *,
			            const struct conf_account *);
extern const char *source_folder(const struct conf_source *);
extern int source_mailbox_missing(const struct http_resp *);
extern enum source_folder_status source_resolve(const struct conf *,
					             const char *mailbox,
					             const char *path,
				             const struct source_walk *,
					             struct source_folder *);
extern void source_resolve_free(struct source_folder *);

#endif
