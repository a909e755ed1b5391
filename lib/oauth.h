/*
 * NAME
 *	oauth 3h
 * SUMMARY
 *	OAuth 2.0 against the Microsoft identity platform (v2.0)
 * SYNOPSIS
 *	#include "oauth.h"
 * DESCRIPTION
 *	Token endpoint requests for every grant m365relay uses:
 *	- device authorization grant (oauth_device_start, _poll);
 *	- authorization code + PKCE S256 (oauth_pkce_new,
 *	  oauth_authorize_url, oauth_redeem_code);
 *	- refresh token (oauth_refresh; the new refresh token returned
 *	  replaces the old one);
 *	- client credentials with a secret (secret_file) or a certificate
 *	  (JWT client assertion, see jwt.h) (oauth_client_credentials).
 *	Endpoints are conf->login_url + "/" + tenant + "/oauth2/v2.0/...".
 *	Delegated scopes: "offline_access <res>/Mail.Send <res>/User.Read"
 *	plus the account's extra scopes (a bare name like Mail.Send.Shared
 *	gets the resource prefix), plus "<res>/Mail.ReadWrite" when a
 *	[source] reads with the account and "<res>/Mail.ReadWrite.Shared"
 *	when such a source reads another mailbox than the account's
 *	(m365-fetch), plus the permission of the large-message path
 *	(oauth_large_scope(): "<res>/Mail.ReadWrite", or
 *	"<res>/Mail.ReadWrite.Shared" for an account whose scopes hold
 *	Mail.Send.Shared, one that sends from another user's mailbox) when
 *	the account has large_messages = yes; app-only: "<res>/.default",
 *	where <res> is conf->graph_resource.  oauth_scope_has() tells
 *	whether a granted scope list (as the token endpoint returns it)
 *	holds a permission, compared by the name after the last "/".
 *	oauth_token_roles() reads the "roles" claim (the application
 *	permissions) of an app-only access token that is a JWT into roles
 *	(space separated; the caller frees it): 1 when want is one of
 *	them, 0 when not, -1 for an opaque token.
 *
 *	Errors are classified on the OAuth "error" field first and the
 *	AADSTS number second (graph-facts.md section 7):
 *	  OAUTH_REAUTH     invalid_grant (50173, 700082, 70008, 70043,
 *	                   700003, 50076/50079 ...), interaction_required:
 *	                   the account goes offline until m365ctl login;
 *	  OAUTH_CONFIG     invalid_client (7000215, 7000222, 700016,
 *	                   700025, 700027, 50012), unauthorized_client,
 *	                   65001/90094 consent, 53003 conditional access,
 *	                   invalid_scope, wrong tenant (90002, 90038 ...);
 *	  OAUTH_TRANSIENT  temporarily_unavailable, 5xx, 429, 50196,
 *	                   90024, 90055, transport errors;
 *	  OAUTH_PENDING / OAUTH_SLOW_DOWN / OAUTH_DECLINED / OAUTH_EXPIRED
 *	                   device-code polling states.
 *	oauth_remedy() gives the human fix for an error (used in logs and
 *	by m365ctl), e.g. "the refresh token was revoked (password change
 *	or admin revocation): sign in again with m365ctl login NAME".
 *	oauth_aadsts_from_text() finds the AADSTS number in a text (an
 *	error_description, or the error page of the authorize redirect).
 * DIAGNOSTICS
 *	Functions return 0 on success, -1 with the struct oauth_error
 *	filled.  Token values are never logged.  A URL, scope list or
 *	form that would pass its size limit (strbuf.h) is never sent cut
 *	short: oauth_endpoint(), oauth_scope(), oauth_authorize_url() and
 *	oauth_consent_url() return NULL, and a request is refused with an
 *	OAUTH_CONFIG error that says what is too long.
 */
#ifndef M365_OAUTH_H
#define M365_OAUTH_H

#include <time.h>

#include "conf.h"
#include "http.h"

enum oauth_class {
    OAUTH_OK = 0,
    OAUTH_PENDING,			/* authorization_pending */
    OAUTH_SLOW_DOWN,			/* slow_down: interval += 5 */
    OAUTH_DECLINED,			/* authorization_declined */
    OAUTH_EXPIRED,			/* expired_token (device code) */
    OAUTH_REAUTH,			/* interactive sign-in needed */
    OAUTH_CONFIG,			/* admin must fix configuration */
    OAUTH_TRANSIENT,			/* try again later */
};

struct oauth_error {
    long    http_status;		/* 0: transport error */
    char    error[64];			/* OAuth "error", e.g. invalid_grant */
    long    aadsts;			/* first of error_codes[], or 0 */
    char    description[400];		/* printable, truncated */
    enum oauth_class cls;
};

struct oauth_token {
    char   *access_token;
    long    expires_in;			/* seconds */
    char   *refresh_token;		/* NULL for client credentials */
    char   *scope;
};

struct oauth_device {
    char   *device_code;
    char   *user_code;
    char   *verification_uri;
    char   *message;
    long    expires_in;
    long    interval;
};

extern enum oauth_class oauth_classify(long http_status, const char *error,
				               long aadsts);
extern const char *oauth_class_name(enum oauth_class);
extern long oauth_aadsts_from_text(const char *);
extern void oauth_remedy(const struct oauth_error *, const char *account,
			         char *buf, size_t len);
extern int oauth_parse_token(const char *json, long http_status,
			             struct oauth_token *, struct oauth_error *);
extern char *oauth_scope(const struct conf *, const struct conf_account *);
extern int oauth_scope_has(const char *scopes, const char *name);
extern const char *oauth_large_scope(const struct conf_account *);
extern int oauth_token_roles(const char *token, const char *want,
			             struct strbuf *roles);
extern char *oauth_endpoint(const struct conf *, const struct conf_account *,
			            const char *what);	/* "token", "devicecode",
							 * "authorize" */
extern int oauth_device_start(struct http *, const struct conf *,
		                const struct conf_account *, struct oauth_device *,
			              struct oauth_error *);
extern int oauth_device_poll(struct http *, const struct conf *,
			             const struct conf_account *,
			             const struct oauth_device *, struct oauth_token *,
			             struct oauth_error *);
extern int oauth_pkce_new(char *verifier, size_t vlen, char *challenge,
			          size_t clen);	/* 0, -1: no random bytes */
extern void oauth_pkce_challenge(const char *verifier, char *challenge,
				         size_t clen);	/* S256 */
extern char *oauth_authorize_url(const struct conf *, const struct conf_account *,
				         const char *redirect_uri,
			              const char *challenge, const char *state);
extern int oauth_redeem_code(struct http *, const struct conf *,
			             const struct conf_account *, const char *code,
		              const char *redirect_uri, const char *verifier,
			          struct oauth_token *, struct oauth_error *);
extern int oauth_refresh(struct http *, const struct conf *,
			         const struct conf_account *, const char *refresh,
			         const char *granted, struct oauth_token *,
			         struct oauth_error *);
extern int oauth_client_credentials(struct http *, const struct conf *,
				            const struct conf_account *,
				            struct oauth_token *, struct oauth_error *);
extern char *oauth_consent_url(const struct conf *, const struct conf_account *);
extern void oauth_token_free(struct oauth_token *);
extern void oauth_device_free(struct oauth_device *);

#endif
