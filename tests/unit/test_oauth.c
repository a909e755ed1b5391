/* test_oauth - OAuth classification, remedies, token parsing, URLs, PKCE */
#include "config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "http.h"
#include "log.h"
#include "oauth.h"
#include "strbuf.h"
#include "util.h"
#include "t.h"

/* Hand-built configuration (no conf.c). */
static struct conf conf;
static struct conf_account deleg, app, cert;

static void setup(void)
{
    memset(&conf, 0, sizeof(conf));
    conf.login_url = "https://login.microsoftonline.com";
    conf.graph_url = "https://graph.microsoft.com";
    conf.graph_resource = "https://graph.microsoft.com";
    conf.timeout = 5;
    conf.connect_timeout = 2;

    memset(&deleg, 0, sizeof(deleg));
    deleg.name = "mailer";
    deleg.tenant = "contoso.onmicrosoft.com";
    deleg.client_id = "11111111-0000-0000-0000-000000000001";
    deleg.auth = CONF_AUTH_DELEGATED;

    memset(&app, 0, sizeof(app));
    app.name = "daemon";
    app.tenant = "22222222-3333-4444-5555-666666666666";
    app.client_id = "11111111-0000-0000-0000-000000000002";
    app.auth = CONF_AUTH_SECRET;

    memset(&cert, 0, sizeof(cert));
    cert.name = "certacct";
    cert.tenant = "contoso.test";
    cert.client_id = "11111111-0000-0000-0000-000000000003";
    cert.auth = CONF_AUTH_CERTIFICATE;
    cert.certificate_file = "/nonexistent/m365relay-test/client.pem";
    cert.key_file = "/nonexistent/m365relay-test/client.key";
}

/* Classification: every code of graph-facts.md section 7 and more. */
static void test_classify(void)
{
    static const struct {
	long    status;
	const char *error;
	long    aadsts;
	enum oauth_class want;
    }       cases[] = {
	/* Re-authentication needed. */
	{400, "invalid_grant", 50173, OAUTH_REAUTH},
	{400, "invalid_grant", 700082, OAUTH_REAUTH},
	{400, "invalid_grant", 70008, OAUTH_REAUTH},
	{400, "invalid_grant", 70043, OAUTH_REAUTH},
	{400, "invalid_grant", 700003, OAUTH_REAUTH},
	{400, "invalid_grant", 50076, OAUTH_REAUTH},
	{400, "invalid_grant", 50079, OAUTH_REAUTH},
	{400, "invalid_grant", 0, OAUTH_REAUTH},
	{400, "interaction_required", 50076, OAUTH_REAUTH},
	{400, "interaction_required", 50079, OAUTH_REAUTH},
	{400, "interaction_required", 0, OAUTH_REAUTH},
	{400, "login_required", 0, OAUTH_REAUTH},
	{400, "consent_required", 0, OAUTH_REAUTH},
	/* Consent: an administrator must act. */
	{400, "invalid_grant", 65001, OAUTH_CONFIG},
	{400, "consent_required", 65001, OAUTH_CONFIG},
	{400, "interaction_required", 65001, OAUTH_CONFIG},
	{400, "interaction_required", 90094, OAUTH_CONFIG},
	{400, "invalid_grant", 90094, OAUTH_CONFIG},
	/* Conditional access. */
	{400, "invalid_grant", 53003, OAUTH_CONFIG},
	{400, "interaction_required", 53003, OAUTH_CONFIG},
	/* Client configuration. */
	{401, "invalid_client", 7000215, OAUTH_CONFIG},
	{401, "invalid_client", 7000222, OAUTH_CONFIG},
	{400, "unauthorized_client", 700016, OAUTH_CONFIG},
	{400, "invalid_grant", 700016, OAUTH_CONFIG},
	{400, "invalid_grant", 7000215, OAUTH_CONFIG},
	{401, "invalid_client", 700025, OAUTH_CONFIG},
	{401, "invalid_client", 700027, OAUTH_CONFIG},
	{401, "invalid_client", 50012, OAUTH_CONFIG},
	{400, "invalid_scope", 1002012, OAUTH_CONFIG},
	{400, "invalid_scope", 0, OAUTH_CONFIG},
	{400, "invalid_request", 900144, OAUTH_CONFIG},
	{400, "invalid_request", 90002, OAUTH_CONFIG},
	{400, "invalid_request", 90038, OAUTH_CONFIG},
	{400, "invalid_request", 9001023, OAUTH_CONFIG},
	{400, "invalid_request", 50194, OAUTH_CONFIG},
	{400, "unsupported_grant_type", 0, OAUTH_CONFIG},
	/* Transient. */
	{503, "temporarily_unavailable", 0, OAUTH_TRANSIENT},
	{400, "temporarily_unavailable", 0, OAUTH_TRANSIENT},
	{400, "invalid_request", 50196, OAUTH_TRANSIENT},
	{400, "invalid_grant", 50196, OAUTH_TRANSIENT},
	{429, "invalid_request", 90024, OAUTH_TRANSIENT},
	{400, "invalid_request", 90024, OAUTH_TRANSIENT},
	{500, "server_error", 90006, OAUTH_TRANSIENT},
	{400, "invalid_request", 90055, OAUTH_TRANSIENT},
	{500, "", 0, OAUTH_TRANSIENT},
	{502, NULL, 0, OAUTH_TRANSIENT},
	{504, "invalid_grant", 0, OAUTH_TRANSIENT},
	{429, "", 0, OAUTH_TRANSIENT},
	{0, "", 0, OAUTH_TRANSIENT},
	/* Device code polling. */
	{400, "authorization_pending", 70016, OAUTH_PENDING},
	{400, "slow_down", 0, OAUTH_SLOW_DOWN},
	{400, "authorization_declined", 0, OAUTH_DECLINED},
	{400, "access_denied", 0, OAUTH_DECLINED},
	{400, "expired_token", 70019, OAUTH_EXPIRED},
	{400, "bad_verification_code", 70018, OAUTH_EXPIRED},
	/* Unknown error names: the number, then the status. */
	{400, "some_new_error", 50173, OAUTH_REAUTH},
	{400, "some_new_error", 7000215, OAUTH_CONFIG},
	{400, "some_new_error", 0, OAUTH_CONFIG},
	{401, "", 0, OAUTH_CONFIG},
	{400, NULL, 0, OAUTH_CONFIG},
	{302, "", 0, OAUTH_TRANSIENT},
    };
    size_t  i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
	enum oauth_class got = oauth_classify(cases[i].status, cases[i].error,
					      cases[i].aadsts);

	T_CHECK(got == cases[i].want, "case %zu: HTTP %ld %s AADSTS%ld -> %s, "
		"want %s", i, cases[i].status,
		cases[i].error ? cases[i].error : "(null)", cases[i].aadsts,
		oauth_class_name(got), oauth_class_name(cases[i].want));
    }
    T_EQ_STR(oauth_class_name(OAUTH_REAUTH), "reauth");
    T_EQ_STR(oauth_class_name(OAUTH_CONFIG), "config");
    T_EQ_STR(oauth_class_name(OAUTH_TRANSIENT), "transient");
    T_EQ_STR(oauth_class_name(OAUTH_PENDING), "pending");
}

/* remedy - oauth_remedy() for one code and class */

static void remedy(long code, enum oauth_class cls, char *buf, size_t len)
{
    struct oauth_error err;

    memset(&err, 0, sizeof(err));
    err.http_status = 400;
    err.aadsts = code;
    err.cls = cls;
    snprintf(err.error, sizeof(err.error), "invalid_grant");
    oauth_remedy(&err, "mailer", buf, len);
}

static void test_remedy(void)
{
    static const struct {
	long    code;
	enum oauth_class cls;
	const char *needle;		/* the specific advice */
    }       cases[] = {
	{50173, OAUTH_REAUTH, "revoked"},
	{700082, OAUTH_REAUTH, "90 days"},
	{70008, OAUTH_REAUTH, "m365ctl login mailer"},
	{70043, OAUTH_REAUTH, "sign-in frequency"},
	{700003, OAUTH_REAUTH, "device"},
	{65001, OAUTH_CONFIG, "m365ctl consent-url mailer"},
	{90094, OAUTH_CONFIG, "administrator consent"},
	{50076, OAUTH_REAUTH, "multi-factor"},
	{50079, OAUTH_REAUTH, "register"},
	{53003, OAUTH_CONFIG, "Conditional Access"},
	{7000215, OAUTH_CONFIG, "secret VALUE (not the secret ID)"},
	{7000222, OAUTH_CONFIG, "expired"},
	{700016, OAUTH_CONFIG, "client_id and tenant"},
	{700025, OAUTH_CONFIG, "public client"},
	{700027, OAUTH_CONFIG, "upload"},
	{50012, OAUTH_CONFIG, "key_file"},
	{50196, OAUTH_TRANSIENT, "loop"},
	{90024, OAUTH_TRANSIENT, "stays queued"},
	{90006, OAUTH_TRANSIENT, "stays queued"},
	{90055, OAUTH_TRANSIENT, "throttled"},
	{90002, OAUTH_CONFIG, "tenant"},
	{90038, OAUTH_CONFIG, "cloud"},
	{9001023, OAUTH_CONFIG, "not common"},
	{50194, OAUTH_CONFIG, "single-tenant"},
	{70019, OAUTH_EXPIRED, "expired"},
    };
    char    buf[600];
    char    num[32];
    size_t  i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
	remedy(cases[i].code, cases[i].cls, buf, sizeof(buf));
	snprintf(num, sizeof(num), "AADSTS%ld", cases[i].code);
	T_CONTAINS(buf, num);
	T_CONTAINS(buf, "mailer");
	T_CONTAINS(buf, cases[i].needle);
    }
    remedy(50173, OAUTH_REAUTH, buf, sizeof(buf));
    T_EQ_STR(buf, "AADSTS50173: the grant was revoked (password change/reset "
	     "or an admin revoked sessions): sign in again with: m365ctl "
	     "login mailer");

    /* No specific text: the class decides. */
    remedy(0, OAUTH_REAUTH, buf, sizeof(buf));
    T_CONTAINS(buf, "m365ctl login mailer");
    T_OK(strstr(buf, "AADSTS") == NULL);
    remedy(99999, OAUTH_TRANSIENT, buf, sizeof(buf));
    T_CONTAINS(buf, "AADSTS99999");
    T_CONTAINS(buf, "mail for account mailer stays queued and is retried");
    remedy(99998, OAUTH_CONFIG, buf, sizeof(buf));
    T_CONTAINS(buf, "AADSTS99998");
    T_CONTAINS(buf, "m365ctl test mailer");
    remedy(0, OAUTH_DECLINED, buf, sizeof(buf));
    T_CONTAINS(buf, "declined");

    /* A short buffer is truncated, still NUL-terminated. */
    remedy(50173, OAUTH_REAUTH, buf, 20);
    T_EQ_INT(strlen(buf), 19);
}

/* The real Microsoft body format (see tests/emulator). */
static const char ok_body[] =
"{\"token_type\":\"Bearer\",\"scope\":\"https://graph.microsoft.com/Mail.Send "
"https://graph.microsoft.com/User.Read\",\"expires_in\":3599,"
"\"ext_expires_in\":3599,\"access_token\":\"eyJ0eXAiOiJKV1Qi.abc.def\","
"\"refresh_token\":\"0.AAAA-rt-value\"}";

static const char revoked_body[] =
"{\"error\":\"invalid_grant\",\"error_description\":\"AADSTS50173: The "
"provided grant has expired due to it being revoked, a fresh auth token is "
"needed. The user might have changed or reset their password.\\r\\nTrace ID: "
"0a1b2c3d-0000-4000-8000-000000000000\\r\\nCorrelation ID: "
"9f8e7d6c-0000-4000-8000-000000000000\\r\\nTimestamp: 2026-11-28 10:00:00Z\","
"\"error_codes\":[50173],\"timestamp\":\"2026-11-28 10:00:00Z\","
"\"trace_id\":\"0a1b2c3d-0000-4000-8000-000000000000\","
"\"correlation_id\":\"9f8e7d6c-0000-4000-8000-000000000000\","
"\"error_uri\":\"https://login.microsoftonline.com/error?code=50173\"}";

static void test_parse_success(void)
{
    struct oauth_token tok;
    struct oauth_error err;

    T_EQ_INT(oauth_parse_token(ok_body, 200, &tok, &err), 0);
    T_EQ_STR(tok.access_token, "eyJ0eXAiOiJKV1Qi.abc.def");
    T_EQ_STR(tok.refresh_token, "0.AAAA-rt-value");
    T_EQ_INT(tok.expires_in, 3599);
    T_CONTAINS(tok.scope, "/Mail.Send");
    oauth_token_free(&tok);
    T_OK(tok.access_token == NULL && tok.refresh_token == NULL);

    /* Client credentials: no refresh token; v1-style string expires_in. */
    T_EQ_INT(oauth_parse_token("{\"token_type\":\"Bearer\",\"expires_in\":"
			       "\"3600\",\"access_token\":\"AT1\"}", 200,
			       &tok, &err), 0);
    T_EQ_STR(tok.access_token, "AT1");
    T_OK(tok.refresh_token == NULL);
    T_EQ_INT(tok.expires_in, 3600);
    oauth_token_free(&tok);
}

static void test_parse_error(void)
{
    struct oauth_token tok;
    struct oauth_error err;

    T_EQ_INT(oauth_parse_token(revoked_body, 400, &tok, &err), -1);
    T_OK(tok.access_token == NULL);
    T_EQ_INT(err.http_status, 400);
    T_EQ_STR(err.error, "invalid_grant");
    T_EQ_INT(err.aadsts, 50173);
    T_EQ_INT(err.cls, OAUTH_REAUTH);
    T_CONTAINS(err.description, "AADSTS50173: The provided grant has expired");
    T_OK(strstr(err.description, "Trace ID") == NULL);
    T_OK(strstr(err.description, "\r") == NULL);
    T_CONTAINS(err.description, "correlation id 9f8e7d6c-");

    /* 7000215, real shape, 401. */
    T_EQ_INT(oauth_parse_token("{\"error\":\"invalid_client\","
			       "\"error_description\":\"AADSTS7000215: Invalid "
			       "client secret provided.\",\"error_codes\":"
			       "[7000215]}", 401, &tok, &err), -1);
    T_EQ_INT(err.aadsts, 7000215);
    T_EQ_INT(err.cls, OAUTH_CONFIG);

    /* No error_codes: the number comes from the description. */
    T_EQ_INT(oauth_parse_token("{\"error\":\"invalid_grant\","
			       "\"error_description\":\"AADSTS700082: The "
			       "refresh token has expired due to inactivity."
			       "\"}", 400, &tok, &err), -1);
    T_EQ_INT(err.aadsts, 700082);
    T_EQ_INT(err.cls, OAUTH_REAUTH);

    /* Device code polling. */
    T_EQ_INT(oauth_parse_token("{\"error\":\"authorization_pending\","
			       "\"error_description\":\"AADSTS70016: OAuth 2.0 "
			       "device flow error. Authorization is pending."
			       "\",\"error_codes\":[70016]}", 400, &tok, &err),
	     -1);
    T_EQ_INT(err.cls, OAUTH_PENDING);
    T_EQ_INT(oauth_parse_token("{\"error\":\"expired_token\","
			       "\"error_codes\":[70019]}", 400, &tok, &err), -1);
    T_EQ_INT(err.cls, OAUTH_EXPIRED);
    T_EQ_INT(oauth_parse_token("{\"error\":\"slow_down\"}", 400, &tok, &err),
	     -1);
    T_EQ_INT(err.cls, OAUTH_SLOW_DOWN);
    T_EQ_INT(oauth_parse_token("{\"error\":\"authorization_declined\"}", 400,
			       &tok, &err), -1);
    T_EQ_INT(err.cls, OAUTH_DECLINED);

    /* 503 temporarily_unavailable. */
    T_EQ_INT(oauth_parse_token("{\"error\":\"temporarily_unavailable\","
			       "\"error_codes\":[90006]}", 503, &tok, &err), -1);
    T_EQ_INT(err.cls, OAUTH_TRANSIENT);

    /* Non-JSON: an HTML 502 from a proxy. */
    T_EQ_INT(oauth_parse_token("<html><body>502 Bad Gateway</body></html>",
			       502, &tok, &err), -1);
    T_EQ_INT(err.cls, OAUTH_TRANSIENT);
    T_EQ_INT(err.http_status, 502);
    T_CONTAINS(err.description, "HTTP 502 with no OAuth error");
    T_CONTAINS(err.description, "502 Bad Gateway");
    /* Non-JSON even with a 400: not Microsoft's verdict. */
    T_EQ_INT(oauth_parse_token("Bad Request", 400, &tok, &err), -1);
    T_EQ_INT(err.cls, OAUTH_TRANSIENT);
    T_EQ_INT(oauth_parse_token("[1,2]", 400, &tok, &err), -1);
    T_EQ_INT(err.cls, OAUTH_TRANSIENT);
    T_EQ_INT(oauth_parse_token("{\"x\":1}", 400, &tok, &err), -1);
    T_EQ_INT(err.cls, OAUTH_TRANSIENT);
    T_EQ_INT(oauth_parse_token("", 200, &tok, &err), -1);
    T_EQ_INT(err.cls, OAUTH_TRANSIENT);
    T_EQ_INT(oauth_parse_token(NULL, 200, &tok, &err), -1);

    /* 200 without an access token, or with a header-breaking one. */
    T_EQ_INT(oauth_parse_token("{\"token_type\":\"Bearer\"}", 200, &tok, &err),
	     -1);
    T_CONTAINS(err.description, "without an access_token");
    T_EQ_INT(oauth_parse_token("{\"access_token\":\"a\\r\\nX-Evil: 1\"}", 200,
			       &tok, &err), -1);
    T_OK(tok.access_token == NULL);
    T_EQ_INT(oauth_parse_token("{\"access_token\":\"a\",\"refresh_token\":"
			       "\"b c\"}", 200, &tok, &err), -1);

    /* Control bytes in the description are made printable. */
    T_EQ_INT(oauth_parse_token("{\"error\":\"invalid_request\","
			       "\"error_description\":\"bad\\u0007thing\"}",
			       400, &tok, &err), -1);
    T_EQ_STR(err.description, "bad?thing");
    T_EQ_INT(err.cls, OAUTH_CONFIG);
}

static void test_scope(void)
{
    char   *s;

    s = oauth_scope(&conf, &deleg);
    T_EQ_STR(s, "offline_access https://graph.microsoft.com/Mail.Send "
	     "https://graph.microsoft.com/User.Read");
    free(s);

    deleg.scopes = "Mail.Send.Shared, https://outlook.office.com/SMTP.Send "
	"openid offline_access Mail.Send  User.Read";
    s = oauth_scope(&conf, &deleg);
    T_EQ_STR(s, "offline_access https://graph.microsoft.com/Mail.Send "
	     "https://graph.microsoft.com/User.Read "
	     "https://graph.microsoft.com/Mail.Send.Shared "
	     "https://outlook.office.com/SMTP.Send openid");
    free(s);
    deleg.scopes = NULL;

    s = oauth_scope(&conf, &app);
    T_EQ_STR(s, "https://graph.microsoft.com/.default");
    free(s);
    app.auth = CONF_AUTH_CERTIFICATE;
    s = oauth_scope(&conf, &app);
    T_EQ_STR(s, "https://graph.microsoft.com/.default");
    free(s);
    app.auth = CONF_AUTH_SECRET;

    /* National cloud resource, trailing slash ignored. */
    conf.graph_resource = "https://graph.microsoft.us/";
    s = oauth_scope(&conf, &app);
    T_EQ_STR(s, "https://graph.microsoft.us/.default");
    free(s);
    s = oauth_scope(&conf, &deleg);
    T_CONTAINS(s, "https://graph.microsoft.us/Mail.Send");
    T_OK(strstr(s, "graph.microsoft.com") == NULL);
    free(s);
    conf.graph_resource = "https://graph.microsoft.com";
}

/* A delegated account read by [source] sections gets Mail.ReadWrite(.Shared). */
static void test_scope_sources(void)
{
    struct conf_source own, shared, other;
    char   *s;

    memset(&own, 0, sizeof(own));
    memset(&shared, 0, sizeof(shared));
    memset(&other, 0, sizeof(other));
    other.name = "other";
    other.account = "someone-else";
    other.mailbox = "x@contoso.test";
    conf.sources = &other;
    s = oauth_scope(&conf, &deleg);
    T_OK(strstr(s, "Mail.ReadWrite") == NULL);
    free(s);

    /* Own mailbox (no mailbox, or the account's): Mail.ReadWrite only. */
    own.name = "own";
    own.account = deleg.name;
    own.acct = &deleg;
    other.next = &own;
    s = oauth_scope(&conf, &deleg);
    T_EQ_STR(s, "offline_access https://graph.microsoft.com/Mail.Send "
	     "https://graph.microsoft.com/User.Read "
	     "https://graph.microsoft.com/Mail.ReadWrite");
    free(s);
    deleg.mailbox = "alice@contoso.test";
    own.mailbox = "<Alice@Contoso.TEST>";
    s = oauth_scope(&conf, &deleg);
    T_OK(strstr(s, "Mail.ReadWrite.Shared") == NULL);
    T_CONTAINS(s, "https://graph.microsoft.com/Mail.ReadWrite");
    free(s);
    own.mailbox = NULL;

    /* Another mailbox: also Mail.ReadWrite.Shared, once. */
    shared.name = "shared";
    shared.account = deleg.name;	/* matched by name, acct unset */
    shared.mailbox = "helpdesk@contoso.test";
    own.next = &shared;
    s = oauth_scope(&conf, &deleg);
    T_EQ_STR(s, "offline_access https://graph.microsoft.com/Mail.Send "
	     "https://graph.microsoft.com/User.Read "
	     "https://graph.microsoft.com/Mail.ReadWrite "
	     "https://graph.microsoft.com/Mail.ReadWrite.Shared");
    free(s);

    /* Admin consent URL: the same scopes, without offline_access. */
    s = oauth_consent_url(&conf, &deleg);
    T_CONTAINS(s, "%2FMail.ReadWrite%20https%3A%2F%2Fgraph.microsoft.com"
	       "%2FMail.ReadWrite.Shared");
    free(s);

    /* App-only accounts: .default covers the application roles. */
    shared.account = app.name;
    shared.acct = &app;
    s = oauth_scope(&conf, &app);
    T_EQ_STR(s, "https://graph.microsoft.com/.default");
    free(s);
    conf.sources = NULL;
    deleg.mailbox = NULL;
}

static void test_endpoint(void)
{
    char   *s;

    s = oauth_endpoint(&conf, &deleg, "token");
    T_EQ_STR(s, "https://login.microsoftonline.com/contoso.onmicrosoft.com/"
	     "oauth2/v2.0/token");
    free(s);
    s = oauth_endpoint(&conf, &app, "devicecode");
    T_EQ_STR(s, "https://login.microsoftonline.com/"
	     "22222222-3333-4444-5555-666666666666/oauth2/v2.0/devicecode");
    free(s);
    conf.login_url = "https://127.0.0.1:8443/";
    s = oauth_endpoint(&conf, &deleg, "authorize");
    T_EQ_STR(s, "https://127.0.0.1:8443/contoso.onmicrosoft.com/oauth2/v2.0/"
	     "authorize");
    free(s);
    conf.login_url = "https://login.microsoftonline.com";
}

static void test_authorize_url(void)
{
    char   *s = oauth_authorize_url(&conf, &deleg, "http://127.0.0.1:53682/",
				    "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
				    "st4te");

    T_OK(strncmp(s, "https://login.microsoftonline.com/contoso.onmicrosoft."
		 "com/oauth2/v2.0/authorize?", 75) == 0);
    T_CONTAINS(s, "client_id=11111111-0000-0000-0000-000000000001");
    T_CONTAINS(s, "&response_type=code&");
    T_CONTAINS(s, "&redirect_uri=http%3A%2F%2F127.0.0.1%3A53682%2F&");
    T_CONTAINS(s, "&response_mode=query&");
    T_CONTAINS(s, "&scope=offline_access%20https%3A%2F%2Fgraph.microsoft.com"
	       "%2FMail.Send%20https%3A%2F%2Fgraph.microsoft.com%2FUser.Read&");
    T_CONTAINS(s, "&state=st4te&");
    T_CONTAINS(s, "&code_challenge="
	       "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&");
    T_CONTAINS(s, "&code_challenge_method=S256");
    T_OK(strchr(s, ' ') == NULL);
    free(s);
}

static void test_pkce(void)
{
    char    ch[64];
    char    v1[129], c1[64], v2[129], c2[64];
    size_t  i;

    /* RFC 7636 appendix B. */
    oauth_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", ch,
			 sizeof(ch));
    T_EQ_STR(ch, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");

    oauth_pkce_new(v1, sizeof(v1), c1, sizeof(c1));
    oauth_pkce_new(v2, sizeof(v2), c2, sizeof(c2));
    T_EQ_INT(strlen(v1), 64);
    T_EQ_INT(strlen(c1), 43);
    T_EQ_INT(strspn(v1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		    "0123456789-._~"), 64);
    T_OK(strcmp(v1, v2) != 0);
    oauth_pkce_challenge(v1, ch, sizeof(ch));
    T_EQ_STR(c1, ch);
    for (i = 0; c1[i]; i++)
	T_OK(c1[i] != '+' && c1[i] != '/' && c1[i] != '=');

    /* A 44-byte buffer still gives the RFC minimum of 43 characters. */
    oauth_pkce_new(v1, 44, c1, sizeof(c1));
    T_EQ_INT(strlen(v1), 43);
}

static void test_consent_url(void)
{
    char   *s;

    s = oauth_consent_url(&conf, &app);
    T_EQ_STR(s, "https://login.microsoftonline.com/"
	     "22222222-3333-4444-5555-666666666666/adminconsent?client_id="
	     "11111111-0000-0000-0000-000000000002");
    free(s);

    deleg.scopes = "Mail.Send.Shared";
    s = oauth_consent_url(&conf, &deleg);
    T_EQ_STR(s, "https://login.microsoftonline.com/contoso.onmicrosoft.com/"
	     "v2.0/adminconsent?client_id=11111111-0000-0000-0000-000000000001"
	     "&scope=https%3A%2F%2Fgraph.microsoft.com%2FMail.Send%20"
	     "https%3A%2F%2Fgraph.microsoft.com%2FUser.Read%20"
	     "https%3A%2F%2Fgraph.microsoft.com%2FMail.Send.Shared"
	     "&redirect_uri=http%3A%2F%2Flocalhost");
    T_OK(strstr(s, "offline_access") == NULL);
    free(s);
    deleg.scopes = NULL;
}

static void test_form(void)
{
    struct strbuf f;

    strbuf_init(&f, 64);
    T_EQ_INT(http_form_add(&f, "grant_type", "refresh_token"), 0);
    T_EQ_INT(http_form_add(&f, "scope", "a b&c=d/é"), 0);
    T_EQ_INT(http_form_add(&f, "empty", NULL), 0);
    T_EQ_STR(strbuf_str(&f), "grant_type=refresh_token&scope=a%20b%26c%3Dd"
	     "%2F%C3%A9&empty=");
    /* Past the cap: -1, buffer unchanged. */
    T_EQ_INT(http_form_add(&f, "x",
			   "0123456789012345678901234567890123456789"), -1);
    T_OK(strstr(strbuf_str(&f), "x=") == NULL);
    strbuf_free(&f);
}

/* closed_port - a loopback port with nothing listening (bound, no listen) */

static int closed_port(int *fd_r)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int     fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0
	|| getsockname(fd, (struct sockaddr *) &sa, &len) < 0)
	return (-1);
    *fd_r = fd;
    return (ntohs(sa.sin_port));
}

/* write_file - create a file with a mode */

static void write_file(const char *path, const char *text, mode_t mode)
{
    int     fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

    if (fd >= 0) {
	if (write(fd, text, strlen(text)) < 0)
	    T_OK(0);
	close(fd);
    }
    chmod(path, mode);
}

/* Local failures and transport errors, without any server. */
static void test_requests_offline(void)
{
    char    dir[] = "/tmp/test_oauth.XXXXXX";
    char    secret[300], url[100], err[200], rem[600];
    struct http *http;
    struct oauth_token tok;
    struct oauth_error oe;
    int     port, fd = -1;

    T_OK(mkdtemp(dir) != NULL);
    snprintf(secret, sizeof(secret), "%s/secret", dir);
    port = closed_port(&fd);
    T_OK(port > 0);
    snprintf(url, sizeof(url), "https://127.0.0.1:%d", port);
    conf.login_url = url;
    http = http_create(&conf, err, sizeof(err));
    T_OK(http != NULL);

    /* A delegated (public) client never gets client credentials. */
    T_EQ_INT(oauth_client_credentials(http, &conf, &deleg, &tok, &oe), -1);
    T_EQ_INT(oe.cls, OAUTH_CONFIG);
    T_CONTAINS(oe.description, "auth = delegated");

    /* Secret file: missing, readable by others, empty. */
    app.secret_file = secret;
    T_EQ_INT(oauth_client_credentials(http, &conf, &app, &tok, &oe), -1);
    T_EQ_INT(oe.cls, OAUTH_CONFIG);
    T_EQ_INT(oe.http_status, 0);
    T_CONTAINS(oe.description, secret);
    write_file(secret, "s3cret\n", 0644);
    T_EQ_INT(oauth_client_credentials(http, &conf, &app, &tok, &oe), -1);
    T_EQ_INT(oe.cls, OAUTH_CONFIG);
    T_CONTAINS(oe.description, "chmod 600");
    oauth_remedy(&oe, "daemon", rem, sizeof(rem));
    T_CONTAINS(rem, "chmod 600");
    T_CONTAINS(rem, "m365ctl test daemon");
    write_file(secret, "\n", 0600);
    T_EQ_INT(oauth_client_credentials(http, &conf, &app, &tok, &oe), -1);
    T_EQ_INT(oe.cls, OAUTH_CONFIG);
    T_CONTAINS(oe.description, "is empty");

    /* A good secret file: the request goes out and finds no server. */
    write_file(secret, "s3cret\n", 0600);
    T_EQ_INT(oauth_client_credentials(http, &conf, &app, &tok, &oe), -1);
    T_EQ_INT(oe.cls, OAUTH_TRANSIENT);
    T_EQ_INT(oe.http_status, 0);
    T_CONTAINS(oe.description, "cannot reach the token endpoint");
    T_CONTAINS(oe.description, "/22222222-3333-4444-5555-666666666666/oauth2/"
	       "v2.0/token");
    T_OK(strstr(oe.description, "s3cret") == NULL);
    oauth_remedy(&oe, "daemon", rem, sizeof(rem));
    T_CONTAINS(rem, "stays queued");

    /* Certificate: jwt.c reports the unreadable certificate. */
    T_EQ_INT(oauth_client_credentials(http, &conf, &cert, &tok, &oe), -1);
    T_EQ_INT(oe.cls, OAUTH_CONFIG);
    T_OK(oe.description[0] != 0);

    /* A refresh token that does not fit: nothing is sent. */
    {
	char   *huge = xmalloc(20000);

	memset(huge, 'r', 19999);
	huge[19999] = 0;
	T_EQ_INT(oauth_refresh(http, &conf, &deleg, huge, NULL, &tok, &oe), -1);
	T_EQ_INT(oe.cls, OAUTH_CONFIG);
	T_CONTAINS(oe.description, "is larger than");
	T_OK(strstr(oe.description, "cannot reach") == NULL);
	free(huge);
    }

    /* Refresh and device code: transport error -> transient. */
    T_EQ_INT(oauth_refresh(http, &conf, &deleg, "rt", NULL, &tok, &oe), -1);
    T_EQ_INT(oe.cls, OAUTH_TRANSIENT);
    {
	struct oauth_device dev;

	T_EQ_INT(oauth_device_start(http, &conf, &deleg, &dev, &oe), -1);
	T_EQ_INT(oe.cls, OAUTH_TRANSIENT);
	T_CONTAINS(oe.description, "/oauth2/v2.0/devicecode");
	oauth_device_free(&dev);
    }

    http_free(http);
    if (fd >= 0)
	close(fd);
    unlink(secret);
    rmdir(dir);
    app.secret_file = NULL;
    conf.login_url = "https://login.microsoftonline.com";
}

/* long_text - n bytes of c; free() it */

static char *long_text(size_t n, int c)
{
    char   *s = xmalloc(n + 1);

    memset(s, c, n);
    s[n] = 0;
    return (s);
}

/* many_scopes - 100 distinct 200-byte scopes: over 16 KB once prefixed */

static char *many_scopes(void)
{
    char   *s = xmalloc(100 * 201 + 1);
    size_t  i;

    for (i = 0; i < 100; i++) {
	snprintf(s + i * 201, 202, "S%03lu", (unsigned long) i);
	memset(s + i * 201 + 4, 'x', 196);
	s[i * 201 + 200] = ' ';
    }
    s[100 * 201] = 0;
    return (s);
}

/* not_built - did a builder say "too long" (NULL)?  Frees a result. */

static int not_built(char *s)
{
    int     none = (s == NULL);

    free(s);
    return (none);
}

/*
 * Every builder past its cap (issue 8.6): a URL, scope list or form is
 * never cut short.  The builders return NULL; a request is refused as a
 * configuration error before anything is sent (a closed port shows it:
 * no "cannot reach").
 */
static void test_past_cap(void)
{
    char    dir[] = "/tmp/test_oauth.XXXXXX";
    char    secret[300], url[100], err[200], desc[20100];
    char   *huge = long_text(20000, 't');
    char   *vast = long_text(40000, 'v');
    char   *scopes = many_scopes();
    char   *tenant = deleg.tenant, *app_tenant = app.tenant;
    char   *app_id = app.client_id;
    struct oauth_device dev;
    struct http *http;
    struct oauth_token tok;
    struct oauth_error oe;
    int     port, fd = -1;

    /* URL and scope builders: NULL, never a text cut short. */
    deleg.tenant = huge;
    T_OK(not_built(oauth_endpoint(&conf, &deleg, "token")));
    T_OK(not_built(oauth_authorize_url(&conf, &deleg, "http://localhost:1/",
				       "c", "s")));
    /* The consent URL may be 32 KB long (its query alone 16 KB). */
    T_OK(!not_built(oauth_consent_url(&conf, &deleg)));
    deleg.tenant = vast;
    T_OK(not_built(oauth_consent_url(&conf, &deleg)));
    deleg.tenant = tenant;
    deleg.scopes = scopes;
    T_OK(not_built(oauth_scope(&conf, &deleg)));
    T_OK(not_built(oauth_authorize_url(&conf, &deleg, "http://localhost:1/",
				       "c", "s")));
    T_OK(not_built(oauth_consent_url(&conf, &deleg)));
    deleg.scopes = NULL;
    app.client_id = huge;
    T_OK(not_built(oauth_consent_url(&conf, &app)));
    app.client_id = app_id;

    /* A huge error_description is cut where it is shown, and says so. */
    snprintf(desc, sizeof(desc), "{\"error\":\"invalid_grant\","
	     "\"error_description\":\"AADSTS50173: %s\"}", huge);
    T_EQ_INT(oauth_parse_token(desc, 400, &tok, &oe), -1);
    T_OK(strncmp(oe.description, "AADSTS50173: ttt", 16) == 0);
    T_OK(strlen(oe.description) > 3 && strcmp(oe.description
			+ strlen(oe.description) - 3, "...") == 0);

    /* Requests: refused before anything goes out (login_url: a closed port). */
    T_OK((port = closed_port(&fd)) > 0);
    snprintf(url, sizeof(url), "https://127.0.0.1:%d", port);
    conf.login_url = url;
    T_OK((http = http_create(&conf, err, sizeof(err))) != NULL);
    T_OK(mkdtemp(dir) != NULL);
    snprintf(secret, sizeof(secret), "%s/secret", dir);

    deleg.scopes = scopes;
    T_EQ_INT(oauth_device_start(http, &conf, &deleg, &dev, &oe), -1);
    T_EQ_INT(oe.cls, OAUTH_CONFIG);
    T_CONTAINS(oe.description, "is larger than");
    oauth_device_free(&dev);
    T_EQ_INT(oauth_redeem_code(http, &conf, &deleg, "code",
			       "http://localhost:1/", "verifier", &tok, &oe),
	     -1);
    T_EQ_INT(oe.cls, OAUTH_CONFIG);
    T_CONTAINS(oe.description, "is larger than");
    T_EQ_INT(oauth_refresh(http, &conf, &deleg, "rt", NULL, &tok, &oe), -1);
    T_EQ_INT(oe.cls, OAUTH_CONFIG);
    deleg.scopes = NULL;

    /* Granted scopes (from the token store) too long for the form. */
    T_EQ_INT(oauth_refresh(http, &conf, &deleg, "rt", huge, &tok, &oe), -1);
    T_EQ_INT(oe.cls, OAUTH_CONFIG);
    T_CONTAINS(oe.description, "is larger than");
    T_OK(strstr(oe.description, "cannot reach") == NULL);

    /* No token endpoint URL: nothing is sent, the cause is named. */
    deleg.tenant = huge;
    T_EQ_INT(oauth_refresh(http, &conf, &deleg, "rt", NULL, &tok, &oe), -1);
    T_EQ_INT(oe.cls, OAUTH_CONFIG);
    T_CONTAINS(oe.description, "the sign-in service is larger than");
    deleg.tenant = tenant;
    write_file(secret, "s3cret\n", 0600);
    app.secret_file = secret;
    app.tenant = huge;
    T_EQ_INT(oauth_client_credentials(http, &conf, &app, &tok, &oe), -1);
    T_EQ_INT(oe.cls, OAUTH_CONFIG);
    T_CONTAINS(oe.description, "token endpoint URL of account daemon");
    T_OK(strstr(oe.description, "cannot reach") == NULL);
    app.tenant = app_tenant;
    app.secret_file = NULL;

    http_free(http);
    if (fd >= 0)
	close(fd);
    unlink(secret);
    rmdir(dir);
    conf.login_url = "https://login.microsoftonline.com";
    free(scopes);
    free(vast);
    free(huge);
}

int     main(void)
{
    log_open("test_oauth");
    setup();
    T_RUN(test_classify);
    T_RUN(test_remedy);
    T_RUN(test_parse_success);
    T_RUN(test_parse_error);
    T_RUN(test_scope);
    T_RUN(test_scope_sources);
    T_RUN(test_endpoint);
    T_RUN(test_authorize_url);
    T_RUN(test_pkce);
    T_RUN(test_consent_url);
    T_RUN(test_form);
    T_RUN(test_requests_offline);
    T_RUN(test_past_cap);
    return (T_DONE());
}
