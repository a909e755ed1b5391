/*
 * NAME
 *	draft 3
 * SUMMARY
 *	large messages: a Graph draft, its attachments, then send
 * DESCRIPTION
 *	See draft.h.  The work is in four steps, each of which can stop
 *	the delivery with a result:
 *
 *	1. draft_plan(): the message as Graph JSON (draftmsg.h: the
 *	   MIME structure, the parts that cannot be split, the body, the
 *	   attachments with their exact decoded sizes) and how each
 *	   attachment travels; then draft_perm(): may the account make
 *	   drafts (large_messages).  No Graph request is sent before.
 *	2. draft_ledger_start(): the delivery's ledger record; earlier
 *	   attempts and orphans of this mailbox.
 *	3. draft_create(), draft_attach(): the draft, the attachments.
 *	4. draft_send_it(): the send, checked against the draft when its
 *	   answer is anything but 202.
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

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <curl/curl.h>

#include "auth.h"
#include "draft.h"
#include "draftmsg.h"
#include "graph.h"
#include "json.h"
#include "ledger.h"
#include "log.h"
#include "mime.h"
#include "oauth.h"
#include "pace.h"
#include "rcpt.h"
#include "resolve.h"
#include "tokstore.h"
#include "util.h"

#define DRAFT_LEDGER_WAIT	10.0	/* s: another attempt holds the record */
#define DRAFT_SESSION_TRIES	3	/* createUploadSession 404 is transient */
#define DRAFT_B64_RAW		(3 * 16 * 1024)	/* decoded bytes per block */
#define DRAFT_REPLY_MAX		(3 * STRBUF_MAX_JSON)	/* draft create reply */

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


/* One delivery through the draft path. */
struct draft_run {
    const struct conf *conf;
    struct http *http;
    const struct conf_account *acct;
    const struct msg *m;
    const struct strbuf *hdr;		/* rewritten header section */
    const struct delivery *d;
    struct m365_result *res;
    struct draftmsg j;			/* the message as Graph JSON */
    long long draft_len;		/* length of the draft request */
    char   *token;
    const char *perm;			/* delegated: the scope; NULL app-only */
    char   *draft_id;
    struct ledger_rec rec;
    long long uploaded;
    int     n_in_draft, n_posted, n_sessions;
    int     unresolved;			/* the send may have gone through */
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

/*
 * draft_att_len - length of an attachment's JSON with its content:
 * meta + ,"contentBytes":" + base64 + "}
 */
static long long draft_att_len(const struct draftmsg_att *a)
{
    return ((long long) strlen(a->meta) + (long long) sizeof(draft_bytes_open)
	    - 1 + draft_b64_len(a->size) + (long long) sizeof(draft_bytes_close)
	    - 1);
}

/* draft_ways - how each attachment travels; the draft request length */

static void draft_ways(struct draft_run *r)
{
    long long len = (long long) strlen(r->j.meta);
    long long add;
    size_t  i;
    int     in_draft = 1;

    /* ,"attachments":[ ... ] around the ones in the draft. */
    for (i = 0; i < r->j.natt; i++) {
	add = draft_att_len(r->j.att + i) + (i == 0 ?
		  (long long) strlen(",\"attachments\":[]") : 1);
	if (in_draft && r->j.att[i].size < GRAPH_UPLOAD_MIN
	    && len + add <= GRAPH_MAX_REQUEST) {
	    r->j.att[i].how = DRAFT_IN_DRAFT;
	    len += add;
	    r->n_in_draft++;
	    continue;
	}
	in_draft = 0;
	r->j.att[i].how = r->j.att[i].size < GRAPH_UPLOAD_MIN ? DRAFT_POST :
	    DRAFT_SESSION;
    }
    r->draft_len = len;
}

/* draft_plan - step 1: the message as Graph JSON, how each part travels */

static int draft_plan(struct draft_run *r)
{
    if (draftmsg_build(&r->j, r->m, r->hdr, r->d->queue_id, r->res) < 0)
	return (-1);
    draft_ways(r);
    return (0);
}

/* ------------------------------------------------------------ ledger */

/*
 * draft_resolve - an earlier attempt left rec in state drafting, sending
 * or ambiguous: delete its draft or find it sent.  0 nothing was sent
 * (the draft is gone), 1 it was sent (rec is saved as sent), -1 it
 * cannot be told now (r->res says why; rec stays).  own: rec is this
 * delivery's record (its recipients are r->d's), not an orphan of
 * another: only then can Sent Items be asked for it.
 */
static int draft_resolve(struct draft_run *r, struct ledger_rec *rec,
			         int own)
{
    char    err[512];
    int     st = 1;

    if (rec->state != LEDGER_DRAFTING && rec->draft_id != NULL) {
	st = draft_is_draft(r, rec->draft_id);
	if (st == -2)
	    return (-1);
	if (st == 0) {
	    rec->state = LEDGER_SENT;
	    if (ledger_save(r->conf, rec, err, sizeof(err)) < 0)
		msg_warn("%s", err);
	    return (1);
	}
	if (st == -1 && !own)
	    return (-1);			/* its own retry will ask */
    }
    if (rec->state != LEDGER_DRAFTING
	&& (rec->draft_id == NULL || st == -1)) {
	/* Gone, or no draft to ask: "it may take time" (resolve.h). */
	if (draft_token(r, 0) < 0)
	    return (-1);
	st = resolve_ambiguous(r->conf, r->http, r->acct, &r->token,
			       r->d->rcpts, r->d->nrcpts, r->d->queue_id, rec,
			       r->res);
	r->unresolved = (st == RESOLVE_DEFER);
	return (st);
    }
    if (rec->draft_id != NULL && draft_delete(r, rec->draft_id))
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

    if ((rc = draft_resolve(r, rec, 0)) == 0) {
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
    char    err[512];
    unsigned char md[32];
    char    digest[65];
    int     rc;

    if (ledger_digest(r->m, md, digest) < 0)
	digest[0] = 0;
    if (ledger_open_delivery(r->conf, r->acct->mailbox, r->j.message_id,
			     r->m->hdr.data, r->m->hdr.len, r->d->rcpts,
			     r->d->nrcpts, digest, DRAFT_LEDGER_WAIT,
			     r->d->queue_id, rec, r->res) < 0)
	return (-1);
    if (rec->state == LEDGER_SENT) {
	ledger_sent_result(rec, "(send ledger; not sent again)", r->res);
	return (1);
    }
    if (rec->state == LEDGER_DRAFTING || rec->state == LEDGER_SENDING
	|| rec->state == LEDGER_AMBIGUOUS) {
	if ((rc = draft_resolve(r, rec, 1)) < 0)
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
    rec->path = LEDGER_PATH_DRAFT;
    rec->attempted = 0;
    ledger_set(&rec->draft_id, NULL);
    ledger_set(&rec->request_id, NULL);
    ledger_set(&rec->digest, digest);
    ledger_set(&rec->mailbox, r->acct->mailbox);
    ledger_set(&rec->message_id, r->j.message_id);
    ledger_set(&rec->queue_id, r->d->queue_id);
    ledger_set_envelope(rec, r->d->sender, r->d->rcpts, r->d->nrcpts);
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
    if (st == LEDGER_SENDING)
	r->rec.attempted = time(NULL);		/* the send starts */
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
    size_t  metalen = strlen(r->j.meta), i;
    char   *url = graph_url(r->conf, r->acct->mailbox, "/messages");
    int     rc, first = 1;

    memset(&b, 0, sizeof(b));
    b.m = r->m;
    if (r->n_in_draft == 0) {
	draft_body_text(&b, r->j.meta, metalen);
    } else {
	draft_body_text(&b, r->j.meta, metalen - 1);	/* without "}" */
	draft_body_text(&b, ",\"attachments\":[", 16);
	for (i = 0; i < r->j.natt; i++) {
	    if (r->j.att[i].how != DRAFT_IN_DRAFT)
		continue;
	    if (!first)
		draft_body_text(&b, ",", 1);
	    first = 0;
	    draft_body_text(&b, r->j.att[i].meta, strlen(r->j.att[i].meta));
	    draft_body_text(&b, draft_bytes_open, sizeof(draft_bytes_open) - 1);
	    draft_body_part(&b, r->j.att[i].part, r->j.att[i].size);
	    draft_body_text(&b, draft_bytes_close,
			    sizeof(draft_bytes_close) - 1);
	}
	draft_body_text(&b, "]}", 2);
    }
    http_resp_init(&resp);
    /* The reply echoes the message, text and all (up to 4 MB of it). */
    strbuf_init(&resp.body, DRAFT_REPLY_MAX);
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

static int draft_post_att(struct draft_run *r, const struct draftmsg_att *a)
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

static char *draft_session(struct draft_run *r, const struct draftmsg_att *a)
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

static int draft_put(struct draft_run *r, const struct draftmsg_att *a,
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
    const struct draftmsg_att *a;
    char   *upload;
    size_t  i;
    int     rc;

    for (i = 0; i < r->j.natt; i++) {
	a = r->j.att + i;
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
 * draft_large - may the account send through drafts (see draft.h)?
 * An app-only account is never judged by its access token: Microsoft
 * says clients must treat access tokens as opaque, so with yes or auto
 * the draft is tried and a 403 defers with the remedy.
 */
enum draft_large draft_large(const struct conf *conf,
			             const struct conf_account *acct,
			             const char **perm_r, char *why, size_t len)
{
    struct tokstore ts;
    char    err[512];
    int     has = -1;

    *why = 0;
    *perm_r = acct->auth == CONF_AUTH_DELEGATED ?
	oauth_large_scope(acct) : NULL;
    if (acct->large_messages == CONF_LARGE_NO) {
	snprintf(why, len, "large_messages = no");
	return (DRAFT_LARGE_NO);
    }
    if (acct->auth != CONF_AUTH_DELEGATED)
	return (DRAFT_LARGE_ON);
    memset(&ts, 0, sizeof(ts));
    if (tokstore_load(conf, acct->name, &ts, err, sizeof(err)) == 0
	&& ts.scope && *ts.scope)
	has = oauth_scope_has(ts.scope, *perm_r)
	    || oauth_scope_has(ts.scope, "Mail.ReadWrite.Shared");
    tokstore_clear(&ts);
    if (has != 0)
	return (DRAFT_LARGE_ON);		/* granted, or unknown */
    if (acct->large_messages == CONF_LARGE_YES) {
	snprintf(why, len, "the sign-in did not grant the delegated "
		 "permission %s", *perm_r);
	return (DRAFT_LARGE_UNGRANTED);
    }
    snprintf(why, len, "large_messages = auto, and the sign-in did not "
	     "grant the delegated permission %s", *perm_r);
    return (DRAFT_LARGE_AUTO_OFF);
}

/*
 * draft_perm - may this run use drafts?  0 yes, -1 no (r->res says
 * why).  Only large_messages = no bounces: a missing permission defers,
 * so the queue drains once the admin grants it.
 */
static int draft_perm(struct draft_run *r)
{
    char    why[300];

    switch (draft_large(r->conf, r->acct, &r->perm, why, sizeof(why))) {
    case DRAFT_LARGE_ON:
	return (0);
    case DRAFT_LARGE_UNGRANTED:
	result_set(r->res, M365_CONFIG, "4.7.1", "message over 4 MB: it is "
		   "sent through a draft, which needs the delegated "
		   "permission %s, and %s: run m365ctl login %s "
		   "(large_messages = yes asks for it)", r->perm, why,
		   r->acct->name);
	return (-1);
    case DRAFT_LARGE_AUTO_OFF:
	result_set(r->res, M365_CONFIG, "4.7.1", "message over 4 MB: it is "
		   "sent through a draft, which needs the delegated "
		   "permission %s, and %s: set large_messages = yes in "
		   "[account %s] and run m365ctl login %s (or large_messages "
		   "= no to bounce such messages at once)", r->perm, why,
		   r->acct->name, r->acct->name);
	return (-1);
    default:
	result_set(r->res, M365_PERM, "5.3.4", "message size %lld exceeds "
		   "the %ld bytes one Graph sendMail request takes (4 MB "
		   "base64-encoded), and account %s does not send larger "
		   "messages through a draft (%s): the sender can send the "
		   "attachments as a link or in smaller messages; the "
		   "administrator can set large_messages = auto (it needs "
		   "the permission Mail.ReadWrite)",
		   (long long) r->m->size, (long) GRAPH_MAX_MIME,
		   r->acct->name, why);
	return (-1);
    }
}

/*
 * draft_probe - create an empty draft in the account's mailbox and
 * delete it: does the path's permission work (m365ctl test)?  0 yes,
 * -1 with res filled (graph_classify_draft(): a 403 names the
 * permission); *deleted tells whether the test draft went again.
 */
int     draft_probe(const struct conf *conf, struct http *http,
		            const struct conf_account *acct, int *deleted,
		            struct m365_result *res)
{
    static const char json[] = "{\"subject\":\"m365relay permission test "
    "(deleted at once)\",\"body\":{\"contentType\":\"text\","
    "\"content\":\"\"}}";
    struct draft_run r;
    struct http_resp resp;
    struct delivery d;
    char   *url = graph_url(conf, acct->mailbox, "/messages");
    char    why[300];
    int     rc;

    memset(&r, 0, sizeof(r));
    memset(&d, 0, sizeof(d));
    d.queue_id = "NOQUEUE";
    r.rec.lock_fd = -1;
    r.conf = conf;
    r.http = http;
    r.acct = acct;
    r.d = &d;
    r.res = res;
    *deleted = 0;
    result_init(res);
    (void) draft_large(conf, acct, &r.perm, why, sizeof(why));
    http_resp_init(&resp);
    rc = draft_graph(&r, "POST", url, NULL, json, &resp);
    free(url);
    if (rc == 0 && resp.status == 201
	&& (r.draft_id = graph_reply_str(&resp, "id")) != NULL) {
	*deleted = draft_delete(&r, r.draft_id);
	result_set(res, M365_OK, "2.0.0", "created a draft in mailbox %s "
		   "and %s", acct->mailbox, *deleted ? "deleted it" :
		   "could not delete it");
    } else if (rc != -2) {
	graph_classify_draft(&resp, rc == 0, "create a draft",
			     acct->mailbox, r.perm, res);
    }
    http_resp_free(&resp);
    xfree_secret(r.token);
    free(r.draft_id);
    return (res->status == M365_OK ? 0 : -1);
}

/* draft_run_free - release everything of a run */

static void draft_run_free(struct draft_run *r)
{
    draftmsg_free(&r->j);
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
	     acct->mailbox, r.n_in_draft, (unsigned long) r.j.natt);
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
		   (unsigned long) r.j.natt, r.n_in_draft, r.n_posted,
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
    } else {
	r.unresolved = 1;			/* "sending": asked next time */
    }

done:
    draft_run_free(&r);
    if (res->status == M365_OK)
	return (0);
    return (r.unresolved ? DELIVER_UNRESOLVED : -1);
}
