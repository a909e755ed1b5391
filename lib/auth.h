/*
 * NAME
 *	auth 3h
 * SUMMARY
 *	a valid access token for an account, with one refresh for many
 * SYNOPSIS
 *	#include "auth.h"
 * DESCRIPTION
 *	auth_token() returns (in *token_r, free with xfree_secret) an
 *	access token for the account:
 *	- the cached one from the token store while it is valid for at
 *	  least AUTH_EXPIRY_MARGIN more seconds (and force is 0);
 *	- otherwise, under the account lock, re-reads the store (another
 *	  process may have refreshed meanwhile) and only then asks the
 *	  token endpoint: refresh token for delegated accounts, client
 *	  credentials for app-only accounts.  The new tokens (and the
 *	  rotated refresh token) are saved atomically before the lock is
 *	  released.  N parallel callers with an expired token make exactly
 *	  one token request.
 *	force = 1 with refused = the token Graph refused (401): renew it,
 *	unless another process already stored a different valid token
 *	(then that one is returned: N processes refused at once make one
 *	request).  force = 1 with refused = NULL: always ask for a new
 *	token (m365ctl test --fresh).
 *
 *	A delegated account that is offline (revoked grant etc.) is not
 *	sent to the token endpoint at all; the result says to run
 *	"m365ctl login NAME".  A re-auth error marks it offline, with the
 *	AADSTS code and remedy stored for m365ctl status.
 *
 *	auth_store_login() saves the tokens of an interactive sign-in and
 *	brings the account back online.
 * DIAGNOSTICS
 *	0 on success; -1 with res filled: M365_REAUTH or M365_CONFIG or
 *	M365_TEMP, always EX_TEMPFAIL with a 4.7.x/4.4.x DSN (the mail
 *	stays queued while the admin fixes it), text names cause + fix.
 */
#ifndef M365_AUTH_H
#define M365_AUTH_H

#include "conf.h"
#include "http.h"
#include "oauth.h"
#include "status.h"

#define AUTH_EXPIRY_MARGIN	300	/* seconds before expiry to renew */

extern int auth_token(struct http *, const struct conf *,
		              const struct conf_account *, int force,
		              const char *refused, char **token_r,
		              struct m365_result *res);
extern int auth_store_login(const struct conf *, const struct conf_account *,
		                const struct oauth_token *, char *err, size_t errlen);

#endif
