/*
 * NAME
 *	rcpt 3h
 * SUMMARY
 *	make Graph deliver to exactly the envelope recipients
 * SYNOPSIS
 *	#include "rcpt.h"
 * DESCRIPTION
 *	Graph sendMail (MIME form) takes its recipients from the To, Cc
 *	and Bcc headers only; it has no envelope.  rcpt_rewrite() turns a
 *	header section into one whose To/Cc/Bcc name exactly the envelope
 *	recipients:
 *	- To/Cc mailboxes that are envelope recipients stay as written,
 *	  also when repeated; a To/Cc field that needs no removal keeps
 *	  its bytes (DKIM signs To and Cc);
 *	- To/Cc mailboxes that are not envelope recipients are removed
 *	  (a split delivery, an alias expansion, a header-only address
 *	  must not get a copy); only those items go; a To/Cc header left
 *	  without mailboxes is removed, group syntax is kept for the
 *	  members that stay;
 *	- every Bcc header is removed, and one "Bcc:" header listing the
 *	  envelope recipients not in To/Cc is added (folded at 78 columns).
 *	Headers other than To/Cc/Bcc are copied byte for byte.  hdr is
 *	the header section without the empty separator line; line ends
 *	may be LF or CRLF and are kept (CRLF when there are none).  All
 *	three functions read hdr as msg_hdr_clean() (msg.h) leaves it:
 *	a bare CR or a NUL is a space, "To :" is "To:"; rcpt_rewrite()
 *	writes that form, so Graph reads the same fields as the relay.
 *
 *	rcpt_from_headers() collects the To, Cc and Bcc addresses (for
 *	"sendmail -t"); rcpt_header_from() returns the first From:
 *	address, or NULL.  Both return the internal form (no angle
 *	brackets, local part unquoted: "a b"@x -> a b@x), the form an MTA
 *	passes as an envelope address and rcpt_rewrite() expects in env
 *	(which may also carry <>).  rcpt_from_headers() fails on a
 *	To/Cc/Bcc element that is not a mail address.
 * DIAGNOSTICS
 *	-1 with err filled when a To/Cc/Bcc header cannot be parsed (the
 *	caller bounces with 5.6.0 rather than risk a wrong recipient).
 */
#ifndef M365_RCPT_H
#define M365_RCPT_H

#include <stddef.h>

#include "strbuf.h"

struct rcpt_plan {
    size_t  kept;			/* To/Cc mailboxes kept */
    size_t  removed;			/* To/Cc/Bcc mailboxes dropped */
    size_t  bcc;			/* envelope recipients in Bcc: */
};

extern int rcpt_rewrite(const char *hdr, size_t hdrlen, char *const *env,
			        size_t nenv, struct strbuf *out,
			        struct rcpt_plan *plan, char *err, size_t errlen);
extern int rcpt_from_headers(const char *hdr, size_t hdrlen, char ***rcpts_r,
			             size_t *n_r, char *err, size_t errlen);
extern char *rcpt_header_from(const char *hdr, size_t hdrlen);
extern void rcpt_list_free(char **, size_t);

#endif
