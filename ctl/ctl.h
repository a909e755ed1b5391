/*
 * NAME
 *	ctl 3h
 * SUMMARY
 *	declarations shared by the parts of m365ctl
 * SYNOPSIS
 *	#include "ctl.h"
 * DESCRIPTION
 *	m365ctl is split in five files (ctl_metrics.c: status
 *	--prometheus, keepalive): m365ctl.c (main, option parsing,
 *	status, logout, check, consent-url), ctl_login.c (interactive
 *	sign-in: device code, browser with a loopback listener,
 *	paste-back), ctl_test.c (the connection test, the "ping" of the
 *	Microsoft 365 admin pages, of an account or of an inbound
 *	[source]) and ctl_util.c (the helpers the others share).  Calls
 *	go one way only: m365ctl.c uses the other three, ctl_login.c and
 *	ctl_test.c use ctl_util.c, which uses none of them.  What m365ctl
 *	and m365-fetch both need about a [source] is in the library
 *	(source.h).
 *
 *	Commands return an exit status for main(): CTL_OK, CTL_FAIL (the
 *	operation ran and failed, e.g. a test step failed or the sign-in
 *	was declined), EX_TEMPFAIL (the identity platform or Graph could
 *	not be reached; try again), EX_USAGE, EX_CONFIG.
 *
 *	Output for the operator goes to stdout (results, URLs, the sign-in
 *	instructions) and stderr (errors).  Token values never appear in
 *	either.
 */
#ifndef M365_CTL_H
#define M365_CTL_H

#include <stddef.h>
#include <sysexits.h>
#include <time.h>

#include "conf.h"
#include "http.h"
#include "oauth.h"

#define CTL_OK		0
#define CTL_FAIL	1

enum ctl_login_method {
    CTL_LOGIN_DEVICE = 0,		/* --device-code (default) */
    CTL_LOGIN_BROWSER = 1,		/* --browser: loopback listener */
    CTL_LOGIN_PASTE = 2,		/* --paste: copy the address back */
};

/* Seconds the browser flow waits for the redirect. */
#define CTL_BROWSER_TIMEOUT	300

/* ctl_login.c */
extern int ctl_login(const struct conf *, const struct conf_account *,
		             enum ctl_login_method);

/* ctl_test.c */
extern int ctl_test(const struct conf *, const struct conf_account *,
		            int fresh, const char *send_to);
extern int ctl_test_source(const struct conf *, const struct conf_source *,
			           int fresh);

/* ctl_metrics.c: status --prometheus, keepalive, expiry in status */
struct cJSON;
extern int ctl_prometheus(const struct conf *, const char *output);
extern int ctl_keepalive(const struct conf *);
extern void ctl_expiry_status(const struct conf *, const struct conf_account *,
			              struct cJSON *obj, time_t now);

/* ctl_rbac.c: m365ctl rbac; the rbac step of m365ctl test */
extern int ctl_rbac(const struct conf *, const struct conf_account *);
extern const char *ctl_rbac_probe(const struct conf *, struct http *,
				          const struct conf_account *,
				          const char *token, char *text, size_t len,
				          char *remedy, size_t rlen);

/* Seconds the source test waits for each step of the MTA's session. */
#define CTL_SMTP_TIMEOUT	5

/* What Graph says about a user (GET /me, GET /users/{mailbox}). */
struct ctl_user {
    char    id[80];
    char    upn[320];			/* userPrincipalName */
    char    mail[320];
    char    name[200];			/* displayName */
};

/* ctl_util.c: helpers shared by the commands */
extern void ctl_audit(const char *,...) __attribute__((format(printf, 1, 2)));
extern void ctl_log_quiet(int);
extern void ctl_fmt_time(char *buf, size_t len, time_t when);
extern void ctl_fmt_expiry(char *buf, size_t len, time_t expires, time_t now);
extern int ctl_scope_has(const char *scopes, const char *name);
extern void ctl_print_oauth_error(const char *what, const struct oauth_error *,
				          const char *account);
extern int ctl_get_user(struct http *, const struct conf *,
		                const char *mailbox, const char *token,
			                struct ctl_user *, struct http_resp *);

#endif
