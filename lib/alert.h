/*
 * NAME
 *	alert 3h
 * SUMMARY
 *	expiry warnings, refresh-token keep-alive, admin notifications
 * SYNOPSIS
 *	#include "alert.h"
 * DESCRIPTION
 *	alert_expiry() finds when the credentials of an app-only account
 *	expire: the notAfter of certificate_file (auth = certificate) and
 *	the [account] secret_expires date (auth = secret; Entra ID shows it
 *	under Certificates & secrets; reading it from the application
 *	object would need a permission m365relay should not have).  A
 *	credential warns from [global] expiry_warning days before it
 *	expires (and after).  alert_expiry_text() is the sentence for one
 *	credential, naming the date and the fix.
 *
 *	alert_expiry_daily() logs those warnings at most once per day per
 *	account (the day is remembered in state_dir/metrics/alert-ACCOUNT,
 *	see metrics_update()), so a busy relay does not warn per message.
 *
 *	alert_account_offline() says whether an account cannot get tokens
 *	without an administrator: a delegated account that needs sign-in,
 *	or an app-only account whose last token request was refused with
 *	an AADSTS code and that has no valid token (e.g. AADSTS7000222,
 *	expired secret).  alert_aadsts() finds the AADSTS number in an
 *	error text ("" when none).
 *
 *	alert_keepalive() keeps a delegated account's refresh token alive:
 *	Microsoft expires a refresh token not used for 90 days
 *	(AADSTS700082).  When the newest refresh token is older than
 *	[global] keepalive_after (default 30 days: a delivery or a round
 *	renews it anyway), it asks for a new token now (auth_token() with
 *	force), which rotates the refresh token.  1 refreshed, 0 nothing to
 *	do (app-only, not signed in, offline, recent), -1 the refresh
 *	failed (logged; the account's state says why).
 *
 *	alert_notify() mails [global] admin_address through the local MTA
 *	([global] sendmail_path, "sendmail -i -f <> -- ADDRESS", null
 *	sender, Auto-Submitted: auto-generated) when an account or source
 *	went offline or came back, and once per day while a credential
 *	warns.  What was announced is remembered per account and source in
 *	state_dir/metrics/notify-account-NAME and notify-source-NAME; a
 *	mail that could not be handed over is tried again on the next run.
 *	Without admin_address it does nothing.  It returns the number of
 *	mails sent, -1 when one failed.
 */
#ifndef M365_ALERT_H
#define M365_ALERT_H

#include <stddef.h>
#include <time.h>

#include "conf.h"
#include "http.h"
#include "tokstore.h"

#define ALERT_DAY	86400

enum alert_cred {
    ALERT_CERTIFICATE = 0,
    ALERT_SECRET = 1,
};

struct alert_expiry {
    time_t  expires[2];			/* 0: none or unknown */
    int     warn[2];			/* within expiry_warning days */
    char    err[300];			/* certificate unreadable, or "" */
};

extern void alert_expiry(const struct conf *, const struct conf_account *,
			         time_t now, struct alert_expiry *);
extern int alert_expiry_text(const struct conf_account *,
			             const struct alert_expiry *, enum alert_cred,
			             time_t now, char *buf, size_t len);
extern void alert_expiry_daily(const struct conf *,
			               const struct conf_account *);
extern int alert_account_offline(const struct conf_account *,
				         const struct tokstore *, time_t now);
extern const char *alert_aadsts(const char *text, char *buf, size_t len);
extern int alert_keepalive(const struct conf *, struct http *,
			           const struct conf_account *, time_t now);
extern int alert_notify(const struct conf *, time_t now);

#endif
