/*
 * NAME
 *	ctl_util 3
 * SUMMARY
 *	helpers shared by the commands of m365ctl
 * SYNOPSIS
 *	#include "ctl.h"
 *
 *	void	ctl_audit(fmt, ...)
 *
 *	void	ctl_log_quiet(quiet)
 *
 *	void	ctl_fmt_time(buf, len, when)
 *
 *	void	ctl_fmt_expiry(buf, len, expires, now)
 *
 *	int	ctl_scope_has(scopes, name)
 *
 *	void	ctl_print_oauth_error(what, oe, account)
 *
 *	int	ctl_get_user(http, conf, mailbox, token, user, resp)
 * DESCRIPTION
 *	ctl_audit() writes a record for syslog or log_file only, not the
 *	terminal; ctl_log_quiet(1) keeps log records off the terminal
 *	(unless -v), ctl_log_quiet(0) lets them through again.
 *
 *	ctl_fmt_time() formats a local time ("2026-11-28 10:00:00 CET",
 *	"never" for 0); ctl_fmt_expiry() a token's expiry relative to now
 *	("in 59 min", "expired 3 min ago", "none").
 *
 *	ctl_scope_has() tells whether a space-separated scope list holds a
 *	permission: "https://graph.microsoft.com/Mail.Send" and
 *	"Mail.Send" both match Mail.Send; Mail.Send.Shared does not.
 *
 *	ctl_print_oauth_error() prints one failed identity platform
 *	request with its AADSTS code and remedy to stderr.
 *
 *	ctl_get_user() reads GET /me (mailbox NULL) or GET
 *	/users/{mailbox} (graph_get()) into a struct ctl_user.
 *
 *	This file calls no other file of m365ctl: m365ctl.c, ctl_login.c
 *	and ctl_test.c use it, not the other way round.
 * DIAGNOSTICS
 *	ctl_get_user() returns 0 on HTTP 200 with a parsable body, else -1
 *	(resp tells why).  Token values are never printed.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cJSON.h>

#include "ctl.h"
#include "graph.h"
#include "log.h"
#include "oauth.h"

/* ctl_log_quiet - keep log records off the terminal (unless -v) */

void    ctl_log_quiet(int quiet)
{
    log_to_stderr(quiet && log_verbose() == 0 ? 0 : 1);
}

/* ctl_audit - a record for syslog or log_file only, not the terminal */

void    ctl_audit(const char *fmt,...)
{
    char    text[LOG_MAX_RECORD];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    ctl_log_quiet(1);
    msg_info("%s", text);
    ctl_log_quiet(0);
}

/* ctl_fmt_time - local time as "2026-11-28 10:00:00 CET" */

void    ctl_fmt_time(char *buf, size_t len, time_t when)
{
    struct tm tm;

    if (when <= 0 || localtime_r(&when, &tm) == NULL
	|| strftime(buf, len, "%Y-%m-%d %H:%M:%S %Z", &tm) == 0)
	snprintf(buf, len, "never");
}

/* ctl_fmt_expiry - "in 59 min", "expired 3 min ago", "none" */

void    ctl_fmt_expiry(char *buf, size_t len, time_t expires, time_t now)
{
    long    diff;

    if (expires <= 0) {
	snprintf(buf, len, "none");
	return;
    }
    diff = (long) (expires - now);
    if (diff > 0)
	snprintf(buf, len, "in %ld min", diff / 60);
    else
	snprintf(buf, len, "expired %ld min ago", -diff / 60);
}

/*
 * ctl_scope_has - does a space-separated scope list hold a permission?
 * "https://graph.microsoft.com/Mail.Send" and "Mail.Send" both match
 * Mail.Send; Mail.Send.Shared does not match Mail.Send.
 */
int     ctl_scope_has(const char *scopes, const char *name)
{
    return (oauth_scope_has(scopes, name));
}

/* ctl_print_oauth_error - one failed identity platform request, with fix */

void    ctl_print_oauth_error(const char *what, const struct oauth_error *oe,
			              const char *account)
{
    char    remedy[600];

    if (oe->http_status == 0 && oe->error[0] == 0)
	fprintf(stderr, "m365ctl: %s failed: cannot reach the identity "
		"platform: %s\n", what,
		oe->description[0] ? oe->description : "transport error");
    else if (oe->aadsts)
	fprintf(stderr, "m365ctl: %s failed: AADSTS%ld %s (HTTP %ld): %s\n",
		what, oe->aadsts, oe->error[0] ? oe->error : "error",
		oe->http_status, oe->description);
    else
	fprintf(stderr, "m365ctl: %s failed: %s (HTTP %ld): %s\n", what,
		oe->error[0] ? oe->error : "error", oe->http_status,
		oe->description);
    if (oe->cls == OAUTH_TRANSIENT) {
	fprintf(stderr, "m365ctl: remedy: a temporary problem: check the "
		"network path to the identity platform (login_url, proxy, "
		"firewall, DNS) and try again\n");
	return;
    }
    oauth_remedy(oe, account, remedy, sizeof(remedy));
    if (remedy[0])
	fprintf(stderr, "m365ctl: remedy: %s\n", remedy);
}

/* ctl_json_copy - copy a string member of a JSON object (printable) */

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
    cJSON  *root;

    memset(user, 0, sizeof(*user));
    if (graph_get(http, conf, mailbox, "", token, resp) < 0
	|| resp->status != 200)
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
