/*
 * NAME
 *	fetch 3
 * SUMMARY
 *	one round of the inbound poller for one [source]: Graph -> MTA
 * DESCRIPTION
 *	See fetch.h.  The state is written at the transitions of a
 *	message that exactly once needs, durably (fsync) only where a
 *	power loss must not take the record, so that a kill -9 at any
 *	point neither loses a message nor injects it twice; see
 *	fetchstate.c for which transition is written how, and fetchstate.h
 *	for the one ambiguous window (between the end of the data and the
 *	MTA's reply) and how a restart handles it.
 *
 *	Only unread messages are injected: marking a message read is the
 *	after-action of "after = read", and a rejected message is marked
 *	read too, so a full resync (410) finds nothing processed unread.
 *	The done list covers the rest (Graph's delta may report a message
 *	we just processed with a stale isRead).  A message read by a
 *	person before m365-fetch saw it is left alone (like fetchmail
 *	without --all).
 *
 *	Memory does not grow with message size: $value goes to an
 *	unlinked temporary file (http.h to_fd) and the injector reads it
 *	back in 64 KB blocks.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "addr.h"
#include "auth.h"
#include "bounce.h"
#include "fetch.h"
#include "fetchstate.h"
#include "graph.h"
#include "inject.h"
#include "log.h"
#include "metrics.h"
#include "msg.h"
#include "rcpt.h"
#include "source.h"
#include "util.h"

#define FETCH_SELECT	"id,internetMessageId,isRead,from,subject"
#define FETCH_TRACE	"X-M365Relay-Source"
#define FETCH_DEF_MAX_SIZE	(150L * 1024 * 1024)	/* Exchange Online */
#define FETCH_MIN_RATE	(128L * 1024)	/* bytes/s a download must average */
#define FETCH_LOW_SPEED	1024		/* bytes/s, over [global] timeout */
#define FETCH_DEF_RETRY	60		/* 429/503 without Retry-After */
#define FETCH_MAX_RETRY	3600		/* cap on a Retry-After from Graph */

/* A $value download: where it goes and what bounds it. */
struct fetch_download {
    int     fd;				/* the spool file */
    long    timeout;			/* overall deadline, seconds */
    long    low_speed_time;		/* < FETCH_LOW_SPEED for this long */
    long long max_bytes;		/* the source's max_message_size */
};

/* Outcome of one step inside a round. */
#define STEP_OK		0		/* go on */
#define STEP_NEXT	1		/* this message waits; go on with others */
#define STEP_STOP	(-1)		/* end the round (reason in the result) */
#define STEP_INJECT	2		/* fetch_bounce(): inject its plan */

struct fetch_ctx {
    const struct conf *conf;
    struct http *http;
    const struct conf_source *src;
    const struct conf_account *acct;
    const char *mailbox;		/* NULL: /me */
    char   *token;
    struct fetchstate st;
    struct fetchstate_file sf;		/* the state's directory, this round */
    struct inject *inj;
    volatile sig_atomic_t *stop;
    struct fetch_result *out;
    const char *tmpdir;
    char    host[256];
    char    graph_host[256];
    const char *cur_id;			/* data_end hook */
    const char *cur_imid;
    char  **log_rcpts;			/* to= of the log, else recipients */
    int     stopped;			/* stop was seen: round incomplete */
    int     stop_clean;			/* ... and nothing else went wrong */
    int     graph_ok;			/* Graph accepted a request */
};

/* fetch_status_name - for logs */

const char *fetch_status_name(enum fetch_status s)
{
    switch (s) {
    case FETCH_DONE:
	return ("done");
    case FETCH_DEFERRED:
	return ("deferred");
    case FETCH_OFFLINE:
	return ("offline");
    case FETCH_BUSY:
    default:
	return ("busy");
    }
}

/*
 * fetch_save - write the state so that a restart after a kill -9 sees
 * it (FETCHSTATE_VISIBLE, no fsync; see fetchstate.c); STEP_STOP
 * (deferred) on failure
 */
static int fetch_save(struct fetch_ctx *c)
{
    char    err[600];

    if (fetchstate_write(&c->sf, &c->st, FETCHSTATE_VISIBLE, err,
			 sizeof(err)) == 0)
	return (STEP_OK);
    msg_error("%s: cannot record the delivery state: %s", c->src->name, err);
    c->out->status = FETCH_DEFERRED;
    snprintf(c->out->why, sizeof(c->out->why), "cannot record the delivery "
	     "state: %s", err);
    return (STEP_STOP);
}

/* fetch_defer - end the round: try again next round */

static int fetch_defer(struct fetch_ctx *c, const char *fmt,...)
    __attribute__((format(printf, 2, 3)));

static int fetch_defer(struct fetch_ctx *c, const char *fmt,...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->out->why, sizeof(c->out->why), fmt, ap);
    va_end(ap);
    if (c->out->status == FETCH_DONE)
	c->out->status = FETCH_DEFERRED;
    return (STEP_STOP);
}

/* fetch_stopped - a signal asked to stop: the rest waits, no error */

static int fetch_stopped(struct fetch_ctx *c)
{
    c->stopped = 1;
    if (c->out->status == FETCH_DONE)
	c->out->status = FETCH_DEFERRED;
    if (c->out->why[0] == 0) {
	/* A clean stop is no error: fetch_round() records none. */
	c->stop_clean = 1;
	snprintf(c->out->why, sizeof(c->out->why), "stopped by a signal");
    }
    return (STEP_STOP);
}

/* fetch_notify_mail - one notification to the admin; 0 when queued */

static int fetch_notify_mail(struct fetch_ctx *c)
{
    const struct conf_source *src = c->src;
    struct inject_result ir;
    struct strbuf body;
    char    date[64], mid[33], err[300];
    time_t  now = time(NULL);
    struct tm tm;
    int     fd, rc;

    if (random_hex(mid, 16) < 0) {
	msg_warn("%s: no random bytes for the Message-ID of the notice to %s: "
		 "OpenSSL's random generator and /dev/urandom both failed",
		 src->name, src->notify);
	return (-1);
    }
    if ((fd = inject_tmpfile(c->tmpdir)) < 0) {
	msg_warn("%s: cannot create a temporary file in %s for the notice to "
		 "%s: %s", src->name, c->tmpdir, src->notify, strerror(errno));
	return (-1);
    }
    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
    strbuf_init(&body, STRBUF_MAX_SMALL);
    strbuf_printf(&body,
		  "From: m365-fetch <MAILER-DAEMON@%s>\r\n"
		  "To: <%s>\r\n"
		  "Subject: m365-fetch: source %s needs attention\r\n"
		  "Date: %s\r\n"
		  "Message-ID: <%s.m365-fetch@%s>\r\n"
		  "Auto-Submitted: auto-generated\r\n"
		  "MIME-Version: 1.0\r\n"
		  "Content-Type: text/plain; charset=us-ascii\r\n"
		  "\r\n"
		  "m365-fetch on %s stopped fetching mail for source %s\r\n"
		  "(mailbox %s, folder %s) at %s.\r\n\r\n"
		  "Cause:\r\n  %.600s\r\n\r\n"
		  "What to do:\r\n  %.600s\r\n\r\n"
		  "Mail stays in Microsoft 365 and is fetched once the source "
		  "works\r\nagain; m365-fetch resumes by itself.  This notice is "
		  "sent once\r\nper outage; see also: m365ctl status.\r\n",
		  c->host, src->notify, src->name, date, mid, c->host, c->host,
		  src->name, c->mailbox ? c->mailbox : "(signed-in user)",
		  src->folder ? src->folder : "inbox", date,
		  c->st.last_error ? c->st.last_error : "unknown",
		  c->st.remedy ? c->st.remedy : "see the log");
    if (strbuf_failed(&body)) {
	/* Never a notice cut short. */
	msg_warn("%s: the notice to %s would be longer than %lu bytes "
		 "(shorten the [source] name, notify or mailbox); not sent",
		 src->name, src->notify, (unsigned long) body.max);
	close(fd);
	return (-1);
    }
    rc = (write(fd, body.data, body.len) == (ssize_t) body.len) ? 0 : -1;
    strbuf_free(&body);
    if (rc < 0) {
	msg_warn("%s: cannot write the notice to %s: %s", src->name,
		 src->notify, strerror(errno));
	close(fd);
	return (-1);
    }
    rc = inject_notice(c->conf, src->deliver_to, fd, src->notify, &ir, err,
		       sizeof(err));
    close(fd);
    if (rc < 0 && ir.relay[0] == 0) {
	msg_warn("%s: cannot send the notice to %s: %s", src->name,
		 src->notify, err);
	return (-1);
    }
    msg_info("%s: offline notice to=<%s>, relay=%s, dsn=%s, status=%s (%s)",
	     src->name, src->notify, ir.relay, ir.dsn,
	     inject_status_name(ir.status), ir.reply);
    return (rc);
}

/* fetch_offline - an administrator must act: log once, notify once */

static int fetch_offline(struct fetch_ctx *c, const char *error,
			         const char *remedy)
{
    if (fetchstate_set_offline(&c->st, error, remedy))
	msg_error("%s: source offline: %s; %s", c->src->name, error, remedy);
    else
	msg_debug("%s: still offline: %s", c->src->name, error);
    if (c->src->notify && *c->src->notify && !c->st.notified
	&& fetch_notify_mail(c) == 0)
	c->st.notified = 1;
    (void) fetch_save(c);
    c->out->status = FETCH_OFFLINE;
    snprintf(c->out->why, sizeof(c->out->why), "%s; %s", error, remedy);
    return (STEP_STOP);
}

/* fetch_token - an access token (cached in the context) */

static int fetch_token(struct fetch_ctx *c, int force)
{
    struct m365_result res;
    char    remedy[300];
    char   *refused = NULL;

    result_init(&res);
    if (force) {
	refused = c->token;
	c->token = NULL;
    }
    if (c->token != NULL)
	return (STEP_OK);
    if (auth_token(c->http, c->conf, c->acct, force, refused, &c->token,
		   &res) == 0) {
	xfree_secret(refused);
	return (STEP_OK);
    }
    xfree_secret(refused);
    if (res.status == M365_REAUTH || res.status == M365_CONFIG) {
	if (res.status == M365_REAUTH)
	    snprintf(remedy, sizeof(remedy), "the source resumes by itself "
		     "after: m365ctl login %s", c->acct->name);
	else
	    snprintf(remedy, sizeof(remedy), "fix [account %s], check it "
		     "with: m365ctl test %s; the source resumes by itself",
		     c->acct->name, c->acct->name);
	return (fetch_offline(c, res.text, remedy));
    }
    return (fetch_defer(c, "%s", res.text));
}

/*
 * fetch_graph - one Graph request with the source's token; a 401 renews
 * the token once.  With dl a 2xx body goes to dl->fd (emptied before a
 * retry), within dl's bounds.  STEP_OK when a response arrived (check
 * resp->status); STEP_STOP when no token could be had; -2 on a
 * transport error (resp->error; resp->too_big when the body passed
 * dl->max_bytes).  http_perform() refuses to send the token outside
 * graph_url, whatever the URL.
 */
static int fetch_graph(struct fetch_ctx *c, const char *method,
		               const char *url, const char *json,
		               const struct fetch_download *dl,
		               struct http_resp *resp)
{
    char    prefer[64];
    const char *hdrs[3];
    struct http_req req;
    int     attempt;

    snprintf(prefer, sizeof(prefer), "Prefer: odata.maxpagesize=%ld",
	     c->src->page_size > 0 ? c->src->page_size : 50);
    hdrs[0] = "Accept: application/json";
    /* url NULL (too long to build): http_perform() refuses, says why. */
    hdrs[1] = url && strstr(url, "/delta") ? prefer : NULL;
    hdrs[2] = NULL;
    for (attempt = 0; attempt < 2; attempt++) {
	if (fetch_token(c, attempt) != STEP_OK)
	    return (STEP_STOP);
	memset(&req, 0, sizeof(req));
	req.method = method;
	req.url = url;
	req.bearer = c->token;
	req.headers = dl ? hdrs + 2 : hdrs;
	if (json) {
	    req.body = json;
	    req.body_len = strlen(json);
	    req.content_type = "application/json";
	}
	if (dl) {
	    req.to_fd = 1;
	    req.out_fd = dl->fd;
	    req.timeout = dl->timeout;
	    req.max_bytes = dl->max_bytes;
	    req.low_speed_limit = FETCH_LOW_SPEED;
	    req.low_speed_time = dl->low_speed_time;
	    if (ftruncate(dl->fd, 0) < 0 || lseek(dl->fd, 0, SEEK_SET) < 0) {
		snprintf(resp->error, sizeof(resp->error), "cannot reset the "
			 "spool file: %s", strerror(errno));
		return (-2);
	    }
	}
	if (http_perform(c->http, &req, resp) < 0)
	    return (-2);
	/*
	 * A 2xx is no proof that an offline source was fixed (the MTA may
	 * still refuse the recipients, $value may still be forbidden):
	 * fetch_round() decides at the end of the round.
	 */
	if (resp->status >= 200 && resp->status < 300)
	    c->graph_ok = 1;
	if (resp->status != 401)
	    return (STEP_OK);
	msg_info("%s: Graph refused the access token of account %s (401); "
		 "renewing it", c->src->name, c->acct->name);
    }
    return (STEP_OK);
}

/* fetch_error_detail - "STATUS CODE: message, request-id=..." of a reply */

static void fetch_error_detail(const struct http_resp *resp, char *detail,
			               size_t len)
{
    struct graph_error ge;

    graph_parse_error(resp, &ge);
    if (ge.code[0])
	snprintf(detail, len, "%ld %s: %.200s%s%s", resp->status,
		 ge.code, ge.message, ge.request_id[0] ? ", request-id=" : "",
		 ge.request_id);
    else
	snprintf(detail, len, "HTTP %ld%s%s", resp->status,
		 resp->request_id[0] ? ", request-id=" : "", resp->request_id);
}

/* fetch_graph_fail - a Graph reply that ends the round; STEP_STOP */

static int fetch_graph_fail(struct fetch_ctx *c, const char *what,
			            int rc, const struct http_resp *resp)
{
    char    detail[400];
    char    remedy[400];
    const char *mb = c->mailbox ? c->mailbox : "(signed-in user)";
    long    wait;

    if (rc == STEP_STOP)
	return (STEP_STOP);
    if (rc == -2)
	return (fetch_defer(c, "%s: cannot reach Graph: %s", what, resp->error));
    fetch_error_detail(resp, detail, sizeof(detail));

    if (resp->status == 429 || resp->status == 503 || resp->status == 504) {
	if (resp->retry_after > 0) {
	    /* Remembered, so that a timer run does not ask again too soon. */
	    wait = resp->retry_after < FETCH_MAX_RETRY ? resp->retry_after :
		FETCH_MAX_RETRY;
	    c->st.not_before = time(NULL) + wait;
	} else {
	    wait = resp->status == 429 ? FETCH_DEF_RETRY : 0;
	}
	c->out->retry_after = wait;
	if (wait == 0)
	    return (fetch_defer(c, "%s: Graph is busy (%s)", what, detail));
	return (fetch_defer(c, "%s: Microsoft 365 asked to wait %ld seconds "
			    "(%s)", what, wait, detail));
    }
    if (resp->status >= 500)
	return (fetch_defer(c, "%s: Graph is temporarily unavailable (%s)",
			    what, detail));
    if (resp->status == 401 || resp->status == 403) {
	if (c->acct->auth == CONF_AUTH_DELEGATED)
	    snprintf(remedy, sizeof(remedy), "grant the delegated permission "
		     "Mail.ReadWrite%s (admin consent: m365ctl consent-url %s)"
		     "%s, then run m365ctl login %s", source_shared(c->src) ?
		     " and Mail.ReadWrite.Shared" : "", c->acct->name,
		     c->src->mailbox ? " and Full Access to the mailbox" : "",
		     c->acct->name);
	else
	    snprintf(remedy, sizeof(remedy), "grant the application "
		     "permission Mail.ReadWrite with admin consent and check "
		     "any RBAC for Applications scope or application access "
		     "policy for %s", mb);
	snprintf(detail + strlen(detail), sizeof(detail) - strlen(detail),
		 " for mailbox %s", mb);
	return (fetch_offline(c, detail, remedy));
    }
    if (source_mailbox_missing(resp)) {
	snprintf(remedy, sizeof(remedy), "check the mailbox address %s of "
		 "[source %s] and its Exchange Online licence", mb,
		 c->src->name);
	return (fetch_offline(c, detail, remedy));
    }
    return (fetch_defer(c, "%s: unexpected reply from Graph (%s)", what,
			detail));
}

/* fetch_json - parse a reply body; NULL (round deferred) if not JSON */

static cJSON *fetch_json(struct fetch_ctx *c, const char *what,
			         const struct http_resp *resp)
{
    cJSON  *root = NULL;

    if (resp->body.len > 0)
	root = cJSON_ParseWithLength(resp->body.data, resp->body.len);
    if (cJSON_IsObject(root))
	return (root);
    cJSON_Delete(root);
    fetch_defer(c, "%s: Graph sent a reply that is not a JSON object", what);
    return (NULL);
}

/*
 * fetch_folder_get - a request of source_resolve(): GET url with the
 * source's token (fetch_graph(): STEP_OK, STEP_STOP or -2)
 */
static int fetch_folder_get(void *ctx, const char *url, struct http_resp *resp)
{
    return (fetch_graph((struct fetch_ctx *) ctx, "GET", url, NULL, NULL, resp));
}

/* fetch_folder_ambiguous - several folders have the display name */

static void fetch_folder_ambiguous(void *ctx, const char *name)
{
    struct fetch_ctx *c = ctx;

    msg_warn("%s: more than one folder is named \"%s\"; using the first",
	     c->src->name, name);
}

/*
 * fetch_resolve - folder path "A/B/C" (or a well-known name) to an id
 * (source_resolve()).  *id_r is malloc()ed; STEP_OK, or STEP_STOP with
 * the round's reason set.
 */
static int fetch_resolve(struct fetch_ctx *c, const char *path, char **id_r)
{
    struct source_walk walk = {fetch_folder_get, fetch_folder_ambiguous, c};
    struct source_folder f;
    const char *mb = c->mailbox ? c->mailbox : "(signed-in user)";
    char    why[400];
    int     rc = STEP_STOP;

    *id_r = NULL;
    switch (source_resolve(c->conf, c->mailbox, path, &walk, &f)) {
    case SOURCE_FOLDER_OK:
	*id_r = f.id;
	f.id = NULL;
	rc = STEP_OK;
	break;
    case SOURCE_FOLDER_MISSING:
	snprintf(why, sizeof(why), "folder \"%s\" does not exist in mailbox "
		 "%s", f.elem, mb);
	rc = fetch_offline(c, why, "fix \"folder\" in the [source] section");
	break;
    case SOURCE_FOLDER_NONE:
	snprintf(why, sizeof(why), "no folder named \"%s\" in mailbox %s",
		 f.elem, mb);
	rc = fetch_offline(c, why, "create the folder or fix the folder name "
			   "in the [source] section (\"A/B\" names a child "
			   "folder)");
	break;
    case SOURCE_FOLDER_EMPTY:
	rc = fetch_offline(c, "empty folder name", "fix \"folder\" in the "
			   "[source] section");
	break;
    case SOURCE_FOLDER_BAD_REPLY:
	rc = fetch_defer(c, "folder lookup: Graph sent a reply that is not a "
			 "JSON object");
	break;
    case SOURCE_FOLDER_GRAPH:
    case SOURCE_FOLDER_FAILED:
	rc = fetch_graph_fail(c, "folder lookup", f.status ==
			      SOURCE_FOLDER_FAILED ? f.get_rc : STEP_OK,
			      &f.resp);
	break;
    }
    source_resolve_free(&f);
    return (rc);
}

/* fetch_source_folder - the source folder id, resolved once */

static int fetch_source_folder(struct fetch_ctx *c)
{
    const char *want = source_folder(c->src);
    char   *id;
    int     rc;

    if (c->st.folder_id && c->st.folder && strcmp(c->st.folder, want) == 0)
	return (STEP_OK);
    if ((rc = fetch_resolve(c, want, &id)) != STEP_OK)
	return (rc);
    if (c->st.folder_id == NULL || strcmp(c->st.folder_id, id) != 0) {
	/* Another folder: its delta starts from scratch. */
	free(c->st.delta_link);
	c->st.delta_link = NULL;
    }
    free(c->st.folder_id);
    c->st.folder_id = id;
    free(c->st.folder);
    c->st.folder = xstrdup(want);
    msg_info("%s: folder \"%s\" of mailbox %s resolved", c->src->name, want,
	     c->mailbox ? c->mailbox : "(signed-in user)");
    return (fetch_save(c));
}

/* fetch_target - destinationId for a move: well-known name or cached id */

static int fetch_target(struct fetch_ctx *c, const char *name, char **dest_r)
{
    const char *cached;
    char   *id;
    int     rc;

    if (graph_folder_well_known(name)) {
	*dest_r = xstrdup(name);
	return (STEP_OK);
    }
    if ((cached = fetchstate_folder_get(&c->st, name)) != NULL) {
	*dest_r = xstrdup(cached);
	return (STEP_OK);
    }
    if ((rc = fetch_resolve(c, name, &id)) != STEP_OK)
	return (rc);
    fetchstate_folder_set(&c->st, name, id);
    *dest_r = id;
    return (STEP_OK);
}

/* fetch_message_url - /users/{mb}/messages/{id}{suffix}; free(); NULL */

static char *fetch_message_url(struct fetch_ctx *c, const char *id,
			               const char *suffix)
{
    return (graph_item_url(c->conf, c->mailbox, "/messages/", id, suffix));
}

/*
 * fetch_message_gone - after a 404: is the message itself gone?  1 yes,
 * 0 it is still there, STEP_STOP when Graph could not say.
 */
static int fetch_message_gone(struct fetch_ctx *c, const char *id)
{
    struct http_resp resp;
    char   *url = fetch_message_url(c, id, "?$select=id");
    int     rc;

    http_resp_init(&resp);
    rc = fetch_graph(c, "GET", url, NULL, NULL, &resp);
    free(url);
    if (rc == STEP_OK && resp.status == 404) {
	http_resp_free(&resp);
	return (1);
    }
    if (rc == STEP_OK && resp.status >= 200 && resp.status < 300) {
	http_resp_free(&resp);
	return (0);
    }
    (void) fetch_graph_fail(c, "move", rc, &resp);
    http_resp_free(&resp);
    return (STEP_STOP);
}

/*
 * fetch_move - move a message to a folder.  Graph answers 404
 * ErrorItemNotFound both when the message is gone (a move that happened
 * before a crash: moving gives a new id) and when the destination folder
 * is (a cached id of a folder deleted since): a GET of the message tells
 * which; a stale folder is resolved again and the move retried once.
 */
static int fetch_move(struct fetch_ctx *c, const char *id, const char *folder)
{
    struct http_resp resp;
    cJSON  *body;
    char   *dest, *json, *url;
    int     rc, attempt, gone;

    for (attempt = 0;; attempt++) {
	if ((rc = fetch_target(c, folder, &dest)) != STEP_OK)
	    return (rc);
	body = cJSON_CreateObject();
	cJSON_AddStringToObject(body, "destinationId", dest);
	json = cJSON_PrintUnformatted(body);
	cJSON_Delete(body);
	free(dest);
	url = fetch_message_url(c, id, "/move");
	http_resp_init(&resp);
	rc = fetch_graph(c, "POST", url, json, NULL, &resp);
	free(url);
	free(json);
	if (rc == STEP_OK && resp.status >= 200 && resp.status < 300) {
	    http_resp_free(&resp);
	    return (STEP_OK);
	}
	if (rc != STEP_OK || resp.status != 404 || source_mailbox_missing(&resp))
	    break;
	if (graph_folder_well_known(folder)) {
	    http_resp_free(&resp);
	    return (STEP_OK);			/* the message is gone */
	}
	if ((gone = fetch_message_gone(c, id)) != 0) {
	    http_resp_free(&resp);
	    return (gone == 1 ? STEP_OK : STEP_STOP);
	}
	/* The message is there: the cached target folder is not. */
	msg_warn("%s: id=%s: move target folder \"%s\" is gone (404); "
		 "resolving it again", c->src->name, id, folder);
	fetchstate_folder_set(&c->st, folder, NULL);
	if (attempt > 0)
	    break;
	http_resp_free(&resp);
    }
    rc = fetch_graph_fail(c, "move", rc, &resp);
    http_resp_free(&resp);
    return (rc);
}

/* fetch_patch - PATCH a message; 404 = gone, fine; *status_r the status */

static int fetch_patch(struct fetch_ctx *c, const char *id, const char *json,
		               long *status_r)
{
    struct http_resp resp;
    char   *url = fetch_message_url(c, id, NULL);
    int     rc;

    http_resp_init(&resp);
    rc = fetch_graph(c, "PATCH", url, json, NULL, &resp);
    free(url);
    *status_r = rc == STEP_OK ? resp.status : 0;
    if (rc == STEP_OK && ((resp.status >= 200 && resp.status < 300)
			  || resp.status == 404)) {
	http_resp_free(&resp);
	return (STEP_OK);
    }
    if (rc == STEP_OK && resp.status == 400) {
	http_resp_free(&resp);
	return (STEP_NEXT);			/* caller may simplify */
    }
    rc = fetch_graph_fail(c, "mark read", rc, &resp);
    http_resp_free(&resp);
    return (rc);
}

/* fetch_after - the after-action for a message the MTA accepted */

static int fetch_after(struct fetch_ctx *c, const char *id)
{
    struct http_resp resp;
    char   *url;
    long    st;
    int     rc;

    switch (c->src->after) {
    case CONF_AFTER_MOVE:
	return (fetch_move(c, id, c->src->after_folder ? c->src->after_folder :
			   "archive"));
    case CONF_AFTER_DELETE:
	url = fetch_message_url(c, id, NULL);
	http_resp_init(&resp);
	rc = fetch_graph(c, "DELETE", url, NULL, NULL, &resp);
	free(url);
	if (rc == STEP_OK && ((resp.status >= 200 && resp.status < 300)
			      || resp.status == 404)) {
	    http_resp_free(&resp);
	    return (STEP_OK);
	}
	rc = fetch_graph_fail(c, "delete", rc, &resp);
	http_resp_free(&resp);
	return (rc);
    case CONF_AFTER_READ:
    default:
	rc = fetch_patch(c, id, "{\"isRead\":true}", &st);
	return (rc == STEP_NEXT ? fetch_defer(c, "mark read: Graph answered "
					      "400") : rc);
    }
}

/* fetch_reject_action - a refused or looping message: park it visibly */

static int fetch_reject_action(struct fetch_ctx *c, const char *id)
{
    long    st;
    int     rc;

    if (c->src->reject_folder && *c->src->reject_folder)
	return (fetch_move(c, id, c->src->reject_folder));
    rc = fetch_patch(c, id, "{\"isRead\":true,\"flag\":{\"flagStatus\":"
		     "\"flagged\"}}", &st);
    if (rc == STEP_NEXT)			/* no flag support: read only */
	rc = fetch_patch(c, id, "{\"isRead\":true}", &st);
    return (rc == STEP_NEXT ? fetch_defer(c, "mark read: Graph answered "
					  "400") : rc);
}

/*
 * fetch_header_start - the offset where the message is injected from.
 * A first header line that starts with white space continues nothing
 * (RFC 5322 has no such line).  Placed after our trace fields it would
 * continue them, so that "  From: a@example.org" vanished into
 * X-M365Relay-Source and the MTA then made up a From of its own; on
 * its own Postfix even ends the header there.  So: lines of white
 * space only before the first field are skipped, and a first line
 * "  Name: value" starts at "Name" (it is that field, as Exchange
 * shows it).  Other indented text is kept as it is.
 */
static off_t fetch_header_start(int fd)
{
    char    buf[8192];
    ssize_t got;
    size_t  n, i = 0, line;

    while ((got = pread(fd, buf, sizeof(buf), 0)) < 0 && errno == EINTR)
	 /* void */ ;
    if (got <= 0)
	return (0);
    n = (size_t) got;
    for (;;) {
	line = i;
	while (i < n && (buf[i] == ' ' || buf[i] == '\t'))
	    i++;
	if (i == line || i >= n)
	    return ((off_t) line);		/* not indented (the usual) */
	if (buf[i] == '\n' || (buf[i] == '\r' && i + 1 < n
				 && buf[i + 1] == '\n')) {
	    i += buf[i] == '\r' ? 2 : 1;	/* white space only: skip */
	    continue;
	}
	return ((off_t) (msg_hdr_name(buf + i, n - i, NULL) > 0 ? i : line));
    }
}

/* fetch_read_header - the header section from start (1 MB at most) */

static void fetch_read_header(int fd, off_t start, struct strbuf *hdr)
{
    char    buf[16384];
    ssize_t n;
    char   *end, *crlf;

    strbuf_init(hdr, STRBUF_MAX_HEADERS);
    if (lseek(fd, start, SEEK_SET) < 0)
	return;
    /* The first 1 MB of a longer header is scanned: read no more. */
    while (strbuf_room(hdr) > 0) {
	n = read(fd, buf, sizeof(buf) < strbuf_room(hdr) ? sizeof(buf) :
		 strbuf_room(hdr));
	if (n < 0 && errno == EINTR)
	    continue;
	if (n <= 0)
	    break;
	(void) strbuf_append(hdr, buf, (size_t) n);	/* fits */
	if (memchr(buf, 0, (size_t) n) != NULL)
	    break;
	if (strstr(hdr->data, "\n\n") || strstr(hdr->data, "\n\r\n"))
	    break;
    }
    if (hdr->data == NULL)
	return;
    /* The first blank line of either form ends the header. */
    if (hdr->data[0] == '\n' || strncmp(hdr->data, "\r\n", 2) == 0) {
	strbuf_truncate(hdr, 0);		/* no header at all */
	return;
    }
    end = strstr(hdr->data, "\n\n");
    crlf = strstr(hdr->data, "\n\r\n");
    if (crlf != NULL && (end == NULL || crlf < end))
	end = crlf;
    if (end != NULL)
	strbuf_truncate(hdr, (size_t) (end - hdr->data) + 1);
}

/*
 * fetch_header_next - the unfolded value of the next NAME field at or
 * after *pos in a header section (msg_hdr_find(): the fields as msg.c
 * and rcpt.c read them); NULL when there is none.  free() it.
 */
static char *fetch_header_next(const struct strbuf *hdr, const char *name,
			               size_t *pos)
{
    return (msg_hdr_find(hdr->data, hdr->len, name, pos));
}

/*
 * fetch_trace_matches - does "NAME; mailbox=MB; id=X" name us?  A field
 * with mailbox= is ours when it names our mailbox (whatever the source
 * name: another source of the same mailbox, or this one); both sides
 * "me" (the signed-in user, unknown here) fall back on the name.  An
 * old field without mailbox= is ours when it names this source.
 */
static int fetch_trace_matches(const char *value, const char *name,
			               const char *mailbox)
{
    const char *p = value;
    const char *q;
    char    mb[320];
    size_t  n, nlen;
    int     same_name;

    while (*p == ' ' || *p == '\t')
	p++;
    nlen = strcspn(p, "; \t\r");
    same_name = nlen == strlen(name) && strncmp(p, name, nlen) == 0;
    for (q = p + nlen; (q = strstr(q, "mailbox=")) != NULL; q += 8)
	if (q > value && (q[-1] == ';' || q[-1] == ' ' || q[-1] == '\t'))
	    break;
    if (q == NULL)
	return (same_name);
    q += 8;
    n = strcspn(q, "; \t\r");
    snprintf(mb, sizeof(mb), "%.*s", (int) n, q);
    if (mailbox == NULL)
	return (strcmp(mb, "me") == 0 && same_name);
    if (strcmp(mb, "me") == 0)
	return (0);
    return (addr_same(mb, mailbox));
}

/* fetch_envelope_sender - from the config, Return-Path, or From */

static char *fetch_envelope_sender(struct fetch_ctx *c,
				           const struct strbuf *hdr)
{
    struct addr_list al;
    size_t  pos = 0;
    char   *rp, *s = NULL;

    if (c->src->envelope_sender && *c->src->envelope_sender)
	return (xstrdup(strcmp(c->src->envelope_sender, "<>") == 0 ? "" :
			c->src->envelope_sender));
    if ((rp = fetch_header_next(hdr, "Return-Path", &pos)) != NULL) {
	const char *p = rp + strspn(rp, " \t");

	if (strncmp(p, "<>", 2) == 0) {
	    free(rp);
	    return (xstrdup(""));
	}
	memset(&al, 0, sizeof(al));
	if (addr_parse(p, strlen(p), &al) == 0 && al.n > 0 && !al.items[0].bad)
	    s = addr_internal(al.items[0].addr);
	addr_list_free(&al);
	free(rp);
	if (s)
	    return (s);
    }
    if ((s = rcpt_header_from(hdr->data ? hdr->data : "", hdr->len)) != NULL)
	return (s);
    return (xstrdup(""));
}

/* fetch_clean - a header-safe copy of foreign text (no CR/LF/;) */

static void fetch_clean(char *dst, size_t len, const char *src)
{
    size_t  i;

    log_printable(dst, len, src ? src : "", src ? strlen(src) : 0);
    for (i = 0; dst[i]; i++)
	if (dst[i] == ';' || dst[i] == '(' || dst[i] == ')')
	    dst[i] = '_';
}

/* fetch_prefix - the trace header fields for one message; NULL: too long */

static char *fetch_prefix(struct fetch_ctx *c, const char *id)
{
    struct strbuf sb;
    char    date[64], mb[320], folder[300], gid[600];
    time_t  now = time(NULL);
    struct tm tm;

    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
    fetch_clean(mb, sizeof(mb), c->mailbox ? c->mailbox : "me");
    fetch_clean(folder, sizeof(folder), c->src->folder ? c->src->folder :
		"inbox");
    fetch_clean(gid, sizeof(gid), id);
    strbuf_init(&sb, STRBUF_MAX_SMALL);
    strbuf_printf(&sb, "Received: from %s (Microsoft Graph mailbox %s folder "
		  "%s)\r\n\tby %s (m365-fetch) with HTTPS; %s\r\n"
		  FETCH_TRACE ": %s; mailbox=%s; id=%s\r\n",
		  c->graph_host, mb, folder, c->host, date, c->src->name, mb,
		  gid);
    return (strbuf_take(&sb));
}

/*
 * fetch_data_end - state "data_sent" just before the end of the data,
 * durable: on disk before the MTA may have the message (fetchstate.c)
 */
static int fetch_data_end(void *ctx)
{
    struct fetch_ctx *c = ctx;
    char    err[600];

    fetchstate_pending_set(&c->st, c->cur_id, c->cur_imid,
			   FETCHSTATE_DATA_SENT, NULL);
    if (fetchstate_write(&c->sf, &c->st, FETCHSTATE_DURABLE, err,
			 sizeof(err)) < 0) {
	msg_error("%s: cannot record the delivery state, abandoning the "
		  "transaction: %s", c->src->name, err);
	return (-1);
    }
    return (0);
}

/* fetch_log - one house-format line per message */

static void fetch_log(struct fetch_ctx *c, const char *id, const char *imid,
		              long long size, const char *relay, const char *dsn,
		              const char *status, const char *reply)
{
    struct strbuf to;
    char    mid[300], rp[420];
    char  **r;

    strbuf_init(&to, STRBUF_MAX_SMALL);
    for (r = c->log_rcpts ? c->log_rcpts : c->src->recipients; r && *r; r++) {
	char    one[300];

	log_printable(one, sizeof(one), *r, strlen(*r));
	strbuf_printf(&to, "%s<%s>", to.len ? "," : "", one);
    }
    log_printable(mid, sizeof(mid), imid ? imid : "", imid ? strlen(imid) : 0);
    log_printable(rp, sizeof(rp), reply ? reply : "", reply ? strlen(reply) : 0);
    msg_info("%s: id=%s, message-id=%s%s%s, size=%lld, to=%s, relay=%s, "
	     "dsn=%s, status=%s (%s)", c->src->name, id,
	     (mid[0] && mid[0] != '<') ? "<" : "", mid,
	     (mid[0] && mid[0] != '<') ? ">" : "", size,
	     strbuf_log_str(&to), relay, dsn, status, rp);
    strbuf_free(&to);
}

/* fetch_rcpt_count - configured recipients */

static size_t fetch_rcpt_count(const struct conf_source *src)
{
    size_t  n = 0;

    while (src->recipients && src->recipients[n])
	n++;
    return (n);
}

/*
 * fetch_finish - message done: drop from pending, remember.  Not
 * written now: the next write carries it (fetchstate.c, "done").
 */
static int fetch_finish(struct fetch_ctx *c, const char *id)
{
    fetchstate_finish(&c->st, id);
    return (STEP_OK);
}

/*
 * fetch_value_skip - a $value error that concerns this message only
 * (400, 500 for a corrupt item, ...): not throttling or a busy service
 * (429, 503, 504), not a refused token or permission (401, 403), not a
 * mailbox that is unusable; those stop the round for every message.
 */
static int fetch_value_skip(const struct http_resp *resp)
{
    if (resp->status < 400)
	return (0);
    if (resp->status == 401 || resp->status == 403 || resp->status == 429
	|| resp->status == 503 || resp->status == 504)
	return (0);
    return (!source_mailbox_missing(resp));
}

/*
 * fetch_value_failed - Graph cannot serve this one message: log it and
 * go on with the others; it stays unread (and pending, if it was) and
 * is tried again next round.  The deltaLink does not move past it.
 */
static int fetch_value_failed(struct fetch_ctx *c, const char *id,
			              const char *imid, const struct http_resp *resp)
{
    char    detail[400];

    fetch_error_detail(resp, detail, sizeof(detail));
    c->out->deferred++;
    fetch_log(c, id, imid, 0, "none", "4.0.0", "deferred", detail);
    msg_warn("%s: id=%s: Graph cannot send the content of this message "
	     "(%s); it stays unread and is tried again next round, the "
	     "other messages go on", c->src->name, id, detail);
    if (c->out->status == FETCH_DONE)
	c->out->status = FETCH_DEFERRED;
    snprintf(c->out->why, sizeof(c->out->why), "download of message id=%s "
	     "failed (%s); tried again next round", id, detail);
    return (STEP_NEXT);
}

/*
 * fetch_park - a message that is never injected (refused by the MTA, a
 * loop, too large): park it visibly (reject_folder, else read and
 * flagged) and log why; the state says "rejected" first, so a restart
 * only parks it.
 */
static int fetch_park(struct fetch_ctx *c, const char *id, const char *imid,
		              long long size, const char *relay, const char *dsn,
		              const char *status, const char *why)
{
    int     rc;

    fetchstate_pending_set(&c->st, id, imid, FETCHSTATE_REJECTED, why);
    c->st.rejected++;
    c->out->rejected++;
    metrics_add(METRICS_SOURCE, c->src->name, "inbound_parked_total", 1);
    if ((rc = fetch_save(c)) != STEP_OK)
	return (rc);
    fetch_log(c, id, imid, size, relay, dsn, status, why);
    if ((rc = fetch_reject_action(c, id)) == STEP_OK)
	rc = fetch_finish(c, id);
    return (rc);
}

/* fetch_max_size - the source's max_message_size (bytes) */

static long long fetch_max_size(const struct conf_source *src)
{
    return (src->max_message_size > 0 ? src->max_message_size :
	    FETCH_DEF_MAX_SIZE);
}

/*
 * fetch_too_big - $value passed max_message_size: the download stopped
 * there (an endless stream cannot fill the disk) and the message is
 * parked with the cause in the log.  Graph gives no size before the
 * download (no Content-Length, HEAD is 405: graph-facts.md section 5).
 */
static int fetch_too_big(struct fetch_ctx *c, const char *id,
			         const char *imid)
{
    char    why[400];

    snprintf(why, sizeof(why), "the message is larger than max_message_size "
	     "= %lld bytes of [source %s]; not injected (the download "
	     "stopped there)", fetch_max_size(c->src), c->src->name);
    msg_warn("%s: id=%s: %s; %s; to fetch it, raise max_message_size and "
	     "move the message back into the folder", c->src->name, id, why,
	     c->src->reject_folder ? "moving it to the reject folder" :
	     "marking it read and flagged in the mailbox");
    return (fetch_park(c, id, imid, fetch_max_size(c->src) + 1, "none",
		       "5.3.4", "skipped", why));
}

/* fetch_accepted - the MTA has the message: record, log, after-action */

static int fetch_accepted(struct fetch_ctx *c, const char *id,
			          const char *imid, long long size,
			          const struct inject_result *ir)
{
    int     rc;

    fetchstate_pending_set(&c->st, id, imid, FETCHSTATE_INJECTED, ir->reply);
    c->st.injected++;
    c->out->injected++;
    metrics_add(METRICS_SOURCE, c->src->name, "inbound_injected_total", 1);
    if ((rc = fetch_save(c)) != STEP_OK)
	return (rc);
    fetch_log(c, id, imid, size, ir->relay, ir->dsn, "sent", ir->reply);
    if ((rc = fetch_after(c, id)) == STEP_OK)
	rc = fetch_finish(c, id);
    return (rc);
}

/* fetch_outcome_path - where the sendmail helper records its outcome */

static const char *fetch_outcome_path(struct fetch_ctx *c, char *buf,
				              size_t len)
{
    if (c->src->deliver_to == NULL || strcmp(c->src->deliver_to, "sendmail")
	|| fetchstate_path(c->conf, c->src->name, ".sendmail", buf, len) < 0)
	return (NULL);
    return (buf);
}

static int fetch_message(struct fetch_ctx *, const char *, const char *, int);

/*
 * fetch_bounce - mode = bounces (bounce.h): what the report needs.
 * STEP_INJECT: inject bp (a DSN, or the report to the postmaster); any
 * other value ends this message: a report without a DSN (null sender:
 * the after-action; unmatched = keep, or not a report: left as it is).
 */
static int fetch_bounce(struct fetch_ctx *c, const char *id, const char *imid,
			        int fd, off_t start, long long size,
			        struct bounce_plan *bp)
{
    struct bounce_ctx bc = {c->conf, c->src, c->mailbox ? c->mailbox :
    c->acct->mailbox, c->host, c->tmpdir};
    char    err[600];
    int     rc;

    if (bounce_plan(&bc, id, fd, start, bp, err, sizeof(err)) < 0)
	return (fetch_defer(c, "id=%s: %s", id, err));
    c->log_rcpts = bp->rcpt;
    if (bp->action == BOUNCE_DSN || bp->action == BOUNCE_FORWARD)
	return (STEP_INJECT);
    bounce_count(&c->st, bp);
    if (bp->action != BOUNCE_NO_DSN) {
	/* Left in the mailbox as it is; not read again. */
	fetchstate_finish(&c->st, id);
	if ((rc = fetch_save(c)) == STEP_OK)
	    fetch_log(c, id, imid, size, "none", bp->status[0] ? bp->status :
		      "2.0.0", "skipped", bp->why);
	return (rc);
    }
    /* Handled: only the after-action is left, as after an injection. */
    fetchstate_pending_set(&c->st, id, imid, FETCHSTATE_INJECTED, bp->why);
    if ((rc = fetch_save(c)) != STEP_OK)
	return (rc);
    fetch_log(c, id, imid, size, "none", bp->status, "skipped", bp->why);
    if ((rc = fetch_after(c, id)) == STEP_OK)
	rc = fetch_finish(c, id);
    return (rc);
}

/*
 * fetch_redo_dup - a message an earlier run left in state data_sent.
 * For sendmail the helper of that run may have recorded how sendmail
 * ended (inject.h): exit 0 means the MTA has it - only the after-action
 * is left; another exit status means it has nothing - inject afresh.
 * Without a record (SMTP, or the helper died too) the doubt remains: it
 * is injected again with the duplicate warning.
 */
static int fetch_redo_dup(struct fetch_ctx *c, const char *id,
			          const char *imid)
{
    struct inject_result ir;
    char    path[PATH_MAX];
    const char *op = fetch_outcome_path(c, path, sizeof(path));

    if (op == NULL || !inject_sendmail_outcome(c->inj, op, id, &ir))
	return (fetch_message(c, id, imid, 1));
    if (ir.status == INJECT_OK) {
	msg_info("%s: id=%s: the sendmail started by an earlier run queued "
		 "the message before that run stopped; not injecting it "
		 "again", c->src->name, id);
	return (fetch_accepted(c, id, imid, 0, &ir));
    }
    if (ir.data_sent)
	return (fetch_message(c, id, imid, 1));
    msg_info("%s: id=%s: the sendmail started by an earlier run did not "
	     "take the message (%s); injecting it again", c->src->name, id,
	     ir.reply);
    return (fetch_message(c, id, imid, 0));
}

/*
 * fetch_message - download, check, inject, after-action for one message.
 * dup = 1: a restart found it in state data_sent (maybe a duplicate).
 */
static int fetch_message(struct fetch_ctx *c, const char *id,
			         const char *imid_in, int dup)
{
    struct fetch_download dl;
    struct http_resp resp;
    struct inject_result ir;
    struct inject_msg im;
    struct strbuf hdr;
    char   *url, *prefix = NULL, *sender = NULL, *imid = NULL, *val;
    char   *idc = xstrdup(id);			/* id may live in the state */
    char    opath[PATH_MAX];
    long long size;
    size_t  pos = 0;
    off_t   start;
    int     fd, rc, loop = 0;
    struct bounce_plan bp = {.fd = -1};	/* mode = bounces */

    if ((fd = inject_tmpfile(c->tmpdir)) < 0) {
	free(idc);
	return (fetch_defer(c, "cannot create a temporary file in %s: %s "
			    "(set TMPDIR to a writable directory)", c->tmpdir,
			    strerror(errno)));
    }
    /*
     * Bounds: max_message_size; less than FETCH_LOW_SPEED bytes/s for
     * [global] timeout seconds (a silent server); and an overall deadline
     * of timeout + max_message_size / FETCH_MIN_RATE.
     */
    memset(&dl, 0, sizeof(dl));
    dl.fd = fd;
    dl.max_bytes = fetch_max_size(c->src);
    dl.low_speed_time = c->conf->timeout > 0 ? c->conf->timeout : 60;
    dl.timeout = dl.low_speed_time + (long) (dl.max_bytes / FETCH_MIN_RATE);
    url = fetch_message_url(c, idc, "/$value");
    http_resp_init(&resp);
    rc = fetch_graph(c, "GET", url, NULL, &dl, &resp);
    free(url);
    if (rc == -2 && resp.too_big && resp.status >= 200 && resp.status < 300) {
	rc = fetch_too_big(c, idc, imid_in);
	goto out;
    }
    if (rc == STEP_OK && resp.status == 404) {
	/* Deleted or moved by someone else meanwhile: nothing to do. */
	msg_info("%s: id=%s: the message no longer exists; skipped",
		 c->src->name, idc);
	fetchstate_pending_drop(&c->st, idc);
	rc = fetch_save(c);
	goto out;
    }
    if (rc == STEP_OK && fetch_value_skip(&resp)) {
	rc = fetch_value_failed(c, idc, imid_in, &resp);
	goto out;
    }
    if (rc != STEP_OK || resp.status < 200 || resp.status >= 300) {
	rc = fetch_graph_fail(c, "download", rc, &resp);
	goto out;
    }
    size = resp.fd_bytes;
    if ((start = fetch_header_start(fd)) > 0)
	msg_info("%s: id=%s: the header starts with %lld bytes of white space "
		 "(malformed); injecting from the first field, so that the "
		 "trace fields added before it cannot swallow it",
		 c->src->name, idc, (long long) start);

    /* Header checks: loop guard, envelope sender, Message-ID. */
    fetch_read_header(fd, start, &hdr);
    while ((val = fetch_header_next(&hdr, FETCH_TRACE, &pos)) != NULL) {
	loop |= fetch_trace_matches(val, c->src->name, c->mailbox);
	free(val);
    }
    pos = 0;
    imid = imid_in && *imid_in ? xstrdup(imid_in) :
	fetch_header_next(&hdr, "Message-ID", &pos);
    if (imid) {
	char   *t = imid + strspn(imid, " \t");

	memmove(imid, t, strlen(t) + 1);
    }
    sender = fetch_envelope_sender(c, &hdr);
    strbuf_free(&hdr);

    if (loop) {
	rc = fetch_park(c, idc, imid, size, "none", "5.4.6", "skipped",
			"mail loop: the message already carries our "
			FETCH_TRACE " header; not injected again");
	goto out;
    }
    if (c->src->mode == CONF_SOURCE_BOUNCES
	&& (rc = fetch_bounce(c, idc, imid, fd, start, size, &bp))
	!= STEP_INJECT)
	goto out;
    if ((prefix = fetch_prefix(c, idc)) == NULL) {
	/* Never inject without the trace fields (the loop guard). */
	rc = fetch_defer(c, "id=%s: the trace header fields would be longer "
			 "than %lu bytes (shorten the [source] name); not "
			 "injected", idc, (unsigned long) STRBUF_MAX_SMALL);
	goto out;
    }

    /*
     * Exactly once: data_sent before the end of the data (the data_end
     * hook), injected or rejected after the reply; nothing before the
     * transaction (fetchstate.c, "injecting").  A message that the MTA
     * may have already (data_sent) keeps that state until this attempt
     * ends: a crash before its end of data must not make the next run
     * inject it once more without the warning.
     */
    if (dup)
	msg_warn("%s: id=%s: an earlier run stopped after the MTA may have "
		 "taken the message (between the end of the data and the "
		 "MTA's reply, or while sendmail ran); injecting again, the "
		 "recipients may get this message twice", c->src->name, idc);
    memset(&im, 0, sizeof(im));
    im.fd = bp.fd >= 0 ? bp.fd : fd;
    im.start = bp.fd >= 0 ? 0 : start;
    im.prefix = prefix;
    im.sender = c->log_rcpts ? "" : sender;	/* a DSN: the null sender */
    im.rcpts = c->log_rcpts ? c->log_rcpts : c->src->recipients;
    im.nrcpts = c->log_rcpts ? 1 : fetch_rcpt_count(c->src);
    im.data_end = fetch_data_end;
    im.data_end_arg = c;
    im.id = idc;
    im.outcome = fetch_outcome_path(c, opath, sizeof(opath));
    c->cur_id = idc;
    c->cur_imid = imid;
    (void) inject_message(c->inj, &im, &ir);
    c->cur_id = c->cur_imid = NULL;
    if (c->log_rcpts && ir.status == INJECT_RCPT)
	ir.status = INJECT_PERM;	/* that sender's fault, not the setup's */
    if (c->log_rcpts && ir.status == INJECT_OK)
	bounce_count(&c->st, &bp);

    switch (ir.status) {
    case INJECT_OK:
	rc = fetch_accepted(c, idc, imid, size, &ir);
	break;
    case INJECT_PERM:
	msg_warn("%s: id=%s: the MTA refused the message permanently; %s",
		 c->src->name, idc, c->src->reject_folder ?
		 "moving it to the reject folder" :
		 "marking it read and flagged in the mailbox");
	rc = fetch_park(c, idc, imid, size, ir.relay, ir.dsn, "bounced",
			ir.reply);
	break;
    case INJECT_RCPT:
    case INJECT_NOEXT:
	/* The MTA's setup, not the message: it waits, the source is offline. */
	fetchstate_pending_drop(&c->st, idc);
	c->out->deferred++;
	if ((rc = fetch_save(c)) != STEP_OK)
	    break;
	fetch_log(c, idc, imid, size, ir.relay, ir.status == INJECT_RCPT ?
		  "4.1.1" : ir.dsn, "deferred", ir.reply);
	{
	    char    why[600], remedy[500];

	    if (ir.status == INJECT_RCPT) {
		snprintf(why, sizeof(why), "the MTA refuses the configured "
			 "recipients (%s)", ir.reply);
		snprintf(remedy, sizeof(remedy), "fix \"recipients\" in "
			 "[source %s] or the MTA's configuration", c->src->name);
	    } else {
		snprintf(why, sizeof(why), "%s", ir.reply);
		snprintf(remedy, sizeof(remedy), "enable 8BITMIME in the MTA "
			 "at %s (Postfix: do not list it in "
			 "smtpd_discard_ehlo_keywords); the message stays "
			 "unread until then", ir.relay);
	    }
	    rc = fetch_offline(c, why, remedy);
	}
	break;
    case INJECT_TEMP:
    default:
	/* Lost after the end of the data: keep data_sent (ambiguous). */
	if (!ir.data_sent)
	    fetchstate_pending_drop(&c->st, idc);
	c->out->deferred++;
	if ((rc = fetch_save(c)) != STEP_OK)
	    break;
	fetch_log(c, idc, imid, size, ir.relay, ir.dsn, "deferred", ir.reply);
	if (ir.code >= 400 && ir.code < 500 && ir.code != 421
	    && !ir.data_sent) {
	    /* The MTA works but wants this one later: go on with others. */
	    if (c->out->status == FETCH_DONE)
		c->out->status = FETCH_DEFERRED;
	    snprintf(c->out->why, sizeof(c->out->why), "the MTA deferred a "
		     "message: %s", ir.reply);
	    rc = STEP_NEXT;
	} else {
	    rc = fetch_defer(c, "cannot hand mail to the MTA (%s): %s",
			     ir.relay, ir.reply);
	}
	break;
    }

out:
    c->log_rcpts = NULL;
    bounce_plan_free(&bp);
    http_resp_free(&resp);
    close(fd);
    free(prefix);
    free(sender);
    free(imid);
    free(idc);
    return (rc);
}

/* fetch_recover - finish what an interrupted round left pending */

static int fetch_recover(struct fetch_ctx *c)
{
    char  **ids, **imids;
    enum fetchstate_action *acts;
    size_t  n = c->st.npending, i;
    int     rc = STEP_OK, r;

    if (n == 0)
	return (STEP_OK);
    ids = xcalloc(n, sizeof(char *));
    imids = xcalloc(n, sizeof(char *));
    acts = xcalloc(n, sizeof(*acts));
    for (i = 0; i < n; i++) {
	ids[i] = xstrdup(c->st.pending[i].id);
	imids[i] = c->st.pending[i].imid ? xstrdup(c->st.pending[i].imid) : NULL;
	acts[i] = fetchstate_recovery(c->st.pending + i);
    }
    for (i = 0; i < n && rc != STEP_STOP; i++) {
	if (*c->stop) {
	    rc = fetch_stopped(c);
	    break;
	}
	switch (acts[i]) {
	case FETCHSTATE_REDO_AFTER:
	    msg_info("%s: id=%s: finishing the after-action of an earlier "
		     "run (the MTA has the message)", c->src->name, ids[i]);
	    if ((r = fetch_after(c, ids[i])) == STEP_OK)
		r = fetch_finish(c, ids[i]);
	    break;
	case FETCHSTATE_REDO_REJECT:
	    if ((r = fetch_reject_action(c, ids[i])) == STEP_OK)
		r = fetch_finish(c, ids[i]);
	    break;
	case FETCHSTATE_REDO_INJECT_DUP:
	    r = fetch_redo_dup(c, ids[i], imids[i]);
	    break;
	case FETCHSTATE_REDO_INJECT:
	default:
	    msg_info("%s: id=%s: an earlier run stopped before the end of the "
		     "data; injecting again", c->src->name, ids[i]);
	    r = fetch_message(c, ids[i], imids[i], 0);
	    break;
	}
	if (r == STEP_STOP)
	    rc = STEP_STOP;
	else if (r == STEP_NEXT)
	    rc = STEP_NEXT;
    }
    for (i = 0; i < n; i++) {
	free(ids[i]);
	free(imids[i]);
    }
    free(ids);
    free(imids);
    free(acts);
    return (rc);
}

/* fetch_is_resync - 410 Gone or a sync-state error code */

static int fetch_is_resync(const struct http_resp *resp)
{
    struct graph_error ge;

    if (resp->status == 410)
	return (1);
    if (resp->status < 400 || resp->status >= 500)
	return (0);
    graph_parse_error(resp, &ge);
    return (strcasecmp(ge.code, "SyncStateNotFound") == 0
	    || strcasecmp(ge.code, "resyncRequired") == 0
	    || strcasecmp(ge.code, "SyncStateInvalid") == 0);
}

/* fetch_page - one delta page: process its messages, return next link */

static int fetch_page(struct fetch_ctx *c, cJSON *root, char **next_r,
		              char **delta_r, int *deferred)
{
    cJSON  *val, *item, *v;
    const char *id, *imid;
    int     r;

    val = cJSON_GetObjectItemCaseSensitive(root, "value");
    cJSON_ArrayForEach(item, (cJSON_IsArray(val) ? val : NULL)) {
	if (*c->stop)
	    return (fetch_stopped(c));
	if (cJSON_GetObjectItemCaseSensitive(item, "@removed") != NULL)
	    continue;
	v = cJSON_GetObjectItemCaseSensitive(item, "id");
	if (!cJSON_IsString(v) || v->valuestring == NULL || *v->valuestring == 0)
	    continue;
	id = v->valuestring;
	v = cJSON_GetObjectItemCaseSensitive(item, "isRead");
	if (cJSON_IsTrue(v))
	    continue;
	if (fetchstate_done_has(&c->st, id)) {
	    msg_debug("%s: id=%s: already processed", c->src->name, id);
	    continue;
	}
	if (fetchstate_pending_find(&c->st, id) != NULL) {
	    *deferred = 1;			/* recovery left it for later */
	    continue;
	}
	v = cJSON_GetObjectItemCaseSensitive(item, "internetMessageId");
	imid = cJSON_IsString(v) ? v->valuestring : NULL;
	if ((r = fetch_message(c, id, imid, 0)) == STEP_STOP)
	    return (STEP_STOP);
	if (r == STEP_NEXT)
	    *deferred = 1;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "@odata.nextLink");
    if (cJSON_IsString(v) && v->valuestring && *v->valuestring)
	*next_r = xstrdup(v->valuestring);
    v = cJSON_GetObjectItemCaseSensitive(root, "@odata.deltaLink");
    if (cJSON_IsString(v) && v->valuestring && *v->valuestring)
	*delta_r = xstrdup(v->valuestring);
    return (STEP_OK);
}

/* fetch_delta - follow the delta from the saved link (or from scratch) */

static int fetch_delta(struct fetch_ctx *c, int deferred)
{
    struct http_resp resp;
    cJSON  *root;
    char   *url, *next, *delta;
    int     rc, resynced = 0, from_saved, first;

again:
    first = 1;
    if (c->st.delta_link && !http_url_under(c->conf->graph_url,
					    c->st.delta_link)) {
	char    shown[120];

	/* Written under another graph_url: never send it our token. */
	log_printable(shown, sizeof(shown), c->st.delta_link,
		      strcspn(c->st.delta_link, "?"));
	msg_warn("%s: the saved deltaLink %s is not under graph_url %s "
		 "(graph_url changed?); dropping it and resynchronizing the "
		 "folder (processed messages are not injected again)",
		 c->src->name, shown, c->conf->graph_url);
	free(c->st.delta_link);
	c->st.delta_link = NULL;
	if (fetch_save(c) != STEP_OK)
	    return (STEP_STOP);
    }
    if (c->st.delta_link) {
	url = xstrdup(c->st.delta_link);
	from_saved = 1;
    } else {
	url = graph_item_url(c->conf, c->mailbox, "/mailFolders/",
			     c->st.folder_id, "/messages/delta?$select="
			     FETCH_SELECT);
	from_saved = 0;
    }
    for (;;) {
	http_resp_init(&resp);
	rc = fetch_graph(c, "GET", url, NULL, NULL, &resp);
	if (rc == STEP_OK && fetch_is_resync(&resp) && !resynced
	    && (from_saved || strstr(url, "skiptoken") || strstr(url, "deltatoken"))) {
	    msg_warn("%s: Graph lost the delta state (HTTP %ld); resynchronizing "
		     "the folder (processed messages are not injected again)",
		     c->src->name, resp.status);
	    http_resp_free(&resp);
	    free(url);
	    free(c->st.delta_link);
	    c->st.delta_link = NULL;
	    if (fetch_save(c) != STEP_OK)
		return (STEP_STOP);
	    resynced = 1;
	    goto again;
	}
	if (rc == STEP_OK && resp.status == 404 && !source_mailbox_missing(&resp)
	    && first) {
	    /* The folder is gone or was renamed: resolve it next round. */
	    http_resp_free(&resp);
	    free(url);
	    free(c->st.folder_id);
	    c->st.folder_id = NULL;
	    free(c->st.delta_link);
	    c->st.delta_link = NULL;
	    if (fetch_save(c) != STEP_OK)
		return (STEP_STOP);
	    return (fetch_defer(c, "delta: the folder was not found (404); "
				"resolving \"%s\" again next round",
				c->src->folder ? c->src->folder : "inbox"));
	}
	if (rc != STEP_OK || resp.status < 200 || resp.status >= 300) {
	    rc = fetch_graph_fail(c, "delta", rc, &resp);
	    http_resp_free(&resp);
	    free(url);
	    return (rc);
	}
	root = fetch_json(c, "delta", &resp);
	http_resp_free(&resp);
	free(url);
	if (root == NULL)
	    return (STEP_STOP);
	next = delta = NULL;
	rc = fetch_page(c, root, &next, &delta, &deferred);
	cJSON_Delete(root);
	if (rc == STEP_STOP) {
	    free(next);
	    free(delta);
	    return (STEP_STOP);
	}
	if (next) {
	    free(delta);
	    if (!http_url_under(c->conf->graph_url, next)) {
		free(next);
		return (fetch_defer(c, "delta: Graph sent a nextLink outside "
				    "graph_url %s; refusing to follow it",
				    c->conf->graph_url));
	    }
	    url = next;
	    from_saved = first = 0;
	    continue;
	}
	if (delta == NULL)
	    return (fetch_defer(c, "delta: the last page has neither "
				"@odata.nextLink nor @odata.deltaLink"));
	if (!http_url_under(c->conf->graph_url, delta)) {
	    free(delta);
	    return (fetch_defer(c, "delta: Graph sent a deltaLink outside "
				"graph_url %s", c->conf->graph_url));
	}
	break;
    }

    /* Every message of the round is with the MTA: move on. */
    if (deferred || c->st.npending > 0) {
	free(delta);
	if (c->out->status == FETCH_DONE)
	    c->out->status = FETCH_DEFERRED;
	if (c->out->why[0] == 0)
	    snprintf(c->out->why, sizeof(c->out->why), "some messages wait "
		     "for the next round");
	return (STEP_OK);
    }
    /* Written with the rest of the round, at its end (fetch_round()). */
    free(c->st.delta_link);
    c->st.delta_link = delta;
    return (STEP_OK);
}

/* fetch_round - one round for one source (see fetch.h) */

int     fetch_round(const struct conf *conf, struct http *http,
		            const struct conf_source *src,
		            volatile sig_atomic_t *stop, struct fetch_result *out)
{
    struct fetch_ctx c;
    char    err[600];
    const char *cp;
    size_t  n;
    int     lockfd, rc;
    time_t  now = time(NULL);

    memset(out, 0, sizeof(*out));
    memset(&c, 0, sizeof(c));
    c.conf = conf;
    c.http = http;
    c.src = src;
    c.stop = stop;
    c.out = out;
    c.acct = src->acct ? src->acct : conf_account(conf, src->account);
    c.mailbox = source_mailbox(src);
    c.tmpdir = file_tmpdir(NULL);
    if (gethostname(c.host, sizeof(c.host)) < 0 || c.host[0] == 0)
	snprintf(c.host, sizeof(c.host), "localhost");
    c.host[sizeof(c.host) - 1] = 0;
    fetch_clean(c.host, sizeof(c.host), c.host);
    cp = strstr(conf->graph_url, "://");
    cp = cp ? cp + 3 : conf->graph_url;
    n = strcspn(cp, "/:");
    snprintf(c.graph_host, sizeof(c.graph_host), "%.*s", (int) n, cp);

    if (c.acct == NULL) {
	out->status = FETCH_OFFLINE;
	snprintf(out->why, sizeof(out->why), "[source %s]: account \"%s\" is "
		 "not defined", src->name, src->account ? src->account : "");
	return (-1);
    }
    lockfd = fetchstate_lock(conf, src->name, err, sizeof(err));
    if (lockfd == -2) {
	out->status = FETCH_BUSY;
	snprintf(out->why, sizeof(out->why), "%s", err);
	return (-1);
    }
    if (lockfd < 0) {
	out->status = FETCH_DEFERRED;
	snprintf(out->why, sizeof(out->why), "%s", err);
	return (-1);
    }
    if (fetchstate_load(conf, src->name, &c.st, err, sizeof(err)) < 0
	|| fetchstate_open(conf, src->name, &c.sf, err, sizeof(err)) < 0) {
	fetchstate_clear(&c.st);
	fetchstate_unlock(lockfd);
	out->status = FETCH_DEFERRED;
	snprintf(out->why, sizeof(out->why), "%s", err);
	return (-1);
    }
    if (c.st.not_before > now) {
	out->status = FETCH_DEFERRED;
	out->retry_after = (long) (c.st.not_before - now);
	snprintf(out->why, sizeof(out->why), "Microsoft 365 asked to wait "
		 "(Retry-After) %ld more seconds", out->retry_after);
	goto done;
    }
    c.st.not_before = 0;
    c.st.last_round = now;

    /* Token, folder: when these work the source is online again. */
    if (fetch_token(&c, 0) != STEP_OK || fetch_source_folder(&c) != STEP_OK)
	goto done;
    if ((c.inj = inject_create(conf, src->deliver_to, err, sizeof(err))) == NULL) {
	(void) fetch_offline(&c, err, "fix deliver_to in the [source] section");
	goto done;
    }
    rc = fetch_recover(&c);
    if (rc == STEP_STOP)
	goto done;
    rc = fetch_delta(&c, rc == STEP_NEXT);
    if (rc == STEP_OK && out->status == FETCH_DONE)
	c.st.last_success = time(NULL);

done:
    if (c.st.offline && c.graph_ok && out->status != FETCH_OFFLINE
	&& out->status != FETCH_BUSY) {
	/* Graph worked and nothing put the source offline again. */
	fetchstate_set_online(&c.st);
	msg_info("%s: source back online", src->name);
    }
    if (out->status == FETCH_DEFERRED && !c.st.offline && !c.stop_clean) {
	free(c.st.last_error);
	c.st.last_error = xstrdup(out->why);
    }
    /* The round's one durable write (fetchstate.c, "the round"). */
    if (fetchstate_write(&c.sf, &c.st, FETCHSTATE_DURABLE, err,
			 sizeof(err)) < 0) {
	msg_error("%s: cannot record the delivery state: %s", src->name, err);
	if (out->status == FETCH_DONE) {
	    out->status = FETCH_DEFERRED;
	    snprintf(out->why, sizeof(out->why), "cannot record the "
		     "delivery state: %s", err);
	}
    }
    fetchstate_close(&c.sf);
    inject_free(c.inj);
    xfree_secret(c.token);
    fetchstate_clear(&c.st);
    fetchstate_unlock(lockfd);
    (void) metrics_flush(conf);
    return (out->status == FETCH_DONE ? 0 : -1);
}
