/*
 * NAME
 *	resolve 3
 * SUMMARY
 *	was an interrupted send accepted?  Ask Sent Items before a resend
 * DESCRIPTION
 *	See resolve.h.  The decision table is in resolve_ambiguous(); the
 *	look-up itself is graph_sent_find() (graph.h).  Times in the log
 *	and in results are local time with the offset, like the ledger's
 *	"already sent at".
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "graph.h"
#include "log.h"
#include "oauth.h"
#include "resolve.h"
#include "tokstore.h"
#include "util.h"

/* Permissions that list messages of a mailbox, least first. */
static const char *const resolve_roles[] = {
    "Mail.ReadBasic.All", "Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite", 0,
};
static const char *const resolve_own_scopes[] = {
    "Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite", "Mail.ReadBasic.Shared",
    "Mail.Read.Shared", "Mail.ReadWrite.Shared", 0,
};
static const char *const resolve_shared_scopes[] = {
    "Mail.ReadBasic.Shared", "Mail.Read.Shared", "Mail.ReadWrite.Shared", 0,
};

/* resolve_time - local time with offset, for texts */

static const char *resolve_time(time_t t, char *buf, size_t len)
{
    struct tm tm;

    localtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S %z", &tm);
    return (buf);
}

/* resolve_shared - does the delegated account send from another mailbox? */

static int resolve_shared(const struct conf_account *acct)
{
    return (oauth_scope_has(acct->scopes, "Mail.Send.Shared"));
}

/* resolve_perm - the least permission to look in Sent Items */

const char *resolve_perm(const struct conf_account *acct)
{
    if (acct->auth != CONF_AUTH_DELEGATED)
	return ("Mail.ReadBasic.All");
    return (resolve_shared(acct) ? "Mail.ReadBasic.Shared" : "Mail.ReadBasic");
}

/* resolve_remedy - how to grant resolve_perm() */

void    resolve_remedy(const struct conf *conf, const struct conf_account *acct,
		               char *buf, size_t len)
{
    if (acct->auth != CONF_AUTH_DELEGATED)
	snprintf(buf, len, "grant app %s the Microsoft Graph application "
		 "permission Mail.ReadBasic.All with admin consent (and the "
		 "mailbox in its RBAC scope or access policy)",
		 acct->client_id);
    else
	snprintf(buf, len, "add %s to \"scopes\" in [account %s] of %s and "
		 "run m365ctl login %s%s", resolve_perm(acct), acct->name,
		 conf->path, acct->name, resolve_shared(acct) ? " (the "
		 "signed-in user also needs Full Access to the mailbox)" : "");
}

/*
 * resolve_ambiguous - an earlier attempt of this delivery (rec: sending
 * or ambiguous) may have been accepted; see resolve.h
 */
int     resolve_ambiguous(const struct conf *conf, struct http *http,
			          const struct conf_account *acct,
			          char **token, char *const *rcpts,
			          size_t nrcpts, const char *queue_id,
			          struct ledger_rec *rec, struct m365_result *res)
{
    const char *mb = acct->mailbox;
    struct m365_result look;
    char    when[64], until[64], remedy[400], err[512];
    time_t  at = rec->attempted ? rec->attempted : rec->updated;
    time_t  now = time(NULL);
    int     found;

    resolve_time(at, when, sizeof(when));
    if (rec->message_id == NULL) {
	msg_warn("%s: the send at %s (queue id %s) may have been accepted by "
		 "Microsoft 365, and the message has no Message-ID to look "
		 "for in Sent Items of %s: sending again; a duplicate is "
		 "possible", queue_id, when,
		 rec->queue_id ? rec->queue_id : "?", mb);
	return (RESOLVE_SEND);
    }
    result_init(&look);
    found = graph_sent_find(http, conf, mb, *token, rec->message_id,
			    rcpts, nrcpts, at - RESOLVE_SKEW, &look);
    if (found == GRAPH_FIND_ERROR && look.http_status == 401) {
	/* The cached token was refused: renew it once, ask once more. */
	char   *fresh = NULL;

	if (auth_token(http, conf, acct, 1, *token, &fresh, res) < 0)
	    return (RESOLVE_DEFER);
	xfree_secret(*token);
	*token = fresh;
	result_init(&look);
	found = graph_sent_find(http, conf, mb, *token, rec->message_id,
				rcpts, nrcpts, at - RESOLVE_SKEW, &look);
    }
    switch (found) {
    case GRAPH_FIND_FOUND:
	msg_info("%s: the send at %s (queue id %s) was accepted: its copy "
		 "%s is in Sent Items of %s; not sending it again",
		 queue_id, when, rec->queue_id ? rec->queue_id : "?",
		 rec->message_id, mb);
	rec->state = LEDGER_SENT;
	if (ledger_save(conf, rec, err, sizeof(err)) < 0)
	    msg_warn("%s: %s", queue_id, err);
	ledger_sent_result(rec, "(confirmed in Sent Items)", res);
	return (RESOLVE_SENT);
    case GRAPH_FIND_DENIED:
	resolve_remedy(conf, acct, remedy, sizeof(remedy));
	msg_warn("%s: the send at %s (queue id %s) may have been accepted by "
		 "Microsoft 365, and account %s %s, so it cannot be told: "
		 "sending again; a duplicate is possible (to prevent it, %s)",
		 queue_id, when, rec->queue_id ? rec->queue_id : "?",
		 acct->name, look.text, remedy);
	return (RESOLVE_SEND);
    case GRAPH_FIND_NONE:
	if (now < at + conf->sent_items_wait) {
	    resolve_time(at + conf->sent_items_wait, until, sizeof(until));
	    result_set(res, M365_TEMP, "4.4.2", "the send at %s may have been "
		       "accepted by Microsoft 365, and its copy is not in Sent "
		       "Items of %s yet (it can take minutes to appear); "
		       "checking again until %s (sent_items_wait), then "
		       "sending again", when, mb, until);
	    return (RESOLVE_DEFER);
	}
	msg_info("%s: the send at %s (queue id %s) was not accepted: no copy "
		 "in Sent Items of %s %ld s later; sending again", queue_id,
		 when, rec->queue_id ? rec->queue_id : "?", mb,
		 (long) (now - at));
	return (RESOLVE_SEND);
    default:
	result_set(res, look.status == M365_OK ? M365_TEMP : look.status,
		   look.status == M365_OK ? "4.4.2" : look.dsn, "the send at %s "
		   "may have been accepted by Microsoft 365; before sending "
		   "again it must be looked for in Sent Items, and %s; "
		   "deferring", when, look.text);
	return (RESOLVE_DEFER);
    }
}

/* resolve_any - is one of names in the space-separated list (or roles)? */

static int resolve_any(const char *const *names, const char *scopes)
{
    for (; *names; names++)
	if (oauth_scope_has(scopes, *names))
	    return (1);
    return (0);
}

/* resolve_readable - may the account read Sent Items? see resolve.h */

int     resolve_readable(const struct conf *conf,
			         const struct conf_account *acct,
			         const char *token, char *why, size_t len)
{
    struct tokstore ts;
    struct strbuf roles;
    char    err[512];
    int     has = -1;

    memset(&ts, 0, sizeof(ts));
    if (acct->auth == CONF_AUTH_DELEGATED) {
	if (tokstore_load(conf, acct->name, &ts, err, sizeof(err)) == 0
	    && ts.scope && *ts.scope) {
	    has = resolve_any(resolve_shared(acct) ? resolve_shared_scopes :
			      resolve_own_scopes, ts.scope);
	    snprintf(why, len, "granted scopes: %s", ts.scope);
	} else
	    snprintf(why, len, "no granted scopes are recorded for the "
		     "sign-in");
	tokstore_clear(&ts);
	return (has);
    }
    if (token == NULL && tokstore_load(conf, acct->name, &ts, err,
				       sizeof(err)) == 0)
	token = ts.access_token;
    if (token == NULL || *token == 0) {
	snprintf(why, len, "no access token to read the app's roles from");
    } else if (oauth_token_roles(token, "Mail.Send", &roles) < 0) {
	snprintf(why, len, "the access token does not show the app's roles "
		 "(it is no JWT)");
	strbuf_free(&roles);
    } else {
	has = resolve_any(resolve_roles, strbuf_str(&roles));
	snprintf(why, len, "application roles: %s", roles.len ?
		 strbuf_log_str(&roles) : "none");
	strbuf_free(&roles);
    }
    tokstore_clear(&ts);
    return (has);
}

/* resolve_probe - can the account list Sent Items? (m365ctl test) */

int     resolve_probe(const struct conf *conf, struct http *http,
		              const struct conf_account *acct, const char *token,
		              int *denied, struct m365_result *res)
{
    char   *none[1] = {NULL};
    int     rc;

    /* A Message-ID that no message has: the look-up, not its result. */
    rc = graph_sent_find(http, conf, acct->mailbox, token,
			 "<m365relay-permission-probe@invalid>", none, 0, 0,
			 res);
    *denied = (rc == GRAPH_FIND_DENIED);
    return (rc == GRAPH_FIND_NONE || rc == GRAPH_FIND_FOUND ? 0 : -1);
}
