/*
 * NAME
 *	oauth 3
 * SUMMARY
 *	OAuth 2.0 against the Microsoft identity platform (v2.0)
 * DESCRIPTION
 *	See oauth.h.  Every token endpoint request is a form-encoded POST
 *	(http_form_add) with "Accept: application/json"; the form and the
 *	response body hold secrets and are wiped after use, and so are the
 *	string values of the parsed JSON tree.
 *
 *	Classification follows graph-facts.md section 7: Microsoft says
 *	to react on the OAuth "error" field, with error_codes[] (AADSTS)
 *	as a refinement for diagnostics.  So the "error" field decides
 *	first; the AADSTS number only moves an error between re-auth,
 *	configuration and transient where the field alone is ambiguous
 *	(invalid_grant for a client problem, consent, throttling).
 *	oauth_remedy() turns the result into one actionable sentence that
 *	names the AADSTS number and the account.
 * DIAGNOSTICS
 *	Request functions return 0 with the token filled in, or -1 with
 *	struct oauth_error filled (http_status 0 for transport and local
 *	errors).  Token values are never logged.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cJSON.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "addr.h"
#include "http.h"
#include "json.h"
#include "jwt.h"
#include "log.h"
#include "oauth.h"
#include "source.h"
#include "util.h"

#define OAUTH_DEF_RESOURCE	"https://graph.microsoft.com"
#define OAUTH_DEF_LOGIN		"https://login.microsoftonline.com"
#define OAUTH_GT_DEVICE		"urn:ietf:params:oauth:grant-type:device_code"
#define OAUTH_ASSERTION_TYPE \
	"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#define OAUTH_SECRET_MAX	4096	/* a client secret file */

/* AADSTS numbers that refine the "error" field. */
static const long oauth_transient_codes[] = {
    50196,				/* LoopDetected */
    90024,				/* RequestBudgetExceededError */
    90006,				/* ExternalServerRetryableError */
    90055,				/* TenantThrottlingError */
    0,
};
static const long oauth_consent_codes[] = {
    65001,				/* DelegationDoesNotExist */
    90094,				/* AdminConsentRequired */
    0,
};

/* Client or tenant problems that no sign-in fixes. */
static const long oauth_config_codes[] = {
    7000215, 7000222, 700016, 700025, 700027, 50012, 53003,
    90002, 90038, 9001023, 50194, 900144, 700024, 50011, 70011, 1002012,
    65001, 90094, 0,
};

/* Grants that only an interactive sign-in renews. */
static const long oauth_reauth_codes[] = {
    50173, 700082, 70008, 70043, 700003, 50076, 50079, 50078, 50133,
    50055, 50158, 0,
};

/* oauth_in - is code in a 0-terminated list */

static int oauth_in(const long *list, long code)
{
    for (; *list; list++)
	if (*list == code)
	    return (1);
    return (0);
}

/* oauth_is - case-sensitive OAuth error name comparison, NULL-safe */

static int oauth_is(const char *error, const char *name)
{
    return (error != NULL && strcmp(error, name) == 0);
}

/*
 * oauth_classify - decide what an error means for the account.  The
 * "error" field decides; the AADSTS number refines it.
 */
enum oauth_class oauth_classify(long http_status, const char *error,
				        long aadsts)
{
    int     has_error = (error != NULL && *error != 0);

    /* Device-code polling states, whatever the status code. */
    if (oauth_is(error, "authorization_pending"))
	return (OAUTH_PENDING);
    if (oauth_is(error, "slow_down"))
	return (OAUTH_SLOW_DOWN);
    if (oauth_is(error, "authorization_declined")
	|| oauth_is(error, "access_denied"))
	return (OAUTH_DECLINED);
    if (oauth_is(error, "expired_token")
	|| oauth_is(error, "bad_verification_code"))
	return (OAUTH_EXPIRED);

    /* The service itself is in trouble: never blame the account. */
    if (http_status == 0 || http_status == 429 || http_status >= 500
	|| oauth_is(error, "temporarily_unavailable")
	|| oauth_is(error, "server_error")
	|| oauth_in(oauth_transient_codes, aadsts))
	return (OAUTH_TRANSIENT);

    if (oauth_is(error, "invalid_grant")) {
	if (oauth_in(oauth_config_codes, aadsts))
	    return (OAUTH_CONFIG);
	return (OAUTH_REAUTH);
    }
    if (oauth_is(error, "interaction_required")
	|| oauth_is(error, "consent_required")
	|| oauth_is(error, "login_required")) {
	if (oauth_in(oauth_consent_codes, aadsts) || aadsts == 53003)
	    return (OAUTH_CONFIG);
	return (OAUTH_REAUTH);
    }
    if (oauth_is(error, "invalid_client")
	|| oauth_is(error, "unauthorized_client")
	|| oauth_is(error, "invalid_scope")
	|| oauth_is(error, "invalid_resource")
	|| oauth_is(error, "unsupported_grant_type")
	|| oauth_is(error, "unsupported_response_type")
	|| oauth_is(error, "invalid_request"))
	return (OAUTH_CONFIG);

    /* An error name this code does not know: use the number. */
    if (oauth_in(oauth_reauth_codes, aadsts))
	return (OAUTH_REAUTH);
    if (oauth_in(oauth_config_codes, aadsts))
	return (OAUTH_CONFIG);
    if (has_error && http_status >= 400 && http_status < 500)
	return (OAUTH_CONFIG);
    if (http_status == 400 || http_status == 401 || http_status == 403)
	return (OAUTH_CONFIG);
    return (OAUTH_TRANSIENT);
}

/* oauth_class_name - short name for logs and m365ctl status --json */

const char *oauth_class_name(enum oauth_class cls)
{
    switch (cls) {
    case OAUTH_OK:
	return ("ok");
    case OAUTH_PENDING:
	return ("pending");
    case OAUTH_SLOW_DOWN:
	return ("slow_down");
    case OAUTH_DECLINED:
	return ("declined");
    case OAUTH_EXPIRED:
	return ("expired");
    case OAUTH_REAUTH:
	return ("reauth");
    case OAUTH_CONFIG:
	return ("config");
    case OAUTH_TRANSIENT:
	return ("transient");
    }
    return ("unknown");
}

/*
 * The remedy texts, one per AADSTS number.  "@" in a text stands for
 * the account name (oauth_fill() substitutes it; no text needs a
 * literal "@").  oauth_remedy() puts "AADSTSnnnn: " in front.
 */
struct oauth_remedy {
    long    code;
    const char *text;
};

static const struct oauth_remedy oauth_remedies[] = {
    {50173, "the grant was revoked (password change/reset or an admin "
	"revoked sessions): sign in again with: m365ctl login @"},
    {700082, "the refresh token expired after 90 days without use: sign "
	"in again with: m365ctl login @"},
    {70008, "the refresh token expired or was revoked: sign in again "
	"with: m365ctl login @"},
    {70043, "a Conditional Access sign-in frequency policy requires a new "
	"interactive sign-in: sign in again with: m365ctl login @ (or "
	"have an administrator exclude this application from the "
	"sign-in frequency policy)"},
    {700003, "the device object of this sign-in was deleted from the "
	"tenant: sign in again with: m365ctl login @"},
    {50076, "multi-factor authentication is required (a policy changed "
	"or the location is new): sign in again interactively with: "
	"m365ctl login @"},
    {50079, "the user must register for multi-factor authentication: "
	"complete the registration at https://aka.ms/mfasetup, then sign "
	"in again with: m365ctl login @"},
    {50078, "the multi-factor authentication claim expired: sign in "
	"again with: m365ctl login @"},
    {50133, "the session is invalid because the password expired or was "
	"changed: sign in again with: m365ctl login @"},
    {50055, "the user's password expired: change it, then sign in again "
	"with: m365ctl login @"},
    {65001, "the application has no consent for the requested "
	"permissions: have an administrator open the URL from: m365ctl "
	"consent-url @"},
    {90094, "the requested permissions need administrator consent: have "
	"an administrator open the URL from: m365ctl consent-url @"},
    {53003, "a Conditional Access policy blocks this sign-in: an "
	"administrator must allow this application (or this host's "
	"location/device) in Entra ID > Protection > Conditional Access "
	"(the sign-in logs show which policy), then run: m365ctl test @"},
    {7000215, "the client secret is wrong: put the secret VALUE (not the "
	"secret ID) from Entra ID > App registrations > Certificates & "
	"secrets into the secret_file of account @"},
    {7000222, "the client secret expired: create a new one in Entra ID > "
	"App registrations > Certificates & secrets and put its VALUE "
	"into the secret_file of account @ (or switch to auth = "
	"certificate)"},
    {700016, "application not found in the tenant: check client_id and "
	"tenant (and cloud) of account @; the application must be "
	"registered in that tenant or consented there"},
    {700025, "the application is a public client but a secret or "
	"assertion was sent: use auth = delegated for account @, or "
	"turn off \"Allow public client flows\" for a confidential "
	"client"},
    {700027, "the certificate signature was not accepted: upload "
	"certificate_file of account @ to Entra ID > App registrations > "
	"Certificates & secrets > Certificates, and check that key_file "
	"matches it and the clock of this host is right"},
    {50012, "the client assertion was rejected (unknown or expired "
	"certificate, or key does not match): upload certificate_file of "
	"account @ to the app registration and check that key_file "
	"matches it"},
    {90002, "the tenant was not found: check tenant of account @ (a "
	"tenant ID or a verified domain), and cloud if the tenant is in a "
	"national cloud"},
    {90038, "the tenant is in another cloud: set cloud (global, usgov, "
	"usgov-dod, china) to the tenant's cloud for account @"},
    {9001023, "client credentials need a tenant: set tenant of account @ "
	"to the tenant ID or domain, not common/organizations/consumers"},
    {50194, "the application is single-tenant: set tenant of account @ "
	"to the tenant ID or domain instead of common/organizations"},
    {900144, "the token request was malformed (a required field is "
	"missing): check client_id and auth of account @; this may be a "
	"bug in m365relay"},
    {700024, "the client assertion is outside its validity window: check "
	"the clock of this host (NTP) for account @"},
    {50011, "the redirect URI does not match the app registration: add "
	"http://localhost (Mobile and desktop applications) to the app "
	"registration of account @, or use: m365ctl login @ "
	"--device-code"},
    {70011, "a requested scope is invalid: check scopes of account @ "
	"(bare names like Mail.Send.Shared, or full URIs)"},
    {1002012, "a requested scope is invalid: check scopes of account @ "
	"(bare names like Mail.Send.Shared, or full URIs)"},
    {50196, "the sign-in service detected a request loop (too many "
	"identical requests): tokens of account @ are cached, mail stays "
	"queued and is retried later"},
    {90024, "Microsoft's sign-in service is unavailable (request budget "
	"exceeded); mail for account @ stays queued and is retried"},
    {90006, "Microsoft's sign-in service is unavailable; mail for "
	"account @ stays queued and is retried"},
    {90055, "the tenant is being throttled by Microsoft's sign-in "
	"service; mail for account @ stays queued and is retried"},
    {70016, "the sign-in for account @ is not finished yet: complete it "
	"in the browser"},
    {70018, "the code entered for account @ was wrong: run m365ctl login "
	"@ again"},
    {70019, "the device code for account @ expired before the sign-in "
	"was finished: run m365ctl login @ again"},
    {70000, "the authorization code was rejected (already used or "
	"expired): run m365ctl login @ again"},
    {0, 0},
};

/* oauth_fill - copy a template, "@" replaced by the account name */

static void oauth_fill(struct strbuf *out, const char *tmpl,
		               const char *account)
{
    for (; *tmpl; tmpl++) {
	if (*tmpl == '@')
	    strbuf_puts(out, account);
	else
	    strbuf_putc(out, *tmpl);
    }
}

/* oauth_remedy - one actionable sentence for an error */

void    oauth_remedy(const struct oauth_error *err, const char *account,
		             char *buf, size_t len)
{
    const struct oauth_remedy *rp;
    struct strbuf sb;
    const char *tmpl = 0;
    char    acct[100];

    if (len == 0)
	return;
    log_printable(acct, sizeof(acct), account ? account : "NAME",
		  account ? strlen(account) : 4);
    strbuf_init(&sb, STRBUF_MAX_SMALL);
    if (err->aadsts) {
	for (rp = oauth_remedies; rp->code; rp++) {
	    if (rp->code == err->aadsts) {
		tmpl = rp->text;
		break;
	    }
	}
	strbuf_printf(&sb, "AADSTS%ld: ", err->aadsts);
    }
    if (tmpl != 0) {
	oauth_fill(&sb, tmpl, acct);
    } else {
	switch (err->cls) {
	case OAUTH_OK:
	    oauth_fill(&sb, "no error for account @", acct);
	    break;
	case OAUTH_PENDING:
	    oauth_fill(&sb, "the sign-in for account @ is not finished yet: "
		       "complete it in the browser", acct);
	    break;
	case OAUTH_SLOW_DOWN:
	    oauth_fill(&sb, "the sign-in service asked to poll more slowly "
		       "for account @", acct);
	    break;
	case OAUTH_DECLINED:
	    oauth_fill(&sb, "the sign-in for account @ was declined: run "
		       "m365ctl login @ again and accept the request", acct);
	    break;
	case OAUTH_EXPIRED:
	    oauth_fill(&sb, "the sign-in code for account @ expired before "
		       "the sign-in was finished: run m365ctl login @ again",
		       acct);
	    break;
	case OAUTH_REAUTH:
	    oauth_fill(&sb, "account @ needs an interactive sign-in: sign in "
		       "again with: m365ctl login @", acct);
	    break;
	case OAUTH_CONFIG:
	    if (err->http_status == 0 && err->description[0]) {
		/* A local problem: the description already says what. */
		strbuf_printf(&sb, "%s; ", err->description);
		oauth_fill(&sb, "fix it, then check with: m365ctl test @",
			   acct);
	    } else {
		strbuf_printf(&sb, "the sign-in service rejected the "
			      "configuration (%s): ", err->error[0] ?
			      err->error : "no OAuth error");
		oauth_fill(&sb, "check tenant, client_id, auth and the app "
			   "registration of account @, then run: m365ctl "
			   "test @", acct);
	    }
	    break;
	case OAUTH_TRANSIENT:
	    oauth_fill(&sb, "Microsoft's sign-in service is unavailable; "
		       "mail for account @ stays queued and is retried", acct);
	    if (err->http_status == 0 && err->description[0])
		strbuf_printf(&sb, " (%s)", err->description);
	    break;
	}
    }
    log_printable(buf, len, strbuf_log_str(&sb), strlen(strbuf_log_str(&sb)));
    strbuf_free(&sb);
}

/* oauth_json_delete - wipe, then free a parsed tree (it holds tokens) */

static void oauth_json_delete(cJSON *root)
{
    if (root) {
	json_wipe(root);
	cJSON_Delete(root);
    }
}

/* oauth_json_str - a non-empty string member, or NULL */

static const char *oauth_json_str(const cJSON *obj, const char *name)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);

    if (cJSON_IsString(it) && it->valuestring && *it->valuestring)
	return (it->valuestring);
    return (NULL);
}

/* oauth_json_long - a number member (or a numeric string: v1 did that) */

static long oauth_json_long(const cJSON *obj, const char *name, long dflt)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    long    v;

    if (cJSON_IsNumber(it) && it->valuedouble >= 0
	&& it->valuedouble < 1e9)
	return ((long) it->valuedouble);
    if (cJSON_IsString(it) && parse_long(it->valuestring, 0, 1000000000L,
					 &v) == 0)
	return (v);
    return (dflt);
}

/* oauth_token_ok - a token goes into a header: visible ASCII only */

static int oauth_token_ok(const char *s)
{
    if (s == NULL || *s == 0)
	return (0);
    for (; *s; s++)
	if ((unsigned char) *s <= 0x20 || (unsigned char) *s >= 0x7f)
	    return (0);
    return (1);
}

/* oauth_aadsts_from_text - the number after "AADSTS" in a text, or 0 */

long    oauth_aadsts_from_text(const char *text)
{
    const char *p;
    long    v = 0;

    if (text == NULL || (p = strstr(text, "AADSTS")) == NULL)
	return (0);
    for (p += 6; *p >= '0' && *p <= '9' && v < 100000000L; p++)
	v = v * 10 + (*p - '0');
    return (v);
}

/* oauth_set_error - fill an error by hand (local or transport) */

static void oauth_set_error(struct oauth_error *err, long http_status,
			            enum oauth_class cls, const char *error,
			            const char *description)
{
    memset(err, 0, sizeof(*err));
    err->http_status = http_status;
    err->cls = cls;
    snprintf(err->error, sizeof(err->error), "%s", error);
    log_printable(err->description, sizeof(err->description), description,
		  strlen(description));
}

/* oauth_describe - error_description without the trace tail */

static void oauth_describe(struct oauth_error *err, const cJSON *root)
{
    const char *desc = oauth_json_str(root, "error_description");
    const char *corr = oauth_json_str(root, "correlation_id");
    struct strbuf sb;
    size_t  n;
    const char *cut;

    strbuf_init(&sb, STRBUF_MAX_SMALL);
    if (desc) {
	/* "... Trace ID: x Correlation ID: y Timestamp: z" is noise. */
	n = strlen(desc);
	if ((cut = strstr(desc, "Trace ID:")) != NULL)
	    n = (size_t) (cut - desc);
	while (n > 0 && isspace((unsigned char) desc[n - 1]))
	    n--;
	/* More than fits is cut, and marked "...", by log_printable(). */
	if (n > sizeof(err->description))
	    n = sizeof(err->description);
	strbuf_append(&sb, desc, n);
    } else {
	strbuf_printf(&sb, "%s", err->error[0] ? err->error : "error");
    }
    if (corr)
	strbuf_printf(&sb, " (correlation id %.60s)", corr);
    log_printable(err->description, sizeof(err->description),
		  strbuf_str(&sb), sb.len);
    strbuf_free(&sb);
}

/* oauth_parse_error - fill err from an error reply; always -1 */

static int oauth_parse_error(const cJSON *root, const char *body,
			             long http_status, struct oauth_error *err)
{
    const char *error = root ? oauth_json_str(root, "error") : NULL;
    const cJSON *codes;
    char    shown[80];

    memset(err, 0, sizeof(*err));
    err->http_status = http_status;
    if (error == NULL) {
	/* A proxy, a captive portal, an HTML 502: not Microsoft's verdict. */
	log_printable(shown, sizeof(shown), body ? body : "",
		      body ? strlen(body) : 0);
	snprintf(err->description, sizeof(err->description),
		 "the token endpoint answered HTTP %ld with no OAuth error "
		 "(%s: \"%.60s\")", http_status, root ? "JSON without \"error\""
		 : "not JSON", shown);
	err->cls = OAUTH_TRANSIENT;
	return (-1);
    }
    log_printable(err->error, sizeof(err->error), error, strlen(error));
    codes = cJSON_GetObjectItemCaseSensitive(root, "error_codes");
    if (cJSON_IsArray(codes) && cJSON_IsNumber(cJSON_GetArrayItem(codes, 0))
	&& cJSON_GetArrayItem(codes, 0)->valuedouble > 0
	&& cJSON_GetArrayItem(codes, 0)->valuedouble < 1e9)
	err->aadsts = (long) cJSON_GetArrayItem(codes, 0)->valuedouble;
    else
	err->aadsts = oauth_aadsts_from_text(oauth_json_str(root,
						  "error_description"));
    oauth_describe(err, root);
    err->cls = oauth_classify(http_status, err->error, err->aadsts);
    return (-1);
}

/* oauth_parse_token - a token endpoint reply: tokens or an error */

int     oauth_parse_token(const char *json, long http_status,
			          struct oauth_token *tok,
			          struct oauth_error *err)
{
    cJSON  *root;
    const char *at, *rt, *scope;
    int     ret;

    memset(tok, 0, sizeof(*tok));
    memset(err, 0, sizeof(*err));
    root = cJSON_Parse(json ? json : "");
    if (root != NULL && !cJSON_IsObject(root)) {
	oauth_json_delete(root);
	root = NULL;
    }
    if (http_status != 200 || root == NULL
	|| oauth_json_str(root, "error") != NULL) {
	ret = oauth_parse_error(root, json, http_status, err);
	oauth_json_delete(root);
	return (ret);
    }
    at = oauth_json_str(root, "access_token");
    rt = oauth_json_str(root, "refresh_token");
    scope = oauth_json_str(root, "scope");
    if (!oauth_token_ok(at) || (rt != NULL && !oauth_token_ok(rt))) {
	oauth_set_error(err, http_status, OAUTH_TRANSIENT, "",
			at ? "the token endpoint answered HTTP 200 with a "
			"malformed token" : "the token endpoint answered "
			"HTTP 200 without an access_token");
	oauth_json_delete(root);
	return (-1);
    }
    tok->access_token = xstrdup(at);
    tok->refresh_token = rt ? xstrdup(rt) : NULL;
    tok->scope = scope ? xstrdup(scope) : NULL;
    tok->expires_in = oauth_json_long(root, "expires_in", 3600);
    oauth_json_delete(root);
    return (0);
}

/* oauth_resource - conf->graph_resource without a trailing slash */

static void oauth_resource(const struct conf *conf, char *buf, size_t len)
{
    const char *res = (conf->graph_resource && *conf->graph_resource) ?
	conf->graph_resource : OAUTH_DEF_RESOURCE;
    size_t  n = strlen(res);

    while (n > 0 && res[n - 1] == '/')
	n--;
    snprintf(buf, len, "%.*s", (int) n, res);
}

/* oauth_scope_add - append one scope unless it is there already */

static void oauth_scope_add(struct strbuf *sb, const char *scope)
{
    const char *p = strbuf_str(sb);
    size_t  n = strlen(scope);

    while ((p = strstr(p, scope)) != NULL) {
	if ((p == strbuf_str(sb) || p[-1] == ' ')
	    && (p[n] == 0 || p[n] == ' '))
	    return;
	p += n;
    }
    if (sb->len)
	strbuf_putc(sb, ' ');
    strbuf_puts(sb, scope);
}

/*
 * oauth_scope_sources - a delegated account that a [source] reads with
 * needs Mail.ReadWrite (read, mark read, move, delete), and
 * Mail.ReadWrite.Shared when the source reads another mailbox (a shared
 * mailbox with Full Access).
 */
static void oauth_scope_sources(const struct conf *conf,
				        const struct conf_account *acct,
				        const char *res, struct strbuf *sb)
{
    const struct conf_source *src;
    char    one[512];
    int     own = 0, shared = 0;

    for (src = conf->sources; src; src = src->next) {
	if (src->acct != acct && (src->account == NULL || acct->name == NULL
				  || strcmp(src->account, acct->name) != 0))
	    continue;
	if (source_shared_by(src, acct))
	    shared = 1;
	else
	    own = 1;
    }
    if (own || shared) {
	snprintf(one, sizeof(one), "%s/Mail.ReadWrite", res);
	oauth_scope_add(sb, one);
    }
    if (shared) {
	snprintf(one, sizeof(one), "%s/Mail.ReadWrite.Shared", res);
	oauth_scope_add(sb, one);
    }
}

/*
 * oauth_scope_has - does a space-separated scope list hold a permission?
 * Each entry is compared by its name after the last "/", so
 * "https://graph.microsoft.com/Mail.Send" holds "Mail.Send";
 * case-insensitive; commas separate too.
 */
int     oauth_scope_has(const char *scopes, const char *name)
{
    const char *cp = scopes;
    const char *end, *word, *slash;
    size_t  nlen = strlen(name);

    if (scopes == NULL)
	return (0);
    while (*cp) {
	while (*cp == ' ' || *cp == '\t' || *cp == ',')
	    cp++;
	if (*cp == 0)
	    break;
	end = cp + strcspn(cp, " \t,");
	word = cp;
	for (slash = cp; slash < end; slash++)
	    if (*slash == '/')
		word = slash + 1;
	if ((size_t) (end - word) == nlen && strncasecmp(word, name, nlen) == 0)
	    return (1);
	cp = end;
    }
    return (0);
}

/*
 * oauth_large_scope - the delegated permission that drafts and upload
 * sessions need: Mail.ReadWrite for the signed-in user's own mailbox,
 * Mail.ReadWrite.Shared when the account sends from another user's
 * mailbox (its scopes hold Mail.Send.Shared).
 */
const char *oauth_large_scope(const struct conf_account *acct)
{
    return (oauth_scope_has(acct->scopes, "Mail.Send.Shared") ?
	    "Mail.ReadWrite.Shared" : "Mail.ReadWrite");
}

/*
 * oauth_token_roles - the application roles of a JWT access token, space
 * separated, into roles (initialized here; the caller frees it).  1 if
 * one of them is want, 0 if not, -1 for an opaque token (no roles).
 */
int     oauth_token_roles(const char *token, const char *want,
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
    /* A token's claims: 64 KB at most. */
    if ((size_t) (dot2 - dot1 - 1) > STRBUF_MAX_SMALL * 4
	|| (payload = base64url_decode(dot1 + 1, (size_t) (dot2 - dot1 - 1),
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

/* oauth_scope_list - delegated scopes, with offline_access or not; NULL */

static char *oauth_scope_list(const struct conf *conf,
			              const struct conf_account *acct,
			              int offline)
{
    static const char *const bare[] = {
	"offline_access", "openid", "profile", "email", 0,
    };
    const char *const *bp;
    struct strbuf sb;
    char    res[256];
    char    one[512];
    const char *p, *end;
    size_t  n;

    oauth_resource(conf, res, sizeof(res));
    strbuf_init(&sb, STRBUF_MAX_SMALL);
    if (acct->auth != CONF_AUTH_DELEGATED) {
	strbuf_printf(&sb, "%s/.default", res);
	return (strbuf_take(&sb));
    }
    if (offline)
	oauth_scope_add(&sb, "offline_access");
    snprintf(one, sizeof(one), "%s/Mail.Send", res);
    oauth_scope_add(&sb, one);
    snprintf(one, sizeof(one), "%s/User.Read", res);
    oauth_scope_add(&sb, one);
    for (p = acct->scopes; p && *p; p = end) {
	while (*p == ' ' || *p == '\t' || *p == ',')
	    p++;
	for (end = p; *end && *end != ' ' && *end != '\t' && *end != ',';
	     end++)
	     /* void */ ;
	if ((n = (size_t) (end - p)) == 0 || n >= 256)
	    continue;
	snprintf(one, sizeof(one), "%.*s", (int) n, p);
	for (bp = bare; *bp; bp++)
	    if (strcmp(one, *bp) == 0)
		break;
	if (*bp != 0) {
	    if (strcmp(one, "offline_access") != 0 || offline)
		oauth_scope_add(&sb, one);
	} else if (strstr(one, "://") != NULL) {
	    oauth_scope_add(&sb, one);
	} else {
	    snprintf(one, sizeof(one), "%s/%.*s", res, (int) n, p);
	    oauth_scope_add(&sb, one);
	}
    }
    oauth_scope_sources(conf, acct, res, &sb);
    /* Large messages go through drafts in the sending mailbox. */
    if (acct->large_messages == CONF_LARGE_YES) {
	snprintf(one, sizeof(one), "%s/%s", res, oauth_large_scope(acct));
	oauth_scope_add(&sb, one);
    }
    if (sb.data == NULL)
	strbuf_puts(&sb, "");
    return (strbuf_take(&sb));
}

/* oauth_scope - the scope parameter for an account; free(); NULL: long */

char   *oauth_scope(const struct conf *conf, const struct conf_account *acct)
{
    return (oauth_scope_list(conf, acct, 1));
}

/* oauth_login_base - conf->login_url without a trailing slash */

static void oauth_login_base(const struct conf *conf, struct strbuf *sb)
{
    const char *login = (conf->login_url && *conf->login_url) ?
	conf->login_url : OAUTH_DEF_LOGIN;
    size_t  n = strlen(login);

    while (n > 0 && login[n - 1] == '/')
	n--;
    strbuf_append(sb, login, n);
}

/* oauth_tenant_base - login_url + "/" + escaped tenant */

static void oauth_tenant_base(const struct conf *conf,
			              const struct conf_account *acct,
			              struct strbuf *sb)
{
    char   *tenant = url_escape(acct->tenant ? acct->tenant : "common");

    oauth_login_base(conf, sb);
    strbuf_printf(sb, "/%s", tenant);
    free(tenant);
}

/* oauth_endpoint - login_url/tenant/oauth2/v2.0/what; free(); NULL */

char   *oauth_endpoint(const struct conf *conf,
		               const struct conf_account *acct, const char *what)
{
    struct strbuf sb;

    strbuf_init(&sb, STRBUF_MAX_SMALL);
    oauth_tenant_base(conf, acct, &sb);
    strbuf_printf(&sb, "/oauth2/v2.0/%s", what);
    return (strbuf_take(&sb));
}

/* A token endpoint form; bad records a value that was not built. */
struct oauth_form {
    struct strbuf body;			/* overflow: checked by oauth_post() */
    int     bad;
};

/* oauth_form_add - append one field; NULL (not built) spoils the form */

static void oauth_form_add(struct oauth_form *form, const char *name,
			           const char *value)
{
    if (value == NULL)
	form->bad = 1;
    else
	(void) http_form_add(&form->body, name, value);
}

/* oauth_form_start - a form with the common client_id field */

static void oauth_form_start(struct oauth_form *form,
			             const struct conf_account *acct)
{
    strbuf_init(&form->body, STRBUF_MAX_SMALL);
    form->bad = 0;
    oauth_form_add(form, "client_id", acct->client_id ? acct->client_id : "");
}

/* oauth_post - POST a form to an endpoint, wipe the form; no parsing */

static int oauth_post(struct http *http, const char *url,
		              struct oauth_form *form, struct http_resp *resp,
		              struct oauth_error *err)
{
    static const char *const hdrs[] = {"Accept: application/json", 0};
    struct http_req req;
    char    msg[512];
    int     ret = 0;

    if (url == NULL || form->bad || strbuf_failed(&form->body)) {
	/* Never send a request with a field cut off. */
	snprintf(msg, sizeof(msg), "the request to %.120s is larger than "
		 "%lu bytes (a token, code, secret, scope list, tenant or "
		 "login_url is far too long); nothing was sent",
		 url ? url : "the sign-in service",
		 (unsigned long) form->body.max);
	oauth_set_error(err, 0, OAUTH_CONFIG, "", msg);
	strbuf_cleanse(&form->body);
	return (-1);
    }
    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.url = url;
    req.content_type = "application/x-www-form-urlencoded";
    req.body = strbuf_str(&form->body);
    req.body_len = form->body.len;
    req.headers = hdrs;
    if (http_perform(http, &req, resp) < 0) {
	snprintf(msg, sizeof(msg), "cannot reach the token endpoint %.120s: "
		 "%s", url, resp->error);
	oauth_set_error(err, 0, OAUTH_TRANSIENT, "", msg);
	ret = -1;
    }
    strbuf_cleanse(&form->body);
    return (ret);
}

/* oauth_token_request - POST a grant to the token endpoint and parse it */

static int oauth_token_request(struct http *http, const struct conf *conf,
			               const struct conf_account *acct,
			               struct oauth_form *form, const char *grant,
			               struct oauth_token *tok,
			               struct oauth_error *err)
{
    struct http_resp resp;
    char   *url = oauth_endpoint(conf, acct, "token");
    int     ret;

    memset(tok, 0, sizeof(*tok));
    http_set_account(http, conf, acct);	/* its proxy (proxy.h) */
    if (log_verbose() >= 1)
	msg_debug("oauth: %s request for account %s to %s", grant,
		  acct->name ? acct->name : "?", url ? url : STRBUF_NOT_SHOWN);
    http_resp_init(&resp);
    if ((ret = oauth_post(http, url, form, &resp, err)) == 0)
	ret = oauth_parse_token(strbuf_str(&resp.body), resp.status, tok, err);
    if (ret < 0 && log_verbose() >= 1)
	msg_debug("oauth: %s for account %s failed: HTTP %ld %s AADSTS%ld "
		  "(%s) request-id=%s", grant, acct->name ? acct->name : "?",
		  err->http_status, err->error[0] ? err->error : "-",
		  err->aadsts, oauth_class_name(err->cls),
		  resp.request_id[0] ? resp.request_id : "-");
    http_resp_free(&resp);
    free(url);
    return (ret);
}

/* oauth_device_start - ask for a device code and a user code */

int     oauth_device_start(struct http *http, const struct conf *conf,
			           const struct conf_account *acct,
			           struct oauth_device *dev,
			           struct oauth_error *err)
{
    struct oauth_form form;
    struct http_resp resp;
    char   *url = oauth_endpoint(conf, acct, "devicecode");
    char   *scope = oauth_scope(conf, acct);
    cJSON  *root = NULL;
    const char *dc, *uc, *uri, *msg;
    int     ret = -1;

    memset(dev, 0, sizeof(*dev));
    http_set_account(http, conf, acct);	/* its proxy (proxy.h) */
    oauth_form_start(&form, acct);
    oauth_form_add(&form, "scope", scope);
    http_resp_init(&resp);
    if (oauth_post(http, url, &form, &resp, err) < 0)
	goto out;
    root = cJSON_Parse(strbuf_str(&resp.body));
    if (root != NULL && !cJSON_IsObject(root)) {
	oauth_json_delete(root);
	root = NULL;
    }
    if (resp.status != 200 || root == NULL || oauth_json_str(root, "error")) {
	oauth_parse_error(root, strbuf_str(&resp.body), resp.status, err);
	goto out;
    }
    dc = oauth_json_str(root, "device_code");
    uc = oauth_json_str(root, "user_code");
    if ((uri = oauth_json_str(root, "verification_uri")) == NULL)
	uri = oauth_json_str(root, "verification_url");
    msg = oauth_json_str(root, "message");
    if (!oauth_token_ok(dc) || !oauth_token_ok(uc) || uri == NULL) {
	oauth_set_error(err, resp.status, OAUTH_TRANSIENT, "", "the "
			"devicecode endpoint answered without device_code, "
			"user_code or verification_uri");
	goto out;
    }
    dev->device_code = xstrdup(dc);
    dev->user_code = xstrdup(uc);
    dev->verification_uri = xstrdup(uri);
    dev->message = msg ? xstrdup(msg) : NULL;
    dev->expires_in = oauth_json_long(root, "expires_in", 900);
    dev->interval = oauth_json_long(root, "interval", 5);
    if (dev->interval <= 0)
	dev->interval = 5;
    ret = 0;

out:
    oauth_json_delete(root);
    http_resp_free(&resp);
    free(scope);
    free(url);
    return (ret);
}

/* oauth_device_poll - one poll of the token endpoint; the caller loops */

int     oauth_device_poll(struct http *http, const struct conf *conf,
			          const struct conf_account *acct,
			          const struct oauth_device *dev,
			          struct oauth_token *tok,
			          struct oauth_error *err)
{
    struct oauth_form form;

    oauth_form_start(&form, acct);
    oauth_form_add(&form, "grant_type", OAUTH_GT_DEVICE);
    oauth_form_add(&form, "device_code", dev->device_code);
    return (oauth_token_request(http, conf, acct, &form, "device_code",
				tok, err));
}

/* oauth_random - strong random bytes (kernel fallback: random_hex); 0/-1 */

static int oauth_random(unsigned char *buf, size_t n)
{
    char    hex[2 * 64 + 1];
    size_t  i, j, k;

    if (RAND_bytes(buf, (int) n) == 1)
	return (0);
    for (i = 0; i < n; i += k) {
	k = n - i < 64 ? n - i : 64;
	if (random_hex(hex, k) < 0)
	    return (-1);
	for (j = 0; j < k; j++) {
	    unsigned hi = (unsigned) (hex[2 * j] <= '9' ? hex[2 * j] - '0' :
				      hex[2 * j] - 'a' + 10);
	    unsigned lo = (unsigned) (hex[2 * j + 1] <= '9' ?
				      hex[2 * j + 1] - '0' :
				      hex[2 * j + 1] - 'a' + 10);

	    buf[i + j] = (unsigned char) (hi << 4 | lo);
	}
    }
    OPENSSL_cleanse(hex, sizeof(hex));
    return (0);
}

/* oauth_pkce_challenge - base64url(SHA-256(verifier)), RFC 7636 S256 */

void    oauth_pkce_challenge(const char *verifier, char *out, size_t outlen)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    char   *b;

    SHA256((const unsigned char *) verifier, strlen(verifier), md);
    b = base64url_encode(md, sizeof(md));
    snprintf(out, outlen, "%s", b);
    free(b);
}

/*
 * oauth_pkce_new - a 64-character verifier from the RFC 7636 unreserved
 * set (uniform: bytes past the last full multiple of 66 are rejected)
 * and its S256 challenge.  vlen >= 65 and clen >= 44 give full values;
 * a shorter vlen gives a shorter (still >= 43 when vlen >= 44) verifier.
 * 0, or -1 (both "") when no random bytes can be had.
 */
int     oauth_pkce_new(char *verifier, size_t vlen, char *challenge,
		               size_t clen)
{
    static const char set[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
    const size_t nset = sizeof(set) - 1;	/* 66 */
    const unsigned limit = (unsigned) (256 / nset * nset);	/* 198 */
    unsigned char rnd[64];
    size_t  want, have = 0, i;

    if (vlen == 0)
	return (0);
    want = vlen - 1 < 64 ? vlen - 1 : 64;
    while (have < want) {
	if (oauth_random(rnd, sizeof(rnd)) < 0) {
	    OPENSSL_cleanse(verifier, vlen);
	    verifier[0] = 0;
	    if (clen > 0)
		challenge[0] = 0;
	    return (-1);
	}
	for (i = 0; i < sizeof(rnd) && have < want; i++)
	    if (rnd[i] < limit)
		verifier[have++] = set[rnd[i] % nset];
    }
    verifier[have] = 0;
    OPENSSL_cleanse(rnd, sizeof(rnd));
    oauth_pkce_challenge(verifier, challenge, clen);
    return (0);
}

/* oauth_authorize_url - the browser URL for the auth code flow; NULL */

char   *oauth_authorize_url(const struct conf *conf,
			            const struct conf_account *acct,
			            const char *redirect_uri,
			            const char *challenge, const char *state)
{
    struct strbuf q;
    char   *url = oauth_endpoint(conf, acct, "authorize");
    char   *scope = oauth_scope(conf, acct);
    struct strbuf sb;

    strbuf_init(&q, STRBUF_MAX_SMALL);
    http_form_add(&q, "client_id", acct->client_id ? acct->client_id : "");
    http_form_add(&q, "response_type", "code");
    http_form_add(&q, "redirect_uri", redirect_uri);
    http_form_add(&q, "response_mode", "query");
    http_form_add(&q, "scope", scope);
    http_form_add(&q, "state", state);
    http_form_add(&q, "code_challenge", challenge);
    http_form_add(&q, "code_challenge_method", "S256");
    strbuf_init(&sb, 2 * STRBUF_MAX_SMALL);
    if (url != NULL && scope != NULL && !strbuf_failed(&q))
	strbuf_printf(&sb, "%s?%s", url, strbuf_str(&q));
    strbuf_free(&q);
    free(scope);
    free(url);
    return (sb.len ? strbuf_take(&sb) : NULL);	/* NULL: too long */
}

/* oauth_redeem_code - authorization code + PKCE verifier -> tokens */

int     oauth_redeem_code(struct http *http, const struct conf *conf,
			          const struct conf_account *acct,
			          const char *code, const char *redirect_uri,
			          const char *verifier, struct oauth_token *tok,
			          struct oauth_error *err)
{
    struct oauth_form form;
    char   *scope = oauth_scope(conf, acct);
    int     ret;

    oauth_form_start(&form, acct);
    oauth_form_add(&form, "grant_type", "authorization_code");
    oauth_form_add(&form, "code", code);
    oauth_form_add(&form, "redirect_uri", redirect_uri);
    oauth_form_add(&form, "code_verifier", verifier);
    oauth_form_add(&form, "scope", scope);
    ret = oauth_token_request(http, conf, acct, &form, "authorization_code",
			      tok, err);
    free(scope);
    return (ret);
}

/*
 * oauth_refresh - refresh token -> new access (and refresh) token.  With
 * granted (the scopes the last sign-in obtained, as the token endpoint
 * reported them) the refresh asks for exactly those: a configuration that
 * grew (a new [source] needing Mail.ReadWrite) must not turn every
 * refresh into a consent error and stop outbound mail; the new scopes
 * come with the next m365ctl login.  NULL or "": the configured scopes.
 */
int     oauth_refresh(struct http *http, const struct conf *conf,
		              const struct conf_account *acct,
		              const char *refresh, const char *granted,
		              struct oauth_token *tok, struct oauth_error *err)
{
    struct oauth_form form;
    struct strbuf sb;
    char   *scope;
    int     ret;

    if (granted && *granted) {
	strbuf_init(&sb, STRBUF_MAX_SMALL);
	if (strstr(granted, "offline_access") == NULL)
	    strbuf_puts(&sb, "offline_access ");
	strbuf_puts(&sb, granted);
	scope = strbuf_take(&sb);
    } else {
	scope = oauth_scope(conf, acct);
    }
    oauth_form_start(&form, acct);
    oauth_form_add(&form, "grant_type", "refresh_token");
    oauth_form_add(&form, "refresh_token", refresh);
    oauth_form_add(&form, "scope", scope);
    ret = oauth_token_request(http, conf, acct, &form, "refresh_token",
			      tok, err);
    free(scope);
    return (ret);
}

/* oauth_read_secret - the client secret from secret_file; xfree_secret */

static char *oauth_read_secret(const struct conf_account *acct,
			               struct oauth_error *err)
{
    struct strbuf sb;
    char    msg[512];
    char    why[300];

    if (acct->secret_file == NULL || *acct->secret_file == 0) {
	snprintf(msg, sizeof(msg), "account %s has auth = secret but no "
		 "secret_file", acct->name ? acct->name : "?");
	oauth_set_error(err, 0, OAUTH_CONFIG, "", msg);
	return (NULL);
    }
    if (file_read_private(acct->secret_file, "client secret file",
			  OAUTH_SECRET_MAX, &sb, why, sizeof(why)) < 0) {
	oauth_set_error(err, 0, OAUTH_CONFIG, "", why);
	return (NULL);
    }
    while (sb.len > 0 && isspace((unsigned char) sb.data[sb.len - 1])) {
	sb.data[sb.len - 1] = 0;
	sb.len--;
    }
    if (sb.len == 0 || strpbrk(sb.data, "\r\n") != NULL) {
	snprintf(msg, sizeof(msg), "client secret file %s %s: put the "
		 "secret value on one line", acct->secret_file,
		 sb.len ? "has more than one line" : "is empty");
	strbuf_cleanse(&sb);
	oauth_set_error(err, 0, OAUTH_CONFIG, "", msg);
	return (NULL);
    }
    return (strbuf_take(&sb));
}

/* oauth_client_credentials - app-only token (secret or certificate) */

int     oauth_client_credentials(struct http *http, const struct conf *conf,
				         const struct conf_account *acct,
				         struct oauth_token *tok,
				         struct oauth_error *err)
{
    struct oauth_form form;
    char   *scope, *url, *cred;
    char    why[300];
    char    msg[512];
    int     ret;

    memset(tok, 0, sizeof(*tok));
    if (acct->auth == CONF_AUTH_DELEGATED) {
	/* Public clients must never send a secret (AADSTS700025). */
	snprintf(msg, sizeof(msg), "account %s uses auth = delegated; client "
		 "credentials need auth = secret or certificate",
		 acct->name ? acct->name : "?");
	oauth_set_error(err, 0, OAUTH_CONFIG, "", msg);
	return (-1);
    }
    url = oauth_endpoint(conf, acct, "token");
    if (url == NULL) {
	cred = NULL;
	snprintf(msg, sizeof(msg), "the token endpoint URL of account %.100s "
		 "would be longer than %lu bytes (tenant or login_url is far "
		 "too long); nothing was sent", acct->name ? acct->name : "?",
		 (unsigned long) STRBUF_MAX_SMALL);
	oauth_set_error(err, 0, OAUTH_CONFIG, "", msg);
    } else if (acct->auth == CONF_AUTH_CERTIFICATE) {
	/* The only caller of jwt.c: aud is the token endpoint itself. */
	cred = jwt_client_assertion(acct->certificate_file, acct->key_file,
				    acct->jwt_alg, acct->client_id, url,
				    time(NULL), why, sizeof(why));
	if (cred == NULL)
	    oauth_set_error(err, 0, OAUTH_CONFIG, "", why);
    } else {
	cred = oauth_read_secret(acct, err);
    }
    free(url);
    if (cred == NULL)
	return (-1);
    scope = oauth_scope(conf, acct);
    oauth_form_start(&form, acct);
    oauth_form_add(&form, "scope", scope);
    oauth_form_add(&form, "grant_type", "client_credentials");
    if (acct->auth == CONF_AUTH_CERTIFICATE) {
	oauth_form_add(&form, "client_assertion_type", OAUTH_ASSERTION_TYPE);
	oauth_form_add(&form, "client_assertion", cred);
    } else {
	oauth_form_add(&form, "client_secret", cred);
    }
    xfree_secret(cred);
    ret = oauth_token_request(http, conf, acct, &form, "client_credentials",
			      tok, err);
    free(scope);
    return (ret);
}

/* oauth_consent_url - the admin consent URL for an account; NULL: long */

char   *oauth_consent_url(const struct conf *conf,
			          const struct conf_account *acct)
{
    struct strbuf sb;
    struct strbuf q;
    char   *scope;
    int     built = 1;

    strbuf_init(&sb, 2 * STRBUF_MAX_SMALL);
    strbuf_init(&q, STRBUF_MAX_SMALL);
    oauth_tenant_base(conf, acct, &sb);
    http_form_add(&q, "client_id", acct->client_id ? acct->client_id : "");
    if (acct->auth == CONF_AUTH_DELEGATED) {
	/* v2 form: consent to the delegated scopes for all users. */
	scope = oauth_scope_list(conf, acct, 0);
	built = (scope != NULL);
	http_form_add(&q, "scope", scope);
	http_form_add(&q, "redirect_uri", "http://localhost");
	free(scope);
	strbuf_printf(&sb, "/v2.0/adminconsent?%s", strbuf_str(&q));
    } else {
	strbuf_printf(&sb, "/adminconsent?%s", strbuf_str(&q));
    }
    if (!built || strbuf_failed(&q))
	strbuf_free(&sb);
    strbuf_free(&q);
    return (sb.len ? strbuf_take(&sb) : NULL);	/* NULL: too long */
}

/* oauth_token_free - wipe and release the tokens; struct reusable */

void    oauth_token_free(struct oauth_token *tok)
{
    if (tok == NULL)
	return;
    xfree_secret(tok->access_token);
    xfree_secret(tok->refresh_token);
    free(tok->scope);
    memset(tok, 0, sizeof(*tok));
}

/* oauth_device_free - release a device code reply; struct reusable */

void    oauth_device_free(struct oauth_device *dev)
{
    if (dev == NULL)
	return;
    xfree_secret(dev->device_code);
    free(dev->user_code);
    free(dev->verification_uri);
    free(dev->message);
    memset(dev, 0, sizeof(*dev));
}
