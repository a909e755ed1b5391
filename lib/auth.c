/*
 * NAME
 *	auth 3
 * SUMMARY
 *	a valid access token for an account, with one refresh for many
 * DESCRIPTION
 *	See auth.h.  The order of events in auth_token():
 *
 *	1. read the store without the lock: a cached token that is valid
 *	   for more than AUTH_EXPIRY_MARGIN seconds is used at once (the
 *	   common case: no lock, no request);
 *	2. an offline delegated account fails at once (no request);
 *	3. take the account lock and read the store again: when another
 *	   process renewed the token meanwhile, use its token;
 *	4. ask the token endpoint (refresh token or client credentials),
 *	   store the outcome (new tokens, or the error with its remedy)
 *	   and the request counter, release the lock.
 *
 *	token_requests counts every request that was (or may have been)
 *	sent to the token endpoint: a reply of any kind, or a transport
 *	error.  Failures before sending (e.g. an unreadable secret file)
 *	are not counted.
 *
 *	A failed request (timeout, no connection, 5xx, a refusal) that was
 *	sent is remembered in state_dir/tokens/NAME.fail for [global]
 *	token_retry_interval seconds: its result (status, DSN, text), when
 *	it failed and until when it holds.  Meanwhile every caller fails
 *	at once with that result, before and after taking the lock, so an
 *	outage of the token endpoint costs one request (and one timeout)
 *	per interval, not one per message.  The file is written like the
 *	token store (0600, atomically, given to [global] user when written
 *	by root) and read only when private.  It holds only for the same
 *	credentials (auth_memo_cred(): endpoint, tenant, client id and the
 *	identity of the secret or key files), so fixing them takes effect at
 *	once.  A file that is unreadable,
 *	expired or holds anything but a 4.x.x result is ignored (the worst
 *	case is one request too many).  A delegated account whose grant
 *	was revoked is not remembered this way: it is offline until
 *	"m365ctl login", which also forgets the file, like any successful
 *	token request.  force with refused = NULL (m365ctl test --fresh)
 *	ignores the memory.
 *
 *	The lock wait is bounded too: a process that cannot take the lock
 *	within timeout + AUTH_LOCK_MARGIN seconds (the holder's request
 *	can last at most timeout seconds) fails with the remembered
 *	result, or with a 4.4.1 "another process is asking" result.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "statefile.h"
#include "tokstore.h"
#include "util.h"

#define AUTH_MEMO_FILE_MAX	8192	/* bytes of NAME.fail */
#define AUTH_MEMO_CRED_MAX	(PATH_MAX / 2)	/* auth_memo_cred() text */
#define AUTH_LOCK_MARGIN	10	/* seconds beyond [global] timeout */

/* auth_valid - the cached access token is good for the margin */

static int auth_valid(const struct tokstore *ts, time_t now)
{
    return (ts->access_token != NULL && *ts->access_token != 0
	    && ts->access_expires > now + AUTH_EXPIRY_MARGIN);
}

/* auth_replace - replace a stored string (wiping the old one) */

static void auth_replace(char **slot, const char *value)
{
    xfree_secret(*slot);
    *slot = value ? xstrdup(value) : NULL;
}

/* auth_cause - "AADSTS50173 invalid_grant: description" and the like */

static void auth_cause(const struct oauth_error *oe, char *buf, size_t len)
{
    char    code[40] = "";

    if (oe->aadsts > 0)
	snprintf(code, sizeof(code), "AADSTS%ld ", oe->aadsts);
    if (oe->error[0] && oe->description[0])
	snprintf(buf, len, "%s%s: %s", code, oe->error, oe->description);
    else if (oe->error[0])
	snprintf(buf, len, "%s%s", code, oe->error);
    else if (oe->http_status > 0 && oe->description[0])
	snprintf(buf, len, "%sHTTP %ld from the token endpoint: %s", code,
		 oe->http_status, oe->description);
    else if (oe->http_status > 0)
	snprintf(buf, len, "%sHTTP %ld from the token endpoint", code,
		 oe->http_status);
    else if (oe->description[0])
	snprintf(buf, len, "%s%s", code, oe->description);
    else
	snprintf(buf, len, "token endpoint not reachable");
}

/* auth_store_error - remember a failure for m365ctl status */

static void auth_store_error(struct tokstore *ts, const char *cause,
			             const char *remedy, time_t now)
{
    auth_replace(&ts->last_error, cause);
    auth_replace(&ts->remedy, remedy);
    ts->last_error_at = now;
}

/* auth_offline - why an offline account cannot be used */

static void auth_offline(const struct conf_account *acct,
			         const struct tokstore *ts,
			         struct m365_result *res)
{
    if (ts->last_error && ts->remedy)
	result_set(res, M365_REAUTH, "4.7.0",
		   "account %s needs sign-in: %s; %s", acct->name,
		   ts->last_error, ts->remedy);
    else
	result_set(res, M365_REAUTH, "4.7.0",
		   "account %s needs sign-in: run m365ctl login %s",
		   acct->name, acct->name);
}

/* auth_memo_path - state_dir/tokens/NAME.fail; -1 when it has none */

static int auth_memo_path(const struct conf *conf,
			          const struct conf_account *acct,
			          char *buf, size_t len)
{
    return (tokstore_path(conf, acct->name, ".fail", buf, len));
}

/*
 * auth_memo_cred - what a token request of this account is made from:
 * the endpoint, tenant and client id, and the identity (inode, mtime,
 * size) of its secret, key and certificate files.  A remembered failure
 * holds only for the same credentials: an administrator who fixes the
 * secret file gets a new token request at once.  No secret goes in.
 */
static void auth_memo_cred(const struct conf *conf,
			           const struct conf_account *acct,
			           char *buf, size_t len)
{
    const char *files[3];
    struct stat st;
    size_t  i, n;

    files[0] = acct->auth == CONF_AUTH_SECRET ? acct->secret_file : NULL;
    files[1] = acct->auth == CONF_AUTH_CERTIFICATE ? acct->key_file : NULL;
    files[2] = acct->auth == CONF_AUTH_CERTIFICATE ?
	acct->certificate_file : NULL;
    snprintf(buf, len, "%s %s %s %s", conf->login_url, acct->tenant,
	     acct->client_id, conf_auth_name(acct->auth));
    for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
	if (files[i] == NULL || (n = strlen(buf)) + 1 >= len)
	    continue;
	if (stat(files[i], &st) < 0)
	    snprintf(buf + n, len - n, " -");
	else
	    snprintf(buf + n, len - n, " %lu:%lld.%09ld:%lld",
		     (unsigned long) st.st_ino, (long long) st.st_mtim.tv_sec,
		     (long) st.st_mtim.tv_nsec, (long long) st.st_size);
    }
}

/* auth_hms - local HH:MM:SS of an epoch second */

static const char *auth_hms(time_t when, char *buf, size_t len)
{
    struct tm tm;

    localtime_r(&when, &tm);
    strftime(buf, len, "%H:%M:%S", &tm);
    return (buf);
}

/*
 * auth_memo_check - is a failed token request of this account still
 * remembered?  1 with res filled (the remembered result), else 0.
 */
static int auth_memo_check(const struct conf *conf,
			           const struct conf_account *acct,
			           struct m365_result *res)
{
    char    path[PATH_MAX];
    char    err[512];
    char    until_text[16];
    char    cur[AUTH_MEMO_CRED_MAX];
    cJSON  *root = NULL;
    char   *dsn = NULL, *text = NULL, *cred = NULL;
    time_t  now = time(NULL), until, failed_at;
    long    status;
    int     rc, found = 0;

    if (auth_memo_path(conf, acct, path, sizeof(path)) < 0)
	return (0);
    rc = json_file_load(path, "token failure file", AUTH_MEMO_FILE_MAX,
			JSON_FILE_PRIVATE, &root, err, sizeof(err));
    if (rc < 0) {
	if (rc == -1)
	    msg_warn("account %s: ignoring the remembered token failure: %s",
		     acct->name, err);
	return (0);
    }
    if (rc == 0)
	return (0);
    until = (time_t) json_get_num(root, "until");
    failed_at = (time_t) json_get_num(root, "failed_at");
    status = (long) json_get_num(root, "status");
    dsn = json_get_str(root, "dsn");
    text = json_get_str(root, "text");
    cred = json_get_str(root, "cred");
    cJSON_Delete(root);
    auth_memo_cred(conf, acct, cur, sizeof(cur));

    /*
     * One interval of the current configuration after the failure at
     * most (the interval may have been shortened since), and never
     * anything but a defer.
     */
    if (until > failed_at + conf->token_retry_interval)
	until = failed_at + conf->token_retry_interval;
    if (until > now && failed_at <= now
	&& cred != NULL && strcmp(cred, cur) == 0
	&& (status == M365_TEMP || status == M365_CONFIG)
	&& dsn != NULL && dsn[0] == '4' && dsn[1] == '.'
	&& strspn(dsn + 2, "0123456789.") == strlen(dsn + 2)
	&& strlen(dsn) < sizeof(res->dsn) && text != NULL) {
	result_set(res, (enum m365_status) status, dsn,
		   "%s [no new token request before %s]", text,
		   auth_hms(until, until_text, sizeof(until_text)));
	found = 1;
    }
    free(dsn);
    free(text);
    free(cred);
    return (found);
}

/* auth_memo_save - remember a failed token request for the interval */

static void auth_memo_save(const struct conf *conf,
			           const struct conf_account *acct,
			           const struct m365_result *res, time_t now)
{
    char    path[PATH_MAX];
    char    err[512];
    char    cred[AUTH_MEMO_CRED_MAX];
    cJSON  *root;
    char   *json = NULL;

    if (auth_memo_path(conf, acct, path, sizeof(path)) < 0)
	return;
    auth_memo_cred(conf, acct, cred, sizeof(cred));
    if ((root = cJSON_CreateObject()) == NULL
	|| !cJSON_AddNumberToObject(root, "failed_at", (double) now)
	|| !cJSON_AddNumberToObject(root, "until", (double)
				    (now + conf->token_retry_interval))
	|| !cJSON_AddNumberToObject(root, "status", (double) res->status)
	|| json_add_str(root, "dsn", res->dsn) < 0
	|| json_add_str(root, "text", res->text) < 0
	|| json_add_str(root, "cred", cred) < 0
	|| (json = cJSON_PrintUnformatted(root)) == NULL) {
	cJSON_Delete(root);
	msg_warn("account %s: out of memory remembering a token failure",
		 acct->name);
	return;
    }
    cJSON_Delete(root);
    /* Like the token store: root (m365ctl) gives it to the relay user. */
    if (statefile_write(conf, STATEFILE_TOKENS, acct->name, ".fail", json,
			strlen(json), err, sizeof(err)) < 0)
	msg_warn("account %s: cannot remember the token failure (every "
		 "delivery will ask again): %s", acct->name, err);
    cJSON_free(json);
}

/* auth_memo_clear - forget a remembered failure (the token works again) */

static void auth_memo_clear(const struct conf *conf,
			            const struct conf_account *acct)
{
    char    err[512];

    if (statefile_remove(conf, STATEFILE_TOKENS, acct->name, ".fail",
			 err, sizeof(err)) < 0)
	msg_warn("account %s: %s", acct->name, err);
}

/* auth_token - a valid access token, renewed once for all processes */

int     auth_token(struct http *http, const struct conf *conf,
		           const struct conf_account *acct, int force,
		           const char *refused, char **token_r,
		           struct m365_result *res)
{
    struct tokstore ts;
    struct oauth_token tok;
    struct oauth_error oe;
    char    err[512];
    char    cause[600];
    char    remedy[600];
    char   *seen = NULL;
    time_t  now, asked;
    int     lockfd, rc, sent, delegated, fresh;
    enum oauth_class cls;

    *token_r = NULL;
    delegated = acct->auth == CONF_AUTH_DELEGATED;
    fresh = force && refused == NULL;
    metrics_scope(acct->name);		/* its Graph requests follow */
    /* This account's Graph requests follow: its proxy (proxy.h). */
    http_set_account(http, conf, acct);

    /* 1. The cached token, without the lock. */
    if (tokstore_load(conf, acct->name, &ts, err, sizeof(err)) < 0) {
	result_set(res, M365_CONFIG, "4.7.0",
		   "account %s: token store unusable: %s", acct->name, err);
	return (-1);
    }
    now = time(NULL);
    if (!force && auth_valid(&ts, now) && !(delegated && ts.offline)) {
	*token_r = xstrdup(ts.access_token);
	tokstore_clear(&ts);
	return (0);
    }

    /*
     * 2. An offline account waits for m365ctl login: no token request and,
     * since its token was refused or could not be renewed, no Graph
     * request either.
     */
    if (delegated && ts.offline) {
	auth_offline(acct, &ts, res);
	tokstore_clear(&ts);
	return (-1);
    }
    tokstore_clear(&ts);

    /* 2b. A token request failed a moment ago: fail the same way. */
    if (!fresh && auth_memo_check(conf, acct, res))
	return (-1);

    /*
     * 3. Under the lock: did another process renew it meanwhile?  The
     * holder asks for at most [global] timeout seconds; waiting longer
     * means it is stuck, and every delivery would wait behind it.
     */
    if (force && refused)
	seen = xstrdup(refused);
    rc = tokstore_lock_wait(conf, acct->name, (double) conf->timeout
			    + AUTH_LOCK_MARGIN, err, sizeof(err));
    if ((lockfd = rc) < 0) {
	xfree_secret(seen);
	if (rc == -2 && !fresh && auth_memo_check(conf, acct, res))
	    return (-1);
	if (rc == -2)
	    result_set(res, M365_TEMP, "4.4.1",
		       "account %s: no access token, will try again: another "
		       "process is asking the token endpoint and has not "
		       "finished (%s)", acct->name, err);
	else
	    result_set(res, M365_CONFIG, "4.7.0",
		       "account %s: token store unusable: %s", acct->name, err);
	return (-1);
    }
    if (tokstore_load(conf, acct->name, &ts, err, sizeof(err)) < 0) {
	tokstore_unlock(lockfd);
	xfree_secret(seen);
	result_set(res, M365_CONFIG, "4.7.0",
		   "account %s: token store unusable: %s", acct->name, err);
	return (-1);
    }
    now = time(NULL);
    if (auth_valid(&ts, now)
	&& (!force || (seen != NULL && strcmp(seen, ts.access_token) != 0))) {
	*token_r = xstrdup(ts.access_token);
	tokstore_unlock(lockfd);
	tokstore_clear(&ts);
	xfree_secret(seen);
	return (0);
    }
    xfree_secret(seen);
    if (delegated && ts.offline) {
	tokstore_unlock(lockfd);
	auth_offline(acct, &ts, res);
	tokstore_clear(&ts);
	return (-1);
    }
    /* The process that held the lock has just failed: so do we. */
    if (!fresh && auth_memo_check(conf, acct, res)) {
	tokstore_unlock(lockfd);
	tokstore_clear(&ts);
	return (-1);
    }
    if (delegated && ts.refresh_token == NULL) {
	tokstore_unlock(lockfd);
	tokstore_clear(&ts);
	result_set(res, M365_REAUTH, "4.7.0",
		   "account %s has not signed in yet: run m365ctl login %s",
		   acct->name, acct->name);
	return (-1);
    }

    /* 4. One token request for everybody. */
    memset(&tok, 0, sizeof(tok));
    memset(&oe, 0, sizeof(oe));
    asked = time(NULL);
    if (delegated)
	rc = oauth_refresh(http, conf, acct, ts.refresh_token, ts.scope,
			   &tok, &oe);
    else
	rc = oauth_client_credentials(http, conf, acct, &tok, &oe);
    now = time(NULL);
    sent = rc == 0 || oe.http_status > 0 || oe.cls == OAUTH_TRANSIENT;
    if (sent)
	ts.token_requests++;
    metrics_token(acct->name, sent, rc == 0, oauth_class_name(oe.cls));

    if (rc == 0 && tok.access_token != NULL && *tok.access_token != 0) {
	auth_replace(&ts.access_token, tok.access_token);
	ts.access_expires = asked + (tok.expires_in > 0 ? tok.expires_in : 0);
	if (tok.refresh_token && *tok.refresh_token) {
	    auth_replace(&ts.refresh_token, tok.refresh_token);
	    ts.refresh_issued = now;
	}
	if (tok.scope && *tok.scope)
	    auth_replace(&ts.scope, tok.scope);
	ts.offline = 0;
	auth_replace(&ts.last_error, NULL);
	auth_replace(&ts.remedy, NULL);
	ts.last_error_at = 0;
	if (tokstore_save(conf, acct->name, &ts, err, sizeof(err)) < 0)
	    msg_warn("account %s: new access token not saved (every delivery "
		     "will ask for one): %s", acct->name, err);
	auth_memo_clear(conf, acct);
	tokstore_unlock(lockfd);
	msg_debug("account %s: new access token, valid for %ld seconds",
		  acct->name, tok.expires_in);
	*token_r = xstrdup(tok.access_token);
	oauth_token_free(&tok);
	tokstore_clear(&ts);
	return (0);
    }
    if (rc == 0) {
	/* A 2xx reply without a token: treat like a server fault. */
	oe.cls = OAUTH_TRANSIENT;
	snprintf(oe.description, sizeof(oe.description),
		 "the token endpoint reply has no access_token");
    }
    oauth_token_free(&tok);

    /* The request failed: classify, remember, report. */
    cls = oe.cls;
    if (cls == OAUTH_REAUTH && !delegated)
	cls = OAUTH_CONFIG;		/* app-only: nobody can sign in */
    auth_cause(&oe, cause, sizeof(cause));
    oauth_remedy(&oe, acct->name, remedy, sizeof(remedy));
    auth_store_error(&ts, cause, remedy, now);
    switch (cls) {
    case OAUTH_REAUTH:
	ts.offline = 1;
	result_set(res, M365_REAUTH, "4.7.0",
		   "account %s needs sign-in: %s; %s", acct->name, cause,
		   remedy);
	break;
    case OAUTH_CONFIG:
	result_set(res, M365_CONFIG, "4.7.0",
		   "account %s: token request refused: %s; %s (mail stays "
		   "queued until this is fixed)", acct->name, cause, remedy);
	break;
    default:
	result_set(res, M365_TEMP,
		   oe.http_status == 0 ? "4.4.1" : "4.7.0",
		   "account %s: no access token, will try again: %s; %s",
		   acct->name, cause, remedy);
	break;
    }
    msg_warn("token request failed (%s): %s", oauth_class_name(cls),
	     res->text);
    if (tokstore_save(conf, acct->name, &ts, err, sizeof(err)) < 0)
	msg_warn("account %s: cannot record the error: %s", acct->name, err);
    /* Before the lock goes: the waiting processes must find it. */
    if (sent && cls != OAUTH_REAUTH)
	auth_memo_save(conf, acct, res, now);
    tokstore_unlock(lockfd);
    tokstore_clear(&ts);
    return (-1);
}

/* auth_store_login - save the tokens of an interactive sign-in */

int     auth_store_login(const struct conf *conf,
			         const struct conf_account *acct,
			         const struct oauth_token *tok,
			         char *err, size_t errlen)
{
    struct tokstore ts;
    time_t  now = time(NULL);
    int     lockfd, rc;

    if (tok->access_token == NULL || *tok->access_token == 0) {
	snprintf(err, errlen, "the sign-in returned no access token");
	return (-1);
    }
    if ((lockfd = tokstore_lock(conf, acct->name, err, errlen)) < 0)
	return (-1);
    if (tokstore_load(conf, acct->name, &ts, err, errlen) < 0) {
	/* A damaged or unsafe old file is replaced, not kept. */
	msg_warn("account %s: replacing the token file: %s", acct->name, err);
	tokstore_clear(&ts);
    }
    auth_replace(&ts.access_token, tok->access_token);
    ts.access_expires = now + (tok->expires_in > 0 ? tok->expires_in : 0);

    /*
     * The new sign-in may be another user: an old refresh token must not
     * survive it.  Without offline_access there is none.
     */
    auth_replace(&ts.refresh_token, tok->refresh_token && *tok->refresh_token ?
		 tok->refresh_token : NULL);
    auth_replace(&ts.scope, tok->scope);
    ts.refresh_issued = now;
    ts.signed_in = now;
    ts.offline = 0;
    auth_replace(&ts.last_error, NULL);
    auth_replace(&ts.remedy, NULL);
    ts.last_error_at = 0;
    ts.token_requests++;
    rc = tokstore_save(conf, acct->name, &ts, err, errlen);
    if (rc == 0)
	auth_memo_clear(conf, acct);
    tokstore_unlock(lockfd);
    tokstore_clear(&ts);
    return (rc);
}
