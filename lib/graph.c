/*
 * NAME
 *	graph 3
 * SUMMARY
 *	Microsoft Graph requests: sendMail (MIME), users, error replies
 * DESCRIPTION
 *	See graph.h.  The classification follows graph-facts.md section
 *	1.7 and design rule 11: a permanent code only with clear evidence
 *	that this message can never be sent; everything else defers, so
 *	the MTA keeps the message while the administrator fixes the cause.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "addr.h"
#include "graph.h"
#include "json.h"
#include "log.h"
#include "throttle.h"
#include "util.h"

/* graph_escape_mailbox - percent-encode a mailbox for a URL path */

static void graph_escape_mailbox(struct strbuf *sb, const char *mailbox)
{
    char   *esc = url_escape_keep(mailbox, "@+");	/* as Graph shows */

    strbuf_puts(sb, esc);
    free(esc);
}

/* graph_url_start - graph_url/v1.0/users/{mailbox} (or /v1.0/me) */

static void graph_url_start(struct strbuf *sb, const struct conf *conf,
			            const char *mailbox)
{
    strbuf_init(sb, STRBUF_MAX_SMALL);
    strbuf_puts(sb, conf->graph_url);
    if (mailbox) {
	strbuf_puts(sb, "/v1.0/users/");
	graph_escape_mailbox(sb, mailbox);
    } else {
	strbuf_puts(sb, "/v1.0/me");
    }
}

/* graph_url - graph_url/v1.0/users/{mailbox}{suffix}; free() it; NULL */

char   *graph_url(const struct conf *conf, const char *mailbox,
		          const char *suffix)
{
    struct strbuf sb;

    graph_url_start(&sb, conf, mailbox);
    if (suffix)
	strbuf_puts(&sb, suffix);
    return (strbuf_take(&sb));			/* NULL: too long */
}

/* graph_item_url - .../{mailbox}{path}{escaped id}{suffix}; free(); NULL */

char   *graph_item_url(const struct conf *conf, const char *mailbox,
			           const char *path, const char *id,
			           const char *suffix)
{
    struct strbuf sb;
    char   *esc = url_escape(id);

    graph_url_start(&sb, conf, mailbox);
    strbuf_puts(&sb, path);
    strbuf_puts(&sb, esc);
    if (suffix)
	strbuf_puts(&sb, suffix);
    free(esc);
    return (strbuf_take(&sb));			/* NULL: too long */
}

/* graph_parse_error - error.code, error.message, innerError.request-id */

int     graph_parse_error(const struct http_resp *resp, struct graph_error *ge)
{
    cJSON  *root, *err, *item, *inner;
    const char *req_id = resp->request_id;

    memset(ge, 0, sizeof(*ge));
    if (resp->body.len == 0 || (root = cJSON_Parse(strbuf_str(&resp->body))) == NULL) {
	snprintf(ge->request_id, sizeof(ge->request_id), "%s", req_id);
	return (-1);
    }
    if ((err = cJSON_GetObjectItemCaseSensitive(root, "error")) != NULL
	&& cJSON_IsObject(err)) {
	item = cJSON_GetObjectItemCaseSensitive(err, "code");
	if (cJSON_IsString(item))
	    log_printable(ge->code, sizeof(ge->code), item->valuestring,
			  strlen(item->valuestring));
	item = cJSON_GetObjectItemCaseSensitive(err, "message");
	if (cJSON_IsString(item))
	    log_printable(ge->message, sizeof(ge->message), item->valuestring,
			  strlen(item->valuestring));
	inner = cJSON_GetObjectItemCaseSensitive(err, "innerError");
	if (inner == NULL)
	    inner = cJSON_GetObjectItemCaseSensitive(err, "innererror");
	if (inner && (item = cJSON_GetObjectItemCaseSensitive(inner, "request-id"))
	    && cJSON_IsString(item) && *req_id == 0)
	    req_id = item->valuestring;
    }
    log_printable(ge->request_id, sizeof(ge->request_id), req_id, strlen(req_id));
    cJSON_Delete(root);
    return (ge->code[0] ? 0 : -1);
}

/* graph_send_mime - POST /users/{mailbox}/sendMail, streamed MIME */

int     graph_send_mime(struct http *http, const struct conf *conf,
			        const char *mailbox, const char *token,
			        struct msg_src *src, struct http_resp *resp)
{
    struct http_req req;
    char   *url = graph_url(conf, mailbox, "/sendMail");
    int     ret;

    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.url = url;
    req.bearer = token;
    req.content_type = "text/plain";
    req.read_cb = msg_src_read;
    /*
     * No rewind callback on purpose: when a reused connection dies after
     * the body was sent, libcurl would otherwise quietly send the message
     * again.  Without one it gives up, and deliver() defers with "may have
     * been accepted" (never send one twice).
     */
    req.rewind_cb = NULL;
    req.read_arg = src;
    req.read_len = msg_src_length(src);
    ret = http_perform(http, &req, resp);
    free(url);
    return (ret);
}

/* graph_get - GET /users/{mailbox}{suffix} (or /me when mailbox NULL) */

int     graph_get(struct http *http, const struct conf *conf,
		          const char *mailbox, const char *suffix,
		          const char *token, struct http_resp *resp)
{
    static const char *const hdrs[] = {"Accept: application/json", NULL};
    struct http_req req;
    char   *url = graph_url(conf, mailbox, suffix);
    int     ret;

    memset(&req, 0, sizeof(req));
    req.method = "GET";
    req.url = url;
    req.bearer = token;
    req.headers = hdrs;
    ret = http_perform(http, &req, resp);
    free(url);
    return (ret);
}

/* Well-known folder names; any other name is a displayName. */
static const char *const graph_well_known[] = {
    "inbox", "archive", "clutter", "conflicts", "conversationhistory",
    "deleteditems", "drafts", "junkemail", "localfailures", "msgfolderroot",
    "outbox", "recoverableitemsdeletions", "scheduled", "searchfolders",
    "sentitems", "serverfailures", "syncissues", 0,
};

/* graph_folder_well_known - a well-known folder name (case-insensitive) */

int     graph_folder_well_known(const char *name)
{
    const char *const *p;

    for (p = graph_well_known; *p; p++)
	if (strcasecmp(name, *p) == 0)
	    return (1);
    return (0);
}

/*
 * graph_folder_query - the suffix (after /users/{mailbox}) that finds
 * one folder path element: a well-known name at the top, else
 * displayName eq 'NAME' under parent (NULL: the top).  free() it.
 * NULL when it would be longer than a URL may be: never pass that
 * NULL on as "no suffix".
 */
char   *graph_folder_query(const char *parent, const char *name)
{
    struct strbuf q;
    const char *p;
    char   *esc, *pe;

    strbuf_init(&q, STRBUF_MAX_SMALL);
    if (parent == NULL && graph_folder_well_known(name)) {
	esc = url_escape(name);
	strbuf_printf(&q, "/mailFolders/%s", esc);
	free(esc);
	return (strbuf_take(&q));
    }
    /* OData string literal: a quote doubles; then percent-encoded. */
    for (p = name; *p; p++) {
	if (*p == '\'')
	    strbuf_putc(&q, '\'');
	strbuf_putc(&q, *p);
    }
    if (strbuf_failed(&q))
	return (strbuf_take(&q));		/* NULL: too long */
    esc = url_escape(strbuf_str(&q));
    strbuf_reset(&q);
    if (parent) {
	pe = url_escape(parent);
	strbuf_printf(&q, "/mailFolders/%s/childFolders?$filter=displayName"
		      "%%20eq%%20'%s'&$top=2", pe, esc);
	free(pe);
    } else {
	strbuf_printf(&q, "/mailFolders?$filter=displayName%%20eq%%20'%s'"
		      "&$top=2", esc);
    }
    free(esc);
    return (strbuf_take(&q));
}

/* graph_is - case-insensitive error code test */

static int graph_is(const struct graph_error *ge, const char *code)
{
    return (strcasecmp(ge->code, code) == 0);
}

/*
 * graph_describe - "403 ErrorSendAsDenied: message" for result texts;
 * when the reply body could not be read whole (transport_ok 0: over
 * the cap, cut short), also why.
 */
static void graph_describe(char *buf, size_t len, const struct http_resp *resp,
			           const struct graph_error *ge, int transport_ok)
{
    char    body[120];
    size_t  n;

    if (ge->code[0])
	snprintf(buf, len, "%ld %s: %.200s", resp->status, ge->code, ge->message);
    else if (resp->body.len > 0 && transport_ok)
	snprintf(buf, len, "%ld %s", resp->status,
		 log_printable(body, sizeof(body), resp->body.data,
			       resp->body.len));
    else
	snprintf(buf, len, "%ld (no error details)", resp->status);
    if (!transport_ok && (n = strlen(buf)) + 1 < len)
	snprintf(buf + n, len - n, "; the reply body was not read: %.200s",
		 resp->error);
}

/*
 * graph_read_reply - the error of a reply that arrived (a body that was
 * not read whole is not parsed: no code from it), its request-id into
 * res, and "403 Code: message" into what
 */
static void graph_read_reply(const struct http_resp *resp, int transport_ok,
			             struct graph_error *ge, char *what,
			             size_t len, struct m365_result *res)
{
    if (transport_ok)
	graph_parse_error(resp, ge);
    else
	memset(ge, 0, sizeof(*ge));
    if (ge->request_id[0])
	snprintf(res->request_id, sizeof(res->request_id), "%s", ge->request_id);
    res->http_status = resp->status;
    graph_describe(what, len, resp, ge, transport_ok);
}

/*
 * graph_classify_send - map a sendMail outcome to a result.  transport_ok
 * is 0 when http_perform() failed; then resp->upload_done tells whether
 * Graph may have received the whole message.
 */
void    graph_classify_send(const struct http_resp *resp, int transport_ok,
		               const char *from_addr, const char *mailbox,
			            struct m365_result *res)
{
    struct graph_error ge;
    char    what[400];
    long    st = resp->status;

    res->http_status = transport_ok ? st : 0;
    snprintf(res->request_id, sizeof(res->request_id), "%s", resp->request_id);

    /*
     * A 2xx status line arrived, then the transfer broke (body cut short,
     * reset or timeout while reading it, a body over the cap): Graph has
     * accepted the message.  Deferring would make the MTA send it again.
     */
    if (!transport_ok && st >= 200 && st < 300) {
	res->http_status = st;
	result_set(res, M365_OK, "2.0.0", "%ld %s%s%s", st,
		   st == 202 ? "Accepted" : "OK",
		   res->request_id[0] ? ", request-id=" : "", res->request_id);
	msg_warn("sendMail answered %ld, then the connection failed (%s); "
		 "the message was accepted (request-id=%s)", st, resp->error,
		 res->request_id[0] ? res->request_id : "-");
	return;
    }
    /*
     * No status line (or only an interim one): the transport broke
     * before Graph answered.  With a final non-2xx status line Graph has
     * answered, and the status decides below, even when the body could
     * not be read (over the cap, cut short): that is not "connection
     * lost".
     */
    if (!transport_ok && st < 200) {
	if (resp->upload_done) {
	    result_set(res, M365_TEMP, "4.4.2",
		       "connection to Graph lost after the whole message was "
		       "sent (%s); Microsoft 365 may have accepted it, "
		       "deferring", resp->error);
	} else if (http_resp_timed_out(resp)) {
	    result_set(res, M365_TEMP, "4.4.2",
		       "Graph did not answer in time (%s)", resp->error);
	} else {
	    result_set(res, M365_TEMP, "4.4.1",
		       "cannot reach Graph (%s)", resp->error);
	}
	return;
    }
    graph_read_reply(resp, transport_ok, &ge, what, sizeof(what), res);

    if (st >= 200 && st < 300) {
	/* 202, also with Retry-After: accepted; never send it again. */
	result_set(res, M365_OK, "2.0.0", "%ld %s%s%s", st,
		   st == 202 ? "Accepted" : "OK",
		   res->request_id[0] ? ", request-id=" : "", res->request_id);
	if (st != 202)
	    msg_warn("sendMail answered %ld instead of 202; treating it as "
		     "accepted (request-id=%s)", st, res->request_id);
	return;
    }
    if (st == 413 || graph_is(&ge, "ErrorMessageSizeExceeded")
	|| graph_is(&ge, "RequestEntityTooLarge")
	|| strstr(ge.message, "maximum request length")) {
	result_set(res, M365_PERM, "5.3.4",
		   "message too large for Microsoft 365 (%s)", what);
	return;
    }
    if (st == 400 && graph_is(&ge, "ErrorInvalidRecipients")) {
	result_set(res, M365_PERM, "5.1.1",
		   "Microsoft 365 rejected the recipients (%s)", what);
	return;
    }
    if (st == 400 && (strncasecmp(ge.code, "ErrorMimeContent", 16) == 0
		      || graph_is(&ge, "ErrorInvalidMimeContent"))) {
	result_set(res, M365_PERM, "5.6.0",
		   "Microsoft 365 cannot parse the message (%s)", what);
	return;
    }
    if (st == 403 && graph_is(&ge, "ErrorSendAsDenied")) {
	if (from_addr && mailbox && !addr_same(from_addr, mailbox)) {
	    result_set(res, M365_PERM, "5.7.1",
		       "mailbox %s may not send as %s (%s); grant Send As "
		       "in Exchange Online or route this sender to another "
		       "account", mailbox, from_addr, what);
	} else {
	    result_set(res, M365_CONFIG, "4.7.1",
		       "the signed-in identity may not send from mailbox %s "
		       "(%s); grant Send As / Full Access and, for delegated "
		       "sign-in, add the scope Mail.Send.Shared", mailbox, what);
	}
	return;
    }
    if (st == 401) {
	result_set(res, M365_CONFIG, "4.7.0",
		   "Graph refused the access token even after a refresh (%s); "
		   "check the app's API permissions (Mail.Send) and admin "
		   "consent, then run: m365ctl test ACCOUNT", what);
	return;
    }
    if (st == 403) {
	result_set(res, M365_CONFIG, "4.7.1",
		   "Graph denied access to mailbox %s (%s); check Mail.Send "
		   "permission and consent, and any RBAC for Applications "
		   "scope or application access policy", mailbox, what);
	return;
    }
    if (graph_is(&ge, "MailboxNotEnabledForRESTAPI")
	|| graph_is(&ge, "ErrorInvalidUser") || graph_is(&ge, "ResourceNotFound")
	|| st == 404) {
	result_set(res, M365_CONFIG, "4.7.1",
		   "mailbox %s cannot send through Graph (%s); check the "
		   "address, its Exchange Online licence, and that it is not "
		   "an on-premises mailbox", mailbox, what);
	return;
    }
    if (st == 429) {
	result_set(res, M365_TEMP, "4.7.0",
		   "throttled by Microsoft 365 (%s)%s", what,
		   resp->retry_after >= 0 ? ", honouring Retry-After" : "");
	return;
    }
    if (st >= 500) {
	result_set(res, M365_TEMP, "4.4.2",
		   "Graph is temporarily unavailable (%s); the message may "
		   "have been accepted, deferring", what);
	return;
    }
    /* Unknown 4xx: not sure it is this message's fault: defer. */
    result_set(res, M365_TEMP, "4.3.0",
	       "unexpected reply from Graph (%s)", what);
}

/*
 * graph_classify_draft - a request of the large-message path before the
 * send failed (see graph.h).  perm is the permission the path needs
 * ("Mail.ReadWrite" or "Mail.ReadWrite.Shared" for delegated sign-in,
 * NULL for app-only).
 */
void    graph_classify_draft(const struct http_resp *resp, int transport_ok,
			             const char *step, const char *mailbox,
			             const char *perm, struct m365_result *res)
{
    struct graph_error ge;
    char    what[400];
    long    st = resp->status;

    res->http_status = transport_ok ? st : 0;
    snprintf(res->request_id, sizeof(res->request_id), "%s", resp->request_id);
    if (!transport_ok && (st < 200 || st >= 300)) {
	if (http_resp_timed_out(resp))
	    result_set(res, M365_TEMP, "4.4.2", "Graph did not answer in time "
		       "(%s) to %s; nothing was sent", resp->error, step);
	else
	    result_set(res, M365_TEMP, "4.4.1", "cannot reach Graph (%s) to "
		       "%s; nothing was sent", resp->error, step);
	return;
    }
    graph_read_reply(resp, transport_ok, &ge, what, sizeof(what), res);
    if (st == 403 && !graph_is(&ge, "ErrorSendAsDenied")) {
	if (perm)
	    result_set(res, M365_CONFIG, "4.7.1", "Graph denied %s in mailbox "
		       "%s (%s): messages over 4 MB go through a draft, which "
		       "needs the delegated permission %s; set large_messages "
		       "= yes in the account and run m365ctl login ACCOUNT "
		       "(or set large_messages = no to bounce such messages)",
		       step, mailbox, what, perm);
	else
	    result_set(res, M365_CONFIG, "4.7.1", "Graph denied %s in mailbox "
		       "%s (%s): messages over 4 MB go through a draft, which "
		       "needs the application permission Mail.ReadWrite with "
		       "admin consent (and the mailbox in its RBAC scope or "
		       "access policy); grant it, or set large_messages = no "
		       "to bounce such messages", step, mailbox, what);
	return;
    }
    if (st == 429) {
	result_set(res, M365_TEMP, "4.7.0", "throttled by Microsoft 365 while "
		   "trying to %s (%s)%s; nothing was sent", step, what,
		   resp->retry_after >= 0 ? ", honouring Retry-After" : "");
	return;
    }
    if (st >= 500) {
	result_set(res, M365_TEMP, "4.4.2", "Graph is temporarily unavailable "
		   "(%s) to %s; nothing was sent, deferring", what, step);
	return;
    }
    graph_classify_send(resp, transport_ok, NULL, mailbox, res);
}

/* graph_note_retry_after - remember Graph's wait for this mailbox */

void    graph_note_retry_after(const struct conf *conf, const char *mailbox,
			               const struct http_resp *resp)
{
    if (resp->retry_after > 0
	&& (resp->status == 429 || resp->status == 503 || resp->status == 202
	    || resp->status == 504))
	throttle_set(conf, mailbox, resp->retry_after);
}

/* graph_reply_str - a string member of a JSON reply; free() it; NULL */

char   *graph_reply_str(const struct http_resp *resp, const char *name)
{
    cJSON  *root;
    char   *v;

    if (resp->body.len == 0
	|| (root = cJSON_ParseWithLength(resp->body.data, resp->body.len)) == NULL)
	return (NULL);
    v = cJSON_IsObject(root) ? json_get_str(root, name) : NULL;
    cJSON_Delete(root);
    return (v);
}
