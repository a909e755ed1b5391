/*
 * NAME
 *	alert 3
 * SUMMARY
 *	expiry warnings, refresh-token keep-alive, admin notifications
 * DESCRIPTION
 *	See alert.h.  The records of what was already said live next to
 *	the counters (state_dir/metrics) and are read and written with
 *	metrics_update(): under the file's lock, so two runs at the same
 *	time warn or mail once.  Days are local calendar days (YYYYMMDD),
 *	like the dates in the log.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alert.h"
#include "auth.h"
#include "fetchstate.h"
#include "inject.h"
#include "jwt.h"
#include "log.h"
#include "metrics.h"
#include "oauth.h"
#include "statefile.h"
#include "status.h"
#include "strbuf.h"
#include "util.h"
#include "xalloc.h"

#define ALERT_NAME_MAX	400		/* "notify-account-" + a name */

/* alert_today - the local day as YYYYMMDD */

static long long alert_today(time_t now)
{
    struct tm tm;

    localtime_r(&now, &tm);
    return ((long long) (tm.tm_year + 1900) * 10000 + (tm.tm_mon + 1) * 100
	    + tm.tm_mday);
}

/* alert_expiry - when the account's certificate and secret expire */

void    alert_expiry(const struct conf *conf, const struct conf_account *acct,
		             time_t now, struct alert_expiry *e)
{
    time_t  t;
    int     i;

    memset(e, 0, sizeof(*e));
    if (acct->auth == CONF_AUTH_CERTIFICATE && acct->certificate_file
	&& jwt_cert_expiry(acct->certificate_file, &t, e->err,
			   sizeof(e->err)) == 0)
	e->expires[ALERT_CERTIFICATE] = t;
    if (acct->secret_expires > 0)
	e->expires[ALERT_SECRET] = (time_t) acct->secret_expires;
    for (i = 0; i < 2; i++)
	e->warn[i] = e->expires[i] > 0 && e->expires[i] - now
	    < (time_t) conf->expiry_warning * ALERT_DAY;
}

/*
 * alert_expiry_text - "certificate FILE of account A expires on DATE (in
 * N days): fix" for one credential; 1 when it warns, 0 when it is fine,
 * -1 when there is nothing to say (no such credential).
 */
int     alert_expiry_text(const struct conf_account *acct,
			          const struct alert_expiry *e,
			          enum alert_cred which, time_t now,
			          char *buf, size_t len)
{
    time_t  t = e->expires[which];
    char    date[32], when[128];
    struct tm tm;
    long    days;

    if (t <= 0)
	return (-1);
    localtime_r(&t, &tm);
    strftime(date, sizeof(date), "%Y-%m-%d", &tm);
    /* Whole days, rounded up: "in 1 day" until it is gone. */
    days = (long) ((t - now + ALERT_DAY - 1) / ALERT_DAY);
    if (t <= now)
	snprintf(when, sizeof(when), "expired on %s (%ld days ago)", date,
		 (long) ((now - t) / ALERT_DAY));
    else
	snprintf(when, sizeof(when), "expires on %s (in %ld day%s)", date,
		 days, days == 1 ? "" : "s");
    if (which == ALERT_CERTIFICATE)
	snprintf(buf, len, "certificate %s of account %s %s%s", acct->
		 certificate_file, acct->name, when, !e->warn[which] ? "" :
		 ": create a new certificate, upload it to the app "
		 "registration in Entra ID (Certificates & secrets) and point "
		 "certificate_file and key_file at it");
    else
	snprintf(buf, len, "client secret of account %s %s%s", acct->name,
		 when, !e->warn[which] ? "" : ": create a new client secret "
		 "in Entra ID (App registrations > Certificates & secrets), "
		 "put it in secret_file and set secret_expires to its new "
		 "expiry date");
    return (e->warn[which]);
}

/* alert_day_claim - metrics_update() callback: the first run of a day */

static int alert_day_claim(struct metrics_set *set, void *arg)
{
    long long *today = arg;

    if (metrics_set_get(set, "checked_day") == *today) {
	*today = 0;				/* done by another process */
	return (0);
    }
    metrics_set_add(set, "checked_day", *today -
		    metrics_set_get(set, "checked_day"));
    return (1);
}

/* alert_expiry_daily - log expiry warnings once per day per account */

void    alert_expiry_daily(const struct conf *conf,
			           const struct conf_account *acct)
{
    struct alert_expiry e;
    struct stat sb;
    struct tm tm, mt;
    char    file[ALERT_NAME_MAX];
    char    path[4096];
    char    err[600], text[600];
    time_t  now = time(NULL);
    long long today = alert_today(now);
    int     i;

    if (acct->secret_expires <= 0 && acct->auth != CONF_AUTH_CERTIFICATE)
	return;
    if (snprintf(file, sizeof(file), "alert-account-%s", acct->name)
	>= (int) sizeof(file))
	return;
    /* The cheap test first: checked today already (one stat). */
    localtime_r(&now, &tm);
    if (statefile_path(conf, STATEFILE_METRICS, file, NULL, path,
		       sizeof(path)) == 0 && stat(path, &sb) == 0
	&& localtime_r(&sb.st_mtime, &mt) != NULL
	&& mt.tm_year == tm.tm_year && mt.tm_yday == tm.tm_yday)
	return;
    if (metrics_update(conf, file, alert_day_claim, &today, err,
		       sizeof(err)) < 0) {
	msg_warn("cannot check the credential expiry of account %s: %s",
		 acct->name, err);
	return;
    }
    if (today == 0)
	return;
    alert_expiry(conf, acct, now, &e);
    if (e.err[0])
	msg_warn("account %s: cannot read the certificate's expiry: %s",
		 acct->name, e.err);
    for (i = 0; i < 2; i++)
	if (alert_expiry_text(acct, &e, (enum alert_cred) i, now, text,
			      sizeof(text)) == 1)
	    msg_warn("%s", text);
}

/* alert_account_offline - does the account need an administrator? */

int     alert_account_offline(const struct conf_account *acct,
			              const struct tokstore *ts, time_t now)
{
    if (acct->auth == CONF_AUTH_DELEGATED || ts->offline)
	return (ts->offline != 0);
    /* App-only: refused with an AADSTS code, and no token to go on. */
    return (ts->last_error != NULL
	    && oauth_aadsts_from_text(ts->last_error) > 0
	    && !(ts->access_token && *ts->access_token
		 && ts->access_expires > now));
}

/* alert_aadsts - the AADSTS number in text as a string, "" if none */

const char *alert_aadsts(const char *text, char *buf, size_t len)
{
    long    n = oauth_aadsts_from_text(text);

    if (n > 0)
	snprintf(buf, len, "%ld", n);
    else if (len > 0)
	buf[0] = 0;
    return (buf);
}

/* alert_keepalive - renew a refresh token before it idles out */

int     alert_keepalive(const struct conf *conf, struct http *http,
			        const struct conf_account *acct, time_t now)
{
    struct tokstore ts;
    struct m365_result res;
    char    err[600];
    char   *token = NULL;
    long    idle = -1;
    int     skip;

    if (acct->auth != CONF_AUTH_DELEGATED)
	return (0);
    if (tokstore_load(conf, acct->name, &ts, err, sizeof(err)) < 0) {
	msg_warn("account %s: keep-alive: %s", acct->name, err);
	tokstore_clear(&ts);
	return (-1);
    }
    if (ts.refresh_issued > 0)
	idle = (long) (now - ts.refresh_issued);
    /* Offline or never signed in: only m365ctl login helps. */
    skip = ts.offline || ts.refresh_token == NULL || *ts.refresh_token == 0
	|| (idle >= 0 && idle < conf->keepalive_after);
    tokstore_clear(&ts);
    if (skip)
	return (0);
    result_init(&res);
    if (auth_token(http, conf, acct, 1, NULL, &token, &res) < 0) {
	msg_warn("account %s: keep-alive refresh failed: %s", acct->name,
		 res.text);
	return (-1);
    }
    xfree_secret(token);
    if (idle >= 0)
	msg_info("account %s: keep-alive: refresh token renewed (unused "
		 "for %ld days; Microsoft expires it after 90 days unused, "
		 "AADSTS700082)", acct->name, idle / ALERT_DAY);
    else
	msg_info("account %s: keep-alive: refresh token renewed (its age "
		 "was unknown)", acct->name);
    return (1);
}

/* alert_mail - one notice to admin_address through the local MTA */

static int alert_mail(const struct conf *conf, const char *subject,
		              const char *body)
{
    struct inject_result ir;
    struct strbuf msg;
    char    host[256], date[64], mid[33], err[400];
    time_t  now = time(NULL);
    struct tm tm;
    int     fd, rc;

    if (gethostname(host, sizeof(host)) < 0 || host[0] == 0)
	snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = 0;
    if (random_hex(mid, 16) < 0)
	snprintf(mid, sizeof(mid), "%lx%lx", (unsigned long) now,
		 (unsigned long) getpid());
    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
    strbuf_init(&msg, STRBUF_MAX_SMALL);
    strbuf_printf(&msg, "From: m365relay <MAILER-DAEMON@%s>\n"
		  "To: <%s>\n"
		  "Subject: m365relay on %s: %s\n"
		  "Date: %s\n"
		  "Message-ID: <%s.m365relay@%s>\n"
		  "Auto-Submitted: auto-generated\n"
		  "MIME-Version: 1.0\n"
		  "Content-Type: text/plain; charset=us-ascii\n"
		  "\n%s\n\n-- \nm365ctl keepalive on %s; see m365ctl status.  "
		  "One notice per change (and per day\nwhile a credential "
		  "expires soon).\n", host, conf->admin_address, host, subject,
		  date, mid, host, body, host);
    if (strbuf_failed(&msg)) {
	msg_warn("notice to %s would be longer than %lu bytes; not sent",
		 conf->admin_address, (unsigned long) msg.max);
	strbuf_free(&msg);
	return (-1);
    }
    if ((fd = inject_tmpfile(file_tmpdir(NULL))) < 0) {
	msg_warn("cannot create a temporary file for the notice to %s: %s",
		 conf->admin_address, strerror(errno));
	strbuf_free(&msg);
	return (-1);
    }
    rc = file_write_all(fd, msg.data, msg.len);
    strbuf_free(&msg);
    if (rc < 0) {
	msg_warn("cannot write the notice to %s: %s", conf->admin_address,
		 strerror(errno));
	close(fd);
	return (-1);
    }
    /* The MTA routes it: never through the account that is offline. */
    rc = inject_notice(conf, "sendmail", fd, conf->admin_address, &ir, err,
		       sizeof(err));
    close(fd);
    if (rc < 0 && ir.relay[0] == 0)
	msg_warn("cannot send the notice to %s: %s", conf->admin_address,
		 err);
    else
	msg_info("notice to=<%s>, relay=%s, dsn=%s, status=%s (%s: %s)",
		 conf->admin_address, ir.relay, ir.dsn,
		 inject_status_name(ir.status), subject, ir.reply);
    return (rc);
}

/* One account or source, as alert_notify() sees it. */
struct alert_note {
    const struct conf *conf;
    const char *what;			/* "account" or "source" */
    const char *name;
    int     offline;
    const char *cause;
    const char *remedy;
    const char *expiry;			/* warning lines, or "" */
    long long today;
    int     sent;
    int     failed;
};

/* alert_note_mail - send one notice, count the outcome */

static int alert_note_mail(struct alert_note *n, const char *subject,
			           const char *body)
{
    if (alert_mail(n->conf, subject, body) == 0) {
	n->sent++;
	return (1);
    }
    n->failed++;
    return (0);
}

/* alert_note_update - metrics_update() callback: mail what changed */

static int alert_note_update(struct metrics_set *set, void *arg)
{
    struct alert_note *n = arg;
    char    subject[300];
    struct strbuf body;
    long long was = metrics_set_get(set, "offline");
    long long day = metrics_set_get(set, "expiry_day");
    int     changed = 0;

    strbuf_init(&body, STRBUF_MAX_SMALL);
    if (n->offline != (was != 0)) {
	snprintf(subject, sizeof(subject), "%s %s %s", n->what, n->name,
		 n->offline ? "is offline" : "is back online");
	if (n->offline)
	    strbuf_printf(&body, "%s %s is offline: %.600s\n\nWhat to do: "
			  "%.600s\n\nMail for it waits: outbound mail is "
			  "deferred in the MTA's queue, inbound mail stays\n"
			  "in Microsoft 365, until this is fixed.", n->what,
			  n->name, n->cause && *n->cause ? n->cause :
			  "(no error recorded)", n->remedy && *n->remedy ?
			  n->remedy : "see m365ctl status");
	else
	    strbuf_printf(&body, "%s %s works again.", n->what, n->name);
	if (alert_note_mail(n, subject, strbuf_str(&body))) {
	    metrics_set_add(set, "offline", (n->offline ? 1 : 0) - was);
	    changed = 1;
	}
    }
    if (n->expiry && *n->expiry && day != n->today) {
	snprintf(subject, sizeof(subject), "%s %s: a credential expires "
		 "soon", n->what, n->name);
	strbuf_reset(&body);
	strbuf_printf(&body, "%s\nWhen it has expired, the account cannot get "
		      "tokens and its mail waits.", n->expiry);
	if (alert_note_mail(n, subject, strbuf_str(&body))) {
	    metrics_set_add(set, "expiry_day", n->today - day);
	    changed = 1;
	}
    }
    strbuf_free(&body);
    return (changed);
}

/* alert_note_run - compare one account or source with its record */

static void alert_note_run(struct alert_note *n)
{
    char    file[ALERT_NAME_MAX];
    char    err[600];

    if (snprintf(file, sizeof(file), "notify-%s-%s", n->what, n->name)
	>= (int) sizeof(file))
	return;
    if (metrics_update(n->conf, file, alert_note_update, n, err,
		       sizeof(err)) < 0) {
	msg_warn("notice for %s %s: %s", n->what, n->name, err);
	n->failed++;
    }
}

/* alert_notify - mail admin_address about changes; see alert.h */

int     alert_notify(const struct conf *conf, time_t now)
{
    const struct conf_account *acct;
    const struct conf_source *src;
    struct alert_note n;
    struct alert_expiry e;
    struct tokstore ts;
    struct fetchstate st;
    struct strbuf exp;
    char    err[600], text[600];
    int     sent = 0, failed = 0, i;

    if (conf->admin_address == NULL || *conf->admin_address == 0)
	return (0);
    strbuf_init(&exp, STRBUF_MAX_SMALL);
    for (acct = conf->accounts; acct; acct = acct->next) {
	if (tokstore_load(conf, acct->name, &ts, err, sizeof(err)) < 0) {
	    msg_warn("notice for account %s: %s", acct->name, err);
	    tokstore_clear(&ts);
	    failed++;
	    continue;
	}
	strbuf_reset(&exp);
	alert_expiry(conf, acct, now, &e);
	for (i = 0; i < 2; i++)
	    if (alert_expiry_text(acct, &e, (enum alert_cred) i, now, text,
				  sizeof(text)) == 1)
		strbuf_printf(&exp, "%s.\n", text);
	memset(&n, 0, sizeof(n));
	n.conf = conf;
	n.what = "account";
	n.name = acct->name;
	n.offline = alert_account_offline(acct, &ts, now);
	n.cause = ts.last_error;
	n.remedy = ts.remedy;
	n.expiry = strbuf_str(&exp);
	n.today = alert_today(now);
	alert_note_run(&n);
	sent += n.sent;
	failed += n.failed;
	tokstore_clear(&ts);
    }
    for (src = conf->sources; src; src = src->next) {
	if (fetchstate_load(conf, src->name, &st, err, sizeof(err)) < 0) {
	    msg_warn("notice for source %s: %s", src->name, err);
	    fetchstate_clear(&st);
	    failed++;
	    continue;
	}
	memset(&n, 0, sizeof(n));
	n.conf = conf;
	n.what = "source";
	n.name = src->name;
	n.offline = st.offline;
	n.cause = st.last_error;
	n.remedy = st.remedy;
	n.today = alert_today(now);
	alert_note_run(&n);
	sent += n.sent;
	failed += n.failed;
	fetchstate_clear(&st);
    }
    strbuf_free(&exp);
    return (failed ? -1 : sent);
}
