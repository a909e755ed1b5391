/*
 * NAME
 *	ndr 3
 * SUMMARY
 *	read a non-delivery report (NDR) or delay notice by its structure
 * DESCRIPTION
 *	See ndr.h.  The structure comes from mime.h (mime_parse(): parts
 *	with byte ranges, message/rfc822 a leaf, so a report that someone
 *	forwarded as an attachment is never taken for one); the fields of
 *	the delivery-status part are read with the header scanner of msg.h
 *	(RFC 3464 section 2.1: the per-message and per-recipient groups
 *	have the syntax of header fields, separated by empty lines).
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ledger.h"
#include "mime.h"
#include "msg.h"
#include "ndr.h"
#include "strbuf.h"
#include "util.h"
#include "xalloc.h"

/* ndr_kind_name - for logs */

const char *ndr_kind_name(enum ndr_kind k)
{
    switch (k) {
    case NDR_MACHINE:
	return ("delivery-status");
    case NDR_HUMAN:
	return ("text only");
    case NDR_NONE:
    default:
	return ("not a report");
    }
}

/* ndr_read_part - the decoded content of a part, at most max bytes */

static int ndr_read_part(const struct msg *m, const struct mime_part *p,
			         size_t max, struct strbuf *out)
{
    struct mime_stream *s;
    char    buf[16384];
    ssize_t n = 0;

    strbuf_init(out, max + 1);
    if ((s = mime_stream_open(m, p)) == NULL)
	return (-1);
    while (strbuf_room(out) > 1
	   && (n = mime_stream_read(s, buf, sizeof(buf) < strbuf_room(out) - 1 ?
				    sizeof(buf) : strbuf_room(out) - 1)) > 0)
	(void) strbuf_append(out, buf, (size_t) n);
    mime_stream_close(s);
    if (out->data == NULL)
	(void) strbuf_puts(out, "");
    return (n < 0 ? -1 : 0);
}

/* ndr_trim - the value without white space around it; in place */

static char *ndr_trim(char *v)
{
    char   *p = v, *e;

    while (*p == ' ' || *p == '\t')
	p++;
    e = p + strlen(p);
    while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
	e--;
    *e = 0;
    memmove(v, p, (size_t) (e - p) + 1);
    return (v);
}

/* ndr_field - the trimmed value of NAME in one group, or NULL */

static char *ndr_field(const char *grp, size_t len, const char *name)
{
    size_t  pos = 0;
    char   *v = msg_hdr_find(grp, len, name, &pos);

    if (v != NULL && *ndr_trim(v) == 0) {
	free(v);
	v = NULL;
    }
    return (v);
}

/*
 * ndr_addr - an address field "rfc822; a@b" (RFC 3464 address-type
 * ";" generic-address) as "a@b": no type, no angle brackets; NULL
 */
static char *ndr_addr(char *v)
{
    char   *p, *e;

    if (v == NULL)
	return (NULL);
    p = strchr(v, ';') ? strchr(v, ';') + 1 : v;
    while (*p == ' ' || *p == '\t' || *p == '<')
	p++;
    e = p + strcspn(p, "> \t");
    *e = 0;
    memmove(v, p, (size_t) (e - p) + 1);
    if (*v == 0) {
	free(v);
	return (NULL);
    }
    return (v);
}

/* ndr_status_ok - a well-formed enhanced status code "C.SSS.DDD" */

static int ndr_status_ok(const char *s)
{
    size_t  n;

    if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5')
	|| s[1] != '.')
	return (0);
    s += 2;
    if ((n = strspn(s, "0123456789")) < 1 || n > 3 || s[n] != '.')
	return (0);
    s += n + 1;
    n = strspn(s, "0123456789");
    return (n >= 1 && n <= 3 && s[n] == 0);
}

/*
 * ndr_group_next - the next group (fields up to an empty line) of a
 * delivery-status text at *pos; 0 with *start, *len, -1 at the end
 */
static int ndr_group_next(const char *t, size_t n, size_t *pos,
			          size_t *start, size_t *len)
{
    size_t  i = *pos, eol;

    /* Skip empty lines. */
    while (i < n && (t[i] == '\n' || (t[i] == '\r' && i + 1 < n
					&& t[i + 1] == '\n')))
	i += t[i] == '\r' ? 2 : 1;
    if (i >= n)
	return (-1);
    *start = i;
    for (;;) {
	eol = i;
	while (eol < n && t[eol] != '\n')
	    eol++;
	if (eol >= n) {
	    i = n;
	    break;
	}
	i = eol + 1;
	/* A line that is empty (or white space only) ends the group. */
	{
	    size_t  j = i;

	    while (j < n && (t[j] == ' ' || t[j] == '\t'))
		j++;
	    if (j >= n || t[j] == '\n' || (t[j] == '\r' && j + 1 < n
					   && t[j + 1] == '\n'))
		break;
	}
    }
    *len = i - *start;
    *pos = i;
    return (0);
}

/* ndr_add_rcpt - a new recipient entry; NULL over NDR_MAX_RCPTS */

static struct ndr_rcpt *ndr_add_rcpt(struct ndr *r)
{
    if (r->nrcpts >= NDR_MAX_RCPTS)
	return (NULL);
    r->rcpts = xrealloc(r->rcpts, (r->nrcpts + 1) * sizeof(*r->rcpts));
    memset(r->rcpts + r->nrcpts, 0, sizeof(*r->rcpts));
    return (r->rcpts + r->nrcpts++);
}

/* ndr_lower - lower case in place */

static char *ndr_lower(char *s)
{
    char   *p;

    for (p = s; p && *p; p++)
	*p = (char) tolower((unsigned char) *p);
    return (s);
}

/* ndr_status_part - the groups of a message/delivery-status part */

static void ndr_status_part(struct ndr *r, const char *t, size_t n)
{
    struct ndr_rcpt *rc;
    size_t  pos = 0, start, len;
    char   *fr, *orig, *st;
    int     first = 1;

    while (ndr_group_next(t, n, &pos, &start, &len) == 0) {
	fr = ndr_addr(ndr_field(t + start, len, "Final-Recipient"));
	orig = ndr_addr(ndr_field(t + start, len, "Original-Recipient"));
	st = ndr_field(t + start, len, "Status");
	if (first && fr == NULL && st == NULL) {
	    /* The per-message group. */
	    r->reporting_mta = ndr_field(t + start, len, "Reporting-MTA");
	    r->arrival_date = ndr_field(t + start, len, "Arrival-Date");
	    free(orig);
	    first = 0;
	    continue;
	}
	first = 0;
	if (fr == NULL && orig == NULL && st == NULL)
	    continue;
	if ((rc = ndr_add_rcpt(r)) == NULL) {
	    free(fr);
	    free(orig);
	    free(st);
	    break;
	}
	rc->final_rcpt = fr ? fr : orig ? xstrdup(orig) : NULL;
	rc->orig_rcpt = orig;
	rc->status = st;
	rc->action = ndr_lower(ndr_field(t + start, len, "Action"));
	rc->diag = ndr_field(t + start, len, "Diagnostic-Code");
	rc->remote_mta = ndr_field(t + start, len, "Remote-MTA");
    }
}

/*
 * ndr_html_text - the text of an HTML part: tags removed, a few
 * entities decoded, <br>, </p>, </tr>, </div> as line ends
 */
static char *ndr_html_text(const char *h)
{
    static const struct {
	const char *ent;
	char    c;
    }       ents[] = {
	{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'},
	{"&#39;", '\''}, {"&nbsp;", ' '}, {"&apos;", '\''},
    };
    struct strbuf sb;
    const char *p = h, *e;
    size_t  i;

    strbuf_init(&sb, NDR_MAX_TEXT + 1);
    while (*p) {
	if (*p == '<') {
	    if (strncasecmp(p, "<br", 3) == 0 || strncasecmp(p, "</p", 3) == 0
		|| strncasecmp(p, "</tr", 4) == 0
		|| strncasecmp(p, "</div", 5) == 0)
		(void) strbuf_putc(&sb, '\n');
	    if (strncasecmp(p, "<style", 6) == 0 && (e = strcasestr(p,
						     "</style")) != NULL)
		p = e;
	    p += strcspn(p, ">");
	    if (*p)
		p++;
	    continue;
	}
	if (*p == '&') {
	    for (i = 0; i < sizeof(ents) / sizeof(ents[0]); i++)
		if (strncasecmp(p, ents[i].ent, strlen(ents[i].ent)) == 0)
		    break;
	    if (i < sizeof(ents) / sizeof(ents[0])) {
		(void) strbuf_putc(&sb, ents[i].c);
		p += strlen(ents[i].ent);
		continue;
	    }
	}
	if (*p == '\r' || *p == '\n') {
	    (void) strbuf_putc(&sb, ' ');
	    p++;
	    continue;
	}
	(void) strbuf_putc(&sb, *p++);
    }
    if (sb.data == NULL)
	(void) strbuf_puts(&sb, "");
    return (strbuf_take(&sb));
}

/* ndr_text - the human-readable text of a part, UTF-8 */

static char *ndr_text(const struct msg *m, const struct mime_part *p)
{
    struct strbuf raw;
    char   *u, *t;

    if (ndr_read_part(m, p, NDR_MAX_TEXT, &raw) < 0) {
	strbuf_free(&raw);
	return (NULL);
    }
    u = mime_to_utf8(p->charset ? p->charset : "us-ascii", raw.data, raw.len);
    strbuf_free(&raw);
    if (u != NULL && mime_is(p, "text/html")) {
	t = ndr_html_text(u);
	free(u);
	u = t;
    }
    return (u);
}

/*
 * ndr_human_status - the fallback without a delivery-status part: the
 * first class 4 or 5 enhanced status code of the text, and its line
 */
static void ndr_human_status(struct ndr *r)
{
    struct ndr_rcpt *rc;
    const char *t = r->human, *p, *bol, *eol;
    char    code[16];
    size_t  n;

    for (p = t; p && *p; p++) {
	if ((*p != '4' && *p != '5') || p[1] != '.'
	    || (p > t && (isalnum((unsigned char) p[-1]) || p[-1] == '.')))
	    continue;
	n = 2 + strspn(p + 2, "0123456789.");
	while (n > 0 && p[n - 1] == '.')
	    n--;
	if (n >= sizeof(code))
	    continue;
	memcpy(code, p, n);
	code[n] = 0;
	if (!ndr_status_ok(code))
	    continue;
	if ((rc = ndr_add_rcpt(r)) == NULL)
	    return;
	rc->status = xstrdup(code);
	rc->action = xstrdup(code[0] == '5' ? "failed" : "delayed");
	for (bol = p; bol > t && bol[-1] != '\n'; bol--)
	     /* void */ ;
	eol = p + strcspn(p, "\r\n");
	rc->diag = ndr_trim(xstrndup(bol, (size_t) (eol - bol)));
	return;
    }
}

/* ndr_last_id - the last "<...>" of a References value, or NULL */

static char *ndr_last_id(const char *v)
{
    const char *p, *lt = NULL, *gt;

    for (p = v; p && (p = strchr(p, '<')) != NULL; p++)
	if (strchr(p, '>'))
	    lt = p;
    if (lt == NULL || (gt = strchr(lt, '>')) == NULL || gt - lt > 500)
	return (NULL);
    return (xstrndup(lt, (size_t) (gt - lt) + 1));
}

/* ndr_header_id - "<...>" of the first NAME field of a header section */

static char *ndr_header_id(const char *hdr, size_t len, const char *name)
{
    size_t  pos = 0;
    char   *v = msg_hdr_find(hdr, len, name, &pos), *id;

    id = ndr_last_id(v);
    /* In-Reply-To names one message: the first id. */
    if (v != NULL && strcasecmp(name, "In-Reply-To") == 0 && id != NULL) {
	const char *lt = strchr(v, '<');

	free(id);
	id = xstrndup(lt, (size_t) (strchr(lt, '>') - lt) + 1);
    }
    free(v);
    return (id);
}

/* ndr_returned - the header section of a returned message part */

static void ndr_returned(struct ndr *r, const struct msg *m,
			         const struct mime_part *p)
{
    struct strbuf raw;
    const char *d, *end = NULL, *e2;
    size_t  n;

    if (ndr_read_part(m, p, NDR_MAX_HEADERS, &raw) < 0 || raw.len == 0) {
	strbuf_free(&raw);
	return;
    }
    d = raw.data;
    /* The header ends at the first empty line of either form. */
    if (d[0] == '\n' || strncmp(d, "\r\n", 2) == 0)
	n = 0;
    else {
	end = strstr(d, "\n\n");
	e2 = strstr(d, "\n\r\n");
	if (e2 != NULL && (end == NULL || e2 < end))
	    end = e2;
	if (end != NULL)
	    n = (size_t) (end - d) + 1;
	else if (raw.len >= NDR_MAX_HEADERS && memrchr(d, '\n', raw.len))
	    n = (size_t) ((const char *) memrchr(d, '\n', raw.len) - d) + 1;
	else
	    n = raw.len;
    }
    strbuf_free(&r->orig_hdr);
    strbuf_init(&r->orig_hdr, NDR_MAX_HEADERS + 2);
    (void) strbuf_append(&r->orig_hdr, d, n);
    strbuf_free(&raw);
}

/* ndr_parse - read a report by its structure; see ndr.h */

int     ndr_parse(const struct msg *m, struct ndr *r, char *err,
		          size_t errlen)
{
    struct mime mime;
    const struct mime_part *p, *ds = NULL, *ret = NULL, *plain = NULL;
    const struct mime_part *html = NULL;
    const char *hdr = m->hdr.data ? m->hdr.data : "";
    size_t  i, pos = 0;
    char   *v, *rtype = NULL;
    int     report_ct = 0, autosub = 0;

    memset(r, 0, sizeof(*r));
    strbuf_init(&r->orig_hdr, NDR_MAX_HEADERS + 2);
    memset(&mime, 0, sizeof(mime));
    if (mime_parse(&mime, m, err, errlen) < 0 && mime.nparts == 0) {
	mime_free(&mime);
	return (-1);
    }
    if ((v = msg_hdr_find(hdr, m->hdr.len, "X-MS-Exchange-Message-Is-Ndr",
			  &pos)) != NULL) {
	r->exchange = 1;
	free(v);
    }
    pos = 0;
    if ((v = msg_hdr_find(hdr, m->hdr.len, "Auto-Submitted", &pos)) != NULL) {
	autosub = *ndr_trim(v) != 0 && strcasecmp(v, "no") != 0;
	free(v);
    }
    pos = 0;
    if (mime.nparts > 0 && mime_is_multipart(mime.parts, "report")
	&& (v = msg_hdr_find(hdr, m->hdr.len, "Content-Type", &pos)) != NULL) {
	rtype = mime_param(v, "report-type");
	report_ct = rtype != NULL && strcasecmp(rtype, "delivery-status") == 0;
	free(rtype);
	free(v);
    }
    /* Parts at any depth, but never inside a returned message (a leaf). */
    for (i = 1; i < mime.nparts; i++) {
	p = mime.parts + i;
	if (ds == NULL && (mime_is(p, "message/delivery-status")
			   || mime_is(p, "message/global-delivery-status")))
	    ds = p;
	else if (ret == NULL && (mime_is(p, "message/rfc822")
				 || mime_is(p, "message/global")
				 || mime_is(p, "text/rfc822-headers")
				 || mime_is(p, "message/rfc822-headers")
				 || mime_is(p, "message/global-headers")))
	    ret = p;
	else if (plain == NULL && mime_is(p, "text/plain")
		 && p->disp != MIME_DISP_ATTACHMENT)
	    plain = p;
	else if (html == NULL && mime_is(p, "text/html")
		 && p->disp != MIME_DISP_ATTACHMENT)
	    html = p;
    }
    if (ds != NULL && (report_ct || r->exchange || autosub))
	r->kind = NDR_MACHINE;
    else if ((report_ct || r->exchange) && autosub)
	r->kind = NDR_HUMAN;
    else {
	mime_free(&mime);
	return (0);
    }
    pos = 0;
    if ((v = msg_hdr_find(hdr, m->hdr.len, "Message-ID", &pos)) != NULL) {
	r->report_message_id = ndr_last_id(v);
	free(v);
    }
    if (plain != NULL || html != NULL)
	r->human = ndr_text(m, plain ? plain : html);
    if (ds != NULL) {
	struct strbuf st;

	if (ndr_read_part(m, ds, NDR_MAX_STATUS, &st) == 0)
	    ndr_status_part(r, st.data, st.len);
	strbuf_free(&st);
    }
    /* The machine part is missing (or names nobody): the text. */
    if (r->nrcpts == 0) {
	r->kind = NDR_HUMAN;
	ndr_human_status(r);
    }
    /* Not even a status code: a report all the same, cause unknown. */
    if (r->nrcpts == 0)
	ndr_add_rcpt(r)->action = xstrdup("failed");
    if (ret != NULL)
	ndr_returned(r, m, ret);
    if (r->orig_hdr.len > 0
	&& (r->orig_message_id = ledger_message_id(r->orig_hdr.data,
						   r->orig_hdr.len)) != NULL)
	r->orig_from = "rfc822";
    else if ((r->orig_message_id = ndr_header_id(hdr, m->hdr.len,
						 "In-Reply-To")) != NULL)
	r->orig_from = "in-reply-to";
    else if ((r->orig_message_id = ndr_header_id(hdr, m->hdr.len,
						 "References")) != NULL)
	r->orig_from = "references";
    mime_free(&mime);
    return (0);
}

/* ndr_action - RFC 3464 action of a recipient (see ndr.h) */

const char *ndr_action(const struct ndr_rcpt *rc)
{
    static const char *const known[] = {
	"failed", "delayed", "delivered", "relayed", "expanded",
    };
    size_t  i;

    for (i = 0; rc->action && i < sizeof(known) / sizeof(known[0]); i++)
	if (strcmp(rc->action, known[i]) == 0)
	    return (known[i]);
    return (rc->status && rc->status[0] == '5' ? "failed" : "delayed");
}

/* ndr_status - the Status, or the generic one of the action */

const char *ndr_status(const struct ndr_rcpt *rc)
{
    const char *a;

    if (ndr_status_ok(rc->status))
	return (rc->status);
    a = ndr_action(rc);
    if (strcmp(a, "failed") == 0)
	return ("5.0.0");
    if (strcmp(a, "delayed") == 0)
	return ("4.0.0");
    return ("2.0.0");
}

/* ndr_free - release a report; twice is fine */

void    ndr_free(struct ndr *r)
{
    size_t  i;

    for (i = 0; i < r->nrcpts; i++) {
	free(r->rcpts[i].final_rcpt);
	free(r->rcpts[i].orig_rcpt);
	free(r->rcpts[i].action);
	free(r->rcpts[i].status);
	free(r->rcpts[i].diag);
	free(r->rcpts[i].remote_mta);
    }
    free(r->rcpts);
    free(r->reporting_mta);
    free(r->arrival_date);
    free(r->orig_message_id);
    free(r->report_message_id);
    free(r->human);
    strbuf_free(&r->orig_hdr);
    memset(r, 0, sizeof(*r));
}
