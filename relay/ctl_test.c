/*
 * NAME
 *	ctl_test 3
 * SUMMARY
 *	m365ctl test: the connection test ("ping") of one account
 * SYNOPSIS
 *	#include "ctl.h"
 *
 *	int	ctl_test(conf, acct, fresh, send_to)
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
 *	ctl_get_user() reads GET /me (mailbox NULL) or GET /users/{mailbox}
 *	into a struct ctl_user.
 * DIAGNOSTICS
 *	ctl_test() returns CTL_OK when every step passed, else CTL_FAIL.
 *	ctl_get_user() returns 0 on HTTP 200 with a parsable body, else -1
 *	(resp tells why).  Token values are never printed.
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
#include <openssl/evp.h>

#include "auth.h"
#include "conf.h"
#include "ctl.h"
#include "deliver.h"
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

/* ctl_step - print one step line: "ok   token: ..." */

static void __attribute__((format(printf, 4, 5)))
        ctl_step(struct ctl_run *run, const char *tag, const char *step,
		         const char *fmt,...)
{
    char    raw[1200];
    char    text[1200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    log_printable(text, sizeof(text), raw, strlen(raw));
    printf("%-4s %s: %s\n", tag, step, text);
    if (strcmp(tag, "FAIL") == 0)
	run->fails++;
    else if (strcmp(tag, "warn") == 0)
	run->warns++;
    fflush(stdout);
}

/* ctl_remedy - the fix for the step above */

static void __attribute__((format(printf, 1, 2)))
        ctl_remedy(const char *fmt,...)
{
    char    raw[1200];
    char    text[1200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    log_printable(text, sizeof(text), raw, strlen(raw));
    printf("     remedy: %s\n", text);
    fflush(stdout);
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
 * ctl_graph_user - GET a user; a 401 is answered once with a fresh token
 * (a revoked grant shows up here).  Returns 0 on 200, -1 otherwise with
 * resp filled; -2 when the fresh token could not be had (reported).
 */
static int ctl_graph_user(struct ctl_run *run, const char *mailbox,
			          struct ctl_user *user, struct http_resp *resp)
{
    struct m365_result res;
    char   *refused;
    int     rc;

    if (ctl_get_user(run->http, run->conf, mailbox, run->token, user,
		     resp) == 0)
	return (0);
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

/* ctl_jwt_claims - the payload of a JWT as JSON, or NULL (opaque token) */

static cJSON *ctl_jwt_claims(const char *token)
{
    const char *dot1, *dot2;
    unsigned char *payload;
    size_t  len;
    cJSON  *claims;

    if ((dot1 = strchr(token, '.')) == NULL
	|| (dot2 = strchr(dot1 + 1, '.')) == NULL
	|| strchr(dot2 + 1, '.') != NULL)
	return (NULL);
    if ((payload = ctl_b64url_decode(dot1 + 1, (size_t) (dot2 - dot1 - 1),
				     &len)) == NULL)
	return (NULL);
    claims = cJSON_ParseWithLength((const char *) payload, len);
    OPENSSL_cleanse(payload, len);
    free(payload);
    if (claims && !cJSON_IsObject(claims)) {
	cJSON_Delete(claims);
	claims = NULL;
    }
    return (claims);
}

/* ctl_step_permission - granted scopes (delegated) or roles (app-only) */

static void ctl_step_permission(struct ctl_run *run, const struct ctl_user *me)
{
    const struct conf_account *acct = run->acct;
    struct tokstore ts;
    char    err[512];
    struct strbuf roles;
    const cJSON *role;
    const cJSON *arr;
    const char *who;
    cJSON  *claims;
    int     has_send = 0;
    int     other;

    if (acct->auth != CONF_AUTH_DELEGATED) {
	if ((claims = ctl_jwt_claims(run->token)) == NULL) {
	    ctl_step(run, "--", "permission", "cannot inspect app roles "
		     "(token is opaque)");
	    return;
	}
	strbuf_init(&roles, STRBUF_MAX_SMALL);
	arr = cJSON_GetObjectItemCaseSensitive(claims, "roles");
	cJSON_ArrayForEach(role, arr) {
	    if (!cJSON_IsString(role) || role->valuestring == NULL)
		continue;
	    if (strcmp(role->valuestring, "Mail.Send") == 0)
		has_send = 1;
	    strbuf_printf(&roles, "%s%s", roles.len ? " " : "",
			  role->valuestring);
	}
	cJSON_Delete(claims);
	if (has_send)
	    ctl_step(run, "ok", "permission", "the token carries the "
		     "application role Mail.Send (roles: %s)",
		     strbuf_str(&roles));
	else {
	    ctl_step(run, "FAIL", "permission", "the token has no application "
		     "role Mail.Send (roles: %s)",
		     roles.len ? strbuf_str(&roles) : "none");
	    ctl_remedy("add the Microsoft Graph application permission "
		       "Mail.Send to app %s and grant admin consent (m365ctl "
		       "consent-url %s); new roles appear in tokens issued "
		       "after the consent (m365ctl test %s --fresh)",
		       acct->client_id, acct->name, acct->name);
	}
	strbuf_free(&roles);
	return;
    }

    memset(&ts, 0, sizeof(ts));
    if (tokstore_load(run->conf, acct->name, &ts, err, sizeof(err)) < 0) {
	ctl_step(run, "FAIL", "permission", "%s", err);
	tokstore_clear(&ts);
	return;
    }
    if (ts.scope == NULL || ts.scope[0] == 0) {
	ctl_step(run, "--", "permission", "no granted scopes recorded in the "
		 "token store; cannot check Mail.Send");
	tokstore_clear(&ts);
	return;
    }
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
    const char *tmpdir = getenv("TMPDIR");
    const char *domain;
    struct strbuf text;
    char    path[4096];
    char    date[80];
    char    host[256];
    char    id[33];
    time_t  now = time(NULL);
    struct tm tm;
    const char *p;
    size_t  left;
    ssize_t n;
    int     fd;
    int     rc;

    if (tmpdir == NULL || tmpdir[0] == 0)
	tmpdir = "/tmp";
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
    for (p = text.data, left = text.len; left > 0; p += n, left -= (size_t) n) {
	if ((n = write(fd, p, left)) < 0) {
	    result_set(res, M365_SYSTEM, EX_TEMPFAIL, "4.3.0", "cannot write "
		       "the test message to %s: %s", tmpdir, strerror(errno));
	    strbuf_free(&text);
	    close(fd);
	    return (-1);
	}
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
    if (run.fails)
	printf("result: %d step%s FAILED%s\n", run.fails,
	       run.fails == 1 ? "" : "s",
	       run.warns ? " (see also the warnings)" : "");
    else
	printf("result: all checks passed%s\n",
	       run.warns ? " (with warnings)" : "");
    xfree_secret(run.token);
    if (run.http)
	http_free(run.http);
    return (run.fails ? CTL_FAIL : CTL_OK);
}
