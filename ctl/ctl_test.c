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
 *
 *	int	ctl_get_user(http, conf, mailbox, token, user, resp)
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
 *	folder      the folder resolved as m365-fetch does it: GET
 *	            /users/{mailbox}/mailFolders/{well-known name}, else
 *	            mailFolders?$filter=displayName eq 'NAME' ("A/B" through
 *	            childFolders); 403 ErrorAccessDenied names Mail.ReadWrite
 *	            and the RBAC scope (app-only) or Mail.ReadWrite(.Shared)
 *	            and Full Access (delegated);
 *	permission  delegated: Mail.ReadWrite granted (Mail.ReadWrite.Shared
 *	            for another user's mailbox); app-only: the role
 *	            Mail.ReadWrite when the token is a JWT;
 *	deliver     smtp://HOST:PORT: a TCP connection and the MTA's 220
 *	            greeting within CTL_SMTP_TIMEOUT seconds each (then
 *	            QUIT); sendmail: sendmail_path is an executable file.
 *	The deliver step runs even when an earlier step failed.
 *
 *	ctl_get_user() reads GET /me (mailbox NULL) or GET /users/{mailbox}
 *	into a struct ctl_user.
 * DIAGNOSTICS
 *	ctl_test() and ctl_test_source() return CTL_OK when every step
 *	passed, else CTL_FAIL.
 *	ctl_get_user() returns 0 on HTTP 200 with a parsable body, else -1
 *	(resp tells why).  Token values are never printed.
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <openssl/evp.h>

#include "auth.h"
#include "conf.h"
#include "ctl.h"
#include "deliver.h"
#include "fetchstate.h"
#include "graph.h"
#include "http.h"
#include "log.h"
#include "msg.h"
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

/* ctl_json_copy - copy a string member of a JSON object */

static void ctl_json_copy(const cJSON *obj, const char *key, char *buf,
			          size_t len)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (cJSON_IsString(item) && item->valuestring)
	log_printable(buf, len, item->valuestring, strlen(item->valuestring));
    else if (len > 0)
	buf[0] = 0;
}

/* ctl_get_user - GET /me or GET /users/{mailbox} */

int     ctl_get_user(struct http *http, const struct conf *conf,
		             const char *mailbox, const char *token,
		             struct ctl_user *user, struct http_resp *resp)
{
    struct http_req req;
    struct strbuf url;
    cJSON  *root;
    size_t  n;
    int     rc;

    memset(user, 0, sizeof(*user));
    if (mailbox) {
	rc = graph_get(http, conf, mailbox, "", token, resp);
    } else {
	strbuf_init(&url, STRBUF_MAX_SMALL);
	n = strlen(conf->graph_url);
	while (n > 0 && conf->graph_url[n - 1] == '/')
	    n--;
	strbuf_append(&url, conf->graph_url, n);
	strbuf_puts(&url, "/v1.0/me");
	memset(&req, 0, sizeof(req));
	req.method = "GET";
	req.url = strbuf_str(&url);
	req.bearer = token;
	rc = http_perform(http, &req, resp);
	strbuf_free(&url);
    }
    if (rc < 0 || resp->status != 200)
	return (-1);
    if (resp->body.data == NULL
	|| (root = cJSON_Parse(resp->body.data)) == NULL)
	return (-1);
    ctl_json_copy(root, "id", user->id, sizeof(user->id));
    ctl_json_copy(root, "userPrincipalName", user->upn, sizeof(user->upn));
    ctl_json_copy(root, "mail", user->mail, sizeof(user->mail));
    ctl_json_copy(root, "displayName", user->name, sizeof(user->name));
    cJSON_Delete(root);
    return (0);
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

/* ctl_b64url_decode - decode one base64url JWT segment; NUL-terminated */

static unsigned char *ctl_b64url_decode(const char *in, size_t n,
					        size_t *len_r)
{
    unsigned char *buf;
    unsigned char *out;
    size_t  i, m;
    int     got, pad;

    if (n == 0 || n > STRBUF_MAX_SMALL * 4)
	return (NULL);
    m = (n + 3) / 4 * 4;
    buf = xmalloc(m + 1);
    for (i = 0; i < n; i++) {
	char    c = in[i];

	if (c == '-')
	    c = '+';
	else if (c == '_')
	    c = '/';
	else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
		   || (c >= '0' && c <= '9'))) {
	    free(buf);
	    return (NULL);
	}
	buf[i] = (unsigned char) c;
    }
    for (pad = 0; i < m; i++, pad++)
	buf[i] = '=';
    buf[m] = 0;
    if (pad > 2) {
	free(buf);
	return (NULL);
    }
    out = xmalloc(m / 4 * 3 + 1);
    got = EVP_DecodeBlock(out, buf, (int) m);
    free(buf);
    if (got < pad) {
	free(out);
	return (NULL);
    }
    got -= pad;
    out[got] = 0;
    *len_r = (size_t) got;
    return (out);
}

/*
 * ctl_jwt_roles - the application roles of a JWT access token, space
 * separated, into roles (initialized here; the caller frees it).  1 if
 * one of them is want, 0 if not, -1 for an opaque token (no roles).
 */
static int ctl_jwt_roles(const char *token, const char *want,
			         struct strbuf *roles)
{
    const char *dot1, *dot2;
    unsigned char *payload;
    size_t  len;
    cJSON  *claims;
    const cJSON *role;
    int     has = 0;

    strbuf_init(roles, STRBUF_MAX_SMALL);
    if ((dot1 = strchr(token, '.')) == NULL
	|| (dot2 = strchr(dot1 + 1, '.')) == NULL
	|| strchr(dot2 + 1, '.') != NULL)
	return (-1);
    if ((payload = ctl_b64url_decode(dot1 + 1, (size_t) (dot2 - dot1 - 1),
				     &len)) == NULL)
	return (-1);
    claims = cJSON_ParseWithLength((const char *) payload, len);
    OPENSSL_cleanse(payload, len);
    free(payload);
    if (!cJSON_IsObject(claims)) {
	cJSON_Delete(claims);
	return (-1);
    }
    cJSON_ArrayForEach(role, cJSON_GetObjectItemCaseSensitive(claims,
							      "roles")) {
	if (!cJSON_IsString(role) || role->valuestring == NULL)
	    continue;
	if (strcmp(role->valuestring, want) == 0)
	    has = 1;
	strbuf_printf(roles, "%s%s", roles->len ? " " : "",
		      role->valuestring);
    }
    cJSON_Delete(claims);
    return (has);
}

/* ctl_step_role - report the application role perm (has: the token has it) */

static int ctl_step_role(struct ctl_run *run, const char *perm, int has,
			         struct strbuf *roles, const char *consequence)
{
    if (has)
	ctl_step(run, "ok", "permission", "the token carries the "
		 "application role %s (roles: %s)", perm, strbuf_str(roles));
    else
	ctl_step(run, "FAIL", "permission", "the token has no application "
		 "role %s (roles: %s)%s", perm, roles->len ?
		 strbuf_str(roles) : "none", consequence);
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
	if ((has_send = ctl_jwt_roles(run->token, "Mail.Send", &roles)) < 0) {
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
	     && !ctl_same_address(acct->mailbox, me->upn)
	     && !ctl_same_address(acct->mailbox, me->mail));
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

    snprintf(path, sizeof(path), "%s/m365ctl.XXXXXX", tmpdir);
    if ((fd = mkstemp(path)) < 0) {
	result_set(res, M365_SYSTEM, EX_TEMPFAIL, "4.3.0", "cannot create a "
		   "temporary file in %s: %s", tmpdir, strerror(errno));
	return (-1);
    }
    (void) unlink(path);
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    if (gethostname(host, sizeof(host)) < 0)
	snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = 0;
    random_hex(id, 16);
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
    if (file_write_all(fd, text.data, text.len) < 0) {
	result_set(res, M365_SYSTEM, EX_TEMPFAIL, "4.3.0", "cannot write "
		   "the test message to %s: %s", tmpdir, strerror(errno));
	strbuf_free(&text);
	close(fd);
	return (-1);
    }
    strbuf_free(&text);
    if (lseek(fd, 0, SEEK_SET) < 0) {
	result_set(res, M365_SYSTEM, EX_TEMPFAIL, "4.3.0", "cannot rewind "
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
    const char *mb = ctl_source_mailbox(src);

    return (mb ? mb : "(the signed-in user's)");
}

/*
 * ctl_src_get - GET /users/{mailbox}{suffix} (/me when mailbox is NULL);
 * a 401 is answered once with a fresh token.  0 on 2xx, -1 otherwise
 * (resp tells why), -2 when no fresh token could be had (reported).
 */
static int ctl_src_get(struct ctl_run *run, const char *mailbox,
		               const char *suffix, struct http_resp *resp)
{
    int     rc;

    for (;;) {
	(void) graph_get(run->http, run->conf, mailbox, suffix, run->token,
			 resp);
	if (resp->status >= 200 && resp->status < 300)
	    return (0);
	if ((rc = ctl_renew(run, resp)) < 0)
	    return (rc);
    }
}

/*
 * ctl_folder_query - the request for one folder path element: a
 * well-known name at the top, else displayName eq 'NAME' under parent
 * (NULL: the top).  what describes it for humans.  free() the result.
 */
static char *ctl_folder_query(const char *parent, const char *name,
			              struct strbuf *what)
{
    if (parent == NULL && graph_folder_well_known(name))
	strbuf_printf(what, "GET /users/{mailbox}/mailFolders/%s", name);
    else if (parent)
	strbuf_printf(what, "GET /users/{mailbox}/mailFolders/{id}/"
		      "childFolders?$filter=displayName eq '%s'", name);
    else
	strbuf_printf(what, "GET /users/{mailbox}/mailFolders?$filter="
		      "displayName eq '%s'", name);
    return (graph_folder_query(parent, name));
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

/* ctl_src_fail - the folder step failed: what it means, what to do */

static void ctl_src_fail(struct ctl_run *run, const struct conf_source *src,
			         const char *what, const char *elem, int shared,
			         const char *who, const struct http_resp *resp)
{
    struct graph_error ge;
    const char *mb = ctl_mb_name(src);

    memset(&ge, 0, sizeof(ge));
    (void) graph_parse_error(resp, &ge);
    if (resp->status == 403) {
	ctl_step(run, "FAIL", "folder", "%s: access to mailbox %s denied "
		 "(HTTP 403 %s: %s)", what, mb, ge.code[0] ? ge.code :
		 "Forbidden", ge.message);
	ctl_src_access_remedy(run, src, shared, who);
	return;
    }
    if (resp->status == 404
	&& strcasecmp(ge.code, "MailboxNotEnabledForRESTAPI") == 0) {
	ctl_step(run, "FAIL", "folder", "%s: mailbox %s is not enabled for "
		 "the REST API (HTTP 404 %s: %s)", what, mb, ge.code,
		 ge.message);
	ctl_remedy("%s has no Exchange Online mailbox: assign an Exchange "
		   "Online licence (a shared mailbox needs none), or the "
		   "mailbox is inactive, soft-deleted or on-premises", mb);
	return;
    }
    if ((resp->status == 404 || resp->status == 400)
	&& (strcasecmp(ge.code, "ErrorItemNotFound") == 0
	    || strcasecmp(ge.code, "ErrorInvalidIdMalformed") == 0
	    || strcasecmp(ge.code, "ErrorFolderNotFound") == 0)) {
	ctl_step(run, "FAIL", "folder", "%s: folder \"%s\" does not exist in "
		 "mailbox %s (HTTP %ld %s)", what, elem, mb, resp->status,
		 ge.code);
	ctl_remedy("fix \"folder\" in [source %s] of %s", src->name,
		   run->conf->path);
	return;
    }
    if (resp->status == 404) {
	ctl_step(run, "FAIL", "folder", "%s: no user or mailbox %s in tenant "
		 "%s (HTTP 404 %s: %s)", what, mb, run->acct->tenant,
		 ge.code[0] ? ge.code : "ResourceNotFound", ge.message);
	ctl_remedy("check \"mailbox\" of [source %s] (default: the mailbox "
		   "of [account %s]) in %s", src->name, run->acct->name,
		   run->conf->path);
	return;
    }
    ctl_graph_fail(run, "folder", what, resp);
}

/*
 * ctl_step_folder - resolve the source's folder like m365-fetch does;
 * 0 found, -1 failed (reported), -2 no token (reported).
 */
static int ctl_step_folder(struct ctl_run *run, const struct conf_source *src,
			           int shared, const char *who)
{
    const char *want = src->folder && *src->folder ? src->folder : "inbox";
    struct http_resp resp;
    struct strbuf what;
    cJSON  *root, *val, *item, *v;
    char   *copy = xstrdup(want);
    char   *elem, *slash, *suffix;
    char   *id = NULL;
    char    name[200] = "";
    long    total = -1, unread = -1;
    int     listed;
    int     rc = 0;

    strbuf_init(&what, STRBUF_MAX_SMALL);
    for (elem = copy; elem && rc == 0; elem = slash ? slash + 1 : NULL) {
	if ((slash = strchr(elem, '/')) != NULL)
	    *slash = 0;
	if (*elem == 0)
	    continue;
	strbuf_reset(&what);
	suffix = ctl_folder_query(id, elem, &what);
	http_resp_init(&resp);
	rc = ctl_src_get(run, ctl_source_mailbox(src), suffix, &resp);
	free(suffix);
	if (rc == -1)
	    ctl_src_fail(run, src, strbuf_str(&what), elem, shared, who, &resp);
	if (rc < 0) {
	    http_resp_free(&resp);
	    break;
	}
	root = resp.body.len ? cJSON_ParseWithLength(resp.body.data,
						     resp.body.len) : NULL;
	http_resp_free(&resp);
	val = cJSON_GetObjectItemCaseSensitive(root, "value");
	item = cJSON_IsArray(val) ? cJSON_GetArrayItem(val, 0) : root;
	v = cJSON_GetObjectItemCaseSensitive(item, "id");
	free(id);
	id = cJSON_IsString(v) && v->valuestring && *v->valuestring ?
	    xstrdup(v->valuestring) : NULL;
	ctl_json_copy(item, "displayName", name, sizeof(name));
	v = cJSON_GetObjectItemCaseSensitive(item, "totalItemCount");
	total = cJSON_IsNumber(v) ? (long) v->valuedouble : -1;
	v = cJSON_GetObjectItemCaseSensitive(item, "unreadItemCount");
	unread = cJSON_IsNumber(v) ? (long) v->valuedouble : -1;
	if (cJSON_IsArray(val) && cJSON_GetArraySize(val) > 1)
	    ctl_step(run, "warn", "folder", "more than one folder is named "
		     "\"%s\"; m365-fetch uses the first", elem);
	listed = cJSON_IsArray(val);
	cJSON_Delete(root);
	if (id == NULL) {
	    if (!listed)
		ctl_step(run, "FAIL", "folder", "%s: Graph sent an unreadable "
			 "reply", strbuf_str(&what));
	    else {
		ctl_step(run, "FAIL", "folder", "no folder named \"%s\" in "
			 "mailbox %s", elem, ctl_mb_name(src));
		ctl_remedy("create the folder, or fix \"folder\" in [source "
			   "%s] of %s (a well-known name such as inbox, or a "
			   "display name; \"A/B\" names child folder B of A)",
			   src->name, run->conf->path);
	    }
	    rc = -1;
	}
    }
    if (rc == 0 && id == NULL) {
	ctl_step(run, "FAIL", "folder", "[source %s] names no folder "
		 "(folder = \"%s\")", src->name, want);
	ctl_remedy("set \"folder\" in [source %s] (default inbox)", src->name);
	rc = -1;
    }
    if (rc == 0) {
	if (total >= 0 && unread >= 0)
	    ctl_step(run, "ok", "folder", "%s of mailbox %s found (\"%s\": "
		     "%ld messages, %ld unread)", want, ctl_mb_name(src),
		     name, total, unread);
	else
	    ctl_step(run, "ok", "folder", "%s of mailbox %s found (\"%s\")",
		     want, ctl_mb_name(src), name);
    }
    strbuf_free(&what);
    free(id);
    free(copy);
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
	if ((has = ctl_jwt_roles(run->token, "Mail.ReadWrite", &roles)) < 0) {
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

/* ctl_ms_left - milliseconds until deadline (monotonic seconds), >= 0 */

static int ctl_ms_left(double deadline)
{
    double  left = deadline - time_mono();

    return (left <= 0 ? 0 : (int) (left * 1000) + 1);
}

/*
 * ctl_tcp_connect - TCP connection to host:port within timeout seconds;
 * the socket, or -1 with why filled and *err_r the errno (ETIMEDOUT for
 * the timeout, 0 for a name that does not resolve).
 */
static int ctl_tcp_connect(const char *host, long port, int timeout,
			           char *why, size_t len, int *err_r)
{
    struct addrinfo hints, *res, *ai;
    struct pollfd pfd;
    socklen_t elen;
    double  deadline = time_mono() + timeout;
    char    portstr[16];
    int     fd = -1, err = ECONNREFUSED, gai, n;

    *err_r = 0;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(portstr, sizeof(portstr), "%ld", port);
    if ((gai = getaddrinfo(host, portstr, &hints, &res)) != 0) {
	snprintf(why, len, "cannot resolve host %s: %s", host,
		 gai_strerror(gai));
	return (-1);
    }
    for (ai = res; ai; ai = ai->ai_next) {
	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC
		    | SOCK_NONBLOCK, ai->ai_protocol);
	if (fd < 0) {
	    err = errno;
	    continue;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
	    break;
	err = errno;
	if (err == EINPROGRESS) {
	    pfd.fd = fd;
	    pfd.events = POLLOUT;
	    while ((n = poll(&pfd, 1, ctl_ms_left(deadline))) < 0
		   && errno == EINTR)
		 /* void */ ;
	    if (n == 0)
		err = ETIMEDOUT;
	    else if (n < 0)
		err = errno;
	    else {
		elen = sizeof(err);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
		    err = errno;
		if (err == 0)
		    break;
	    }
	}
	close(fd);
	fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
	*err_r = err;
	if (err == ETIMEDOUT)
	    snprintf(why, len, "no connection within %d s", timeout);
	else
	    snprintf(why, len, "%s", strerror(err));
    }
    return (fd);
}

/*
 * ctl_smtp_greeting - read the (possibly multi-line) greeting within
 * timeout seconds; its last line (printable, without CRLF) in line.
 * The reply code, or -1 with why filled.
 */
static int ctl_smtp_greeting(int fd, int timeout, char *line, size_t len,
			             char *why, size_t wlen)
{
    struct pollfd pfd;
    double  deadline = time_mono() + timeout;
    char    buf[2048];
    size_t  have = 0, start = 0, i, end;
    ssize_t got;
    int     n;

    for (;;) {
	/* Complete lines: "220-..." continues, "220 ..." or "220" ends. */
	for (i = start; i < have; i++) {
	    if (buf[i] != '\n')
		continue;
	    end = i;
	    if (end > start && buf[end - 1] == '\r')
		end--;
	    log_printable(line, len, buf + start, end - start);
	    if (end - start < 3 || buf[start] < '1' || buf[start] > '5'
		|| buf[start + 1] < '0' || buf[start + 1] > '9'
		|| buf[start + 2] < '0' || buf[start + 2] > '9'
		|| (end - start > 3 && buf[start + 3] != ' '
		    && buf[start + 3] != '-')) {
		snprintf(why, wlen, "not an SMTP greeting: %.200s", line);
		return (-1);
	    }
	    if (end - start == 3 || buf[start + 3] == ' ')
		return ((buf[start] - '0') * 100 + (buf[start + 1] - '0') * 10
			+ (buf[start + 2] - '0'));
	    start = i + 1;
	}
	if (have == sizeof(buf)) {
	    snprintf(why, wlen, "the greeting is longer than %lu bytes",
		     (unsigned long) sizeof(buf));
	    return (-1);
	}
	pfd.fd = fd;
	pfd.events = POLLIN;
	while ((n = poll(&pfd, 1, ctl_ms_left(deadline))) < 0 && errno == EINTR)
	     /* void */ ;
	if (n == 0) {
	    snprintf(why, wlen, "no greeting within %d s", timeout);
	    return (-1);
	}
	if (n < 0) {
	    snprintf(why, wlen, "poll: %s", strerror(errno));
	    return (-1);
	}
	got = read(fd, buf + have, sizeof(buf) - have);
	if (got < 0 && (errno == EINTR || errno == EAGAIN))
	    continue;
	if (got < 0) {
	    snprintf(why, wlen, "read: %s", strerror(errno));
	    return (-1);
	}
	if (got == 0) {
	    snprintf(why, wlen, "the connection was closed before a "
		     "greeting%s", have ? " line was complete" : " was sent");
	    return (-1);
	}
	have += (size_t) got;
    }
}

/* ctl_step_deliver_smtp - deliver_to = smtp://HOST:PORT answers 220 */

static void ctl_step_deliver_smtp(struct ctl_run *run,
				          const struct conf_source *src)
{
    static const char quit[] = "QUIT\r\n";
    char    why[300];
    char    line[600];
    int     fd, err, code;

    fd = ctl_tcp_connect(src->deliver_host, src->deliver_port,
			 CTL_SMTP_TIMEOUT, why, sizeof(why), &err);
    if (fd < 0) {
	ctl_step(run, "FAIL", "deliver", "%s: cannot connect to %s port %ld: "
		 "%s", src->deliver_to, src->deliver_host, src->deliver_port,
		 why);
	if (err == 0)
	    ctl_remedy("fix deliver_to in [source %s] of %s (an address such "
		       "as smtp://127.0.0.1:25 or smtp://[::1]:25)", src->name,
		       run->conf->path);
	else if (err == ETIMEDOUT)
	    ctl_remedy("a firewall drops the connection or the MTA is "
		       "overloaded: check the packet filter for port %ld, the "
		       "MTA, and deliver_to in [source %s]", src->deliver_port,
		       src->name);
	else
	    ctl_remedy("start the MTA and make it listen there (Postfix: "
		       "systemctl start postfix; inet_interfaces in main.cf, "
		       "the smtp service in master.cf), or fix deliver_to in "
		       "[source %s] of %s; messages stay unread in Microsoft "
		       "365 until the MTA takes them", src->name,
		       run->conf->path);
	return;
    }
    code = ctl_smtp_greeting(fd, CTL_SMTP_TIMEOUT, line, sizeof(line), why,
			     sizeof(why));
    if (code == 220)
	(void) send(fd, quit, sizeof(quit) - 1, MSG_NOSIGNAL);
    close(fd);
    if (code < 0) {
	ctl_step(run, "FAIL", "deliver", "%s: connected, but %s",
		 src->deliver_to, why);
	ctl_remedy("the service on %s port %ld is not a working SMTP server: "
		   "check the MTA and deliver_to in [source %s]",
		   src->deliver_host, src->deliver_port, src->name);
    } else if (code != 220) {
	ctl_step(run, "FAIL", "deliver", "%s: the MTA refuses the connection: "
		 "%s", src->deliver_to, line);
	ctl_remedy("the MTA does not accept mail from this host now: allow "
		   "connections from %s (Postfix: mynetworks, "
		   "smtpd_client_restrictions, postscreen) and check its log",
		   src->deliver_host);
    } else
	ctl_step(run, "ok", "deliver", "%s: the MTA answers: %s",
		 src->deliver_to, line);
}

/* ctl_step_deliver_sendmail - deliver_to = sendmail: is it executable? */

static void ctl_step_deliver_sendmail(struct ctl_run *run,
				              const struct conf_source *src)
{
    const char *path = run->conf->sendmail_path && *run->conf->sendmail_path ?
    run->conf->sendmail_path : "/usr/sbin/sendmail";
    struct stat sb;

    if (stat(path, &sb) < 0) {
	ctl_step(run, "FAIL", "deliver", "sendmail: %s: %s", path,
		 strerror(errno));
	ctl_remedy("install the MTA (Postfix, Sendmail and Exim provide "
		   "/usr/sbin/sendmail), set sendmail_path in [global] of %s, "
		   "or use deliver_to = smtp://127.0.0.1:25 in [source %s]",
		   run->conf->path, src->name);
    } else if (!S_ISREG(sb.st_mode)) {
	ctl_step(run, "FAIL", "deliver", "sendmail: %s is not a regular file",
		 path);
	ctl_remedy("set sendmail_path in [global] of %s to the MTA's "
		   "sendmail program", run->conf->path);
    } else if (access(path, X_OK) < 0) {
	ctl_step(run, "FAIL", "deliver", "sendmail: %s is not executable "
		 "(%s)", path, strerror(errno));
	ctl_remedy("make it executable (chmod 755 %s) or set sendmail_path in "
		   "[global] of %s to the MTA's sendmail program", path,
		   run->conf->path);
    } else
	ctl_step(run, "ok", "deliver", "sendmail: %s is executable (runs as "
		 "\"%s -i -f SENDER -- RECIPIENTS\")", path, path);
}

/* ctl_src_graph - sign-in, token, user, folder, permission; stops early */

static void ctl_src_graph(struct ctl_run *run, const struct conf_source *src,
			          int fresh)
{
    const struct conf_account *acct = run->acct;
    const char *mb = ctl_source_mailbox(src);
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
	    shared = (mb != NULL && !ctl_same_address(mb, me.upn)
		      && !ctl_same_address(mb, me.mail));
	} else
	    shared = ctl_source_shared(src);
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
    if (src->deliver_host == NULL)
	ctl_step_deliver_sendmail(&run, src);
    else
	ctl_step_deliver_smtp(&run, src);

    return (ctl_run_end(&run));
}
