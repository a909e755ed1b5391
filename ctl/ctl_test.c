/*
 * NAME
 *	ctl_test 3
 * SUMMARY
 *	m365ctl test: the connection test ("ping") of an account or a source
 * SYNOPSIS
 *	#include "ctl.h"
 *
 *	int	ctl_test(conf, acct, fresh, send_to)
 *
 *	int	ctl_test_source(conf, src, fresh)
 * DESCRIPTION
 *	ctl_test() runs the steps below and prints one line per step,
 *	"ok   step: what was found" or "FAIL step: what is wrong" followed
 *	by "     remedy: what to do"; "warn" marks a finding that does not
 *	block sending, "--" a step that could not be judged.
 *
 *	config      the account's keys and secret/key files (private?);
 *	sign-in     delegated: signed in, not offline (token store);
 *	token       auth_token(): cached or new access token, with expiry;
 *	            a failure shows the AADSTS code and its remedy;
 *	user        delegated: GET /me, the signed-in user;
 *	mailbox     GET /users/{mailbox}: 401 token, 403 access policy or
 *	            RBAC scope, 404 MailboxNotEnabledForRESTAPI (no
 *	            Exchange Online licence, on-premises) or wrong address;
 *	permission  delegated: the granted scopes hold Mail.Send (and
 *	            Mail.Send.Shared when the mailbox is not the signed-in
 *	            user's); app-only: the token's "roles" claim holds
 *	            Mail.Send when the token is a JWT;
 *	large       whether messages over 4 MB can go through a draft
 *	            (draft_large(): large_messages, the granted scope or the
 *	            app's roles); when they can, an empty draft is created
 *	            in the mailbox and deleted again (draft_probe()), which
 *	            proves the permission (Mail.ReadWrite); a 403 names it;
 *	duplicates  whether a send that broke off (a reset, a time-out,
 *	            5xx after the whole message went out) can be looked
 *	            for in Sent Items before it is sent again: one GET of
 *	            Sent Items (resolve_probe()); a 403 is a warning that
 *	            duplicates are possible for this account, naming the
 *	            permission that prevents them (Mail.ReadBasic.All,
 *	            Mail.ReadBasic or Mail.ReadBasic.Shared);
 *	send        with send_to: a short test message through
 *	            deliver_with() (this account, whatever the senders
 *	            routing says), like m365-relay would send it.
 *	A 401 from Graph is answered once with a fresh token (force), as
 *	the relay does; a revoked grant then shows up as AADSTS50173.
 *
 *	ctl_test_source() tests an inbound [source] of m365-fetch:
 *
 *	config      the keys and secret files of the source's account;
 *	state       what m365-fetch recorded (state_dir/sources/NAME.json,
 *	            read only): offline with the error and remedy, the last
 *	            round, or never run;
 *	sign-in, token, user   as above, for the source's account;
 *	folder      the folder resolved by m365-fetch's code
 *	            (source_resolve()): GET /users/{mailbox}/mailFolders/
 *	            {well-known name}, else mailFolders?$filter=displayName
 *	            eq 'NAME' ("A/B" through childFolders); a 404 that is not
 *	            about the mailbox means the folder does not exist; 403
 *	            ErrorAccessDenied names Mail.ReadWrite and the RBAC scope
 *	            (app-only) or Mail.ReadWrite(.Shared) and Full Access
 *	            (delegated);
 *	permission  delegated: Mail.ReadWrite granted (Mail.ReadWrite.Shared
 *	            for another user's mailbox); app-only: the role
 *	            Mail.ReadWrite when the token is a JWT;
 *	deliver     through m365-fetch's injection code (inject_probe()),
 *	            no mail sent: smtp://HOST:PORT: the TCP connection,
 *	            the MTA's 220 greeting and its answer to EHLO (HELO
 *	            when EHLO is refused), each within CTL_SMTP_TIMEOUT
 *	            seconds, then QUIT; a warning when the MTA does not
 *	            offer 8BITMIME (an 8-bit message would put the source
 *	            offline); sendmail: the program m365-fetch runs
 *	            (sendmail_path) is an executable file.
 *	The deliver step runs even when an earlier step failed.
 * DIAGNOSTICS
 *	ctl_test() and ctl_test_source() return CTL_OK when every step
 *	passed, else CTL_FAIL.  Token values are never printed.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <openssl/crypto.h>

#include "addr.h"
#include "alert.h"
#include "auth.h"
#include "conf.h"
#include "ctl.h"
#include "deliver.h"
#include "draft.h"
#include "fetchstate.h"
#include "graph.h"
#include "http.h"
#include "inject.h"
#include "log.h"
#include "msg.h"
#include "oauth.h"
#include "resolve.h"
#include "source.h"
#include "status.h"
#include "strbuf.h"
#include "tokstore.h"
#include "util.h"

/* One test run. */
struct ctl_run {
    struct http *http;
    const struct conf *conf;
    const struct conf_account *acct;
    char   *token;			/* current access token */
    int     refreshed;			/* 401 answered with force already */
    int     fails;
    int     warns;
};

/* ctl_vstep - print "TAG  step: text" (printable); count FAIL, warn */

static void __attribute__((format(printf, 4, 0)))
        ctl_vstep(struct ctl_run *run, const char *tag, const char *step,
		          const char *fmt, va_list ap)
{
    char    raw[1200];
    char    text[1200];

    vsnprintf(raw, sizeof(raw), fmt, ap);
    log_printable(text, sizeof(text), raw, strlen(raw));
    printf("%-4s %s: %s\n", tag, step, text);
    if (run && strcmp(tag, "FAIL") == 0)
	run->fails++;
    else if (run && strcmp(tag, "warn") == 0)
	run->warns++;
    fflush(stdout);
}

/* ctl_step - print one step line: "ok   token: ..." */

static void __attribute__((format(printf, 4, 5)))
        ctl_step(struct ctl_run *run, const char *tag, const char *step,
		         const char *fmt,...)
{
    va_list ap;

    va_start(ap, fmt);
    ctl_vstep(run, tag, step, fmt, ap);
    va_end(ap);
}

/* ctl_run_end - print the result line, release the run; CTL_OK/FAIL */

static int ctl_run_end(struct ctl_run *run)
{
    if (run->fails)
	printf("result: %d step%s FAILED%s\n", run->fails,
	       run->fails == 1 ? "" : "s",
	       run->warns ? " (see also the warnings)" : "");
    else
	printf("result: all checks passed%s\n",
	       run->warns ? " (with warnings)" : "");
    xfree_secret(run->token);
    if (run->http)
	http_free(run->http);
    return (run->fails ? CTL_FAIL : CTL_OK);
}

/* ctl_remedy - the fix for the step above */

static void __attribute__((format(printf, 1, 2)))
        ctl_remedy(const char *fmt,...)
{
    va_list ap;

    va_start(ap, fmt);
    ctl_vstep(NULL, "", "remedy", fmt, ap);	/* "     remedy: ..." */
    va_end(ap);
}

/* ctl_auth_kind - how the account authenticates, for humans */

static const char *ctl_auth_kind(const struct conf_account *acct)
{
    switch (acct->auth) {
    case CONF_AUTH_DELEGATED:
	return ("delegated");
    case CONF_AUTH_SECRET:
	return ("app-only, client secret");
    case CONF_AUTH_CERTIFICATE:
	return ("app-only, certificate");
    }
    return ("unknown");
}

/*
 * ctl_auth_token - auth_token() whose own log records (the same text as
 * the FAIL line) stay off the terminal; they still reach the log.
 */
static int ctl_auth_token(struct ctl_run *run, int force,
		              const char *refused, struct m365_result *res)
{
    int     rc;

    ctl_log_quiet(1);
    rc = auth_token(run->http, run->conf, run->acct, force, refused,
		    &run->token, res);
    ctl_log_quiet(0);
    return (rc);
}

/* ctl_show_stored_error - the last error and remedy from the token store */

static void ctl_show_stored_error(struct ctl_run *run, const char *already)
{
    struct tokstore ts;
    char    err[512];

    memset(&ts, 0, sizeof(ts));
    if (tokstore_load(run->conf, run->acct->name, &ts, err, sizeof(err)) == 0
	&& ts.last_error && ts.last_error[0]) {
	if (already == NULL || strstr(already, ts.last_error) == NULL)
	    printf("     last error: %s\n", ts.last_error);
	if (ts.remedy && ts.remedy[0]
	    && (already == NULL || strstr(already, ts.remedy) == NULL))
	    ctl_remedy("%s", ts.remedy);
    }
    tokstore_clear(&ts);
}

/* ctl_token_fail - the token step failed: result text and stored remedy */

static void ctl_token_fail(struct ctl_run *run, const struct m365_result *res)
{
    ctl_step(run, "FAIL", "token", "%s", res->text);
    ctl_show_stored_error(run, res->text);
}

/* ctl_step_config - account keys and private secret files */

static int ctl_step_config(struct ctl_run *run)
{
    const struct conf_account *acct = run->acct;
    struct conf one;
    struct conf_account only;
    struct strbuf errors;
    char   *line, *next;
    int     rc = 0;

    /* Check this account only: a view of the configuration. */
    one = *run->conf;
    only = *acct;
    only.next = NULL;
    one.accounts = &only;
    strbuf_init(&errors, STRBUF_MAX_JSON);
    if (conf_check_secrets(&one, &errors) < 0) {
	if (errors.len == 0)
	    ctl_step(run, "FAIL", "config", "secret files of account %s are "
		     "not usable", acct->name);
	for (line = errors.data; line && *line; line = next) {
	    if ((next = strchr(line, '\n')) != NULL)
		*next++ = 0;
	    if (*line)
		ctl_step(run, "FAIL", "config", "%s", line);
	}
	rc = -1;
    }
    strbuf_free(&errors);
    if (acct->mailbox == NULL || acct->mailbox[0] == 0) {
	ctl_step(run, "FAIL", "config", "account %s has no mailbox",
		 acct->name);
	ctl_remedy("add \"mailbox = ADDRESS\" (the mailbox that sends) to "
		   "[account %s] in %s", acct->name, run->conf->path);
	rc = -1;
    }
    if (rc < 0)
	return (-1);
    switch (acct->auth) {
    case CONF_AUTH_SECRET:
	ctl_step(run, "ok", "config", "account %s: %s, tenant %s, client_id "
		 "%s, mailbox %s, secret file %s is private", acct->name,
		 ctl_auth_kind(acct), acct->tenant, acct->client_id,
		 acct->mailbox, acct->secret_file);
	break;
    case CONF_AUTH_CERTIFICATE:
	ctl_step(run, "ok", "config", "account %s: %s (%s), tenant %s, "
		 "client_id %s, mailbox %s, key file %s is private",
		 acct->name, ctl_auth_kind(acct),
		 acct->jwt_alg == CONF_JWT_RS256 ? "RS256" : "PS256",
		 acct->tenant, acct->client_id, acct->mailbox, acct->key_file);
	break;
    default:
	ctl_step(run, "ok", "config", "account %s: %s, tenant %s, client_id "
		 "%s, mailbox %s", acct->name, ctl_auth_kind(acct),
		 acct->tenant, acct->client_id, acct->mailbox);
	break;
    }
    return (0);
}

/* ctl_step_signin - delegated: is there a sign-in to use? */

static int ctl_step_signin(struct ctl_run *run)
{
    const struct conf_account *acct = run->acct;
    struct tokstore ts;
    char    err[512];
    char    when[80];
    int     rc = 0;

    memset(&ts, 0, sizeof(ts));
    if (tokstore_load(run->conf, acct->name, &ts, err, sizeof(err)) < 0) {
	ctl_step(run, "FAIL", "sign-in", "%s", err);
	tokstore_clear(&ts);
	return (-1);
    }
    if (ts.offline) {
	ctl_fmt_time(when, sizeof(when), ts.last_error_at);
	ctl_step(run, "FAIL", "sign-in", "account %s is offline since %s: %s",
		 acct->name, when, ts.last_error ? ts.last_error :
		 "sign-in required");
	ctl_remedy("%s", ts.remedy && ts.remedy[0] ? ts.remedy :
		   "sign in again: m365ctl login ACCOUNT");
	if (ts.remedy == NULL || strstr(ts.remedy, "m365ctl login") == NULL)
	    ctl_remedy("then run: m365ctl login %s", acct->name);
	rc = -1;
    } else if (ts.refresh_token == NULL || ts.refresh_token[0] == 0) {
	ctl_step(run, "FAIL", "sign-in", "account %s is not signed in (no "
		 "refresh token stored)", acct->name);
	ctl_remedy("sign in as the owner of %s: m365ctl login %s",
		   acct->mailbox, acct->name);
	rc = -1;
    } else {
	ctl_fmt_time(when, sizeof(when), ts.signed_in);
	ctl_step(run, "ok", "sign-in", "signed in %s; refresh token %ld "
		 "days old", when, ts.refresh_issued > 0 ?
		 (long) ((time(NULL) - ts.refresh_issued) / 86400) : 0L);
    }
    tokstore_clear(&ts);
    return (rc);
}

/* ctl_step_token - get an access token (cached or new) */

static int ctl_step_token(struct ctl_run *run, int fresh)
{
    struct m365_result res;
    struct tokstore ts;
    char    err[512];
    char    exp[80];
    long    before = -1;

    memset(&ts, 0, sizeof(ts));
    if (tokstore_load(run->conf, run->acct->name, &ts, err, sizeof(err)) == 0)
	before = ts.token_requests;
    tokstore_clear(&ts);

    result_init(&res);
    if (ctl_auth_token(run, fresh, NULL, &res) < 0) {
	run->token = NULL;
	ctl_token_fail(run, &res);
	return (-1);
    }
    memset(&ts, 0, sizeof(ts));
    if (tokstore_load(run->conf, run->acct->name, &ts, err, sizeof(err)) == 0
	&& ts.access_expires > 0) {
	ctl_fmt_expiry(exp, sizeof(exp), ts.access_expires, time(NULL));
	ctl_step(run, "ok", "token", "got an access token (%s, expires %s, "
		 "%s)", ctl_auth_kind(run->acct), exp,
		 before >= 0 && ts.token_requests > before ?
		 "new from the identity platform" : "cached");
    } else
	ctl_step(run, "ok", "token", "got an access token (%s)",
		 ctl_auth_kind(run->acct));
    tokstore_clear(&ts);
    return (0);
}

/*
 * ctl_renew - Graph answered 401: get a fresh token, once per run (a
 * revoked grant shows up here).  0 when there is a new token to retry
 * with (resp reset); -1 when the 401 stands; -2 when the fresh token
 * could not be had (reported).
 */
static int ctl_renew(struct ctl_run *run, struct http_resp *resp)
{
    struct m365_result res;
    char   *refused;
    int     rc;

    if (resp->status != 401 || run->refreshed)
	return (-1);
    run->refreshed = 1;
    printf("--   token: Graph refused the access token (401); getting a "
	   "fresh one\n");
    refused = run->token;
    run->token = NULL;
    result_init(&res);
    rc = ctl_auth_token(run, 1, refused, &res);
    xfree_secret(refused);
    if (rc < 0) {
	run->token = NULL;
	ctl_token_fail(run, &res);
	return (-2);
    }
    http_resp_free(resp);
    http_resp_init(resp);
    return (0);
}

/*
 * ctl_graph_user - GET a user; a 401 is answered once with a fresh token.
 * Returns 0 on 200, -1 otherwise with resp filled; -2 when the fresh
 * token could not be had (reported).
 */
static int ctl_graph_user(struct ctl_run *run, const char *mailbox,
			          struct ctl_user *user, struct http_resp *resp)
{
    int     rc;

    if (ctl_get_user(run->http, run->conf, mailbox, run->token, user,
		     resp) == 0)
	return (0);
    if ((rc = ctl_renew(run, resp)) < 0)
	return (rc);
    return (ctl_get_user(run->http, run->conf, mailbox, run->token, user,
			 resp));
}

/* ctl_graph_fail - a failed Graph request: what it means, what to do */

static void ctl_graph_fail(struct ctl_run *run, const char *step,
			           const char *what, const struct http_resp *resp)
{
    const struct conf_account *acct = run->acct;
    struct graph_error ge;
    int     app = (acct->auth != CONF_AUTH_DELEGATED);

    memset(&ge, 0, sizeof(ge));
    if (resp->status == 0) {
	ctl_step(run, "FAIL", step, "cannot reach Graph at %s: %s",
		 run->conf->graph_url, resp->error);
	ctl_remedy("check the network path to %s (proxy, firewall, DNS) and "
		   "graph_url/cloud in %s", run->conf->graph_url,
		   run->conf->path);
	return;
    }
    (void) graph_parse_error(resp, &ge);
    if (ge.request_id[0] == 0 && resp->request_id[0])
	snprintf(ge.request_id, sizeof(ge.request_id), "%s", resp->request_id);
    if (resp->status == 200) {
	ctl_step(run, "FAIL", step, "%s: Graph sent an unreadable reply "
		 "(request-id %s)", what, ge.request_id);
	return;
    }
    if (resp->status == 401) {
	ctl_step(run, "FAIL", step, "%s: Graph refuses the access token even "
		 "after a refresh (HTTP 401 %s: %s)", what,
		 ge.code[0] ? ge.code : "InvalidAuthenticationToken",
		 ge.message);
	ctl_remedy("the token is for another cloud or resource: login_url, "
		   "graph_url and cloud in %s must belong to the same cloud "
		   "as tenant %s", run->conf->path, acct->tenant);
	return;
    }
    if (resp->status == 403 && strcmp(ge.code, "ErrorAccessDenied") == 0) {
	ctl_step(run, "FAIL", step, "%s: access denied (HTTP 403 "
		 "ErrorAccessDenied: %s)", what, ge.message);
	if (app)
	    ctl_remedy("an RBAC for Applications management scope or an "
		       "Application Access Policy in Exchange Online excludes "
		       "mailbox %s for app %s: add the mailbox to the scope "
		       "(or the policy's group); changes can take more than "
		       "an hour", acct->mailbox, acct->client_id);
	else
	    ctl_remedy("the signed-in user has no right on mailbox %s: grant "
		       "Full Access or Send As in the Exchange admin center",
		       acct->mailbox);
	return;
    }
    if (resp->status == 404
	&& strcmp(ge.code, "MailboxNotEnabledForRESTAPI") == 0) {
	ctl_step(run, "FAIL", step, "%s: mailbox %s is not enabled for the "
		 "REST API (HTTP 404 MailboxNotEnabledForRESTAPI: %s)", what,
		 acct->mailbox, ge.message);
	ctl_remedy("%s has no Exchange Online mailbox: assign an Exchange "
		   "Online licence, or the mailbox is inactive, soft-deleted "
		   "or hosted on-premises (Graph sends only from Exchange "
		   "Online mailboxes)", acct->mailbox);
	return;
    }
    if (resp->status == 404) {
	ctl_step(run, "FAIL", step, "%s: no user or mailbox %s in tenant %s "
		 "(HTTP 404 %s: %s)", what, acct->mailbox, acct->tenant,
		 ge.code[0] ? ge.code : "ResourceNotFound", ge.message);
	ctl_remedy("check \"mailbox\" of [account %s] in %s: the address or "
		   "user principal name is wrong, or belongs to another "
		   "tenant", acct->name, run->conf->path);
	return;
    }
    ctl_step(run, "FAIL", step, "%s: HTTP %ld %s: %s (request-id %s)", what,
	     resp->status, ge.code[0] ? ge.code : "error", ge.message,
	     ge.request_id[0] ? ge.request_id : "none");
    if (resp->status == 429 || resp->status >= 500)
	ctl_remedy("Microsoft 365 is busy or throttling (Retry-After %ld s); "
		   "run the test again later", resp->retry_after);
}

/* ctl_step_me - delegated: who is signed in */

static int ctl_step_me(struct ctl_run *run, struct ctl_user *me)
{
    struct http_resp resp;
    int     rc;

    http_resp_init(&resp);
    rc = ctl_graph_user(run, NULL, me, &resp);
    if (rc == 0)
	ctl_step(run, "ok", "user", "signed in as %s%s%s%s",
		 me->upn[0] ? me->upn : me->mail, me->name[0] ? " (" : "",
		 me->name, me->name[0] ? ")" : "");
    else if (rc == -1)
	ctl_graph_fail(run, "user", "GET /me", &resp);
    http_resp_free(&resp);
    return (rc);
}

/* ctl_step_mailbox - GET /users/{mailbox} */

static int ctl_step_mailbox(struct ctl_run *run, const struct ctl_user *me)
{
    const struct conf_account *acct = run->acct;
    struct http_resp resp;
    struct graph_error ge;
    struct ctl_user mbx;
    int     rc;

    http_resp_init(&resp);
    rc = ctl_graph_user(run, acct->mailbox, &mbx, &resp);
    if (rc == 0) {
	ctl_step(run, "ok", "mailbox", "%s exists%s%s%s", acct->mailbox,
		 mbx.name[0] ? " (" : "", mbx.name, mbx.name[0] ? ")" : "");
    } else if (rc == -1) {
	memset(&ge, 0, sizeof(ge));
	(void) graph_parse_error(&resp, &ge);
	if (resp.status == 403
	    && strcmp(ge.code, "ErrorAccessDenied") != 0
	    && (strcmp(ge.code, "Authorization_RequestDenied") == 0
		|| strstr(ge.message, "nsufficient privileges") != NULL)) {
	    /* Reading a user needs User.Read(.All), sending does not. */
	    if (acct->auth == CONF_AUTH_DELEGATED)
		ctl_step(run, "warn", "mailbox", "cannot read the profile of "
			 "%s with the delegated scopes of %s (normal for a "
			 "shared mailbox); this does not block sending",
			 acct->mailbox, me && me->upn[0] ? me->upn :
			 "the signed-in user");
	    else
		ctl_step(run, "warn", "mailbox", "the app may not read user "
			 "objects (no User.Read.All), so %s cannot be looked "
			 "up; this does not block sending: use --send to "
			 "test it", acct->mailbox);
	    rc = 0;
	} else
	    ctl_graph_fail(run, "mailbox", "GET /users/{mailbox}", &resp);
    }
    http_resp_free(&resp);
    return (rc);
}

/* ctl_step_role - report the application role perm (has: the token has it) */

static int ctl_step_role(struct ctl_run *run, const char *perm, int has,
			         struct strbuf *roles, const char *consequence)
{
    if (has)
	ctl_step(run, "ok", "permission", "the token carries the "
		 "application role %s (roles: %s)", perm,
		 strbuf_log_str(roles));
    else
	ctl_step(run, "FAIL", "permission", "the token has no application "
		 "role %s (roles: %s)%s", perm, roles->len
		 || strbuf_failed(roles) ? strbuf_log_str(roles) : "none",
		 consequence);
    return (has);
}

/*
 * ctl_granted_scopes - load the token store entry of the run's account
 * for its granted scopes; -1 (reported, ts cleared) when that fails or
 * no scopes are recorded, so that perm cannot be checked.
 */
static int ctl_granted_scopes(struct ctl_run *run, const char *perm,
			              struct tokstore *ts)
{
    char    err[512];

    if (tokstore_load(run->conf, run->acct->name, ts, err, sizeof(err)) < 0) {
	ctl_step(run, "FAIL", "permission", "%s", err);
	tokstore_clear(ts);
	return (-1);
    }
    if (ts->scope == NULL || ts->scope[0] == 0) {
	ctl_step(run, "--", "permission", "no granted scopes recorded in the "
		 "token store; cannot check %s", perm);
	tokstore_clear(ts);
	return (-1);
    }
    return (0);
}

/* ctl_step_permission - granted scopes (delegated) or roles (app-only) */

static void ctl_step_permission(struct ctl_run *run, const struct ctl_user *me)
{
    const struct conf_account *acct = run->acct;
    struct tokstore ts;
    struct strbuf roles;
    const char *who;
    int     has_send;
    int     other;

    if (acct->auth != CONF_AUTH_DELEGATED) {
	if ((has_send = oauth_token_roles(run->token, "Mail.Send", &roles)) < 0) {
	    ctl_step(run, "--", "permission", "cannot inspect app roles "
		     "(token is opaque)");
	    strbuf_free(&roles);
	    return;
	}
	if (!ctl_step_role(run, "Mail.Send", has_send, &roles, ""))
	    ctl_remedy("add the Microsoft Graph application permission "
		       "Mail.Send to app %s and grant admin consent (m365ctl "
		       "consent-url %s); new roles appear in tokens issued "
		       "after the consent (m365ctl test %s --fresh)",
		       acct->client_id, acct->name, acct->name);
	strbuf_free(&roles);
	return;
    }

    if (ctl_granted_scopes(run, "Mail.Send", &ts) < 0)
	return;
    if (ctl_scope_has(ts.scope, "Mail.Send"))
	ctl_step(run, "ok", "permission", "Mail.Send granted (scopes: %s)",
		 ts.scope);
    else {
	ctl_step(run, "FAIL", "permission", "the granted scopes lack "
		 "Mail.Send (scopes: %s)", ts.scope);
	ctl_remedy("add the delegated Microsoft Graph permission Mail.Send to "
		   "app %s (Entra admin center, App registrations, API "
		   "permissions), then m365ctl login %s", acct->client_id,
		   acct->name);
    }
    other = (me && (me->upn[0] || me->mail[0])
	     && !addr_same(acct->mailbox, me->upn)
	     && !addr_same(acct->mailbox, me->mail));
    who = me && me->upn[0] ? me->upn : "the signed-in user";
    if (other) {
	if (ctl_scope_has(ts.scope, "Mail.Send.Shared"))
	    ctl_step(run, "ok", "send-as", "mailbox %s is not %s's own; "
		     "Mail.Send.Shared granted.  Send As or Send on Behalf "
		     "rights cannot be read through Graph: check with "
		     "--send", acct->mailbox, who);
	else {
	    ctl_step(run, "FAIL", "send-as", "mailbox %s is not %s's own and "
		     "Mail.Send.Shared was not granted: Graph will answer "
		     "403 ErrorSendAsDenied", acct->mailbox, who);
	    ctl_remedy("add \"scopes = Mail.Send.Shared\" to [account %s] in "
		       "%s and run m365ctl login %s; %s also needs Send As or "
		       "Send on Behalf rights on %s (Exchange admin center)",
		       acct->name, run->conf->path, acct->name, who,
		       acct->mailbox);
	}
    }
    tokstore_clear(&ts);
}

/* ctl_step_large - will messages over 4 MB work for this account? */

static void ctl_step_large(struct ctl_run *run)
{
    const struct conf_account *acct = run->acct;
    struct m365_result res;
    const char *perm;
    char    why[300];
    int     deleted, rc;

    switch (draft_large(run->conf, acct, &perm, why, sizeof(why))) {
    case DRAFT_LARGE_NO:
	ctl_step(run, "ok", "large", "off (large_messages = no): messages "
		 "over %ld bytes bounce with 5.3.4", (long) GRAPH_MAX_MIME);
	return;
    case DRAFT_LARGE_AUTO_OFF:
	ctl_step(run, "warn", "large", "off: %s; messages over %ld bytes "
		 "are deferred (4.7.1) until it is granted", why,
		 (long) GRAPH_MAX_MIME);
	ctl_remedy("to send them through a draft, set \"large_messages = "
		   "yes\" in [account %s] and run m365ctl login %s (it asks "
		   "for %s); to bounce them at once instead, set "
		   "\"large_messages = no\"", acct->name, acct->name, perm);
	return;
    case DRAFT_LARGE_UNGRANTED:
	ctl_step(run, "FAIL", "large", "large_messages = yes, but %s: "
		 "messages over 4 MB are deferred", why);
	ctl_remedy("run m365ctl login %s (it asks for %s); the app "
		   "registration %s must list that delegated permission",
		   acct->name, perm, acct->client_id);
	return;
    case DRAFT_LARGE_ON:
	break;
    }
    ctl_log_quiet(1);
    rc = draft_probe(run->conf, run->http, acct, &deleted, &res);
    ctl_log_quiet(0);
    if (rc == 0)
	ctl_step(run, deleted ? "ok" : "warn", "large", "on: messages over "
		 "4 MB go through a draft (%s)", res.text);
    else
	ctl_step(run, "FAIL", "large", "messages over 4 MB cannot go through "
		 "a draft: %s %s", res.dsn, res.text);
}

/* ctl_step_duplicates - can an interrupted send be checked in Sent Items? */

static void ctl_step_duplicates(struct ctl_run *run)
{
    const struct conf_account *acct = run->acct;
    struct m365_result res;
    char    remedy[400];
    int     denied = 0;

    ctl_log_quiet(1);
    result_init(&res);
    if (resolve_probe(run->conf, run->http, acct, run->token, &denied,
		      &res) == 0) {
	ctl_log_quiet(0);
	ctl_step(run, "ok", "duplicates", "prevented: Sent Items of %s is "
		 "readable, so a send that broke off is looked for there "
		 "before it is sent again (for up to sent_items_wait = %ld s)",
		 acct->mailbox, run->conf->sent_items_wait);
	return;
    }
    ctl_log_quiet(0);
    if (denied) {
	resolve_remedy(run->conf, acct, remedy, sizeof(remedy));
	ctl_step(run, "warn", "duplicates", "possible for this account: it "
		 "%s, so a message whose send broke off after it went out "
		 "(a reset, a time-out, 5xx) is sent again and may arrive "
		 "twice", res.text);
	ctl_remedy("to prevent duplicates, %s (%s is the least permission "
		   "that shows internetMessageId)", remedy,
		   resolve_perm(acct));
	return;
    }
    ctl_step(run, "--", "duplicates", "cannot tell whether Sent Items of %s "
	     "is readable: %s", acct->mailbox, res.text);
}

/* ctl_step_rbac - can the app reach a mailbox outside this file? */

static void ctl_step_rbac(struct ctl_run *run)
{
    char    text[800], remedy[400];
    const char *tag;

    ctl_log_quiet(1);
    tag = ctl_rbac_probe(run->conf, run->http, run->acct, run->token, text,
			 sizeof(text), remedy, sizeof(remedy));
    ctl_log_quiet(0);
    if (tag == NULL)
	return;
    ctl_step(run, tag, "rbac", "%s", text);
    if (remedy[0])
	ctl_remedy("%s", remedy);
}

/* ctl_build_message - the test message, in a spooled struct msg */

static int ctl_build_message(struct ctl_run *run, const char *rcpt,
			             struct msg *m, struct m365_result *res)
{
    const struct conf_account *acct = run->acct;
    const char *tmpdir = file_tmpdir(NULL);
    const char *domain;
    struct strbuf text;
    char    path[4096];
    char    date[80];
    char    host[256];
    char    id[33];
    time_t  now = time(NULL);
    struct tm tm;
    int     fd;
    int     rc;

    if (random_hex(id, 16) < 0) {
	result_set(res, M365_SYSTEM, "4.3.0", "no random bytes for the "
		   "Message-ID: OpenSSL's random generator and /dev/urandom "
		   "both failed");
	return (-1);
    }
    snprintf(path, sizeof(path), "%s/m365ctl.XXXXXX", tmpdir);
    if ((fd = mkstemp(path)) < 0) {
	result_set(res, M365_SYSTEM, "4.3.0", "cannot create a "
		   "temporary file in %s: %s", tmpdir, strerror(errno));
	return (-1);
    }
    (void) unlink(path);
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    if (gethostname(host, sizeof(host)) < 0)
	snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = 0;
    domain = strrchr(acct->mailbox, '@');
    domain = domain ? domain + 1 : "m365relay.invalid";

    strbuf_init(&text, STRBUF_MAX_SMALL);
    strbuf_printf(&text,
		  "Date: %s\n"
		  "From: <%s>\n"
		  "To: <%s>\n"
		  "Subject: m365relay connection test\n"
		  "Message-ID: <%s.m365ctl@%s>\n"
		  "MIME-Version: 1.0\n"
		  "Content-Type: text/plain; charset=us-ascii\n"
		  "Content-Transfer-Encoding: 7bit\n"
		  "\n"
		  "This is a test message from \"m365ctl test %s --send\" on "
		  "host %s.\n"
		  "It was sent through Microsoft Graph (sendMail) from "
		  "mailbox %s,\n"
		  "account %s (%s), at %s.\n"
		  "\n"
		  "No action is needed.\n",
		  date, acct->mailbox, rcpt, id, domain, acct->name, host,
		  acct->mailbox, acct->name, ctl_auth_kind(acct), date);
    if (strbuf_failed(&text)) {
	/* Never a test message cut short. */
	result_set(res, M365_PERM, "5.6.0", "the test message would be "
		   "longer than %lu bytes (is the recipient, mailbox or "
		   "account name far too long?)", (unsigned long) text.max);
	close(fd);
	return (-1);
    }
    if (file_write_all(fd, text.data, text.len) < 0) {
	result_set(res, M365_SYSTEM, "4.3.0", "cannot write "
		   "the test message to %s: %s", tmpdir, strerror(errno));
	strbuf_free(&text);
	close(fd);
	return (-1);
    }
    strbuf_free(&text);
    if (lseek(fd, 0, SEEK_SET) < 0) {
	result_set(res, M365_SYSTEM, "4.3.0", "cannot rewind "
		   "the test message: %s", strerror(errno));
	close(fd);
	return (-1);
    }
    rc = msg_read(m, fd, tmpdir, (off_t) acct->max_message_size, res);
    close(fd);
    return (rc);
}

/*
 * ctl_step_send - send a test message like m365-relay does, through
 * exactly this account (deliver_with(), not the sender routing).
 */
static void ctl_step_send(struct ctl_run *run, const char *rcpt)
{
    const struct conf_account *acct = run->acct;
    struct delivery d;
    struct m365_result res;
    struct msg m;
    char   *rcpts[1];

    memset(&m, 0, sizeof(m));
    m.body_fd = -1;
    result_init(&res);
    if (ctl_build_message(run, rcpt, &m, &res) < 0) {
	ctl_step(run, "FAIL", "send", "%s %s", res.dsn, res.text);
	msg_free(&m);
	return;
    }
    rcpts[0] = xstrdup(rcpt);
    memset(&d, 0, sizeof(d));
    d.queue_id = "NOQUEUE";
    d.sender = acct->mailbox;
    d.rcpts = rcpts;
    d.nrcpts = 1;
    d.start = time_now();
    result_init(&res);
    (void) deliver_with(run->conf, run->http, acct, &m, &d, &res);
    ctl_log_quiet(1);
    deliver_log(&d, run->conf, acct, &res);
    ctl_log_quiet(0);
    if (res.dsn[0] == '2')
	ctl_step(run, "ok", "send", "%s test message from %s to %s accepted "
		 "(HTTP %ld, request-id %s): %s", res.dsn, acct->mailbox, rcpt,
		 res.http_status, res.request_id[0] ? res.request_id : "none",
		 res.text);
    else
	ctl_step(run, "FAIL", "send", "%s %s (HTTP %ld, request-id %s)",
		 res.dsn, res.text, res.http_status,
		 res.request_id[0] ? res.request_id : "none");
    free(rcpts[0]);
    msg_free(&m);
}

/* ctl_step_expiry - certificate and client secret expiry (alert.h) */

static void ctl_step_expiry(struct ctl_run *run)
{
    struct alert_expiry e;
    char    text[600];
    time_t  now = time(NULL);
    int     i, w;

    alert_expiry(run->conf, run->acct, now, &e);
    for (i = 0; i < 2; i++)
	if ((w = alert_expiry_text(run->acct, &e, (enum alert_cred) i, now,
				   text, sizeof(text))) >= 0)
	    ctl_step(run, w ? "warn" : "ok", "expiry", "%s", text);
}

/* ctl_test - the connection test of one account */

int     ctl_test(const struct conf *conf, const struct conf_account *acct,
		         int fresh, const char *send_to)
{
    struct ctl_run run;
    struct ctl_user me;
    char    err[512];
    int     have_me = 0;

    memset(&run, 0, sizeof(run));
    memset(&me, 0, sizeof(me));
    run.conf = conf;
    run.acct = acct;

    printf("m365ctl test %s: %s, mailbox %s\n", acct->name,
	   ctl_auth_kind(acct), acct->mailbox ? acct->mailbox : "(none)");
    if (ctl_step_config(&run) < 0)
	goto done;
    ctl_step_expiry(&run);
    if (acct->auth == CONF_AUTH_DELEGATED && ctl_step_signin(&run) < 0)
	goto done;
    if ((run.http = http_create(conf, err, sizeof(err))) == NULL) {
	ctl_step(&run, "FAIL", "https", "%s", err);
	goto done;
    }
    if (ctl_step_token(&run, fresh) < 0)
	goto done;
    if (acct->auth == CONF_AUTH_DELEGATED) {
	if (ctl_step_me(&run, &me) == -2)
	    goto done;
	have_me = (me.upn[0] || me.mail[0]);
    }
    if (run.token == NULL || ctl_step_mailbox(&run, have_me ? &me : NULL) == -2)
	goto done;
    if (run.token == NULL)
	goto done;
    ctl_step_permission(&run, have_me ? &me : NULL);
    ctl_step_large(&run);
    ctl_step_duplicates(&run);
    ctl_step_rbac(&run);		/* ctl_rbac.c */
    if (send_to) {
	if (run.fails)
	    ctl_step(&run, "--", "send", "skipped: fix the failures above "
		     "first");
	else
	    ctl_step_send(&run, send_to);
    }

done:
    return (ctl_run_end(&run));
}

/*
 * The connection test of an inbound [source] (m365-fetch): the
 * account's configuration, the source's recorded state, sign-in and
 * token, the mailbox folder it reads (GET mailFolders/{well-known name},
 * else by displayName with $filter, "A/B" through childFolders, as
 * m365-fetch resolves it), the permission to change messages
 * (Mail.ReadWrite), and the MTA behind deliver_to.
 */

/* ctl_mb_name - a source's mailbox for messages */

static const char *ctl_mb_name(const struct conf_source *src)
{
    const char *mb = source_mailbox(src);

    return (mb ? mb : "(the signed-in user's)");
}

/*
 * ctl_folder_get - a request of source_resolve(): GET url with the
 * run's token; a 401 is answered once with a fresh token.  0 when a
 * reply stands in resp, -2 when no fresh token could be had (reported).
 */
static int ctl_folder_get(void *ctx, const char *url, struct http_resp *resp)
{
    static const char *const hdrs[] = {"Accept: application/json", NULL};
    struct ctl_run *run = ctx;
    struct http_req req;
    int     rc;

    do {
	memset(&req, 0, sizeof(req));
	req.method = "GET";
	req.url = url;
	req.bearer = run->token;
	req.headers = hdrs;
	(void) http_perform(run->http, &req, resp);
    } while ((rc = ctl_renew(run, resp)) == 0);
    return (rc == -2 ? -2 : 0);
}

/* ctl_folder_ambiguous - several folders have the display name */

static void ctl_folder_ambiguous(void *ctx, const char *name)
{
    ctl_step((struct ctl_run *) ctx, "warn", "folder", "more than one folder "
	     "is named \"%s\"; m365-fetch uses the first", name);
}

/* ctl_folder_what - the request of the last folder lookup, for humans */

static void ctl_folder_what(const struct source_folder *f, struct strbuf *what)
{
    if (f->depth == 0 && graph_folder_well_known(f->elem))
	strbuf_printf(what, "GET /users/{mailbox}/mailFolders/%s", f->elem);
    else if (f->depth > 0)
	strbuf_printf(what, "GET /users/{mailbox}/mailFolders/{id}/"
		      "childFolders?$filter=displayName eq '%s'", f->elem);
    else
	strbuf_printf(what, "GET /users/{mailbox}/mailFolders?$filter="
		      "displayName eq '%s'", f->elem);
}

/* ctl_src_access_remedy - what grants a source access to its mailbox */

static void ctl_src_access_remedy(struct ctl_run *run,
				          const struct conf_source *src,
				          int shared, const char *who)
{
    const struct conf_account *acct = run->acct;

    if (acct->auth != CONF_AUTH_DELEGATED)
	ctl_remedy("grant the Microsoft Graph application permission "
		   "Mail.ReadWrite to app %s with admin consent (m365ctl "
		   "consent-url %s), and add mailbox %s to the app's RBAC for "
		   "Applications management scope (or application access "
		   "policy) in Exchange Online; changes can take more than an "
		   "hour", acct->client_id, acct->name, ctl_mb_name(src));
    else if (shared)
	ctl_remedy("%s needs Full Access to mailbox %s (Exchange admin "
		   "center: Recipients, Mailboxes, %s, Delegation, Read and "
		   "manage) and the delegated permissions Mail.ReadWrite and "
		   "Mail.ReadWrite.Shared for app %s (admin consent: m365ctl "
		   "consent-url %s); then m365ctl login %s, which asks for "
		   "them because [source %s] uses the account", who,
		   ctl_mb_name(src), ctl_mb_name(src), acct->client_id,
		   acct->name, acct->name, src->name);
    else
	ctl_remedy("grant the delegated permission Mail.ReadWrite to app %s "
		   "(admin consent: m365ctl consent-url %s), then m365ctl "
		   "login %s, which asks for it because [source %s] uses the "
		   "account", acct->client_id, acct->name, acct->name,
		   src->name);
}

/*
 * ctl_src_fail - the folder step failed (source_resolve() said why):
 * what it means, what to do
 */
static void ctl_src_fail(struct ctl_run *run, const struct conf_source *src,
			         const struct source_folder *f, int shared,
			         const char *who)
{
    const struct http_resp *resp = &f->resp;
    const char *mb = ctl_mb_name(src);
    struct graph_error ge;
    struct strbuf what;

    strbuf_init(&what, STRBUF_MAX_SMALL);
    ctl_folder_what(f, &what);
    memset(&ge, 0, sizeof(ge));
    (void) graph_parse_error(resp, &ge);
    if (f->status == SOURCE_FOLDER_NONE) {
	ctl_step(run, "FAIL", "folder", "no folder named \"%s\" in mailbox %s",
		 f->elem, mb);
	ctl_remedy("create the folder, or fix \"folder\" in [source %s] of %s "
		   "(a well-known name such as inbox, or a display name; "
		   "\"A/B\" names child folder B of A)", src->name,
		   run->conf->path);
    } else if (f->status == SOURCE_FOLDER_MISSING) {
	ctl_step(run, "FAIL", "folder", "%s: folder \"%s\" does not exist in "
		 "mailbox %s (HTTP %ld%s%s)", strbuf_log_str(&what), f->elem, mb,
		 resp->status, ge.code[0] ? " " : "", ge.code);
	ctl_remedy("fix \"folder\" in [source %s] of %s", src->name,
		   run->conf->path);
    } else if (f->status == SOURCE_FOLDER_BAD_REPLY) {
	ctl_step(run, "FAIL", "folder", "%s: Graph sent an unreadable reply",
		 strbuf_log_str(&what));
    } else if (resp->status == 403) {
	ctl_step(run, "FAIL", "folder", "%s: access to mailbox %s denied "
		 "(HTTP 403 %s: %s)", strbuf_log_str(&what), mb, ge.code[0] ?
		 ge.code : "Forbidden", ge.message);
	ctl_src_access_remedy(run, src, shared, who);
    } else if (resp->status == 404
	       && strcasecmp(ge.code, "MailboxNotEnabledForRESTAPI") == 0) {
	ctl_step(run, "FAIL", "folder", "%s: mailbox %s is not enabled for "
		 "the REST API (HTTP 404 %s: %s)", strbuf_log_str(&what), mb,
		 ge.code, ge.message);
	ctl_remedy("%s has no Exchange Online mailbox: assign an Exchange "
		   "Online licence (a shared mailbox needs none), or the "
		   "mailbox is inactive, soft-deleted or on-premises", mb);
    } else if (resp->status == 404) {
	ctl_step(run, "FAIL", "folder", "%s: no user or mailbox %s in tenant "
		 "%s (HTTP 404 %s: %s)", strbuf_log_str(&what), mb,
		 run->acct->tenant, ge.code, ge.message);
	ctl_remedy("check \"mailbox\" of [source %s] (default: the mailbox "
		   "of [account %s]) in %s", src->name, run->acct->name,
		   run->conf->path);
    } else
	ctl_graph_fail(run, "folder", strbuf_log_str(&what), resp);
    strbuf_free(&what);
}

/*
 * ctl_step_folder - resolve the source's folder as m365-fetch does
 * (source_resolve()); 0 found, -1 failed (reported), -2 no token
 * (reported).
 */
static int ctl_step_folder(struct ctl_run *run, const struct conf_source *src,
			           int shared, const char *who)
{
    struct source_walk walk = {ctl_folder_get, ctl_folder_ambiguous, run};
    struct source_folder f;
    const char *want = source_folder(src);
    int     rc = -1;

    switch (source_resolve(run->conf, source_mailbox(src), want, &walk, &f)) {
    case SOURCE_FOLDER_OK:
	if (f.total >= 0 && f.unread >= 0)
	    ctl_step(run, "ok", "folder", "%s of mailbox %s found (\"%s\": "
		     "%ld messages, %ld unread)", want, ctl_mb_name(src),
		     f.name, f.total, f.unread);
	else
	    ctl_step(run, "ok", "folder", "%s of mailbox %s found (\"%s\")",
		     want, ctl_mb_name(src), f.name);
	rc = 0;
	break;
    case SOURCE_FOLDER_EMPTY:
	ctl_step(run, "FAIL", "folder", "[source %s] names no folder "
		 "(folder = \"%s\")", src->name, want);
	ctl_remedy("set \"folder\" in [source %s] (default inbox)", src->name);
	break;
    case SOURCE_FOLDER_FAILED:
	rc = -2;				/* no token: ctl_renew() said why */
	break;
    default:
	ctl_src_fail(run, src, &f, shared, who);
	break;
    }
    source_resolve_free(&f);
    return (rc);
}

/* ctl_step_src_permission - Mail.ReadWrite(.Shared) or the app role */

static void ctl_step_src_permission(struct ctl_run *run,
				            const struct conf_source *src,
				            int shared, const char *who)
{
    struct tokstore ts;
    struct strbuf roles;
    int     has;

    if (run->acct->auth != CONF_AUTH_DELEGATED) {
	if ((has = oauth_token_roles(run->token, "Mail.ReadWrite", &roles)) < 0) {
	    ctl_step(run, "--", "permission", "cannot inspect app roles (token "
		     "is opaque); the after-action (%s) needs the application "
		     "permission Mail.ReadWrite", src->after == CONF_AFTER_MOVE ?
		     "move" : src->after == CONF_AFTER_DELETE ? "delete" :
		     "mark read");
	    strbuf_free(&roles);
	    return;
	}
	if (!ctl_step_role(run, "Mail.ReadWrite", has, &roles, ": m365-fetch "
			   "cannot mark, move or delete messages"))
	    ctl_src_access_remedy(run, src, shared, who);
	strbuf_free(&roles);
	return;
    }

    if (ctl_granted_scopes(run, "Mail.ReadWrite", &ts) < 0)
	return;
    if (shared && !ctl_scope_has(ts.scope, "Mail.ReadWrite.Shared")) {
	ctl_step(run, "FAIL", "permission", "mailbox %s is not %s's own and "
		 "Mail.ReadWrite.Shared was not granted (scopes: %s)",
		 ctl_mb_name(src), who, ts.scope);
	ctl_src_access_remedy(run, src, shared, who);
    } else if (!ctl_scope_has(ts.scope, "Mail.ReadWrite")
	       && !ctl_scope_has(ts.scope, "Mail.ReadWrite.Shared")) {
	ctl_step(run, "FAIL", "permission", "the granted scopes lack "
		 "Mail.ReadWrite (scopes: %s): m365-fetch cannot mark, move "
		 "or delete messages", ts.scope);
	ctl_src_access_remedy(run, src, shared, who);
    } else if (shared)
	ctl_step(run, "ok", "permission", "Mail.ReadWrite.Shared granted and "
		 "%s can open mailbox %s (Full Access)", who, ctl_mb_name(src));
    else
	ctl_step(run, "ok", "permission", "Mail.ReadWrite granted (scopes: "
		 "%s)", ts.scope);
    tokstore_clear(&ts);
}

/* ctl_step_src_state - what m365-fetch recorded for the source */

static void ctl_step_src_state(struct ctl_run *run,
			               const struct conf_source *src)
{
    struct fetchstate st;
    char    err[1024];
    char    when[80];
    char    ok_when[80];

    if (fetchstate_load(run->conf, src->name, &st, err, sizeof(err)) < 0) {
	ctl_step(run, "FAIL", "state", "%s", err);
	return;
    }
    if (st.offline) {
	ctl_fmt_time(when, sizeof(when), st.offline_since);
	ctl_step(run, "warn", "state", "source %s is offline since %s: %s; "
		 "m365-fetch brings it back online by itself at the next "
		 "round that works", src->name, when, st.last_error ?
		 st.last_error : "see the log");
	if (st.remedy && st.remedy[0])
	    ctl_remedy("%s", st.remedy);
    } else if (st.last_round <= 0 && st.last_success <= 0) {
	ctl_step(run, "--", "state", "m365-fetch has not run source %s yet",
		 src->name);
    } else {
	ctl_fmt_time(when, sizeof(when), st.last_round);
	ctl_fmt_time(ok_when, sizeof(ok_when), st.last_success);
	if (st.last_success >= st.last_round)
	    ctl_step(run, "ok", "state", "last round %s completed; %ld "
		     "injected, %ld rejected, %lu pending", when, st.injected,
		     st.rejected, (unsigned long) st.npending);
	else
	    ctl_step(run, "warn", "state", "last round %s did not complete "
		     "(%s); last success %s; %lu pending", when,
		     st.last_error ? st.last_error : "see the log", ok_when,
		     (unsigned long) st.npending);
    }
    fetchstate_clear(&st);
}

/* ctl_deliver_sendmail - report inject_probe() of deliver_to = sendmail */

static void ctl_deliver_sendmail(struct ctl_run *run,
				         const struct conf_source *src,
				         const struct inject_probe *p)
{
    if (p->step == INJECT_STEP_READY) {
	ctl_step(run, "ok", "deliver", "sendmail: %s (runs as \"%s -i [-B "
		 "8BITMIME] -f SENDER -- RECIPIENTS\")", p->reply, p->relay);
	return;
    }
    ctl_step(run, "FAIL", "deliver", "sendmail: %s", p->reply);
    if (p->step == INJECT_STEP_PROGRAM)
	ctl_remedy("install the MTA (Postfix, Sendmail and Exim provide "
		   "/usr/sbin/sendmail), set sendmail_path in [global] of %s, "
		   "or use deliver_to = smtp://127.0.0.1:25 in [source %s]",
		   run->conf->path, src->name);
    else if (p->err == 0)
	ctl_remedy("set sendmail_path in [global] of %s to the MTA's "
		   "sendmail program", run->conf->path);
    else
	ctl_remedy("make it executable (chmod 755 %s) or set sendmail_path in "
		   "[global] of %s to the MTA's sendmail program", p->relay,
		   run->conf->path);
}

/* ctl_deliver_unreached - report an SMTP probe that got no connection */

static void ctl_deliver_unreached(struct ctl_run *run,
				          const struct conf_source *src,
				          const struct inject_probe *p)
{
    if (p->step == INJECT_STEP_RESOLVE || p->err != ETIMEDOUT)
	ctl_step(run, "FAIL", "deliver", "%s: cannot connect to %s port %ld: "
		 "%s", src->deliver_to, src->deliver_host, src->deliver_port,
		 p->step == INJECT_STEP_RESOLVE ? p->reply : strerror(p->err));
    else
	ctl_step(run, "FAIL", "deliver", "%s: cannot connect to %s port %ld: "
		 "no connection within %d s", src->deliver_to,
		 src->deliver_host, src->deliver_port, CTL_SMTP_TIMEOUT);
    if (p->step == INJECT_STEP_RESOLVE)
	ctl_remedy("fix deliver_to in [source %s] of %s (an address such as "
		   "smtp://127.0.0.1:25 or smtp://[::1]:25)", src->name,
		   run->conf->path);
    else if (p->err == ETIMEDOUT)
	ctl_remedy("a firewall drops the connection or the MTA is "
		   "overloaded: check the packet filter for port %ld, the "
		   "MTA, and deliver_to in [source %s]", src->deliver_port,
		   src->name);
    else
	ctl_remedy("start the MTA and make it listen there (Postfix: "
		   "systemctl start postfix; inet_interfaces in main.cf, the "
		   "smtp service in master.cf), or fix deliver_to in [source "
		   "%s] of %s; messages stay unread in Microsoft 365 until the "
		   "MTA takes them", src->name, run->conf->path);
}

/*
 * ctl_deliver_smtp - report inject_probe() of deliver_to = smtp://:
 * connection, greeting, EHLO (the session m365-fetch opens), and the
 * 8BITMIME an 8-bit message needs
 */
static void ctl_deliver_smtp(struct ctl_run *run,
			             const struct conf_source *src,
			             const struct inject_probe *p)
{
    const char *what = p->step == INJECT_STEP_HELLO ? "answer to EHLO" :
    "greeting";

    switch (p->step) {
    case INJECT_STEP_RESOLVE:
    case INJECT_STEP_CONNECT:
	ctl_deliver_unreached(run, src, p);
	return;
    case INJECT_STEP_GREETING:
    case INJECT_STEP_HELLO:
	if (p->code == 0) {
	    if (p->err == ETIMEDOUT)
		ctl_step(run, "FAIL", "deliver", "%s: connected, but no %s "
			 "within %d s", src->deliver_to, what, CTL_SMTP_TIMEOUT);
	    else
		ctl_step(run, "FAIL", "deliver", "%s: connected, but no %s: "
			 "%s", src->deliver_to, what, p->reply);
	    ctl_remedy("the service on %s port %ld is not a working SMTP "
		       "server: check the MTA and deliver_to in [source %s]",
		       src->deliver_host, src->deliver_port, src->name);
	} else {
	    if (p->step == INJECT_STEP_GREETING)
		ctl_step(run, "FAIL", "deliver", "%s: the MTA refuses the "
			 "connection: %s", src->deliver_to, p->reply);
	    else
		ctl_step(run, "FAIL", "deliver", "%s: the MTA refuses EHLO%s: "
			 "%s", src->deliver_to, p->code == 421 ? "" :
			 " and HELO", p->reply);
	    ctl_remedy("the MTA does not accept mail from this host now: "
		       "allow connections from %s (Postfix: mynetworks, "
		       "smtpd_client_restrictions, smtpd_helo_restrictions, "
		       "postscreen) and check its log", src->deliver_host);
	}
	return;
    default:
	break;
    }
    ctl_step(run, "ok", "deliver", "%s: the MTA answers: %s",
	     src->deliver_to, p->reply);
    if (!p->ext_8bitmime) {
	ctl_step(run, "warn", "deliver", "%s: the MTA does not offer 8BITMIME "
		 "(RFC 6152): m365-fetch passes 7-bit messages only; a "
		 "message with 8-bit content puts source %s offline and "
		 "stays unread in Microsoft 365", src->deliver_to, src->name);
	ctl_remedy("enable 8BITMIME in the MTA at %s (Postfix offers it "
		   "unless smtpd_discard_ehlo_keywords lists it)", p->relay);
    }
}

/*
 * ctl_step_deliver - deliver_to checked through the code m365-fetch
 * injects with (inject_probe()): the MTA's session, or the sendmail
 * program.  No mail is sent.
 */
static void ctl_step_deliver(struct ctl_run *run,
			             const struct conf_source *src)
{
    struct inject_probe p;
    struct inject *inj;
    char    err[400];

    if ((inj = inject_create(run->conf, src->deliver_to, err,
			     sizeof(err))) == NULL) {
	ctl_step(run, "FAIL", "deliver", "%s", err);
	ctl_remedy("fix deliver_to in [source %s] of %s", src->name,
		   run->conf->path);
	return;
    }
    (void) inject_probe(inj, CTL_SMTP_TIMEOUT, &p);
    inject_free(inj);
    if (src->deliver_host == NULL)
	ctl_deliver_sendmail(run, src, &p);
    else
	ctl_deliver_smtp(run, src, &p);
}

/* ctl_src_graph - sign-in, token, user, folder, permission; stops early */

static void ctl_src_graph(struct ctl_run *run, const struct conf_source *src,
			          int fresh)
{
    const struct conf_account *acct = run->acct;
    const char *mb = source_mailbox(src);
    const char *who = "the signed-in user";
    struct ctl_user me;
    char    err[512];
    int     shared = 0;
    int     rc;

    memset(&me, 0, sizeof(me));
    if (acct->auth == CONF_AUTH_DELEGATED && ctl_step_signin(run) < 0)
	return;
    if ((run->http = http_create(run->conf, err, sizeof(err))) == NULL) {
	ctl_step(run, "FAIL", "https", "%s", err);
	return;
    }
    if (ctl_step_token(run, fresh) < 0)
	return;
    if (acct->auth == CONF_AUTH_DELEGATED) {
	if (ctl_step_me(run, &me) == -2 || run->token == NULL)
	    return;
	if (me.upn[0] || me.mail[0]) {
	    who = me.upn[0] ? me.upn : me.mail;
	    shared = (mb != NULL && !addr_same(mb, me.upn)
		      && !addr_same(mb, me.mail));
	} else
	    shared = source_shared(src);
    }
    /* A failed folder step already named the permissions to grant. */
    rc = ctl_step_folder(run, src, shared, who);
    if (rc < 0 || run->token == NULL)
	return;
    ctl_step_src_permission(run, src, shared, who);
}

/* ctl_test_source - the connection test of one [source] */

int     ctl_test_source(const struct conf *conf,
			        const struct conf_source *src, int fresh)
{
    struct ctl_run run;

    memset(&run, 0, sizeof(run));
    run.conf = conf;
    run.acct = src->acct;

    printf("m365ctl test source %s: account %s (%s), mailbox %s, folder %s, "
	   "deliver_to %s\n", src->name, src->acct->name,
	   ctl_auth_kind(src->acct), ctl_mb_name(src),
	   src->folder ? src->folder : "inbox", src->deliver_to);
    if (ctl_step_config(&run) == 0) {
	ctl_step_src_state(&run, src);
	ctl_src_graph(&run, src, fresh);
    } else
	ctl_step_src_state(&run, src);
    ctl_step_deliver(&run, src);

    return (ctl_run_end(&run));
}
