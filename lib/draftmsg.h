/*
 * NAME
 *	draftmsg 3h
 * SUMMARY
 *	a message as the JSON of a Graph draft: body, fields, attachments
 * SYNOPSIS
 *	#include "draftmsg.h"
 * DESCRIPTION
 *	draftmsg_build() turns a message read by msg.h (its structure from
 *	mime.h) and its rewritten header section hdr into what a Graph
 *	draft in JSON form holds (see draft.h for the list of what
 *	survives): meta, the JSON of the message resource without
 *	attachments; and one struct draftmsg_att per attachment: the part,
 *	its file name, its exact decoded size, whether it is inline, and
 *	meta, the JSON of its fileAttachment without contentBytes and
 *	without the closing brace, so a sender can stream
 *	meta + ,"contentBytes":" + base64 + "} without holding the bytes.
 *	No request is made.  m, hdr, queue_id and res must stay valid
 *	until draftmsg_free(); the part pointers point into mime.
 *
 *	The body: of a multipart/alternative the HTML alternative, else the
 *	last one with a text; of a multipart/related its root; of another
 *	multipart the first child that has a text; a text/plain or
 *	text/html part that is not an attachment.  The other text leaves
 *	of the alternatives on the way to it are dropped (Exchange makes
 *	its own plain text version).  A body whose JSON would not fit one
 *	4 MB request goes as an attachment, with a short note as the body.
 * DIAGNOSTICS
 *	draftmsg_build() returns 0, or -1 with res filled: 5.3.4 for a
 *	message that cannot be split (signed or encrypted parts, more
 *	than MIME_MAX_PARTS parts, an attachment over GRAPH_UPLOAD_MAX,
 *	header fields over 4 MB as JSON), 4.3.0 for local trouble.
 *	Call draftmsg_free() in every case.
 */
#ifndef M365_DRAFTMSG_H
#define M365_DRAFTMSG_H

#include <sys/types.h>

#include "mime.h"
#include "msg.h"
#include "status.h"
#include "strbuf.h"

#define GRAPH_UPLOAD_MIN	3000000L	/* upload session from here */
#define GRAPH_UPLOAD_MAX	(150L * 1024 * 1024)	/* per attachment */
#define DRAFTMSG_MAX_XHEADERS	5	/* Graph: x- names, at most five */

struct draftmsg_att {
    const struct mime_part *part;
    char   *name;			/* UTF-8 */
    char   *meta;			/* fileAttachment JSON without
					 * contentBytes and its closing brace */
    int     is_inline;
    off_t   size;			/* decoded bytes */
    int     how;			/* for the sender (draft.c) */
};

struct draftmsg {
    struct mime mime;
    int     body;			/* index of the body part, or -1 */
    char   *body_text;			/* UTF-8, or NULL */
    int     body_html;
    int     body_attached;		/* too large: the body went as a file */
    struct draftmsg_att *att;
    size_t  natt;
    char   *meta;			/* message JSON without attachments */
    char   *message_id;			/* "<...>" or NULL */
    /* Valid during draftmsg_build() and until draftmsg_free(). */
    const struct msg *m;
    const struct strbuf *hdr;
    const char *queue_id;
    struct m365_result *res;
};

extern int draftmsg_build(struct draftmsg *, const struct msg *,
			          const struct strbuf *hdr, const char *queue_id,
			          struct m365_result *);
extern void draftmsg_free(struct draftmsg *);

#endif
