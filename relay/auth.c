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
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "log.h"
#include "tokstore.h"
#include "util.h"

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
	result_set(res, M365_REAUTH, EX_TEMPFAIL, "4.7.0",
		   "account %s needs sign-in: %s; %s", acct->name,
		   ts->last_error, ts->remedy);
    else
	result_set(res, M365_REAUTH, EX_TEMPFAIL, "4.7.0",
		   "account %s needs sign-in: run m365ctl login %s",
		   acct->name, acct->name);
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
    int     lockfd, rc, sent, delegated;
    enum oauth_class cls;

    *token_r = NULL;
    delegated = acct->auth == CONF_AUTH_DELEGATED;

    /* 1. The cached token, without the lock. */
    if (tokstore_load(conf, acct->name, &ts, err, sizeof(err)) < 0) {
	result_set(res, M365_CONFIG, EX_TEMPFAIL, "4.7.0",
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

    /* 3. Under the lock: did another process renew it meanwhile? */
    if (force && refused)
	seen = xstrdup(refused);
    tokstore_clear(&ts);
    if ((lockfd = tokstore_lock(conf, acct->name, err, sizeof(err))) < 0) {
	xfree_secret(seen);
	result_set(res, M365_CONFIG, EX_TEMPFAIL, "4.7.0",
		   "account %s: token store unusable: %s", acct->name, err);
	return (-1);
    }
    if (tokstore_load(conf, acct->name, &ts, err, sizeof(err)) < 0) {
	tokstore_unlock(lockfd);
	xfree_secret(seen);
	result_set(res, M365_CONFIG, EX_TEMPFAIL, "4.7.0",
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
    if (delegated && ts.refresh_token == NULL) {
	tokstore_unlock(lockfd);
	tokstore_clear(&ts);
	result_set(res, M365_REAUTH, EX_TEMPFAIL, "4.7.0",
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
	result_set(res, M365_REAUTH, EX_TEMPFAIL, "4.7.0",
		   "account %s needs sign-in: %s; %s", acct->name, cause,
		   remedy);
	break;
    case OAUTH_CONFIG:
	result_set(res, M365_CONFIG, EX_TEMPFAIL, "4.7.0",
		   "account %s: token request refused: %s; %s (mail stays "
		   "queued until this is fixed)", acct->name, cause, remedy);
	break;
    default:
	result_set(res, M365_TEMP, EX_TEMPFAIL,
		   oe.http_status == 0 ? "4.4.1" : "4.7.0",
		   "account %s: no access token, will try again: %s; %s",
		   acct->name, cause, remedy);
	break;
    }
    msg_warn("token request failed (%s): %s", oauth_class_name(cls),
	     res->text);
    if (tokstore_save(conf, acct->name, &ts, err, sizeof(err)) < 0)
	msg_warn("account %s: cannot record the error: %s", acct->name, err);
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
    tokstore_unlock(lockfd);
    tokstore_clear(&ts);
    return (rc);
}
