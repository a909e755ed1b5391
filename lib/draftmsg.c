/*
 * NAME
 *	draftmsg 3
 * SUMMARY
 *	a message as the JSON of a Graph draft: body, fields, attachments
 * DESCRIPTION
 *	See draftmsg.h.  JSON is built with cJSON, so every string is
 *	escaped; every text put in is valid UTF-8 (mime.h converts).
 * DIAGNOSTICS
 *	Results in the caller's struct m365_result; msg_info()/msg_warn()
 *	for what is kept or left out (with the queue ID).
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cJSON.h>

#include "addr.h"
#include "deliver.h"
#include "draftmsg.h"
#include "json.h"
#include "log.h"
#include "mime.h"
#include "util.h"

#define DRAFTMSG_NAME_PEEK	(16 * 1024)	/* of a message/rfc822 part */


/* draftmsg_display - a display name: quotes and escapes gone, words decoded */

static char *draftmsg_display(const char *s, size_t n)
{
    struct strbuf sb;
    char   *words;
    size_t  i;

    while (n > 0 && isspace((unsigned char) *s)) {
	s++;
	n--;
    }
    while (n > 0 && isspace((unsigned char) s[n - 1]))
	n--;
    strbuf_init(&sb, STRBUF_MAX_LINE);
    for (i = 0; i < n; i++) {
	if (s[i] == '"')
	    continue;
	if (s[i] == '\\' && i + 1 < n)
	    i++;
	strbuf_putc(&sb, s[i]);
    }
    words = mime_words(sb.data ? sb.data : "", sb.len);
    strbuf_free(&sb);
    if (words && *words == 0) {
	free(words);
	words = NULL;
    }
    return (words);
}

/* draftmsg_recipient - {"emailAddress": {"address": ..., "name": ...}} */

static cJSON *draftmsg_recipient(const char *value, const struct addr_item *it)
{
    cJSON  *r = cJSON_CreateObject();
    cJSON  *ea = cJSON_AddObjectToObject(r, "emailAddress");
    char   *name = NULL, *comments;
    char   *addr = mime_to_utf8(NULL, it->addr, strlen(it->addr));

    json_add_str(ea, "address", addr);
    free(addr);
    if (it->lt < it->end) {
	name = draftmsg_display(value + it->start, it->lt - it->start);
    } else if ((comments = addr_comments(value, it)) != NULL) {
	size_t  n = strlen(comments);

	if (n >= 2 && comments[0] == '(' && comments[n - 1] == ')')
	    name = draftmsg_display(comments + 1, n - 2);
	else
	    name = draftmsg_display(comments, n);
	free(comments);
    }
    if (name)
	json_add_str(ea, "name", name);
    free(name);
    return (r);
}

/*
 * draftmsg_addrs - the mailboxes of every field NAME of the header as
 * recipients: an array member key of obj, or (one) the first mailbox
 * as an object member; nothing when there is none
 */
static void draftmsg_addrs(const struct draftmsg *r, cJSON *obj,
			        const char *key, const char *field, int one)
{
    const char *h = r->hdr->data ? r->hdr->data : "";
    struct addr_list list;
    cJSON  *arr = NULL;
    size_t  pos = 0, i;
    char   *v;

    while ((v = msg_hdr_find(h, r->hdr->len, field, &pos)) != NULL) {
	memset(&list, 0, sizeof(list));
	(void) addr_parse(v, strlen(v), &list);
	for (i = 0; i < list.n; i++) {
	    if (list.items[i].bad)
		continue;
	    if (one) {
		cJSON_AddItemToObject(obj, key, draftmsg_recipient(v,
							 list.items + i));
		addr_list_free(&list);
		free(v);
		return;
	    }
	    if (arr == NULL)
		arr = cJSON_AddArrayToObject(obj, key);
	    cJSON_AddItemToArray(arr, draftmsg_recipient(v, list.items + i));
	}
	addr_list_free(&list);
	free(v);
    }
}

/* draftmsg_field - the unfolded value of the first field NAME; free() */

static char *draftmsg_field(const struct draftmsg *r, const char *name)
{
    size_t  pos = 0;

    return (msg_hdr_find(r->hdr->data ? r->hdr->data : "", r->hdr->len,
			 name, &pos));
}

/* draftmsg_importance - Importance, X-Priority or Priority: high, low, NULL */

static const char *draftmsg_importance(const struct draftmsg *r)
{
    const char *imp = NULL;
    char   *v;

    if ((v = draftmsg_field(r, "Importance")) != NULL) {
	if (strncasecmp(v + strspn(v, " \t"), "high", 4) == 0)
	    imp = "high";
	else if (strncasecmp(v + strspn(v, " \t"), "low", 3) == 0)
	    imp = "low";
    } else if ((v = draftmsg_field(r, "X-Priority")) != NULL) {
	char    c = v[strspn(v, " \t")];

	imp = (c == '1' || c == '2') ? "high" : (c == '4' || c == '5') ?
	    "low" : NULL;
    } else if ((v = draftmsg_field(r, "Priority")) != NULL) {
	const char *p = v + strspn(v, " \t");

	imp = strncasecmp(p, "urgent", 6) == 0 ? "high" :
	    strncasecmp(p, "non-urgent", 10) == 0 ? "low" : NULL;
    }
    free(v);
    return (imp);
}

/*
 * draftmsg_xheaders - internetMessageHeaders: the first X- fields (Graph
 * refuses other names and more than five), values unfolded and valid
 * UTF-8, at most 995 bytes each; Exchange's own X-MS-Exchange- fields
 * are left out
 */
static void draftmsg_xheaders(const struct draftmsg *r, cJSON *obj)
{
    const char *h = r->hdr->data ? r->hdr->data : "";
    struct msg_field f;
    cJSON  *arr = NULL, *one;
    char    name[80];
    size_t  pos = 0, at;
    char   *v, *u;
    int     n = 0, skipped = 0;

    while (msg_hdr_next(h, r->hdr->len, &pos, &f) == 0) {
	if (f.name_len < 3 || strncasecmp(h + f.start, "X-", 2) != 0
	    || f.name_len >= sizeof(name)
	    || (f.name_len >= 13
		&& strncasecmp(h + f.start, "X-MS-Exchange", 13) == 0))
	    continue;
	if (n >= DRAFTMSG_MAX_XHEADERS) {
	    skipped++;
	    continue;
	}
	memcpy(name, h + f.start, f.name_len);
	name[f.name_len] = 0;
	at = f.start;
	if ((v = msg_hdr_find(h, r->hdr->len, name, &at)) == NULL)
	    continue;
	u = mime_to_utf8(NULL, v + strspn(v, " \t"), strlen(v + strspn(v, " \t")));
	if (u && strlen(u) <= 995) {
	    if (arr == NULL)
		arr = cJSON_AddArrayToObject(obj, "internetMessageHeaders");
	    one = cJSON_CreateObject();
	    json_add_str(one, "name", name);
	    json_add_str(one, "value", u);
	    cJSON_AddItemToArray(arr, one);
	    n++;
	} else {
	    skipped++;
	}
	free(u);
	free(v);
    }
    if (skipped)
	msg_info("%s: large message: %d X- header field(s) not kept (Graph "
		 "takes at most %d, each under 1000 bytes)", r->queue_id,
		 skipped, DRAFTMSG_MAX_XHEADERS);
}

/*
 * draftmsg_meta - the draft's JSON without attachments (r->meta); body is
 * the text, or a note when the text went as an attachment
 */
static int draftmsg_meta(struct draftmsg *r)
{
    cJSON  *root = cJSON_CreateObject();
    cJSON  *body, *props, *prop;
    const char *imp;
    char   *v, *u;

    if ((v = draftmsg_field(r, "Subject")) != NULL) {
	u = mime_words(v + strspn(v, " \t"), strlen(v + strspn(v, " \t")));
	json_add_str(root, "subject", u ? u : "");
	free(u);
	free(v);
    }
    body = cJSON_AddObjectToObject(root, "body");
    json_add_str(body, "contentType", r->body_html && !r->body_attached ?
		 "html" : "text");
    json_add_str(body, "content", r->body_attached ?
		 "The text of this message is attached: it is too large "
		 "for a Microsoft 365 message body." :
		 r->body_text ? r->body_text : "");
    draftmsg_addrs(r, root, "from", "From", 1);
    draftmsg_addrs(r, root, "toRecipients", "To", 0);
    draftmsg_addrs(r, root, "ccRecipients", "Cc", 0);
    draftmsg_addrs(r, root, "bccRecipients", "Bcc", 0);
    draftmsg_addrs(r, root, "replyTo", "Reply-To", 0);
    if ((imp = draftmsg_importance(r)) != NULL)
	json_add_str(root, "importance", imp);
    if ((v = draftmsg_field(r, "Disposition-Notification-To")) != NULL) {
	cJSON_AddTrueToObject(root, "isReadReceiptRequested");
	free(v);
    }
    draftmsg_xheaders(r, root);
    if (r->message_id) {
	props = cJSON_AddArrayToObject(root, "singleValueExtendedProperties");
	prop = cJSON_CreateObject();
	json_add_str(prop, "id", "String 0x1035");	/* PidTagInternetMessageId */
	json_add_str(prop, "value", r->message_id);
	cJSON_AddItemToArray(props, prop);
    }
    free(r->meta);
    r->meta = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (r->meta == NULL) {
	result_set(r->res, M365_SYSTEM, "4.3.0", "cannot build the draft "
		   "(out of memory)");
	return (-1);
    }
    return (0);
}

/* ------------------------------------------------------------- plan */

/* draftmsg_text_body - a text part that can be the message body */

static int draftmsg_text_body(const struct mime_part *p)
{
    return ((mime_is(p, "text/plain") || mime_is(p, "text/html"))
	    && p->disp != MIME_DISP_ATTACHMENT && p->cte != MIME_CTE_UNKNOWN);
}

/* draftmsg_child - the next child of part i after child c (-1: the first) */

static int draftmsg_child(const struct mime *mime, int i, int c)
{
    size_t  k;

    for (k = (size_t) (c < 0 ? i : c) + 1; k < mime->nparts; k++) {
	if (mime->parts[k].parent == i)
	    return ((int) k);
	if (mime->parts[k].depth <= mime->parts[i].depth)
	    break;
    }
    return (-1);
}

/*
 * draftmsg_pick - the body part in the subtree of part i, or -1: a text
 * leaf; of a multipart/alternative the HTML one, else the last that
 * has a body; of multipart/related its root; of any other multipart
 * the first child that has one
 */
static int draftmsg_pick(const struct mime *mime, int i)
{
    const struct mime_part *p = mime->parts + i;
    int     c, b, best = -1;

    if (!p->multipart)
	return (draftmsg_text_body(p) ? i : -1);
    if (mime_is_multipart(p, "alternative")) {
	for (c = draftmsg_child(mime, i, -1); c >= 0; c = draftmsg_child(mime, i, c))
	    if ((b = draftmsg_pick(mime, c)) >= 0
		&& (best < 0 || !mime_is(mime->parts + best, "text/html")
		    || mime_is(mime->parts + b, "text/html")))
		best = b;
	return (best);
    }
    if (mime_is_multipart(p, "related"))
	return ((c = draftmsg_child(mime, i, -1)) >= 0 ? draftmsg_pick(mime, c) : -1);
    for (c = draftmsg_child(mime, i, -1); c >= 0; c = draftmsg_child(mime, i, c))
	if ((b = draftmsg_pick(mime, c)) >= 0)
	    return (b);
    return (-1);
}

/* draftmsg_in - is part k inside the subtree of part i? */

static int draftmsg_in(const struct mime *mime, int k, int i)
{
    for (; k >= 0; k = mime->parts[k].parent)
	if (k == i)
	    return (1);
    return (0);
}

/*
 * draftmsg_dropped - is leaf k another rendering of the body?  The text
 * leaves of the other branches of every multipart/alternative on the
 * way to the body are (Exchange writes its own plain text version).
 */
static int draftmsg_dropped(const struct mime *mime, int body, int k)
{
    int     a, c;

    if (body < 0 || !draftmsg_text_body(mime->parts + k))
	return (0);
    for (a = mime->parts[body].parent; a >= 0; a = mime->parts[a].parent) {
	if (!mime_is_multipart(mime->parts + a, "alternative"))
	    continue;
	for (c = draftmsg_child(mime, a, -1); c >= 0; c = draftmsg_child(mime, a, c))
	    if (!draftmsg_in(mime, body, c) && draftmsg_in(mime, k, c))
		return (1);
    }
    return (0);
}

/* draftmsg_read_part - the decoded content of a part, at most max bytes */

static int draftmsg_read_part(const struct draftmsg *r,
			           const struct mime_part *p, size_t max,
			           struct strbuf *out)
{
    struct mime_stream *s = mime_stream_open(r->m, p);
    char    buf[16384];
    ssize_t got;

    strbuf_init(out, max);
    while ((got = mime_stream_read(s, buf, sizeof(buf))) > 0)
	if (strbuf_append(out, buf, (size_t) got) < 0)
	    break;
    if (got < 0) {
	result_set(r->res, M365_SYSTEM, "4.3.0", "%s", mime_stream_error(s));
	mime_stream_close(s);
	strbuf_free(out);
	return (-1);
    }
    mime_stream_close(s);
    return (0);
}

/* draftmsg_ext - a file name extension for a type without a name */

static const char *draftmsg_ext(const char *type)
{
    static const char *const ext[][2] = {
	{"text/plain", "txt"}, {"text/html", "html"}, {"text/csv", "csv"},
	{"text/calendar", "ics"}, {"text/xml", "xml"},
	{"image/png", "png"}, {"image/jpeg", "jpg"}, {"image/gif", "gif"},
	{"image/tiff", "tif"}, {"application/pdf", "pdf"},
	{"application/zip", "zip"}, {"application/xml", "xml"},
	{"application/json", "json"}, {"message/rfc822", "eml"},
	{0, 0},
    };
    int     i;

    for (i = 0; ext[i][0]; i++)
	if (strcmp(type, ext[i][0]) == 0)
	    return (ext[i][1]);
    return ("bin");
}

/*
 * draftmsg_eml_name - a forwarded message's name from its Subject, made a
 * safe file name, or NULL
 */
static char *draftmsg_eml_name(const struct draftmsg *r,
			            const struct mime_part *p)
{
    char    head[DRAFTMSG_NAME_PEEK + 1];
    size_t  n = (size_t) (p->body_end - p->body_start), pos = 0;
    ssize_t got;
    char   *subj, *name, *c;

    if (n > DRAFTMSG_NAME_PEEK)
	n = DRAFTMSG_NAME_PEEK;
    if ((got = mime_body_read(r->m, head, n, p->body_start)) <= 0)
	return (NULL);
    head[got] = 0;
    if ((c = strstr(head, "\r\n\r\n")) != NULL)
	c[2] = 0;
    if ((subj = msg_hdr_find(head, strlen(head), "Subject", &pos)) == NULL)
	return (NULL);
    name = mime_words(subj + strspn(subj, " \t"),
		      strlen(subj + strspn(subj, " \t")));
    free(subj);
    for (c = name; c && *c; c++)
	if ((unsigned char) *c < 0x20 || strchr("/\\:*?\"<>|", *c))
	    *c = '_';
    if (name && strlen(name) > 100) {
	/* Cut at 100 bytes; a character cut in two becomes U+FFFD. */
	c = mime_to_utf8(NULL, name, 100);
	free(name);
	name = c;
    }
    if (name && *name == 0) {
	free(name);
	name = NULL;
    }
    return (name);
}

/* draftmsg_att_name - the attachment's file name; free() it */

static char *draftmsg_att_name(const struct draftmsg *r,
			            const struct mime_part *p, size_t nth)
{
    struct strbuf sb;
    char   *base;
    size_t  n;

    strbuf_init(&sb, STRBUF_MAX_LINE);
    if (mime_is(p, "message/rfc822")) {
	base = p->name ? xstrdup(p->name) : draftmsg_eml_name(r, p);
	strbuf_puts(&sb, base ? base : "message");
	n = base ? strlen(base) : 0;
	if (n < 4 || strcasecmp(base + n - 4, ".eml") != 0)
	    strbuf_puts(&sb, ".eml");
	free(base);
    } else if (p->name) {
	strbuf_puts(&sb, p->name);
    } else {
	strbuf_printf(&sb, "attachment-%lu.%s", (unsigned long) nth,
		      draftmsg_ext(p->type));
    }
    return (strbuf_take(&sb));
}

/* draftmsg_cid_used - does the HTML body refer to this Content-ID? */

static int draftmsg_cid_used(const struct draftmsg *r, const char *cid)
{
    const char *p;
    size_t  n = strlen(cid);

    if (!r->body_html || r->body_text == NULL)
	return (0);
    for (p = r->body_text; (p = strcasestr(p, "cid:")) != NULL; p += 4)
	if (strncasecmp(p + 4, cid, n) == 0)
	    return (1);
    return (0);
}

/* draftmsg_att_meta - the fileAttachment JSON without contentBytes and "}" */

static char *draftmsg_att_meta(const struct draftmsg_att *a)
{
    cJSON  *o = cJSON_CreateObject();
    struct strbuf ct;
    char   *text;

    strbuf_init(&ct, STRBUF_MAX_SMALL);
    strbuf_puts(&ct, a->part->type);
    if (strncmp(a->part->type, "text/", 5) == 0 && a->part->charset)
	strbuf_printf(&ct, "; charset=%s", a->part->charset);
    json_add_str(o, "@odata.type", "#microsoft.graph.fileAttachment");
    json_add_str(o, "name", a->name);
    json_add_str(o, "contentType", strbuf_str(&ct));
    cJSON_AddBoolToObject(o, "isInline", a->is_inline);
    if (a->part->content_id)
	json_add_str(o, "contentId", a->part->content_id);
    text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    strbuf_free(&ct);
    if (text && *text)
	text[strlen(text) - 1] = 0;		/* the closing brace */
    return (text);
}

/*
 * draftmsg_unsplittable - a part whose meaning a rebuilt message would
 * lose: signed or encrypted content.  The part, or NULL.
 */
static const struct mime_part *draftmsg_unsplittable(const struct mime *mime)
{
    static const char *const types[] = {
	"multipart/signed", "multipart/encrypted", "application/pkcs7-mime",
	"application/x-pkcs7-mime", 0,
    };
    size_t  i;
    int     k;

    for (i = 0; i < mime->nparts; i++)
	for (k = 0; types[k]; k++)
	    if (mime_is(mime->parts + i, types[k]))
		return (mime->parts + i);
    return (NULL);
}

/* draftmsg_body_of - read the body part (r->body) into r->body_text */

static int draftmsg_body_of(struct draftmsg *r)
{
    const struct mime_part *p;
    struct strbuf raw;

    if (r->body < 0)
	return (0);
    p = r->mime.parts + r->body;
    r->body_html = mime_is(p, "text/html");
    if (draftmsg_read_part(r, p, GRAPH_MAX_REQUEST, &raw) < 0)
	return (-1);
    if (strbuf_failed(&raw)) {
	r->body_attached = 1;			/* over 4 MB: a file */
    } else {
	r->body_text = mime_to_utf8(p->charset, raw.data ? raw.data : "",
				    raw.len);
	if (r->body_text == NULL)
	    r->body_attached = 1;
    }
    strbuf_free(&raw);
    return (0);
}

/* draftmsg_attachments - every leaf but the body and its alternatives */

static int draftmsg_attachments(struct draftmsg *r)
{
    const struct mime *mime = &r->mime;
    const struct mime_part *p;
    struct draftmsg_att *a;
    char    err[256];
    size_t  i;

    r->att = xcalloc(mime->nparts, sizeof(*r->att));
    for (i = 0; i < mime->nparts; i++) {
	p = mime->parts + i;
	if (p->multipart || draftmsg_dropped(mime, r->body, (int) i)
	    || ((int) i == r->body && !r->body_attached))
	    continue;
	a = r->att + r->natt++;
	a->part = p;
	if (mime_decoded_size(r->m, p, &a->size, err, sizeof(err)) < 0) {
	    result_set(r->res, M365_SYSTEM, "4.3.0", "%s", err);
	    return (-1);
	}
	if (a->size > GRAPH_UPLOAD_MAX) {
	    result_set(r->res, M365_PERM, "5.3.4", "an attachment of %lld "
		       "bytes is larger than the %ld bytes Microsoft 365 "
		       "takes per attachment", (long long) a->size,
		       GRAPH_UPLOAD_MAX);
	    return (-1);
	}
	if (p->cte == MIME_CTE_UNKNOWN)
	    msg_warn("%s: large message: part %lu has a transfer encoding "
		     "this relay cannot decode; it is attached as it is",
		     r->queue_id, (unsigned long) i);
	a->name = draftmsg_att_name(r, p, r->natt);
	a->is_inline = p->content_id != NULL
	    && (draftmsg_cid_used(r, p->content_id)
		|| (p->parent >= 0
		    && mime_is_multipart(mime->parts + p->parent, "related")));
	if ((a->meta = draftmsg_att_meta(a)) == NULL || a->name == NULL) {
	    result_set(r->res, M365_SYSTEM, "4.3.0", "cannot build the JSON "
		       "of an attachment (out of memory)");
	    return (-1);
	}
    }
    return (0);
}


/* draftmsg_build - the message as Graph JSON; see draftmsg.h */

int     draftmsg_build(struct draftmsg *r, const struct msg *m,
		               const struct strbuf *hdr, const char *queue_id,
		               struct m365_result *res)
{
    const struct mime_part *bad;
    char    err[256];
    size_t  pos = 0;
    char   *mid;

    memset(r, 0, sizeof(*r));
    r->body = -1;
    r->m = m;
    r->hdr = hdr;
    r->queue_id = queue_id;
    r->res = res;
    if (mime_parse(&r->mime, r->m, err, sizeof(err)) < 0) {
	if (r->mime.over_limit)
	    result_set(r->res, M365_PERM, "5.3.4", "message too large for "
		       "one Graph request and too complex to split: %s; send "
		       "it with fewer attachments", err);
	else
	    result_set(r->res, M365_SYSTEM, "4.3.0", "%s", err);
	return (-1);
    }
    if ((bad = draftmsg_unsplittable(&r->mime)) != NULL) {
	result_set(r->res, M365_PERM, "5.3.4", "message too large for one "
		   "Graph request (4 MB) and it holds a %s part: a signed or "
		   "encrypted message cannot be split into a draft and "
		   "attachments without breaking its signature or "
		   "encryption; send it without the signature/encryption, "
		   "make it smaller than 3 MB, or share the files by link",
		   bad->type);
	return (-1);
    }
    if ((mid = msg_hdr_find(r->hdr->data ? r->hdr->data : "", r->hdr->len,
			    "Message-ID", &pos)) != NULL) {
	char   *p = mid + strspn(mid, " \t");

	if (*p == '<' && strchr(p, '>') && strlen(p) < 500)
	    r->message_id = xstrndup(p, (size_t) (strchr(p, '>') - p) + 1);
	free(mid);
    }
    r->body = draftmsg_pick(&r->mime, 0);
    if (draftmsg_body_of(r) < 0 || draftmsg_meta(r) < 0)
	return (-1);
    if ((long long) strlen(r->meta) + 64 > GRAPH_MAX_REQUEST
	&& !r->body_attached && r->body >= 0) {
	/* A message text over 4 MB as JSON: it goes as a file. */
	r->body_attached = 1;
	if (draftmsg_meta(r) < 0)
	    return (-1);
    }
    if ((long long) strlen(r->meta) + 64 > GRAPH_MAX_REQUEST) {
	result_set(r->res, M365_PERM, "5.3.4", "the header fields of this "
		   "message (%lu bytes as Graph JSON) do not fit one Graph "
		   "request of 4 MB", (unsigned long) strlen(r->meta));
	return (-1);
    }
    return (draftmsg_attachments(r));
}

/* draftmsg_free - release everything; twice is fine */

void    draftmsg_free(struct draftmsg *r)
{
    size_t  i;

    for (i = 0; i < r->natt; i++) {
	free(r->att[i].name);
	free(r->att[i].meta);
    }
    free(r->att);
    mime_free(&r->mime);
    free(r->body_text);
    free(r->meta);
    free(r->message_id);
    memset(r, 0, sizeof(*r));
    r->body = -1;
}
