/*
 * NAME
 *	draft 3
 * SUMMARY
 *	large messages: a Graph draft, its attachments, then send
 * DESCRIPTION
 *	See draft.h.  The work is in four steps, each of which can stop
 *	the delivery with a result:
 *
 *	1. draft_plan(): the MIME structure (mime.h), the parts that
 *	   cannot be split, the body part, the attachments with their
 *	   exact decoded sizes, and how each travels; the JSON of the
 *	   draft.  No request is sent before this step has passed.
 *	2. draft_ledger_start(): the delivery's ledger record; earlier
 *	   attempts and orphans of this mailbox.
 *	3. draft_make(): the draft, the attachments.
 *	4. draft_send_it(): the send.
 *
 *	Request bodies are streams (struct draft_body): literal JSON text
 *	and the base64 of a part's decoded content, made while libcurl
 *	reads, so the whole message is never in memory: at most one 48 KB
 *	block of a part, encoded.  The chunks of an upload session are
 *	read the same way (struct draft_chunk).  None of these streams
 *	can be rewound by libcurl: a request that broke is never sent a
 *	second time behind our back (a second draft would be an orphan).
 * DIAGNOSTICS
 *	Progress goes to the log (msg_info) with the queue ID; token
 *	values and upload URLs (they hold a credential) never do: an
 *	upload URL is logged by its origin only.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <curl/curl.h>

#include "addr.h"
#include "auth.h"
#include "draft.h"
#include "graph.h"
#include "json.h"
#include "ledger.h"
#include "log.h"
#include "mime.h"
#include "oauth.h"
#include "pace.h"
#include "rcpt.h"
#include "tokstore.h"
#include "util.h"

#define DRAFT_LEDGER_WAIT	10.0	/* s: another attempt holds the record */
#define DRAFT_SESSION_TRIES	3	/* createUploadSession 404 is transient */
#define DRAFT_B64_RAW		(3 * 16 * 1024)	/* decoded bytes per block */
#define DRAFT_NAME_PEEK		(16 * 1024)	/* of a message/rfc822 part */

static const char draft_prefer[] = "Prefer: IdType=\"ImmutableId\"";
static const char draft_accept[] = "Accept: application/json";
static const char draft_bytes_open[] = ",\"contentBytes\":\"";
static const char draft_bytes_close[] = "\"}";

/* How an attachment travels. */
enum draft_how {
    DRAFT_IN_DRAFT = 0,			/* in the draft's own request */
    DRAFT_POST = 1,			/* POST .../attachments */
    DRAFT_SESSION = 2,			/* createUploadSession + PUTs */
};

struct draft_att {
    const struct mime_part *part;
    char   *name;			/* UTF-8 */
    char   *meta;			/* fileAttachment JSON without contentBytes
					 * and without its closing brace */
    int     is_inline;
    off_t   size;			/* decoded bytes */
    enum draft_how how;
};

/* One delivery through the draft path. */
struct draft_run {
    const struct conf *conf;
    struct http *http;
    const struct conf_account *acct;
    const struct msg *m;
    const struct strbuf *hdr;		/* rewritten header section */
    const struct delivery *d;
    struct m365_result *res;
    struct mime mime;
    int     body;			/* index of the body part, or -1 */
    char   *body_text;			/* UTF-8, or NULL */
    int     body_html;
    int     body_attached;		/* too large: the body went as a file */
    struct draft_att *att;
    size_t  natt;
    char   *meta;			/* the draft's JSON without attachments */
    long long draft_len;		/* length of the draft request */
    char   *token;
    const char *perm;			/* delegated: the scope; NULL app-only */
    char   *message_id;
    char   *draft_id;
    struct ledger_rec rec;
    long long uploaded;
    int     n_in_draft, n_posted, n_sessions;
};

/* ------------------------------------------------------ request bodies */

struct draft_seg {
    const char *text;			/* literal text, or NULL */
    size_t  len;
    const struct mime_part *part;	/* else the base64 of this part */
    off_t   size;			/* its decoded size */
};

struct draft_body {
    const struct msg *m;
    struct draft_seg *seg;
    size_t  nseg;
    size_t  cur;			/* segment being read */
    size_t  off;			/* in a text segment */
    struct mime_stream *ms;		/* of a part segment */
    long long enc_done;			/* base64 bytes of it so far */
    unsigned char raw[DRAFT_B64_RAW];
    char    enc[DRAFT_B64_RAW / 3 * 4];
    size_t  elen, eoff;
    long long total;
    char    error[256];
};

/* draft_b64_len - base64 length of n bytes */

static long long draft_b64_len(off_t n)
{
    return (4 * (((long long) n + 2) / 3));
}

/* draft_body_text - append a literal segment (the text must live on) */

static void draft_body_text(struct draft_body *b, const char *text,
			            size_t len)
{
    b->seg = xrealloc(b->seg, (b->nseg + 1) * sizeof(*b->seg));
    memset(b->seg + b->nseg, 0, sizeof(*b->seg));
    b->seg[b->nseg].text = text;
    b->seg[b->nseg].len = len;
    b->nseg++;
    b->total += (long long) len;
}

/* draft_body_part - append the base64 of a part's decoded content */

static void draft_body_part(struct draft_body *b, const struct mime_part *p,
			            off_t size)
{
    b->seg = xrealloc(b->seg, (b->nseg + 1) * sizeof(*b->seg));
    memset(b->seg + b->nseg, 0, sizeof(*b->seg));
    b->seg[b->nseg].part = p;
    b->seg[b->nseg].size = size;
    b->nseg++;
    b->total += draft_b64_len(size);
}

/* draft_body_reset - read from the start again */

static void draft_body_reset(struct draft_body *b)
{
    mime_stream_close(b->ms);
    b->ms = NULL;
    b->cur = b->off = b->elen = b->eoff = 0;
    b->enc_done = 0;
    b->error[0] = 0;
}

/* draft_body_free - release the segments and any open stream */

static void draft_body_free(struct draft_body *b)
{
    draft_body_reset(b);
    free(b->seg);
    b->seg = NULL;
    b->nseg = 0;
}

/* draft_body_fill - encode the next block of the current part */

static int draft_body_fill(struct draft_body *b, const struct draft_seg *s)
{
    ssize_t got;

    if (b->ms == NULL)
	b->ms = mime_stream_open(b->m, s->part);
    if ((got = mime_stream_read(b->ms, b->raw, sizeof(b->raw))) < 0) {
	snprintf(b->error, sizeof(b->error), "%s", mime_stream_error(b->ms));
	return (-1);
    }
    /* Whole blocks are multiples of 3: padding only at the very end. */
    b->elen = base64_encode(b->enc, b->raw, (size_t) got);
    b->eoff = 0;
    b->enc_done += (long long) b->elen;
    if (got == 0 || b->enc_done >= draft_b64_len(s->size)) {
	if (b->enc_done != draft_b64_len(s->size)) {
	    snprintf(b->error, sizeof(b->error), "the content of a MIME part "
		     "changed while it was sent (spool file damaged?)");
	    return (-1);
	}
	return (1);				/* the part's last block */
    }
    return (0);
}

/* draft_body_read - CURLOPT_READFUNCTION over the segments */

static size_t draft_body_read(char *buf, size_t size, size_t nitems,
			              void *ctx)
{
    struct draft_body *b = ctx;
    size_t  want = size * nitems, done = 0, k;
    const struct draft_seg *s;
    int     last;

    while (done < want && b->cur < b->nseg) {
	s = b->seg + b->cur;
	if (s->text) {
	    k = s->len - b->off < want - done ? s->len - b->off : want - done;
	    memcpy(buf + done, s->text + b->off, k);
	    done += k;
	    if ((b->off += k) == s->len) {
		b->cur++;
		b->off = 0;
	    }
	    continue;
	}
	if (b->eoff < b->elen) {
	    k = b->elen - b->eoff < want - done ? b->elen - b->eoff :
		want - done;
	    memcpy(buf + done, b->enc + b->eoff, k);
	    b->eoff += k;
	    done += k;
	    continue;
	}
	if (b->ms != NULL && b->enc_done >= draft_b64_len(s->size)) {
	    /* The part is done: on to the next segment. */
	    mime_stream_close(b->ms);
	    b->ms = NULL;
	    b->enc_done = 0;
	    b->cur++;
	    continue;
	}
	if ((last = draft_body_fill(b, s)) < 0)
	    return (CURL_READFUNC_ABORT);
	if (last && b->elen == 0) {
	    mime_stream_close(b->ms);
	    b->ms = NULL;
	    b->enc_done = 0;
	    b->cur++;
	}
    }
    return (done);
}

/* The decoded bytes of one upload chunk. */
struct draft_chunk {
    struct mime_stream *ms;
    long long left;
    char    error[256];
};

/* draft_chunk_read - CURLOPT_READFUNCTION: the next decoded bytes */

static size_t draft_chunk_read(char *buf, size_t size, size_t nitems,
			               void *ctx)
{
    struct draft_chunk *c = ctx;
    size_t  want = size * nitems;
    ssize_t got;

    if ((long long) want > c->left)
	want = (size_t) c->left;
    if (want == 0)
	return (0);
    if ((got = mime_stream_read(c->ms, buf, want)) < 0 || got == 0) {
	snprintf(c->error, sizeof(c->error), "%s", got < 0 ?
		 mime_stream_error(c->ms) : "the content of a MIME part "
		 "ended early (spool file damaged?)");
	return (CURL_READFUNC_ABORT);
    }
    c->left -= got;
    return ((size_t) got);
}

/* ---------------------------------------------------------- requests */

/*
 * draft_token - a token valid for a while more (auth_token() keeps the
 * cached one while it is); force: renew the refused one.  0 or -1.
 */
static int draft_token(struct draft_run *r, int force)
{
    char   *token = NULL;
    int     rc;

    rc = auth_token(r->http, r->conf, r->acct, force,
		    force ? r->token : NULL, &token, r->res);
    if (rc < 0)
	return (-1);
    xfree_secret(r->token);
    r->token = token;
    return (0);
}

/*
 * draft_graph - one Graph request of the path, with the account's
 * token, Prefer: IdType="ImmutableId" and, for a body, the upload
 * budget booked first; a 401 renews the token once and sends again.
 * Returns http_perform()'s 0 or -1, or -2 when no request was sent
 * (r->res says why: budget, token).
 */
static int draft_graph(struct draft_run *r, const char *method,
		               const char *url, struct draft_body *body,
		               const char *json, struct http_resp *resp)
{
    static const char *const hdrs[] = {draft_prefer, draft_accept, NULL};
    struct http_req req;
    long long len = body ? body->total : json ? (long long) strlen(json) : 0;
    int     rc = -1, tries;

    if (len > 0 && pace_reserve(r->conf, r->acct->client_id,
				r->acct->mailbox, len,
				(double) r->conf->timeout, r->res) < 0)
	return (-2);
    for (tries = 0; tries < 2; tries++) {
	if (draft_token(r, tries > 0) < 0)
	    return (-2);
	memset(&req, 0, sizeof(req));
	req.method = method;
	req.url = url;
	req.bearer = r->token;
	req.headers = hdrs;
	if (body) {
	    draft_body_reset(body);
	    req.content_type = "application/json";
	    req.read_cb = draft_body_read;
	    req.read_arg = body;
	    req.read_len = body->total;
	} else if (json) {
	    req.content_type = "application/json";
	    req.body = json;
	    req.body_len = strlen(json);
	}
	rc = http_perform(r->http, &req, resp);
	if (body && body->error[0] && resp->error[0] == 0)
	    snprintf(resp->error, sizeof(resp->error), "%s", body->error);
	graph_note_retry_after(r->conf, r->acct->mailbox, resp);
	if (resp->status != 401)
	    break;
	msg_info("%s: Graph refused the access token of account %s (401); "
		 "renewing it", r->d->queue_id, r->acct->name);
    }
    if (len > 0 && rc == 0)
	r->uploaded += len;
    return (rc);
}

/* draft_msg_url - .../messages/{id}{suffix}; free() it; NULL: too long */

static char *draft_msg_url(const struct draft_run *r, const char *id,
			           const char *suffix)
{
    return (graph_item_url(r->conf, r->acct->mailbox, "/messages/", id,
			   suffix));
}

/*
 * draft_delete - delete a draft (best effort); 1 deleted or gone (404),
 * 0 not
 */
static int draft_delete(struct draft_run *r, const char *id)
{
    struct http_resp resp;
    struct m365_result keep = *r->res;
    char   *url = draft_msg_url(r, id, NULL);
    int     ok;

    http_resp_init(&resp);
    ok = draft_graph(r, "DELETE", url, NULL, NULL, &resp) == 0
	&& (resp.status == 204 || resp.status == 200 || resp.status == 404);
    if (!ok)
	msg_warn("%s: cannot delete draft %.40s... in mailbox %s (HTTP %ld%s"
		 "%s); delete it in Drafts by hand", r->d->queue_id, id,
		 r->acct->mailbox, resp.status, resp.error[0] ? ", " : "",
		 resp.error);
    *r->res = keep;				/* the caller's result stands */
    http_resp_free(&resp);
    free(url);
    return (ok);
}

/*
 * draft_is_draft - ask Graph whether the message with this immutable id
 * is still a draft: 1 yes, 0 no (it was sent), -1 gone (404), -2 the
 * question failed (r->res says why)
 */
static int draft_is_draft(struct draft_run *r, const char *id)
{
    struct http_resp resp;
    char   *url = draft_msg_url(r, id, "?$select=isDraft");
    cJSON  *root, *v;
    int     rc, ret = -2;

    http_resp_init(&resp);
    rc = draft_graph(r, "GET", url, NULL, NULL, &resp);
    free(url);
    if (rc == -2) {
	http_resp_free(&resp);
	return (-2);
    }
    if (rc == 0 && resp.status == 404) {
	ret = -1;
    } else if (rc == 0 && resp.status == 200
	       && (root = cJSON_ParseWithLength(resp.body.data,
						resp.body.len)) != NULL) {
	v = cJSON_GetObjectItemCaseSensitive(root, "isDraft");
	if (cJSON_IsBool(v))
	    ret = cJSON_IsTrue(v) ? 1 : 0;
	cJSON_Delete(root);
    }
    if (ret == -2)
	graph_classify_draft(&resp, rc == 0, "look up an earlier draft",
			     r->acct->mailbox, r->perm, r->res);
    http_resp_free(&resp);
    return (ret);
}

/* ------------------------------------------------------- JSON of it */

/* draft_unquote - a display name: quotes and escapes gone, words decoded */

static char *draft_display(const char *s, size_t n)
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

/* draft_recipient - {"emailAddress": {"address": ..., "name": ...}} */

static cJSON *draft_recipient(const char *value, const struct addr_item *it)
{
    cJSON  *r = cJSON_CreateObject();
    cJSON  *ea = cJSON_AddObjectToObject(r, "emailAddress");
    char   *name = NULL, *comments;
    char   *addr = mime_to_utf8(NULL, it->addr, strlen(it->addr));

    json_add_str(ea, "address", addr);
    free(addr);
    if (it->lt < it->end) {
	name = draft_display(value + it->start, it->lt - it->start);
    } else if ((comments = addr_comments(value, it)) != NULL) {
	size_t  n = strlen(comments);

	if (n >= 2 && comments[0] == '(' && comments[n - 1] == ')')
	    name = draft_display(comments + 1, n - 2);
	else
	    name = draft_display(comments, n);
	free(comments);
    }
    if (name)
	json_add_str(ea, "name", name);
    free(name);
    return (r);
}

/*
 * draft_addrs - the mailboxes of every field NAME of the header as
 * recipients: an array member key of obj, or (one) the first mailbox
 * as an object member; nothing when there is none
 */
static void draft_addrs(const struct draft_run *r, cJSON *obj,
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
		cJSON_AddItemToObject(obj, key, draft_recipient(v,
							 list.items + i));
		addr_list_free(&list);
		free(v);
		return;
	    }
	    if (arr == NULL)
		arr = cJSON_AddArrayToObject(obj, key);
	    cJSON_AddItemToArray(arr, draft_recipient(v, list.items + i));
	}
	addr_list_free(&list);
	free(v);
    }
}

/* draft_field - the unfolded value of the first field NAME; free() */

static char *draft_field(const struct draft_run *r, const char *name)
{
    size_t  pos = 0;

    return (msg_hdr_find(r->hdr->data ? r->hdr->data : "", r->hdr->len,
			 name, &pos));
}

/* draft_importance - Importance, X-Priority or Priority: high, low, NULL */

static const char *draft_importance(const struct draft_run *r)
{
    const char *imp = NULL;
    char   *v;

    if ((v = draft_field(r, "Importance")) != NULL) {
	if (strncasecmp(v + strspn(v, " \t"), "high", 4) == 0)
	    imp = "high";
	else if (strncasecmp(v + strspn(v, " \t"), "low", 3) == 0)
	    imp = "low";
    } else if ((v = draft_field(r, "X-Priority")) != NULL) {
	char    c = v[strspn(v, " \t")];

	imp = (c == '1' || c == '2') ? "high" : (c == '4' || c == '5') ?
	    "low" : NULL;
    } else if ((v = draft_field(r, "Priority")) != NULL) {
	const char *p = v + strspn(v, " \t");

	imp = strncasecmp(p, "urgent", 6) == 0 ? "high" :
	    strncasecmp(p, "non-urgent", 10) == 0 ? "low" : NULL;
    }
    free(v);
    return (imp);
}

/*
 * draft_xheaders - internetMessageHeaders: the first X- fields (Graph
 * refuses other names and more than five), values unfolded and valid
 * UTF-8, at most 995 bytes each; Exchange's own X-MS-Exchange- fields
 * are left out
 */
static void draft_xheaders(const struct draft_run *r, cJSON *obj)
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
	if (n >= DRAFT_MAX_XHEADERS) {
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
		 "takes at most %d, each under 1000 bytes)", r->d->queue_id,
		 skipped, DRAFT_MAX_XHEADERS);
}

/*
 * draft_meta - the draft's JSON without attachments (r->meta); body is
 * the text, or a note when the text went as an attachment
 */
static int draft_meta(struct draft_run *r)
{
    cJSON  *root = cJSON_CreateObject();
    cJSON  *body, *props, *prop;
    const char *imp;
    char   *v, *u;

    if ((v = draft_field(r, "Subject")) != NULL) {
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
    draft_addrs(r, root, "from", "From", 1);
    draft_addrs(r, root, "toRecipients", "To", 0);
    draft_addrs(r, root, "ccRecipients", "Cc", 0);
    draft_addrs(r, root, "bccRecipients", "Bcc", 0);
    draft_addrs(r, root, "replyTo", "Reply-To", 0);
    if ((imp = draft_importance(r)) != NULL)
	json_add_str(root, "importance", imp);
    if ((v = draft_field(r, "Disposition-Notification-To")) != NULL) {
	cJSON_AddTrueToObject(root, "isReadReceiptRequested");
	free(v);
    }
    draft_xheaders(r, root);
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

/* draft_text_body - a text part that can be the message body */

static int draft_text_body(const struct mime_part *p)
{
    return ((mime_is(p, "text/plain") || mime_is(p, "text/html"))
	    && p->disp != MIME_DISP_ATTACHMENT && p->cte != MIME_CTE_UNKNOWN);
}

/* draft_child - the next child of part i after child c (-1: the first) */

static int draft_child(const struct mime *mime, int i, int c)
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
 * draft_pick - the body part in the subtree of part i, or -1: a text
 * leaf; of a multipart/alternative the HTML one, else the last that
 * has a body; of multipart/related its root; of any other multipart
 * the first child that has one
 */
static int draft_pick(const struct mime *mime, int i)
{
    const struct mime_part *p = mime->parts + i;
    int     c, b, best = -1;

    if (!p->multipart)
	return (draft_text_body(p) ? i : -1);
    if (mime_is_multipart(p, "alternative")) {
	for (c = draft_child(mime, i, -1); c >= 0; c = draft_child(mime, i, c))
	    if ((b = draft_pick(mime, c)) >= 0
		&& (best < 0 || !mime_is(mime->parts + best, "text/html")
		    || mime_is(mime->parts + b, "text/html")))
		best = b;
	return (best);
    }
    if (mime_is_multipart(p, "related"))
	return ((c = draft_child(mime, i, -1)) >= 0 ? draft_pick(mime, c) : -1);
    for (c = draft_child(mime, i, -1); c >= 0; c = draft_child(mime, i, c))
	if ((b = draft_pick(mime, c)) >= 0)
	    return (b);
    return (-1);
}

/* draft_in - is part k inside the subtree of part i? */

static int draft_in(const struct mime *mime, int k, int i)
{
    for (; k >= 0; k = mime->parts[k].parent)
	if (k == i)
	    return (1);
    return (0);
}

/*
 * draft_dropped - is leaf k another rendering of the body?  The text
 * leaves of the other branches of every multipart/alternative on the
 * way to the body are (Exchange writes its own plain text version).
 */
static int draft_dropped(const struct mime *mime, int body, int k)
{
    int     a, c;

    if (body < 0 || !draft_text_body(mime->parts + k))
	return (0);
    for (a = mime->parts[body].parent; a >= 0; a = mime->parts[a].parent) {
	if (!mime_is_multipart(mime->parts + a, "alternative"))
	    continue;
	for (c = draft_child(mime, a, -1); c >= 0; c = draft_child(mime, a, c))
	    if (!draft_in(mime, body, c) && draft_in(mime, k, c))
		return (1);
    }
    return (0);
}

/* draft_read_part - the decoded content of a part, at most max bytes */

static int draft_read_part(const struct draft_run *r,
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

/* draft_ext - a file name extension for a type without a name */

static const char *draft_ext(const char *type)
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
 * draft_eml_name - a forwarded message's name from its Subject, made a
 * safe file name, or NULL
 */
static char *draft_eml_name(const struct draft_run *r,
			            const struct mime_part *p)
{
    char    head[DRAFT_NAME_PEEK + 1];
    size_t  n = (size_t) (p->body_end - p->body_start), pos = 0;
    ssize_t got;
    char   *subj, *name, *c;

    if (n > DRAFT_NAME_PEEK)
	n = DRAFT_NAME_PEEK;
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

/* draft_att_name - the attachment's file name; free() it */

static char *draft_att_name(const struct draft_run *r,
			            const struct mime_part *p, size_t nth)
{
    struct strbuf sb;
    char   *base;
    size_t  n;

    strbuf_init(&sb, STRBUF_MAX_LINE);
    if (mime_is(p, "message/rfc822")) {
	base = p->name ? xstrdup(p->name) : draft_eml_name(r, p);
	strbuf_puts(&sb, base ? base : "message");
	n = base ? strlen(base) : 0;
	if (n < 4 || strcasecmp(base + n - 4, ".eml") != 0)
	    strbuf_puts(&sb, ".eml");
	free(base);
    } else if (p->name) {
	strbuf_puts(&sb, p->name);
    } else {
	strbuf_printf(&sb, "attachment-%lu.%s", (unsigned long) nth,
		      draft_ext(p->type));
    }
    return (strbuf_take(&sb));
}

/* draft_cid_used - does the HTML body refer to this Content-ID? */

static int draft_cid_used(const struct draft_run *r, const char *cid)
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

/* draft_att_meta - the fileAttachment JSON without contentBytes and "}" */

static char *draft_att_meta(const struct draft_att *a)
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
 * draft_unsplittable - a part whose meaning a rebuilt message would
 * lose: signed or encrypted content.  The part, or NULL.
 */
static const struct mime_part *draft_unsplittable(const struct mime *mime)
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

/* draft_body_of - read the body part (r->body) into r->body_text */

static int draft_body_of(struct draft_run *r)
{
    const struct mime_part *p;
    struct strbuf raw;

    if (r->body < 0)
	return (0);
    p = r->mime.parts + r->body;
    r->body_html = mime_is(p, "text/html");
    if (draft_read_part(r, p, GRAPH_MAX_REQUEST, &raw) < 0)
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

/* draft_attachments - every leaf but the body and its alternatives */

static int draft_attachments(struct draft_run *r)
{
    const struct mime *mime = &r->mime;
    const struct mime_part *p;
    struct draft_att *a;
    char    err[256];
    size_t  i;

    r->att = xcalloc(mime->nparts, sizeof(*r->att));
    for (i = 0; i < mime->nparts; i++) {
	p = mime->parts + i;
	if (p->multipart || draft_dropped(mime, r->body, (int) i)
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
		     r->d->queue_id, (unsigned long) i);
	a->name = draft_att_name(r, p, r->natt);
	a->is_inline = p->content_id != NULL
	    && (draft_cid_used(r, p->content_id)
		|| (p->parent >= 0
		    && mime_is_multipart(mime->parts + p->parent, "related")));
	if ((a->meta = draft_att_meta(a)) == NULL || a->name == NULL) {
	    result_set(r->res, M365_SYSTEM, "4.3.0", "cannot build the JSON "
		       "of an attachment (out of memory)");
	    return (-1);
	}
    }
    return (0);
}

/*
 * draft_att_len - length of an attachment's JSON with its content:
 * meta + ,"contentBytes":" + base64 + "}
 */
static long long draft_att_len(const struct draft_att *a)
{
    return ((long long) strlen(a->meta) + (long long) sizeof(draft_bytes_open)
	    - 1 + draft_b64_len(a->size) + (long long) sizeof(draft_bytes_close)
	    - 1);
}

/* draft_ways - how each attachment travels; the draft request length */

static void draft_ways(struct draft_run *r)
{
    long long len = (long long) strlen(r->meta);
    long long add;
    size_t  i;
    int     in_draft = 1;

    /* ,"attachments":[ ... ] around the ones in the draft. */
    for (i = 0; i < r->natt; i++) {
	add = draft_att_len(r->att + i) + (i == 0 ?
		  (long long) strlen(",\"attachments\":[]") : 1);
	if (in_draft && r->att[i].size < GRAPH_UPLOAD_MIN
	    && len + add <= GRAPH_MAX_REQUEST) {
	    r->att[i].how = DRAFT_IN_DRAFT;
	    len += add;
	    r->n_in_draft++;
	    continue;
	}
	in_draft = 0;
	r->att[i].how = r->att[i].size < GRAPH_UPLOAD_MIN ? DRAFT_POST :
	    DRAFT_SESSION;
    }
    r->draft_len = len;
}

/* draft_plan - step 1: structure, body, attachments, JSON; see above */

static int draft_plan(struct draft_run *r)
{
    const struct mime_part *bad;
    char    err[256];
    size_t  pos = 0;
    char   *mid;

    if (mime_parse(&r->mime, r->m, err, sizeof(err)) < 0) {
	if (r->mime.over_limit)
	    result_set(r->res, M365_PERM, "5.3.4", "message too large for "
		       "one Graph request and too complex to split: %s; send "
		       "it with fewer attachments", err);
	else
	    result_set(r->res, M365_SYSTEM, "4.3.0", "%s", err);
	return (-1);
    }
    if ((bad = draft_unsplittable(&r->mime)) != NULL) {
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
    r->body = draft_pick(&r->mime, 0);
    if (draft_body_of(r) < 0 || draft_meta(r) < 0)
	return (-1);
    if ((long long) strlen(r->meta) + 64 > GRAPH_MAX_REQUEST
	&& !r->body_attached && r->body >= 0) {
	/* A message text over 4 MB as JSON: it goes as a file. */
	r->body_attached = 1;
	if (draft_meta(r) < 0)
	    return (-1);
    }
    if ((long long) strlen(r->meta) + 64 > GRAPH_MAX_REQUEST) {
	result_set(r->res, M365_PERM, "5.3.4", "the header fields of this "
		   "message (%lu bytes as Graph JSON) do not fit one Graph "
		   "request of 4 MB", (unsigned long) strlen(r->meta));
	return (-1);
    }
    if (draft_attachments(r) < 0)
	return (-1);
    draft_ways(r);
    return (0);
}

/* ------------------------------------------------------------ ledger */

/*
 * draft_resolve - an earlier attempt of a delivery left rec in state
 * drafting or sending: delete its draft or find it sent.  0 nothing was
 * sent (the draft is gone), 1 it was sent (rec is saved as sent), -1 it
 * cannot be told now (r->res says why).
 */
static int draft_resolve(struct draft_run *r, struct ledger_rec *rec)
{
    char    err[512];
    int     st;

    if (rec->draft_id == NULL)
	return (0);
    if (rec->state == LEDGER_SENDING) {
	st = draft_is_draft(r, rec->draft_id);
	if (st == -2)
	    return (-1);
	if (st == 0) {
	    rec->state = LEDGER_SENT;
	    if (ledger_save(r->conf, rec, err, sizeof(err)) < 0)
		msg_warn("%s", err);
	    return (1);
	}
	if (st == -1) {
	    msg_warn("%s: the draft %.40s... of an earlier attempt (queue "
		     "id %s) is gone from mailbox %s; it cannot be told "
		     "whether it was sent: sending again", r->d->queue_id,
		     rec->draft_id, rec->queue_id ? rec->queue_id : "?",
		     r->acct->mailbox);
	    return (0);
	}
    }
    if (draft_delete(r, rec->draft_id))
	msg_info("%s: removed the unsent draft of an earlier attempt (queue "
		 "id %s) from mailbox %s", r->d->queue_id,
		 rec->queue_id ? rec->queue_id : "?", r->acct->mailbox);
    return (0);
}

/* draft_orphan - ledger_orphans() callback: an attempt whose process died */

static int draft_orphan(void *ctx, struct ledger_rec *rec)
{
    struct draft_run *r = ctx;
    struct m365_result keep = *r->res;
    char    err[512];
    int     rc;

    if ((rc = draft_resolve(r, rec)) == 0) {
	rec->state = LEDGER_FAILED;
	ledger_set(&rec->draft_id, NULL);
	if (ledger_save(r->conf, rec, err, sizeof(err)) < 0)
	    msg_warn("%s", err);
    } else if (rc > 0) {
	msg_info("%s: an earlier attempt (queue id %s) from mailbox %s was "
		 "sent before its process ended", r->d->queue_id,
		 rec->queue_id ? rec->queue_id : "?", r->acct->mailbox);
    }
    *r->res = keep;
    return (0);
}

/*
 * draft_ledger_start - step 2: lock this delivery's record, settle an
 * earlier attempt, clean up the mailbox's orphans, record "drafting".
 * 0 go on, 1 already sent (r->res says so), -1 stop (r->res).
 */
static int draft_ledger_start(struct draft_run *r)
{
    struct ledger_rec *rec = &r->rec;
    char    name[LEDGER_NAME_MAX];
    char    err[512];
    char    when[40];
    struct tm tm;
    int     rc;

    if (ledger_key(r->acct->mailbox, r->message_id, r->m->hdr.data,
		   r->m->hdr.len, r->d->rcpts, r->d->nrcpts, name,
		   sizeof(name)) < 0) {
	result_set(r->res, M365_SYSTEM, "4.3.0", "cannot compute the "
		   "delivery's ledger key (OpenSSL SHA-256 failed)");
	return (-1);
    }
    if ((rc = ledger_open(r->conf, name, DRAFT_LEDGER_WAIT, rec, err,
			  sizeof(err))) < 0) {
	if (rc == -2)
	    result_set(r->res, M365_TEMP, "4.3.0", "another process is "
		       "delivering this message to the same recipients "
		       "right now (%s); trying again later", err);
	else
	    result_set(r->res, M365_SYSTEM, "4.3.0", "cannot use the send "
		       "ledger: %s", err);
	return (-1);
    }
    if (rec->state == LEDGER_SENT) {
	localtime_r(&rec->updated, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	result_set(r->res, M365_OK, "2.0.0", "already sent at %s%s%s "
		   "(send ledger; not sent again)", when,
		   rec->request_id ? ", request-id=" : "",
		   rec->request_id ? rec->request_id : "");
	return (1);
    }
    if (rec->state == LEDGER_DRAFTING || rec->state == LEDGER_SENDING) {
	if ((rc = draft_resolve(r, rec)) < 0)
	    return (-1);
	if (rc > 0) {
	    result_set(r->res, M365_OK, "2.0.0", "already sent by an "
		       "earlier attempt (queue id %s): its draft is no "
		       "longer a draft (confirmed by Graph; not sent again)",
		       rec->queue_id ? rec->queue_id : "?");
	    return (1);
	}
    }
    if (ledger_orphans(r->conf, r->acct->mailbox, draft_orphan, r, err,
		       sizeof(err)) < 0)
	msg_warn("%s: cannot look for orphaned drafts: %s", r->d->queue_id,
		 err);
    rec->state = LEDGER_DRAFTING;
    ledger_set(&rec->draft_id, NULL);
    ledger_set(&rec->request_id, NULL);
    ledger_set(&rec->mailbox, r->acct->mailbox);
    ledger_set(&rec->message_id, r->message_id);
    ledger_set(&rec->queue_id, r->d->queue_id);
    rec->nrcpts = (long) r->d->nrcpts;
    if (ledger_save(r->conf, rec, err, sizeof(err)) < 0) {
	result_set(r->res, M365_SYSTEM, "4.3.0", "cannot record the draft in "
		   "the send ledger (nothing sent): %s", err);
	return (-1);
    }
    return (0);
}

/* draft_record - save the record in a new state; 0 or -1 (r->res) */

static int draft_record(struct draft_run *r, enum ledger_state st)
{
    char    err[512];

    r->rec.state = st;
    ledger_set(&r->rec.draft_id, r->draft_id);
    if (ledger_save(r->conf, &r->rec, err, sizeof(err)) < 0) {
	result_set(r->res, M365_SYSTEM, "4.3.0", "cannot update the send "
		   "ledger (nothing sent): %s", err);
	return (-1);
    }
    return (0);
}

/* ------------------------------------------------------ the requests */

/* draft_create - POST /messages with the attachments that fit in it */

static int draft_create(struct draft_run *r)
{
    struct draft_body b;
    struct http_resp resp;
    size_t  metalen = strlen(r->meta), i;
    char   *url = graph_url(r->conf, r->acct->mailbox, "/messages");
    int     rc, first = 1;

    memset(&b, 0, sizeof(b));
    b.m = r->m;
    if (r->n_in_draft == 0) {
	draft_body_text(&b, r->meta, metalen);
    } else {
	draft_body_text(&b, r->meta, metalen - 1);	/* without "}" */
	draft_body_text(&b, ",\"attachments\":[", 16);
	for (i = 0; i < r->natt; i++) {
	    if (r->att[i].how != DRAFT_IN_DRAFT)
		continue;
	    if (!first)
		draft_body_text(&b, ",", 1);
	    first = 0;
	    draft_body_text(&b, r->att[i].meta, strlen(r->att[i].meta));
	    draft_body_text(&b, draft_bytes_open, sizeof(draft_bytes_open) - 1);
	    draft_body_part(&b, r->att[i].part, r->att[i].size);
	    draft_body_text(&b, draft_bytes_close,
			    sizeof(draft_bytes_close) - 1);
	}
	draft_body_text(&b, "]}", 2);
    }
    http_resp_init(&resp);
    rc = draft_graph(r, "POST", url, &b, NULL, &resp);
    free(url);
    draft_body_free(&b);
    if (rc == -2) {
	http_resp_free(&resp);
	return (-1);
    }
    if (rc == 0 && resp.status == 201
	&& (r->draft_id = graph_reply_str(&resp, "id")) != NULL) {
	http_resp_free(&resp);
	return (0);
    }
    if (rc == 0 && resp.status >= 200 && resp.status < 300)
	result_set(r->res, M365_TEMP, "4.3.0", "Graph created the draft "
		   "(HTTP %ld) but named no id; it may remain in Drafts of "
		   "mailbox %s", resp.status, r->acct->mailbox);
    else
	graph_classify_draft(&resp, rc == 0, "create a draft",
			     r->acct->mailbox, r->perm, r->res);
    if (rc < 0 && resp.upload_done)
	msg_warn("%s: the connection broke after the draft request was sent; "
		 "an unsent draft may remain in Drafts of mailbox %s",
		 r->d->queue_id, r->acct->mailbox);
    http_resp_free(&resp);
    return (-1);
}

/* draft_post_att - POST .../attachments with the content inside */

static int draft_post_att(struct draft_run *r, const struct draft_att *a)
{
    struct draft_body b;
    struct http_resp resp;
    char   *url = draft_msg_url(r, r->draft_id, "/attachments");
    int     rc;

    memset(&b, 0, sizeof(b));
    b.m = r->m;
    draft_body_text(&b, a->meta, strlen(a->meta));
    draft_body_text(&b, draft_bytes_open, sizeof(draft_bytes_open) - 1);
    draft_body_part(&b, a->part, a->size);
    draft_body_text(&b, draft_bytes_close, sizeof(draft_bytes_close) - 1);
    http_resp_init(&resp);
    rc = draft_graph(r, "POST", url, &b, NULL, &resp);
    free(url);
    draft_body_free(&b);
    if (rc == 0 && resp.status == 201) {
	http_resp_free(&resp);
	return (0);
    }
    if (rc != -2)
	graph_classify_draft(&resp, rc == 0, "add an attachment to the draft",
			     r->acct->mailbox, r->perm, r->res);
    http_resp_free(&resp);
    return (-1);
}

/* draft_session - createUploadSession; the uploadUrl, or NULL (r->res) */

static char *draft_session(struct draft_run *r, const struct draft_att *a)
{
    struct http_resp resp;
    cJSON  *root = cJSON_CreateObject(), *item;
    char   *json, *url, *upload = NULL;
    char    origin[120];
    int     rc = -1, tries;

    item = cJSON_AddObjectToObject(root, "AttachmentItem");
    json_add_str(item, "attachmentType", "file");
    json_add_str(item, "name", a->name);
    cJSON_AddNumberToObject(item, "size", (double) a->size);
    json_add_str(item, "contentType", a->part->type);
    cJSON_AddBoolToObject(item, "isInline", a->is_inline);
    if (a->part->content_id)
	json_add_str(item, "contentId", a->part->content_id);
    json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    url = draft_msg_url(r, r->draft_id, "/attachments/createUploadSession");
    http_resp_init(&resp);
    /* Microsoft 365 answers 404 here now and then (graph-facts.md 2). */
    for (tries = 1; tries <= DRAFT_SESSION_TRIES; tries++) {
	rc = draft_graph(r, "POST", url, NULL, json, &resp);
	if (rc != 0 || resp.status != 404 || tries == DRAFT_SESSION_TRIES)
	    break;
	msg_info("%s: createUploadSession answered 404; trying again in %d s",
		 r->d->queue_id, tries);
	sleep((unsigned) tries);
    }
    free(url);
    free(json);
    if (rc == 0 && resp.status == 201)
	upload = graph_reply_str(&resp, "uploadUrl");
    if (upload == NULL && rc == 0 && resp.status == 201)
	result_set(r->res, M365_TEMP, "4.3.0", "createUploadSession named "
		   "no uploadUrl");
    else if (upload == NULL && rc != -2)
	graph_classify_draft(&resp, rc == 0, "create an upload session",
			     r->acct->mailbox, r->perm, r->res);
    http_resp_free(&resp);
    if (upload && !conf_upload_host_ok(r->conf, upload)) {
	const char *p = strstr(upload, "://");
	size_t  n = p ? (size_t) (p + 3 - upload) + strcspn(p + 3, "/?#") :
	strcspn(upload, "/?#");

	/* The origin only: the rest of an uploadUrl is a credential. */
	log_printable(origin, sizeof(origin), upload, n);
	result_set(r->res, M365_CONFIG, "4.7.0", "refusing to upload to %s: "
		   "the upload session is not on an https host of "
		   "upload_hosts in %s (%s...); nothing was sent there", origin,
		   r->conf->path, r->conf->upload_hosts &&
		   r->conf->upload_hosts[0] ? r->conf->upload_hosts[0] : "");
	xfree_secret(upload);
	return (NULL);
    }
    return (upload);
}

/* draft_put - the chunks of an upload session, in order, no token */

static int draft_put(struct draft_run *r, const struct draft_att *a,
		             const char *upload)
{
    static const char *const ctype = "application/octet-stream";
    struct draft_chunk c;
    struct http_req req;
    struct http_resp resp;
    char    range[100];
    const char *hdrs[2];
    long long off, len;
    int     rc = 0;

    memset(&c, 0, sizeof(c));
    c.ms = mime_stream_open(r->m, a->part);
    http_resp_init(&resp);
    for (off = 0; off < a->size; off += len) {
	len = a->size - off < DRAFT_CHUNK ? a->size - off : DRAFT_CHUNK;
	if (pace_reserve(r->conf, r->acct->client_id, r->acct->mailbox, len,
			 (double) r->conf->timeout, r->res) < 0) {
	    rc = -1;
	    break;
	}
	snprintf(range, sizeof(range), "Content-Range: bytes %lld-%lld/%lld",
		 off, off + len - 1, (long long) a->size);
	hdrs[0] = range;
	hdrs[1] = NULL;
	c.left = len;
	memset(&req, 0, sizeof(req));
	req.method = "PUT";
	req.url = upload;
	req.bearer = NULL;			/* the URL is the credential */
	req.content_type = ctype;
	req.headers = hdrs;
	req.read_cb = draft_chunk_read;
	req.read_arg = &c;
	req.read_len = len;
	rc = http_perform(r->http, &req, &resp);
	if (c.error[0] && resp.error[0] == 0)
	    snprintf(resp.error, sizeof(resp.error), "%s", c.error);
	if (rc == 0 && (resp.status == 200 || resp.status == 201)
	    && (resp.status == 201) == (off + len == a->size)) {
	    r->uploaded += len;
	    continue;
	}
	graph_classify_draft(&resp, rc == 0, "upload an attachment",
			     r->acct->mailbox, r->perm, r->res);
	msg_info("%s: upload of %s stopped at byte %lld of %lld (HTTP %ld)",
		 r->d->queue_id, a->name, off, (long long) a->size,
		 resp.status);
	rc = -1;
	break;
    }
    http_resp_free(&resp);
    mime_stream_close(c.ms);
    return (rc);
}

/* draft_attach - step 3b: the attachments not in the draft request */

static int draft_attach(struct draft_run *r)
{
    const struct draft_att *a;
    char   *upload;
    size_t  i;
    int     rc;

    for (i = 0; i < r->natt; i++) {
	a = r->att + i;
	if (a->how == DRAFT_POST) {
	    if (draft_post_att(r, a) < 0)
		return (-1);
	    r->n_posted++;
	} else if (a->how == DRAFT_SESSION) {
	    if ((upload = draft_session(r, a)) == NULL)
		return (-1);
	    rc = draft_put(r, a, upload);
	    xfree_secret(upload);
	    if (rc < 0)
		return (-1);
	    r->n_sessions++;
	}
    }
    return (0);
}

/* draft_no_body - an empty request body libcurl cannot send twice */

static size_t draft_no_body(char *buf, size_t size, size_t nitems, void *ctx)
{
    (void) buf;
    (void) size;
    (void) nitems;
    (void) ctx;
    return (0);
}

/*
 * draft_send_it - step 4: POST .../send.  0 sent; -2 not sent (the
 * draft is still one: delete it); -1 not sure (the record stays
 * "sending": the next attempt asks Graph before sending again).  Any
 * answer but 202 is checked against the draft itself: a send whose
 * answer was lost, or a request repeated on a new connection (404:
 * no longer a draft), has gone through.
 */
static int draft_send_it(struct draft_run *r)
{
    static const char *const hdrs[] = {draft_prefer, draft_accept, NULL};
    struct http_req req;
    struct http_resp resp;
    struct m365_result sent_res;
    char   *url = draft_msg_url(r, r->draft_id, "/send");
    char   *from = rcpt_header_from(r->hdr->data ? r->hdr->data : "",
				    r->hdr->len);
    int     rc = -1, tries, st;

    http_resp_init(&resp);
    for (tries = 0; tries < 2; tries++) {
	if (draft_token(r, tries > 0) < 0) {
	    rc = -2;
	    break;
	}
	memset(&req, 0, sizeof(req));
	req.method = "POST";
	req.url = url;
	req.bearer = r->token;
	req.headers = hdrs;
	/* Streamed, not rewindable: never sent twice behind our back. */
	req.read_cb = draft_no_body;
	req.read_len = 0;
	rc = http_perform(r->http, &req, &resp);
	graph_note_retry_after(r->conf, r->acct->mailbox, &resp);
	if (resp.status != 401)
	    break;
    }
    free(url);
    if (rc == -2) {				/* no token: nothing sent */
	free(from);
	http_resp_free(&resp);
	return (-2);
    }
    graph_classify_send(&resp, rc == 0, from, r->acct->mailbox, r->res);
    free(from);
    if (r->res->status == M365_OK) {
	ledger_set(&r->rec.request_id, r->res->request_id);
	http_resp_free(&resp);
	return (0);
    }
    http_resp_free(&resp);
    sent_res = *r->res;
    st = draft_is_draft(r, r->draft_id);
    if (st == 0) {
	msg_warn("%s: the send of the draft was answered \"%s\", but the "
		 "draft is no longer a draft: it was sent", r->d->queue_id,
		 sent_res.text);
	result_set(r->res, M365_OK, "2.0.0", "Accepted (the draft was sent; "
		   "the answer to the send was lost)");
	return (0);
    }
    *r->res = sent_res;
    if (st == 1)
	return (-2);				/* still a draft: not sent */
    msg_info("%s: the send of draft %.40s... may have gone through; the "
	     "next attempt checks the draft before sending again",
	     r->d->queue_id, r->draft_id);
    if (r->res->status != M365_TEMP)
	result_set(r->res, M365_TEMP, "4.4.2", "the send of the draft may "
		   "have gone through (%s); deferring: the next attempt "
		   "checks the draft before sending again", sent_res.text);
    return (-1);
}

/* ------------------------------------------------------------ driver */

/*
 * draft_auto_off - large_messages = auto and the permission is not
 * known to be granted: the message bounces as it did before drafts
 */
static int draft_auto_off(struct draft_run *r, const char *perm,
			          const char *why)
{
    result_set(r->res, M365_PERM, "5.3.4", "message size %lld exceeds the "
	       "%ld bytes one Graph sendMail request takes (4 MB "
	       "base64-encoded); account %s sends larger messages through a "
	       "draft only when it may use %s, and %s (large_messages = "
	       "auto): %s", (long long) r->m->size, (long) GRAPH_MAX_MIME,
	       r->acct->name, perm, why, r->acct->auth == CONF_AUTH_DELEGATED ?
	       "set large_messages = yes in the account and run m365ctl "
	       "login ACCOUNT" : "grant the application permission "
	       "Mail.ReadWrite with admin consent, or set large_messages = "
	       "yes");
    return (-1);
}

/*
 * draft_perm - may the account use drafts?  large_messages = yes: go on
 * (a delegated sign-in known to lack the scope defers with 4.7.1);
 * auto: only when the grant is known: the delegated sign-in's granted
 * scopes, or the "roles" claim of an app-only JWT access token.
 */
static int draft_perm(struct draft_run *r)
{
    struct tokstore ts;
    struct strbuf roles;
    char    err[512];
    int     has = -1;

    if (r->acct->auth != CONF_AUTH_DELEGATED) {
	if (r->acct->large_messages == CONF_LARGE_YES)
	    return (0);
	if (draft_token(r, 0) < 0)
	    return (-1);
	has = oauth_token_roles(r->token, "Mail.ReadWrite", &roles);
	strbuf_free(&roles);
	return (has > 0 ? 0 : draft_auto_off(r, "the application permission "
					       "Mail.ReadWrite", has < 0 ?
					       "its access token does not "
					       "show its permissions" :
					       "its access token lacks it"));
    }
    r->perm = oauth_large_scope(r->acct);
    memset(&ts, 0, sizeof(ts));
    if (tokstore_load(r->conf, r->acct->name, &ts, err, sizeof(err)) == 0
	&& ts.scope && *ts.scope)
	has = oauth_scope_has(ts.scope, r->perm)
	    || oauth_scope_has(ts.scope, "Mail.ReadWrite.Shared");
    tokstore_clear(&ts);
    if (has != 0 && (has > 0 || r->acct->large_messages == CONF_LARGE_YES))
	return (0);				/* granted, or unknown */
    if (r->acct->large_messages == CONF_LARGE_YES) {
	result_set(r->res, M365_CONFIG, "4.7.1", "message over 4 MB: it is "
		   "sent through a draft, which needs the delegated "
		   "permission %s, and the sign-in of account %s did not "
		   "grant it: run m365ctl login %s (large_messages = yes asks "
		   "for it)", r->perm, r->acct->name, r->acct->name);
	return (-1);
    }
    return (draft_auto_off(r, r->perm, has < 0 ? "no granted scopes are "
			   "recorded for its sign-in" : "its sign-in did not "
			   "grant it"));
}

/* draft_run_free - release everything of a run */

static void draft_run_free(struct draft_run *r)
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
    free(r->draft_id);
    xfree_secret(r->token);
    ledger_close(&r->rec);
}

/* draft_deliver - see draft.h */

int     draft_deliver(const struct conf *conf, struct http *http,
		              const struct conf_account *acct, struct msg *m,
		              const struct strbuf *hdr, const struct delivery *d,
		              struct m365_result *res)
{
    struct draft_run r;
    struct m365_result keep;
    int     rc;

    memset(&r, 0, sizeof(r));
    r.rec.lock_fd = -1;
    r.conf = conf;
    r.http = http;
    r.acct = acct;
    r.m = m;
    r.hdr = hdr;
    r.d = d;
    r.res = res;
    r.body = -1;
    result_init(res);

    if (draft_plan(&r) < 0 || draft_perm(&r) < 0)
	goto done;
    if ((rc = draft_ledger_start(&r)) != 0)
	goto done;
    if (draft_create(&r) < 0) {
	keep = *res;
	(void) draft_record(&r, LEDGER_FAILED);
	*res = keep;
	goto done;
    }
    msg_info("%s: large message: draft created in mailbox %s with %d of "
	     "%lu attachment(s); adding the others", d->queue_id,
	     acct->mailbox, r.n_in_draft, (unsigned long) r.natt);
    if (draft_record(&r, LEDGER_DRAFTING) < 0 || draft_attach(&r) < 0
	|| draft_record(&r, LEDGER_SENDING) < 0) {
	keep = *res;
	(void) draft_delete(&r, r.draft_id);
	free(r.draft_id);
	r.draft_id = NULL;
	(void) draft_record(&r, LEDGER_FAILED);
	*res = keep;
	goto done;
    }
    if ((rc = draft_send_it(&r)) == 0) {
	keep = *res;
	if (draft_record(&r, LEDGER_SENT) < 0)
	    msg_warn("%s: sent, but %s", d->queue_id, res->text);
	result_set(res, M365_OK, "2.0.0", "%s (from a draft: %lu "
		   "attachment(s): %d in the draft, %d posted, %d by upload "
		   "session; %lld bytes uploaded)", keep.text,
		   (unsigned long) r.natt, r.n_in_draft, r.n_posted,
		   r.n_sessions, r.uploaded);
	res->http_status = keep.http_status;
	snprintf(res->request_id, sizeof(res->request_id), "%s",
		 keep.request_id);
    } else if (rc == -2) {
	keep = *res;
	(void) draft_delete(&r, r.draft_id);
	free(r.draft_id);
	r.draft_id = NULL;
	(void) draft_record(&r, LEDGER_FAILED);
	*res = keep;
    }

done:
    draft_run_free(&r);
    return (res->status == M365_OK ? 0 : -1);
}
