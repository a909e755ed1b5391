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
#include <openssl/evp.h>

#include "addr.h"
#include "graph.h"
#include "json.h"
#include "log.h"
#include "statefile.h"
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
	    result_set(res, M365_CONFIG, "4.7.1", "Graph refused to %s in mailbox "
		       "%s (%s): messages over 4 MB go through a draft, which "
		       "needs the delegated permission %s; set large_messages "
		       "= yes in the account and run m365ctl login ACCOUNT "
		       "(or set large_messages = no to bounce such messages)",
		       step, mailbox, what, perm);
	else
	    result_set(res, M365_CONFIG, "4.7.1", "Graph refused to %s in mailbox "
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

/*
 * graph_send_ambiguous - may a send that did not succeed have been
 * accepted all the same?  The whole request went out, then the
 * connection broke or timed out before a status line, or Graph answered
 * 5xx (graph-facts.md 4: mail was delivered after such answers).
 */
int     graph_send_ambiguous(const struct http_resp *resp, int transport_ok)
{
    long    st = resp->status;

    if (st >= 200 && st < 300)
	return (0);				/* accepted: not ambiguous */
    if (!resp->upload_done)
	return (0);				/* Graph never had it all */
    if (!transport_ok && st < 200)
	return (1);
    return (st >= 500);
}

/* graph_slot_name - "HASH": the slot set of (client_id, mailbox) */

static int graph_slot_name(const char *client_id, const char *mailbox,
			           char *buf, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0, i;
    char   *key;
    size_t  n;
    int     ok;

    n = strlen(client_id ? client_id : "") + strlen(mailbox ? mailbox : "");
    key = xmalloc(n + 2);
    snprintf(key, n + 2, "%s %s", client_id ? client_id : "",
	     mailbox ? mailbox : "");
    for (i = 0; key[i]; i++)
	if (key[i] >= 'A' && key[i] <= 'Z')
	    key[i] = (char) (key[i] - 'A' + 'a');
    ok = EVP_Digest(key, strlen(key), md, &mdlen, EVP_sha256(), NULL) == 1;
    free(key);
    if (!ok || len < 33)
	return (-1);
    for (i = 0; i < 16 && i < mdlen; i++) {
	buf[2 * i] = hex[md[i] >> 4];
	buf[2 * i + 1] = hex[md[i] & 15];
    }
    buf[32] = 0;
    return (0);
}

/* graph_slot_take - one of the GRAPH_SLOTS request slots; see graph.h */

int     graph_slot_take(const struct conf *conf, const char *client_id,
			        const char *mailbox, struct m365_result *res)
{
    char    name[40];
    char    err[512];
    int     fd, slot;

    if (graph_slot_name(client_id, mailbox, name, sizeof(name)) < 0) {
	result_set(res, M365_SYSTEM, "4.3.0", "cannot hash the mailbox name "
		   "for its request slots (OpenSSL SHA-256 failed)");
	return (-1);
    }
    fd = statefile_lock_any(conf, STATEFILE_SLOTS, name, GRAPH_SLOTS,
			    (double) conf->concurrency_wait, &slot, err,
			    sizeof(err));
    if (fd == -2)
	result_set(res, M365_TEMP, "4.7.0", "mailbox %s busy: all %d "
		   "concurrent Graph requests that Microsoft 365 allows per "
		   "app and mailbox stayed in use for %ld s "
		   "(concurrency_wait); trying again later instead of "
		   "provoking a 429", mailbox, GRAPH_SLOTS,
		   conf->concurrency_wait);
    else if (fd < 0)
	result_set(res, M365_SYSTEM, "4.3.0", "cannot use the request slots "
		   "of mailbox %s: %s", mailbox, err);
    else
	msg_debug("mailbox %s: request slot %d of %d", mailbox, slot,
		  GRAPH_SLOTS);
    return (fd < 0 ? -1 : fd);
}

/* graph_slot_release - give a slot back; -1 is fine */

void    graph_slot_release(int fd)
{
    statefile_unlock(fd);
}

/* graph_odata_quote - 'text' as an OData string literal, URL-escaped */

static char *graph_odata_quote(const char *text)
{
    struct strbuf q;
    const char *p;
    char   *esc;

    strbuf_init(&q, STRBUF_MAX_SMALL);
    strbuf_putc(&q, '\'');
    for (p = text; *p; p++) {
	if (*p == '\'')
	    strbuf_putc(&q, '\'');
	strbuf_putc(&q, *p);
    }
    strbuf_putc(&q, '\'');
    if (strbuf_failed(&q)) {
	strbuf_free(&q);
	return (NULL);
    }
    esc = url_escape(strbuf_str(&q));
    strbuf_free(&q);
    return (esc);
}

/* graph_iso_time - an ISO 8601 UTC time ("...Z") as time_t; 0 if none */

static time_t graph_iso_time(const char *s)
{
    struct tm tm;
    int     n = 0;

    memset(&tm, 0, sizeof(tm));
    if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year,
			    &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
			    &tm.tm_sec, &n) != 6 || n == 0)
	return (0);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (timegm(&tm));
}

/* graph_names - does one of the recipient arrays of m name addr? */

static int graph_names(const cJSON *m, const char *addr)
{
    static const char *const fields[] = {"toRecipients", "ccRecipients",
    "bccRecipients", 0};
    const char *const *f;
    const cJSON *list, *r, *ea, *a;

    for (f = fields; *f; f++) {
	list = cJSON_GetObjectItemCaseSensitive(m, *f);
	cJSON_ArrayForEach(r, list) {
	    ea = cJSON_GetObjectItemCaseSensitive(r, "emailAddress");
	    a = cJSON_GetObjectItemCaseSensitive(ea, "address");
	    if (cJSON_IsString(a) && strcasecmp(a->valuestring, addr) == 0)
		return (1);
	}
    }
    return (0);
}

/* graph_sent_match - is m the copy: same id, new enough, every rcpt? */

static int graph_sent_match(const cJSON *m, const char *message_id,
			            char *const *rcpts, size_t nrcpts,
			            time_t not_before)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "internetMessageId");
    const cJSON *cr = cJSON_GetObjectItemCaseSensitive(m, "createdDateTime");
    time_t  created;
    size_t  i;

    if (!cJSON_IsString(id) || strcmp(id->valuestring, message_id) != 0)
	return (0);
    if (not_before > 0 && cJSON_IsString(cr)
	&& (created = graph_iso_time(cr->valuestring)) != 0
	&& created < not_before)
	return (0);				/* an older message, same id */
    for (i = 0; i < nrcpts; i++)
	if (!graph_names(m, rcpts[i]))
	    return (0);
    return (1);
}

/* graph_sent_find - the copy of a sent message in Sent Items; graph.h */

int     graph_sent_find(struct http *http, const struct conf *conf,
			        const char *mailbox, const char *token,
			        const char *message_id, char *const *rcpts,
			        size_t nrcpts, time_t not_before,
			        struct m365_result *res)
{
    struct http_resp resp;
    struct graph_error ge;
    struct strbuf q;
    cJSON  *root, *list, *m;
    char   *lit = graph_odata_quote(message_id);
    char    what[400];
    int     rc, ret = GRAPH_FIND_ERROR, too_long = (lit == NULL);

    strbuf_init(&q, STRBUF_MAX_SMALL);
    strbuf_printf(&q, "/mailFolders/sentitems/messages?$filter="
		  "internetMessageId%%20eq%%20%s&$select=id,internetMessageId,"
		  "createdDateTime,toRecipients,ccRecipients,bccRecipients"
		  "&$top=10", lit ? lit : "");
    free(lit);
    http_resp_init(&resp);
    /* A Message-ID too long for a URL: never a request without filter. */
    if (too_long || strbuf_failed(&q)) {
	result_set(res, M365_TEMP, "4.4.2", "cannot look for Message-ID %.80s "
		   "in Sent Items of %s: it is too long for a request",
		   message_id, mailbox);
	strbuf_free(&q);
	return (GRAPH_FIND_ERROR);
    }
    rc = graph_get(http, conf, mailbox, strbuf_str(&q), token, &resp);
    strbuf_free(&q);
    if (rc == 0 && resp.status == 200
	&& (root = cJSON_ParseWithLength(resp.body.data, resp.body.len))) {
	list = cJSON_GetObjectItemCaseSensitive(root, "value");
	if (cJSON_IsArray(list)) {
	    ret = GRAPH_FIND_NONE;
	    cJSON_ArrayForEach(m, list)
		if (graph_sent_match(m, message_id, rcpts, nrcpts, not_before))
		ret = GRAPH_FIND_FOUND;
	}
	cJSON_Delete(root);
	if (ret == GRAPH_FIND_ERROR)
	    result_set(res, M365_TEMP, "4.4.2", "Graph answered the look-up "
		       "in Sent Items of %s without a list of messages",
		       mailbox);
	http_resp_free(&resp);
	return (ret);
    }
    if (rc < 0) {
	result_set(res, M365_TEMP, "4.4.2", "cannot reach Graph to look in "
		   "Sent Items of %s (%s)", mailbox, resp.error);
    } else {
	graph_read_reply(&resp, 1, &ge, what, sizeof(what), res);
	if (resp.status == 403) {
	    ret = GRAPH_FIND_DENIED;
	    result_set(res, M365_CONFIG, "4.7.1", "may not read Sent Items "
		       "of %s (%s)", mailbox, what);
	} else {
	    result_set(res, M365_TEMP, "4.4.2", "the look-up in Sent Items "
		       "of %s failed (%s)", mailbox, what);
	}
    }
    http_resp_free(&resp);
    return (ret);
}
